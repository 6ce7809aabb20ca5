//! The simulator, run as the real binary (its seeded entropy lives in the binary).

use std::process::Command;

const SIM: &str = env!("CARGO_BIN_EXE_starling-sim");

struct Run {
    ok: bool,
    report: serde_json::Value,
    stdout: String,
}

fn sim(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = Command::new(SIM)
        .args(args)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); stdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Run {
        ok: out.status.success(),
        report: serde_json::from_str(&text).unwrap(),
        stdout,
    }
}

fn hashes(r: &serde_json::Value) -> (String, String) {
    (
        r["trace_hash"].as_str().unwrap().to_string(),
        r["net_hash"].as_str().unwrap().to_string(),
    )
}

#[test]
fn the_same_seed_gives_identical_hashes_in_separate_processes() {
    let args = ["--seed", "42", "--scenario", "chaos", "--duration", "60s"];
    let a = sim(&args);
    let b = sim(&args);
    assert_eq!(hashes(&a.report), hashes(&b.report));
    assert_eq!(a.report["executions"], b.report["executions"]);
    assert_eq!(a.report["entropy_drawn_before_seed"], 0);
}

#[test]
fn a_seed_replays_alone_exactly_as_it_ran_inside_a_sweep() {
    let sweep = sim(&[
        "--seeds",
        "5..8",
        "--scenario",
        "chaos",
        "--duration",
        "40s",
    ]);
    let alone = sim(&["--seed", "7", "--scenario", "chaos", "--duration", "40s"]);
    let in_sweep = &sweep.report.as_array().unwrap()[2];
    assert_eq!(in_sweep["seed"], 7);
    assert_eq!(hashes(in_sweep), hashes(&alone.report));
}

#[test]
fn different_seeds_give_different_runs() {
    let a = sim(&["--seed", "1", "--scenario", "steady", "--duration", "30s"]);
    let b = sim(&["--seed", "2", "--scenario", "steady", "--duration", "30s"]);
    let (ta, na) = hashes(&a.report);
    let (tb, nb) = hashes(&b.report);
    assert_ne!(na, nb, "network hashes of seeds 1 and 2 are equal");
    assert_ne!(ta, tb, "trace hashes of seeds 1 and 2 are equal");
}

#[test]
fn a_small_sweep_of_every_scenario_passes_its_checks() {
    for scenario in [
        "steady",
        "crash",
        "restart",
        "rolling",
        "join",
        "partition",
        "partition-quorum",
        "flap",
        "skew",
        "pause",
        "dup-id",
        "chaos",
    ] {
        let r = sim(&[
            "--seeds",
            "0..3",
            "--scenario",
            scenario,
            "--duration",
            "75s",
            "--jobs",
            "30",
        ]);
        assert!(r.ok, "{scenario}:\n{}", r.stdout);
        let runs = r.report.as_array().unwrap();
        assert_eq!(runs.len(), 3);
        for run in runs {
            assert_eq!(run["missed"], 0, "{scenario}: {run}");
            assert!(
                run["slots_due"].as_u64().unwrap() > 100,
                "{scenario}: {run}"
            );
            assert_eq!(run["duplicates"], run["duplicates_explained"], "{scenario}");
            if [
                "steady",
                "crash",
                "restart",
                "rolling",
                "join",
                "partition-quorum",
                "pause",
            ]
            .contains(&scenario)
            {
                // Planned changes, a crashed node that stays down, quorum mode, and a
                // stopped process: not even explained duplicates.
                assert_eq!(run["duplicates"], 0, "{scenario}: {run}");
            }
        }
    }
}

#[test]
fn a_broken_ownership_rule_is_caught_by_the_checker() {
    let r = sim(&[
        "--seed",
        "5",
        "--scenario",
        "steady",
        "--duration",
        "30s",
        "--break-ownership",
    ]);
    assert!(
        !r.ok,
        "the checker passed a run where every node owns every job"
    );
    let unexplained = r.report["duplicates"].as_u64().unwrap()
        - r.report["duplicates_explained"].as_u64().unwrap();
    assert!(unexplained > 100, "{}", r.report);
    assert!(
        r.stdout.contains("replay: starling-sim --seed 5"),
        "{}",
        r.stdout
    );
}

