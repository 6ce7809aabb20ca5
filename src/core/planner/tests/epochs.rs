//! Epochs, abandoned runs and their repair, overlap skips and quorum mode.

use super::*;

fn epochs(actions: &[Action]) -> Vec<(i64, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Fire { slot, epoch, .. } => Some((slot.0, *epoch)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_epoch_grows_with_every_ownership_change_and_stays_while_the_owner_does() {
    let job = job_owned_by("a", &["a", "b"]);
    let id = JobId::new(&job);
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
        .unwrap();
    poll_all(&mut p, UnixMillis(2_000));
    let first: Vec<Action> = p.drain().collect();
    assert_eq!(epochs(&first), [(0, 1), (1_000, 1), (2_000, 1)]);
    // b joins and is the runner-up: a keeps the job (after the handoff delay), same epoch.
    p.set_view(UnixMillis(2_100), View::of(ids(&["a", "b"])));
    poll_all(&mut p, UnixMillis(3_000));
    assert_eq!(epochs(&p.drain().collect::<Vec<_>>()), [(3_000, 1)]);
    // A partition: b ran 4..=6 under epoch 2 while a also ran 4 and 5.
    poll_all(&mut p, UnixMillis(5_000));
    assert_eq!(
        epochs(&p.drain().collect::<Vec<_>>()),
        [(4_000, 1), (5_000, 1)]
    );
    p.observe_record(
        UnixMillis(6_100),
        &id,
        FireRecord {
            slot: UnixMillis(6_000),
            epoch: 2,
            first: UnixMillis(4_000),
            follows: None,
        },
        &NodeId::new("b"),
    );
    let dup: Vec<Action> = p.drain().collect();
    assert_eq!(
        dup,
        [Action::Duplicate {
            job: id.clone(),
            other: NodeId::new("b"),
            first: UnixMillis(4_000),
            last: UnixMillis(5_000),
            count: 2,
        }],
        "both ran 4 and 5"
    );
    // Seeing the same record again reports nothing new.
    p.observe_record(
        UnixMillis(6_200),
        &id,
        FireRecord {
            slot: UnixMillis(6_000),
            epoch: 2,
            first: UnixMillis(4_000),
            follows: None,
        },
        &NodeId::new("b"),
    );
    assert_eq!(p.drain().count(), 0);
    // a goes on past b's record under an epoch above b's: a stale b is fenced off.
    poll_all(&mut p, UnixMillis(7_000));
    assert_eq!(epochs(&p.drain().collect::<Vec<_>>()), [(7_000, 3)]);
}

#[test]
fn an_abandoned_run_is_retracted_and_not_reported_as_a_duplicate() {
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    let id = JobId::new("j");
    p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    poll_all(&mut p, UnixMillis(3_000));
    p.drain().count();
    // The run of slot 3 was never started (quorum lost before its record went out).
    let r = p.abandon(&id, UnixMillis(3_000)).unwrap();
    assert_eq!(
        (r.slot, r.first),
        (UnixMillis(2_999), UnixMillis(0)),
        "the corrected record ends before the abandoned slot"
    );
    // Slot 2 was abandoned too (it had not started either): the stretch ends before it.
    let r = p.abandon(&id, UnixMillis(2_000)).unwrap();
    assert_eq!(r.slot, UnixMillis(1_999));
    assert_eq!(p.abandon(&id, UnixMillis(3_000)), None, "already retracted");
    // The majority side ran slots 2 and 3: not duplicates. Slot 1, which both ran, is.
    p.observe_record(
        UnixMillis(3_500),
        &id,
        FireRecord {
            slot: UnixMillis(3_000),
            epoch: 2,
            first: UnixMillis(1_000),
            follows: None,
        },
        &NodeId::new("b"),
    );
    let dups: Vec<Action> = p
        .drain()
        .filter(|a| matches!(a, Action::Duplicate { .. }))
        .collect();
    assert_eq!(
        dups,
        [Action::Duplicate {
            job: id,
            other: NodeId::new("b"),
            first: UnixMillis(1_000),
            last: UnixMillis(1_000),
            count: 1,
        }]
    );
}

/// Fires slots 1..=3 of `j` (`misfire`) on a single-node planner `a`, then abandons
/// slots 2 and 3 (quorum lost before a quorum held their records).
fn abandoned_2_and_3(misfire: Misfire) -> Planner {
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    let id = JobId::new("j");
    p.add_job(UnixMillis(0), spec("j", "@every 1s", misfire))
        .unwrap();
    poll_all(&mut p, UnixMillis(3_000));
    p.drain().count();
    p.abandon(&id, UnixMillis(3_000));
    p.abandon(&id, UnixMillis(2_000));
    p
}

/// A record of `b`'s epoch 2, which began after `follows_slot` of node `follows_node`.
fn taker_record(slot: i64, first: i64, follows_slot: i64, follows_node: &str) -> FireRecord {
    FireRecord {
        slot: UnixMillis(slot),
        epoch: 2,
        first: UnixMillis(first),
        follows: Some(Follows {
            slot: UnixMillis(follows_slot),
            node: crate::core::owner::node_key(follows_node),
        }),
    }
}

/// Node `b`'s record of job `j` reaches the planner at `at`.
fn from_b(p: &mut Planner, at: UnixMillis, record: FireRecord) {
    p.observe_record(at, &JobId::new("j"), record, &NodeId::new("b"));
}

fn fires_of(p: &mut Planner) -> Vec<(i64, u64, bool)> {
    p.drain()
        .filter_map(|a| match a {
            Action::Fire {
                slot,
                epoch,
                repair,
                ..
            } => Some((slot.0, epoch, repair)),
            _ => None,
        })
        .collect()
}

#[test]
fn abandoned_runs_whose_records_the_taker_followed_run_late_exactly_once() {
    let mut p = abandoned_2_and_3(Misfire::All);
    // A record of another epoch that began elsewhere says nothing about them.
    from_b(
        &mut p,
        UnixMillis(9_000),
        taker_record(8_000, 4_000, 3_000, "c"),
    );
    assert_eq!(fires_of(&mut p), []);
    // b's epoch began right after a's record of slot 3: b skipped 2 and 3 because of
    // it, so nobody ran them. They run now, under the epoch they were fired with.
    from_b(
        &mut p,
        UnixMillis(9_000),
        taker_record(8_000, 4_000, 3_000, "a"),
    );
    assert_eq!(fires_of(&mut p), [(2_000, 1, true), (3_000, 1, true)]);
    // Once only.
    from_b(
        &mut p,
        UnixMillis(9_500),
        taker_record(9_000, 4_000, 3_000, "a"),
    );
    assert_eq!(fires_of(&mut p), []);
}

#[test]
fn abandoned_runs_the_taker_ran_itself_are_not_repaired() {
    let mut p = abandoned_2_and_3(Misfire::All);
    // b's epoch began after a's record of slot 1 (a's records of 2 and 3 never reached
    // it): b ran 2 and 3.
    from_b(
        &mut p,
        UnixMillis(9_000),
        taker_record(8_000, 2_000, 1_000, "a"),
    );
    assert_eq!(fires_of(&mut p), []);
    // Only slot 2's record reached it: b ran 3, and 2 is repaired.
    let mut p = abandoned_2_and_3(Misfire::All);
    from_b(
        &mut p,
        UnixMillis(9_000),
        taker_record(8_000, 3_000, 2_000, "a"),
    );
    assert_eq!(fires_of(&mut p), [(2_000, 1, true)]);
}

#[test]
fn repairs_follow_the_misfire_policy_and_the_catch_up_window() {
    let id = JobId::new("j");
    let mut p = abandoned_2_and_3(Misfire::Once);
    from_b(
        &mut p,
        UnixMillis(9_000),
        taker_record(8_000, 4_000, 3_000, "a"),
    );
    assert_eq!(
        fires_of(&mut p),
        [(3_000, 1, true)],
        "once: the latest only"
    );
    let mut p = abandoned_2_and_3(Misfire::Skip);
    from_b(
        &mut p,
        UnixMillis(9_000),
        taker_record(8_000, 4_000, 3_000, "a"),
    );
    let actions: Vec<Action> = p.drain().collect();
    assert!(
        actions.contains(&Action::Missed {
            job: id.clone(),
            first: UnixMillis(2_000),
            last: UnixMillis(3_000),
            count: 2,
            policy: true,
        }),
        "{actions:?}"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::Fire { .. })));
    // Heard of long after the catch-up window: missed, not run.
    let mut p = abandoned_2_and_3(Misfire::All);
    let late = UnixMillis(3_000).saturating_add(Duration::from_secs(3_600));
    from_b(&mut p, late, taker_record(8_000, 4_000, 3_000, "a"));
    let actions: Vec<Action> = p.drain().collect();
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Missed {
                count: 2,
                policy: false,
                ..
            }
        )),
        "{actions:?}"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::Fire { .. })));
}

