//! Prometheus metrics (`GET /metrics`, text format 0.0.4): counters and histograms the
//! node updates as runs end, and values read from the node at scrape time.
//!
//! # Cardinality
//!
//! Only `starling_runs_total` has a per-job label. It holds at most one series per job and
//! outcome seen on this node, for the first [`MAX_JOB_LABELS`] jobs it recorded; runs of
//! later jobs are counted under `job=""` (no job is named so). Series of deleted jobs stay
//! until the node restarts. Everything else is per node: a fixed set of series, whatever
//! the number of jobs.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::core::types::JobId;
use crate::history::RunRecord;
use crate::node::{CatalogStats, Stats};

/// At most this many jobs get series of their own in `starling_runs_total` (see the module
/// docs).
pub const MAX_JOB_LABELS: usize = 1000;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Firing lateness buckets, in seconds: from a millisecond (a slot started on time) to
/// five minutes (a catch-up after a long outage).
const LATENESS_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0,
];
/// Run duration buckets, in seconds: 10 ms to an hour.
const DURATION_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// A job name as a label value (shared, not copied).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct JobLabel(JobId);

impl EncodeLabelValue for JobLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    job: JobLabel,
    outcome: &'static str,
}

/// What the node reads at scrape time (see [`Metrics::render`]).
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// The node's run counters.
    pub stats: Stats,
    /// Members in this node's view (alive, not leaving).
    pub members: usize,
    /// Nodes alive in this node's view, leaving ones included.
    pub alive: usize,
    /// Gossip bytes this node sent and received since it started.
    pub gossip_bytes: (u64, u64),
    /// Runs and bytes in this node's run history.
    pub history: (usize, usize),
    /// Extra gauges (name, help, value), such as the catalog's ([`Scrape::catalog`]).
    pub gauges: Vec<(&'static str, &'static str, i64)>,
    /// Extra counters (name without `_total`, help, value).
    pub counters: Vec<(&'static str, &'static str, u64)>,
}

impl Scrape {
    /// Adds the catalog's sizes, conflicts and hash.
    pub fn catalog(&mut self, c: &CatalogStats) {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        let k = &c.counts;
        self.gauges.extend([
            ("starling_catalog_jobs", "Jobs in the catalog with a definition that runs (API or jobs file), paused or not", n(k.jobs)),
            ("starling_catalog_paused_jobs", "Of those, paused", n(k.paused)),
            ("starling_catalog_api_definitions", "Live API definitions (each a versioned register)", n(k.api)),
            ("starling_catalog_tombstones", "Deleted API definitions still remembered (until their lifetime ends)", n(k.tombstones)),
            ("starling_catalog_file_definitions", "Jobs-file definitions, summed over the nodes", n(k.file_entries)),
            ("starling_catalog_requests", "Run-now and cancel requests and their claims", n(k.requests)),
            ("starling_catalog_conflicts", "Current conflicts: jobs files that disagree, API definitions a file shadows", n(k.conflicts)),
            ("starling_catalog_registers", "Versioned catalog registers of every kind (API definitions, tombstones, pauses, requests)", n(k.registers)),
            ("starling_catalog_newest_version_ms", "Time (Unix ms) of the newest version in the catalog: equal on nodes that hold the same catalog", k.newest_version_ms),
            ("starling_catalog_published_registers", "Catalog registers this node publishes in its gossip state", n(c.held)),
            // The same value on every node that holds the same catalog: compare across nodes.
            ("starling_catalog_hash", "Hash of the catalog (equal on nodes holding the same catalog), as a signed 64-bit integer", c.hash as i64),
        ]);
        self.counters.extend([
            (
                "starling_catalog_conflicts_detected",
                "Conflicts that appeared since the node started",
                c.conflicts_detected,
            ),
            (
                "starling_catalog_values_refused",
                "Catalog values from gossip that did not decode or were refused",
                c.refused,
            ),
            (
                "starling_catalog_adopted",
                "Registers this node began publishing for a node that stopped",
                c.adopted,
            ),
        ]);
    }
}

