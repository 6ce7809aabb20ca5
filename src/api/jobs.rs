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
use super::views::{JobView, MemberView, MembersPage, RunRequested, SourceView};
use super::{ApiError, ApiState};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use serde::Serialize;

use crate::catalog::{CatalogError, Conflict, Source};
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
        MemberState::Clock => "clock",
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
/// p99 < 50 ms). The next answer after a change is spliced from this one: only the jobs
/// whose listing entry changed, or whose next slot came, are serialized again.
pub(super) struct JobsPageCache {
    listing: u64,
    until: UnixMillis,
    body: Bytes,
    /// Each job's part of `body`, in name order.
    entries: Vec<PageEntry>,
}

/// One job's part of a `GET /v1/jobs` answer.
struct PageEntry {
    /// The listing entry it shows.
    info: Arc<JobInfo>,
    /// The next slot it shows, if any.
    next: Option<UnixMillis>,
    /// Its JSON (a slice of the page's body).
    json: Bytes,
    /// Where in `json` its owner is (`"owner":...,"unplaceable":...`), so an entry whose
    /// owner alone moved is remade from these bytes (see [`write_entry`]).
    owner_at: Range<usize>,
}

/// The part of a [`JobView`] before its owner, borrowed.
#[derive(Serialize)]
struct EntryHead<'a> {
    name: &'a str,
    definition: &'a RawJob,
    source: SourceView,
    version: Option<String>,
}

/// A [`JobView`]'s owner fields.
#[derive(Serialize)]
struct EntryOwner {
    owner: Option<String>,
    unplaceable: bool,
}

/// The part of a [`JobView`] (as the list shows it: no `last_runs`) after its owner.
#[derive(Serialize)]
struct EntryTail<'a> {
    paused: bool,
    next: &'a [String],
    conflicts: Vec<serde_json::Value>,
}

/// The inside of a JSON object, `{` and `}` left out.
fn object_inside<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    let mut json = serde_json::to_vec(value).map_err(internal)?;
    json.pop();
    json.remove(0);
    Ok(json)
}

fn owner_fields(info: &JobInfo) -> Result<Vec<u8>, ApiError> {
    object_inside(&EntryOwner {
        owner: info.owner.as_ref().map(|o| o.to_string()),
        unplaceable: info.unplaceable,
    })
}

/// Writes `info`'s part of the list to `body`, byte for byte as [`view_with`]`(info,
/// next)` serializes, in three pieces (head, owner, tail), and returns where the owner's
/// fields are in what it wrote. After a membership change about a third of a big
/// catalog's jobs change owner and nothing else: their entries are then made from their
/// old bytes with the owner's replaced ([`same_but_owner`]), not serialized again (issue 15:
/// `GET /v1/jobs` right after a membership change, p99 < 50 ms).
fn write_entry(
    body: &mut Vec<u8>,
    info: &JobInfo,
    next: &[String],
) -> Result<Range<usize>, ApiError> {
    let start = body.len();
    let head = serde_json::to_vec(&EntryHead {
        name: info.name.as_str(),
        definition: &info.definition,
        source: source(&info.source),
        version: info.version.as_ref().map(|v| v.to_string()),
    })
    .map_err(internal)?;
    body.extend_from_slice(&head[..head.len() - 1]);
    body.push(b',');
    let owner_start = body.len() - start;
    body.extend_from_slice(&owner_fields(info)?);
    let owner_end = body.len() - start;
    body.push(b',');
    body.extend_from_slice(&object_inside(&EntryTail {
        paused: info.paused,
        next,
        conflicts: conflicts(&info.conflicts),
    })?);
    body.push(b'}');
    Ok(owner_start..owner_end)
}

/// Whether `new` is `old`, but for its owner (and whether it is unplaceable) maybe.
fn same_but_owner(old: &JobInfo, new: &JobInfo) -> bool {
    // Every field named: a field added to `JobInfo` must be placed here.
    let JobInfo {
        name,
        definition,
        source,
        version,
        owner: _,
        unplaceable: _,
        paused,
        pause_version,
        conflicts,
    } = old;
    *name == new.name
        && *definition == new.definition
        && *source == new.source
        && *version == new.version
        && *paused == new.paused
        && *pause_version == new.pause_version
        && *conflicts == new.conflicts
}