#[test]
fn an_epoch_follows_the_one_node_whose_record_placed_the_cursor() {
    let mut s = Seen::default();
    assert_eq!(s.follows(), None);
    s.record(UnixMillis(5_000), 1, Some(7), None);
    assert_eq!(
        s.follows(),
        Some(Follows {
            slot: UnixMillis(5_000),
            node: 7
        })
    );
    s.record(UnixMillis(4_000), 1, Some(8), None);
    assert_eq!(
        s.follows().map(|f| f.node),
        Some(7),
        "a lower record changes nothing"
    );
    s.record(UnixMillis(5_000), 2, Some(8), None);
    assert_eq!(
        s.follows().map(|f| f.node),
        Some(0),
        "two nodes at the same slot: nobody"
    );
    s.record(UnixMillis(6_000), 2, Some(8), None);
    assert_eq!(s.follows().map(|f| f.node), Some(8));
    s.record(UnixMillis(6_000), 2, None, None);
    assert_eq!(s.follows(), None, "our own record placed it");
}

#[test]
fn a_slot_skipped_by_the_overlap_policy_is_not_counted_as_a_duplicate() {
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    let id = JobId::new("j");
    p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    poll_all(&mut p, UnixMillis(1_000));
    p.drain().count();
    // Slot 2 came due while slot 1 still ran: skipped (forbid). Slot 3 ran.
    poll_all(&mut p, UnixMillis(2_000));
    p.drain().count();
    let corrected = p.skipped_by_overlap(&id, UnixMillis(2_000));
    assert_eq!(corrected.map(|r| r.slot), Some(UnixMillis(1_999)));
    poll_all(&mut p, UnixMillis(3_000));
    p.drain().count();
    // Another node ran slots 2 and 3: only 3 is a duplicate.
    p.observe_record(
        UnixMillis(3_500),
        &id,
        FireRecord {
            slot: UnixMillis(3_000),
            epoch: 2,
            first: UnixMillis(2_000),
            follows: None,
        },
        &NodeId::new("b"),
    );
    let counts: Vec<(i64, i64, u64)> = p
        .drain()
        .filter_map(|a| match a {
            Action::Duplicate {
                first, last, count, ..
            } => Some((first.0, last.0, count)),
            _ => None,
        })
        .collect();
    assert_eq!(counts, [(3_000, 3_000, 1)]);
}

