//! Local health: a node first suspects itself (the idea of Lifeguard, in memberlist and
//! Serf).
//!
//! A process that was stopped (SIGSTOP, a VM migration, swap, a long GC pause in an
//! embedding program) wakes up to a view formed while it was not listening: its gossip
//! finds every peer silent, so it would own every job, while the peers took its jobs over
//! and ran their slots meanwhile (issue 14: 0 to 115 slots run twice on real processes, 13
//! to 45 in quorum mode). So the node watches itself:
//!
//! - **Its loop overslept.** Before it waits, the loop notes by the monotonic clock when it
//!   must be back at the latest (it wakes at least every half gossip interval); back more
//!   than three gossip intervals later than that, it was not running. The same holds of
//!   every stretch of a turn between two marks of the monotonic clock (see `Health::gap`).
//! - **Its gossip fell behind.** No gossip round started for three gossip intervals while
//!   it has peers or seeds.
//! - **Every peer went silent at once**, with at least two of them: a node cut off from
//!   everyone looks the same to itself as a node that stopped.
//! - **A run found the loop had not turned** for 1.5 gossip intervals when it was about to
//!   start (the run got to the processor before the loop after a stop).
//!
//! Then it is *recovering*: its planner is suspended (fires nothing, takes nothing over),
//! runs fired before the stall that had not started do not start (they are held), and it
//! waits for fresh evidence (see `cluster::evidence`): a digest from a live peer made after
//! that peer heard this node's heartbeat of after the stall, with every node state it lists
//! now held here (so the fire records that peer held), that peer back in this node's view,
//! and every member publishing the same member set as this node's own (so each of them
//! counts this node as a member again, stopped running its jobs, and their last records
//! are here). Then the planner resumes on the view of then, the held runs are settled
//! against the records (run here only if nobody ran them), and slots nobody ran are caught
//! up per the misfire policy.
//!
//! Departures seen while recovering count for nothing until then: that is this node's
//! version of Lifeguard's local health multiplier. Chitchat's failure detector cannot be
//! tuned from outside, so rather than raising the suspicion threshold, the node ignores
//! what its detector says of peers until a member that kept listening agrees with it.
//!
//! If no peer gives fresh evidence within 25 gossip intervals (everyone else is down, or
//! this node is cut off), or the members do not agree within 50, the node resumes anyway
//! (availability first), with the handoff delay on every job it owns, and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::publisher::Batch;
use super::runtime::Runtime;
use chitchat::{ChitchatId, NodeState};

use crate::cluster::{
    Conflict, EvidenceWatch, KEY_MEMBERS, Publish, Record, Rivals, members_digest, view_from_live,
};
use crate::core::planner::{Held, View};
use crate::core::types::{JobId, NodeId, UnixMillis};

/// The state of the newest generation of `node` in `live`.
fn newest_state<'a>(
    live: &'a BTreeMap<ChitchatId, NodeState>,
    node: &NodeId,
) -> Option<&'a NodeState> {
    live.iter()
        .filter(|(id, _)| *id.node_id == *node.as_str())
        .max_by_key(|(id, _)| id.generation_id)
        .map(|(_, s)| s)
}

/// What the runs read to know whether they may start (one allocation, shared).
pub(super) struct HealthShared {
    base: Instant,
    /// Grows with every stall noticed: a run fired before the latest does not start.
    epoch: AtomicU64,
    healthy: AtomicBool,
    /// When the loop last turned, in microseconds since `base` (monotonic).
    last_turn_us: AtomicU64,
    /// A run does not start if the loop has not turned for longer than this.
    stale_after_us: u64,
}

