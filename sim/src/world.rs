//! The simulated world: real Starling nodes on a simulated network and clock, driven
//! through a fault schedule, with every run recorded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::BTreeMap;

use starling::core::placement::{Constraints, Placement, Tags};
use starling::core::planner::View;
use starling::exec::BoxFuture;
use starling::security::{ClusterKey, Entropy, KEY_LEN, Keyring};
use starling::{
    CatalogClient, Clock, ExecSpec, Executor, JobSpec, Node, NodeConfig, NodeHandle, Outcome,
    PausePoint, RunContext, UnixMillis,
};
use tokio::sync::watch;
use xxhash_rust::xxh3::Xxh3;

use crate::catalog::{FinalCatalog, OpRecord, Sample};
use crate::net::{Conditions, SimNet};
use crate::rng::SimRng;
use crate::scenario::{Fault, FaultPlan, Op, StopPoint};

/// Sim time 0 on every node's clock (before skew): 2026-03-08T06:59:00Z, one minute
/// before New York springs forward, so timezone jobs cross a DST change.
pub const EPOCH: UnixMillis = UnixMillis(1_772_953_140_000);

/// Knobs of one simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed everything is drawn from.
    pub seed: u64,
    /// Number of nodes.
    pub nodes: usize,
    /// The jobs.
    pub jobs: Vec<JobSpec>,
    /// Simulated run length.
    pub duration: Duration,
    /// The nodes' gossip interval.
    pub gossip_interval: Duration,
    /// Test-only: the deliberately broken ownership rule.
    pub broken_ownership: bool,
    /// Quorum mode: the expected cluster size (a majority of it must be seen to fire).
    pub expected_size: Option<usize>,
    /// The failure detector's phi threshold.
    pub phi_threshold: f64,
    /// Run length of the jobs that run longer than the node's usual 50-250 ms, in ms.
    pub long_runs: Arc<std::collections::BTreeMap<String, u64>>,
    /// Whether the nodes seal gossip with a cluster key (drawn from the seed).
    pub sealed: bool,
    /// What starting a run costs its node's processor, in µs (0: nothing). The node's
    /// starts queue on it, and its gossip traffic waits until the queue is done, as a
    /// process busy starting runs reads and answers no packet (`load-burst`, issue 14).
    pub start_cost_us: u64,
}

/// One execution of one slot, as the recording executor saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// Index of the node that ran it.
    pub node: usize,
    /// The job.
    pub job: String,
    /// The slot (Unix ms).
    pub slot: i64,
    /// True start time (ms since sim start; not skewed by the node's clock).
    pub started: i64,
    /// When it would end if nothing cancels it (ms since sim start).
    pub ends: i64,
    /// Its fire id: the slot's, or a run-now request's.
    pub fire_id: u64,
    /// The ownership epoch it ran under (see `Planner`): it rises only when the job's owner
    /// changes (issue 14: a clock step raised it from 1 to 8 with no owner change).
    pub epoch: u64,
    /// The job's constraints did not hold for the node's tags when it started (issue 18:
    /// must never happen).
    pub misplaced: bool,
}

/// A run that ended in success (its executor's future completed: not cancelled, not cut
/// by a crash), for the `pipeline` checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Success {
    /// Index of the node that ran it.
    pub node: usize,
    /// The job.
    pub job: String,
    /// Its fire id.
    pub fire_id: u64,
    /// When it ended (ms since sim start).
    pub at: i64,
}

/// A slot a node skipped because the job's previous run was still running (`forbid`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    /// Index of the node.
    pub node: usize,
    /// The job.
    pub job: String,
    /// The slot (Unix ms).
    pub slot: i64,
    /// When (ms since sim start).
    pub at: i64,
}

/// A view a node formed (its planner's members), for the checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewChange {
    /// When (ms since sim start).
    pub at: i64,
    /// Index of the node.
    pub node: usize,
    /// Its members.
    pub members: Vec<String>,
}

