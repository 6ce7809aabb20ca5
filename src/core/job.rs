//! Job specifications and the jobs file (TOML) that declares them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::http::{HttpSpec, RawHttp};
use super::placement::Constraints;
use super::schedule::{Dst, Schedule, parse_duration, parse_timezone};
use super::types::JobId;
use super::types::UnixMillis;

/// Default catch-up window: slots missed by longer than this are skipped and logged.
pub const DEFAULT_CATCH_UP_WINDOW: Duration = Duration::from_secs(5 * 60);

/// What to do with slots that were missed (found late, e.g. after a takeover).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Misfire {
    /// Run every missed slot inside the catch-up window (default).
    #[default]
    All,
    /// Run only the latest missed slot inside the catch-up window.
    Once,
    /// Run no missed slot.
    Skip,
}

impl std::str::FromStr for Misfire {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Misfire::All),
            "once" => Ok(Misfire::Once),
            "skip" => Ok(Misfire::Skip),
            other => Err(format!(
                "`{other}` is not a misfire policy: use `all`, `once` or `skip`"
            )),
        }
    }
}

impl std::fmt::Display for Misfire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Misfire::All => "all",
            Misfire::Once => "once",
            Misfire::Skip => "skip",
        })
    }
}

/// What to do when a slot comes due while the job's previous run is still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Start the new run anyway; runs of the job may overlap.
    Allow,
    /// Skip the new slot (and count it) while a run of the job is still running anywhere
    /// in the cluster, including on a previous owner (default).
    #[default]
    Forbid,
    /// Cancel the running one (wherever it runs) and start the new slot.
    Replace,
}

impl std::str::FromStr for Overlap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(Overlap::Allow),
            "forbid" => Ok(Overlap::Forbid),
            "replace" => Ok(Overlap::Replace),
            other => Err(format!(
                "`{other}` is not an overlap policy: use `allow`, `forbid` or `replace`"
            )),
        }
    }
}

impl std::fmt::Display for Overlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overlap::Allow => "allow",
            Overlap::Forbid => "forbid",
            Overlap::Replace => "replace",
        })
    }
}

/// How a job's slot is executed. Pure data: the executors in `exec` interpret it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ExecSpec {
    /// Shell command run by `sh -c`; `None` for jobs run by an in-process handler.
    pub command: Option<Arc<str>>,
    /// Kill the run (its whole process group) after this long; `None`: no limit.
    pub timeout: Option<Duration>,
    /// Extra attempts after a failed one (0: run once).
    pub retries: u32,
    /// The request an HTTP job (`kind = "http"`) sends; `None` for other kinds.
    pub http: Option<std::sync::Arc<HttpSpec>>,
}

/// One job: a name, a schedule and how late slots are treated.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// Unique name; ownership hashes it.
    pub name: JobId,
    /// When it fires.
    pub schedule: Schedule,
    /// The text `schedule` was parsed from. Jobs with the same text and timezone share one
    /// parsed schedule inside a node, so keep the two in step.
    pub schedule_text: Arc<str>,
    /// The timezone cron expressions are read in.
    pub timezone: Tz,
    /// What a cron schedule does with local times a DST change skips or repeats; part of
    /// `schedule` too, so keep the two in step.
    pub dst: Dst,
    /// What to do with missed slots.
    pub misfire: Misfire,
    /// How far back missed slots are still run.
    pub catch_up_window: Duration,
    /// What to do when a slot comes due while the previous run is still running.
    pub overlap: Overlap,
    /// How to run it.
    pub exec: ExecSpec,
    /// Tags a node must have to own it (none: any node may).
    pub constraints: Constraints,
}

impl JobSpec {
    /// True if `other` defines the same job: same schedule, timezone, policies and way to
    /// run (the name aside). A reloaded jobs file changes only the jobs for which it is
    /// false.
    pub fn same_definition(&self, other: &JobSpec) -> bool {
        self.schedule_text == other.schedule_text
            && self.timezone == other.timezone
            && self.dst == other.dst
            && self.misfire == other.misfire
            && self.catch_up_window == other.catch_up_window
            && self.overlap == other.overlap
            && self.exec == other.exec
            && self.constraints == other.constraints
    }
}

