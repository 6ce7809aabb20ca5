//! The gossip transport: chitchat envelopes as bytes over datagrams, sealed with the
//! cluster key when the node has one, and every datagram opened and verified before
//! chitchat parses anything.
//!
//! The datagrams are real UDP ([`UdpDatagrams`]) or the simulator's network, so the
//! simulator runs the same seal. A datagram that fails to open is dropped, counted in
//! [`GossipStats`], and logged at most once per [`LOG_EVERY`] per kind of failure, so a
//! flood of garbage costs a counter increment per packet and no log storm.
//!
//! Every accepted envelope then passes the member bound ([`super::tracked`]): the
//! entries of nodes past [`MAX_MEMBERS`] are cut before chitchat sees them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::{ChitchatEnvelope, MAX_UDP_DATAGRAM_PAYLOAD_SIZE};
use tracing::{debug, warn};

use super::tracked::Tracked;
use crate::core::limits::MAX_MEMBERS;
use crate::core::types::UnixMillis;
use crate::node::Clock;
use crate::security::{Entropy, KeyError, KeyId, Keyring, OpenError, SEALED_FORMAT, Seal};

/// A datagram network under gossip: real UDP, or the simulator's.
#[async_trait::async_trait]
pub trait Datagrams: Send + Sync + 'static {
    /// Binds a socket to `addr`.
    async fn bind(&self, addr: SocketAddr) -> anyhow::Result<Box<dyn DatagramSocket>>;
}

/// One bound datagram socket.
#[async_trait::async_trait]
pub trait DatagramSocket: Send + Sync + 'static {
    /// The address it is bound to.
    fn local_addr(&self) -> anyhow::Result<SocketAddr>;
    /// Sends one datagram. An error means the socket is broken or the datagram too large.
    async fn send_to(&mut self, to: SocketAddr, payload: &[u8]) -> anyhow::Result<()>;
    /// Receives one datagram into `buf`: its length and sender. Must be cancel-safe
    /// (chitchat selects on it); an error means the socket is broken.
    async fn recv_from(&mut self, buf: &mut [u8]) -> anyhow::Result<(usize, SocketAddr)>;
}

/// Real UDP.
#[derive(Clone, Copy, Debug, Default)]
pub struct UdpDatagrams;

#[async_trait::async_trait]
impl Datagrams for UdpDatagrams {
    async fn bind(&self, addr: SocketAddr) -> anyhow::Result<Box<dyn DatagramSocket>> {
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot bind {addr}/UDP for gossip"))?;
        Ok(Box::new(UdpSocket(socket)))
    }
}

struct UdpSocket(tokio::net::UdpSocket);

#[async_trait::async_trait]
impl DatagramSocket for UdpSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.0.local_addr()?)
    }

    async fn send_to(&mut self, to: SocketAddr, payload: &[u8]) -> anyhow::Result<()> {
        self.0
            .send_to(payload, to)
            .await
            .with_context(|| format!("cannot send a gossip packet to {to}"))?;
        Ok(())
    }

    async fn recv_from(&mut self, buf: &mut [u8]) -> anyhow::Result<(usize, SocketAddr)> {
        loop {
            match self.0.recv_from(buf).await {
                Ok(got) => return Ok(got),
                // As chitchat's own UDP socket: these say nothing about the socket.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::OutOfMemory
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    debug!(error = %e, "transient UDP receive error");
                }
                Err(e) => return Err(e).context("gossip socket broken"),
            }
        }
    }
}

