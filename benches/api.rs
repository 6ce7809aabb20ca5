//! API benchmarks (run by hand; figures in the README's Performance table):
//!
//! - `list`: `GET /v1/jobs` on a node holding 10,000 API jobs, p50/p99/max over 200
//!   requests, beside `GET /healthz` on the same server in the same run (the cost of HTTP
//!   alone). Target: p99 < 50 ms. Also each GET right after a change of one job (50): the
//!   node makes that job's listing entry and its part of the page again and splices the
//!   rest from the last ones. And each GET right after a membership change (an in-process
//!   peer over real UDP on loopback joins or leaves, 24 changes): owners move, so the node
//!   makes its whole listing again.
//! - `first-run`: on 3 real processes (the release binary) at the default gossip
//!   interval, the time from a `PUT` on one node to the first run of the job on its owner,
//!   over `BENCH_TRIES` tries (default 20). Each job fires every second, so part of that
//!   time is the wait for its first slot; that part is reported too. Target: p99 <= 1.5 s.
//!
//! - `put`: PUT throughput on one real process (the release binary): `BENCH_PUTS`
//!   (default 5,000) distinct jobs written by 64 concurrent HTTP/1.1 clients (reqwest,
//!   keep-alive), beside `GET /healthz` by the same clients in the same run (the server's
//!   HTTP ceiling). Target: >= 1,000 PUT/s.
//!
//! `cargo bench --bench api` runs all three; `cargo bench --bench api -- list` (or
//! `first-run`, `put`) one.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use starling::api::{ApiConfig, ApiServer, Token};
use starling::core::job::RawJob;
use starling::{Node, NodeConfig, NodeHandle, NodeId, View};

const TOKEN: &str = "bench-token-0123456789abcdef";
const BIN: &str = env!("CARGO_BIN_EXE_starling");

#[allow(clippy::disallowed_methods)] // benchmark measurement clock
fn mono_now() -> std::time::Instant {
    std::time::Instant::now()
}

#[allow(clippy::disallowed_methods)] // benchmark measurement clock: shared with the jobs' `date`
fn wall_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "p50 {:.1} p99 {:.1} max {:.1} (n = {})",
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN),
        v.len()
    )
}

fn free_udp() -> std::net::SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
}

/// A GET of `url` with the token; it must succeed.
async fn send_get(http: &reqwest::Client, url: &str) -> reqwest::Response {
    let r = http.get(url).bearer_auth(TOKEN).send().await;
    let r = r.expect("an answer");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r
}

/// The JSON answer of a GET of `url`, with the token.
async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let r = send_get(http, url).await;
    r.json().await.expect("a JSON answer")
}

/// Milliseconds each of `n` GETs of `url` took.
async fn time_gets(http: &reqwest::Client, url: &str, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = mono_now();
        let _ = send_get(http, url).await.bytes().await.expect("body");
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    out
}

/// Membership changes the `list` bench makes: a peer joins, then leaves, this many times.
const MEMBERSHIP_CYCLES: usize = 12;
/// How long the bench waits for the measured node's view to take in one join or leave.
const VIEW_WAIT: Duration = Duration::from_secs(60);
/// The pause after each membership change of the `list` bench, before the next.
const SETTLE: Duration = Duration::from_secs(1);

/// The first `GET /v1/jobs` after each membership change, in ms.
struct Membership {
    all: Vec<f64>,
    joins: Vec<f64>,
    leaves: Vec<f64>,
    /// Shortest and longest wait for the view to change, in s.
    wait_min: f64,
    wait_max: f64,
    timeouts: usize,
}

/// Waits (up to [`VIEW_WAIT`]) until `node`'s members differ from `before`; false if they
/// did not in time.
async fn view_changed(
    node: &NodeHandle,
    view: &mut tokio::sync::watch::Receiver<View>,
    before: &[NodeId],
) -> bool {
    let t = mono_now();
    while node.members() == before {
        let left = VIEW_WAIT.saturating_sub(t.elapsed());
        match tokio::time::timeout(left, view.changed()).await {
            Ok(Ok(())) => {}
            _ => return node.members() != before,
        }
    }
    true
}

