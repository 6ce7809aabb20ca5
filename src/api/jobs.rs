//! The catalog's endpoints: members, jobs, and the writes (put, delete, pause, resume,
//! run now, cancel), over the node handle's catalog operations.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::body::job_from_json;
use super::routes::gather_runs;
use super::views::{JobView, JobsPage, MemberView, MembersPage, RunRequested, SourceView};
use super::{ApiError, ApiState};
use std::collections::BTreeMap;

use crate::catalog::{CatalogError, Source};
use crate::core::job::RawJob;
use crate::core::schedule::{Schedule, parse_timezone};
use crate::core::types::{FireId, UnixMillis};
use crate::node::{Clock, JobInfo, JobListing, MemberState, SystemClock};

/// Next slots shown for one job (`GET /v1/jobs/{name}`); the list shows one per job.
const NEXT_SLOTS: usize = 5;
/// Latest runs shown for one job.
const LAST_RUNS: usize = 5;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/members", get(members))
        .route("/v1/jobs", get(jobs))
        .route("/v1/jobs/{name}", get(job).put(put_job).delete(delete_job))
        .route("/v1/jobs/{name}/pause", post(pause))
        .route("/v1/jobs/{name}/resume", post(resume))
        .route("/v1/jobs/{name}/run", post(run_now))
        .route("/v1/runs/{fire_id}/cancel", post(cancel))
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> ApiError {
        let message = e.to_string();
        match e {
            CatalogError::Invalid(_) => ApiError::invalid_job(message),
            CatalogError::NotFound(_) => ApiError::not_found(message),
            CatalogError::FileDefined { .. } | CatalogError::LocalJob(_) => {
                ApiError::conflict(message)
            }
            CatalogError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
            }
            CatalogError::TooMany { .. } => {
                ApiError::new(StatusCode::CONFLICT, "too_many_jobs", message)
            }
            CatalogError::Stopped => ApiError::unavailable(message),
        }
    }
}

fn state_name(s: MemberState) -> &'static str {
    match s {
        MemberState::Alive => "alive",
        MemberState::Leaving => "leaving",
        MemberState::Dead => "dead",
    }
}

async fn members(State(state): State<ApiState>) -> Result<Json<MembersPage>, ApiError> {
    let node = state.node();
    let apis = node.api_addresses();
    let members = node
        .catalog()
        .members()
        .await?
        .into_iter()
        .map(|m| MemberView {
            api: apis.get(&m.id).map(|a| a.to_string()),
            id: m.id.to_string(),
            address: m.addr.to_string(),
            state: state_name(m.state).into(),
            generation: m.generation,
            jobs_owned: m.jobs_owned,
            is_self: m.is_self,
        })
        .collect();
    Ok(Json(MembersPage {
        node: node.node_id().to_string(),
        members,
    }))
}

/// Next slots by (schedule, timezone), for one answer (one `now`, one count): jobs that
/// share a schedule, as most of a large list do, compute them once.
type NextSlots = BTreeMap<(String, Option<String>), Vec<UnixMillis>>;

/// `GET /v1/jobs` as last answered, serialized, and what it is valid for: the node's
/// listing of that version (a new one comes with every change of the catalog or of the
/// membership view), until the earliest next slot it shows comes (from then on that job's
/// `next` would be in the past). So an answer is never staler than the catalog, the view
/// and the clock; unchanged, 10,000 jobs are served without building anything (issue 15,
/// p99 < 50 ms).
pub(super) struct JobsPageCache {
    listing: u64,
    until: UnixMillis,
    body: Bytes,
}

fn source(s: &Source) -> SourceView {
    match s {
        Source::Api => SourceView::Api,
        Source::File { nodes } => SourceView::File {
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        },
        Source::Local => SourceView::Local,
    }
}

/// A job as the API shows it, with its next `n` slots after `now`.
fn view(info: JobInfo, now: UnixMillis, n: usize, cache: &mut NextSlots) -> JobView {
    let next = if info.paused {
        Vec::new()
    } else {
        next_slots(&info.definition, now, n, cache)
    };
    view_with(info, next.iter().map(|t| t.to_rfc3339()).collect())
}

