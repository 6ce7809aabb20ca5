//! A registered job's definition changed, removed or added back while the node runs.

use super::*;

/// Drives the planner from `from` to `until`; returns the slots fired.
fn run_until(p: &mut Planner, from: i64, until: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut now = UnixMillis(from);
    while let Some(d) = p.next_deadline() {
        if d.0 > until {
            break;
        }
        now = d.max(now);
        poll_all(p, now);
        out.extend(fired(p).into_iter().map(|(_, s)| s));
    }
    out
}

fn solo() -> Planner {
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    p
}

#[test]
fn a_changed_command_keeps_the_cursor_and_every_slot_runs_once() {
    let mut p = solo();
    p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    let before = run_until(&mut p, 0, 3_000);
    assert_eq!(before, vec![0, 1_000, 2_000, 3_000]);
    let mut changed = spec("j", "@every 1s", Misfire::All);
    changed.exec.command = Some("echo new".into());
    assert!(p.update_job(UnixMillis(3_400), changed));
    assert_eq!(
        p.job(&JobId::new("j")).unwrap().exec.command.as_deref(),
        Some("echo new")
    );
    let after = run_until(&mut p, 3_400, 6_000);
    assert_eq!(
        after,
        vec![4_000, 5_000, 6_000],
        "no slot twice, none missed"
    );
}

#[test]
fn a_new_schedule_starts_after_the_change_with_no_catch_up_and_no_miss() {
    let mut p = solo();
    p.add_job(UnixMillis(0), spec("j", "@every 10s", Misfire::All))
        .unwrap();
    assert_eq!(run_until(&mut p, 0, 10_000), vec![0, 10_000]);
    // At 14.5 s the job becomes every second: 11..14 s are slots of the new schedule
    // from before it existed; they neither run nor count as missed.
    assert!(p.update_job(UnixMillis(14_500), spec("j", "@every 1s", Misfire::All)));
    let mut out = Vec::new();
    let mut now = UnixMillis(14_500);
    poll_all(&mut p, now);
    for a in p.drain() {
        assert!(!matches!(a, Action::Missed { .. }), "{a:?}");
        if let Action::Fire { slot, .. } = a {
            out.push(slot.0);
        }
    }
    while let Some(d) = p.next_deadline() {
        if d.0 > 17_000 {
            break;
        }
        now = d.max(now);
        poll_all(&mut p, now);
        out.extend(fired(&mut p).into_iter().map(|(_, s)| s));
    }
    assert_eq!(out, vec![15_000, 16_000, 17_000]);
}

#[test]
fn a_job_removed_and_added_back_reruns_nothing_and_skips_its_time_away() {
    let mut p = solo();
    p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    assert_eq!(run_until(&mut p, 0, 3_000), vec![0, 1_000, 2_000, 3_000]);
    assert!(p.remove_job(&JobId::new("j")));
    assert!(!p.remove_job(&JobId::new("j")));
    assert_eq!(p.next_deadline(), None);
    // Back within the startup lookback of its last run: 3 s ran already.
    p.add_job(UnixMillis(3_200), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    assert_eq!(run_until(&mut p, 3_200, 5_000), vec![4_000, 5_000]);
    // Away from 5 s to 60 s: the slots of that time are not caught up on its return.
    assert!(p.remove_job(&JobId::new("j")));
    p.add_job(UnixMillis(60_000), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    assert!(p.skip_until(&JobId::new("j"), UnixMillis(60_000)));
    assert_eq!(run_until(&mut p, 60_000, 62_000), vec![61_000, 62_000]);
}

#[test]
fn changing_an_unknown_job_changes_nothing() {
    let mut p = solo();
    assert!(!p.update_job(UnixMillis(0), spec("nope", "@every 1s", Misfire::All)));
    assert!(!p.skip_until(&JobId::new("nope"), UnixMillis(0)));
    assert_eq!(p.job_count(), 0);
}
