use super::*;
use crate::core::types::{FireId, NodeId, UnixMillis};
use crate::exec::{Outcome, RunContext};
use crate::history::RunOutcome;
use crate::node::CatalogStats;

fn record(job: &str, outcome: Outcome, ms: i64) -> RunRecord {
    let ctx = RunContext {
        job: JobId::new(job),
        scheduled_at: UnixMillis(1_000),
        fire_id: FireId::of(&JobId::new(job), UnixMillis(1_000)),
        node_id: NodeId::new("n"),
        attempt: 1,
        epoch: 1,
    };
    RunRecord::ran(
        &ctx,
        UnixMillis(1_000),
        UnixMillis(1_000 + ms),
        1,
        outcome.into(),
    )
}

/// The value of the sample line that starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn runs_are_counted_by_job_and_outcome_with_their_durations() {
    let m = Metrics::new();
    m.ended(&record("backup", Outcome::Success, 1_500));
    m.ended(&record("backup", Outcome::Success, 20));
    m.ended(&record("backup", Outcome::Exited(2), 20));
    m.ended(&RunRecord::not_run(
        &NodeId::new("n"),
        &JobId::new("report"),
        (UnixMillis(0), UnixMillis(9_000), 10),
        RunOutcome::Missed,
        "old",
    ));
    m.started(3);
    m.started(40_000);
    let text = m.render(Scrape::default());
    assert_eq!(
        sample(&text, r#"starling_runs_total{job="backup",outcome="ok"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"starling_runs_total{job="backup",outcome="failed"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"starling_runs_total{job="report",outcome="missed"}"#
        ),
        Some(10.0),
        "a range counts each slot"
    );
    assert_eq!(
        sample(&text, "starling_run_duration_seconds_count"),
        Some(3.0),
        "missed slots have no duration"
    );
    assert_eq!(
        sample(&text, r#"starling_run_duration_seconds_bucket{le="0.05"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "starling_firing_lateness_seconds_count"),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"starling_firing_lateness_seconds_bucket{le="0.005"}"#
        ),
        Some(1.0)
    );
    assert!(
        text.contains("# TYPE starling_runs_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE starling_firing_lateness_seconds histogram"),
        "{text}"
    );
}

#[test]
fn scrape_time_values_are_exposed_as_counters_and_gauges() {
    let m = Metrics::new();
    let scrape = Scrape {
        stats: Stats {
            fired: 7,
            missed: 2,
            overlap_skipped: 3,
            duplicates_detected: 4,
            ownership_changes: 5,
            clock_offset_ms: Some(-2_500),
            clock_out_of_bound: true,
            ..Stats::default()
        },
        members: 3,
        alive: 4,
        gossip_bytes: (1_000, 2_000),
        history: (12, 3_456),
        ..Scrape::default()
    };
    let mut scrape = scrape;
    scrape.catalog(&CatalogStats {
        counts: crate::catalog::CatalogCounts {
            jobs: 9,
            conflicts: 1,
            newest_version_ms: 1_700_000_000_123,
            ..Default::default()
        },
        conflicts_detected: 2,
        hash: u64::MAX,
        ..CatalogStats::default()
    });
    let text = m.render(scrape);
    for (prefix, want) in [
        ("starling_slots_fired_total", 7.0),
        ("starling_slots_missed_total", 2.0),
        ("starling_slots_skipped_by_overlap_total", 3.0),
        ("starling_duplicates_detected_total", 4.0),
        ("starling_ownership_changes_total", 5.0),
        ("starling_gossip_sent_bytes_total", 1_000.0),
        ("starling_gossip_received_bytes_total", 2_000.0),
        ("starling_members", 3.0),
        ("starling_alive_nodes", 4.0),
        ("starling_history_runs", 12.0),
        ("starling_history_bytes", 3_456.0),
        ("starling_catalog_jobs", 9.0),
        ("starling_catalog_conflicts", 1.0),
        ("starling_catalog_conflicts_detected_total", 2.0),
        ("starling_catalog_hash", -1.0),
        ("starling_catalog_newest_version_ms", 1_700_000_000_123.0),
        ("starling_clock_offset_seconds", -2.5),
        ("starling_clock_out_of_bound", 1.0),
    ] {
        assert_eq!(sample(&text, prefix), Some(want), "{prefix} in\n{text}");
    }
}

#[test]
fn jobs_past_the_label_cap_share_one_series_and_names_are_escaped() {
    let m = Metrics::new();
    for i in 0..MAX_JOB_LABELS + 5 {
        m.ended(&record(&format!("job-{i}"), Outcome::Success, 1));
    }
    m.ended(&record("job-0", Outcome::Success, 1));
    let text = m.render(Scrape::default());
    let series = text
        .lines()
        .filter(|l| l.starts_with("starling_runs_total{"))
        .count();
    assert_eq!(series, MAX_JOB_LABELS + 1);
    assert_eq!(
        sample(&text, r#"starling_runs_total{job="",outcome="ok"}"#),
        Some(5.0)
    );
    assert_eq!(
        sample(&text, r#"starling_runs_total{job="job-0",outcome="ok"}"#),
        Some(2.0)
    );

    let m = Metrics::new();
    m.ended(&record(r#"a"b\c"#, Outcome::TimedOut, 1));
    let text = m.render(Scrape::default());
    assert_eq!(
        sample(
            &text,
            r#"starling_runs_total{job="a\"b\\c",outcome="timed_out"}"#
        ),
        Some(1.0),
        "{text}"
    );
}