/// A second process started with a live node's id (`Fault::Impostor`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Impostor {
    /// When (ms since sim start).
    pub at: i64,
    /// Its slot.
    pub node: usize,
    /// The node whose id it took.
    pub of: usize,
    /// False when it found the id live and refused to start.
    pub started: bool,
}

/// A fault as applied, for the timeline and the checker.
#[derive(Clone, Debug)]
pub struct Applied {
    /// When (ms since sim start).
    pub at: i64,
    /// What.
    pub fault: Fault,
}

/// Everything a finished simulation produced.
#[derive(Debug)]
pub struct SimResult {
    /// Every run, in the order the executor saw them.
    pub runs: Vec<Run>,
    /// Every slot skipped by the overlap policy.
    pub skips: Vec<Skip>,
    /// Every run that succeeded, in the order they ended.
    pub successes: Vec<Success>,
    /// Duplicate runs the nodes alive at the end detected themselves (each side counts).
    pub duplicates_detected: u64,
    /// Runs the nodes alive at the end gave up (quorum mode), and of those, how many they
    /// ran late because the majority had skipped them.
    pub abandoned: u64,
    pub repaired: u64,
    /// Every fault, as applied.
    pub applied: Vec<Applied>,
    /// Every view every node formed.
    pub views: Vec<ViewChange>,
    /// Every impostor, and whether it started.
    pub impostors: Vec<Impostor>,
    /// Views of the live nodes at the end (index, view), for the agreement check.
    pub final_views: Vec<(usize, View)>,
    /// Hash of the event trace (runs and faults in order).
    pub trace_hash: u64,
    /// Hash of every network delivery.
    pub net_hash: u64,
    /// Packets sent, delivered, dropped.
    pub net_stats: crate::net::NetStats,
    /// Catalog operations, as they went (`catalog` scenario).
    pub ops: Vec<OpRecord>,
    /// What each node's catalog held of the dynamic jobs, every 2 s.
    pub samples: Vec<Sample>,
    /// Each live node's catalog at the end (`catalog` scenario).
    pub final_catalogs: Vec<FinalCatalog>,
    /// Requests the simulated HTTP endpoint received, and how many of their idempotency
    /// keys it had seen already.
    pub http_requests: u64,
    /// See `http_requests`.
    pub http_repeated_keys: u64,
}

/// A node's clock: paused tokio time since the start, plus the epoch and a skew that the
/// fault schedule can change (clock skew and jumps).
pub struct SimClock {
    base: tokio::time::Instant,
    offset_ms: AtomicI64,
}

impl SimClock {
    fn new(base: tokio::time::Instant, offset_ms: i64) -> SimClock {
        SimClock {
            base,
            offset_ms: AtomicI64::new(offset_ms),
        }
    }
}

/// Sim time 0 of the simulation this process runs, for [`SimTime`].
static LOG_BASE: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();

/// Stamps the nodes' log lines with simulated time (seconds since the start), so they can
/// be read against the fault schedule.
pub struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match LOG_BASE.get() {
            // Inside the simulation's runtime: its paused clock.
            Some(base) if tokio::runtime::Handle::try_current().is_ok() => {
                write!(w, "sim {:>9.3}s", sim_ms(*base) as f64 / 1000.0)
            }
            _ => write!(w, "sim         -"),
        }
    }
}

/// True simulated time in ms since the start.
#[allow(clippy::disallowed_methods)] // paused tokio time: simulated and deterministic
pub fn sim_ms(base: tokio::time::Instant) -> i64 {
    tokio::time::Instant::now().duration_since(base).as_millis() as i64
}

/// True simulated time in µs since the start.
#[allow(clippy::disallowed_methods)] // paused tokio time: simulated and deterministic
fn sim_us(base: tokio::time::Instant) -> i64 {
    tokio::time::Instant::now().duration_since(base).as_micros() as i64
}

impl Clock for SimClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(EPOCH.0 + sim_ms(self.base) + self.offset_ms.load(Ordering::Relaxed))
    }
}

