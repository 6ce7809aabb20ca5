//! Run history: what each run on this node did (slot, fire id, epoch, attempts, start,
//! duration, outcome, the tail of its output), kept in memory within a count and a byte
//! bound, saved in the data dir when there is one, and merged across nodes by the API.
//!
//! Each node keeps only its own runs. `GET /v1/runs` on any node asks every live member's
//! API for its part and merges them ([`merge`]); a node without an API answers for itself
//! only (see the README's Operations section).

mod file;

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::core::types::{FireId, JobId, NodeId, UnixMillis};
use crate::exec::{Outcome, Report, RunContext};

pub use file::{HISTORY_FILE, flush_every};

/// Default [`HistoryLimits::max_runs`].
pub const DEFAULT_MAX_RUNS: usize = 10_000;
/// Default [`HistoryLimits::max_bytes`]: 4 MiB.
pub const DEFAULT_MAX_BYTES: usize = 4 << 20;
/// Longest message (an error's text) a record keeps, in bytes; output tails are bounded by
/// the executor (2 KiB per stream by default).
pub const MAX_MESSAGE_BYTES: usize = crate::core::limits::MAX_HISTORY_MESSAGE_BYTES;

/// How much history a node keeps. The oldest runs go first when either bound is passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most runs kept (0: none). Default 10,000.
    pub max_runs: usize,
    /// Most bytes kept, counting each record's fixed size and its texts (0: none).
    /// Default 4 MiB.
    pub max_bytes: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            max_runs: DEFAULT_MAX_RUNS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// How a slot ended on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// The run succeeded (possibly after retries).
    Ok,
    /// The last attempt failed: a non-zero exit (`exit_code`), a handler error or panic,
    /// a command that could not start (`message`).
    Failed,
    /// The last attempt ran past the job's timeout and was killed.
    TimedOut,
    /// The run was stopped while running: `overlap = replace`, a cancel request, or the
    /// node's shutdown after its drain timeout.
    Cancelled,
    /// Not run: the job's previous run was still running (`overlap = forbid`), or a newer
    /// slot replaced it before it started (`overlap = replace`).
    SkippedByOverlap,
    /// Not run: found late, and the job's misfire policy (`once`, `skip`) dropped it.
    SkippedByMisfirePolicy,
    /// Not run: older than the job's catch-up window when found.
    Missed,
    /// Not run (quorum mode): the node lost the quorum before a quorum held its record.
    Abandoned,
    /// Not run: no live member had the tags the job's constraints require (recorded by
    /// the node that would own the job without them).
    Unplaceable,
}

impl RunOutcome {
    /// Every outcome, in order.
    pub const ALL: [RunOutcome; 9] = [
        RunOutcome::Ok,
        RunOutcome::Failed,
        RunOutcome::TimedOut,
        RunOutcome::Cancelled,
        RunOutcome::SkippedByOverlap,
        RunOutcome::SkippedByMisfirePolicy,
        RunOutcome::Missed,
        RunOutcome::Abandoned,
        RunOutcome::Unplaceable,
    ];

    /// The name used in JSON and in metric labels (`timed_out`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Failed => "failed",
            RunOutcome::TimedOut => "timed_out",
            RunOutcome::Cancelled => "cancelled",
            RunOutcome::SkippedByOverlap => "skipped_by_overlap",
            RunOutcome::SkippedByMisfirePolicy => "skipped_by_misfire_policy",
            RunOutcome::Missed => "missed",
            RunOutcome::Abandoned => "abandoned",
            RunOutcome::Unplaceable => "unplaceable",
        }
    }
}

impl std::fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a node's history: a run, or slots that did not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRecord {
    /// The node that ran (or skipped) it.
    pub node: NodeId,
    /// The job.
    pub job: JobId,
    /// The slot (the first of a range of missed slots).
    pub slot: UnixMillis,
    /// The slot's fire id.
    pub fire_id: FireId,
    /// The ownership epoch it ran under (0 when it did not run).
    pub epoch: u64,
    /// Attempts made (0 when it did not run).
    pub attempts: u32,
    /// When the first attempt started (this node's clock); `None` when it did not run.
    pub started_at: Option<UnixMillis>,
    /// From the first attempt's start to the last one's end, retries' backoff included.
    pub duration_ms: Option<u64>,
    /// How it ended.
    pub outcome: RunOutcome,
    /// The shell's exit status when it exited non-zero.
    pub exit_code: Option<i32>,
    /// Why it failed or did not run, at most [`MAX_MESSAGE_BYTES`].
    pub message: Option<String>,
    /// The tail of the last attempt's standard output.
    pub stdout_tail: String,
    /// The tail of the last attempt's standard error.
    pub stderr_tail: String,
    /// How many slots this entry stands for: more than 1 only for a range of missed or
    /// misfire-skipped slots.
    pub slots: u64,
    /// The last slot of the range (`slot` when `slots` is 1).
    pub last_slot: UnixMillis,
}

