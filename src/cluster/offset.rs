//! Clock offsets between nodes, estimated the way NTP does, from timestamps carried in
//! gossip (issue 14).
//!
//! # The method
//!
//! Every node publishes, every gossip interval, the key `clock` (see
//! [`ClockValue`]): its wall clock when it sets the key (`t3`), and for a few of its peers
//! (in turn) the last `clock` value it received from that peer (`t1`, the peer's clock)
//! with its own wall clock when it received it (`t2`). When node A reads B's value at
//! `t4` (A's clock) and finds in it the echo of one of its own values, it has the four
//! timestamps of an NTP exchange:
//!
//! ```text
//! offset (B - A) = ((t2 - t1) + (t3 - t4)) / 2
//! delay          =  (t4 - t1) - (t3 - t2)
//! ```
//!
//! The delay is the time the two values spent travelling (through gossip, possibly via
//! other nodes), without the time B held A's value before echoing it. Whatever the two
//! one-way times, the true offset lies within `delay / 2` of the estimate: that is its
//! error bound. Gossip delays are a round or two each way, so the bound is about one or two
//! gossip intervals (200-400 ms by default); each peer's estimate is its sample with the
//! least delay among the last [`KEEP`], which is usually much tighter. Samples whose delay
//! is negative or longer than [`MAX_DELAY_INTERVALS`] gossip intervals are dropped, as are
//! echoes of values this node no longer remembers publishing.
//!
//! # Steps
//!
//! When the node's own wall clock is stepped (NTP, a hand-set clock; the node measures the
//! step against its monotonic clock, see `node::skew`), [`Offsets::step`] moves everything
//! it holds into the new clock's frame: its samples, the times it heard its peers' values,
//! and its own values still awaiting an echo. So its estimate after a step is right at
//! once, with no new round trip: a node stepped 30 s ahead knows it is 30 s off before it
//! fires anything.
//!
//! # The offset from the cluster
//!
//! A node's offset is its distance from the median of every clock it knows, its own
//! included ([`Offsets::estimate`]): the middle value of `{0} ∪ {offset(B - A)}`, the lower
//! of the two middle ones for an even count. So in a two-node cluster the node whose clock
//! is ahead is the one that is off; with three or more, the majority decides.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::core::types::{NodeId, UnixMillis};

/// Key holding a node's clock value (see [`ClockValue`]).
pub const KEY_CLOCK: &str = "clock";

/// Samples kept per peer; the one with the least delay is the peer's estimate.
pub const KEEP: usize = 4;
/// A sample whose delay is longer than this many gossip intervals is dropped.
pub const MAX_DELAY_INTERVALS: i64 = 20;
/// Peers echoed in one published value.
pub const ECHOES: usize = 4;
/// Own values remembered, to tell a real echo from one of before a step.
const SENT_KEPT: usize = 32;

/// What a node publishes under `clock`: `t3;peer@t1@t2;...`, Unix ms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockValue {
    /// When the node set the value (its clock).
    pub sent: UnixMillis,
    /// Per peer: the peer's last value received (`t1`, the peer's clock) and when (`t2`,
    /// this node's clock).
    pub echoes: Vec<(NodeId, UnixMillis, UnixMillis)>,
}

impl ClockValue {
    /// The key's value.
    pub fn encode(&self) -> String {
        let mut s = self.sent.0.to_string();
        for (peer, t1, t2) in &self.echoes {
            s.push_str(&format!(";{peer}@{}@{}", t1.0, t2.0));
        }
        s
    }

    /// Parses a value; `None` if it is malformed (a peer's value is never trusted).
    pub fn decode(value: &str) -> Option<ClockValue> {
        let mut parts = value.split(';');
        let sent = UnixMillis(parts.next()?.parse().ok()?);
        let mut echoes = Vec::new();
        for p in parts.take(64) {
            let mut f = p.rsplitn(3, '@');
            let t2 = UnixMillis(f.next()?.parse().ok()?);
            let t1 = UnixMillis(f.next()?.parse().ok()?);
            let peer = f.next()?;
            if peer.is_empty() {
                return None;
            }
            echoes.push((NodeId::new(peer), t1, t2));
        }
        Some(ClockValue { sent, echoes })
    }
}

/// One exchange: how far a peer's clock is ahead of this node's, and the delay that bounds
/// the error (`delay / 2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The peer's clock minus this node's, ms.
    pub offset_ms: i64,
    /// The round trip's delay, ms.
    pub delay_ms: i64,
}

/// Where this node's clock stands against the cluster's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Estimate {
    /// This node's clock minus the median of every clock it knows, ms.
    pub offset_ms: i64,
    /// The error bound of the sample that decided the median, ms (0 when it is this node's
    /// own clock).
    pub error_ms: i64,
    /// Peers with a sample.
    pub peers: usize,
}

