//! The planner's unit tests: a planner driven by hand, input by input.

use super::*;
use crate::core::job::{ExecSpec, JobSpec};
use crate::core::schedule::Schedule;
use crate::core::types::Follows;

mod epochs;
mod jobset;
mod suspend;

fn spec(name: &str, schedule: &str, misfire: Misfire) -> JobSpec {
    JobSpec {
        name: JobId::new(name),
        schedule: Schedule::parse(schedule, chrono_tz::Tz::UTC).unwrap(),
        schedule_text: schedule.into(),
        timezone: chrono_tz::Tz::UTC,
        dst: Default::default(),
        misfire,
        catch_up_window: Duration::from_secs(60),
        overlap: crate::core::job::Overlap::Forbid,
        exec: ExecSpec::default(),
        constraints: Default::default(),
    }
}

fn cfg() -> PlannerConfig {
    PlannerConfig {
        handoff_delay: Duration::from_millis(500),
        misfire_threshold: Duration::from_millis(1500),
        startup_delay: Duration::ZERO,
        min_members: 0,
        peer_wait: Duration::ZERO,
        dead_takeover_delay: Duration::ZERO,
        // Records a few seconds ahead are the tests' usual inputs; held ones are tested
        // apart.
        max_record_ahead: Duration::from_secs(60),
        broken_ownership_for_tests: false,
    }
}

/// Polls at `now` until nothing more is due, as the runtime's loop does.
fn poll_all(p: &mut Planner, now: UnixMillis) {
    p.poll(now);
    while p.next_deadline().is_some_and(|d| d <= now) {
        p.poll(now);
    }
}

fn fired(p: &mut Planner) -> Vec<(String, i64)> {
    p.drain()
        .filter_map(|a| match a {
            Action::Fire { job, slot, .. } => Some((job.to_string(), slot.0)),
            _ => None,
        })
        .collect()
}

fn ids(names: &[&str]) -> Vec<NodeId> {
    names.iter().map(NodeId::new).collect()
}

/// A job name that `owner` owns among `members`.
fn job_owned_by(owner: &str, members: &[&str]) -> String {
    let m = ids(members);
    (0..)
        .map(|i| format!("job-{i}"))
        .find(|j| {
            crate::core::owner::owner(&JobId::new(j), &m)
                .unwrap()
                .as_str()
                == owner
        })
        .unwrap()
}

#[test]
fn a_sole_member_fires_every_slot_once() {
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    let mut all = Vec::new();
    let mut now = UnixMillis(0);
    while now.0 < 5_000 {
        now = p.next_deadline().unwrap();
        poll_all(&mut p, now);
        all.extend(fired(&mut p));
    }
    let slots: Vec<i64> = all.iter().map(|(_, s)| *s).collect();
    // Slot 0 is inside the registration lookback (startup + handoff delay).
    assert_eq!(slots, [0, 1_000, 2_000, 3_000, 4_000, 5_000]);
}