/// How often each kind of dropped packet is logged, at most.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Counters of a node's gossip transport. Every field only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Datagrams sent.
    pub packets_sent: u64,
    /// Bytes of those datagrams (sealed, when sealing).
    pub bytes_sent: u64,
    /// Bytes of the envelopes they carried, before sealing: `bytes_sent` minus this is
    /// what the seal costs.
    pub envelope_bytes_sent: u64,
    /// Envelopes chitchat asked to send that were not sent (too large for a datagram, or
    /// the socket failed).
    pub send_failures: u64,
    /// Datagrams received, whatever they held.
    pub packets_received: u64,
    /// Bytes of those datagrams.
    pub bytes_received: u64,
    /// Datagrams handed to chitchat (opened and decoded).
    pub packets_accepted: u64,
    /// Dropped: a plain chitchat packet at a node with a key (its sender has none).
    pub rejected_plain: u64,
    /// Dropped: a sealed packet at a node without a key.
    pub rejected_sealed: u64,
    /// Dropped: neither sealed nor chitchat (too short, garbage).
    pub rejected_malformed: u64,
    /// Dropped: sealed with a key this node does not hold.
    pub rejected_unknown_key: u64,
    /// Dropped: failed authentication (corrupted, forged, or another cluster id).
    pub rejected_forged: u64,
    /// Dropped: authentic but dated outside the replay window.
    pub rejected_stale: u64,
    /// Dropped: opened (or plain) but not a chitchat message.
    pub rejected_undecodable: u64,
    /// Entries of nodes past the member bound ([`MAX_MEMBERS`]) cut from accepted
    /// packets' digests and deltas, so chitchat never learned of those nodes.
    pub member_entries_cut: u64,
}

impl GossipStats {
    /// Every dropped datagram.
    pub fn rejected(&self) -> u64 {
        self.rejected_plain
            + self.rejected_sealed
            + self.rejected_malformed
            + self.rejected_unknown_key
            + self.rejected_forged
            + self.rejected_stale
            + self.rejected_undecodable
    }
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug)]
enum Dropped {
    Open(OpenError),
    SealedAtOpenNode,
    Undecodable,
}

impl Dropped {
    /// Index into the per-kind log limits.
    fn kind(self) -> usize {
        match self {
            Dropped::Open(OpenError::Plain) => 0,
            Dropped::Open(OpenError::Malformed) => 1,
            Dropped::Open(OpenError::UnknownKey(_)) => 2,
            Dropped::Open(OpenError::Forged(_)) => 3,
            Dropped::Open(OpenError::Stale { .. }) => 4,
            Dropped::SealedAtOpenNode => 5,
            Dropped::Undecodable => 6,
        }
    }
}

/// Kinds of drop, plus the member bound's own log limit (the last).
const KINDS: usize = 8;
const MEMBERS_CUT: usize = KINDS - 1;

#[derive(Default)]
struct Counters {
    packets_sent: AtomicU64,
    bytes_sent: AtomicU64,
    envelope_bytes_sent: AtomicU64,
    send_failures: AtomicU64,
    packets_received: AtomicU64,
    bytes_received: AtomicU64,
    packets_accepted: AtomicU64,
    rejected: [AtomicU64; KINDS],
    member_entries_cut: AtomicU64,
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

/// When a kind of drop was last logged, and how many went unlogged since.
#[derive(Clone, Copy, Default)]
struct LogLimit {
    last: Option<UnixMillis>,
    suppressed: u64,
}

/// Most sender addresses [`GossipKeys::peers`] remembers; the least recently heard goes
/// first. Only senders holding one of the node's keys get in, so this bounds restarts on new
/// ports, not an attacker.
pub const MAX_PEER_KEYS: usize = 1024;

/// Which keys a node's gossip runs with, and which key each peer sealed its packets with:
/// during a key rotation, it shows which nodes have done which step (README, Security).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GossipKeys {
    /// The key this node seals with; `None`: its gossip is open (no cluster key).
    pub sealing: Option<KeyId>,
    /// Every key this node opens packets with, the sealing key first.
    pub held: Vec<KeyId>,
    /// The key of the last packet accepted from each sender address (the address a peer
    /// gossips from, its listen address). Empty when gossip is open.
    pub peers: BTreeMap<SocketAddr, KeyId>,
}

/// Sender address -> (the key of its last accepted packet, when: a sequence number), and
/// the last sequence number.
type PeerKeys = (BTreeMap<SocketAddr, (KeyId, u64)>, u64);

/// The seal a node's gossip runs with (none: open gossip), its counters, and its clock and
/// entropy. Shared by the transport and the node's handle, which swaps the keyring on a
/// reload.
pub struct GossipSecurity {
    seal: RwLock<Option<Arc<Seal>>>,
    cluster_id: String,
    window: Duration,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    counters: Counters,
    logged: Mutex<[LogLimit; KINDS]>,
    peer_keys: Mutex<PeerKeys>,
    member_limit: usize,
}