impl HealthShared {
    pub(super) fn new(base: Instant, stale_after: Duration) -> HealthShared {
        HealthShared {
            base,
            epoch: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            last_turn_us: AtomicU64::new(0),
            stale_after_us: stale_after.as_micros() as u64,
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_micros() as u64
    }

    /// The stall count a run fired now carries.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The loop is running at `at`.
    pub(super) fn turned(&self, at: Instant) {
        self.last_turn_us
            .fetch_max(self.micros(at), Ordering::AcqRel);
    }

    /// Whether a run fired at stall count `epoch` may call its executor at `now`: the node
    /// is healthy, noticed no stall since, and its loop turned recently (after a stop, a
    /// run may get to the processor before the loop does).
    pub(super) fn may_start(&self, epoch: u64, now: Instant) -> bool {
        self.healthy.load(Ordering::Acquire)
            && self.epoch.load(Ordering::Acquire) == epoch
            && self
                .micros(now)
                .saturating_sub(self.last_turn_us.load(Ordering::Acquire))
                <= self.stale_after_us
    }

    fn stalled(&self) {
        self.healthy.store(false, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// Why the node suspects itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Cause {
    /// The loop woke this much later than it asked to.
    Overslept(Duration),
    /// No gossip round started for this long while there were peers or seeds.
    GossipStalled(Duration),
    /// Every other member (this many) vanished from the view at once.
    PeersVanished(usize),
    /// A run about to start found the loop had not turned for too long.
    RunSawStall,
    /// Another live process holds this node's id and keeps it.
    IdentityConflict(SocketAddr),
    /// The wall clock was stepped by this much, ms (see `skew`).
    ClockStep(i64),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Overslept(d) => write!(f, "its loop woke {} ms late", d.as_millis()),
            Cause::GossipStalled(d) => {
                write!(f, "no gossip round started for {} ms", d.as_millis())
            }
            Cause::PeersVanished(n) => write!(f, "all {n} other members went silent at once"),
            Cause::RunSawStall => f.write_str("a run found its loop stopped"),
            Cause::ClockStep(ms) => write!(f, "its wall clock was stepped by {ms} ms"),
            Cause::IdentityConflict(addr) => {
                write!(f, "the process at {addr} holds its node id and keeps it")
            }
        }
    }
}

/// A run fired before a stall, held until the node recovers: job, slot, epoch.
type HeldRun = (JobId, UnixMillis, u64);

/// A recovery in progress.
struct Recovery {
    since: Instant,
    cause: Cause,
    /// This node's heartbeat when the stall was noticed: evidence must show a higher one.
    mark: u64,
    _watch: EvidenceWatch,
    /// The peer that gave fresh evidence.
    heard: Option<SocketAddr>,
    held: Vec<HeldRun>,
}

/// The node's view of its own health.
pub(super) struct Health {
    pub(super) shared: Arc<HealthShared>,
    /// The loop wakes at least this often.
    pub(super) tick: Duration,
    stall_after: Duration,
    gossip_interval: Duration,
    /// When the loop must be back at the latest, set before it waits.
    expect_by: Option<Instant>,
    /// The latest monotonic instant the loop was seen running at (a check or a mark).
    last: Instant,
    /// Gossip rounds counted at the last change, and when.
    rounds: (u64, Instant),
    recovery: Option<Recovery>,
    /// While recovering (`None` then), and until this long after, departures are held.
    probation: Option<Option<Instant>>,
    /// Members that vanished during a probation, kept in the view: since when, and whether
    /// the other members' agreement releases them (this node's own probation) or only time
    /// (a member's that came back).
    held: BTreeMap<NodeId, (Instant, bool)>,
    /// Members that (re)appeared in the view lately, and when.
    returned: BTreeMap<NodeId, Instant>,
    /// Other live processes with this node's id (see `cluster::identity`).
    rivals: Rivals,
    /// The one this node yields the id to, while it lives.
    yielding: Option<Conflict>,
    /// Rivals already reported.
    reported: BTreeSet<(SocketAddr, u64)>,
    next_identity_check: Instant,
}

/// Without fresh evidence from any peer for this many gossip intervals, the node resumes as
/// if alone (the others are down or out of reach).
const EVIDENCE_INTERVALS: u32 = 25;
/// Without the members' agreement for this many gossip intervals, the node resumes anyway.
const AGREEMENT_INTERVALS: u32 = 50;
/// A departure held during the probation counts after this many gossip intervals anyway;
/// the probation lasts this long after a recovery too.
const HOLD_INTERVALS: u32 = 25;
/// A rival holder of this node's id counts while its heartbeat moved within this many
/// gossip intervals.
const RIVAL_INTERVALS: u32 = 5;
/// How long the departure of a member that came back lately is held.
const RETURNED_HOLD_INTERVALS: u32 = 10;

impl Health {
    pub(super) fn new(gossip_interval: Duration, now: Instant) -> Health {
        Health {
            shared: Arc::new(HealthShared::new(now, gossip_interval.mul_f32(1.5))),
            tick: (gossip_interval / 2).max(Duration::from_millis(5)),
            // Three, not two: with a mark in the middle of every turn, a loop busy for
            // 0.4-0.5 s in a debug build on a loaded machine was taken for stopped (the
            // churn tests); the default failure detector evicts after about seven.
            stall_after: gossip_interval * 3,
            gossip_interval,
            expect_by: None,
            last: now,
            rounds: (0, now),
            recovery: None,
            probation: None,
            held: BTreeMap::new(),
            returned: BTreeMap::new(),
            rivals: Rivals::new(),
            yielding: None,
            reported: BTreeSet::new(),
            next_identity_check: now,
        }
    }

