//! The node runtime: one task owns the planner, feeds it membership views, fire records
//! and time, and carries out its actions (run a slot, publish a record).
//!
//! Time comes only from the [`Clock`]; runs go through an [`Executor`]; gossip goes through
//! a chitchat `Transport`. The simulator swaps all three and keeps everything else.

mod clock;
mod config;
pub mod store;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use chitchat::transport::{Transport, UdpTransport};
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

pub use clock::{Clock, SystemClock};
pub use config::{
    ConfigError, ConfigFile, DEFAULT_CLUSTER_ID, DEFAULT_GOSSIP_INTERVAL, DEFAULT_LISTEN,
    DEFAULT_PHI_THRESHOLD, NodeConfig, parse_addr,
};

use crate::cluster::{
    Cluster, Event, GossipConfig, Publish, Publisher, Record, Running, newest_generations,
    view_from_live,
};
use crate::core::job::{ExecSpec, JobSpec, Overlap, RawJob};
use crate::core::planner::{Action, Planner, PlannerError, View};
use crate::core::types::{FireRecord, JobId, NodeId, UnixMillis};
use crate::exec::{BoxFuture, DefaultExecutor, Executor, JobHandler, Outcome, RunContext, backoff};
use store::{Store, StoreError};

/// Why a node could not be built or started. Nothing is running when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A configuration value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Two jobs share a name.
    #[error(transparent)]
    Job(#[from] PlannerError),
    /// A job has no command and no handler, so it could never run.
    #[error("job `{0}` has neither a command nor a handler")]
    NothingToRun(JobId),
    /// The data dir could not be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The scheduler's thread or its runtime could not be created.
    #[error("could not start the scheduler thread: {0}")]
    Scheduler(std::io::Error),
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
    transport: Arc<dyn Transport>,
    pause: Option<watch::Receiver<bool>>,
    scheduler_thread: bool,
}

/// Entry point of the runtime.
pub struct Node;

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
            transport: Arc::new(UdpTransport),
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

    /// Replaces the gossip transport (default: UDP).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = transport;
        self
    }

    /// A switch that freezes the node's scheduling task while it reads `true`: nothing
    /// fires and no event is handled until it reads `false` again, then everything that
    /// arrived meanwhile is handled at once. Gossip keeps running; the simulator also holds
    /// the node's network traffic to make the whole process look stalled. For the
    /// simulator.
    pub fn pause_switch(mut self, switch: watch::Receiver<bool>) -> Self {
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
            transport,
            pause,
            scheduler_thread,
        } = self;
        config.validate()?;
        if executor.is_none()
            && let Some(j) = jobs
                .iter()
                .find(|j| j.exec.command.is_none() && !default_executor.has_handler(&j.name))
        {
            return Err(NodeError::NothingToRun(j.name.clone()));
        }
        let executor: Arc<dyn Executor> = executor.unwrap_or_else(|| Arc::new(default_executor));
        let (store, saved) = match &config.data_dir {
            Some(dir) => {
                let (store, saved) = Store::open(dir, &config.node_id)?;
                (Some(store), saved)
            }
            None => (None, BTreeMap::new()),
        };
        let now = clock.now();
        let mut planner = Planner::new(config.node_id.clone(), config.planner(), now);
        planner.reserve(jobs.len());
        for j in jobs {
            planner.add_job(now, j)?;
        }
        for (job, record) in &saved {
            planner.observe_record(now, job, *record, &config.node_id);
        }
        if let Some(store) = &store {
            info!(dir = %store.dir().display(), records = saved.len(), "data dir opened");
        }
        // Before gossip starts: nothing to stop if this fails.
        let scheduler = scheduler_thread.then(start_scheduler_thread).transpose()?;
        let gossip = GossipConfig {
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
        };
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let cluster = Cluster::spawn(&gossip, transport, events_tx)
            .await
            .map_err(|source| NodeError::Gossip {
                addr: config.listen_addr,
                source,
            })?;
        let initial = View::of([config.node_id.clone()]);
        planner.set_view(now, initial.clone());
        let (view_tx, view_rx) = watch::channel(initial);
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
            store.map(Arc::new),
            saved,
            confirm_timeout,
        );
        let publisher = tokio::spawn(publisher);
        let (not_run_tx, not_run_rx) = mpsc::unbounded_channel();
        let publisher_handle = cluster.publisher();
        info!(
            node = %config.node_id,
            listen = %config.listen_addr,
            seeds = ?gossip.seeds,
            jobs = planner.job_count(),
            "node started"
        );
        let runs_clock = clock.clone();
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
                running: AtomicUsize::new(0),
                failed: AtomicU64::new(0),
                idle: tokio::sync::Notify::new(),
            }),
            stats: Stats::default(),
            pause_live: pause.is_some(),
            pause: pause.unwrap_or_else(|| watch::channel(false).1),
        };
        let task = match scheduler {
            Some((thread, done)) => thread.spawn(async move {
                // The thread stops once this is dropped: the task ended or was aborted.
                let _done = done;
                runtime.run().await
            }),
            None => tokio::spawn(runtime.run()),
        };
        Ok(NodeHandle {
            node_id: config.node_id,
            view: view_rx,
            cmd: cmd_tx,
            task,
        })
    }
}

/// Counters a node keeps about its runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Slots started here.
    pub fired: u64,
    /// Of those, slots started late (catch-up).
    pub fired_late: u64,
    /// Runs that ended in failure after all retries (failed, timed out or panicked).
    pub failed: u64,
    /// Slots that will not run: older than the catch-up window.
    pub missed: u64,
    /// Slots dropped by a `once` or `skip` misfire policy.
    pub skipped: u64,
    /// Slots skipped because the job's previous run was still running (`overlap = forbid`;
    /// behind a run that started late, only if it was still running when it would have
    /// ended had it started on time).
    pub overlap_skipped: u64,
    /// Runs cancelled because a newer slot of the job started (`overlap = replace`).
    pub replaced: u64,
    /// Runs not started in quorum mode: the node lost the quorum before a quorum was known
    /// to hold the run's record, so the majority side runs the slot instead (or, if the
    /// record reached it, this node runs it late once it hears so: `repaired`).
    pub abandoned: u64,
    /// Abandoned runs this node ran late because the majority side had seen their record
    /// and so had not run them (see `Planner::abandon`).
    pub repaired: u64,
    /// Slots this node ran that it learned another node ran too (from that node's fire
    /// record: a healed partition, a stalled node that came back). Each node counts its
    /// side, so a slot run on two nodes counts once on each.
    pub duplicates_detected: u64,
}

enum Command {
    Shutdown(oneshot::Sender<()>),
    Stats(oneshot::Sender<Stats>),
}