/// Why a job or jobs file was rejected. Every message names the job and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The TOML itself is malformed or has an unknown key.
    #[error("{0}")]
    Toml(String),
    /// A key of one job has a bad value.
    #[error("job `{job}`: `{key}`: {message}")]
    Invalid {
        /// The job's name (or `#N` when the name itself is missing).
        job: String,
        /// The offending key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Two jobs share a name.
    #[error("job `{0}` is declared more than once; job names must be unique")]
    Duplicate(String),
    /// Too many jobs, or a jobs file too large (README, Limits).
    #[error("{0}")]
    TooLarge(String),
}

/// The fields of one `[[jobs]]` entry, as written. Also the body of `PUT /v1/jobs/{name}`,
/// and how the catalog shows a definition (absent keys are not serialized).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    /// Unique name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Cron (5 or 6 fields), `@every <dur>` or `@at <RFC 3339>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Instead of `schedule`: run once after each success of each of these jobs
    /// ([`super::after`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<String>>,
    /// IANA timezone for cron schedules (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// `debian` (default) | `strict`: what a cron schedule does with local times a
    /// daylight-saving change skips or repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// Shell command run by `sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Kill the run after this long, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Extra attempts after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// `all` | `once` | `skip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub misfire: Option<String>,
    /// e.g. `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up_window: Option<String>,
    /// `allow` | `forbid` (default) | `replace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<String>,
    /// Tags a node must have to own the job: `constraints = { region = "eu", gpu = "true" }`
    /// (booleans and integers are taken as their text).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text_map"
    )]
    pub constraints: Option<BTreeMap<String, String>>,
    /// `shell` (default: `command` run by `sh -c`) | `http` (a request to `url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// HTTP jobs: an absolute `http` or `https` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// HTTP jobs: `GET` (default), `POST`, `PUT`, `PATCH`, `DELETE` or `HEAD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// HTTP jobs: extra request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// HTTP jobs: the request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// HTTP jobs: the statuses that count as success (one or a list; default any 2xx).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "one_or_many"
    )]
    pub expect_status: Option<Vec<u16>>,
}

/// A number or a list of numbers (`expect_status = 200` or `[200, 204]`).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u16>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u16),
        Many(Vec<u16>),
    }
    Ok(Some(match OneOrMany::deserialize(d)? {
        OneOrMany::One(n) => vec![n],
        OneOrMany::Many(v) => v,
    }))
}

