//! One job as the planner tracks it: its cursor, its ownership state, and the stretches
//! it fired, for epochs and duplicate detection.

use super::MAX_COUNTED_MISSES;
use crate::core::job::JobSpec;
use crate::core::types::{FireRecord, Follows, UnixMillis};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mine {
    /// Another node owns it (or nobody).
    No,
    /// Ours from this time on (handoff delay or startup delay pending).
    From(UnixMillis),
}

/// A stretch of slots this node fired under one epoch.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tenure {
    pub(super) epoch: u64,
    pub(super) first: UnixMillis,
    pub(super) last: UnixMillis,
}

/// What the records of a job show (kept for jobs not registered here too, and applied if
/// they are added).
///
/// Every node keeps one per catalog job (issue 15, memory per entry), so the optional
/// slots are stored as a value and a presence flag side by side (an `Option<UnixMillis>`
/// pads each to 16 bytes): read them through the accessors, which give the `Option` back.
/// No value is set aside as "none", so a record of any slot keeps its meaning.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Seen {
    /// The highest slot this node accounted for (see [`Seen::own`]), when `has_own`.
    own: UnixMillis,
    /// The highest record seen from other nodes (see [`Seen::others`]), when `has_others`.
    others: UnixMillis,
    /// [`super::owner::node_key`] of the node whose record holds `others`; 0 when several
    /// nodes' records hold it.
    pub(super) others_by: u64,
    /// The highest epoch in any record of the job (ours included).
    pub(super) epoch_seen: u64,
    /// The highest epoch in another node's record of the job.
    pub(super) epoch_others: u64,
    /// See [`Seen::others_follows`]; meaningful when `has_others_follows`.
    others_follows: Follows,
    has_own: bool,
    has_others: bool,
    has_others_follows: bool,
}

impl Seen {
    /// The highest slot this node accounted for: its own records (any generation), or
    /// slots it fired or skipped.
    pub(super) fn own(&self) -> Option<UnixMillis> {
        self.has_own.then_some(self.own)
    }

    /// The highest record seen from other nodes.
    pub(super) fn others(&self) -> Option<UnixMillis> {
        self.has_others.then_some(self.others)
    }

    /// Where the epoch of the record holding [`Seen::others`] began, when another node's
    /// record placed it (`None` too when several nodes' records hold `others`): a record
    /// of this node's tells whether that node skipped a slot because of it (see
    /// `Planner::resolve_held`).
    pub(super) fn others_follows(&self) -> Option<Follows> {
        self.has_others_follows.then_some(self.others_follows)
    }

    fn set_others_follows(&mut self, follows: Option<Follows>) {
        self.has_others_follows = follows.is_some();
        self.others_follows = follows.unwrap_or_default();
    }

    /// Forgets [`Seen::own`] and returns it.
    pub(super) fn take_own(&mut self) -> Option<UnixMillis> {
        let own = self.own();
        (self.own, self.has_own) = (UnixMillis::default(), false);
        own
    }

    /// `slot` was accounted for by this node.
    pub(super) fn own_slot(&mut self, slot: UnixMillis) {
        self.own = self.own().map_or(slot, |s| s.max(slot));
        self.has_own = true;
    }

    /// A record of `slot` under `epoch`, from this node, or from the other node whose
    /// [`super::owner::node_key`] is `by`.
    pub(super) fn record(
        &mut self,
        slot: UnixMillis,
        epoch: u64,
        by: Option<u64>,
        follows: Option<Follows>,
    ) {
        self.epoch_seen = self.epoch_seen.max(epoch);
        let Some(by) = by else {
            self.own_slot(slot);
            return;
        };
        self.epoch_others = self.epoch_others.max(epoch);
        match self.others() {
            Some(o) if o > slot => {}
            Some(o) if o == slot => {
                if self.others_by != by {
                    self.others_by = 0;
                    self.set_others_follows(None);
                }
            }
            _ => {
                (self.others, self.has_others) = (slot, true);
                self.others_by = by;
                self.set_others_follows(follows);
            }
        }
    }

    /// Where an epoch begun now would begin: after the highest other node's record, when
    /// that is what placed the cursor.
    pub(super) fn follows(&self) -> Option<Follows> {
        let o = self.others()?;
        (self.own().is_none_or(|own| own < o)).then_some(Follows {
            slot: o,
            node: self.others_by,
        })
    }
}

