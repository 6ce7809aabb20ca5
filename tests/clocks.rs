//! Process-level clock tests (issue 14): three real `starling run` processes on 127.0.0.1,
//! one of them with its wall clock stepped or skewed by libfaketime (Debian `faketime`),
//! checked on the runs their shell jobs recorded. Only the wall clock is faked
//! (`FAKETIME_DONT_FAKE_MONOTONIC`), as an NTP step leaves `CLOCK_MONOTONIC` alone.
//!
//! Without libfaketime the tests say so and pass, unless `STARLING_REQUIRE_FAKETIME=1`
//! (CI installs it and sets that), when they fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use starling::UnixMillis;

mod common;
use common::trio::{
    NAMES, Trio, after, now, owned_by, skipped_behind_a_running_run_line, slot_problems,
};
use common::{ceil_second, floor_second, read_runs, sleep_until};

const JOBS: usize = 8;
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// libfaketime, or `None` after saying why the test does not run.
fn libfaketime(test: &str) -> Option<PathBuf> {
    let path = Path::new(LIBFAKETIME);
    if path.exists() {
        return Some(path.to_path_buf());
    }
    if std::env::var("STARLING_REQUIRE_FAKETIME").is_ok_and(|v| v == "1") {
        panic!(
            "{test}: {LIBFAKETIME} is missing and STARLING_REQUIRE_FAKETIME=1 (apt-get install faketime)"
        );
    }
    eprintln!("{test}: skipped: {LIBFAKETIME} is missing (apt-get install faketime)");
    None
}

/// A trio whose peers all run under libfaketime, peer `i`'s wall clock offset by the
/// number of seconds in `<dir>/clock-<i>` (re-read on every reading), `+0` at first;
/// every job also records the epoch it ran under.
fn faked_trio(lib: &Path, offsets: [&str; 3]) -> (Trio, [PathBuf; 3]) {
    let mut c = Trio::prepare(JOBS, &[]);
    let mut text = String::new();
    for j in 0..JOBS {
        text.push_str(&format!(
            "[[jobs]]\nname = \"job-{j:02}\"\nschedule = \"@every 1s\"\ncommand = \"echo $STARLING_NODE_ID $STARLING_JOB $STARLING_SCHEDULED_AT_MS >> {} && echo $STARLING_JOB $STARLING_NODE_ID $STARLING_EPOCH >> {}\"\n\n",
            c.out.display(),
            epochs_file(&c).display()
        ));
    }
    std::fs::write(&c.jobs, text).unwrap();
    let files = [0, 1, 2].map(|i| c.dir.path().join(format!("clock-{i}")));
    for i in 0..3 {
        std::fs::write(&files[i], offsets[i]).unwrap();
        c.env[i] = vec![
            ("LD_PRELOAD".into(), lib.display().to_string()),
            (
                "FAKETIME_TIMESTAMP_FILE".into(),
                files[i].display().to_string(),
            ),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ];
    }
    c.spawn_all();
    (c, files)
}

fn epochs_file(c: &Trio) -> PathBuf {
    c.dir.path().join("epochs.txt")
}

/// Per (job, node), the epochs its runs carried.
fn read_epochs(c: &Trio) -> BTreeMap<(String, String), std::collections::BTreeSet<u64>> {
    let mut m: BTreeMap<_, std::collections::BTreeSet<u64>> = BTreeMap::new();
    for line in common::trio::read(&epochs_file(c)).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [job, node, epoch] = f[..] {
            m.entry((job.to_string(), node.to_string()))
                .or_default()
                .insert(epoch.parse().unwrap());
        }
    }
    m
}

