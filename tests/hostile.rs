//! The hostile-input suite's process-level cases (issue 16, item 5): the real binary,
//! real UDP, real `sh -c`, asserted on the run log, the processes left and the node's
//! memory. The README's Security section maps every case of the suite to its test.
//!
//! The data-dir cases mount small tmpfs file systems; without the rights to (not root,
//! no `mount`), they print why and skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use starling::{Clock, SystemClock};

mod common;
use common::{
    BIN, Proc, ceil_second, free_port, free_tcp_port, http_get, processes_of, read_runs,
    spawn_peer, spawn_peer_with, stderr, wait_for_log, write, write_jobs,
};

/// Runs `starling args` expecting it to exit by itself within `within`; kills it and
/// fails otherwise.
fn exits_within(args: &[&str], within: Duration) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = SystemClock.now().saturating_add(within);
    let mut proc = Proc(Some(child));
    while proc.is_running() {
        assert!(
            SystemClock.now() < deadline,
            "`starling {args:?}` (pid {pid}) still runs after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = proc.0.take().unwrap().wait_with_output().unwrap();
    assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
    o
}

#[test]
fn a_bad_jobs_file_or_an_oversize_command_stops_the_start_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let within = Duration::from_secs(10);
    let bad = write(
        dir.path(),
        "bad.toml",
        "[[jobs]]\nname = \"a\"\nschedule = \"@every 1s\ncommand = \"true\"\n",
    );
    let o = exits_within(&["run", "--jobs", &bad, "--listen", &listen], within);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("bad.toml") && e.contains("line 3"), "{e}");
    let huge = write(
        dir.path(),
        "huge.toml",
        &format!(
            "[[jobs]]\nname = \"huge\"\nschedule = \"@every 1s\"\ncommand = \"echo {}\"\n",
            "x".repeat(1 << 20)
        ),
    );
    let o = exits_within(&["run", "--jobs", &huge, "--listen", &listen], within);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("job `huge`") && e.contains("`command`") && e.contains("8192 bytes"),
        "{e}"
    );
    assert!(
        e.len() < 2_000,
        "the error does not echo the command: {} bytes",
        e.len()
    );
    let o = exits_within(
        &[
            "run",
            "--jobs",
            "/nonexistent/jobs.toml",
            "--listen",
            &listen,
        ],
        within,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/nonexistent/jobs.toml"),
        "{}",
        stderr(&o)
    );
}