/// Records every run and takes simulated time doing it.
struct Recorder {
    node: usize,
    base: tokio::time::Instant,
    /// While the node's process is stopped (`Fault::Pause`), until when (ms since start): a
    /// run whose task got to its executor meanwhile starts when the process resumes.
    frozen_until: Arc<AtomicI64>,
    runs: Arc<Mutex<Vec<Run>>>,
    skips: Arc<Mutex<Vec<Skip>>>,
    run_ms: u64,
    long_runs: Arc<std::collections::BTreeMap<String, u64>>,
    /// The node's weight and tags, as last declared.
    placement: Arc<Mutex<Placement>>,
    /// Each constrained job's constraints.
    constraints: Arc<BTreeMap<String, Constraints>>,
    /// The simulated HTTP endpoint: requests by idempotency key.
    endpoint: Arc<Mutex<BTreeMap<String, u64>>>,
    successes: Arc<Mutex<Vec<Success>>>,
    /// The node's processor (see [`SimConfig::start_cost_us`]).
    cpu: Cpu,
}

/// A node's processor, busy starting runs (see [`SimConfig::start_cost_us`]).
#[derive(Clone)]
struct Cpu {
    cost_us: u64,
    /// Until when it is busy, µs since the start.
    busy_until_us: Arc<AtomicI64>,
    net: SimNet,
    addr: std::net::SocketAddr,
}

impl Cpu {
    /// A run starts now: queues its cost (the node's packets sent or received meanwhile wait
    /// for it, see `Conditions::busy_until`), and returns how long (ms) the start waits for
    /// the processor.
    fn start(&self, base: tokio::time::Instant) -> i64 {
        if self.cost_us == 0 {
            return 0;
        }
        let now_us = sim_us(base);
        let busy = self.busy_until_us.load(Ordering::Relaxed).max(now_us) + self.cost_us as i64;
        self.busy_until_us.store(busy, Ordering::Relaxed);
        let until_ms = (busy + 999) / 1000;
        let addr = self.addr;
        self.net.update(|c| {
            c.busy_until.insert(addr, until_ms);
        });
        until_ms - sim_ms(base)
    }
}

impl Executor for Recorder {
    fn execute(&self, exec: &ExecSpec, ctx: RunContext) -> BoxFuture<Outcome> {
        let run_ms = self
            .long_runs
            .get(ctx.job.as_str())
            .copied()
            .unwrap_or(self.run_ms);
        let run = Run {
            node: self.node,
            job: ctx.job.to_string(),
            slot: ctx.scheduled_at.0,
            started: 0,
            ends: 0,
            fire_id: ctx.fire_id.0,
            epoch: ctx.epoch,
            misplaced: false,
        };
        let (base, runs) = (self.base, self.runs.clone());
        let frozen = self.frozen_until.load(Ordering::Relaxed) - sim_ms(base);
        // The process starts once the processor gets to it; it is started (and recorded)
        // as of now all the same: cancelling the run meanwhile kills a started process.
        let queued = self.cpu.start(base);
        let placement = self.placement.clone();
        let constraints = self.constraints.get(ctx.job.as_str()).cloned();
        // The request, as the endpoint sees it: `Idempotency-Key: <fire id>`.
        let request = exec
            .http
            .is_some()
            .then(|| (self.endpoint.clone(), ctx.fire_id.to_string()));
        // At the run's true start: after the process resumes when it is stopped.
        let record = move || {
            let started = sim_ms(base) + queued;
            let misplaced = constraints.is_some_and(|c| !placement.lock().unwrap().satisfies(&c));
            if let Some((endpoint, key)) = request {
                *endpoint.lock().unwrap().entry(key).or_default() += 1;
            }
            runs.lock().unwrap().push(Run {
                started,
                ends: started + run_ms as i64,
                misplaced,
                ..run
            });
        };
        let d = Duration::from_millis(run_ms);
        let (successes, node, job, fire_id) = (
            self.successes.clone(),
            self.node,
            ctx.job.to_string(),
            ctx.fire_id.0,
        );
        // At the run's end, if nothing cut it short (a crash, a cancel).
        let succeeded = move || {
            successes.lock().unwrap().push(Success {
                node,
                job,
                fire_id,
                at: sim_ms(base),
            });
        };
        if frozen <= 0 {
            record();
            return Box::pin(async move {
                tokio::time::sleep(d + Duration::from_millis(queued as u64)).await;
                succeeded();
                Outcome::Success
            });
        }
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(frozen as u64)).await;
            record();
            tokio::time::sleep(d + Duration::from_millis(queued as u64)).await;
            succeeded();
            Outcome::Success
        })
    }

    fn skipped(&self, ctx: &RunContext) {
        self.skips.lock().unwrap().push(Skip {
            node: self.node,
            job: ctx.job.to_string(),
            slot: ctx.scheduled_at.0,
            at: sim_ms(self.base),
        });
    }
}

