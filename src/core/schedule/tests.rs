//! Unit tests of the dialect, the DST rules and their agreement with `is_slot`.

use super::*;

fn ms(rfc: &str) -> UnixMillis {
    UnixMillis(
        DateTime::parse_from_rfc3339(rfc)
            .unwrap()
            .timestamp_millis(),
    )
}

fn tz(name: &str) -> Tz {
    parse_timezone(name).unwrap()
}

/// The next `n` slots after `from`, in RFC 3339 with the zone's offset.
fn next_n(expr: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
    next_n_with(expr, zone, Dst::Debian, from, n)
}

fn next_n_with(expr: &str, zone: &str, dst: Dst, from: &str, n: usize) -> Vec<String> {
    let z = tz(zone);
    let s = Schedule::parse_with(expr, z, dst).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let mut t = ms(from);
    let mut out = Vec::new();
    for _ in 0..n {
        let Some(next) = s.next_after(t) else { break };
        assert!(next > t, "{expr}: {next:?} after {t:?}");
        out.push(
            DateTime::from_timestamp_millis(next.0)
                .unwrap()
                .with_timezone(&z)
                .to_rfc3339_opts(SecondsFormat::AutoSi, false),
        );
        t = next;
    }
    out
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

fn err(expr: &str) -> String {
    Schedule::parse(expr, Tz::UTC)
        .map(|_| "accepted".to_string())
        .unwrap_or_else(|e| e.to_string())
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
    let s = Schedule::parse("0 0 9 * * *", tz("Asia/Tokyo")).unwrap();
    // 09:00 in Tokyo is 00:00 UTC.
    assert_eq!(
        slots(&s, "2026-06-01T12:00:00Z", 1),
        ["2026-06-02T00:00:00.000Z"]
    );
}

// 2027-01-01 is a Friday.
const NEW_YEAR: &str = "2027-01-01T00:00:00Z";

#[test]
fn numeric_weekdays_count_from_sunday_0_and_7_is_sunday_too() {
    // Issue 13: the `cron` crate numbers Sunday 1, so `1-5` ran Sunday to Thursday.
    assert_eq!(
        next_n("0 9 * * 1-5", "UTC", NEW_YEAR, 6),
        [
            "2027-01-01T09:00:00+00:00", // Fri
            "2027-01-04T09:00:00+00:00", // Mon
            "2027-01-05T09:00:00+00:00",
            "2027-01-06T09:00:00+00:00",
            "2027-01-07T09:00:00+00:00",
            "2027-01-08T09:00:00+00:00", // Fri
        ]
    );
    for sunday in ["0", "7", "SUN", "sun", "Sunday"] {
        assert_eq!(
            next_n(&format!("0 0 * * {sunday}"), "UTC", NEW_YEAR, 2),
            ["2027-01-03T00:00:00+00:00", "2027-01-10T00:00:00+00:00"],
            "{sunday}"
        );
    }
    assert_eq!(
        next_n("0 0 * * 1,3,5", "UTC", NEW_YEAR, 3),
        [
            "2027-01-04T00:00:00+00:00",
            "2027-01-06T00:00:00+00:00",
            "2027-01-08T00:00:00+00:00"
        ]
    );
    assert_eq!(
        next_n("0 0 * * MON-FRI/2", "UTC", NEW_YEAR, 3),
        next_n("0 0 * * 1,3,5", "UTC", NEW_YEAR, 3)
    );
    assert_eq!(
        next_n("0 0 * * 0-6/2", "UTC", NEW_YEAR, 2),
        ["2027-01-02T00:00:00+00:00", "2027-01-03T00:00:00+00:00"]
    );
    assert_eq!(
        next_n("0 0 * * SAT-SUN", "UTC", NEW_YEAR, 3),
        [
            "2027-01-02T00:00:00+00:00",
            "2027-01-03T00:00:00+00:00",
            "2027-01-09T00:00:00+00:00"
        ]
    );
}

#[test]
fn restricted_day_of_month_and_day_of_week_match_either() {
    // Every Friday and every 13th.
    assert_eq!(
        next_n("0 0 13 * 5", "UTC", NEW_YEAR, 4),
        [
            "2027-01-08T00:00:00+00:00",
            "2027-01-13T00:00:00+00:00",
            "2027-01-15T00:00:00+00:00",
            "2027-01-22T00:00:00+00:00"
        ]
    );
    // `*` or `?` leaves it to the other field; so does a field starting with `*`.
    assert_eq!(
        next_n("0 0 ? * FRI", "UTC", NEW_YEAR, 2),
        ["2027-01-08T00:00:00+00:00", "2027-01-15T00:00:00+00:00"]
    );
    assert_eq!(
        next_n("0 0 13 * ?", "UTC", NEW_YEAR, 2),
        ["2027-01-13T00:00:00+00:00", "2027-02-13T00:00:00+00:00"]
    );
    // Odd days that are Mondays (Vixie cron: `*/2` counts as a star).
    assert_eq!(
        next_n("0 0 */2 * 1", "UTC", NEW_YEAR, 2),
        ["2027-01-11T00:00:00+00:00", "2027-01-25T00:00:00+00:00"]
    );
}

#[test]
fn last_nearest_weekday_and_nth_weekday() {
    assert_eq!(
        next_n("0 0 L * *", "UTC", NEW_YEAR, 3),
        [
            "2027-01-31T00:00:00+00:00",
            "2027-02-28T00:00:00+00:00",
            "2027-03-31T00:00:00+00:00"
        ]
    );
    assert_eq!(
        next_n("0 0 L 2 *", "UTC", NEW_YEAR, 2),
        ["2027-02-28T00:00:00+00:00", "2028-02-29T00:00:00+00:00"]
    );
    // Last weekday: 2027-01-31 is a Sunday, 2027-02-28 a Sunday too.
    assert_eq!(
        next_n("0 0 LW * *", "UTC", NEW_YEAR, 3),
        [
            "2027-01-29T00:00:00+00:00",
            "2027-02-26T00:00:00+00:00",
            "2027-03-31T00:00:00+00:00"
        ]
    );
    // 2027-05-15 is a Saturday: Friday the 14th. 2027-08-15 is a Sunday: Monday the 16th.
    assert_eq!(
        next_n("0 0 15W * *", "UTC", "2027-05-01T00:00:00Z", 4),
        [
            "2027-05-14T00:00:00+00:00",
            "2027-06-15T00:00:00+00:00",
            "2027-07-15T00:00:00+00:00",
            "2027-08-16T00:00:00+00:00"
        ]
    );
    // The nearest weekday stays in the month: 2027-05-01 is a Saturday, so Monday the 3rd;
    // 2027-10-31 is a Sunday, so Friday the 29th.
    assert_eq!(
        next_n("0 0 1W 5 *", "UTC", NEW_YEAR, 1),
        ["2027-05-03T00:00:00+00:00"]
    );
    assert_eq!(
        next_n("0 0 31W 10 *", "UTC", NEW_YEAR, 1),
        ["2027-10-29T00:00:00+00:00"]
    );
    assert_eq!(
        next_n("0 0 * * 5L", "UTC", NEW_YEAR, 3),
        [
            "2027-01-29T00:00:00+00:00",
            "2027-02-26T00:00:00+00:00",
            "2027-03-26T00:00:00+00:00"
        ]
    );
    assert_eq!(
        next_n("0 0 * * 2#2", "UTC", NEW_YEAR, 2),
        ["2027-01-12T00:00:00+00:00", "2027-02-09T00:00:00+00:00"]
    );
    assert_eq!(
        next_n("0 0 * * FRI#3", "UTC", NEW_YEAR, 1),
        ["2027-01-15T00:00:00+00:00"]
    );
    // A fifth Monday in February needs a leap year starting on a Monday: 2044.
    assert_eq!(
        next_n("0 0 * 2 1#5", "UTC", NEW_YEAR, 1),
        ["2044-02-29T00:00:00+00:00"]
    );
}

#[test]
fn shorthands_are_the_cron_expressions_they_stand_for() {
    for (short, long) in SHORTHANDS {
        assert_eq!(
            next_n(short, "Europe/Paris", NEW_YEAR, 3),
            next_n(long, "Europe/Paris", NEW_YEAR, 3),
            "{short}"
        );
    }
    assert_eq!(
        next_n("@annually", "UTC", NEW_YEAR, 1),
        ["2028-01-01T00:00:00+00:00"]
    );
    assert_eq!(
        next_n("@MIDNIGHT", "UTC", NEW_YEAR, 1),
        ["2027-01-02T00:00:00+00:00"]
    );
}

#[test]
fn years_and_leap_days() {
    assert_eq!(
        next_n("0 0 0 29 2 * 2028-2036", "UTC", NEW_YEAR, 4),
        [
            "2028-02-29T00:00:00+00:00",
            "2032-02-29T00:00:00+00:00",
            "2036-02-29T00:00:00+00:00"
        ]
    );
    // 2100 is no leap year, and the last year a schedule can fire in.
    assert!(next_n("0 0 0 29 2 * *", "UTC", "2097-01-01T00:00:00Z", 1).is_empty());
}

#[test]
fn errors_name_the_field_and_its_range() {
    let cases = [
        ("61 * * * *", "field `minute` (`61`): must be 0-59"),
        ("0 0 25 * * *", "field `hour` (`25`): must be 0-23"),
        (
            "0 0 0 * * FUNDAY",
            "field `day-of-week` (`FUNDAY`): `FUNDAY` is not a weekday: use 0-7 (0 and 7 are Sunday) or SUN-SAT",
        ),
        (
            "0 0 * * 8",
            "field `day-of-week` (`8`): must be 0-7 (0 and 7 are Sunday) or SUN-SAT",
        ),
        (
            "0 0 * 13 *",
            "field `month` (`13`): must be 1-12 or JAN-DEC",
        ),
        ("0 0 32 * *", "field `day-of-month` (`32`): must be 1-31"),
        (
            "0 0 1,32 * *",
            "field `day-of-month` (`1,32`): `32` must be 1-31",
        ),
        ("0 20-25 * * *", "field `hour` (`20-25`): `25` must be 0-23"),
        (
            "0 0 * * 5#6",
            "field `day-of-week` (`5#6`): the week after `#` must be 1-5, like `2#2`",
        ),
        (
            "0 0 * * 8L",
            "field `day-of-week` (`8L`): `8` must be 0-7 (0 and 7 are Sunday) or SUN-SAT",
        ),
        (
            "0 0 * 15W *",
            "field `month` (`15W`): `W` (nearest weekday, `15W`) is only allowed in day-of-month",
        ),
        (
            "0 0 32W * *",
            "field `day-of-month` (`32W`): the day before `W` must be 1-31",
        ),
        (
            "0 0 * * 1#2,9",
            "field `day-of-week` (`1#2,9`): `9` must be 0-7 (0 and 7 are Sunday) or SUN-SAT",
        ),
        (
            "0 L * * *",
            "field `hour` (`L`): `L` (last) is only allowed in day-of-month and day-of-week",
        ),
        (
            "? * * * *",
            "field `minute` (`?`): `?` is only allowed in day-of-month and day-of-week",
        ),
        (
            "*/0 * * * *",
            "field `minute` (`*/0`): the step in `*/0` must be 1-60 (a cron step starts over every hour); for longer intervals use `@every`, like `@every 90m`",
        ),
        (
            "0 22-2 * * *",
            "field `hour` (`22-2`): range `22-2` runs backwards; split it, like `22-23,0-2`",
        ),
        (
            "1,,2 * * * *",
            "field `minute` (`1,,2`): has an empty list item",
        ),
        (
            "0 0 0 1 1 * 1969",
            "field `year` (`1969`): must be 1970-2100",
        ),
        (
            "0 0 30 2 *",
            "never fires: no date from 1970 to 2100 has day-of-month `30` and month `2`",
        ),
        (
            "0 0 0 29 2 * 2027",
            "never fires: no date from 1970 to 2100 has day-of-month `29` and month `2` and year `2027`",
        ),
        (
            "0 0 31 4,6,9,11 *",
            "never fires: no date from 1970 to 2100 has day-of-month `31` and month `4,6,9,11`",
        ),
        (
            "* * *",
            "expected 5 fields (minute hour day-of-month month day-of-week), 6 (second first) or 7 (second first, year last), got 3",
        ),
        (
            "@reboot",
            "unknown schedule `@reboot`: use cron fields, `@every <duration>`, `@at <RFC 3339>`, `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight` or `@hourly`",
        ),
    ];
    for (expr, want) in cases {
        assert_eq!(err(expr), want, "{expr}");
    }
    // Never a bare caret, nor the `cron` crate's off-by-one limit.
    for expr in ["5#3 * * * *", "0 0 * * 5L,", "60 * * * *"] {
        let e = err(expr);
        assert!(
            !e.contains('^') && !e.contains("less than 59"),
            "{expr}: {e}"
        );
    }
    assert_eq!(
        Schedule::parse("* * *", Tz::UTC).unwrap_err(),
        ScheduleError::FieldCount(3)
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

#[test]
fn a_year_in_the_past_is_refused_against_the_callers_clock() {
    let s = Schedule::parse("0 0 0 1 1 * 2026", Tz::UTC).unwrap();
    assert!(s.check_fires_after(ms("2025-06-01T00:00:00Z")).is_ok());
    assert_eq!(
        s.check_fires_after(ms("2026-06-01T00:00:00Z"))
            .unwrap_err()
            .to_string(),
        "never fires after 2026-06-01T00:00:00Z"
    );
    // Only cron: a one-shot that has fired is not an error.
    let at = Schedule::parse("@at 2026-01-01T00:00:00Z", Tz::UTC).unwrap();
    assert!(at.check_fires_after(ms("2026-06-01T00:00:00Z")).is_ok());
}

/// Configurations of `Days` covering every kind of item, for the tests below.
fn day_rules() -> Vec<&'static str> {
    vec![
        "0 0 * * *",
        "0 0 13 * 5",
        "0 0 L * *",
        "0 0 LW * *",
        "0 0 1W,15W,31W * *",
        "0 0 * * 5L",
        "0 0 * * 0L,3#1,6#5",
        "0 0 L,13 * 1#2",
        "0 0 */2 * MON",
        "0 0 1-7 * 1",
        "0 0 ? * 7#1",
        "0 0 LW * 5L",
        "0 0 29 2 *",
    ]
}

#[test]
fn the_day_rule_agrees_day_by_day_and_month_by_month() {
    for expr in day_rules() {
        let texts: Vec<&str> = expr.split_whitespace().collect();
        let f = Fields::parse(&texts).unwrap();
        for year in [1970, 2000, 2024, 2027, 2028, 2100] {
            for month in 1..=12 {
                let mask = f.days().month_mask(year, month);
                for day in 1..=31 {
                    let by_day = NaiveDate::from_ymd_opt(year, month, day)
                        .is_some_and(|d| f.days().matches(d));
                    assert_eq!(
                        mask & (1 << day) != 0,
                        by_day,
                        "{expr} {year}-{month}-{day}"
                    );
                }
            }
        }
    }
}

/// Every slot in [from, to] found by brute force with `is_slot`, `step_s` seconds apart.
fn brute_force(s: &Schedule, from: &str, to: &str, step_s: i64) -> Vec<i64> {
    (ms(from).0 / 1000..=ms(to).0 / 1000)
        .step_by(step_s as usize)
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
fn the_engine_and_the_fields_agree_on_every_day_rule() {
    // Daily expressions checked minute by minute over two months in UTC: the `cron`
    // crate's search (with `Days` picking days when it cannot) against the fields alone.
    for expr in day_rules() {
        let s = Schedule::parse(expr, Tz::UTC).unwrap();
        let from = "2028-01-25T00:00:00Z";
        let to = "2028-03-05T00:00:00Z";
        assert_eq!(
            walked(&s, from, to),
            brute_force(&s, from, to, 60),
            "{expr}"
        );
    }
}

#[test]
fn never_firing_is_decided_over_the_whole_year_range() {
    // Fires, rarely: a fifth Monday in February (2044); 29 February on a Monday in a
    // Monday-only AND (`*` leading); the 31st in a 31-day month.
    for expr in ["0 0 * 2 1#5", "0 0 */29 2 1", "0 0 31 1-4 *"] {
        assert!(Schedule::parse(expr, Tz::UTC).is_ok(), "{expr}");
    }
}

// New York falls back on 2027-11-07 (01:00-01:59 twice) and springs forward on 2027-03-14
// (02:00-02:59 skipped); Paris springs forward on 2027-03-28 and falls back on 2027-10-31.

#[test]
fn wildcard_hour_jobs_run_in_both_passes_of_a_repeated_hour() {
    assert_eq!(
        next_n(
            "*/30 * * * *",
            "America/New_York",
            "2027-11-07T04:00:00Z",
            6
        ),
        [
            "2027-11-07T00:30:00-04:00",
            "2027-11-07T01:00:00-04:00",
            "2027-11-07T01:30:00-04:00",
            "2027-11-07T01:00:00-05:00",
            "2027-11-07T01:30:00-05:00",
            "2027-11-07T02:00:00-05:00",
        ]
    );
    assert_eq!(
        next_n("0 * * * *", "America/New_York", "2027-11-07T03:30:00Z", 4),
        [
            "2027-11-07T00:00:00-04:00",
            "2027-11-07T01:00:00-04:00",
            "2027-11-07T01:00:00-05:00",
            "2027-11-07T02:00:00-05:00",
        ]
    );
    // Minute `*/20` with hour 1 runs by the clock too (Debian: minute or hour starts
    // with `*`), also when the search starts late in the first pass.
    assert_eq!(
        next_n(
            "*/20 1 * * *",
            "America/New_York",
            "2027-11-07T05:45:00Z",
            4
        ),
        [
            "2027-11-07T01:00:00-05:00",
            "2027-11-07T01:20:00-05:00",
            "2027-11-07T01:40:00-05:00",
            "2027-11-08T01:00:00-05:00",
        ]
    );
}

#[test]
fn a_fixed_time_job_runs_a_repeated_time_once_at_its_first_occurrence() {
    assert_eq!(
        next_n("30 1 * * *", "America/New_York", "2027-11-06T12:00:00Z", 2),
        ["2027-11-07T01:30:00-04:00", "2027-11-08T01:30:00-05:00"]
    );
    // From inside the second pass, 01:30 has already happened today.
    assert_eq!(
        next_n("30 1 * * *", "America/New_York", "2027-11-07T06:10:00Z", 1),
        ["2027-11-08T01:30:00-05:00"]
    );
}

#[test]
fn a_fixed_time_job_runs_a_skipped_time_when_the_gap_ends() {
    assert_eq!(
        next_n("30 2 * * *", "Europe/Paris", "2027-03-27T12:00:00Z", 2),
        ["2027-03-28T03:00:00+02:00", "2027-03-29T02:30:00+02:00"]
    );
    // Several skipped times run once.
    assert_eq!(
        next_n(
            "0,15,30,45 2 * * *",
            "Europe/Paris",
            "2027-03-28T00:00:00Z",
            2
        ),
        ["2027-03-28T03:00:00+02:00", "2027-03-29T02:00:00+02:00"]
    );
    // A 6-field job follows the same rule.
    assert_eq!(
        next_n("15 30 2 * * *", "Europe/Paris", "2027-03-27T12:00:00Z", 1),
        ["2027-03-28T03:00:00+02:00"]
    );
    // Lord Howe Island springs forward by 30 minutes: 02:00-02:29 do not exist.
    assert_eq!(
        next_n(
            "15 2 * * *",
            "Australia/Lord_Howe",
            "2027-10-02T12:00:00Z",
            2
        ),
        ["2027-10-03T02:30:00+11:00", "2027-10-04T02:15:00+11:00"]
    );
}

#[test]
fn a_wildcard_job_skips_the_gap() {
    assert_eq!(
        next_n("*/15 * * * *", "Europe/Paris", "2027-03-28T00:40:00Z", 3),
        [
            "2027-03-28T01:45:00+01:00",
            "2027-03-28T03:00:00+02:00",
            "2027-03-28T03:15:00+02:00"
        ]
    );
    // Minute `*/5` in hour 2 is a wildcard job in Debian cron: nothing that day.
    assert_eq!(
        next_n("*/5 2 * * *", "Europe/Paris", "2027-03-28T00:50:00Z", 1),
        ["2027-03-29T02:00:00+02:00"]
    );
}

#[test]
fn strict_skips_missing_times_and_runs_repeated_ones_once() {
    let strict = |expr, zone, from, n| next_n_with(expr, zone, Dst::Strict, from, n);
    assert_eq!(
        strict("30 2 * * *", "Europe/Paris", "2027-03-27T12:00:00Z", 2),
        ["2027-03-29T02:30:00+02:00", "2027-03-30T02:30:00+02:00"]
    );
    assert_eq!(
        strict(
            "*/30 * * * *",
            "America/New_York",
            "2027-11-07T04:00:00Z",
            4
        ),
        [
            "2027-11-07T00:30:00-04:00",
            "2027-11-07T01:00:00-04:00",
            "2027-11-07T01:30:00-04:00",
            "2027-11-07T02:00:00-05:00",
        ]
    );
}

#[test]
fn a_thirty_minute_fall_back_repeats_half_an_hour() {
    // Lord Howe Island falls back from 02:00 (+11) to 01:30 (+10:30) on 2027-04-04.
    assert_eq!(
        next_n(
            "*/15 * * * *",
            "Australia/Lord_Howe",
            "2027-04-03T14:40:00Z",
            5
        ),
        [
            "2027-04-04T01:45:00+11:00",
            "2027-04-04T01:30:00+10:30",
            "2027-04-04T01:45:00+10:30",
            "2027-04-04T02:00:00+10:30",
            "2027-04-04T02:15:00+10:30",
        ]
    );
    assert_eq!(
        next_n(
            "45 1 * * *",
            "Australia/Lord_Howe",
            "2027-04-03T12:00:00Z",
            2
        ),
        ["2027-04-04T01:45:00+11:00", "2027-04-05T01:45:00+10:30"]
    );
}

#[test]
fn next_after_agrees_with_is_slot_across_dst_changes() {
    let windows = [
        (
            "America/New_York",
            "2027-03-14T05:30:00Z",
            "2027-03-14T08:30:00Z",
        ),
        (
            "America/New_York",
            "2027-11-07T04:30:00Z",
            "2027-11-07T07:30:00Z",
        ),
        (
            "Europe/Paris",
            "2027-03-28T00:30:00Z",
            "2027-03-28T02:30:00Z",
        ),
        (
            "Europe/Paris",
            "2027-10-30T23:30:00Z",
            "2027-10-31T02:30:00Z",
        ),
        (
            "Australia/Lord_Howe",
            "2027-04-03T14:00:00Z",
            "2027-04-03T16:30:00Z",
        ),
        (
            "Australia/Lord_Howe",
            "2027-10-02T14:30:00Z",
            "2027-10-02T16:30:00Z",
        ),
    ];
    let exprs = [
        "*/10 * * * * *",
        "0 */7 * * * *",
        "30 30 1,2,3 * * *",
        "0 15,45 2 * * *",
        "0 0,30 1 * * *",
        "*/20 2 * * *",
        "45 1 * * *",
        "0 * * * *",
    ];
    for dst in [Dst::Debian, Dst::Strict] {
        for (zone, from, to) in windows {
            for expr in exprs {
                let s = Schedule::parse_with(expr, tz(zone), dst).unwrap();
                let expected = brute_force(&s, from, to, 1);
                assert_eq!(
                    walked(&s, from, to),
                    expected,
                    "{expr} in {zone} from {from} ({dst})"
                );
            }
        }
    }
}

#[test]
fn a_search_may_start_anywhere_in_a_changing_hour() {
    // From every second of the two hours around each change, the next slot is the first
    // slot `is_slot` finds after it.
    let cases = [
        ("*/20 * * * *", "America/New_York", "2027-11-07T05:00:00Z"),
        ("0,30 1 * * *", "America/New_York", "2027-11-07T05:00:00Z"),
        ("30 2 * * *", "Europe/Paris", "2027-03-28T00:30:00Z"),
        (
            "*/15 * * * *",
            "Australia/Lord_Howe",
            "2027-04-03T14:30:00Z",
        ),
    ];
    for dst in [Dst::Debian, Dst::Strict] {
        for (expr, zone, from) in cases {
            let s = Schedule::parse_with(expr, tz(zone), dst).unwrap();
            let start = ms(from).0;
            let slots = brute_force(
                &s,
                from,
                &DateTime::from_timestamp_millis(start + 3 * 3_600_000)
                    .unwrap()
                    .to_rfc3339(),
                1,
            );
            for t in (start..start + 2 * 3_600_000).step_by(7_000) {
                let got = s.next_after(UnixMillis(t)).map(|u| u.0).unwrap();
                match slots.iter().copied().find(|&s| s > t) {
                    Some(want) => assert_eq!(got, want, "{expr} in {zone} after {t} ({dst})"),
                    // Past the window brute force looked at.
                    None => assert!(got > start + 3 * 3_600_000, "{expr} after {t}"),
                }
            }
        }
    }
}