    /// The view the planner gets, from chitchat's `raw` one at `now`. Right after a stop,
    /// failure detectors are not to be trusted: a detector's samples of a peer are reset
    /// when it suspects it, and the packets queued during the stop arrive in a burst that
    /// makes the intervals it expects tiny, so it suspects a live peer again within a
    /// second. That happens on both sides: the node that was stopped suspects everyone
    /// (the simulator's `pause` seed 12: it took a live peer's job over 0.9 s after
    /// resuming, and ran a slot that peer ran too), and its peers suspect it (seed 14: a
    /// peer took its job over 0.6 s after seeing it back). So departures are held:
    ///
    /// - During this node's probation (while it recovers, and for 25 gossip intervals
    ///   after), a member of `previous` that vanished stays a member until every other
    ///   member publishes a member set without it ([`members_digest`] of `raw`, read from
    ///   `live`; they kept listening), or for 25 gossip intervals.
    /// - A member that (re)appeared in the view less than 25 gossip intervals ago and
    ///   vanishes stays a member for 10 gossip intervals, unless it comes back: the others'
    ///   detectors got the same burst from it, so their agreement proves nothing.
    ///
    /// Lifeguard raises the suspicion timeout of a node that is itself unhealthy, and
    /// chitchat's detector cannot be tuned from outside, so the node holds the departures
    /// its detector reports instead. A crash in these windows is taken over later by as
    /// much; nothing runs twice.
    pub(super) fn filter(
        &mut self,
        raw: View,
        previous: &View,
        me: &NodeId,
        live: &BTreeMap<ChitchatId, NodeState>,
        now: Instant,
    ) -> View {
        let in_probation = match self.probation {
            Some(None) => true,
            Some(Some(until)) if now < until => true,
            Some(Some(_)) => {
                self.probation = None;
                false
            }
            None => false,
        };
        let window = self.gossip_interval * HOLD_INTERVALS;
        self.returned
            .retain(|_, at| now.saturating_duration_since(*at) <= window);
        for gone in previous.members.iter().filter(|m| !raw.alive.contains(*m)) {
            if gone == me || self.held.contains_key(gone) {
                continue;
            }
            if in_probation {
                self.held.insert(gone.clone(), (now, true));
            } else if self.returned.contains_key(gone) {
                self.held.insert(gone.clone(), (now, false));
            }
        }
        for back in raw
            .members
            .iter()
            .filter(|m| !previous.members.contains(*m))
        {
            if !self.held.contains_key(back) {
                self.returned.insert(back.clone(), now);
            }
        }
        if self.held.is_empty() {
            return raw;
        }
        let others: Vec<&NodeId> = raw.members.iter().filter(|m| *m != me).collect();
        let agreed = !others.is_empty() && {
            let ours = members_digest(&raw);
            others.iter().all(|m| {
                newest_state(live, m).and_then(|s| s.get(KEY_MEMBERS)) == Some(ours.as_str())
            })
        };
        let returned_hold = self.gossip_interval * RETURNED_HOLD_INTERVALS;
        self.held.retain(|node, (since, by_agreement)| {
            let held_for = now.saturating_duration_since(*since);
            !raw.alive.contains(node)
                && if *by_agreement {
                    !agreed && held_for <= window
                } else {
                    held_for <= returned_hold
                }
        });
        let mut view = raw;
        for node in self.held.keys() {
            view.members.insert(node.clone());
            view.alive.insert(node.clone());
        }
        view
    }

