//! Fire records from the nodes: the cursor they move, the duplicates they show, and
//! records from too far in the future, held until they are near (issue 14).
//!
//! A node whose clock is ahead publishes records of slots that have not come yet. Applied
//! at once, one ten minutes ahead held its jobs for ten minutes after the node died, since
//! no slot at or before a record fires. Refused (as records more than 600 s ahead were),
//! the slots the node did run (early) ran again on its successor, and a node whose own
//! clock is behind forgot every record of its peers, to run their slots again once its
//! clock was put right. So a record further ahead than
//! [`max_record_ahead`](super::PlannerConfig::max_record_ahead) (`max_clock_offset`) is held, the newest per job and
//! node, and applied once its slot is that close. Only a node past the bound publishes one,
//! and such a node owns no job (see `node::skew`).

use std::collections::BTreeMap;

use super::{Action, Planner, Tenure};
use crate::core::types::{FireRecord, JobId, NodeId, UnixMillis};

/// Records held until they are near.
#[derive(Debug, Default)]
pub(super) struct Ahead {
    /// The newest record held per job and node.
    held: BTreeMap<(JobId, NodeId), FireRecord>,
    /// No held record is earlier than this (a hint: it may be earlier than the earliest).
    next: Option<UnixMillis>,
}

impl Ahead {
    fn hold(&mut self, job: &JobId, from: &NodeId, record: FireRecord) {
        self.held.insert((job.clone(), from.clone()), record);
        self.next = Some(self.next.map_or(record.slot, |n| n.min(record.slot)));
    }

    fn forget(&mut self, job: &JobId, from: &NodeId) {
        if !self.held.is_empty() {
            self.held.remove(&(job.clone(), from.clone()));
        }
    }

    /// How many records are held.
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }
}

impl Planner {
    /// A fire record seen at `now`: node `from` (any generation, ourselves included)
    /// started `record.slot` of `job`. Slots at or before it will not fire here. Slots it
    /// shows `from` ran that this node ran too come out as [`Action::Duplicate`].
    ///
    /// A record more than [`max_record_ahead`](super::PlannerConfig::max_record_ahead) in the future is held, not
    /// applied, until its slot is that close (the return value says whether it was applied
    /// now; see the module docs). Another node's record older than the job's registration here
    /// does not pull the cursor back (it may be arriving ahead of that node's newer ones);
    /// this node's own earlier records do.
    pub fn observe_record(
        &mut self,
        now: UnixMillis,
        job: &JobId,
        record: FireRecord,
        from: &NodeId,
    ) -> bool {
        let slot = record.slot;
        if slot > now.saturating_add(self.config.max_record_ahead) {
            self.ahead.hold(job, from, record);
            return false;
        }
        // The node's newest record of the job replaces any it held.
        self.ahead.forget(job, from);
        let ours = from == &self.me;
        let by = (!ours).then(|| crate::core::owner::node_key(from.as_str()).max(1));
        let Some(&idx) = self.index.get(job) else {
            let e = self.stray_records.entry(job.clone()).or_default();
            e.record(slot, record.epoch, by, record.follows);
            return true;
        };
        if let Some(f) = record.follows
            && f.node == self.me_key
            && !ours
            && self.abandoned.contains_key(job)
        {
            if self.suspended {
                let e = self.pending_repairs.entry(job.clone()).or_insert(f.slot);
                *e = (*e).max(f.slot);
            } else {
                self.repair(now, job, idx, f.slot);
            }
        }
        let j = self.jobs[idx].as_mut().expect("indexed job exists");
        let before = j.cursor;
        j.seen.record(slot, record.epoch, by, record.follows);
        j.update_cursor();
        if ours {
            // What an earlier generation of this node ran, to recognise duplicates of it.
            // Echoes of this planner's own records (possibly arriving after it retracted
            // a run) are not that.
            j.earlier_run(Tenure {
                epoch: record.epoch,
                first: record.first,
                last: slot,
            });
        } else {
            if let Some((first, last, count)) = j.overlap_with(record.first, slot) {
                self.out.push(Action::Duplicate {
                    job: job.clone(),
                    other: from.clone(),
                    first,
                    last,
                    count,
                });
            }
            if j.cursor != before {
                // Another node ran slots after ours: our next run starts a new stretch.
                j.end_tenure();
            }
        }
        if j.cursor != before {
            let mine = j.mine();
            self.reschedule(idx, mine);
        }
        true
    }

    /// Applies the held records whose slot is now near (see the module docs).
    pub(super) fn apply_near(&mut self, now: UnixMillis) {
        let near = now.saturating_add(self.config.max_record_ahead);
        if self.ahead.next.is_none_or(|n| n > near) {
            return;
        }
        let due: Vec<(JobId, NodeId)> = self
            .ahead
            .held
            .iter()
            .filter(|(_, r)| r.slot <= near)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(record) = self.ahead.held.remove(&key) {
                self.observe_record(now, &key.0, record, &key.1);
            }
        }
        self.ahead.next = self.ahead.held.values().map(|r| r.slot).min();
    }

    /// Records held because they were too far in the future (see the module docs).
    pub fn records_held(&self) -> usize {
        self.ahead.len()
    }
}
