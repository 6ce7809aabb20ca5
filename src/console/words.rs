//! Schedules in words, for people reading the console: `*/5 9-17 * * 1-5` reads "every 5
//! minutes, between 09:00 and 17:59, Monday to Friday".
//!
//! [`describe`] reads the text of a schedule that [`crate::Schedule::parse`] accepted; the
//! parser stays the one authority on what a schedule means. A field this module cannot put
//! in words is quoted as written ("day-of-month `1-31/3`"), never guessed at.

/// Month names, January first.
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Weekday names, Sunday first (cron's 0; 7 is Sunday too).
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// At most this many times of day are listed ("at 09:00, 12:00 and 17:00"); more read as
/// a rule.
const MAX_LISTED_TIMES: usize = 6;

/// The schedule `spec` in English. Meant for text the schedule parser accepted; anything
/// else comes back quoted.
pub fn describe(spec: &str) -> String {
    let spec = spec.trim();
    if let Some(rest) = spec.strip_prefix("@every") {
        return every(rest.trim());
    }
    if let Some(rest) = spec.strip_prefix("@at") {
        return format!("once, at {}", rest.trim());
    }
    let expanded = match spec.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => spec,
    };
    let f: Vec<&str> = expanded.split_whitespace().collect();
    let (sec, rest) = match f.len() {
        5 => ("0", &f[..]),
        6 | 7 => (f[0], &f[1..]),
        _ => return format!("`{spec}`"),
    };
    let year = rest.get(5).copied();
    let mut parts = vec![time_of_day(sec, rest[0], rest[1])];
    let days = days(rest[2], rest[4]);
    let listed_times = parts[0].starts_with("at ");
    match days {
        Some(d) => parts.push(d),
        // "at 09:30" alone would leave the reader wondering which days.
        None if listed_times => parts.push("every day".into()),
        None => {}
    }
    if let Some(m) = month(rest[3]) {
        parts.push(m);
    }
    if let Some(y) = year.filter(|y| !is_any(y)) {
        parts.push(format!("in {}", y.replace(',', ", ").replace('-', " to ")));
    }
    parts.join(", ")
}

/// `@every` with its duration as written (`90s`, `1h 30m`).
fn every(text: &str) -> String {
    let Ok(d) = humantime::parse_duration(text) else {
        return format!("every {text}");
    };
    let ms = d.as_millis();
    let units: [(u128, &str); 5] = [
        (86_400_000, "day"),
        (3_600_000, "hour"),
        (60_000, "minute"),
        (1_000, "second"),
        (1, "millisecond"),
    ];
    for (size, unit) in units {
        if ms >= size && ms % size == 0 {
            return every_n(ms / size, unit);
        }
    }
    format!("every {text}")
}

fn every_n(n: u128, unit: &str) -> String {
    if n == 1 {
        format!("every {unit}")
    } else {
        format!("every {n} {unit}s")
    }
}

/// One field of a cron expression, read.
#[derive(Debug, PartialEq)]
enum Field {
    /// `*` or `?`.
    Any,
    /// `*/n` (from 0) or `a/n` and `a-b/n`.
    Step { from: u32, to: Option<u32>, by: u32 },
    /// A single range `a-b`.
    Range(u32, u32),
    /// Numbers: `5`, `0,30`.
    Values(Vec<u32>),
    /// Something else, kept as written.
    Other,
}

fn is_any(text: &str) -> bool {
    text == "*" || text == "?"
}

/// Reads a field; `name` turns a name (`MON`, `jan`) into its number.
fn read(text: &str, name: fn(&str) -> Option<u32>) -> Field {
    let num = |t: &str| t.parse::<u32>().ok().or_else(|| name(t));
    if is_any(text) {
        return Field::Any;
    }
    if let Some((range, by)) = text.split_once('/') {
        let Ok(by) = by.parse::<u32>() else {
            return Field::Other;
        };
        if is_any(range) {
            return Field::Step {
                from: 0,
                to: None,
                by,
            };
        }
        return match range.split_once('-') {
            Some((a, b)) => match (num(a), num(b)) {
                (Some(a), Some(b)) => Field::Step {
                    from: a,
                    to: Some(b),
                    by,
                },
                _ => Field::Other,
            },
            None => num(range).map_or(Field::Other, |from| Field::Step { from, to: None, by }),
        };
    }
    if let Some((a, b)) = text.split_once('-')
        && !text.contains(',')
    {
        return match (num(a), num(b)) {
            (Some(a), Some(b)) => Field::Range(a, b),
            _ => Field::Other,
        };
    }
    let values: Option<Vec<u32>> = text.split(',').map(num).collect();
    match values {
        Some(mut v) => {
            v.sort_unstable();
            v.dedup();
            Field::Values(v)
        }
        None => Field::Other,
    }
}