#[test]
fn a_skipped_slot_before_slots_that_ran_leaves_the_record_alone() {
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a"])));
    let id = JobId::new("j");
    p.add_job(UnixMillis(0), spec("j", "@every 1s", Misfire::All))
        .unwrap();
    // Slots 1 to 3 fired in one burst; 2 was skipped, 3 ran. A corrected record ending
    // before 2 would tell the next owner that 3 never ran.
    poll_all(&mut p, UnixMillis(3_000));
    p.drain().count();
    assert_eq!(p.skipped_by_overlap(&id, UnixMillis(2_000)), None);
    assert_eq!(p.cursor(&id), Some(UnixMillis(3_000)));
}

#[test]
fn quorum_mode_fires_nothing_in_a_minority_and_resumes_after_the_handoff_delay() {
    let mut c = cfg();
    c.min_members = 2;
    c.dead_takeover_delay = Duration::from_millis(700);
    let job = job_owned_by("a", &["a", "b", "c"]);
    let mut p = Planner::new(NodeId::new("a"), c, UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a", "b", "c"])));
    p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
        .unwrap();
    poll_all(&mut p, UnixMillis(1_000));
    assert_eq!(fired(&mut p), [(job.clone(), 0), (job.clone(), 1_000)]);
    // Cut off from b and c: no quorum, nothing fires.
    p.set_view(UnixMillis(1_500), View::of(ids(&["a"])));
    assert!(!p.has_quorum());
    poll_all(&mut p, UnixMillis(4_000));
    assert_eq!(fired(&mut p), []);
    // Healed, and b's record shows the majority ran 2 and 3: a resumes after the
    // handoff delay (500 ms) and runs only what nobody ran.
    p.set_view(UnixMillis(4_100), View::of(ids(&["a", "b", "c"])));
    p.observe_record(
        UnixMillis(4_150),
        &JobId::new(&job),
        FireRecord {
            slot: UnixMillis(3_000),
            epoch: 2,
            first: UnixMillis(2_000),
            follows: None,
        },
        &NodeId::new("b"),
    );
    poll_all(&mut p, UnixMillis(4_500));
    assert_eq!(fired(&mut p), []);
    poll_all(&mut p, UnixMillis(4_600));
    assert_eq!(fired(&mut p), [(job.clone(), 4_000)]);
}

#[test]
fn in_quorum_mode_a_vanished_owners_jobs_move_after_the_takeover_delay() {
    let mut c = cfg();
    c.min_members = 2;
    c.dead_takeover_delay = Duration::from_millis(700);
    // A job b owns, and a takes over when b is gone.
    let job = (0..)
        .map(|i| format!("job-{i}"))
        .find(|j| {
            let id = JobId::new(j);
            crate::core::owner::owner(&id, &ids(&["a", "b", "c"]))
                .unwrap()
                .as_str()
                == "b"
                && crate::core::owner::owner(&id, &ids(&["a", "c"]))
                    .unwrap()
                    .as_str()
                    == "a"
        })
        .unwrap();
    let mut p = Planner::new(NodeId::new("a"), c, UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a", "b", "c"])));
    p.add_job(UnixMillis(0), spec(&job, "@every 1s", Misfire::All))
        .unwrap();
    // b vanishes (not leaving: gone from the alive set too).
    p.set_view(UnixMillis(1_200), View::of(ids(&["a", "c"])));
    assert_eq!(p.owner_of(&JobId::new(&job)), Some(NodeId::new("a")));
    // Its slots 0 and 1 never ran: caught up once the takeover delay is over.
    assert_eq!(p.next_deadline(), Some(UnixMillis(1_900)));
    assert!(!p.fires(&JobId::new(&job), UnixMillis(1_800)));
    assert!(p.fires(&JobId::new(&job), UnixMillis(1_900)));
}