/// One job as the planner tracks it. Every node keeps one per catalog job (issue 15,
/// memory per entry), so the optional fields are a value and a flag side by side (the
/// flags share one word of padding, where each `Option<UnixMillis>` would take 16 bytes):
/// read and write them through the accessors below. `size_of` is pinned by a test.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) spec: JobSpec,
    /// When the job was registered here, less the startup and handoff delays (see the
    /// module docs).
    pub(super) registered: UnixMillis,
    /// Slots at or before this are not run here: the job was added or rescheduled while
    /// the node ran (see `Planner::skip_until`). `UnixMillis::MIN` otherwise.
    pub(super) floor: UnixMillis,
    /// The slots and epochs the records show.
    pub(super) seen: Seen,
    /// `max(own, others)` once this node has its own record, else `max(registered,
    /// others)`; never before `floor`.
    pub(super) cursor: UnixMillis,
    /// Memo of `schedule.next_after(memo_cursor)` (`None` when `!memo_has_next`), valid
    /// when `memo_valid`: cron evaluation dominates `poll` when a thousand jobs are due at
    /// once.
    memo_cursor: UnixMillis,
    memo_next: UnixMillis,
    /// Ours from this time on, when `owned` (see [`Job::mine`]).
    owned_from: UnixMillis,
    /// The key of this job's entry in `timers`, when `has_timer`.
    timer: UnixMillis,
    /// What this node fired of it; `None` until it fires it (or sees an earlier
    /// generation's record of its own): boxed, since most jobs never fire on a given node
    /// (another member owns them) and every node keeps every job of the catalog (issue 15,
    /// memory per entry).
    pub(super) fired: Option<Box<Fired>>,
    /// Paused: no slot fires (see `catalog.rs`).
    pub(super) paused: bool,
    memo_valid: bool,
    memo_has_next: bool,
    owned: bool,
    has_timer: bool,
}

/// The stretches a node fired of one job, for epochs and duplicate detection.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fired {
    /// The stretch this node is firing now, if it fired since it last gained the job.
    tenure: Option<Tenure>,
    /// The stretch before (this or an earlier generation), for duplicate detection.
    prev_ran: Option<Tenure>,
    /// Where the current epoch began, if another node's record placed it.
    follows: Option<Follows>,
    /// Duplicates up to this slot were reported already.
    dups_counted: UnixMillis,
    /// A slot after the stretch's last run was not run here (misfire or overlap policy):
    /// the next run starts a new stretch, under the same epoch.
    range_broken: bool,
    /// This planner fired the job at least once (its own records seen since are echoes of
    /// its own runs, not of an earlier generation's).
    ran_here: bool,
}

impl Default for Fired {
    fn default() -> Self {
        Fired {
            tenure: None,
            prev_ran: None,
            follows: None,
            dups_counted: UnixMillis::MIN,
            range_broken: false,
            ran_here: false,
        }
    }
}

impl Job {
    /// A job registered at `registered` (less the delays), with what the records showed
    /// before: not ours, no timer, nothing fired, its cursor placed.
    pub(super) fn new(spec: JobSpec, registered: UnixMillis, seen: Seen) -> Job {
        let mut job = Job {
            spec,
            registered,
            floor: UnixMillis::MIN,
            seen,
            cursor: registered,
            memo_cursor: UnixMillis::MIN,
            memo_next: UnixMillis::MIN,
            owned_from: UnixMillis::MIN,
            timer: UnixMillis::MIN,
            fired: None,
            paused: false,
            memo_valid: false,
            memo_has_next: false,
            owned: false,
            has_timer: false,
        };
        job.update_cursor();
        job
    }

    /// Whether and from when this node owns the job.
    pub(super) fn mine(&self) -> Mine {
        if self.owned {
            Mine::From(self.owned_from)
        } else {
            Mine::No
        }
    }

    /// Records whether and from when this node owns the job (`Planner::set_mine` ends the
    /// tenure and moves the timer too).
    pub(super) fn set_mine(&mut self, mine: Mine) {
        (self.owned, self.owned_from) = match mine {
            Mine::From(t) => (true, t),
            Mine::No => (false, UnixMillis::MIN),
        };
    }

    /// Forgets the key of this job's entry in `timers` and returns it, if it had one.
    pub(super) fn take_timer(&mut self) -> Option<UnixMillis> {
        let t = self.has_timer.then_some(self.timer);
        (self.has_timer, self.timer) = (false, UnixMillis::MIN);
        t
    }

    /// This job's entry in `timers` is keyed `at`.
    pub(super) fn set_timer(&mut self, at: UnixMillis) {
        (self.has_timer, self.timer) = (true, at);
    }

