//! In-process cluster tests: real nodes, real chitchat over real UDP on loopback.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use starling::{
    Clock, HandlerError, JobSpec, Node, NodeConfig, NodeHandle, NodeId, RunContext, SystemClock,
    UnixMillis,
};

mod common;
use common::free_port;

const JOBS: usize = 24;

type RunLog = Arc<Mutex<Vec<(String, String, i64)>>>;

/// A handler that appends (node, job, slot) to `log`.
fn recorder(
    log: &RunLog,
) -> impl Fn(RunContext) -> std::pin::Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>
+ Send
+ Sync
+ 'static {
    let log = log.clone();
    move |ctx: RunContext| {
        log.lock().unwrap().push((
            ctx.node_id.to_string(),
            ctx.job.to_string(),
            ctx.scheduled_at.0,
        ));
        Box::pin(async { Ok(()) })
    }
}

async fn start_node(name: &str, port: u16, seeds: &[u16], log: &RunLog) -> NodeHandle {
    let mut config = NodeConfig::new(name, format!("127.0.0.1:{port}").parse().unwrap());
    config.seeds = seeds
        .iter()
        .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
        .collect();
    let mut builder = Node::builder(config);
    for j in 0..JOBS {
        builder = builder
            .handler_job(
                JobSpec::parse(&format!("job-{j:02}"), "@every 1s").unwrap(),
                recorder(log),
            )
            .unwrap();
    }
    builder.start().await.unwrap()
}

/// Nodes "a", "b" and "c", each seeded with the other two, once all three see each other.
async fn start_three(log: &RunLog) -> [NodeHandle; 3] {
    let ports = [free_port(), free_port(), free_port()];
    let a = start_node("a", ports[0], &[ports[1], ports[2]], log).await;
    let b = start_node("b", ports[1], &[ports[0], ports[2]], log).await;
    let c = start_node("c", ports[2], &[ports[0], ports[1]], log).await;
    for n in [&a, &b, &c] {
        assert!(
            n.wait_for_members(3, Duration::from_secs(15)).await,
            "{} sees {:?}",
            n.node_id(),
            n.members()
        );
    }
    [a, b, c]
}

async fn sleep_until(t: UnixMillis) {
    let ms = t.millis_since(SystemClock.now());
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms as u64)).await;
    }
}

/// 600 ms past the next second boundary: every `@every 1s` slot fired 600 ms ago, so its
/// record has had three gossip rounds to reach the peers.
fn past_next_second() -> UnixMillis {
    UnixMillis((SystemClock.now().0 / 1000 + 1) * 1000 + 600)
}

/// Runs per (job, slot) in [from, to], by node.
fn runs_in(log: &RunLog, from: i64, to: i64) -> BTreeMap<(String, i64), Vec<String>> {
    let mut m: BTreeMap<(String, i64), Vec<String>> = BTreeMap::new();
    for (node, job, slot) in log.lock().unwrap().iter() {
        if (from..=to).contains(slot) {
            m.entry((job.clone(), *slot))
                .or_default()
                .push(node.clone());
        }
    }
    m
}