/// Times the first `GET` of `url` right after each membership change of `node` (whose
/// gossip address is `gossip`): an in-process peer over real UDP on loopback, seeded with
/// `node`, joins, then leaves (a graceful shutdown, or every fourth time an abort, which
/// `node` finds out through failure detection), [`MEMBERSHIP_CYCLES`] times. Each change
/// moves owners, so the node makes its whole listing again.
async fn membership_changes(
    node: &NodeHandle,
    gossip: std::net::SocketAddr,
    http: &reqwest::Client,
    url: &str,
) -> Membership {
    let mut out = Membership {
        all: Vec::new(),
        joins: Vec::new(),
        leaves: Vec::new(),
        wait_min: f64::INFINITY,
        wait_max: 0.0,
        timeouts: 0,
    };
    let mut peer = None;
    let mut leaving = Vec::new();
    let mut view = node.watch_view();
    for i in 0..MEMBERSHIP_CYCLES {
        for join in [true, false] {
            let before = node.members();
            view.borrow_and_update();
            let t = mono_now();
            if join {
                // A new id each time: a node that left stays known to chitchat as dead.
                let mut c = NodeConfig::new(format!("peer-{i:02}"), free_udp());
                c.seeds = vec![gossip];
                peer = Some(Node::builder(c).start().await.expect("a peer"));
            } else if let Some(p) = peer.take() {
                if i % 4 == 3 {
                    p.abort();
                } else {
                    // Not awaited here: the view changes while the peer drains and stops.
                    leaving.push(tokio::spawn(p.shutdown()));
                }
            }
            if !view_changed(node, &mut view, &before).await {
                out.timeouts += 1;
                continue;
            }
            let waited = t.elapsed().as_secs_f64();
            out.wait_min = out.wait_min.min(waited);
            out.wait_max = out.wait_max.max(waited);
            let ms = time_gets(http, url, 1).await;
            if join {
                out.joins.extend(&ms);
            } else {
                out.leaves.extend(&ms);
            }
            out.all.extend(ms);
            // Let the change settle (the peer learns the catalog, or is found dead) before
            // the next one.
            tokio::time::sleep(SETTLE).await;
        }
    }
    if let Some(p) = peer {
        p.abort();
    }
    for l in leaving {
        let _ = l.await;
    }
    out
}

async fn list(jobs: usize) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gossip = free_udp();
    let mut config = NodeConfig::new("bench", gossip);
    config.api_addr = Some(addr);
    let node = Arc::new(Node::builder(config).start().await.unwrap());
    let api = ApiConfig {
        token: Some(Token::new(TOKEN, "bench").unwrap()),
        ..ApiConfig::default()
    };
    let server = ApiServer::start(listener, node.clone(), api);
    let t = mono_now();
    for i in 0..jobs {
        let raw = RawJob {
            name: Some(format!("job-{i:05}")),
            schedule: Some(
                if i % 2 == 0 {
                    "@every 1h"
                } else {
                    "0 15 3 * * *"
                }
                .into(),
            ),
            command: Some(format!("echo job {i}")),
            ..RawJob::default()
        };
        node.catalog().put_job(raw).await.expect("put");
    }
    println!(
        "list: {jobs} jobs put through the handle in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let page = get_json(&http, &format!("{base}/v1/jobs")).await;
    let listed = page["jobs"].as_array().map_or(0, Vec::len);
    let n_jobs = jobs;
    assert_eq!(listed, jobs, "the list holds every job");
    let _ = time_gets(&http, &format!("{base}/v1/jobs"), 10).await;
    // Where the time goes: the catalog's own listing, without HTTP or JSON.
    let mut listing = Vec::new();
    for _ in 0..50 {
        let t = mono_now();
        let jobs = node.catalog().jobs().await.expect("list");
        listing.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(jobs.len(), n_jobs);
    }
    println!("list: catalog().jobs() ms: {}", summary(listing));
    let healthz = time_gets(&http, &format!("{base}/healthz"), 200).await;
    let all = time_gets(&http, &format!("{base}/v1/jobs"), 200).await;
    let one = time_gets(&http, &format!("{base}/v1/jobs/job-04242"), 200).await;
    // Each GET right after a change (a pause or resume of one job): the node makes that
    // job's entry again, in its listing and in the page, as it does once per change or per
    // next slot.
    let mut changed = Vec::new();
    for i in 0..50 {
        let name = format!("job-{:05}", i * 97 % jobs);
        if i % 2 == 0 {
            node.catalog().pause_job(&name).await.expect("pause");
        } else {
            node.catalog().resume_job(&name).await.expect("resume");
        }
        changed.extend(time_gets(&http, &format!("{base}/v1/jobs"), 1).await);
    }
    let membership = membership_changes(&node, gossip, &http, &format!("{base}/v1/jobs")).await;
    println!("list: GET /healthz        ms: {}", summary(healthz));
    println!("list: GET /v1/jobs        ms: {}", summary(all.clone()));
    println!("list: GET /v1/jobs/{{name}} ms: {}", summary(one));
    println!("list: GET /v1/jobs after a change ms: {}", summary(changed));
    println!(
        "list: GET /v1/jobs after a membership change ms: {}",
        summary(membership.all.clone())
    );
    println!(
        "list:   after a join ms: {}; after a leave ms: {}; view changed {:.1}-{:.1} s after the \
         join or leave began; {} waits for the view timed out",
        summary(membership.joins),
        summary(membership.leaves),
        membership.wait_min,
        membership.wait_max,
        membership.timeouts
    );
    let mut sorted = all;
    sorted.sort_by(|a, b| a.total_cmp(b));
    let p99 = percentile(&sorted, 0.99);
    println!(
        "target GET /v1/jobs with {jobs} jobs: p99 {p99:.1} ms < 50 ms -> {}",
        if p99 < 50.0 { "met" } else { "NOT met" }
    );
    let mut sorted = membership.all;
    sorted.sort_by(|a, b| a.total_cmp(b));
    let p99 = percentile(&sorted, 0.99);
    println!(
        "target GET /v1/jobs with {jobs} jobs after a membership change: p99 {p99:.1} ms < 50 ms \
         -> {}",
        if p99 < 50.0 { "met" } else { "NOT met" }
    );
    server.stop().await;
    if let Ok(node) = Arc::try_unwrap(node) {
        node.shutdown().await;
    }
}

