//! Versions of catalog entries: a hybrid logical clock stamped with the writer's node id.
//!
//! # Why a hybrid logical clock
//!
//! Last writer wins needs an order every node computes the same way. Plain wall-clock time
//! `(time, node id)` would let a write made *after* seeing another lose to it whenever the
//! second writer's clock is behind: an operator reads a definition on node A, changes it
//! through node B, and the change vanishes. A hybrid logical clock keeps the version of a
//! write above every version its writer has seen ([`Hlc::observe`]), so a write always
//! beats what it was based on, while staying close to wall time for concurrent writes
//! (those still go to the later clock, then the greater node id). Time comes in as an
//! argument: the simulator's clock drives it like any other.

use serde::{Deserialize, Serialize};

use crate::core::types::{NodeId, UnixMillis};

/// The version of a catalog entry. Versions are totally ordered: by `millis`, then
/// `counter`, then `node`; the greater one wins.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Wall time of the write (Unix ms), or later when the writer had seen a later version.
    pub millis: i64,
    /// Orders writes within one millisecond.
    pub counter: u32,
    /// The node that made the write.
    pub node: NodeId,
}

impl Version {
    /// The write's time.
    pub fn time(&self) -> UnixMillis {
        UnixMillis(self.millis)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}@{}", self.millis, self.counter, self.node)
    }
}

/// A hybrid logical clock: the highest `(millis, counter)` seen or issued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hlc {
    millis: i64,
    counter: u32,
}

impl Hlc {
    /// Takes in a version seen from anyone, so the next write goes above it.
    pub fn observe(&mut self, v: &Version) {
        if (v.millis, v.counter) > (self.millis, self.counter) {
            self.millis = v.millis;
            self.counter = v.counter;
        }
    }

    /// The version of a write by `node` at `now`: above everything seen or issued so far.
    pub fn tick(&mut self, now: UnixMillis, node: &NodeId) -> Version {
        if now.0 > self.millis {
            self.millis = now.0;
            self.counter = 0;
        } else if let Some(c) = self.counter.checked_add(1) {
            self.counter = c;
        } else {
            self.millis = self.millis.saturating_add(1);
            self.counter = 0;
        }
        Version {
            millis: self.millis,
            counter: self.counter,
            node: node.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(millis: i64, counter: u32, node: &str) -> Version {
        Version {
            millis,
            counter,
            node: NodeId::new(node),
        }
    }

    #[test]
    fn versions_order_by_time_then_counter_then_node() {
        let mut all = vec![v(2, 0, "a"), v(1, 5, "b"), v(1, 5, "a"), v(1, 0, "z")];
        all.sort();
        assert_eq!(
            all,
            vec![v(1, 0, "z"), v(1, 5, "a"), v(1, 5, "b"), v(2, 0, "a")]
        );
    }

    #[test]
    fn a_write_goes_above_everything_seen_even_with_a_clock_behind() {
        let me = NodeId::new("b");
        let mut hlc = Hlc::default();
        assert_eq!(hlc.tick(UnixMillis(100), &me), v(100, 0, "b"));
        assert_eq!(hlc.tick(UnixMillis(100), &me), v(100, 1, "b"));
        // Another node's write, from a clock 5 s ahead of ours.
        let theirs = v(5_100, 3, "a");
        hlc.observe(&theirs);
        let ours = hlc.tick(UnixMillis(200), &me);
        assert!(ours > theirs, "{ours} must beat {theirs}");
        assert_eq!(ours, v(5_100, 4, "b"));
        // Our clock catches up: back to wall time.
        assert_eq!(hlc.tick(UnixMillis(6_000), &me), v(6_000, 0, "b"));
        // Observing an older version changes nothing.
        hlc.observe(&v(10, 0, "c"));
        assert_eq!(hlc.tick(UnixMillis(6_000), &me), v(6_000, 1, "b"));
    }

    #[test]
    fn the_counter_overflows_into_the_next_millisecond() {
        let me = NodeId::new("a");
        let mut hlc = Hlc::default();
        hlc.observe(&v(7, u32::MAX, "x"));
        assert_eq!(hlc.tick(UnixMillis(0), &me), v(8, 0, "a"));
    }
}