/// Clock samples from peers, and what to echo back to them.
#[derive(Debug)]
pub struct Offsets {
    me: NodeId,
    max_delay_ms: i64,
    /// Per peer: its last value (`t1`) and when it arrived (`t2`), to echo.
    heard: BTreeMap<NodeId, (UnixMillis, UnixMillis)>,
    /// Per peer: its latest samples.
    samples: BTreeMap<NodeId, VecDeque<Sample>>,
    /// Values this node published lately (as published, and in the current clock's
    /// frame: they differ after a step).
    sent: VecDeque<(UnixMillis, UnixMillis)>,
    /// Where the echo rotation is.
    turn: usize,
}

impl Offsets {
    /// Offsets for node `me`, whose gossip interval is `gossip_interval_ms`.
    pub fn new(me: NodeId, gossip_interval_ms: i64) -> Offsets {
        Offsets {
            me,
            max_delay_ms: gossip_interval_ms.saturating_mul(MAX_DELAY_INTERVALS),
            heard: BTreeMap::new(),
            samples: BTreeMap::new(),
            sent: VecDeque::new(),
            turn: 0,
        }
    }

    /// The value to publish at `now`: echoes of up to [`ECHOES`] peers, in turn.
    pub fn publish(&mut self, now: UnixMillis) -> String {
        let peers: Vec<(&NodeId, &(UnixMillis, UnixMillis))> = self.heard.iter().collect();
        let mut echoes = Vec::new();
        if !peers.is_empty() {
            for k in 0..ECHOES.min(peers.len()) {
                let (peer, (t1, t2)) = peers[(self.turn + k) % peers.len()];
                echoes.push((peer.clone(), *t1, *t2));
            }
            self.turn = (self.turn + ECHOES) % peers.len();
        }
        if self.sent.len() == SENT_KEPT {
            self.sent.pop_front();
        }
        self.sent.push_back((now, now));
        ClockValue { sent: now, echoes }.encode()
    }

    /// Node `from` published `value`, read here at `now`; returns the sample it gave, if any.
    pub fn observe(&mut self, from: &NodeId, value: &str, now: UnixMillis) -> Option<Sample> {
        if *from == self.me {
            return None;
        }
        let v = ClockValue::decode(value)?;
        self.heard.insert(from.clone(), (v.sent, now));
        let (_, t1, t2) = v.echoes.iter().find(|(peer, _, _)| *peer == self.me)?;
        // Not a value this node remembers publishing: forged, or too old.
        let (_, t1) = self.sent.iter().find(|(published, _)| published == t1)?;
        let (t1, t2, t3, t4) = (t1.0, t2.0, v.sent.0, now.0);
        let delay = (t4 - t1) - (t3 - t2);
        if !(0..=self.max_delay_ms).contains(&delay) {
            return None;
        }
        let sample = Sample {
            offset_ms: ((t2 - t1) + (t3 - t4)) / 2,
            delay_ms: delay,
        };
        let kept = self.samples.entry(from.clone()).or_default();
        if kept.len() == KEEP {
            kept.pop_front();
        }
        kept.push_back(sample);
        Some(sample)
    }

    /// Forget peers that are gone.
    pub fn retain(&mut self, alive: &BTreeSet<NodeId>) {
        self.heard.retain(|n, _| alive.contains(n));
        self.samples.retain(|n, _| alive.contains(n));
    }

    /// This node's clock was stepped by `delta_ms` (positive: forward): its samples, the
    /// times it heard its peers' values at, and its own values awaiting an echo move into
    /// the new clock's frame (see the module docs).
    pub fn step(&mut self, delta_ms: i64) {
        for kept in self.samples.values_mut() {
            for s in kept.iter_mut() {
                s.offset_ms = s.offset_ms.saturating_sub(delta_ms);
            }
        }
        for (_, t2) in self.heard.values_mut() {
            *t2 = UnixMillis(t2.0.saturating_add(delta_ms));
        }
        for (_, frame) in self.sent.iter_mut() {
            *frame = UnixMillis(frame.0.saturating_add(delta_ms));
        }
    }

    /// Peers with at least one sample.
    pub fn sampled(&self) -> usize {
        self.samples.values().filter(|s| !s.is_empty()).count()
    }

    /// Each sampled peer's best sample (the least delay).
    pub fn best(&self) -> BTreeMap<NodeId, Sample> {
        self.samples
            .iter()
            .filter_map(|(n, s)| Some((n.clone(), *s.iter().min_by_key(|s| s.delay_ms)?)))
            .collect()
    }