/// A table whose values are written as strings, booleans or integers, read as their text
/// (`gpu = true` and `gpu = "true"` are the same constraint).
pub(crate) fn text_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Str(String),
        Bool(bool),
        Int(i64),
    }
    let map: BTreeMap<String, Text> = BTreeMap::deserialize(d)?;
    Ok(Some(
        map.into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Text::Str(s) => s,
                    Text::Bool(b) => b.to_string(),
                    Text::Int(i) => i.to_string(),
                };
                (k, v)
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobsFile {
    #[serde(default)]
    jobs: Vec<RawJob>,
}

pub use super::limits::{MAX_COMMAND_BYTES, MIN_EVERY_INTERVAL};

/// Longest accepted job name, in bytes (see [`super::limits`]).
pub const MAX_JOB_NAME: usize = super::limits::MAX_JOB_NAME_BYTES;

impl RawJob {
    /// Validates one entry. `position` (1-based) names jobs without a name.
    pub fn into_spec(self, position: usize) -> Result<JobSpec, JobError> {
        // A name that is not valid is not echoed whole: it may be a megabyte long.
        let label = match &self.name {
            Some(n) if validate_job_name(n).is_ok() => n.clone(),
            _ => format!("#{position}"),
        };
        let invalid = |key: &'static str, message: String| JobError::Invalid {
            job: label.clone(),
            key,
            message,
        };
        self.check_sizes().map_err(|(key, m)| invalid(key, m))?;
        let name = self.name.ok_or_else(|| invalid("name", "missing".into()))?;
        validate_job_name(&name).map_err(|m| invalid("name", m))?;
        let timezone = match &self.timezone {
            Some(tz) => parse_timezone(tz).map_err(|e| invalid("timezone", e.to_string()))?,
            None => Tz::UTC,
        };
        let schedule_text = match (self.schedule, &self.after) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "after",
                    "a job with `after` runs after its parents and has no `schedule` of its own; remove one of the two".into(),
                ));
            }
            (None, Some(parents)) => super::after::schedule_text(
                &super::after::check_parents(&name, parents).map_err(|m| invalid("after", m))?,
            ),
            (Some(s), None) if s.trim_start().starts_with(super::after::AFTER_PREFIX) => {
                return Err(invalid(
                    "schedule",
                    "a job that runs after another is written `after = [\"extract\"]`, without `schedule`".into(),
                ));
            }
            (Some(s), None) => s,
            (None, None) => {
                return Err(invalid(
                    "schedule",
                    "missing (or `after = [..]` for a job that runs after others)".into(),
                ));
            }
        };
        let dst = match &self.dst {
            Some(d) => d.parse().map_err(|e| invalid("dst", e))?,
            None => Dst::default(),
        };
        let schedule = Schedule::parse_with(&schedule_text, timezone, dst)
            .map_err(|e| invalid("schedule", format!("`{schedule_text}`: {e}")))?;
        if let Schedule::Every { interval_ms } = schedule
            && u128::try_from(interval_ms).unwrap_or(0) < MIN_EVERY_INTERVAL.as_millis()
        {
            return Err(invalid(
                "schedule",
                format!(
                    "`{schedule_text}`: the interval is shorter than the minimum of {}",
                    humantime::format_duration(MIN_EVERY_INTERVAL)
                ),
            ));
        }
        let misfire = match &self.misfire {
            Some(m) => m.parse().map_err(|e| invalid("misfire", e))?,
            None => Misfire::default(),
        };
        let catch_up_window = match &self.catch_up_window {
            Some(w) => parse_duration(w).map_err(|e| invalid("catch_up_window", e))?,
            None => DEFAULT_CATCH_UP_WINDOW,
        };
        let timeout = match &self.timeout {
            Some(t) => {
                let d = parse_duration(t).map_err(|e| invalid("timeout", e))?;
                if d.is_zero() {
                    return Err(invalid("timeout", "must be greater than zero".into()));
                }
                Some(d)
            }
            None => None,
        };
        let overlap = match &self.overlap {
            Some(o) => o.parse().map_err(|e| invalid("overlap", e))?,
            None => Overlap::default(),
        };
        if let Some(c) = &self.command {
            if c.trim().is_empty() {
                return Err(invalid("command", "is empty".into()));
            }
        }
        let constraints = match self.constraints {
            Some(c) => Constraints::new(c).map_err(|e| invalid("constraints", e))?,
            None => Constraints::default(),
        };
        let raw_http = RawHttp {
            url: self.url,
            method: self.method,
            headers: self.headers,
            body: self.body,
            expect_status: self.expect_status,
        };
        let http = match self.kind.as_deref() {
            None | Some("shell") => {
                if let Some(key) = raw_http.first_key() {
                    return Err(invalid(
                        key,
                        "is only for HTTP jobs (`kind = \"http\"`)".into(),
                    ));
                }
                None
            }
            Some("http") => {
                if self.command.is_some() {
                    return Err(invalid(
                        "command",
                        "an HTTP job sends a request to `url`; it has no command".into(),
                    ));
                }
                let spec = raw_http.check().map_err(|(key, e)| invalid(key, e))?;
                Some(std::sync::Arc::new(spec))
            }
            Some(other) => {
                return Err(invalid(
                    "kind",
                    format!(
                        "`{}` is not a kind of job: use `shell` or `http`",
                        crate::logs::escape(other)
                    ),
                ));
            }
        };
        Ok(JobSpec {
            name: JobId::new(&name),
            schedule,
            schedule_text: schedule_text.into(),
            timezone,
            dst,
            misfire,
            catch_up_window,
            overlap,
            exec: ExecSpec {
                command: self.command.map(Arc::from),
                timeout,
                retries: self.retries.unwrap_or(0),
                http,
            },
            constraints,
        })
    }
}

