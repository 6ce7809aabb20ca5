//! The API over real HTTP on loopback, in front of real nodes gossiping over real UDP.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::core::job::{RawJob, parse_jobs_toml};
use crate::node::{Node, NodeConfig};

const TOKEN: &str = "test-token-0123456789";

struct Served {
    addr: SocketAddr,
    node: Arc<NodeHandle>,
    server: Option<ApiServer>,
}

impl Served {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(self) {
        if let Some(server) = self.server {
            server.stop().await;
        }
        if let Ok(node) = Arc::try_unwrap(self.node) {
            node.abort();
        }
    }
}

fn free_udp() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap()
}

/// A node `id` with `jobs` (a jobs file's text), seeded with `seeds`, serving its API
/// with `config`; `api: false` starts it without an API.
async fn start(
    id: &str,
    gossip: SocketAddr,
    seeds: &[SocketAddr],
    jobs: &str,
    config: ApiConfig,
    api: bool,
) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut node_config = NodeConfig::new(id, gossip);
    node_config.seeds = seeds.to_vec();
    node_config.gossip_interval = Duration::from_millis(50);
    node_config.api_addr = api.then_some(addr);
    let node = Arc::new(
        Node::builder(node_config)
            .jobs(parse_jobs_toml(jobs).unwrap())
            .unwrap()
            .start()
            .await
            .unwrap(),
    );
    let server = api.then(|| ApiServer::start(listener, node.clone(), config));
    Served { addr, node, server }
}

fn with_token() -> ApiConfig {
    ApiConfig {
        token: Some(Token::new(TOKEN, "test").unwrap()),
        ..ApiConfig::default()
    }
}

async fn error_of(response: reqwest::Response) -> (u16, ErrorBody) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_guards_everything_but_healthz_and_errors_are_json() {
    let api = start("a", free_udp(), &[], "", with_token(), true).await;
    let http = reqwest::Client::new();

    let health = http.get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["node"], "a");

    for (method, path) in [
        ("GET", "/metrics"),
        ("GET", "/v1/runs"),
        ("POST", "/v1/jobs/x/run"),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (status, e) =
            error_of(http.request(m.clone(), api.url(path)).send().await.unwrap()).await;
        assert_eq!(
            (status, e.code.as_str()),
            (401, "unauthorized"),
            "{method} {path}"
        );
        assert!(e.message.contains("STARLING_API_TOKEN"), "{}", e.message);
        let wrong = http
            .request(m, api.url(path))
            .bearer_auth("test-token-0123456780")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{method} {path} with a wrong token");
    }

    let metrics = http
        .get(api.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = metrics.text().await.unwrap();
    assert!(text.contains("# TYPE starling_members gauge"), "{text}");

    for (method, path, status, code) in [
        (reqwest::Method::GET, "/v2/nothing", 404, "not_found"),
        (
            reqwest::Method::DELETE,
            "/metrics",
            405,
            "method_not_allowed",
        ),
    ] {
        let r = http.request(method, api.url(path)).bearer_auth(TOKEN);
        let (got, e) = error_of(r.send().await.unwrap()).await;
        assert_eq!((got, e.code.as_str()), (status, code), "{path}");
    }
    for bad in [
        "/v1/runs?limit=0",
        "/v1/runs?limit=lots",
        "/v1/runs?colour=red",
        "/v1/runs?scope=galaxy",
    ] {
        let (status, e) = error_of(
            http.get(api.url(bad))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, e.code.as_str()), (400, "bad_request"), "{bad}");
        let field = bad.split(['?', '=']).nth(1).unwrap();
        assert!(e.message.contains(field), "{bad}: {}", e.message);
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_reads_are_served_and_writes_refused_unless_insecure() {
    let api = start("a", free_udp(), &[], "", ApiConfig::default(), true).await;
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(api.url("/v1/runs")).send().await.unwrap().status(),
        200
    );
    let (status, e) = error_of(http.post(api.url("/v1/jobs/x/run")).send().await.unwrap()).await;
    assert_eq!((status, e.code.as_str()), (403, "writes_disabled"));
    assert!(e.message.contains("--api-token-file"), "{}", e.message);
    api.stop().await;

    let insecure = ApiConfig {
        insecure_writes: true,
        ..ApiConfig::default()
    };
    let api = start("b", free_udp(), &[], "", insecure, true).await;
    let response = http.post(api.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(response.status(), 404, "past the token check");
    api.stop().await;
}

/// A client that sends its request head a byte at a time and then stalls is cut off by the
/// header timeout, while other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_its_headers_and_stalls_is_cut_off() {
    let config = ApiConfig {
        limits: ApiLimits {
            header_timeout: Duration::from_millis(800),
            ..ApiLimits::default()
        },
        ..ApiConfig::default()
    };
    let api = start("a", free_udp(), &[], "", config, true).await;
    let mut slow = TcpStream::connect(api.addr).await.unwrap();
    for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\n" {
        slow.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Stalled, head unfinished. Others are still served.
    let http = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(
            http.get(api.url("/healthz")).send().await.unwrap().status(),
            200
        );
    }
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the stalled connection was not closed");
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("200 OK"), "{text}");

    // A kept-alive connection that sends nothing is closed too.
    let mut idle = TcpStream::connect(api.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the idle connection was not closed");
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    api.stop().await;
}

