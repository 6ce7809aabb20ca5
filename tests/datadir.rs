//! Process-level tests of `--data-dir`: the real binary, restarted with the same node id.

use std::time::Duration;

use starling::{Clock, SystemClock};

mod common;
use common::{Proc, free_port, read_runs, spawn_peer_with, write_jobs};

fn sleep(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn run_alone(
    name: &str,
    port: u16,
    jobs: &std::path::Path,
    log: &std::path::Path,
    data: &std::path::Path,
) -> Proc {
    spawn_peer_with(
        name,
        port,
        &[],
        jobs,
        log,
        &["--data-dir", &data.to_string_lossy()],
    )
}

/// A single node has no peer to remember what it ran: without its data dir, a restart
/// right after a crash runs again the slots of its last second or two (its startup
/// lookback); the same steps by hand gave 1 duplicate without `--data-dir`.
#[test]
fn a_node_restarted_with_its_data_dir_reruns_no_slot_and_misses_none() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs.txt");
    let jobs = write_jobs(dir.path(), 4, &out);
    let data = dir.path().join("data");
    let port = free_port();
    let first_log = dir.path().join("first.log");
    let second_log = dir.path().join("second.log");

    let start = SystemClock.now();
    let mut node = run_alone("solo", port, &jobs, &first_log, &data);
    sleep(4_000);
    // 600 ms past a second boundary, when no run is in flight: a run killed with its node
    // is not run again (its record is out), and its line would be missing.
    let now = SystemClock.now().0;
    sleep(u64::try_from((now / 1000 + 1) * 1000 + 600 - now).unwrap());
    // A crash, then an immediate restart: the new process's startup lookback covers the
    // slots the old one ran in its last second or two.
    node.kill9();
    assert!(data.join("fire-records.bin").exists());
    let mut node = run_alone("solo", port, &jobs, &second_log, &data);
    sleep(4_500);
    assert!(
        node.terminate().success(),
        "second run: {}",
        second_log.display()
    );
    let end = SystemClock.now();

    let second = std::fs::read_to_string(&second_log).unwrap();
    assert!(second.contains("data dir opened"), "{second}");
    let runs = read_runs(&out);
    let twice: Vec<_> = runs.iter().filter(|(_, nodes)| nodes.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "slots run twice across the restart: {twice:?}\nlogs: {} {}",
        first_log.display(),
        second_log.display()
    );
    // Every slot from the first run's first slot to shortly before the end ran once: the
    // restart caught up the slots due while the node was down.
    for j in 0..4 {
        let job = format!("job-{j:02}");
        let slots: Vec<i64> = runs
            .keys()
            .filter(|(name, _)| *name == job)
            .map(|(_, s)| *s)
            .collect();
        let (first, last) = (slots[0], *slots.last().unwrap());
        assert!(first <= start.0 + 2_500, "{job}: first slot {first}");
        assert!(last >= end.0 - 2_500, "{job}: last slot {last}");
        let expected = (first..=last).step_by(1_000).count();
        assert_eq!(slots.len(), expected, "{job}: a gap in {slots:?}");
    }
}

#[test]
fn a_locked_or_damaged_data_dir_stops_the_node_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs.txt");
    let jobs = write_jobs(dir.path(), 1, &out);
    let data = dir.path().join("data");
    let log = dir.path().join("a.log");
    let mut first = run_alone("a", free_port(), &jobs, &log, &data);
    sleep(1_500);

    // A second process on the same directory is refused.
    let second_log = dir.path().join("b.log");
    let mut second = run_alone("a", free_port(), &jobs, &second_log, &data);
    let mut exited = None;
    for _ in 0..100 {
        if !second.is_running() {
            exited = Some(());
            break;
        }
        sleep(50);
    }
    assert!(
        exited.is_some(),
        "a second process on a locked data dir kept running"
    );
    let text = std::fs::read_to_string(&second_log).unwrap();
    assert!(
        text.contains("in use by another process") && text.contains("data"),
        "{text}"
    );
    assert!(first.terminate().success());

    // A damaged records file: the node refuses to start and names the file.
    let records = data.join("fire-records.bin");
    let mut bytes = std::fs::read(&records).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    std::fs::write(&records, bytes).unwrap();
    let o = std::process::Command::new(common::BIN)
        .args(["run", "--node-id", "a", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--jobs")
        .arg(&jobs)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("fire-records.bin") && err.contains("checksum") && !err.contains("panicked"),
        "{err}"
    );
}
