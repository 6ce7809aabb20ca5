//! Firing lateness at job-handler entry with 1,000 jobs due in the same second.
//!
//! Lateness is (time the handler starts running) - (the slot's scheduled time). Target
//! (from the issue): Starling's p99 within 1.5x of a minimal tokio loop's p99.
//!
//! Variants, each on a fresh multi-thread tokio runtime, each over `ROUNDS` consecutive
//! seconds with `JOBS` deadlines on the same whole second:
//! - `baseline_loop`: one task walks the 1,000 deadlines, `sleep_until` each, and spawns a
//!   task per deadline; the spawned task records its lateness.
//! - `baseline_loop_3hop`: as `baseline_loop`, but each run goes through the same chain of
//!   spawns as Starling's (a `JoinSet` task, which spawns the executor's task, which spawns
//!   the handler's task). Shows what the spawn chain alone costs.
//! - `baseline_tasks`: one task per job sleeps until each deadline and records on wake.
//! - `starling_cron`: a real single node with 1,000 handler jobs on `* * * * * *`.
//! - `starling_every`: the same with `@every 1s`.
//! - `starling_every_allow`: the same with `overlap = allow`, which keeps no per-run state
//!   for the overlap policy (the default `forbid` does).
//!
//! Every lateness is measured twice, with the same clocks for every variant: in
//! milliseconds from `SystemClock::now()` (what the node uses), and in microseconds from
//! `SystemTime`.
//!
//! An attribution section then reruns `starling_cron` with the node's clock and executor
//! wrapped (`BenchClock`, `Staged`) to see when the node loop wakes, when it wakes next,
//! how many times it reads the clock per slot, and when each run reaches the executor and
//! the handler; and once more with a clock that sleeps to the exact deadline instead of
//! whole milliseconds.
//!
//! A diagnostic section times pieces of the firing path on their own: `Planner::poll` +
//! `drain` for 1,000 due jobs, `Schedule::next_after`, and `Cluster::publish_records` of
//! 1,000 records.
//!
//! Run with `cargo bench --bench firing`. Environment knobs: `BENCH_JOBS` (1000),
//! `BENCH_ROUNDS` (5), `BENCH_PASSES` (2; every variant runs once per pass and ratios are
//! taken within a pass; the first variant run is the pass's base), `BENCH_VARIANTS`
//! (comma-separated variant names to run, e.g. `baseline_loop,starling_cron`; skips the
//! attribution and diagnostics sections), `RUST_LOG` (if set, installs the same `fmt` subscriber the CLI
//! uses, writing to stderr: run with `2>/dev/null` to measure the cost of info logging).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chitchat::transport::UdpTransport;
use starling::cluster::{Cluster, GossipConfig, Publish, Record};
use starling::core::planner::{Planner, PlannerConfig};
use starling::exec::{BoxFuture, DefaultExecutor};
use starling::{
    Clock, ExecSpec, Executor, FireRecord, JobId, JobSpec, Node, NodeConfig, NodeId, Outcome,
    Overlap, RunContext, SystemClock, UnixMillis, View,
};
use tokio::task::JoinSet;

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One run's lateness: its slot (ms), lateness in ms (UnixMillis clock) and in us.
#[derive(Clone, Copy, Debug)]
struct Sample {
    slot_ms: i64,
    late_ms: i64,
    late_us: i64,
}

/// Where runs record their lateness: a fixed array filled through an atomic index, so
/// runs on different workers never wait for each other to record (a mutex here made the
/// workers park and wake each other, a context switch per run at worst).
struct SampleSink {
    next: AtomicUsize,
    slots: Box<[[AtomicI64; 3]]>,
}

impl SampleSink {
    fn new(capacity: usize) -> Arc<SampleSink> {
        Arc::new(SampleSink {
            next: AtomicUsize::new(0),
            slots: (0..capacity).map(|_| Default::default()).collect(),
        })
    }

    fn push(&self, s: Sample) {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some([slot, ms, us]) = self.slots.get(i) {
            slot.store(s.slot_ms, Ordering::Relaxed);
            ms.store(s.late_ms, Ordering::Relaxed);
            us.store(s.late_us, Ordering::Relaxed);
        }
    }