    /// Departures are held (see [`Health::filter`]); the view must be formed again as time
    /// passes.
    pub(super) fn holds_departures(&self) -> bool {
        !self.held.is_empty()
    }

    /// The loop is about to wait, and must be back by `by`.
    pub(super) fn expect(&mut self, by: Instant) {
        self.expect_by = Some(by);
    }

    /// How much later than allowed the loop is seen running at `now`: since the last time
    /// it was (a check or a mark), it may only have waited as long as it said it would
    /// (`expect`) and worked for `stall_after`. A stop can land anywhere in a turn, not
    /// only while the loop waits (issue 14: a node stopped after its check and before it
    /// read the clock fired every slot of the stop 3 ms after waking), so every stretch of
    /// the loop's running time is measured, not only its waits.
    fn gap(&mut self, now: Instant) -> Option<Duration> {
        let allowed = self
            .expect_by
            .take()
            .map_or(self.last, |by| by.max(self.last));
        self.last = self.last.max(now);
        Some(now.saturating_duration_since(allowed)).filter(|late| *late > self.stall_after)
    }

    /// The loop is running at `now`, with no wait since its last check or mark (in the
    /// middle of a turn): whether it was stopped since.
    pub(super) fn mark(&mut self, now: Instant) -> Option<Cause> {
        self.gap(now).map(Cause::Overslept)
    }

    pub(super) fn recovering(&self) -> bool {
        self.recovery.is_some()
    }

    /// The loop turns at `now`: whether it overslept, or its gossip (which has started
    /// `rounds` rounds; `expects_gossip`: it has peers or seeds) fell behind.
    fn check(&mut self, now: Instant, rounds: u64, expects_gossip: bool) -> Option<Cause> {
        let late = self.gap(now);
        if rounds != self.rounds.0 || !expects_gossip {
            self.rounds = (rounds, now);
        }
        if let Some(late) = late {
            // Gossip stood still for the same reason.
            self.rounds = (rounds, now);
            return Some(Cause::Overslept(late));
        }
        let quiet = now.saturating_duration_since(self.rounds.1);
        if quiet > self.gossip_interval * 3 {
            self.rounds = (rounds, now);
            return Some(Cause::GossipStalled(quiet));
        }
        None
    }
}

impl Runtime {
    /// At the top of every loop turn, and before runs are prepared ahead: notices a stall,
    /// and moves a recovery on. Returns the wall-clock time the turn decides by, read
    /// before the monotonic clock is checked: a stop after the check then leaves the turn
    /// deciding by the time of before the stop (it fires only what was due then), and the
    /// next mark notices the stop; read after the check, a stop in between would have the
    /// turn fire every slot of the stop as a catch-up before any check saw it.
    pub(super) async fn health_turn(&mut self) -> UnixMillis {
        let wall = self.clock.now();
        let now = self.clock.monotonic();
        let expects_gossip = !self.config.seeds.is_empty() || self.planner.view().alive.len() > 1;
        let rounds = self.cluster().rounds();
        if let Some(cause) = self.health.check(now, rounds, expects_gossip)
            && !self.planner.is_leaving()
        {
            self.stalled(cause, now).await;
        }
        self.health.shared.turned(now);
        self.skew_turn(wall, now).await;
        if now >= self.health.next_identity_check {
            self.health.next_identity_check = now + self.health.gossip_interval;
            self.check_identity(now).await;
        }
        if self.health.holds_departures() {
            let live = self.cluster().live_watcher();
            let view = {
                let live = live.borrow();
                self.health_filter(view_from_live(&live), &live)
            };
            self.on_view(view).await;
        }
        if self.health.recovering() {
            self.try_recover(now).await;
        }
        wall
    }