struct SimNode {
    /// Its node id: `n<i>`, or the id an impostor takes.
    name: String,
    handle: Option<NodeHandle>,
    /// The node's catalog client while it runs.
    catalog: Option<CatalogClient>,
    /// Its start, while under way (see `World::start_node`).
    starting: Option<tokio::task::JoinHandle<Result<NodeHandle, starling::NodeError>>>,
    /// A graceful leave still in progress.
    leaving: Option<tokio::task::JoinHandle<()>>,
    clock: Arc<SimClock>,
    pause: watch::Sender<PausePoint>,
    /// Its weight and tags, kept across restarts.
    placement: Arc<Mutex<Placement>>,
    /// See `Recorder::frozen_until`.
    frozen_until: Arc<AtomicI64>,
    /// See `Cpu::busy_until_us`: kept across restarts, as the machine's processor is.
    busy_until_us: Arc<AtomicI64>,
}

/// The name of node `i`.
pub fn node_name(i: usize) -> String {
    format!("n{i}")
}

fn node_addr(i: usize) -> SocketAddr {
    // Labels inside the simulated network; no packet leaves the process.
    SocketAddr::from(([127, 0, 1, (i + 1) as u8], 7946))
}

/// The seal's nonces, drawn from the seed: every node shares the stream, in the one
/// thread's deterministic order.
struct SimEntropy(Mutex<SimRng>);

impl Entropy for SimEntropy {
    fn fill(&self, buf: &mut [u8]) {
        let mut rng = self.0.lock().unwrap();
        for chunk in buf.chunks_mut(8) {
            let r = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
}

struct World {
    impostors: Vec<Impostor>,
    /// Impostors whose start is under way: slot -> (when, whose id).
    probing: std::collections::BTreeMap<usize, (i64, usize)>,
    views: Arc<Mutex<Vec<ViewChange>>>,
    config: SimConfig,
    base: tokio::time::Instant,
    net: SimNet,
    keys: Option<Keyring>,
    entropy: Arc<SimEntropy>,
    nodes: Vec<SimNode>,
    runs: Arc<Mutex<Vec<Run>>>,
    skips: Arc<Mutex<Vec<Skip>>>,
    applied: Vec<Applied>,
    trace: Xxh3,
    ops: Arc<Mutex<Vec<OpRecord>>>,
    samples: Vec<Sample>,
    constraints: Arc<BTreeMap<String, Constraints>>,
    endpoint: Arc<Mutex<BTreeMap<String, u64>>>,
    successes: Arc<Mutex<Vec<Success>>>,
}

/// A node's placement: `weight` and the tag `zone`.
fn zone_placement(weight: u32, zone: &str) -> Placement {
    Placement {
        weight,
        tags: Arc::new(
            Tags::new([("zone".to_string(), zone.to_string())].into()).expect("a valid tag"),
        ),
    }
}

impl World {
    /// Holds node `node`'s loop (its pause switch) at `point` for `ms` simulated ms.
    fn pause_for(&self, node: usize, ms: u64, point: PausePoint) {
        let _ = self.nodes[node].pause.send(point);
        let pause = self.nodes[node].pause.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let _ = pause.send(PausePoint::Off);
        });
    }

