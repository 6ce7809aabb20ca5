//! Suspension over a stall (issue 14): nothing fires or moves while the node doubts its
//! view; ownership comes from the view at the resume; runs held over the stall are settled
//! against the records.

use super::*;

const J: &str = "j";

/// Planner `a` in view {a, b} with `j` (every second) and, when `also_b`, a job of b's.
fn two_nodes(also_b: Option<&str>) -> Planner {
    let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
    p.set_view(UnixMillis(0), View::of(ids(&["a", "b"])));
    p.add_job(UnixMillis(0), spec(J, "@every 1s", Misfire::All))
        .unwrap();
    if let Some(b_job) = also_b {
        p.add_job(UnixMillis(0), spec(b_job, "@every 1s", Misfire::All))
            .unwrap();
    }
    p
}

/// `j`, owned by `a` when the members are a and b (its name is fixed, so check it).
fn check_a_owns_j() {
    assert_eq!(
        crate::core::owner::owner(&JobId::new(J), &ids(&["a", "b"])).map(NodeId::as_str),
        Some("a"),
        "the tests below assume a owns `j` among a and b"
    );
}

fn fired_with_epochs(p: &mut Planner) -> Vec<(String, i64, u64)> {
    p.drain()
        .filter_map(|a| match a {
            Action::Fire {
                job, slot, epoch, ..
            } => Some((job.to_string(), slot.0, epoch)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_suspended_planner_fires_nothing_and_takes_nothing_over() {
    check_a_owns_j();
    let b_job = job_owned_by("b", &["a", "b"]);
    let mut p = two_nodes(Some(&b_job));
    poll_all(&mut p, UnixMillis(2_000));
    assert_eq!(
        fired(&mut p),
        [(J.into(), 0), (J.into(), 1_000), (J.into(), 2_000)]
    );
    p.suspend();
    assert!(p.is_suspended());
    // Woken from a stop, it finds b silent: alone, it would own everything.
    p.set_view(UnixMillis(17_000), View::of(ids(&["a"])));
    for t in (3_000..20_000).step_by(500) {
        poll_all(&mut p, UnixMillis(t));
    }
    assert_eq!(fired(&mut p), []);
    assert_eq!(p.next_deadline(), Some(UnixMillis(i64::MAX)));
    // b is back before the node resumes: b's job was never this node's.
    p.set_view(UnixMillis(19_000), View::of(ids(&["a", "b"])));
    // Meanwhile b ran `j` up to slot 18 (it took it over while a was stopped).
    p.observe_record(
        UnixMillis(19_000),
        &JobId::new(J),
        FireRecord::single(UnixMillis(18_000), 2),
        &NodeId::new("b"),
    );
    p.resume(UnixMillis(20_000), UnixMillis(20_000));
    assert!(!p.is_suspended());
    poll_all(&mut p, UnixMillis(20_000));
    // Only the slots nobody ran: 19 and 20, under an epoch above b's.
    assert_eq!(
        fired_with_epochs(&mut p),
        [(J.into(), 19_000, 3), (J.into(), 20_000, 3)]
    );
}

#[test]
fn ownership_comes_from_the_view_at_the_resume() {
    check_a_owns_j();
    let b_job = job_owned_by("b", &["a", "b"]);
    let mut p = two_nodes(Some(&b_job));
    poll_all(&mut p, UnixMillis(1_000));
    p.drain().count();
    p.suspend();
    // b really is gone when the node resumes: its job moves here then, not before.
    p.set_view(UnixMillis(5_000), View::of(ids(&["a"])));
    poll_all(&mut p, UnixMillis(5_000));
    assert_eq!(fired(&mut p), []);
    p.resume(UnixMillis(6_000), UnixMillis(6_500));
    poll_all(&mut p, UnixMillis(6_000));
    assert_eq!(fired(&mut p), [], "fires from the time given to resume");
    poll_all(&mut p, UnixMillis(6_500));
    let got = fired(&mut p);
    assert!(got.contains(&(b_job.clone(), 6_000)), "{got:?}");
    assert!(got.contains(&(J.into(), 6_000)), "{got:?}");
}

#[test]
fn a_job_kept_over_a_suspension_keeps_its_epoch() {
    check_a_owns_j();
    let mut p = two_nodes(None);
    poll_all(&mut p, UnixMillis(1_000));
    assert_eq!(
        fired_with_epochs(&mut p),
        [(J.into(), 0, 1), (J.into(), 1_000, 1)]
    );
    p.suspend();
    p.set_view(UnixMillis(3_000), View::of(ids(&["a"])));
    p.set_view(UnixMillis(3_500), View::of(ids(&["a", "b"])));
    p.resume(UnixMillis(4_000), UnixMillis(4_000));
    poll_all(&mut p, UnixMillis(4_000));
    // Nobody else ran it: the stall changed no owner, so no epoch.
    assert_eq!(
        fired_with_epochs(&mut p),
        [
            (J.into(), 2_000, 1),
            (J.into(), 3_000, 1),
            (J.into(), 4_000, 1)
        ]
    );
}

/// Planner `a` fired slots 1 and 2 of `j` (epoch 1), then stalled before they started.
fn held_1_and_2() -> Planner {
    let mut p = two_nodes(None);
    poll_all(&mut p, UnixMillis(2_000));
    p.drain().count();
    p.suspend();
    p
}

#[test]
fn a_held_run_nobody_ran_runs_late_under_its_epoch() {
    check_a_owns_j();
    let mut p = held_1_and_2();
    p.resume(UnixMillis(3_000), UnixMillis(3_000));
    p.drain().count();
    let id = JobId::new(J);
    assert_eq!(
        p.resolve_held(UnixMillis(3_000), &id, UnixMillis(2_000), 1),
        Held::Run
    );
    assert_eq!(fired_with_epochs(&mut p), [(J.into(), 2_000, 1)]);
}

/// b's record of slot 7 s under epoch 2, which began at `first`, reaches a stopped `a` at
/// 8 s; a resumes at 9 s.
fn b_took_over(p: &mut Planner, first: UnixMillis, follows: Option<Follows>) {
    p.observe_record(
        UnixMillis(8_000),
        &JobId::new(J),
        FireRecord {
            slot: UnixMillis(7_000),
            epoch: 2,
            first,
            follows,
        },
        &NodeId::new("b"),
    );
    p.resume(UnixMillis(9_000), UnixMillis(9_000));
    p.drain().count();
}

#[test]
fn a_held_run_another_node_ran_does_not_run_again() {
    check_a_owns_j();
    let mut p = held_1_and_2();
    let id = JobId::new(J);
    // b took `j` over while a was stopped, from slot 1 on.
    b_took_over(&mut p, UnixMillis(1_000), None);
    let held = p.resolve_held(UnixMillis(9_000), &id, UnixMillis(2_000), 1);
    assert!(matches!(held, Held::RanElsewhere(Some(_))), "{held:?}");
    assert_eq!(fired(&mut p), []);
}

#[test]
fn a_held_run_skipped_elsewhere_because_of_its_record_runs_here() {
    check_a_owns_j();
    let mut p = held_1_and_2();
    let id = JobId::new(J);
    // b's epoch began right after a's record of slot 2: b skipped it because of it.
    let follows = Follows {
        slot: UnixMillis(2_000),
        node: crate::core::owner::node_key("a"),
    };
    b_took_over(&mut p, UnixMillis(3_000), Some(follows));
    assert_eq!(
        p.resolve_held(UnixMillis(9_000), &id, UnixMillis(2_000), 1),
        Held::Run
    );
    assert_eq!(fired_with_epochs(&mut p), [(J.into(), 2_000, 1)]);
}

#[test]
fn a_held_run_of_a_job_that_moved_is_given_up() {
    check_a_owns_j();
    let mut p = held_1_and_2();
    let id = JobId::new(J);
    // A member that outranks a for `j` joined meanwhile.
    let winner = (0..)
        .map(|i| format!("z{i}"))
        .find(|n| {
            crate::core::owner::owner(&id, &ids(&["a", "b", n])).map(NodeId::as_str)
                == Some(n.as_str())
        })
        .unwrap();
    p.set_view(UnixMillis(5_000), View::of(ids(&["a", "b", &winner])));
    p.resume(UnixMillis(6_000), UnixMillis(6_000));
    p.drain().count();
    let held = p.resolve_held(UnixMillis(6_000), &id, UnixMillis(2_000), 1);
    assert!(matches!(held, Held::Abandoned(Some(_))), "{held:?}");
    assert_eq!(fired(&mut p), []);
}

#[test]
fn a_held_run_follows_the_misfire_policy() {
    check_a_owns_j();
    let id = JobId::new(J);
    for (misfire, at, expect_run) in [
        (Misfire::All, 9_000, true),
        (Misfire::Skip, 9_000, false),
        // 1.5 s: not late yet.
        (Misfire::Skip, 3_000, true),
        (Misfire::Once, 9_000, false),
        (Misfire::All, 70_000, false),
    ] {
        let mut p = Planner::new(NodeId::new("a"), cfg(), UnixMillis(0));
        p.set_view(UnixMillis(0), View::of(ids(&["a", "b"])));
        p.add_job(UnixMillis(0), spec(J, "@every 1s", misfire))
            .unwrap();
        poll_all(&mut p, UnixMillis(2_000));
        p.drain().count();
        p.suspend();
        p.resume(UnixMillis(at), UnixMillis(at));
        p.drain().count();
        let held = p.resolve_held(UnixMillis(at), &id, UnixMillis(2_000), 1);
        assert_eq!(
            held == Held::Run,
            expect_run,
            "{misfire:?} at {at}: {held:?}"
        );
    }
}
