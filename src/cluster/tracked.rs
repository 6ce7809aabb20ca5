//! The bound on the nodes a node tracks in gossip ([`crate::core::limits::MAX_MEMBERS`]).
//!
//! chitchat 0.13 puts its whole digest, one entry per node it knows (live, dead, or an
//! older generation not yet forgotten), in every message, and its server panics once the
//! digest passes a datagram (about 1,280 nodes with short ids; issue 16). The transport
//! passes every received envelope through [`Tracked::filter`] before chitchat sees it:
//! the first nodes heard of are tracked, and once the bound is reached the entries of any
//! other node are cut from digests and deltas, so chitchat never learns of it. A node not
//! mentioned by any packet for the forget time (longer than `dead_node_grace_period`,
//! after which chitchat itself forgets a dead node) frees its place. The node's own id
//! (any generation) is always kept and counts as one: chitchat knows itself whatever
//! arrives, so cutting it would only let one more stranger in.

use std::collections::BTreeMap;
use std::time::Duration;

use chitchat::{ChitchatEnvelope, ChitchatId, ChitchatMessage};

use crate::core::types::UnixMillis;

/// The nodes heard of, and when each was last mentioned.
#[derive(Debug)]
pub(crate) struct Tracked {
    limit: usize,
    forget_after_ms: i64,
    seen: BTreeMap<ChitchatId, UnixMillis>,
    own: Option<String>,
}

impl Tracked {
    /// Tracks at most `limit` nodes, each until no packet has mentioned it for
    /// `forget_after`; `own` is this node's id, always kept, when the transport knows it.
    pub fn new(limit: usize, forget_after: Duration, own: Option<String>) -> Tracked {
        Tracked {
            // This node takes one place.
            limit: if own.is_some() {
                limit.saturating_sub(1)
            } else {
                limit
            },
            forget_after_ms: i64::try_from(forget_after.as_millis()).unwrap_or(i64::MAX),
            seen: BTreeMap::new(),
            own,
        }
    }

    /// How many nodes are tracked now, this one included when known.
    pub fn len(&self) -> usize {
        self.seen.len() + usize::from(self.own.is_some())
    }

    /// Cuts from `envelope` the nodes past the limit, received at `now`; returns how many
    /// entries were cut.
    pub fn filter(&mut self, envelope: &mut ChitchatEnvelope, now: UnixMillis) -> usize {
        if self.seen.len() >= self.limit {
            let forget = self.forget_after_ms;
            self.seen.retain(|_, &mut t| now.millis_since(t) <= forget);
        }
        let mut cut = 0;
        let own = self.own.as_deref();
        let mut keep = |id: &ChitchatId| {
            if own == Some(&id.node_id[..]) {
                return true;
            }
            if let Some(t) = self.seen.get_mut(id) {
                *t = now;
                return true;
            }
            if self.seen.len() < self.limit {
                self.seen.insert(id.clone(), now);
                return true;
            }
            cut += 1;
            false
        };
        match &mut envelope.message {
            ChitchatMessage::Syn { digest, .. } => digest.retain_nodes(&mut keep),
            ChitchatMessage::SynAck { digest, delta } => {
                digest.retain_nodes(&mut keep);
                delta.retain_nodes(&mut keep);
            }
            ChitchatMessage::Ack { delta } => delta.retain_nodes(&mut keep),
            ChitchatMessage::BadCluster => {}
        }
        cut
    }
}
