//! The checker: every slot due in the run, how many times it ran, where, and how late.

use std::collections::BTreeMap;

use serde::Serialize;
use starling::{JobSpec, Misfire, Schedule, UnixMillis};

use crate::scenario::Fault;
use crate::world::{Applied, EPOCH, Run, SimResult};

/// Slots before this (ms since start) are not checked: the cluster is forming.
pub const CHECK_FROM_MS: i64 = 3_000;
/// Slots in the last this-many ms are not checked: a catch-up may still be due.
pub const CHECK_TAIL_MS: i64 = 10_000;
/// A run or an overlap skip more than this before its slot's true time is early: only a
/// clock past the nodes' bound (`max_clock_offset`, 2 s) makes one (issue 14: a clock
/// stepped 30 s forward skipped 11 of 15 slots as overlapped, none of them due yet).
pub const EARLY_MS: i64 = 2_500;

/// Bounds the checker uses, derived from the gossip interval.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// After a disturbance ends, how long views take to converge again (failure detection,
    /// handoff delay, record propagation), ms.
    pub settle_ms: i64,
    /// A record needs this long to leave a node; a crash within it may lose the record, ms.
    pub record_ms: i64,
}

impl Bounds {
    /// Bounds for a gossip interval.
    pub fn for_gossip(gossip_ms: i64) -> Bounds {
        Bounds {
            settle_ms: gossip_ms * 20,
            record_ms: gossip_ms * 3,
        }
    }
}

/// Why a duplicate is explained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The two nodes were on different sides of a partition.
    Partition,
    /// A packet-loss burst was on.
    Loss,
    /// One of the nodes crashed right after starting the slot, before its record left.
    Crash,
}

/// A slot that ran more than once.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Duplicate {
    /// The job.
    pub job: String,
    /// The slot, RFC 3339.
    pub slot: String,
    /// Node indexes that ran it.
    pub nodes: Vec<usize>,
    /// Why that could happen, if the fault schedule explains it.
    pub explained_by: Option<Reason>,
}

/// A slot that the job's misfire policy required to run but did not.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Miss {
    /// The job.
    pub job: String,
    /// The slot, RFC 3339.
    pub slot: String,
    /// Slot time, ms since sim start.
    pub at_ms: i64,
}

/// The checker's findings.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Findings {
    /// Slots due in the checked window.
    pub slots_due: u64,
    /// Executions in the checked window.
    pub executions: u64,
    /// Required slots that never ran.
    pub missed: Vec<Miss>,
    /// Runs of times that are not slots of their job (must never happen).
    pub spurious: Vec<Miss>,
    /// Slots the misfire policy (`once`, `skip`) was allowed to drop and did.
    pub skipped_by_policy: u64,
    /// Slots the overlap policy (`forbid`) skipped while a run of the job was running.
    pub skipped_by_overlap: u64,
    /// Slots that ran more than once.
    pub duplicates: Vec<Duplicate>,
    /// Runs on a node whose tags did not satisfy the job's constraints (issue 18).
    pub misplaced: u64,
    /// Lateness of each slot's first run, ms: p50, p99, max.
    pub lateness_ms: (i64, i64, i64),
    /// All live nodes agree on the members (hence on every owner) at the end, when the
    /// last membership change was long enough ago; `None` when it was too recent to judge.
    pub owners_agree: Option<bool>,
    /// Second processes started with a live node's id: refused, and started (each on the
    /// far side of a partition from the holder, else a finding below).
    pub impostors_refused: u64,
    pub impostors_started: u64,
    /// What went wrong with node identity: an impostor that started although it could
    /// reach the holder, or a node that stopped counting the holder as a member while an
    /// impostor lived (issue 14: the whole cluster saw it leaving for about 3 s).
    pub identity: Vec<String>,
    /// Runs started more than [`EARLY_MS`] before their slot's true time.
    pub early_runs: Vec<Miss>,
    /// Overlap skips made more than [`EARLY_MS`] before their slot's true time.
    pub early_skips: Vec<Miss>,
    /// A job's epoch rising between two runs on one node with no view change on that
    /// node, no overlap skip in between, and no other node running the job under an epoch
    /// in between (issue 14: a clock step raised it from 1 to 8).
    pub epoch_rises: Vec<String>,
}