/// The wall clock of the peer that owns the most jobs is stepped 30 s forward (an NTP
/// step), then 30 s back: it finds itself off its peers' median by more than the bound,
/// owns nothing until it is back, and the others run its slots. No slot runs twice or goes
/// missing, no slot is skipped as overlapped, and the epochs of jobs whose owner never
/// changed stay as they were (issue 14: 11 of 15 slots skipped as "previous run still
/// running", an epoch that rose from 1 to 8).
#[test]
fn a_wall_clock_stepped_30_s_forward_and_back_runs_no_slot_twice_and_misses_none() {
    let test = "clock step";
    let Some(lib) = libfaketime(test) else {
        return;
    };
    let started = now();
    let (mut c, files) = faked_trio(&lib, ["+0", "+0", "+0"]);
    let converged = c.wait_all_three(Duration::from_secs(20), "startup");
    let window_start = ceil_second(after(started, 4_000)).max(ceil_second(after(converged, 2_000)));
    sleep_until(UnixMillis(window_start + 2_000));
    let victim = (0..3)
        .max_by_key(|&i| owned_by(NAMES[i], JOBS).len())
        .unwrap();
    std::fs::write(&files[victim], "+30").unwrap();
    let stepped_at = now();
    sleep_until(after(stepped_at, 6_000));
    std::fs::write(&files[victim], "+0").unwrap();
    let back_at = now();
    sleep_until(after(back_at, 6_000));
    let window_end = floor_second(now()) - 2_000;
    c.stop_all();

    let runs = read_runs(&c.out);
    let mut problems = slot_problems(&c, &runs, window_start, window_end);
    let log = c.log(victim);
    for needle in [
        "the wall clock was stepped",
        "by more than max_clock_offset: it owns no job",
        "within max_clock_offset",
    ] {
        if !log.contains(needle) {
            problems.push(format!("{}'s log lacks {needle:?}", NAMES[victim]));
        }
    }
    // Skips of the window's slots only: before it, a node that has just started may
    // rightly skip a `forbid` slot behind its start-up catch-up (documented; seen here
    // under load at the second after the start, with the window 2 s later).
    let in_window: Vec<String> = (window_start..=window_end)
        .step_by(1000)
        .map(|s| format!(" slot={}", UnixMillis(s)))
        .collect();
    // A skip behind a run that was really still running (it outlasted a second on a loaded
    // machine) is `forbid` doing its job; its slot is excused by slot_problems too.
    for (i, name) in NAMES.iter().enumerate() {
        let log = c.log(i);
        problems.extend(
            log.lines()
                .filter(|l| l.contains("slot skipped"))
                .filter(|l| in_window.iter().any(|s| l.contains(s.as_str())))
                .filter(|l| !skipped_behind_a_running_run_line(&c, &log, l))
                .map(|l| format!("{name}: {l}")),
        );
    }
    // Jobs the other two own with all three members never change owner.
    let epochs = read_epochs(&c);
    for i in (0..3).filter(|&i| i != victim) {
        for job in owned_by(NAMES[i], JOBS) {
            let seen = epochs.get(&(job.clone(), NAMES[i].to_string()));
            if seen.is_some_and(|e| e.len() != 1) {
                problems.push(format!(
                    "{job} on {}: epochs {seen:?}, though its owner never changed",
                    NAMES[i]
                ));
            }
        }
    }
    let what = format!(
        "{} stepped +30 s at {stepped_at}, back at {back_at}",
        NAMES[victim]
    );
    c.fail_on(&what, window_start, window_end, &problems);
}

/// A peer started with its clock ten minutes ahead is never a member: the other two own
/// every job between them and run each slot once; it runs none, and says why.
#[test]
fn a_peer_ten_minutes_ahead_owns_nothing() {
    let test = "clock skew";
    let Some(lib) = libfaketime(test) else {
        return;
    };
    let started = now();
    let (mut c, _files) = faked_trio(&lib, ["+0", "+0", "+600"]);
    let want = r#"members=["a", "b"] leaving=["c"]"#;
    let deadline = after(started, 20_000);
    let converged = loop {
        let seen = (0..2).all(|i| {
            c.log(i)
                .lines()
                .rfind(|l| l.contains("membership changed"))
                .is_some_and(|l| l.contains(want))
        });
        if seen {
            break now();
        }
        if now() >= deadline {
            c.fail("a and b did not see c as out of clock bound within 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let window_start = ceil_second(after(converged, 2_000));
    sleep_until(UnixMillis(window_start + 4_000));
    let window_end = floor_second(now()) - 2_000;
    c.stop_all();
    let runs = read_runs(&c.out);
    let mut problems = Vec::new();
    for j in 0..JOBS {
        let job = format!("job-{j:02}");
        let mut s = window_start;
        while s <= window_end {
            let nodes = runs.get(&(job.clone(), s)).cloned().unwrap_or_default();
            if nodes.len() != 1 || nodes[0] == "c" {
                problems.push(format!("{job} {} ran on {nodes:?}", UnixMillis(s)));
            }
            s += 1_000;
        }
    }
    if runs.values().flatten().any(|n| n == "c") {
        problems.push("c ran slots".into());
    }
    if !c
        .log(2)
        .contains("by more than max_clock_offset: it owns no job")
    {
        problems.push("c's log does not say its clock is out of bound".into());
    }
    c.fail_on("c 10 min ahead", window_start, window_end, &problems);
}
