//! Process-level tests of the HTTP API and the CLI client: real `starling` processes,
//! real gossip over UDP, real HTTP on loopback, real `sh -c`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use starling::{Clock, JobId, NodeId, SystemClock};

mod common;
use common::{BIN, Proc, free_port, metric};

const TOKEN: &str = "api-test-token-0123456789abcdef";

fn free_tcp_port() -> u16 {
    common::free_port()
}

/// One peer's ports and files.
struct Peer {
    name: &'static str,
    gossip: u16,
    api: u16,
    dir: PathBuf,
}

impl Peer {
    fn new(root: &Path, name: &'static str) -> Peer {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Peer {
            name,
            gossip: free_port(),
            api: free_tcp_port(),
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api)
    }

    /// Starts `starling run` with its API, its data dir and an empty jobs file. The token
    /// comes from a file for node `a` and from the environment for the others, so both
    /// ways are used.
    fn spawn(&self, peers: &[&Peer], log: &str) -> Proc {
        self.spawn_with_jobs(peers, log, "")
    }

    /// [`Peer::spawn`] with `jobs` as its jobs file.
    fn spawn_with_jobs(&self, peers: &[&Peer], log: &str, jobs: &str) -> Proc {
        let text = jobs;
        let jobs = self.dir.join("jobs.toml");
        std::fs::write(&jobs, text).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--node-id", self.name])
            .args(["--listen", &format!("127.0.0.1:{}", self.gossip)])
            .args(["--api", &format!("127.0.0.1:{}", self.api)])
            .args(["--jobs", &jobs.to_string_lossy()])
            .args(["--data-dir", &self.dir.join("data").to_string_lossy()]);
        for p in peers.iter().filter(|p| p.name != self.name) {
            cmd.args(["--seed", &format!("127.0.0.1:{}", p.gossip)]);
        }
        if self.name == "a" {
            let file = self.dir.join("token");
            std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
            cmd.args(["--api-token-file", &file.to_string_lossy()]);
            cmd.env_remove("STARLING_API_TOKEN");
        } else {
            cmd.env("STARLING_API_TOKEN", TOKEN);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join(log)).unwrap());
        Proc(Some(cmd.spawn().unwrap()))
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Sends a request with the token; returns the status and the JSON body.
async fn call(method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = http().request(method, url).bearer_auth(TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let response = r.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(url: &str) -> (u16, Value) {
    call(reqwest::Method::GET, url, None).await
}

/// Polls `check` every 100 ms for up to `secs` seconds; returns whether it held.
async fn eventually<F: AsyncFnMut() -> bool>(secs: u64, mut check: F) -> bool {
    for _ in 0..secs * 10 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Waits until every peer's API is up and sees `n` alive members.
async fn wait_for_cluster(peers: &[&Peer], n: usize) {
    for p in peers {
        let up = eventually(20, async || {
            let Ok(r) = http()
                .get(p.url("/v1/members"))
                .bearer_auth(TOKEN)
                .send()
                .await
            else {
                return false;
            };
            let page: Value = r.json().await.unwrap_or(Value::Null);
            page["members"]
                .as_array()
                .is_some_and(|m| m.iter().filter(|m| m["state"] == "alive").count() == n)
        })
        .await;
        let log = std::fs::read_to_string(p.dir.join("first.log")).unwrap_or_default();
        assert!(
            up,
            "{}'s API never saw {n} members; its log:\n{log}",
            p.name
        );
    }
}

/// SIGTERM, then a clean exit within 20 s; otherwise the peer's log goes into the failure.
fn stop(proc: &mut Proc, peer: &Peer, log: &str) {
    let mut child = proc.0.take().expect("running");
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    for _ in 0..400 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{} exited with {status}", peer.name);
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(peer.dir.join(log)).unwrap_or_default();
    panic!(
        "{} did not exit within 20 s of SIGTERM; its log:\n{text}",
        peer.name
    );
}

/// Every peer's log file `name`, for failure messages.
fn logs(peers: &[&Peer], name: &str) -> String {
    peers
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p.dir.join(name)).unwrap_or_default();
            format!("--- {} {name}:\n{text}", p.name)
        })
        .collect()
}

/// (slot ms, node) of every run the job appended to `out`.
fn runs_in(out: &Path) -> Vec<(i64, String)> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (node, slot) = l.split_once(' ')?;
            Some((slot.trim().parse().ok()?, node.to_string()))
        })
        .collect()
}

fn now() -> i64 {
    SystemClock.now().0
}

/// A job name that `owner` owns among `members`.
fn name_owned_by(owner: &str, members: &[&str]) -> String {
    let m: Vec<NodeId> = members.iter().map(NodeId::new).collect();
    (0..)
        .map(|i| format!("dyn-{i}"))
        .find(|j| starling::owner(&JobId::new(j), &m).unwrap().as_str() == owner)
        .unwrap()
}

