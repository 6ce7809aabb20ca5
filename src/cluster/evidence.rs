//! Fresh evidence after a stall: proof that this node has heard, since it woke up, what a
//! live peer knew, and that the members agree on who is a member.
//!
//! # A digest that must postdate the stall
//!
//! A node woken from SIGSTOP first reads the packets queued while it was stopped, some of
//! them many seconds old. Their content is stale, and so is anything learned from them. A
//! peer's digest (every SYN and SYN-ACK carries one: per node it knows, that node's
//! heartbeat and state version) also lists *this* node's heartbeat as the peer last heard
//! it. This node's heartbeat grows with every gossip round and every message it handles,
//! so a digest showing it above the value it had when the stall was noticed was made by a
//! peer that had heard from this node after it woke: by causality, it is fresh. The node is
//! caught up with that peer once its own copy of every node's state is at least at the
//! version the digest shows (the delta that came with it, or later ones, brought it).
//!
//! Digests are read (`Digest::entries`, from the vendored chitchat's patch) only while an
//! [`EvidenceWatch`] lives.
//!
//! # Agreement
//!
//! Every node publishes `members`, a digest of the member set its planner uses
//! ([`members_digest`]), after the records it published before that view (one publisher,
//! in order). A node back from a stall waits until every other member of its view has sent
//! it a fresh digest itself (so has heard it since), its state as of that digest is here,
//! and the member set it publishes there is this node's own: then each of them counts it
//! as a member, so has stopped running its jobs, and their last records of those jobs,
//! published before, are here. A value read from a state older than the member's fresh
//! digest would not do: it may predate the stall, when everybody agreed (found on real
//! processes: a node resumed 24 ms after waking, on its peers' views of before the stop,
//! and ran two slots that a peer ran too).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chitchat::{ChitchatId, ChitchatMessage, NodeState};
use xxhash_rust::xxh3::Xxh3;

use super::{Cluster, KEY_MEMBERS, Sent};
use crate::core::planner::View;
use crate::core::types::NodeId;

/// What one peer's digest showed: this node's heartbeat as the peer knew it, and every
/// other node's state version.
#[derive(Clone, Debug, Default)]
pub(super) struct PeerDigest {
    my_heartbeat: u64,
    versions: Vec<(ChitchatId, u64)>,
}

/// Digests from peers, kept while an [`EvidenceWatch`] lives: the latest per peer address.
#[derive(Default)]
pub(super) struct Digests {
    /// Watches alive.
    pub(super) watching: std::sync::atomic::AtomicUsize,
    pub(super) latest: std::sync::Mutex<BTreeMap<SocketAddr, PeerDigest>>,
}

impl Sent {
    /// Reads a received message's digest for the evidence, while a watch lives.
    pub(super) fn note_evidence(&self, from: SocketAddr, message: &ChitchatMessage) {
        let digest = match message {
            ChitchatMessage::Syn { digest, .. } | ChitchatMessage::SynAck { digest, .. } => digest,
            _ => return,
        };
        let mut mine = None;
        let mut versions = Vec::new();
        for (id, heartbeat, version) in digest.entries() {
            if *id == self.me {
                mine = Some(u64::from(heartbeat));
            } else {
                versions.push((id.clone(), version));
            }
        }
        let Some(my_heartbeat) = mine else {
            return;
        };
        if let Ok(mut latest) = self.digests.latest.lock() {
            latest.insert(
                from,
                PeerDigest {
                    my_heartbeat,
                    versions,
                },
            );
        }
    }
}

/// Keeps peers' digests being read (see the module docs) until dropped.
pub struct EvidenceWatch(Arc<Sent>);

impl Drop for EvidenceWatch {
    fn drop(&mut self) {
        if self.0.digests.watching.fetch_sub(1, Ordering::AcqRel) == 1
            && let Ok(mut latest) = self.0.digests.latest.lock()
        {
            latest.clear();
        }
    }
}

impl Cluster {
    /// This node's own heartbeat now (it grows with every gossip round and message).
    pub async fn heartbeat(&self) -> u64 {
        let chitchat = self.handle.chitchat();
        let mut guard = chitchat.lock().await;
        guard.self_node_state().heartbeat().into()
    }