#[test]
fn nothing_fires_during_the_startup_delay() {
    let c = PlannerConfig {
        startup_delay: Duration::from_millis(2_500),
        ..cfg()
    };
    let mut p = Planner::new(NodeId::new("a"), c, UnixMillis(10_000));
    p.set_view(UnixMillis(10_000), View::of(ids(&["a"])));
    p.add_job(UnixMillis(10_000), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    assert_eq!(p.next_deadline(), Some(UnixMillis(12_500)));
    poll_all(&mut p, UnixMillis(12_000));
    assert!(fired(&mut p).is_empty());
    // At the end of the delay the slots it held back are caught up, from the
    // registration lookback (startup + handoff delay = 3 s) on.
    poll_all(&mut p, UnixMillis(12_500));
    let slots: Vec<i64> = fired(&mut p).into_iter().map(|f| f.1).collect();
    assert_eq!(slots, [8_000, 9_000, 10_000, 11_000, 12_000]);
}

#[test]
fn a_node_expecting_peers_waits_to_hear_one_then_fires_alone_after_the_peer_wait() {
    let c = PlannerConfig {
        startup_delay: Duration::from_millis(1_000),
        peer_wait: Duration::from_millis(5_000),
        ..cfg()
    };
    // Hears a peer at 2 s: fires at once what it owns (nothing held back longer).
    let job = job_owned_by("a", &["a", "b"]);
    let mut p = Planner::new(NodeId::new("a"), c.clone(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
        .unwrap();
    assert_eq!(p.next_deadline(), Some(UnixMillis(5_000)));
    poll_all(&mut p, UnixMillis(1_500));
    assert!(fired(&mut p).is_empty(), "alone inside the peer wait");
    p.set_view(UnixMillis(2_000), View::of(ids(&["a", "b"])));
    // A job it keeps when b appears waits the handoff delay (b may have been running it
    // alone), not the rest of the peer wait; then it catches up.
    assert_eq!(p.next_deadline(), Some(UnixMillis(2_500)));
    poll_all(&mut p, UnixMillis(2_500));
    let slots: Vec<i64> = fired(&mut p).into_iter().map(|f| f.1).collect();
    assert_eq!(slots.last(), Some(&2_000), "{slots:?}");
    // Hears nobody: fires alone once the peer wait is over.
    let mut p = Planner::new(NodeId::new("a"), c, UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    poll_all(&mut p, UnixMillis(4_999));
    assert!(fired(&mut p).is_empty());
    poll_all(&mut p, UnixMillis(5_000));
    let slots: Vec<i64> = fired(&mut p).into_iter().map(|f| f.1).collect();
    assert_eq!(slots.last(), Some(&5_000), "{slots:?}");
}

#[test]
fn a_job_owned_elsewhere_does_not_fire_here() {
    let job = job_owned_by("b", &["a", "b"]);
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a", "b"])));
    p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
        .unwrap();
    assert_eq!(p.next_deadline(), None);
    assert_eq!(p.owner_of(&JobId::new(&job)), Some(NodeId::new("b")));
}

#[test]
fn takeover_never_refires_a_recorded_slot_and_catches_up_a_missed_one() {
    let job = job_owned_by("b", &["a", "b"]);
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a", "b"])));
    p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
        .unwrap();
    // b ran slots 1..=5 and we saw its records.
    for s in 1..=5 {
        p.observe_record(
            UnixMillis(0),
            &JobId::new(&job),
            FireRecord::single(UnixMillis(s * 1_000), 1),
            &NodeId::new("b"),
        );
    }
    // b crashes after starting slot 5; we notice at 7.2 s.
    p.set_view(UnixMillis(7_200), View::of(ids(&["a"])));
    // Won from a dead node: at once.
    assert_eq!(p.next_deadline(), Some(UnixMillis(7_200)));
    poll_all(&mut p, UnixMillis(7_200));
    let actions: Vec<Action> = p.drain().collect();
    let fires: Vec<i64> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Fire { slot, .. } => Some(slot.0),
            _ => None,
        })
        .collect();
    assert_eq!(
        fires,
        [6_000, 7_000],
        "slot 5 was recorded; 6 and 7 were missed"
    );
    // The new owner's epoch is above b's, and its record says where the epoch began.
    assert!(actions.contains(&Action::PublishRecord {
        job: JobId::new(&job),
        record: FireRecord {
            slot: UnixMillis(7_000),
            epoch: 2,
            first: UnixMillis(6_000),
            follows: Some(Follows {
                slot: UnixMillis(5_000),
                node: crate::core::owner::node_key("b"),
            }),
        }
    }));
}

#[test]
fn a_record_arriving_late_still_prevents_a_refire() {
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    p.observe_record(
        UnixMillis(0),
        &JobId::new("j"),
        FireRecord::single(UnixMillis(3_000), 1),
        &NodeId::new("b"),
    );
    assert_eq!(p.next_deadline(), Some(UnixMillis(4_000)));
}

#[test]
fn a_node_restarted_after_a_crash_catches_up_what_nobody_ran_while_it_was_down() {
    // "a" crashed after starting slot 9 and came back at 10.5 s, before anyone noticed;
    // slot 10 ran nowhere. Its old record reaches it through gossip.
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(10_500));
    p.set_view(UnixMillis(10_500), View::of(ids(&["a"])));
    p.add_job(UnixMillis(10_500), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    assert_eq!(p.next_deadline(), Some(UnixMillis(11_000)));
    // Its own record, from its previous generation.
    assert!(p.observe_record(
        UnixMillis(10_500),
        &JobId::new("j"),
        FireRecord::single(UnixMillis(9_000), 1),
        &NodeId::new("a")
    ));
    poll_all(&mut p, UnixMillis(10_600));
    assert_eq!(fired(&mut p), [("j".into(), 10_000)]);
}

#[test]
fn a_new_job_does_not_fire_slots_from_before_it_existed() {
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    p.add_job(UnixMillis(10_500), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    poll_all(&mut p, UnixMillis(10_600));
    assert!(fired(&mut p).is_empty());
    assert_eq!(p.next_deadline(), Some(UnixMillis(11_000)));
}

#[test]
fn an_old_record_from_another_node_does_not_pull_the_cursor_back() {
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(10_500));
    p.set_view(UnixMillis(10_500), View::of(ids(&["a"])));
    p.add_job(UnixMillis(10_500), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    // "b" ran it long ago; its newer records may still be on their way.
    assert!(p.observe_record(
        UnixMillis(10_500),
        &JobId::new("j"),
        FireRecord::single(UnixMillis(2_000), 1),
        &NodeId::new("b")
    ));
    assert_eq!(p.next_deadline(), Some(UnixMillis(11_000)));
    // A newer record is taken, from anyone.
    assert!(p.observe_record(
        UnixMillis(10_500),
        &JobId::new("j"),
        FireRecord::single(UnixMillis(11_000), 1),
        &NodeId::new("b")
    ));
    assert_eq!(p.next_deadline(), Some(UnixMillis(12_000)));
}

#[test]
fn a_restarted_node_honours_newer_records_whatever_order_they_arrive_in() {
    // "a" left after slot 10 and came back at 11.5 s; "b" ran slot 11 meanwhile.
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(11_500));
    p.set_view(UnixMillis(11_500), View::of(ids(&["a"])));
    p.add_job(UnixMillis(11_500), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    let j = JobId::new("j");
    p.observe_record(
        UnixMillis(11_500),
        &j,
        FireRecord::single(UnixMillis(11_000), 1),
        &NodeId::new("b"),
    );
    p.observe_record(
        UnixMillis(11_500),
        &j,
        FireRecord::single(UnixMillis(10_000), 1),
        &NodeId::new("a"),
    );
    assert_eq!(p.cursor(&j), Some(UnixMillis(11_000)));
    assert_eq!(p.next_deadline(), Some(UnixMillis(12_000)));
}

#[test]
fn a_joiner_runs_a_slot_orphaned_while_another_joiner_held_the_job() {
    // Simulator, `join` seed 53: "c" owned the job and stopped when "b" joined at
    // 19.6 s; "b" was still in its startup delay when "a" joined at 20.5 s and won the
    // job. Slot 20 ran nowhere; "a" must run it although it precedes its registration.
    let c = PlannerConfig {
        startup_delay: Duration::from_millis(1_000),
        handoff_delay: Duration::from_millis(800),
        ..cfg()
    };
    let mut p = Planner::new(NodeId::new("a"), c, UnixMillis(20_500));
    p.set_view(UnixMillis(20_500), View::of(ids(&["a"])));
    p.add_job(UnixMillis(20_500), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    p.observe_record(
        UnixMillis(20_600),
        &JobId::new("j"),
        FireRecord::single(UnixMillis(19_000), 1),
        &NodeId::new("c"),
    );
    poll_all(&mut p, UnixMillis(21_500));
    assert_eq!(fired(&mut p), [("j".into(), 20_000), ("j".into(), 21_000)]);
}

#[test]
fn a_record_further_ahead_than_the_bound_holds_no_slot_until_it_is_near() {
    let cfg = || PlannerConfig {
        max_record_ahead: Duration::from_secs(2),
        ..cfg()
    };
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    let j = JobId::new("j");
    // Node b, whose clock was 10 s ahead, ran a slot of then and died (issue 14: records
    // up to 600 s ahead held their jobs that long).
    let ahead = UnixMillis(10_000);
    assert!(!p.observe_record(
        UnixMillis(500),
        &j,
        FireRecord::single(ahead, 1),
        &NodeId::new("b")
    ));
    assert_eq!(p.records_held(), 1);
    poll_all(&mut p, UnixMillis(3_000));
    assert_eq!(
        fired(&mut p),
        [0, 1_000, 2_000, 3_000].map(|s| ("j".to_string(), s))
    );
    poll_all(&mut p, UnixMillis(7_000));
    assert_eq!(fired(&mut p).len(), 4);
    // Once its slot is within the bound, it counts: b did run the slots up to it.
    poll_all(&mut p, UnixMillis(8_000));
    assert_eq!(fired(&mut p), []);
    assert_eq!(p.records_held(), 0);
    poll_all(&mut p, UnixMillis(11_000));
    assert_eq!(fired(&mut p), [("j".into(), 11_000)]);
    // A newer record of the same node replaces one held: its clock was put right.
    let mut q = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    q.set_view(UnixMillis(0), View::of(ids(&["a"])));
    q.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    let b = NodeId::new("b");
    assert!(!q.observe_record(UnixMillis(500), &j, FireRecord::single(ahead, 1), &b));
    assert!(q.observe_record(
        UnixMillis(600),
        &j,
        FireRecord::single(UnixMillis(0), 1),
        &b
    ));
    assert_eq!(q.records_held(), 0);
}

#[test]
fn a_backlog_longer_than_the_miss_count_is_skipped_in_one_go() {
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    // Down for three days: 259,200 slots, far more than the counting cap.
    let now = UnixMillis(3 * 24 * 3_600_000 + 500);
    poll_all(&mut p, now);
    let actions: Vec<Action> = p.drain().collect();
    let missed: Vec<&Action> = actions
        .iter()
        .filter(|a| matches!(a, Action::Missed { policy: false, .. }))
        .collect();
    assert_eq!(missed.len(), 1, "{missed:?}");
    let fires = actions
        .iter()
        .filter(|a| matches!(a, Action::Fire { .. }))
        .count();
    assert_eq!(fires, 60, "the 60 s catch-up window is run");
}

#[test]
fn records_for_unregistered_jobs_apply_when_they_are_added() {
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    p.observe_record(
        UnixMillis(0),
        &JobId::new("j"),
        FireRecord::single(UnixMillis(9_000), 1),
        &NodeId::new("b"),
    );
    p.add_job(UnixMillis(1_000), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    assert_eq!(p.next_deadline(), Some(UnixMillis(10_000)));
}

#[test]
fn ownership_won_from_a_live_node_waits_for_the_handoff_delay() {
    // "a" joins a cluster where "b" owned the job; "a" wins it.
    let job = job_owned_by("a", &["a", "b"]);
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["b"])));
    p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
        .unwrap();
    p.set_view(UnixMillis(1_900), View::of(ids(&["a", "b"])));
    assert_eq!(p.next_deadline(), Some(UnixMillis(2_400)));
    poll_all(&mut p, UnixMillis(2_000));
    assert!(fired(&mut p).is_empty(), "fired during the handoff delay");
    // b's record for slot 2 arrives during the delay.
    p.observe_record(
        UnixMillis(0),
        &JobId::new(&job),
        FireRecord::single(UnixMillis(2_000), 1),
        &NodeId::new("b"),
    );
    poll_all(&mut p, UnixMillis(2_400));
    assert!(fired(&mut p).is_empty());
    assert_eq!(p.next_deadline(), Some(UnixMillis(3_000)));
    poll_all(&mut p, UnixMillis(3_000));
    assert_eq!(fired(&mut p), [(job.clone(), 3_000)]);
}

#[test]
fn a_joiner_waits_the_handoff_delay_for_jobs_a_peer_it_had_not_seen_was_running() {
    // The runtime starts a planner with a view of itself; the peers show up later.
    let job = job_owned_by("a", &["a", "b"]);
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
        .unwrap();
    assert_eq!(p.next_deadline(), Some(UnixMillis(0)));
    // "b" appears at 1.9 s: it may have been running the job without knowing "a".
    p.set_view(UnixMillis(1_900), View::of(ids(&["a", "b"])));
    p.observe_record(
        UnixMillis(1_900),
        &JobId::new(&job),
        FireRecord::single(UnixMillis(1_000), 1),
        &NodeId::new("b"),
    );
    assert_eq!(p.next_deadline(), Some(UnixMillis(2_400)));
    // A member leaving changes nothing for a job that stays ours.
    p.set_view(UnixMillis(5_000), View::of(ids(&["a"])));
    poll_all(&mut p, UnixMillis(5_000));
    assert_eq!(
        fired(&mut p),
        [
            (job.clone(), 2_000),
            (job.clone(), 3_000),
            (job.clone(), 4_000),
            (job, 5_000)
        ]
    );
}

#[test]
fn ownership_won_from_a_leaving_node_waits_for_the_handoff_delay() {
    let job = job_owned_by("b", &["a", "b"]);
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a", "b"])));
    p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
        .unwrap();
    p.observe_record(
        UnixMillis(0),
        &JobId::new(&job),
        FireRecord::single(UnixMillis(1_000), 1),
        &NodeId::new("b"),
    );
    let leaving = View {
        members: ids(&["a"]).into_iter().collect(),
        alive: ids(&["a", "b"]).into_iter().collect(),
        placements: BTreeMap::new(),
    };
    p.set_view(UnixMillis(1_100), leaving);
    assert_eq!(p.next_deadline(), Some(UnixMillis(2_000)));
    poll_all(&mut p, UnixMillis(1_600));
    assert!(fired(&mut p).is_empty());
    poll_all(&mut p, UnixMillis(2_000));
    assert_eq!(fired(&mut p), [(job, 2_000)]);
}

#[test]
fn lost_ownership_stops_at_once() {
    let job = job_owned_by("b", &["a", "b"]);
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
        .unwrap();
    assert!(p.next_deadline().is_some());
    p.set_view(UnixMillis(500), View::of(ids(&["a", "b"])));
    assert_eq!(p.next_deadline(), None);
    poll_all(&mut p, UnixMillis(5_000));
    assert!(fired(&mut p).is_empty());
}

#[test]
fn leaving_stops_everything() {
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    p.leave();
    assert_eq!(p.next_deadline(), None);
    p.set_view(UnixMillis(10), View::of(ids(&["a"])));
    assert_eq!(p.next_deadline(), None);
}

fn takeover_after_gap(misfire: Misfire) -> (Vec<(String, i64)>, Vec<Action>) {
    let job = job_owned_by("b", &["a", "b"]);
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a", "b"])));
    let mut s = spec(&job, "@every 10s", misfire);
    s.catch_up_window = Duration::from_secs(35);
    p.add_job(UnixMillis(0), s).unwrap();
    p.observe_record(
        UnixMillis(0),
        &JobId::new(&job),
        FireRecord::single(UnixMillis(10_000), 1),
        &NodeId::new("b"),
    );
    // b is gone; we notice 100.5 s in. Slots 20..=100 are due; the window reaches
    // back to 65.5 s.
    p.set_view(UnixMillis(100_500), View::of(ids(&["a"])));
    poll_all(&mut p, UnixMillis(100_500));
    let actions: Vec<Action> = p.drain().collect();
    let fires = actions
        .iter()
        .filter_map(|a| match a {
            Action::Fire { job, slot, .. } => Some((job.to_string(), slot.0)),
            _ => None,
        })
        .collect();
    (fires, actions)
}

fn missed(actions: &[Action], policy: bool) -> Option<(i64, i64, u64)> {
    actions.iter().find_map(|a| match a {
        Action::Missed {
            first,
            last,
            count,
            policy: p,
            ..
        } if *p == policy => Some((first.0, last.0, *count)),
        _ => None,
    })
}

#[test]
fn misfire_all_runs_every_slot_inside_the_window_and_reports_older_ones() {
    let (fires, actions) = takeover_after_gap(Misfire::All);
    let slots: Vec<i64> = fires.iter().map(|f| f.1).collect();
    assert_eq!(slots, [70_000, 80_000, 90_000, 100_000]);
    assert_eq!(missed(&actions, false), Some((20_000, 60_000, 5)));
}

#[test]
fn misfire_once_runs_the_latest_slot_only() {
    let (fires, actions) = takeover_after_gap(Misfire::Once);
    let slots: Vec<i64> = fires.iter().map(|f| f.1).collect();
    // 100 s is 0.5 s late: on time. The late ones collapse to 90 s.
    assert_eq!(slots, [90_000, 100_000]);
    assert_eq!(missed(&actions, true), Some((70_000, 80_000, 2)));
}

#[test]
fn misfire_skip_runs_only_on_time_slots() {
    let (fires, actions) = takeover_after_gap(Misfire::Skip);
    let slots: Vec<i64> = fires.iter().map(|f| f.1).collect();
    assert_eq!(slots, [100_000]);
    assert_eq!(missed(&actions, true), Some((70_000, 90_000, 3)));
}

#[test]
fn a_one_shot_fires_once() {
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    p.add_job(
        UnixMillis(0),
        spec("once", "@at 1970-01-01T00:00:03Z", Misfire::All),
    )
    .unwrap();
    poll_all(&mut p, UnixMillis(3_000));
    assert_eq!(fired(&mut p), [("once".into(), 3_000)]);
    assert_eq!(p.next_deadline(), None);
}

#[test]
fn duplicate_jobs_are_rejected_and_removal_stops_firing() {
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    assert_eq!(
        p.add_job(UnixMillis(0), spec("j", "@every 2s", Misfire::All)),
        Err(PlannerError::DuplicateJob(JobId::new("j")))
    );
    assert!(p.remove_job(&JobId::new("j")));
    assert_eq!(p.next_deadline(), None);
    assert_eq!(p.job_count(), 0);
}

#[test]
fn two_planners_with_the_same_view_split_the_jobs_without_overlap() {
    let view = View::of(ids(&["a", "b", "c"]));
    let mut planners: Vec<Planner> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let mut p = Planner::new(NodeId::new(n), cfg(), UnixMillis(0));
            p.set_view(UnixMillis(0), view.clone());
            for j in 0..30 {
                p.add_job(
                    UnixMillis(0),
                    spec(&format!("job-{j}"), "@every 1s", Misfire::All),
                )
                .unwrap();
            }
            p
        })
        .collect();
    let mut runs: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for p in &mut planners {
        poll_all(p, UnixMillis(3_000));
        for f in fired(p) {
            *runs.entry(f).or_default() += 1;
        }
    }
    // Slots 0 (inside the registration lookback), 1, 2 and 3 s.
    assert_eq!(runs.len(), 30 * 4);
    assert!(runs.values().all(|&c| c == 1));
}

#[test]
fn ownership_changes_count_every_job_that_moved_in_each_view_change() {
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    for i in 0..20 {
        p.add_job(
            UnixMillis(0),
            spec(&format!("job-{i}"), "@every 1s", Misfire::All),
        )
        .unwrap();
    }
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    let first = p.ownership_changes();
    let to_b = (0..20)
        .filter(|i| {
            let m = ids(&["a", "b"]);
            crate::core::owner::owner(&JobId::new(format!("job-{i}")), &m)
                .unwrap()
                .as_str()
                == "b"
        })
        .count() as u64;
    assert!(to_b > 0);
    p.set_view(UnixMillis(10), View::of(ids(&["a", "b"])));
    assert_eq!(p.ownership_changes(), first + to_b);
    p.set_view(UnixMillis(20), View::of(ids(&["a"])));
    assert_eq!(p.ownership_changes(), first + 2 * to_b);
}
