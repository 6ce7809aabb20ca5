//! Daylight saving: how a cron schedule's wall-clock times become instants when the clock
//! jumps.
//!
//! The default follows Debian cron (issue 13):
//! - a job at fixed times (its minute and hour fields do not start with `*`) runs a time
//!   that a spring-forward skips at the first instant after the gap (02:30 becomes 03:00
//!   that day; several skipped times run once), and a time that a fall-back repeats once,
//!   at its first occurrence;
//! - a job whose minute or hour field starts with `*` (`*`, `*/2`) runs by the clock: in
//!   both passes of a repeated hour, at the real elapsed times, and not in a gap.
//!
//! `dst = "strict"` keeps the rule Starling had before: skipped times do not run; a
//! repeated time runs once, at its first occurrence.
//!
//! [`next_after`] walks wall-clock time with the `cron` crate and maps each candidate to an
//! instant; [`is_slot`] decides one instant from the fields alone. They are written apart
//! so that tests and the simulator's checker can hold one against the other.

use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::{GapInfo, Tz};
use serde::{Deserialize, Serialize};

use super::CronSchedule;
use crate::core::types::UnixMillis;

/// How a cron job treats the local times a daylight-saving change skips or repeats. Set
/// per job with the `dst` key.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Dst {
    /// Debian cron's rule (the default): a skipped time runs at the first instant after the
    /// gap, and a repeated time runs once, at its first occurrence; but a job whose minute
    /// or hour field starts with `*` runs by the clock, in both passes of a repeated hour
    /// and not in a gap.
    #[default]
    Debian,
    /// A skipped time does not run; a repeated time runs once, at its first occurrence
    /// (robfig/cron's and Kubernetes' rule for skipped times), whatever the fields.
    Strict,
}

impl FromStr for Dst {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "debian" => Ok(Dst::Debian),
            "strict" => Ok(Dst::Strict),
            other => Err(format!(
                "`{other}` is not a DST rule: use `debian` (the default) or `strict`"
            )),
        }
    }
}

impl std::fmt::Display for Dst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dst::Debian => "debian",
            Dst::Strict => "strict",
        })
    }
}

/// Bounds the walk in [`next_after`]. A candidate is passed over only inside the second
/// pass of a repeated hour (a fixed-time job: at most 3,600 of them) or when a job
/// without a slot after the search start runs out of years; the bound only guarantees
/// termination.
const MAX_CANDIDATES: usize = 200_000;

const SECOND: TimeDelta = TimeDelta::seconds(1);

fn at(secs: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(secs, 0)
}

fn millis(d: DateTime<Tz>) -> UnixMillis {
    UnixMillis(d.timestamp_millis())
}

fn runs_by_the_clock(c: &CronSchedule) -> bool {
    c.dst == Dst::Debian && c.fields.wild
}

/// The first slot strictly after `t`.
pub(super) fn next_after(c: &CronSchedule, t: UnixMillis) -> Option<UnixMillis> {
    let secs = t.0.div_euclid(1000);
    let utc = at(secs)?;
    if c.tz == Tz::UTC {
        let next = c.next_local(utc.naive_utc())?;
        return Some(UnixMillis(next.and_utc().timestamp_millis()));
    }
    let local = utc.with_timezone(&c.tz).naive_local();
    if runs_by_the_clock(c)
        && let LocalResult::Ambiguous(first, second) = c.tz.from_local_datetime(&local)
        && first.timestamp() == secs
        && let Some(change) = transition(c.tz, secs, second.timestamp())
    {
        // `t` is in the first pass of a repeated hour. Walking wall-clock time forward from
        // here would miss the second pass, whose wall-clock times are behind us: finish the
        // first pass, then walk the second from its start.
        if let Some(next) = c.next_local(local)
            && let LocalResult::Ambiguous(first, _) = c.tz.from_local_datetime(&next)
            && first.timestamp() < change
        {
            return Some(millis(first));
        }
        let second_pass = at(change)?.with_timezone(&c.tz).naive_local();
        return walk(c, second_pass - SECOND, change * 1000 - 1);
    }
    walk(c, local, t.0)
}

/// Walks wall-clock time from `from` and returns the first candidate's instant after
/// `after_ms`.
fn walk(c: &CronSchedule, from: NaiveDateTime, after_ms: i64) -> Option<UnixMillis> {
    let by_clock = runs_by_the_clock(c);
    let mut x = from;
    for _ in 0..MAX_CANDIDATES {
        let next = c.next_local(x)?;
        let instant = match c.tz.from_local_datetime(&next) {
            LocalResult::Single(d) => d,
            LocalResult::Ambiguous(first, second) => {
                if by_clock && first.timestamp_millis() <= after_ms {
                    second
                } else {
                    first
                }
            }
            LocalResult::None => match GapInfo::new(&next, &c.tz).and_then(|g| g.end) {
                // A fixed-time job runs a skipped time when the gap ends.
                Some(end) if c.dst == Dst::Debian && !by_clock => end,
                // Others skip the whole gap at once (an every-second job has 3,600
                // candidates in it).
                Some(end) => {
                    x = end.naive_local() - SECOND;
                    continue;
                }
                None => {
                    x = next;
                    continue;
                }
            },
        };
        if instant.timestamp_millis() > after_ms {
            return Some(millis(instant));
        }
        x = next;
    }
    None
}

/// The first second in `(lo, hi]` whose UTC offset differs from `lo`'s, by bisection
/// (chrono-tz does not expose its transitions).
fn transition(tz: Tz, lo: i64, hi: i64) -> Option<i64> {
    let offset = |s: i64| {
        at(s).map(|d| {
            tz.offset_from_utc_datetime(&d.naive_utc())
                .fix()
                .local_minus_utc()
        })
    };
    let before = offset(lo)?;
    if offset(hi)? == before {
        return None;
    }
    let (mut a, mut b) = (lo, hi);
    while b - a > 1 {
        let m = a + (b - a) / 2;
        if offset(m)? == before {
            a = m;
        } else {
            b = m;
        }
    }
    Some(b)
}

/// True if `t` is a slot, decided from the fields alone (not by walking as
/// [`next_after`] does).
pub(super) fn is_slot(c: &CronSchedule, t: UnixMillis) -> bool {
    if t.0.rem_euclid(1000) != 0 {
        return false;
    }
    let secs = t.0 / 1000;
    let Some(utc) = at(secs) else {
        return false;
    };
    let local = utc.with_timezone(&c.tz).naive_local();
    if c.tz == Tz::UTC || runs_by_the_clock(c) {
        return c.fields.matches(local);
    }
    if c.fields.matches(local) {
        // Of a repeated time, only the first occurrence.
        return match c.tz.from_local_datetime(&local) {
            LocalResult::Ambiguous(first, _) => first.timestamp() == secs,
            _ => true,
        };
    }
    if c.dst == Dst::Strict {
        return false;
    }
    // The first instant after a spring-forward gap runs the times the gap skipped.
    let Some(before) = at(secs - 1).map(|d| d.with_timezone(&c.tz).naive_local()) else {
        return false;
    };
    let mut skipped = before + SECOND;
    while skipped < local {
        if c.fields.matches(skipped) {
            return true;
        }
        skipped += SECOND;
    }
    false
}
