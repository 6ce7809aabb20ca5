//! Memory per registered job: 100,000 jobs on one node at under 1 KiB each (target from
//! the issue).
//!
//! A counting global allocator tracks the bytes currently allocated. For each kind of
//! schedule, the bench builds the `JobSpec`s (the baseline: the bytes of the bare
//! `Vec<JobSpec>`), then a `Planner` with a view of 3 members including itself, adds every
//! job, and reports the bytes the planner holds per job (the specs, now owned by the
//! planner, included; the emptied `Vec` excluded), and the peak during the build.
//!
//! Schedules: (a) distinct cron expressions, (b) `@every Ns` with varying N, (c) one cron
//! string parsed for every job, (e) the same with a busier expression, (d) one cron string
//! parsed once and its `Schedule` cloned (the parsed expression is shared).
//!
//! Also measured: the in-process handler registry (`DefaultExecutor::register`, used by
//! `NodeBuilder::handler_job`) per job, and the time `NodeBuilder::job` takes to register N
//! jobs (its duplicate check).
//!
//! Run with `cargo bench --bench memory`. `BENCH_JOBS` overrides the 100,000.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use starling::core::planner::{Planner, PlannerConfig};
use starling::exec::DefaultExecutor;
use starling::{ExecSpec, JobId, JobSpec, Node, NodeConfig, NodeId, RunContext, UnixMillis, View};

mod counting;
use counting::{Counting, current, peak, reset_peak};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[allow(clippy::disallowed_methods)] // benchmark measurement clock
fn mono_now() -> std::time::Instant {
    std::time::Instant::now()
}

const KIB: f64 = 1024.0;

fn per_job(bytes: usize, n: usize) -> f64 {
    bytes as f64 / n as f64
}

/// Builds the specs, then a planner holding them; prints bytes per job.
fn planner_case(label: &str, n: usize, make: &dyn Fn(usize) -> JobSpec) {
    let before = reset_peak();
    let specs: Vec<JobSpec> = (0..n).map(make).collect();
    let specs_bytes = current() - before;
    let specs_peak = peak() - before;

    let start = mono_now();
    let t0 = UnixMillis(0);
    let mut planner = Planner::new(NodeId::new("a"), PlannerConfig::default(), t0);
    planner.set_view(t0, View::of(["a", "b", "c"].map(NodeId::new)));
    for s in specs {
        planner.add_job(t0, s).expect("unique job names");
    }
    let took = start.elapsed();
    let planner_bytes = current() - before;
    let planner_peak = peak() - before;
    let owned_here = planner
        .jobs()
        .filter(|j| planner.fires(&j.name, UnixMillis(i64::MAX)))
        .count();
    println!(
        "{label:<44} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7.3} {:>8}  {:>5.0} ms  {}",
        per_job(specs_bytes, n),
        per_job(specs_peak, n),
        per_job(planner_bytes, n),
        per_job(planner_peak, n),
        per_job(planner_bytes, n) / per_job(specs_bytes, n),
        owned_here,
        took.as_secs_f64() * 1e3,
        if per_job(planner_bytes, n) < KIB {
            "< 1 KiB: met"
        } else {
            "< 1 KiB: NOT met"
        },
    );
    drop(black_box(planner));
    let leaked = current().saturating_sub(before);
    if leaked > 0 {
        // The first case also initializes lazy statics (the cron crate's ordinal sets).
        println!("  ({leaked} bytes still allocated after dropping the planner: lazy statics?)");
    }
}

fn handler_registry(n: usize) {
    let names: Vec<JobId> = (0..n).map(|i| JobId::new(format!("job-{i}"))).collect();
    let before = reset_peak();
    let mut ex = DefaultExecutor::new();
    for name in &names {
        ex.register(
            name.clone(),
            Arc::new(|_ctx: RunContext| async { Ok::<(), starling::HandlerError>(()) }),
        );
    }
    let bytes = current() - before;
    println!(
        "DefaultExecutor::register (handler_job), {n} jobs: {:.1} bytes per job (names shared)",
        per_job(bytes, n)
    );
    drop(black_box(ex));
}

fn builder_time(counts: &[usize]) {
    let mut prev: Option<(usize, Duration)> = None;
    for &n in counts {
        let specs: Vec<JobSpec> = (0..n)
            .map(|i| {
                let mut s = JobSpec::parse(&format!("job-{i}"), "@every 60s").expect("valid job");
                s.exec = ExecSpec {
                    command: Some("true".into()),
                    ..ExecSpec::default()
                };
                s
            })
            .collect();
        let config = NodeConfig::new("a", "127.0.0.1:7946".parse().expect("addr"));
        let start = mono_now();
        let b = Node::builder(config).jobs(specs).expect("unique job names");
        let took = start.elapsed();
        drop(black_box(b));
        let growth = prev.map_or(String::new(), |(pn, pt)| {
            format!(
                " ({:.1}x the time for {:.1}x the jobs)",
                took.as_secs_f64() / pt.as_secs_f64(),
                n as f64 / pn as f64
            )
        });
        println!(
            "NodeBuilder::jobs, {n} jobs: {:.1} ms{growth}",
            took.as_secs_f64() * 1e3
        );
        prev = Some((n, took));
    }
}

fn main() {
    // Under `cargo test --benches` (no `--bench` flag): a quick smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 2_000 } else { 100_000 });
    if smoke {
        println!("memory: smoke run; measure with `cargo bench --bench memory`");
    }
    println!(
        "size_of::<JobSpec>() = {} bytes; {n} jobs per case",
        std::mem::size_of::<JobSpec>()
    );
    println!(
        "bytes per job: specs = the bare Vec<JobSpec> (baseline); planner = what the planner holds (specs included)"
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>7} {:>8}  {:>8}  target",
        "case", "specs", "peak", "planner", "peak", "x specs", "owned", "build"
    );
    let name = |i: usize| format!("job-{i}");
    planner_case("(a) distinct cron `{i%60} {i/60%60} * * * *`", n, &|i| {
        let cron = format!("{} {} * * * *", i % 60, (i / 60) % 60);
        JobSpec::parse(&name(i), &cron).expect("valid job")
    });
    planner_case("(b) `@every {1 + i%3600}s`", n, &|i| {
        JobSpec::parse(&name(i), &format!("@every {}s", 1 + i % 3600)).expect("valid job")
    });
    planner_case("(c) same cron `0 */5 * * * *`, parsed per job", n, &|i| {
        JobSpec::parse(&name(i), "0 */5 * * * *").expect("valid job")
    });
    planner_case("(e) same busier cron, parsed per job", n, &|i| {
        JobSpec::parse(&name(i), "0 0,15,30,45 9-17 * * Mon-Fri").expect("valid job")
    });
    let shared = JobSpec::parse("shared", "0 */5 * * * *").expect("valid job");
    planner_case("(d) same cron, one parsed Schedule cloned", n, &|i| {
        JobSpec {
            name: JobId::new(name(i)),
            ..shared.clone()
        }
    });
    println!();
    handler_registry(n);
    println!();
    let m = n.min(40_000);
    builder_time(&[m / 4, m / 2, m]);
}