/// A job as the API shows it, with `next` as its next slots.
fn view_with(info: JobInfo, next: Vec<String>) -> JobView {
    JobView {
        name: info.name.to_string(),
        source: source(&info.source),
        version: info.version.map(|v| v.to_string()),
        owner: info.owner.map(|o| o.to_string()),
        unplaceable: info.unplaceable,
        paused: info.paused,
        next,
        last_runs: None,
        conflicts: info
            .conflicts
            .iter()
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect(),
        definition: info.definition,
    }
}

fn next_slots(def: &RawJob, now: UnixMillis, n: usize, cache: &mut NextSlots) -> Vec<UnixMillis> {
    let Some(text) = &def.schedule else {
        return Vec::new();
    };
    let key = (text.clone(), def.timezone.clone());
    if let Some(slots) = cache.get(&key) {
        return slots.clone();
    }
    let tz = match &def.timezone {
        Some(tz) => parse_timezone(tz).ok(),
        None => Some(chrono_tz::Tz::UTC),
    };
    let mut out = Vec::with_capacity(n);
    if let Some(schedule) = tz.and_then(|tz| Schedule::parse(text, tz).ok()) {
        let mut t = now;
        while out.len() < n {
            let Some(next) = schedule.next_after(t) else {
                break;
            };
            out.push(next);
            t = next;
        }
    }
    cache.insert(key, out.clone());
    out
}

/// One job's view, as the writes answer it.
fn one(info: JobInfo) -> JobView {
    view(info, SystemClock.now(), NEXT_SLOTS, &mut NextSlots::new())
}

async fn jobs(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let listing = state.node().catalog().listing().await?;
    let now = SystemClock.now();
    let cached = state
        .jobs_page()
        .as_ref()
        .filter(|c| c.listing == listing.version && now < c.until)
        .map(|c| c.body.clone());
    let body = match cached {
        Some(body) => body,
        None => {
            let (body, until) = jobs_page(&listing, now)?;
            *state.jobs_page() = Some(JobsPageCache {
                listing: listing.version,
                until,
                body: body.clone(),
            });
            body
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /v1/jobs` for `listing` at `now`, serialized; and when it goes stale by the clock
/// (the earliest next slot it shows).
fn jobs_page(listing: &JobListing, now: UnixMillis) -> Result<(Bytes, UnixMillis), ApiError> {
    let mut cache = NextSlots::new();
    let mut until = UnixMillis(i64::MAX);
    let jobs = listing
        .jobs
        .iter()
        .map(|info| {
            let next = if info.paused {
                Vec::new()
            } else {
                next_slots(&info.definition, now, 1, &mut cache)
            };
            if let Some(first) = next.first() {
                until = until.min(*first);
            }
            view_with(info.clone(), next.iter().map(|t| t.to_rfc3339()).collect())
        })
        .collect();
    let page = JobsPage {
        jobs,
        conflicts: listing
            .conflicts
            .iter()
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect(),
    };
    let body = serde_json::to_vec(&page).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("could not write the job list: {e}"),
        )
    })?;
    Ok((Bytes::from(body), until))
}

async fn job(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let info = state.node().catalog().job(&name).await?;
    let mut v = one(info);
    v.last_runs = Some(
        gather_runs(&state, Some(&name), LAST_RUNS, false)
            .await
            .runs,
    );
    Ok(Json(v))
}

async fn put_job(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<JobView>, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(state.0.config.limits.max_body_bytes),
        _ => ApiError::bad_request(e.body_text()),
    })?;
    let raw = job_from_json(&name, &body)?;
    let info = state.node().catalog().put_job(raw).await?;
    Ok(Json(one(info)))
}

async fn delete_job(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.node().catalog().delete_job(&name).await?;
    Ok(Json(serde_json::json!({ "deleted": name })))
}

async fn pause(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let info = state.node().catalog().pause_job(&name).await?;
    Ok(Json(one(info)))
}

async fn resume(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let info = state.node().catalog().resume_job(&name).await?;
    Ok(Json(one(info)))
}

async fn run_now(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<RunRequested>, ApiError> {
    let id = state.node().catalog().run_job(&name).await?;
    Ok(Json(RunRequested {
        job: name,
        fire_id: id.to_string(),
    }))
}

async fn cancel(
    State(state): State<ApiState>,
    Path(fire_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id: FireId = fire_id
        .parse()
        .map_err(|e: String| ApiError::bad_request(format!("`fire_id`: {e}")))?;
    state.node().catalog().cancel_run(id).await?;
    Ok(Json(serde_json::json!({ "cancel_requested": fire_id })))
}