fn no_name(_: &str) -> Option<u32> {
    None
}

/// "0, 15 and 30".
fn list<T: std::fmt::Display>(items: &[T]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(|i| i.to_string()).collect();
            format!("{} and {last}", init.join(", "))
        }
    }
}

/// "minute 5" or "minutes 0 and 30".
fn units(unit: &str, values: &[u32]) -> String {
    let s = if values.len() == 1 { "" } else { "s" };
    format!("{unit}{s} {}", list(values))
}

/// The time-of-day part, from the second, minute and hour fields.
fn time_of_day(sec: &str, min: &str, hour: &str) -> String {
    let (s, m, h) = (read(sec, no_name), read(min, no_name), read(hour, no_name));
    // A few exact times: list them.
    if let (Field::Values(s), Field::Values(m), Field::Values(h)) = (&s, &m, &h)
        && s.len() * m.len() * h.len() <= MAX_LISTED_TIMES
    {
        let with_seconds = s.iter().any(|s| *s != 0);
        let mut times = Vec::new();
        for h in h {
            for m in m {
                for s in s {
                    times.push(if with_seconds {
                        format!("{h:02}:{m:02}:{s:02}")
                    } else {
                        format!("{h:02}:{m:02}")
                    });
                }
            }
        }
        return format!("at {}", list(&times));
    }
    let fixed = |f: &Field| matches!(f, Field::Values(_));
    let mut parts = Vec::new();
    if !fixed(&s) {
        // Something happens within each minute: the seconds lead.
        parts.push(repeat(&s, sec, "second"));
        parts.extend(within(&m, min, "minute"));
        parts.extend(hours_within(&h, hour));
    } else if !fixed(&m) {
        parts.push(repeat(&m, min, "minute"));
        if s != Field::Values(vec![0]) {
            parts.push(format!("at {}", field_values(&s, sec, "second")));
        }
        parts.extend(hours_within(&h, hour));
    } else {
        // Seconds and minutes fixed, hours a rule: "every 2 hours at minute 15".
        parts.push(repeat(&h, hour, "hour"));
        let on_the_hour = s == Field::Values(vec![0]) && m == Field::Values(vec![0]);
        if on_the_hour {
            parts[0].push_str(" on the hour");
        } else {
            let mut at = format!("at {}", field_values(&m, min, "minute"));
            if s != Field::Values(vec![0]) {
                at.push_str(&format!(" and {}", field_values(&s, sec, "second")));
            }
            parts.push(at);
        }
        if let Field::Range(a, b)
        | Field::Step {
            from: a,
            to: Some(b),
            ..
        } = h
        {
            parts.push(format!("between {a:02}:00 and {b:02}:59"));
        }
    }
    parts.join(", ")
}

/// The leading rule: "every second", "every 5 minutes", "every hour from 9".
fn repeat(f: &Field, text: &str, unit: &str) -> String {
    match f {
        Field::Any => format!("every {unit}"),
        Field::Step { from, to, by } => {
            let mut s = every_n(u128::from(*by), unit);
            match (from, to) {
                (0, None) => {}
                (a, None) => s.push_str(&format!(" from {unit} {a}")),
                (a, Some(b)) if unit != "hour" => s.push_str(&format!(" in {unit}s {a} to {b}")),
                _ => {}
            }
            s
        }
        Field::Range(a, b) if unit == "hour" => {
            let _ = (a, b);
            "every hour".into()
        }
        Field::Range(a, b) => format!("every {unit} from {unit} {a} to {b}"),
        Field::Values(v) => format!("at {}", units(unit, v)),
        Field::Other => format!("{unit} `{text}`"),
    }
}

/// A restriction by a coarser field: "during minutes 0 to 15".
fn within(f: &Field, text: &str, unit: &str) -> Option<String> {
    match f {
        Field::Any => None,
        Field::Step {
            from: 0,
            to: None,
            by,
        } => Some(format!("in every {} {unit}", nth(*by))),
        Field::Values(v) => Some(format!("during {}", units(unit, v))),
        Field::Range(a, b) => Some(format!("during {unit}s {a} to {b}")),
        _ => Some(format!("{unit} `{text}`")),
    }
}

