//! The chitchat adapter: spawns gossip, turns chitchat's live set into the planner's
//! [`View`], and publishes this node's metadata and fire records.
//!
//! # Key layout (per node, in its own chitchat state)
//!
//! | key | value |
//! |---|---|
//! | `status` | `alive`, or `leaving` once a graceful leave began |
//! | `version` | the Starling version the node runs |
//! | `fire:<job>` | the last slot this node started for `<job>`, as Unix milliseconds |
//!
//! Values stay small: a record is one integer, and job names are at most 128 bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use chitchat::transport::Transport;
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ListenerHandle, NodeState,
    ProtocolVersion, spawn_chitchat,
};
use tokio::sync::{mpsc, watch};

use crate::core::planner::View;
use crate::core::types::{JobId, NodeId, UnixMillis};

/// Key holding a node's status.
pub const KEY_STATUS: &str = "status";
/// Key holding a node's Starling version.
pub const KEY_VERSION: &str = "version";
/// Prefix of fire-record keys: `fire:<job>`.
pub const KEY_FIRE_PREFIX: &str = "fire:";
/// Status of a node that is running normally.
pub const STATUS_ALIVE: &str = "alive";
/// Status of a node that began a graceful leave.
pub const STATUS_LEAVING: &str = "leaving";

/// Gossip settings. See `NodeConfig` for the user-facing defaults.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// A number that grows with every restart of the node (its start time in ms).
    pub generation: u64,
    /// UDP address to bind.
    pub listen_addr: SocketAddr,
    /// UDP address peers reach us at.
    pub advertise_addr: SocketAddr,
    /// Peers to contact first.
    pub seeds: Vec<SocketAddr>,
    /// Nodes with another cluster id are ignored.
    pub cluster_id: String,
    /// Time between gossip rounds.
    pub gossip_interval: Duration,
    /// Phi-accrual suspicion threshold.
    pub phi_threshold: f64,
    /// How long a dead node's state (and its records) is kept.
    pub dead_node_grace_period: Duration,
}

/// A fire record seen in gossip: `node` started `slot` of `job`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The job.
    pub job: JobId,
    /// The slot.
    pub slot: UnixMillis,
    /// The node that published it (its id, whatever the generation).
    pub node: NodeId,
}

/// A running chitchat instance and the streams the node runtime reads.
pub struct Cluster {
    handle: ChitchatHandle,
    live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    _records_listener: ListenerHandle,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster({:?})", self.handle.chitchat_id())
    }
}

impl Cluster {
    /// Starts gossip over `transport`. Fire records seen from any node (including our own
    /// earlier generations) are sent to `records`.
    pub async fn spawn(
        config: &GossipConfig,
        transport: &dyn Transport,
        records: mpsc::UnboundedSender<Record>,
    ) -> anyhow::Result<Cluster> {
        let chitchat_id = ChitchatId::new(
            config.node_id.as_str(),
            config.generation,
            config.advertise_addr,
        );
        let failure_detector_config = FailureDetectorConfig {
            phi_threshold: config.phi_threshold,
            // Near the gossip interval, so detection is fast right after a join too.
            initial_interval: config.gossip_interval,
            dead_node_grace_period: config.dead_node_grace_period,
            ..FailureDetectorConfig::default()
        };
        let chitchat_config = ChitchatConfig {
            chitchat_id,
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: config.listen_addr,
            // IP literals only: host names would start chitchat's DNS refresh loop.
            seed_nodes: config.seeds.iter().map(|s| s.to_string()).collect(),
            failure_detector_config,
            marked_for_deletion_grace_period: config.dead_node_grace_period,
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V0,
        };
        let initial = vec![
            (KEY_STATUS.to_string(), STATUS_ALIVE.to_string()),
            (
                KEY_VERSION.to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ];
        let handle = spawn_chitchat(chitchat_config, initial, transport).await?;
        let chitchat = handle.chitchat();
        let guard = chitchat.lock().await;
        let live = guard.live_nodes_watcher();
        // Runs under chitchat's lock: parse and forward, nothing else.
        let listener = guard.subscribe_event(KEY_FIRE_PREFIX, move |ev| {
            if let Ok(ms) = ev.value.parse::<i64>() {
                let _ = records.send(Record {
                    job: JobId::new(ev.key),
                    slot: UnixMillis(ms),
                    node: NodeId::new(&*ev.node.node_id),
                });
            }
        });
        drop(guard);
        Ok(Cluster {
            handle,
            live,
            _records_listener: listener,
        })
    }

    /// A receiver that changes whenever chitchat's live set or a live node's keys change.
    pub fn live_watcher(&self) -> watch::Receiver<BTreeMap<ChitchatId, NodeState>> {
        self.live.clone()
    }

    /// Starts the task that publishes fire records sent to the returned channel, in order,
    /// each batch under one lock, so the node's task never waits for chitchat's lock.
    pub fn spawn_publisher(
        &self,
    ) -> (
        mpsc::UnboundedSender<Vec<Record>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Record>>();
        let chitchat = self.handle.chitchat();
        let task = tokio::spawn(async move {
            while let Some(mut batch) = rx.recv().await {
                while let Ok(more) = rx.try_recv() {
                    batch.extend(more);
                }
                let mut guard = chitchat.lock().await;
                let state = guard.self_node_state();
                for r in &batch {
                    state.set(format!("{KEY_FIRE_PREFIX}{}", r.job), r.slot.0);
                }
            }
        });
        (tx, task)
    }

    /// Marks this node as leaving: peers stop counting it as a member.
    pub async fn set_leaving(&self) {
        let chitchat = self.handle.chitchat();
        chitchat
            .lock()
            .await
            .self_node_state()
            .set(KEY_STATUS, STATUS_LEAVING);
    }

    /// Number of other nodes chitchat knows about (live or not).
    pub async fn known_peers(&self) -> usize {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let me = guard.self_chitchat_id().clone();
        guard.node_states().keys().filter(|id| **id != me).count()
    }

    /// Stops gossip.
    pub async fn shutdown(self) {
        let _ = self.handle.shutdown().await;
    }

    /// Stops gossip without waiting (a crash, for tests).
    pub fn abort(&self) {
        self.handle.abort();
    }
}

/// Turns chitchat's live set into a [`View`]: per node id keep only the highest generation;
/// a node whose status is `leaving` is alive but not a member.
pub fn view_from_live(live: &BTreeMap<ChitchatId, NodeState>) -> View {
    let mut newest: BTreeMap<&str, (u64, &NodeState)> = BTreeMap::new();
    for (id, state) in live {
        let e = newest
            .entry(&id.node_id)
            .or_insert((id.generation_id, state));
        if id.generation_id > e.0 {
            *e = (id.generation_id, state);
        }
    }
    let mut members = BTreeSet::new();
    let mut alive = BTreeSet::new();
    for (id, (_, state)) in newest {
        let node = NodeId::new(id);
        if state.get(KEY_STATUS) != Some(STATUS_LEAVING) {
            members.insert(node.clone());
        }
        alive.insert(node);
    }
    View { members, alive }
}