impl RunRecord {
    /// A slot that did not run (skipped, missed, abandoned): one entry for `slots` slots
    /// from `first` to `last`.
    pub fn not_run(
        node: &NodeId,
        job: &JobId,
        (first, last, slots): (UnixMillis, UnixMillis, u64),
        outcome: RunOutcome,
        message: impl Into<String>,
    ) -> RunRecord {
        RunRecord {
            node: node.clone(),
            job: job.clone(),
            slot: first,
            fire_id: FireId::of(job, first),
            epoch: 0,
            attempts: 0,
            started_at: None,
            duration_ms: None,
            outcome,
            exit_code: None,
            message: Some(bounded(message.into())),
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            slots,
            last_slot: last,
        }
    }

    /// A run that started at `started` and ended at `ended` after `attempts` attempts, the
    /// last of which reported `report`.
    pub fn ran(
        ctx: &RunContext,
        started: UnixMillis,
        ended: UnixMillis,
        attempts: u32,
        report: Report,
    ) -> RunRecord {
        let (outcome, exit_code, message) = match report.outcome {
            Outcome::Success => (RunOutcome::Ok, None, None),
            Outcome::Exited(code) => (
                RunOutcome::Failed,
                Some(code),
                Some(format!("exit status {code}")),
            ),
            Outcome::Failed(why) => (RunOutcome::Failed, None, Some(bounded(why))),
            Outcome::Panicked(why) => (
                RunOutcome::Failed,
                None,
                Some(bounded(format!("panicked: {why}"))),
            ),
            Outcome::TimedOut => (RunOutcome::TimedOut, None, None),
        };
        RunRecord {
            node: ctx.node_id.clone(),
            job: ctx.job.clone(),
            slot: ctx.scheduled_at,
            fire_id: ctx.fire_id,
            epoch: ctx.epoch,
            attempts,
            started_at: Some(started),
            duration_ms: Some(ended.millis_since(started).max(0) as u64),
            outcome,
            exit_code,
            message,
            stdout_tail: report.stdout_tail,
            stderr_tail: report.stderr_tail,
            slots: 1,
            last_slot: ctx.scheduled_at,
        }
    }

    /// A run stopped while running (see [`RunOutcome::Cancelled`]).
    pub fn cancelled(
        ctx: &RunContext,
        started: UnixMillis,
        ended: UnixMillis,
        attempts: u32,
    ) -> RunRecord {
        let mut r = RunRecord::ran(ctx, started, ended, attempts, Outcome::Success.into());
        r.outcome = RunOutcome::Cancelled;
        r
    }

    /// Bytes this record counts for against [`HistoryLimits::max_bytes`].
    pub fn size(&self) -> usize {
        std::mem::size_of::<RunRecord>()
            + self.job.as_str().len()
            + self.message.as_ref().map_or(0, String::len)
            + self.stdout_tail.len()
            + self.stderr_tail.len()
    }

    /// The record as the API shows it.
    pub fn entry(&self) -> RunEntry {
        RunEntry {
            node: self.node.to_string(),
            job: self.job.to_string(),
            slot: self.slot.to_rfc3339(),
            slot_ms: self.slot.0,
            fire_id: self.fire_id.to_string(),
            epoch: self.epoch,
            attempts: self.attempts,
            started_at: self.started_at.map(UnixMillis::to_rfc3339),
            started_at_ms: self.started_at.map(|t| t.0),
            duration_ms: self.duration_ms,
            outcome: self.outcome,
            exit_code: self.exit_code,
            message: self.message.clone(),
            stdout: self.stdout_tail.clone(),
            stderr: self.stderr_tail.clone(),
            slots: self.slots,
            last_slot_ms: self.last_slot.0,
        }
    }
}

