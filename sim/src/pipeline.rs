//! The `pipeline` scenario's checks: every parent success yields exactly one run of each
//! child, and no child runs without one (issue 18, item 4).
//!
//! # What is checked
//!
//! - *Each*: for every run of a parent that succeeded (its executor's future completed)
//!   between the warm-up and the last 10 s, each child must run exactly once, with the
//!   fire id derived from the parent's (`core::after::child_fire_id`). A parent slot that
//!   succeeded on two nodes (a partition) is one parent fire id: one child run.
//! - *Missing*: a child run that never came is explained only by a crash within 20 gossip
//!   intervals after the parent's success (the parent's node before its request left, or
//!   the child's claimer between its claim and the run's start: the claim is the fence).
//! - *Twice*: a child fire id that ran more than once is a duplicate, explained only as the
//!   workload's duplicates are (a partition, a stall, a loss burst, a crash right after the
//!   start).
//! - *Orphans*: a child run whose fire id derives from no successful parent run is never
//!   explained.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use starling::core::after::{child_fire_id, parents};
use starling::{FireId, JobId, JobSpec};

use crate::check::{Bounds, CHECK_FROM_MS, CHECK_TAIL_MS, Deafness, Duplicate, duplicate};
use crate::world::{Run, SimResult};

/// The `pipeline` scenario's findings.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct PipelineFindings {
    /// Successful parent runs (distinct parent fire ids) in the checked window.
    pub parent_successes: usize,
    /// Child runs those called for (one per child per parent fire id).
    pub children_due: usize,
    /// Of those, how many ran exactly once.
    pub children_once: usize,
    /// Child runs that never came, unexplained.
    pub missing: Vec<String>,
    /// Child runs that never came, explained by a crash.
    pub missing_explained: usize,
    /// Child fire ids that ran more than once.
    pub duplicates: Vec<Duplicate>,
    /// Child runs whose fire id derives from no successful parent run.
    pub orphans: Vec<String>,
}

impl PipelineFindings {
    /// Duplicates the fault schedule does not explain.
    pub fn unexplained(&self) -> usize {
        crate::check::unexplained(&self.duplicates)
    }

    /// No unexplained miss, duplicate, or orphan.
    pub fn passed(&self) -> bool {
        self.missing.is_empty() && self.orphans.is_empty() && self.unexplained() == 0
    }
}

/// Checks the dependent jobs of `jobs` against the runs and successes of a finished run.
pub fn check(jobs: &[JobSpec], result: &SimResult, end_ms: i64, b: Bounds) -> PipelineFindings {
    let mut f = PipelineFindings::default();
    let deaf = Deafness::from_faults(&result.applied, end_ms, b);
    // child -> parents, and parent -> children.
    let mut children: BTreeMap<&str, Vec<&JobId>> = BTreeMap::new();
    for j in jobs {
        for p in parents(j) {
            children.entry(p.as_str()).or_default().push(&j.name);
        }
    }
    let is_child: BTreeSet<&str> = jobs
        .iter()
        .filter(|j| !parents(j).is_empty())
        .map(|j| j.name.as_str())
        .collect();
    // Every child fire id any parent success calls for (for orphans), and those in the
    // checked window, with the earliest success time (for misses).
    let mut called: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut due: BTreeMap<(String, u64), i64> = BTreeMap::new();
    let mut parent_ids = BTreeSet::new();
    for s in &result.successes {
        let Some(kids) = children.get(s.job.as_str()) else {
            continue;
        };
        let in_window = s.at >= CHECK_FROM_MS && s.at <= end_ms - CHECK_TAIL_MS;
        if in_window {
            parent_ids.insert((s.job.clone(), s.fire_id));
        }
        for kid in kids {
            let id = child_fire_id(FireId(s.fire_id), kid).0;
            called.insert((kid.to_string(), id));
            if in_window {
                let at = due.entry((kid.to_string(), id)).or_insert(s.at);
                *at = (*at).min(s.at);
            }
        }
    }
    f.parent_successes = parent_ids.len();
    f.children_due = due.len();
    let mut ran: BTreeMap<(String, u64), Vec<&Run>> = BTreeMap::new();
    for r in result
        .runs
        .iter()
        .filter(|r| is_child.contains(r.job.as_str()))
    {
        ran.entry((r.job.clone(), r.fire_id)).or_default().push(r);
        if !called.contains(&(r.job.clone(), r.fire_id)) {
            f.orphans.push(format!(
                "{} ran with fire id {:016x} on node {} at {} ms, which no parent success calls for",
                r.job, r.fire_id, r.node, r.started
            ));
        }
    }
    for ((job, id), at) in &due {
        match ran
            .get(&(job.clone(), *id))
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            [] => {
                if deaf.crashed_between(*at, at + b.settle_ms) {
                    f.missing_explained += 1;
                } else {
                    f.missing.push(format!(
                        "{job} (fire id {id:016x}) never ran for its parent's success at {at} ms"
                    ));
                }
            }
            [_] => f.children_once += 1,
            many => {
                let mut runs: Vec<&Run> = many.to_vec();
                f.duplicates
                    .push(duplicate(&deaf, job, runs[0].slot, &mut runs, b));
            }
        }
    }
    f
}
