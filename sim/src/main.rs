//! `starling-sim`: many real Starling nodes in one process over a simulated network and
//! clock, faults drawn from a seed, every slot checked, any run replayable from its seed.
//!
//! # Layout
//!
//! - `entropy`: the seeded `getrandom`/`getentropy` this binary defines for the process.
//! - `rng`: the simulator's seeded generator.
//! - `net`: the simulated network (the nodes' `Datagrams`; gossip is sealed over it).
//! - `world`: nodes, clocks, the recording executor, the fault driver.
//! - `scenario`: named fault schedules drawn from the seed.
//! - `workload`: the simulated jobs.
//! - `check`: the checker (missed slots, duplicates and their explanations, lateness).
//! - `catalog`: the `catalog` scenario's operations, samples and checks.
//! - `svg`: the timeline picture.

mod catalog;
mod check;
mod entropy;
mod net;
mod pipeline;
mod rng;
mod scenario;
mod svg;
mod workload;
mod world;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

use crate::check::{Bounds, Findings, Reason};
use crate::rng::SimRng;
use crate::scenario::Scenario;
use crate::world::SimConfig;

#[derive(Parser, Clone, Debug)]
#[command(
    name = "starling-sim",
    version,
    about = "Deterministic Starling cluster simulator"
)]
struct Args {
    /// The seed of a single run.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// A sweep over seeds `A..B` (B excluded), run in parallel on fresh threads.
    #[arg(long, value_parser = parse_range)]
    seeds: Option<(u64, u64)>,
    /// The scenario: steady, crash, restart, rolling, join, partition, partition-quorum,
    /// flap, skew, pause, dup-id, clock-step, big-skew, chaos, catalog, placement, pipeline,
    /// load-burst, or `all` (each in turn, then a results table in Markdown).
    #[arg(long, default_value = "steady", value_parser = parse_scenarios)]
    scenario: Scenarios,
    /// Number of nodes.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Number of jobs.
    #[arg(long, default_value_t = 50)]
    jobs: usize,
    /// Simulated duration, e.g. `2m`, `1h`.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    duration: Duration,
    /// The nodes' gossip interval.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    gossip_interval: Duration,
    /// The failure detector's phi threshold (default: the nodes' default).
    #[arg(long, default_value_t = starling::node::DEFAULT_PHI_THRESHOLD)]
    phi: f64,
    /// Quorum mode for every scenario: the expected cluster size. `partition-quorum` uses
    /// the number of nodes when this is not given.
    #[arg(long)]
    expected_size: Option<usize>,
    /// Write the report (JSON; an array for a sweep) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the timeline picture (SVG) of a single run here.
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// Simulations run at once in a sweep. Default: the number of cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Run gossip open (no cluster key). By default every node seals its packets with a
    /// cluster key drawn from the seed, as a production cluster should.
    #[arg(long)]
    plain_gossip: bool,
    /// Test-only: every node believes it owns every job, so the checker must fail.
    #[arg(long, hide = true)]
    break_ownership: bool,
    /// Internal: run one seed and print its report as JSON (how sweeps run each seed).
    #[arg(long, hide = true)]
    child: bool,
}

/// One scenario, or all of them.
#[derive(Clone, Debug)]
struct Scenarios(Vec<Scenario>);

fn parse_scenarios(s: &str) -> Result<Scenarios, String> {
    if s == "all" {
        return Ok(Scenarios(Scenario::ALL.to_vec()));
    }
    Ok(Scenarios(vec![s.parse()?]))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    starling::core::schedule::parse_duration(s)
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("`{s}`: expected A..B, e.g. 0..100"))?;
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|_| format!("`{a}` is not a seed"))?;
    let b: u64 = b
        .trim()
        .parse()
        .map_err(|_| format!("`{b}` is not a seed"))?;
    if b <= a {
        return Err(format!("`{s}`: the range is empty"));
    }
    Ok((a, b))
}