/// A `starling run` child, killed when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &Path, name: &str, gossip: u16, api: u16, seeds: &[u16]) -> Peer {
    let jobs = dir.join("empty.toml");
    std::fs::write(&jobs, "").unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--node-id", name])
        .args(["--listen", &format!("127.0.0.1:{gossip}")])
        .args(["--api", &format!("127.0.0.1:{api}")])
        .args(["--jobs", &jobs.to_string_lossy()])
        .env("STARLING_API_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap());
    for s in seeds {
        cmd.args(["--seed", &format!("127.0.0.1:{s}")]);
    }
    Peer(cmd.spawn().expect("the starling binary"))
}

fn free_tcp() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn first_run(tries: usize) {
    let dir = tempfile::tempdir().unwrap();
    let gossip: Vec<u16> = (0..3).map(|_| free_udp().port()).collect();
    let apis: Vec<u16> = (0..3).map(|_| free_tcp()).collect();
    let names = ["a", "b", "c"];
    let _peers: Vec<Peer> = (0..3)
        .map(|i| {
            let seeds: Vec<u16> = (0..3).filter(|&k| k != i).map(|k| gossip[k]).collect();
            spawn(dir.path(), names[i], gossip[i], apis[i], &seeds)
        })
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let a = format!("http://127.0.0.1:{}", apis[0]);
    // Wait until a sees all three members.
    for _ in 0..200 {
        let ok = async {
            let page: serde_json::Value = http
                .get(format!("{a}/v1/members"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let alive = page["members"]
                .as_array()?
                .iter()
                .filter(|m| m["state"] == "alive")
                .count();
            (alive == 3).then_some(())
        }
        .await;
        if ok.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut total, mut slot_wait, mut after_slot) = (Vec::new(), Vec::new(), Vec::new());
    let mut owners = std::collections::BTreeMap::<String, usize>::new();
    for t in 0..tries {
        let out = dir.path().join(format!("run-{t}.txt"));
        let name = format!("first-{t}");
        // The run's start (ms, the same clock as `wall_ms`), its node and its slot.
        let body = serde_json::json!({
            "schedule": "* * * * * *",
            "command": format!("echo $(date +%s%3N) $STARLING_NODE_ID $STARLING_SCHEDULED_AT_MS >> {}", out.display()),
        });
        let sent = wall_ms();
        let r = http
            .put(format!("{a}/v1/jobs/{name}"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("PUT");
        assert!(r.status().is_success(), "PUT: {}", r.status());
        let job: serde_json::Value = r.json().await.unwrap();
        let owner = job["owner"].as_str().unwrap_or("?").to_string();
        let mut first = None;
        for _ in 0..100 {
            if let Some(line) = std::fs::read_to_string(&out)
                .ok()
                .and_then(|t| t.lines().next().map(str::to_string))
            {
                first = Some(line);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let line = first.unwrap_or_else(|| panic!("try {t}: {name} never ran"));
        let f: Vec<&str> = line.split_whitespace().collect();
        let (started, node, slot): (i64, &str, i64) =
            (f[0].parse().unwrap(), f[1], f[2].parse().unwrap());
        assert_eq!(node, owner, "try {t}: ran on {node}, owner {owner}");
        *owners.entry(owner).or_default() += 1;
        total.push((started - sent) as f64);
        // The slot's wait: from the PUT to the first second boundary after it.
        slot_wait.push((slot - sent).max(0) as f64);
        after_slot.push((started - slot) as f64);
        let _ = http
            .delete(format!("{a}/v1/jobs/{name}"))
            .bearer_auth(TOKEN)
            .send()
            .await;
        // Start the next try at a different point of the second.
        tokio::time::sleep(Duration::from_millis(700 + (t as u64 * 137) % 600)).await;
    }
    println!("first-run: owners {owners:?}");
    println!(
        "first-run: PUT to first run start  ms: {}",
        summary(total.clone())
    );
    println!(
        "first-run: PUT to its first slot   ms: {}",
        summary(slot_wait)
    );
    println!(
        "first-run: slot to run start       ms: {}",
        summary(after_slot)
    );
    let mut sorted = total;
    sorted.sort_by(|a, b| a.total_cmp(b));
    let p99 = percentile(&sorted, 0.99);
    println!(
        "target PUT to first run, p99 {p99:.0} ms <= 1500 ms -> {}",
        if p99 <= 1500.0 { "met" } else { "NOT met" }
    );
}

/// Requests per second of `n` requests made by `clients` concurrent tasks; `req(i)`
/// builds request `i`, which must succeed.
async fn throughput<F>(clients: usize, n: usize, req: F) -> f64
where
    F: Fn(usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let req = Arc::new(req);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = mono_now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (req, next) = (req.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let r = req(i).send().await.expect("an answer");
                    assert!(r.status().is_success(), "request {i}: {}", r.status());
                    let _ = r.bytes().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a client task");
    }
    n as f64 / t.elapsed().as_secs_f64()
}

async fn put(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (gossip, api) = (free_udp().port(), free_tcp());
    let _peer = spawn(dir.path(), "solo", gossip, api, &[]);
    let base = format!("http://127.0.0.1:{api}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(128)
        .build()
        .unwrap();
    let mut up = false;
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the node's API never answered");
    let clients = 64;
    let (h, b) = (http.clone(), base.clone());
    let healthz = throughput(clients, n, move |_| h.get(format!("{b}/healthz"))).await;
    let (h, b) = (http.clone(), base.clone());
    let puts = throughput(clients, n, move |i| {
        h.put(format!("{b}/v1/jobs/load-{i:06}"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({
                "schedule": "0 0 3 * * *",
                "command": format!("echo load {i}"),
            }))
    })
    .await;
    let page = get_json(&http, &format!("{base}/v1/jobs")).await;
    assert_eq!(
        page["jobs"].as_array().map_or(0, Vec::len),
        n,
        "every PUT is in the catalog"
    );
    println!("put: GET /healthz, {clients} clients: {healthz:.0} requests/s (baseline)");
    println!(
        "put: PUT /v1/jobs/{{name}}, {clients} clients, {n} jobs: {puts:.0} PUT/s ({:.2}x the baseline)",
        puts / healthz
    );
    println!(
        "target PUT throughput {puts:.0}/s >= 1000/s -> {}",
        if puts >= 1000.0 { "met" } else { "NOT met" }
    );
}

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let rt = tokio::runtime::Runtime::new().unwrap();
    if run("list") {
        rt.block_on(list(10_000));
    }
    if run("first-run") {
        let tries = std::env::var("BENCH_TRIES")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(20);
        rt.block_on(first_run(tries));
    }
    if run("put") {
        let n = std::env::var("BENCH_PUTS")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(5_000);
        rt.block_on(put(n));
    }
}
