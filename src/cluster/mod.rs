//! The chitchat adapter: spawns gossip, turns chitchat's live set into the planner's
//! [`View`], and publishes this node's metadata and fire records.
//!
//! # Key layout (per node, in its own chitchat state)
//!
//! | key | value |
//! |---|---|
//! | `status` | `alive`; `leaving` once a graceful leave began; `clock` while its clock is not verified against its peers' or is off by more than `max_clock_offset` (see `offset`; no node counts it as a member then) |
//! | `clock` | its wall clock, and echoes of its peers' (see `offset`), every gossip interval |
//! | `version` | the Starling version the node runs |
//! | `fire:<job>` | the job's fire record: `slot/epoch/first` (the last slot this node started, in Unix milliseconds; its ownership epoch; the first slot of that epoch), then `/<slot>/<node key>` when another node's record placed the epoch's start (see `FireRecord::follows`) |
//! | `api` | the address of the node's HTTP API, when it has one (`--api`): any node's API gathers the cluster's run history from it |
//! | `weight` | the node's weight (`--weight`), when it is not 1: its share of the jobs relative to the others' |
//! | `tags` | the node's tags (`--tag`), `k=v` pairs joined by `,` in key order, when it has any |
//! | `running:<job>` | the slot of `<job>` this node is running, published once a run has lasted a gossip interval; empty when it ended |
//! | `members` | the digest of the member set this node's planner uses (see `evidence`): a node back from a stall knows the others count it as a member again when they publish the same value as its own |
//!
//! Values stay small: a record is at most five integers, and job names are at most 128
//! bytes.
//!
//! # The transport
//!
//! Gossip runs over [`GossipTransport`] (see `transport.rs`): every chitchat envelope is
//! serialized, sealed with the cluster key when the node has one, and sent as one datagram;
//! every datagram is opened and verified before chitchat parses it (README, Security).
//!
//! # Records leave before runs start
//!
//! Every publication gets a sequence number. The adapter wraps the transport: chitchat
//! answers each message it receives before it reads the next, so when it sends a SYN-ACK
//! (answering a peer's SYN) or an ACK (answering a peer's SYN-ACK), both of which carry the
//! delta of our state the peer lacks, that answer holds everything published before the
//! message it answers arrived. The wrapper credits the peer with that sequence number. A
//! run waits until the job's runner-up has been credited with its record's publication
//! (see [`Publisher::confirm`]), so a node that crashes right after starting a slot has
//! already told the node that takes over.
//!
//! # Receipts (quorum mode)
//!
//! A message sent is not a message received. Quorum mode needs proof that a peer *has* a
//! record: a node runs a slot only once a quorum holds its record, so that any majority
//! side of a later partition knows of the run. The proof is the peer's own digest: every
//! SYN and SYN-ACK a peer sends carries, per node it knows, the highest version of that
//! node's state it holds (chitchat's `max_version`: it holds every key at that version).
//! A publication's sequence number is our state's version after it, so a peer whose digest
//! shows our current generation at version `v` holds every publication up to `v`.
//!
//! The wrapper reads the entry for this node with `Digest::max_version`, which the vendored
//! chitchat adds (vendor/README.md), and only while a run waits for receipts. A test over
//! real UDP (`receipts_prove_a_peer_holds_a_publication`) pins the behaviour.

pub mod catalog;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::{
    ChitchatConfig, ChitchatEnvelope, ChitchatHandle, ChitchatId, ChitchatMessage,
    FailureDetectorConfig, ListenerHandle, NodeState, ProtocolVersion, spawn_chitchat,
};
use tokio::sync::{Notify, mpsc, watch};

use crate::core::placement::{DEFAULT_WEIGHT, Placement, Tags, check_weight};
use crate::core::planner::View;
use crate::core::types::{FireRecord, JobId, NodeId, UnixMillis};

mod evidence;
mod identity;
mod offset;
mod tracked;
mod transport;

