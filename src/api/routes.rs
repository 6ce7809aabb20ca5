//! The endpoints.

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::join_all;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState};
use crate::history::{RunEntry, merge};

/// Every route group.
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/runs", get(runs))
}

async fn healthz(State(state): State<ApiState>) -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "ok",
        "node": state.node().node_id().as_str(),
    }))
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let text = state.node().metrics_text().await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text)
}

/// Default and largest `limit` of `GET /v1/runs`.
const DEFAULT_RUNS: usize = 100;
const MAX_RUNS: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    /// Only this job's runs.
    job: Option<String>,
    /// At most this many, newest first.
    limit: Option<usize>,
    /// `local`: this node's history only (what a node asks its peers for).
    scope: Option<String>,
}

/// The answer of `GET /v1/runs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunsPage {
    /// Runs, newest first (by slot), from every node that answered.
    pub runs: Vec<RunEntry>,
    /// Which nodes were asked and whether they answered.
    pub nodes: Vec<NodeAnswer>,
}

/// Whether a node's part of the history is in a [`RunsPage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAnswer {
    /// The node.
    pub node: String,
    /// True if its runs are included.
    pub answered: bool,
    /// Why not, if not: it did not answer in time, refused, or has no API.
    pub error: Option<String>,
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

async fn runs(
    State(state): State<ApiState>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<RunsPage>, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(DEFAULT_RUNS);
    if limit == 0 || limit > MAX_RUNS {
        return Err(ApiError::bad_request(format!(
            "`limit`: {limit} is outside 1..={MAX_RUNS}"
        )));
    }
    let local = match q.scope.as_deref() {
        None => false,
        Some("local") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`scope`: `{other}` is not a scope; use `local` (this node only) or leave it out (the whole cluster)"
            )));
        }
    };
    Ok(Json(
        gather_runs(&state, q.job.as_deref(), limit, local).await,
    ))
}

/// This node's runs and, unless `local`, those of every other live node with an API,
/// merged.
pub(super) async fn gather_runs(
    state: &ApiState,
    job: Option<&str>,
    limit: usize,
    local: bool,
) -> RunsPage {
    let node = state.node();
    let me = node.node_id().clone();
    let own: Vec<RunEntry> = node
        .history()
        .query(job, limit)
        .iter()
        .map(|r| r.entry())
        .collect();
    let mut answers = vec![NodeAnswer {
        node: me.to_string(),
        answered: true,
        error: None,
    }];
    if local {
        return RunsPage {
            runs: own,
            nodes: answers,
        };
    }
    let apis = node.api_addresses();
    let alive = node.view().alive;
    for peer in alive.iter().filter(|n| **n != me && !apis.contains_key(*n)) {
        answers.push(NodeAnswer {
            node: peer.to_string(),
            answered: false,
            error: Some(
                "it has no API (started without --api), so its runs are not included".into(),
            ),
        });
    }
    let asks = apis
        .iter()
        .filter(|(peer, _)| **peer != me && alive.contains(*peer))
        .map(|(peer, addr)| {
            let mut request = state
                .0
                .client
                .get(format!("http://{addr}/v1/runs"))
                .query(&[("scope", "local"), ("limit", &limit.to_string())]);
            if let Some(job) = job {
                request = request.query(&[("job", job)]);
            }
            if let Some(token) = &state.0.config.token {
                request = request.bearer_auth(token.secret());
            }
            async move {
                let answer = async {
                    let response = request.send().await.map_err(|e| describe(&e))?;
                    let status = response.status();
                    if !status.is_success() {
                        return Err(format!("its API answered {status}"));
                    }
                    response.json::<RunsPage>().await.map_err(|e| describe(&e))
                }
                .await;
                (peer.clone(), answer)
            }
        });
    let mut lists = vec![own];
    for (peer, answer) in join_all(asks).await {
        match answer {
            Ok(page) => {
                lists.push(page.runs);
                answers.push(NodeAnswer {
                    node: peer.to_string(),
                    answered: true,
                    error: None,
                });
            }
            Err(e) => answers.push(NodeAnswer {
                node: peer.to_string(),
                answered: false,
                error: Some(e),
            }),
        }
    }
    answers.sort_by(|a, b| a.node.cmp(&b.node));
    RunsPage {
        runs: merge(lists, limit),
        nodes: answers,
    }
}

/// A peer request's error (without its URL, which only repeats the address).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "it did not answer in time".into()
    } else if e.is_decode() {
        format!("its answer did not decode: {}", crate::client::cause(e))
    } else {
        format!("its API is unreachable: {}", crate::client::cause(e))
    }
}