/// One run's report. The first fields are the contract scripts rely on.
#[derive(Serialize, serde::Deserialize, Debug, Clone)]
struct Report {
    seed: u64,
    scenario: String,
    nodes: usize,
    jobs: usize,
    sim_seconds: f64,
    wall_seconds: f64,
    slots_due: u64,
    executions: u64,
    missed: usize,
    duplicates: usize,
    duplicates_explained: usize,
    lateness_p50_ms: i64,
    lateness_p99_ms: i64,
    lateness_max_ms: i64,
    trace_hash: String,
    net_hash: String,
    passed: bool,
    skipped_by_policy: u64,
    skipped_by_overlap: u64,
    duplicates_detected: u64,
    abandoned: u64,
    repaired: u64,
    expected_size: Option<usize>,
    phi: f64,
    gossip_interval_ms: u64,
    gossip_sealed: bool,
    duplicates_explained_by: std::collections::BTreeMap<String, usize>,
    owners_agree: Option<bool>,
    /// Requests the simulated HTTP endpoint got (HTTP jobs, `placement` scenario), and
    /// how many carried an idempotency key it had seen already.
    http_requests: u64,
    http_repeated_keys: u64,
    /// Runs on a node whose tags did not satisfy the job's constraints.
    misplaced: u64,
    /// Views, after the warm-up, in which a node lost a member: suspicions of a live node
    /// (`load-burst`, which has no fault).
    #[serde(default)]
    suspicions: Option<usize>,
    faults: Vec<String>,
    packets_sent: u64,
    packets_dropped: u64,
    entropy_drawn_before_seed: u64,
    findings: Findings,
    /// The `catalog` scenario's findings.
    #[serde(default)]
    catalog: Option<catalog::CatalogFindings>,
    /// The `pipeline` scenario's findings.
    #[serde(default)]
    pipeline: Option<pipeline::PipelineFindings>,
    replay: String,
}

/// The flags that shape a run besides its seed and scenario, as the CLI takes them.
fn run_flags(a: &Args) -> Vec<String> {
    let mut f = vec![
        "--nodes".to_string(),
        a.nodes.to_string(),
        "--jobs".to_string(),
        a.jobs.to_string(),
        "--duration".to_string(),
        format!("{}ms", a.duration.as_millis()),
        "--gossip-interval".to_string(),
        format!("{}ms", a.gossip_interval.as_millis()),
        "--phi".to_string(),
        a.phi.to_string(),
    ];
    if let Some(n) = a.expected_size {
        f.extend(["--expected-size".to_string(), n.to_string()]);
    }
    if a.plain_gossip {
        f.push("--plain-gossip".to_string());
    }
    if a.break_ownership {
        f.push("--break-ownership".to_string());
    }
    f
}

fn replay_command(a: &Args, scenario: Scenario, seed: u64) -> String {
    format!(
        "starling-sim --seed {seed} --scenario {scenario} {}",
        run_flags(a).join(" ")
    )
}

/// Quorum mode's expected size for a run: the flag, or every node for `partition-quorum`.
fn expected_size(a: &Args, scenario: Scenario) -> Option<usize> {
    a.expected_size
        .or((scenario == Scenario::PartitionQuorum).then_some(a.nodes))
}

#[allow(clippy::disallowed_methods)] // wall time of the simulator itself, never in a trace
fn wall_now() -> std::time::Instant {
    std::time::Instant::now()
}

