//! The next slot of 100,000 cron jobs: Starling's dialect and DST layer against the bare
//! `cron` crate, measured in the same run (issue 13: target at most 1.5x).
//!
//! The jobs mix 16 expressions over 5 timezones (UTC, New York, Berlin, Lord Howe, Tokyo),
//! each from its own start spread over 2027:
//! - 10 the `cron` crate can say (after translation: Sunday 1, seconds first): the
//!   baseline is the crate's `after(&start).next()` on the same expression, with the start
//!   already in the job's zone (`DateTime<Tz>`, or `DateTime<Utc>` for UTC), so the
//!   baseline pays no conversion;
//! - 2 with day-of-month OR day-of-week and 4 with `L`, `W` or `#`, which the crate cannot
//!   say: the baseline is the crate on the same expression with both day fields `*` (the
//!   time-of-day search Starling also runs, once or twice, before picking the day).
//!
//! Before timing, the slots of the plain UTC jobs must equal the crate's. Each pass times
//! both sides over every job, alternating which goes first, `BENCH_ROUNDS` times (5); the
//! pass's ratio is Starling's median over the baseline's median. `BENCH_PASSES` (3) passes;
//! `BENCH_JOBS` (100,000) jobs. Run with `cargo bench --bench schedule`.

use std::hint::black_box;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use starling::{Schedule, UnixMillis};

/// (Starling's expression, the `cron` crate's baseline expression, class).
const EXPRESSIONS: [(&str, &str, &str); 16] = [
    ("*/5 * * * *", "0 */5 * * * *", "plain"),
    ("0 * * * *", "0 0 * * * *", "plain"),
    ("30 2 * * *", "0 30 2 * * *", "plain"),
    ("0 9 * * 1-5", "0 0 9 * * 2-6", "plain"),
    ("15 10 1 * *", "0 15 10 1 * *", "plain"),
    ("0 0 * * 0", "0 0 0 * * 1", "plain"),
    ("*/15 9-17 * * 1-5", "0 */15 9-17 * * 2-6", "plain"),
    ("0 12 1 */3 *", "0 0 12 1 */3 *", "plain"),
    ("45 23 * * 6", "0 45 23 * * 7", "plain"),
    ("0 8,12,18 * * *", "0 0 8,12,18 * * *", "plain"),
    ("0 0 13 * 5", "0 0 0 * * *", "or"),
    ("0 6 1,15 * 1", "0 0 6 * * *", "or"),
    ("0 0 L * *", "0 0 0 * * *", "special"),
    ("0 18 * * 5L", "0 0 18 * * *", "special"),
    ("0 9 * * 2#2", "0 0 9 * * *", "special"),
    ("0 7 15W * *", "0 0 7 * * *", "special"),
];

const ZONES: [&str; 5] = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Asia/Tokyo",
];

/// 2027-01-01T00:00:00Z.
const YEAR_START_S: i64 = 1_798_761_600;

