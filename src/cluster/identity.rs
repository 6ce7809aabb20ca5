//! Node identity: a node id is held by one process at a time.
//!
//! A second process started with the id of a live node used to run every one of that id's
//! slots a second time (issue 14: 65 in 15 s, none detected), and when it stopped, the
//! whole cluster saw the id as leaving for about 3 s: views took each id's newest
//! generation, which was the impostor's, `leaving`.
//!
//! # The probe
//!
//! Before it announces its id, a node that has seeds gossips for a moment under a probe
//! identity: the id `probe <node id>` (node ids hold no whitespace, so it is never a
//! member anywhere, and older nodes see its status `leaving`). It learns every node's
//! heartbeat from its peers' digests. If a node with its id, at another address, has a
//! heartbeat that grows while it watches, that id is live: [`probe`] returns
//! [`Conflict`], and the node does not start. It watches for three gossip intervals after
//! it first hears a peer, so that the heartbeat of a process that just died has stopped
//! moving through gossip, then for three more. An incarnation at this node's own address
//! is an earlier process of this node (the address is bound now), not a rival.
//!
//! # Two holders anyway
//!
//! Two processes can still hold one id, when each was started on one side of a partition.
//! Once they hear of each other, both log an error, and the older generation keeps the
//! id: the holder with the lower generation (its start time), then the lower address,
//! fires; the other fires nothing while the first lives ([`conflict_with`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::transport::Transport;
use chitchat::{ChitchatConfig, ChitchatId, FailureDetectorConfig, NodeState, spawn_chitchat};

use super::{GossipConfig, KEY_STATUS, STATUS_LEAVING};
use crate::core::types::NodeId;

/// Another live process holds this node's id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The other holder's gossip address.
    pub addr: SocketAddr,
    /// Its generation (its start time, Unix ms).
    pub generation: u64,
}

/// The chitchat node id a probe for `node` gossips under.
pub fn probe_id(node: &NodeId) -> String {
    format!("probe {node}")
}

/// True for an id that is not a node's: a probe's (see the module docs).
pub fn is_probe(chitchat_node_id: &str) -> bool {
    chitchat_node_id.contains(char::is_whitespace)
}

/// Gossip rounds a probe waits to hear a first peer before it gives up (the others are
/// down: nobody can hold the id).
const PROBE_CONTACT_INTERVALS: u32 = 25;
/// Gossip rounds a probe watches heartbeats, twice, after it first heard a peer.
const PROBE_WATCH_INTERVALS: u32 = 3;

/// Gossips under a probe identity on the node's own address (see the module docs) and
/// returns the live holder of `config.node_id`, if there is one. Call before the node's
/// own gossip starts; the probe's socket is closed when it returns.
pub async fn probe(
    config: &GossipConfig,
    transport: Arc<dyn Transport>,
) -> anyhow::Result<Option<Conflict>> {
    let id = ChitchatId::new(
        probe_id(&config.node_id),
        config.generation,
        config.advertise_addr,
    );
    let chitchat_config = ChitchatConfig {
        chitchat_id: id.clone(),
        cluster_id: config.cluster_id.clone(),
        gossip_interval: config.gossip_interval,
        listen_addr: config.listen_addr,
        seed_nodes: config.seeds.iter().map(|s| s.to_string()).collect(),
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: config.phi_threshold,
            initial_interval: config.gossip_interval,
            // Peers forget a probe like any dead node.
            dead_node_grace_period: config.dead_node_grace_period,
            ..FailureDetectorConfig::default()
        },
        marked_for_deletion_grace_period: config.dead_node_grace_period,
        catchup_callback: None,
        extra_liveness_predicate: None,
        live_nodes_watcher_keys: Some(Box::new(|key| super::WATCHED_KEYS.contains(&key))),
        protocol_version: chitchat::ProtocolVersion::V0,
    };
    let initial = vec![(KEY_STATUS.to_string(), STATUS_LEAVING.to_string())];
    let handle = spawn_chitchat(chitchat_config, initial, transport.as_ref()).await?;
    let chitchat = handle.chitchat();
    let heartbeats = || async {
        let guard = chitchat.lock().await;
        let others = guard.node_states().keys().any(|k| *k != id);
        (others, holders(guard.node_states(), config))
    };
    let tick = config.gossip_interval;
    let mut found = None;
    for _ in 0..PROBE_CONTACT_INTERVALS {
        tokio::time::sleep(tick).await;
        if heartbeats().await.0 {
            // Heartbeats of a process that just died may still be moving through gossip.
            tokio::time::sleep(tick * PROBE_WATCH_INTERVALS).await;
            let before = heartbeats().await.1;
            tokio::time::sleep(tick * PROBE_WATCH_INTERVALS).await;
            let after = heartbeats().await.1;
            found = after
                .into_iter()
                .find(|(k, h)| before.get(k).is_some_and(|b| h > b))
                .map(|((addr, generation), _)| Conflict { addr, generation });
            break;
        }
    }
    drop(chitchat);
    let _ = handle.shutdown().await;
    Ok(found)
}

/// Other incarnations of `config.node_id` (at other addresses) and their heartbeats.
fn holders(
    states: &BTreeMap<ChitchatId, NodeState>,
    config: &GossipConfig,
) -> BTreeMap<(SocketAddr, u64), u64> {
    states
        .iter()
        .filter(|(k, _)| {
            *k.node_id == *config.node_id.as_str()
                && k.gossip_advertise_addr != config.advertise_addr
        })
        .map(|(k, s)| {
            (
                (k.gossip_advertise_addr, k.generation_id),
                u64::from(s.heartbeat()),
            )
        })
        .collect()
}

/// Heartbeats of the other incarnations of this node's id, as last seen, and when each
/// last moved (`None`: not since it was first seen).
pub type Rivals = BTreeMap<ChitchatId, (u64, Option<tokio::time::Instant>)>;

/// The live incarnations in `live` of this node's id (`me`) at other addresses whose
/// heartbeat moved within the last `within` (`seen` keeps track), and of them the one that
/// keeps the id instead of this one, if any: a lower generation, then a lower address.
pub fn conflict_with(
    live: &BTreeMap<ChitchatId, NodeState>,
    me: &ChitchatId,
    seen: &mut Rivals,
    now: tokio::time::Instant,
    within: Duration,
) -> (Option<Conflict>, Vec<Conflict>) {
    seen.retain(|id, _| live.contains_key(id));
    let mut rivals = Vec::new();
    for (id, state) in live {
        if id.node_id != me.node_id || id.gossip_advertise_addr == me.gossip_advertise_addr {
            continue;
        }
        let h = u64::from(state.heartbeat());
        let e = seen.entry(id.clone()).or_insert((h, None));
        if h != e.0 {
            *e = (h, Some(now));
        }
        if e.1
            .is_some_and(|t| now.saturating_duration_since(t) <= within)
        {
            rivals.push(Conflict {
                addr: id.gossip_advertise_addr,
                generation: id.generation_id,
            });
        }
    }
    let rank = |generation: u64, addr: SocketAddr| (generation, addr.to_string());
    let keeps = rivals
        .iter()
        .filter(|r| rank(r.generation, r.addr) < rank(me.generation_id, me.gossip_advertise_addr))
        .min_by_key(|r| rank(r.generation, r.addr))
        .cloned();
    (keeps, rivals)
}
