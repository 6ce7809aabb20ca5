//! The planner: a pure state machine that decides which slots this node fires.
//!
//! Inputs come in one at a time, each with the current time: the membership [`View`], jobs
//! added or removed, fire records seen from peers, leaving. [`Planner::poll`] fires what is
//! due; [`Planner::drain`] hands out the resulting [`Action`]s; [`Planner::next_deadline`]
//! says when to poll next. It never reads a clock, sleeps or does I/O.
//!
//! # Takeover rules
//!
//! - Each job has a *cursor*: every slot at or before it is accounted for (fired by some
//!   node, or skipped). A fire record from any node moves the cursor forward, so a slot at
//!   or before a known record is never fired. The cursor starts shortly before the job
//!   was registered here: by the startup delay plus the handoff delay, the longest a slot
//!   can go unrun while a joining node takes ownership from another joiner that never got
//!   to fire (found by the simulator, `join` seed 53). So a new job does not fire slots
//!   from long before it existed. Only this node's own records (from its earlier
//!   generations) may pull the cursor further back, so a node restarted after a crash
//!   catches up the slots nobody ran while it was down, whatever order records arrive in.
//! - A job this node owns fires every slot after the cursor as it comes due. Slots found
//!   late (more than [`PlannerConfig::misfire_threshold`]) are misfires, treated per the
//!   job's [`Misfire`] policy; slots older than its catch-up window are skipped and
//!   reported as [`Action::Missed`].
//! - Ownership won from a node that is still alive in our view (it is leaving) takes
//!   effect after [`PlannerConfig::handoff_delay`], so the previous owner has seen the
//!   change and its last record has reached us. The same delay applies to a job we keep
//!   when a member we had not seen appears and would own it in our absence: we joined a
//!   running cluster, or a partition healed, and that member may have been running it.
//!   Ownership won from a node that is gone takes effect at once. Lost ownership stops at
//!   once.
//! - Nothing fires before [`PlannerConfig::startup_delay`] has passed since the planner was
//!   created, so a node that joins a running cluster learns the members and their records
//!   before it acts on a view that holds only itself.
//! - Quorum mode ([`PlannerConfig::min_members`]): while the view has fewer members than
//!   that, nothing fires. Ownership won from a node that vanished then takes effect after
//!   [`PlannerConfig::dead_takeover_delay`], so a node that is only cut off has noticed it
//!   lost the quorum and stopped before the majority side takes its jobs.
//!
//! # Epochs and duplicates
//!
//! Every run carries an ownership *epoch* (a fencing token): a node that starts firing a
//! job takes an epoch above every epoch it has seen in that job's records, and keeps it
//! while it stays the owner and no other node's record overtakes it. Records carry the
//! epoch and the first slot of it, so a node that learns another node ran slots it also
//! ran (a partition healed, a stalled node came back) reports them as
//! [`Action::Duplicate`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::job::{JobSpec, Misfire};
use super::owner::OwnerTable;
use super::placement::{Constraints, Placement};
use super::schedule::Schedule;
use super::types::{FireId, FireRecord, JobId, NodeId, UnixMillis};