pub use evidence::{Evidence, EvidenceWatch, members_digest};
pub use identity::{Conflict, Rivals, conflict_with, is_probe, probe, probe_id};
pub use offset::{ClockValue, Estimate, KEY_CLOCK, Offsets, Sample};
pub use transport::{
    DatagramSocket, Datagrams, GossipKeys, GossipSecurity, GossipStats, GossipTransport, LOG_EVERY,
    MAX_PEER_KEYS, UdpDatagrams,
};

/// Key holding a node's status.
pub const KEY_STATUS: &str = "status";
/// Key holding a node's Starling version.
pub const KEY_VERSION: &str = "version";
/// Key holding the address of a node's HTTP API, when it has one.
pub const KEY_API: &str = "api";
/// Key holding a node's weight, when it is not the default.
pub const KEY_WEIGHT: &str = "weight";
/// Key holding a node's tags, when it has any.
pub const KEY_TAGS: &str = "tags";
/// Prefix of fire-record keys: `fire:<job>`.
pub const KEY_FIRE_PREFIX: &str = "fire:";
/// Prefix of running-state keys: `running:<job>`.
pub const KEY_RUNNING_PREFIX: &str = "running:";
/// Key holding the digest of the member set a node's planner uses.
pub const KEY_MEMBERS: &str = "members";
/// The keys of a node's state that [`Cluster::live_watcher`]'s snapshots hold: the node's
/// own keys, which is all their readers look at. The catalog's registers, fire records and
/// running states stay out (they are read under chitchat's lock or through listeners):
/// with them, the snapshot the watch channel keeps was a second copy of every catalog
/// entry, about 360 bytes per entry per node at 10,000 jobs (issue 15).
pub const WATCHED_KEYS: [&str; 7] = [
    KEY_STATUS,
    KEY_VERSION,
    KEY_API,
    KEY_WEIGHT,
    KEY_TAGS,
    KEY_MEMBERS,
    KEY_CLOCK,
];

/// Status of a node that is running normally.
pub const STATUS_ALIVE: &str = "alive";
/// Status of a node that began a graceful leave.
pub const STATUS_LEAVING: &str = "leaving";
/// Status of a node whose clock is not verified yet, or is off by more than the bound:
/// alive, not a member (see `node::skew`).
pub const STATUS_CLOCK: &str = "clock";

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
    /// The node's weight and tags, published for ownership.
    pub placement: Placement,
    /// The status the node starts with: `alive`, or `clock` when it must verify its clock
    /// against its peers' first (see `node::skew`).
    pub initial_status: &'static str,
}

/// A fire record seen in gossip: `node` started `record.slot` of `job`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The job.
    pub job: JobId,
    /// The slot, its epoch and the epoch's first slot.
    pub record: FireRecord,
    /// The node that published it (its id, whatever the generation).
    pub node: NodeId,
}

/// A change of a node's running state for a job, seen in gossip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    /// The job.
    pub job: JobId,
    /// The node (id and generation).
    pub node: NodeId,
    /// Its generation.
    pub generation: u64,
    /// The slot it runs, or `None` once the run ended.
    pub slot: Option<UnixMillis>,
}

/// What the cluster adapter tells the node runtime besides membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A fire record.
    Record(Record),
    /// A running-state change.
    Running(Running),
    /// A peer's clock value (see `offset`).
    Clock {
        /// The peer.
        node: NodeId,
        /// Its `clock` value.
        value: String,
    },
}

/// What gets published in one go, in order.
#[derive(Debug, Default)]
pub struct Publish {
    /// Fire records to set.
    pub records: Vec<Record>,
    /// Running-state changes of this node's runs: `(job, Some(slot))` while running,
    /// `(job, None)` once ended.
    pub running: Vec<(JobId, Option<UnixMillis>)>,
    /// The digest of the member set this node's planner now uses ([`members_digest`]), set
    /// after the records before it.
    pub members: Option<String>,
    /// This node's clock value (see `offset`).
    pub clock: Option<String>,
}

