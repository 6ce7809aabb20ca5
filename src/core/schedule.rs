//! Schedules: when a job's slots fall.
//!
//! Four spellings are accepted:
//! - 6-field cron with seconds (`sec min hour dom month dow`, optional 7th year field),
//! - 5-field cron (`min hour dom month dow`; seconds are 0),
//! - `@every <duration>`: slots at every multiple of the interval since the Unix epoch,
//!   so every node computes the same slots without talking,
//! - `@at <RFC 3339>`: a single slot,
//! - the cron shorthands `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
//!
//! Cron schedules are evaluated in the job's IANA timezone. Across daylight-saving changes:
//! a local time that does not exist (spring forward) is skipped; a local time that occurs
//! twice (fall back) runs once, at its first occurrence.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::types::UnixMillis;

/// Why a schedule or timezone was rejected. The messages name the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression has the wrong number of fields.
    #[error(
        "expected 5 fields (min hour dom month dow) or 6 (sec min hour dom month dow), got {0}"
    )]
    FieldCount(usize),
    /// One field of a cron expression is invalid.
    #[error("field `{field}` (`{value}`) is invalid: {reason}")]
    Field {
        /// The field's name, e.g. `minute`.
        field: &'static str,
        /// The text of the field as written.
        value: String,
        /// What the cron parser said about it.
        reason: String,
    },
    /// The expression is invalid as a whole (each field parses alone).
    #[error("invalid cron expression: {0}")]
    Cron(String),
    /// `@every` with a bad or zero duration.
    #[error("`@every` needs a positive duration like `30s` or `10m`: {0}")]
    Every(String),
    /// `@at` with a timestamp that is not RFC 3339.
    #[error("`@at` needs an RFC 3339 timestamp like `2026-12-01T09:00:00Z`: {0}")]
    At(String),
    /// An `@` spelling that does not exist.
    #[error("unknown schedule `{0}`: use cron fields, `@every <duration>` or `@at <RFC 3339>`")]
    UnknownMacro(String),
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
}

/// A parsed cron expression and its timezone.
#[derive(Debug)]
pub struct CronSchedule {
    expr: cron::Schedule,
    tz: Tz,
}

const SIX_FIELDS: [&str; 7] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
    "year",
];

/// Parses an IANA timezone name.
pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name).map_err(|_| ScheduleError::Timezone(name.to_string()))
}

impl Schedule {
    /// Parses a schedule; `tz` applies to cron expressions only (`@every` and `@at` are
    /// absolute).
    pub fn parse(spec: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        let spec = spec.trim();
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
        if spec.starts_with('@') {
            // The cron crate's own shorthands, evaluated in the job's timezone.
            const SHORTHANDS: [&str; 6] = [
                "@yearly",
                "@annually",
                "@monthly",
                "@weekly",
                "@daily",
                "@hourly",
            ];
            if !SHORTHANDS.contains(&spec) {
                return Err(ScheduleError::UnknownMacro(spec.to_string()));
            }
            let expr =
                cron::Schedule::from_str(spec).map_err(|e| ScheduleError::Cron(e.to_string()))?;
            return Ok(Schedule::Cron(Arc::new(CronSchedule { expr, tz })));
        }
        let fields: Vec<&str> = spec.split_whitespace().collect();
        let six = match fields.len() {
            5 => format!("0 {}", fields.join(" ")),
            6 | 7 => fields.join(" "),
            n => return Err(ScheduleError::FieldCount(n)),
        };
        match cron::Schedule::from_str(&six) {
            Ok(expr) => Ok(Schedule::Cron(Arc::new(CronSchedule { expr, tz }))),
            Err(e) => Err(locate_cron_error(&fields, &e.to_string())),
        }
    }

    /// The first slot strictly after `t`, or `None` if there is none.
    pub fn next_after(&self, t: UnixMillis) -> Option<UnixMillis> {
        match self {
            Schedule::Every { interval_ms } => {
                let k = t.0.div_euclid(*interval_ms).checked_add(1)?;
                k.checked_mul(*interval_ms).map(UnixMillis)
            }
            Schedule::At(at) => (*at > t).then_some(*at),
            Schedule::Cron(c) => c.next_after(t),
        }
    }

