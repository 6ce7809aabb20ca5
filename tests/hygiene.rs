//! Process-level tests of operational hygiene (issue 14, items 5-7): the real binary over
//! real UDP, asserted on its log and on the processes left. No orphans after kill -9,
//! limits on input, escaped job output.

use std::path::Path;
use std::time::Duration;

use starling::{Clock, SystemClock};

mod common;
use common::{
    Proc, free_port, processes_of, spawn_peer, spawn_peer_with, starling, stderr, wait_for_log,
    write,
};

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
        e.contains("job `huge`") && e.contains("`command`") && e.contains("8192 bytes"),
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

fn signal(p: &Proc, sig: i32) {
    let pid = p.0.as_ref().expect("running").id();
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// (version, slot) of every run of `job` in the runs file, in the order they ran.
fn runs_of(out: &Path, job: &str) -> Vec<(String, i64)> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[0] == job).then(|| (f[1].to_string(), f[2].parse().unwrap()))
        })
        .collect()
}

fn job(name: &str, version: &str, out: &Path) -> String {
    format!(
        "[[jobs]]\nname = \"{name}\"\nschedule = \"@every 1s\"\ncommand = \"echo {name} {version} $STARLING_SCHEDULED_AT_MS >> {}\"\n\n",
        out.display()
    )
}

#[test]
fn sighup_adds_changes_and_removes_jobs_and_keeps_them_when_the_file_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs.txt");
    let jobs = dir.path().join("jobs.toml");
    std::fs::write(&jobs, job("keep", "v1", &out) + &job("gone", "v1", &out)).unwrap();
    let cfg = write(dir.path(), "starling.toml", "drain_timeout = \"30s\"\n");
    let log = dir.path().join("n.log");
    let mut p = spawn_peer_with(
        "reloader",
        free_port(),
        &[],
        &jobs,
        &log,
        &["--config", &cfg],
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let ran = |job: &str, version: &str| runs_of(&out, job).iter().any(|(v, _)| v == version);
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = SystemClock.now().saturating_add(Duration::from_secs(15));
        while !done() && SystemClock.now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(done(), "{what}\n{}", read_log());
    };
    wait("the first jobs did not run", &|| {
        ran("keep", "v1") && ran("gone", "v1")
    });

    // One job changed, one removed, one added; and config keys live and not.
    std::fs::write(&jobs, job("keep", "v2", &out) + &job("new", "v1", &out)).unwrap();
    std::fs::write(
        &cfg,
        "drain_timeout = \"10s\"\ngossip_interval = \"100ms\"\n",
    )
    .unwrap();
    let reloaded_at = SystemClock.now();
    signal(&p, libc::SIGHUP);
    wait("no reload logged", &|| read_log().contains("jobs reloaded"));
    let text = read_log();
    let line = text.lines().find(|l| l.contains("jobs reloaded")).unwrap();
    assert!(
        line.contains("added new; removed gone; changed keep"),
        "{line}"
    );
    assert!(
        text.lines().any(|l| l.contains("only after a restart")
            && l.contains("gossip_interval")
            && !l.contains("drain_timeout")),
        "{text}"
    );
    wait("the reloaded jobs did not run", &|| {
        ran("keep", "v2") && ran("new", "v1")
    });

    // A bad file: the error names the job, and the jobs stay as they are.
    std::fs::write(
        &jobs,
        job("keep", "v3", &out)
            + "[[jobs]]\nname = \"broken\"\nschedule = \"0 0 25 * * *\"\ncommand = \"true\"\n",
    )
    .unwrap();
    signal(&p, libc::SIGHUP);
    wait("no failed reload logged", &|| {
        read_log().contains("reload failed")
    });
    let failed_at = SystemClock.now();
    let text = read_log();
    let line = text.lines().find(|l| l.contains("reload failed")).unwrap();
    assert!(line.contains("broken") && line.contains("hour"), "{line}");
    wait("the jobs stopped after a bad reload", &|| {
        ["keep", "new"].iter().all(|j| {
            runs_of(&out, j)
                .iter()
                .any(|(_, s)| *s > failed_at.0 + 1_000)
        })
    });
    assert!(p.terminate().success());

    let keep = runs_of(&out, "keep");
    assert!(
        keep.iter().all(|(v, _)| v != "v3"),
        "the bad file's version ran"
    );
    // No slot twice and none missed across the change (the slots are whole seconds).
    let mut slots: Vec<i64> = keep.iter().map(|(_, s)| *s).collect();
    slots.sort_unstable();
    let expected: Vec<i64> = (slots[0]..=*slots.last().unwrap()).step_by(1_000).collect();
    assert_eq!(slots, expected, "keep: {keep:?}");
    // v1 before the change, v2 after it.
    let first_v2 = keep.iter().position(|(v, _)| v == "v2").unwrap();
    assert!(keep[..first_v2].iter().all(|(v, _)| v == "v1"));
    assert!(keep[first_v2..].iter().all(|(v, _)| v == "v2"));
    // The removed job stopped; the added one started after the reload.
    assert!(
        runs_of(&out, "gone")
            .iter()
            .all(|(_, s)| *s <= reloaded_at.0 + 1_000),
        "{:?}",
        runs_of(&out, "gone")
    );
    assert!(
        runs_of(&out, "new")
            .iter()
            .all(|(_, s)| *s > reloaded_at.0 - 1_000)
    );
    // The counters come after the runs ended and the node left.
    let text = read_log();
    let left = text.find("left the cluster").expect("left");
    let counters = text.find("run counters of this node").expect("counters");
    assert!(counters > left, "{text}");
}