#[test]
fn the_timeline_is_an_svg_with_a_lane_per_node() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("t.svg");
    let out = Command::new(SIM)
        .args([
            "--seed",
            "3",
            "--scenario",
            "crash",
            "--duration",
            "40s",
            "--nodes",
            "4",
            "--timeline",
        ])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"));
    for n in 0..4 {
        assert!(text.contains(&format!(">n{n}</text>")), "lane n{n} missing");
    }
    assert!(text.contains(">crash</text>"));
}

/// Seeds that found bugs (in a release build), replayed on every CI run. A different
/// build may draw a different run from the same seed, so each bug also has a unit test
/// in the node code; these keep the scenarios that exposed them exercised.
#[test]
fn seeds_that_found_bugs_stay_fixed() {
    for (seed, scenario, extra) in [
        // A joiner took a job from another joiner still in its startup delay: slot lost.
        ("53", "join", &[][..]),
        // A node back from a crash before anyone noticed skipped its own downtime.
        ("7", "chaos", &[][..]),
        // Rolling restarts took every node down at once; records from a leaver's peers
        // arriving in the wrong order re-ran slots.
        (
            "5",
            "rolling",
            &["--nodes", "3", "--jobs", "10", "--duration", "40s"][..],
        ),
        // A seconds-level cron job in New York time stopped at spring forward.
        ("1", "steady", &["--nodes", "3", "--jobs", "6"][..]),
        // `replace` cancelling a run leaked the running count, so the next graceful leave
        // waited out the whole drain timeout and its restart came 30 s late.
        ("5", "rolling", &[][..]),
        // The same leak for a run cancelled before its task first ran (a catch-up).
        ("124", "chaos", &[][..]),
        // A leaver stopped gossip right after its last run ended: a peer kept seeing the
        // run as running and skipped a `forbid` slot nobody else ran.
        ("9", "chaos", &[][..]),
        // Quorum mode: the minority side ran the slots it fired at the cut (its runner-up
        // was on its side), and the majority ran them again.
        ("11", "partition-quorum", &[][..]),
        // Quorum mode: records sent as the cut came were counted as received; the cut-off
        // node ran the slot and so did the majority (seed 0). With receipts read from
        // digests, the majority got the record but the proof did not come back, so nobody
        // ran the slot (seeds 0, 21, 142) until abandoned runs were repaired.
        ("0", "partition-quorum", &[][..]),
        ("21", "partition-quorum", &[][..]),
        ("142", "partition-quorum", &[][..]),
        // The same race after receipt waits got faster: 9 records reached the majority but
        // their proof did not come back; without the repair after healing, 9 slots missed
        // (build 85be527; later builds draw differently and no longer hit it here).
        ("510", "partition-quorum", &[][..]),
        // Cold start: the nodes heard nobody before their startup delay ended, so each one
        // owned every job and ran the slot of the start second (before the checked window,
        // but the nodes counted 154 duplicates).
        ("71", "steady", &[][..]),
        // A node restarted from its data dir that had heard one peer thought it owned a
        // job its owner still ran, and ran a run-now request there too (seeds 97, 103, 161).
        ("103", "catalog", &[][..]),
        // A process stopped for 14 s resumed on its peers' views of before the stop (in
        // its own state, not yet refreshed), which agreed with its own: it ran slots a
        // peer had taken over (seed 12, also seen on real processes). Then its own failure
        // detector, fed the burst of queued packets, suspected a live peer 0.9 s after it
        // resumed and took its jobs over (seed 12 again, after the first fix), and a
        // peer's detector did the same to it 0.6 s after it came back from 60 s (seed 14).
        // (Since stops land at three points of the loop the draws differ; seed 9 of the
        // new draws failed, stopped after its health check, until the fix of that.)
        ("9", "pause", &[][..]),
        ("12", "pause", &[][..]),
        ("14", "pause", &[][..]),
    ] {
        let mut args = vec!["--seed", seed, "--scenario", scenario];
        args.extend_from_slice(extra);
        let r = sim(&args);
        assert!(r.ok, "seed {seed} {scenario}:\n{}", r.stdout);
        if scenario == "partition-quorum" || scenario == "pause" {
            assert_eq!(r.report["duplicates"], 0, "seed {seed}: {}", r.report);
        }
        if scenario == "steady" {
            assert_eq!(
                r.report["duplicates_detected"], 0,
                "seed {seed}: {}",
                r.report
            );
        }
    }
}
