//! Suspension: while the node doubts its own view of the cluster (its process was stopped,
//! or its gossip fell behind), the planner fires nothing and takes nothing over; on
//! [`Planner::resume`] ownership is computed afresh from the view of then.
//!
//! A node woken from SIGSTOP sees every peer silent and would own every job; the peers
//! meanwhile took its jobs over and ran their slots (issue 14: 0 to 115 slots run twice).
//! The runtime suspends the planner as soon as it notices, and resumes it once it has
//! heard the live members again (see `node::health`). Runs the planner fired before the
//! stall that had not started yet are held by the runtime and settled here, one by one,
//! against the records heard since ([`Planner::resolve_held`]).

use super::job::Mine;
use super::{Action, Planner};
use crate::core::job::Misfire;
use crate::core::types::{FireRecord, JobId, UnixMillis};

/// What became of a run that was fired before a stall and held (see
/// [`Planner::resolve_held`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// Nobody else ran the slot: an [`Action::Fire`] for it is queued (late, with the epoch
    /// it was first fired with).
    Run,
    /// Another node's record covers the slot: it ran it (or skipped it for a reason of its
    /// own). Publish the record, if any, so this node's record stops claiming it.
    RanElsewhere(Option<FireRecord>),
    /// The job moved to another node whose record does not show the slot: this node gives
    /// it up as in quorum mode (see [`Planner::abandon`]); publish the record, if any.
    Abandoned(Option<FireRecord>),
    /// Too late for the job's misfire policy or catch-up window: an [`Action::Missed`] is
    /// queued; publish the record, if any.
    Dropped(Option<FireRecord>),
    /// The job is not registered any more.
    Unknown,
}

impl Planner {
    /// The node doubts its view: fire nothing, take nothing over, until
    /// [`Planner::resume`]. Ownership changes still update the owner table meanwhile; they
    /// take effect only at the resume.
    pub fn suspend(&mut self) {
        if self.suspended {
            return;
        }
        self.suspended = true;
        for idx in 0..self.jobs.len() {
            if let Some(mine) = self.jobs[idx].as_ref().map(|j| j.mine()) {
                // Timers move to the end of time (see `start_at`).
                self.reschedule(idx, mine);
            }
        }
    }

    /// True between [`Planner::suspend`] and [`Planner::resume`].
    pub fn is_suspended(&self) -> bool {
        self.suspended
    }

    /// The node trusts its view again. Every job it owns in the current view fires from
    /// `from` on (at or after `now`); the others stop. A job it owned before the
    /// suspension and still owns keeps its epoch, unless another node's record overtook it
    /// meanwhile (a node that took it over while this one was stopped); a job gained
    /// meanwhile begins a new one. Repairs asked for while suspended are made now.
    pub fn resume(&mut self, now: UnixMillis, from: UnixMillis) {
        if !self.suspended {
            return;
        }
        self.suspended = false;
        let from = from.max(now);
        for idx in 0..self.jobs.len() {
            let Some(was) = self.jobs[idx].as_ref().map(|j| j.mine()) else {
                continue;
            };
            let mine = if !self.leaving && self.is_mine(idx) {
                match was {
                    Mine::From(t) => Mine::From(t.max(from)),
                    Mine::No => Mine::From(from),
                }
            } else {
                Mine::No
            };
            self.set_mine(idx, mine);
        }
        for (job, after) in std::mem::take(&mut self.pending_repairs) {
            if let Some(&idx) = self.index.get(&job) {
                self.repair(now, &job, idx, after);
            }
        }
    }

    /// Settles a run of `slot` of `job` that was fired under `epoch` before the node
    /// stalled and had not started when the stall was noticed. Call after
    /// [`Planner::resume`], once the records the live members hold have been observed.
    ///
    /// - Another node's newest record of the job reaches `slot`: that node ran it, unless
    ///   its epoch began right after this node's own record of `slot` or a later one (it
    ///   skipped the slot because of that record): then nobody did, and it runs here.
    /// - Otherwise nobody ran it: it runs here if the job is still this node's; if the job
    ///   moved, it is given up as in quorum mode, and repaired if the new owner's record
    ///   shows it skipped the slot because of this node's record.
    ///
    /// A slot run late follows the job's misfire policy and catch-up window like any
    /// catch-up: `skip` drops a slot found later than the misfire threshold, `once` keeps
    /// it only if no later slot of the job is due yet.
    pub fn resolve_held(
        &mut self,
        now: UnixMillis,
        job: &JobId,
        slot: UnixMillis,
        epoch: u64,
    ) -> Held {
        let Some(&idx) = self.index.get(job) else {
            return Held::Unknown;
        };
        let threshold =
            i64::try_from(self.config.misfire_threshold.as_millis()).unwrap_or(i64::MAX);
        let me_key = self.me_key;
        let mine = self.is_mine(idx) && !self.leaving;
        let Some(j) = self.jobs[idx].as_mut() else {
            return Held::Unknown;
        };
        let after_ours = j
            .seen
            .others_follows()
            .is_some_and(|f| f.node == me_key && f.slot >= slot);
        if j.seen.others().is_some_and(|o| o >= slot) && !after_ours {
            return Held::RanElsewhere(j.retract(slot));
        }
        if !mine && !after_ours {
            return Held::Abandoned(self.abandon(job, slot));
        }
        let late = now.millis_since(slot) > threshold;
        let too_old = slot < now.saturating_sub(j.spec.catch_up_window);
        let policy_drops = late
            && match j.spec.misfire {
                Misfire::All => false,
                Misfire::Skip => true,
                Misfire::Once => j.spec.schedule.next_after(slot).is_some_and(|n| n <= now),
            };
        if too_old || policy_drops {
            let record = j.retract(slot);
            self.out.push(Action::Missed {
                job: job.clone(),
                first: slot,
                last: slot,
                count: 1,
                policy: !too_old,
            });
            return Held::Dropped(record);
        }
        self.out
            .push(super::late_fire(job, slot, epoch, false, idx));
        Held::Run
    }
}