    /// The first slot after the cursor.
    pub(super) fn next_slot(&mut self) -> Option<UnixMillis> {
        if self.memo_valid && self.memo_cursor == self.cursor {
            return self.memo_has_next.then_some(self.memo_next);
        }
        let next = self.spec.schedule.next_after(self.cursor);
        self.remember_next_slot(next);
        next
    }

    /// `next` is the first slot after the current cursor: kept for [`Job::next_slot`].
    pub(super) fn remember_next_slot(&mut self, next: Option<UnixMillis>) {
        self.memo_valid = true;
        self.memo_cursor = self.cursor;
        self.memo_has_next = next.is_some();
        self.memo_next = next.unwrap_or(UnixMillis::MIN);
    }

    /// The schedule changed: the memo of the next slot no longer holds.
    pub(super) fn forget_next_slot(&mut self) {
        self.memo_valid = false;
    }

    /// This node accounted for everything at or before `slot` (fired, skipped, or its own
    /// earlier record).
    pub(super) fn account(&mut self, slot: UnixMillis) {
        self.seen.own_slot(slot);
        self.update_cursor();
    }

    pub(super) fn update_cursor(&mut self) {
        let base = self.seen.own().unwrap_or(self.registered);
        self.cursor = self
            .seen
            .others()
            .map_or(base, |o| base.max(o))
            .max(self.floor);
    }

    /// The stretch this node is firing now, if any.
    pub(super) fn tenure(&self) -> Option<Tenure> {
        self.fired.as_ref().and_then(|f| f.tenure)
    }

    /// Where the current epoch began, if another node's record placed it.
    pub(super) fn follows(&self) -> Option<Follows> {
        self.fired.as_ref().and_then(|f| f.follows)
    }

    /// A record of this node's own shows a stretch an earlier generation ran: kept to
    /// recognise duplicates of it, unless this planner fired the job itself (the record
    /// is an echo of its own run) or knows a later stretch.
    pub(super) fn earlier_run(&mut self, t: Tenure) {
        let f = self.fired.get_or_insert_default();
        if !f.ran_here && f.prev_ran.is_none_or(|p| p.last < t.last) {
            f.prev_ran = Some(t);
        }
    }

    /// Ends the current stretch: the next run starts a new epoch.
    pub(super) fn end_tenure(&mut self) {
        if let Some(f) = self.fired.as_deref_mut() {
            if let Some(t) = f.tenure.take() {
                f.prev_ran = Some(t);
            }
            f.range_broken = false;
        }
    }

    /// The run of `slot` did not happen, nor did the runs after it in its stretch (they
    /// are newer and waited the same way): the stretch ends before it. Returns the record
    /// that says so, or `None` if no stretch holds `slot`.
    pub(super) fn retract(&mut self, slot: UnixMillis) -> Option<FireRecord> {
        let f = self.fired.as_deref_mut()?;
        let holds = |t: &Tenure| t.first <= slot && slot <= t.last;
        // The stretch may have ended already (the node lost the job with the quorum).
        let current = f.tenure.as_ref().is_some_and(holds);
        let t = if current {
            f.tenure.as_mut()
        } else {
            f.prev_ran.as_mut().filter(|t| holds(t))
        }?;
        let before = UnixMillis(slot.0.saturating_sub(1));
        t.last = before;
        let (epoch, first) = (t.epoch, t.first);
        let record = FireRecord {
            slot: before,
            epoch,
            first: first.min(before),
            follows: if current { f.follows } else { None },
        };
        if first > before {
            if current {
                f.tenure = None;
            } else {
                f.prev_ran = None;
            }
        }
        Some(record)
    }

    /// A slot was dropped after the stretch's last run: the stretch's range ends there.
    pub(super) fn break_range(&mut self) {
        if let Some(f) = self.fired.as_deref_mut()
            && f.tenure.is_some()
        {
            f.range_broken = true;
        }
    }

    /// This node starts `slot`: its epoch, and the first slot of that epoch. A new epoch
    /// begins when the job was just gained, or another node's record reached the epoch.
    pub(super) fn begin_run(&mut self, slot: UnixMillis) -> (u64, UnixMillis) {
        let epoch_others = self.seen.epoch_others;
        let f: &mut Fired = self.fired.get_or_insert_default();
        if let Some(t) = f.tenure.as_mut()
            && t.epoch > epoch_others
        {
            if f.range_broken {
                f.prev_ran = Some(*t);
                f.range_broken = false;
                t.first = slot;
            }
            t.last = slot;
            return (t.epoch, t.first);
        }
        if let Some(t) = f.tenure.take() {
            f.prev_ran = Some(t);
        }
        f.range_broken = false;
        f.ran_here = true;
        f.follows = self.seen.follows();
        let epoch = self.seen.epoch_seen.saturating_add(1);
        self.seen.epoch_seen = epoch;
        f.tenure = Some(Tenure {
            epoch,
            first: slot,
            last: slot,
        });
        (epoch, slot)
    }

