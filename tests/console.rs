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
use fantoccini::key::Key;

/// A `starling run` node with an API on `api`; `token`: the API token it reads from
/// `STARLING_API_TOKEN`, or none (reads only); gossip sealed by `cluster_key`
/// (`STARLING_CLUSTER_KEY`) if given.
#[allow(clippy::too_many_arguments)]
fn spawn_node(
    dir: &Path,
    name: &str,
    gossip: u16,
    api: u16,
    seeds: &[u16],
    jobs: &Path,
    token: Option<&str>,
    cluster_key: Option<&str>,
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
    match cluster_key {
        Some(k) => cmd.env("STARLING_CLUSTER_KEY", k),
        None => cmd.env_remove("STARLING_CLUSTER_KEY"),
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
    let _node = spawn_node(dir.path(), "solo", gossip, api, &[], &jobs, None, None);
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

const TOKEN: &str = "console-browser-token-0123456789";
/// A cluster key for the tests (32 bytes in base64).
const CLUSTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Presses Tab until `id` has the focus (at most `max` times), checking on the way that
/// every stop shows its focus; returns the stops.
async fn tab_to(b: &Browser, id: &str, max: usize) -> Vec<String> {
    let mut stops = Vec::new();
    for _ in 0..max {
        b.press(Key::Tab).await;
        let (stop, hidden) = b.focus().await;
        assert_eq!(hidden, None, "the focus on {stop} cannot be seen");
        let here = stop.starts_with(&format!("#{id} "));
        stops.push(stop);
        if here {
            return stops;
        }
    }
    panic!("{max} presses of Tab never reached #{id}: {stops:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_works_from_the_keyboard_and_its_text_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("chromedriver.log");
    let Some(b) = browser::open("the console's keyboard test", &log, 1280, 900).await else {
        return;
    };
    let jobs = jobs_file(
        dir.path(),
        "[[jobs]]\nname = \"tick\"\nschedule = \"@every 1s\"\ncommand = \"echo tick\"\n",
    );
    let (gossip, api) = (free_port(), browser::free_tcp_port());
    let _node = spawn_node(
        dir.path(),
        "keys",
        gossip,
        api,
        &[],
        &jobs,
        Some(TOKEN),
        Some(CLUSTER_KEY),
    );
    wait_healthy(api).await;
    b.client
        .goto(&format!("http://127.0.0.1:{api}/"))
        .await
        .unwrap();

    // Without the token the page says what it needs, readably.
    let said = b
        .wait_for(
            "the request for the token",
            Duration::from_secs(10),
            || async {
                let t = b.find("#message-text").await.text().await.unwrap();
                t.contains("needs its API token").then_some(t)
            },
        )
        .await;
    assert!(said.contains("Enter it above"), "{said}");
    assert_eq!(b.contrast_failures().await, Vec::<String>::new());

    // From the top: the first Tab shows the skip link, the next ones reach the token box.
    let stops = tab_to(&b, "token-input", 3).await;
    assert!(stops[0].contains("Skip to the console"), "{stops:?}");
    b.client
        .active_element()
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    b.press(Key::Enter).await;
    b.wait_for(
        "the data, read with the token",
        Duration::from_secs(10),
        || async {
            let m = marks(&b).await;
            (m.iter().any(|m| m.1 == "tick")).then_some(())
        },
    )
    .await;
    let access = b.find("#access").await.text().await.unwrap();
    assert!(access.contains("A token is set for this tab"), "{access}");

    // The node's gossip key status, from GET /v1/gossip.
    let note = b
        .wait_for("the gossip key status", Duration::from_secs(10), || async {
            let t = b.find("#gossip-note").await.text().await.unwrap();
            (!t.is_empty()).then_some(t)
        })
        .await;
    assert!(
        note.starts_with("Gossip is sealed: this node seals with key ")
            && note.contains("opens only with it"),
        "{note}"
    );

    // On through the page: every stop shows its focus; the form opens with Enter, starts at
    // its first field, and Escape closes it with the focus back on its button.
    let stops = tab_to(&b, "new-job", 12).await;
    assert!(stops.iter().any(|s| s.starts_with("#filter ")), "{stops:?}");
    b.press(Key::Enter).await;
    let (at, _) = b.focus().await;
    assert!(at.starts_with("#f-name "), "{at}");
    assert_eq!(b.contrast_failures().await, Vec::<String>::new());
    b.client
        .active_element()
        .await
        .unwrap()
        .send_keys("kbd")
        .await
        .unwrap();
    tab_to(&b, "f-schedule", 1).await;
    b.client
        .active_element()
        .await
        .unwrap()
        .send_keys("*/5 * * * *")
        .await
        .unwrap();
    let preview = b
        .wait_for("the schedule in words", Duration::from_secs(5), || async {
            let t = b.find("#f-preview").await.text().await.unwrap();
            (!t.is_empty()).then_some(t)
        })
        .await;
    assert!(preview.starts_with("every 5 minutes"), "{preview}");
    b.press(Key::Escape).await;
    let open = b
        .js("return document.getElementById('create-dialog').open;")
        .await;
    assert_eq!(open, false);
    let (at, hidden) = b.focus().await;
    assert!(at.starts_with("#new-job "), "{at}");
    assert_eq!(hidden, None);
    b.screenshot("keyboard").await;
    b.client.close().await.unwrap();
}

/// The members table: (id, state, key status) per row.
async fn members(b: &Browser) -> Vec<(String, String, String)> {
    let v = b
        .js(
            "return Array.from(document.querySelectorAll('#members tbody tr')).map(r => \
             [r.dataset.key, r.cells[2].textContent, r.cells[6].textContent]);",
        )
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let s = |i: usize| m[i].as_str().unwrap().to_string();
            (s(0), s(1), s(2))
        })
        .collect()
}

/// A job's row in the jobs table: (owner, state), if it is there.
async fn job_row(b: &Browser, name: &str) -> Option<(String, String)> {
    let v = b
        .js(&format!(
            "const r = Array.from(document.querySelectorAll('#jobs tbody tr')).find(r => r.dataset.key === '{name}'); \
             return r ? [r.cells[3].textContent, r.cells[5].textContent] : null;"
        ))
        .await;
    let a = v.as_array()?;
    Some((
        a[0].as_str().unwrap().to_string(),
        a[1].as_str().unwrap().to_string(),
    ))
}

/// A job name that `owner` owns among `members` (the same rendezvous function as the
/// nodes').
fn name_owned_by(owner: &str, members: &[&str]) -> String {
    let m: Vec<starling::NodeId> = members.iter().map(starling::NodeId::new).collect();
    (0..)
        .map(|i| format!("web-{i}"))
        .find(|j| {
            starling::owner(&starling::JobId::new(j), &m)
                .unwrap()
                .as_str()
                == owner
        })
        .unwrap()
}

fn now_ms() -> i64 {
    use starling::Clock;
    starling::SystemClock.now().0
}

/// The walk-through in a real browser: 3 real nodes; the console of `a` lists them;
/// a job created through the page's form (token entered in the page) shows its owner `b`
/// and b's runs; kill -9 of b: the page shows b dead and the runs arriving in another lane
/// (screenshots of each poll on the way); the job paused from the page runs no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_failover_and_pauses_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("chromedriver.log");
    let Some(b) = browser::open("the console's failover test", &log, 1280, 1000).await else {
        return;
    };
    let names = ["a", "b", "c"];
    let gossip: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let apis: Vec<u16> = names.iter().map(|_| browser::free_tcp_port()).collect();
    let empty = jobs_file(dir.path(), "");
    let mut nodes: Vec<Proc> = (0..3)
        .map(|i| {
            let seeds: Vec<u16> = (0..3).filter(|&k| k != i).map(|k| gossip[k]).collect();
            spawn_node(
                dir.path(),
                names[i],
                gossip[i],
                apis[i],
                &seeds,
                &empty,
                Some(TOKEN),
                Some(CLUSTER_KEY),
            )
        })
        .collect();
    for &api in &apis {
        wait_healthy(api).await;
    }
    let job = name_owned_by("b", &names);

    // The console of a, with the token entered in the page.
    b.client
        .goto(&format!("http://127.0.0.1:{}/", apis[0]))
        .await
        .unwrap();
    b.type_into("#token-input", TOKEN).await;
    b.find("#token-use").await.click().await.unwrap();
    // The timeline's one-minute window: seconds apart, slots are marks apart.
    b.find("#tl-window")
        .await
        .select_by_value("60000")
        .await
        .unwrap();

    // The members table lists all 3, alive, each heard sealing with the cluster key.
    let rows = b
        .wait_for("3 members alive", Duration::from_secs(15), || async {
            let m = members(&b).await;
            let ok = m.len() == 3
                && m.iter()
                    .all(|r| r.1 == "alive" && r.2.starts_with("sealed · "));
            ok.then_some(m)
        })
        .await;
    let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids, names);

    // Create the job through the page's own form.
    b.find("#new-job").await.click().await.unwrap();
    b.type_into("#f-name", &job).await;
    b.type_into("#f-schedule", "@every 1s").await;
    b.type_into("#f-command", "echo from the console").await;
    b.find("#create-save").await.click().await.unwrap();

    // It appears with its owner, b, and b's runs show in b's lane.
    let (owner, _) = b
        .wait_for("the job with an owner", Duration::from_secs(10), || async {
            job_row(&b, &job).await.filter(|r| r.0 != "none")
        })
        .await;
    assert_eq!(owner, "b");
    b.wait_for("runs in b's lane", Duration::from_secs(10), || async {
        let m = marks(&b).await;
        (m.iter().filter(|m| m.0 == "b" && m.1 == job).count() >= 2).then_some(())
    })
    .await;
    let shots = browser::screenshot_dir();
    for old in std::fs::read_dir(&shots).unwrap().flatten() {
        if old.file_name().to_string_lossy().starts_with("failover-") {
            std::fs::remove_file(old.path()).unwrap();
        }
    }
    eprintln!("screenshots of the failover: {}", shots.display());
    b.screenshot("failover-0-running").await;

    // kill -9 the owner. Within the failover bound (detection at a 200 ms gossip interval
    // is about 2 s, and the page polls every 2 s) it shows b not alive and the runs
    // arriving in another lane; a screenshot each second on the way.
    nodes[1].kill9();
    let killed = now_ms();
    let mut shot = 0;
    let lane = b
        .wait_for(
            "b not alive and runs in another lane",
            Duration::from_secs(15),
            || {
                shot += 1;
                let name = format!("failover-1-poll-{shot:02}");
                let b = &b;
                let job = &job;
                async move {
                    if shot % 5 == 0 {
                        b.screenshot(&name).await;
                    }
                    let m = members(b).await;
                    let b_state = m.iter().find(|r| r.0 == "b").map(|r| r.1.clone());
                    let moved = marks(b)
                        .await
                        .into_iter()
                        .find(|m| m.0 != "b" && &m.1 == job && m.2 > killed)
                        .map(|m| m.0);
                    match (b_state, moved) {
                        (Some(s), Some(lane)) if s != "alive" => Some(lane),
                        _ => None,
                    }
                }
            },
        )
        .await;
    eprintln!(
        "the page showed the failover to {lane} {} ms after the kill",
        now_ms() - killed
    );
    b.screenshot("failover-2-moved").await;
    // The owner comes from a's planner view, the members table from gossip's liveness: a
    // node that suspected itself lately (local health, issue 14; a loaded machine can make
    // it) holds a member's departure for up to 25 gossip intervals (5 s) unless the others
    // agree, so the table may name the new owner a poll or two after the lane moved.
    let owner = b
        .wait_for(
            "the jobs table names the new owner",
            Duration::from_secs(8),
            || async { job_row(&b, &job).await.filter(|r| r.0 == lane).map(|r| r.0) },
        )
        .await;
    assert_eq!(owner, lane, "the jobs table names the new owner");

    // Pause it from the page, by keyboard: Enter on its row opens its detail (focus on
    // the title), Tab reaches Pause, Space presses it.
    b.js(&format!(
        "Array.from(document.querySelectorAll('#jobs tbody tr')).find(r => r.dataset.key === '{job}').focus();"
    ))
    .await;
    b.press(Key::Enter).await;
    let detail = b.find("#detail-name").await.text().await.unwrap();
    assert_eq!(detail, job);
    b.wait_for("the Pause button", Duration::from_secs(5), || async {
        let hidden = b
            .js("return document.getElementById('act-pause').hidden;")
            .await;
        (hidden == false).then_some(())
    })
    .await;
    let stops = tab_to(&b, "act-pause", 3).await;
    assert_eq!(
        stops.len(),
        1,
        "Pause is the first stop after the title: {stops:?}"
    );
    b.press(Key::Space).await;
    b.wait_for("the job paused", Duration::from_secs(10), || async {
        job_row(&b, &job).await.filter(|r| r.1 == "paused")
    })
    .await;
    let paused = now_ms();
    // The owner hears of the pause through gossip a moment later: a slot it started by
    // then may still come; none after.
    let grace = 2_000;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let late: Vec<_> = marks(&b)
        .await
        .into_iter()
        .filter(|m| m.1 == job && m.2 > paused + grace)
        .collect();
    assert_eq!(late, vec![], "runs after the pause");
    let said = b.find("#message-text").await.text().await.unwrap();
    assert!(said.starts_with(&format!("Paused {job}")), "{said}");
    assert_eq!(b.contrast_failures().await, Vec::<String>::new());
    b.screenshot("failover-3-paused").await;
    b.client.close().await.unwrap();
}