/// The hours a finer rule runs in.
fn hours_within(f: &Field, text: &str) -> Option<String> {
    match f {
        Field::Any => None,
        Field::Range(a, b)
        | Field::Step {
            from: a,
            to: Some(b),
            by: 1,
        } => Some(format!("between {a:02}:00 and {b:02}:59")),
        Field::Values(v) => {
            let hours: Vec<String> = v.iter().map(|h| format!("{h:02}:00")).collect();
            let s = if v.len() == 1 { "" } else { "s" };
            Some(format!("in the hour{s} from {}", list(&hours)))
        }
        Field::Step { from, to, by } => {
            let mut s = format!("every {by} hours");
            if *from != 0 || to.is_some() {
                s = format!("hour `{text}`");
            }
            Some(s)
        }
        Field::Other => Some(format!("hour `{text}`")),
    }
}

/// "minute 5", "minutes 0 and 30", or the field as written.
fn field_values(f: &Field, text: &str, unit: &str) -> String {
    match f {
        Field::Values(v) => units(unit, v),
        _ => format!("{unit} `{text}`"),
    }
}

fn month_number(name: &str) -> Option<u32> {
    let n = name.to_ascii_lowercase();
    (n.len() >= 3)
        .then(|| {
            MONTHS
                .iter()
                .position(|m| m.to_ascii_lowercase().starts_with(&n))
        })
        .flatten()
        .map(|i| i as u32 + 1)
}

fn weekday_number(name: &str) -> Option<u32> {
    let n = name.to_ascii_lowercase();
    (n.len() >= 3)
        .then(|| {
            WEEKDAYS
                .iter()
                .position(|d| d.to_ascii_lowercase().starts_with(&n))
        })
        .flatten()
        .map(|i| i as u32)
}

fn month_name(n: u32) -> String {
    MONTHS
        .get((n as usize).wrapping_sub(1))
        .map_or_else(|| n.to_string(), |m| m.to_string())
}

fn weekday_name(n: u32) -> String {
    WEEKDAYS
        .get(n as usize % 7)
        .map_or_else(|| n.to_string(), |d| d.to_string())
}

