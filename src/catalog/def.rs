//! A job definition as the catalog carries it: the jobs file's keys in a canonical, typed
//! form, so two spellings of the same job (`timeout = "60s"` and `"1m"`) are the same
//! definition.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::core::http::HttpSpec;
use crate::core::job::{
    DEFAULT_CATCH_UP_WINDOW, ExecSpec, JobError, JobSpec, Misfire, Overlap, RawJob,
};
use crate::core::placement::Constraints;
use crate::core::schedule::{Dst, Schedule, parse_timezone};
use crate::core::types::JobId;

/// One job's definition, without its name (the name is the catalog key).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobDef {
    /// As written: cron (5 or 6 fields), `@every <dur>` or `@at <RFC 3339>`.
    pub schedule: Arc<str>,
    /// IANA timezone of cron schedules; `None` for UTC.
    pub timezone: Option<String>,
    /// What a cron schedule does with local times a DST change skips or repeats.
    pub dst: Dst,
    /// Shell command run by `sh -c`; `None` only for jobs of a node with its own executor
    /// (the simulator) or an in-process handler.
    pub command: Option<Arc<str>>,
    /// Kill the run after this long.
    pub timeout: Option<Duration>,
    /// Extra attempts after a failure.
    pub retries: u32,
    /// What to do with missed slots.
    pub misfire: Misfire,
    /// How far back missed slots are still run.
    pub catch_up_window: Duration,
    /// What to do when a slot comes due while the previous run is still running.
    pub overlap: Overlap,
    /// Tags a node must have to own the job.
    pub constraints: Constraints,
    /// The request of an HTTP job (`kind = "http"`); `None` for shell jobs.
    pub http: Option<Box<HttpSpec>>,
}

impl JobDef {
    /// The canonical definition of a validated job.
    pub fn from_spec(spec: &JobSpec) -> JobDef {
        JobDef {
            schedule: spec.schedule_text.clone(),
            timezone: (spec.timezone != chrono_tz::Tz::UTC).then(|| spec.timezone.name().into()),
            dst: spec.dst,
            command: spec.exec.command.clone(),
            timeout: spec.exec.timeout,
            retries: spec.exec.retries,
            misfire: spec.misfire,
            catch_up_window: spec.catch_up_window,
            overlap: spec.overlap,
            constraints: spec.constraints.clone(),
            http: spec.exec.http.as_deref().cloned().map(Box::new),
        }
    }

    /// Validates a jobs-file entry (or an API body) into its name and definition. Errors
    /// name the job and the key. A definition from outside a file needs a command or a URL:
    /// shell and HTTP jobs are the kinds that can travel to other nodes.
    pub fn from_raw(raw: RawJob) -> Result<(JobId, JobDef), JobError> {
        let spec = raw.into_spec(1)?;
        if spec.exec.command.is_none() && spec.exec.http.is_none() {
            return Err(JobError::Invalid {
                job: spec.name.to_string(),
                key: "command",
                message: "missing (a job defined through the catalog runs a shell command, or sends a request with `kind = \"http\"`)".into(),
            });
        }
        Ok((spec.name.clone(), JobDef::from_spec(&spec)))
    }