#[test]
fn a_second_sigterm_during_the_leave_exits_at_once() {
    let node = format!("impatient-{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let jobs = write(
        dir.path(),
        "jobs.toml",
        "[[jobs]]\nname = \"long\"\nschedule = \"@every 1s\"\ncommand = \"sleep 1000\"\n",
    );
    let log = dir.path().join("n.log");
    let mut p = spawn_peer(&node, free_port(), &[], Path::new(&jobs), &log);
    let (running, _) = wait_for_log(&log, Duration::from_secs(15), |_| {
        processes_of(&node, "long").len() >= 2
    });
    assert!(running, "{}", std::fs::read_to_string(&log).unwrap());
    signal(&p, libc::SIGTERM);
    // The leave waits up to `drain_timeout` (30 s) for the run.
    let (draining, text) = wait_for_log(&log, Duration::from_secs(10), |t| {
        t.contains("waiting for running jobs")
    });
    assert!(draining, "{text}");
    signal(&p, libc::SIGTERM);
    let child = p.0.as_mut().unwrap();
    let mut status = None;
    for _ in 0..50 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    // Still running, it is killed when `p` drops.
    let status =
        status.unwrap_or_else(|| panic!("still running 5 s after the second SIGTERM\n{text}"));
    p.0 = None;
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{text}");
    assert!(text.contains("second signal during the leave"), "{text}");
    let (gone, _) = wait_for_log(&log, Duration::from_secs(5), |_| {
        processes_of(&node, "long").is_empty()
    });
    assert!(
        gone,
        "the run outlived the forced exit: {:?}",
        processes_of(&node, "long")
    );
}

#[tokio::test]
async fn replace_jobs_checks_the_whole_set_first_and_leaves_handler_jobs_alone() {
    use starling::{
        HandlerError, JobId, JobSpec, JobsChange, JobsError, Node, NodeConfig, RunContext,
    };
    let shell = |name: &str| {
        let mut j = JobSpec::parse(name, "@every 1h").unwrap();
        j.exec.command = Some("true".into());
        j
    };
    let config = NodeConfig::new(
        "replacer",
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    );
    let node = Node::builder(config)
        .handler_job(
            JobSpec::parse("h", "@every 1h").unwrap(),
            |_c: RunContext| async move { Ok::<(), HandlerError>(()) },
        )
        .unwrap()
        .job(shell("s"))
        .unwrap()
        .start()
        .await
        .unwrap();
    let id = |n: &str| JobId::new(n);
    assert_eq!(
        node.replace_jobs(vec![shell("s"), shell("h")]).await,
        Err(JobsError::HandlerJob(id("h")))
    );
    assert_eq!(
        node.replace_jobs(vec![shell("t"), shell("t")]).await,
        Err(JobsError::Duplicate(id("t")))
    );
    assert_eq!(
        node.replace_jobs(vec![shell("t"), JobSpec::parse("u", "@every 1h").unwrap()])
            .await,
        Err(JobsError::NothingToRun(id("u")))
    );
    // Nothing changed by the refused sets: `s` is still there to remove, `t` never came.
    let mut slower = shell("s");
    slower.schedule_text = "@every 2h".into();
    slower.schedule = starling::Schedule::parse("@every 2h", chrono_tz::Tz::UTC).unwrap();
    assert_eq!(
        node.replace_jobs(vec![slower, shell("t")]).await,
        Ok(JobsChange {
            added: vec![id("t")],
            removed: vec![],
            changed: vec![id("s")]
        })
    );
    assert_eq!(
        node.replace_jobs(vec![]).await,
        Ok(JobsChange {
            added: vec![],
            removed: vec![id("s"), id("t")],
            changed: vec![]
        })
    );
    // The handler job stays through it all.
    assert_eq!(node.replace_jobs(vec![]).await, Ok(JobsChange::default()));
    node.shutdown().await;
}