    /// In the middle of a turn (before the loop plans its wait, between chunks of a
    /// burst): notices a stop since the last check or mark (see [`Health::gap`]).
    pub(super) async fn health_mark(&mut self) {
        let now = self.clock.monotonic();
        if let Some(cause) = self.health.mark(now)
            && !self.planner.is_leaving()
        {
            self.stalled(cause, now).await;
        }
        self.health.shared.turned(now);
    }

    /// Another live process with this node's id (two holders, started on both sides of a
    /// partition): both say so; the one that does not keep the id fires nothing while the
    /// other lives (see `cluster::identity`).
    async fn check_identity(&mut self, now: Instant) {
        let mut rivals = std::mem::take(&mut self.health.rivals);
        let within = self.health.gossip_interval * RIVAL_INTERVALS;
        let (keeps, all) = self.cluster().rivals(&mut rivals, now, within).await;
        self.health.rivals = rivals;
        for r in &all {
            if self.health.reported.insert((r.addr, r.generation)) {
                let keeper = if keeps.is_some() {
                    "that process"
                } else {
                    "this node, which started first"
                };
                error!(node = %self.config.node_id, other = %r.addr, other_generation = r.generation, keeps = keeper, "another live process holds this node id: only the older one fires; stop one of them");
            }
        }
        match (&self.health.yielding, keeps) {
            (None, Some(k)) => {
                let addr = k.addr;
                self.health.yielding = Some(k);
                self.stalled(Cause::IdentityConflict(addr), now).await;
            }
            (Some(gone), None) => {
                info!(node = %self.config.node_id, other = %gone.addr, "the other holder of this node id is gone");
                let addr = gone.addr;
                self.health.yielding = None;
                self.health.reported.clear();
                // Evidence from here on: the recovery starts over.
                self.stalled(Cause::IdentityConflict(addr), now).await;
            }
            _ => {}
        }
    }

    /// The view the planner gets from chitchat's (see [`Health::filter`]).
    pub(super) fn health_filter(
        &mut self,
        raw: View,
        live: &BTreeMap<ChitchatId, NodeState>,
    ) -> View {
        let now = self.clock.monotonic();
        let previous = self.planner.view().clone();
        let mut view = self
            .health
            .filter(raw, &previous, &self.config.node_id, live, now);
        // This node is a member by its own clock's state, not by the status chitchat's
        // last snapshot shows of it (see `skew`).
        let me = &self.config.node_id;
        if !self.skew.in_bound() {
            view.members.remove(me);
        } else if view.alive.contains(me) && !self.planner.is_leaving() {
            view.members.insert(me.clone());
        }
        view
    }

    /// The loop is about to wait until `wake_at` on the wall clock. The wait is read from
    /// the wall clock before the mark's monotonic reading: a stop between the two shows in
    /// the mark, one after them in the next check.
    pub(super) async fn health_expect(&mut self, wake_at: UnixMillis) {
        let wait = wake_at.millis_since(self.clock.now()).clamp(0, 1_000);
        self.health_mark().await;
        let by = self.health.last + Duration::from_millis(wait as u64);
        self.health.expect(by);
    }

    /// The view changed from `old`: every other member vanishing at once is a stall too.
    pub(super) async fn health_view(&mut self, old: &View, new: &View) {
        let others = old.members.len().saturating_sub(1);
        let me = &self.config.node_id;
        if others >= 2 && new.alive.iter().all(|n| n == me) && !self.planner.is_leaving() {
            let now = self.clock.monotonic();
            self.stalled(Cause::PeersVanished(others), now).await;
        }
    }

    /// A run of `slot` fired under the fencing `epoch` at stall count `stalls` did not
    /// start: the node stalled since, or the run found the loop stopped.
    pub(super) async fn hold_run(&mut self, job: JobId, slot: UnixMillis, epoch: u64, stalls: u64) {
        self.stats.fired = self.stats.fired.saturating_sub(1);
        if !self.health.recovering() && stalls == self.health.shared.epoch() {
            let now = self.clock.monotonic();
            self.stalled(Cause::RunSawStall, now).await;
        }
        match &mut self.health.recovery {
            Some(r) => r.held.push((job, slot, epoch)),
            // The stall it saw is over: settle it now.
            None => self.settle(vec![(job, slot, epoch)]),
        }
    }