impl RawJob {
    /// Refuses any text longer than its bound ([`super::limits`]), before anything parses
    /// it (an error may quote the text) and before it could reach gossip.
    fn check_sizes(&self) -> Result<(), (&'static str, String)> {
        use super::limits::{MAX_FIELD_BYTES, MAX_RETRIES, MAX_SCHEDULE_BYTES};
        let fields = [
            ("schedule", &self.schedule, MAX_SCHEDULE_BYTES, ""),
            ("timezone", &self.timezone, MAX_FIELD_BYTES, ""),
            ("dst", &self.dst, MAX_FIELD_BYTES, ""),
            ("timeout", &self.timeout, MAX_FIELD_BYTES, ""),
            ("misfire", &self.misfire, MAX_FIELD_BYTES, ""),
            (
                "catch_up_window",
                &self.catch_up_window,
                MAX_FIELD_BYTES,
                "",
            ),
            ("overlap", &self.overlap, MAX_FIELD_BYTES, ""),
            (
                "command",
                &self.command,
                MAX_COMMAND_BYTES,
                "; put a long script in a file and run that",
            ),
        ];
        for (key, value, max, hint) in fields {
            if let Some(v) = value
                && v.len() > max
            {
                return Err((
                    key,
                    format!(
                        "is {} bytes long, over the limit of {max} bytes{hint}",
                        v.len()
                    ),
                ));
            }
        }
        if let Some(a) = &self.after
            && a.len() > super::after::MAX_PARENTS
        {
            return Err((
                "after",
                format!(
                    "names {} jobs, more than {}",
                    a.len(),
                    super::after::MAX_PARENTS
                ),
            ));
        }
        if let Some(r) = self.retries
            && r > MAX_RETRIES
        {
            return Err(("retries", format!("{r} is more than {MAX_RETRIES}")));
        }
        Ok(())
    }
}