    /// True if `t` is one of the schedule's slots. Computed independently of
    /// [`Schedule::next_after`] (the two are checked against each other in tests and by the
    /// simulator), and slow for cron: one check per second of time examined.
    pub fn is_slot(&self, t: UnixMillis) -> bool {
        match self {
            Schedule::Every { interval_ms } => t.0.rem_euclid(*interval_ms) == 0,
            Schedule::At(at) => *at == t,
            Schedule::Cron(c) => c.is_slot(t),
        }
    }

    /// True for schedules with a single slot (`@at`).
    pub fn is_one_shot(&self) -> bool {
        matches!(self, Schedule::At(_))
    }
}

/// See `CronSchedule::next_after`.
const MAX_SKIPPED_CANDIDATES: usize = 200_000;

impl CronSchedule {
    /// True if `t` is a slot: its local time matches the expression, and a repeated local
    /// time counts only at its first occurrence. Independent of `next_after`, so tests and
    /// the simulator's checker can hold one against the other.
    fn is_slot(&self, t: UnixMillis) -> bool {
        if t.0.rem_euclid(1000) != 0 {
            return false;
        }
        let Some(utc) = DateTime::<Utc>::from_timestamp_millis(t.0) else {
            return false;
        };
        let local = utc.with_timezone(&self.tz).naive_local();
        if !self.expr.includes(Utc.from_utc_datetime(&local)) {
            return false;
        }
        match self.tz.from_local_datetime(&local) {
            LocalResult::Ambiguous(first, _) => first.timestamp_millis() == t.0,
            _ => true,
        }
    }

    fn next_after(&self, t: UnixMillis) -> Option<UnixMillis> {
        let utc = DateTime::<Utc>::from_timestamp_millis(t.0)?;
        if self.tz == Tz::UTC {
            return self
                .expr
                .after(&utc)
                .next()
                .map(|d| UnixMillis(d.timestamp_millis()));
        }
        // The cron crate walks zoned time in a way that runs a repeated local time twice
        // and out of order. Walk wall-clock (naive local) time instead, as if it were UTC,
        // and map each candidate back to an instant ourselves.
        let local: NaiveDateTime = utc.with_timezone(&self.tz).naive_local();
        let start = Utc.from_utc_datetime(&local);
        // A candidate is skipped only inside a DST gap, or inside the repeated hour when the
        // search starts in its second pass: an every-second job skips 3,600 of them there.
        // The bound only guarantees termination (a full skipped day is 86,400).
        for candidate in self.expr.after(&start).take(MAX_SKIPPED_CANDIDATES) {
            let instant = match self.tz.from_local_datetime(&candidate.naive_utc()) {
                LocalResult::Single(d) => d,
                // Repeated local time: run once, at the first occurrence.
                LocalResult::Ambiguous(first, _) => first,
                // Local time that does not exist (spring forward): skipped.
                LocalResult::None => continue,
            };
            let ms = instant.timestamp_millis();
            if ms > t.0 {
                return Some(UnixMillis(ms));
            }
        }
        None
    }
}

/// Finds which field of a cron expression is at fault by parsing each field alone
/// (all others wildcards), so the error names the field, not just the expression.
fn locate_cron_error(fields: &[&str], whole: &str) -> ScheduleError {
    let offset = if fields.len() == 5 { 1 } else { 0 };
    for (i, value) in fields.iter().enumerate() {
        let idx = i + offset;
        let mut probe: Vec<&str> = vec!["*"; fields.len() + offset];
        probe[0] = "0";
        probe[idx] = value;
        if let Err(e) = cron::Schedule::from_str(&probe.join(" ")) {
            let reason = e.to_string();
            // The cron crate prints the expression and a caret before its reason.
            let reason = reason.lines().last().unwrap_or("").trim().to_string();
            let reason = if reason.is_empty() {
                "not a valid value for this field".to_string()
            } else {
                reason
            };
            return ScheduleError::Field {
                field: SIX_FIELDS[idx],
                value: value.to_string(),
                reason,
            };
        }
    }
    ScheduleError::Cron(whole.lines().last().unwrap_or(whole).trim().to_string())
}

