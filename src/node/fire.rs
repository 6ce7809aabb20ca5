//! Firing: the loop's planner actions become prepared runs, spawned runs and published
//! records (split from `runtime`, which owns the loop).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;
use tracing::{info, warn};

use super::publisher::{Batch, GateState, GateTarget};
use super::run::{
    After, LocalRun, NotRun, Prepared, QuorumWait, RUN_ENDED, RUN_STARTED, Retry, RunGuard,
    RunInput, RunShared, run_task,
};
use super::runtime::{Runtime, YIELD_EVERY_RUNS};
use crate::cluster::Record;
use crate::core::job::{ExecSpec, Overlap};
use crate::core::planner::Action;
use crate::core::types::UnixMillis;
use crate::exec::{BoxFuture, RunContext};
use crate::history::RunOutcome;

impl Runtime {
    /// Applies the planner's actions: prepares and spawns runs, publishes records.
    /// `ahead` (see `prepare_ahead`): before their deadline, so nothing is spawned or
    /// published yet, and slots to decide at the deadline are put aside.
    pub(super) async fn apply_actions(&mut self, now: UnixMillis, ahead: bool) {
        if !ahead && let Some(at) = self.ahead_of {
            if now < at {
                return;
            }
            // Runs prepared ahead of this deadline.
            self.ahead_of = None;
            self.start_runs();
        }
        let mut batch = std::mem::take(&mut self.held);
        let mut gates: BTreeMap<GateTarget, watch::Receiver<GateState>> = BTreeMap::new();
        let actions: Vec<Action> = self
            .deferred
            .drain(..)
            .chain(self.planner.drain())
            .collect();
        let mut started = 0usize;
        // Quorum mode's gate target, the same for every run of this call.
        let mut quorum = None;
        for a in actions {
            match a {
                Action::Fire {
                    job,
                    slot,
                    fire_id,
                    late,
                    epoch,
                    repair,
                    index,
                } => {
                    let ctx = RunContext {
                        job,
                        scheduled_at: slot,
                        fire_id,
                        node_id: self.config.node_id.clone(),
                        attempt: 1,
                        epoch,
                    };
                    // The name is checked: a slot put aside (`deferred`) may outlive its
                    // job, and the index its job had may hold a job added since.
                    let Some((overlap, exec)) = self
                        .planner
                        .job_at(index)
                        .filter(|j| j.name == ctx.job)
                        .map(|j| (j.overlap, j.exec.clone()))
                    else {
                        continue;
                    };
                    // The job's run still running here, if any.
                    let local = match overlap {
                        Overlap::Allow => None,
                        _ => self
                            .local_runs
                            .get(&ctx.job)
                            .filter(|l| !l.shared.has(RUN_ENDED)),
                    };
                    let after = local
                        .filter(|_| overlap == Overlap::Forbid)
                        .and_then(|l| After::of(l, slot, now, self.config.gossip_interval));
                    let busy = match local {
                        _ if after.is_some() || overlap == Overlap::Allow => None,
                        // A slot that waits (or was skipped) behind a run stands for it.
                        Some(l) => {
                            let running = l
                                .behind
                                .filter(|_| !l.shared.has(RUN_STARTED))
                                .unwrap_or(l.ctx.scheduled_at);
                            Some(format!("slot {running} here"))
                        }
                        None => self.running_elsewhere(&ctx.job),
                    };
                    if ahead && (local.is_some() || busy.is_some()) {
                        self.deferred.push(Action::Fire {
                            job: ctx.job,
                            slot,
                            fire_id: ctx.fire_id,
                            late,
                            epoch,
                            repair,
                            index,
                        });
                        continue;
                    }
                    if let Some(busy) = busy {
                        if overlap == Overlap::Forbid {
                            self.stats.overlap_skipped += 1;
                            info!(node = %self.config.node_id, job = %ctx.job, slot = %slot, running = %busy, "slot skipped: the previous run is still running (overlap = forbid)");
                            self.not_run(
                                &ctx.job,
                                (slot, slot, 1),
                                RunOutcome::SkippedByOverlap,
                                format!("the run of {busy} was still running (overlap = forbid)"),
                            );
                            self.executor.skipped(&ctx);
                            self.retract_skipped(&ctx.job, slot);
                            continue;
                        }
                        info!(job = %ctx.job, running = %busy, newer = %slot, "cancelling the running run for a newer slot (overlap = replace)");
                        self.cancel_local(&ctx.job);
                    }
                    self.stats.fired += 1;
                    if repair {
                        self.stats.repaired += 1;
                        warn!(job = %ctx.job, slot = %slot, late_ms = now.millis_since(slot), "running a slot given up when the quorum was lost: its record reached the majority side, which did not run it");
                    } else if late {
                        self.stats.fired_late += 1;
                        info!(job = %ctx.job, slot = %slot, late_ms = now.millis_since(slot), "catching up a missed slot");
                    }
                    let gate = self.gate_target(&ctx.job, &mut quorum).map(|target| {
                        gates
                            .entry(target.clone())
                            .or_insert_with(|| {
                                let (tx, rx) = watch::channel(GateState::default());
                                batch.gates.push((target, tx));
                                rx
                            })
                            .clone()
                    });
                    self.prepare_run(ctx, exec, overlap, gate, after, now);
                    started += 1;
                    if !ahead && started % YIELD_EVERY_RUNS == 0 {
                        // A stop in a long burst shows before its next chunk starts.
                        self.health_mark().await;
                        self.start_runs();
                        // Let the runs already started begin instead of queueing behind the
                        // rest of a large burst (they share this task's workers when the
                        // node has no scheduler thread).
                        tokio::task::yield_now().await;
                    }
                }
                Action::PublishRecord { job, record } => batch.publish.records.push(Record {
                    job,
                    record,
                    node: self.config.node_id.clone(),
                }),
                Action::Missed {
                    job,
                    first,
                    last,
                    count,
                    policy,
                } => {
                    if policy {
                        self.stats.skipped += count;
                        info!(job = %job, first = %first, last = %last, count, "late slots skipped by the misfire policy");
                        self.not_run(
                            &job,
                            (first, last, count),
                            RunOutcome::SkippedByMisfirePolicy,
                            "found late; the job's misfire policy dropped it",
                        );
                    } else {
                        self.stats.missed += count;
                        warn!(job = %job, first = %first, last = %last, count, "slots missed: older than the catch-up window");
                        self.not_run(
                            &job,
                            (first, last, count),
                            RunOutcome::Missed,
                            "older than the catch-up window when found",
                        );
                    }
                }
                Action::Duplicate {
                    job,
                    other,
                    first,
                    last,
                    count,
                } => {
                    self.stats.duplicates_detected += count;
                    warn!(job = %job, other = %other, first = %first, last = %last, count, total = self.stats.duplicates_detected, "duplicate runs detected: another node ran slots this node ran too");
                }
            }
        }
        if ahead {
            self.held = batch;
        } else {
            self.start_runs();
            if !batch.publish.records.is_empty() || !batch.gates.is_empty() {
                let _ = self.publish.send(batch);
            }
        }
        // A run still running (one that a later run waits for) stays abortable at
        // shutdown.
        for old in self.retired.drain(..) {
            if let Some(handle) = old.handle
                && !old.shared.has(RUN_ENDED)
            {
                self.runs.push(old.ctx.fire_id, handle);
            }
        }
    }