/// How many of `duplicates` the fault schedule does not explain.
pub fn unexplained(duplicates: &[Duplicate]) -> usize {
    duplicates
        .iter()
        .filter(|d| d.explained_by.is_none())
        .count()
}

/// The duplicate of `job`'s `slot` that `runs` (two or more) make, sorted by start: it is
/// explained when every run after the first is explained by an earlier one
/// ([`Deafness::explain_pair`]), by the first such reason.
pub(crate) fn duplicate(
    deaf: &Deafness,
    job: &str,
    slot: i64,
    runs: &mut [&Run],
    b: Bounds,
) -> Duplicate {
    runs.sort_by_key(|r| (r.started, r.node));
    let reasons: Vec<Option<Reason>> = (1..runs.len())
        .map(|k| {
            runs[..k]
                .iter()
                .find_map(|earlier| deaf.explain_pair(earlier, runs[k], b))
        })
        .collect();
    let explained_by = if reasons.iter().all(Option::is_some) {
        reasons.into_iter().flatten().next()
    } else {
        None
    };
    Duplicate {
        job: job.to_string(),
        slot: UnixMillis(slot).to_rfc3339(),
        nodes: runs.iter().map(|r| r.node).collect(),
        explained_by,
    }
}

impl Findings {
    /// Duplicates the fault schedule does not explain.
    pub fn unexplained(&self) -> usize {
        unexplained(&self.duplicates)
    }

    /// True when the run passes: no unexplained duplicate, no disallowed miss, owners agree.
    pub fn passed(&self) -> bool {
        self.missed.is_empty()
            && self.identity.is_empty()
            && self.spurious.is_empty()
            && self.misplaced == 0
            && self.early_runs.is_empty()
            && self.early_skips.is_empty()
            && self.epoch_rises.is_empty()
            && self.unexplained() == 0
            && self.owners_agree != Some(false)
    }
}

/// Who could not hear whom during a span.
#[derive(Clone, Copy, Debug)]
enum Who {
    /// Nobody could rely on hearing anybody (loss burst).
    All,
    /// These two could not hear each other (a partition).
    Pair(usize, usize),
}

/// Intervals (ms since start) during which two nodes could not hear each other.
pub(crate) struct Deafness {
    /// (from, to, who, reason)
    spans: Vec<(i64, i64, Who, Reason)>,
    /// (node, crash time)
    crashes: Vec<(usize, i64)>,
}

impl Deafness {
    pub(crate) fn from_faults(applied: &[Applied], end: i64, b: Bounds) -> Deafness {
        let mut spans = Vec::new();
        let mut crashes = Vec::new();
        let mut open_partitions: Vec<(i64, Vec<usize>, Vec<usize>)> = Vec::new();
        let mut loss_since: Option<i64> = None;
        for a in applied {
            match &a.fault {
                Fault::Partition { a: x, b: y, .. } => {
                    open_partitions.push((a.at, x.clone(), y.clone()));
                }
                Fault::Heal => {
                    for (from, x, y) in open_partitions.drain(..) {
                        for &i in &x {
                            for &j in &y {
                                spans.push((
                                    from,
                                    a.at + b.settle_ms,
                                    Who::Pair(i, j),
                                    Reason::Partition,
                                ));
                            }
                        }
                    }
                }
                Fault::Loss(p) if *p > 0.0 => loss_since = Some(a.at),
                Fault::Loss(_) => {
                    if let Some(from) = loss_since.take() {
                        spans.push((from, a.at + b.settle_ms, Who::All, Reason::Loss));
                    }
                }
                // A stalled or stopped node suspects itself when it wakes (issue 14): a
                // slot it runs that another node ran meanwhile is a bug, not the fault's.
                Fault::Crash(n) => crashes.push((*n, a.at)),
                _ => {}
            }
        }
        for (from, x, y) in open_partitions {
            for &i in &x {
                for &j in &y {
                    spans.push((from, end, Who::Pair(i, j), Reason::Partition));
                }
            }
        }
        if let Some(from) = loss_since {
            spans.push((from, end, Who::All, Reason::Loss));
        }
        Deafness { spans, crashes }
    }

