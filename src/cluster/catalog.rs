//! The catalog's side of gossip: listening to the catalog's keys (see
//! [`crate::catalog::keys`] for the layout), setting and deleting this node's, and reading
//! who holds what.
//!
//! Chitchat calls listeners only for values set, never for deletions or for a node's state
//! leaving after `dead_node_grace_period`, so the catalog also reads the states directly
//! ([`Publisher::catalog_scan`]) when membership changes and every few seconds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use chitchat::ListenerHandle;
use tokio::sync::mpsc;
use xxhash_rust::xxh3::xxh3_64;

use super::{Cluster, KEY_STATUS, Publisher, STATUS_LEAVING};
use crate::catalog::keys::{
    KEY_CANCEL_PREFIX, KEY_FILE_PREFIX, KEY_FILES, KEY_JOB_PREFIX, KEY_PAUSE_PREFIX,
    KEY_RAN_PREFIX, KEY_RUN_PREFIX,
};
use crate::core::types::NodeId;

/// A catalog key set by another node (or an earlier generation of this one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEvent {
    /// The node.
    pub node: NodeId,
    /// Its generation.
    pub generation: u64,
    /// The whole key (`job:x`, `files`, ...).
    pub key: String,
    /// The value.
    pub value: String,
}

/// Keeps the catalog's listeners subscribed until dropped.
pub struct CatalogListeners(#[allow(dead_code)] Vec<ListenerHandle>);

/// One node state chitchat holds, as the catalog sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    /// Its id.
    pub id: NodeId,
    /// Its generation.
    pub generation: u64,
    /// The address it gossips on.
    pub addr: SocketAddr,
    /// Alive in chitchat's failure detector.
    pub live: bool,
    /// Its status key says it is leaving.
    pub leaving: bool,
    /// Its status key says its clock is unverified or out of bound (see `node::skew`).
    pub clock: bool,
    /// The value of its `files` marker, if set.
    pub files_marker: Option<String>,
    /// This node itself (its current generation).
    pub me: bool,
}

/// What [`Publisher::catalog_scan`] read.
#[derive(Clone, Debug, Default)]
pub struct CatalogScan {
    /// Every node state chitchat holds (all generations), in id order.
    pub nodes: Vec<NodeRow>,
    /// Per register key, the other live nodes (newest generation, not leaving) holding
    /// exactly the value the caller expects.
    pub holders: BTreeMap<String, Vec<NodeId>>,
}

/// Register key prefixes, read by [`Publisher::catalog_scan`].
const REGISTER_PREFIXES: [&str; 5] = [
    KEY_JOB_PREFIX,
    KEY_PAUSE_PREFIX,
    KEY_RUN_PREFIX,
    KEY_RAN_PREFIX,
    KEY_CANCEL_PREFIX,
];

impl Cluster {
    /// Sends every catalog key other nodes set (and this node's earlier generations did)
    /// to `events`: those already held, then each as it is set. `file:` keys are not sent:
    /// a node's `files` marker, set after them, says when to read its set whole
    /// ([`Publisher::file_set`]).
    pub async fn subscribe_catalog(
        &self,
        events: mpsc::UnboundedSender<CatalogEvent>,
    ) -> CatalogListeners {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let me = guard.self_chitchat_id().clone();
        let prefixes = REGISTER_PREFIXES.into_iter().chain([KEY_FILES]);
        let mut listeners = Vec::new();
        for prefix in prefixes {
            let tx = events.clone();
            let me = me.clone();
            let whole = prefix == KEY_FILES;
            // Listeners run under chitchat's lock: forward, nothing else.
            listeners.push(guard.subscribe_event(prefix, move |ev| {
                if *ev.node == me || (whole && !ev.key.is_empty()) {
                    return;
                }
                let _ = tx.send(CatalogEvent {
                    node: NodeId::new(&*ev.node.node_id),
                    generation: ev.node.generation_id,
                    key: format!("{prefix}{}", ev.key),
                    value: ev.value.to_string(),
                });
            }));
        }
        for (id, state) in guard.node_states() {
            if *id == me {
                continue;
            }
            for prefix in REGISTER_PREFIXES {
                for (key, v) in state.iter_prefix(prefix) {
                    let _ = events.send(CatalogEvent {
                        node: NodeId::new(&*id.node_id),
                        generation: id.generation_id,
                        key: key.to_string(),
                        value: v.value.clone(),
                    });
                }
            }
            if let Some(value) = state.get(KEY_FILES) {
                let _ = events.send(CatalogEvent {
                    node: NodeId::new(&*id.node_id),
                    generation: id.generation_id,
                    key: KEY_FILES.to_string(),
                    value: value.to_string(),
                });
            }
        }
        CatalogListeners(listeners)
    }
}

