//! Process-level tests of operational hygiene (issue 14, items 5-7): the real binary over
//! real UDP, asserted on its log. Limits on input, escaped job output.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use starling::{Clock, SystemClock};

mod common;
use common::{BIN, free_port, spawn_peer};

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
