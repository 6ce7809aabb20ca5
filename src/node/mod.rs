//! The node runtime: one task owns the planner, feeds it membership views, fire records
//! and time, and carries out its actions (run a slot, publish a record).
//!
//! Time comes only from the [`Clock`]; runs go through an [`Executor`]; gossip goes through
//! [`Datagrams`] (sealed with the cluster key, nonces from an [`Entropy`]). The simulator
//! swaps all four and keeps everything else.

mod after;
mod catalog;
mod catalog_apply;
mod catalog_start;
mod clock;
mod compact;
mod config;
mod fire;
mod handle;
mod health;
mod jobs;
mod listing;
mod pace;
mod placement;
mod publisher;
mod run;
mod runtime;
mod skew;
pub mod store;
mod threads;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

pub use catalog::CatalogStats;
pub use clock::{Clock, SystemClock};
pub use config::{
    ConfigError, ConfigFile, DEFAULT_CLUSTER_ID, DEFAULT_GOSSIP_INTERVAL, DEFAULT_LISTEN,
    DEFAULT_MAX_CLOCK_OFFSET, DEFAULT_PHI_THRESHOLD, NodeConfig, WeightValue, available_cpus,
    parse_addr,
};
pub use handle::{CatalogClient, NodeHandle, Stats};
pub use jobs::{JobsChange, JobsError};
pub use listing::{JobInfo, JobListing, MemberInfo, MemberState};
pub use runtime::PausePoint;
pub use skew::{ClockState, ClockStatus};

use crate::cluster::{
    Cluster, Datagrams, GossipConfig, GossipSecurity, GossipTransport, KEY_API, UdpDatagrams,
};
use crate::core::job::{JobSpec, RawJob};
use crate::core::planner::{Planner, PlannerError, View};
use crate::core::types::JobId;
use crate::exec::{Containment, DefaultExecutor, Executor, JobHandler, prepare_containment};
use crate::history::{History, flush_every};
use crate::metrics::Metrics;
use crate::security::{CountedNonces, Entropy};
use jobs::Replaceable;
use publisher::{Batch, publisher_task};
use run::{RunCounters, RunHandles};
use runtime::Runtime;
use store::{Store, StoreError};
use threads::start_runtime_thread;

/// How often a node with a data dir saves its run history while it changes (and once more
/// at a graceful shutdown).
pub const HISTORY_SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a node could not be built or started. Nothing is running when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A configuration value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Two jobs share a name.
    #[error(transparent)]
    Job(#[from] PlannerError),
    /// A job has no command, no URL and no handler, so it could never run.
    #[error("job `{0}` has neither a command, a URL nor a handler")]
    NothingToRun(JobId),
    /// The data dir could not be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A job could not enter the catalog (e.g. its definition is over the size limit).
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    /// The scheduler's thread or its runtime could not be created.
    #[error("could not start the scheduler thread: {0}")]
    Scheduler(std::io::Error),
    /// Another live process holds this node's id (found by probing the cluster before
    /// announcing it, see `cluster::probe`). Nothing was announced under the id.
    #[error(
        "node id `{node}` is already held by a live process at {addr} (generation {generation}): \
         start this one with another node id, or stop that process first"
    )]
    DuplicateId {
        /// The id.
        node: crate::core::types::NodeId,
        /// The other holder's gossip address.
        addr: std::net::SocketAddr,
        /// The other holder's generation (its start time, Unix ms).
        generation: u64,
    },
    /// Gossip could not start (e.g. the UDP address is in use).
    #[error("could not start gossip on {addr}: {source:#}")]
    Gossip {
        /// The address it tried to bind.
        addr: std::net::SocketAddr,
        /// The underlying error.
        source: anyhow::Error,
    },
}

impl JobSpec {
    /// A job with defaults (UTC, misfire `all`, 5 min catch-up window, no command) and the
    /// given schedule. Errors name the job and the field.
    pub fn parse(name: &str, schedule: &str) -> Result<JobSpec, crate::core::job::JobError> {
        RawJob {
            name: Some(name.to_string()),
            schedule: Some(schedule.to_string()),
            ..RawJob::default()
        }
        .into_spec(1)
    }
}