/// The walk-through, each step asserted: (1) a job created through node A's API
/// runs on its owner; (2) B names that owner and C lists its runs; (3) after kill -9 of A
/// it keeps running; (4) after a restart of the whole cluster (data dirs) it is still there
/// and runs; (5) deleted through C, it stops everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_job_runs_on_its_owner_survives_a_kill_and_a_restart_and_stops_when_deleted() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        Peer::new(root.path(), "a"),
        Peer::new(root.path(), "b"),
        Peer::new(root.path(), "c"),
    );
    let all = [&a, &b, &c];
    let mut procs: BTreeMap<&str, Proc> = all
        .iter()
        .map(|p| (p.name, p.spawn(&all, "first.log")))
        .collect();
    wait_for_cluster(&all, 3).await;

    // (1) Created on A; A owns it, so the kill below moves it.
    let name = name_owned_by("a", &["a", "b", "c"]);
    let out = root.path().join("runs.txt");
    let definition = json!({
        "schedule": "* * * * * *",
        "command": format!("echo $STARLING_NODE_ID $STARLING_SCHEDULED_AT_MS >> {}", out.display()),
    });
    let (status, job) = call(
        reqwest::Method::PUT,
        &a.url(&format!("/v1/jobs/{name}")),
        Some(definition),
    )
    .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["owner"], "a", "{job}");
    assert_eq!(job["definition"]["schedule"], "* * * * * *");
    assert!(
        eventually(10, async || runs_in(&out).len() >= 2).await,
        "the job never ran"
    );
    let runs = runs_in(&out);
    assert!(
        runs.iter().all(|(_, n)| n == "a"),
        "it ran off its owner: {runs:?}"
    );

    // (2) B names the owner; C lists the runs.
    let (status, job) = get(&b.url(&format!("/v1/jobs/{name}"))).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["owner"], "a", "{job}");
    assert_eq!(job["source"], json!("api"), "{job}");
    assert_eq!(job["next"].as_array().map(Vec::len), Some(5), "{job}");
    let (status, page) = get(&c.url(&format!("/v1/runs?job={name}"))).await;
    assert_eq!(status, 200, "{page}");
    let listed = page["runs"].as_array().unwrap();
    assert!(!listed.is_empty(), "{page}");
    assert!(
        listed
            .iter()
            .all(|r| r["node"] == "a" && r["job"] == name.as_str() && r["outcome"] == "ok"),
        "{page}"
    );

    // (3) kill -9 A: the job keeps running, on one node at a time.
    procs.get_mut("a").unwrap().kill9();
    let killed = now();
    assert!(
        eventually(15, async || runs_in(&out)
            .iter()
            .any(|(s, _)| *s > killed + 1_000))
        .await,
        "the job stopped when its owner was killed"
    );
    let survivor_slots: Vec<i64> = runs_in(&out)
        .into_iter()
        .filter(|(s, _)| *s > killed + 1_000)
        .map(|(s, n)| {
            assert_ne!(n, "a");
            s
        })
        .collect();
    let mut unique = survivor_slots.clone();
    unique.dedup();
    assert_eq!(unique, survivor_slots, "a slot ran twice after the kill");

    // (4) The whole cluster restarts from its data dirs: the job is still there and runs.
    for p in [&b, &c] {
        stop(procs.get_mut(p.name).unwrap(), p, "first.log");
    }
    let restarted = now();
    let mut procs: BTreeMap<&str, Proc> = all
        .iter()
        .map(|p| (p.name, p.spawn(&all, "second.log")))
        .collect();
    wait_for_cluster(&all, 3).await;
    // Each node reads the catalog back from its data dir and from the others' gossip.
    for p in all {
        let url = p.url(&format!("/v1/jobs/{name}"));
        assert!(
            eventually(10, async || get(&url).await.0 == 200).await,
            "{} lost the job after the restart: {:?}\n{}",
            p.name,
            get(&url).await,
            logs(&all, "second.log")
        );
    }
    assert!(
        eventually(15, async || runs_in(&out)
            .iter()
            .any(|(s, n)| *s > restarted + 1_000 && n == "a"))
        .await,
        "the job did not run on its owner after the restart"
    );

    // (5) Deleted through C: it stops everywhere.
    let (status, body) = call(
        reqwest::Method::DELETE,
        &c.url(&format!("/v1/jobs/{name}")),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let deleted = now();
    for p in all {
        assert!(
            eventually(10, async || get(&p.url(&format!("/v1/jobs/{name}")))
                .await
                .0
                == 404)
            .await,
            "{} still has the job",
            p.name
        );
    }
    // Runs of slots up to 2 s after the delete may still have been started by the owner
    // before it heard of it, or until every node was seen to have forgotten it, if gossip
    // took longer on a loaded machine; none later.
    let forgotten = now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let last = (deleted + 2_000).max(forgotten);
    let late: Vec<(i64, String)> = runs_in(&out)
        .into_iter()
        .filter(|(s, _)| *s > last)
        .collect();
    assert!(late.is_empty(), "runs after the delete: {late:?}");
    for p in all {
        stop(procs.get_mut(p.name).unwrap(), p, "second.log");
    }
}

