//! The `catalog` scenario: operations through the nodes' catalog clients, samples of what
//! each node's copy of the catalog holds, and the checks of the catalog's promises.
//!
//! # What is checked
//!
//! - *Nothing acknowledged is lost while a node that had it survives*: for every register
//!   (a dynamic job's definition or pause), the greatest acknowledged version that some
//!   node was seen to hold (sampled every 2 s, and the writer when it acknowledged) while
//!   that node then lived to the end without crashing: every live node holds it or a
//!   newer version at the end.
//! - *After healing, every node holds the same catalog*: when the last fault and the last
//!   operation are 40 gossip intervals before the end, every live node's catalog hash and
//!   registers are equal.
//! - *A deleted or paused job stops within a bound*: no slot of it starts later than 20
//!   gossip intervals after the delete or pause was acknowledged, unless another change to
//!   the job was asked for meanwhile, or the node running it could not hear the writer then
//!   (a partition, a stall, a loss burst), or the writer crashed before its write could
//!   leave.
//! - *An update never makes one slot run twice*: a slot of a dynamic job that ran twice is
//!   a duplicate, explained only as the static jobs' duplicates are.
//! - A run-now request runs at most once, under the same explanations.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use starling::catalog::{CatalogError, Key, Version};
use starling::{CatalogClient, FireId, JobId, RawJob};

use crate::check::{Bounds, Deafness, Duplicate, duplicate};
use crate::scenario::{CatalogOp, DYNAMIC_SCHEDULES, Fault, dynamic_job};
use crate::world::{EPOCH, Run, SimResult};

/// One operation as it went.
#[derive(Clone, Debug)]
pub struct OpRecord {
    /// When it was asked (ms since start).
    pub at: i64,
    /// When it was acknowledged, if it was.
    pub acked: Option<i64>,
    /// The node that served it.
    pub node: usize,
    /// What was asked.
    pub op: CatalogOp,
    /// The version it wrote (not for run-now).
    pub version: Option<Version>,
    /// A run-now request's fire id.
    pub fire_id: Option<u64>,
    /// Why it was refused.
    pub error: Option<String>,
}

/// What one node's catalog held of the dynamic jobs at one time: the version of each
/// `job:` and `pause:` register, by key.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When (ms since start).
    pub at: i64,
    /// The node.
    pub node: usize,
    /// Versions by gossip key.
    pub versions: BTreeMap<String, Version>,
}

/// A live node's catalog at the end.
#[derive(Clone, Debug)]
pub struct FinalCatalog {
    /// The node.
    pub node: usize,
    /// Its catalog hash.
    pub hash: u64,
    /// Versions of the dynamic jobs' registers by gossip key.
    pub versions: BTreeMap<String, Version>,
}

/// Runs one operation on `client`; returns the version written (or the fire id), or the
/// error.
pub async fn execute(
    client: CatalogClient,
    op: &CatalogOp,
) -> Result<(Option<Version>, Option<u64>), String> {
    let name = dynamic_job(op.job());
    let r: Result<(Option<Version>, Option<u64>), CatalogError> = match op {
        CatalogOp::Put { schedule, .. } => client
            .put_job(RawJob {
                name: Some(name),
                schedule: Some(DYNAMIC_SCHEDULES[*schedule].into()),
                command: Some("sim".into()),
                ..RawJob::default()
            })
            .await
            .map(|info| (info.version, None)),
        CatalogOp::Delete(_) => client.delete_job(&name).await.map(|v| (Some(v), None)),
        CatalogOp::Pause(_) => client
            .pause_job(&name)
            .await
            .map(|info| (info.pause_version, None)),
        CatalogOp::Resume(_) => client
            .resume_job(&name)
            .await
            .map(|info| (info.pause_version, None)),
        CatalogOp::RunNow(_) => client.run_job(&name).await.map(|id| (None, Some(id.0))),
    };
    r.map_err(|e| e.to_string())
}

/// The versions of the dynamic jobs' registers `client`'s node holds.
pub async fn versions(client: &CatalogClient) -> Option<BTreeMap<String, Version>> {
    let registers = client.registers().await.ok()?;
    Some(
        registers
            .into_iter()
            .filter(
                |(k, _)| matches!(k, Key::Job(j) | Key::Pause(j) if j.as_str().starts_with("dyn-")),
            )
            .map(|(k, r)| (k.to_gossip(), r.version))
            .collect(),
    )
}

