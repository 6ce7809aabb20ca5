//! Schedules: when a job's slots fall.
//!
//! | spelling | meaning |
//! |---|---|
//! | `min hour dom month dow` | 5-field cron; fires at second 0 |
//! | `sec min hour dom month dow` | 6-field cron with seconds |
//! | `sec min hour dom month dow year` | 7-field cron with a year (1970-2100) |
//! | `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly` | `0 0 1 1 *`, `0 0 1 * *`, `0 0 * * 0`, `0 0 * * *`, `0 * * * *` |
//! | `@every <duration>` | every multiple of the interval since the Unix epoch, so every node computes the same slots without talking |
//! | `@at <RFC 3339>` | a single slot |
//!
//! The cron dialect is Vixie/Debian cron's, the same for 5, 6 and 7 fields:
//! - each field takes `*`, numbers, ranges `a-b`, lists `a,b`, steps `*/n`, `a-b/n` and
//!   `a/n` (from `a` to the field's end);
//! - day-of-week is 0-7, where 0 and 7 are Sunday, or SUN-SAT (and full names) in any
//!   case; months are 1-12 or JAN-DEC; `SAT-SUN` is Saturday and Sunday;
//! - when day-of-month and day-of-week are both restricted, a day matches either (`0 0
//!   13 * 5`: every 13th and every Friday). A field that starts with `*` (`*`, `*/2`) or
//!   is `?` leaves the choice to the other field (Vixie cron);
//! - day-of-month takes `L` (the last day), `LW` (the last weekday) and `15W` (the
//!   weekday nearest the 15th, within the month); day-of-week takes `5L` (the last Friday)
//!   and `2#2` (the second Tuesday);
//! - an expression that can never fire (`0 0 30 2 *`) is refused.
//!
//! Cron schedules are read in the job's IANA timezone; [`Dst`] says what happens to the
//! local times a daylight-saving change skips or repeats.

mod cron;
mod dst;
#[cfg(test)]
mod tests;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat};
use chrono_tz::Tz;

use self::cron::{Fields, ParseError, YEARS};
pub use self::dst::Dst;
use super::types::{JobId, UnixMillis};

/// Why a schedule or timezone was rejected. The messages name the offending field and say
/// what it may hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression has the wrong number of fields.
    #[error(
        "expected 5 fields (minute hour day-of-month month day-of-week), 6 (second first) or 7 \
         (second first, year last), got {0}"
    )]
    FieldCount(usize),
    /// One field of a cron expression is invalid.
    #[error("field `{field}` (`{value}`): {reason}")]
    Field {
        /// The field's name, e.g. `minute`.
        field: &'static str,
        /// The text of the field as written.
        value: String,
        /// What is wrong, with the values the field may hold.
        reason: String,
    },
    /// Every field is valid, but no date matches them all.
    #[error("never fires: {0}")]
    NeverFires(String),
    /// The schedule has no slot after the given time (a year in the past).
    #[error("never fires after {0}")]
    Spent(String),
    /// The `cron` crate refused the translated expression: a bug in the translation.
    #[error("invalid cron expression: {0}")]
    Cron(String),
    /// `@every` with a bad or zero duration.
    #[error("`@every` needs a positive duration like `30s` or `10m`: {0}")]
    Every(String),
    /// `@at` with a timestamp that is not RFC 3339.
    #[error("`@at` needs an RFC 3339 timestamp like `2026-12-01T09:00:00Z`: {0}")]
    At(String),
    /// An `@` spelling that does not exist.
    #[error(
        "unknown schedule `{0}`: use cron fields, `@every <duration>`, `@at <RFC 3339>`, \
         `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight` or `@hourly`"
    )]
    UnknownMacro(String),
    /// `@after` (a dependent job's canonical text) with a bad list of jobs.
    #[error("`@after` needs job names separated by commas: {0}")]
    After(String),
    /// The timezone is not an IANA name.
    #[error("unknown timezone `{0}`: use an IANA name such as `Europe/Paris` or `UTC`")]
    Timezone(String),
}

