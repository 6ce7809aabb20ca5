//! The simulated workload: jobs with mixed schedules, policies and timezones.

use std::collections::BTreeMap;

use std::sync::Arc;

use starling::core::http::{HttpSpec, RawHttp};
use starling::core::placement::Constraints;
use starling::{JobSpec, Misfire, Overlap, RawJob};

use crate::rng::SimRng;
use crate::world::EPOCH;

/// `m` jobs: every second to hourly, cron and intervals, a few one-shots inside the run,
/// some in New York and Berlin time (the run starts a minute before New York's spring
/// DST change), with all three misfire policies and all three overlap policies: even jobs
/// `allow`, odd ones the default `forbid`, and a few that run longer than their interval
/// (see [`long_runs`]) with `forbid` and `replace`.
pub fn jobs(m: usize, duration_ms: i64, rng: &mut SimRng) -> Vec<JobSpec> {
    (0..m)
        .map(|i| {
            let name = format!("job-{i:03}");
            let (schedule, tz, misfire) = match i % 10 {
                0..=2 => ("@every 1s".to_string(), "UTC", Misfire::All),
                3 => ("@every 2s".to_string(), "UTC", Misfire::All),
                4 => ("*/5 * * * * *".to_string(), "UTC", Misfire::All),
                5 => (
                    "*/10 * * * * *".to_string(),
                    "America/New_York",
                    Misfire::All,
                ),
                6 => ("0 * * * * *".to_string(), "Europe/Berlin", Misfire::All),
                7 => ("@every 30s".to_string(), "UTC", Misfire::Once),
                8 => ("*/3 * * * * *".to_string(), "UTC", Misfire::Skip),
                _ if i % 20 == 9 => {
                    let at = EPOCH.0 + rng.range(5_000, (duration_ms - 15_000).max(5_000));
                    let t = chrono::DateTime::from_timestamp_millis(at).expect("in range");
                    (format!("@at {}", t.to_rfc3339()), "UTC", Misfire::All)
                }
                _ => ("@every 2s".to_string(), "UTC", Misfire::All),
            };
            let mut spec = JobSpec::parse(&name, &schedule).expect("workload schedules are valid");
            spec.timezone = tz.parse().expect("valid timezone");
            spec.schedule = starling::Schedule::parse(&schedule, spec.timezone).expect("valid");
            spec.misfire = misfire;
            spec.overlap = match i % 20 {
                3 => Overlap::Replace,
                19 => Overlap::Forbid,
                _ if i % 2 == 0 => Overlap::Allow,
                _ => Overlap::Forbid,
            };
            spec
        })
        .collect()
}

/// Jobs whose runs outlast their interval, and how long their runs take (ms): `job-..3`
/// and `job-..19` (mod 20) run every 2 s for 3 s and 3.5 s, so `replace` cancels every
/// run and `forbid` skips every other slot.
pub fn long_runs(jobs: &[JobSpec]) -> BTreeMap<String, u64> {
    jobs.iter()
        .enumerate()
        .filter_map(|(i, j)| match i % 20 {
            3 => Some((j.name.to_string(), 3_000)),
            19 => Some((j.name.to_string(), 3_500)),
            _ => None,
        })
        .collect()
}

/// The URL of the simulated endpoint HTTP jobs call; no packet leaves the process (the
/// recording executor counts the requests by idempotency key).
pub const ENDPOINT: &str = "http://endpoint.sim/hook";

/// The `placement` scenario's changes to the workload (issue 18): one job in five is
/// constrained to a zone (`zone = a` or `b`), and one in four is an HTTP job calling
/// [`ENDPOINT`].
pub fn place(jobs: &mut [JobSpec]) {
    let http: Arc<HttpSpec> = Arc::new(
        RawHttp {
            url: Some(ENDPOINT.into()),
            method: Some("POST".into()),
            ..RawHttp::default()
        }
        .check()
        .expect("a valid request"),
    );
    for (i, job) in jobs.iter_mut().enumerate() {
        if i % 5 == 1 {
            let zone = crate::scenario::ZONES[(i / 5) % crate::scenario::ZONES.len()];
            job.constraints = Constraints::new([("zone".to_string(), zone.to_string())].into())
                .expect("a valid constraint");
        }
        if i % 4 == 2 {
            job.exec.http = Some(http.clone());
        }
    }
}

/// The `pipeline` scenario's dependent jobs (issue 18), after the workload's: for every
/// 10th job from `job-..3` (every 2 s; one in two of them is a `replace` job whose runs
/// are all cancelled, so it never succeeds and its child must never run) a child
/// `<parent>.load`; for every 10th from `job-..7` (every 30 s) a chain `<parent>.load`
/// then `<parent>.report`; and `join`, after `job-000` and `job-001` (every second each).
pub fn pipeline(jobs: &mut Vec<JobSpec>) {
    let after = |name: String, parents: Vec<String>| {
        RawJob {
            name: Some(name),
            after: Some(parents),
            ..RawJob::default()
        }
        .into_spec(1)
        .expect("a valid dependent job")
    };
    let mut extra = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        let parent = j.name.to_string();
        if i % 10 == 3 || i % 10 == 7 {
            extra.push(after(format!("{parent}.load"), vec![parent.clone()]));
        }
        if i % 10 == 7 {
            extra.push(after(
                format!("{parent}.report"),
                vec![format!("{parent}.load")],
            ));
        }
    }
    if jobs.len() >= 2 {
        let parents = vec![jobs[0].name.to_string(), jobs[1].name.to_string()];
        extra.push(after("join".into(), parents));
    }
    jobs.extend(extra);
}

/// Jobs per node of the `load-burst` scenario: all due in the same second, every 20 s.
pub const BURST_JOBS_PER_NODE: usize = 1_000;

/// What a run's start costs its node's processor in `load-burst`, µs: a clone and exec of
/// `sh` took about 1 ms of a loaded 2-core machine, a fork of a node with 10,000 jobs 5 to
/// 50 ms (issue 14, `scripts/burst.sh`).
pub const BURST_START_COST_US: u64 = 2_000;

/// Adds the `load-burst` jobs for `nodes` nodes: `burst-NNNNN`, `@every 20s`.
pub fn burst(jobs: &mut Vec<JobSpec>, nodes: usize) {
    for i in 0..BURST_JOBS_PER_NODE * nodes {
        let mut spec =
            JobSpec::parse(&format!("burst-{i:05}"), "@every 20s").expect("a valid schedule");
        spec.overlap = Overlap::Allow;
        jobs.push(spec);
    }
}
