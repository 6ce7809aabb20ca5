//! The web console in a real headless Chromium (Debian's `chromium` and `chromedriver`, over
//! WebDriver with fantoccini), against real processes of the real binary gossiping over
//! real UDP on loopback. Each test skips, saying why, only when Chromium or chromedriver is
//! not installed or cannot start; `.ci/run` installs both and sets
//! `STARLING_REQUIRE_BROWSER`, which turns a skip into a failure.

#[path = "console/browser.rs"]
mod browser;
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use browser::Browser;
use common::{BIN, Proc, free_port};

/// A `starling run` node with an API on `api`; `token`: the API token it reads from
/// `STARLING_API_TOKEN`, or none (reads only).
fn spawn_node(
    dir: &Path,
    name: &str,
    gossip: u16,
    api: u16,
    seeds: &[u16],
    jobs: &Path,
    token: Option<&str>,
) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--node-id", name])
        .args(["--listen", &format!("127.0.0.1:{gossip}")])
        .args(["--api", &format!("127.0.0.1:{api}")])
        .args(["--jobs", &jobs.to_string_lossy()]);
    for s in seeds {
        cmd.args(["--seed", &format!("127.0.0.1:{s}")]);
    }
    match token {
        Some(t) => cmd.env("STARLING_API_TOKEN", t),
        None => cmd.env_remove("STARLING_API_TOKEN"),
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap());
    Proc(Some(cmd.spawn().unwrap()))
}

/// Waits (bounded) until the API on `port` answers `/healthz`.
async fn wait_healthy(port: u16) {
    let url = format!("http://127.0.0.1:{port}/healthz");
    for _ in 0..100 {
        if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no API on port {port} within 10 s");
}

/// The marks of the page's timeline: (node, job, slot in Unix ms, outcome).
async fn marks(b: &Browser) -> Vec<(String, String, i64, String)> {
    let v = b
        .js(
            "return Array.from(document.querySelectorAll('#timeline .mark')).map(m => \
             [m.dataset.node, m.dataset.job, Number(m.dataset.slot), m.dataset.outcome]);",
        )
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m[0].as_str().unwrap().to_string(),
                m[1].as_str().unwrap().to_string(),
                m[2].as_i64().unwrap(),
                m[3].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The ids of the write controls a user can see.
async fn visible_write_controls(b: &Browser) -> Vec<String> {
    let v = b
        .js(
            "return Array.from(document.querySelectorAll('[data-write]')) \
             .filter(e => e.getClientRects().length > 0).map(e => e.id);",
        )
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn jobs_file(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("jobs.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_page_shows_data_and_offers_no_write() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = jobs_file(
        dir.path(),
        "[[jobs]]\nname = \"tick\"\nschedule = \"@every 1s\"\ncommand = \"echo tick\"\n",
    );
    let (gossip, api) = (free_port(), browser::free_tcp_port());
    let _node = spawn_node(dir.path(), "solo", gossip, api, &[], &jobs, None);
    wait_healthy(api).await;
    let log = dir.path().join("chromedriver.log");
    let Some(b) = browser::open("the read-only console test", &log, 1280, 900).await else {
        return;
    };
    b.client
        .goto(&format!("http://127.0.0.1:{api}/"))
        .await
        .unwrap();

    // Data: the job's runs arrive in the node's lane.
    b.wait_for(
        "runs of tick in the timeline",
        Duration::from_secs(15),
        || async {
            let m = marks(&b).await;
            (m.iter().filter(|m| m.0 == "solo" && m.1 == "tick").count() >= 2).then_some(())
        },
    )
    .await;
    let access = b.find("#access").await.text().await.unwrap();
    assert!(access.contains("nobody can change anything"), "{access}");

    // No write action is offered without a token.
    assert_eq!(visible_write_controls(&b).await, Vec::<String>::new());

    // A crafted write is refused with a message that says why and what to do.
    let answer = b
        .js_async(
            "const done = arguments[arguments.length - 1]; \
             fetch('/v1/jobs/evil', {method: 'PUT', headers: {'Content-Type': 'application/json'}, \
               body: JSON.stringify({schedule: '@every 1s', command: 'echo pwned'})}) \
             .then(r => r.json().then(b => done([r.status, b.code, b.message])));",
        )
        .await;
    assert_eq!(answer[0], 403, "{answer}");
    assert_eq!(answer[1], "writes_disabled", "{answer}");
    assert!(
        answer[2].as_str().unwrap().contains("serves reads only"),
        "{answer}"
    );

    // With a token entered (this node has none, so any token), the page offers the form,
    // and a save fails with a clear message shown in the page.
    b.type_into("#token-input", "not-this-nodes-token-1234")
        .await;
    b.find("#token-use").await.click().await.unwrap();
    let controls = visible_write_controls(&b).await;
    assert!(controls.contains(&"new-job".to_string()), "{controls:?}");
    // The token stays in this tab: not in the address, not in a cookie.
    let kept = b
        .js("return [location.href, document.cookie, sessionStorage.length];")
        .await;
    assert_eq!(kept[0], format!("http://127.0.0.1:{api}/"));
    assert_eq!(kept[1], "");
    assert_eq!(kept[2], 1);

    b.find("#new-job").await.click().await.unwrap();
    b.type_into("#f-name", "evil").await;
    b.type_into("#f-schedule", "@every 1s").await;
    b.type_into("#f-command", "echo pwned").await;
    b.find("#create-save").await.click().await.unwrap();
    let error = b
        .wait_for("the refusal", Duration::from_secs(5), || async {
            let t = b.find("#create-error").await.text().await.unwrap();
            (!t.is_empty()).then_some(t)
        })
        .await;
    assert!(
        error.contains(
            "Creating evil: refused: this node's API has no token, so it serves reads only"
        ),
        "{error}"
    );
    assert!(error.contains("writes_disabled"), "{error}");
    b.screenshot("read-only-refused").await;
    // Nothing was written.
    let runs: Value = reqwest::get(format!("http://127.0.0.1:{api}/v1/runs?job=evil"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(runs["runs"], Value::Array(vec![]));
    b.client.close().await.unwrap();
}