/// Publication sequence numbers (our state's version after each), and per peer the
/// highest one sent to it and the highest one it is known to hold.
struct Sent {
    /// This node's chitchat id, as it appears in peers' digests.
    me: ChitchatId,
    /// Sequence number of the last publication (set after its keys are in the state).
    published: AtomicU64,
    /// Per peer: every publication up to this one has been sent to it.
    credited: Mutex<HashMap<SocketAddr, u64>>,
    /// The highest publication sent to any peer.
    credited_any: AtomicU64,
    /// Per peer: its digest showed every publication up to this one.
    received: Mutex<HashMap<SocketAddr, u64>>,
    /// Waits for receipts in progress (digests are read only while there is one).
    receipt_waits: AtomicUsize,
    notify: Notify,
    /// Peers' digests, read while the node looks for fresh evidence (see `evidence`).
    digests: evidence::Digests,
    /// SYNs sent: gossip rounds started (see [`Cluster::rounds`]).
    syns: AtomicU64,
}

impl Sent {
    fn credited(&self, to: SocketAddr) -> u64 {
        Self::get(&self.credited, to)
    }

    fn received(&self, from: SocketAddr) -> u64 {
        Self::get(&self.received, from)
    }

    fn get(map: &Mutex<HashMap<SocketAddr, u64>>, addr: SocketAddr) -> u64 {
        map.lock()
            .map(|c| c.get(&addr).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Reads a received message's digest: what the sender holds of our state.
    fn note_digest(&self, from: SocketAddr, message: &ChitchatMessage) {
        let digest = match message {
            ChitchatMessage::Syn { digest, .. } | ChitchatMessage::SynAck { digest, .. } => digest,
            _ => return,
        };
        let Some(version) = digest.max_version(&self.me) else {
            return;
        };
        if let Ok(mut r) = self.received.lock() {
            let e = r.entry(from).or_insert(0);
            if version <= *e {
                return;
            }
            *e = version;
        }
        self.notify.notify_waiters();
    }
}

/// Gossip bytes sent and received through this node's transport (for the metrics).
#[derive(Debug, Default)]
pub struct Traffic {
    sent: AtomicU64,
    received: AtomicU64,
}

impl Traffic {
    /// Bytes sent and received so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }
}

/// The wrapping transport: counts state-carrying messages per peer (see the module docs).
struct Counting {
    inner: Arc<dyn Transport>,
    sent: Arc<Sent>,
    traffic: Arc<Traffic>,
}

#[async_trait::async_trait]
impl Transport for Counting {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(CountingSocket {
            inner: self.inner.open(listen_addr).await?,
            sent: self.sent.clone(),
            traffic: self.traffic.clone(),
            seen_at_recv: 0,
        }))
    }
}

struct CountingSocket {
    inner: Box<dyn Socket>,
    sent: Arc<Sent>,
    traffic: Arc<Traffic>,
    /// The publication sequence number when the message being answered arrived.
    seen_at_recv: u64,
}

#[async_trait::async_trait]
impl Socket for CountingSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let carries_state = matches!(
            envelope.message,
            ChitchatMessage::SynAck { .. } | ChitchatMessage::Ack { .. }
        );
        if matches!(envelope.message, ChitchatMessage::Syn { .. }) {
            self.sent.syns.fetch_add(1, Ordering::Relaxed);
        }
        let outcome = self.inner.send(to, envelope).await;
        if let Ok(o) = &outcome {
            let bytes = o.num_bytes_sent as u64;
            self.traffic.sent.fetch_add(bytes, Ordering::Relaxed);
        }
        if carries_state && outcome.is_ok() {
            if let Ok(mut c) = self.sent.credited.lock() {
                let e = c.entry(to).or_insert(0);
                *e = (*e).max(self.seen_at_recv);
            }
            self.sent
                .credited_any
                .fetch_max(self.seen_at_recv, Ordering::AcqRel);
            self.sent.notify.notify_waiters();
        }
        outcome
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        let got = self.inner.recv().await;
        if let Ok(r) = &got {
            let bytes = r.num_bytes_received as u64;
            self.traffic.received.fetch_add(bytes, Ordering::Relaxed);
        }
        // Chitchat computes its answer to this message after this point.
        self.seen_at_recv = self.sent.published.load(Ordering::Acquire);
        if let Ok(r) = &got {
            if self.sent.receipt_waits.load(Ordering::Acquire) > 0 {
                self.sent.note_digest(r.from_addr, &r.envelope.message);
            }
            if self.sent.digests.watching.load(Ordering::Acquire) > 0 {
                self.sent.note_evidence(r.from_addr, &r.envelope.message);
            }
        }
        got
    }
}