    /// This node's offset from the median of every clock it knows (see the module docs).
    pub fn estimate(&self) -> Estimate {
        let best = self.best();
        let mut clocks: Vec<(i64, i64)> = best
            .values()
            .map(|s| (s.offset_ms, s.delay_ms / 2))
            .collect();
        clocks.push((0, 0));
        clocks.sort_unstable();
        let (median, error) = clocks[(clocks.len() - 1) / 2];
        Estimate {
            offset_ms: -median,
            error_ms: error,
            peers: best.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeId {
        NodeId::new(s)
    }

    #[test]
    fn a_value_round_trips_and_garbage_is_refused() {
        let v = ClockValue {
            sent: UnixMillis(1_000),
            echoes: vec![(n("a"), UnixMillis(900), UnixMillis(950))],
        };
        assert_eq!(v.encode(), "1000;a@900@950");
        assert_eq!(ClockValue::decode(&v.encode()), Some(v));
        for bad in ["", "x", "1;a@1", "1;@1@2", "1;a@x@2"] {
            assert_eq!(ClockValue::decode(bad), None, "{bad:?}");
        }
    }

    /// Node A (clock true) and node B (clock `skew` ahead) exchange values with one-way
    /// travel times `there` and `back`; returns A's sample.
    fn exchange(skew: i64, there: i64, back: i64, hold: i64) -> Option<Sample> {
        let mut a = Offsets::new(n("a"), 200);
        let mut b = Offsets::new(n("b"), 200);
        let t = 1_000_000;
        let va = a.publish(UnixMillis(t));
        b.observe(&n("a"), &va, UnixMillis(t + there + skew));
        let vb = b.publish(UnixMillis(t + there + hold + skew));
        a.observe(&n("b"), &vb, UnixMillis(t + there + hold + back))
    }

    #[test]
    fn the_offset_is_within_half_the_delay_of_the_truth() {
        for (skew, there, back, hold) in [
            (0, 10, 10, 500),
            (3_000, 10, 10, 300),
            (-7_000, 5, 400, 0),
            (600_000, 390, 3, 90),
        ] {
            let s = exchange(skew, there, back, hold).expect("a sample");
            assert_eq!(s.delay_ms, there + back, "{skew} {there} {back}");
            assert!(
                (s.offset_ms - skew).abs() <= s.delay_ms / 2,
                "skew {skew}: estimated {} with delay {}",
                s.offset_ms,
                s.delay_ms
            );
        }
    }

    #[test]
    fn a_step_moves_the_estimate_at_once_and_later_echoes_stay_right() {
        let mut a = Offsets::new(n("a"), 200);
        let mut b = Offsets::new(n("b"), 200);
        // Both clocks agree; A publishes, B echoes 50 ms later, 10 ms each way.
        let va = a.publish(UnixMillis(1_000));
        b.observe(&n("a"), &va, UnixMillis(1_010));
        let vb = b.publish(UnixMillis(1_060));
        let s = a
            .observe(&n("b"), &vb, UnixMillis(1_070))
            .expect("a sample");
        assert_eq!((s.offset_ms, s.delay_ms), (0, 20));
        assert_eq!(a.estimate().offset_ms, 0);
        // A publishes again, then its clock is stepped 30 s forward before the echo comes.
        let va = a.publish(UnixMillis(2_000));
        b.observe(&n("a"), &va, UnixMillis(2_010));
        a.step(30_000);
        // B is now 30 s behind A: with two nodes, the one ahead (A) is off, at once.
        assert_eq!(a.estimate().offset_ms, 30_000);
        // The echo of the value published before the step gives the same answer.
        let vb = b.publish(UnixMillis(2_060));
        let s = a
            .observe(&n("b"), &vb, UnixMillis(32_070))
            .expect("a sample");
        assert_eq!((s.offset_ms, s.delay_ms), (-30_000, 20));
        // An echo of a value A never published is dropped, as is one too slow.
        let forged = "5000;a@4000@4010";
        assert_eq!(a.observe(&n("b"), forged, UnixMillis(5_010)), None);
        let va = a.publish(UnixMillis(40_000));
        b.observe(&n("a"), &va, UnixMillis(10_010));
        let vb = b.publish(UnixMillis(10_020));
        assert_eq!(a.observe(&n("b"), &vb, UnixMillis(45_000)), None);
    }

    #[test]
    fn the_median_decides_who_is_off() {
        let mut a = Offsets::new(n("a"), 200);
        let sample = |offset_ms| {
            VecDeque::from([Sample {
                offset_ms,
                delay_ms: 20,
            }])
        };
        // B is 3 s ahead of A: with two nodes, the one ahead is off, not A.
        a.samples.insert(n("b"), sample(3_000));
        assert_eq!(a.estimate().offset_ms, 0);
        // B is 3 s behind A: A is the one ahead.
        a.samples.insert(n("b"), sample(-3_000));
        assert_eq!(a.estimate().offset_ms, 3_000);
        // Three others, two of them within 40 ms of A: A is 30 ms from the median.
        a.samples.insert(n("c"), sample(40));
        a.samples.insert(n("d"), sample(-30));
        assert_eq!(a.estimate().offset_ms, 30);
        // A is 10 minutes ahead of everyone.
        for p in ["b", "c", "d"] {
            a.samples.insert(n(p), sample(-600_000));
        }
        let e = a.estimate();
        assert_eq!((e.offset_ms, e.error_ms, e.peers), (600_000, 10, 3));
    }
}