/// Starts a node. Get one from [`Node::builder`].
pub struct NodeBuilder {
    config: NodeConfig,
    jobs: Vec<JobSpec>,
    names: std::collections::BTreeSet<JobId>,
    clock: Arc<dyn Clock>,
    executor: Option<Arc<dyn Executor>>,
    default_executor: DefaultExecutor,
    datagrams: Arc<dyn Datagrams>,
    /// `None`: [`CountedNonces`], drawn at start (not here: the simulator replaces it, and
    /// must see no entropy drawn before its seed).
    entropy: Option<Arc<dyn Entropy>>,
    pause: Option<watch::Receiver<PausePoint>>,
    scheduler_thread: bool,
}

/// Entry point of the runtime.
pub struct Node;

/// The gossip settings of a node whose process starts at `now` (its generation).
fn gossip_config(config: &NodeConfig, now: crate::core::types::UnixMillis) -> GossipConfig {
    GossipConfig {
        node_id: config.node_id.clone(),
        generation: u64::try_from(now.0).unwrap_or(0),
        listen_addr: config.listen_addr,
        advertise_addr: config.advertise(),
        seeds: config
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != config.advertise())
            .collect(),
        cluster_id: config.cluster_id.clone(),
        gossip_interval: config.gossip_interval,
        phi_threshold: config.phi_threshold,
        dead_node_grace_period: config.dead_node_grace_period,
        placement: config.placement.clone(),
        // A node with peers is not a member until its clock is checked against theirs
        // (see `skew`).
        initial_status: if skew::verifies_at_start(config) {
            crate::cluster::STATUS_CLOCK
        } else {
            crate::cluster::STATUS_ALIVE
        },
    }
}

impl Node {
    /// A builder for a node with `config`.
    pub fn builder(config: NodeConfig) -> NodeBuilder {
        NodeBuilder {
            config,
            jobs: Vec::new(),
            names: std::collections::BTreeSet::new(),
            clock: Arc::new(SystemClock),
            executor: None,
            default_executor: DefaultExecutor::new(),
            datagrams: Arc::new(UdpDatagrams),
            entropy: None,
            pause: None,
            scheduler_thread: true,
        }
    }
}

impl NodeBuilder {
    fn check_unique(&mut self, name: &JobId) -> Result<(), NodeError> {
        if !self.names.insert(name.clone()) {
            return Err(PlannerError::DuplicateJob(name.clone()).into());
        }
        Ok(())
    }

    /// Adds a job run by its shell command (or by the custom executor, if one is set).
    pub fn job(mut self, spec: JobSpec) -> Result<Self, NodeError> {
        self.check_unique(&spec.name)?;
        self.jobs.push(spec);
        Ok(self)
    }

    /// Adds several jobs, as from a jobs file.
    pub fn jobs(mut self, specs: impl IntoIterator<Item = JobSpec>) -> Result<Self, NodeError> {
        for s in specs {
            self = self.job(s)?;
        }
        Ok(self)
    }

    /// Adds a job run in-process by `handler` (an async closure taking a [`RunContext`]).
    pub fn handler_job(
        mut self,
        spec: JobSpec,
        handler: impl JobHandler,
    ) -> Result<Self, NodeError> {
        self.check_unique(&spec.name)?;
        self.default_executor
            .register(spec.name.clone(), Arc::new(handler));
        self.jobs.push(spec);
        Ok(self)
    }

    /// Replaces the clock (the simulator's; tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the executor for every job (the simulator's recording executor).
    pub fn executor(mut self, executor: Arc<dyn Executor>) -> Self {
        self.executor = Some(executor);
        self
    }

    /// Replaces the datagram network gossip runs over (default: UDP). Packets are sealed
    /// with `NodeConfig::cluster_keys` whatever the network (the simulator's too).
    pub fn datagrams(mut self, datagrams: Arc<dyn Datagrams>) -> Self {
        self.datagrams = datagrams;
        self
    }

    /// Replaces the source of the seal's nonces (default: [`CountedNonces`], a prefix from
    /// the operating system and a count; the simulator's is seeded).
    pub fn entropy(mut self, entropy: Arc<dyn Entropy>) -> Self {
        self.entropy = Some(entropy);
        self
    }

    /// A switch that freezes the node's scheduling task while it reads other than
    /// [`PausePoint::Off`], at the point of its loop it names: nothing fires and no event
    /// is handled until it reads `Off` again, then everything that arrived meanwhile is
    /// handled at once. Gossip keeps running; the simulator also holds the node's network
    /// traffic to make the whole process look stalled. For the simulator.
    pub fn pause_switch(mut self, switch: watch::Receiver<PausePoint>) -> Self {
        self.pause = Some(switch);
        self
    }