/// Every slot of `jobs` in [`from`, `to`) ran exactly once, in the runs `out` recorded;
/// returns the nodes that ran any.
fn every_slot_once(out: &Path, jobs: &[String], from: i64, to: i64) -> Vec<String> {
    let runs = read_runs(out);
    let mut problems = Vec::new();
    let mut nodes = Vec::new();
    for job in jobs {
        for slot in (from..to).step_by(1000) {
            match runs.get(&(job.clone(), slot)).map(Vec::as_slice) {
                Some([n]) => nodes.push(n.clone()),
                other => problems.push(format!("{job} @ {slot}: {other:?}")),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "slots not run exactly once: {problems:?}"
    );
    nodes.sort();
    nodes.dedup();
    nodes
}

/// Starts two peers seeding each other with jobs files `a` and `b`, lets them settle, and
/// checks a window of slots of `jobs`; returns the nodes that ran them.
fn two_peers_run_every_slot_once(dir: &Path, a: &Path, b: &Path, jobs: &[String]) -> Vec<String> {
    let (pa, pb) = (free_port(), free_port());
    let _a = spawn_peer("a", pa, &[pb], a, &dir.join("a.log"));
    let _b = spawn_peer("b", pb, &[pa], b, &dir.join("b.log"));
    for log in ["a.log", "b.log"] {
        let (started, text) = wait_for_log(&dir.join(log), Duration::from_secs(30), |t| {
            t.contains("node started")
        });
        assert!(started, "{log}: {text}");
    }
    // Both nodes firing (bounded, 60 s: a node that starts with 10,000 jobs parses them
    // and catches up the slots due meanwhile, which took over 6 s in a debug build on this
    // loaded 2-core machine, and a window that began at a fixed 6 s after the start once
    // opened before a node had run anything); then 3 s for the catalog and the views to
    // settle, then 4 s of slots, and 3 s for their runs to end.
    let runs = dir.join("runs.txt");
    let (firing, text) = wait_for_log(&runs, Duration::from_secs(60), |t| {
        t.lines().any(|l| l.starts_with("a ")) && t.lines().any(|l| l.starts_with("b "))
    });
    assert!(firing, "both nodes never ran a job: {text}");
    let from = ceil_second(SystemClock.now()) + 3_000;
    let to = from + 4_000;
    common::sleep_until(starling::UnixMillis(to + 3_000));
    let logs = || {
        ["a.log", "b.log"]
            .map(|l| std::fs::read_to_string(dir.join(l)).unwrap_or_default())
            .join("\n")
    };
    assert!(!logs().contains("panicked"), "{}", logs());
    every_slot_once(&runs, jobs, from, to)
}

#[test]
fn a_node_with_an_empty_jobs_file_runs_its_share_of_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs.txt");
    let full = write_jobs(dir.path(), 8, &out);
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let jobs: Vec<String> = (0..8).map(|j| format!("job-{j:02}")).collect();
    let nodes = two_peers_run_every_slot_once(dir.path(), &full, &empty, &jobs);
    assert_eq!(nodes, ["a", "b"], "both nodes own some of the 8 jobs");
}

#[test]
fn ten_thousand_jobs_in_a_file_run_every_slot_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs.txt");
    // 16 every-second jobs that record their runs, and 9,984 that fire once a year. The
    // recording jobs allow overlap: on a loaded machine a run may end after the next slot,
    // which `forbid` rightly skips; what this test checks is that no slot is lost or run
    // twice among 10,000 jobs.
    let mut text = String::new();
    for j in 0..16 {
        text.push_str(&format!(
            "[[jobs]]\nname = \"job-{j:02}\"\nschedule = \"@every 1s\"\noverlap = \"allow\"\ncommand = \"echo $STARLING_NODE_ID $STARLING_JOB $STARLING_SCHEDULED_AT_MS >> {}\"\n\n",
            out.display()
        ));
    }
    for j in 16..10_000 {
        text.push_str(&format!(
            "[[jobs]]\nname = \"yearly-{j:05}\"\nschedule = \"0 0 1 1 *\"\ncommand = \"true\"\n\n"
        ));
    }
    let file = dir.path().join("many.toml");
    std::fs::write(&file, text).unwrap();
    let jobs: Vec<String> = (0..16).map(|j| format!("job-{j:02}")).collect();
    let nodes = two_peers_run_every_slot_once(dir.path(), &file, &file, &jobs);
    assert_eq!(nodes, ["a", "b"], "both nodes own some of the 16 jobs");
    let log = std::fs::read_to_string(dir.path().join("a.log")).unwrap();
    assert!(log.contains("jobs=10000"), "{log}");
}

/// A tmpfs of `size` mounted at `at` with `options`; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None`, with the reason printed, when this process may not mount.
    fn mount(at: &Path, size: &str, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}{options}"),
                "tmpfs",
            ])
            .arg(at)
            .output();
        match o {
            Ok(o) if o.status.success() => Some(Tmpfs(at.to_path_buf())),
            Ok(o) => {
                eprintln!("SKIPPED: cannot mount a tmpfs: {}", stderr(&o).trim());
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_data_dir_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ro");
    let Some(_fs) = Tmpfs::mount(&data, "1m", ",ro") else {
        return;
    };
    let jobs = write_jobs(dir.path(), 1, &dir.path().join("runs.txt"));
    let listen = format!("127.0.0.1:{}", free_port());
    let o = exits_within(
        &[
            "run",
            "--jobs",
            &jobs.to_string_lossy(),
            "--listen",
            &listen,
            "--data-dir",
            &data.to_string_lossy(),
        ],
        Duration::from_secs(10),
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains(&*data.to_string_lossy()), "{e}");
}

/// Fills the file system of `dir` until a write fails; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    // A 1 MiB tmpfs takes at most 16 chunks; the bound is for safety.
    for _ in 0..1_000 {
        if f.write_all(&chunk).and_then(|()| f.sync_all()).is_err() {
            return path;
        }
    }
    panic!("{} never filled up", dir.display());
}

