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
use super::schedule::Schedule;
use super::types::{FireId, FireRecord, Follows, JobId, NodeId, UnixMillis};

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
}

impl View {
    /// A view where every given node is alive and none is leaving.
    pub fn of(nodes: impl IntoIterator<Item = NodeId>) -> View {
        let members: BTreeSet<NodeId> = nodes.into_iter().collect();
        View {
            alive: members.clone(),
            members,
        }
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

/// Records further than this in the future are refused (see `Planner::observe_record`).
pub const MAX_RECORD_AHEAD: Duration = Duration::from_secs(600);

/// Errors from planner inputs. The planner's state is unchanged when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlannerError {
    /// A job with this name is already registered.
    #[error("job `{0}` is already registered")]
    DuplicateJob(JobId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mine {
    /// Another node owns it (or nobody).
    No,
    /// Ours from this time on (handoff delay or startup delay pending).
    From(UnixMillis),
}

/// A stretch of slots this node fired under one epoch.
#[derive(Clone, Copy, Debug)]
struct Tenure {
    epoch: u64,
    first: UnixMillis,
    last: UnixMillis,
}

/// What the records of a job show (kept for jobs not registered here too, and applied if
/// they are added).
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    /// The highest slot this node accounted for: its own records (any generation), or
    /// slots it fired or skipped.
    own: Option<UnixMillis>,
    /// The highest record seen from other nodes.
    others: Option<UnixMillis>,
    /// [`super::owner::node_key`] of the node whose record holds `others`; 0 when several
    /// nodes' records hold it.
    others_by: u64,
    /// The highest epoch in any record of the job (ours included).
    epoch_seen: u64,
    /// The highest epoch in another node's record of the job.
    epoch_others: u64,
}

impl Seen {
    /// `slot` was accounted for by this node.
    fn own_slot(&mut self, slot: UnixMillis) {
        self.own = Some(self.own.map_or(slot, |s| s.max(slot)));
    }

    /// A record of `slot` under `epoch`, from this node, or from the other node whose
    /// [`super::owner::node_key`] is `by`.
    fn record(&mut self, slot: UnixMillis, epoch: u64, by: Option<u64>) {
        self.epoch_seen = self.epoch_seen.max(epoch);
        let Some(by) = by else {
            self.own_slot(slot);
            return;
        };
        self.epoch_others = self.epoch_others.max(epoch);
        match self.others {
            Some(o) if o > slot => {}
            Some(o) if o == slot => {
                if self.others_by != by {
                    self.others_by = 0;
                }
            }
            _ => {
                self.others = Some(slot);
                self.others_by = by;
            }
        }
    }

    /// Where an epoch begun now would begin: after the highest other node's record, when
    /// that is what placed the cursor.
    fn follows(&self) -> Option<Follows> {
        let o = self.others?;
        (self.own.is_none_or(|own| own < o)).then_some(Follows {
            slot: o,
            node: self.others_by,
        })
    }
}

#[derive(Debug)]
struct Job {
    spec: JobSpec,
    /// When the job was registered here, less the startup and handoff delays (see the
    /// module docs).
    registered: UnixMillis,
    /// The slots and epochs the records show.
    seen: Seen,
    /// `max(own, others)` once this node has its own record, else `max(registered,
    /// others)`.
    cursor: UnixMillis,
    /// Memo of `schedule.next_after(cursor)`, keyed by the cursor it was computed for:
    /// cron evaluation dominates `poll` when a thousand jobs are due at once.
    next_memo: Option<(UnixMillis, Option<UnixMillis>)>,
    mine: Mine,
    /// The key of this job's entry in `timers`, if it has one.
    timer: Option<UnixMillis>,
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

impl Job {
    /// The first slot after the cursor.
    fn next_slot(&mut self) -> Option<UnixMillis> {
        match self.next_memo {
            Some((c, next)) if c == self.cursor => next,
            _ => {
                let next = self.spec.schedule.next_after(self.cursor);
                self.next_memo = Some((self.cursor, next));
                next
            }
        }
    }

    /// This node accounted for everything at or before `slot` (fired, skipped, or its own
    /// earlier record).
    fn account(&mut self, slot: UnixMillis) {
        self.seen.own_slot(slot);
        self.update_cursor();
    }

    fn update_cursor(&mut self) {
        let base = self.seen.own.unwrap_or(self.registered);
        self.cursor = self.seen.others.map_or(base, |o| base.max(o));
    }

    /// Ends the current stretch: the next run starts a new epoch.
    fn end_tenure(&mut self) {
        if let Some(t) = self.tenure.take() {
            self.prev_ran = Some(t);
        }
        self.range_broken = false;
    }

    /// The run of `slot` did not happen, nor did the runs after it in its stretch (they
    /// are newer and waited the same way): the stretch ends before it. Returns the record
    /// that says so, or `None` if no stretch holds `slot`.
    fn retract(&mut self, slot: UnixMillis) -> Option<FireRecord> {
        let holds = |t: &Tenure| t.first <= slot && slot <= t.last;
        // The stretch may have ended already (the node lost the job with the quorum).
        let current = self.tenure.as_ref().is_some_and(holds);
        let t = if current {
            self.tenure.as_mut()
        } else {
            self.prev_ran.as_mut().filter(|t| holds(t))
        }?;
        let before = UnixMillis(slot.0.saturating_sub(1));
        t.last = before;
        let record = FireRecord {
            slot: before,
            epoch: t.epoch,
            first: t.first.min(before),
            follows: if current { self.follows } else { None },
        };
        if t.first > before {
            if current {
                self.tenure = None;
            } else {
                self.prev_ran = None;
            }
        }
        Some(record)
    }

    /// A slot was dropped after the stretch's last run: the stretch's range ends there.
    fn break_range(&mut self) {
        if self.tenure.is_some() {
            self.range_broken = true;
        }
    }

    /// This node starts `slot`: its epoch, and the first slot of that epoch. A new epoch
    /// begins when the job was just gained, or another node's record reached the epoch.
    fn begin_run(&mut self, slot: UnixMillis) -> (u64, UnixMillis) {
        match &mut self.tenure {
            Some(t) if t.epoch > self.seen.epoch_others => {
                if self.range_broken {
                    self.prev_ran = Some(*t);
                    self.range_broken = false;
                    t.first = slot;
                }
                t.last = slot;
                (t.epoch, t.first)
            }
            _ => {
                self.end_tenure();
                self.ran_here = true;
                self.follows = self.seen.follows();
                let epoch = self.seen.epoch_seen.saturating_add(1);
                self.seen.epoch_seen = epoch;
                self.tenure = Some(Tenure {
                    epoch,
                    first: slot,
                    last: slot,
                });
                (epoch, slot)
            }
        }
    }

    /// Slots in `[first, last]` this node ran too (its current and previous stretch), not
    /// reported yet: `(first, last, count)`.
    fn overlap_with(
        &mut self,
        first: UnixMillis,
        last: UnixMillis,
    ) -> Option<(UnixMillis, UnixMillis, u64)> {
        let ours = [self.tenure, self.prev_ran].map(|t| t.map(|t| (t.first, t.last)));
        let mut found: Option<(UnixMillis, UnixMillis, u64)> = None;
        for (a, b) in ours.into_iter().flatten() {
            let lo = a
                .max(first)
                .max(UnixMillis(self.dups_counted.0.saturating_add(1)));
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
            self.dups_counted = self.dups_counted.max(last);
        }
        found
    }
}

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
    view: View,
    jobs: Vec<Option<Job>>,
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
    /// Parsed cron schedules by (text, timezone), shared between jobs.
    schedules: BTreeMap<(String, &'static str), Schedule>,
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
            None => super::owner::owner(name, &self.view.members).cloned(),
        }
    }

    /// True if this node currently fires `name` (owned, handoff complete).
    pub fn fires(&self, name: &JobId, now: UnixMillis) -> bool {
        self.index.get(name).is_some_and(
            |&i| matches!(self.jobs[i].as_ref().map(|j| j.mine), Some(Mine::From(t)) if t <= now),
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
            self.out.push(Action::Fire {
                job: job.clone(),
                slot,
                fire_id: FireId::of(job, slot),
                late: true,
                epoch,
                repair: true,
                index: idx,
            });
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
        let latest = j.tenure.is_some_and(|t| t.last == slot);
        let record = if latest { j.retract(slot) } else { None };
        j.break_range();
        record
    }

    /// The highest slot known to be accounted for, or the registration time if none is.
    pub fn cursor(&self, name: &JobId) -> Option<UnixMillis> {
        let idx = *self.index.get(name)?;
        self.jobs[idx].as_ref().map(|j| j.cursor)
    }

    /// Room for `additional` more jobs without reallocating.
    pub fn reserve(&mut self, additional: usize) {
        self.jobs.reserve_exact(additional);
        self.owners.reserve(additional);
    }

    /// Registers a job at `now`. Slots at or before `now` (or a known record) never fire.
    pub fn add_job(&mut self, now: UnixMillis, mut spec: JobSpec) -> Result<(), PlannerError> {
        if self.index.contains_key(&spec.name) {
            return Err(PlannerError::DuplicateJob(spec.name));
        }
        // Jobs with the same cron text and timezone share one parsed schedule (a parsed
        // cron expression is several hundred bytes).
        if let Schedule::Cron(_) = spec.schedule {
            let key = (spec.schedule_text.clone(), spec.timezone.name());
            match self.schedules.get(&key) {
                Some(shared) => spec.schedule = shared.clone(),
                None => {
                    self.schedules.insert(key, spec.schedule.clone());
                }
            }
        }
        let idx = self.free.pop().unwrap_or(self.jobs.len());
        let seen = self.stray_records.remove(&spec.name).unwrap_or_default();
        self.owners.set_job(idx, &spec.name);
        self.index.insert(spec.name.clone(), idx);
        let lookback = self.config.startup_delay + self.config.handoff_delay;
        let mut job = Job {
            spec,
            registered: now.saturating_sub(lookback),
            seen,
            cursor: now,
            next_memo: None,
            mine: Mine::No,
            timer: None,
            tenure: None,
            prev_ran: None,
            follows: None,
            dups_counted: UnixMillis::MIN,
            range_broken: false,
            ran_here: false,
        };
        job.update_cursor();
        if idx == self.jobs.len() {
            self.jobs.push(Some(job));
        } else {
            self.jobs[idx] = Some(job);
        }
        if !self.leaving && self.is_mine(idx) {
            // A new job has no previous owner to hand over from.
            self.set_mine(idx, Mine::From(now));
        }
        Ok(())
    }

    /// Unregisters a job; returns whether it was registered.
    pub fn remove_job(&mut self, name: &JobId) -> bool {
        let Some(idx) = self.index.remove(name) else {
            return false;
        };
        self.set_mine(idx, Mine::No);
        self.owners.clear_job(idx);
        self.abandoned.remove(name);
        self.jobs[idx] = None;
        self.free.push(idx);
        true
    }

    /// A fire record seen at `now`: node `from` (any generation, ourselves included)
    /// started `record.slot` of `job`. Slots at or before it will not fire here. Slots it
    /// shows `from` ran that this node ran too come out as [`Action::Duplicate`].
    ///
    /// A record more than [`MAX_RECORD_AHEAD`] in the future is refused (the return value
    /// says whether it was taken): a node with a wild clock could publish one and silence
    /// the job cluster-wide. Another node's record older than the job's registration here
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
        if slot > now.saturating_add(MAX_RECORD_AHEAD) {
            return false;
        }
        let ours = from == &self.me;
        let by = (!ours).then(|| super::owner::node_key(from.as_str()).max(1));
        let Some(&idx) = self.index.get(job) else {
            let e = self.stray_records.entry(job.clone()).or_default();
            e.record(slot, record.epoch, by);
            return true;
        };
        if let Some(f) = record.follows
            && f.node == self.me_key
            && !ours
            && self.abandoned.contains_key(job)
        {
            self.repair(now, job, idx, f.slot);
        }
        let j = self.jobs[idx].as_mut().expect("indexed job exists");
        let before = j.cursor;
        j.seen.record(slot, record.epoch, by);
        j.update_cursor();
        if ours {
            // What an earlier generation of this node ran, to recognise duplicates of it.
            // Echoes of this planner's own records (possibly arriving after it retracted
            // a run) are not that.
            if !j.ran_here && j.prev_ran.is_none_or(|t| t.last < slot) {
                j.prev_ran = Some(Tenure {
                    epoch: record.epoch,
                    first: record.first,
                    last: slot,
                });
            }
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
            let mine = j.mine;
            self.reschedule(idx, mine);
        }
        true
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
        for new in &added {
            let before: Vec<(usize, Option<NodeId>)> = self.owners.join_with_previous(new);
            for (idx, prev) in before {
                changed.entry(idx).or_insert(prev);
            }
        }
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
                let Some(Mine::From(from)) = self.jobs[idx].as_ref().map(|j| j.mine) else {
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
        for (idx, prev) in changed {
            let owner_is_me = self.is_mine(idx);
            let was_mine = self.jobs[idx].as_ref().is_some_and(|j| j.mine != Mine::No);
            match (owner_is_me, was_mine) {
                (true, false) => {
                    // Won from a node still alive in our view: give it time to notice and
                    // to get its last record to us.
                    let handoff = prev
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
        if heard_first {
            // Timers set for the end of the peer wait move to the startup delay's end.
            for idx in 0..self.jobs.len() {
                if let Some(mine) = self.jobs[idx].as_ref().map(|j| j.mine) {
                    self.reschedule(idx, mine);
                }
            }
        }
    }

    /// Nothing fires before this: the startup delay, or while no other node was heard of,
    /// the peer wait.
    fn start_at(&self) -> UnixMillis {
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
            if let Some(mine) = self.jobs[idx].as_ref().map(|j| j.mine) {
                self.reschedule(idx, mine);
            }
        }
        self.timers.first().map(|&(t, _)| t)
    }

    /// Fires what is due at `now`. A job with several due slots may fire only its first on
    /// this call: [`Planner::next_deadline`] then returns a time at or before `now`, and the
    /// next call fires the rest. Calling early is harmless.
    pub fn poll(&mut self, now: UnixMillis) {
        while let Some(&(t, idx)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            if let Some(j) = self.jobs[idx].as_mut() {
                j.timer = None;
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
            if mine == Mine::No || j.mine == Mine::No {
                // Lost or gained: the next run, if any, starts a new epoch.
                j.end_tenure();
            }
            j.mine = mine;
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
        if let Some(t) = j.timer.take() {
            self.timers.remove(&(t, idx));
        }
        let Mine::From(from) = mine else {
            return;
        };
        let Some(next) = j.next_slot() else {
            return;
        };
        let at = next.max(from).max(start_at);
        j.timer = Some(at);
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
        if !matches!(j.mine, Mine::From(t) if t <= now) || now < start_at {
            // Woken early (handoff pending): the timer was set for later.
            let mine = j.mine;
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
                    follows: j.follows,
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
                follows: j.follows,
            });
        }
        if let Some(&last) = due.last() {
            j.account(last);
            // `slot` is the first slot after `last`: remember it for `reschedule`.
            j.next_memo = Some((j.cursor, slot));
        }
        if let Some(record) = record {
            self.out.push(Action::PublishRecord { job: name, record });
        }
        let mine = j.mine;
        self.reschedule(idx, mine);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::job::{ExecSpec, JobSpec};
    use crate::core::schedule::Schedule;

    fn spec(name: &str, schedule: &str, misfire: Misfire) -> JobSpec {
        JobSpec {
            name: JobId::new(name),
            schedule: Schedule::parse(schedule, chrono_tz::Tz::UTC).unwrap(),
            schedule_text: schedule.into(),
            timezone: chrono_tz::Tz::UTC,
            misfire,
            catch_up_window: Duration::from_secs(60),
            overlap: crate::core::job::Overlap::Forbid,
            exec: ExecSpec::default(),
        }
    }

    fn cfg() -> PlannerConfig {
        PlannerConfig {
            handoff_delay: Duration::from_millis(500),
            misfire_threshold: Duration::from_millis(1500),
            startup_delay: Duration::ZERO,
            min_members: 0,
            peer_wait: Duration::ZERO,
            dead_takeover_delay: Duration::ZERO,
            broken_ownership_for_tests: false,
        }
    }

    /// Polls at `now` until nothing more is due, as the runtime's loop does.
    fn poll_all(p: &mut Planner, now: UnixMillis) {
        p.poll(now);
        while p.next_deadline().is_some_and(|d| d <= now) {
            p.poll(now);
        }
    }

    fn fired(p: &mut Planner) -> Vec<(String, i64)> {
        p.drain()
            .filter_map(|a| match a {
                Action::Fire { job, slot, .. } => Some((job.to_string(), slot.0)),
                _ => None,
            })
            .collect()
    }

    fn ids(names: &[&str]) -> Vec<NodeId> {
        names.iter().map(NodeId::new).collect()
    }

    /// A job name that `owner` owns among `members`.
    fn job_owned_by(owner: &str, members: &[&str]) -> String {
        let m = ids(members);
        (0..)
            .map(|i| format!("job-{i}"))
            .find(|j| {
                crate::core::owner::owner(&JobId::new(j), &m)
                    .unwrap()
                    .as_str()
                    == owner
            })
            .unwrap()
    }

    #[test]
    fn a_sole_member_fires_every_slot_once() {
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
            .unwrap();
        let mut all = Vec::new();
        let mut now = UnixMillis(0);
        while now.0 < 5_000 {
            now = p.next_deadline().unwrap();
            poll_all(&mut p, now);
            all.extend(fired(&mut p));
        }
        let slots: Vec<i64> = all.iter().map(|(_, s)| *s).collect();
        // Slot 0 is inside the registration lookback (startup + handoff delay).
        assert_eq!(slots, [0, 1_000, 2_000, 3_000, 4_000, 5_000]);
    }

    #[test]
    fn nothing_fires_during_the_startup_delay() {
        let c = PlannerConfig {
            startup_delay: Duration::from_millis(2_500),
            ..cfg()
        };
        let mut p = Planner::new(NodeId::new("a"), c, UnixMillis(10_000));
        p.set_view(UnixMillis(10_000), View::of(ids(&["a"])));
        p.add_job(UnixMillis(10_000), spec("j", "@every 1s", Misfire::All))
            .unwrap();
        assert_eq!(p.next_deadline(), Some(UnixMillis(12_500)));
        poll_all(&mut p, UnixMillis(12_000));
        assert!(fired(&mut p).is_empty());
        // At the end of the delay the slots it held back are caught up, from the
        // registration lookback (startup + handoff delay = 3 s) on.
        poll_all(&mut p, UnixMillis(12_500));
        let slots: Vec<i64> = fired(&mut p).into_iter().map(|f| f.1).collect();
        assert_eq!(slots, [8_000, 9_000, 10_000, 11_000, 12_000]);
    }

    #[test]
    fn a_node_expecting_peers_waits_to_hear_one_then_fires_alone_after_the_peer_wait() {
        let c = PlannerConfig {
            startup_delay: Duration::from_millis(1_000),
            peer_wait: Duration::from_millis(5_000),
            ..cfg()
        };
        // Hears a peer at 2 s: fires at once what it owns (nothing held back longer).
        let job = job_owned_by("a", &["a", "b"]);
        let mut p = Planner::new(NodeId::new("a"), c.clone(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
            .unwrap();
        assert_eq!(p.next_deadline(), Some(UnixMillis(5_000)));
        poll_all(&mut p, UnixMillis(1_500));
        assert!(fired(&mut p).is_empty(), "alone inside the peer wait");
        p.set_view(UnixMillis(2_000), View::of(ids(&["a", "b"])));
        // A job it keeps when b appears waits the handoff delay (b may have been running it
        // alone), not the rest of the peer wait; then it catches up.
        assert_eq!(p.next_deadline(), Some(UnixMillis(2_500)));
        poll_all(&mut p, UnixMillis(2_500));
        let slots: Vec<i64> = fired(&mut p).into_iter().map(|f| f.1).collect();
        assert_eq!(slots.last(), Some(&2_000), "{slots:?}");
        // Hears nobody: fires alone once the peer wait is over.
        let mut p = Planner::new(NodeId::new("a"), c, UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
            .unwrap();
        poll_all(&mut p, UnixMillis(4_999));
        assert!(fired(&mut p).is_empty());
        poll_all(&mut p, UnixMillis(5_000));
        let slots: Vec<i64> = fired(&mut p).into_iter().map(|f| f.1).collect();
        assert_eq!(slots.last(), Some(&5_000), "{slots:?}");
    }

    #[test]
    fn a_job_owned_elsewhere_does_not_fire_here() {
        let job = job_owned_by("b", &["a", "b"]);
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a", "b"])));
        p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
            .unwrap();
        assert_eq!(p.next_deadline(), None);
        assert_eq!(p.owner_of(&JobId::new(&job)), Some(NodeId::new("b")));
    }

    #[test]
    fn takeover_never_refires_a_recorded_slot_and_catches_up_a_missed_one() {
        let job = job_owned_by("b", &["a", "b"]);
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a", "b"])));
        p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
            .unwrap();
        // b ran slots 1..=5 and we saw its records.
        for s in 1..=5 {
            p.observe_record(
                UnixMillis(0),
                &JobId::new(&job),
                FireRecord::single(UnixMillis(s * 1_000), 1),
                &NodeId::new("b"),
            );
        }
        // b crashes after starting slot 5; we notice at 7.2 s.
        p.set_view(UnixMillis(7_200), View::of(ids(&["a"])));
        // Won from a dead node: at once.
        assert_eq!(p.next_deadline(), Some(UnixMillis(7_200)));
        poll_all(&mut p, UnixMillis(7_200));
        let actions: Vec<Action> = p.drain().collect();
        let fires: Vec<i64> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Fire { slot, .. } => Some(slot.0),
                _ => None,
            })
            .collect();
        assert_eq!(
            fires,
            [6_000, 7_000],
            "slot 5 was recorded; 6 and 7 were missed"
        );
        // The new owner's epoch is above b's, and its record says where the epoch began.
        assert!(actions.contains(&Action::PublishRecord {
            job: JobId::new(&job),
            record: FireRecord {
                slot: UnixMillis(7_000),
                epoch: 2,
                first: UnixMillis(6_000),
                follows: Some(Follows {
                    slot: UnixMillis(5_000),
                    node: super::super::owner::node_key("b"),
                }),
            }
        }));
    }

    fn epochs(actions: &[Action]) -> Vec<(i64, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Fire { slot, epoch, .. } => Some((slot.0, *epoch)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_epoch_grows_with_every_ownership_change_and_stays_while_the_owner_does() {
        let job = job_owned_by("a", &["a", "b"]);
        let id = JobId::new(&job);
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
            .unwrap();
        poll_all(&mut p, UnixMillis(2_000));
        let first: Vec<Action> = p.drain().collect();
        assert_eq!(epochs(&first), [(0, 1), (1_000, 1), (2_000, 1)]);
        // b joins and is the runner-up: a keeps the job (after the handoff delay), same epoch.
        p.set_view(UnixMillis(2_100), View::of(ids(&["a", "b"])));
        poll_all(&mut p, UnixMillis(3_000));
        assert_eq!(epochs(&p.drain().collect::<Vec<_>>()), [(3_000, 1)]);
        // A partition: b ran 4..=6 under epoch 2 while a also ran 4 and 5.
        poll_all(&mut p, UnixMillis(5_000));
        assert_eq!(
            epochs(&p.drain().collect::<Vec<_>>()),
            [(4_000, 1), (5_000, 1)]
        );
        p.observe_record(
            UnixMillis(6_100),
            &id,
            FireRecord {
                slot: UnixMillis(6_000),
                epoch: 2,
                first: UnixMillis(4_000),
                follows: None,
            },
            &NodeId::new("b"),
        );
        let dup: Vec<Action> = p.drain().collect();
        assert_eq!(
            dup,
            [Action::Duplicate {
                job: id.clone(),
                other: NodeId::new("b"),
                first: UnixMillis(4_000),
                last: UnixMillis(5_000),
                count: 2,
            }],
            "both ran 4 and 5"
        );
        // Seeing the same record again reports nothing new.
        p.observe_record(
            UnixMillis(6_200),
            &id,
            FireRecord {
                slot: UnixMillis(6_000),
                epoch: 2,
                first: UnixMillis(4_000),
                follows: None,
            },
            &NodeId::new("b"),
        );
        assert_eq!(p.drain().count(), 0);
        // a goes on past b's record under an epoch above b's: a stale b is fenced off.
        poll_all(&mut p, UnixMillis(7_000));
        assert_eq!(epochs(&p.drain().collect::<Vec<_>>()), [(7_000, 3)]);
    }

    #[test]
    fn an_abandoned_run_is_retracted_and_not_reported_as_a_duplicate() {
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        let id = JobId::new("j");
        p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
            .unwrap();
        poll_all(&mut p, UnixMillis(3_000));
        p.drain().count();
        // The run of slot 3 was never started (quorum lost before its record went out).
        let r = p.abandon(&id, UnixMillis(3_000)).unwrap();
        assert_eq!(
            (r.slot, r.first),
            (UnixMillis(2_999), UnixMillis(0)),
            "the corrected record ends before the abandoned slot"
        );
        // Slot 2 was abandoned too (it had not started either): the stretch ends before it.
        let r = p.abandon(&id, UnixMillis(2_000)).unwrap();
        assert_eq!(r.slot, UnixMillis(1_999));
        assert_eq!(p.abandon(&id, UnixMillis(3_000)), None, "already retracted");
        // The majority side ran slots 2 and 3: not duplicates. Slot 1, which both ran, is.
        p.observe_record(
            UnixMillis(3_500),
            &id,
            FireRecord {
                slot: UnixMillis(3_000),
                epoch: 2,
                first: UnixMillis(1_000),
                follows: None,
            },
            &NodeId::new("b"),
        );
        let dups: Vec<Action> = p
            .drain()
            .filter(|a| matches!(a, Action::Duplicate { .. }))
            .collect();
        assert_eq!(
            dups,
            [Action::Duplicate {
                job: id,
                other: NodeId::new("b"),
                first: UnixMillis(1_000),
                last: UnixMillis(1_000),
                count: 1,
            }]
        );
    }

    /// Fires slots 1..=3 of `j` (`misfire`) on a single-node planner `a`, then abandons
    /// slots 2 and 3 (quorum lost before a quorum held their records).
    fn abandoned_2_and_3(misfire: Misfire) -> Planner {
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        let id = JobId::new("j");
        p.add_job(UnixMillis(0), spec("j", "@every 1s", misfire))
            .unwrap();
        poll_all(&mut p, UnixMillis(3_000));
        p.drain().count();
        p.abandon(&id, UnixMillis(3_000));
        p.abandon(&id, UnixMillis(2_000));
        p
    }

    /// A record of `b`'s epoch 2, which began after `follows_slot` of node `follows_node`.
    fn taker_record(slot: i64, first: i64, follows_slot: i64, follows_node: &str) -> FireRecord {
        FireRecord {
            slot: UnixMillis(slot),
            epoch: 2,
            first: UnixMillis(first),
            follows: Some(Follows {
                slot: UnixMillis(follows_slot),
                node: super::super::owner::node_key(follows_node),
            }),
        }
    }

    /// Node `b`'s record of job `j` reaches the planner at `at`.
    fn from_b(p: &mut Planner, at: UnixMillis, record: FireRecord) {
        p.observe_record(at, &JobId::new("j"), record, &NodeId::new("b"));
    }

    fn fires_of(p: &mut Planner) -> Vec<(i64, u64, bool)> {
        p.drain()
            .filter_map(|a| match a {
                Action::Fire {
                    slot,
                    epoch,
                    repair,
                    ..
                } => Some((slot.0, epoch, repair)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn abandoned_runs_whose_records_the_taker_followed_run_late_exactly_once() {
        let mut p = abandoned_2_and_3(Misfire::All);
        // A record of another epoch that began elsewhere says nothing about them.
        from_b(
            &mut p,
            UnixMillis(9_000),
            taker_record(8_000, 4_000, 3_000, "c"),
        );
        assert_eq!(fires_of(&mut p), []);
        // b's epoch began right after a's record of slot 3: b skipped 2 and 3 because of
        // it, so nobody ran them. They run now, under the epoch they were fired with.
        from_b(
            &mut p,
            UnixMillis(9_000),
            taker_record(8_000, 4_000, 3_000, "a"),
        );
        assert_eq!(fires_of(&mut p), [(2_000, 1, true), (3_000, 1, true)]);
        // Once only.
        from_b(
            &mut p,
            UnixMillis(9_500),
            taker_record(9_000, 4_000, 3_000, "a"),
        );
        assert_eq!(fires_of(&mut p), []);
    }

    #[test]
    fn abandoned_runs_the_taker_ran_itself_are_not_repaired() {
        let mut p = abandoned_2_and_3(Misfire::All);
        // b's epoch began after a's record of slot 1 (a's records of 2 and 3 never reached
        // it): b ran 2 and 3.
        from_b(
            &mut p,
            UnixMillis(9_000),
            taker_record(8_000, 2_000, 1_000, "a"),
        );
        assert_eq!(fires_of(&mut p), []);
        // Only slot 2's record reached it: b ran 3, and 2 is repaired.
        let mut p = abandoned_2_and_3(Misfire::All);
        from_b(
            &mut p,
            UnixMillis(9_000),
            taker_record(8_000, 3_000, 2_000, "a"),
        );
        assert_eq!(fires_of(&mut p), [(2_000, 1, true)]);
    }

    #[test]
    fn repairs_follow_the_misfire_policy_and_the_catch_up_window() {
        let id = JobId::new("j");
        let mut p = abandoned_2_and_3(Misfire::Once);
        from_b(
            &mut p,
            UnixMillis(9_000),
            taker_record(8_000, 4_000, 3_000, "a"),
        );
        assert_eq!(
            fires_of(&mut p),
            [(3_000, 1, true)],
            "once: the latest only"
        );
        let mut p = abandoned_2_and_3(Misfire::Skip);
        from_b(
            &mut p,
            UnixMillis(9_000),
            taker_record(8_000, 4_000, 3_000, "a"),
        );
        let actions: Vec<Action> = p.drain().collect();
        assert!(
            actions.contains(&Action::Missed {
                job: id.clone(),
                first: UnixMillis(2_000),
                last: UnixMillis(3_000),
                count: 2,
                policy: true,
            }),
            "{actions:?}"
        );
        assert!(!actions.iter().any(|a| matches!(a, Action::Fire { .. })));
        // Heard of long after the catch-up window: missed, not run.
        let mut p = abandoned_2_and_3(Misfire::All);
        let late = UnixMillis(3_000).saturating_add(Duration::from_secs(3_600));
        from_b(&mut p, late, taker_record(8_000, 4_000, 3_000, "a"));
        let actions: Vec<Action> = p.drain().collect();
        assert!(
            actions.iter().any(|a| matches!(
                a,
                Action::Missed {
                    count: 2,
                    policy: false,
                    ..
                }
            )),
            "{actions:?}"
        );
        assert!(!actions.iter().any(|a| matches!(a, Action::Fire { .. })));
    }

    #[test]
    fn an_epoch_follows_the_one_node_whose_record_placed_the_cursor() {
        let mut s = Seen::default();
        assert_eq!(s.follows(), None);
        s.record(UnixMillis(5_000), 1, Some(7));
        assert_eq!(
            s.follows(),
            Some(Follows {
                slot: UnixMillis(5_000),
                node: 7
            })
        );
        s.record(UnixMillis(4_000), 1, Some(8));
        assert_eq!(
            s.follows().map(|f| f.node),
            Some(7),
            "a lower record changes nothing"
        );
        s.record(UnixMillis(5_000), 2, Some(8));
        assert_eq!(
            s.follows().map(|f| f.node),
            Some(0),
            "two nodes at the same slot: nobody"
        );
        s.record(UnixMillis(6_000), 2, Some(8));
        assert_eq!(s.follows().map(|f| f.node), Some(8));
        s.record(UnixMillis(6_000), 2, None);
        assert_eq!(s.follows(), None, "our own record placed it");
    }

    #[test]
    fn a_slot_skipped_by_the_overlap_policy_is_not_counted_as_a_duplicate() {
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        let id = JobId::new("j");
        p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
            .unwrap();
        poll_all(&mut p, UnixMillis(1_000));
        p.drain().count();
        // Slot 2 came due while slot 1 still ran: skipped (forbid). Slot 3 ran.
        poll_all(&mut p, UnixMillis(2_000));
        p.drain().count();
        let corrected = p.skipped_by_overlap(&id, UnixMillis(2_000));
        assert_eq!(corrected.map(|r| r.slot), Some(UnixMillis(1_999)));
        poll_all(&mut p, UnixMillis(3_000));
        p.drain().count();
        // Another node ran slots 2 and 3: only 3 is a duplicate.
        p.observe_record(
            UnixMillis(3_500),
            &id,
            FireRecord {
                slot: UnixMillis(3_000),
                epoch: 2,
                first: UnixMillis(2_000),
                follows: None,
            },
            &NodeId::new("b"),
        );
        let counts: Vec<(i64, i64, u64)> = p
            .drain()
            .filter_map(|a| match a {
                Action::Duplicate {
                    first, last, count, ..
                } => Some((first.0, last.0, count)),
                _ => None,
            })
            .collect();
        assert_eq!(counts, [(3_000, 3_000, 1)]);
    }

    #[test]
    fn a_skipped_slot_before_slots_that_ran_leaves_the_record_alone() {
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        let id = JobId::new("j");
        p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
            .unwrap();
        // Slots 1 to 3 fired in one burst; 2 was skipped, 3 ran. A corrected record ending
        // before 2 would tell the next owner that 3 never ran.
        poll_all(&mut p, UnixMillis(3_000));
        p.drain().count();
        assert_eq!(p.skipped_by_overlap(&id, UnixMillis(2_000)), None);
        assert_eq!(p.cursor(&id), Some(UnixMillis(3_000)));
    }

    #[test]
    fn quorum_mode_fires_nothing_in_a_minority_and_resumes_after_the_handoff_delay() {
        let mut c = cfg();
        c.min_members = 2;
        c.dead_takeover_delay = Duration::from_millis(700);
        let job = job_owned_by("a", &["a", "b", "c"]);
        let mut p = Planner::new(NodeId::new("a"), c, UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a", "b", "c"])));
        p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
            .unwrap();
        poll_all(&mut p, UnixMillis(1_000));
        assert_eq!(fired(&mut p), [(job.clone(), 0), (job.clone(), 1_000)]);
        // Cut off from b and c: no quorum, nothing fires.
        p.set_view(UnixMillis(1_500), View::of(ids(&["a"])));
        assert!(!p.has_quorum());
        poll_all(&mut p, UnixMillis(4_000));
        assert_eq!(fired(&mut p), []);
        // Healed, and b's record shows the majority ran 2 and 3: a resumes after the
        // handoff delay (500 ms) and runs only what nobody ran.
        p.set_view(UnixMillis(4_100), View::of(ids(&["a", "b", "c"])));
        p.observe_record(
            UnixMillis(4_150),
            &JobId::new(&job),
            FireRecord {
                slot: UnixMillis(3_000),
                epoch: 2,
                first: UnixMillis(2_000),
                follows: None,
            },
            &NodeId::new("b"),
        );
        poll_all(&mut p, UnixMillis(4_500));
        assert_eq!(fired(&mut p), []);
        poll_all(&mut p, UnixMillis(4_600));
        assert_eq!(fired(&mut p), [(job.clone(), 4_000)]);
    }

    #[test]
    fn in_quorum_mode_a_vanished_owners_jobs_move_after_the_takeover_delay() {
        let mut c = cfg();
        c.min_members = 2;
        c.dead_takeover_delay = Duration::from_millis(700);
        // A job b owns, and a takes over when b is gone.
        let job = (0..)
            .map(|i| format!("job-{i}"))
            .find(|j| {
                let id = JobId::new(j);
                crate::core::owner::owner(&id, &ids(&["a", "b", "c"]))
                    .unwrap()
                    .as_str()
                    == "b"
                    && crate::core::owner::owner(&id, &ids(&["a", "c"]))
                        .unwrap()
                        .as_str()
                        == "a"
            })
            .unwrap();
        let mut p = Planner::new(NodeId::new("a"), c, UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a", "b", "c"])));
        p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
            .unwrap();
        // b vanishes (not leaving: gone from the alive set too).
        p.set_view(UnixMillis(1_200), View::of(ids(&["a", "c"])));
        assert_eq!(p.owner_of(&JobId::new(&job)), Some(NodeId::new("a")));
        // Its slots 0 and 1 never ran: caught up once the takeover delay is over.
        assert_eq!(p.next_deadline(), Some(UnixMillis(1_900)));
        assert!(!p.fires(&JobId::new(&job), UnixMillis(1_800)));
        assert!(p.fires(&JobId::new(&job), UnixMillis(1_900)));
    }

    #[test]
    fn a_record_arriving_late_still_prevents_a_refire() {
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
            .unwrap();
        p.observe_record(
            UnixMillis(0),
            &JobId::new("j"),
            FireRecord::single(UnixMillis(3_000), 1),
            &NodeId::new("b"),
        );
        assert_eq!(p.next_deadline(), Some(UnixMillis(4_000)));
    }

    #[test]
    fn a_node_restarted_after_a_crash_catches_up_what_nobody_ran_while_it_was_down() {
        // "a" crashed after starting slot 9 and came back at 10.5 s, before anyone noticed;
        // slot 10 ran nowhere. Its old record reaches it through gossip.
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(10_500));
        p.set_view(UnixMillis(10_500), View::of(ids(&["a"])));
        p.add_job(UnixMillis(10_500), spec("j", "@every 1s", Misfire::All))
            .unwrap();
        assert_eq!(p.next_deadline(), Some(UnixMillis(11_000)));
        // Its own record, from its previous generation.
        assert!(p.observe_record(
            UnixMillis(10_500),
            &JobId::new("j"),
            FireRecord::single(UnixMillis(9_000), 1),
            &NodeId::new("a")
        ));
        poll_all(&mut p, UnixMillis(10_600));
        assert_eq!(fired(&mut p), [("j".into(), 10_000)]);
    }

    #[test]
    fn a_new_job_does_not_fire_slots_from_before_it_existed() {
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        p.add_job(UnixMillis(10_500), spec("j", "@every 1s", Misfire::All))
            .unwrap();
        poll_all(&mut p, UnixMillis(10_600));
        assert!(fired(&mut p).is_empty());
        assert_eq!(p.next_deadline(), Some(UnixMillis(11_000)));
    }

    #[test]
    fn an_old_record_from_another_node_does_not_pull_the_cursor_back() {
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(10_500));
        p.set_view(UnixMillis(10_500), View::of(ids(&["a"])));
        p.add_job(UnixMillis(10_500), spec("j", "@every 1s", Misfire::All))
            .unwrap();
        // "b" ran it long ago; its newer records may still be on their way.
        assert!(p.observe_record(
            UnixMillis(10_500),
            &JobId::new("j"),
            FireRecord::single(UnixMillis(2_000), 1),
            &NodeId::new("b")
        ));
        assert_eq!(p.next_deadline(), Some(UnixMillis(11_000)));
        // A newer record is taken, from anyone.
        assert!(p.observe_record(
            UnixMillis(10_500),
            &JobId::new("j"),
            FireRecord::single(UnixMillis(11_000), 1),
            &NodeId::new("b")
        ));
        assert_eq!(p.next_deadline(), Some(UnixMillis(12_000)));
    }

    #[test]
    fn a_restarted_node_honours_newer_records_whatever_order_they_arrive_in() {
        // "a" left after slot 10 and came back at 11.5 s; "b" ran slot 11 meanwhile.
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(11_500));
        p.set_view(UnixMillis(11_500), View::of(ids(&["a"])));
        p.add_job(UnixMillis(11_500), spec("j", "@every 1s", Misfire::All))
            .unwrap();
        let j = JobId::new("j");
        p.observe_record(
            UnixMillis(11_500),
            &j,
            FireRecord::single(UnixMillis(11_000), 1),
            &NodeId::new("b"),
        );
        p.observe_record(
            UnixMillis(11_500),
            &j,
            FireRecord::single(UnixMillis(10_000), 1),
            &NodeId::new("a"),
        );
        assert_eq!(p.cursor(&j), Some(UnixMillis(11_000)));
        assert_eq!(p.next_deadline(), Some(UnixMillis(12_000)));
    }

    #[test]
    fn a_joiner_runs_a_slot_orphaned_while_another_joiner_held_the_job() {
        // Simulator, `join` seed 53: "c" owned the job and stopped when "b" joined at
        // 19.6 s; "b" was still in its startup delay when "a" joined at 20.5 s and won the
        // job. Slot 20 ran nowhere; "a" must run it although it precedes its registration.
        let c = PlannerConfig {
            startup_delay: Duration::from_millis(1_000),
            handoff_delay: Duration::from_millis(800),
            ..cfg()
        };
        let mut p = Planner::new(NodeId::new("a"), c, UnixMillis(20_500));
        p.set_view(UnixMillis(20_500), View::of(ids(&["a"])));
        p.add_job(UnixMillis(20_500), spec("j", "@every 1s", Misfire::All))
            .unwrap();
        p.observe_record(
            UnixMillis(20_600),
            &JobId::new("j"),
            FireRecord::single(UnixMillis(19_000), 1),
            &NodeId::new("c"),
        );
        poll_all(&mut p, UnixMillis(21_500));
        assert_eq!(fired(&mut p), [("j".into(), 20_000), ("j".into(), 21_000)]);
    }

    #[test]
    fn a_record_from_the_far_future_is_refused() {
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
            .unwrap();
        let year = UnixMillis(365 * 24 * 3_600_000);
        assert!(!p.observe_record(
            UnixMillis(500),
            &JobId::new("j"),
            FireRecord::single(year, 1),
            &NodeId::new("b")
        ));
        assert_eq!(p.next_deadline(), Some(UnixMillis(0)));
    }

    #[test]
    fn a_backlog_longer_than_the_miss_count_is_skipped_in_one_go() {
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
            .unwrap();
        // Down for three days: 259,200 slots, far more than the counting cap.
        let now = UnixMillis(3 * 24 * 3_600_000 + 500);
        poll_all(&mut p, now);
        let actions: Vec<Action> = p.drain().collect();
        let missed: Vec<&Action> = actions
            .iter()
            .filter(|a| matches!(a, Action::Missed { policy: false, .. }))
            .collect();
        assert_eq!(missed.len(), 1, "{missed:?}");
        let fires = actions
            .iter()
            .filter(|a| matches!(a, Action::Fire { .. }))
            .count();
        assert_eq!(fires, 60, "the 60 s catch-up window is run");
    }

    #[test]
    fn records_for_unregistered_jobs_apply_when_they_are_added() {
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        p.observe_record(
            UnixMillis(0),
            &JobId::new("j"),
            FireRecord::single(UnixMillis(9_000), 1),
            &NodeId::new("b"),
        );
        p.add_job(UnixMillis(1_000), spec("j", "@every 1s", Misfire::All))
            .unwrap();
        assert_eq!(p.next_deadline(), Some(UnixMillis(10_000)));
    }

    #[test]
    fn ownership_won_from_a_live_node_waits_for_the_handoff_delay() {
        // "a" joins a cluster where "b" owned the job; "a" wins it.
        let job = job_owned_by("a", &["a", "b"]);
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["b"])));
        p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
            .unwrap();
        p.set_view(UnixMillis(1_900), View::of(ids(&["a", "b"])));
        assert_eq!(p.next_deadline(), Some(UnixMillis(2_400)));
        poll_all(&mut p, UnixMillis(2_000));
        assert!(fired(&mut p).is_empty(), "fired during the handoff delay");
        // b's record for slot 2 arrives during the delay.
        p.observe_record(
            UnixMillis(0),
            &JobId::new(&job),
            FireRecord::single(UnixMillis(2_000), 1),
            &NodeId::new("b"),
        );
        poll_all(&mut p, UnixMillis(2_400));
        assert!(fired(&mut p).is_empty());
        assert_eq!(p.next_deadline(), Some(UnixMillis(3_000)));
        poll_all(&mut p, UnixMillis(3_000));
        assert_eq!(fired(&mut p), [(job.clone(), 3_000)]);
    }

    #[test]
    fn a_joiner_waits_the_handoff_delay_for_jobs_a_peer_it_had_not_seen_was_running() {
        // The runtime starts a planner with a view of itself; the peers show up later.
        let job = job_owned_by("a", &["a", "b"]);
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
            .unwrap();
        assert_eq!(p.next_deadline(), Some(UnixMillis(0)));
        // "b" appears at 1.9 s: it may have been running the job without knowing "a".
        p.set_view(UnixMillis(1_900), View::of(ids(&["a", "b"])));
        p.observe_record(
            UnixMillis(1_900),
            &JobId::new(&job),
            FireRecord::single(UnixMillis(1_000), 1),
            &NodeId::new("b"),
        );
        assert_eq!(p.next_deadline(), Some(UnixMillis(2_400)));
        // A member leaving changes nothing for a job that stays ours.
        p.set_view(UnixMillis(5_000), View::of(ids(&["a"])));
        poll_all(&mut p, UnixMillis(5_000));
        assert_eq!(
            fired(&mut p),
            [
                (job.clone(), 2_000),
                (job.clone(), 3_000),
                (job.clone(), 4_000),
                (job, 5_000)
            ]
        );
    }

    #[test]
    fn ownership_won_from_a_leaving_node_waits_for_the_handoff_delay() {
        let job = job_owned_by("b", &["a", "b"]);
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a", "b"])));
        p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
            .unwrap();
        p.observe_record(
            UnixMillis(0),
            &JobId::new(&job),
            FireRecord::single(UnixMillis(1_000), 1),
            &NodeId::new("b"),
        );
        let leaving = View {
            members: ids(&["a"]).into_iter().collect(),
            alive: ids(&["a", "b"]).into_iter().collect(),
        };
        p.set_view(UnixMillis(1_100), leaving);
        assert_eq!(p.next_deadline(), Some(UnixMillis(2_000)));
        poll_all(&mut p, UnixMillis(1_600));
        assert!(fired(&mut p).is_empty());
        poll_all(&mut p, UnixMillis(2_000));
        assert_eq!(fired(&mut p), [(job, 2_000)]);
    }

    #[test]
    fn lost_ownership_stops_at_once() {
        let job = job_owned_by("b", &["a", "b"]);
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
            .unwrap();
        assert!(p.next_deadline().is_some());
        p.set_view(UnixMillis(500), View::of(ids(&["a", "b"])));
        assert_eq!(p.next_deadline(), None);
        poll_all(&mut p, UnixMillis(5_000));
        assert!(fired(&mut p).is_empty());
    }

    #[test]
    fn leaving_stops_everything() {
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
            .unwrap();
        p.leave();
        assert_eq!(p.next_deadline(), None);
        p.set_view(UnixMillis(10), View::of(ids(&["a"])));
        assert_eq!(p.next_deadline(), None);
    }

    fn takeover_after_gap(misfire: Misfire) -> (Vec<(String, i64)>, Vec<Action>) {
        let job = job_owned_by("b", &["a", "b"]);
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a", "b"])));
        let mut s = spec(&job, "@every 10s", misfire);
        s.catch_up_window = Duration::from_secs(35);
        p.add_job(UnixMillis(0), s).unwrap();
        p.observe_record(
            UnixMillis(0),
            &JobId::new(&job),
            FireRecord::single(UnixMillis(10_000), 1),
            &NodeId::new("b"),
        );
        // b is gone; we notice 100.5 s in. Slots 20..=100 are due; the window reaches
        // back to 65.5 s.
        p.set_view(UnixMillis(100_500), View::of(ids(&["a"])));
        poll_all(&mut p, UnixMillis(100_500));
        let actions: Vec<Action> = p.drain().collect();
        let fires = actions
            .iter()
            .filter_map(|a| match a {
                Action::Fire { job, slot, .. } => Some((job.to_string(), slot.0)),
                _ => None,
            })
            .collect();
        (fires, actions)
    }

    fn missed(actions: &[Action], policy: bool) -> Option<(i64, i64, u64)> {
        actions.iter().find_map(|a| match a {
            Action::Missed {
                first,
                last,
                count,
                policy: p,
                ..
            } if *p == policy => Some((first.0, last.0, *count)),
            _ => None,
        })
    }

    #[test]
    fn misfire_all_runs_every_slot_inside_the_window_and_reports_older_ones() {
        let (fires, actions) = takeover_after_gap(Misfire::All);
        let slots: Vec<i64> = fires.iter().map(|f| f.1).collect();
        assert_eq!(slots, [70_000, 80_000, 90_000, 100_000]);
        assert_eq!(missed(&actions, false), Some((20_000, 60_000, 5)));
    }

    #[test]
    fn misfire_once_runs_the_latest_slot_only() {
        let (fires, actions) = takeover_after_gap(Misfire::Once);
        let slots: Vec<i64> = fires.iter().map(|f| f.1).collect();
        // 100 s is 0.5 s late: on time. The late ones collapse to 90 s.
        assert_eq!(slots, [90_000, 100_000]);
        assert_eq!(missed(&actions, true), Some((70_000, 80_000, 2)));
    }

    #[test]
    fn misfire_skip_runs_only_on_time_slots() {
        let (fires, actions) = takeover_after_gap(Misfire::Skip);
        let slots: Vec<i64> = fires.iter().map(|f| f.1).collect();
        assert_eq!(slots, [100_000]);
        assert_eq!(missed(&actions, true), Some((70_000, 90_000, 3)));
    }

    #[test]
    fn a_one_shot_fires_once() {
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        p.add_job(
            UnixMillis(0),
            spec("once", "@at 1970-01-01T00:00:03Z", Misfire::All),
        )
        .unwrap();
        poll_all(&mut p, UnixMillis(3_000));
        assert_eq!(fired(&mut p), [("once".into(), 3_000)]);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn duplicate_jobs_are_rejected_and_removal_stops_firing() {
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a"])));
        p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
            .unwrap();
        assert_eq!(
            p.add_job(UnixMillis(0), spec("j", "@every 2s", Misfire::All)),
            Err(PlannerError::DuplicateJob(JobId::new("j")))
        );
        assert!(p.remove_job(&JobId::new("j")));
        assert_eq!(p.next_deadline(), None);
        assert_eq!(p.job_count(), 0);
    }

    #[test]
    fn two_planners_with_the_same_view_split_the_jobs_without_overlap() {
        let view = View::of(ids(&["a", "b", "c"]));
        let mut planners: Vec<Planner> = ["a", "b", "c"]
            .iter()
            .map(|n| {
                let mut p = Planner::new(NodeId::new(n), cfg(), UnixMillis(0));
                p.set_view(UnixMillis(0), view.clone());
                for j in 0..30 {
                    p.add_job(
                        UnixMillis(0),
                        spec(&format!("job-{j}"), "@every 1s", Misfire::All),
                    )
                    .unwrap();
                }
                p
            })
            .collect();
        let mut runs: BTreeMap<(String, i64), usize> = BTreeMap::new();
        for p in &mut planners {
            poll_all(p, UnixMillis(3_000));
            for f in fired(p) {
                *runs.entry(f).or_default() += 1;
            }
        }
        // Slots 0 (inside the registration lookback), 1, 2 and 3 s.
        assert_eq!(runs.len(), 30 * 4);
        assert!(runs.values().all(|&c| c == 1));
    }
}