    /// Starts reading peers' digests for [`Cluster::evidence`].
    pub fn watch_evidence(&self) -> EvidenceWatch {
        self.sent.digests.watching.fetch_add(1, Ordering::AcqRel);
        EvidenceWatch(self.sent.clone())
    }

    /// Where this node stands after a stall noticed when its heartbeat was `mark` (see the
    /// module docs), given the `view` its planner uses. Asks for a gossip round with every
    /// member it still waits for.
    pub async fn evidence(&self, mark: u64, view: &View, me: &NodeId) -> Evidence {
        let fresh: BTreeMap<SocketAddr, PeerDigest> = match self.sent.digests.latest.lock() {
            Ok(latest) => latest
                .iter()
                .filter(|(_, d)| d.my_heartbeat > mark)
                .map(|(a, d)| (*a, d.clone()))
                .collect(),
            Err(_) => BTreeMap::new(),
        };
        let ours = members_digest(view);
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let states = guard.node_states();
        let caught_up = fresh
            .iter()
            .find(|(_, d)| {
                d.versions
                    .iter()
                    .all(|(id, v)| states.get(id).is_some_and(|s| s.max_version() >= *v))
            })
            .map(|(addr, _)| *addr);
        // Each member's newest generation.
        let mut newest: BTreeMap<&str, (&ChitchatId, &NodeState)> = BTreeMap::new();
        for (id, state) in states {
            let e = newest.entry(&id.node_id).or_insert((id, state));
            if id.generation_id > e.0.generation_id {
                *e = (id, state);
            }
        }
        let mut ask = Vec::new();
        let waiting_for = view
            .members
            .iter()
            .filter(|m| *m != me)
            .filter(|m| {
                let Some((id, state)) = newest.get(m.as_str()) else {
                    return true;
                };
                ask.push(id.gossip_advertise_addr);
                let Some(digest) = fresh.get(&id.gossip_advertise_addr) else {
                    return true;
                };
                let Some((_, theirs)) = digest.versions.iter().find(|(i, _)| i == *id) else {
                    return true;
                };
                // Its state as of after it heard this node, and the view it published then.
                let behind =
                    state.max_version() < *theirs || state.get(KEY_MEMBERS) != Some(ours.as_str());
                if !behind {
                    ask.pop();
                }
                behind
            })
            .cloned()
            .collect();
        drop(guard);
        // A round with each member not heard yet, rather than waiting for chitchat's random
        // picks (three peers a round) to reach every one of them.
        for addr in ask {
            let _ = self.handle.gossip(addr);
        }
        Evidence {
            caught_up,
            waiting_for,
        }
    }
}

/// Where a node stands after a stall (see [`Cluster::evidence`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// A peer whose digest was made after it heard this node's heartbeat of after the
    /// stall, and whose every node version this node now holds: this node knows what that
    /// peer knew then. `None` if no such peer yet.
    pub caught_up: Option<SocketAddr>,
    /// The members of the view, other than this node, that have not yet been heard since
    /// the stall, or whose state of after they heard it is not here yet, or who publish
    /// another member set than the view's: they may not count this node as a member.
    pub waiting_for: Vec<NodeId>,
}

/// The digest of a member set that nodes publish as `members`: the count, then an xxh3 of
/// the sorted ids, so two nodes publish the same value exactly when their planners use the
/// same members.
pub fn members_digest(view: &View) -> String {
    let mut h = Xxh3::new();
    for m in &view.members {
        h.update(m.as_str().as_bytes());
        h.update(b"\n");
    }
    format!("{}/{:016x}", view.members.len(), h.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_members_digest_depends_on_the_members_only() {
        let a = View::of([NodeId::new("a"), NodeId::new("b")]);
        let mut b = View::of([NodeId::new("b"), NodeId::new("a")]);
        b.alive.insert(NodeId::new("c"));
        assert_eq!(members_digest(&a), members_digest(&b));
        assert_ne!(
            members_digest(&a),
            members_digest(&View::of([NodeId::new("a")]))
        );
        assert!(members_digest(&a).starts_with("2/"));
    }
}
