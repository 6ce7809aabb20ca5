//! One run of a slot: its task, its retries, what it waits for before it starts
//! (the run before it, its record's gate, the quorum), and what it shares with the node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::Clock;
use super::health::HealthShared;
use super::publisher::{Batch, GateState};
use crate::cluster::Publisher;
use crate::core::job::ExecSpec;
use crate::core::planner::View;
use crate::core::types::{FireId, JobId, NodeId, UnixMillis};
use crate::exec::{BoxFuture, Executor, Outcome, Report, RunContext, backoff};
use crate::history::{History, RunRecord};
use crate::metrics::Metrics;

/// Retry backoff settings of a run.
#[derive(Clone, Copy)]
pub(super) struct Retry {
    pub(super) base: Duration,
    pub(super) max: Duration,
}

/// One attempt: a panic in the executor, before or inside its future, is contained here
/// rather than unwound through the node.
pub(super) async fn attempt(executor: &dyn Executor, exec: &ExecSpec, ctx: &RunContext) -> Report {
    debug!(job = %ctx.job, slot = %ctx.scheduled_at, attempt = ctx.attempt, "run starting");
    let panicked = |payload| Outcome::Panicked(crate::exec::panic_message(payload)).into();
    match std::panic::catch_unwind(AssertUnwindSafe(|| executor.report(exec, ctx.clone()))) {
        Ok(run) => match AssertUnwindSafe(run).catch_unwind().await {
            Ok(r) => r,
            Err(payload) => panicked(payload),
        },
        Err(payload) => panicked(payload),
    }
}

/// What a run needs to call its executor.
pub(super) struct RunInput {
    pub(super) executor: Arc<dyn Executor>,
    pub(super) exec: ExecSpec,
    pub(super) ctx: RunContext,
    pub(super) retry: Retry,
}

/// A run's task: waits for what it must first (`wait`; false means do not run), then
/// runs. The task of a run that waits for nothing and succeeds at once is kept small (a
/// thousand of them start in the same millisecond): what may be needed later is boxed,
/// and `input` is borrowed where it lies rather than moved into the futures that use it,
/// which would store it twice.
pub(super) async fn run_task(guard: RunGuard, wait: Option<BoxFuture<bool>>, input: RunInput) {
    if let Some(wait) = wait
        && !wait.await
    {
        return;
    }
    let counters = &*guard.counters;
    // Before the health check: a stall while the run waits for its turn still stops it.
    counters.pace.turn(counters.clock.monotonic()).await;
    if let Some(stalls) = guard.stalls
        && !counters
            .health
            .may_start(stalls, counters.clock.monotonic())
    {
        // The node stalled since this run was fired (see `health`): its loop decides.
        let _ = counters.not_run.send(NotRun::Stalled {
            job: input.ctx.job.clone(),
            slot: input.ctx.scheduled_at,
            epoch: input.ctx.epoch,
            stalls,
        });
        return;
    }
    let started = counters.clock.now();
    if let Some(shared) = &guard.shared {
        shared.start(started);
    }
    counters
        .metrics
        .started(started.millis_since(input.ctx.scheduled_at));
    // Records the run as cancelled if its task is dropped before the end (`replace`, a
    // cancel request, the drain timeout at shutdown).
    let mut running = Running {
        counters,
        ctx: &input.ctx,
        started,
        attempts: AtomicU32::new(1),
        ended: false,
    };
    let report = run_attempts(&input, &running.attempts).await;
    running.ended = true;
    if report.outcome.is_success() {
        counters.triggers.succeeded(&input.ctx);
    } else {
        counters.failed.fetch_add(1, Ordering::Relaxed);
    }
    let attempts = running.attempts.load(Ordering::Relaxed);
    let record = RunRecord::ran(&input.ctx, started, counters.clock.now(), attempts, report);
    counters.ended(record);
}

