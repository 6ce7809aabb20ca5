//! Process-level churn tests: 3 real `starling run` processes gossiping over UDP on
//! 127.0.0.1, real SIGTERMs, and a check of every slot the shell jobs recorded.
//!
//! Each job appends `$STARLING_NODE_ID $STARLING_JOB $STARLING_SCHEDULED_AT_MS` to one file;
//! after a warm-up (all 3 peers see each other) and until shortly before the end, every slot
//! of every job must appear there exactly once. On failure the peers' logs are kept and
//! their paths are printed.

use std::time::Duration;

use starling::UnixMillis;

mod common;
use common::trio::{NAMES, Trio, after, now, owned_by, slot_problems};
use common::{ceil_second, floor_second, read_runs, sleep_until};

const JOBS: usize = 12;

#[test]
fn graceful_leave_of_one_of_three_processes_loses_and_duplicates_no_slot() {
    let started = now();
    let mut c = Trio::start(JOBS, &[]);
    let converged = c.wait_all_three(Duration::from_secs(20), "startup");
    // Startup delay (1 s) and handoffs (0.8 s) are over 2 s after everyone sees everyone.
    let window_start = ceil_second(after(started, 4_000)).max(ceil_second(after(converged, 2_000)));

    // The leaver owns the most jobs, so the leave matters.
    let leaver = (0..3)
        .max_by_key(|&i| owned_by(NAMES[i], JOBS).len())
        .unwrap();
    let moved = owned_by(NAMES[leaver], JOBS);
    sleep_until(UnixMillis(window_start + 3_000));
    // Mid-second, so the SIGTERM does not race a slot.
    sleep_until(UnixMillis(ceil_second(now()) + 500));
    let term_at = now();
    c.leave(leaver);
    let exited_at = now();
    sleep_until(after(exited_at, 7_000));
    // Slots of the last 2 s may still be starting; they are not counted.
    let window_end = floor_second(now()) - 2_000;
    c.stop_all();

    let runs = read_runs(&c.out);
    let mut problems = slot_problems(&c, &runs, window_start, window_end);
    // The leaver fired nothing after the SIGTERM.
    for ((job, slot), nodes) in &runs {
        if *slot > term_at.0 && nodes.iter().any(|n| n == NAMES[leaver]) {
            problems.push(format!(
                "{} ran {job} {} after its SIGTERM at {term_at}",
                NAMES[leaver],
                UnixMillis(*slot)
            ));
        }
    }
    // The survivors ran every one of the leaver's jobs after it was gone.
    for job in &moved {
        let taken: Vec<(i64, &String)> = runs
            .iter()
            .filter(|((j, s), _)| j == job && *s > exited_at.0 && *s <= window_end)
            .flat_map(|((_, s), n)| n.iter().map(move |n| (*s, n)))
            .collect();
        if taken.len() < 3 || taken.iter().any(|(_, n)| n.as_str() == NAMES[leaver]) {
            problems.push(format!(
                "{job} (owned by the leaver {}) after its exit at {exited_at} ran {taken:?}",
                NAMES[leaver]
            ));
        }
    }
    // The survivors saw it leave (status=leaving), not just vanish.
    let announced = format!(r#"leaving=["{}"]"#, NAMES[leaver]);
    if !(0..3)
        .filter(|&i| i != leaver)
        .any(|i| c.log(i).contains(&announced))
    {
        problems.push(format!(
            "no survivor logged {} as leaving ({announced})",
            NAMES[leaver]
        ));
    }
    if !problems.is_empty() {
        let msg = format!(
            "graceful leave of {} (SIGTERM at {term_at}, exited at {exited_at}), window {} ..= {}:\n{}",
            NAMES[leaver],
            UnixMillis(window_start),
            UnixMillis(window_end),
            problems.join("\n")
        );
        c.fail(&msg);
    }
}

#[test]
fn rolling_restart_of_three_processes_loses_and_duplicates_no_slot() {
    let started = now();
    let mut c = Trio::start(JOBS, &[]);
    let converged = c.wait_all_three(Duration::from_secs(20), "startup");
    let window_start = ceil_second(after(started, 4_000)).max(ceil_second(after(converged, 2_000)));
    sleep_until(UnixMillis(window_start + 2_000));

    const DOWN_MS: [u64; 3] = [0, 1_000, 2_500];
    let mut restarted_at = [UnixMillis(0); 3];
    let mut back_at = [UnixMillis(0); 3];
    for i in 0..3 {
        // Mid-second, so the SIGTERM does not race a slot.
        sleep_until(UnixMillis(ceil_second(now()) + 500));
        c.leave(i);
        // Down for a while, a different while for each: the others take its jobs over
        // meanwhile, and still hold its old incarnation's state when it comes back.
        sleep_until(after(now(), DOWN_MS[i]));
        restarted_at[i] = now();
        c.restart(i);
        back_at[i] = c.wait_all_three(
            Duration::from_secs(15),
            &format!("after restarting {}", NAMES[i]),
        );
        // Let the handoff back to it (0.8 s) complete before the next one goes.
        sleep_until(after(back_at[i], 2_000));
    }
    sleep_until(after(now(), 3_000));
    let window_end = floor_second(now()) - 2_000;
    c.stop_all();

    let runs = read_runs(&c.out);
    let mut problems = slot_problems(&c, &runs, window_start, window_end);
    // Every node ran its own jobs again after its restart.
    for i in 0..3 {
        let mine = owned_by(NAMES[i], JOBS);
        let ran: usize = runs
            .iter()
            .filter(|((j, s), n)| {
                *s > restarted_at[i].0
                    && *s <= window_end
                    && mine.contains(j)
                    && n.iter().any(|n| n == NAMES[i])
            })
            .count();
        if ran == 0 {
            problems.push(format!(
                "{} ran none of its jobs {mine:?} after its restart at {} (back at {})",
                NAMES[i], restarted_at[i], back_at[i]
            ));
        }
    }
    if !problems.is_empty() {
        let times: Vec<String> = (0..3)
            .map(|i| {
                format!(
                    "{} restarted at {}, all three seen at {}",
                    NAMES[i], restarted_at[i], back_at[i]
                )
            })
            .collect();
        let msg = format!(
            "rolling restart ({}), window {} ..= {}:\n{}",
            times.join("; "),
            UnixMillis(window_start),
            UnixMillis(window_end),
            problems.join("\n")
        );
        c.fail(&msg);
    }
}