/// Tuning of the planner. Durations, not clock readings.
#[derive(Clone, Debug)]
pub struct PlannerConfig {
    /// Delay before ownership won from a live node takes effect.
    pub handoff_delay: Duration,
    /// A slot found later than this is a misfire (handled per the job's policy).
    pub misfire_threshold: Duration,
    /// Nothing fires until this long after the planner starts.
    pub startup_delay: Duration,
    /// Quorum mode: nothing fires while the view has fewer members than this. 0 or 1: off.
    pub min_members: usize,
    /// A node that expects peers (it has seeds) fires nothing while it has heard from no
    /// other node, for up to this long after it started; then it fires alone. Zero: off.
    pub peer_wait: Duration,
    /// Delay before ownership won from a node that vanished (not leaving) takes effect.
    /// Zero outside quorum mode: a crashed node's jobs move at once.
    pub dead_takeover_delay: Duration,
    /// A record further than this in the future is held, not applied, until its slot is
    /// this close (see [`Planner::observe_record`]): only a node whose clock is off by more
    /// than this publishes one, and such a node owns no job (`max_clock_offset`), so no
    /// record can hold a job hostage longer than this after its node died (issue 14: a
    /// clock ten minutes ahead held its jobs for ten minutes).
    pub max_record_ahead: Duration,
    /// Test-only: a deliberately broken ownership rule under which this node believes it
    /// owns every job. The simulator's tests switch it on to prove the checker catches a
    /// broken rule. Never set it in production.
    #[doc(hidden)]
    pub broken_ownership_for_tests: bool,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            handoff_delay: Duration::from_millis(800),
            misfire_threshold: Duration::from_secs(5),
            startup_delay: Duration::from_secs(1),
            min_members: 0,
            peer_wait: Duration::ZERO,
            dead_takeover_delay: Duration::ZERO,
            max_record_ahead: Duration::from_secs(2),
            broken_ownership_for_tests: false,
        }
    }
}

/// The cluster as this node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Members that may own jobs: alive and not leaving.
    pub members: BTreeSet<NodeId>,
    /// Every node alive in our view, including leaving ones.
    pub alive: BTreeSet<NodeId>,
    /// The weight and tags of every member that declares any; the others have the default
    /// placement (weight 1, no tags).
    pub placements: BTreeMap<NodeId, Placement>,
}

impl View {
    /// A view where every given node is alive and none is leaving.
    pub fn of(nodes: impl IntoIterator<Item = NodeId>) -> View {
        let members: BTreeSet<NodeId> = nodes.into_iter().collect();
        View {
            alive: members.clone(),
            members,
            placements: BTreeMap::new(),
        }
    }

    /// The weight and tags of `node` (the default placement when it declares none).
    pub fn placement(&self, node: &NodeId) -> &Placement {
        static DEFAULT: std::sync::LazyLock<Placement> =
            std::sync::LazyLock::new(Placement::default);
        self.placements.get(node).unwrap_or(&DEFAULT)
    }

    /// The members with their placements, in id order.
    pub fn placed_members(&self) -> impl Iterator<Item = (&NodeId, &Placement)> {
        self.members.iter().map(|m| (m, self.placement(m)))
    }
}

/// What the planner asks its runtime to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run this slot now.
    Fire {
        /// The job.
        job: JobId,
        /// The slot's scheduled time.
        slot: UnixMillis,
        /// The slot's idempotency key.
        fire_id: FireId,
        /// True when the slot was found late (a catch-up run).
        late: bool,
        /// The ownership epoch (fencing token) this node fires the job under.
        epoch: u64,
        /// True when this node gave the slot up earlier (quorum mode) and learned since
        /// that nobody ran it (see [`Planner::abandon`]): a late run, under the epoch it
        /// was first fired with.
        repair: bool,
        /// Where [`Planner::job_at`] finds the job, until the job set changes.
        index: usize,
    },
    /// Tell the cluster that this node started `record.slot` of `job` (the job's fire
    /// record).
    PublishRecord {
        /// The job.
        job: JobId,
        /// The last slot started, its epoch and the epoch's first slot.
        record: FireRecord,
    },
    /// Another node ran slots of `job` that this node ran too (detected from its record).
    Duplicate {
        /// The job.
        job: JobId,
        /// The other node.
        other: NodeId,
        /// First slot both ran.
        first: UnixMillis,
        /// Last slot both ran.
        last: UnixMillis,
        /// How many slots both ran (counting stops at [`MAX_COUNTED_MISSES`]).
        count: u64,
    },
    /// Slots that will not run: older than the catch-up window (`policy: false`), or
    /// dropped by the job's misfire policy (`policy: true`).
    Missed {
        /// The job.
        job: JobId,
        /// First skipped slot.
        first: UnixMillis,
        /// Last skipped slot.
        last: UnixMillis,
        /// How many (counting stops at [`MAX_COUNTED_MISSES`]).
        count: u64,
        /// True when the misfire policy (`once`, `skip`) chose to skip them.
        policy: bool,
    },
}

