//! Property tests of cron schedules (issue 13): whatever the expression, timezone, DST
//! rule and start, the next slot is later than the start, slots strictly increase, each
//! is a slot by the independent `is_slot`, and no input string makes parsing panic.

use proptest::prelude::*;
use starling::core::schedule::{Dst, parse_timezone};
use starling::{Schedule, UnixMillis};

const ZONES: [&str; 7] = [
    "UTC",
    "America/New_York",
    "Europe/Paris",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Pacific/Chatham",
    "Asia/Kolkata",
];

/// 1970-01-01 to 2101-01-01 (a little past the last year a schedule can fire in).
const SPAN_MS: std::ops::Range<i64> = 0..4_133_980_800_000;

/// One field item as cron users write them, valid or not.
fn item() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        Just("?".to_string()),
        Just("L".to_string()),
        Just("LW".to_string()),
        (0u32..70).prop_map(|n| n.to_string()),
        (0u32..35, 0u32..35).prop_map(|(a, b)| format!("{a}-{b}")),
        (0u32..35, 1u32..30).prop_map(|(a, s)| format!("{a}/{s}")),
        (1u32..8).prop_map(|s| format!("*/{s}")),
        (0u32..33).prop_map(|d| format!("{d}W")),
        (0u32..9).prop_map(|d| format!("{d}L")),
        (0u32..9, 0u32..7).prop_map(|(d, n)| format!("{d}#{n}")),
        prop::sample::select(vec![
            "MON",
            "fri",
            "Sunday",
            "JAN",
            "dec",
            "SAT-SUN",
            "MON-FRI/2"
        ])
        .prop_map(str::to_string),
    ]
}

fn field() -> impl Strategy<Value = String> {
    prop::collection::vec(item(), 1..4).prop_map(|items| items.join(","))
}

/// Expressions of 4 to 8 fields built from real items: most fail to parse, many parse.
fn expression() -> impl Strategy<Value = String> {
    prop::collection::vec(field(), 4..9).prop_map(|fields| fields.join(" "))
}

/// Expressions that parse: a time part and a day part from lists that are all valid.
fn valid_expression() -> impl Strategy<Value = String> {
    let seconds = prop::sample::select(vec!["", "0 ", "*/20 ", "5,35 "]);
    let minutes = prop::sample::select(vec!["0", "*/15", "30", "*", "0,30", "10-40/10", "59"]);
    let hours = prop::sample::select(vec!["*", "2", "1", "0", "*/3", "9-17", "23", "1,2,3"]);
    let days = prop::sample::select(vec![
        "* * *",
        "13 * 5",
        "L * *",
        "LW * *",
        "15W * *",
        "* * 5L",
        "* * 2#2",
        "*/2 * 1",
        "29 2 *",
        "1 JAN,JUL *",
        "? * SAT-SUN",
        "31 * 0",
        "1-7 * 1",
        "* 3,10 0",
    ]);
    (seconds, minutes, hours, days).prop_map(|(s, m, h, d)| format!("{s}{m} {h} {d}"))
}

fn zone() -> impl Strategy<Value = chrono_tz::Tz> {
    prop::sample::select(ZONES.to_vec()).prop_map(|z| parse_timezone(z).unwrap())
}

fn dst() -> impl Strategy<Value = Dst> {
    prop_oneof![Just(Dst::Debian), Just(Dst::Strict)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn slots_are_after_the_start_increase_and_are_slots(
        expr in valid_expression(),
        tz in zone(),
        rule in dst(),
        start in SPAN_MS,
    ) {
        let s = Schedule::parse_with(&expr, tz, rule).unwrap();
        let mut t = UnixMillis(start);
        for _ in 0..4 {
            let Some(next) = s.next_after(t) else { break };
            prop_assert!(next > t, "{expr} in {tz}: {next:?} is not after {t:?}");
            prop_assert!(s.is_slot(next), "{expr} in {tz} ({rule}): {next:?} is not a slot");
            t = next;
        }
    }

    #[test]
    fn any_string_parses_or_fails_without_panicking(text in ".{0,80}", tz in zone()) {
        if let Ok(s) = Schedule::parse(&text, tz) {
            let _ = s.next_after(UnixMillis(0));
        }
    }

    #[test]
    fn cron_like_fields_parse_or_fail_with_a_message(
        expr in expression(),
        tz in zone(),
        rule in dst(),
        start in any::<i64>(),
    ) {
        match Schedule::parse_with(&expr, tz, rule) {
            Ok(s) => {
                // Any start, even far outside the years a schedule can fire in.
                if let Some(next) = s.next_after(UnixMillis(start)) {
                    prop_assert!(next.0 > start);
                }
                let _ = s.is_slot(UnixMillis(start));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty() && !e.to_string().contains('^')),
        }
    }
}