/// Cuts `text` to at most [`MAX_MESSAGE_BYTES`], at a character boundary, keeping its start.
fn bounded(mut text: String) -> String {
    if text.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// A history entry as JSON (`GET /v1/runs`): times in RFC 3339 and in Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEntry {
    /// The node that ran (or skipped) it.
    pub node: String,
    /// The job.
    pub job: String,
    /// The slot, RFC 3339 UTC.
    pub slot: String,
    /// The slot, Unix milliseconds.
    pub slot_ms: i64,
    /// The slot's fire id (16 hex digits).
    pub fire_id: String,
    /// The ownership epoch (0 when it did not run).
    pub epoch: u64,
    /// Attempts made (0 when it did not run).
    pub attempts: u32,
    /// When the first attempt started, RFC 3339 UTC.
    pub started_at: Option<String>,
    /// The same in Unix milliseconds.
    pub started_at_ms: Option<i64>,
    /// Start of the first attempt to end of the last.
    pub duration_ms: Option<u64>,
    /// `ok`, `failed`, `timed_out`, `cancelled`, `skipped_by_overlap`,
    /// `skipped_by_misfire_policy`, `missed` or `abandoned`.
    pub outcome: RunOutcome,
    /// The shell's exit status when it exited non-zero.
    pub exit_code: Option<i32>,
    /// Why it failed or did not run.
    pub message: Option<String>,
    /// The tail of the last attempt's standard output.
    pub stdout: String,
    /// The tail of the last attempt's standard error.
    pub stderr: String,
    /// Slots this entry stands for (more than 1 for a range of missed slots).
    pub slots: u64,
    /// The range's last slot, Unix milliseconds.
    pub last_slot_ms: i64,
}

/// Merges several nodes' entries, newest first (by last slot, then node, then slot), and
/// keeps `limit`.
pub fn merge(lists: impl IntoIterator<Item = Vec<RunEntry>>, limit: usize) -> Vec<RunEntry> {
    let mut all: Vec<RunEntry> = lists.into_iter().flatten().collect();
    all.sort_by(|a, b| {
        b.last_slot_ms
            .cmp(&a.last_slot_ms)
            .then_with(|| a.node.cmp(&b.node))
            .then_with(|| b.slot_ms.cmp(&a.slot_ms))
            .then_with(|| a.job.cmp(&b.job))
    });
    all.truncate(limit);
    all
}

/// One node's history (see the module docs). Cheap to share behind an `Arc`; recording
/// takes a short lock.
#[derive(Debug)]
pub struct History {
    node: NodeId,
    limits: HistoryLimits,
    inner: Mutex<Inner>,
    /// Where it is saved, if anywhere.
    file: Option<file::HistoryFile>,
}

#[derive(Debug, Default)]
struct Inner {
    runs: VecDeque<RunRecord>,
    bytes: usize,
    /// Grows with every change, so a save can tell whether there is anything to write.
    changes: u64,
}

impl History {
    /// An empty history kept in memory only.
    pub fn new(node: NodeId, limits: HistoryLimits) -> History {
        History {
            node,
            limits,
            inner: Mutex::default(),
            file: None,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node
    }

    /// The bounds it keeps to.
    pub fn limits(&self) -> HistoryLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-changed in a way that
        // matters more than losing history: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a record, dropping the oldest ones past the bounds.
    pub fn record(&self, record: RunRecord) {
        if self.limits.max_runs == 0 || self.limits.max_bytes == 0 {
            return;
        }
        let mut inner = self.lock();
        inner.bytes += record.size();
        inner.runs.push_back(record);
        while inner.runs.len() > self.limits.max_runs
            || (inner.bytes > self.limits.max_bytes && inner.runs.len() > 1)
        {
            if let Some(old) = inner.runs.pop_front() {
                inner.bytes -= old.size();
            }
        }
        inner.changes += 1;
    }

    /// The newest `limit` records, newest first, of `job` or of every job.
    pub fn query(&self, job: Option<&str>, limit: usize) -> Vec<RunRecord> {
        let inner = self.lock();
        inner
            .runs
            .iter()
            .rev()
            .filter(|r| job.is_none_or(|j| r.job.as_str() == j))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.lock().runs.len()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held, as counted against the bound.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn changes(&self) -> u64 {
        self.lock().changes
    }

    fn snapshot(&self) -> (u64, Vec<RunRecord>) {
        let inner = self.lock();
        (inner.changes, inner.runs.iter().cloned().collect())
    }

    fn restore(&self, runs: Vec<RunRecord>) {
        for r in runs {
            self.record(r);
        }
        self.lock().changes = 0;
    }
}

#[cfg(test)]
mod tests;
