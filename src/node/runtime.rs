//! The node's loop: one task owns the planner, feeds it membership views, fire records
//! and time, and carries out its actions.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::catalog::{CatalogCmd, PlanUpdate};
use super::handle::{Command, Stats};
use super::health::Health;
use super::publisher::{Batch, GateTarget};
use super::run::{
    LocalRun, NotRun, Prepared, RUN_ENDED, RUN_STARTED, RunCounters, RunHandles, RunShared,
    sleep_to,
};
use super::{Clock, NodeConfig};
use crate::cluster::{
    Cluster, Event, Publish, Publisher, Record, Running, newest_generations, view_from_live,
};
use crate::core::job::Overlap;
use crate::core::planner::{Action, Planner, View};
use crate::core::types::{FireId, JobId, NodeId, UnixMillis};
use crate::core::unplaceable::Unplaceable;
use crate::exec::Executor;
use crate::history::{RunOutcome, RunRecord};

pub(super) struct Runtime {
    pub(super) config: NodeConfig,
    pub(super) planner: Planner,
    pub(super) cluster: Option<Cluster>,
    /// Fire records and running states go to the publisher task through this, in order.
    pub(super) publish: mpsc::UnboundedSender<Batch>,
    pub(super) publisher: tokio::task::JoinHandle<()>,
    /// True when a data dir is open: runs then also wait for their record to be on disk.
    pub(super) has_store: bool,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) executor: Arc<dyn Executor>,
    pub(super) events_rx: mpsc::UnboundedReceiver<Event>,
    pub(super) cmd_rx: mpsc::UnboundedReceiver<Command>,
    pub(super) view_tx: watch::Sender<View>,
    /// The view, for runs waiting in quorum mode.
    pub(super) view_rx: watch::Receiver<View>,
    /// Runs that end without running their slot report here.
    pub(super) not_run_tx: mpsc::UnboundedSender<NotRun>,
    pub(super) not_run_rx: mpsc::UnboundedReceiver<NotRun>,
    /// Newest generation and gossip address of every live node.
    pub(super) peers: Arc<BTreeMap<NodeId, (u64, SocketAddr)>>,
    /// For runs that check where their record went (quorum mode).
    pub(super) publisher_handle: Publisher,
    /// Quorum mode: how long a run waits without the quorum before deciding.
    pub(super) quorum_grace: Duration,
    /// The latest run started here per job (for the overlap policy).
    /// A hash map: a burst looks up and replaces every due job's entry, and a B-tree walk
    /// by name chases a string pointer at every level. Its order is never used (shutdown
    /// aborts every run in it).
    pub(super) local_runs: HashMap<JobId, LocalRun>,
    /// Runs of `forbid` and `replace` jobs to announce if still running at the time given
    /// (a gossip interval after they were fired), in that order.
    pub(super) announce: VecDeque<(UnixMillis, Arc<RunShared>)>,
    /// Runs other nodes announced: job -> node -> (generation, slot).
    pub(super) remote_runs: BTreeMap<JobId, BTreeMap<NodeId, (u64, UnixMillis)>>,
    /// Abort handles of the runs started, to stop them with the node. Runs report through
    /// `counters`, never by waking this task: a thousand runs ending in the same
    /// millisecond would otherwise mean a thousand loop turns competing with them for the
    /// cores.
    pub(super) runs: RunHandles,
    /// Runs prepared and not spawned yet: a burst's runs are spawned back to back (a
    /// chunk at a time, or all at their deadline when prepared ahead of it), so the worker
    /// that picks them up is woken once per chunk instead of parking again between two
    /// runs.
    pub(super) prepared: Vec<Prepared>,
    /// Runs no longer their job's latest, put aside during a burst and dropped after it,
    /// so freeing the last second's runs does not hold up this second's.
    pub(super) retired: Vec<LocalRun>,
    /// Taken ahead of their deadline (see `Runtime::prepare_ahead`) and decided at it:
    /// slots of jobs with a run still running here or elsewhere.
    pub(super) deferred: Vec<Action>,
    /// Taken ahead of their deadline: records and gates to publish once the runs start.
    pub(super) held: Batch,
    /// The deadline the runs in `prepared` were prepared ahead of; they start at it.
    pub(super) ahead_of: Option<UnixMillis>,
    /// Where runs are spawned: the runtime that started the node.
    pub(super) spawner: tokio::runtime::Handle,
    /// The loop runs on a scheduler thread of its own (it may block that thread briefly).
    pub(super) own_thread: bool,
    pub(super) counters: Arc<RunCounters>,
    pub(super) stats: Stats,
    /// The node's own health: stalls noticed, recovery (see `health`).
    pub(super) health: Health,
    /// Its clock against its peers' (see `skew`).
    pub(super) skew: super::skew::Skew,
    pub(super) pause: watch::Receiver<PausePoint>,
    /// False once the pause switch's sender is gone (or there never was one).
    pub(super) pause_live: bool,
    /// Changes from the catalog task (see `catalog_apply.rs`).
    pub(super) plan_rx: mpsc::UnboundedReceiver<PlanUpdate>,
    /// To the catalog task: run-now runs claim their request through it.
    pub(super) catalog_cmd: mpsc::UnboundedSender<CatalogCmd>,
    /// Run-now requests nobody has claimed yet: fire id -> (job, requested at).
    pub(super) requests: BTreeMap<FireId, (JobId, UnixMillis)>,
    /// Jobs no live member may own, and the slots of theirs this node reports.
    pub(super) unplaceable: Unplaceable,
    /// The log of catalog job changes (see `catalog_apply.rs`).
    pub(super) change_log: super::catalog_apply::ChangeLog,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // On abort, stop gossip too, so peers see a crash, and stop the runs.
        self.abort_runs();
        self.publisher.abort();
        if let Some(c) = &self.cluster {
            c.abort();
        }
    }
}

