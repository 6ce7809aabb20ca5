//! Process-level fault tests (issue 14): real `starling run` processes gossiping over UDP
//! on 127.0.0.1, put through what real machines do to them, and checked on the runs their
//! shell jobs recorded: every slot of every job in the window exactly once.

use std::time::Duration;

use starling::UnixMillis;

mod common;
use common::trio::{NAMES, Trio, after, now, owned_by, slot_problems};
use common::{ceil_second, floor_second, read_runs, sleep_until};

const JOBS: usize = 8;

/// Stops the peer that owns the most jobs with SIGSTOP for 15 s (a VM pause, swap, a
/// stopped container), then lets it go on: it must notice, and neither run a slot its
/// peers ran meanwhile nor lose one.
fn a_15_s_sigstop_runs_no_slot_twice_and_misses_none(extra: &[&str]) {
    let started = now();
    let mut c = Trio::start(JOBS, extra);
    let converged = c.wait_all_three(Duration::from_secs(20), "startup");
    let window_start = ceil_second(after(started, 4_000)).max(ceil_second(after(converged, 2_000)));
    sleep_until(UnixMillis(window_start + 2_000));
    let victim = (0..3)
        .max_by_key(|&i| owned_by(NAMES[i], JOBS).len())
        .unwrap();
    c.peers[victim].signal(libc::SIGSTOP);
    let stopped_at = now();
    sleep_until(after(stopped_at, 15_000));
    c.peers[victim].signal(libc::SIGCONT);
    let resumed_at = now();
    sleep_until(after(resumed_at, 8_000));
    // Slots of the last 2 s may still be starting; they are not counted.
    let window_end = floor_second(now()) - 2_000;
    c.stop_all();

    let runs = read_runs(&c.out);
    let mut problems = slot_problems(&c, &runs, window_start, window_end);
    let log = c.log(victim);
    for needle in ["this node stalled", "resumed after a stall"] {
        if !log.contains(needle) {
            problems.push(format!("{}'s log lacks {needle:?}", NAMES[victim]));
        }
    }
    let what = format!(
        "{} stopped at {stopped_at}, resumed at {resumed_at} ({extra:?})",
        NAMES[victim]
    );
    c.fail_on(&what, window_start, window_end, &problems);
}

#[test]
fn a_15_s_sigstop_runs_no_slot_twice_and_misses_none_by_default() {
    a_15_s_sigstop_runs_no_slot_twice_and_misses_none(&[]);
}

#[test]
fn a_15_s_sigstop_runs_no_slot_twice_and_misses_none_in_quorum_mode() {
    a_15_s_sigstop_runs_no_slot_twice_and_misses_none(&["--expected-size", "3"]);
}

/// A second process started with the id of a live node (a copy-pasted config, a restart
/// script run twice) exits with an error naming the holder's address, announces nothing,
/// and no slot runs twice or goes missing; no peer stops counting the holder as a member.
#[test]
fn a_duplicate_node_id_exits_non_zero_and_disturbs_nothing() {
    let started = now();
    let mut c = Trio::start(JOBS, &[]);
    let converged = c.wait_all_three(Duration::from_secs(20), "startup");
    let window_start = ceil_second(after(started, 4_000)).max(ceil_second(after(converged, 2_000)));
    sleep_until(UnixMillis(window_start + 2_000));
    let held = 1;
    let changes = |c: &Trio| -> Vec<usize> {
        (0..3)
            .map(|i| c.log(i).matches("membership changed").count())
            .collect()
    };
    let before = changes(&c);
    let log = c.dir.path().join("impostor.log");
    let seeds = [c.ports[0], c.ports[2]];
    let mut impostor = common::spawn_peer(NAMES[held], common::free_port(), &seeds, &c.jobs, &log);
    let spawned = now();
    let mut status = None;
    // Bounded: 10 s in 100 ms steps.
    for _ in 0..100 {
        if let Some(s) = impostor.0.as_mut().unwrap().try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let exited = now();
    // Killed (and reaped) here should it still run: forgetting the child would let it
    // outlive the test, running the held node's jobs.
    drop(impostor);
    sleep_until(after(exited, 4_000));
    let window_end = floor_second(now()) - 2_000;
    let after_it = changes(&c);
    c.stop_all();

    let mut problems = Vec::new();
    match status {
        None => problems.push(format!("the impostor still ran 10 s after {spawned}")),
        Some(s) if s.success() => problems.push(format!("the impostor exited with {s}")),
        Some(_) => {}
    }
    let said = common::trio::read(&log);
    let holder = format!("127.0.0.1:{}", c.ports[held]);
    if !(said.contains("already held by a live process") && said.contains(&holder)) {
        problems.push(format!(
            "the impostor's error does not name {holder}:\n{said}"
        ));
    }
    let runs = read_runs(&c.out);
    problems.extend(slot_problems(&c, &runs, window_start, window_end));
    if after_it != before {
        problems.push(format!(
            "membership changed while the impostor ran (lines per peer: {before:?} before, {after_it:?} after)"
        ));
    }
    if !problems.is_empty() {
        c.fail(&format!(
            "impostor of {} started at {spawned}, exited at {exited}, window {} ..= {}:\n{}",
            NAMES[held],
            UnixMillis(window_start),
            UnixMillis(window_end),
            problems.join("\n")
        ));
    }
}
