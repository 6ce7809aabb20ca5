//! The node's placement at run time: its weight and tags changed live (SIGHUP, or
//! [`NodeHandle::set_placement`](super::NodeHandle::set_placement)), and the jobs that no
//! live member may own, reported rather than run anywhere (issue 18).

use tracing::{info, warn};

use super::runtime::Runtime;
use crate::core::placement::Placement;
use crate::core::types::UnixMillis;
use crate::core::unplaceable::Change;
use crate::history::RunOutcome;

impl Runtime {
    /// Publishes a new weight and tags; every node's view, and the owners, follow.
    pub(super) async fn set_placement(&mut self, placement: Placement) {
        if placement == self.config.placement {
            return;
        }
        info!(
            node = %self.config.node_id,
            weight = placement.weight,
            tags = %placement.tags,
            "placement changed: publishing the new weight and tags"
        );
        self.config.placement = placement;
        if let Some(c) = &self.cluster {
            c.set_placement(&self.config.placement).await;
        }
        // Our own view takes the change at once, before gossip echoes it: a node that lost
        // a tag must not start one more run of a job that needs it (the simulator's
        // `placement` scenario checks every run against its node's tags).
        let me = self.config.node_id.clone();
        let mut view = self.planner.view().clone();
        if view.members.contains(&me) {
            if self.config.placement == Placement::default() {
                view.placements.remove(&me);
            } else {
                view.placements.insert(me, self.config.placement.clone());
            }
            self.on_view(view).await;
        }
    }

    /// Takes the planner's unplaceable jobs after a change of the view or of the jobs, and
    /// logs what changed. The job's stand-in (the node that reports its slots) warns; the
    /// others say so at debug level, so the cluster logs it once.
    pub(super) fn check_unplaceable(&mut self, now: UnixMillis) {
        let current = self.planner.unplaceable();
        let changes = self.unplaceable.update(now, &self.config.node_id, &current);
        for change in changes {
            match change {
                Change::Unplaceable {
                    job,
                    constraints,
                    reporter: true,
                } => {
                    warn!(job = %job, constraints = %constraints, "job unplaceable: no live member has the tags its constraints require; it runs nowhere, and each of its slots is reported until a member that has them is back (then its misfire policy decides which late slots run)")
                }
                Change::Unplaceable {
                    job, constraints, ..
                } => {
                    tracing::debug!(job = %job, constraints = %constraints, "job unplaceable (reported by its stand-in)")
                }
                Change::Placeable {
                    job,
                    reporter: true,
                } => {
                    info!(job = %job, owner = ?self.planner.owner_of(&job).map(|n| n.to_string()), "job placeable again")
                }
                Change::Placeable { .. } => {}
            }
        }
    }

    /// Reports the slots of unplaceable jobs that came due (this node being their
    /// stand-in): counted, logged and put in the run history.
    pub(super) fn report_unplaceable(&mut self, now: UnixMillis) {
        for due in self.unplaceable.poll(now) {
            self.stats.unplaceable_slots += due.count;
            info!(job = %due.job, first = %due.first, last = %due.last, count = due.count, "slots unplaceable: no live member satisfies the job's constraints; not run");
            self.not_run(
                &due.job,
                (due.first, due.last, due.count),
                RunOutcome::Unplaceable,
                "unplaceable: no live member had the tags the job's constraints require",
            );
        }
    }
}