    /// Why nodes `x` and `y` could not hear each other at some time in [from, to].
    pub(crate) fn explain(&self, x: usize, y: usize, from: i64, to: i64) -> Option<Reason> {
        self.spans
            .iter()
            .filter(|(s, e, _, _)| *s <= to && *e >= from)
            .find(|(_, _, who, _)| match *who {
                Who::All => true,
                Who::Pair(i, j) => (i == x && j == y) || (i == y && j == x),
            })
            .map(|(_, _, _, r)| *r)
    }

    /// Why `later` could run a slot `earlier` had already started: the earlier runner
    /// crashed right after starting it (before its record left) and `later` started after
    /// the crash; or the two nodes could not hear each other in between.
    pub(crate) fn explain_pair(&self, earlier: &Run, later: &Run, b: Bounds) -> Option<Reason> {
        let lost_record = self.crashes.iter().any(|&(n, t)| {
            n == earlier.node
                && t >= earlier.started
                && t <= earlier.started + b.record_ms
                && later.started >= t
        });
        if lost_record {
            return Some(Reason::Crash);
        }
        if earlier.node == later.node {
            // One node running a slot twice without a crash in between is a bug.
            return None;
        }
        self.explain(
            earlier.node,
            later.node,
            earlier.started - b.settle_ms,
            later.started,
        )
    }

    /// True if some node crashed in [from, to].
    pub(crate) fn crashed_between(&self, from: i64, to: i64) -> bool {
        self.crashes.iter().any(|&(_, t)| t >= from && t <= to)
    }

    /// Any disturbance overlapping [from, to] (for misfire policies that may drop slots).
    fn disturbed(applied: &[Applied], from: i64, to: i64, b: Bounds) -> bool {
        applied
            .iter()
            .any(|a| a.at <= to && a.at + b.settle_ms + 5_000 >= from)
    }
}

/// Impostors: refused unless cut off from the holder, and never a blip in the others'
/// views of the holder while they live.
fn check_identity(f: &mut Findings, result: &SimResult, deaf: &Deafness, end_ms: i64, b: Bounds) {
    let slots: std::collections::BTreeSet<usize> =
        result.impostors.iter().map(|i| i.node).collect();
    for imp in &result.impostors {
        if imp.started {
            f.impostors_started += 1;
        } else {
            f.impostors_refused += 1;
        }
        let cut_off = deaf
            .explain(imp.node, imp.of, imp.at - b.settle_ms, imp.at)
            .is_some();
        if imp.started && !cut_off {
            f.identity.push(format!(
                "an impostor of n{} started at {} ms although n{} was live and reachable",
                imp.of, imp.at, imp.of
            ));
        }
        let left = result
            .applied
            .iter()
            .find(|a| a.at > imp.at && a.fault == Fault::Leave(imp.node))
            .map_or(end_ms, |a| a.at);
        let holder = format!("n{}", imp.of);
        for v in &result.views {
            let inside = v.at >= imp.at && v.at <= left + b.settle_ms;
            if !inside || v.node == imp.of || slots.contains(&v.node) {
                continue;
            }
            if !v.members.contains(&holder)
                && deaf
                    .explain(v.node, imp.of, v.at - b.settle_ms, v.at)
                    .is_none()
            {
                f.identity.push(format!(
                    "n{} lost {holder} from its members at {} ms while an impostor of it lived",
                    v.node, v.at
                ));
            }
        }
    }
}