    /// What was recorded (read after every run finished).
    fn to_vec(&self) -> Vec<Sample> {
        let n = self.next.load(Ordering::Acquire);
        if n > self.slots.len() {
            println!(
                "warning: {n} samples, only the first {} kept",
                self.slots.len()
            );
        }
        self.slots[..n.min(self.slots.len())]
            .iter()
            .map(|[slot, ms, us]| Sample {
                slot_ms: slot.load(Ordering::Acquire),
                late_ms: ms.load(Ordering::Acquire),
                late_us: us.load(Ordering::Acquire),
            })
            .collect()
    }
}

type Samples = Arc<SampleSink>;

/// Microseconds since the Unix epoch from the OS wall clock.
#[allow(clippy::disallowed_methods)] // benchmark measurement clock
fn wall_us() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A monotonic instant for the benchmark's own interval timing.
#[allow(clippy::disallowed_methods)] // benchmark measurement clock
fn mono_now() -> std::time::Instant {
    std::time::Instant::now()
}

/// The tokio instant at which the wall clock reads `ms`.
#[allow(clippy::disallowed_methods)] // benchmark: maps wall-clock deadlines to tokio time
fn tokio_instant_at_wall_ms(ms: i64) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    let ahead_us = ms * 1000 - wall_us();
    if ahead_us <= 0 {
        now
    } else {
        now + Duration::from_micros(ahead_us as u64)
    }
}

/// The lateness of a run of `slot_ms`, read now. Both clocks are read the same way in
/// every variant.
fn sample_now(slot_ms: i64) -> Sample {
    let ms = SystemClock.now().0;
    let us = wall_us();
    Sample {
        slot_ms,
        late_ms: ms - slot_ms,
        late_us: us - slot_ms * 1000,
    }
}