/// Parses a duration written like `500ms`, `30s`, `10m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("`{s}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc: &str) -> UnixMillis {
        UnixMillis(
            DateTime::parse_from_rfc3339(rfc)
                .unwrap()
                .timestamp_millis(),
        )
    }

    fn slots(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut t = ms(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next_after(t).unwrap();
            out.push(t.to_rfc3339());
        }
        out
    }

    #[test]
    fn six_field_cron_has_seconds() {
        let s = Schedule::parse("*/15 * * * * *", Tz::UTC).unwrap();
        assert_eq!(
            slots(&s, "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-01T00:00:15.000Z",
                "2026-01-01T00:00:30.000Z",
                "2026-01-01T00:00:45.000Z"
            ]
        );
    }

    #[test]
    fn five_field_cron_fires_at_second_zero() {
        let s = Schedule::parse("30 9 * * MON", Tz::UTC).unwrap();
        // 2026-01-01 is a Thursday; the next Monday is the 5th.
        assert_eq!(
            slots(&s, "2026-01-01T00:00:00Z", 2),
            ["2026-01-05T09:30:00.000Z", "2026-01-12T09:30:00.000Z"]
        );
    }

    #[test]
    fn every_is_aligned_to_the_epoch() {
        let s = Schedule::parse("@every 30s", Tz::UTC).unwrap();
        assert_eq!(s.next_after(UnixMillis(1)), Some(UnixMillis(30_000)));
        assert_eq!(s.next_after(UnixMillis(30_000)), Some(UnixMillis(60_000)));
        assert_eq!(s.next_after(UnixMillis(-1)), Some(UnixMillis(0)));
        let s = Schedule::parse("@every 500ms", Tz::UTC).unwrap();
        assert_eq!(s.next_after(UnixMillis(1_200)), Some(UnixMillis(1_500)));
    }

    #[test]
    fn at_fires_once() {
        let s = Schedule::parse("@at 2026-12-01T09:00:00+01:00", Tz::UTC).unwrap();
        let at = ms("2026-12-01T08:00:00Z");
        assert_eq!(s.next_after(UnixMillis(0)), Some(at));
        assert_eq!(s.next_after(at), None);
        assert!(s.is_one_shot());
    }

    #[test]
    fn cron_runs_in_the_jobs_timezone() {
        let tz = parse_timezone("Asia/Tokyo").unwrap();
        let s = Schedule::parse("0 0 9 * * *", tz).unwrap();
        // 09:00 in Tokyo is 00:00 UTC.
        assert_eq!(
            slots(&s, "2026-06-01T12:00:00Z", 1),
            ["2026-06-02T00:00:00.000Z"]
        );
    }

    #[test]
    fn a_local_time_that_does_not_exist_is_skipped() {
        // New York springs forward on 2026-03-08: 02:30 local does not exist that day.
        let tz = parse_timezone("America/New_York").unwrap();
        let s = Schedule::parse("0 30 2 * * *", tz).unwrap();
        assert_eq!(
            slots(&s, "2026-03-07T00:00:00Z", 3),
            [
                "2026-03-07T07:30:00.000Z", // 02:30 EST on the 7th
                "2026-03-09T06:30:00.000Z", // 02:30 EDT on the 9th; the 8th is skipped
                "2026-03-10T06:30:00.000Z",
            ]
        );
    }

    #[test]
    fn a_local_time_that_repeats_runs_once() {
        // New York falls back on 2026-11-01: 01:00-01:59 local happens twice.
        let tz = parse_timezone("America/New_York").unwrap();
        let s = Schedule::parse("0 */30 * * * *", tz).unwrap();
        assert_eq!(
            slots(&s, "2026-11-01T04:00:00Z", 5),
            [
                "2026-11-01T04:30:00.000Z", // 00:30 EDT
                "2026-11-01T05:00:00.000Z", // 01:00 EDT
                "2026-11-01T05:30:00.000Z", // 01:30 EDT; the EST repeats are not run
                "2026-11-01T07:00:00.000Z", // 02:00 EST
                "2026-11-01T07:30:00.000Z",
            ]
        );
    }

    #[test]
    fn a_search_starting_inside_the_repeated_hour_moves_forward() {
        let tz = parse_timezone("America/New_York").unwrap();
        let s = Schedule::parse("0 */30 * * * *", tz).unwrap();
        // 06:10Z is 01:10 EST, the second pass through 01:10.
        assert_eq!(
            slots(&s, "2026-11-01T06:10:00Z", 1),
            ["2026-11-01T07:00:00.000Z"]
        );
    }

    /// Every slot in [from, to] found by brute force with `is_slot`, second by second.
    fn brute_force(s: &Schedule, from: &str, to: &str) -> Vec<i64> {
        (ms(from).0 / 1000..=ms(to).0 / 1000)
            .map(|sec| sec * 1000)
            .filter(|&t| s.is_slot(UnixMillis(t)))
            .collect()
    }

    fn walked(s: &Schedule, from: &str, to: &str) -> Vec<i64> {
        let mut out = Vec::new();
        let mut t = UnixMillis(ms(from).0 - 1);
        while let Some(n) = s.next_after(t) {
            if n > ms(to) {
                break;
            }
            out.push(n.0);
            t = n;
        }
        out
    }

    #[test]
    fn next_after_agrees_with_brute_force_across_both_dst_changes() {
        let tz = parse_timezone("America/New_York").unwrap();
        for expr in [
            "*/10 * * * * *",
            "* * * * * *",
            "0 */7 * * * *",
            "30 30 1,2,3 * * *",
        ] {
            let s = Schedule::parse(expr, tz).unwrap();
            for (from, to) in [
                ("2026-03-08T05:30:00Z", "2026-03-08T08:30:00Z"),
                ("2026-11-01T04:30:00Z", "2026-11-01T07:30:00Z"),
            ] {
                let expected = brute_force(&s, from, to);
                assert!(!expected.is_empty(), "{expr}");
                assert_eq!(walked(&s, from, to), expected, "{expr} from {from}");
            }
        }
    }

    #[test]
    fn a_seconds_schedule_keeps_firing_after_spring_forward() {
        let tz = parse_timezone("America/New_York").unwrap();
        let s = Schedule::parse("*/10 * * * * *", tz).unwrap();
        // 06:59:50Z is 01:59:50 EST; local 02:00-02:59 does not exist.
        assert_eq!(
            slots(&s, "2026-03-08T06:59:45Z", 3),
            [
                "2026-03-08T06:59:50.000Z",
                "2026-03-08T07:00:00.000Z", // 03:00:00 EDT
                "2026-03-08T07:00:10.000Z",
            ]
        );
    }

    #[test]
    fn bad_cron_names_the_field() {
        let e = Schedule::parse("61 * * * *", Tz::UTC).unwrap_err();
        match &e {
            ScheduleError::Field { field, value, .. } => {
                assert_eq!(*field, "minute");
                assert_eq!(value, "61");
            }
            other => panic!("unexpected {other:?}"),
        }
        let e = Schedule::parse("0 0 25 * * *", Tz::UTC).unwrap_err();
        assert!(e.to_string().contains("`hour`"), "{e}");
        let e = Schedule::parse("0 0 0 * * FUNDAY", Tz::UTC).unwrap_err();
        assert!(e.to_string().contains("`day-of-week`"), "{e}");
        assert_eq!(
            Schedule::parse("* * *", Tz::UTC).unwrap_err(),
            ScheduleError::FieldCount(3)
        );
    }

    #[test]
    fn cron_shorthands_are_accepted() {
        let s = Schedule::parse("@hourly", Tz::UTC).unwrap();
        assert_eq!(
            slots(&s, "2026-01-01T00:10:00Z", 1),
            ["2026-01-01T01:00:00.000Z"]
        );
    }

    #[test]
    fn bad_macros_and_timezones_are_rejected() {
        assert!(matches!(
            Schedule::parse("@every", Tz::UTC),
            Err(ScheduleError::Every(_))
        ));
        assert!(matches!(
            Schedule::parse("@every 0s", Tz::UTC),
            Err(ScheduleError::Every(_))
        ));
        assert!(matches!(
            Schedule::parse("@at tomorrow", Tz::UTC),
            Err(ScheduleError::At(_))
        ));
        assert!(matches!(
            Schedule::parse("@fortnightly", Tz::UTC),
            Err(ScheduleError::UnknownMacro(_))
        ));
        assert_eq!(
            parse_timezone("Mars/Olympus").unwrap_err(),
            ScheduleError::Timezone("Mars/Olympus".into())
        );
    }
}
