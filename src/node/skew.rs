//! The node's clock against its peers' (issue 14): it estimates its offset from the median
//! of the cluster's clocks (see `cluster::offset`), notices when its own wall clock is
//! stepped, and owns no job while its offset is unknown or beyond `max_clock_offset`.
//!
//! - **Out of bound.** A node whose offset from the median passes the bound (by more than
//!   the estimate's error bound, so the error cannot push it out) says so in its gossip
//!   state (`status = clock`): no node counts it as a member, itself included, so its jobs
//!   move to the others as a leaving node's do, after the handoff delay. It is back once its
//!   offset is within the bound, less the error. The log says so (a reminder every minute
//!   while it lasts), and so do the metrics and `starling members`. A clock ten minutes
//!   ahead used to publish records that held its jobs ten minutes after it died; see
//!   `core::planner::records` for the records such a node published before it knew.
//! - **Unverified.** A node started with seeds says `status = clock` too until it has
//!   samples from half of the other live nodes (or has heard nobody for the peer wait: it
//!   is alone), so a node with a wild clock never fires before anyone could tell it. If its
//!   peers publish no clock (an older version) it gives up after
//!   [`VERIFY_INTERVALS`] gossip intervals, says so, and goes on as in bound.
//! - **Stepped.** At the top of every loop turn, before anything fires, the node compares
//!   how far its wall clock and its monotonic clock moved since the last turn; a difference
//!   of more than a gossip interval is a step (NTP, a hand-set clock, a resume from a system
//!   suspend). It then moves its clock samples by the step (its estimate is right at once,
//!   so a node stepped past the bound fires nothing of the step), moves the wall-clock times
//!   its runs were fired at by the step too (so a forward step's catch-up runs in order, as
//!   any catch-up does, instead of its slots being skipped as overlapped: issue 14 saw 11
//!   of 15 skipped), and suspects itself as after a stall (see `health`): it fires nothing
//!   until it has heard the members again. A step forward is then caught up per the misfire
//!   policy; a step back reruns nothing, since no slot at or before a record fires. A step
//!   keeps the node's epochs: they rise only when a job changes owner.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::NodeConfig;
use super::health::Cause;
use super::publisher::Batch;
use super::runtime::Runtime;
use crate::cluster::{Estimate, Offsets, Publish, STATUS_ALIVE, STATUS_CLOCK};
use crate::core::types::{NodeId, UnixMillis};

/// Where a node's clock stands (see [`crate::NodeHandle::clock_status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockState {
    /// Not compared with enough peers yet (after start-up): owns no job.
    Unverified,
    /// Within the bound of the cluster's median.
    InBound,
    /// Beyond the bound: owns no job until it is back.
    OutOfBound,
}

/// A node's clock against its peers'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockStatus {
    /// See [`ClockState`].
    pub state: ClockState,
    /// This node's clock minus the median of the clocks it knows, ms (`None` before any
    /// sample).
    pub offset_ms: Option<i64>,
    /// The estimate's error bound, ms.
    pub error_ms: i64,
    /// Peers with a sample.
    pub peers: usize,
    /// `max_clock_offset`, ms.
    pub bound_ms: i64,
    /// Wall-clock steps noticed since the node started.
    pub steps: u64,
}

/// A node still unverified after this many gossip intervals with peers that publish no
/// clock goes on as in bound.
pub const VERIFY_INTERVALS: u32 = 25;
/// While out of bound, the log says so again this often.
const REMIND_EVERY: Duration = Duration::from_secs(60);

/// Whether a node with `config` starts unverified: it has peers to compare with.
pub(super) fn verifies_at_start(config: &NodeConfig) -> bool {
    config.seeds.iter().any(|s| *s != config.advertise())
}