fn record(samples: &SampleSink, slot_ms: i64) {
    samples.push(sample_now(slot_ms));
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sleeps (blocking) until the wall clock is `offset_ms` past a whole second.
fn wait_for_second_offset(offset_ms: i64) {
    let now = wall_us();
    let mut target = (now / 1_000_000) * 1_000_000 + offset_ms * 1000;
    if target <= now {
        target += 1_000_000;
    }
    std::thread::sleep(Duration::from_micros((target - now) as u64));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// First deadline: a whole second at least 2 s in the future.
fn first_deadline_ms() -> i64 {
    (wall_us() / 1_000_000 + 3) * 1000
}

async fn baseline_loop(jobs: usize, rounds: usize, hops: bool) -> (i64, Vec<Sample>) {
    let samples: Samples = SampleSink::new(jobs * rounds);
    let first = first_deadline_ms();
    let mut handles = Vec::with_capacity(jobs * rounds);
    let mut running: JoinSet<()> = JoinSet::new();
    for r in 0..rounds {
        let slot = first + 1000 * r as i64;
        let at = tokio_instant_at_wall_ms(slot);
        for _ in 0..jobs {
            tokio::time::sleep_until(at).await;
            let s = samples.clone();
            if hops {
                // Runtime's JoinSet task -> executor task -> handler task, as in Starling.
                running.spawn(async move {
                    let exec = tokio::spawn(async move {
                        let handler = tokio::spawn(async move { record(&s, slot) });
                        let _ = handler.await;
                    });
                    let _ = exec.await;
                });
            } else {
                handles.push(tokio::spawn(async move { record(&s, slot) }));
            }
        }
        // Reap finished runs between rounds, as the node does.
        while running.try_join_next().is_some() {}
    }
    for h in handles {
        let _ = h.await;
    }
    while running.join_next().await.is_some() {}
    let v = samples.to_vec();
    (first, v)
}

async fn baseline_tasks(jobs: usize, rounds: usize) -> (i64, Vec<Sample>) {
    let samples: Samples = SampleSink::new(jobs * rounds);
    let first = first_deadline_ms();
    let slots: Arc<Vec<(i64, tokio::time::Instant)>> = Arc::new(
        (0..rounds)
            .map(|r| {
                let slot = first + 1000 * r as i64;
                (slot, tokio_instant_at_wall_ms(slot))
            })
            .collect(),
    );
    let mut tasks = JoinSet::new();
    for _ in 0..jobs {
        let s = samples.clone();
        let slots = slots.clone();
        tasks.spawn(async move {
            for &(slot, at) in slots.iter() {
                tokio::time::sleep_until(at).await;
                record(&s, slot);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let v = samples.to_vec();
    (first, v)
}

fn free_udp_addr() -> AnyResult<SocketAddr> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    Ok(sock.local_addr()?)
}

/// How a Starling variant is wired.
#[derive(Clone, Copy)]
struct Wiring {
    /// Sleep to the exact wall-clock deadline (us) instead of `SystemClock`'s whole-ms wait.
    precise_sleep: bool,
    /// Record when each run reaches the executor and the executor's task (see `Staged`).
    staged: bool,
    /// The jobs' overlap policy (the default `forbid` keeps per-run state for it).
    overlap: Overlap,
}

const PLAIN: Wiring = Wiring {
    precise_sleep: false,
    staged: false,
    overlap: Overlap::Forbid,
};

/// `SystemClock`, optionally with an exact sleep, recording the time of every `now()`.
struct BenchClock {
    precise_sleep: bool,
    calls_us: Mutex<Vec<i64>>,
}

impl Clock for BenchClock {
    fn now(&self) -> UnixMillis {
        let t = SystemClock.now();
        let us = wall_us();
        self.calls_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(us);
        t
    }

    fn sleep_until(&self, deadline: UnixMillis) -> BoxFuture<()> {
        if !self.precise_sleep {
            return SystemClock.sleep_until(deadline);
        }
        // Same 1 s cap as the default.
        let capped = deadline.0.min(wall_us() / 1000 + 1000);
        Box::pin(tokio::time::sleep_until(tokio_instant_at_wall_ms(capped)))
    }

    fn block_until(&self, deadline: UnixMillis, within: Duration) {
        SystemClock.block_until(deadline, within);
    }
}

/// Wraps the default executor and records two stages of each run: `execute` called (in
/// the node's run task) and the executor's own task started.
struct Staged {
    inner: DefaultExecutor,
    stages: Arc<Mutex<Vec<(u8, Sample)>>>,
}

impl Executor for Staged {
    fn execute(&self, exec: &ExecSpec, ctx: RunContext) -> BoxFuture<Outcome> {
        let slot = ctx.scheduled_at.0;
        let stages = self.stages.clone();
        stage(&stages, 0, slot);
        let run = self.inner.execute(exec, ctx);
        Box::pin(async move {
            stage(&stages, 1, slot);
            run.await
        })
    }
}

fn stage(stages: &Mutex<Vec<(u8, Sample)>>, stage: u8, slot_ms: i64) {
    let s = sample_now(slot_ms);
    stages
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((stage, s));
}

/// What a Starling run recorded besides handler-entry lateness.
#[derive(Default)]
struct Trace {
    /// Per slot: lateness (us) of the node loop's first, second and third `now()` at or
    /// after the slot. The first is the loop waking for the slot; the next two are its next
    /// wakes (a membership update after the records went out, the check for long runs to
    /// announce), not the end of the burst.
    loop_us: [Vec<i64>; 3],
    /// Per slot: how many times the node read the clock in the second after it.
    now_calls: Vec<usize>,
    /// Lateness at `execute` (run task entered) and at the executor's task entry.
    stages: Vec<(u8, Sample)>,
}

async fn starling(
    jobs: usize,
    rounds: usize,
    schedule: &str,
    wiring: Wiring,
) -> AnyResult<(i64, Vec<Sample>, Trace)> {
    // The node runs the start second's slot too, and shutdown takes a while.
    let samples: Samples = SampleSink::new(jobs * (rounds + 4));
    let stages = Arc::new(Mutex::new(Vec::new()));
    let clock = Arc::new(BenchClock {
        precise_sleep: wiring.precise_sleep,
        calls_us: Mutex::new(Vec::new()),
    });
    let mut config = NodeConfig::new("bench", free_udp_addr()?);
    config.startup_delay = Some(Duration::ZERO);
    let mut builder = Node::builder(config);
    if wiring.staged || wiring.precise_sleep {
        // The plain variants keep the node's own `SystemClock`.
        builder = builder.clock(clock.clone());
    }
    let mut staged = DefaultExecutor::new();
    for i in 0..jobs {
        let s = samples.clone();
        let mut spec = JobSpec::parse(&format!("job-{i}"), schedule)?;
        spec.overlap = wiring.overlap;
        let handler = move |ctx: RunContext| {
            let s = s.clone();
            async move {
                record(&s, ctx.scheduled_at.0);
                Ok(())
            }
        };
        builder = if wiring.staged {
            staged.register(spec.name.clone(), Arc::new(handler));
            builder.job(spec)?
        } else {
            builder.handler_job(spec, handler)?
        };
    }
    if wiring.staged {
        builder = builder.executor(Arc::new(Staged {
            inner: staged,
            stages: stages.clone(),
        }));
    }
    // Start just after a whole second, so the first slot is ~0.95 s away.
    tokio::task::spawn_blocking(|| wait_for_second_offset(50)).await?;
    let start_ms = SystemClock.now().0;
    let node = builder.start().await?;
    let first = (start_ms / 1000 + 1) * 1000;
    let end = first + 1000 * rounds as i64;
    // Let the last round's handlers finish, then leave.
    tokio::time::sleep_until(tokio_instant_at_wall_ms(end - 1000 + 700)).await;
    node.shutdown().await;
    let v: Vec<Sample> = samples
        .to_vec()
        .into_iter()
        .filter(|s| s.slot_ms >= first && s.slot_ms < end)
        .collect();
    let calls = clock
        .calls_us
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut loop_us: [Vec<i64>; 3] = Default::default();
    let mut now_calls = Vec::new();
    for r in 0..rounds {
        let slot_us = (first + 1000 * r as i64) * 1000;
        now_calls.push(
            calls
                .iter()
                .filter(|&&c| c >= slot_us && c < slot_us + 1_000_000)
                .count(),
        );
        for (k, c) in calls.iter().filter(|&&c| c >= slot_us).take(3).enumerate() {
            loop_us[k].push(c - slot_us);
        }
    }
    let stages = stages
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .filter(|(_, s)| s.slot_ms >= first && s.slot_ms < end)
        .collect();
    Ok((
        first,
        v,
        Trace {
            loop_us,
            now_calls,
            stages,
        },
    ))
}

#[derive(Clone, Copy, Debug)]
struct Stats {
    n: usize,
    min: i64,
    p50: i64,
    p99: i64,
    max: i64,
}

fn stats(mut v: Vec<i64>) -> Stats {
    v.sort_unstable();
    let n = v.len();
    if n == 0 {
        return Stats {
            n,
            min: 0,
            p50: 0,
            p99: 0,
            max: 0,
        };
    }
    // Nearest rank.
    let rank = |p: usize| v[((n * p).div_ceil(100)).max(1) - 1];
    Stats {
        n,
        min: v[0],
        p50: rank(50),
        p99: rank(99),
        max: v[n - 1],
    }
}

struct VariantResult {
    name: &'static str,
    ms: Stats,
    us: Stats,
    /// Per round: (p99 us, max us).
    /// Per round: min, p50, p99 and max (us).
    per_round: Vec<Stats>,
}

fn summarize(name: &'static str, first: i64, rounds: usize, v: &[Sample]) -> VariantResult {
    let per_round = (0..rounds)
        .map(|r| {
            let slot = first + 1000 * r as i64;
            stats(
                v.iter()
                    .filter(|s| s.slot_ms == slot)
                    .map(|s| s.late_us)
                    .collect(),
            )
        })
        .collect();
    VariantResult {
        name,
        ms: stats(v.iter().map(|s| s.late_ms).collect()),
        us: stats(v.iter().map(|s| s.late_us).collect()),
        per_round,
    }
}

fn ratio(a: i64, b: i64) -> String {
    if b <= 0 {
        "n/a".to_string()
    } else {
        format!("{:.2}", a as f64 / b as f64)
    }
}

fn print_pass(pass: usize, jobs: usize, outcomes: &[VariantResult]) {
    println!();
    println!("pass {pass}: lateness at handler entry, {jobs} jobs due on the same second");
    println!(
        "{:<20} {:>6} | {:>5} {:>5} {:>5} (ms) | {:>7} {:>7} {:>7} (us) | {:>13} {:>13}",
        "variant", "n", "p50", "p99", "max", "p50", "p99", "max", "p99/base ms", "p99/base us"
    );
    let Some(base) = outcomes.first() else {
        return;
    };
    for o in outcomes {
        println!(
            "{:<20} {:>6} | {:>5} {:>5} {:>5}      | {:>7} {:>7} {:>7}      | {:>13} {:>13}",
            o.name,
            o.ms.n,
            o.ms.p50,
            o.ms.p99,
            o.ms.max,
            o.us.p50,
            o.us.p99,
            o.us.max,
            ratio(o.ms.p99, base.ms.p99),
            ratio(o.us.p99, base.us.p99),
        );
    }
    println!("per round (min/p50/p99/max us):");
    for o in outcomes {
        let rounds: Vec<String> = o
            .per_round
            .iter()
            .map(|s| format!("{}/{}/{}/{}", s.min, s.p50, s.p99, s.max))
            .collect();
        println!("  {:<20} {}", o.name, rounds.join("  "));
    }
    for o in outcomes
        .iter()
        .filter(|o| o.name.starts_with("starling") && o.name != base.name)
    {
        let r = o.us.p99 as f64 / base.us.p99.max(1) as f64;
        println!(
            "target {}: p99 {:.2}x {} (us) -> {}",
            o.name,
            r,
            base.name,
            if r <= 1.5 { "met" } else { "NOT met" }
        );
    }
}

/// Times publishing `jobs` records, as the node's publisher task does after each slot
/// (setting the keys in chitchat, under its lock).
async fn publish_cost(jobs: usize, rounds: usize) -> AnyResult<Vec<i64>> {
    let addr = free_udp_addr()?;
    let gossip = GossipConfig {
        node_id: NodeId::new("bench"),
        generation: 1,
        listen_addr: addr,
        advertise_addr: addr,
        seeds: Vec::new(),
        cluster_id: "bench".into(),
        gossip_interval: Duration::from_millis(200),
        phi_threshold: 8.0,
        dead_node_grace_period: Duration::from_secs(600),
        placement: Default::default(),
        initial_status: starling::cluster::STATUS_ALIVE,
    };
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let cluster = Cluster::spawn(&gossip, Arc::new(UdpTransport), tx).await?;
    let publisher = cluster.publisher();
    let mut times_us = Vec::new();
    for r in 1..=rounds as i64 {
        let records: Vec<Record> = (0..jobs)
            .map(|i| Record {
                job: JobId::new(format!("job-{i}")),
                record: FireRecord::single(UnixMillis(1000 * r), 1),
                node: NodeId::new("bench"),
            })
            .collect();
        let start = mono_now();
        publisher
            .publish(&Publish {
                records,
                ..Publish::default()
            })
            .await;
        times_us.push(start.elapsed().as_micros() as i64);
    }
    cluster.shutdown().await;
    Ok(times_us)
}

/// Times `Planner::poll` + `drain` with `jobs` jobs due at once, and `next_after`.
fn diagnostics(jobs: usize, rounds: usize) -> AnyResult<()> {
    println!();
    println!("diagnostics: pieces of the firing path, timed alone (median of {rounds} rounds)");
    let t0 = UnixMillis(1_700_000_000_000);
    for schedule in ["* * * * * *", "@every 1s"] {
        let cfg = PlannerConfig {
            startup_delay: Duration::ZERO,
            ..PlannerConfig::default()
        };
        let mut p = Planner::new(NodeId::new("bench"), cfg, t0);
        p.set_view(t0, View::of([NodeId::new("bench")]));
        for i in 0..jobs {
            let spec = JobSpec::parse(&format!("job-{i}"), schedule).expect("valid job");
            p.add_job(t0, spec).expect("unique job");
        }
        let mut times_us = Vec::new();
        let mut fired = 0;
        for r in 1..=rounds as i64 {
            let now = UnixMillis(t0.0 + 1000 * r);
            let start = mono_now();
            p.poll(now);
            fired += p.drain().count();
            times_us.push(start.elapsed().as_micros() as i64);
        }
        let s = stats(times_us);
        println!(
            "  planner.poll+drain, {jobs} due jobs, `{schedule}`: median {} us, max {} us ({} actions over {rounds} rounds)",
            s.p50, s.max, fired
        );
        let spec = JobSpec::parse("probe", schedule).expect("valid job");
        let n = 20_000;
        let start = mono_now();
        let mut t = t0;
        for _ in 0..n {
            t = spec.schedule.next_after(t).expect("next slot");
        }
        let per = start.elapsed().as_nanos() as f64 / n as f64;
        println!("  schedule.next_after `{schedule}`: {per:.0} ns per call");
    }
    let t = runtime().block_on(publish_cost(jobs, rounds))?;
    let rest = stats(t[1..].to_vec());
    println!(
        "  cluster.publish_records, {jobs} records: first (new keys) {} us, then median {} us, max {} us",
        t[0], rest.p50, rest.max
    );
    Ok(())
}

/// Where Starling's lateness goes: a traced run (clock and executor wrapped), and a run
/// whose clock sleeps to the exact deadline, each against a baseline run just before.
fn attribution(jobs: usize, rounds: usize) -> AnyResult<()> {
    println!();
    println!("attribution (`* * * * * *`): lateness in us at each stage, min/p50/p99/max");
    let (f, v) = runtime().block_on(baseline_loop(jobs, rounds, false));
    let base = summarize("baseline_loop", f, rounds, &v);
    let show = |name: &str, st: Stats| {
        println!(
            "  {name:<44} {:>6} {:>6} {:>6} {:>6}   p99 {:>5} x baseline_loop",
            st.min,
            st.p50,
            st.p99,
            st.max,
            ratio(st.p99, base.us.p99)
        );
    };
    show("baseline_loop: handler entry", base.us);
    let traced = Wiring {
        staged: true,
        ..PLAIN
    };
    let (f, v, trace) = runtime().block_on(starling(jobs, rounds, "* * * * * *", traced))?;
    let handler = summarize("traced", f, rounds, &v);
    println!(
        "  traced: node loop iterations (clock reads) per slot: {:?}",
        trace.now_calls
    );
    let [woke, next, third] = trace.loop_us;
    show("traced: node loop woke (1st now() per slot)", stats(woke));
    show("traced: node loop's next wake (2nd now())", stats(next));
    show("traced: the wake after (3rd now())", stats(third));
    for (i, name) in [
        "traced: run task entered (execute called)",
        "traced: executor task entered",
    ]
    .into_iter()
    .enumerate()
    {
        let st = stats(
            trace
                .stages
                .iter()
                .filter(|(k, _)| *k as usize == i)
                .map(|(_, s)| s.late_us)
                .collect(),
        );
        show(name, st);
    }
    show("traced: handler entry", handler.us);
    let precise = Wiring {
        precise_sleep: true,
        staged: true,
        ..PLAIN
    };
    let (f, v, trace) = runtime().block_on(starling(jobs, rounds, "* * * * * *", precise))?;
    let handler = summarize("precise", f, rounds, &v);
    let [woke, next, _] = trace.loop_us;
    show("exact-deadline sleep: node loop woke", stats(woke));
    show("exact-deadline sleep: next wake", stats(next));
    show("exact-deadline sleep: handler entry", handler.us);
    Ok(())
}

fn main() -> AnyResult<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
        println!("RUST_LOG is set: logging through a fmt subscriber to stderr");
    }
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches`: only the quick diagnostics, as a smoke test.
        println!("firing: smoke run; measure with `cargo bench --bench firing`");
        return diagnostics(100, 3);
    }
    let jobs = env_usize("BENCH_JOBS", 1000);
    let rounds = env_usize("BENCH_ROUNDS", 5);
    let passes = env_usize("BENCH_PASSES", 2);
    // `BENCH_VARIANTS=baseline_loop,starling_cron`: run only these (default: all, and the
    // attribution and diagnostics sections, which `BENCH_VARIANTS` skips).
    let only: Option<Vec<String>> = std::env::var("BENCH_VARIANTS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let want = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    for pass in 1..=passes {
        let mut outcomes = Vec::new();
        if want("baseline_loop") {
            let (f, v) = runtime().block_on(baseline_loop(jobs, rounds, false));
            outcomes.push(summarize("baseline_loop", f, rounds, &v));
        }
        if want("baseline_loop_3hop") {
            let (f, v) = runtime().block_on(baseline_loop(jobs, rounds, true));
            outcomes.push(summarize("baseline_loop_3hop", f, rounds, &v));
        }
        if want("baseline_tasks") {
            let (f, v) = runtime().block_on(baseline_tasks(jobs, rounds));
            outcomes.push(summarize("baseline_tasks", f, rounds, &v));
        }
        let allow = Wiring {
            overlap: Overlap::Allow,
            ..PLAIN
        };
        for (name, schedule, wiring) in [
            ("starling_cron", "* * * * * *", PLAIN),
            ("starling_every", "@every 1s", PLAIN),
            ("starling_every_allow", "@every 1s", allow),
        ] {
            if want(name) {
                let (f, v, _) = runtime().block_on(starling(jobs, rounds, schedule, wiring))?;
                outcomes.push(summarize(name, f, rounds, &v));
            }
        }
        for o in &outcomes {
            if o.ms.n != jobs * rounds {
                println!(
                    "warning: {} recorded {} runs, expected {}",
                    o.name,
                    o.ms.n,
                    jobs * rounds
                );
            }
        }
        print_pass(pass, jobs, &outcomes);
    }
    if only.is_none() {
        attribution(jobs, rounds)?;
        diagnostics(jobs, rounds.max(5))?;
    }
    Ok(())
}