/// Runs one simulation. Call on a fresh thread: it seeds the thread's entropy before
/// anything else runs there (per-thread hash keys are drawn once per thread).
fn simulate(a: &Args, scenario: Scenario, seed: u64) -> (Report, Option<String>) {
    let want_svg = a.timeline.is_some();
    {
        {
            entropy::seed_thread(seed);
            let wall = wall_now();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("a current-thread runtime");
            let mut rng = SimRng::new(seed);
            let end_ms = a.duration.as_millis() as i64;
            let mut jobs = workload::jobs(a.jobs, end_ms, &mut rng.fork(2));
            if scenario == Scenario::Placement {
                workload::place(&mut jobs);
            }
            let long_runs = std::sync::Arc::new(workload::long_runs(&jobs));
            if scenario == Scenario::Pipeline {
                workload::pipeline(&mut jobs);
            }
            let load = scenario == Scenario::LoadBurst;
            if load {
                workload::burst(&mut jobs, a.nodes);
            }
            let plan = scenario::plan(scenario, a.nodes, end_ms, &mut rng.fork(3));
            let config = SimConfig {
                seed,
                nodes: a.nodes,
                jobs: jobs.clone(),
                duration: a.duration,
                gossip_interval: a.gossip_interval,
                broken_ownership: a.break_ownership,
                expected_size: expected_size(a, scenario),
                phi_threshold: a.phi,
                long_runs,
                sealed: !a.plain_gossip,
                start_cost_us: if load {
                    workload::BURST_START_COST_US
                } else {
                    0
                },
            };
            let lanes = a.nodes + plan.extra_slots;
            let result = rt.block_on(world::run(config, plan));
            drop(rt);
            let bounds = Bounds::for_gossip(a.gossip_interval.as_millis() as i64);
            let findings = check::check(&jobs, &result, end_ms, bounds);
            // Without faults, a node that loses a member after the warm-up suspected a
            // live node (`load-burst`).
            let suspicions = load.then(|| {
                result
                    .views
                    .iter()
                    .filter(|v| v.at > scenario::WARMUP_MS && v.members.len() < a.nodes)
                    .count()
            });
            let catalog =
                (scenario == Scenario::Catalog).then(|| catalog::check(&result, end_ms, bounds));
            let pipeline = (scenario == Scenario::Pipeline)
                .then(|| pipeline::check(&jobs, &result, end_ms, bounds));
            let mut by = std::collections::BTreeMap::new();
            for d in &findings.duplicates {
                if let Some(r) = d.explained_by {
                    let key = match r {
                        Reason::Partition => "partition",
                        Reason::Loss => "loss",
                        Reason::Crash => "crash",
                    };
                    *by.entry(key.to_string()).or_insert(0) += 1;
                }
            }
            let svg = want_svg.then(|| {
                svg::timeline(
                    &result,
                    &findings,
                    lanes,
                    end_ms,
                    &format!(
                        "starling-sim seed {seed} scenario {scenario} ({} nodes, {} jobs)",
                        a.nodes, a.jobs
                    ),
                )
            });
            let report = Report {
                seed,
                scenario: scenario.to_string(),
                nodes: a.nodes,
                jobs: a.jobs,
                sim_seconds: end_ms as f64 / 1000.0,
                wall_seconds: wall.elapsed().as_secs_f64(),
                slots_due: findings.slots_due,
                executions: findings.executions,
                missed: findings.missed.len(),
                duplicates: findings.duplicates.len(),
                duplicates_explained: findings.duplicates.len() - findings.unexplained(),
                lateness_p50_ms: findings.lateness_ms.0,
                lateness_p99_ms: findings.lateness_ms.1,
                lateness_max_ms: findings.lateness_ms.2,
                trace_hash: format!("{:016x}", result.trace_hash),
                net_hash: format!("{:016x}", result.net_hash),
                passed: findings.passed()
                    && catalog.as_ref().is_none_or(|c| c.passed())
                    && pipeline.as_ref().is_none_or(|p| p.passed())
                    && suspicions.is_none_or(|n| n == 0)
                    && entropy::drawn_before_seed() == 0,
                skipped_by_policy: findings.skipped_by_policy,
                skipped_by_overlap: findings.skipped_by_overlap,
                duplicates_detected: result.duplicates_detected,
                abandoned: result.abandoned,
                repaired: result.repaired,
                expected_size: expected_size(a, scenario),
                phi: a.phi,
                gossip_interval_ms: a.gossip_interval.as_millis() as u64,
                gossip_sealed: !a.plain_gossip,
                duplicates_explained_by: by,
                owners_agree: findings.owners_agree,
                http_requests: result.http_requests,
                http_repeated_keys: result.http_repeated_keys,
                misplaced: findings.misplaced,
                suspicions,
                faults: result
                    .applied
                    .iter()
                    .map(|f| format!("{}ms {:?}", f.at, f.fault))
                    .collect(),
                packets_sent: result.net_stats.sent,
                packets_dropped: result.net_stats.dropped,
                entropy_drawn_before_seed: entropy::drawn_before_seed(),
                findings,
                catalog,
                pipeline,
                replay: replay_command(a, scenario, seed),
            };
            (report, svg)
        }
    }
}