/// The node's clock checks.
pub(super) struct Skew {
    offsets: Offsets,
    state: ClockState,
    bound_ms: i64,
    step_ms: i64,
    /// Wall and monotonic clocks at the last turn.
    last: Option<(UnixMillis, Instant)>,
    next_publish: Instant,
    period: Duration,
    /// Before this (monotonic), a node that hears nobody is not yet alone.
    alone_after: Instant,
    /// An unverified node goes on as in bound at this time.
    give_up_at: Instant,
    /// When to say again that the clock is out of bound.
    remind_at: Instant,
    steps: u64,
    /// The status published.
    published: Option<&'static str>,
    status_tx: watch::Sender<ClockStatus>,
}

impl Skew {
    pub(super) fn new(config: &NodeConfig, now: Instant) -> (Skew, watch::Receiver<ClockStatus>) {
        let bound_ms = config.max_clock_offset.as_millis() as i64;
        let state = if verifies_at_start(config) {
            ClockState::Unverified
        } else {
            ClockState::InBound
        };
        let (status_tx, rx) = watch::channel(ClockStatus {
            state,
            offset_ms: None,
            error_ms: 0,
            peers: 0,
            bound_ms,
            steps: 0,
        });
        let interval = config.gossip_interval;
        let skew = Skew {
            offsets: Offsets::new(config.node_id.clone(), interval.as_millis() as i64),
            state,
            bound_ms,
            step_ms: interval.as_millis() as i64,
            last: None,
            next_publish: now,
            period: interval,
            alone_after: now + config.planner().peer_wait,
            give_up_at: now + interval * VERIFY_INTERVALS,
            remind_at: now,
            steps: 0,
            published: None,
            status_tx,
        };
        (skew, rx)
    }

    /// True while this node may own jobs.
    pub(super) fn in_bound(&self) -> bool {
        self.state == ClockState::InBound
    }

    /// The state from the estimate, with `others` other live nodes, at `now`.
    fn judge(&self, e: &Estimate, others: usize, now: Instant) -> ClockState {
        if self.state == ClockState::Unverified {
            let verified = if others == 0 {
                now >= self.alone_after
            } else {
                e.peers > 0 && e.peers * 2 >= others
            };
            if !verified && now < self.give_up_at {
                return ClockState::Unverified;
            }
        }
        if e.peers == 0 {
            // Nobody to compare with: as it was (in bound when it was unverified).
            return match self.state {
                ClockState::OutOfBound => ClockState::OutOfBound,
                _ => ClockState::InBound,
            };
        }
        let off = e.offset_ms.abs();
        match self.state {
            ClockState::OutOfBound if off + e.error_ms < self.bound_ms => ClockState::InBound,
            ClockState::OutOfBound => ClockState::OutOfBound,
            _ if off - e.error_ms > self.bound_ms => ClockState::OutOfBound,
            _ => ClockState::InBound,
        }
    }
}

impl Runtime {
    /// At the top of every loop turn, with the wall clock and the monotonic clock read
    /// together: a step of the wall clock, the clock value to publish, the state.
    pub(super) async fn skew_turn(&mut self, wall: UnixMillis, now: Instant) {
        if let Some((last_wall, last_mono)) = self.skew.last {
            let mono = now.saturating_duration_since(last_mono).as_millis() as i64;
            let step = wall.millis_since(last_wall) - mono;
            if step.abs() > self.skew.step_ms {
                self.stepped(step, now).await;
            }
        }
        self.skew.last = Some((wall, now));
        if now >= self.skew.next_publish {
            self.skew.next_publish = now + self.skew.period;
            let alive = self.planner.view().alive.clone();
            self.skew.offsets.retain(&alive);
            let value = self.skew.offsets.publish(wall);
            let _ = self.publish.send(Batch {
                publish: Publish {
                    clock: Some(value),
                    ..Publish::default()
                },
                ..Batch::default()
            });
        }
        self.judge_clock(now).await;
    }