/// A run between its first attempt's start and its end (see `run_task`).
struct Running<'a> {
    counters: &'a RunCounters,
    ctx: &'a RunContext,
    started: UnixMillis,
    /// The attempt under way.
    attempts: AtomicU32,
    ended: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let now = self.counters.clock.now();
            let attempts = self.attempts.load(Ordering::Relaxed);
            let record = RunRecord::cancelled(self.ctx, self.started, now, attempts);
            self.counters.ended(record);
        }
    }
}

/// Runs a slot: the first attempt, then retries with backoff (boxed, entered only after a
/// failure). `attempts` follows the attempt under way. Returns the last attempt's report.
pub(super) async fn run_attempts(input: &RunInput, attempts_made: &AtomicU32) -> Report {
    let RunInput {
        executor,
        exec,
        ctx,
        retry,
    } = input;
    let attempts = exec.retries.saturating_add(1);
    let first = attempt(executor.as_ref(), exec, ctx).await;
    let log = |ctx: &RunContext, report: &Report| {
        if report.outcome.is_success() {
            info!(job = %ctx.job, slot = %ctx.scheduled_at, fire_id = %ctx.fire_id, attempt = ctx.attempt, "run succeeded");
        } else {
            let (stdout, stderr) = (report.stdout_tail.trim_end(), report.stderr_tail.trim_end());
            warn!(job = %ctx.job, slot = %ctx.scheduled_at, fire_id = %ctx.fire_id, attempt = ctx.attempt, attempts, outcome = %report.outcome, stdout, stderr, "run failed");
        }
    };
    log(ctx, &first);
    if first.outcome.is_success() || attempts == 1 {
        return first;
    }
    Box::pin(async move {
        let mut ctx = ctx.clone();
        let mut report = first;
        for n in 2..=attempts {
            tokio::time::sleep(backoff(n - 1, retry.base, retry.max)).await;
            ctx.attempt = n;
            attempts_made.store(n, Ordering::Relaxed);
            report = attempt(executor.as_ref(), exec, &ctx).await;
            log(&ctx, &report);
            if report.outcome.is_success() {
                break;
            }
        }
        report
    })
    .await
}

/// What runs report back without waking the node's task, and the node's clock (one
/// shared allocation for every run).
pub(super) struct RunCounters {
    pub(super) clock: Arc<dyn Clock>,
    /// Whether runs may start (see `health`).
    pub(super) health: Arc<HealthShared>,
    /// Runs that end without running their slot report here.
    pub(super) not_run: mpsc::UnboundedSender<NotRun>,
    /// Runs started and not finished.
    pub(super) running: AtomicUsize,
    /// Runs that ended in failure after all retries.
    pub(super) failed: AtomicU64,
    /// Notified when `running` drops to zero.
    pub(super) idle: tokio::sync::Notify,
    /// Where runs record how they ended.
    pub(super) history: Arc<History>,
    pub(super) metrics: Arc<Metrics>,
    /// Where a success of a job others run after starts them (`node::after`).
    pub(super) triggers: Arc<super::after::Triggers>,
    /// When runs may start (see `pace`).
    pub(super) pace: super::pace::Pace,
}

impl RunCounters {
    /// A slot ended here (ran, or did not run): into the history and the metrics.
    pub(super) fn ended(&self, record: RunRecord) {
        self.metrics.ended(&record);
        self.history.record(record);
    }
}

/// The latest run of a job on this node, for the overlap policy.
pub(super) struct LocalRun {
    pub(super) ctx: RunContext,
    /// `None` until its task is spawned (see `Runtime::start_runs`).
    pub(super) handle: Option<tokio::task::AbortHandle>,
    pub(super) shared: Arc<RunShared>,
    /// When it was fired (this node's clock).
    pub(super) fired_at: UnixMillis,
    /// It came due while the run of this slot, which started late, was running, and waits
    /// for that run with a grace (see `After`): a slot that comes due meanwhile is skipped.
    pub(super) behind: Option<UnixMillis>,
}

/// A run's state bits in [`RunShared::state`].
pub(super) const RUN_STARTED: u8 = 1;
pub(super) const RUN_ANNOUNCED: u8 = 2;
pub(super) const RUN_ENDED: u8 = 4;