struct Job {
    ours: Schedule,
    theirs: cron::Schedule,
    tz: Tz,
    start: UnixMillis,
    class: &'static str,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[allow(clippy::disallowed_methods)] // benchmark measurement clock
fn mono_now() -> std::time::Instant {
    std::time::Instant::now()
}

fn jobs(n: usize) -> Vec<Job> {
    (0..n)
        .map(|i| {
            let (expr, base, class) = EXPRESSIONS[i % EXPRESSIONS.len()];
            let tz = Tz::from_str(ZONES[(i / EXPRESSIONS.len()) % ZONES.len()]).unwrap();
            // Starts spread over the year, at odd seconds, so no two jobs search alike.
            let offset = (i as i64 * 7_919) % (365 * 86_400);
            Job {
                ours: Schedule::parse(expr, tz).unwrap(),
                theirs: cron::Schedule::from_str(base).unwrap(),
                tz,
                start: UnixMillis((YEAR_START_S + offset) * 1000),
                class,
            }
        })
        .collect()
}

/// The baseline's start, in the job's zone as the crate wants it.
enum Start {
    Utc(DateTime<Utc>),
    Zoned(DateTime<Tz>),
}

fn baseline_starts(jobs: &[Job]) -> Vec<Start> {
    jobs.iter()
        .map(|j| {
            let utc = DateTime::from_timestamp_millis(j.start.0).unwrap();
            if j.tz == Tz::UTC {
                Start::Utc(utc)
            } else {
                Start::Zoned(j.tz.from_utc_datetime(&utc.naive_utc()))
            }
        })
        .collect()
}

/// True if `class` is `None` (all jobs) or the job's class.
fn picked(j: &Job, class: Option<&str>) -> bool {
    class.is_none_or(|c| j.class == c)
}

fn run_ours(jobs: &[Job], class: Option<&str>) -> (Duration, i64) {
    let t = mono_now();
    let mut sum = 0i64;
    for j in jobs.iter().filter(|j| picked(j, class)) {
        sum = sum.wrapping_add(black_box(&j.ours).next_after(j.start).map_or(0, |u| u.0));
    }
    (t.elapsed(), black_box(sum))
}

fn run_theirs(jobs: &[Job], starts: &[Start], class: Option<&str>) -> (Duration, i64) {
    let t = mono_now();
    let mut sum = 0i64;
    for (j, s) in jobs.iter().zip(starts).filter(|(j, _)| picked(j, class)) {
        let next = match s {
            Start::Utc(d) => black_box(&j.theirs).after(d).next().map(|n| n.timestamp()),
            Start::Zoned(d) => black_box(&j.theirs).after(d).next().map(|n| n.timestamp()),
        };
        sum = sum.wrapping_add(next.unwrap_or(0));
    }
    (t.elapsed(), black_box(sum))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The plain UTC jobs must give the crate's slots: the translation is checked before it
/// is timed.
fn sanity_check(jobs: &[Job], starts: &[Start]) {
    let mut checked = 0;
    for (j, s) in jobs.iter().zip(starts) {
        if let (Start::Utc(d), "plain") = (s, j.class) {
            let theirs = j.theirs.after(d).next().map(|n| n.timestamp_millis());
            assert_eq!(j.ours.next_after(j.start).map(|u| u.0), theirs);
            checked += 1;
        }
    }
    println!("sanity: {checked} plain UTC jobs give the cron crate's next slot");
}

fn main() {
    let n = env_usize("BENCH_JOBS", 100_000);
    let rounds = env_usize("BENCH_ROUNDS", 5).max(1);
    let passes = env_usize("BENCH_PASSES", 3).max(1);
    let jobs = jobs(n);
    let starts = baseline_starts(&jobs);
    sanity_check(&jobs, &starts);
    println!(
        "next slot of {n} cron jobs ({} expressions x {} zones), {rounds} rounds per pass",
        EXPRESSIONS.len(),
        ZONES.len()
    );
    let classes = [None, Some("plain"), Some("or"), Some("special")];
    let mut met = 0;
    for pass in 1..=passes {
        for class in classes {
            let name = class.unwrap_or("all");
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                if round % 2 == 0 {
                    ours.push(run_ours(&jobs, class).0);
                    theirs.push(run_theirs(&jobs, &starts, class).0);
                } else {
                    theirs.push(run_theirs(&jobs, &starts, class).0);
                    ours.push(run_ours(&jobs, class).0);
                }
            }
            let (o, t) = (median(ours), median(theirs));
            let ratio = o.as_secs_f64() / t.as_secs_f64();
            if name == "all" && ratio <= 1.5 {
                met += 1;
            }
            println!(
                "pass {pass} {name:>8}: starling {:>8.2} ms, cron crate {:>8.2} ms, ratio {ratio:.2}x",
                o.as_secs_f64() * 1e3,
                t.as_secs_f64() * 1e3,
            );
        }
    }
    println!("target <= 1.5x for all jobs: met in {met} of {passes} passes");
}