    /// Slots in `[first, last]` this node ran too (its current and previous stretch), not
    /// reported yet: `(first, last, count)`.
    pub(super) fn overlap_with(
        &mut self,
        first: UnixMillis,
        last: UnixMillis,
    ) -> Option<(UnixMillis, UnixMillis, u64)> {
        let f = self.fired.as_deref_mut()?;
        let ours = [f.tenure, f.prev_ran].map(|t| t.map(|t| (t.first, t.last)));
        let mut found: Option<(UnixMillis, UnixMillis, u64)> = None;
        for (a, b) in ours.into_iter().flatten() {
            let lo = a
                .max(first)
                .max(UnixMillis(f.dups_counted.0.saturating_add(1)));
            let hi = b.min(last);
            if lo > hi {
                continue;
            }
            let mut s = self
                .spec
                .schedule
                .next_after(UnixMillis(lo.0.saturating_sub(1)));
            while let Some(slot) = s {
                if slot > hi {
                    break;
                }
                let e = found.get_or_insert((slot, slot, 0));
                e.0 = e.0.min(slot);
                e.1 = e.1.max(slot);
                e.2 += 1;
                if e.2 >= MAX_COUNTED_MISSES {
                    break;
                }
                s = self.spec.schedule.next_after(slot);
            }
        }
        if let Some((_, last, _)) = found {
            f.dups_counted = f.dups_counted.max(last);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::*;

    /// Every node keeps one `Job` per catalog job (issue 15, memory per entry): a field
    /// that makes it larger should be a choice, not an accident. (Job 344 and JobSpec 168
    /// bytes before.)
    #[test]
    fn a_job_and_what_it_saw_stay_within_their_sizes() {
        assert!(size_of::<Job>() <= 272, "Job: {} bytes", size_of::<Job>());
        assert!(size_of::<Seen>() <= 64, "Seen: {} bytes", size_of::<Seen>());
        assert!(
            size_of::<JobSpec>() <= 136,
            "JobSpec: {} bytes",
            size_of::<JobSpec>()
        );
    }

    #[test]
    fn the_packed_fields_give_back_what_was_stored() {
        let mut seen = Seen::default();
        assert_eq!(
            (seen.own(), seen.others(), seen.others_follows()),
            (None, None, None)
        );
        // The earliest time is a slot like any other: nothing is set aside as "none".
        seen.record(UnixMillis::MIN, 1, Some(7), Some(Follows::default()));
        assert_eq!(seen.others(), Some(UnixMillis::MIN));
        assert_eq!(seen.others_follows(), Some(Follows::default()));
        assert_eq!(seen.own(), None);
        seen.own_slot(UnixMillis::MIN);
        assert_eq!(seen.take_own(), Some(UnixMillis::MIN));
        assert_eq!(seen.own(), None);
        seen.record(UnixMillis::MIN, 1, Some(8), None);
        assert_eq!(seen.others_follows(), None, "two nodes hold it");

        let spec = crate::core::job::parse_jobs_toml(
            "[[jobs]]\nname = \"a\"\nschedule = \"@every 1s\"\ncommand = \"true\"\n",
        )
        .unwrap()
        .remove(0);
        let mut job = Job::new(spec, UnixMillis(500), Seen::default());
        assert_eq!(job.mine(), Mine::No);
        job.set_mine(Mine::From(UnixMillis::MIN));
        assert_eq!(job.mine(), Mine::From(UnixMillis::MIN));
        assert_eq!(job.take_timer(), None);
        job.set_timer(UnixMillis::MIN);
        assert_eq!(job.take_timer(), Some(UnixMillis::MIN));
        assert_eq!(job.take_timer(), None);
        assert_eq!(job.next_slot(), Some(UnixMillis(1_000)));
        job.remember_next_slot(None);
        assert_eq!(job.next_slot(), None, "the memo holds for the same cursor");
        job.forget_next_slot();
        assert_eq!(job.next_slot(), Some(UnixMillis(1_000)));
        job.account(UnixMillis(1_000));
        assert_eq!(
            job.next_slot(),
            Some(UnixMillis(2_000)),
            "a new cursor, a new slot"
        );
    }
}