/// What a run of a `forbid` or `replace` job shares with the node: whether its executor
/// was called, whether it was announced in gossip, whether its task ended. One allocation
/// per run; `allow` runs have none.
pub(super) struct RunShared {
    /// `RUN_*` bits.
    pub(super) state: AtomicU8,
    /// Woken when the run starts and when its task ends (a `forbid` run waits for it).
    pub(super) changed: tokio::sync::Notify,
    /// When the executor was called (ms), once `RUN_STARTED` is set.
    pub(super) started_at: AtomicI64,
    pub(super) job: JobId,
    pub(super) slot: UnixMillis,
    /// To announce the end of a run that was announced.
    pub(super) publish: mpsc::UnboundedSender<Batch>,
}

impl RunShared {
    pub(super) fn has(&self, bit: u8) -> bool {
        self.state.load(Ordering::Acquire) & bit != 0
    }

    pub(super) fn new(
        job: JobId,
        slot: UnixMillis,
        publish: mpsc::UnboundedSender<Batch>,
    ) -> RunShared {
        RunShared {
            state: AtomicU8::new(0),
            changed: tokio::sync::Notify::new(),
            started_at: AtomicI64::new(0),
            job,
            slot,
            publish,
        }
    }

    /// Waits until the run's task ended.
    pub(super) async fn ended(&self) {
        self.reached(RUN_ENDED).await;
    }

    /// Waits until one of `bits` is set.
    async fn reached(&self, bits: u8) {
        loop {
            let changed = self.changed.notified();
            if self.has(bits) {
                return;
            }
            changed.await;
        }
    }

