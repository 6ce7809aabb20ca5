//! The console's routes over real HTTP, in front of a real node.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::*;
use crate::api::{ApiConfig, ApiServer, ErrorBody, Token};
use crate::node::{Node, NodeConfig, NodeHandle};

const TOKEN: &str = "console-token-0123456789";

/// A node with no jobs serving its API (with `config`) on loopback.
async fn serve(config: ApiConfig) -> (String, ApiServer, Arc<NodeHandle>) {
    let gossip = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut node_config = NodeConfig::new("n<1>", gossip);
    node_config.gossip_interval = Duration::from_millis(50);
    let node = Arc::new(Node::builder(node_config).start().await.unwrap());
    let server = ApiServer::start(listener, node.clone(), config);
    (format!("http://{addr}"), server, node)
}

fn with_token() -> ApiConfig {
    ApiConfig {
        token: Some(Token::new(TOKEN, "test").unwrap()),
        ..ApiConfig::default()
    }
}

/// `GET /v1/schedule` with `query`, expected to succeed.
async fn get_preview(
    http: &reqwest::Client,
    base: &str,
    query: &[(&str, &str)],
) -> SchedulePreview {
    let r = http
        .get(format!("{base}/v1/schedule"))
        .query(query)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{query:?}");
    r.json().await.unwrap()
}

async fn stop(server: ApiServer, node: Arc<NodeHandle>) {
    server.stop().await;
    if let Ok(node) = Arc::try_unwrap(node) {
        node.abort();
    }
}

#[tokio::test]
async fn the_page_and_its_files_need_no_token_and_carry_a_strict_policy() {
    let (base, server, node) = serve(with_token()).await;
    let http = reqwest::Client::new();
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"));
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    // The node id is escaped, and the page knows it must ask for the token.
    assert!(html.contains("data-node=\"n&lt;1&gt;\""), "{html}");
    assert!(html.contains("data-access=\"token\""));
    assert!(!html.contains("{{"));
    for (path, kind) in [
        ("/console/app.js", "text/javascript"),
        ("/console/style.css", "text/css"),
        ("/console/icon.svg", "image/svg+xml"),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        assert!(!r.text().await.unwrap().is_empty());
    }
    // Data still needs the token.
    let r = http
        .get(format!("{base}/v1/schedule?schedule=@hourly"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // And another path under /console is not a way around it.
    let r = http
        .get(format!("{base}/console/../v1/runs"))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 200);
    stop(server, node).await;
}

#[tokio::test]
async fn the_page_says_which_access_the_node_gives() {
    for (config, access) in [
        (ApiConfig::default(), "read-only"),
        (
            ApiConfig {
                insecure_writes: true,
                ..ApiConfig::default()
            },
            "open",
        ),
    ] {
        let (base, server, node) = serve(config).await;
        let html = reqwest::get(format!("{base}/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            html.contains(&format!("data-access=\"{access}\"")),
            "{access}"
        );
        stop(server, node).await;
    }
}

#[tokio::test]
async fn a_schedule_preview_gives_words_and_slots_in_the_jobs_zone() {
    let (base, server, node) = serve(ApiConfig::default()).await;
    let http = reqwest::Client::new();
    let preview = get_preview(
        &http,
        &base,
        &[
            ("schedule", "30 9 * * 1-5"),
            ("timezone", "Europe/Paris"),
            ("after", "2026-03-27T12:00:00Z"),
            ("count", "3"),
        ],
    )
    .await;
    assert_eq!(preview.words, "at 09:30, Monday to Friday");
    assert_eq!(preview.timezone, "Europe/Paris");
    // Friday 27 March 2026, then Monday 30 March after the change to summer time (UTC+2).
    assert_eq!(
        preview.next,
        [
            "2026-03-30T07:30:00.000Z",
            "2026-03-31T07:30:00.000Z",
            "2026-04-01T07:30:00.000Z"
        ]
    );
    // Without `after`, slots come after the node's clock.
    let now = node.now();
    let preview = get_preview(&http, &base, &[("schedule", "@every 2s")]).await;
    assert_eq!(preview.words, "every 2 seconds");
    assert_eq!(preview.next.len(), 3);
    let first = chrono::DateTime::parse_from_rfc3339(&preview.next[0]).unwrap();
    assert!(first.timestamp_millis() > now.0 && first.timestamp_millis() <= now.0 + 4_000);
    stop(server, node).await;
}

#[tokio::test]
async fn a_bad_schedule_preview_names_the_key_and_what_is_wrong() {
    let (base, server, node) = serve(ApiConfig::default()).await;
    let http = reqwest::Client::new();
    for (query, code, words) in [
        (
            vec![("schedule", "61 * * * *")],
            "bad_request",
            "`schedule`: `61 * * * *`: field `minute` (`61`): must be 0-59",
        ),
        (
            vec![("schedule", "@hourly"), ("timezone", "Mars/Olympus")],
            "bad_request",
            "`timezone`: unknown timezone `Mars/Olympus`",
        ),
        (
            vec![("schedule", "@hourly"), ("count", "51")],
            "bad_request",
            "`count`: 51 is outside 1..=50",
        ),
        (
            vec![("schedule", "@hourly"), ("after", "soon")],
            "bad_request",
            "`after`: `soon` is not an RFC 3339 time",
        ),
    ] {
        let r = http
            .get(format!("{base}/v1/schedule"))
            .query(&query)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query:?}");
        let body: ErrorBody = r.json().await.unwrap();
        assert_eq!(body.code, code);
        assert!(body.message.contains(words), "{query:?}: {}", body.message);
    }
    stop(server, node).await;
}

#[tokio::test]
async fn the_gossip_view_needs_the_token_and_says_an_open_node_is_open() {
    let (base, server, node) = serve(with_token()).await;
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/gossip");
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let view: GossipView = http
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view.node, "n<1>");
    assert_eq!(view.sealing_key, None);
    assert_eq!(view.keys_held, Vec::<String>::new());
    assert_eq!(view.peers, vec![]);
    stop(server, node).await;
}