/// The gossip key an operation writes, if it writes a register of the job.
fn written_key(op: &CatalogOp) -> Option<String> {
    let job = JobId::new(dynamic_job(op.job()));
    match op {
        CatalogOp::Put { .. } | CatalogOp::Delete(_) => Some(Key::Job(job).to_gossip()),
        CatalogOp::Pause(_) | CatalogOp::Resume(_) => Some(Key::Pause(job).to_gossip()),
        CatalogOp::RunNow(_) => None,
    }
}

/// What the catalog checks found.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct CatalogFindings {
    /// Operations asked.
    pub ops: usize,
    /// Of those, acknowledged.
    pub acked: usize,
    /// Acknowledged writes a surviving node had, missing on a live node at the end.
    pub lost: Vec<String>,
    /// Live nodes' catalogs differ at the end; `None` when the last change was too recent
    /// to judge.
    pub diverged: Option<bool>,
    /// Slots of a paused or deleted job started after the bound, unexplained.
    pub late_runs: Vec<String>,
    /// Slots of dynamic jobs that ran more than once.
    pub duplicates: Vec<Duplicate>,
    /// Acknowledged run-now requests, and how many of them ran.
    pub requests: usize,
    pub requests_ran: usize,
    /// Run-now requests that ran more than once, unexplained.
    pub requests_twice: Vec<String>,
    /// Runs of slots of dynamic jobs.
    pub slot_runs: usize,
}

impl CatalogFindings {
    /// Duplicates the fault schedule does not explain.
    pub fn unexplained(&self) -> usize {
        crate::check::unexplained(&self.duplicates)
    }

    /// True when every catalog promise held.
    pub fn passed(&self) -> bool {
        self.lost.is_empty()
            && self.diverged != Some(true)
            && self.late_runs.is_empty()
            && self.unexplained() == 0
            && self.requests_twice.is_empty()
    }
}