    /// Prepares a run; `start_runs` spawns it.
    pub(super) fn prepare_run(
        &mut self,
        ctx: RunContext,
        exec: ExecSpec,
        overlap: Overlap,
        gate: Option<watch::Receiver<GateState>>,
        after: Option<After>,
        now: UnixMillis,
    ) {
        let counters = self.counters.clone();
        counters.running.fetch_add(1, Ordering::Relaxed);
        self.runs.prune();
        let shared = (overlap != Overlap::Allow).then(|| {
            Arc::new(RunShared::new(
                ctx.job.clone(),
                ctx.scheduled_at,
                self.publish.clone(),
            ))
        });
        let local = shared.as_ref().map(|shared| (ctx.clone(), shared.clone()));
        let behind = after
            .as_ref()
            .filter(|a| a.grace.is_some())
            .map(|a| a.run.slot);
        // What the run waits for before its executor is called, if anything: the previous
        // run (`forbid`, see `After`), then its record's gate. Boxed, and built only when
        // needed, so the task of a run that waits for nothing stays small: a thousand of
        // them start in the same millisecond.
        let wait: Option<BoxFuture<bool>> = (after.is_some() || gate.is_some()).then(|| {
            let quorum = self.config.quorum().map(|min| QuorumWait {
                min,
                view: self.view_rx.clone(),
                publisher: self.publisher_handle.clone(),
                peers: self.peers.clone(),
                grace: self.quorum_grace,
            });
            let not_run = self.not_run_tx.clone();
            let (job, slot) = (ctx.job.clone(), ctx.scheduled_at);
            // Only a run that may be skipped needs these.
            let skip = after
                .as_ref()
                .is_some_and(|a| a.grace.is_some())
                .then(|| (self.executor.clone(), ctx.clone()));
            let after = after.map(|a| (a, self.clock.clone()));
            let wait: BoxFuture<bool> = Box::pin(async move {
                if let Some((after, clock)) = after
                    && !after.wait(slot, clock.as_ref()).await
                {
                    if let Some((executor, ctx)) = skip {
                        executor.skipped(&ctx);
                    }
                    let running = after.run.slot;
                    let _ = not_run.send(NotRun::Skipped { job, slot, running });
                    // Until that run ends, this one stands for it: a slot due meanwhile is
                    // skipped too.
                    after.run.ended().await;
                    return false;
                }
                let Some(mut gate) = gate else {
                    return true;
                };
                // The record goes first (see `cluster`): a crash from here on is known.
                let go = match quorum {
                    None => {
                        let _ = gate.wait_for(|g| g.open).await;
                        true
                    }
                    Some(q) => q.wait(&mut gate).await,
                };
                if !go {
                    let _ = not_run.send(NotRun::Abandoned { job, slot });
                }
                go
            });
            wait
        });
        let retry = Retry {
            base: self.config.retry_backoff,
            max: self.config.retry_backoff_max,
        };
        let input = RunInput {
            executor: self.executor.clone(),
            exec,
            ctx,
            retry,
        };
        let guard = RunGuard {
            counters,
            shared,
            stalls: Some(self.health.shared.epoch()),
        };
        self.prepared.push(Prepared { guard, wait, input });
        if let Some((ctx, shared)) = local {
            // Long runs are announced, so a new owner honours `forbid` and `replace`.
            self.announce.push_back((
                now.saturating_add(self.config.gossip_interval),
                shared.clone(),
            ));
            let previous = self.local_runs.insert(
                ctx.job.clone(),
                LocalRun {
                    ctx,
                    handle: None,
                    shared,
                    fired_at: now,
                    behind,
                },
            );
            self.retired.extend(previous);
        }
    }