/// A running chitchat instance and the streams the node runtime reads.
pub struct Cluster {
    handle: Arc<ChitchatHandle>,
    live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    sent: Arc<Sent>,
    traffic: Arc<Traffic>,
    _listeners: [ListenerHandle; 3],
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster({:?})", self.handle.chitchat_id())
    }
}

impl Cluster {
    /// Starts gossip over `transport`. Fire records and running states seen from any node,
    /// including our own earlier generations, are sent to `events`. Our own current
    /// generation's are not: the node set them itself, and echoing a burst of a thousand
    /// records back into the node's task would compete with the runs it just started.
    pub async fn spawn(
        config: &GossipConfig,
        transport: Arc<dyn Transport>,
        events: mpsc::UnboundedSender<Event>,
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
            live_nodes_watcher_keys: Some(Box::new(|key| WATCHED_KEYS.contains(&key))),
            protocol_version: ProtocolVersion::V0,
        };
        let mut initial = vec![
            (KEY_STATUS.to_string(), config.initial_status.to_string()),
            (
                KEY_VERSION.to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ];
        initial.extend(placement_keys(&config.placement));
        let sent = Arc::new(Sent {
            me: chitchat_config.chitchat_id.clone(),
            published: AtomicU64::new(0),
            credited: Mutex::default(),
            credited_any: AtomicU64::new(0),
            received: Mutex::default(),
            receipt_waits: AtomicUsize::new(0),
            notify: Notify::new(),
            digests: evidence::Digests::default(),
            syns: AtomicU64::new(0),
        });
        let traffic = Arc::new(Traffic::default());
        let counting = Counting {
            inner: transport,
            sent: sent.clone(),
            traffic: traffic.clone(),
        };
        let handle = spawn_chitchat(chitchat_config, initial, &counting).await?;
        let chitchat = handle.chitchat();
        let guard = chitchat.lock().await;
        let live = guard.live_nodes_watcher();
        // Listeners run under chitchat's lock: parse and forward, nothing else.
        let records = events.clone();
        let me = guard.self_chitchat_id().clone();
        let me_too = me.clone();
        let fire = guard.subscribe_event(KEY_FIRE_PREFIX, move |ev| {
            if *ev.node == me {
                return;
            }
            if let Some(record) = FireRecord::decode(ev.value) {
                let _ = records.send(Event::Record(Record {
                    job: JobId::new(ev.key),
                    record,
                    node: NodeId::new(&*ev.node.node_id),
                }));
            }
        });
        let clocks = events.clone();
        let me_three = me_too.clone();
        let clock = guard.subscribe_event(KEY_CLOCK, move |ev| {
            if *ev.node == me_three || !ev.key.is_empty() {
                return;
            }
            let _ = clocks.send(Event::Clock {
                node: NodeId::new(&*ev.node.node_id),
                value: ev.value.to_string(),
            });
        });
        let running = guard.subscribe_event(KEY_RUNNING_PREFIX, move |ev| {
            if *ev.node == me_too {
                return;
            }
            let slot = ev.value.parse::<i64>().ok().map(UnixMillis);
            let _ = events.send(Event::Running(Running {
                job: JobId::new(ev.key),
                node: NodeId::new(&*ev.node.node_id),
                generation: ev.node.generation_id,
                slot,
            }));
        });
        drop(guard);
        Ok(Cluster {
            handle: Arc::new(handle),
            live,
            sent,
            traffic,
            _listeners: [fire, running, clock],
        })
    }