/// A running node. Dropping it leaves the node running; call [`NodeHandle::shutdown`].
pub struct NodeHandle {
    node_id: NodeId,
    view: watch::Receiver<View>,
    cmd: mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl NodeHandle {
    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// Members that may own jobs in this node's current view (alive, not leaving), sorted.
    pub fn members(&self) -> Vec<NodeId> {
        self.view.borrow().members.iter().cloned().collect()
    }

    /// The current view (members and every alive node, including leaving ones).
    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// The owner of `job` in this node's current view: the same pure function every node
    /// uses, so it answers for jobs this node does not know too.
    pub fn owner_of(&self, job: &str) -> Option<NodeId> {
        crate::core::owner::owner(&JobId::new(job), &self.view.borrow().members).cloned()
    }

    /// Waits until this node's view has exactly `n` members, or `timeout` passes. Returns
    /// whether it did.
    pub async fn wait_for_members(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.view.clone();
        tokio::time::timeout(timeout, rx.wait_for(|v| v.members.len() == n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The node's run counters.
    pub async fn stats(&self) -> Stats {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Stats(tx)).is_err() {
            return Stats::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Graceful leave: stop firing, announce `leaving` for a few gossip rounds so peers take
    /// over without a gap, let running jobs finish (up to the drain timeout), stop gossip.
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        let _ = self.task.await;
    }

    /// Stops at once without leaving, as a crash would: gossip stops, running jobs are
    /// killed, peers find out through failure detection. For tests and demos.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Retry backoff settings of a run.
#[derive(Clone, Copy)]
struct Retry {
    base: Duration,
    max: Duration,
}

/// One attempt: a panic in the executor, before or inside its future, is contained here
/// rather than unwound through the node.
async fn attempt(executor: &dyn Executor, exec: &ExecSpec, ctx: &RunContext) -> Outcome {
    debug!(job = %ctx.job, slot = %ctx.scheduled_at, attempt = ctx.attempt, "run starting");
    match std::panic::catch_unwind(AssertUnwindSafe(|| executor.execute(exec, ctx.clone()))) {
        Ok(run) => match AssertUnwindSafe(run).catch_unwind().await {
            Ok(o) => o,
            Err(payload) => Outcome::Panicked(crate::exec::panic_message(payload)),
        },
        Err(payload) => Outcome::Panicked(crate::exec::panic_message(payload)),
    }
}

/// What a run needs to call its executor.
struct RunInput {
    executor: Arc<dyn Executor>,
    exec: ExecSpec,
    ctx: RunContext,
    retry: Retry,
}

/// A run's task: waits for what it must first (`wait`; false means do not run), then
/// runs. The task of a run that waits for nothing and succeeds at once is kept small (a
/// thousand of them start in the same millisecond): what may be needed later is boxed,
/// and `input` is borrowed where it lies rather than moved into the futures that use it,
/// which would store it twice.
async fn run_task(guard: RunGuard, wait: Option<BoxFuture<bool>>, input: RunInput) {
    if let Some(wait) = wait
        && !wait.await
    {
        return;
    }
    if let Some(shared) = &guard.shared {
        shared.start(guard.counters.clock.now());
    }
    if !run_attempts(&input).await.is_success() {
        guard.counters.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs a slot: the first attempt, then retries with backoff (boxed, entered only after a
/// failure).
async fn run_attempts(input: &RunInput) -> Outcome {
    let RunInput {
        executor,
        exec,
        ctx,
        retry,
    } = input;
    let attempts = exec.retries.saturating_add(1);
    let first = attempt(executor.as_ref(), exec, ctx).await;
    let log = |ctx: &RunContext, outcome: &Outcome| {
        if outcome.is_success() {
            info!(job = %ctx.job, slot = %ctx.scheduled_at, fire_id = %ctx.fire_id, attempt = ctx.attempt, "run succeeded");
        } else {
            warn!(job = %ctx.job, slot = %ctx.scheduled_at, fire_id = %ctx.fire_id, attempt = ctx.attempt, attempts, outcome = %outcome, "run failed");
        }
    };
    log(ctx, &first);
    if first.is_success() || attempts == 1 {
        return first;
    }
    Box::pin(async move {
        let mut ctx = ctx.clone();
        let mut outcome = first;
        for n in 2..=attempts {
            tokio::time::sleep(backoff(n - 1, retry.base, retry.max)).await;
            ctx.attempt = n;
            outcome = attempt(executor.as_ref(), exec, &ctx).await;
            log(&ctx, &outcome);
            if outcome.is_success() {
                break;
            }
        }
        outcome
    })
    .await
}

/// What runs report back without waking the node's task, and the node's clock (one
/// shared allocation for every run).
struct RunCounters {
    clock: Arc<dyn Clock>,
    /// Runs started and not finished.
    running: AtomicUsize,
    /// Runs that ended in failure after all retries.
    failed: AtomicU64,
    /// Notified when `running` drops to zero.
    idle: tokio::sync::Notify,
}

struct Runtime {
    config: NodeConfig,
    planner: Planner,
    cluster: Option<Cluster>,
    /// Fire records and running states go to the publisher task through this, in order.
    publish: mpsc::UnboundedSender<Batch>,
    publisher: tokio::task::JoinHandle<()>,
    /// True when a data dir is open: runs then also wait for their record to be on disk.
    has_store: bool,
    clock: Arc<dyn Clock>,
    executor: Arc<dyn Executor>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    view_tx: watch::Sender<View>,
    /// The view, for runs waiting in quorum mode.
    view_rx: watch::Receiver<View>,
    /// Runs that end without running their slot report here.
    not_run_tx: mpsc::UnboundedSender<NotRun>,
    not_run_rx: mpsc::UnboundedReceiver<NotRun>,
    /// Newest generation and gossip address of every live node.
    peers: Arc<BTreeMap<NodeId, (u64, SocketAddr)>>,
    /// For runs that check where their record went (quorum mode).
    publisher_handle: Publisher,
    /// Quorum mode: how long a run waits without the quorum before deciding.
    quorum_grace: Duration,
    /// The latest run started here per job (for the overlap policy).
    /// A hash map: a burst looks up and replaces every due job's entry, and a B-tree walk
    /// by name chases a string pointer at every level. Its order is never used (shutdown
    /// aborts every run in it).
    local_runs: HashMap<JobId, LocalRun>,
    /// Runs of `forbid` and `replace` jobs to announce if still running at the time given
    /// (a gossip interval after they were fired), in that order.
    announce: VecDeque<(UnixMillis, Arc<RunShared>)>,
    /// Runs other nodes announced: job -> node -> (generation, slot).
    remote_runs: BTreeMap<JobId, BTreeMap<NodeId, (u64, UnixMillis)>>,
    /// Abort handles of the runs started, to stop them with the node. Runs report through
    /// `counters`, never by waking this task: a thousand runs ending in the same
    /// millisecond would otherwise mean a thousand loop turns competing with them for the
    /// cores.
    runs: RunHandles,
    /// Runs prepared and not spawned yet: a burst's runs are spawned back to back (a
    /// chunk at a time, or all at their deadline when prepared ahead of it), so the worker
    /// that picks them up is woken once per chunk instead of parking again between two
    /// runs.
    prepared: Vec<Prepared>,
    /// Runs no longer their job's latest, put aside during a burst and dropped after it,
    /// so freeing the last second's runs does not hold up this second's.
    retired: Vec<LocalRun>,
    /// Taken ahead of their deadline (see `Runtime::prepare_ahead`) and decided at it:
    /// slots of jobs with a run still running here or elsewhere.
    deferred: Vec<Action>,
    /// Taken ahead of their deadline: records and gates to publish once the runs start.
    held: Batch,
    /// The deadline the runs in `prepared` were prepared ahead of; they start at it.
    ahead_of: Option<UnixMillis>,
    /// Where runs are spawned: the runtime that started the node.
    spawner: tokio::runtime::Handle,
    /// The loop runs on a scheduler thread of its own (it may block that thread briefly).
    own_thread: bool,
    counters: Arc<RunCounters>,
    stats: Stats,
    pause: watch::Receiver<bool>,
    /// False once the pause switch's sender is gone (or there never was one).
    pause_live: bool,
}

/// Starts the scheduler's thread (see [`NodeBuilder::scheduler_thread`]): a
/// single-threaded runtime that runs until the returned sender is dropped.
fn start_scheduler_thread() -> Result<(tokio::runtime::Handle, oneshot::Sender<()>), NodeError> {
    /// Shuts a runtime down without blocking, should the thread not start: a runtime
    /// dropped normally inside an async context panics.
    struct Unstarted(Option<tokio::runtime::Runtime>);
    impl Drop for Unstarted {
        fn drop(&mut self) {
            if let Some(rt) = self.0.take() {
                rt.shutdown_background();
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NodeError::Scheduler)?;
    let handle = rt.handle().clone();
    let (done, until) = oneshot::channel::<()>();
    let mut rt = Unstarted(Some(rt));
    std::thread::Builder::new()
        .name("starling-scheduler".into())
        .spawn(move || {
            if let Some(rt) = rt.0.take() {
                rt.block_on(async {
                    let _ = until.await;
                });
                // Outside any async context: waits for a data-dir write in progress.
                drop(rt);
            }
        })
        .map_err(NodeError::Scheduler)?;
    Ok((handle, done))
}

/// One publication for the publisher task.
#[derive(Default)]
struct Batch {
    publish: Publish,
    /// Gates to open once the batch's records are out.
    gates: Vec<(GateTarget, watch::Sender<GateState>)>,
}

impl Batch {
    /// Running states only (`running:<job>`: a slot, or `None` once it ended).
    fn running(running: Vec<(JobId, Option<UnixMillis>)>) -> Batch {
        Batch {
            publish: Publish {
                records: Vec::new(),
                running,
            },
            gates: Vec::new(),
        }
    }
}

/// What a gate waits for, besides the data dir (always written first when there is one).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum GateTarget {
    /// Nothing else: no peer to tell.
    Store,
    /// The record was sent to a peer (a round with the job's runner-up, the node that takes
    /// over on a crash, is asked for at once).
    Peer(SocketAddr),
    /// Quorum mode: `need` of `peers` hold the record (their digests show it), so together
    /// with this node a quorum has it, and any majority side has a node that knows.
    Quorum { need: usize, peers: Vec<SocketAddr> },
}

/// A gate's state: the publication its records went out in, and whether runs may start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct GateState {
    seq: Option<u64>,
    /// Runs may start: the records went where the target says, or the wait timed out.
    open: bool,
    /// The records went where the target says (not a time-out).
    confirmed: bool,
}

/// Publishes batches in order: sets the keys in chitchat, writes the data dir (if any), then
/// opens each batch's gates once its records reached the runner-up (or after `timeout`).
async fn publisher_task(
    publisher: Publisher,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    store: Option<Arc<Store>>,
    mut saved: BTreeMap<JobId, FireRecord>,
    timeout: Duration,
) {
    while let Some(mut batch) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            batch.publish.records.extend(more.publish.records);
            batch.publish.running.extend(more.publish.running);
            batch.gates.extend(more.gates);
        }
        let seq = publisher.publish(&batch.publish).await;
        for (_, gate) in &batch.gates {
            let _ = gate.send(GateState {
                seq: Some(seq),
                open: false,
                confirmed: false,
            });
        }
        let open = GateState {
            seq: Some(seq),
            open: true,
            confirmed: true,
        };
        if let Some(store) = &store
            && !batch.publish.records.is_empty()
        {
            for r in &batch.publish.records {
                saved.insert(r.job.clone(), r.record);
            }
            let store = store.clone();
            let snapshot = saved.clone();
            match tokio::task::spawn_blocking(move || store.save(&snapshot)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "could not write the fire records; a restart may rerun the latest slots")
                }
                Err(e) => tracing::error!(error = %e, "writing the fire records failed"),
            }
        }
        for (target, gate) in batch.gates {
            let confirmed = match target {
                GateTarget::Store => {
                    let _ = gate.send(open);
                    continue;
                }
                GateTarget::Peer(addr) => publisher.confirm(addr, seq, timeout).boxed(),
                GateTarget::Quorum { need, peers } => {
                    publisher.confirm_many(peers, need, seq, timeout).boxed()
                }
            };
            tokio::spawn(async move {
                let confirmed = confirmed.await;
                if !confirmed {
                    debug!("the fire record did not reach its peers in time; running anyway");
                }
                let _ = gate.send(GateState { confirmed, ..open });
            });
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // On abort, stop gossip too, so peers see a crash, and stop the runs.
        self.abort_runs();
        self.publisher.abort();
        if let Some(c) = &self.cluster {
            c.abort();
        }
    }
}

/// In a burst of due slots, the node's task yields after starting this many runs.
const YIELD_EVERY_RUNS: usize = 64;

/// With a scheduler thread, how long before a deadline the loop wakes to block the rest
/// of the way (see `Clock::block_until`): well over what tokio's timer is late by (1-2 ms
/// here, more on a busy machine). Events that arrive meanwhile wait at most this long.
const PRECISE_WAKE: Duration = Duration::from_millis(10);

/// How often to warn while no peer has been heard from although seeds are configured.
const LONELY_WARN_EVERY: Duration = Duration::from_secs(5);

/// The latest run of a job on this node, for the overlap policy.
struct LocalRun {
    ctx: RunContext,
    /// `None` until its task is spawned (see `Runtime::start_runs`).
    handle: Option<tokio::task::AbortHandle>,
    shared: Arc<RunShared>,
    /// When it was fired (this node's clock).
    fired_at: UnixMillis,
    /// It came due while the run of this slot, which started late, was running, and waits
    /// for that run with a grace (see `After`): a slot that comes due meanwhile is skipped.
    behind: Option<UnixMillis>,
}

/// A run's state bits in [`RunShared::state`].
const RUN_STARTED: u8 = 1;
const RUN_ANNOUNCED: u8 = 2;
const RUN_ENDED: u8 = 4;

/// What a run of a `forbid` or `replace` job shares with the node: whether its executor
/// was called, whether it was announced in gossip, whether its task ended. One allocation
/// per run; `allow` runs have none.
struct RunShared {
    /// `RUN_*` bits.
    state: AtomicU8,
    /// Woken when the run starts and when its task ends (a `forbid` run waits for it).
    changed: tokio::sync::Notify,
    /// When the executor was called (ms), once `RUN_STARTED` is set.
    started_at: AtomicI64,
    job: JobId,
    slot: UnixMillis,
    /// To announce the end of a run that was announced.
    publish: mpsc::UnboundedSender<Batch>,
}

impl RunShared {
    fn has(&self, bit: u8) -> bool {
        self.state.load(Ordering::Acquire) & bit != 0
    }

    fn new(job: JobId, slot: UnixMillis, publish: mpsc::UnboundedSender<Batch>) -> RunShared {
        RunShared {
            state: AtomicU8::new(0),
            changed: tokio::sync::Notify::new(),
            started_at: AtomicI64::new(0),
            job,
            slot,
            publish,
        }
    }

    /// Waits until the run's task ended.
    async fn ended(&self) {
        self.reached(RUN_ENDED).await;
    }

    /// Waits until one of `bits` is set.
    async fn reached(&self, bits: u8) {
        loop {
            let changed = self.changed.notified();
            if self.has(bits) {
                return;
            }
            changed.await;
        }
    }

    /// The executor is about to be called, at `now`.
    fn start(&self, now: UnixMillis) {
        self.started_at.store(now.0, Ordering::Relaxed);
        self.state.fetch_or(RUN_STARTED, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    /// When the run started, if it did.
    fn started_at(&self) -> Option<UnixMillis> {
        self.has(RUN_STARTED)
            .then(|| UnixMillis(self.started_at.load(Ordering::Relaxed)))
    }

    /// The node sent the run's start announcement. Returns false if the task had already
    /// ended without seeing it: the node then announces the end itself. Either way the
    /// end goes out after the start.
    fn announced(&self) -> bool {
        self.state.fetch_or(RUN_ANNOUNCED, Ordering::AcqRel) & RUN_ENDED == 0
    }

    /// The run's task ended (finished, abandoned or cancelled).
    fn end(&self) {
        if self.state.fetch_or(RUN_ENDED, Ordering::AcqRel) & RUN_ANNOUNCED != 0 {
            let _ = self
                .publish
                .send(Batch::running(vec![(self.job.clone(), None)]));
        }
        self.changed.notify_waiters();
    }
}

/// The run of the same job that a `forbid` run waits for before it starts.
struct After {
    run: Arc<RunShared>,
    /// `Some`: skip this run if that one, which started late, is still running when it
    /// would have ended had it started on time, or this long after this run's slot,
    /// whichever comes first; `None`: wait as long as it takes.
    grace: Option<Duration>,
}

impl After {
    /// What a `forbid` run of `slot`, fired at `now`, waits for while `previous` (the job's
    /// latest run here) has not ended; `None`: nothing, the slot is skipped.
    ///
    /// - Slots found due together (a catch-up) run in order, one at a time: this one was
    ///   already due when the previous run was fired, so it did not come due while that run
    ///   ran.
    /// - A slot that comes due while the previous run runs is skipped, unless that run
    ///   started late (or has not started yet): the slot then waits as long as that run
    ///   started late, at most `grace`, and is skipped only if that run is still running
    ///   by then, that is, if it would still have been running had it started on time. A
    ///   catch-up fired just before the next slot, or held up by the catch-ups before it,
    ///   would otherwise make the next slot look overlapped. The bound keeps short the
    ///   time a slot whose record is out waits to start (a crash then loses it).
    /// - One slot at most waits so: a slot that comes due while one does is skipped.
    fn of(
        previous: &LocalRun,
        slot: UnixMillis,
        now: UnixMillis,
        grace: Duration,
    ) -> Option<After> {
        let run = previous.shared.clone();
        if slot <= previous.fired_at {
            return Some(After { run, grace: None });
        }
        let waits = match run.started_at() {
            Some(started) => Self::until(&run, slot, started, grace) > now,
            None => previous.behind.is_none(),
        };
        waits.then_some(After {
            run,
            grace: Some(grace),
        })
    }

    /// When a run of `slot` stops waiting for `run`, which started at `started`.
    fn until(
        run: &RunShared,
        slot: UnixMillis,
        started: UnixMillis,
        grace: Duration,
    ) -> UnixMillis {
        let late = Duration::from_millis(started.millis_since(run.slot).max(0) as u64);
        slot.saturating_add(late.min(grace))
    }

    /// Waits for the run before; returns whether it ended (false: it is still running,
    /// past the grace).
    async fn wait(&self, slot: UnixMillis, clock: &dyn Clock) -> bool {
        let run = &self.run;
        let Some(grace) = self.grace else {
            run.ended().await;
            return true;
        };
        let latest = slot.saturating_add(grace);
        tokio::select! {
            biased;
            () = run.reached(RUN_STARTED | RUN_ENDED) => {}
            () = sleep_to(clock, latest) => {}
        }
        if let Some(started) = run.started_at() {
            let until = Self::until(run, slot, started, grace);
            tokio::select! {
                biased;
                () = run.ended() => {}
                () = sleep_to(clock, until) => {}
            }
        }
        run.has(RUN_ENDED)
    }
}

/// Why a run ended without running its slot (reported to the node's loop).
enum NotRun {
    /// Quorum mode: the quorum was lost before a quorum held the run's record.
    Abandoned { job: JobId, slot: UnixMillis },
    /// `forbid`: the run it waited for, which started late, was still running (see `After`).
    Skipped {
        job: JobId,
        slot: UnixMillis,
        running: UnixMillis,
    },
}

/// Sleeps on `clock` until it reads `until` or later.
async fn sleep_to(clock: &dyn Clock, until: UnixMillis) {
    while clock.now() < until {
        clock.sleep_until(until).await;
    }
}

/// Abort handles of started runs. A finished run's handle keeps its task's memory, so
/// they are pruned: when there are twice as many as the last pruning left (at least
/// `PRUNE_RUNS_AT`). Pruning before a burst, not while spawning it, keeps it off the
/// burst's path.
#[derive(Default)]
struct RunHandles {
    handles: Vec<tokio::task::AbortHandle>,
    prune_at: usize,
}

/// `RunHandles` keeps at least this many handles before pruning.
const PRUNE_RUNS_AT: usize = 1024;

impl RunHandles {
    fn push(&mut self, handle: tokio::task::AbortHandle) {
        self.handles.push(handle);
    }

    /// Drops the handles of finished runs, if due.
    fn prune(&mut self) {
        if self.handles.len() >= self.prune_at.max(PRUNE_RUNS_AT) {
            self.handles.retain(|r| !r.is_finished());
            self.prune_at = self.handles.len() * 2;
        }
    }

    fn abort(&mut self) {
        for run in self.handles.drain(..) {
            run.abort();
        }
    }
}

/// A run ready to be spawned (see `Runtime::prepared`).
struct Prepared {
    guard: RunGuard,
    wait: Option<BoxFuture<bool>>,
    input: RunInput,
}

/// Held by a run's task: counts the run in `RunCounters::running` and marks it ended,
/// however the task ends (finished, abandoned, cancelled by `replace` or shutdown, even
/// before it was first polled: the guard is dropped with the future).
struct RunGuard {
    counters: Arc<RunCounters>,
    shared: Option<Arc<RunShared>>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.end();
        }
        if self.counters.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.counters.idle.notify_waiters();
        }
    }
}

/// How a run waits for its record in quorum mode.
struct QuorumWait {
    min: usize,
    view: watch::Receiver<View>,
    publisher: Publisher,
    peers: Arc<BTreeMap<NodeId, (u64, SocketAddr)>>,
    /// How long to wait without the quorum before deciding.
    grace: Duration,
}

impl QuorumWait {
    /// Waits until a quorum has the record (run). While the view has the quorum, a wait
    /// that timed out runs too. While it has not (cut off, or just back from a stall), the
    /// run waits up to `grace` (the time the majority side waits before it takes over) for
    /// the quorum or the confirmation to come back; then it starts only if a node now on the
    /// other side, which is the majority side, is known to hold the record: it knows, and
    /// will not run the slot. Otherwise this node does not run it: the majority side runs it
    /// if the record never reached it (if it did, see `Planner::abandon`). Returns whether
    /// to run.
    async fn wait(mut self, gate: &mut watch::Receiver<GateState>) -> bool {
        let _reading = self.publisher.read_receipts();
        let mut lost_until: Option<tokio::time::Instant> = None;
        loop {
            let state = *gate.borrow_and_update();
            if state.confirmed {
                return true;
            }
            let deadline = {
                let v = self.view.borrow_and_update();
                if v.members.len() >= self.min {
                    if state.open {
                        return true;
                    }
                    lost_until = None;
                    None
                } else {
                    #[allow(clippy::disallowed_methods)] // a timer, not a clock reading
                    let now = tokio::time::Instant::now();
                    let until = *lost_until.get_or_insert(now + self.grace);
                    if now >= until {
                        let Some(seq) = state.seq else {
                            return false;
                        };
                        return self.peers.iter().any(|(node, (_, addr))| {
                            !v.members.contains(node) && self.publisher.received(*addr) >= seq
                        });
                    }
                    Some(until)
                }
            };
            let expiry = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = gate.changed() => if changed.is_err() { return true; },
                changed = self.view.changed() => if changed.is_err() { return true; },
                _ = expiry => {}
            }
        }
    }
}

impl Runtime {
    fn cluster(&self) -> &Cluster {
        self.cluster.as_ref().expect("cluster lives until shutdown")
    }

    async fn run(mut self) {
        let mut live = self.cluster().live_watcher();
        // Without seeds there is nobody to wait for: never (a deadline left in the past
        // would wake the loop over and over).
        let mut next_lonely_check = if self.config.seeds.is_empty() {
            UnixMillis(i64::MAX)
        } else {
            self.clock.now().saturating_add(LONELY_WARN_EVERY)
        };
        loop {
            if self.pause_live && *self.pause.borrow_and_update() {
                // A stalled process does nothing until it resumes.
                let _ = self.pause.wait_for(|p| !p).await;
            }
            let now = self.clock.now();
            self.planner.poll(now);
            self.apply_actions(now, false).await;
            self.announce_due(now);
            if now >= next_lonely_check {
                next_lonely_check = now.saturating_add(LONELY_WARN_EVERY);
                if self.cluster().known_peers().await == 0 {
                    warn!(seeds = ?self.config.seeds, "no peer reachable yet; still retrying the seeds");
                }
            }
            let deadline = self
                .planner
                .next_deadline()
                .unwrap_or(UnixMillis(i64::MAX))
                .min(next_lonely_check)
                .min(
                    self.announce
                        .front()
                        .map_or(UnixMillis(i64::MAX), |(at, _)| *at),
                )
                .min(self.ahead_of.unwrap_or(UnixMillis(i64::MAX)));
            // On a thread of its own the loop wakes a little early and blocks the rest of
            // the way, to start a slot's runs within ~0.1 ms of it instead of ~1-2 ms.
            let early = self.own_thread && self.ahead_of.is_none();
            let wake_at = if early {
                deadline.saturating_sub(PRECISE_WAKE)
            } else {
                deadline
            };
            let sleep = self.clock.sleep_until(wake_at);
            tokio::select! {
                _ = sleep => if early {
                    self.prepare_ahead(deadline).await;
                },
                changed = self.pause.changed(), if self.pause_live => {
                    self.pause_live = changed.is_ok();
                }
                changed = live.changed() => {
                    if changed.is_err() {
                        warn!("gossip stopped; node stops scheduling");
                        return;
                    }
                    let (view, peers) = {
                        let live = live.borrow_and_update();
                        (view_from_live(&live), newest_generations(&live))
                    };
                    self.on_peers(peers);
                    self.on_view(view);
                }
                Some(not_run) = self.not_run_rx.recv() => self.on_not_run(not_run),
                Some(ev) = self.events_rx.recv() => {
                    self.on_event(ev);
                    while let Ok(ev) = self.events_rx.try_recv() {
                        self.on_event(ev);
                    }
                }
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(Command::Stats(tx)) => {
                        let mut stats = self.stats.clone();
                        stats.failed = self.counters.failed.load(Ordering::Relaxed);
                        let _ = tx.send(stats);
                    }
                    Some(Command::Shutdown(tx)) => {
                        self.leave().await;
                        let _ = tx.send(());
                        return;
                    }
                    // Every handle dropped: keep running (a node is usually driven by its
                    // signals, not its handle).
                    None => std::future::pending::<()>().await,
                },
            }
        }
    }

    /// On its own thread the loop wakes `PRECISE_WAKE` before a deadline. It then takes
    /// the deadline's actions as they will be at the deadline: no event is handled before
    /// it either way. It prepares their runs, blocks until the deadline, and the loop's
    /// next turn only spawns them, so a burst's runs start sooner after their slot.
    ///
    /// A slot whose job still has a run running, here or elsewhere, is decided at the
    /// deadline: that run may end meanwhile. If the clock cannot block (the default
    /// [`Clock::block_until`]) or went back, the runs wait for the deadline by the timer.
    async fn prepare_ahead(&mut self, deadline: UnixMillis) {
        // Sleeps are capped (see `Clock::sleep_until`): the deadline may be further off.
        if self.clock.now() < deadline.saturating_sub(PRECISE_WAKE) {
            return;
        }
        self.planner.poll(deadline);
        self.apply_actions(deadline, true).await;
        self.ahead_of = Some(deadline);
        self.clock.block_until(deadline, PRECISE_WAKE);
    }

    fn on_not_run(&mut self, not_run: NotRun) {
        match not_run {
            NotRun::Abandoned { job, slot } => {
                self.stats.abandoned += 1;
                warn!(job = %job, slot = %slot, "run not started: quorum lost before a quorum held its record; the majority side runs it, or this node does once it learns the majority skipped it");
                if let Some(record) = self.planner.abandon(&job, slot) {
                    let _ = self.publish.send(Batch {
                        publish: Publish {
                            records: vec![Record {
                                job,
                                record,
                                node: self.config.node_id.clone(),
                            }],
                            running: Vec::new(),
                        },
                        gates: Vec::new(),
                    });
                }
            }
            NotRun::Skipped { job, slot, running } => {
                self.stats.fired = self.stats.fired.saturating_sub(1);
                self.stats.overlap_skipped += 1;
                info!(node = %self.config.node_id, job = %job, slot = %slot, running = %running, "slot skipped: the previous run started late and was still running when it would have ended had it started on time (overlap = forbid)");
                self.retract_skipped(&job, slot);
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Record(r) => self.on_record(r),
            Event::Running(r) => self.on_running(r),
        }
    }

    fn on_record(&mut self, r: Record) {
        let now = self.clock.now();
        if !self.planner.observe_record(now, &r.job, r.record, &r.node) && r.record.slot > now {
            warn!(job = %r.job, slot = %r.record.slot, from = %r.node, "ignoring a fire record from the far future (is that node's clock wrong?)");
            return;
        }
        if r.node == self.config.node_id {
            return;
        }
        // `replace`: a newer slot started elsewhere cancels the run here.
        let replace = self
            .planner
            .job(&r.job)
            .is_some_and(|j| j.overlap == Overlap::Replace);
        if replace
            && self
                .local_runs
                .get(&r.job)
                .is_some_and(|l| l.ctx.scheduled_at < r.record.slot && !l.shared.has(RUN_ENDED))
        {
            info!(job = %r.job, newer = %r.record.slot, by = %r.node, "cancelling the running run: a newer slot started elsewhere (overlap = replace)");
            self.cancel_local(&r.job);
        }
    }

    fn on_running(&mut self, r: Running) {
        if r.node == self.config.node_id {
            return;
        }
        let entry = self.remote_runs.entry(r.job.clone()).or_default();
        let newer = entry.get(&r.node).is_none_or(|(g, _)| r.generation >= *g);
        if newer {
            match r.slot {
                Some(slot) => {
                    entry.insert(r.node, (r.generation, slot));
                }
                None => {
                    entry.remove(&r.node);
                }
            }
        }
        if entry.is_empty() {
            self.remote_runs.remove(&r.job);
        }
    }

    fn on_peers(&mut self, peers: BTreeMap<NodeId, (u64, SocketAddr)>) {
        // Runs announced by nodes (or generations) that are gone are not running any more.
        self.remote_runs.retain(|_, by| {
            by.retain(|node, (generation, _)| {
                peers.get(node).is_some_and(|(g, _)| g == generation)
            });
            !by.is_empty()
        });
        self.peers = Arc::new(peers);
    }

    fn on_view(&mut self, view: View) {
        if &view == self.planner.view() {
            return;
        }
        info!(
            node = %self.config.node_id,
            members = ?view.members.iter().map(NodeId::as_str).collect::<Vec<_>>(),
            leaving = ?view.alive.difference(&view.members).map(NodeId::as_str).collect::<Vec<_>>(),
            "membership changed"
        );
        let had_quorum = self.planner.has_quorum();
        self.planner.set_view(self.clock.now(), view.clone());
        match (had_quorum, self.planner.has_quorum()) {
            (true, false) => warn!(
                members = view.members.len(),
                needed = self.config.quorum().unwrap_or(0),
                "quorum lost: this node fires nothing until it sees enough members again"
            ),
            (false, true) => info!(
                members = view.members.len(),
                "quorum regained: firing resumes after the handoff delay"
            ),
            _ => {}
        }
        let _ = self.view_tx.send(view);
    }

    /// What a run of `job` must wait for before it starts; `None`: nothing.
    /// `quorum` caches quorum mode's target (the same for every job) for one burst.
    fn gate_target(&self, job: &JobId, quorum: &mut Option<GateTarget>) -> Option<GateTarget> {
        if let Some(target) = quorum {
            return Some(target.clone());
        }
        if let Some(min) = self.config.quorum() {
            let peers: Vec<SocketAddr> = self
                .planner
                .view()
                .members
                .iter()
                .filter(|n| **n != self.config.node_id)
                .filter_map(|n| self.peers.get(n).map(|(_, addr)| *addr))
                .collect();
            let target = GateTarget::Quorum {
                need: min.saturating_sub(1).min(peers.len()),
                peers,
            };
            *quorum = Some(target.clone());
            return Some(target);
        }
        let alone = self.planner.view().members.len() < 2;
        let peer = (!alone)
            .then(|| self.planner.runner_up(job))
            .flatten()
            .and_then(|n| self.peers.get(n))
            .map(|(_, addr)| *addr);
        match peer {
            Some(addr) => Some(GateTarget::Peer(addr)),
            None if self.has_store => Some(GateTarget::Store),
            None => None,
        }
    }

    /// Cancels the run of `job` running here (`replace`). A run cancelled before its
    /// executor was called counts as skipped by the overlap policy.
    fn cancel_local(&mut self, job: &JobId) {
        self.start_runs();
        let Some(l) = self.local_runs.remove(job) else {
            return;
        };
        if l.shared.has(RUN_ENDED) {
            return;
        }
        if let Some(handle) = &l.handle {
            handle.abort();
        }
        self.stats.replaced += 1;
        if !l.shared.has(RUN_STARTED) {
            self.stats.overlap_skipped += 1;
            self.executor.skipped(&l.ctx);
            self.retract_skipped(job, l.ctx.scheduled_at);
        }
    }

    /// A slot fired here was skipped by the overlap policy. Its record stays published, so
    /// no other node runs it later (a new owner after a crash would otherwise catch it up,
    /// seconds late: the simulator's `crash` sweep showed it); only this node's own
    /// duplicate accounting forgets it (see `Planner::skipped_by_overlap`).
    fn retract_skipped(&mut self, job: &JobId, slot: UnixMillis) {
        let _ = self.planner.skipped_by_overlap(job, slot);
    }

    /// Where a run of `job` announced by another live node is running, if one is.
    fn running_elsewhere(&self, job: &JobId) -> Option<String> {
        self.remote_runs
            .get(job)
            .and_then(|by| by.iter().next())
            .map(|(node, (_, slot))| format!("slot {slot} on {node}"))
    }

    /// Applies the planner's actions: prepares and spawns runs, publishes records.
    /// `ahead` (see `prepare_ahead`): before their deadline, so nothing is spawned or
    /// published yet, and slots to decide at the deadline are put aside.
    async fn apply_actions(&mut self, now: UnixMillis, ahead: bool) {
        if !ahead && let Some(at) = self.ahead_of {
            if now < at {
                return;
            }
            // Runs prepared ahead of this deadline.
            self.ahead_of = None;
            self.start_runs();
        }
        let mut batch = std::mem::take(&mut self.held);
        let mut gates: BTreeMap<GateTarget, watch::Receiver<GateState>> = BTreeMap::new();
        let actions: Vec<Action> = self
            .deferred
            .drain(..)
            .chain(self.planner.drain())
            .collect();
        let mut started = 0usize;
        // Quorum mode's gate target, the same for every run of this call.
        let mut quorum = None;
        for a in actions {
            match a {
                Action::Fire {
                    job,
                    slot,
                    fire_id,
                    late,
                    epoch,
                    repair,
                    index,
                } => {
                    let ctx = RunContext {
                        job,
                        scheduled_at: slot,
                        fire_id,
                        node_id: self.config.node_id.clone(),
                        attempt: 1,
                        epoch,
                    };
                    let Some((overlap, exec)) = self
                        .planner
                        .job_at(index)
                        .map(|j| (j.overlap, j.exec.clone()))
                    else {
                        continue;
                    };
                    // The job's run still running here, if any.
                    let local = match overlap {
                        Overlap::Allow => None,
                        _ => self
                            .local_runs
                            .get(&ctx.job)
                            .filter(|l| !l.shared.has(RUN_ENDED)),
                    };
                    let after = local
                        .filter(|_| overlap == Overlap::Forbid)
                        .and_then(|l| After::of(l, slot, now, self.config.gossip_interval));
                    let busy = match local {
                        _ if after.is_some() || overlap == Overlap::Allow => None,
                        // A slot that waits (or was skipped) behind a run stands for it.
                        Some(l) => {
                            let running = l
                                .behind
                                .filter(|_| !l.shared.has(RUN_STARTED))
                                .unwrap_or(l.ctx.scheduled_at);
                            Some(format!("slot {running} here"))
                        }
                        None => self.running_elsewhere(&ctx.job),
                    };
                    if ahead && (local.is_some() || busy.is_some()) {
                        self.deferred.push(Action::Fire {
                            job: ctx.job,
                            slot,
                            fire_id: ctx.fire_id,
                            late,
                            epoch,
                            repair,
                            index,
                        });
                        continue;
                    }
                    if let Some(busy) = busy {
                        if overlap == Overlap::Forbid {
                            self.stats.overlap_skipped += 1;
                            info!(node = %self.config.node_id, job = %ctx.job, slot = %slot, running = %busy, "slot skipped: the previous run is still running (overlap = forbid)");
                            self.executor.skipped(&ctx);
                            self.retract_skipped(&ctx.job, slot);
                            continue;
                        }
                        info!(job = %ctx.job, running = %busy, newer = %slot, "cancelling the running run for a newer slot (overlap = replace)");
                        self.cancel_local(&ctx.job);
                    }
                    self.stats.fired += 1;
                    if repair {
                        self.stats.repaired += 1;
                        warn!(job = %ctx.job, slot = %slot, late_ms = now.millis_since(slot), "running a slot given up when the quorum was lost: its record reached the majority side, which did not run it");
                    } else if late {
                        self.stats.fired_late += 1;
                        info!(job = %ctx.job, slot = %slot, late_ms = now.millis_since(slot), "catching up a missed slot");
                    }
                    let gate = self.gate_target(&ctx.job, &mut quorum).map(|target| {
                        gates
                            .entry(target.clone())
                            .or_insert_with(|| {
                                let (tx, rx) = watch::channel(GateState::default());
                                batch.gates.push((target, tx));
                                rx
                            })
                            .clone()
                    });
                    self.prepare_run(ctx, exec, overlap, gate, after, now);
                    started += 1;
                    if !ahead && started % YIELD_EVERY_RUNS == 0 {
                        self.start_runs();
                        // Let the runs already started begin instead of queueing behind the
                        // rest of a large burst (they share this task's workers when the
                        // node has no scheduler thread).
                        tokio::task::yield_now().await;
                    }
                }
                Action::PublishRecord { job, record } => batch.publish.records.push(Record {
                    job,
                    record,
                    node: self.config.node_id.clone(),
                }),
                Action::Missed {
                    job,
                    first,
                    last,
                    count,
                    policy,
                } => {
                    if policy {
                        self.stats.skipped += count;
                        info!(job = %job, first = %first, last = %last, count, "late slots skipped by the misfire policy");
                    } else {
                        self.stats.missed += count;
                        warn!(job = %job, first = %first, last = %last, count, "slots missed: older than the catch-up window");
                    }
                }
                Action::Duplicate {
                    job,
                    other,
                    first,
                    last,
                    count,
                } => {
                    self.stats.duplicates_detected += count;
                    warn!(job = %job, other = %other, first = %first, last = %last, count, total = self.stats.duplicates_detected, "duplicate runs detected: another node ran slots this node ran too");
                }
            }
        }
        if ahead {
            self.held = batch;
        } else {
            self.start_runs();
            if !batch.publish.records.is_empty() || !batch.gates.is_empty() {
                let _ = self.publish.send(batch);
            }
        }
        // A run still running (one that a later run waits for) stays abortable at
        // shutdown.
        for old in self.retired.drain(..) {
            if let Some(handle) = old.handle
                && !old.shared.has(RUN_ENDED)
            {
                self.runs.push(handle);
            }
        }
    }

    /// Prepares a run; `start_runs` spawns it.
    fn prepare_run(
        &mut self,
        ctx: RunContext,
        exec: ExecSpec,
        overlap: Overlap,
        gate: Option<watch::Receiver<GateState>>,
        after: Option<After>,
        now: UnixMillis,
    ) {
        let counters = self.counters.clone();
        counters.running.fetch_add(1, Ordering::Relaxed);
        self.runs.prune();
        let shared = (overlap != Overlap::Allow).then(|| {
            Arc::new(RunShared::new(
                ctx.job.clone(),
                ctx.scheduled_at,
                self.publish.clone(),
            ))
        });
        let local = shared.as_ref().map(|shared| (ctx.clone(), shared.clone()));
        let behind = after
            .as_ref()
            .filter(|a| a.grace.is_some())
            .map(|a| a.run.slot);
        // What the run waits for before its executor is called, if anything: the previous
        // run (`forbid`, see `After`), then its record's gate. Boxed, and built only when
        // needed, so the task of a run that waits for nothing stays small: a thousand of
        // them start in the same millisecond.
        let wait: Option<BoxFuture<bool>> = (after.is_some() || gate.is_some()).then(|| {
            let quorum = self.config.quorum().map(|min| QuorumWait {
                min,
                view: self.view_rx.clone(),
                publisher: self.publisher_handle.clone(),
                peers: self.peers.clone(),
                grace: self.quorum_grace,
            });
            let not_run = self.not_run_tx.clone();
            let (job, slot) = (ctx.job.clone(), ctx.scheduled_at);
            // Only a run that may be skipped needs these.
            let skip = after
                .as_ref()
                .is_some_and(|a| a.grace.is_some())
                .then(|| (self.executor.clone(), ctx.clone()));
            let after = after.map(|a| (a, self.clock.clone()));
            let wait: BoxFuture<bool> = Box::pin(async move {
                if let Some((after, clock)) = after
                    && !after.wait(slot, clock.as_ref()).await
                {
                    if let Some((executor, ctx)) = skip {
                        executor.skipped(&ctx);
                    }
                    let running = after.run.slot;
                    let _ = not_run.send(NotRun::Skipped { job, slot, running });
                    // Until that run ends, this one stands for it: a slot due meanwhile is
                    // skipped too.
                    after.run.ended().await;
                    return false;
                }
                let Some(mut gate) = gate else {
                    return true;
                };
                // The record goes first (see `cluster`): a crash from here on is known.
                let go = match quorum {
                    None => {
                        let _ = gate.wait_for(|g| g.open).await;
                        true
                    }
                    Some(q) => q.wait(&mut gate).await,
                };
                if !go {
                    let _ = not_run.send(NotRun::Abandoned { job, slot });
                }
                go
            });
            wait
        });
        let retry = Retry {
            base: self.config.retry_backoff,
            max: self.config.retry_backoff_max,
        };
        let input = RunInput {
            executor: self.executor.clone(),
            exec,
            ctx,
            retry,
        };
        let guard = RunGuard { counters, shared };
        self.prepared.push(Prepared { guard, wait, input });
        if let Some((ctx, shared)) = local {
            // Long runs are announced, so a new owner honours `forbid` and `replace`.
            self.announce.push_back((
                now.saturating_add(self.config.gossip_interval),
                shared.clone(),
            ));
            let previous = self.local_runs.insert(
                ctx.job.clone(),
                LocalRun {
                    ctx,
                    handle: None,
                    shared,
                    fired_at: now,
                    behind,
                },
            );
            self.retired.extend(previous);
        }
    }

    /// Spawns the prepared runs.
    fn start_runs(&mut self) {
        let mut started = Vec::with_capacity(self.prepared.len());
        for Prepared { guard, wait, input } in self.prepared.drain(..) {
            let shared = guard.shared.clone();
            let task = self.spawner.spawn(run_task(guard, wait, input));
            started.push((task.abort_handle(), shared));
        }
        for (handle, shared) in started {
            let local = shared.and_then(|shared| {
                self.local_runs
                    .get_mut(&shared.job)
                    .filter(|l| Arc::ptr_eq(&l.shared, &shared))
            });
            match local {
                Some(l) => l.handle = Some(handle),
                // Not the job's latest run any more (a catch-up burst).
                None => self.runs.push(handle),
            }
        }
    }

    /// Announces in gossip the runs started here that are still running a gossip interval
    /// after they were fired (`running:<job>`); each run's task announces its end. A run
    /// still waiting (for its record, or for the run before it) is checked again an
    /// interval later.
    fn announce_due(&mut self, now: UnixMillis) {
        let mut due = Vec::new();
        while let Some((at, _)) = self.announce.front()
            && *at <= now
        {
            let Some((_, run)) = self.announce.pop_front() else {
                break;
            };
            if run.has(RUN_ENDED) {
                continue;
            }
            if !run.has(RUN_STARTED) {
                self.announce
                    .push_back((now.saturating_add(self.config.gossip_interval), run));
                continue;
            }
            due.push(run);
        }
        if due.is_empty() {
            return;
        }
        let start = due.iter().map(|r| (r.job.clone(), Some(r.slot))).collect();
        let _ = self.publish.send(Batch::running(start));
        let ended: Vec<_> = due
            .iter()
            .filter(|r| !r.announced())
            .map(|r| (r.job.clone(), None))
            .collect();
        if !ended.is_empty() {
            let _ = self.publish.send(Batch::running(ended));
        }
    }

    /// Stops every running run; dropping a shell run kills its process group.
    fn abort_runs(&mut self) {
        self.runs.abort();
        self.prepared.clear();
        for run in self.local_runs.values() {
            if let Some(handle) = &run.handle {
                handle.abort();
            }
        }
    }

    /// Waits up to `timeout` for every running run to finish; returns whether they did.
    async fn drain(&mut self, timeout: Duration) -> bool {
        let counters = self.counters.clone();
        let wait = async {
            loop {
                let idle = counters.idle.notified();
                if counters.running.load(Ordering::Acquire) == 0 {
                    break;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    async fn leave(&mut self) {
        info!(node = %self.config.node_id, "leaving: stopped firing, announcing to peers");
        self.planner.leave();
        self.cluster().set_leaving().await;
        let until = self.clock.now().saturating_add(self.config.leave_delay());
        sleep_to(self.clock.as_ref(), until).await;
        let running = self.counters.running.load(Ordering::Acquire);
        if running > 0 {
            info!(running, timeout = ?self.config.drain_timeout, "waiting for running jobs");
            if !self.drain(self.config.drain_timeout).await {
                let killed = self.counters.running.load(Ordering::Acquire);
                warn!(killed, "drain timeout: killing running jobs");
                self.abort_runs();
            }
        }
        // Let the last records and run endings gossip before going silent: a peer that
        // still saw a run of ours as running would skip a `forbid` slot for nothing.
        let until = self
            .clock
            .now()
            .saturating_add(self.config.gossip_interval * 2);
        sleep_to(self.clock.as_ref(), until).await;
        if let Some(c) = self.cluster.take() {
            c.shutdown().await;
        }
        info!(node = %self.config.node_id, "left the cluster");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Handles pushed in bursts of any size are pruned: a burst's handles were all pushed
    /// after it was spawned, and a check for "as many as the vector holds" missed every
    /// time (1,000 `overlap = allow` runs a second kept every finished task's memory).
    #[tokio::test]
    async fn finished_runs_handles_are_pruned_whatever_the_burst_size() {
        let mut runs = RunHandles::default();
        for burst in [
            1000, 1000, 1000, 1, 999, 1000, 1000, 1000, 1000, 1000, 1000, 64, 3000,
        ] {
            runs.prune();
            let mut handles = Vec::new();
            for _ in 0..burst {
                handles.push(tokio::spawn(async {}));
            }
            for h in handles {
                let handle = h.abort_handle();
                let _ = h.await;
                runs.push(handle);
            }
            assert!(
                runs.handles.len() <= 2 * PRUNE_RUNS_AT + burst,
                "{} handles kept after a burst of {burst}",
                runs.handles.len()
            );
        }
        // A run still running is kept.
        let running = tokio::spawn(std::future::pending::<()>());
        runs.push(running.abort_handle());
        runs.prune();
        for _ in 0..PRUNE_RUNS_AT {
            let h = tokio::spawn(async {});
            let handle = h.abort_handle();
            let _ = h.await;
            runs.push(handle);
        }
        runs.prune();
        assert_eq!(runs.handles.len(), 1);
        runs.abort();
        assert!(running.await.unwrap_err().is_cancelled());
    }

    const GRACE: Duration = Duration::from_millis(200);

    /// The latest run of a job: slot `slot`, fired at `fired_at`, started at `started`.
    fn local_run(slot: i64, fired_at: i64, started: Option<i64>, behind: Option<i64>) -> LocalRun {
        let job = JobId::new("j");
        let shared = Arc::new(RunShared::new(
            job.clone(),
            UnixMillis(slot),
            mpsc::unbounded_channel().0,
        ));
        if let Some(at) = started {
            shared.start(UnixMillis(at));
        }
        LocalRun {
            ctx: RunContext {
                fire_id: crate::core::types::FireId::of(&job, UnixMillis(slot)),
                job,
                scheduled_at: UnixMillis(slot),
                node_id: NodeId::new("n"),
                attempt: 1,
                epoch: 1,
            },
            handle: None,
            shared,
            fired_at: UnixMillis(fired_at),
            behind: behind.map(UnixMillis),
        }
    }

    fn grace(previous: &LocalRun, slot: i64, now: i64) -> Option<Option<Duration>> {
        After::of(previous, UnixMillis(slot), UnixMillis(now), GRACE).map(|a| a.grace)
    }

    #[test]
    fn a_slot_already_due_when_the_run_before_was_fired_waits_for_it_unbounded() {
        let catch_up = local_run(1_000, 2_500, None, None);
        assert_eq!(grace(&catch_up, 2_000, 2_500), Some(None));
    }

    #[test]
    fn a_slot_due_while_an_on_time_run_runs_is_skipped() {
        let on_time = local_run(1_000, 1_000, Some(1_000), None);
        assert_eq!(grace(&on_time, 2_000, 2_000), None);
        // Started 3 ms late, found 5 ms late: past what it would have waited.
        let nearly = local_run(1_000, 1_000, Some(1_003), None);
        assert_eq!(grace(&nearly, 2_000, 2_005), None);
    }

    #[test]
    fn a_slot_due_while_a_late_run_runs_waits_with_the_grace() {
        let late = local_run(1_000, 1_990, Some(1_990), None);
        assert_eq!(grace(&late, 2_000, 2_001), Some(Some(GRACE)));
        // Not started yet (held up behind another run): it may still be late.
        let held = local_run(1_000, 1_990, None, None);
        assert_eq!(grace(&held, 2_000, 2_001), Some(Some(GRACE)));
    }

    #[test]
    fn a_slot_due_while_another_slot_waits_so_is_skipped() {
        let waiting = local_run(2_000, 2_000, None, Some(1_000));
        assert_eq!(grace(&waiting, 3_000, 3_000), None);
        // Once the waiting slot started, late, it is a late run like any other.
        let started = local_run(2_000, 2_000, Some(2_150), Some(1_000));
        assert_eq!(grace(&started, 3_000, 3_000), Some(Some(GRACE)));
    }

    #[test]
    fn the_wait_ends_when_the_run_would_have_ended_on_time_or_at_the_grace() {
        let run = local_run(1_000, 1_050, Some(1_050), None).shared;
        let until = |started| After::until(&run, UnixMillis(2_000), UnixMillis(started), GRACE);
        assert_eq!(until(1_050), UnixMillis(2_050));
        assert_eq!(until(1_900), UnixMillis(2_200));
        assert_eq!(until(900), UnixMillis(2_000));
    }
}