    /// Whether the node's scheduling loop (it wakes at each slot and starts the slot's
    /// runs) has a thread of its own (default: true), or is a task of the runtime that
    /// calls [`NodeBuilder::start`]. Runs, gossip and publishing use that runtime either
    /// way.
    ///
    /// On its own thread the loop never waits behind job handlers for a worker, so a burst
    /// of runs, or a handler that blocks its worker, cannot delay the next slots; and the
    /// workers that run the handlers are not also busy starting them (the firing bench in
    /// the README). It also wakes more precisely: 10 ms before each slot by Tokio's timer,
    /// then blocked for the rest (see [`Clock::block_until`]), about 0.1 ms after the slot
    /// instead of 1-2 ms. It prepares a slot's runs in those 10 ms, so at the slot it
    /// only spawns them. The simulator turns it off: its nodes share one deterministic
    /// thread.
    ///
    /// Gossip (chitchat's rounds, heartbeats and failure detector, and the transport) then
    /// gets a thread and runtime of its own too, so a burst of runs cannot starve it: on
    /// the runtime's workers, 10,000 runs due in one second delayed heartbeats enough for
    /// a peer to be suspected (issue 14; `scripts/burst.sh`).
    pub fn scheduler_thread(mut self, own_thread: bool) -> Self {
        self.scheduler_thread = own_thread;
        self
    }