fn conflicts(conflicts: &[Conflict]) -> Vec<serde_json::Value> {
    conflicts
        .iter()
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect()
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
    let conflicts = conflicts(&info.conflicts);
    JobView {
        name: info.name.to_string(),
        source: source(&info.source),
        version: info.version.map(|v| v.to_string()),
        owner: info.owner.map(|o| o.to_string()),
        unplaceable: info.unplaceable,
        paused: info.paused,
        next,
        last_runs: None,
        conflicts,
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
    let last = state.jobs_page().clone();
    let body = match last {
        Some(c) if c.listing == listing.version && now < c.until => c.body.clone(),
        _ => {
            let page = Arc::new(jobs_page(&listing, now, last.as_deref())?);
            let body = page.body.clone();
            let mut kept = state.jobs_page();
            // A slower answer to an older listing does not replace a newer one.
            if kept.as_ref().is_none_or(|k| k.listing <= page.listing) {
                *kept = Some(page);
            }
            body
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn internal(e: serde_json::Error) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("could not write the job list: {e}"),
    )
}

/// `GET /v1/jobs` for `listing` at `now`, serialized as [`JobsPage`] would be, with each
/// job's part taken from `last` when it shows the same listing entry and its next slot
/// has not come yet; and when the answer goes stale by the clock (the earliest next slot
/// it shows).
fn jobs_page(
    listing: &JobListing,
    now: UnixMillis,
    last: Option<&JobsPageCache>,
) -> Result<JobsPageCache, ApiError> {
    let mut cache = NextSlots::new();
    let mut until = UnixMillis(i64::MAX);
    let old = last.map_or(&[][..], |c| c.entries.as_slice());
    let mut o = 0;
    let mut body = Vec::with_capacity(last.map_or(0, |c| c.body.len()) + 4096);
    let mut spans = Vec::with_capacity(listing.jobs.len());
    body.extend_from_slice(b"{\"jobs\":[");
    for (i, info) in listing.jobs.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        // Both are in name order.
        while old.get(o).is_some_and(|e| e.info.name < info.name) {
            o += 1;
        }
        // The last answer's part for this job, when it shows this entry but for its owner
        // at most, and its next slot has not come.
        let kept = old.get(o).filter(|e| {
            (Arc::ptr_eq(&e.info, info) || same_but_owner(&e.info, info))
                && e.next.is_none_or(|n| now < n)
        });
        let start = body.len();
        let (next, owner_at) = match kept {
            Some(e) if e.info.owner == info.owner && e.info.unplaceable == info.unplaceable => {
                body.extend_from_slice(&e.json);
                (e.next, e.owner_at.clone())
            }
            Some(e) => {
                let fields = owner_fields(info)?;
                body.extend_from_slice(&e.json[..e.owner_at.start]);
                body.extend_from_slice(&fields);
                body.extend_from_slice(&e.json[e.owner_at.end..]);
                (e.next, e.owner_at.start..e.owner_at.start + fields.len())
            }
            _ => {
                let next = if info.paused {
                    Vec::new()
                } else {
                    next_slots(&info.definition, now, 1, &mut cache)
                };
                let shown: Vec<String> = next.iter().map(|t| t.to_rfc3339()).collect();
                let owner_at = write_entry(&mut body, info, &shown)?;
                (next.first().copied(), owner_at)
            }
        };
        if let Some(first) = next {
            until = until.min(first);
        }
        spans.push((info.clone(), next, start..body.len(), owner_at));
    }
    body.extend_from_slice(b"],\"conflicts\":");
    serde_json::to_writer(&mut body, &conflicts(&listing.conflicts)).map_err(internal)?;
    body.push(b'}');
    let body = Bytes::from(body);
    let entries = spans
        .into_iter()
        .map(|(info, next, span, owner_at)| PageEntry {
            info,
            next,
            json: body.slice(span),
            owner_at,
        })
        .collect();
    Ok(JobsPageCache {
        listing: listing.version,
        until,
        body,
        entries,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::JobsPage;
    use crate::core::types::{JobId, NodeId};

    fn info(name: &str, schedule: &str, paused: bool) -> Arc<JobInfo> {
        Arc::new(JobInfo {
            name: JobId::new(name),
            definition: RawJob {
                name: Some(name.into()),
                schedule: Some(schedule.into()),
                command: Some("true".into()),
                ..RawJob::default()
            },
            source: Source::Api,
            version: None,
            owner: Some(NodeId::new("a")),
            unplaceable: false,
            paused,
            pause_version: None,
            conflicts: Vec::new(),
        })
    }

    fn listing(version: u64, jobs: Vec<Arc<JobInfo>>) -> JobListing {
        JobListing {
            version,
            jobs,
            conflicts: Vec::new(),
        }
    }

    #[test]
    fn a_page_spliced_from_the_last_one_is_the_page_made_anew() {
        let now = UnixMillis(1_700_000_000_000);
        let a = info("a", "@every 1h", false);
        let b = info("b", "@every 10s", false);
        let first = listing(1, vec![a.clone(), b, info("c", "@every 1h", false)]);
        let page = jobs_page(&first, now, None).unwrap();
        let parsed: JobsPage = serde_json::from_slice(&page.body).unwrap();
        assert_eq!(parsed.jobs.len(), 3);
        let later = UnixMillis(now.0 + 20_000);
        // The clock alone: b's next slot came, so its part is made again.
        let moved = jobs_page(&first, later, Some(&page)).unwrap();
        assert_eq!(moved.body, jobs_page(&first, later, None).unwrap().body);
        assert_ne!(moved.body, page.body);
        // b paused (a new entry equal but for `paused`), c gone, d new, a the same entry.
        let second = listing(
            2,
            vec![
                a,
                info("b", "@every 10s", true),
                info("d", "@every 1s", false),
            ],
        );
        for at in [now, later] {
            let spliced = jobs_page(&second, at, Some(&page)).unwrap();
            let anew = jobs_page(&second, at, None).unwrap();
            assert_eq!(spliced.body, anew.body);
            assert_eq!(spliced.until, anew.until);
        }
        // A membership change: a's and d's owners move (d's to nobody, unplaceable), b's
        // stays. Spliced from the page before, and again from that one.
        let second_page = jobs_page(&second, now, Some(&page)).unwrap();
        let moved_owner = |i: &Arc<JobInfo>, owner: Option<&str>| {
            let mut j = (**i).clone();
            j.owner = owner.map(NodeId::new);
            j.unplaceable = owner.is_none();
            Arc::new(j)
        };
        let third = listing(
            3,
            vec![
                moved_owner(&second.jobs[0], Some("node-with-a-longer-name")),
                second.jobs[1].clone(),
                moved_owner(&second.jobs[2], None),
            ],
        );
        let spliced = jobs_page(&third, now, Some(&second_page)).unwrap();
        let anew = jobs_page(&third, now, None).unwrap();
        assert_eq!(spliced.body, anew.body);
        assert_ne!(spliced.body, second_page.body);
        let parsed: JobsPage = serde_json::from_slice(&spliced.body).unwrap();
        assert_eq!(
            parsed.jobs[0].owner.as_deref(),
            Some("node-with-a-longer-name")
        );
        assert!(parsed.jobs[2].unplaceable && parsed.jobs[2].owner.is_none());
        let fourth = listing(4, vec![moved_owner(&third.jobs[0], Some("b"))]);
        let spliced = jobs_page(&fourth, now, Some(&spliced)).unwrap();
        assert_eq!(spliced.body, jobs_page(&fourth, now, None).unwrap().body);
    }

    /// The list writes each entry in pieces, to replace its owner alone later: the pieces
    /// must be what serializing the entry's [`JobView`] gives, byte for byte, for every
    /// kind of entry, and the owner's part must be where it says.
    #[test]
    fn an_entry_written_in_pieces_is_its_job_view_serialized() {
        use crate::catalog::{Conflict, version::Version};
        let plain = info("plain", "@every 1h", false);
        let mut full = (*info("full \"quoted\" \\ name", "0 0 3 * * 1-5", true)).clone();
        full.definition.timezone = Some("Europe/Paris".into());
        full.definition.headers = Some(BTreeMap::from([
            ("owner".to_string(), "\"owner\":\"x\"".to_string()),
            ("unplaceable".to_string(), "true".to_string()),
        ]));
        full.definition.after = Some(vec!["plain".into()]);
        full.source = Source::File {
            nodes: vec![NodeId::new("a"), NodeId::new("b")],
        };
        full.version = Some(Version {
            millis: 1_700_000_000_123,
            counter: 7,
            node: NodeId::new("b"),
        });
        full.owner = None;
        full.unplaceable = true;
        full.conflicts = vec![Conflict::MissingParent {
            job: JobId::new("full"),
            parents: vec![JobId::new("gone")],
        }];
        let nexts = [
            vec![],
            vec!["2026-12-05T00:00:00+00:00".to_string()],
            vec!["a".to_string(), "b".to_string()],
        ];
        for info in [(*plain).clone(), full] {
            for next in &nexts {
                let mut body = b"prefix".to_vec();
                let at = write_entry(&mut body, &info, next).unwrap();
                let written = &body[6..];
                let whole = serde_json::to_vec(&view_with(info.clone(), next.clone())).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(written),
                    String::from_utf8_lossy(&whole)
                );
                let owner = serde_json::json!({"owner": info.owner.as_ref().map(|o| o.to_string()), "unplaceable": info.unplaceable});
                let owner = owner.to_string();
                assert_eq!(
                    String::from_utf8_lossy(&written[at]),
                    owner[1..owner.len() - 1]
                );
            }
        }
    }
}