    /// Starts node `i` in a task of its own: a node probes the cluster for its id before it
    /// announces it, which takes simulated time, and nodes start side by side. See
    /// [`World::started`].
    fn start_node(&mut self, i: usize) {
        let mut c = NodeConfig::new(&self.nodes[i].name, node_addr(i));
        c.seeds = (0..self.config.nodes)
            .filter(|&k| k != i)
            .map(node_addr)
            .collect();
        c.gossip_interval = self.config.gossip_interval;
        c.phi_threshold = self.config.phi_threshold;
        c.expected_size = self.config.expected_size;
        c.broken_ownership_for_tests = self.config.broken_ownership;
        c.cluster_keys = self.keys.clone();
        c.placement = self.nodes[i].placement.lock().unwrap().clone();
        let (pause_tx, pause_rx) = watch::channel(PausePoint::Off);
        let clock = self.nodes[i].clock.clone();
        let exec = Arc::new(Recorder {
            node: i,
            base: self.base,
            frozen_until: self.nodes[i].frozen_until.clone(),
            runs: self.runs.clone(),
            skips: self.skips.clone(),
            run_ms: 50 + (i as u64 * 37) % 200,
            long_runs: self.config.long_runs.clone(),
            placement: self.nodes[i].placement.clone(),
            constraints: self.constraints.clone(),
            endpoint: self.endpoint.clone(),
            successes: self.successes.clone(),
            cpu: Cpu {
                cost_us: self.config.start_cost_us,
                busy_until_us: self.nodes[i].busy_until_us.clone(),
                net: self.net.clone(),
                addr: node_addr(i),
            },
        });
        let builder = Node::builder(c)
            .jobs(self.config.jobs.iter().cloned())
            .expect("workload job names are unique")
            .clock(clock)
            .executor(exec)
            .datagrams(Arc::new(self.net.clone()))
            .entropy(self.entropy.clone())
            .pause_switch(pause_rx)
            // Every node on the simulator's one deterministic thread.
            .scheduler_thread(false);
        let (views, base) = (self.views.clone(), self.base);
        self.nodes[i].starting = Some(tokio::spawn(async move {
            let handle = builder.start().await?;
            // Every view it forms, for the checker.
            let mut view = handle.watch_view();
            tokio::spawn(async move {
                while view.changed().await.is_ok() {
                    let members = view
                        .borrow_and_update()
                        .members
                        .iter()
                        .map(|m| m.to_string())
                        .collect();
                    views.lock().unwrap().push(ViewChange {
                        at: sim_ms(base),
                        node: i,
                        members,
                    });
                }
            });
            Ok(handle)
        }));
        self.nodes[i].pause = pause_tx;
    }

    /// Waits for node `i`'s start, if one is under way; returns whether it started (false:
    /// its id was held by a live process), `None` if none was under way.
    async fn started(&mut self, i: usize) -> Option<bool> {
        let starting = self.nodes[i].starting.take()?;
        let started = match starting.await.expect("a node's start task") {
            Ok(h) => {
                self.nodes[i].catalog = Some(h.catalog());
                self.nodes[i].handle = Some(h);
                true
            }
            Err(starling::NodeError::DuplicateId { .. }) => false,
            Err(e) => panic!("a simulated node starts: {e}"),
        };
        if let Some((at, of)) = self.probing.remove(&i) {
            self.impostors.push(Impostor {
                at,
                node: i,
                of,
                started,
            });
            self.trace
                .update(format!("impostor {i} of {of} started {started}\n").as_bytes());
        }
        Some(started)
    }