/// Counting of skipped slots stops here (an every-second job down for a year).
pub const MAX_COUNTED_MISSES: u64 = 100_000;

/// Abandoned runs remembered per job (quorum mode; see [`Planner::abandon`]). Only runs
/// fired as the quorum was being lost are abandoned, a handful.
pub const MAX_ABANDONED: usize = 1024;

/// Errors from planner inputs. The planner's state is unchanged when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlannerError {
    /// A job with this name is already registered.
    #[error("job `{0}` is already registered")]
    DuplicateJob(JobId),
}

mod catalog;
mod job;
mod records;
mod suspend;
#[cfg(test)]
mod tests;

pub use suspend::Held;

use job::{Job, Mine, Seen, Tenure};

/// The scheduling state machine. See the module docs.
#[derive(Debug)]
pub struct Planner {
    me: NodeId,
    config: PlannerConfig,
    not_before: UnixMillis,
    /// Until this node first hears of another one, nothing fires before this (see
    /// [`PlannerConfig::peer_wait`]); `None` once it has.
    lonely_until: Option<UnixMillis>,
    leaving: bool,
    /// The node doubts its own view (it was stopped, or its gossip fell behind): nothing
    /// fires and nothing is taken over until [`Planner::resume`] (see `suspend.rs`).
    suspended: bool,
    /// Repairs a record asked for while suspended: job -> after which slot (see
    /// [`Planner::abandon`]); made at [`Planner::resume`].
    pending_repairs: BTreeMap<JobId, UnixMillis>,
    view: View,
    /// Boxed: a slot of the vector costs a pointer, not a whole `Job` (400 bytes), so the
    /// room a growing vector keeps spare stays small (issue 15: memory per catalog entry).
    jobs: Vec<Option<Box<Job>>>,
    free: Vec<usize>,
    index: BTreeMap<JobId, usize>,
    owners: OwnerTable,
    /// Highest (own, others') records seen for jobs not registered here, applied if they
    /// are added.
    stray_records: BTreeMap<JobId, Seen>,
    /// [`super::owner::node_key`] of this node (never 0).
    me_key: u64,
    /// Quorum mode: runs fired here and then given up, with their epochs, until the
    /// records show whether anybody ran them (see [`Planner::abandon`]).
    abandoned: BTreeMap<JobId, Vec<(UnixMillis, u64)>>,
    timers: BTreeSet<(UnixMillis, usize)>,
    out: Vec<Action>,
    /// Jobs fired by `poll` whose next timer is not computed yet (see `next_deadline`).
    deferred: Vec<usize>,
    /// Parsed cron schedules by (text, timezone, DST rule), shared between jobs.
    schedules: BTreeMap<
        (
            std::sync::Arc<str>,
            &'static str,
            crate::core::schedule::Dst,
        ),
        Schedule,
    >,
    /// Jobs whose owner changed in this node's view, summed over every view change.
    ownership_changes: u64,
    /// Records from too far in the future, held until they are near (see `records.rs`).
    ahead: records::Ahead,
}

