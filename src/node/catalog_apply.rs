//! The loop's side of the catalog: applying definition changes to the planner, starting
//! run-now requests on the node that fires their job, and cancelling runs by fire id.
//!
//! # Run-now requests
//!
//! A request (`run:<fire id>`) reaches every node. The node that fires the job (its
//! owner, handoff done, quorum held) claims it: the claim (`ran:<fire id>`) is published,
//! and the run waits until the claim went to the job's runner-up, as a slot's run waits
//! for its fire record. A node that takes the job over afterwards sees the claim and does
//! not run the request again; a request nobody claims is dropped after the catalog's
//! request lifetime. The run ignores the job's overlap policy (it was asked for
//! explicitly), carries the request's fire id, and has the request's time as its slot.
//!
//! # Log lines
//!
//! Each job added, updated, paused, resumed or removed is logged at INFO, up to
//! [`LOGGED_PER_WINDOW`] in [`LOG_WINDOW`] from the first; the rest go to DEBUG, and one
//! INFO line counts them by kind once the window is over (a node joining a cluster of
//! 10,000 jobs logged 10,000 lines, in batches too small to count by batch).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::catalog::{CatalogCmd, PlanUpdate};
use super::run::{Prepared, RUN_ENDED, Retry, RunGuard, RunInput};
use super::runtime::Runtime;
use crate::core::types::{FireId, UnixMillis};
use crate::exec::{BoxFuture, RunContext};

/// How many job changes of one window are logged one by one at INFO (see the module docs).
pub(super) const LOGGED_PER_WINDOW: u64 = 16;
/// How long the window of [`LOGGED_PER_WINDOW`] lasts, from its first change.
pub(super) const LOG_WINDOW: Duration = Duration::from_secs(10);

/// What happened to a job, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    Added,
    Updated,
    Paused,
    Resumed,
    Removed,
}