/// When a job fires. Cheap to clone: the parsed cron expression is shared.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// A cron expression evaluated in a timezone.
    Cron(Arc<CronSchedule>),
    /// Every `interval`, aligned to multiples of it since the Unix epoch.
    Every {
        /// The interval in milliseconds (> 0).
        interval_ms: i64,
    },
    /// Exactly once, at this time.
    At(UnixMillis),
    /// Never by time: the job runs after each success of these jobs (`after`; see
    /// [`crate::core::after`]). Sorted, without repeats.
    After(Arc<[JobId]>),
}

/// A parsed cron expression, its timezone and its DST rule.
#[derive(Debug)]
pub struct CronSchedule {
    /// The fields as sets: the dialect's reading, used to match and to pick days.
    fields: Fields,
    /// The `cron` crate's schedule: it finds the next matching wall-clock time.
    engine: ::cron::Schedule,
    /// The engine's expression leaves the days to `fields` (OR, `L`, `W`, `#`).
    picks_days: bool,
    tz: Tz,
    dst: Dst,
}

/// The cron shorthands and the 5-field expressions they stand for.
const SHORTHANDS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// Parses an IANA timezone name.
pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name).map_err(|_| ScheduleError::Timezone(name.to_string()))
}

impl Schedule {
    /// Parses a schedule with the default DST rule; `tz` applies to cron expressions only
    /// (`@every` and `@at` are absolute).
    pub fn parse(spec: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        Schedule::parse_with(spec, tz, Dst::default())
    }

    /// Parses a schedule whose cron times follow `dst` across daylight-saving changes.
    pub fn parse_with(spec: &str, tz: Tz, dst: Dst) -> Result<Schedule, ScheduleError> {
        let spec = spec.trim();
        if let Some(rest) = spec.strip_prefix(super::after::AFTER_PREFIX) {
            let parents = super::after::parse_text(rest).map_err(ScheduleError::After)?;
            return Ok(Schedule::After(parents.into()));
        }
        if let Some(rest) = spec.strip_prefix("@every") {
            let rest = rest.trim();
            let d = humantime::parse_duration(rest)
                .map_err(|e| ScheduleError::Every(format!("`{rest}`: {e}")))?;
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            if ms <= 0 {
                return Err(ScheduleError::Every(format!(
                    "`{rest}` is shorter than 1ms"
                )));
            }
            return Ok(Schedule::Every { interval_ms: ms });
        }
        if let Some(rest) = spec.strip_prefix("@at") {
            let rest = rest.trim();
            let t = DateTime::parse_from_rfc3339(rest)
                .map_err(|e| ScheduleError::At(format!("`{rest}`: {e}")))?;
            return Ok(Schedule::At(UnixMillis(t.timestamp_millis())));
        }
        let spec = if spec.starts_with('@') {
            SHORTHANDS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(spec))
                .map(|(_, expr)| *expr)
                .ok_or_else(|| ScheduleError::UnknownMacro(spec.to_string()))?
        } else {
            spec
        };
        let texts: Vec<&str> = spec.split_whitespace().collect();
        let fields = Fields::parse(&texts).map_err(|e| match e {
            ParseError::Count(n) => ScheduleError::FieldCount(n),
            ParseError::Field(kind, value, reason) => ScheduleError::Field {
                field: kind.name(),
                value,
                reason,
            },
        })?;
        let epoch = NaiveDate::from_ymd_opt(YEARS.0 as i32, 1, 1).expect("a valid date");
        if fields.next_day(epoch).is_none() {
            return Err(ScheduleError::NeverFires(never_fires(&texts)));
        }
        let engine = ::cron::Schedule::from_str(&fields.engine_text())
            .map_err(|e| ScheduleError::Cron(e.to_string()))?;
        Ok(Schedule::Cron(Arc::new(CronSchedule {
            picks_days: fields.days().plain().is_none(),
            fields,
            engine,
            tz,
            dst,
        })))
    }

    /// The first slot strictly after `t`, or `None` if there is none.
    pub fn next_after(&self, t: UnixMillis) -> Option<UnixMillis> {
        match self {
            Schedule::Every { interval_ms } => {
                let k = t.0.div_euclid(*interval_ms).checked_add(1)?;
                k.checked_mul(*interval_ms).map(UnixMillis)
            }
            Schedule::At(at) => (*at > t).then_some(*at),
            Schedule::Cron(c) => dst::next_after(c, t),
            Schedule::After(_) => None,
        }
    }

    /// True if `t` is one of the schedule's slots. Computed independently of
    /// [`Schedule::next_after`] (the two are checked against each other in tests and by the
    /// simulator), and slow for cron: one check per second of time examined.
    pub fn is_slot(&self, t: UnixMillis) -> bool {
        match self {
            Schedule::Every { interval_ms } => t.0.rem_euclid(*interval_ms) == 0,
            Schedule::At(at) => *at == t,
            Schedule::Cron(c) => dst::is_slot(c, t),
            Schedule::After(_) => false,
        }
    }

    /// True for schedules with a single slot (`@at`).
    pub fn is_one_shot(&self) -> bool {
        matches!(self, Schedule::At(_))
    }

    /// Refuses a cron expression with no slot after `now`, such as one whose years are all
    /// in the past. `now` comes from the caller's clock: the core reads none.
    pub fn check_fires_after(&self, now: UnixMillis) -> Result<(), ScheduleError> {
        if let Schedule::Cron(_) = self
            && self.next_after(now).is_none()
        {
            let when = DateTime::from_timestamp_millis(now.0)
                .map(|d| d.to_rfc3339_opts(SecondsFormat::Secs, true))
                .unwrap_or_else(|| format!("{} ms", now.0));
            return Err(ScheduleError::Spent(when));
        }
        Ok(())
    }
}