    pub(super) async fn stalled(&mut self, cause: Cause, now: Instant) {
        self.health.shared.stalled();
        self.health.probation = Some(None);
        self.planner.suspend();
        let mark = self.cluster().heartbeat().await;
        match &mut self.health.recovery {
            Some(r) => {
                // Stalled again while recovering: evidence must postdate this one.
                r.since = now;
                r.mark = mark;
                r.heard = None;
            }
            None => {
                warn!(node = %self.config.node_id, cause = %cause, "this node stalled: it fires nothing and takes nothing over until it has heard the live members again");
                let watch = self.cluster().watch_evidence();
                self.health.recovery = Some(Recovery {
                    since: now,
                    cause,
                    mark,
                    _watch: watch,
                    heard: None,
                    held: Vec::new(),
                });
            }
        }
    }

    /// Resumes once the evidence is in (see the module docs).
    async fn try_recover(&mut self, now: Instant) {
        let Some(r) = &self.health.recovery else {
            return;
        };
        if self.health.yielding.is_some() {
            return;
        }
        let (since, mark) = (r.since, r.mark);
        let view = self.planner.view().clone();
        let evidence = self
            .cluster()
            .evidence(mark, &view, &self.config.node_id)
            .await;
        let heard = r.heard.or(evidence.caught_up);
        if let Some(r) = &mut self.health.recovery {
            r.heard = heard;
        }
        let waited = now.saturating_duration_since(since);
        let alone = self.config.seeds.is_empty() && self.cluster().known_peers().await == 0;
        let agreed = match heard {
            Some(peer) => {
                let back = self
                    .peers
                    .iter()
                    .any(|(n, (_, addr))| *addr == peer && view.members.contains(n));
                back && evidence.waiting_for.is_empty()
            }
            None => false,
        };
        let gave_up = if heard.is_some() {
            waited > self.health.gossip_interval * AGREEMENT_INTERVALS
        } else {
            waited > self.health.gossip_interval * EVIDENCE_INTERVALS
        };
        if !(agreed || alone || gave_up) {
            return;
        }
        let Some(r) = self.health.recovery.take() else {
            return;
        };
        // The records heard so far reach the planner first.
        while let Ok(ev) = self.events_rx.try_recv() {
            self.on_event(ev);
        }
        let wall = self.clock.now();
        let from = if agreed || alone {
            wall
        } else {
            wall.saturating_add(self.config.planner().handoff_delay)
        };
        self.planner.resume(wall, from);
        if agreed || alone {
            info!(node = %self.config.node_id, cause = %r.cause, after_ms = waited.as_millis() as u64, held = r.held.len(), "resumed after a stall: the live members agree on the view, and their records are here");
        } else {
            warn!(node = %self.config.node_id, cause = %r.cause, after_ms = waited.as_millis() as u64, heard = ?heard, waiting_for = ?evidence.waiting_for, held = r.held.len(), "resuming after a stall without the members' agreement: firing resumes after the handoff delay");
        }
        self.health.shared.healthy.store(true, Ordering::Release);
        self.health.probation = Some(Some(now + self.health.gossip_interval * HOLD_INTERVALS));
        self.settle(r.held);
    }