impl Change {
    /// Each kind's word, in the order of the variants.
    const NAMES: [&'static str; 5] = ["added", "updated", "paused", "resumed", "removed"];

    fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// The log of job changes (see the module docs): the first [`LOGGED_PER_WINDOW`] of a
/// window at INFO, the rest counted for one summary line.
#[derive(Debug, Default)]
pub(super) struct ChangeLog {
    /// When the current window began; `None` before its first change.
    since: Option<UnixMillis>,
    logged: u64,
    /// Not logged at INFO, by kind (the order of [`Change::NAMES`]).
    quiet: [u64; 5],
}

impl ChangeLog {
    /// Logs `change` of `job` at INFO, or at DEBUG once the window logged its share.
    fn note(&mut self, now: UnixMillis, change: Change, job: &str, paused: bool) {
        self.end_window(now);
        self.since.get_or_insert(now);
        if self.logged < LOGGED_PER_WINDOW {
            self.logged += 1;
            info!(job, paused, "catalog job {}", change.name());
        } else {
            self.quiet[change as usize] += 1;
            debug!(job, paused, "catalog job {}", change.name());
        }
    }

    /// Once the window is over: logs the count of what it did not log one by one, if
    /// anything, and starts a new window at the next change. The loop calls it each turn.
    pub(super) fn end_window(&mut self, now: UnixMillis) {
        let over = self
            .since
            .is_some_and(|since| now >= since.saturating_add(LOG_WINDOW));
        if !over {
            return;
        }
        if let Some(line) = self.summary() {
            info!("{line}");
        }
        *self = Self::default();
    }

    /// The count of the changes not logged one by one, if any.
    fn summary(&self) -> Option<String> {
        let total: u64 = self.quiet.iter().sum();
        (total > 0).then(|| {
            let parts: Vec<String> = Change::NAMES
                .iter()
                .zip(self.quiet)
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            format!(
                "{total} more catalog changes, not logged one by one (DEBUG logs them): {}",
                parts.join(", ")
            )
        })
    }
}

impl Runtime {
    /// Applies one change from the catalog task.
    pub(super) fn on_plan(&mut self, update: PlanUpdate) {
        let now = self.clock.now();
        match update {
            PlanUpdate::Set {
                name,
                spec,
                floor,
                paused,
            } => {
                let known = self.planner.job(&name).is_some();
                // Only a constrained job can become or stop being unplaceable (the check
                // walks every job, so not for each of a big catalog's other jobs).
                let placement = self.unplaceable.contains(&name)
                    || spec.as_ref().is_some_and(|s| !s.constraints.is_empty());
                match spec {
                    Some(spec) if !known => {
                        match self.planner.add_catalog_job(now, spec, floor, paused) {
                            Ok(()) => {
                                self.change_log
                                    .note(now, Change::Added, name.as_str(), paused)
                            }
                            Err(e) => warn!(job = %name, error = %e, "catalog job not added"),
                        }
                    }
                    Some(spec) => {
                        self.planner.update_job(now, spec);
                        self.planner.set_paused(now, &name, paused, floor);
                        self.change_log
                            .note(now, Change::Updated, name.as_str(), paused);
                    }
                    None => {
                        self.planner.set_paused(now, &name, paused, floor);
                        let change = if paused {
                            Change::Paused
                        } else {
                            Change::Resumed
                        };
                        self.change_log.note(now, change, name.as_str(), paused);
                    }
                }
                if placement {
                    self.check_unplaceable(now);
                }
            }
            PlanUpdate::Remove(name) => {
                if self.planner.remove_job(&name) {
                    self.change_log
                        .note(now, Change::Removed, name.as_str(), false);
                }
                if self.unplaceable.contains(&name) {
                    self.check_unplaceable(now);
                }
            }
            PlanUpdate::Request { id, job, at } => {
                self.requests.insert(id, (job, at));
            }
            PlanUpdate::Claimed(id) => {
                self.requests.remove(&id);
            }
            PlanUpdate::Cancel(id) => self.cancel_fire_id(id),
            PlanUpdate::Compact => self.planner.compact(),
        }
    }

    /// Starts the run-now requests of jobs this node fires (see the module docs).
    pub(super) fn start_requests(&mut self, now: UnixMillis) {
        if self.requests.is_empty() {
            return;
        }
        let due: Vec<FireId> = self
            .requests
            .iter()
            .filter(|(_, (job, _))| self.planner.fires(job, now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some((job, at)) = self.requests.remove(&id) else {
                continue;
            };
            let Some(exec) = self.planner.job(&job).map(|j| j.exec.clone()) else {
                continue;
            };
            let ctx = RunContext {
                job: job.clone(),
                scheduled_at: at,
                fire_id: id,
                node_id: self.config.node_id.clone(),
                attempt: 1,
                epoch: self.planner.epoch_for_extra_run(&job).unwrap_or(0),
            };
            let peer = (self.planner.view().members.len() >= 2)
                .then(|| self.planner.runner_up(&job))
                .flatten()
                .and_then(|n| self.peers.get(n))
                .map(|(_, addr)| *addr);
            let claims = self.catalog_cmd.clone();
            let publisher = self.publisher_handle.clone();
            let timeout = self.config.gossip_interval * 2;
            let wait: BoxFuture<bool> = Box::pin(async move {
                let (tx, rx) = oneshot::channel();
                if claims.send(CatalogCmd::Claim(id, tx)).is_err() {
                    return false;
                }
                // `None`: another node claimed it first.
                let Ok(Some(seq)) = rx.await else {
                    return false;
                };
                if let Some(addr) = peer {
                    publisher.confirm(addr, seq, timeout).await;
                }
                true
            });
            info!(job = %job, fire_id = %id, "running a run-now request");
            self.stats.requested_runs += 1;
            self.counters.running.fetch_add(1, Ordering::Relaxed);
            self.runs.prune();
            self.prepared.push(Prepared {
                guard: RunGuard {
                    counters: Arc::clone(&self.counters),
                    shared: None,
                    stalls: None,
                },
                wait: Some(wait),
                input: RunInput {
                    executor: self.executor.clone(),
                    exec,
                    ctx,
                    retry: Retry {
                        base: self.config.retry_backoff,
                        max: self.config.retry_backoff_max,
                    },
                },
            });
        }
        if self.ahead_of.is_none() {
            self.start_runs();
        }
    }

    /// Cancels the run with fire id `id` if it runs here, and a pending run-now request
    /// with that id. Dropping a shell run kills its process group.
    fn cancel_fire_id(&mut self, id: FireId) {
        self.requests.remove(&id);
        if self.ahead_of.is_none() {
            self.start_runs();
        }
        let mut found = false;
        for l in self.local_runs.values() {
            if l.ctx.fire_id == id
                && !l.shared.has(RUN_ENDED)
                && let Some(h) = &l.handle
            {
                h.abort();
                found = true;
            }
        }
        found |= self.runs.abort_fire_id(id);
        if found {
            self.stats.cancelled += 1;
            info!(fire_id = %id, "run cancelled on request");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_logs_its_first_changes_and_counts_the_rest_by_kind() {
        let mut log = ChangeLog::default();
        let t0 = UnixMillis(1_000_000);
        for i in 0..LOGGED_PER_WINDOW {
            log.note(t0, Change::Added, &format!("j{i}"), false);
        }
        assert_eq!(log.summary(), None, "every change so far was logged");
        for i in 0..10 {
            log.note(
                t0.saturating_add(Duration::from_secs(1)),
                Change::Added,
                &format!("k{i}"),
                false,
            );
        }
        log.note(t0, Change::Removed, "gone", false);
        log.note(t0, Change::Paused, "p", true);
        let counted = "12 more catalog changes, not logged one by one (DEBUG logs them): \
                       10 added, 1 paused, 1 removed";
        assert_eq!(log.summary().as_deref(), Some(counted));
        // Not over yet: still counted.
        log.end_window(t0.saturating_add(LOG_WINDOW - Duration::from_millis(1)));
        assert_eq!(log.summary().as_deref(), Some(counted));
        // Over: the count is logged and a new window logs again.
        log.end_window(t0.saturating_add(LOG_WINDOW));
        assert_eq!(log.summary(), None);
        log.note(
            t0.saturating_add(LOG_WINDOW * 2),
            Change::Updated,
            "u",
            false,
        );
        assert_eq!(
            (log.logged, log.summary()),
            (1, None),
            "a new window logs again"
        );
    }
}