/// Early runs and skips, and epochs that rise with no owner change (see [`Findings`]).
fn check_clocks(
    f: &mut Findings,
    result: &SimResult,
    names: &std::collections::BTreeSet<&str>,
    from: i64,
    to: i64,
) {
    let miss = |job: &str, slot: i64| Miss {
        job: job.to_string(),
        slot: UnixMillis(slot).to_rfc3339(),
        at_ms: slot - EPOCH.0,
    };
    let checked = |job: &str, slot: i64| names.contains(job) && slot >= from && slot <= to;
    for r in &result.runs {
        if checked(&r.job, r.slot) && r.started < r.slot - EPOCH.0 - EARLY_MS {
            f.early_runs.push(miss(&r.job, r.slot));
        }
    }
    for k in &result.skips {
        if checked(&k.job, k.slot) && k.at < k.slot - EPOCH.0 - EARLY_MS {
            f.early_skips.push(miss(&k.job, k.slot));
        }
    }
    let mut by_job: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for r in result.runs.iter().filter(|r| checked(&r.job, r.slot)) {
        by_job.entry(&r.job).or_default().push(r);
    }
    for (job, mut runs) in by_job {
        runs.sort_by_key(|r| (r.slot, r.started, r.node));
        for w in runs.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a.node != b.node || b.epoch <= a.epoch {
                continue;
            }
            let (lo, hi) = (a.started.min(b.started), a.started.max(b.started));
            let new_view = result
                .views
                .iter()
                .any(|v| v.node == a.node && v.at >= lo && v.at <= hi);
            // A slot skipped by the overlap policy in between retracts the stretch's
            // record (see `Planner::skipped_by_overlap`); that is not what this checks.
            let skipped = result
                .skips
                .iter()
                .any(|k| k.job == job && k.slot > a.slot && k.slot < b.slot);
            // Another node ran the job under an epoch from this one's on (a partition
            // that healed, a node back from a stall): it took the job over meanwhile.
            let taken = runs.iter().any(|r| {
                r.node != a.node && r.epoch >= a.epoch && r.epoch < b.epoch && r.started <= hi
            });
            if !new_view && !skipped && !taken {
                f.epoch_rises.push(format!(
                    "{job}: epoch {} -> {} on n{} between slots {} and {} with no view change",
                    a.epoch,
                    b.epoch,
                    a.node,
                    UnixMillis(a.slot).to_rfc3339(),
                    UnixMillis(b.slot).to_rfc3339()
                ));
            }
        }
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Checks a finished run against the jobs' schedules and the fault schedule.
pub fn check(jobs: &[JobSpec], result: &SimResult, end_ms: i64, b: Bounds) -> Findings {
    let mut f = Findings::default();
    let deaf = Deafness::from_faults(&result.applied, end_ms, b);
    let from = EPOCH.0 + CHECK_FROM_MS;
    let to = EPOCH.0 + end_ms - CHECK_TAIL_MS;
    // The workload's jobs only: the `catalog` scenario's dynamic jobs are checked by
    // `crate::catalog`.
    // Jobs that run after others have no slots: `crate::pipeline` checks them.
    let names: std::collections::BTreeSet<&str> = jobs
        .iter()
        .filter(|j| starling::core::after::parents(j).is_empty())
        .map(|j| j.name.as_str())
        .collect();
    let mut by_slot: BTreeMap<(&str, i64), Vec<&Run>> = BTreeMap::new();
    f.misplaced = result.runs.iter().filter(|r| r.misplaced).count() as u64;
    for r in result
        .runs
        .iter()
        .filter(|r| names.contains(r.job.as_str()))
    {
        if r.slot >= from && r.slot <= to {
            by_slot.entry((&r.job, r.slot)).or_default().push(r);
            f.executions += 1;
        }
    }
    // Overlap skips, by slot. A skip is justified when a run of another slot of the job was
    // running at that moment: started (or fired and waiting for its record to go out), and
    // not ended more than a record's travel time before (its end may not be known yet). For
    // `replace`, the other slot is the newer one that cancelled it before it started.
    let mut skips: BTreeMap<(&str, i64), Vec<i64>> = BTreeMap::new();
    for k in &result.skips {
        skips.entry((&k.job, k.slot)).or_default().push(k.at);
    }
    let mut runs_of: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for r in &result.runs {
        runs_of.entry(&r.job).or_default().push(r);
    }
    let justified_skip = |job: &str, slot: i64| {
        skips.get(&(job, slot)).is_some_and(|ats| {
            ats.iter().any(|&at| {
                runs_of.get(job).is_some_and(|rs| {
                    // An earlier slot's run in progress, or fired in the same batch and
                    // still waiting for its record to reach the runner-up.
                    rs.iter().any(|r| {
                        r.slot != slot
                            && r.started <= at + b.settle_ms
                            && at <= r.ends + b.record_ms
                    })
                })
            })
        })
    };
    let mut lateness = Vec::new();
    let mut expected: std::collections::BTreeSet<(&str, i64)> = std::collections::BTreeSet::new();
    for job in jobs {
        // The slots due come from an oracle independent of `next_after` (the code the nodes
        // schedule with): cron schedules checked second by second with `is_slot`, intervals
        // and one-shots by arithmetic.
        let candidates: Vec<UnixMillis> = match &job.schedule {
            Schedule::At(at) => vec![*at],
            Schedule::Every { interval_ms } => (from.div_euclid(*interval_ms)
                ..=to.div_euclid(*interval_ms))
                .map(|k| UnixMillis(k * interval_ms))
                .collect(),
            Schedule::Cron(_) => (from.div_euclid(1000)..=to.div_euclid(1000))
                .map(|sec| UnixMillis(sec * 1000))
                .collect(),
            // Runs after its parents, checked apart (`pipeline`).
            Schedule::After(_) => Vec::new(),
        };
        for s in candidates
            .into_iter()
            .filter(|&t| t.0 >= from && t.0 <= to && job.schedule.is_slot(t))
        {
            expected.insert((job.name.as_str(), s.0));
            f.slots_due += 1;
            let runs = by_slot
                .get(&(job.name.as_str(), s.0))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let at_ms = s.0 - EPOCH.0;
            match runs {
                [] if justified_skip(job.name.as_str(), s.0) => f.skipped_by_overlap += 1,
                [] => {
                    let may_drop = job.misfire != Misfire::All
                        && Deafness::disturbed(&result.applied, at_ms - 10_000, at_ms, b);
                    if may_drop {
                        f.skipped_by_policy += 1;
                    } else {
                        f.missed.push(Miss {
                            job: job.name.to_string(),
                            slot: s.to_rfc3339(),
                            at_ms,
                        });
                    }
                }
                [one] => lateness.push(one.started - at_ms),
                many => {
                    let mut runs: Vec<&Run> = many.to_vec();
                    let d = duplicate(&deaf, job.name.as_str(), s.0, &mut runs, b);
                    lateness.push(runs[0].started - at_ms);
                    f.duplicates.push(d);
                }
            }
        }
    }
    // Runs of slots that are not slots at all.
    for &(job, slot) in by_slot.keys() {
        if !expected.contains(&(job, slot)) {
            f.spurious.push(Miss {
                job: job.to_string(),
                slot: UnixMillis(slot).to_rfc3339(),
                at_ms: slot - EPOCH.0,
            });
        }
    }
    check_identity(&mut f, result, &deaf, end_ms, b);
    check_clocks(&mut f, result, &names, from, to);
    lateness.sort_unstable();
    f.lateness_ms = (
        percentile(&lateness, 0.50),
        percentile(&lateness, 0.99),
        lateness.last().copied().unwrap_or(0),
    );
    let last_change = result
        .applied
        .iter()
        .filter(|a| !matches!(a.fault, Fault::ClockJump { .. }))
        .map(|a| match a.fault {
            Fault::Stall { ms, .. } | Fault::Pause { ms, .. } => a.at + ms as i64,
            _ => a.at,
        })
        .max()
        .unwrap_or(0);
    f.owners_agree = if end_ms - last_change >= b.settle_ms * 2 && !result.final_views.is_empty() {
        let first = &result.final_views[0].1.members;
        Some(result.final_views.iter().all(|(_, v)| &v.members == first))
    } else {
        None
    };
    f
}