impl std::fmt::Debug for GossipSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GossipSecurity({:?})", self.current())
    }
}

impl GossipSecurity {
    /// Gossip for `cluster_id`, sealed with `keyring` (open without one). Packets dated
    /// further than `window` from `clock` are dropped (the replay window).
    pub fn new(
        keyring: Option<&Keyring>,
        cluster_id: &str,
        window: Duration,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
    ) -> Arc<GossipSecurity> {
        Arc::new(GossipSecurity {
            seal: RwLock::new(keyring.map(|k| Arc::new(Seal::new(k, cluster_id, window)))),
            cluster_id: cluster_id.to_string(),
            window,
            clock,
            entropy,
            counters: Counters::default(),
            logged: Mutex::new([LogLimit::default(); KINDS]),
            peer_keys: Mutex::new((BTreeMap::new(), 0)),
            member_limit: MAX_MEMBERS,
        })
    }

    /// [`GossipSecurity::new`] with another member bound than [`MAX_MEMBERS`]: for tests,
    /// which cannot start 512 nodes to reach it.
    #[cfg(test)]
    pub(crate) fn with_member_limit(mut self: Arc<Self>, limit: usize) -> Arc<Self> {
        Arc::get_mut(&mut self)
            .expect("set before the transport shares it")
            .member_limit = limit;
        self
    }

    /// The bound's tracker for a new socket: a node unheard of for twice the replay
    /// window (`dead_node_grace_period`, after which chitchat forgets a dead node) frees
    /// its place.
    fn tracker(&self, own: Option<String>) -> Tracked {
        Tracked::new(self.member_limit, self.window * 2, own)
    }

    fn current(&self) -> Option<Arc<Seal>> {
        self.seal.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The id of the key that seals, or `None` when gossip is open.
    pub fn sealing_key(&self) -> Option<KeyId> {
        self.current().map(|s| s.sealing_id())
    }

    /// This node's keys, and the key each peer was last heard sealing with.
    pub fn keys(&self) -> GossipKeys {
        let seal = self.current();
        let peers = self.peer_keys.lock().unwrap_or_else(|e| e.into_inner());
        GossipKeys {
            sealing: seal.as_ref().map(|s| s.sealing_id()),
            held: seal.map(|s| s.ids()).unwrap_or_default(),
            peers: peers.0.iter().map(|(a, (k, _))| (*a, *k)).collect(),
        }
    }

    /// Notes that `from` sealed an accepted packet with `key`.
    fn heard(&self, from: SocketAddr, key: KeyId) {
        let mut guard = self.peer_keys.lock().unwrap_or_else(|e| e.into_inner());
        let (peers, seq) = &mut *guard;
        *seq += 1;
        if peers.len() >= MAX_PEER_KEYS && !peers.contains_key(&from) {
            let oldest = peers.iter().min_by_key(|(_, (_, at))| *at).map(|(a, _)| *a);
            if let Some(oldest) = oldest {
                peers.remove(&oldest);
            }
        }
        peers.insert(from, (key, *seq));
    }

    /// Replaces the keyring from the next packet on. A node started without a key stays
    /// open: turning sealing on is a restart (every peer must change at once).
    pub fn set_keyring(&self, keyring: &Keyring) -> Result<(), KeyError> {
        let mut seal = self.seal.write().unwrap_or_else(|e| e.into_inner());
        if seal.is_none() {
            return Err(KeyError::StartedOpen);
        }
        *seal = Some(Arc::new(Seal::new(keyring, &self.cluster_id, self.window)));
        Ok(())
    }

    /// The counters so far.
    pub fn stats(&self) -> GossipStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let r = |k: usize| get(&c.rejected[k]);
        GossipStats {
            packets_sent: get(&c.packets_sent),
            bytes_sent: get(&c.bytes_sent),
            envelope_bytes_sent: get(&c.envelope_bytes_sent),
            send_failures: get(&c.send_failures),
            packets_received: get(&c.packets_received),
            bytes_received: get(&c.bytes_received),
            packets_accepted: get(&c.packets_accepted),
            rejected_plain: r(0),
            rejected_malformed: r(1),
            rejected_unknown_key: r(2),
            rejected_forged: r(3),
            rejected_stale: r(4),
            rejected_sealed: r(5),
            rejected_undecodable: r(6),
            member_entries_cut: get(&c.member_entries_cut),
        }
    }