    /// The job this definition describes, checked again (a definition from gossip or disk
    /// is input like any other). Errors name the job and the key.
    pub fn to_spec(&self, name: &JobId) -> Result<JobSpec, JobError> {
        let invalid = |key: &'static str, message: String| JobError::Invalid {
            job: name.to_string(),
            key,
            message,
        };
        crate::core::job::validate_job_name(name.as_str()).map_err(|m| invalid("name", m))?;
        let timezone = match &self.timezone {
            Some(tz) => parse_timezone(tz).map_err(|e| invalid("timezone", e.to_string()))?,
            None => chrono_tz::Tz::UTC,
        };
        let schedule = Schedule::parse_with(&self.schedule, timezone, self.dst)
            .map_err(|e| invalid("schedule", format!("`{}`: {e}", self.schedule)))?;
        if let Schedule::After(parents) = &schedule
            && parents.contains(name)
        {
            return Err(invalid("after", format!("cycle {name} -> {name}")));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(invalid("timeout", "must be greater than zero".into()));
        }
        if self.command.as_ref().is_some_and(|c| c.trim().is_empty()) {
            return Err(invalid("command", "is empty".into()));
        }
        let http = match &self.http {
            Some(h) => {
                if self.command.is_some() {
                    return Err(invalid("command", "an HTTP job has no command".into()));
                }
                Some(std::sync::Arc::new(
                    h.recheck().map_err(|(key, e)| invalid(key, e))?,
                ))
            }
            None => None,
        };
        Ok(JobSpec {
            name: name.clone(),
            schedule,
            schedule_text: self.schedule.clone(),
            timezone,
            dst: self.dst,
            misfire: self.misfire,
            catch_up_window: self.catch_up_window,
            overlap: self.overlap,
            exec: ExecSpec {
                command: self.command.clone(),
                timeout: self.timeout,
                retries: self.retries,
                http,
            },
            constraints: Constraints::new(self.constraints.pairs().clone())
                .map_err(|e| invalid("constraints", e))?,
        })
    }

    /// The jobs file's keys for this definition (what `GET /v1/jobs/{name}` shows). Keys
    /// at their default are left out; durations are written like `10m` or `1h 30m`.
    pub fn to_raw(&self, name: &JobId) -> RawJob {
        let duration = |d: Duration| humantime::format_duration(d).to_string();
        RawJob {
            name: Some(name.to_string()),
            schedule: (!self.is_after()).then(|| self.schedule.to_string()),
            after: self
                .parents()
                .map(|p| p.iter().map(|j| j.to_string()).collect()),
            timezone: self.timezone.clone(),
            dst: (self.dst != Dst::default()).then(|| self.dst.to_string()),
            command: self.command.as_deref().map(str::to_string),
            timeout: self.timeout.map(duration),
            retries: (self.retries != 0).then_some(self.retries),
            misfire: (self.misfire != Misfire::default()).then(|| self.misfire.to_string()),
            catch_up_window: (self.catch_up_window != DEFAULT_CATCH_UP_WINDOW)
                .then(|| duration(self.catch_up_window)),
            overlap: (self.overlap != Overlap::default()).then(|| self.overlap.to_string()),
            constraints: (!self.constraints.is_empty()).then(|| self.constraints.pairs().clone()),
            ..self.http_keys()
        }
    }

    /// True for a job that runs after others (`after`) rather than on a schedule.
    pub fn is_after(&self) -> bool {
        self.schedule.starts_with(crate::core::after::AFTER_PREFIX)
    }

    /// The jobs this one runs after; `None` for a job with a schedule of its own.
    pub fn parents(&self) -> Option<Vec<JobId>> {
        // The prefix first: this runs for every job of a big catalog (conflicts, counts).
        if !self.is_after() {
            return None;
        }
        match Schedule::parse(&self.schedule, chrono_tz::Tz::UTC) {
            Ok(Schedule::After(p)) => Some(p.to_vec()),
            _ => None,
        }
    }

    /// The HTTP keys of the jobs file for this definition (none for a shell job).
    fn http_keys(&self) -> RawJob {
        let Some(h) = &self.http else {
            return RawJob::default();
        };
        let raw = h.to_raw();
        RawJob {
            kind: Some("http".into()),
            url: raw.url,
            method: raw.method,
            headers: raw.headers,
            body: raw.body,
            expect_status: raw.expect_status,
            ..RawJob::default()
        }
    }

    /// A stable hash of the definition: two definitions are the same job iff equal.
    pub fn digest(&self) -> u64 {
        xxh3_64(&crate::encoding::encode(self, DEF_DIGEST_VERSION))
    }
}