#[test]
fn a_full_data_dir_costs_no_slot_and_damages_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(_fs) = Tmpfs::mount(&data, "1m", "") else {
        return;
    };
    let out = dir.path().join("runs.txt");
    let jobs = write_jobs(dir.path(), 4, &out);
    let names: Vec<String> = (0..4).map(|j| format!("job-{j:02}")).collect();
    let data_flag = data.to_string_lossy().into_owned();
    let port = free_port();
    let log1 = dir.path().join("n1.log");
    let mut node = spawn_peer_with("full", port, &[], &jobs, &log1, &["--data-dir", &data_flag]);
    // Two seconds of runs with a working disk, then full for four.
    common::sleep_until(starling::UnixMillis(ceil_second(SystemClock.now()) + 2_000));
    let filler = fill(&data);
    let from = ceil_second(SystemClock.now()) + 1_000;
    let to = from + 3_000;
    common::sleep_until(starling::UnixMillis(to + 1_000));
    let text = std::fs::read_to_string(&log1).unwrap();
    let errors = text
        .lines()
        .filter(|l| l.contains("could not write the fire records"))
        .count();
    assert!(errors >= 1, "the full disk is reported:\n{text}");
    assert!(
        errors <= 2,
        "and rate-limited, not once per second: {errors}\n{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    every_slot_once(&out, &names, from, to);
    // Space again: the next writes succeed; a restart from the same data dir finds
    // every file whole and reruns no slot.
    std::fs::remove_file(&filler).unwrap();
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(node.terminate().success());
    let log2 = dir.path().join("n2.log");
    let _node = spawn_peer_with("full", port, &[], &jobs, &log2, &["--data-dir", &data_flag]);
    let (started, text) = wait_for_log(&log2, Duration::from_secs(10), |t| {
        t.contains("node started")
    });
    assert!(started, "{text}");
    std::thread::sleep(Duration::from_secs(2));
    let text = std::fs::read_to_string(&log2).unwrap();
    assert!(
        !text.contains("damaged") && !text.contains("ERROR"),
        "a restart after a full disk finds its files whole:\n{text}"
    );
    let runs = read_runs(&out);
    let twice: Vec<_> = runs.iter().filter(|(_, n)| n.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "slots run twice across the restart: {twice:?}"
    );
}