    /// Counts `cut` entries of nodes past the member bound in a packet from `from`, and
    /// logs it at most once per [`LOG_EVERY`].
    fn members_cut(&self, from: SocketAddr, cut: usize, tracked: usize) {
        add(&self.counters.member_entries_cut, cut);
        let Some(suppressed) = self.log_allowed(MEMBERS_CUT) else {
            return;
        };
        warn!(
            %from, entries = cut, tracked, limit = self.member_limit, suppressed,
            "ignoring nodes past the member limit: this node tracks at most {} nodes (live, dead, or older generations of a node not yet forgotten), and the cluster has more; the others are not seen, own nothing here and run nothing for this node (README, Limits)",
            self.member_limit
        );
    }

    /// Whether a line of log kind `kind` may be logged now, with how many went unlogged
    /// since the last one; at most once per [`LOG_EVERY`] per kind.
    fn log_allowed(&self, kind: usize) -> Option<u64> {
        let now = self.clock.now();
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        let l = &mut logged[kind];
        let every = i64::try_from(LOG_EVERY.as_millis()).unwrap_or(i64::MAX);
        if l.last.is_some_and(|t| now.millis_since(t) < every) {
            l.suppressed += 1;
            return None;
        }
        l.last = Some(now);
        Some(std::mem::take(&mut l.suppressed))
    }

    /// Counts a dropped datagram and logs it, at most once per [`LOG_EVERY`] per kind.
    fn dropped(&self, from: SocketAddr, len: usize, why: Dropped) {
        add(&self.counters.rejected[why.kind()], 1);
        let Some(suppressed) = self.log_allowed(why.kind()) else {
            return;
        };
        match why {
            Dropped::Open(OpenError::Plain) => warn!(
                %from, bytes = len, suppressed,
                "dropped a gossip packet without a seal: its sender has no cluster key, and only nodes with a key of this node's keyring can join"
            ),
            Dropped::Open(OpenError::Malformed) => warn!(
                %from, bytes = len, suppressed,
                "dropped a gossip packet that is not a sealed packet"
            ),
            Dropped::Open(OpenError::UnknownKey(id)) => warn!(
                %from, bytes = len, suppressed, key = %id,
                "dropped a gossip packet sealed with a key that is not in this node's keyring: a wrong key, or a rotation step not done on this node yet"
            ),
            Dropped::Open(OpenError::Forged(id)) => warn!(
                %from, bytes = len, suppressed, key = %id,
                "dropped a gossip packet that failed authentication: corrupted, forged, or sealed for another cluster id"
            ),
            Dropped::Open(OpenError::Stale { age_ms }) => warn!(
                %from, bytes = len, suppressed, age_ms, window = ?self.window,
                "dropped a gossip packet dated outside the replay window: a replayed packet, or clocks further apart than the window (dead_node_grace_period)"
            ),
            Dropped::SealedAtOpenNode => warn!(
                %from, bytes = len, suppressed,
                "dropped a sealed gossip packet: this node has no cluster key; give it the cluster's key (--cluster-key-file or STARLING_CLUSTER_KEY)"
            ),
            Dropped::Undecodable => warn!(
                %from, bytes = len, suppressed,
                "dropped a gossip packet that is not a chitchat message"
            ),
        }
    }
}

/// A chitchat [`Transport`] over [`Datagrams`] that seals and opens every packet (see the
/// module docs).
pub struct GossipTransport {
    datagrams: Arc<dyn Datagrams>,
    security: Arc<GossipSecurity>,
    own: Option<String>,
}

impl GossipTransport {
    /// Gossip over `datagrams` with `security`'s seal.
    pub fn new(datagrams: Arc<dyn Datagrams>, security: Arc<GossipSecurity>) -> GossipTransport {
        GossipTransport {
            datagrams,
            security,
            own: None,
        }
    }

