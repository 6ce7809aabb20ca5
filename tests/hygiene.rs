//! Process-level tests of operational hygiene (issue 14, items 5-7): the real binary over
//! real UDP, asserted on its log and on the processes left. No orphans after kill -9,
//! limits on input, escaped job output.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use starling::{Clock, SystemClock};

mod common;
use common::{BIN, free_port, spawn_peer, spawn_peer_with};

fn starling(args: &[&str]) -> Output {
    let o = Command::new(BIN).args(args).output().unwrap();
    assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
    o
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits (bounded by `within`) until the log at `path` satisfies `done`; returns its text.
fn wait_for_log(path: &Path, within: Duration, done: impl Fn(&str) -> bool) -> (bool, String) {
    let deadline = SystemClock.now().saturating_add(within);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if done(&text) {
            return (true, text);
        }
        if SystemClock.now() >= deadline {
            return (false, text);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn check_refuses_an_overlong_command_and_a_too_short_interval() {
    let dir = tempfile::tempdir().unwrap();
    let long = write(
        dir.path(),
        "long.toml",
        &format!(
            "[[jobs]]\nname = \"huge\"\nschedule = \"@every 1m\"\ncommand = \"echo {}\"\n",
            "x".repeat(1 << 20)
        ),
    );
    let o = starling(&["check", &long]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("job `huge`") && e.contains("`command`") && e.contains("65536 bytes"),
        "{}",
        &e[..e.len().min(400)]
    );
    // Refused at load too, before anything starts.
    let port = free_port().to_string();
    let o = starling(&[
        "run",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--jobs",
        &long,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("job `huge`"));

    let fast = write(
        dir.path(),
        "fast.toml",
        "[[jobs]]\nname = \"fast\"\nschedule = \"@every 1ms\"\ncommand = \"true\"\n",
    );
    let o = starling(&["check", &fast]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("job `fast`") && e.contains("`schedule`") && e.contains("minimum of 1s"),
        "{e}"
    );
}

#[test]
fn a_seed_with_a_bad_port_says_so() {
    for (seed, says) in [
        ("127.0.0.1:99999", "port 99999 is out of range"),
        ("127.0.0.1", "has no port"),
        ("127.0.0.1:0", "port 0"),
    ] {
        let o = starling(&["run", "--seed", seed]);
        assert!(!o.status.success(), "{seed}");
        let e = stderr(&o);
        assert!(e.contains(says) && e.contains("seed"), "{seed}: {e}");
    }
}

#[test]
fn job_output_cannot_forge_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    // A line that looks like the node's own, and a terminal colour code.
    let jobs = write(
        dir.path(),
        "jobs.toml",
        "[[jobs]]\nname = \"forger\"\nschedule = \"@every 1s\"\ncommand = \"printf 'done\\\\n2099-01-01T00:00:00.000000Z  INFO starling: FORGED left the cluster\\\\n\\\\033[31mred'\"\n",
    );
    let log = dir.path().join("n.log");
    let mut p = spawn_peer("n", free_port(), &[], Path::new(&jobs), &log);
    let (ran, _) = wait_for_log(&log, Duration::from_secs(15), |t| t.contains("job output"));
    assert!(p.terminate().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(ran, "{text}");
    for line in text.lines().filter(|l| l.contains("FORGED")) {
        assert!(
            line.contains("job output")
                && line.contains("done\\n2099-01-01")
                && line.contains("\\u{1b}[31mred"),
            "a job wrote a line of the log of its own: {line:?}\n{text}"
        );
    }
    assert!(!text.contains('\x1b'), "{text}");
}

/// Pids of the processes whose environment holds `STARLING_NODE_ID=<node>` and
/// `STARLING_JOB=<job>`: a run's processes and everything they started, `setsid` ones too.
fn processes_of(node: &str, job: &str) -> Vec<u32> {
    let (want_node, want_job) = (
        format!("STARLING_NODE_ID={node}"),
        format!("STARLING_JOB={job}"),
    );
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let mut vars = env.split(|&b| b == 0);
        let vars: Vec<&[u8]> = vars.by_ref().collect();
        if vars.contains(&want_node.as_bytes()) && vars.contains(&want_job.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// Starts a node whose two jobs never end on their own, one of them with a `setsid`
/// child, kills it with SIGKILL once both are running, and asserts that none of their
/// processes outlive it. `config` is the node's config file.
fn kill_9_leaves_no_job_process(node: &str, config: &str) {
    let dir = tempfile::tempdir().unwrap();
    let jobs = write(
        dir.path(),
        "jobs.toml",
        "[[jobs]]\nname = \"sleeper\"\nschedule = \"@every 1s\"\ncommand = \"sleep 1000\"\n\n\
         [[jobs]]\nname = \"detached\"\nschedule = \"@every 1s\"\ncommand = \"setsid sleep 1000 & sleep 1000\"\n",
    );
    let cfg = write(dir.path(), "starling.toml", config);
    let log = dir.path().join("n.log");
    let mut p = spawn_peer_with(
        node,
        free_port(),
        &[],
        Path::new(&jobs),
        &log,
        &["--config", &cfg],
    );
    // `sh` and `sleep`; `sh`, `sleep` and the `setsid sleep`.
    let deadline = SystemClock.now().saturating_add(Duration::from_secs(15));
    while (processes_of(node, "sleeper").len() < 2 || processes_of(node, "detached").len() < 3)
        && SystemClock.now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = (
        processes_of(node, "sleeper"),
        processes_of(node, "detached"),
    );
    assert!(
        before.0.len() >= 2 && before.1.len() >= 3,
        "the jobs did not start: {before:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    p.kill9();
    let deadline = SystemClock.now().saturating_add(Duration::from_secs(5));
    let mut left = before;
    while (!left.0.is_empty() || !left.1.is_empty()) && SystemClock.now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = (
            processes_of(node, "sleeper"),
            processes_of(node, "detached"),
        );
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mode = text
        .lines()
        .find(|l| l.contains("contained by"))
        .unwrap_or("(no containment line)");
    eprintln!("{node}: {mode}");
    for pid in left.0.iter().chain(&left.1) {
        // SAFETY: killing the test's own strays, so a failure leaves nothing behind.
        unsafe {
            libc::kill(*pid as i32, libc::SIGKILL);
        }
    }
    assert!(
        left.0.is_empty() && left.1.is_empty(),
        "job processes outlived the node's kill -9: sleeper {:?}, detached {:?}\n{text}",
        left.0,
        left.1
    );
}

#[test]
fn kill_9_of_a_node_leaves_no_job_process_behind_with_cgroups() {
    let node = format!("orphans-cg-{}", free_port());
    kill_9_leaves_no_job_process(&node, "");
}

#[test]
fn kill_9_of_a_node_leaves_no_job_process_behind_with_process_groups() {
    let node = format!("orphans-pg-{}", free_port());
    kill_9_leaves_no_job_process(&node, "job_cgroups = false\n");
}