/// "2nd", "11th", "23rd".
fn nth(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn ordinal(n: u32) -> String {
    match n {
        1 => "first".into(),
        2 => "second".into(),
        3 => "third".into(),
        4 => "fourth".into(),
        5 => "fifth".into(),
        _ => format!("{n}th"),
    }
}

/// The month clause; `None` for every month.
fn month(text: &str) -> Option<String> {
    Some(match read(text, month_number) {
        Field::Any => return None,
        Field::Values(v) => {
            let names: Vec<String> = v.into_iter().map(month_name).collect();
            format!("in {}", list(&names))
        }
        Field::Range(a, b) => format!("{} to {}", month_name(a), month_name(b)),
        Field::Step {
            from: 0 | 1,
            to: None,
            by,
        } => format!("every {by} months"),
        _ => format!("month `{text}`"),
    })
}

/// The day-of-month clause, when the field is restricted.
fn day_of_month(text: &str) -> String {
    let upper = text.to_ascii_uppercase();
    if upper == "L" {
        return "on the last day of the month".into();
    }
    if upper == "LW" {
        return "on the last weekday of the month".into();
    }
    if let Some(day) = upper.strip_suffix('W')
        && let Ok(day) = day.parse::<u32>()
    {
        return format!("on the weekday nearest day {day} of the month");
    }
    match read(text, no_name) {
        Field::Values(v) => format!("on {} of the month", units("day", &v)),
        Field::Range(a, b) => format!("on days {a} to {b} of the month"),
        Field::Step {
            from: 0 | 1,
            to: None,
            by,
        } => format!("every {by} days of the month, from the 1st"),
        _ => format!("on day-of-month `{text}`"),
    }
}

/// The day-of-week clause, when the field is restricted.
fn day_of_week(text: &str) -> String {
    let upper = text.to_ascii_uppercase();
    if let Some(day) = upper.strip_suffix('L')
        && let Some(d) = day.parse::<u32>().ok().or_else(|| weekday_number(day))
    {
        return format!("on the last {} of the month", weekday_name(d));
    }
    if let Some((day, nth)) = upper.split_once('#')
        && let Some(d) = day.parse::<u32>().ok().or_else(|| weekday_number(day))
        && let Ok(nth) = nth.parse::<u32>()
    {
        return format!("on the {} {} of the month", ordinal(nth), weekday_name(d));
    }
    match read(text, weekday_number) {
        Field::Values(v) => {
            let mut days: Vec<u32> = v.into_iter().map(|d| d % 7).collect();
            days.sort_unstable();
            days.dedup();
            let names: Vec<String> = days.into_iter().map(weekday_name).collect();
            format!("on {}", list(&names))
        }
        // `SAT-SUN` is Saturday and Sunday; `1-7` Monday to Sunday.
        Field::Range(a, b) => format!("{} to {}", weekday_name(a), weekday_name(b)),
        _ => format!("on day-of-week `{text}`"),
    }
}

/// The day part; `None` for every day.
fn days(dom: &str, dow: &str) -> Option<String> {
    match (is_any(dom), is_any(dow)) {
        (true, true) => None,
        (false, true) => Some(day_of_month(dom)),
        (true, false) => Some(day_of_week(dow)),
        // Vixie cron: both restricted match by OR, unless one starts with `*` (`*/2`),
        // which leaves the choice to the other, so both must match.
        (false, false) if dom.starts_with('*') || dow.starts_with('*') => {
            Some(format!("{} and {}", day_of_month(dom), day_of_week(dow)))
        }
        (false, false) => Some(format!("{} or {}", day_of_month(dom), day_of_week(dow))),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn common_schedules_read_as_a_person_would_say_them() {
        let table = [
            ("* * * * *", "every minute"),
            ("*/5 * * * *", "every 5 minutes"),
            ("0 * * * *", "every hour on the hour"),
            ("15 * * * *", "every hour, at minute 15"),
            ("0,30 * * * *", "every hour, at minutes 0 and 30"),
            ("0 */2 * * *", "every 2 hours on the hour"),
            ("30 9 * * *", "at 09:30, every day"),
            ("30 9 * * 1-5", "at 09:30, Monday to Friday"),
            ("0 9,17 * * *", "at 09:00 and 17:00, every day"),
            (
                "*/5 9-17 * * 1-5",
                "every 5 minutes, between 09:00 and 17:59, Monday to Friday",
            ),
            ("0 0 1 * *", "at 00:00, on day 1 of the month"),
            ("0 0 1,15 * *", "at 00:00, on days 1 and 15 of the month"),
            ("0 0 L * *", "at 00:00, on the last day of the month"),
            ("0 0 LW * *", "at 00:00, on the last weekday of the month"),
            (
                "0 0 15W * *",
                "at 00:00, on the weekday nearest day 15 of the month",
            ),
            ("0 0 * * 5L", "at 00:00, on the last Friday of the month"),
            (
                "0 0 * * 2#2",
                "at 00:00, on the second Tuesday of the month",
            ),
            (
                "0 0 13 * 5",
                "at 00:00, on day 13 of the month or on Friday",
            ),
            ("0 0 * * SAT-SUN", "at 00:00, Saturday to Sunday"),
            ("0 0 * * 0,7", "at 00:00, on Sunday"),
            (
                "0 0 1 1,7 *",
                "at 00:00, on day 1 of the month, in January and July",
            ),
            (
                "0 12 * JAN-MAR MON",
                "at 12:00, on Monday, January to March",
            ),
            ("@daily", "at 00:00, every day"),
            ("@hourly", "every hour on the hour"),
            ("@weekly", "at 00:00, on Sunday"),
            ("@yearly", "at 00:00, on day 1 of the month, in January"),
        ];
        for (spec, words) in table {
            assert_eq!(describe(spec), words, "{spec}");
        }
    }

    #[test]
    fn seconds_fields_and_years_are_read() {
        let table = [
            ("* * * * * *", "every second"),
            ("*/10 * * * * *", "every 10 seconds"),
            ("30 * * * * *", "every minute, at second 30"),
            ("15 30 9 * * *", "at 09:30:15, every day"),
            (
                "*/10 0-15 * * * *",
                "every 10 seconds, during minutes 0 to 15",
            ),
            ("0 0 12 * * * 2027", "at 12:00, every day, in 2027"),
        ];
        for (spec, words) in table {
            assert_eq!(describe(spec), words, "{spec}");
        }
    }

    #[test]
    fn every_and_at_read_in_whole_units() {
        assert_eq!(describe("@every 1s"), "every second");
        assert_eq!(describe("@every 90s"), "every 90 seconds");
        assert_eq!(describe("@every 10m"), "every 10 minutes");
        assert_eq!(describe("@every 2h"), "every 2 hours");
        assert_eq!(describe("@every 1d"), "every day");
        assert_eq!(
            describe("@at 2026-12-01T09:00:00Z"),
            "once, at 2026-12-01T09:00:00Z"
        );
    }

    #[test]
    fn what_it_cannot_read_is_quoted_not_guessed() {
        assert_eq!(describe("not a schedule"), "`not a schedule`");
        assert_eq!(
            describe("0 0 1-31/3 * *"),
            "at 00:00, on day-of-month `1-31/3`"
        );
    }
}