    /// A handle for publishing records and running states from another task.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            handle: self.handle.clone(),
            sent: self.sent.clone(),
        }
    }

    /// Gossip bytes through this node's transport.
    pub fn traffic(&self) -> Arc<Traffic> {
        self.traffic.clone()
    }

    /// A receiver that changes whenever chitchat's live set or a live node's keys change.
    /// Its states hold only the [`WATCHED_KEYS`] (and every node's heartbeat and versions).
    pub fn live_watcher(&self) -> watch::Receiver<BTreeMap<ChitchatId, NodeState>> {
        self.live.clone()
    }

    /// Sets one of this node's own keys (such as [`KEY_API`]).
    pub async fn set_key(&self, key: &str, value: &str) {
        let chitchat = self.handle.chitchat();
        chitchat.lock().await.self_node_state().set(key, value);
    }

    /// Publishes this node's new weight and tags: every node's view, and so the owners,
    /// follow (a change moves jobs like a join or a leave).
    pub async fn set_placement(&self, placement: &Placement) {
        let chitchat = self.handle.chitchat();
        let mut guard = chitchat.lock().await;
        let state = guard.self_node_state();
        for (key, value) in placement_keys(placement) {
            state.set(key, value);
        }
    }

    /// Sets this node's status to `alive` or `clock` (see `node::skew`), unless it is
    /// leaving.
    pub async fn set_status(&self, status: &'static str) {
        let chitchat = self.handle.chitchat();
        let mut guard = chitchat.lock().await;
        let state = guard.self_node_state();
        let now = state.get(KEY_STATUS);
        if now != Some(STATUS_LEAVING) && now != Some(status) {
            state.set(KEY_STATUS, status);
        }
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

    /// The live incarnations of this node's id at other addresses (see `identity`), and of
    /// them the one that keeps the id instead of this node, if any.
    pub async fn rivals(
        &self,
        seen: &mut Rivals,
        now: tokio::time::Instant,
        within: Duration,
    ) -> (Option<Conflict>, Vec<Conflict>) {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let me = guard.self_chitchat_id().clone();
        let live: BTreeMap<ChitchatId, NodeState> = guard
            .live_nodes()
            .filter(|id| id.node_id == me.node_id && **id != me)
            .filter_map(|id| Some((id.clone(), guard.node_state(id)?.clone())))
            .collect();
        drop(guard);
        conflict_with(&live, &me, seen, now, within)
    }

    /// SYNs this node has sent: it sends some at every gossip round, so a count that stops
    /// growing while there are peers or seeds means its gossip fell behind.
    pub fn rounds(&self) -> u64 {
        self.sent.syns.load(Ordering::Relaxed)
    }

    /// Number of other nodes chitchat knows about (live or not).
    pub async fn known_peers(&self) -> usize {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let me = guard.self_chitchat_id().clone();
        guard.node_states().keys().filter(|id| **id != me).count()
    }

    /// Stops gossip. Logs how much of the cluster this node knew: a node that never
    /// opened a packet (a wrong or missing cluster key) knows no other node and no key of
    /// one.
    pub async fn shutdown(self) {
        {
            let chitchat = self.handle.chitchat();
            let guard = chitchat.lock().await;
            let me = guard.self_chitchat_id();
            let others = guard.node_states().iter().filter(|(id, _)| *id != me);
            let (nodes, keys) = others.fold((0, 0), |(n, k), (_, state)| {
                (n + 1, k + state.key_values().count())
            });
            tracing::info!(
                other_nodes_known = nodes,
                keys_of_other_nodes = keys,
                "gossip stopped"
            );
        }
        let _ = self.handle.initiate_shutdown();
        let _ = self.handle.termination_watcher().await;
    }

    /// Stops gossip without waiting (a crash, for tests).
    pub fn abort(&self) {
        self.handle.abort();
    }
}

/// Publishes this node's fire records and running states; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    handle: Arc<ChitchatHandle>,
    sent: Arc<Sent>,
}