/// A seed that no packet can be sent to (a broadcast address: every send fails) makes
/// chitchat warn on every gossip round, and a flood of garbage datagrams hits the node
/// meanwhile. Each is logged once, the rest counted, and every line of the log is one
/// event (chitchat's warning carries an error chain with line breaks).
#[test]
fn repeated_warnings_are_logged_once_and_counted() {
    const SENT: usize = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let jobs = write(
        dir.path(),
        "jobs.toml",
        "[[jobs]]\nname = \"quiet\"\nschedule = \"@every 1h\"\ncommand = \"true\"\n",
    );
    let log = dir.path().join("n.log");
    let port = free_port();
    let spawned = SystemClock.now();
    let mut p = spawn_peer_with(
        "flooded",
        port,
        &[],
        Path::new(&jobs),
        &log,
        &["--seed", "255.255.255.255:7946"],
    );
    let (started, text) = wait_for_log(&log, Duration::from_secs(10), |t| {
        t.contains("node started")
    });
    assert!(started, "{text}");
    // Datagrams that are not gossip packets: arbitrary bytes from a fixed sequence.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..SENT {
        let mut datagram = vec![0u8; 1 + (x % 200) as usize];
        for b in &mut datagram {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let _ = sock.send_to(&datagram, ("127.0.0.1", port));
    }
    // Gossip rounds go on: 5 a second, each failing to reach the seed.
    std::thread::sleep(Duration::from_secs(3));
    assert!(p.terminate().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let count = |what: &str| {
        text.lines()
            .filter(|l| l.contains(what) && !l.contains("repeated log lines"))
            .count()
    };
    // One line per 10 s window. The node first probes its seeds for its id (5 s when
    // none answers, see `cluster::identity`), so the run can span two windows; the line
    // that opens a window carries the count of the one before (`suppressed=`).
    let windows = (SystemClock.now().millis_since(spawned) / 10_000) as usize + 1;
    let lines = count("Failed to gossip with seed node");
    assert!(
        (1..=windows).contains(&lines),
        "{lines} lines in {windows} window(s): {text}"
    );
    let counted: usize = text
        .lines()
        .filter(|l| {
            l.contains("chitchat::server")
                && (l.contains("repeated log lines suppressed")
                    || l.contains("Failed to gossip with seed node"))
        })
        .filter_map(|l| {
            let n = l
                .rsplit(" suppressed=")
                .next()
                .filter(|_| l.contains(" suppressed="))?;
            n.split_whitespace().next()?.parse::<usize>().ok()
        })
        .sum();
    assert!(
        counted >= 5,
        "the failed sends were not counted: {counted}\n{text}"
    );
    // The flood: the gossip transport's drop warnings are limited too (one per kind).
    let garbage = count("dropped a gossip packet") + count("invalid-chitchat-payload");
    assert!(
        (1..=3).contains(&garbage),
        "{garbage} lines about garbage:\n{text}"
    );
    for line in text.lines() {
        assert!(
            line.starts_with("20") && line.contains('Z'),
            "a log line that is not an event of its own: {line:?}"
        );
    }
}