/// Runs seeds `from..to` of `scenario`, each on a fresh thread, `threads` at a time.
/// Returns the reports in seed order and the timeline of the last run, if asked for.
fn sweep(
    args: &Args,
    scenario: Scenario,
    from: u64,
    to: u64,
    threads: usize,
) -> (Vec<Report>, Option<String>) {
    // Each seed on a fresh thread, `threads` at a time, results in seed order.
    let seeds: Vec<u64> = (from..to).collect();
    let mut reports: Vec<Report> = Vec::with_capacity(seeds.len());
    let mut svg_out = None;
    for chunk in seeds.chunks(threads) {
        let done: Vec<(Report, Option<String>)> = if seeds.len() == 1 {
            // A single run: on a fresh thread of this process, the first simulation in it.
            vec![simulate_on_fresh_thread(args, scenario, chunk[0])]
        } else {
            // A sweep: every seed in a process of its own, exactly as its replay command
            // runs it. Fresh threads are not enough: tokio seeds each runtime from a
            // process-wide counter, so the n-th simulation of a process differs from the
            // first.
            let children: Vec<_> = chunk
                .iter()
                .map(|&seed| (seed, spawn_child(args, scenario, seed, seed + 1 == to)))
                .collect();
            children
                .into_iter()
                .map(|(seed, child)| collect_child(seed, child, args, scenario))
                .collect()
        };
        for (r, svg) in done {
            println!(
                "seed {:>6}  {}  slots {:>6}  runs {:>6}  missed {:>3}  dup {:>3} (explained {:>3})  late p50 {:>5}ms p99 {:>5}ms max {:>5}ms  trace {}  net {}  {:.2}s",
                r.seed,
                if r.passed { "ok  " } else { "FAIL" },
                r.slots_due,
                r.executions,
                r.missed,
                r.duplicates,
                r.duplicates_explained,
                r.lateness_p50_ms,
                r.lateness_p99_ms,
                r.lateness_max_ms,
                r.trace_hash,
                r.net_hash,
                r.wall_seconds
            );
            if svg.is_some() {
                svg_out = svg;
            }
            reports.push(r);
        }
    }

    (reports, svg_out)
}

/// Runs one simulation on a new thread of this process (per-thread hash keys are drawn
/// once per thread, so the thread must not have drawn any before the seed is set).
fn simulate_on_fresh_thread(
    args: &Args,
    scenario: Scenario,
    seed: u64,
) -> (Report, Option<String>) {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name(format!("sim-{seed}"))
            .spawn_scoped(s, || simulate(args, scenario, seed))
            .expect("spawn a simulation thread")
            .join()
            .expect("the simulation thread panicked")
    })
}

/// Starts `starling-sim --child` for one seed; it prints its report as JSON.
fn spawn_child(args: &Args, scenario: Scenario, seed: u64, last: bool) -> std::process::Child {
    let exe = std::env::current_exe().expect("the simulator's own path");
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--seed", &seed.to_string(), "--scenario", scenario.name()])
        .args(run_flags(args))
        .arg("--child")
        .stdout(std::process::Stdio::piped());
    if let (true, Some(t)) = (last, &args.timeline) {
        cmd.arg("--timeline").arg(t);
    }
    cmd.spawn().expect("start a simulation process")
}

fn collect_child(
    seed: u64,
    child: std::process::Child,
    args: &Args,
    scenario: Scenario,
) -> (Report, Option<String>) {
    let out = child.wait_with_output().expect("a simulation process");
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Report = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "seed {seed}: the simulation process gave no report ({e}); replay: {}",
            replay_command(args, scenario, seed)
        )
    });
    // The child wrote the timeline itself.
    (report, None)
}