    /// The executor is about to be called, at `now`.
    fn start(&self, now: UnixMillis) {
        self.started_at.store(now.0, Ordering::Relaxed);
        self.state.fetch_or(RUN_STARTED, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    /// When the run started, if it did.
    fn started_at(&self) -> Option<UnixMillis> {
        self.has(RUN_STARTED)
            .then(|| UnixMillis(self.started_at.load(Ordering::Relaxed)))
    }

    /// The node sent the run's start announcement. Returns false if the task had already
    /// ended without seeing it: the node then announces the end itself. Either way the
    /// end goes out after the start.
    pub(super) fn announced(&self) -> bool {
        self.state.fetch_or(RUN_ANNOUNCED, Ordering::AcqRel) & RUN_ENDED == 0
    }

    /// The run's task ended (finished, abandoned or cancelled).
    fn end(&self) {
        if self.state.fetch_or(RUN_ENDED, Ordering::AcqRel) & RUN_ANNOUNCED != 0 {
            let _ = self
                .publish
                .send(Batch::running(vec![(self.job.clone(), None)]));
        }
        self.changed.notify_waiters();
    }
}

/// The run of the same job that a `forbid` run waits for before it starts.
pub(super) struct After {
    pub(super) run: Arc<RunShared>,
    /// `Some`: skip this run if that one, which started late, is still running when it
    /// would have ended had it started on time, or this long after this run's slot,
    /// whichever comes first; `None`: wait as long as it takes.
    pub(super) grace: Option<Duration>,
}

impl After {
    /// What a `forbid` run of `slot`, fired at `now`, waits for while `previous` (the job's
    /// latest run here) has not ended; `None`: nothing, the slot is skipped.
    ///
    /// - Slots found due together (a catch-up) run in order, one at a time: this one was
    ///   already due when the previous run was fired, so it did not come due while that run
    ///   ran.
    /// - A slot that comes due while the previous run runs is skipped, unless that run
    ///   started late (or has not started yet): the slot then waits as long as that run
    ///   started late, at most `grace`, and is skipped only if that run is still running
    ///   by then, that is, if it would still have been running had it started on time. A
    ///   catch-up fired just before the next slot, or held up by the catch-ups before it,
    ///   would otherwise make the next slot look overlapped. The bound keeps short the
    ///   time a slot whose record is out waits to start (a crash then loses it).
    /// - One slot at most waits so: a slot that comes due while one does is skipped.
    pub(super) fn of(
        previous: &LocalRun,
        slot: UnixMillis,
        now: UnixMillis,
        grace: Duration,
    ) -> Option<After> {
        let run = previous.shared.clone();
        if slot <= previous.fired_at {
            return Some(After { run, grace: None });
        }
        let waits = match run.started_at() {
            Some(started) => Self::until(&run, slot, started, grace) > now,
            None => previous.behind.is_none(),
        };
        waits.then_some(After {
            run,
            grace: Some(grace),
        })
    }

    /// When a run of `slot` stops waiting for `run`, which started at `started`.
    fn until(
        run: &RunShared,
        slot: UnixMillis,
        started: UnixMillis,
        grace: Duration,
    ) -> UnixMillis {
        let late = Duration::from_millis(started.millis_since(run.slot).max(0) as u64);
        slot.saturating_add(late.min(grace))
    }

    /// Waits for the run before; returns whether it ended (false: it is still running,
    /// past the grace).
    pub(super) async fn wait(&self, slot: UnixMillis, clock: &dyn Clock) -> bool {
        let run = &self.run;
        let Some(grace) = self.grace else {
            run.ended().await;
            return true;
        };
        let latest = slot.saturating_add(grace);
        tokio::select! {
            biased;
            () = run.reached(RUN_STARTED | RUN_ENDED) => {}
            () = sleep_to(clock, latest) => {}
        }
        if let Some(started) = run.started_at() {
            let until = Self::until(run, slot, started, grace);
            tokio::select! {
                biased;
                () = run.ended() => {}
                () = sleep_to(clock, until) => {}
            }
        }
        run.has(RUN_ENDED)
    }
}

/// Why a run ended without running its slot (reported to the node's loop).
pub(super) enum NotRun {
    /// Quorum mode: the quorum was lost before a quorum held the run's record.
    Abandoned { job: JobId, slot: UnixMillis },
    /// `forbid`: the run it waited for, which started late, was still running (see `After`).
    Skipped {
        job: JobId,
        slot: UnixMillis,
        running: UnixMillis,
    },
    /// The node stalled after the run was fired under `epoch`, at stall count `stalls` (see
    /// `health`), or its loop had not turned lately when the run was about to start.
    Stalled {
        job: JobId,
        slot: UnixMillis,
        epoch: u64,
        stalls: u64,
    },
}

/// Sleeps on `clock` until it reads `until` or later.
pub(super) async fn sleep_to(clock: &dyn Clock, until: UnixMillis) {
    while clock.now() < until {
        clock.sleep_until(until).await;
    }
}

/// Abort handles of started runs. A finished run's handle keeps its task's memory, so
/// they are pruned: when there are twice as many as the last pruning left (at least
/// `PRUNE_RUNS_AT`). Pruning before a burst, not while spawning it, keeps it off the
/// burst's path. Each handle is kept with its run's fire id, to cancel a run by it.
#[derive(Default)]
pub(super) struct RunHandles {
    pub(super) handles: Vec<(FireId, tokio::task::AbortHandle)>,
    pub(super) prune_at: usize,
}

/// `RunHandles` keeps at least this many handles before pruning.
pub(super) const PRUNE_RUNS_AT: usize = 1024;

impl RunHandles {
    pub(super) fn push(&mut self, fire_id: FireId, handle: tokio::task::AbortHandle) {
        self.handles.push((fire_id, handle));
    }

    /// Drops the handles of finished runs, if due.
    pub(super) fn prune(&mut self) {
        if self.handles.len() >= self.prune_at.max(PRUNE_RUNS_AT) {
            self.handles.retain(|(_, r)| !r.is_finished());
            self.prune_at = self.handles.len() * 2;
        }
    }

    pub(super) fn abort(&mut self) {
        for (_, run) in self.handles.drain(..) {
            run.abort();
        }
    }

    /// Aborts the unfinished runs with fire id `id`; returns whether there was one.
    pub(super) fn abort_fire_id(&mut self, id: FireId) -> bool {
        let mut found = false;
        for (f, run) in &self.handles {
            if *f == id && !run.is_finished() {
                run.abort();
                found = true;
            }
        }
        found
    }
}

/// A run ready to be spawned (see `Runtime::prepared`).
pub(super) struct Prepared {
    pub(super) guard: RunGuard,
    pub(super) wait: Option<BoxFuture<bool>>,
    pub(super) input: RunInput,
}

/// Held by a run's task: counts the run in `RunCounters::running` and marks it ended,
/// however the task ends (finished, abandoned, cancelled by `replace` or shutdown, even
/// before it was first polled: the guard is dropped with the future).
pub(super) struct RunGuard {
    pub(super) counters: Arc<RunCounters>,
    pub(super) shared: Option<Arc<RunShared>>,
    /// The node's stall count when the run was fired (see `health`). `None` for a run-now
    /// request: it is claimed in gossip just before it starts, and the claim, not the
    /// schedule's records, is what keeps it to one run.
    pub(super) stalls: Option<u64>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.end();
        }
        if self.counters.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.counters.idle.notify_waiters();
        }
    }
}