/// The format version mixed into [`JobDef::digest`].
const DEF_DIGEST_VERSION: u16 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str, schedule: &str) -> RawJob {
        RawJob {
            name: Some(name.into()),
            schedule: Some(schedule.into()),
            command: Some("echo hi".into()),
            ..RawJob::default()
        }
    }

    #[test]
    fn two_spellings_of_one_job_are_one_definition() {
        let (_, a) = JobDef::from_raw(RawJob {
            timeout: Some("60s".into()),
            overlap: Some("forbid".into()),
            ..raw("j", "@every 5s")
        })
        .unwrap();
        let (_, b) = JobDef::from_raw(RawJob {
            timeout: Some("1m".into()),
            timezone: Some("UTC".into()),
            ..raw("j", "@every 5s")
        })
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.digest(), b.digest());
        let (_, c) = JobDef::from_raw(raw("j", "@every 6s")).unwrap();
        assert_ne!(a.digest(), c.digest());
    }

    #[test]
    fn raw_keys_round_trip_through_a_definition() {
        let full = RawJob {
            timezone: Some("Europe/Paris".into()),
            dst: Some("strict".into()),
            timeout: Some("10m".into()),
            retries: Some(2),
            misfire: Some("once".into()),
            catch_up_window: Some("1h 30m".into()),
            overlap: Some("replace".into()),
            constraints: Some(
                [("region".to_string(), "eu".to_string())]
                    .into_iter()
                    .collect(),
            ),
            ..raw("backup", "0 30 2 * * *")
        };
        let (name, def) = JobDef::from_raw(full.clone()).unwrap();
        assert_eq!(def.to_raw(&name), full);
        let spec = def.to_spec(&name).unwrap();
        assert_eq!(JobDef::from_spec(&spec), def);
        let load = RawJob {
            schedule: None,
            after: Some(vec!["extract".into(), "clean".into()]),
            ..raw("load", "")
        };
        let (name, def) = JobDef::from_raw(load.clone()).unwrap();
        assert_eq!(&*def.schedule, "@after clean,extract");
        let sorted = RawJob {
            after: Some(vec!["clean".into(), "extract".into()]),
            ..load
        };
        assert_eq!(def.to_raw(&name), sorted);
        assert_eq!(JobDef::from_spec(&def.to_spec(&name).unwrap()), def);
        let e = def.to_spec(&JobId::new("clean")).unwrap_err().to_string();
        assert_eq!(e, "job `clean`: `after`: cycle clean -> clean");
        let bare = raw("warm", "@every 30s");
        let (name, def) = JobDef::from_raw(bare.clone()).unwrap();
        assert_eq!(def.to_raw(&name), bare, "defaults are left out");
    }

    #[test]
    fn http_keys_round_trip_through_a_definition() {
        let hook = RawJob {
            command: None,
            kind: Some("http".into()),
            url: Some("https://example.com/hook".into()),
            method: Some("POST".into()),
            headers: Some([("x-team".to_string(), "ops".to_string())].into()),
            body: Some("{}".into()),
            expect_status: Some(vec![200, 202]),
            ..raw("hook", "@every 1m")
        };
        let (name, def) = JobDef::from_raw(hook.clone()).unwrap();
        assert_eq!(def.to_raw(&name), hook);
        let spec = def.to_spec(&name).unwrap();
        assert_eq!(JobDef::from_spec(&spec), def);
        let e = JobDef::from_raw(RawJob {
            url: Some("gopher://x".into()),
            ..hook
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("job `hook`: `url`"), "{e}");
    }

    #[test]
    fn errors_name_the_job_and_the_key() {
        let e = JobDef::from_raw(RawJob {
            command: None,
            ..raw("x", "@every 1s")
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("`x`") && e.contains("`command`"), "{e}");
        let e = JobDef::from_raw(raw("x", "61 * * * * *"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`x`") && e.contains("`schedule`"), "{e}");
        let bad = JobDef {
            timezone: Some("Mars/Olympus".into()),
            ..JobDef::from_raw(raw("x", "@every 1s")).unwrap().1
        };
        let e = bad.to_spec(&JobId::new("x")).unwrap_err().to_string();
        assert!(
            e.contains("`timezone`") && e.contains("Mars/Olympus"),
            "{e}"
        );
        let e = JobDef::from_raw(raw("x", "@every 1s"))
            .unwrap()
            .1
            .to_spec(&JobId::new("a b"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`name`"), "{e}");
    }
}