/// The node's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Starts a node with `job` (a TOML table's keys) named `name`, an API that takes writes
/// on loopback, and runs the job once through `starling jobs run`. Returns the node,
/// its log and its API port.
fn run_once(
    dir: &Path,
    node_id: &str,
    name: &str,
    job: &str,
    extra: &[&str],
) -> (Proc, PathBuf, u16) {
    let jobs = write(
        dir,
        "jobs.toml",
        &format!("[[jobs]]\nname = \"{name}\"\nschedule = \"0 0 1 1 *\"\n{job}\n"),
    );
    let api = free_tcp_port();
    let api_addr = format!("127.0.0.1:{api}");
    let log = dir.join("node.log");
    let mut args = vec!["--api", &api_addr, "--api-insecure-writes"];
    args.extend_from_slice(extra);
    let node = spawn_peer_with(node_id, free_port(), &[], Path::new(&jobs), &log, &args);
    let deadline = SystemClock.now().saturating_add(Duration::from_secs(10));
    while http_get(api, "/healthz").is_none() {
        assert!(SystemClock.now() < deadline, "the API never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = exits_within(
        &["jobs", "run", name, "--api", &api_addr],
        Duration::from_secs(10),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    (node, log, api)
}

#[test]
fn a_job_printing_100_mb_keeps_a_bounded_tail_and_costs_the_node_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let command = "command = \"head -c 100000000 /dev/zero | tr '\\\\0' x; echo; echo the-end\"";
    let (node, log, api) = run_once(dir.path(), "loud", "loud", command, &[]);
    let pid = node.0.as_ref().unwrap().id();
    let (done, text) = wait_for_log(&log, Duration::from_secs(60), |t| {
        t.contains("run succeeded") || t.contains("run failed")
    });
    assert!(done && text.contains("run succeeded"), "{text}");
    let peak_mib = peak_rss_kib(pid) / 1024;
    assert!(
        peak_mib < 64,
        "reading 100 MB of output must not hold it: the node peaked at {peak_mib} MiB"
    );
    let runs = http_get(api, "/v1/runs?job=loud").expect("GET /v1/runs");
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    let tail = runs["runs"][0]["stdout"]
        .as_str()
        .unwrap_or_else(|| panic!("{runs}"));
    assert!(
        tail.len() <= 2 * 1024 + 64,
        "a tail of {} bytes",
        tail.len()
    );
    assert!(
        tail.ends_with("the-end\n"),
        "the tail is the last bytes: {tail:?}"
    );
    assert!(tail.starts_with('x'), "{tail:?}");
}

/// Runs a job whose children outlive its 1 s timeout, one of them in a session of its
/// own, and returns the job's processes left 3 s after the timeout was reported.
fn processes_left_after_timeout(node_id: &str, extra: &[&str]) -> (Vec<u32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let job = "command = \"sleep 1000 & setsid sleep 1000 & sleep 1000\"\ntimeout = \"1s\"";
    let (_node, log, _) = run_once(dir.path(), node_id, "stuck", job, extra);
    let (reported, text) =
        wait_for_log(&log, Duration::from_secs(10), |t| t.contains("run failed"));
    assert!(reported && text.contains("timed out"), "{text}");
    let deadline = SystemClock.now().saturating_add(Duration::from_secs(3));
    let mut left = processes_of(node_id, "stuck");
    while !left.is_empty() && SystemClock.now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = processes_of(node_id, "stuck");
    }
    // The node is still up: only the run's own kill can have ended them.
    let text = std::fs::read_to_string(&log).unwrap();
    let mode = text
        .lines()
        .find(|l| l.contains("contained by"))
        .unwrap_or("(no containment line)")
        .to_string();
    (left, mode)
}

fn kill_all(pids: &[u32]) {
    for pid in pids {
        // SAFETY: killing the test's own strays, so a failure leaves nothing behind.
        unsafe {
            libc::kill(*pid as i32, libc::SIGKILL);
        }
    }
}

#[test]
fn a_timed_out_run_takes_its_children_with_it() {
    let node = format!("timeout-cg-{}", free_port());
    let (left, mode) = processes_left_after_timeout(&node, &[]);
    kill_all(&left);
    if !mode.contains("cgroup") {
        eprintln!("SKIPPED the cgroup case: no usable cgroup v2 here ({mode})");
        return;
    }
    assert!(
        left.is_empty(),
        "processes outlived the timeout in cgroup mode: {left:?}"
    );
}

#[test]
fn a_timed_out_run_in_process_group_mode_loses_only_the_setsid_child() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "starling.toml", "job_cgroups = false\n");
    let node = format!("timeout-pg-{}", free_port());
    let (left, _) = processes_left_after_timeout(&node, &["--config", &cfg]);
    let sessions: Vec<String> = left
        .iter()
        .map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // Fields after the command's closing parenthesis: state ppid pgrp session.
            let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
            let f: Vec<&str> = rest.split_whitespace().collect();
            format!(
                "pid {p} pgrp {} session {}",
                f.get(2).unwrap_or(&"?"),
                f.get(3).unwrap_or(&"?")
            )
        })
        .collect();
    kill_all(&left);
    // The process group is killed; the `setsid` child left it, as README documents.
    assert_eq!(left.len(), 1, "only the setsid child is left: {sessions:?}");
    assert!(
        sessions[0].ends_with(&format!("session {}", left[0])),
        "the one left leads its own session: {sessions:?}"
    );
}