impl Publisher {
    /// Sets fire records and running states in this node's state, under one lock. Returns
    /// the publication's sequence number, for [`Publisher::confirm`].
    pub async fn publish(&self, batch: &Publish) -> u64 {
        let chitchat = self.handle.chitchat();
        let mut guard = chitchat.lock().await;
        let state = guard.self_node_state();
        for r in &batch.records {
            state.set(format!("{KEY_FIRE_PREFIX}{}", r.job), r.record.encode());
        }
        for (job, slot) in &batch.running {
            let value = slot.map_or(String::new(), |s| s.0.to_string());
            state.set(format!("{KEY_RUNNING_PREFIX}{job}"), value);
        }
        if let Some(members) = &batch.members
            && state.get(KEY_MEMBERS) != Some(members.as_str())
        {
            state.set(KEY_MEMBERS, members);
        }
        if let Some(clock) = &batch.clock {
            state.set(KEY_CLOCK, clock);
        }
        // The state's version: a peer whose digest shows it holds the whole publication.
        let seq = state.max_version();
        self.sent.published.fetch_max(seq, Ordering::AcqRel);
        seq
    }

    /// The highest publication `peer` is known to hold (its digest showed it). Receipts are
    /// read only while a [`ReceiptWait`] lives.
    pub fn received(&self, peer: SocketAddr) -> u64 {
        self.sent.received(peer)
    }

    /// Reads receipts from peers' digests until the returned guard is dropped.
    pub fn read_receipts(&self) -> ReceiptWait {
        ReceiptWait::new(self.sent.clone())
    }

    /// The highest publication sent to `peer` so far (see the module docs).
    pub fn credited(&self, peer: SocketAddr) -> u64 {
        self.sent.credited(peer)
    }

    /// Resolves once at least `need` of `peers` are known to hold publication `seq` (their
    /// digests showed it; see the module docs), or after `timeout`; returns whether they
    /// were. Asks chitchat for a round with each at once, and for another when the
    /// publication was sent to one that has not shown it yet (a few times at most): that
    /// round's SYN-ACK carries the proof, unless it overtook the message it proves.
    pub fn confirm_many(
        &self,
        peers: Vec<SocketAddr>,
        need: usize,
        seq: u64,
        timeout: Duration,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        for p in &peers {
            let _ = self.handle.gossip(*p);
        }
        let handle = self.handle.clone();
        let sent = self.sent.clone();
        let mut asked_again: BTreeMap<SocketAddr, u32> = BTreeMap::new();
        async move {
            let _reading = ReceiptWait::new(sent.clone());
            wait_for_sends(sent, timeout, move |sent| {
                let mut holding = 0;
                for p in &peers {
                    if sent.received(*p) >= seq {
                        holding += 1;
                    } else if sent.credited(*p) >= seq {
                        let asked = asked_again.entry(*p).or_insert(0);
                        if *asked < MAX_RECEIPT_ASKS {
                            *asked += 1;
                            let _ = handle.gossip(*p);
                        }
                    }
                }
                holding >= need
            })
            .await
        }
    }

    /// Resolves once publication `seq` has been sent to any peer (see the module docs), or
    /// after `timeout`; returns whether it was. Asks chitchat for a round with `peer` (the
    /// node that matters most) at once; whichever peer gets the publication first spreads
    /// it by gossip long before a crash of this node could be detected.
    pub fn confirm(
        &self,
        peer: SocketAddr,
        seq: u64,
        timeout: Duration,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        let _ = self.handle.gossip(peer);
        wait_for_sends(self.sent.clone(), timeout, move |sent| {
            sent.credited_any.load(Ordering::Acquire) >= seq
        })
    }
}

/// How many extra gossip rounds a receipt wait asks of one peer (see
/// [`Publisher::confirm_many`]); after that it waits for the regular rounds.
const MAX_RECEIPT_ASKS: u32 = 4;

/// Keeps receipts being read (see the module docs) until dropped.
pub struct ReceiptWait(Arc<Sent>);

impl ReceiptWait {
    fn new(sent: Arc<Sent>) -> ReceiptWait {
        sent.receipt_waits.fetch_add(1, Ordering::AcqRel);
        ReceiptWait(sent)
    }
}