    /// Validates, starts gossip, and spawns the node's task.
    pub async fn start(self) -> Result<NodeHandle, NodeError> {
        let NodeBuilder {
            config,
            jobs,
            names: _,
            clock,
            executor,
            default_executor,
            datagrams,
            entropy,
            pause,
            scheduler_thread,
        } = self;
        config.validate()?;
        if executor.is_none()
            && let Some(j) = jobs.iter().find(|j| {
                j.exec.command.is_none()
                    && j.exec.http.is_none()
                    && !default_executor.has_handler(&j.name)
            })
        {
            return Err(NodeError::NothingToRun(j.name.clone()));
        }
        let mut default_executor = default_executor;
        default_executor.containment = if config.job_cgroups {
            Containment::Cgroup
        } else {
            Containment::ProcessGroup
        };
        if executor.is_none() && jobs.iter().any(|j| j.exec.command.is_some()) {
            // Says in the log, before anything runs, how job processes are contained.
            prepare_containment(default_executor.containment);
        }
        // Handler jobs stay local; every other job enters the catalog as this node's
        // jobs-file definition (see `crate::catalog`).
        let handlers: std::collections::BTreeSet<JobId> = jobs
            .iter()
            .filter(|j| default_executor.has_handler(&j.name))
            .map(|j| j.name.clone())
            .collect();
        let replaceable = Replaceable {
            handlers: handlers.clone(),
            needs_command: executor.is_none(),
        };
        let executor: Arc<dyn Executor> = executor.unwrap_or_else(|| Arc::new(default_executor));
        let (store, saved) = match &config.data_dir {
            Some(dir) => {
                let (store, saved) = Store::open(dir, &config.node_id)?;
                (Some(store), saved)
            }
            None => (None, BTreeMap::new()),
        };
        let store = store.map(Arc::new);
        // Packets older than a dead node's state is kept cannot revive it (README, Security).
        let security = GossipSecurity::new(
            config.cluster_keys.as_ref(),
            &config.cluster_id,
            config.dead_node_grace_period,
            clock.clone(),
            entropy.unwrap_or_else(|| Arc::new(CountedNonces::from_os())),
        );
        match &config.cluster_keys {
            Some(keys) => info!(
                sealing_key = %keys.sealing().id(),
                keys = keys.keys().len(),
                "gossip is sealed with the cluster key"
            ),
            None => warn!(
                "gossip is open: no cluster key is set, so any host that reaches this node's gossip port can join the cluster, read its state and take jobs; set --cluster-key-file or STARLING_CLUSTER_KEY (README, Security)"
            ),
        }
        let transport = Arc::new(
            GossipTransport::new(datagrams, security.clone()).for_node(config.node_id.as_str()),
        );
        let probe_gossip = gossip_config(&config, clock.now());
        if !probe_gossip.seeds.is_empty() {
            // Before the id is announced: a second holder would disturb the live one.
            let found = crate::cluster::probe(&probe_gossip, transport.clone())
                .await
                .map_err(|source| NodeError::Gossip {
                    addr: config.listen_addr,
                    source,
                })?;
            if let Some(c) = found {
                return Err(NodeError::DuplicateId {
                    node: config.node_id.clone(),
                    addr: c.addr,
                    generation: c.generation,
                });
            }
        }
        let now = clock.now();
        let generation = u64::try_from(now.0).unwrap_or(0);
        let mut planner = Planner::new(config.node_id.clone(), config.planner(), now);
        planner.reserve(jobs.len());
        let started = catalog_start::start_catalog(
            &config,
            now,
            generation,
            jobs,
            &handlers,
            store.as_deref(),
            &mut planner,
        )?;
        for (job, record) in &saved {
            planner.observe_record(now, job, *record, &config.node_id);
        }
        if let Some(store) = &store {
            info!(dir = %store.dir().display(), records = saved.len(), "data dir opened");
        }
        let metrics = Arc::new(Metrics::new());
        // After the store: its lock keeps a second process out of the data dir.
        let history = Arc::new(match &config.data_dir {
            Some(dir) => History::open(dir, config.node_id.clone(), config.history),
            None => History::new(config.node_id.clone(), config.history),
        });
        // Before gossip starts: nothing to stop if this fails.
        let scheduler = scheduler_thread
            .then(|| start_runtime_thread("starling-scheduler"))
            .transpose()?;
        let gossip_thread = scheduler_thread
            .then(|| start_runtime_thread("starling-gossip"))
            .transpose()?;
        let gossip = gossip_config(&config, now);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (cluster, gossip_done) = match gossip_thread {
            // chitchat spawns its tasks, and binds its socket, on the runtime it starts
            // from: the gossip thread's.
            Some((thread, done)) => {
                let config = gossip.clone();
                let started = thread
                    .spawn(async move { spawn_cluster(&config, transport, events_tx).await })
                    .await
                    .unwrap_or_else(|e| Err(anyhow::anyhow!("the gossip thread failed: {e}")));
                (started, Some(done))
            }
            None => (spawn_cluster(&gossip, transport, events_tx).await, None),
        };
        let cluster = cluster.map_err(|source| NodeError::Gossip {
            addr: config.listen_addr,
            source,
        })?;
        if let Some(api) = config.api_addr {
            cluster.set_key(KEY_API, &api.to_string()).await;
        }
        let live = cluster.live_watcher();
        let mut initial = View::of([config.node_id.clone()]);
        if config.placement != crate::core::placement::Placement::default() {
            initial
                .placements
                .insert(config.node_id.clone(), config.placement.clone());
        }
        planner.set_view(now, initial.clone());
        let (view_tx, view_rx) = watch::channel(initial);
        let (catalog_events, catalog_events_rx) = mpsc::unbounded_channel();
        let listeners = cluster.subscribe_catalog(catalog_events).await;
        let (plan_tx, plan_rx) = mpsc::unbounded_channel();
        let (catalog_tx, catalog_rx) = mpsc::unbounded_channel();
        let triggers = after::Triggers::new(catalog_tx.clone());
        let planner_config = config.planner();
        let mut catalog_task = catalog::CatalogTask {
            catalog: started.catalog,
            clock: clock.clone(),
            publisher: cluster.publisher(),
            events: catalog_events_rx,
            _listeners: listeners,
            cmds: catalog_rx,
            view: view_tx.subscribe(),
            to_loop: plan_tx,
            gossip_interval: config.gossip_interval,
            adopt_after: now
                .saturating_add(planner_config.startup_delay)
                .saturating_add(planner_config.peer_wait),
            generation,
            local: started.local,
            applied: started.applied,
            held: Default::default(),
            hashes: started.hashes,
            unheld_since: Default::default(),
            conflicted: Default::default(),
            dirty: Default::default(),
            sets: Vec::new(),
            deletes: Vec::new(),
            file_reads: Default::default(),
            stats: Default::default(),
            replaceable,
            store: store.clone(),
            unsaved: false,
            listing: Default::default(),
            packing: Default::default(),
            deps: Default::default(),
            triggers: triggers.clone(),
        };
        for (name, parents) in started.deps.parent_lists() {
            catalog_task.set_parents(name, Some(parents.to_vec()));
        }
        catalog_task.publish_files(&started.own, &Default::default());
        let catalog_task = tokio::spawn(catalog_task.run());
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (publish, publish_rx) = mpsc::unbounded_channel();
        let has_store = store.is_some();
        // How long a run waits for its record to reach the runner-up. In quorum mode it
        // waits longer: until the record went, the runner-up is gone, or the quorum is lost
        // (see `QuorumWait`); this is only the bound.
        let confirm_timeout = if config.quorum().is_some() {
            config.gossip_interval * 30
        } else {
            config.gossip_interval * 2
        };
        let publisher = publisher_task(
            cluster.publisher(),
            publish_rx,
            store,
            saved,
            confirm_timeout,
        );
        let publisher = tokio::spawn(publisher);
        let (not_run_tx, not_run_rx) = mpsc::unbounded_channel();
        let publisher_handle = cluster.publisher();
        let traffic = cluster.traffic();
        info!(
            node = %config.node_id,
            listen = %config.listen_addr,
            seeds = ?gossip.seeds,
            jobs = planner.job_count(),
            "node started"
        );
        let runs_clock = clock.clone();
        let handle_clock = clock.clone();
        let health = health::Health::new(config.gossip_interval, clock.monotonic());
        let (skew, clock_status) = skew::Skew::new(&config, clock.monotonic());
        let runs_not_run = not_run_tx.clone();
        let runtime = Runtime {
            config: config.clone(),
            planner,
            cluster: Some(cluster),
            publish,
            publisher,
            has_store,
            clock,
            executor,
            events_rx,
            cmd_rx,
            view_rx: view_tx.subscribe(),
            view_tx,
            not_run_tx,
            not_run_rx,
            peers: Arc::default(),
            publisher_handle,
            quorum_grace: config.planner().dead_takeover_delay,
            local_runs: HashMap::new(),
            prepared: Vec::new(),
            retired: Vec::new(),
            deferred: Vec::new(),
            held: Batch::default(),
            ahead_of: None,
            spawner: tokio::runtime::Handle::current(),
            own_thread: scheduler.is_some(),
            announce: VecDeque::new(),
            remote_runs: BTreeMap::new(),
            runs: RunHandles::default(),
            counters: Arc::new(RunCounters {
                clock: runs_clock,
                health: health.shared.clone(),
                not_run: runs_not_run,
                running: AtomicUsize::new(0),
                failed: AtomicU64::new(0),
                idle: tokio::sync::Notify::new(),
                history: history.clone(),
                metrics: metrics.clone(),
                triggers,
                pace: pace::Pace::default(),
            }),
            stats: Stats::default(),
            health,
            skew,
            pause_live: pause.is_some(),
            pause: pause.unwrap_or_else(|| watch::channel(PausePoint::Off).1),
            plan_rx,
            catalog_cmd: catalog_tx.clone(),
            requests: started.requests,
            unplaceable: crate::core::unplaceable::Unplaceable::new(),
            change_log: Default::default(),
        };
        let task = match scheduler {
            Some((thread, done)) => thread.spawn(async move {
                // The threads stop once these are dropped: the task ended or was aborted
                // (and stopped gossip before).
                let _done = done;
                let _gossip_done = gossip_done;
                runtime.run().await
            }),
            None => tokio::spawn(runtime.run()),
        };
        let history_flush = config
            .data_dir
            .is_some()
            .then(|| tokio::spawn(flush_every(history.clone(), HISTORY_SAVE_EVERY)));
        Ok(NodeHandle {
            node_id: config.node_id,
            gossip: security,
            view: view_rx,
            cmd: cmd_tx,
            task,
            history,
            history_flush,
            metrics,
            traffic,
            live,
            catalog: CatalogClient { cmd: catalog_tx },
            catalog_task,
            clock: handle_clock,
            clock_status,
        })
    }
}

/// Starts gossip on the node's port. The id probe just had that port (see
/// `cluster::probe`), and a bind right after it was seen to fail now and then with
/// "Address already in use" in tests/catalog.rs, the port free again a moment later: a
/// failed bind is tried again for up to a second, then reported. Any other error is
/// reported at once.
async fn spawn_cluster(
    config: &crate::cluster::GossipConfig,
    transport: Arc<GossipTransport>,
    events: mpsc::UnboundedSender<crate::cluster::Event>,
) -> anyhow::Result<Cluster> {
    let in_use = |e: &anyhow::Error| {
        e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
        })
    };
    let mut tries = 0;
    loop {
        match Cluster::spawn(config, transport.clone(), events.clone()).await {
            Err(e) if in_use(&e) && tries < 20 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            result => return result,
        }
    }
}
