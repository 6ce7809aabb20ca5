//! Simulator speed: simulated seconds per wall second for 5, 20 and 100 nodes, and the
//! 10-node, 1-hour run. Run with `cargo bench -p starling-sim`.
//!
//! Each figure comes from the simulator's own report (`sim_seconds / wall_seconds`), one
//! steady-state run per size on one thread, with the 5-node figure as the in-run baseline.

use std::process::Command;

const SIM: &str = env!("CARGO_BIN_EXE_starling-sim");

fn run(nodes: usize, duration: &str, jobs: usize) -> (f64, f64) {
    let dir =
        std::env::temp_dir().join(format!("starling-sim-bench-{}-{nodes}", std::process::id()));
    let out = Command::new(SIM)
        .args(["--seed", "1", "--scenario", "steady", "--threads", "1"])
        .args([
            "--nodes",
            &nodes.to_string(),
            "--jobs",
            &jobs.to_string(),
            "--duration",
            duration,
        ])
        .arg("--report")
        .arg(&dir)
        .output()
        .expect("run starling-sim");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dir).unwrap()).unwrap();
    let _ = std::fs::remove_file(&dir);
    (
        report["sim_seconds"].as_f64().unwrap(),
        report["wall_seconds"].as_f64().unwrap(),
    )
}

fn main() {
    // `cargo bench` passes --bench; `cargo test` runs benches only with --benches.
    let mut baseline = None;
    println!(
        "{:>6} {:>6} {:>10} {:>10} {:>14} {:>12}",
        "nodes", "jobs", "sim s", "wall s", "sim s/wall s", "vs 5 nodes"
    );
    for (nodes, duration, jobs) in [
        (5, "10m", 50),
        (20, "5m", 50),
        (100, "60s", 50),
        (10, "1h", 50),
    ] {
        let (sim, wall) = run(nodes, duration, jobs);
        let speed = sim / wall;
        let base = *baseline.get_or_insert(speed);
        println!(
            "{nodes:>6} {jobs:>6} {sim:>10.0} {wall:>10.2} {speed:>14.1} {:>11.3}x",
            speed / base
        );
    }
}
