//! `GET /v1/gossip`: this node's gossip security for the console's members table: the key it
//! seals with, the keys it opens with, the key each peer was last heard sealing with, and
//! its packet counters (drops by reason).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::api::ApiState;
use crate::cluster::{GossipKeys, GossipStats};

/// The answer of `GET /v1/gossip`. Key ids are public fingerprints (8 hex digits, as in
/// the logs and every sealed packet), never keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipView {
    /// The node answering.
    pub node: String,
    /// The key this node seals with; `None`: its gossip is open (no cluster key).
    pub sealing_key: Option<String>,
    /// Every key it opens with, the sealing key first.
    pub keys_held: Vec<String>,
    /// The key each peer sealed its last packet to this node with, by gossip address.
    pub peers: Vec<PeerKey>,
    /// Datagrams received, accepted, and dropped by reason.
    pub packets: Packets,
}

/// The key one peer seals with, as this node last saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerKey {
    /// The address its packets come from (its gossip address).
    pub address: String,
    /// The key id of its last packet accepted here.
    pub key: String,
}

/// Packet counters (see [`GossipStats`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packets {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams opened and handed to gossip.
    pub accepted: u64,
    /// Dropped: a plain packet at a keyed node (its sender has no key).
    pub dropped_plain: u64,
    /// Dropped: a sealed packet at an open node.
    pub dropped_sealed: u64,
    /// Dropped: sealed with a key this node does not hold.
    pub dropped_unknown_key: u64,
    /// Dropped: failed authentication (forged, corrupted, another cluster id).
    pub dropped_forged: u64,
    /// Dropped: outside the replay window.
    pub dropped_stale: u64,
    /// Dropped: anything else (not a packet, not a gossip message).
    pub dropped_other: u64,
}

impl GossipView {
    /// The view of `node`'s keys and counters.
    pub fn new(node: &str, keys: &GossipKeys, stats: &GossipStats) -> GossipView {
        GossipView {
            node: node.to_string(),
            sealing_key: keys.sealing.map(|k| k.to_string()),
            keys_held: keys.held.iter().map(|k| k.to_string()).collect(),
            peers: keys
                .peers
                .iter()
                .map(|(address, key)| PeerKey {
                    address: address.to_string(),
                    key: key.to_string(),
                })
                .collect(),
            packets: Packets {
                received: stats.packets_received,
                accepted: stats.packets_accepted,
                dropped_plain: stats.rejected_plain,
                dropped_sealed: stats.rejected_sealed,
                dropped_unknown_key: stats.rejected_unknown_key,
                dropped_forged: stats.rejected_forged,
                dropped_stale: stats.rejected_stale,
                dropped_other: stats.rejected_malformed + stats.rejected_undecodable,
            },
        }
    }
}

pub(super) async fn gossip(State(state): State<ApiState>) -> Json<GossipView> {
    let node = state.node();
    Json(GossipView::new(
        node.node_id().as_str(),
        &node.gossip_keys(),
        &node.gossip_stats(),
    ))
}