    /// The id of the node this transport carries: the member bound always keeps it and
    /// counts it as one (see [`super::tracked`]). Without it, the node's own entry can be
    /// cut once strangers fill the bound.
    pub fn for_node(mut self, id: &str) -> GossipTransport {
        self.own = Some(id.to_string());
        self
    }
}

#[async_trait::async_trait]
impl Transport for GossipTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(GossipSocket {
            inner: self.datagrams.bind(listen_addr).await?,
            security: self.security.clone(),
            envelope: Vec::new(),
            sealed: Vec::new(),
            datagram: vec![0; 1 << 16].into_boxed_slice(),
            opened: Vec::new(),
            tracked: self.security.tracker(self.own.clone()),
        }))
    }
}

struct GossipSocket {
    inner: Box<dyn DatagramSocket>,
    security: Arc<GossipSecurity>,
    envelope: Vec<u8>,
    sealed: Vec<u8>,
    datagram: Box<[u8]>,
    opened: Vec<u8>,
    tracked: Tracked,
}

/// Opens and decodes one datagram received from `from`; `None` if it was dropped (counted
/// and logged). `opened` is scratch space for the opened bytes.
fn accept(
    security: &GossipSecurity,
    datagram: &[u8],
    from: SocketAddr,
    opened: &mut Vec<u8>,
) -> Option<ChitchatEnvelope> {
    let len = datagram.len();
    let (plain, key): (&[u8], _) = match security.current() {
        Some(seal) => match seal.open(datagram, security.clock.now(), opened) {
            Ok(key) => (opened, Some(key)),
            Err(e) => {
                security.dropped(from, len, Dropped::Open(e));
                return None;
            }
        },
        None if datagram.first() == Some(&SEALED_FORMAT) => {
            security.dropped(from, len, Dropped::SealedAtOpenNode);
            return None;
        }
        None => (datagram, None),
    };
    match ChitchatEnvelope::deserialize(&mut &plain[..]) {
        Ok(envelope) => {
            add(&security.counters.packets_accepted, 1);
            if let Some(key) = key {
                security.heard(from, key);
            }
            Some(envelope)
        }
        Err(_) => {
            security.dropped(from, len, Dropped::Undecodable);
            None
        }
    }
}