    /// Takes in every start that has completed, so the nodes' catalog clients are there
    /// for operations and samples.
    async fn collect_started(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i]
                .starting
                .as_ref()
                .is_some_and(|s| s.is_finished())
            {
                self.started(i).await;
            }
        }
    }

    fn record(&mut self, at: i64, fault: Fault) {
        self.trace.update(format!("{at} {fault:?}\n").as_bytes());
        self.applied.push(Applied { at, fault });
    }

    async fn apply(&mut self, at: i64, fault: Fault) {
        // A node's start still under way completes before a fault touches it.
        let touched: Vec<usize> = match &fault {
            Fault::Crash(i) | Fault::Restart(i) | Fault::Leave(i) | Fault::Join(i) => vec![*i],
            Fault::Stall { node, .. }
            | Fault::Pause { node, .. }
            | Fault::ClockJump { node, .. }
            | Fault::Impostor { node, .. }
            | Fault::Place { node, .. } => vec![*node],
            _ => Vec::new(),
        };
        for i in touched {
            self.started(i).await;
        }
        match &fault {
            Fault::Crash(i) => {
                self.nodes[*i].catalog = None;
                if let Some(h) = self.nodes[*i].handle.take() {
                    h.abort();
                }
            }
            Fault::Restart(i) | Fault::Join(i) => {
                // A restart waits for a leave still in progress: one process per address.
                if let Some(leaving) = self.nodes[*i].leaving.take() {
                    let _ = leaving.await;
                }
                if self.nodes[*i].handle.is_none() {
                    self.start_node(*i);
                }
            }
            Fault::Impostor { node, of } => {
                if let Some(leaving) = self.nodes[*node].leaving.take() {
                    let _ = leaving.await;
                }
                if self.nodes[*node].handle.is_none() {
                    self.nodes[*node].name = node_name(*of);
                    self.probing.insert(*node, (at, *of));
                    self.start_node(*node);
                }
            }
            Fault::Leave(i) => {
                self.nodes[*i].catalog = None;
                if let Some(h) = self.nodes[*i].handle.take() {
                    // Graceful leave takes simulated time; let it run on its own.
                    self.nodes[*i].leaving = Some(tokio::spawn(h.shutdown()));
                }
            }
            Fault::Partition { a, b, one_way } => {
                let (a, b) = (a.clone(), b.clone());
                let one_way = *one_way;
                self.net.update(|c| {
                    for &x in &a {
                        for &y in &b {
                            c.blocked.insert((node_addr(x), node_addr(y)));
                            if !one_way {
                                c.blocked.insert((node_addr(y), node_addr(x)));
                            }
                        }
                    }
                });
            }
            Fault::Heal => self.net.update(|c| c.blocked.clear()),
            Fault::Loss(p) => {
                let p = *p;
                self.net.update(|c| c.loss = p)
            }
            Fault::Stall { node, ms } => {
                let until = at + *ms as i64;
                let addr = node_addr(*node);
                self.net.update(|c| {
                    c.held_until.insert(addr, until);
                });
                self.pause_for(*node, *ms, PausePoint::Wait);
            }
            Fault::Pause { node, ms, point } => {
                // As `Stall`, and the node's runs freeze too: the whole process is stopped.
                // Its gossip task cannot be suspended, but with its traffic held both ways
                // it hears nobody, so on resume it finds every peer silent, as a process
                // woken from SIGSTOP does at its first gossip round.
                let until = at + *ms as i64;
                self.nodes[*node]
                    .frozen_until
                    .store(until, Ordering::Relaxed);
                self.net.update(|c| {
                    c.held_until.insert(node_addr(*node), until);
                });
                // The stop lands where the fault says in the node's loop (see `PausePoint`):
                // while it waits, or in its next turn (the pause switch wakes it).
                let point = match point {
                    StopPoint::Waiting => PausePoint::Wait,
                    StopPoint::AfterCheck => PausePoint::AfterCheck,
                    StopPoint::AfterFiring => PausePoint::AfterFiring,
                };
                self.pause_for(*node, *ms, point);
            }
            Fault::Place { node, weight, zone } => {
                let p = zone_placement(*weight, zone);
                *self.nodes[*node].placement.lock().unwrap() = p.clone();
                if let Some(h) = &self.nodes[*node].handle {
                    h.set_placement(p).await;
                }
            }
            Fault::ClockJump { node, delta_ms } => {
                self.nodes[*node]
                    .clock
                    .offset_ms
                    .fetch_add(*delta_ms, Ordering::Relaxed);
            }
        }
        self.record(at, fault);
    }

    /// Starts a catalog operation on node `op.node`, or the next one up; it records itself
    /// when it ends.
    fn start_op(&mut self, at: i64, op: Op) {
        let n = self.nodes.len();
        let Some(node) = (0..n)
            .map(|k| (op.node + k) % n)
            .find(|&k| self.nodes[k].catalog.is_some())
        else {
            return;
        };
        let client = self.nodes[node].catalog.clone().expect("found up");
        let log = self.ops.clone();
        let base = self.base;
        tokio::spawn(async move {
            let r = crate::catalog::execute(client, &op.op).await;
            let acked = sim_ms(base);
            let (version, fire_id, error, acked) = match r {
                Ok((v, id)) => (v, id, None, Some(acked)),
                Err(e) => (None, None, Some(e), None),
            };
            log.lock().unwrap().push(OpRecord {
                at,
                acked,
                node,
                op: op.op,
                version,
                fire_id,
                error,
            });
        });
    }

    /// Samples what every running node's catalog holds of the dynamic jobs.
    async fn sample(&mut self, at: i64) {
        for (node, n) in self.nodes.iter().enumerate() {
            let Some(client) = &n.catalog else {
                continue;
            };
            if let Some(versions) = crate::catalog::versions(client).await {
                self.samples.push(Sample { at, node, versions });
            }
        }
    }
}