/// Checks the catalog's promises (see the module docs).
pub fn check(result: &SimResult, end_ms: i64, b: Bounds) -> CatalogFindings {
    let mut f = CatalogFindings {
        ops: result.ops.len(),
        acked: result.ops.iter().filter(|o| o.acked.is_some()).count(),
        ..CatalogFindings::default()
    };
    let deaf = Deafness::from_faults(&result.applied, end_ms, b);
    // When each node stopped (crashed or left), to know who survived a sample.
    let mut stops: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    for a in &result.applied {
        if let Fault::Crash(n) | Fault::Leave(n) = a.fault {
            stops.entry(n).or_default().push(a.at);
        }
    }
    let live_at_end: BTreeSet<usize> = result.final_catalogs.iter().map(|c| c.node).collect();
    let survives = |node: usize, t: i64| {
        live_at_end.contains(&node) && stops.get(&node).is_none_or(|s| s.iter().all(|&c| c < t))
    };

    // Nothing acknowledged lost while a node that had it survives.
    let mut had: Vec<(i64, usize, &String, &Version)> = Vec::new();
    for s in &result.samples {
        for (k, v) in &s.versions {
            had.push((s.at, s.node, k, v));
        }
    }
    let acked_keys: Vec<(String, &OpRecord)> = result
        .ops
        .iter()
        .filter(|o| o.acked.is_some() && o.version.is_some())
        .filter_map(|o| written_key(&o.op).map(|k| (k, o)))
        .collect();
    for (k, o) in &acked_keys {
        if let (Some(at), Some(v)) = (o.acked, &o.version) {
            had.push((at, o.node, k, v));
        }
    }
    let mut required: BTreeMap<&str, &Version> = BTreeMap::new();
    for (k, o) in &acked_keys {
        let v = o.version.as_ref().expect("filtered");
        let kept = had
            .iter()
            .any(|(t, n, hk, hv)| *hk == k && *hv >= v && survives(*n, *t));
        if kept {
            let e = required.entry(k.as_str()).or_insert(v);
            if v > *e {
                *e = v;
            }
        }
    }
    for c in &result.final_catalogs {
        for (k, v) in &required {
            match c.versions.get(*k) {
                Some(have) if have >= *v => {}
                have => f.lost.push(format!(
                    "node {} holds {k} at {:?}, not {v} or newer",
                    c.node,
                    have.map(|h| h.to_string())
                )),
            }
        }
    }

    // After healing, the same catalog everywhere.
    let last_change = result
        .applied
        .iter()
        .filter(|a| !matches!(a.fault, Fault::ClockJump { .. }))
        .map(|a| match a.fault {
            Fault::Stall { ms, .. } => a.at + ms as i64,
            _ => a.at,
        })
        .chain(result.ops.iter().map(|o| o.acked.unwrap_or(o.at)))
        .max()
        .unwrap_or(0);
    f.diverged = (end_ms - last_change >= b.settle_ms * 2 && !result.final_catalogs.is_empty())
        .then(|| {
            let first = &result.final_catalogs[0];
            !result
                .final_catalogs
                .iter()
                .all(|c| c.hash == first.hash && c.versions == first.versions)
        });

    // Runs of the dynamic jobs: slot runs and request runs.
    let dynamic: Vec<&Run> = result
        .runs
        .iter()
        .filter(|r| r.job.starts_with("dyn-"))
        .collect();
    let is_slot =
        |r: &Run| FireId::of(&JobId::new(&r.job), starling::UnixMillis(r.slot)).0 == r.fire_id;
    let (slot_runs, request_runs): (Vec<&Run>, Vec<&Run>) =
        dynamic.iter().copied().partition(|r| is_slot(r));
    f.slot_runs = slot_runs.len();

    // A deleted or paused job stops within the bound.
    for o in result.ops.iter() {
        let Some(acked) = o.acked else {
            continue;
        };
        let stops = matches!(o.op, CatalogOp::Delete(_) | CatalogOp::Pause(_));
        if !stops {
            continue;
        }
        let job = dynamic_job(o.op.job());
        let limit = acked + b.settle_ms;
        for r in slot_runs.iter().filter(|r| r.job == job) {
            if r.started <= limit || r.slot - EPOCH.0 <= limit {
                continue;
            }
            let changed_since = result.ops.iter().any(|p| {
                p.op.job() == o.op.job()
                    && !matches!(p.op, CatalogOp::RunNow(_))
                    && p.at > o.at - 1_000
                    && p.at <= r.started
                    && !std::ptr::eq(p, o)
            });
            if changed_since {
                continue;
            }
            let writer_crashed = result.applied.iter().any(|a| {
                matches!(a.fault, Fault::Crash(n) if n == o.node)
                    && a.at >= o.at
                    && a.at <= acked + b.record_ms
            });
            let deaf_then = deaf.explain(o.node, r.node, o.at - b.settle_ms, r.started);
            if !writer_crashed && deaf_then.is_none() {
                f.late_runs.push(format!(
                    "{job} slot {} started on node {} at {} ms, {} ms after its {:?} was acknowledged by node {}",
                    starling::UnixMillis(r.slot),
                    r.node,
                    r.started,
                    r.started - acked,
                    o.op,
                    o.node
                ));
            }
        }
    }

    // No slot twice.
    let mut by_slot: BTreeMap<(&str, i64), Vec<&Run>> = BTreeMap::new();
    for r in &slot_runs {
        by_slot.entry((&r.job, r.slot)).or_default().push(r);
    }
    for ((job, slot), mut runs) in by_slot {
        if runs.len() < 2 {
            continue;
        }
        f.duplicates.push(duplicate(&deaf, job, slot, &mut runs, b));
    }

    // Run-now requests: at most once.
    let requested: BTreeSet<u64> = result.ops.iter().filter_map(|o| o.fire_id).collect();
    f.requests = requested.len();
    let mut by_id: BTreeMap<u64, Vec<&Run>> = BTreeMap::new();
    for r in &request_runs {
        by_id.entry(r.fire_id).or_default().push(r);
    }
    f.requests_ran = by_id.keys().filter(|id| requested.contains(id)).count();
    for (id, mut runs) in by_id {
        if runs.len() < 2 {
            continue;
        }
        runs.sort_by_key(|r| (r.started, r.node));
        let explained = (1..runs.len()).all(|k| {
            runs[..k]
                .iter()
                .any(|earlier| deaf.explain_pair(earlier, runs[k], b).is_some())
        });
        if !explained {
            f.requests_twice.push(format!(
                "request {:016x} of {} ran on (node, started ms): {:?}",
                id,
                runs[0].job,
                runs.iter().map(|r| (r.node, r.started)).collect::<Vec<_>>()
            ));
        }
    }
    f
}
