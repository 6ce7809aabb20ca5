//! Dependencies on a node: a parent run's success becomes a run request for each child.
//!
//! # How a child runs exactly once
//!
//! When a run of a job that others run after succeeds (after any retries), its node asks
//! the catalog task to write, for each child, the register `run:<child fire id>` holding
//! [`Value::After`](crate::catalog::Value::After): the child, the parent, the parent's fire
//! id and slot. The child's fire id derives from the parent's
//! ([`crate::core::after::child_fire_id`]), so it is the same on every node, and a parent
//! slot that ran twice writes the same key twice: one request.
//!
//! From there it is a run-now request (see `catalog_apply`): it reaches every node in
//! gossip, and whichever node fires the child (its owner over the live members that
//! satisfy its constraints, handoff done) claims it (`ran:<fire id>`), waits until the
//! claim reached the child's runner-up, and runs it with the parent's slot as its own. An
//! owner that changes between the parent's success and the child's start is handled by
//! the claim: the request waits in gossip until a node that fires the child claims it,
//! and a node that takes the child over after a claim sees the claim and does not run it
//! again. If the writer dies, a peer adopts the register (the catalog's holder rule).
//!
//! # Lifetimes and limits
//!
//! A request and its claim live for the catalog's request lifetime (`request_ttl`, 10 min
//! by default) after they were written. A child nobody claims by then (no live member
//! satisfies its constraints that long) does not run for that parent success, and nor does
//! a child that is paused when its parent succeeds (it is not caught up on resume). A
//! child on a cycle (two concurrent writes on two nodes can close one that neither
//! refused) is not run, with a warning, rather than letting its jobs trigger each other
//! for ever. A parent node that dies after its run succeeded but
//! before its request left the node loses that request, as a slot's fire record would be.
//! A node that claims a request and dies before starting its run leaves it unrun (the
//! claim is the fence). A child runs whatever its overlap policy says, as a run-now run.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::catalog::{CatalogCmd, CatalogTask};
use crate::core::after::{cycle_message, cycle_through};
use crate::core::types::{FireId, JobId, UnixMillis};
use crate::exec::RunContext;

/// What runs need to start their children: the jobs some job runs after, and the way to
/// the catalog task. Shared by every run of the node.
#[derive(Debug)]
pub(super) struct Triggers {
    /// Jobs some job runs after (kept by the catalog task).
    parents: RwLock<BTreeSet<JobId>>,
    to_catalog: mpsc::UnboundedSender<CatalogCmd>,
}

impl Triggers {
    pub(super) fn new(to_catalog: mpsc::UnboundedSender<CatalogCmd>) -> Arc<Triggers> {
        Arc::new(Triggers {
            parents: RwLock::default(),
            to_catalog,
        })
    }

    /// A run succeeded: if some job runs after it, the catalog task writes the requests.
    pub(super) fn succeeded(&self, ctx: &RunContext) {
        let has_children = self
            .parents
            .read()
            .map(|p| p.contains(&ctx.job))
            .unwrap_or(false);
        if has_children {
            let _ = self.to_catalog.send(CatalogCmd::Succeeded {
                parent: ctx.job.clone(),
                fire_id: ctx.fire_id,
                slot: ctx.scheduled_at,
            });
        }
    }
}

impl CatalogTask {
    /// Keeps the dependency index in step with `name`'s definition (`parents`: `None`
    /// when the job left or has a schedule). A parent that comes or goes changes whether
    /// its children wait for a missing parent: their conflicts are logged again.
    pub(super) fn set_parents(&mut self, name: &JobId, parents: Option<Vec<JobId>>) {
        let before = self.deps.parents(name).to_vec();
        match parents {
            Some(p) => self.deps.set(name, &p),
            None => self.deps.remove(name),
        }
        if before.as_slice() != self.deps.parents(name) {
            let all = self.deps_parents();
            if let Ok(mut p) = self.triggers.parents.write() {
                *p = all;
            }
        }
        let children: Vec<JobId> = self.deps.children(name).cloned().collect();
        for child in children {
            self.log_conflicts(&child);
        }
    }

    fn deps_parents(&self) -> BTreeSet<JobId> {
        self.deps.parent_names().cloned().collect()
    }

    /// A run of `parent` with fire id `fire_id` of `slot` succeeded here: a request for
    /// each child, published.
    pub(super) async fn parent_succeeded(
        &mut self,
        parent: JobId,
        fire_id: FireId,
        slot: UnixMillis,
    ) {
        let now = self.clock.now();
        let children: Vec<JobId> = self.deps.children(&parent).cloned().collect();
        for child in children {
            if self.catalog.is_paused(&child) {
                info!(job = %child, parent = %parent, parent_fire_id = %fire_id, "the parent succeeded, but the job is paused: not run for it");
                continue;
            }
            // Writes on two nodes at once can close a cycle that neither refused: its jobs
            // would trigger each other for ever.
            if let Some(cycle) = cycle_through(&child, |j| Some(self.deps.parents(j))) {
                warn!(job = %child, cycle = %cycle_message(&cycle), "not run after its parent: its `after` is part of a cycle; change one of the jobs");
                continue;
            }
            match self
                .catalog
                .request_after(now, &child, &parent, fire_id, slot)
            {
                Some((id, (key, r))) => {
                    info!(job = %child, fire_id = %id, parent = %parent, parent_fire_id = %fire_id, "catalog: run requested after the parent's success");
                    self.wrote(key, &r);
                }
                None => {
                    debug!(job = %child, parent = %parent, parent_fire_id = %fire_id, "the child's run was requested already");
                }
            }
        }
        self.flush().await;
    }
}
