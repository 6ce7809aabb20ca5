//! Run history on a real node: real `sh -c` runs, each outcome recorded with its details,
//! and the history saved in the data dir across a restart.

use std::time::Duration;

use starling::{Node, NodeConfig, NodeHandle, RunOutcome, RunRecord, parse_jobs_toml};

mod common;
use common::free_port;

const JOBS: &str = r#"
[[jobs]]
name = "ok"
schedule = "@every 1s"
command = "echo hello from $STARLING_NODE_ID"

[[jobs]]
name = "fails"
schedule = "@every 1s"
command = "echo to-out; echo to-err >&2; exit 3"
retries = 1
overlap = "allow"

[[jobs]]
name = "slow"
schedule = "@every 1s"
command = "sleep 5"
timeout = "200ms"

[[jobs]]
name = "replaced"
schedule = "@every 1s"
command = "sleep 5"
overlap = "replace"

[[jobs]]
name = "forbidden"
schedule = "@every 1s"
command = "sleep 1.5"
"#;

async fn start(data: &std::path::Path) -> NodeHandle {
    let mut config = NodeConfig::new(
        "solo",
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    );
    config.data_dir = Some(data.to_path_buf());
    config.retry_backoff = Duration::from_millis(100);
    config.drain_timeout = Duration::from_millis(200);
    Node::builder(config)
        .jobs(parse_jobs_toml(JOBS).unwrap())
        .unwrap()
        .start()
        .await
        .unwrap()
}

fn first(runs: &[RunRecord], job: &str, outcome: RunOutcome) -> RunRecord {
    runs.iter()
        .find(|r| r.job.as_str() == job && r.outcome == outcome)
        .cloned()
        .unwrap_or_else(|| panic!("no {outcome} run of {job} in {runs:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_is_recorded_with_its_details_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = start(&data).await;
    // Startup delay (1 s), then a few slots of each job, until every outcome below is
    // recorded (bounded: 30 s). A fixed 4.8 s was too short on a loaded machine.
    let want = [
        ("ok", RunOutcome::Ok),
        ("fails", RunOutcome::Failed),
        ("slow", RunOutcome::TimedOut),
        ("replaced", RunOutcome::Cancelled),
        ("forbidden", RunOutcome::SkippedByOverlap),
        ("forbidden", RunOutcome::Ok),
    ];
    let mut runs = Vec::new();
    for _ in 0..300 {
        runs = node.history().query(None, 1000);
        let seen = |(job, outcome): &(&str, RunOutcome)| {
            runs.iter()
                .any(|r| r.job.as_str() == *job && r.outcome == *outcome)
        };
        if want.iter().all(seen) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let ok = first(&runs, "ok", RunOutcome::Ok);
    assert_eq!(ok.stdout_tail, "hello from solo\n");
    assert_eq!(
        (ok.attempts, ok.exit_code, ok.node.as_str()),
        (1, None, "solo")
    );
    assert!(ok.epoch >= 1 && ok.started_at.is_some() && ok.duration_ms.is_some());
    assert_eq!(ok.slot.0 % 1000, 0);

    let fails = first(&runs, "fails", RunOutcome::Failed);
    assert_eq!(fails.exit_code, Some(3));
    assert_eq!(fails.attempts, 2, "one retry");
    assert_eq!(
        (fails.stdout_tail.as_str(), fails.stderr_tail.as_str()),
        ("to-out\n", "to-err\n")
    );
    assert!(
        fails.duration_ms.unwrap() >= 100,
        "the retry's backoff is inside the run"
    );

    let slow = first(&runs, "slow", RunOutcome::TimedOut);
    assert!(slow.duration_ms.unwrap() >= 200, "{slow:?}");

    let replaced = first(&runs, "replaced", RunOutcome::Cancelled);
    assert!(replaced.duration_ms.unwrap() >= 500, "{replaced:?}");
    first(&runs, "forbidden", RunOutcome::SkippedByOverlap);
    first(&runs, "forbidden", RunOutcome::Ok);

    node.shutdown().await;
    let saved = dir.path().join("data/history.bin");
    assert!(saved.exists());
    let kept = {
        let node = start(&data).await;
        let back = node.history().query(None, 1000);
        node.abort();
        back
    };
    // Everything recorded before the shutdown came back, oldest first as it was.
    let before_shutdown: Vec<_> = runs.iter().rev().collect();
    let restored: Vec<_> = kept.iter().rev().take(before_shutdown.len()).collect();
    assert_eq!(restored, before_shutdown);
}