    /// Spawns the prepared runs.
    pub(super) fn start_runs(&mut self) {
        let mut started = Vec::with_capacity(self.prepared.len());
        for Prepared { guard, wait, input } in self.prepared.drain(..) {
            let shared = guard.shared.clone();
            let fire_id = input.ctx.fire_id;
            let task = self.spawner.spawn(run_task(guard, wait, input));
            started.push((fire_id, task.abort_handle(), shared));
        }
        for (fire_id, handle, shared) in started {
            let local = shared.and_then(|shared| {
                self.local_runs
                    .get_mut(&shared.job)
                    .filter(|l| Arc::ptr_eq(&l.shared, &shared))
            });
            match local {
                Some(l) => l.handle = Some(handle),
                // Not the job's latest run any more (a catch-up burst).
                None => self.runs.push(fire_id, handle),
            }
        }
    }

    /// Announces in gossip the runs started here that are still running a gossip interval
    /// after they were fired (`running:<job>`); each run's task announces its end. A run
    /// still waiting (for its record, or for the run before it) is checked again an
    /// interval later.
    pub(super) fn announce_due(&mut self, now: UnixMillis) {
        let mut due = Vec::new();
        while let Some((at, _)) = self.announce.front()
            && *at <= now
        {
            let Some((_, run)) = self.announce.pop_front() else {
                break;
            };
            if run.has(RUN_ENDED) {
                continue;
            }
            if !run.has(RUN_STARTED) {
                self.announce
                    .push_back((now.saturating_add(self.config.gossip_interval), run));
                continue;
            }
            due.push(run);
        }
        if due.is_empty() {
            return;
        }
        let start = due.iter().map(|r| (r.job.clone(), Some(r.slot))).collect();
        let _ = self.publish.send(Batch::running(start));
        let ended: Vec<_> = due
            .iter()
            .filter(|r| !r.announced())
            .map(|r| (r.job.clone(), None))
            .collect();
        if !ended.is_empty() {
            let _ = self.publish.send(Batch::running(ended));
        }
    }
}