impl CronSchedule {
    /// The first wall-clock time strictly after `x` that matches, read as if it were UTC.
    fn next_local(&self, x: NaiveDateTime) -> Option<NaiveDateTime> {
        if !self.picks_days {
            return Some(self.engine.after(&x.and_utc()).next()?.naive_utc());
        }
        // The engine matches every day here: it finds the time of day on a day `fields`
        // picks; any later day starts at the earliest time of day.
        let day = self.fields.next_day(x.date())?;
        if day == x.date() {
            let next = self.engine.after(&x.and_utc()).next()?.naive_utc();
            if next.date() == day {
                return Some(next);
            }
            let later = self.fields.next_day(day.succ_opt()?)?;
            return Some(later.and_time(self.fields.first_time()));
        }
        Some(day.and_time(self.fields.first_time()))
    }
}

/// The reason an expression never fires, from its day, month and year fields.
fn never_fires(texts: &[&str]) -> String {
    // Day-of-month is the third field of five, the fourth of six or seven.
    let skip = if texts.len() == 5 { 0 } else { 1 };
    let at = |i: usize| texts.get(i + skip).copied();
    let (dom, month, dow) = (at(2), at(3), at(4));
    let mut parts = vec![
        format!("day-of-month `{}`", dom.unwrap_or("*")),
        format!("month `{}`", month.unwrap_or("*")),
    ];
    if let Some(d) = dow.filter(|d| *d != "*" && *d != "?") {
        parts.push(format!("day-of-week `{d}`"));
    }
    if texts.len() == 7 {
        parts.push(format!("year `{}`", texts[6]));
    }
    format!(
        "no date from {} to {} has {}",
        YEARS.0,
        YEARS.1,
        parts.join(" and ")
    )
}

/// Parses a duration written like `500ms`, `30s`, `10m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}`: {e}"))
}
