use super::*;

fn ctx(job: &str, slot: i64) -> RunContext {
    RunContext {
        job: JobId::new(job),
        scheduled_at: UnixMillis(slot),
        fire_id: FireId::of(&JobId::new(job), UnixMillis(slot)),
        node_id: NodeId::new("n1"),
        attempt: 1,
        epoch: 2,
    }
}

fn ran(job: &str, slot: i64, out: &str) -> RunRecord {
    RunRecord::ran(
        &ctx(job, slot),
        UnixMillis(slot + 3),
        UnixMillis(slot + 10),
        1,
        Report {
            outcome: Outcome::Success,
            stdout_tail: out.into(),
            stderr_tail: String::new(),
        },
    )
}

#[test]
fn a_run_records_its_slot_epoch_attempts_duration_and_exit_code() {
    let r = RunRecord::ran(
        &ctx("backup", 1_000),
        UnixMillis(1_002),
        UnixMillis(1_502),
        3,
        Report {
            outcome: Outcome::Exited(7),
            stdout_tail: "out\n".into(),
            stderr_tail: "err\n".into(),
        },
    );
    let e = r.entry();
    assert_eq!(e.outcome, RunOutcome::Failed);
    assert_eq!(e.exit_code, Some(7));
    assert_eq!(e.attempts, 3);
    assert_eq!(e.epoch, 2);
    assert_eq!(e.duration_ms, Some(500));
    assert_eq!(e.started_at_ms, Some(1_002));
    assert_eq!(e.slot, "1970-01-01T00:00:01.000Z");
    assert_eq!(
        e.fire_id,
        FireId::of(&JobId::new("backup"), UnixMillis(1_000)).to_string()
    );
    assert_eq!((e.stdout.as_str(), e.stderr.as_str()), ("out\n", "err\n"));
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["outcome"], "failed");
    let back: RunEntry = serde_json::from_value(json).unwrap();
    assert_eq!(back, e);
}

#[test]
fn the_oldest_runs_go_first_past_the_count_bound() {
    let h = History::new(
        NodeId::new("n1"),
        HistoryLimits {
            max_runs: 3,
            max_bytes: 1 << 20,
        },
    );
    for s in 1..=5 {
        h.record(ran("a", s * 1000, ""));
    }
    let slots: Vec<i64> = h.query(None, 10).iter().map(|r| r.slot.0).collect();
    assert_eq!(slots, vec![5000, 4000, 3000]);
}

#[test]
fn the_oldest_runs_go_first_past_the_byte_bound_and_the_count_follows() {
    let one = ran("a", 0, &"x".repeat(1000)).size();
    let h = History::new(
        NodeId::new("n1"),
        HistoryLimits {
            max_runs: 100,
            max_bytes: one * 2 + one / 2,
        },
    );
    for s in 1..=4 {
        h.record(ran("a", s * 1000, &"x".repeat(1000)));
    }
    assert_eq!(h.len(), 2);
    assert!(h.bytes() <= one * 2 + one / 2);
    assert_eq!(h.bytes(), one * 2);
    // A single record larger than the bound is kept alone rather than dropped unseen.
    h.record(ran("a", 9000, &"y".repeat(one * 3)));
    assert_eq!(h.len(), 1);
}

#[test]
fn zero_bounds_keep_nothing() {
    let h = History::new(
        NodeId::new("n1"),
        HistoryLimits {
            max_runs: 0,
            max_bytes: 1,
        },
    );
    h.record(ran("a", 1000, ""));
    assert!(h.is_empty());
}

#[test]
fn queries_filter_by_job_and_stop_at_the_limit_newest_first() {
    let h = History::new(NodeId::new("n1"), HistoryLimits::default());
    for s in 1..=6 {
        h.record(ran(if s % 2 == 0 { "even" } else { "odd" }, s * 1000, ""));
    }
    let even: Vec<i64> = h.query(Some("even"), 2).iter().map(|r| r.slot.0).collect();
    assert_eq!(even, vec![6000, 4000]);
    assert!(h.query(Some("none"), 10).is_empty());
    assert_eq!(h.query(None, 100).len(), 6);
}

#[test]
fn long_messages_are_cut_at_a_character_boundary() {
    let r = RunRecord::ran(
        &ctx("a", 0),
        UnixMillis(0),
        UnixMillis(1),
        1,
        Outcome::Failed("é".repeat(MAX_MESSAGE_BYTES)).into(),
    );
    let m = r.message.unwrap();
    assert!(m.len() <= MAX_MESSAGE_BYTES && m.len() >= MAX_MESSAGE_BYTES - 1);
    assert!(m.chars().all(|c| c == 'é'));
}

#[test]
fn merging_orders_newest_first_across_nodes_and_keeps_the_limit() {
    let entry = |node: &str, slot: i64| {
        let mut r = ran("a", slot, "");
        r.node = NodeId::new(node);
        r.entry()
    };
    let merged = merge(
        vec![
            vec![entry("b", 3000), entry("b", 1000)],
            vec![entry("a", 3000), entry("a", 2000)],
        ],
        3,
    );
    let got: Vec<(String, i64)> = merged.iter().map(|e| (e.node.clone(), e.slot_ms)).collect();
    assert_eq!(
        got,
        vec![("a".into(), 3000), ("b".into(), 3000), ("a".into(), 2000)]
    );
}

#[test]
fn a_saved_history_comes_back_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let me = NodeId::new("n1");
    let h = History::open(dir.path(), me.clone(), HistoryLimits::default());
    assert!(h.is_empty());
    assert!(!h.save().unwrap(), "nothing changed, nothing written");
    h.record(ran("a", 1000, "hello\n"));
    h.record(RunRecord::not_run(
        &me,
        &JobId::new("b"),
        (UnixMillis(0), UnixMillis(4000), 5),
        RunOutcome::Missed,
        "older than the catch-up window",
    ));
    assert!(h.save().unwrap());
    assert!(!h.save().unwrap());
    let before = h.query(None, 10);
    drop(h);
    let back = History::open(dir.path(), me, HistoryLimits::default());
    assert_eq!(back.query(None, 10), before);
    assert!(!dir.path().join("history.bin.tmp").exists());
}

#[test]
fn a_damaged_file_is_moved_aside_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let me = NodeId::new("n1");
    let h = History::open(dir.path(), me.clone(), HistoryLimits::default());
    h.record(ran("a", 1000, ""));
    h.save().unwrap();
    drop(h);
    let path = dir.path().join(HISTORY_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&path, &bytes).unwrap();

    let h = History::open(dir.path(), me.clone(), HistoryLimits::default());
    assert!(h.is_empty());
    let aside = dir.path().join("history.bin.damaged");
    assert_eq!(
        std::fs::read(&aside).unwrap(),
        bytes,
        "the damaged file is kept as it was"
    );
    h.record(ran("a", 2000, ""));
    h.save().unwrap();
    assert_eq!(std::fs::read(&aside).unwrap(), bytes);

    // Another node's file is not ours either; the first damaged file stays.
    let other = History::open(dir.path(), NodeId::new("n2"), HistoryLimits::default());
    assert!(other.is_empty());
    assert!(dir.path().join("history.bin.damaged.2").exists());
    assert_eq!(std::fs::read(&aside).unwrap(), bytes);
}