#[async_trait::async_trait]
impl Socket for GossipSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let security = &self.security;
        let c = &security.counters;
        self.envelope.clear();
        envelope.serialize(&mut self.envelope);
        let payload = match security.current() {
            Some(seal) => {
                seal.seal(
                    &self.envelope,
                    security.clock.now(),
                    security.entropy.as_ref(),
                    &mut self.sealed,
                );
                &self.sealed
            }
            None => &self.envelope,
        };
        if payload.len() > MAX_UDP_DATAGRAM_PAYLOAD_SIZE {
            add(&c.send_failures, 1);
            anyhow::bail!(
                "a gossip message of {} bytes does not fit in a datagram ({MAX_UDP_DATAGRAM_PAYLOAD_SIZE}); too many nodes or too large values",
                payload.len()
            );
        }
        if let Err(e) = self.inner.send_to(to, payload).await {
            add(&c.send_failures, 1);
            return Err(e);
        }
        add(&c.packets_sent, 1);
        add(&c.bytes_sent, payload.len());
        add(&c.envelope_bytes_sent, self.envelope.len());
        Ok(SendOutcome {
            num_bytes_sent: payload.len(),
        })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            // The only await: everything after it is synchronous, so this is cancel-safe.
            let (len, from) = self.inner.recv_from(&mut self.datagram).await?;
            add(&self.security.counters.packets_received, 1);
            add(&self.security.counters.bytes_received, len);
            let datagram = &self.datagram[..len];
            if let Some(mut envelope) = accept(&self.security, datagram, from, &mut self.opened) {
                let cut = self
                    .tracked
                    .filter(&mut envelope, self.security.clock.now());
                if cut > 0 {
                    self.security.members_cut(from, cut, self.tracked.len());
                }
                return Ok(RecvOutcome {
                    from_addr: from,
                    envelope,
                    num_bytes_received: len,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use tokio::sync::mpsc;

    use super::*;
    use crate::cluster::Cluster;
    use crate::cluster::tests::{config, free_addr};
    use crate::node::SystemClock;
    use crate::security::{ClusterKey, KEY_LEN, OsEntropy};

    fn ring(seed: u8) -> Keyring {
        Keyring::new(vec![ClusterKey::from_bytes([seed; KEY_LEN])]).unwrap()
    }

    fn security(keys: Option<&Keyring>) -> Arc<GossipSecurity> {
        GossipSecurity::new(
            keys,
            "receipts",
            Duration::from_secs(60),
            Arc::new(SystemClock),
            Arc::new(OsEntropy),
        )
    }

    async fn node(
        id: &str,
        addr: SocketAddr,
        seeds: Vec<SocketAddr>,
        keys: Option<&Keyring>,
    ) -> (Cluster, Arc<GossipSecurity>) {
        let config = config(id, addr, seeds);
        let security = security(keys);
        let transport = GossipTransport::new(Arc::new(UdpDatagrams), security.clone());
        let (tx, _rx) = mpsc::unbounded_channel();
        let cluster = Cluster::spawn(&config, Arc::new(transport), tx)
            .await
            .unwrap();
        (cluster, security)
    }

    fn live_ids(c: &Cluster) -> Vec<String> {
        let live: BTreeMap<_, _> = c.live_watcher().borrow().clone();
        live.keys().map(|id| id.node_id.to_string()).collect()
    }

    /// Over real UDP: two nodes with the key gossip; a node with another key and a node
    /// with none hear nothing, learn nothing, and are dropped and counted by the others.
    #[tokio::test]
    async fn only_nodes_with_the_key_join() {
        let addrs: Vec<SocketAddr> = (0..4).map(|_| free_addr()).collect();
        let seeds = |i: usize| -> Vec<SocketAddr> {
            addrs
                .iter()
                .copied()
                .enumerate()
                .filter(|&(k, _)| k != i)
                .map(|(_, a)| a)
                .collect()
        };
        let (k1, k2) = (ring(1), ring(2));
        let (a, a_sec) = node("a", addrs[0], seeds(0), Some(&k1)).await;
        let (b, _) = node("b", addrs[1], seeds(1), Some(&k1)).await;
        let (wrong, wrong_sec) = node("wrong", addrs[2], seeds(2), Some(&k2)).await;
        let (open, open_sec) = node("open", addrs[3], seeds(3), None).await;
        let mut w = a.live_watcher();
        tokio::time::timeout(Duration::from_secs(10), w.wait_for(|l| l.len() == 2))
            .await
            .expect("a and b never saw each other")
            .unwrap();
        // Many rounds for the outsiders to try; then until each has tried each of the
        // others (a gossip round picks its peers at random: on a loaded machine 600 ms
        // once passed before the open node had sent to a), at most 10 s more.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let tried = || {
            let (s, w, o) = (a_sec.stats(), wrong_sec.stats(), open_sec.stats());
            s.rejected_unknown_key > 0
                && s.rejected_plain > 0
                && w.rejected_unknown_key > 0
                && w.rejected_plain > 0
                && o.rejected_sealed > 0
        };
        for _ in 0..100 {
            if tried() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(live_ids(&a), ["a", "b"]);
        assert_eq!(live_ids(&b), ["a", "b"]);
        assert_eq!(live_ids(&wrong), ["wrong"]);
        assert_eq!(live_ids(&open), ["open"]);
        assert_eq!(wrong.known_peers().await, 0, "not even a dead entry");
        assert_eq!(open.known_peers().await, 0);
        let s = a_sec.stats();
        assert!(s.rejected_unknown_key > 0 && s.rejected_plain > 0, "{s:?}");
        assert!(s.packets_accepted > 0, "{s:?}");
        assert!(s.bytes_sent > s.envelope_bytes_sent, "{s:?}");
        assert_eq!(
            s.bytes_sent - s.envelope_bytes_sent,
            s.packets_sent * crate::security::SEAL_OVERHEAD as u64,
            "the seal's cost is its fixed overhead per packet"
        );
        let w = wrong_sec.stats();
        assert_eq!(w.packets_accepted, 0, "{w:?}");
        assert!(w.rejected_unknown_key > 0 && w.rejected_plain > 0, "{w:?}");
        let o = open_sec.stats();
        assert_eq!(o.packets_accepted, 0, "{o:?}");
        assert!(o.rejected_sealed > 0, "{o:?}");
        // The key status the console shows: a heard b with the key, and nobody else.
        let k1_id = k1.sealing().id();
        let keys = a_sec.keys();
        assert_eq!((keys.sealing, keys.held), (Some(k1_id), vec![k1_id]));
        assert_eq!(keys.peers, BTreeMap::from([(addrs[1], k1_id)]));
        assert_eq!(open_sec.keys(), GossipKeys::default());
        for c in [a, b, wrong, open] {
            c.shutdown().await;
        }
    }

    /// Over real UDP, three nodes seeding each other: the node bounded to 2 members
    /// tracks itself and the first peer it heard of, never learns of the third (not even
    /// as a dead entry), and counts what it cut; the unbounded nodes see all three.
    #[tokio::test]
    async fn a_node_tracks_no_more_members_than_its_bound() {
        let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
        let others = |i: usize| -> Vec<SocketAddr> {
            let mut a = addrs.clone();
            a.remove(i);
            a
        };
        let keys = ring(3);
        let bounded = security(Some(&keys)).with_member_limit(2);
        let config = config("a", addrs[0], others(0));
        let transport = GossipTransport::new(Arc::new(UdpDatagrams), bounded.clone()).for_node("a");
        let (tx, _rx) = mpsc::unbounded_channel();
        let a = Cluster::spawn(&config, Arc::new(transport), tx)
            .await
            .unwrap();
        let (b, _) = node("b", addrs[1], others(1), Some(&keys)).await;
        let (c, _) = node("c", addrs[2], others(2), Some(&keys)).await;
        for n in [&b, &c] {
            let mut w = n.live_watcher();
            tokio::time::timeout(Duration::from_secs(10), w.wait_for(|l| l.len() == 3))
                .await
                .expect("the unbounded nodes never saw all three")
                .unwrap();
        }
        // Many rounds for a to hear of the third node, and to refuse it.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let seen = live_ids(&a);
        assert_eq!(seen.len(), 2, "a tracks itself and one peer: {seen:?}");
        assert_eq!(
            a.known_peers().await,
            1,
            "the third node is not even a dead entry"
        );
        assert!(
            bounded.stats().member_entries_cut > 0,
            "{:?}",
            bounded.stats()
        );
        for n in [a, b, c] {
            n.shutdown().await;
        }
    }

    #[test]
    fn peer_keys_are_bounded_and_the_least_recently_heard_goes_first() {
        let sec = security(Some(&ring(1)));
        let id = ring(1).sealing().id();
        let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16));
        for i in 0..MAX_PEER_KEYS {
            sec.heard(addr(i), id);
        }
        // Address 0 is heard again, so 1 is now the least recently heard.
        sec.heard(addr(0), id);
        sec.heard(addr(MAX_PEER_KEYS), id);
        let peers = sec.keys().peers;
        assert_eq!(peers.len(), MAX_PEER_KEYS);
        assert!(peers.contains_key(&addr(0)) && peers.contains_key(&addr(MAX_PEER_KEYS)));
        assert!(!peers.contains_key(&addr(1)));
    }

    /// A key rotation on live nodes, in the three steps of the README: gossip never stops.
    #[tokio::test]
    async fn keys_rotate_without_a_gap() {
        let (aa, ba) = (free_addr(), free_addr());
        let (old, new) = (ring(1), ring(2));
        let both = |first: &Keyring, second: &Keyring| {
            Keyring::new(vec![first.sealing().clone(), second.sealing().clone()]).unwrap()
        };
        let (a, a_sec) = node("a", aa, vec![ba], Some(&old)).await;
        let (b, b_sec) = node("b", ba, vec![aa], Some(&old)).await;
        let mut w = a.live_watcher();
        tokio::time::timeout(Duration::from_secs(10), w.wait_for(|l| l.len() == 2))
            .await
            .expect("a and b never saw each other")
            .unwrap();
        // Each step is taken by one node, then the other, with gossip in between.
        for step in [both(&old, &new), both(&new, &old), new.clone()] {
            for sec in [&a_sec, &b_sec] {
                sec.set_keyring(&step).unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let before = (a_sec.stats(), b_sec.stats());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = (a_sec.stats(), b_sec.stats());
        assert!(after.0.packets_accepted > before.0.packets_accepted);
        assert!(after.1.packets_accepted > before.1.packets_accepted);
        assert_eq!(a_sec.sealing_key(), Some(new.sealing().id()));
        // Each node last heard the other seal with the new key, and holds only it.
        let new_id = new.sealing().id();
        assert_eq!(a_sec.keys().peers, BTreeMap::from([(ba, new_id)]));
        assert_eq!(b_sec.keys().peers, BTreeMap::from([(aa, new_id)]));
        assert_eq!(b_sec.keys().held, vec![new_id]);
        assert_eq!(
            after.0.rejected() + after.1.rejected(),
            0,
            "a packet was dropped during the rotation: {after:?}"
        );
        assert_eq!(live_ids(&a), ["a", "b"]);
        assert!(matches!(
            security(None).set_keyring(&new),
            Err(KeyError::StartedOpen)
        ));
        a.shutdown().await;
        b.shutdown().await;
    }

    /// Garbage, truncated and replayed-then-tampered datagrams are counted and dropped; the
    /// log shows at most one line per kind per `LOG_EVERY` (checked by the counter of
    /// suppressed lines).
    #[test]
    fn bad_datagrams_are_counted_by_kind_and_logged_rarely() {
        let keyed = security(Some(&ring(1)));
        let open = security(None);
        let from = free_addr();
        let mut scratch = Vec::new();
        let mut sealed = Vec::new();
        let envelope = ChitchatEnvelope {
            version: chitchat::ProtocolVersion::V0,
            message: chitchat::ChitchatMessage::BadCluster,
        };
        let plain = envelope.serialize_to_vec();
        keyed
            .current()
            .unwrap()
            .seal(&plain, SystemClock.now(), &OsEntropy, &mut sealed);
        assert!(accept(&keyed, &sealed, from, &mut scratch).is_some());
        assert!(accept(&open, &plain, from, &mut scratch).is_some());
        for _ in 0..1_000 {
            assert!(accept(&keyed, &plain, from, &mut scratch).is_none());
            assert!(accept(&keyed, &sealed[..sealed.len() - 1], from, &mut scratch).is_none());
            assert!(accept(&keyed, b"junk", from, &mut scratch).is_none());
            assert!(accept(&open, &sealed, from, &mut scratch).is_none());
            assert!(accept(&open, b"\x53junk", from, &mut scratch).is_none());
        }
        let k = keyed.stats();
        assert_eq!(
            (
                k.packets_accepted,
                k.rejected_plain,
                k.rejected_forged,
                k.rejected_malformed
            ),
            (1, 1_000, 1_000, 1_000)
        );
        let o = open.stats();
        assert_eq!(
            (
                o.packets_accepted,
                o.rejected_sealed,
                o.rejected_undecodable
            ),
            (1, 1_000, 1_000)
        );
        let logged = keyed.logged.lock().unwrap();
        assert_eq!(
            logged[Dropped::Open(OpenError::Plain).kind()].suppressed,
            999
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

        /// Whatever a datagram holds, receiving it never panics, and with a key nothing
        /// that was not sealed with it reaches chitchat. Without a key, arbitrary bytes go
        /// through chitchat's own decoder, which must not panic either.
        #[test]
        fn arbitrary_datagrams_never_panic_and_never_pass_the_seal(
            bytes in proptest::collection::vec(any::<u8>(), 0..2_000),
        ) {
            let keyed = security(Some(&ring(1)));
            let open = security(None);
            let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
            let mut scratch = Vec::new();
            prop_assert!(accept(&keyed, &bytes, from, &mut scratch).is_none());
            let _ = accept(&open, &bytes, from, &mut scratch);
        }
    }
}