fn assert_exactly_once(log: &RunLog, from: i64, to: i64) {
    let runs = runs_in(log, from, to);
    for j in 0..JOBS {
        let job = format!("job-{j:02}");
        let mut s = from;
        while s <= to {
            let nodes = runs.get(&(job.clone(), s)).cloned().unwrap_or_default();
            assert_eq!(
                nodes.len(),
                1,
                "{job} slot {} ran on {nodes:?}",
                UnixMillis(s)
            );
            s += 1000;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_slot_runs_once_and_a_killed_nodes_jobs_move_to_the_survivors() {
    let log: RunLog = Arc::default();
    let [a, b, c] = start_three(&log).await;
    // Every node agrees on every owner.
    for j in 0..JOBS {
        let job = format!("job-{j:02}");
        assert_eq!(a.owner_of(&job), b.owner_of(&job));
        assert_eq!(a.owner_of(&job), c.owner_of(&job));
    }
    let b_jobs: Vec<String> = (0..JOBS)
        .map(|j| format!("job-{j:02}"))
        .filter(|j| a.owner_of(j) == Some(NodeId::new("b")))
        .collect();
    assert!(!b_jobs.is_empty(), "b owns no job; pick other names");

    // Converged: from the next full second on, every slot must run exactly once.
    let window_start = (SystemClock.now().0 / 1000 + 2) * 1000;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let kill_at = past_next_second();
    sleep_until(kill_at).await;
    b.abort();
    let killed = SystemClock.now();

    for n in [&a, &c] {
        assert!(
            n.wait_for_members(2, Duration::from_secs(15)).await,
            "{} still sees {:?}",
            n.node_id(),
            n.members()
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window_end = (SystemClock.now().0 / 1000 - 1) * 1000;
    a.shutdown().await;
    c.shutdown().await;

    assert_exactly_once(&log, window_start, window_end);
    // b's jobs ran on a survivor after the crash.
    let runs = runs_in(&log, killed.0, window_end);
    for job in &b_jobs {
        let after: Vec<&String> = runs
            .iter()
            .filter(|((j, _), _)| j == job)
            .flat_map(|(_, nodes)| nodes)
            .collect();
        assert!(!after.is_empty(), "{job} never ran after b was killed");
        assert!(
            after.iter().all(|n| *n != "b"),
            "{job} ran on b after the kill"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_hands_jobs_over_without_a_gap_or_a_duplicate() {
    let log: RunLog = Arc::default();
    let [a, b, c] = start_three(&log).await;
    let window_start = (SystemClock.now().0 / 1000 + 2) * 1000;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Leave at an arbitrary moment: a planned change must not depend on timing.
    tokio::time::sleep(Duration::from_millis(SystemClock.now().0 as u64 % 1000)).await;
    b.shutdown().await;
    for n in [&a, &c] {
        assert!(n.wait_for_members(2, Duration::from_secs(15)).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window_end = (SystemClock.now().0 / 1000 - 1) * 1000;
    a.shutdown().await;
    c.shutdown().await;
    assert_exactly_once(&log, window_start, window_end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_or_failing_job_does_not_take_the_node_down() {
    let log: RunLog = Arc::default();
    let port = free_port();
    let mut config = NodeConfig::new("solo", format!("127.0.0.1:{port}").parse().unwrap());
    config.startup_delay = Some(Duration::ZERO);
    config.retry_backoff = Duration::from_millis(10);
    let mut failing = JobSpec::parse("fails", "@every 1s").unwrap();
    failing.exec.retries = 1;
    let node = Node::builder(config)
        .handler_job(
            JobSpec::parse("panics", "@every 1s").unwrap(),
            |_ctx: RunContext| async move {
                panic!("job bug");
                #[allow(unreachable_code)]
                Ok::<(), HandlerError>(())
            },
        )
        .unwrap()
        .handler_job(failing, |_ctx: RunContext| async move {
            Err::<(), HandlerError>("disk full".into())
        })
        .unwrap()
        .handler_job(
            JobSpec::parse("works", "@every 1s").unwrap(),
            recorder(&log),
        )
        .unwrap()
        .start()
        .await
        .unwrap();
    // Until the healthy job ran 3 times and both broken ones failed twice each (bounded:
    // 30 s). A fixed 3.5 s was too short on a loaded machine.
    let mut stats = node.stats().await;
    for _ in 0..300 {
        stats = node.stats().await;
        if log.lock().unwrap().len() >= 3 && stats.failed >= 4 && stats.fired >= 9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.shutdown().await;
    let works = log.lock().unwrap().len();
    assert!(works >= 3, "the healthy job ran {works} times");
    // Both broken jobs failed on every slot, and the node kept going.
    assert!(stats.failed >= 4, "{stats:?}");
    assert!(stats.fired >= 9, "{stats:?}");
}

/// (slot, start, end) of each run, in ms.
type Spans = Arc<Mutex<Vec<(i64, i64, i64)>>>;

/// How long a run of `span_recorder` takes.
#[derive(Clone, Copy)]
enum Run {
    /// This many ms, by Tokio's timer.
    For(u64),
    /// Until this many ms after its slot, to the millisecond (a blocking sleep on Tokio's
    /// blocking pool: Tokio's timer may be 1-2 ms late).
    UntilAfterSlot(i64),
}

/// A handler that takes `run` and then appends its run's (slot, start, end) to `spans`.
fn span_recorder(
    spans: &Spans,
    run: Run,
) -> impl Fn(RunContext) -> std::pin::Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>
+ Send
+ Sync
+ 'static {
    let spans = spans.clone();
    move |ctx: RunContext| {
        let spans = spans.clone();
        Box::pin(async move {
            let start = SystemClock.now().0;
            match run {
                Run::For(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                Run::UntilAfterSlot(ms) => {
                    let ms = ctx.scheduled_at.0 + ms - SystemClock.now().0;
                    let ms = u64::try_from(ms).unwrap_or(0);
                    tokio::task::spawn_blocking(move || {
                        std::thread::sleep(Duration::from_millis(ms))
                    })
                    .await
                    .unwrap();
                }
            }
            spans
                .lock()
                .unwrap()
                .push((ctx.scheduled_at.0, start, SystemClock.now().0));
            Ok(())
        })
    }
}

/// Runs a single node with `jobs`, whose runs take the `Run` given, for `for_ms`; returns
/// its counters and, per job, the (slot, start, end) of every run, sorted.
async fn run_solo_jobs(
    config: NodeConfig,
    clock: Option<Arc<dyn Clock>>,
    jobs: Vec<(JobSpec, Run)>,
    for_ms: u64,
) -> (starling::Stats, Vec<Vec<(i64, i64, i64)>>) {
    let mut builder = Node::builder(config);
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    let mut all = Vec::new();
    for (spec, run) in jobs {
        let spans: Spans = Arc::default();
        builder = builder
            .handler_job(spec, span_recorder(&spans, run))
            .unwrap();
        all.push(spans);
    }
    let node = builder.start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(for_ms)).await;
    let stats = node.stats().await;
    node.shutdown().await;
    let all = all
        .iter()
        .map(|spans| {
            let mut spans = spans.lock().unwrap().clone();
            spans.sort_unstable();
            spans
        })
        .collect();
    (stats, all)
}

/// `run_solo_jobs` with one job.
async fn run_solo(
    config: NodeConfig,
    spec: JobSpec,
    run: Run,
    for_ms: u64,
) -> (starling::Stats, Vec<(i64, i64, i64)>) {
    let (stats, mut all) = run_solo_jobs(config, None, vec![(spec, run)], for_ms).await;
    (stats, all.remove(0))
}

fn solo_config() -> NodeConfig {
    NodeConfig::new(
        "solo",
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    )
}

/// The runs' slots are consecutive seconds: none is missing.
fn assert_every_second(spans: &[(i64, i64, i64)]) {
    for pair in spans.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1_000, "a slot is missing: {spans:?}");
    }
}

/// No run started before the one before it ended (5 ms of clock granularity allowed).
fn assert_no_overlap(spans: &[(i64, i64, i64)]) {
    for pair in spans.windows(2) {
        assert!(
            pair[1].1 >= pair[0].2 - 5,
            "runs overlapped under forbid: {pair:?} {spans:?}"
        );
    }
}

/// `forbid`: a run that started late (a catch-up) and is still running when the next slot
/// comes due, but would have ended before it had it started on time, does not make that
/// slot look overlapped: the slot waits for it and runs. (A catch-up fired just before a
/// whole second made `starling demo` report the next second's slot missing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_runs_the_slot_after_a_late_catch_up_that_would_have_ended_in_time() {
    let mut config = solo_config();
    // Start-up ends 0.75 s into a second (X.750): slot X, due during it, is caught up then
    // and runs 500 ms, past slot X+1 (due at X+1.000), which it would not have had it
    // started on time.
    let now = SystemClock.now().0;
    sleep_until(UnixMillis((now / 1_000 + 1) * 1_000 - 50)).await;
    config.startup_delay = Some(Duration::from_millis(800));
    // A slot waits for such a run at most a gossip interval.
    config.gossip_interval = Duration::from_secs(1);
    let mut spec = JobSpec::parse("half-second", "@every 1s").unwrap();
    // Only slot X: the slots before it are older than the window by then.
    spec.catch_up_window = Duration::from_secs(1);
    let (stats, spans) = run_solo(config, spec, Run::For(500), 4_000).await;

    assert!(spans.len() >= 4, "{spans:?}");
    let catch_up = spans[0];
    assert!(
        catch_up.1 - catch_up.0 >= 500,
        "the first run was not a late catch-up: {spans:?}"
    );
    assert!(
        spans.iter().any(|s| s.0 > catch_up.1 && s.1 >= s.0 + 100),
        "no slot came due while a catch-up was running: {spans:?}"
    );
    assert_every_second(&spans);
    assert_no_overlap(&spans);
    assert_eq!(stats.overlap_skipped, 0, "{stats:?} {spans:?}");
}

/// The system clock without `block_until`: the default, which cannot block.
struct CannotBlock;

impl Clock for CannotBlock {
    fn now(&self) -> UnixMillis {
        SystemClock.now()
    }

    fn sleep_until(&self, deadline: UnixMillis) -> starling::exec::BoxFuture<()> {
        SystemClock.sleep_until(deadline)
    }
}

/// A node's scheduler thread prepares a slot's runs 10 ms before it and starts them at it.
/// No run starts before its slot; and under `forbid`, a run that ends in those 10 ms (here
/// 5 ms before the next slot) does not make the next slot look overlapped: that slot is
/// decided at its time, and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_run_starts_before_its_slot_and_a_run_ending_just_before_the_next_does_not_skip_it() {
    runs_start_at_their_slot(None).await;
}

/// The same with a clock that cannot block: the runs prepared ahead wait by the timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_clock_that_cannot_block_no_run_starts_before_its_slot_either() {
    runs_start_at_their_slot(Some(Arc::new(CannotBlock))).await;
}

async fn runs_start_at_their_slot(clock: Option<Arc<dyn Clock>>) {
    let jobs = vec![
        (JobSpec::parse("quick", "* * * * * *").unwrap(), Run::For(0)),
        (
            JobSpec::parse("nearly-a-second", "@every 1s").unwrap(),
            Run::UntilAfterSlot(995),
        ),
    ];
    let (stats, all) = run_solo_jobs(solo_config(), clock, jobs, 6_000).await;

    for spans in &all {
        assert!(spans.len() >= 4, "{all:?}");
        for &(slot, start, _) in spans {
            assert!(start >= slot, "a run started before its slot: {spans:?}");
        }
        assert_no_overlap(spans);
    }
    assert_every_second(&all[0]);
    assert!(
        all[1].iter().all(|&(slot, _, end)| end >= slot + 995),
        "a run ended early: {all:?}"
    );
    // A run meant to end 5 ms before the next slot may, on a loaded machine, end at or
    // after it: that slot is then rightly skipped under forbid. Only a run that ended at
    // least 2 ms early may not cost its successor the slot.
    let mut excused = 0;
    for pair in all[1].windows(2) {
        let ((slot, _, end), (next, _, _)) = (pair[0], pair[1]);
        if next != slot + 1_000 {
            assert!(
                next == slot + 2_000 && end >= slot + 998,
                "a slot is missing although the run before ended in time: {all:?}"
            );
            excused += 1;
        }
    }
    // (The last run may also cost a slot after the last one recorded, before shutdown.)
    assert!(
        (excused..=excused + 1).contains(&stats.overlap_skipped),
        "{stats:?} {all:?}"
    );
}

/// `forbid` (the default): slots found due together at start-up (the lookback) run one
/// after another, none skipped and none overlapping; a slot that comes due while a run is
/// running is skipped and counted. (A process-level test found the lookback slots after
/// the first skipped for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_runs_a_catch_up_burst_in_order_and_skips_slots_due_while_running() {
    let mut config = solo_config();
    config.startup_delay = Some(Duration::from_millis(2_500));
    let registered = SystemClock.now();
    let spec = JobSpec::parse("slow", "@every 1s").unwrap();
    let (stats, spans) = run_solo(config, spec, Run::For(1_300), 9_000).await;

    // The lookback reaches 2.5 s + 0.8 s before registration; start-up ends 2.5 s after.
    let fired_at = registered.0 + 2_500;
    let burst: Vec<i64> = (registered.0 - 3_300..=fired_at)
        .filter(|t| t % 1_000 == 0)
        .collect();
    let ran: Vec<i64> = spans.iter().map(|s| s.0).collect();
    for slot in &burst[1..] {
        assert!(
            ran.contains(slot),
            "burst slot {slot} did not run: {spans:?}"
        );
    }
    assert_no_overlap(&spans);
    assert!(
        stats.overlap_skipped >= 1,
        "no slot came due while a run was running? {stats:?} {spans:?}"
    );
}

/// A run of a `forbid` job that outlasts a gossip interval is announced while it runs
/// (`running:<job>` with its slot, so a new owner would not start the job meanwhile), and
/// its end is announced once it finishes. The observer is a bare gossip peer marked
/// leaving, so the node keeps the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_is_announced_while_it_runs_and_its_end_too() {
    use starling::cluster::{Cluster, Event, GossipConfig};
    let (node_port, observer_port) = (free_port(), free_port());
    let node_addr = format!("127.0.0.1:{node_port}").parse().unwrap();
    let observer_addr = format!("127.0.0.1:{observer_port}").parse().unwrap();
    let mut config = NodeConfig::new("a", node_addr);
    config.seeds = vec![observer_addr];
    let (events, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let observer = Cluster::spawn(
        &GossipConfig {
            node_id: NodeId::new("observer"),
            generation: 1,
            listen_addr: observer_addr,
            advertise_addr: observer_addr,
            seeds: vec![node_addr],
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            phi_threshold: 8.0,
            dead_node_grace_period: Duration::from_secs(60),
            placement: Default::default(),
            initial_status: starling::cluster::STATUS_ALIVE,
        },
        Arc::new(chitchat::transport::UdpTransport),
        events,
    )
    .await
    .unwrap();
    observer.set_leaving().await;
    // Runs take 1.5 s, every other second under `forbid`.
    let node = Node::builder(config)
        .handler_job(
            JobSpec::parse("long", "@every 1s").unwrap(),
            |_ctx: RunContext| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok::<(), HandlerError>(())
            },
        )
        .unwrap()
        .start()
        .await
        .unwrap();
    let announced = tokio::time::timeout(Duration::from_secs(20), async {
        let mut started = None;
        while let Some(ev) = seen.recv().await {
            if let Event::Running(r) = ev
                && r.node.as_str() == "a"
                && r.job.as_str() == "long"
            {
                match (started, r.slot) {
                    (None, Some(slot)) => started = Some(slot),
                    (Some(slot), None) => return Some(slot),
                    _ => {}
                }
            }
        }
        None
    })
    .await;
    let slot = announced
        .expect("no announcement of the run and of its end within 20 s")
        .expect("the observer's event stream ended");
    let stats = node.stats().await;
    assert!(stats.fired >= 1, "{stats:?}");
    assert!(
        slot.0 % 1000 == 0,
        "announced slot {slot} is not a whole second"
    );
    node.shutdown().await;
    observer.shutdown().await;
}