/// Where the simulator's pause switch freezes the node's loop (see
/// [`NodeBuilder::pause_switch`](super::NodeBuilder::pause_switch)). A real process can be
/// stopped (SIGSTOP) at any instruction; these are the points of a loop turn where a stop
/// is noticed differently (issue 14).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PausePoint {
    /// Running.
    #[default]
    Off,
    /// At once: the loop stops where it waits, before its next turn.
    Wait,
    /// In its next turn, right after its health check, before it reads the clock and fires.
    AfterCheck,
    /// In its next turn, after it fired what was due, before it plans its next wait.
    AfterFiring,
}

/// In a burst of due slots, the node's task yields after starting this many runs.
pub(super) const YIELD_EVERY_RUNS: usize = 64;

/// With a scheduler thread, how long before a deadline the loop wakes to block the rest
/// of the way (see `Clock::block_until`): well over what tokio's timer is late by (1-2 ms
/// here, more on a busy machine). Events that arrive meanwhile wait at most this long.
pub(super) const PRECISE_WAKE: Duration = Duration::from_millis(10);

/// How often to warn while no peer has been heard from although seeds are configured.
pub(super) const LONELY_WARN_EVERY: Duration = Duration::from_secs(5);

impl Runtime {
    pub(super) fn cluster(&self) -> &Cluster {
        self.cluster.as_ref().expect("cluster lives until shutdown")
    }