    /// Settles runs held over a stall against the records (see `Planner::resolve_held`).
    fn settle(&mut self, held: Vec<HeldRun>) {
        let now = self.clock.now();
        let mut records = Vec::new();
        for (job, slot, epoch) in held {
            let outcome = self.planner.resolve_held(now, &job, slot, epoch);
            info!(job = %job, slot = %slot, outcome = ?outcome, "a run held over a stall");
            match outcome {
                Held::RanElsewhere(r) | Held::Abandoned(r) | Held::Dropped(r) => {
                    records.extend(r.map(|record| Record {
                        job: job.clone(),
                        record,
                        node: self.config.node_id.clone(),
                    }));
                }
                Held::Run | Held::Unknown => {}
            }
        }
        if !records.is_empty() {
            let _ = self.publish.send(Batch {
                publish: Publish {
                    records,
                    ..Publish::default()
                },
                gates: Vec::new(),
                last: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOSSIP: Duration = Duration::from_millis(200);

    /// Any instant: the checks take time as an argument.
    #[allow(clippy::disallowed_methods)]
    fn start() -> Instant {
        Instant::now()
    }

    #[test]
    fn a_loop_back_much_later_than_it_asked_has_stalled() {
        let t0 = start();
        let mut h = Health::new(GOSSIP, t0);
        h.expect(t0 + Duration::from_millis(100));
        // Back 500 ms after it should have been: within three gossip intervals.
        assert_eq!(h.check(t0 + Duration::from_millis(600), 1, true), None);
        h.expect(t0 + Duration::from_millis(700));
        assert_eq!(
            h.check(t0 + Duration::from_millis(15_700), 2, true),
            Some(Cause::Overslept(Duration::from_secs(15)))
        );
        // An expectation is checked once.
        assert_eq!(h.check(t0 + Duration::from_millis(15_800), 3, true), None);
    }

    #[test]
    fn gossip_that_stops_going_round_is_a_stall_only_with_someone_to_gossip_with() {
        let t0 = start();
        let mut h = Health::new(GOSSIP, t0);
        h.expect(t0 + Duration::from_millis(400));
        assert_eq!(h.check(t0 + Duration::from_millis(500), 0, true), None);
        h.expect(t0 + Duration::from_millis(600));
        assert_eq!(
            h.check(t0 + Duration::from_millis(700), 0, true),
            Some(Cause::GossipStalled(Duration::from_millis(700)))
        );
        let mut alone = Health::new(GOSSIP, t0);
        alone.expect(t0 + Duration::from_secs(5));
        assert_eq!(alone.check(t0 + Duration::from_secs(5), 0, false), None);
    }

    #[test]
    fn a_stop_in_the_middle_of_a_turn_is_a_stall_too() {
        let t0 = start();
        let mut h = Health::new(GOSSIP, t0);
        h.expect(t0 + Duration::from_millis(100));
        assert_eq!(h.check(t0 + Duration::from_millis(100), 1, true), None);
        // The turn works for 300 ms, with a mark between two chunks of a burst.
        assert_eq!(h.mark(t0 + Duration::from_millis(250)), None);
        assert_eq!(h.mark(t0 + Duration::from_millis(400)), None);
        // Stopped for 15 s after the mark, before the loop planned its wait: the mark
        // before the wait sees it, though no wait was late.
        assert_eq!(
            h.mark(t0 + Duration::from_millis(15_400)),
            Some(Cause::Overslept(Duration::from_secs(15)))
        );
        // Stopped after its check, before the next mark: the check did not see it.
        h.expect(t0 + Duration::from_millis(15_500));
        assert_eq!(h.check(t0 + Duration::from_millis(15_500), 2, true), None);
        assert_eq!(
            h.mark(t0 + Duration::from_millis(20_500)),
            Some(Cause::Overslept(Duration::from_secs(5)))
        );
        // A check after a wait allows the wait it was told of, from the mark before it.
        h.expect(t0 + Duration::from_millis(21_500));
        assert_eq!(h.check(t0 + Duration::from_millis(21_800), 3, true), None);
    }

    #[test]
    fn a_run_starts_only_if_the_node_is_healthy_and_its_loop_turned_lately() {
        let t0 = start();
        let h = HealthShared::new(t0, Duration::from_millis(300));
        h.turned(t0);
        let epoch = h.epoch();
        assert!(h.may_start(epoch, t0 + Duration::from_millis(300)));
        assert!(
            !h.may_start(epoch, t0 + Duration::from_millis(301)),
            "a stopped loop"
        );
        h.stalled();
        h.turned(t0 + Duration::from_millis(400));
        assert!(!h.may_start(epoch, t0 + Duration::from_millis(400)));
        h.healthy.store(true, Ordering::Release);
        assert!(
            !h.may_start(epoch, t0 + Duration::from_millis(400)),
            "fired before the stall"
        );
        assert!(h.may_start(h.epoch(), t0 + Duration::from_millis(400)));
    }
}