fn starling(args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("STARLING_API_TOKEN");
    if let Some(t) = token {
        cmd.env("STARLING_API_TOKEN", t);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A write without the token (or with a wrong one) gets 401 and changes nothing; the CLI
/// with the token manages jobs and says clearly what is wrong without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_the_token_and_the_cli_manages_jobs_with_it() {
    let root = tempfile::tempdir().unwrap();
    let n = Peer::new(root.path(), "solo");
    let mut proc = n.spawn(&[&n], "first.log");
    wait_for_cluster(&[&n], 1).await;
    let out = root.path().join("runs.txt");
    let definition = json!({
        "schedule": "* * * * * *",
        "command": format!("echo $STARLING_NODE_ID $STARLING_SCHEDULED_AT_MS >> {}", out.display()),
    });
    let url = n.url("/v1/jobs/sneaky");
    for token in [None, Some("api-test-token-0123456789abcdeX")] {
        let mut r = http().put(&url).json(&definition);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let response = r.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized", "{body}");
    }
    for (method, path) in [
        (reqwest::Method::POST, "/v1/jobs/sneaky/run"),
        (reqwest::Method::DELETE, "/v1/jobs/sneaky"),
    ] {
        let s = http()
            .request(method, n.url(path))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(s, 401, "{path}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(get(&url).await.0, 404, "the refused write created the job");
    let (_, jobs) = get(&n.url("/v1/jobs")).await;
    assert_eq!(jobs["jobs"], json!([]), "{jobs}");
    assert!(!out.exists(), "the refused job ran");

    // The CLI, with the token from the environment.
    let api = format!("127.0.0.1:{}", n.api);
    let cmd = format!(
        "echo $STARLING_NODE_ID $STARLING_SCHEDULED_AT_MS >> {}",
        out.display()
    );
    let add = starling(
        &[
            "jobs",
            "add",
            "--api",
            &api,
            "--name",
            "cli-job",
            "--schedule",
            "@every 1s",
            "--command",
            &cmd,
        ],
        Some(TOKEN),
    );
    assert!(add.status.success(), "{}", text(&add));
    assert!(text(&add).contains("job `cli-job` saved"), "{}", text(&add));
    let ls = starling(&["jobs", "ls", "--api", &api], Some(TOKEN));
    assert!(ls.status.success(), "{}", text(&ls));
    let ls = text(&ls);
    assert!(
        ls.starts_with("NAME") && ls.contains("cli-job") && ls.contains("solo"),
        "{ls}"
    );
    let json_ls = starling(&["jobs", "ls", "--api", &api, "--json"], Some(TOKEN));
    let parsed: Value = serde_json::from_slice(&json_ls.stdout).unwrap();
    assert_eq!(parsed["jobs"][0]["name"], "cli-job");
    let members = starling(&["members", "--api", &api], Some(TOKEN));
    assert!(
        text(&members).contains("solo (this)") && text(&members).contains("alive"),
        "{}",
        text(&members)
    );
    assert!(
        eventually(10, async || !runs_in(&out).is_empty()).await,
        "the CLI's job never ran"
    );
    let runs = starling(&["runs", "--job", "cli-job", "--api", &api], Some(TOKEN));
    assert!(
        text(&runs).contains("cli-job") && text(&runs).contains("ok"),
        "{}",
        text(&runs)
    );
    let show = starling(&["jobs", "show", "cli-job", "--api", &api], Some(TOKEN));
    assert!(
        text(&show).contains("@every 1s") && text(&show).contains("last runs"),
        "{}",
        text(&show)
    );

    // Clear errors: no token, a job file's bad field, an address nobody listens on.
    let denied = starling(&["jobs", "rm", "cli-job", "--api", &api], None);
    assert!(!denied.status.success());
    assert!(
        text(&denied).contains("STARLING_API_TOKEN"),
        "{}",
        text(&denied)
    );
    let bad = root.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[jobs]]\nname = \"bad\"\nschedule = \"0 61 * * * *\"\ncommand = \"x\"\n",
    )
    .unwrap();
    let refused = starling(
        &["jobs", "add", bad.to_str().unwrap(), "--api", &api],
        Some(TOKEN),
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("`schedule`") && text(&refused).contains("invalid_job"),
        "{}",
        text(&refused)
    );
    let nobody = format!("127.0.0.1:{}", free_tcp_port());
    let unreachable = starling(&["members", "--api", &nobody], Some(TOKEN));
    assert!(!unreachable.status.success());
    assert!(
        text(&unreachable).contains(&nobody),
        "{}",
        text(&unreachable)
    );

    let rm = starling(&["jobs", "rm", "cli-job", "--api", &api], Some(TOKEN));
    assert!(rm.status.success(), "{}", text(&rm));
    assert_eq!(get(&n.url("/v1/jobs/cli-job")).await.0, 404);
    stop(&mut proc, &n, "first.log");
}

/// The drift test on real processes, asserted through the API: a's and b's jobs
/// files define `drift` differently and c's lacks it. Every node's `GET /v1/jobs` reports
/// the conflict with the same chosen definition, `/metrics` counts it, the log names it,
/// and the run log shows the chosen definition alone running, once per slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_files_that_disagree_are_reported_and_one_definition_runs_once_per_slot() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        Peer::new(root.path(), "a"),
        Peer::new(root.path(), "b"),
        Peer::new(root.path(), "c"),
    );
    let out = root.path().join("runs");
    // Each definition appends its tag and the slot: `A <slot>` or `B <slot>`. Runs may
    // overlap: under `forbid` a slot may be skipped behind the late catch-up runs of a
    // node that just started (documented; CI saw it once), and this test is about drift.
    let drift = |tag: &str| {
        format!(
            "[[jobs]]\nname = \"drift\"\nschedule = \"@every 1s\"\noverlap = \"allow\"\ncommand = \"echo {tag} $STARLING_SCHEDULED_AT_MS >> {}\"\n",
            out.display()
        )
    };
    let peers = [&a, &b, &c];
    let mut procs = [
        a.spawn_with_jobs(&peers, "first.log", &drift("A")),
        b.spawn_with_jobs(&peers, "first.log", &drift("B")),
        c.spawn_with_jobs(&peers, "first.log", ""),
    ];
    wait_for_cluster(&peers, 3).await;

    // c (whose file lacks the job) reports the drift and which definition runs.
    let mut chosen = None;
    let seen = eventually(10, async || {
        let (_, page) = get(&c.url("/v1/jobs")).await;
        chosen = page["conflicts"].as_array().and_then(|cs| {
            let drift = cs
                .iter()
                .find(|x| x["kind"] == "file_drift" && x["job"] == "drift")?;
            let defs = drift["definitions"].as_array()?;
            (defs.len() == 2).then_some(())?;
            let pick = defs.iter().find(|d| d["chosen"] == true)?;
            Some((pick["definition"]["command"].clone(), pick["nodes"].clone()))
        });
        chosen.is_some()
    })
    .await;
    assert!(
        seen,
        "c never reported the drift\n{}",
        logs(&peers, "first.log")
    );
    let (command, nodes) = chosen.unwrap();
    let tag = if command.as_str().unwrap().starts_with("echo A ") {
        "A"
    } else {
        "B"
    };
    // Every node reports the same conflict, and the same definition as the one that runs.
    for p in peers {
        let ok = eventually(5, async || {
            let (_, job) = get(&p.url("/v1/jobs/drift")).await;
            job["definition"]["command"] == command
                && job["source"]["file"]["nodes"] == nodes
                && job["conflicts"].as_array().is_some_and(|c| c.len() == 1)
        })
        .await;
        assert!(ok, "{} shows another definition or no conflict", p.name);
        let metrics = http()
            .get(p.url("/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            metric(&metrics, "starling_catalog_conflicts"),
            Some(1.0),
            "{}: {metrics}",
            p.name
        );
        assert!(
            metric(&metrics, "starling_catalog_conflicts_detected_total").unwrap_or(0.0) >= 1.0,
            "{}: {metrics}",
            p.name
        );
    }
    let log = std::fs::read_to_string(c.dir.join("first.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("catalog conflict") && l.contains("drift")),
        "c's log does not name the conflict:\n{log}"
    );

    // Every slot of a 4-second window ran exactly once, by the chosen definition.
    let from = (now() / 1000 + 1) * 1000;
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let to = (now() / 1000 - 1) * 1000;
    let mut slots: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (slot, t) in runs_in(&out) {
        slots.entry(slot).or_default().push(t);
    }
    for slot in (from..=to).step_by(1000) {
        assert_eq!(
            slots.get(&slot),
            Some(&vec![tag.to_string()]),
            "slot {slot} (window {from}..={to}, chosen {tag}): {slots:?}\n{}",
            logs(&peers, "first.log")
        );
    }
    for (p, proc) in peers.iter().zip(procs.iter_mut()) {
        stop(proc, p, "first.log");
    }
}