/// A Markdown table row and a summary line for one scenario's sweep.
fn summarize(scenario: Scenario, reports: &[Report]) -> String {
    let failed = reports.iter().filter(|r| !r.passed).count();
    let sum = |f: fn(&Report) -> usize| reports.iter().map(f).sum::<usize>();
    let slots: u64 = reports.iter().map(|r| r.slots_due).sum();
    let sim: f64 = reports.iter().map(|r| r.sim_seconds).sum();
    let wall: f64 = reports.iter().map(|r| r.wall_seconds).sum();
    let p99 = reports.iter().map(|r| r.lateness_p99_ms).max().unwrap_or(0);
    let max = reports.iter().map(|r| r.lateness_max_ms).max().unwrap_or(0);
    let (dup, expl) = (sum(|r| r.duplicates), sum(|r| r.duplicates_explained));
    let (runs, missed, unexplained) = (reports.len(), sum(|r| r.missed), dup - expl);
    let speed = if wall > 0.0 { sim / wall } else { 0.0 };
    let detected: u64 = reports.iter().map(|r| r.duplicates_detected).sum();
    let overlap: u64 = reports.iter().map(|r| r.skipped_by_overlap).sum();
    let abandoned: u64 = reports.iter().map(|r| r.abandoned).sum();
    let repaired: u64 = reports.iter().map(|r| r.repaired).sum();
    let http: u64 = reports.iter().map(|r| r.http_requests).sum();
    let repeated: u64 = reports.iter().map(|r| r.http_repeated_keys).sum();
    let misplaced: u64 = reports.iter().map(|r| r.misplaced).sum();
    let clocks = |f: fn(&Findings) -> usize| reports.iter().map(|r| f(&r.findings)).sum::<usize>();
    let (early, early_skips, rises) = (
        clocks(|f| f.early_runs.len()),
        clocks(|f| f.early_skips.len()),
        clocks(|f| f.epoch_rises.len()),
    );
    if reports.iter().any(|r| r.suspicions.is_some()) {
        let suspicions: usize = reports.iter().filter_map(|r| r.suspicions).sum();
        let seeds = reports.iter().filter(|r| r.suspicions > Some(0)).count();
        println!(
            "suspicions {scenario}: {suspicions} view(s) that lost a live member, in {seeds} run(s)"
        );
    }
    let placement = if http > 0 || misplaced > 0 {
        format!(
            "; HTTP requests {http} (repeated idempotency keys {repeated}); runs on a node without the job's tags {misplaced}"
        )
    } else {
        String::new()
    };
    println!(
        "summary {scenario}: {runs} run(s), {failed} failed; missed {missed}; duplicates {dup} (explained {expl}, unexplained {unexplained}; nodes detected {detected}); skipped by overlap {overlap}; abandoned {abandoned} (repaired {repaired}); worst lateness p99 {p99}ms; {speed:.0} simulated s per wall s{placement}"
    );
    if early + early_skips + rises > 0 {
        println!(
            "clocks {scenario}: runs started early {early}; overlap skips made early {early_skips}; epochs risen with no owner change {rises}"
        );
    }
    let catalogs: Vec<&catalog::CatalogFindings> =
        reports.iter().filter_map(|r| r.catalog.as_ref()).collect();
    if !catalogs.is_empty() {
        let sum = |f: fn(&catalog::CatalogFindings) -> usize| {
            catalogs.iter().map(|c| f(c)).sum::<usize>()
        };
        let judged = catalogs.iter().filter(|c| c.diverged.is_some()).count();
        let diverged = catalogs.iter().filter(|c| c.diverged == Some(true)).count();
        println!(
            "catalog {scenario}: {} operations, {} acknowledged; lost {}; runs judged converged {judged}, diverged {diverged}; late runs after a pause or delete {}; dynamic slot runs {}, duplicates {} (unexplained {}); run-now requests {} acknowledged, {} ran, {} twice unexplained",
            sum(|c| c.ops),
            sum(|c| c.acked),
            sum(|c| c.lost.len()),
            sum(|c| c.late_runs.len()),
            sum(|c| c.slot_runs),
            sum(|c| c.duplicates.len()),
            sum(|c| c.unexplained()),
            sum(|c| c.requests),
            sum(|c| c.requests_ran),
            sum(|c| c.requests_twice.len()),
        );
    }
    let pipelines: Vec<&pipeline::PipelineFindings> =
        reports.iter().filter_map(|r| r.pipeline.as_ref()).collect();
    if !pipelines.is_empty() {
        let sum = |f: fn(&pipeline::PipelineFindings) -> usize| {
            pipelines.iter().map(|p| f(p)).sum::<usize>()
        };
        println!(
            "pipeline {scenario}: parent successes {}, child runs due {}, ran exactly once {}; missing {} (explained by a crash {}); twice {} (unexplained {}); orphans {}",
            sum(|p| p.parent_successes),
            sum(|p| p.children_due),
            sum(|p| p.children_once),
            sum(|p| p.missing.len() + p.missing_explained),
            sum(|p| p.missing_explained),
            sum(|p| p.duplicates.len()),
            sum(|p| p.unexplained()),
            sum(|p| p.orphans.len()),
        );
    }
    format!(
        "| {scenario} | {runs} | {failed} | {slots} | {missed} | {dup} | {unexplained} | {detected} | {overlap} | {p99} ms | {max} ms | {speed:.0} |"
    )
}