impl Drop for ReceiptWait {
    fn drop(&mut self) {
        self.0.receipt_waits.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Resolves once `done` holds (checked again after every state-carrying send and every
/// receipt), or after `timeout`; returns whether it held.
async fn wait_for_sends(
    sent: Arc<Sent>,
    timeout: Duration,
    mut done: impl FnMut(&Sent) -> bool + Send + 'static,
) -> bool {
    let wait = async {
        loop {
            let notified = sent.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&sent) {
                return;
            }
            notified.await;
        }
    };
    tokio::time::timeout(timeout, wait).await.is_ok()
}

/// The newest generation of every live node, and the address it gossips on.
pub fn newest_generations(
    live: &BTreeMap<ChitchatId, NodeState>,
) -> BTreeMap<NodeId, (u64, SocketAddr)> {
    let mut out: BTreeMap<NodeId, (u64, SocketAddr)> = BTreeMap::new();
    for id in live.keys().filter(|id| !is_probe(&id.node_id)) {
        let e = out
            .entry(NodeId::new(&*id.node_id))
            .or_insert((id.generation_id, id.gossip_advertise_addr));
        if id.generation_id > e.0 {
            *e = (id.generation_id, id.gossip_advertise_addr);
        }
    }
    out
}

/// The API address ([`KEY_API`]) of every live node that publishes one (its newest
/// generation's).
pub fn api_addresses(live: &BTreeMap<ChitchatId, NodeState>) -> BTreeMap<NodeId, SocketAddr> {
    newest_states(live)
        .into_iter()
        .filter_map(|(id, state)| {
            let addr = state.get(KEY_API)?.parse().ok()?;
            Some((NodeId::new(id), addr))
        })
        .collect()
}

/// The state of every live node's newest generation, by node id.
fn newest_states(live: &BTreeMap<ChitchatId, NodeState>) -> BTreeMap<&str, &NodeState> {
    let mut newest: BTreeMap<&str, (u64, &NodeState)> = BTreeMap::new();
    for (id, state) in live.iter().filter(|(id, _)| !is_probe(&id.node_id)) {
        let e = newest
            .entry(&id.node_id)
            .or_insert((id.generation_id, state));
        if id.generation_id > e.0 {
            *e = (id.generation_id, state);
        }
    }
    newest.into_iter().map(|(id, (_, s))| (id, s)).collect()
}

/// The keys that publish a placement (see the module docs). Both are always set, to
/// their default when the node has none, so that a change back to the default is seen.
fn placement_keys(p: &Placement) -> [(String, String); 2] {
    [
        (KEY_WEIGHT.to_string(), p.weight.to_string()),
        (KEY_TAGS.to_string(), p.tags.encode()),
    ]
}

/// A node's placement as its state publishes it. A missing key (a node of an earlier
/// version) or a bad value (never written by this version) reads as the default.
pub fn placement_of(state: &NodeState) -> Placement {
    let weight = state
        .get(KEY_WEIGHT)
        .and_then(|w| w.parse().ok())
        .and_then(|w| check_weight(w).ok())
        .unwrap_or(DEFAULT_WEIGHT);
    let tags = state
        .get(KEY_TAGS)
        .and_then(|t| Tags::decode(t).ok())
        .unwrap_or_default();
    Placement {
        weight,
        tags: std::sync::Arc::new(tags),
    }
}

/// Turns chitchat's live set into a [`View`]: a node is alive if any of its generations
/// is, and a member if any of its live generations is not `leaving` (a probe, see
/// `identity`, is neither). Taking the newest generation's status instead made a whole
/// cluster see a live node as leaving for seconds when a second process started with its
/// id left (issue 14); a restarted node's old generation, when it left gracefully, is
/// `leaving` and its new one is not, so the node stays a member either way. Its placement
/// is that of its newest generation that is a member (`live` is in generation order).
pub fn view_from_live(live: &BTreeMap<ChitchatId, NodeState>) -> View {
    let mut members = BTreeSet::new();
    let mut alive = BTreeSet::new();
    let mut placements = BTreeMap::new();
    for (id, state) in live {
        if is_probe(&id.node_id) {
            continue;
        }
        let node = NodeId::new(&*id.node_id);
        let status = state.get(KEY_STATUS);
        if status != Some(STATUS_LEAVING) {
            // Kept for a node out of clock bound too: it counts itself back as soon as its
            // clock is (see `node::skew`).
            let placement = placement_of(state);
            if placement == Placement::default() {
                placements.remove(&node);
            } else {
                placements.insert(node.clone(), placement);
            }
        }
        if !matches!(status, Some(STATUS_LEAVING | STATUS_CLOCK)) {
            members.insert(node.clone());
        }
        alive.insert(node);
    }
    View {
        members,
        alive,
        placements,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use chitchat::transport::UdpTransport;

    pub(super) fn free_addr() -> SocketAddr {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free loopback port")
    }

    pub(super) fn config(id: &str, addr: SocketAddr, seeds: Vec<SocketAddr>) -> GossipConfig {
        GossipConfig {
            node_id: NodeId::new(id),
            generation: 1,
            listen_addr: addr,
            advertise_addr: addr,
            seeds,
            cluster_id: "receipts".into(),
            gossip_interval: Duration::from_millis(50),
            phi_threshold: 8.0,
            dead_node_grace_period: Duration::from_secs(60),
            placement: Placement::default(),
            initial_status: STATUS_ALIVE,
        }
    }

    /// Pins the digest format the receipts rely on, over real UDP: a peer that gossips with
    /// us is known to hold our publication; an address nobody listens on never is.
    #[tokio::test]
    async fn receipts_prove_a_peer_holds_a_publication() {
        let (a_addr, b_addr, nobody) = (free_addr(), free_addr(), free_addr());
        let (tx, _rx) = mpsc::unbounded_channel();
        let a = Cluster::spawn(
            &config("a", a_addr, vec![b_addr]),
            Arc::new(UdpTransport),
            tx.clone(),
        )
        .await
        .unwrap();
        let (btx, mut brx) = mpsc::unbounded_channel();
        let b = Cluster::spawn(
            &config("b", b_addr, vec![a_addr]),
            Arc::new(UdpTransport),
            btx,
        )
        .await
        .unwrap();
        let publisher = a.publisher();
        let seq = publisher
            .publish(&Publish {
                records: vec![Record {
                    job: JobId::new("j"),
                    record: FireRecord::single(UnixMillis(1_000), 1),
                    node: NodeId::new("a"),
                }],
                ..Publish::default()
            })
            .await;
        assert!(seq > 0);
        let held = publisher
            .confirm_many(vec![b_addr], 1, seq, Duration::from_secs(10))
            .await;
        assert!(held, "b's digest never showed the publication");
        assert!(publisher.received(b_addr) >= seq);
        // b does hold it.
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(ev) = brx.recv().await {
                if let Event::Record(r) = ev {
                    return Some(r);
                }
            }
            None
        })
        .await
        .unwrap();
        assert_eq!(got.map(|r| r.record.slot), Some(UnixMillis(1_000)));
        // b's live snapshot of a, once as new as b's state of a, holds a's own keys but not
        // its fire record (`WATCHED_KEYS`), which b's state does.
        let (a_id, version) = {
            let chitchat = b.handle.chitchat();
            let guard = chitchat.lock().await;
            let (id, state) = guard
                .node_states()
                .iter()
                .find(|(id, _)| &*id.node_id == "a")
                .expect("b knows a");
            assert!(state.get("fire:j").is_some(), "b holds a's fire record");
            (id.clone(), state.max_version())
        };
        let mut live = b.live_watcher();
        let keys: Vec<String> = tokio::time::timeout(
            Duration::from_secs(5),
            live.wait_for(|l| l.get(&a_id).is_some_and(|s| s.max_version() >= version)),
        )
        .await
        .expect("b's live snapshot of a catches up")
        .expect("a watch sender")[&a_id]
            .key_values()
            .map(|(k, _)| k.to_string())
            .collect();
        assert!(keys.iter().any(|k| k == KEY_STATUS), "{keys:?}");
        assert!(
            keys.iter().all(|k| WATCHED_KEYS.contains(&k.as_str())),
            "{keys:?}"
        );
        let never = publisher
            .confirm_many(vec![nobody], 1, seq, Duration::from_millis(500))
            .await;
        assert!(!never, "an address nobody listens on cannot hold anything");
        assert_eq!(publisher.received(nobody), 0);
        a.shutdown().await;
        b.shutdown().await;
    }
}
