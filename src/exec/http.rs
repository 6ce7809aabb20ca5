//! HTTP jobs: one request per attempt, with the slot's fire id as its idempotency key.

use std::sync::OnceLock;
use std::time::Duration;

use super::{Outcome, Report, RunContext};
use crate::core::http::{HttpSpec, Method};

/// How long connecting may take when the job sets no `timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most response bytes read: past this the rest is not read (the tail kept is of what was
/// read), so an endless response cannot hold a run forever.
const MAX_READ_BYTES: usize = 1024 * 1024;

/// One client for the process: it pools connections across runs.
fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .user_agent(concat!("starling/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Sends one attempt's request. Success when the status is one `expect_status` accepts;
/// the status line and the last `tail` bytes of the body go into the report's standard
/// output tail, and into the failure's message.
pub(super) async fn run_http(
    spec: &HttpSpec,
    ctx: &RunContext,
    timeout: Option<Duration>,
    tail: usize,
) -> Report {
    let client = match client() {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(e).into(),
    };
    let method = match spec.method {
        Method::Get => reqwest::Method::GET,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
        Method::Patch => reqwest::Method::PATCH,
        Method::Delete => reqwest::Method::DELETE,
        Method::Head => reqwest::Method::HEAD,
    };
    let mut req = client
        .request(method, &spec.url)
        .header("Idempotency-Key", ctx.fire_id.to_string())
        .header("X-Starling-Epoch", ctx.epoch.to_string())
        .header("X-Starling-Job", ctx.job.as_str())
        .header("X-Starling-Scheduled-At", ctx.scheduled_at.to_rfc3339())
        .header("X-Starling-Attempt", ctx.attempt.to_string());
    for (name, value) in &spec.headers {
        req = req.header(name, value);
    }
    if let Some(body) = &spec.body {
        req = req.body(body.clone());
    }
    let exchange = async {
        let mut resp = req.send().await?;
        let status = resp.status();
        let mut kept: Vec<u8> = Vec::new();
        let mut read = 0usize;
        while read < MAX_READ_BYTES {
            let Some(chunk) = resp.chunk().await? else {
                break;
            };
            read += chunk.len();
            kept.extend_from_slice(&chunk);
            if kept.len() > tail {
                kept.drain(..kept.len() - tail);
            }
        }
        Ok::<_, reqwest::Error>((status, kept))
    };
    let result = match timeout {
        Some(t) => match tokio::time::timeout(t, exchange).await {
            Ok(r) => r,
            Err(_) => return Outcome::TimedOut.into(),
        },
        None => exchange.await,
    };
    match result {
        Ok((status, body)) => {
            let body = String::from_utf8_lossy(&body);
            let line = format!(
                "HTTP {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
            let line = line.trim_end();
            let outcome = if spec.expect_status.accepts(status.as_u16()) {
                Outcome::Success
            } else {
                Outcome::Failed(format!("{line}, expected {}", spec.expect_status))
            };
            Report {
                outcome,
                stdout_tail: format!("{line}\n{body}"),
                stderr_tail: String::new(),
            }
        }
        Err(e) => Outcome::Failed(request_error(e)).into(),
    }
}

/// A request error with its causes (reqwest's own text hides them), without the URL's
/// query string, which may hold a token.
fn request_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