/// Checks a job name: 1 to [`MAX_JOB_NAME`] bytes of ASCII letters,
/// digits, `-`, `_`, `.` and `:` ([`super::limits::is_job_name_char`]).
pub fn validate_job_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_JOB_NAME {
        return Err(format!(
            "is {} bytes long, longer than {MAX_JOB_NAME} bytes",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|&c| !super::limits::is_job_name_char(c)) {
        return Err(format!(
            "contains {c:?}; use ASCII letters, digits, `-`, `_`, `.`, `:`"
        ));
    }
    Ok(())
}

/// Refuses jobs whose cron schedule has no slot after `now`, such as a year in the past
/// (issue 13). Kept apart from parsing because the core reads no clock.
pub fn check_fires_after(jobs: &[JobSpec], now: UnixMillis) -> Result<(), JobError> {
    for j in jobs {
        j.schedule
            .check_fires_after(now)
            .map_err(|e| JobError::Invalid {
                job: j.name.to_string(),
                key: "schedule",
                message: format!("`{}`: {e}", j.schedule_text),
            })?;
    }
    Ok(())
}

/// Parses a jobs file. Every job must have a command (shell jobs) or a URL (HTTP jobs).
pub fn parse_jobs_toml(text: &str) -> Result<Vec<JobSpec>, JobError> {
    use super::limits::{MAX_JOBS, MAX_JOBS_FILE_BYTES};
    if text.len() > MAX_JOBS_FILE_BYTES {
        return Err(JobError::TooLarge(format!(
            "the jobs file is {} bytes long, over the limit of {MAX_JOBS_FILE_BYTES} bytes",
            text.len()
        )));
    }
    let file: JobsFile = toml::from_str(text).map_err(|e| JobError::Toml(e.to_string()))?;
    if file.jobs.len() > MAX_JOBS {
        return Err(JobError::TooLarge(format!(
            "the jobs file declares {} jobs, over the limit of {MAX_JOBS}",
            file.jobs.len()
        )));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(file.jobs.len());
    for (i, raw) in file.jobs.into_iter().enumerate() {
        let spec = raw.into_spec(i + 1)?;
        if spec.exec.command.is_none() && spec.exec.http.is_none() {
            return Err(JobError::Invalid {
                job: spec.name.to_string(),
                key: "command",
                message:
                    "missing (a jobs file declares shell jobs, or HTTP jobs with `kind = \"http\"`)"
                        .into(),
            });
        }
        if !seen.insert(spec.name.clone()) {
            return Err(JobError::Duplicate(spec.name.to_string()));
        }
        out.push(spec);
    }
    super::after::check_file(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_entry_parses() {
        let jobs = parse_jobs_toml(
            r#"
            [[jobs]]
            name = "backup"
            schedule = "0 30 2 * * *"
            timezone = "Europe/Paris"
            command = "echo hi"
            timeout = "10m"
            retries = 2
            misfire = "once"
            catch_up_window = "1h"
            overlap = "allow"

            [[jobs]]
            name = "warm"
            schedule = "@every 30s"
            command = "true"
            "#,
        )
        .unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].misfire, Misfire::Once);
        assert_eq!(jobs[0].catch_up_window, Duration::from_secs(3600));
        assert_eq!(jobs[0].exec.retries, 2);
        assert_eq!(jobs[0].exec.timeout, Some(Duration::from_secs(600)));
        assert_eq!(jobs[1].misfire, Misfire::All);
        assert_eq!(jobs[1].catch_up_window, DEFAULT_CATCH_UP_WINDOW);
        assert_eq!(jobs[0].overlap, Overlap::Allow);
        assert_eq!(jobs[1].overlap, Overlap::Forbid, "forbid is the default");
    }

    fn err(text: &str) -> String {
        parse_jobs_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_job_and_the_key() {
        let e = err("[[jobs]]\nname = \"b\"\nschedule = \"0 61 * * * *\"\ncommand = \"x\"\n");
        assert!(
            e.contains("job `b`") && e.contains("`schedule`") && e.contains("`minute`"),
            "{e}"
        );
        let e = err(
            "[[jobs]]\nname = \"b\"\nschedule = \"@every 1s\"\ntimezone = \"Nowhere/X\"\ncommand = \"x\"\n",
        );
        assert!(
            e.contains("job `b`") && e.contains("`timezone`") && e.contains("Nowhere/X"),
            "{e}"
        );
        let e = err(
            "[[jobs]]\nname = \"b\"\nschedule = \"@every 1s\"\ncommand = \"x\"\nmisfire = \"sometimes\"\n",
        );
        assert!(e.contains("`misfire`") && e.contains("sometimes"), "{e}");
        let e = err(
            "[[jobs]]\nname = \"b\"\nschedule = \"@every 1s\"\ncommand = \"x\"\noverlap = \"queue\"\n",
        );
        assert!(
            e.contains("job `b`") && e.contains("`overlap`") && e.contains("queue"),
            "{e}"
        );
        let e = err(
            "[[jobs]]\nname = \"b\"\nschedule = \"@every 1s\"\ncommand = \"x\"\ncolour = \"red\"\n",
        );
        assert!(e.contains("colour"), "{e}");
        let e = err("[[jobs]]\nschedule = \"@every 1s\"\ncommand = \"x\"\n");
        assert!(e.contains("#1") && e.contains("`name`"), "{e}");
        let e = err("[[jobs]]\nname = \"b\"\nschedule = \"@every 1s\"\n");
        assert!(e.contains("`command`"), "{e}");
        let e = err("[[jobs]]\nname = \"b c\"\nschedule = \"@every 1s\"\ncommand = \"x\"\n");
        assert!(e.contains("`name`"), "{e}");
    }

    #[test]
    fn a_command_over_the_length_limit_is_refused_with_its_size() {
        let job = |cmd: &str| {
            format!("[[jobs]]\nname = \"big\"\nschedule = \"@every 1s\"\ncommand = \"{cmd}\"\n")
        };
        parse_jobs_toml(&job(&"x".repeat(MAX_COMMAND_BYTES))).unwrap();
        let e = err(&job(&"x".repeat(MAX_COMMAND_BYTES + 1)));
        assert!(
            e.contains("job `big`") && e.contains("`command`") && e.contains("8193 bytes"),
            "{e}"
        );
    }

    #[test]
    fn every_bound_of_a_job_is_refused_naming_the_job_and_key() {
        use crate::core::limits::{MAX_JOBS, MAX_JOBS_FILE_BYTES, MAX_SCHEDULE_BYTES};
        let job = |name: &str, extra: &str| {
            format!(
                "[[jobs]]\nname = \"{name}\"\nschedule = \"@every 1s\"\ncommand = \"x\"\n{extra}"
            )
        };
        for (bad, why) in [
            ("a/b", "'/'"),
            ("caf\u{e9}", "'é'"),
            ("x?y", "'?'"),
            ("b c", "' '"),
        ] {
            let e = err(&job(bad, ""));
            assert!(
                e.contains("#1") && e.contains("`name`") && e.contains(why),
                "{e}"
            );
        }
        parse_jobs_toml(&job("Nightly_backup-2.eu:west", "")).unwrap();
        // An overlong name is not echoed in the error.
        let e = err(&job(&"n".repeat(100_000), ""));
        assert!(e.len() < 200 && e.contains("100000 bytes"), "{e}");
        let long = "y".repeat(MAX_SCHEDULE_BYTES + 1);
        let e = err(&format!(
            "[[jobs]]\nname = \"s\"\nschedule = \"{long}\"\ncommand = \"x\"\n"
        ));
        assert!(e.contains("job `s`: `schedule`") && e.len() < 200, "{e}");
        let e = err(&job("t", &format!("timezone = \"{}\"\n", "z".repeat(65))));
        assert!(e.contains("job `t`: `timezone`"), "{e}");
        let e = err(&job("r", "retries = 101\n"));
        assert!(e.contains("job `r`: `retries`"), "{e}");
        let many: String = (0..=MAX_JOBS).map(|i| job(&format!("j{i}"), "")).collect();
        let e = err(&many);
        assert!(e.contains("10001 jobs") && e.contains("10000"), "{e}");
        let all: String = (0..MAX_JOBS).map(|i| job(&format!("j{i}"), "")).collect();
        assert_eq!(parse_jobs_toml(&all).unwrap().len(), MAX_JOBS);
        let huge = format!("# {}\n", "x".repeat(MAX_JOBS_FILE_BYTES));
        assert!(err(&huge).contains("over the limit"));
    }

    #[test]
    fn the_dst_key_picks_the_rule_and_bad_values_are_named() {
        let jobs = parse_jobs_toml(
            "[[jobs]]\nname = \"a\"\nschedule = \"30 2 * * *\"\ntimezone = \"Europe/Paris\"\ncommand = \"x\"\n\
             [[jobs]]\nname = \"b\"\nschedule = \"30 2 * * *\"\ntimezone = \"Europe/Paris\"\ncommand = \"x\"\ndst = \"strict\"\n",
        )
        .unwrap();
        assert_eq!((jobs[0].dst, jobs[1].dst), (Dst::Debian, Dst::Strict));
        // Paris skips 02:30 on 2027-03-28: the default runs it at 03:00, strict does not.
        let before = UnixMillis(1_806_192_000_000); // 2027-03-28T00:00:00Z
        let next = |j: &JobSpec| j.schedule.next_after(before).unwrap().to_rfc3339();
        assert_eq!(next(&jobs[0]), "2027-03-28T01:00:00.000Z");
        assert_eq!(next(&jobs[1]), "2027-03-29T00:30:00.000Z");
        let e = err(
            "[[jobs]]\nname = \"b\"\nschedule = \"@daily\"\ncommand = \"x\"\ndst = \"lenient\"\n",
        );
        assert_eq!(
            e,
            "job `b`: `dst`: `lenient` is not a DST rule: use `debian` (the default) or `strict`"
        );
    }

    #[test]
    fn an_every_interval_below_the_minimum_is_refused() {
        for short in ["1ms", "500ms", "999ms"] {
            let e = JobSpec::parse("fast", &format!("@every {short}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("job `fast`") && e.contains("`schedule`") && e.contains("minimum of 1s"),
                "{e}"
            );
        }
        JobSpec::parse("ok", "@every 1s").unwrap();
        JobSpec::parse("ok", "@every 1500ms").unwrap();
    }

    #[test]
    fn a_bad_cron_field_is_named_with_its_job_and_range() {
        let e = err("[[jobs]]\nname = \"billing\"\nschedule = \"0 0 25 * * *\"\ncommand = \"x\"\n");
        assert_eq!(
            e,
            "job `billing`: `schedule`: `0 0 25 * * *`: field `hour` (`25`): must be 0-23"
        );
    }

    #[test]
    fn a_schedule_spent_before_now_is_refused_naming_the_job() {
        let jobs = parse_jobs_toml(
            "[[jobs]]\nname = \"once\"\nschedule = \"0 0 0 1 1 * 2026\"\ncommand = \"x\"\n",
        )
        .unwrap();
        let e = check_fires_after(&jobs, UnixMillis(1_800_000_000_000)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "job `once`: `schedule`: `0 0 0 1 1 * 2026`: never fires after 2027-01-15T08:00:00Z"
        );
        assert!(check_fires_after(&jobs, UnixMillis(1_700_000_000_000)).is_ok());
    }

    #[test]
    fn constraints_take_strings_booleans_and_integers_and_bad_ones_are_named() {
        let jobs = parse_jobs_toml(
            "[[jobs]]\nname = \"gpu\"\nschedule = \"@every 1s\"\ncommand = \"x\"\nconstraints = { region = \"eu\", gpu = true, rack = 4 }\n",
        )
        .unwrap();
        assert_eq!(jobs[0].constraints.to_string(), "gpu=true,rack=4,region=eu");
        let e = err(
            "[[jobs]]\nname = \"gpu\"\nschedule = \"@every 1s\"\ncommand = \"x\"\nconstraints = { \"re gion\" = \"eu\" }\n",
        );
        assert!(
            e.starts_with("job `gpu`: `constraints`: the key `re gion`"),
            "{e}"
        );
    }

    #[test]
    fn http_jobs_parse_and_a_bad_url_names_the_job_and_the_key() {
        let jobs = parse_jobs_toml(
            "[[jobs]]\nname = \"hook\"\nschedule = \"@every 1m\"\nkind = \"http\"\nurl = \"https://example.com/h\"\nmethod = \"POST\"\nbody = \"{}\"\nexpect_status = 202\nheaders = { \"Content-Type\" = \"application/json\" }\n",
        )
        .unwrap();
        let h = jobs[0].exec.http.as_ref().unwrap();
        assert_eq!(h.url, "https://example.com/h");
        assert_eq!(
            h.expect_status,
            crate::core::http::ExpectStatus::Codes(vec![202])
        );
        assert_eq!(jobs[0].exec.command, None);
        let e = err(
            "[[jobs]]\nname = \"hook\"\nschedule = \"@every 1m\"\nkind = \"http\"\nurl = \"htp:/nowhere\"\n",
        );
        assert!(e.starts_with("job `hook`: `url`:"), "{e}");
        let e = err(
            "[[jobs]]\nname = \"hook\"\nschedule = \"@every 1m\"\ncommand = \"x\"\nurl = \"http://a/\"\n",
        );
        assert!(
            e.starts_with("job `hook`: `url`: is only for HTTP jobs"),
            "{e}"
        );
        let e = err("[[jobs]]\nname = \"hook\"\nschedule = \"@every 1m\"\nkind = \"ftp\"\n");
        assert!(e.starts_with("job `hook`: `kind`:"), "{e}");
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let e = err(
            "[[jobs]]\nname = \"a\"\nschedule = \"@every 1s\"\ncommand = \"x\"\n\
             [[jobs]]\nname = \"a\"\nschedule = \"@every 2s\"\ncommand = \"y\"\n",
        );
        assert!(e.contains("`a`") && e.contains("more than once"), "{e}");
    }
}