/// `GET /v1/runs` on any node gathers every node's runs, and says which node has no API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_gathered_from_every_node_with_an_api() {
    let jobs = (0..6)
        .map(|i| {
            format!("[[jobs]]\nname = \"j{i}\"\nschedule = \"@every 1s\"\ncommand = \"echo ran\"\n")
        })
        .collect::<String>();
    let (ga, gb, gc) = (free_udp(), free_udp(), free_udp());
    // Side by side, as a cluster starts: a node with seeds probes them for its id first,
    // and one started alone would run every job before the others joined.
    let (sa, sb, sc) = ([gb, gc], [ga, gc], [ga, gb]);
    let (a, b, c) = tokio::join!(
        start("a", ga, &sa, &jobs, with_token(), true),
        start("b", gb, &sb, &jobs, with_token(), true),
        start("c", gc, &sc, &jobs, with_token(), false),
    );
    for n in [&a.node, &b.node, &c.node] {
        assert!(n.wait_for_members(3, Duration::from_secs(10)).await);
    }
    // Both APIs are known to both nodes.
    for _ in 0..100 {
        if a.node.api_addresses().len() == 2 && b.node.api_addresses().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        b.node.api_addresses().get(&crate::NodeId::new("a")),
        Some(&a.addr)
    );
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let http = reqwest::Client::new();
    let page: RunsPage = http
        .get(b.url("/v1/runs?limit=1000"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ran_on = |n: &str| page.runs.iter().filter(|r| r.node == n).count();
    let owner_has = |n: &str| {
        (0..6).any(|i| {
            a.node
                .owner_of(&format!("j{i}"))
                .is_some_and(|o| o.as_str() == n)
        })
    };
    for n in ["a", "b"] {
        assert_eq!(ran_on(n) > 0, owner_has(n), "runs of {n}: {page:?}");
    }
    assert_eq!(ran_on("c"), 0, "c has no API");
    let answered: Vec<(&str, bool)> = page
        .nodes
        .iter()
        .map(|n| (n.node.as_str(), n.answered))
        .collect();
    assert_eq!(answered, vec![("a", true), ("b", true), ("c", false)]);
    assert!(page.nodes[2].error.as_deref().unwrap().contains("--api"));
    assert!(
        page.runs
            .windows(2)
            .all(|w| w[0].last_slot_ms >= w[1].last_slot_ms)
    );
    assert!(
        page.runs
            .iter()
            .all(|r| r.stdout == "ran\n" && r.outcome == crate::RunOutcome::Ok)
    );

    let one: RunsPage = http
        .get(a.url("/v1/runs?job=j1&limit=2"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(one.runs.len() <= 2 && one.runs.iter().all(|r| r.job == "j1"));
    for s in [a, b, c] {
        s.stop().await;
    }
}

/// The write side's errors: each with its stable code and status, a bad field named, an
/// oversize body (413), a clash with a jobs file (409), a slow body (408).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_checked_bounded_and_answered_with_stable_codes() {
    let config = ApiConfig {
        limits: ApiLimits {
            request_timeout: Duration::from_millis(800),
            ..ApiLimits::default()
        },
        ..with_token()
    };
    let file_job = "[[jobs]]\nname = \"from-file\"\nschedule = \"@every 1s\"\ncommand = \"true\"\n";
    let api = start("a", free_udp(), &[], file_job, config, true).await;
    let http = reqwest::Client::new();
    let put = |name: &str, body: String| {
        http.put(api.url(&format!("/v1/jobs/{name}")))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
    };
    let good = r#"{"schedule": "@every 1s", "command": "true"}"#.to_string();
    let response = put("dyn", good.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    let job: JobView = response.json().await.unwrap();
    assert_eq!(
        (job.name.as_str(), job.owner.as_deref()),
        ("dyn", Some("a"))
    );
    assert_eq!(job.next.len(), 5);

    let (status, e) = error_of(
        put(
            "dyn",
            r#"{"schedule": "@every 1s", "command": "true", "retries": -1}"#.into(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, e.code.as_str()), (400, "invalid_job"));
    assert!(e.message.contains("`retries`"), "{}", e.message);
    let (status, e) = error_of(put("from-file", good.clone()).await.unwrap()).await;
    assert_eq!(
        (status, e.code.as_str()),
        (409, "conflict"),
        "{}",
        e.message
    );
    let (status, e) = error_of(
        put(
            "dyn",
            format!("{{\"command\": \"{}\"}}", "x".repeat(100_000)),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, e.code.as_str()),
        (413, "too_large"),
        "{}",
        e.message
    );
    // A new client: the server closes a connection whose body it refused unread, and the
    // pool could hand that connection to the next request (IncompleteMessage, once).
    let http = reqwest::Client::new();
    for (method, path, want) in [
        (reqwest::Method::GET, "/v1/jobs/none", (404, "not_found")),
        (reqwest::Method::DELETE, "/v1/jobs/none", (404, "not_found")),
        (
            reqwest::Method::POST,
            "/v1/jobs/none/pause",
            (404, "not_found"),
        ),
        (
            reqwest::Method::POST,
            "/v1/runs/xyz/cancel",
            (400, "bad_request"),
        ),
    ] {
        let response = http
            .request(method, api.url(path))
            .bearer_auth(TOKEN)
            .send();
        let (status, e) = error_of(response.await.unwrap()).await;
        assert_eq!((status, e.code.as_str()), want, "{path}: {}", e.message);
    }
    let response = http.post(api.url("/v1/runs/xyz/cancel")).bearer_auth(TOKEN);
    let (_, e) = error_of(response.send().await.unwrap()).await;
    assert!(e.message.contains("`fire_id`"), "{}", e.message);
    let response = http.post(api.url("/v1/jobs/dyn/run")).bearer_auth(TOKEN);
    let run: RunRequested = response.send().await.unwrap().json().await.unwrap();
    assert_eq!(run.fire_id.len(), 16);

    // A body that stops halfway is answered 408 once the request's time is up.
    let mut slow = TcpStream::connect(api.addr).await.unwrap();
    let head = format!(
        "PUT /v1/jobs/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{\"sched"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    let answer = String::from_utf8_lossy(&buf);
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("\"timeout\""),
        "{answer}"
    );
    assert_eq!(
        http.get(api.url("/v1/jobs/slow"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    api.stop().await;
}

/// `GET /v1/jobs` is served from the last answer while nothing changed (issue 15: 10,000
/// jobs in < 50 ms); each thing it shows still follows its source at once: the clock
/// (`next`), the catalog (a put, a pause) and the membership view (owners).
#[tokio::test]
async fn the_job_list_follows_the_clock_the_catalog_and_the_members() {
    let jobs = "[[jobs]]\nname = \"tick\"\nschedule = \"@every 1s\"\ncommand = \"true\"\n";
    let (ga, gb) = (free_udp(), free_udp());
    // No seeds: a node with seeds is no member until it has checked its clock against its
    // peers' (see `node::skew`), and the first answer must show `a` as the owner. b, later,
    // joins through a.
    let a = start("a", ga, &[], jobs, with_token(), true).await;
    let http = reqwest::Client::new();
    let list = || async {
        let r = http
            .get(a.url("/v1/jobs"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<JobsPage>().await.unwrap()
    };
    let first = list().await;
    assert_eq!(first.jobs.len(), 1);
    assert_eq!(first.jobs[0].owner.as_deref(), Some("a"));
    // The clock: once its next slot has come, the answer shows the one after.
    let next = first.jobs[0].next[0].clone();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = list().await;
    assert!(later.jobs[0].next[0] > next, "{later:?} after {next}");

    // The catalog: a put and a pause show in the next answer.
    for i in 0..8 {
        let raw = RawJob {
            name: Some(format!("dyn-{i}")),
            schedule: Some("@every 1h".into()),
            command: Some("true".into()),
            ..RawJob::default()
        };
        a.node.catalog().put_job(raw).await.unwrap();
    }
    assert_eq!(list().await.jobs.len(), 9);
    a.node.catalog().pause_job("dyn-3").await.unwrap();
    let page = list().await;
    let dyn3 = page.jobs.iter().find(|j| j.name == "dyn-3").unwrap();
    assert!(dyn3.paused && dyn3.next.is_empty(), "{dyn3:?}");
    // Each answer after a change is made from the one before (issue 15): a delete, a
    // resume, a replaced definition and a new one show too, and every entry is the job's own answer.
    a.node.catalog().delete_job("dyn-5").await.unwrap();
    a.node.catalog().resume_job("dyn-3").await.unwrap();
    for name in ["dyn-6", "dyn-8"] {
        let raw = RawJob {
            name: Some(name.into()),
            schedule: Some("@every 2h".into()),
            command: Some("false".into()),
            ..RawJob::default()
        };
        a.node.catalog().put_job(raw).await.unwrap();
    }
    let page = list().await;
    assert_eq!(page.jobs.len(), 9);
    assert!(page.jobs.iter().all(|j| j.name != "dyn-5"));
    for job in &page.jobs {
        let own = a.node.catalog().job(&job.name).await.unwrap();
        let version = own.version.as_ref().map(|v| v.to_string());
        assert_eq!(
            (&job.definition, job.paused, &job.version),
            (&own.definition, own.paused, &version),
            "{}",
            job.name
        );
    }

    // The members: with b in, each job's owner in the list is the one the job's own
    // answer (never cached) names.
    let b = start("b", gb, &[ga], "", with_token(), false).await;
    assert!(a.node.wait_for_members(2, Duration::from_secs(10)).await);
    let page = list().await;
    for job in &page.jobs {
        let own = a.node.catalog().job(&job.name).await.unwrap();
        assert_eq!(
            job.owner.as_deref(),
            own.owner.as_ref().map(|o| o.as_str()),
            "{}",
            job.name
        );
    }
    assert!(
        page.jobs.iter().any(|j| j.owner.as_deref() == Some("b")),
        "b owns some of the 9 jobs: {page:?}"
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_jobs_are_put_shown_without_slots_and_cycles_are_refused_by_name() {
    let api = start("a", free_udp(), &[], "", with_token(), true).await;
    let http = reqwest::Client::new();
    let put = |name: &str, body: &str| {
        http.put(api.url(&format!("/v1/jobs/{name}")))
            .bearer_auth(TOKEN)
            .body(body.to_string())
            .send()
    };
    let extract = r#"{"schedule": "@every 1h", "command": "true"}"#;
    assert_eq!(put("extract", extract).await.unwrap().status(), 200);
    let (status, e) = error_of(
        put("load", r#"{"after": ["extrakt"], "command": "true"}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, e.code.as_str()), (400, "invalid_job"));
    assert_eq!(
        e.message,
        "job `load`: `after`: no job `extrakt` in the catalog"
    );
    let response = put("load", r#"{"after": ["extract"], "command": "true"}"#)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let job: JobView = response.json().await.unwrap();
    assert_eq!(job.definition.after, Some(vec!["extract".to_string()]));
    assert_eq!((job.definition.schedule, job.next.len()), (None, 0));
    // extract after load would close a cycle.
    let (status, e) = error_of(
        put("extract", r#"{"after": ["load"], "command": "true"}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, e.code.as_str()), (400, "invalid_job"));
    assert_eq!(
        e.message,
        "job `extract`: `after`: cycle extract -> load -> extract"
    );
    let jobs = || async {
        let r = http.get(api.url("/v1/jobs")).bearer_auth(TOKEN).send();
        r.await.unwrap().json::<JobsPage>().await.unwrap()
    };
    assert!(jobs().await.conflicts.is_empty());
    // Deleting the parent leaves the child, reported as waiting for it.
    let deleted = http
        .delete(api.url("/v1/jobs/extract"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let job: JobView = http
        .get(api.url("/v1/jobs/load"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conflict = serde_json::to_string(&job.conflicts).unwrap();
    assert!(
        conflict.contains("missing_parent") && conflict.contains("extract"),
        "{conflict}"
    );
    // The list made from the one before shows it too: the child changed with its parent.
    let page = jobs().await;
    assert_eq!(page.jobs.len(), 1);
    assert_eq!(page.jobs[0].conflicts, job.conflicts);
    assert_eq!(page.conflicts, job.conflicts);
    api.stop().await;
}