impl Planner {
    /// A planner for node `me`, started at `now`. Its view is empty until
    /// [`Planner::set_view`].
    pub fn new(me: NodeId, config: PlannerConfig, now: UnixMillis) -> Planner {
        let me_key = super::owner::node_key(me.as_str()).max(1);
        Planner {
            me,
            not_before: now.saturating_add(config.startup_delay),
            lonely_until: (!config.peer_wait.is_zero())
                .then(|| now.saturating_add(config.peer_wait)),
            config,
            leaving: false,
            suspended: false,
            pending_repairs: BTreeMap::new(),
            view: View::default(),
            jobs: Vec::new(),
            free: Vec::new(),
            index: BTreeMap::new(),
            owners: OwnerTable::new(),
            stray_records: BTreeMap::new(),
            me_key,
            abandoned: BTreeMap::new(),
            timers: BTreeSet::new(),
            out: Vec::new(),
            schedules: BTreeMap::new(),
            deferred: Vec::new(),
            ownership_changes: 0,
            ahead: records::Ahead::default(),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.me
    }

    /// The current view.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// How many times a job's owner changed in this node's view (summed over jobs and view
    /// changes).
    pub fn ownership_changes(&self) -> u64 {
        self.ownership_changes
    }

    /// How many registered jobs this node owns in its view.
    pub fn owned_count(&self) -> usize {
        self.index
            .values()
            .filter(|&&i| self.owners.owner_of(i) == Some(&self.me))
            .count()
    }

    /// Number of registered jobs.
    pub fn job_count(&self) -> usize {
        self.index.len()
    }

    /// The registered job called `name`.
    pub fn job(&self, name: &JobId) -> Option<&JobSpec> {
        let idx = *self.index.get(name)?;
        self.jobs[idx].as_ref().map(|j| &j.spec)
    }

    /// The job an [`Action::Fire`] names by `index`: a lookup without the name, valid until
    /// the job set changes.
    pub fn job_at(&self, index: usize) -> Option<&JobSpec> {
        self.jobs.get(index)?.as_ref().map(|j| &j.spec)
    }

    /// Registered jobs in name order.
    pub fn jobs(&self) -> impl Iterator<Item = &JobSpec> {
        self.index
            .values()
            .filter_map(|&i| self.jobs[i].as_ref().map(|j| &j.spec))
    }

    /// The owner of `name` in the current view (whether or not it is registered here).
    pub fn owner_of(&self, name: &JobId) -> Option<NodeId> {
        match self.index.get(name) {
            Some(&idx) => self.owners.owner_of(idx).cloned(),
            None => super::owner::owner_placed(
                name,
                &Constraints::default(),
                self.view.placed_members(),
            )
            .cloned(),
        }
    }

    /// True if this node currently fires `name` (owned, handoff complete, and past the
    /// startup delay and the peer wait, as for slots: a restarted node that has heard one
    /// peer may think it owns a job its real owner still runs; the simulator's `catalog`
    /// scenario ran a run-now request on both, seeds 97, 103 and 161).
    pub fn fires(&self, name: &JobId, now: UnixMillis) -> bool {
        now >= self.start_at()
            && self.index.get(name).is_some_and(
            |&i| matches!(self.jobs[i].as_ref().map(|j| j.mine()), Some(Mine::From(t)) if t <= now),
        )
    }

    /// A run of `slot` that [`Action::Fire`] asked for was not started after all (quorum
    /// mode: the node lost the quorum before a quorum was known to hold its record). This
    /// node's stretch then ends before `slot`, so it does not report a duplicate when
    /// another node runs it; the returned record says so to the cluster (publish it).
    /// `None` when `slot` is not this node's latest run of the job.
    ///
    /// The record may have reached the majority side all the same: then nobody runs the
    /// slot there. The planner remembers it, and once a record from the node that took the
    /// job over shows that its epoch began right after this node's record (its
    /// [`FireRecord::follows`] names this node, at or after `slot`), nobody ran the slot:
    /// it fires again as a repair ([`Action::Fire`] with `repair`), per the job's misfire
    /// policy and catch-up window. If the taker's epoch began earlier, it ran the slot
    /// itself.
    pub fn abandon(&mut self, name: &JobId, slot: UnixMillis) -> Option<FireRecord> {
        let idx = *self.index.get(name)?;
        let j = self.jobs[idx].as_mut()?;
        let record = j.retract(slot);
        let epoch = record.map_or(j.seen.epoch_seen, |r| r.epoch);
        let list = self.abandoned.entry(name.clone()).or_default();
        if !list.iter().any(|(s, _)| *s == slot) {
            if list.len() >= MAX_ABANDONED {
                list.remove(0);
            }
            list.push((slot, epoch));
        }
        record
    }

    /// `job`'s taker (another node) began its epoch after this node's record of `after`:
    /// the abandoned runs at or before it were run by nobody. Fires them late, per the
    /// misfire policy and the catch-up window.
    fn repair(&mut self, now: UnixMillis, job: &JobId, idx: usize, after: UnixMillis) {
        let Some(list) = self.abandoned.remove(job) else {
            return;
        };
        let Some(j) = self.jobs[idx].as_ref() else {
            return;
        };
        let window_start = now.saturating_sub(j.spec.catch_up_window);
        let mut due: Vec<(UnixMillis, u64)> =
            list.into_iter().filter(|(s, _)| *s <= after).collect();
        due.sort_unstable();
        let (too_old, fresh): (Vec<_>, Vec<_>) =
            due.into_iter().partition(|(s, _)| *s < window_start);
        let keep = match j.spec.misfire {
            _ if self.leaving => 0,
            Misfire::All => fresh.len(),
            Misfire::Once => fresh.len().min(1),
            Misfire::Skip => 0,
        };
        let (dropped, run) = fresh.split_at(fresh.len() - keep);
        for (slots, policy) in [(&too_old[..], false), (dropped, true)] {
            if let (Some(first), Some(last)) = (slots.first(), slots.last()) {
                self.out.push(Action::Missed {
                    job: job.clone(),
                    first: first.0,
                    last: last.0,
                    count: slots.len() as u64,
                    policy,
                });
            }
        }
        for &(slot, epoch) in run {
            self.out.push(late_fire(job, slot, epoch, true, idx));
        }
    }

    /// Slot `slot` that [`Action::Fire`] asked for was skipped by the job's overlap
    /// policy. When it is the latest slot of this node's current stretch, the stretch
    /// (for duplicate detection) ends before it; the returned record says so. A skipped
    /// slot inside the stretch (later slots ran) stays in it: a record cannot show a hole,
    /// and ending the stretch there would hide runs that happened. The node runtime keeps
    /// the published record as it is, so no node runs the skipped slot later.
    pub fn skipped_by_overlap(&mut self, name: &JobId, slot: UnixMillis) -> Option<FireRecord> {
        let idx = *self.index.get(name)?;
        let j = self.jobs[idx].as_mut()?;
        let latest = j.tenure().is_some_and(|t| t.last == slot);
        let record = if latest { j.retract(slot) } else { None };
        j.break_range();
        record
    }

    /// The highest slot known to be accounted for, or the registration time if none is.
    pub fn cursor(&self, name: &JobId) -> Option<UnixMillis> {
        let idx = *self.index.get(name)?;
        self.jobs[idx].as_ref().map(|j| j.cursor)
    }

    /// A new view of the cluster at `now`. Jobs whose owner changed start or stop here.
    pub fn set_view(&mut self, now: UnixMillis, view: View) {
        let had_quorum = self.has_quorum();
        let old = std::mem::replace(&mut self.view, view);
        let heard_first =
            self.lonely_until.is_some() && self.view.alive.iter().any(|n| *n != self.me);
        if heard_first {
            self.lonely_until = None;
        }
        // The owner before this change, for every job whose owner changed.
        let mut changed: BTreeMap<usize, Option<NodeId>> = BTreeMap::new();
        for gone in old.members.difference(&self.view.members) {
            for idx in self.owners.leave(gone) {
                changed.entry(idx).or_insert_with(|| Some(gone.clone()));
            }
        }
        let added: Vec<NodeId> = self
            .view
            .members
            .difference(&old.members)
            .cloned()
            .collect();
        // A member's new weight or tags move jobs as a join or a leave would.
        let placed = self
            .view
            .members
            .iter()
            .filter(|m| added.contains(m) || old.placement(m) != self.view.placement(m));
        for m in placed {
            for (idx, prev) in self.owners.upsert(m, self.view.placement(m)) {
                changed.entry(idx).or_insert(prev);
            }
        }
        self.ownership_changes += changed.len() as u64;
        if self.leaving {
            return;
        }
        let quorum = self.has_quorum();
        if had_quorum != quorum {
            // Lost: stop everything. Regained (a partition healed): the other side may have
            // been running our jobs; give it the handoff delay to get its records to us.
            let from = now.saturating_add(self.config.handoff_delay);
            for idx in 0..self.jobs.len() {
                if self.jobs[idx].is_none() {
                    continue;
                }
                let mine = if quorum && self.is_mine(idx) {
                    Mine::From(from)
                } else {
                    Mine::No
                };
                self.set_mine(idx, mine);
            }
            return;
        }
        // A member we had not seen may have been running, without knowing us, the jobs it
        // would own if we were not here: we joined a running cluster, or a partition
        // healed. Give it the handoff delay to see us and get its last records to us.
        if !added.is_empty() {
            let handoff_end = now.saturating_add(self.config.handoff_delay);
            for idx in 0..self.jobs.len() {
                let Some(Mine::From(from)) = self.jobs[idx].as_ref().map(|j| j.mine()) else {
                    continue;
                };
                if changed.contains_key(&idx) || from >= handoff_end {
                    continue;
                }
                if self
                    .owners
                    .runner_up(idx)
                    .is_some_and(|r| added.contains(r))
                {
                    self.set_mine(idx, Mine::From(handoff_end));
                }
            }
        }
        // This node just became a member (its clock was verified, or is back within the
        // bound: see `node::skew`) while others are alive: they may not have seen it yet,
        // and run what it now owns. The same delay as a handoff (issue 14: two nodes
        // verified together each saw itself as the only member and both fired).
        let joined = added.contains(&self.me) && self.view.alive.iter().any(|n| *n != self.me);
        for (idx, prev) in changed {
            self.owner_changed(now, idx, prev, joined);
        }
        if heard_first {
            // Timers set for the end of the peer wait move to the startup delay's end.
            for idx in 0..self.jobs.len() {
                if let Some(mine) = self.jobs[idx].as_ref().map(|j| j.mine()) {
                    self.reschedule(idx, mine);
                }
            }
        }
    }

    /// Job `idx`'s owner changed at `now` from `prev`: it starts or stops here.
    fn owner_changed(&mut self, now: UnixMillis, idx: usize, prev: Option<NodeId>, joined: bool) {
        let owner_is_me = self.is_mine(idx);
        let was_mine = self.jobs[idx]
            .as_ref()
            .is_some_and(|j| j.mine() != Mine::No);
        match (owner_is_me, was_mine) {
            (true, false) => {
                // Won from a node still alive in our view: give it time to notice and to
                // get its last record to us.
                let handoff = joined
                    || prev
                        .as_ref()
                        .is_some_and(|p| *p != self.me && self.view.alive.contains(p));
                let from = if handoff {
                    now.saturating_add(self.config.handoff_delay)
                } else {
                    now.saturating_add(self.config.dead_takeover_delay)
                };
                self.set_mine(idx, Mine::From(from));
            }
            (false, true) => self.set_mine(idx, Mine::No),
            _ => {}
        }
    }

    /// Jobs no live member may own (their constraints match nobody's tags) while the view
    /// has members, each with the node that would own it without its constraints (the one
    /// that reports it), in name order.
    pub fn unplaceable(&self) -> Vec<(&JobSpec, Option<&NodeId>)> {
        if self.view.members.is_empty() {
            return Vec::new();
        }
        self.index
            .values()
            .filter(|&&i| self.owners.is_constrained(i) && self.owners.owner_of(i).is_none())
            .filter_map(|&i| Some((&self.jobs[i].as_ref()?.spec, self.owners.stand_in(i))))
            .collect()
    }

    /// Nothing fires before this: the startup delay, or while no other node was heard of,
    /// the peer wait.
    fn start_at(&self) -> UnixMillis {
        if self.suspended {
            return UnixMillis(i64::MAX);
        }
        self.lonely_until
            .map_or(self.not_before, |t| t.max(self.not_before))
    }

    fn is_mine(&self, idx: usize) -> bool {
        if self.config.broken_ownership_for_tests {
            return !self.view.members.is_empty();
        }
        self.has_quorum() && self.owners.owner_of(idx) == Some(&self.me)
    }

    /// False in quorum mode while the view has fewer members than
    /// [`PlannerConfig::min_members`]: then nothing fires.
    pub fn has_quorum(&self) -> bool {
        self.view.members.len() >= self.config.min_members
    }

    /// The node that would own `name` if its owner left: the one that takes over after a
    /// crash, so the one a fire record must reach first.
    pub fn runner_up(&self, name: &JobId) -> Option<&NodeId> {
        let idx = *self.index.get(name)?;
        self.owners.runner_up(idx)
    }

    /// Stop firing for good: this node is leaving the cluster.
    pub fn leave(&mut self) {
        self.leaving = true;
        for idx in 0..self.jobs.len() {
            if self.jobs[idx].is_some() {
                self.set_mine(idx, Mine::No);
            }
        }
    }

    /// True once [`Planner::leave`] was called.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// When [`Planner::poll`] next has work, if ever. Computes the next slot of the jobs the
    /// last poll fired, so call it after carrying out that poll's actions.
    pub fn next_deadline(&mut self) -> Option<UnixMillis> {
        for idx in std::mem::take(&mut self.deferred) {
            if let Some(mine) = self.jobs[idx].as_ref().map(|j| j.mine()) {
                self.reschedule(idx, mine);
            }
        }
        self.timers.first().map(|&(t, _)| t)
    }

    /// Fires what is due at `now`. A job with several due slots may fire only its first on
    /// this call: [`Planner::next_deadline`] then returns a time at or before `now`, and the
    /// next call fires the rest. Calling early is harmless.
    pub fn poll(&mut self, now: UnixMillis) {
        self.apply_near(now);
        while let Some(&(t, idx)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            if let Some(j) = self.jobs[idx].as_mut() {
                j.take_timer();
            }
            self.run_due(idx, now);
        }
    }

    /// Takes the actions produced so far, in order.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Action> {
        self.out.drain(..)
    }