impl Publisher {
    /// Sets and deletes keys of this node's state, under one lock. Returns the
    /// publication's sequence number, for [`Publisher::confirm`].
    pub async fn set_keys(&self, sets: &[(String, String)], deletes: &[String]) -> u64 {
        let chitchat = self.handle.chitchat();
        let mut guard = chitchat.lock().await;
        let state = guard.self_node_state();
        for (k, v) in sets {
            state.set(k, v);
        }
        for k in deletes {
            if state.get(k).is_some() {
                state.delete(k);
            }
        }
        let seq = state.max_version();
        self.sent.published.fetch_max(seq, Ordering::AcqRel);
        seq
    }

    /// Packs the key-value maps of every node state chitchat holds (see
    /// `Chitchat::compact_node_states`): nothing read from them changes.
    pub async fn compact_states(&self) {
        self.handle.chitchat().lock().await.compact_node_states();
    }

    /// Reads every node state chitchat holds, and which live nodes (newest generation,
    /// not leaving, not this node) hold which register values. `expected` gives, for a
    /// register key, the xxh3 of the value the caller holds as current (`None`: skip).
    pub async fn catalog_scan(&self, mut expected: impl FnMut(&str) -> Option<u64>) -> CatalogScan {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let me = guard.self_chitchat_id().clone();
        let live: std::collections::BTreeSet<_> = guard.live_nodes().cloned().collect();
        let mut scan = CatalogScan::default();
        let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
        // A starting node's id probe is not a node (see `identity`).
        let states: Vec<_> = guard
            .node_states()
            .iter()
            .filter(|(id, _)| !super::is_probe(&id.node_id))
            .collect();
        for &(id, state) in &states {
            let e = newest.entry(&id.node_id).or_insert(id.generation_id);
            *e = (*e).max(id.generation_id);
            scan.nodes.push(NodeRow {
                id: NodeId::new(&*id.node_id),
                generation: id.generation_id,
                addr: id.gossip_advertise_addr,
                live: live.contains(id),
                leaving: state.get(KEY_STATUS) == Some(STATUS_LEAVING),
                clock: state.get(KEY_STATUS) == Some(super::STATUS_CLOCK),
                files_marker: state.get(KEY_FILES).map(str::to_string),
                me: *id == me,
            });
        }
        for &(id, state) in &states {
            let holder = *id != me
                && live.contains(id)
                && newest.get(&*id.node_id) == Some(&id.generation_id)
                && state.get(KEY_STATUS) != Some(STATUS_LEAVING);
            if !holder {
                continue;
            }
            for prefix in REGISTER_PREFIXES {
                for (key, v) in state.iter_prefix(prefix) {
                    if expected(key) == Some(xxh3_64(v.value.as_bytes())) {
                        scan.holders
                            .entry(key.to_string())
                            .or_default()
                            .push(NodeId::new(&*id.node_id));
                    }
                }
            }
        }
        scan
    }

    /// The gossip address of a live node other than this one, if there is one.
    pub async fn a_live_peer(&self) -> Option<SocketAddr> {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let me = guard.self_chitchat_id().clone();
        guard
            .live_nodes()
            .find(|id| **id != me && !super::is_probe(&id.node_id))
            .map(|id| id.gossip_advertise_addr)
    }

    /// The `files` marker and `file:` keys (name, value) of generation `generation` of
    /// `node`, read under one lock; `None` if chitchat holds no such state.
    pub async fn file_set(
        &self,
        node: &NodeId,
        generation: u64,
    ) -> Option<(Option<String>, Vec<(String, String)>)> {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let (_, state) = guard
            .node_states()
            .iter()
            .find(|(id, _)| *id.node_id == *node.as_str() && id.generation_id == generation)?;
        let marker = state.get(KEY_FILES).map(str::to_string);
        let keys = state
            .iter_prefix(KEY_FILE_PREFIX)
            .map(|(k, v)| (k[KEY_FILE_PREFIX.len()..].to_string(), v.value.clone()))
            .collect();
        Some((marker, keys))
    }
}
