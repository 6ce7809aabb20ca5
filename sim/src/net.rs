//! The simulated network: a chitchat `Transport` whose packets go through one seeded,
//! ordered delivery queue.
//!
//! Loss, delay and jitter are drawn from the seed. Partitions (one-way blocks between two
//! addresses) are applied when a packet is sent and again when it is delivered. A stalled
//! node's traffic is held until the stall ends. One task drains the queue in (time,
//! sequence) order; there is no task per packet.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use tokio::sync::{Notify, mpsc};
use xxhash_rust::xxh3::Xxh3;

use crate::rng::SimRng;

type Inbox = mpsc::UnboundedSender<(SocketAddr, ChitchatEnvelope)>;

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
}

struct Packet {
    from: SocketAddr,
    to: SocketAddr,
    envelope: ChitchatEnvelope,
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

/// Feeds formatted text into a hasher.
struct HashWriter<'a>(&'a mut Xxh3);

impl std::fmt::Write for HashWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
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

    fn send(&self, from: SocketAddr, to: SocketAddr, envelope: ChitchatEnvelope) {
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
        let at = (now + d as i64).max(held);
        st.seq += 1;
        let seq = st.seq;
        st.queue.insert((at, seq), Packet { from, to, envelope });
        drop(st);
        self.wake.notify_one();
    }

    fn open(&self, addr: SocketAddr) -> mpsc::UnboundedReceiver<(SocketAddr, ChitchatEnvelope)> {
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
                    let p = entry.remove();
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
                    // Formatted straight into the hasher: no string is built.
                    let _ = write!(
                        HashWriter(&mut st.hash),
                        "{now} {} {} {:?}",
                        p.from,
                        p.to,
                        p.envelope.message
                    );
                    let delivered = st
                        .inboxes
                        .get(&p.to)
                        .is_some_and(|tx| tx.send((p.from, p.envelope)).is_ok());
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
impl Transport for SimNet {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let rx = SimNet::open(self, listen_addr);
        Ok(Box::new(SimSocket {
            addr: listen_addr,
            rx,
            net: self.clone(),
        }))
    }
}

struct SimSocket {
    addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<(SocketAddr, ChitchatEnvelope)>,
    net: SimNet,
}

#[async_trait]
impl Socket for SimSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.addr)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        self.net.send(self.addr, to, envelope);
        Ok(SendOutcome { num_bytes_sent: 0 })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        match self.rx.recv().await {
            Some((from_addr, envelope)) => Ok(RecvOutcome {
                from_addr,
                envelope,
                num_bytes_received: 0,
            }),
            None => anyhow::bail!("simulated socket {} closed", self.addr),
        }
    }
}
