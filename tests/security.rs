//! Gossip security (issue 16): replays of captured packets, nodes with a wrong key or none,
//! hostile datagrams, and key rotation, over real UDP on 127.0.0.1; the process-level tests
//! run the real binary.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use starling::cluster::{
    Cluster, DatagramSocket, Datagrams, Event, GossipConfig, GossipSecurity, GossipTransport,
    Publish, Record, UdpDatagrams,
};
use starling::security::{ClusterKey, KEY_LEN, Keyring, OsEntropy};
use starling::{Clock, FireRecord, JobId, NodeId, SystemClock, UnixMillis};
use tokio::sync::mpsc;

mod common;

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], common::free_port()))
}

/// Every datagram a node sends, as it left: what an attacker on the network captures.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Vec<u8>>>>);

#[async_trait::async_trait]
impl Datagrams for Capture {
    async fn bind(&self, addr: SocketAddr) -> anyhow::Result<Box<dyn DatagramSocket>> {
        Ok(Box::new(CaptureSocket {
            inner: UdpDatagrams.bind(addr).await?,
            log: self.clone(),
        }))
    }
}

struct CaptureSocket {
    inner: Box<dyn DatagramSocket>,
    log: Capture,
}

#[async_trait::async_trait]
impl DatagramSocket for CaptureSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send_to(&mut self, to: SocketAddr, payload: &[u8]) -> anyhow::Result<()> {
        self.log.0.lock().unwrap().push(payload.to_vec());
        self.inner.send_to(to, payload).await
    }

    async fn recv_from(&mut self, buf: &mut [u8]) -> anyhow::Result<(usize, SocketAddr)> {
        self.inner.recv_from(buf).await
    }
}

struct Peer {
    cluster: Cluster,
    security: Arc<GossipSecurity>,
    events: mpsc::UnboundedReceiver<Event>,
}

/// A gossiping node (the cluster adapter alone: no planner) sealing with `keys`, refusing
/// packets dated further than `window` from its clock.
async fn peer(
    id: &str,
    addr: SocketAddr,
    seeds: Vec<SocketAddr>,
    keys: &Keyring,
    window: Duration,
    datagrams: Arc<dyn Datagrams>,
) -> Peer {
    let config = GossipConfig {
        node_id: NodeId::new(id),
        generation: 1,
        listen_addr: addr,
        advertise_addr: addr,
        seeds,
        cluster_id: "replays".into(),
        gossip_interval: Duration::from_millis(50),
        phi_threshold: 8.0,
        dead_node_grace_period: Duration::from_secs(60),
    };
    let security = GossipSecurity::new(
        Some(keys),
        &config.cluster_id,
        window,
        Arc::new(SystemClock),
        Arc::new(OsEntropy),
    );
    let transport = GossipTransport::new(datagrams, security.clone());
    let (tx, events) = mpsc::unbounded_channel();
    let cluster = Cluster::spawn(&config, Arc::new(transport), tx)
        .await
        .expect("gossip starts");
    Peer {
        cluster,
        security,
        events,
    }
}

fn ring(seed: u8) -> Keyring {
    Keyring::new(vec![ClusterKey::from_bytes([seed; KEY_LEN])]).unwrap()
}

fn live(p: &Peer) -> Vec<String> {
    let live = p.cluster.live_watcher().borrow().clone();
    live.keys().map(|id| id.node_id.to_string()).collect()
}

/// Waits (bounded) for a fire record of job `j` at `slot` to reach `p`.
async fn wait_record(p: &mut Peer, slot: i64) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = p.events.recv().await {
            if matches!(ev, Event::Record(ref r) if r.record.slot == UnixMillis(slot)) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the record of slot {slot} never arrived"));
}

async fn publish(p: &Peer, slot: i64) {
    p.cluster
        .publisher()
        .publish(&Publish {
            records: vec![Record {
                job: JobId::new("j"),
                record: FireRecord::single(UnixMillis(slot), 1),
                node: NodeId::new("a"),
            }],
            running: Vec::new(),
        })
        .await;
}

/// Sends every captured datagram to `to` from `from`: the dead node's own address, so the
/// replay looks exactly like the node's traffic.
async fn replay(packets: &[Vec<u8>], from: SocketAddr, to: SocketAddr) {
    let mut socket = None;
    for _ in 0..100 {
        // The dead node's socket closes as its task is dropped.
        match tokio::net::UdpSocket::bind(from).await {
            Ok(s) => {
                socket = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let socket = socket.expect("the dead node's address never came free");
    for p in packets {
        socket.send_to(p, to).await.unwrap();
    }
}

/// Replays of a node's captured packets, sent from its own address after it died:
/// - at a node that saw its later state, they change nothing: no key goes back to an older
///   value and the dead node does not come back to life, although every one of them is
///   authentic and inside the replay window (chitchat applies a node's key-values and
///   heartbeats only above the versions it holds);
/// - at a node started later that never heard of it, every one is older than the replay
///   window and is dropped before chitchat sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_packets_neither_roll_state_back_nor_revive_a_dead_node() {
    let window = Duration::from_secs(3);
    let keys = ring(1);
    let (a_addr, b_addr, c_addr) = (free_addr(), free_addr(), free_addr());
    let capture = Capture::default();
    let a = peer(
        "a",
        a_addr,
        vec![b_addr],
        &keys,
        window,
        Arc::new(capture.clone()),
    )
    .await;
    let mut b = peer(
        "b",
        b_addr,
        vec![a_addr],
        &keys,
        window,
        Arc::new(UdpDatagrams),
    )
    .await;
    publish(&a, 1_000).await;
    wait_record(&mut b, 1_000).await;
    publish(&a, 2_000).await;
    wait_record(&mut b, 2_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.cluster.abort();
    let captured_at = SystemClock.now();
    let packets = capture.0.lock().unwrap().clone();
    assert!(
        packets.len() > 10,
        "only {} packets captured",
        packets.len()
    );
    let mut watch = b.cluster.live_watcher();
    tokio::time::timeout(
        Duration::from_secs(10),
        watch.wait_for(|l| l.keys().all(|id| &*id.node_id != "a")),
    )
    .await
    .expect("b never saw a die")
    .unwrap();
    while b.events.try_recv().is_ok() {}

    let accepted = b.security.stats().packets_accepted;
    replay(&packets, a_addr, b_addr).await;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(live(&b), ["b"], "a replay revived the dead node");
    }
    let s = b.security.stats();
    assert!(
        s.packets_accepted >= accepted + packets.len() as u64 * 9 / 10,
        "the replayed packets should have reached chitchat (inside the window): {s:?}"
    );
    let changed: Vec<Event> = std::iter::from_fn(|| b.events.try_recv().ok()).collect();
    assert!(
        changed.is_empty(),
        "a replay changed the dead node's state: {changed:?}"
    );

    // Past the window, a node that never heard of `a` gets nothing from the same packets.
    let past = captured_at.saturating_add(window + Duration::from_millis(300));
    common::sleep_until(past);
    let c = peer(
        "c",
        c_addr,
        Vec::new(),
        &keys,
        window,
        Arc::new(UdpDatagrams),
    )
    .await;
    replay(&packets, a_addr, c_addr).await;
    let mut stale = 0;
    for _ in 0..100 {
        stale = c.security.stats().rejected_stale;
        if stale == packets.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stale, packets.len() as u64, "{:?}", c.security.stats());
    assert_eq!(c.security.stats().packets_accepted, 0);
    assert_eq!(c.cluster.known_peers().await, 0);
    assert_eq!(live(&c), ["c"]);
    b.cluster.shutdown().await;
    c.cluster.shutdown().await;
}
