//! The `rendezvous_hash` crate set up to compute Starling's owners: the reference that
//! `starling::core::owner` is tested (`tests/ownership.rs`) and benchmarked
//! (`benches/owners.rs`) against.
//!
//! The crate hashes each (node, item) pair with a `NodeHasher`; [`ScoreHasher`] recovers
//! the node id and the job name from what their `Hash` impls write and returns Starling's
//! score for the pair, so the crate ranks candidates by the same scores. Its weighted
//! nodes then apply the logarithmic method with the platform's `ln`.

#![allow(dead_code)]

use std::hash::{Hash, Hasher};

use rendezvous_hash::{Capacity, NodeHasher, RendezvousNodes, WeightedNode};
use starling::core::owner::{job_key, node_key, score};

/// The bytes a `str`'s `Hash` impl writes, without allocating: the text, then `0xff`.
struct Capture {
    buf: [u8; 256],
    len: usize,
}

impl Hasher for Capture {
    fn write(&mut self, bytes: &[u8]) {
        let end = (self.len + bytes.len()).min(self.buf.len());
        self.buf[self.len..end].copy_from_slice(&bytes[..end - self.len]);
        self.len = end;
    }

    fn finish(&self) -> u64 {
        0
    }
}

/// The text a `&str`-like value hashes as.
fn text_key<T: Hash>(value: &T, key: fn(&str) -> u64) -> u64 {
    let mut c = Capture {
        buf: [0; 256],
        len: 0,
    };
    value.hash(&mut c);
    // `str::hash` ends with a 0xff byte, which cannot occur in UTF-8.
    let text = &c.buf[..c.len.saturating_sub(1)];
    key(std::str::from_utf8(text).expect("node ids and job names are UTF-8"))
}

/// Starling's score of a (node, job) pair, for the crate (ids and names up to 255 bytes).
pub struct ScoreHasher;

impl<N: Hash> NodeHasher<N> for ScoreHasher {
    fn hash<T: Hash>(&self, node: &N, item: &T) -> u64 {
        score(text_key(item, job_key), text_key(node, node_key))
    }
}

/// The crate's weighted node set for `(id, weight)` members.
pub fn weighted_nodes<'a>(
    members: &[(&'a str, u32)],
) -> RendezvousNodes<WeightedNode<&'a str>, ScoreHasher> {
    let mut nodes = RendezvousNodes::new(ScoreHasher);
    for &(id, w) in members {
        nodes.insert(WeightedNode::new(
            id,
            Capacity::new(f64::from(w)).expect("weights are positive"),
        ));
    }
    nodes
}

/// The crate's owner of `job`, and whether it is a near tie: the crate's two best keys
/// within `1e-9` of each other (relative), where the crate's platform `ln` and Starling's
/// own may rank them differently.
pub fn weighted_owner<'a>(
    nodes: &RendezvousNodes<WeightedNode<&'a str>, ScoreHasher>,
    job: &str,
) -> (&'a str, bool) {
    let mut c = nodes.calc_candidates(&job);
    let first = c.next().expect("at least one node");
    let key = |n: &WeightedNode<&str>| {
        let h = ScoreHasher.hash(&n.node, &job) as f64;
        (h / u64::MAX as f64).ln() / n.capacity.value()
    };
    let near = c.next().is_some_and(|second| {
        let (a, b) = (key(first), key(second));
        ((a - b) / a).abs() < 1e-9
    });
    (first.node, near)
}