    fn set_mine(&mut self, idx: usize, mine: Mine) {
        if let Some(j) = self.jobs[idx].as_mut() {
            if mine == Mine::No || j.mine() == Mine::No {
                // Lost or gained: the next run, if any, starts a new epoch.
                j.end_tenure();
            }
            j.set_mine(mine);
        }
        self.reschedule(idx, mine);
    }

    /// Puts the job's timer where its next piece of work is: the handoff (or startup) time,
    /// or the first slot after the cursor.
    fn reschedule(&mut self, idx: usize, mine: Mine) {
        let start_at = self.start_at();
        let Some(j) = self.jobs[idx].as_mut() else {
            return;
        };
        if let Some(t) = j.take_timer() {
            self.timers.remove(&(t, idx));
        }
        let Mine::From(from) = mine else {
            return;
        };
        if j.paused {
            return;
        }
        let Some(next) = j.next_slot() else {
            return;
        };
        let at = next.max(from).max(start_at);
        j.set_timer(at);
        self.timers.insert((at, idx));
    }

    /// Fires the slots of job `idx` in (cursor, now] per its misfire policy.
    fn run_due(&mut self, idx: usize, now: UnixMillis) {
        let threshold =
            i64::try_from(self.config.misfire_threshold.as_millis()).unwrap_or(i64::MAX);
        let start_at = self.start_at();
        let Some(j) = self.jobs[idx].as_mut() else {
            return;
        };
        if !matches!(j.mine(), Mine::From(t) if t <= now) || now < start_at {
            // Woken early (handoff pending): the timer was set for later.
            let mine = j.mine();
            self.reschedule(idx, mine);
            return;
        }
        let window_start = now.saturating_sub(j.spec.catch_up_window);
        let name = j.spec.name.clone();
        let mut slot = j.next_slot();

        // Slots older than the catch-up window: skipped, counted, reported.
        let mut too_old: Option<(UnixMillis, UnixMillis, u64)> = None;
        while let Some(s) = slot {
            if s >= window_start || s > now {
                break;
            }
            let e = too_old.get_or_insert((s, s, 0));
            e.1 = s;
            e.2 += 1;
            if e.2 >= MAX_COUNTED_MISSES {
                // Jump the rest without counting; everything before the window is done.
                let before_window = window_start.saturating_sub(Duration::from_millis(1));
                e.1 = e.1.max(before_window.min(now));
                slot = j.spec.schedule.next_after(before_window);
                break;
            }
            slot = j.spec.schedule.next_after(s);
        }
        if let Some((first, last, count)) = too_old {
            j.break_range();
            self.out.push(Action::Missed {
                job: name.clone(),
                first,
                last,
                count,
                policy: false,
            });
            j.account(last);
        }

        let is_late = |s: UnixMillis| now.millis_since(s) > threshold;
        // The common case: the next slot is due and on time. Fire it now and leave finding
        // the slot after it (a cron evaluation) to `next_deadline`, after the runtime has
        // started the runs: with a thousand jobs due at once this keeps it off their path.
        // A further due slot is also on time, so firing slots one by one changes nothing.
        if let Some(s) = slot
            && s <= now
            && !is_late(s)
        {
            let (epoch, first) = j.begin_run(s);
            self.out.push(Action::Fire {
                job: name.clone(),
                slot: s,
                fire_id: FireId::of(&name, s),
                late: false,
                epoch,
                repair: false,
                index: idx,
            });
            self.out.push(Action::PublishRecord {
                job: name,
                record: FireRecord {
                    slot: s,
                    epoch,
                    first,
                    follows: j.follows(),
                },
            });
            j.account(s);
            self.deferred.push(idx);
            return;
        }

        // Slots inside the window and due: on time, or late (misfires).
        let mut due: Vec<UnixMillis> = Vec::new();
        while let Some(s) = slot {
            if s > now {
                break;
            }
            due.push(s);
            slot = j.spec.schedule.next_after(s);
        }
        let fire: Vec<UnixMillis> = match j.spec.misfire {
            Misfire::All => due.clone(),
            Misfire::Once => {
                // On-time slots run; late ones collapse to the latest of them.
                let latest_late = due.iter().rev().find(|&&s| is_late(s)).copied();
                due.iter()
                    .copied()
                    .filter(|&s| !is_late(s) || Some(s) == latest_late)
                    .collect()
            }
            Misfire::Skip => due.iter().copied().filter(|&s| !is_late(s)).collect(),
        };
        // `fire` is a sorted subsequence of `due`: walk both once.
        let mut dropped: Vec<UnixMillis> = Vec::new();
        let mut kept = fire.iter().peekable();
        for &s in &due {
            if kept.peek() == Some(&&s) {
                kept.next();
            } else {
                dropped.push(s);
            }
        }
        if let (Some(&first), Some(&last)) = (dropped.first(), dropped.last()) {
            // Runs around the dropped slots cannot share one range.
            j.break_range();
            self.out.push(Action::Missed {
                job: name.clone(),
                first,
                last,
                count: dropped.len() as u64,
                policy: true,
            });
        }
        let mut record = None;
        for &s in &fire {
            let (epoch, first) = j.begin_run(s);
            self.out.push(Action::Fire {
                job: name.clone(),
                slot: s,
                fire_id: FireId::of(&name, s),
                late: is_late(s),
                epoch,
                repair: false,
                index: idx,
            });
            record = Some(FireRecord {
                slot: s,
                epoch,
                first,
                follows: j.follows(),
            });
        }
        if let Some(&last) = due.last() {
            j.account(last);
            // `slot` is the first slot after `last`: remember it for `reschedule`.
            j.remember_next_slot(slot);
        }
        if let Some(record) = record {
            self.out.push(Action::PublishRecord { job: name, record });
        }
        let mine = j.mine();
        self.reschedule(idx, mine);
    }
}

/// A late run of `slot` (a catch-up, or a repair after a lost quorum when `repair`).
fn late_fire(job: &JobId, slot: UnixMillis, epoch: u64, repair: bool, index: usize) -> Action {
    Action::Fire {
        job: job.clone(),
        slot,
        fire_id: FireId::of(job, slot),
        late: true,
        epoch,
        repair,
        index,
    }
}
