//! The web console: one page served by every node at `GET /` on the API port, showing the
//! whole cluster live from the API (members, jobs, a timeline of runs) and, with the token,
//! changing jobs.
//!
//! Its files are in `src/console/assets/`, embedded in the binary with `include_str!`:
//! `cargo build` gives the console, with no build step and nothing fetched from the
//! internet. It is plain JavaScript with no library. The page and its files hold no data
//! and need no token; everything it shows comes from the API, asked with the token the
//! user enters in the page (kept in the tab's `sessionStorage`, sent only to this node).
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the page (`index.html`, with this node's id and access mode filled in) |
//! | `GET /console/{app.js,style.css,icon.svg}` | its script, style sheet and icon |
//! | `GET /v1/schedule?schedule=S&timezone=TZ&dst=D&count=N&after=T` | `S` in words and its next `N` slots (default 3, at most 50) after `T` (RFC 3339; default now), as [`SchedulePreview`]; a bad schedule is a 400 naming the key |
//! | `GET /v1/gossip` | this node's gossip keys (sealing, held, each peer's) and packet counters, as [`GossipView`], for the members table's key column |
//!
//! The page polls `GET /v1/members`, `GET /v1/jobs` and `GET /v1/runs` every 2 s while it
//! is visible (not in a background tab), and asks `GET /v1/schedule` for a job only when
//! its cached slots run out; see the README's "Console" section for the request rate.

mod gossip;
mod words;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::DateTime;
use serde::{Deserialize, Serialize};

pub use gossip::{GossipView, Packets, PeerKey};
pub use words::describe;

use crate::api::{Access, ApiError, ApiState};
use crate::core::job::{JobError, RawJob};
use crate::core::types::UnixMillis;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// The page may load only its own files and talk only to its own node: a job's output or
/// name can never bring in a script (the page also writes every value as text).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'none'; frame-ancestors 'none'; \
                   base-uri 'none'";

/// Most slots one `GET /v1/schedule` lists.
pub const MAX_PREVIEW_SLOTS: usize = 50;

/// The console's routes (merged into the API's router).
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(index))
        .route(
            "/console/app.js",
            get(|| file(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/console/style.css",
            get(|| file(STYLE_CSS, "text/css; charset=utf-8")),
        )
        .route("/console/icon.svg", get(|| file(ICON_SVG, "image/svg+xml")))
        .route("/v1/schedule", get(schedule))
        .route("/v1/gossip", get(gossip::gossip))
}

/// True for the paths of the console's page and files, which need no token.
pub(crate) fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/" | "/console/app.js" | "/console/style.css" | "/console/icon.svg"
    )
}

/// Headers every console file carries.
fn with_headers(mut response: Response, content_type: &'static str) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change with the binary: always ask (they are small).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn file(text: &'static str, content_type: &'static str) -> Response {
    with_headers(text.into_response(), content_type)
}

async fn index(State(state): State<ApiState>) -> Response {
    let access = match state.access() {
        Access::Token => "token",
        Access::ReadOnly => "read-only",
        Access::OpenWrites => "open",
    };
    let node = escape_html(state.node().node_id().as_str());
    let page = INDEX_HTML
        .replace("{{NODE}}", &node)
        .replace("{{ACCESS}}", access);
    with_headers(page.into_response(), "text/html; charset=utf-8")
}

/// Escapes text for an HTML attribute or element (node ids are checked, but the page must
/// not depend on it).
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleQuery {
    schedule: String,
    timezone: Option<String>,
    dst: Option<String>,
    count: Option<usize>,
    after: Option<String>,
}

/// The answer of `GET /v1/schedule`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulePreview {
    /// The schedule as given.
    pub schedule: String,
    /// The timezone its cron times are read in.
    pub timezone: String,
    /// The schedule in words ([`describe`]).
    pub words: String,
    /// Its next slots, RFC 3339 UTC; fewer than asked (or none) when it has no more.
    pub next: Vec<String>,
}

async fn schedule(
    State(state): State<ApiState>,
    q: Result<Query<ScheduleQuery>, QueryRejection>,
) -> Result<Json<SchedulePreview>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let count = q.count.unwrap_or(3);
    if count == 0 || count > MAX_PREVIEW_SLOTS {
        return Err(ApiError::bad_request(format!(
            "`count`: {count} is outside 1..={MAX_PREVIEW_SLOTS}"
        )));
    }
    let after = match &q.after {
        None => state.node().now(),
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map(|t| UnixMillis(t.timestamp_millis()))
            .map_err(|e| {
                ApiError::bad_request(format!("`after`: `{t}` is not an RFC 3339 time: {e}"))
            })?,
    };
    // The same checks as a job's definition gets (PUT /v1/jobs and the jobs file), so the
    // page's form says what a save would say.
    let raw = RawJob {
        name: Some("preview".into()),
        schedule: Some(q.schedule.clone()),
        timezone: q.timezone.clone(),
        dst: q.dst.clone(),
        command: Some("true".into()),
        ..RawJob::default()
    };
    let spec = raw.into_spec(1).map_err(|e| match e {
        JobError::Invalid { key, message, .. } => {
            ApiError::bad_request(format!("`{key}`: {message}"))
        }
        other => ApiError::bad_request(other.to_string()),
    })?;
    let mut next = Vec::with_capacity(count);
    let mut t = after;
    while next.len() < count {
        let Some(slot) = spec.schedule.next_after(t) else {
            break;
        };
        next.push(slot.to_rfc3339());
        t = slot;
    }
    Ok(Json(SchedulePreview {
        schedule: q.schedule,
        timezone: spec.timezone.name().to_string(),
        words: describe(&spec.schedule_text),
        next,
    }))
}

#[cfg(test)]
mod tests;
