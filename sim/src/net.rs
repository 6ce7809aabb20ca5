//! The simulated network: datagrams (Starling's `Datagrams`) that go through one seeded,
//! ordered delivery queue. The nodes' gossip transport seals and opens them as over UDP,
//! so the simulator runs the cluster key's seal too.
//!
//! Loss, delay and jitter are drawn from the seed. Partitions (one-way blocks between two
//! addresses) are applied when a packet is sent and again when it is delivered. A stalled
//! node's traffic is held until the stall ends. One task drains the queue in (time,
//! sequence) order; there is no task per packet.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use starling::cluster::{DatagramSocket, Datagrams};
use tokio::sync::{Notify, mpsc};
use xxhash_rust::xxh3::Xxh3;

use crate::rng::SimRng;

type Inbox = mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>;

/// Network conditions, changed by the fault schedule as the run goes.
#[derive(Clone, Debug, Default)]
pub struct Conditions {
    /// Probability that a packet is lost.
    pub loss: f64,
    /// Minimum one-way delay, ms.
    pub delay_ms: u64,
    /// Extra uniform delay, 0..=jitter ms.
    pub jitter_ms: u64,
    /// One-way blocks: packets from `.0` to `.1` are dropped.
    pub blocked: BTreeSet<(SocketAddr, SocketAddr)>,
    /// Traffic from or to these addresses is held until the given time (ms), as for a
    /// stalled process.
    pub held_until: BTreeMap<SocketAddr, i64>,
    /// The processor of the node at this address is busy until the given time (ms): a
    /// packet it sends or receives meanwhile waits for the work queued before it, not for
    /// work queued after (`load-burst`; see the simulator's `Cpu`).
    pub busy_until: BTreeMap<SocketAddr, i64>,
}

struct Packet {
    from: SocketAddr,
    to: SocketAddr,
    payload: Vec<u8>,
    /// It waited for its receiver's busy processor already.
    waited: bool,
}

struct State {
    rng: SimRng,
    seq: u64,
    queue: BTreeMap<(i64, u64), Packet>,
    inboxes: BTreeMap<SocketAddr, Inbox>,
    conditions: Conditions,
    hash: Xxh3,
    stats: NetStats,
}

fn hash_addr(hash: &mut Xxh3, addr: SocketAddr) {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => hash.update(&ip.octets()),
        std::net::IpAddr::V6(ip) => hash.update(&ip.octets()),
    }
    hash.update(&addr.port().to_le_bytes());
}

/// Packet counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetStats {
    /// Packets handed to the network.
    pub sent: u64,
    /// Packets delivered to a live socket.
    pub delivered: u64,
    /// Packets lost, blocked, or addressed to a closed socket.
    pub dropped: u64,
}

/// The simulated network. Cheap to clone; all clones are the same network.
#[derive(Clone)]
pub struct SimNet {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    base: tokio::time::Instant,
}

impl SimNet {
    /// A network drawing loss and delay from `rng`, with time measured from `base`.
    pub fn new(rng: SimRng, base: tokio::time::Instant, conditions: Conditions) -> SimNet {
        SimNet {
            state: Arc::new(Mutex::new(State {
                rng,
                seq: 0,
                queue: BTreeMap::new(),
                inboxes: BTreeMap::new(),
                conditions,
                hash: Xxh3::new(),
                stats: NetStats::default(),
            })),
            wake: Arc::new(Notify::new()),
            base,
        }
    }

    #[allow(clippy::disallowed_methods)] // paused tokio time: simulated, deterministic
    fn now_ms(&self) -> i64 {
        tokio::time::Instant::now()
            .duration_since(self.base)
            .as_millis() as i64
    }

    /// Changes the network conditions from now on.
    pub fn update(&self, f: impl FnOnce(&mut Conditions)) {
        f(&mut self.state.lock().unwrap().conditions);
    }

    /// The hash of every delivery so far: time, endpoints and message content.
    pub fn hash(&self) -> u64 {
        self.state.lock().unwrap().hash.digest()
    }

    /// Packet counters.
    pub fn stats(&self) -> NetStats {
        self.state.lock().unwrap().stats
    }