    /// The wall clock moved `step` ms more than the monotonic clock (see the module docs).
    async fn stepped(&mut self, step: i64, now: Instant) {
        self.skew.steps += 1;
        self.skew.offsets.step(step);
        let moved = |t: UnixMillis| UnixMillis(t.0.saturating_add(step));
        for run in self.local_runs.values_mut() {
            run.fired_at = moved(run.fired_at);
        }
        for (at, _) in self.announce.iter_mut() {
            *at = moved(*at);
        }
        if self.planner.is_leaving() {
            return;
        }
        warn!(node = %self.config.node_id, step_ms = step, "the wall clock was stepped: this node fires nothing until it has heard the members again, then catches up per the misfire policy (a step back reruns nothing)");
        self.stalled(Cause::ClockStep(step), now).await;
    }

    /// Sets the clock state from the estimate, and the status and view that go with it.
    async fn judge_clock(&mut self, now: Instant) {
        let me = self.config.node_id.clone();
        let others = self
            .planner
            .view()
            .alive
            .iter()
            .filter(|n| **n != me)
            .count();
        let e = self.skew.offsets.estimate();
        let state = self.skew.judge(&e, others, now);
        let bound_ms = self.skew.bound_ms;
        if state != self.skew.state {
            match (self.skew.state, state) {
                (_, ClockState::OutOfBound) => {
                    self.skew.remind_at = now + REMIND_EVERY;
                    warn!(node = %me, offset_ms = e.offset_ms, error_ms = e.error_ms, bound_ms, peers = e.peers, "this node's clock is off the median of the cluster's clocks by more than max_clock_offset: it owns no job until it is back within the bound")
                }
                (ClockState::Unverified, _) if e.peers == 0 && others > 0 => {
                    warn!(node = %me, others, "no peer publishes its clock (an older version?): going on without checking this node's clock against theirs")
                }
                _ => {
                    info!(node = %me, offset_ms = e.offset_ms, error_ms = e.error_ms, bound_ms, peers = e.peers, "this node's clock is within max_clock_offset of the median of the cluster's clocks")
                }
            }
            let was_in = self.skew.in_bound();
            self.skew.state = state;
            if was_in != self.skew.in_bound() {
                // The planner's own view changes at once (chitchat's watcher tells of this
                // node's status change later): nothing fires in between.
                self.refresh_view().await;
            }
        } else if state == ClockState::OutOfBound && now >= self.skew.remind_at {
            self.skew.remind_at = now + REMIND_EVERY;
            warn!(node = %me, offset_ms = e.offset_ms, error_ms = e.error_ms, bound_ms, peers = e.peers, "this node's clock is still off the median of the cluster's clocks by more than max_clock_offset: it owns no job");
        }
        let status = ClockStatus {
            state,
            offset_ms: (e.peers > 0).then_some(e.offset_ms),
            error_ms: e.error_ms,
            peers: e.peers,
            bound_ms,
            steps: self.skew.steps,
        };
        self.skew.status_tx.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
        let publish = if self.skew.in_bound() {
            STATUS_ALIVE
        } else {
            STATUS_CLOCK
        };
        if self.skew.published != Some(publish) && !self.planner.is_leaving() {
            self.skew.published = Some(publish);
            self.cluster().set_status(publish).await;
        }
    }

    /// The view from chitchat's live set again, through the filters.
    async fn refresh_view(&mut self) {
        let live = self.cluster().live_watcher();
        let view = {
            let live = live.borrow();
            self.health_filter(crate::cluster::view_from_live(&live), &live)
        };
        self.on_view(view).await;
    }

    /// A peer's clock value, read now.
    pub(super) fn on_clock(&mut self, node: &NodeId, value: &str) {
        let now = self.clock.now();
        self.skew.offsets.observe(node, value, now);
    }

    /// This node's offset, and whether it is out of bound, for `Stats`.
    pub(super) fn clock_stats(&self) -> (Option<i64>, bool) {
        let s = *self.skew.status_tx.borrow();
        (s.offset_ms, s.state == ClockState::OutOfBound)
    }
}
