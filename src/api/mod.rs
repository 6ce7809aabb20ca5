//! The HTTP API (axum): any node answers for the whole cluster. JSON in and out; errors
//! are `{"code": ..., "message": ...}` ([`ErrorBody`]).
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /healthz` | `{"status": "ok", "node": ...}`; never needs the token |
//! | `GET /metrics` | Prometheus text format (see [`crate::metrics`]) |
//! | `GET /v1/runs?job=NAME&limit=N` | run history gathered from every live node with an API |
//! | `GET /v1/members` | the members in this node's view, with the jobs each owns |
//! | `GET /v1/jobs`, `GET /v1/jobs/{name}` | the catalog's jobs: definition, source, version, owner, next slots, conflicts (and last runs for one job) |
//! | `PUT`, `DELETE /v1/jobs/{name}` | create or replace, delete an API job (`jobs.rs`) |
//! | `POST /v1/jobs/{name}/pause`, `/resume`, `/run` | pause, resume, run once now on its owner |
//! | `POST /v1/runs/{fire_id}/cancel` | stop a run wherever it runs |
//! | `GET /` | the web console ([`crate::console`]); its page and files need no token |
//! | `GET /v1/schedule?schedule=S&timezone=TZ` | a schedule in words and its next slots ([`crate::console`]) |
//! | `GET /v1/gossip` | this node's gossip keys and packet counters ([`crate::console`]) |
//!
//! # Access
//!
//! With a token ([`Token`]: `STARLING_API_TOKEN` or `--api-token-file`), every request
//! but `/healthz` and the console's static files needs `Authorization: Bearer <token>` (401 otherwise). Without one, the
//! API answers reads (`GET`, `HEAD`) and refuses everything else (403 `writes_disabled`),
//! unless [`ApiConfig::insecure_writes`].
//!
//! # Bounds
//!
//! See [`ApiLimits`]: request bodies (413 past the limit), header size and time, the time
//! of a whole request (408), connections at once, and connections that stop moving bytes.
//!
//! # Adding endpoints
//!
//! A group of routes is a `Router<ApiState>` merged in [`router`]; the token check and the
//! limits are layers over the merged router, so they cover every route added there.

mod auth;
mod body;
mod error;
mod jobs;
mod routes;
mod server;
mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

pub use auth::{MIN_TOKEN_BYTES, TOKEN_ENV, Token, TokenError, check_exposure};
pub use body::job_from_json;
pub use error::{ApiError, ErrorBody};
pub use routes::{NodeAnswer, RunsPage};
pub use views::{JobView, JobsPage, MemberView, MembersPage, RunRequested, SourceView};

use crate::node::NodeHandle;

/// The default address of the API, for `starling run --api` examples and the CLI client:
/// the gossip default's port plus one.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:7947";

/// Bounds that keep a slow or broken client from holding the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// Largest request body; past it, 413. Default 64 KiB (a job definition is at most
    /// 16 KiB encoded).
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers). Default 16 KiB.
    pub max_header_bytes: usize,
    /// Time a client has to send a request's head, and an idle kept-alive connection to
    /// start its next request. Default 5 s.
    pub header_timeout: Duration,
    /// Time a whole request may take, reading its body included; past it, 408. Default
    /// 10 s.
    pub request_timeout: Duration,
    /// A connection that moves no byte for this long is closed (a client that stopped
    /// reading its answer). Default 30 s.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait to be accepted. Default 256.
    pub max_connections: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_body_bytes: 64 << 10,
            max_header_bytes: 16 << 10,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 256,
        }
    }
}

/// How the API behaves.
#[derive(Clone, Debug, Default)]
pub struct ApiConfig {
    /// The bearer token every request but `/healthz` must carry; `None`: reads only (see
    /// the module docs).
    pub token: Option<Token>,
    /// Without a token, accept writes from anyone who reaches the port. A shell job sent
    /// over HTTP runs on every node: only for a trusted network.
    pub insecure_writes: bool,
    /// Bounds on clients.
    pub limits: ApiLimits,
    /// How long a node waits for its peers' APIs when it gathers from the cluster. Default
    /// (zero here) means 2 s.
    pub fanout_timeout: Duration,
}

/// Default [`ApiConfig::fanout_timeout`].
pub const DEFAULT_FANOUT_TIMEOUT: Duration = Duration::from_secs(2);

/// What every handler reaches: the node, the config, the HTTP client for peers.
#[derive(Clone)]
pub struct ApiState(Arc<Shared>);

struct Shared {
    node: Arc<NodeHandle>,
    config: ApiConfig,
    /// For gathering from peers' APIs (one pool of connections for all requests).
    client: reqwest::Client,
    /// `GET /v1/jobs` as last answered (see [`jobs::JobsPageCache`]).
    jobs_page: std::sync::Mutex<Option<Arc<jobs::JobsPageCache>>>,
}

impl ApiState {
    pub(crate) fn node(&self) -> &NodeHandle {
        &self.0.node
    }

    fn jobs_page(&self) -> std::sync::MutexGuard<'_, Option<Arc<jobs::JobsPageCache>>> {
        // A panic while holding it left at worst a whole earlier answer: still valid.
        self.0
            .jobs_page
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Who may read and write through this API.
    pub(crate) fn access(&self) -> Access {
        let config = &self.0.config;
        match (&config.token, config.insecure_writes) {
            (Some(_), _) => Access::Token,
            (None, false) => Access::ReadOnly,
            (None, true) => Access::OpenWrites,
        }
    }
}

/// Who may read and write through an API (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Every request but `/healthz` (and the console's static files) needs the token.
    Token,
    /// No token: anyone reads, nobody writes.
    ReadOnly,
    /// No token, `insecure_writes`: anyone reads and writes.
    OpenWrites,
}

/// The API's router for `node`: every endpoint, the token check and the limits.
pub fn router(node: Arc<NodeHandle>, mut config: ApiConfig) -> Router {
    if config.fanout_timeout.is_zero() {
        config.fanout_timeout = DEFAULT_FANOUT_TIMEOUT;
    }
    let client = reqwest::Client::builder()
        .timeout(config.fanout_timeout)
        .connect_timeout(config.fanout_timeout)
        // Peers are reached directly, never through a proxy from the environment.
        .no_proxy()
        .build()
        .unwrap_or_default();
    let limits = config.limits;
    let state = ApiState(Arc::new(Shared {
        node,
        config,
        client,
        jobs_page: std::sync::Mutex::default(),
    }));
    Router::new()
        .merge(routes::routes())
        .merge(jobs::routes())
        .merge(crate::console::routes())
        .fallback(no_such_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            limit_time,
        ))
        .with_state(state)
}

/// Serves the API for `node` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    node: Arc<NodeHandle>,
    config: ApiConfig,
    shutdown: impl Future<Output = ()>,
) {
    let limits = config.limits;
    server::serve(listener, router(node, config), limits, shutdown).await;
}

/// A running API server. Dropping it stops it at once; [`ApiServer::stop`] lets requests in
/// progress finish first (briefly).
pub struct ApiServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Serves the API for `node` on `listener`, in a task of the current runtime.
    pub fn start(listener: TcpListener, node: Arc<NodeHandle>, config: ApiConfig) -> ApiServer {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, node, config, async {
            let _ = stopped.await;
        }));
        ApiServer {
            stop: Some(stop),
            task,
        }
    }

    /// Stops accepting, gives requests in progress a moment, and returns once every
    /// connection is closed (so the server no longer holds the node).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The token check (see the module docs).
async fn authorize(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    // The console's page and files hold no data (the page asks the API with the token
    // the user enters), and a browser cannot send a token when it opens a page.
    let path = request.uri().path();
    if path == "/healthz" || crate::console::is_public(path) {
        return next.run(request).await;
    }
    let config = &state.0.config;
    match &config.token {
        Some(token) if !token.admits(request.headers()) => {
            return ApiError::unauthorized().into_response();
        }
        Some(_) => {}
        None => {
            let read = matches!(*request.method(), Method::GET | Method::HEAD);
            if !read && !config.insecure_writes {
                return ApiError::writes_disabled().into_response();
            }
        }
    }
    next.run(request).await
}

/// Bounds a whole request, reading its body included.
async fn limit_time(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timeout().into_response(),
    }
}

async fn no_such_endpoint(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no endpoint {method} {}; the endpoints are listed in the README's Operations section",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

#[cfg(test)]
mod tests;