/// A node's metrics. Cheap to update from many tasks at once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    /// Jobs that have series of their own in `runs`.
    labelled: Mutex<HashSet<JobId>>,
    lateness: Histogram,
    duration: Histogram,
    scrape: Arc<Mutex<Scrape>>,
    /// One render at a time: each sets `scrape`, then encodes it.
    render: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The metrics of a node that has run nothing yet.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "starling_runs",
            "Slots that ended on this node, by job and outcome (ok, failed, timed_out, cancelled, skipped_by_overlap, skipped_by_misfire_policy, missed, abandoned); job=\"\" counts jobs past the first 1000",
            runs.clone(),
        );
        let lateness = Histogram::new(LATENESS_BUCKETS);
        registry.register_with_unit(
            "starling_firing_lateness",
            "Time from a slot's scheduled time to its first attempt's start on this node",
            Unit::Seconds,
            lateness.clone(),
        );
        let duration = Histogram::new(DURATION_BUCKETS);
        registry.register_with_unit(
            "starling_run_duration",
            "Time from a run's first attempt's start to its last attempt's end (retries included)",
            Unit::Seconds,
            duration.clone(),
        );
        let scrape = Arc::new(Mutex::new(Scrape::default()));
        registry.register_collector(Box::new(Scraped(scrape.clone())));
        Metrics {
            registry,
            runs,
            labelled: Mutex::default(),
            lateness,
            duration,
            scrape,
            render: Mutex::new(()),
        }
    }

    /// A run's first attempt started `late_ms` after its slot.
    pub fn started(&self, late_ms: i64) {
        self.lateness.observe(late_ms.max(0) as f64 / 1000.0);
    }

    /// A history entry was recorded: counts it by job and outcome, and its duration.
    pub fn ended(&self, record: &RunRecord) {
        let labels = RunLabels {
            job: JobLabel(record.job.clone()),
            outcome: record.outcome.as_str(),
        };
        match self.runs.get(&labels) {
            Some(c) => {
                c.inc_by(record.slots);
            }
            None => {
                let labels = if self.may_label(&record.job) {
                    labels
                } else {
                    RunLabels {
                        job: JobLabel(JobId::new("")),
                        ..labels
                    }
                };
                self.runs.get_or_create(&labels).inc_by(record.slots);
            }
        }
        if let Some(ms) = record.duration_ms {
            self.duration.observe(ms as f64 / 1000.0);
        }
    }

    /// Whether `job` has, or may now get, series of its own.
    fn may_label(&self, job: &JobId) -> bool {
        let mut labelled = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        if labelled.contains(job) {
            return true;
        }
        if labelled.len() >= MAX_JOB_LABELS {
            return false;
        }
        labelled.insert(job.clone());
        true
    }

    /// The text exposition, with `scrape`'s values.
    pub fn render(&self, scrape: Scrape) -> String {
        let _one = self.render.lock().unwrap_or_else(|e| e.into_inner());
        *self.scrape.lock().unwrap_or_else(|e| e.into_inner()) = scrape;
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The scrape-time values, as a collector of the registry.
#[derive(Debug)]
struct Scraped(Arc<Mutex<Scrape>>);

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, unit, c.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Scraped {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let st = &s.stats;
        let counters: [(&str, &str, u64); 12] = [
            ("starling_slots_fired", "Slots this node started", st.fired),
            (
                "starling_slots_fired_late",
                "Slots this node started late (catch-up runs)",
                st.fired_late,
            ),
            (
                "starling_runs_failed",
                "Runs that failed after all retries (failed, timed out or panicked)",
                st.failed,
            ),
            (
                "starling_slots_missed",
                "Slots that will not run: older than the catch-up window when found",
                st.missed,
            ),
            (
                "starling_slots_skipped_by_misfire_policy",
                "Late slots dropped by the job's misfire policy (once, skip)",
                st.skipped,
            ),
            (
                "starling_slots_skipped_by_overlap",
                "Slots skipped because the job's previous run was still running (overlap = forbid), or replaced before they started",
                st.overlap_skipped,
            ),
            (
                "starling_runs_replaced",
                "Runs cancelled by a newer slot of their job (overlap = replace)",
                st.replaced,
            ),
            (
                "starling_runs_abandoned",
                "Quorum mode: runs not started because the quorum was lost first",
                st.abandoned,
            ),
            (
                "starling_runs_repaired",
                "Quorum mode: abandoned runs run late because the majority side had not run them",
                st.repaired,
            ),
            (
                "starling_duplicates_detected",
                "Slots this node ran that it learned another node ran too (a partition, a stall)",
                st.duplicates_detected,
            ),
            (
                "starling_ownership_changes",
                "Jobs whose owner changed in this node's view, summed over membership changes",
                st.ownership_changes,
            ),
            (
                "starling_slots_unplaceable",
                "Slots of jobs no live member could own (their constraints matched nobody's tags), counted by the node that would own each job without them",
                st.unplaceable_slots,
            ),
        ];
        for (name, help, value) in counters {
            counter(&mut e, name, help, None, value)?;
        }
        counter(
            &mut e,
            "starling_gossip_sent",
            "Gossip bytes this node sent",
            Some(&Unit::Bytes),
            s.gossip_bytes.0,
        )?;
        counter(
            &mut e,
            "starling_gossip_received",
            "Gossip bytes this node received",
            Some(&Unit::Bytes),
            s.gossip_bytes.1,
        )?;
        let as_i64 = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(
            &mut e,
            "starling_members",
            "Members in this node's view: alive and not leaving",
            as_i64(s.members),
        )?;
        gauge(
            &mut e,
            "starling_alive_nodes",
            "Nodes alive in this node's view, leaving ones included",
            as_i64(s.alive),
        )?;
        gauge(
            &mut e,
            "starling_jobs_owned",
            "Jobs this node owns in its view",
            i64::try_from(st.jobs_owned).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut e,
            "starling_jobs_unplaceable",
            "Jobs no live member may own in this node's view: their constraints match nobody's tags",
            i64::try_from(st.unplaceable_jobs).unwrap_or(i64::MAX),
        )?;
        gauge(
            &mut e,
            "starling_clock_out_of_bound",
            "1 while this node's clock is off the median of the cluster's clocks by more than max_clock_offset: it owns no job then",
            i64::from(st.clock_out_of_bound),
        )?;
        if let Some(ms) = st.clock_offset_ms {
            // Seconds, as Prometheus wants: a float.
            let g = ConstGauge::new(ms as f64 / 1000.0);
            g.encode(e.encode_descriptor(
                "starling_clock_offset_seconds",
                "This node's clock minus the median of the cluster's clocks, estimated from gossip round trips",
                None,
                g.metric_type(),
            )?)?;
        }
        gauge(
            &mut e,
            "starling_history_runs",
            "Entries in this node's run history",
            as_i64(s.history.0),
        )?;
        gauge(
            &mut e,
            "starling_history_bytes",
            "Bytes of this node's run history, as counted against its bound",
            as_i64(s.history.1),
        )?;
        for (name, help, value) in &s.gauges {
            gauge(&mut e, name, help, *value)?;
        }
        for (name, help, value) in &s.counters {
            counter(&mut e, name, help, None, *value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