/// How a run waits for its record in quorum mode.
pub(super) struct QuorumWait {
    pub(super) min: usize,
    pub(super) view: watch::Receiver<View>,
    pub(super) publisher: Publisher,
    pub(super) peers: Arc<BTreeMap<NodeId, (u64, SocketAddr)>>,
    /// How long to wait without the quorum before deciding.
    pub(super) grace: Duration,
}

impl QuorumWait {
    /// Waits until a quorum has the record (run). While the view has the quorum, a wait
    /// that timed out runs too. While it has not (cut off, or just back from a stall), the
    /// run waits up to `grace` (the time the majority side waits before it takes over) for
    /// the quorum or the confirmation to come back; then it starts only if a node now on the
    /// other side, which is the majority side, is known to hold the record: it knows, and
    /// will not run the slot. Otherwise this node does not run it: the majority side runs it
    /// if the record never reached it (if it did, see `Planner::abandon`). Returns whether
    /// to run.
    pub(super) async fn wait(mut self, gate: &mut watch::Receiver<GateState>) -> bool {
        let _reading = self.publisher.read_receipts();
        let mut lost_until: Option<tokio::time::Instant> = None;
        loop {
            let state = *gate.borrow_and_update();
            if state.confirmed {
                return true;
            }
            let deadline = {
                let v = self.view.borrow_and_update();
                if v.members.len() >= self.min {
                    if state.open {
                        return true;
                    }
                    lost_until = None;
                    None
                } else {
                    #[allow(clippy::disallowed_methods)] // a timer, not a clock reading
                    let now = tokio::time::Instant::now();
                    let until = *lost_until.get_or_insert(now + self.grace);
                    if now >= until {
                        let Some(seq) = state.seq else {
                            return false;
                        };
                        return self.peers.iter().any(|(node, (_, addr))| {
                            !v.members.contains(node) && self.publisher.received(*addr) >= seq
                        });
                    }
                    Some(until)
                }
            };
            let expiry = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = gate.changed() => if changed.is_err() { return true; },
                changed = self.view.changed() => if changed.is_err() { return true; },
                _ = expiry => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Handles pushed in bursts of any size are pruned: a burst's handles were all pushed
    /// after it was spawned, and a check for "as many as the vector holds" missed every
    /// time (1,000 `overlap = allow` runs a second kept every finished task's memory).
    #[tokio::test]
    async fn finished_runs_handles_are_pruned_whatever_the_burst_size() {
        let mut runs = RunHandles::default();
        for burst in [
            1000, 1000, 1000, 1, 999, 1000, 1000, 1000, 1000, 1000, 1000, 64, 3000,
        ] {
            runs.prune();
            let mut handles = Vec::new();
            for _ in 0..burst {
                handles.push(tokio::spawn(async {}));
            }
            for h in handles {
                let handle = h.abort_handle();
                let _ = h.await;
                runs.push(FireId(0), handle);
            }
            assert!(
                runs.handles.len() <= 2 * PRUNE_RUNS_AT + burst,
                "{} handles kept after a burst of {burst}",
                runs.handles.len()
            );
        }
        // A run still running is kept.
        let running = tokio::spawn(std::future::pending::<()>());
        runs.push(FireId(1), running.abort_handle());
        runs.prune();
        for _ in 0..PRUNE_RUNS_AT {
            let h = tokio::spawn(async {});
            let handle = h.abort_handle();
            let _ = h.await;
            runs.push(FireId(0), handle);
        }
        runs.prune();
        assert_eq!(runs.handles.len(), 1);
        // Cancelled by its fire id; another id finds nothing.
        assert!(!runs.abort_fire_id(FireId(7)));
        assert!(runs.abort_fire_id(FireId(1)));
        assert!(running.await.unwrap_err().is_cancelled());
        runs.abort();
    }

    const GRACE: Duration = Duration::from_millis(200);

    /// The latest run of a job: slot `slot`, fired at `fired_at`, started at `started`.
    fn local_run(slot: i64, fired_at: i64, started: Option<i64>, behind: Option<i64>) -> LocalRun {
        let job = JobId::new("j");
        let shared = Arc::new(RunShared::new(
            job.clone(),
            UnixMillis(slot),
            mpsc::unbounded_channel().0,
        ));
        if let Some(at) = started {
            shared.start(UnixMillis(at));
        }
        LocalRun {
            ctx: RunContext {
                fire_id: crate::core::types::FireId::of(&job, UnixMillis(slot)),
                job,
                scheduled_at: UnixMillis(slot),
                node_id: NodeId::new("n"),
                attempt: 1,
                epoch: 1,
            },
            handle: None,
            shared,
            fired_at: UnixMillis(fired_at),
            behind: behind.map(UnixMillis),
        }
    }

    fn grace(previous: &LocalRun, slot: i64, now: i64) -> Option<Option<Duration>> {
        After::of(previous, UnixMillis(slot), UnixMillis(now), GRACE).map(|a| a.grace)
    }

    #[test]
    fn a_slot_already_due_when_the_run_before_was_fired_waits_for_it_unbounded() {
        let catch_up = local_run(1_000, 2_500, None, None);
        assert_eq!(grace(&catch_up, 2_000, 2_500), Some(None));
    }

    #[test]
    fn a_slot_due_while_an_on_time_run_runs_is_skipped() {
        let on_time = local_run(1_000, 1_000, Some(1_000), None);
        assert_eq!(grace(&on_time, 2_000, 2_000), None);
        // Started 3 ms late, found 5 ms late: past what it would have waited.
        let nearly = local_run(1_000, 1_000, Some(1_003), None);
        assert_eq!(grace(&nearly, 2_000, 2_005), None);
    }

    #[test]
    fn a_slot_due_while_a_late_run_runs_waits_with_the_grace() {
        let late = local_run(1_000, 1_990, Some(1_990), None);
        assert_eq!(grace(&late, 2_000, 2_001), Some(Some(GRACE)));
        // Not started yet (held up behind another run): it may still be late.
        let held = local_run(1_000, 1_990, None, None);
        assert_eq!(grace(&held, 2_000, 2_001), Some(Some(GRACE)));
    }

    #[test]
    fn a_slot_due_while_another_slot_waits_so_is_skipped() {
        let waiting = local_run(2_000, 2_000, None, Some(1_000));
        assert_eq!(grace(&waiting, 3_000, 3_000), None);
        // Once the waiting slot started, late, it is a late run like any other.
        let started = local_run(2_000, 2_000, Some(2_150), Some(1_000));
        assert_eq!(grace(&started, 3_000, 3_000), Some(Some(GRACE)));
    }

    #[test]
    fn the_wait_ends_when_the_run_would_have_ended_on_time_or_at_the_grace() {
        let run = local_run(1_000, 1_050, Some(1_050), None).shared;
        let until = |started| After::until(&run, UnixMillis(2_000), UnixMillis(started), GRACE);
        assert_eq!(until(1_050), UnixMillis(2_050));
        assert_eq!(until(1_900), UnixMillis(2_200));
        assert_eq!(until(900), UnixMillis(2_000));
    }
}