    pub(super) async fn run(mut self) {
        let mut live = self.cluster().live_watcher();
        // Without seeds there is nobody to wait for: never (a deadline left in the past
        // would wake the loop over and over).
        let mut next_lonely_check = if self.config.seeds.is_empty() {
            UnixMillis(i64::MAX)
        } else {
            self.clock.now().saturating_add(LONELY_WARN_EVERY)
        };
        loop {
            self.pause_at(PausePoint::Wait).await;
            // The first thing after any wait: a stop shows before anything is decided.
            let now = self.health_turn().await;
            self.pause_at(PausePoint::AfterCheck).await;
            self.planner.poll(now);
            self.apply_actions(now, false).await;
            self.start_requests(now);
            self.announce_due(now);
            self.report_unplaceable(now);
            self.change_log.end_window(now);
            if now >= next_lonely_check {
                next_lonely_check = now.saturating_add(LONELY_WARN_EVERY);
                if self.cluster().known_peers().await == 0 {
                    warn!(seeds = ?self.config.seeds, "no peer reachable yet; still retrying the seeds");
                }
            }
            self.pause_at(PausePoint::AfterFiring).await;
            let deadline = self
                .planner
                .next_deadline()
                .unwrap_or(UnixMillis(i64::MAX))
                .min(next_lonely_check)
                .min(
                    self.announce
                        .front()
                        .map_or(UnixMillis(i64::MAX), |(at, _)| *at),
                )
                .min(self.ahead_of.unwrap_or(UnixMillis(i64::MAX)))
                .min(
                    self.unplaceable
                        .next_deadline()
                        .unwrap_or(UnixMillis(i64::MAX)),
                )
                // It wakes at least this often, so it notices its own stalls (see `health`).
                .min(now.saturating_add(self.health.tick));
            // On a thread of its own the loop wakes a little early and blocks the rest of
            // the way, to start a slot's runs within ~0.1 ms of it instead of ~1-2 ms.
            let early = self.own_thread && self.ahead_of.is_none();
            let wake_at = if early {
                deadline.saturating_sub(PRECISE_WAKE)
            } else {
                deadline
            };
            self.health_expect(wake_at).await;
            let sleep = self.clock.sleep_until(wake_at);
            tokio::select! {
                _ = sleep => if early {
                    self.prepare_ahead(deadline).await;
                },
                changed = self.pause.changed(), if self.pause_live => {
                    self.pause_live = changed.is_ok();
                }
                changed = live.changed() => {
                    if changed.is_err() {
                        warn!("gossip stopped; node stops scheduling");
                        return;
                    }
                    let (view, peers) = {
                        let live = live.borrow_and_update();
                        let view = self.health_filter(view_from_live(&live), &live);
                        (view, newest_generations(&live))
                    };
                    self.on_peers(peers);
                    self.on_view(view).await;
                }
                Some(not_run) = self.not_run_rx.recv() => self.on_not_run(not_run).await,
                Some(update) = self.plan_rx.recv() => {
                    self.on_plan(update);
                    while let Ok(update) = self.plan_rx.try_recv() {
                        self.on_plan(update);
                    }
                }
                Some(ev) = self.events_rx.recv() => {
                    self.on_event(ev);
                    while let Ok(ev) = self.events_rx.try_recv() {
                        self.on_event(ev);
                    }
                }
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(Command::Stats(tx)) => {
                        let _ = tx.send(self.stats());
                    }
                    Some(Command::Reconfigure(config, tx)) => {
                        self.set_placement(config.placement.clone()).await;
                        let _ = tx.send(self.config.apply_live(&config));
                    }
                    Some(Command::SetPlacement(placement, tx)) => {
                        self.set_placement(placement).await;
                        let _ = tx.send(());
                    }
                    Some(Command::Unplaceable(tx)) => {
                        let _ = tx.send(
                            self.unplaceable
                                .jobs()
                                .map(|(j, c)| (j.clone(), c.clone()))
                                .collect(),
                        );
                    }
                    Some(Command::Shutdown(tx)) => {
                        self.leave().await;
                        let _ = tx.send(self.stats());
                        return;
                    }
                    // Every handle dropped: keep running (a node is usually driven by its
                    // signals, not its handle).
                    None => std::future::pending::<()>().await,
                },
            }
        }
    }

    /// A simulated stop (see [`PausePoint`]): waits here while the switch names `point`.
    async fn pause_at(&mut self, point: PausePoint) {
        if self.pause_live && *self.pause.borrow_and_update() == point {
            let _ = self.pause.wait_for(|p| *p == PausePoint::Off).await;
        }
    }

    fn stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        stats.failed = self.counters.failed.load(Ordering::Relaxed);
        stats.ownership_changes = self.planner.ownership_changes();
        stats.jobs_owned = self.planner.owned_count() as u64;
        stats.unplaceable_jobs = self.unplaceable.len() as u64;
        (stats.clock_offset_ms, stats.clock_out_of_bound) = self.clock_stats();
        stats
    }

    /// On its own thread the loop wakes `PRECISE_WAKE` before a deadline. It then takes
    /// the deadline's actions as they will be at the deadline: no event is handled before
    /// it either way. It prepares their runs, blocks until the deadline, and the loop's
    /// next turn only spawns them, so a burst's runs start sooner after their slot.
    ///
    /// A slot whose job still has a run running, here or elsewhere, is decided at the
    /// deadline: that run may end meanwhile. If the clock cannot block (the default
    /// [`Clock::block_until`]) or went back, the runs wait for the deadline by the timer.
    async fn prepare_ahead(&mut self, deadline: UnixMillis) {
        // Sleeps are capped (see `Clock::sleep_until`): the deadline may be further off.
        if self.clock.now() < deadline.saturating_sub(PRECISE_WAKE) {
            return;
        }
        // A stop while it slept shows here first.
        self.health_turn().await;
        self.planner.poll(deadline);
        self.apply_actions(deadline, true).await;
        self.ahead_of = Some(deadline);
        self.health_expect(deadline).await;
        self.clock.block_until(deadline, PRECISE_WAKE);
    }

    async fn on_not_run(&mut self, not_run: NotRun) {
        match not_run {
            NotRun::Stalled {
                job,
                slot,
                epoch,
                stalls,
            } => self.hold_run(job, slot, epoch, stalls).await,
            NotRun::Abandoned { job, slot } => {
                self.stats.abandoned += 1;
                self.not_run(
                    &job,
                    (slot, slot, 1),
                    RunOutcome::Abandoned,
                    "quorum lost before a quorum held its record",
                );
                warn!(job = %job, slot = %slot, "run not started: quorum lost before a quorum held its record; the majority side runs it, or this node does once it learns the majority skipped it");
                if let Some(record) = self.planner.abandon(&job, slot) {
                    let _ = self.publish.send(Batch {
                        publish: Publish {
                            records: vec![Record {
                                job,
                                record,
                                node: self.config.node_id.clone(),
                            }],
                            ..Publish::default()
                        },
                        gates: Vec::new(),
                        last: false,
                    });
                }
            }
            NotRun::Skipped { job, slot, running } => {
                self.stats.fired = self.stats.fired.saturating_sub(1);
                self.stats.overlap_skipped += 1;
                info!(node = %self.config.node_id, job = %job, slot = %slot, running = %running, "slot skipped: the previous run started late and was still running when it would have ended had it started on time (overlap = forbid)");
                self.not_run(
                    &job,
                    (slot, slot, 1),
                    RunOutcome::SkippedByOverlap,
                    format!("the run of slot {running} was still running (overlap = forbid)"),
                );
                self.retract_skipped(&job, slot);
            }
        }
    }

    pub(super) fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Record(r) => self.on_record(r),
            Event::Running(r) => self.on_running(r),
            Event::Clock { node, value } => self.on_clock(&node, &value),
        }
    }

    fn on_record(&mut self, r: Record) {
        let now = self.clock.now();
        if !self.planner.observe_record(now, &r.job, r.record, &r.node) {
            warn!(job = %r.job, slot = %r.record.slot, from = %r.node, rate_limited = true, "a fire record further ahead than max_clock_offset: held until its slot is near (is that node's clock, or this one's, wrong?)");
            return;
        }
        if r.node == self.config.node_id {
            return;
        }
        // `replace`: a newer slot started elsewhere cancels the run here.
        let replace = self
            .planner
            .job(&r.job)
            .is_some_and(|j| j.overlap == Overlap::Replace);
        if replace
            && self
                .local_runs
                .get(&r.job)
                .is_some_and(|l| l.ctx.scheduled_at < r.record.slot && !l.shared.has(RUN_ENDED))
        {
            info!(job = %r.job, newer = %r.record.slot, by = %r.node, "cancelling the running run: a newer slot started elsewhere (overlap = replace)");
            self.cancel_local(&r.job);
        }
    }

    fn on_running(&mut self, r: Running) {
        if r.node == self.config.node_id {
            return;
        }
        let entry = self.remote_runs.entry(r.job.clone()).or_default();
        let newer = entry.get(&r.node).is_none_or(|(g, _)| r.generation >= *g);
        if newer {
            match r.slot {
                Some(slot) => {
                    entry.insert(r.node, (r.generation, slot));
                }
                None => {
                    entry.remove(&r.node);
                }
            }
        }
        if entry.is_empty() {
            self.remote_runs.remove(&r.job);
        }
    }

    fn on_peers(&mut self, peers: BTreeMap<NodeId, (u64, SocketAddr)>) {
        // Runs announced by nodes (or generations) that are gone are not running any more.
        self.remote_runs.retain(|_, by| {
            by.retain(|node, (generation, _)| {
                peers.get(node).is_some_and(|(g, _)| g == generation)
            });
            !by.is_empty()
        });
        self.peers = Arc::new(peers);
    }

    pub(super) async fn on_view(&mut self, view: View) {
        if &view == self.planner.view() {
            return;
        }
        let old = self.planner.view().clone();
        info!(
            node = %self.config.node_id,
            members = ?view.members.iter().map(NodeId::as_str).collect::<Vec<_>>(),
            leaving = ?view.alive.difference(&view.members).map(NodeId::as_str).collect::<Vec<_>>(),
            "membership changed"
        );
        let had_quorum = self.planner.has_quorum();
        let now = self.clock.now();
        self.planner.set_view(now, view.clone());
        self.check_unplaceable(now);
        match (had_quorum, self.planner.has_quorum()) {
            (true, false) => warn!(
                members = view.members.len(),
                needed = self.config.quorum().unwrap_or(0),
                "quorum lost: this node fires nothing until it sees enough members again"
            ),
            (false, true) => info!(
                members = view.members.len(),
                "quorum regained: firing resumes after the handoff delay"
            ),
            _ => {}
        }
        // Peers back from a stall wait until every member publishes the view they see.
        let _ = self
            .publish
            .send(Batch::members(crate::cluster::members_digest(&view)));
        self.health_view(&old, &view).await;
        let _ = self.view_tx.send(view);
    }

    /// What a run of `job` must wait for before it starts; `None`: nothing.
    /// `quorum` caches quorum mode's target (the same for every job) for one burst.
    pub(super) fn gate_target(
        &self,
        job: &JobId,
        quorum: &mut Option<GateTarget>,
    ) -> Option<GateTarget> {
        if let Some(target) = quorum {
            return Some(target.clone());
        }
        if let Some(min) = self.config.quorum() {
            let peers: Vec<SocketAddr> = self
                .planner
                .view()
                .members
                .iter()
                .filter(|n| **n != self.config.node_id)
                .filter_map(|n| self.peers.get(n).map(|(_, addr)| *addr))
                .collect();
            let target = GateTarget::Quorum {
                need: min.saturating_sub(1).min(peers.len()),
                peers,
            };
            *quorum = Some(target.clone());
            return Some(target);
        }
        let alone = self.planner.view().members.len() < 2;
        let peer = (!alone)
            .then(|| self.planner.runner_up(job))
            .flatten()
            .and_then(|n| self.peers.get(n))
            .map(|(_, addr)| *addr);
        match peer {
            Some(addr) => Some(GateTarget::Peer(addr)),
            None if self.has_store => Some(GateTarget::Store),
            None => None,
        }
    }

    /// Cancels the run of `job` running here (`replace`). A run cancelled before its
    /// executor was called counts as skipped by the overlap policy.
    pub(super) fn cancel_local(&mut self, job: &JobId) {
        self.start_runs();
        let Some(l) = self.local_runs.remove(job) else {
            return;
        };
        if l.shared.has(RUN_ENDED) {
            return;
        }
        if let Some(handle) = &l.handle {
            handle.abort();
        }
        self.stats.replaced += 1;
        if !l.shared.has(RUN_STARTED) {
            self.stats.overlap_skipped += 1;
            let slot = l.ctx.scheduled_at;
            self.not_run(
                job,
                (slot, slot, 1),
                RunOutcome::SkippedByOverlap,
                "a newer slot replaced it before it started (overlap = replace)",
            );
            self.executor.skipped(&l.ctx);
            self.retract_skipped(job, l.ctx.scheduled_at);
        }
    }

    /// Records in the history slots of `job` that did not run: `(first, last, count)`.
    pub(super) fn not_run(
        &self,
        job: &JobId,
        slots: (UnixMillis, UnixMillis, u64),
        outcome: RunOutcome,
        why: impl Into<String>,
    ) {
        let record = RunRecord::not_run(&self.config.node_id, job, slots, outcome, why);
        self.counters.ended(record);
    }

    /// A slot fired here was skipped by the overlap policy. Its record stays published, so
    /// no other node runs it later (a new owner after a crash would otherwise catch it up,
    /// seconds late: the simulator's `crash` sweep showed it); only this node's own
    /// duplicate accounting forgets it (see `Planner::skipped_by_overlap`).
    pub(super) fn retract_skipped(&mut self, job: &JobId, slot: UnixMillis) {
        let _ = self.planner.skipped_by_overlap(job, slot);
    }

    /// Where a run of `job` announced by another live node is running, if one is.
    pub(super) fn running_elsewhere(&self, job: &JobId) -> Option<String> {
        self.remote_runs
            .get(job)
            .and_then(|by| by.iter().next())
            .map(|(node, (_, slot))| format!("slot {slot} on {node}"))
    }

    /// Stops every running run; dropping a shell run kills its process group.
    fn abort_runs(&mut self) {
        self.runs.abort();
        self.prepared.clear();
        for run in self.local_runs.values() {
            if let Some(handle) = &run.handle {
                handle.abort();
            }
        }
    }

    /// Waits up to `timeout` for every running run to finish; returns whether they did.
    async fn drain(&mut self, timeout: Duration) -> bool {
        let counters = self.counters.clone();
        let wait = async {
            loop {
                let idle = counters.idle.notified();
                if counters.running.load(Ordering::Acquire) == 0 {
                    break;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    async fn leave(&mut self) {
        info!(node = %self.config.node_id, "leaving: stopped firing, announcing to peers");
        self.planner.leave();
        self.cluster().set_leaving().await;
        let until = self.clock.now().saturating_add(self.config.leave_delay());
        sleep_to(self.clock.as_ref(), until).await;
        let running = self.counters.running.load(Ordering::Acquire);
        if running > 0 {
            info!(running, timeout = ?self.config.drain_timeout, "waiting for running jobs");
            if !self.drain(self.config.drain_timeout).await {
                let killed = self.counters.running.load(Ordering::Acquire);
                warn!(killed, "drain timeout: killing running jobs");
                self.abort_runs();
            }
        }
        // Let the last records and run endings gossip before going silent: a peer that
        // still saw a run of ours as running would skip a `forbid` slot for nothing.
        let until = self
            .clock
            .now()
            .saturating_add(self.config.gossip_interval * 2);
        sleep_to(self.clock.as_ref(), until).await;
        // Flush, then stop: the publisher sets in gossip and writes to the data dir every
        // record and run ending sent before this, then ends and lets go of the data dir (its
        // lock), so the node can be started again from the same data dir as soon as
        // `NodeHandle::shutdown` returns (tests/catalog.rs, the damaged catalog file test,
        // failed now and then with `Locked`). Aborting it instead could drop records still
        // queued, and leave a data-dir write running in a blocking thread.
        let _ = self.publish.send(Batch::last());
        let _ = (&mut self.publisher).await;
        if let Some(c) = self.cluster.take() {
            c.shutdown().await;
        }
        info!(node = %self.config.node_id, "left the cluster");
    }
}