/// How often the `catalog` scenario samples the nodes' catalogs, ms.
const SAMPLE_EVERY_MS: i64 = 2_000;

/// Runs one simulation to the end. Call inside a current-thread runtime with paused time.
pub async fn run(config: SimConfig, plan: FaultPlan) -> SimResult {
    #[allow(clippy::disallowed_methods)] // paused tokio time: simulated and deterministic
    let base = tokio::time::Instant::now();
    let _ = LOG_BASE.set(base);
    let mut rng = SimRng::new(config.seed);
    let net = SimNet::new(
        rng.fork(1),
        base,
        Conditions {
            loss: plan.base_loss,
            delay_ms: 1,
            jitter_ms: 4,
            ..Conditions::default()
        },
    );
    tokio::spawn(net.clone().run());
    let entropy = Arc::new(SimEntropy(Mutex::new(rng.fork(2))));
    let keys = config.sealed.then(|| {
        let mut bytes = [0u8; KEY_LEN];
        entropy.fill(&mut bytes);
        Keyring::new(vec![ClusterKey::from_bytes(bytes)]).expect("one key")
    });
    let nodes = (0..config.nodes + plan.extra_slots)
        .map(|i| SimNode {
            name: node_name(i),
            placement: Arc::new(Mutex::new(
                plan.placements
                    .get(i)
                    .map_or_else(Placement::default, |(w, z)| zone_placement(*w, z)),
            )),
            handle: None,
            catalog: None,
            starting: None,
            leaving: None,
            clock: Arc::new(SimClock::new(
                base,
                plan.skew_ms.get(i).copied().unwrap_or(0),
            )),
            pause: watch::channel(PausePoint::Off).0,
            frozen_until: Arc::new(AtomicI64::new(0)),
            busy_until_us: Arc::new(AtomicI64::new(0)),
        })
        .collect();
    let mut world = World {
        impostors: Vec::new(),
        probing: std::collections::BTreeMap::new(),
        views: Arc::default(),
        config: config.clone(),
        base,
        net,
        keys,
        entropy,
        nodes,
        runs: Arc::default(),
        skips: Arc::default(),
        applied: Vec::new(),
        trace: Xxh3::new(),
        ops: Arc::default(),
        samples: Vec::new(),
        constraints: Arc::new(
            config
                .jobs
                .iter()
                .filter(|j| !j.constraints.is_empty())
                .map(|j| (j.name.to_string(), j.constraints.clone()))
                .collect(),
        ),
        endpoint: Arc::default(),
        successes: Arc::default(),
    };
    let mut starts: Vec<(i64, usize)> = (0..config.nodes)
        .filter(|i| !plan.late_joiners.contains(i))
        .map(|i| (plan.start_ms.get(i).copied().unwrap_or(0), i))
        .collect();
    starts.sort_unstable();
    for (at, i) in starts {
        let wait = at - sim_ms(base);
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        world.start_node(i);
    }
    // Faults, catalog operations and catalog samples, in time order (a fault first at
    // equal times).
    let end = config.duration.as_millis() as i64;
    let mut faults = plan.faults.iter().cloned().peekable();
    let mut ops = plan.ops.iter().cloned().peekable();
    let sampling = !plan.ops.is_empty();
    let mut next_sample = if sampling { SAMPLE_EVERY_MS } else { i64::MAX };
    loop {
        let next_fault = faults.peek().map_or(i64::MAX, |f| f.0);
        let next_op = ops.peek().map_or(i64::MAX, |o| o.0);
        let at = next_fault.min(next_op).min(next_sample);
        if at >= end || at == i64::MAX {
            break;
        }
        let wait = at - sim_ms(base);
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        if next_fault == at {
            let (at, fault) = faults.next().expect("peeked");
            world.apply(at, fault).await;
        } else if next_op == at {
            let (at, op) = ops.next().expect("peeked");
            world.collect_started().await;
            world.start_op(at, op);
        } else {
            world.collect_started().await;
            world.sample(at).await;
            next_sample += SAMPLE_EVERY_MS;
        }
    }
    // Faults planned at or after the end still apply (none are, by the scenarios).
    for (at, fault) in faults {
        let wait = at - sim_ms(base);
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        world.apply(at, fault).await;
    }
    let wait = end - sim_ms(base);
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    for i in 0..world.nodes.len() {
        world.started(i).await;
    }
    let final_views = world
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.handle.as_ref().map(|h| (i, h.view())))
        .collect();
    let (mut duplicates_detected, mut abandoned, mut repaired) = (0, 0, 0);
    for n in &world.nodes {
        if let Some(h) = &n.handle {
            let stats = h.stats().await;
            duplicates_detected += stats.duplicates_detected;
            abandoned += stats.abandoned;
            repaired += stats.repaired;
        }
    }
    let mut final_catalogs = Vec::new();
    if sampling {
        for (node, n) in world.nodes.iter().enumerate() {
            let Some(client) = &n.catalog else {
                continue;
            };
            let (Some(versions), Ok(stats)) =
                (crate::catalog::versions(client).await, client.stats().await)
            else {
                continue;
            };
            final_catalogs.push(FinalCatalog {
                node,
                hash: stats.hash,
                versions,
            });
        }
    }
    for n in &mut world.nodes {
        n.catalog = None;
        if let Some(h) = n.handle.take() {
            h.abort();
        }
    }
    let mut op_records = std::mem::take(&mut *world.ops.lock().unwrap());
    op_records.sort_by_key(|o| (o.at, o.node));
    for o in &op_records {
        world.trace.update(
            format!(
                "op {} {:?} {} {:?} {:?} {:?}\n",
                o.at,
                o.acked,
                o.node,
                o.op,
                o.version.as_ref().map(|v| v.to_string()),
                o.error
            )
            .as_bytes(),
        );
    }
    for c in &final_catalogs {
        world
            .trace
            .update(format!("catalog {} {:016x}\n", c.node, c.hash).as_bytes());
    }
    let runs = std::mem::take(&mut *world.runs.lock().unwrap());
    for r in &runs {
        world
            .trace
            .update(format!("{} {} {} {}\n", r.started, r.node, r.job, r.slot).as_bytes());
    }
    let skips = std::mem::take(&mut *world.skips.lock().unwrap());
    for k in &skips {
        world
            .trace
            .update(format!("skip {} {} {} {}\n", k.at, k.node, k.job, k.slot).as_bytes());
    }
    let endpoint = std::mem::take(&mut *world.endpoint.lock().unwrap());
    SimResult {
        http_requests: endpoint.values().sum(),
        http_repeated_keys: endpoint.values().map(|n| n - 1).sum(),
        runs,
        skips,
        successes: std::mem::take(&mut *world.successes.lock().unwrap()),
        duplicates_detected,
        abandoned,
        repaired,
        applied: world.applied,
        views: std::mem::take(&mut *world.views.lock().unwrap()),
        impostors: world.impostors,
        final_views,
        trace_hash: world.trace.digest(),
        net_hash: world.net.hash(),
        net_stats: world.net.stats(),
        ops: op_records,
        samples: world.samples,
        final_catalogs,
    }
}