/// Prints the first 5 unexplained duplicates of a failed seed.
fn print_unexplained(seed: u64, duplicates: &[check::Duplicate]) {
    for d in duplicates
        .iter()
        .filter(|d| d.explained_by.is_none())
        .take(5)
    {
        println!(
            "  seed {seed}: unexplained duplicate {} slot {} on nodes {:?}",
            d.job, d.slot, d.nodes
        );
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_timer(world::SimTime)
        .init();
    let (from, to) = match (args.seed, args.seeds) {
        (Some(s), _) => (s, s + 1),
        (None, Some(r)) => r,
        (None, None) => (0, 1),
    };
    if args.nodes == 0 || args.nodes > 250 {
        eprintln!("error: --nodes must be between 1 and 250");
        return ExitCode::FAILURE;
    }
    if args.child {
        let (report, svg) = simulate_on_fresh_thread(&args, args.scenario.0[0], from);
        if let (Some(path), Some(svg)) = (&args.timeline, svg)
            && let Err(e) = std::fs::write(path, svg)
        {
            eprintln!("error: writing the timeline to {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!(
            "{}",
            serde_json::to_string(&report).expect("a report serializes")
        );
        return ExitCode::SUCCESS;
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    println!(
        "starling-sim seeds {from}..{to} scenario {} nodes {} jobs {} duration {:?} gossip-interval {:?} threads {threads}{}",
        args.scenario
            .0
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(","),
        args.nodes,
        args.jobs,
        args.duration,
        args.gossip_interval,
        if args.break_ownership {
            " break-ownership"
        } else {
            ""
        }
    );

    let mut all: Vec<Report> = Vec::new();
    let mut svg_out = None;
    let mut table = Vec::new();
    for &scenario in &args.scenario.0 {
        let (reports, svg) = sweep(&args, scenario, from, to, threads);
        if svg.is_some() {
            svg_out = svg;
        }
        table.push(summarize(scenario, &reports));
        all.extend(reports);
    }
    let reports = all;
    if args.scenario.0.len() > 1 {
        println!(
            "\n| scenario | runs | failed | slots due | missed | duplicates | unexplained | detected by nodes | skipped by overlap | worst p99 lateness | max lateness | sim s / wall s |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        for row in &table {
            println!("{row}");
        }
    }
    let failed: Vec<&Report> = reports.iter().filter(|r| !r.passed).collect();
    if let Some(path) = &args.report {
        let json = if reports.len() == 1 {
            serde_json::to_string_pretty(&reports[0])
        } else {
            serde_json::to_string_pretty(&reports)
        };
        if let Err(e) = json
            .map_err(anyhow::Error::from)
            .and_then(|j| Ok(std::fs::write(path, j)?))
        {
            eprintln!("error: writing the report to {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if let (Some(path), Some(svg)) = (&args.timeline, svg_out) {
        if let Err(e) = std::fs::write(path, svg) {
            eprintln!("error: writing the timeline to {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    for r in &failed {
        for m in r.findings.missed.iter().take(5) {
            println!("  seed {}: missed {} slot {}", r.seed, m.job, m.slot);
        }
        for m in r.findings.spurious.iter().take(5) {
            println!(
                "  seed {}: ran {} at {}, which is not one of its slots",
                r.seed, m.job, m.slot
            );
        }
        print_unexplained(r.seed, &r.findings.duplicates);
        if let Some(c) = &r.catalog {
            for l in c.lost.iter().take(5) {
                println!("  seed {}: catalog write lost: {l}", r.seed);
            }
            if c.diverged == Some(true) {
                println!(
                    "  seed {}: live nodes hold different catalogs at the end",
                    r.seed
                );
            }
            for l in c.late_runs.iter().take(5) {
                println!("  seed {}: {l}", r.seed);
            }
            print_unexplained(r.seed, &c.duplicates);
            for l in c.requests_twice.iter().take(5) {
                println!("  seed {}: {l}", r.seed);
            }
        }
        for i in r.findings.identity.iter().take(5) {
            println!("  seed {}: {i}", r.seed);
        }
        for m in r.findings.early_runs.iter().take(5) {
            println!("  seed {}: ran {} slot {} early", r.seed, m.job, m.slot);
        }
        for m in r.findings.early_skips.iter().take(5) {
            println!(
                "  seed {}: skipped {} slot {} as overlapped before it was due",
                r.seed, m.job, m.slot
            );
        }
        for e in r.findings.epoch_rises.iter().take(5) {
            println!("  seed {}: {e}", r.seed);
        }
        if let Some(p) = &r.pipeline {
            for l in p.missing.iter().chain(&p.orphans).take(5) {
                println!("  seed {}: {l}", r.seed);
            }
            print_unexplained(r.seed, &p.duplicates);
        }
        if r.owners_agree == Some(false) {
            println!(
                "  seed {}: live nodes disagree on the members at the end",
                r.seed
            );
        }
        println!("  replay: {}", r.replay);
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
