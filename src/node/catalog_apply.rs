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

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;
use tracing::{info, warn};

use super::catalog::{CatalogCmd, PlanUpdate};
use super::run::{Prepared, RUN_ENDED, Retry, RunGuard, RunInput};
use super::runtime::Runtime;
use crate::core::types::{FireId, UnixMillis};
use crate::exec::{BoxFuture, RunContext};

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
                            Ok(()) => info!(job = %name, paused, "catalog job added"),
                            Err(e) => warn!(job = %name, error = %e, "catalog job not added"),
                        }
                    }
                    Some(spec) => {
                        self.planner.update_job(now, spec);
                        self.planner.set_paused(now, &name, paused, floor);
                        info!(job = %name, paused, "catalog job updated");
                    }
                    None => {
                        self.planner.set_paused(now, &name, paused, floor);
                        info!(job = %name, paused, "catalog job {}", if paused { "paused" } else { "resumed" });
                    }
                }
                if placement {
                    self.check_unplaceable(now);
                }
            }
            PlanUpdate::Remove(name) => {
                if self.planner.remove_job(&name) {
                    info!(job = %name, "catalog job removed");
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