    fn send(&self, from: SocketAddr, to: SocketAddr, payload: Vec<u8>) {
        let now = self.now_ms();
        let mut st = self.state.lock().unwrap();
        st.stats.sent += 1;
        let c = &st.conditions;
        if c.blocked.contains(&(from, to)) {
            st.stats.dropped += 1;
            return;
        }
        let (loss, delay, jitter) = (c.loss, c.delay_ms, c.jitter_ms);
        let held = c
            .held_until
            .get(&from)
            .copied()
            .max(c.held_until.get(&to).copied())
            .unwrap_or(0);
        if st.rng.chance(loss) {
            st.stats.dropped += 1;
            return;
        }
        let d = delay + st.rng.below(jitter + 1);
        // Sent once the sender's processor gets to it.
        let busy = st.conditions.busy_until.get(&from).copied().unwrap_or(0);
        let at = (now.max(busy) + d as i64).max(held);
        st.seq += 1;
        let seq = st.seq;
        st.queue.insert(
            (at, seq),
            Packet {
                from,
                to,
                payload,
                waited: false,
            },
        );
        drop(st);
        self.wake.notify_one();
    }

    fn open(&self, addr: SocketAddr) -> mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.state.lock().unwrap().inboxes.insert(addr, tx);
        rx
    }

    /// Delivers packets in (time, sequence) order until the runtime stops. Spawn once.
    pub async fn run(self) {
        loop {
            let next = {
                let mut st = self.state.lock().unwrap();
                let now = self.now_ms();
                while let Some(entry) = st.queue.first_entry() {
                    let (at, _) = *entry.key();
                    if at > now {
                        break;
                    }
                    let mut p = entry.remove();
                    let busy = st.conditions.busy_until.get(&p.to).copied().unwrap_or(0);
                    if busy > now && !p.waited {
                        // Read once the work queued before it is done.
                        p.waited = true;
                        st.seq += 1;
                        let seq = st.seq;
                        st.queue.insert((busy, seq), p);
                        continue;
                    }
                    let held = st.conditions.held_until.get(&p.to).copied().unwrap_or(0);
                    if held > now {
                        // The receiver stalled after this was sent: wait for it.
                        st.seq += 1;
                        let seq = st.seq;
                        st.queue.insert((held, seq), p);
                        continue;
                    }
                    if st.conditions.blocked.contains(&(p.from, p.to)) {
                        st.stats.dropped += 1;
                        continue;
                    }
                    // The datagram's bytes, sealed or not: seeded nonces keep them the
                    // same from run to run.
                    st.hash.update(&now.to_le_bytes());
                    hash_addr(&mut st.hash, p.from);
                    hash_addr(&mut st.hash, p.to);
                    st.hash.update(&(p.payload.len() as u64).to_le_bytes());
                    st.hash.update(&p.payload);
                    let delivered = st
                        .inboxes
                        .get(&p.to)
                        .is_some_and(|tx| tx.send((p.from, p.payload)).is_ok());
                    if delivered {
                        st.stats.delivered += 1;
                    } else {
                        st.stats.dropped += 1;
                    }
                }
                st.queue.first_key_value().map(|((at, _), _)| *at)
            };
            match next {
                Some(at) => {
                    let deadline = self.base + Duration::from_millis(at as u64);
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        _ = self.wake.notified() => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }
}

#[async_trait]
impl Datagrams for SimNet {
    async fn bind(&self, addr: SocketAddr) -> anyhow::Result<Box<dyn DatagramSocket>> {
        let rx = SimNet::open(self, addr);
        Ok(Box::new(SimSocket {
            addr,
            rx,
            net: self.clone(),
        }))
    }
}

struct SimSocket {
    addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)>,
    net: SimNet,
}

#[async_trait]
impl DatagramSocket for SimSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.addr)
    }

    async fn send_to(&mut self, to: SocketAddr, payload: &[u8]) -> anyhow::Result<()> {
        self.net.send(self.addr, to, payload.to_vec());
        Ok(())
    }

    async fn recv_from(&mut self, buf: &mut [u8]) -> anyhow::Result<(usize, SocketAddr)> {
        match self.rx.recv().await {
            Some((from, payload)) => {
                // As UDP does, a datagram longer than the buffer is cut.
                let n = payload.len().min(buf.len());
                buf[..n].copy_from_slice(&payload[..n]);
                Ok((n, from))
            }
            None => anyhow::bail!("simulated socket {} closed", self.addr),
        }
    }
}
