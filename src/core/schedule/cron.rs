//! The cron dialect (Vixie/Debian): parses and checks each field, matches dates, and
//! translates the fields for the `cron` crate, which searches for the next time.
//!
//! The `cron` crate numbers Sunday 1, ANDs day-of-month with day-of-week and knows no
//! `L`, `W` or `#` (issue 13), so it never sees the fields as written: it gets the time,
//! month and year sets as explicit lists, plus the day sets when its AND can express the
//! day rule. Otherwise [`Days`] picks the days and the crate only finds the time of day.

use chrono::{Datelike, NaiveDate};

/// The seven field names, in the order of a 7-field expression.
pub(super) const FIELD_NAMES: [&str; 7] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
    "year",
];

/// The first and last year a schedule can fire in (the `cron` crate's range).
pub(super) const YEARS: (u32, u32) = (1970, 2100);

const MONTHS: [&str; 12] = [
    "JANUARY",
    "FEBRUARY",
    "MARCH",
    "APRIL",
    "MAY",
    "JUNE",
    "JULY",
    "AUGUST",
    "SEPTEMBER",
    "OCTOBER",
    "NOVEMBER",
    "DECEMBER",
];
const WEEKDAYS: [&str; 7] = [
    "SUNDAY",
    "MONDAY",
    "TUESDAY",
    "WEDNESDAY",
    "THURSDAY",
    "FRIDAY",
    "SATURDAY",
];

/// One field's position in a 7-field expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Second,
    Minute,
    Hour,
    Dom,
    Month,
    Dow,
    Year,
}

impl Kind {
    pub(super) const ALL: [Kind; 7] = [
        Kind::Second,
        Kind::Minute,
        Kind::Hour,
        Kind::Dom,
        Kind::Month,
        Kind::Dow,
        Kind::Year,
    ];

    pub(super) fn name(self) -> &'static str {
        FIELD_NAMES[self as usize]
    }

    /// The values a number may take. Day-of-week accepts 7 as Sunday.
    fn bounds(self) -> (u32, u32) {
        match self {
            Kind::Second | Kind::Minute => (0, 59),
            Kind::Hour => (0, 23),
            Kind::Dom => (1, 31),
            Kind::Month => (1, 12),
            Kind::Dow => (0, 7),
            Kind::Year => YEARS,
        }
    }

    /// The values `*` stands for, and where `a/n` stops (day-of-week: Saturday).
    fn span(self) -> (u32, u32) {
        match self {
            Kind::Dow => (0, 6),
            k => k.bounds(),
        }
    }

    fn must_be(self) -> String {
        let (lo, hi) = self.bounds();
        match self {
            Kind::Month => "must be 1-12 or JAN-DEC".into(),
            Kind::Dow => "must be 0-7 (0 and 7 are Sunday) or SUN-SAT".into(),
            _ => format!("must be {lo}-{hi}"),
        }
    }

    /// What a step restarts with, for the message refusing a step longer than the field.
    fn cycle(self) -> &'static str {
        match self {
            Kind::Second => "minute",
            Kind::Minute => "hour",
            Kind::Hour => "day",
            Kind::Dom => "month",
            Kind::Month => "year",
            Kind::Dow => "week",
            Kind::Year => "century",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Kind::Second | Kind::Minute | Kind::Hour | Kind::Year => {
                "use numbers, `*`, ranges `a-b`, lists `a,b` or steps `*/n`"
            }
            Kind::Dom => {
                "use 1-31, `*`, `?`, `L` (the last day), `LW` (the last weekday), `15W` (the \
                 weekday nearest the 15th), ranges, lists or steps"
            }
            Kind::Month => "use 1-12 or JAN-DEC, `*`, ranges, lists or steps",
            Kind::Dow => {
                "use 0-7 (0 and 7 are Sunday) or SUN-SAT, `*`, `?`, `5L` (the last Friday), \
                 `2#2` (the second Tuesday), ranges, lists or steps"
            }
        }
    }
}

/// A set of small numbers (0..192): a field's values, offset by nothing (years by 1970).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Bits([u64; 3]);

impl Bits {
    fn insert(&mut self, v: u32) {
        self.0[(v / 64) as usize] |= 1 << (v % 64);
    }
    fn contains(&self, v: u32) -> bool {
        v < 192 && self.0[(v / 64) as usize] & (1 << (v % 64)) != 0
    }
    fn is_empty(&self) -> bool {
        self.0 == [0; 3]
    }
}

/// How day-of-month and day-of-week pick a day, `L`, `W` and `#` included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Days {
    /// Days of the month (bits 1..=31).
    dom: u32,
    /// `L`: the month's last day.
    last: bool,
    /// `LW`: the month's last weekday (Monday to Friday).
    last_weekday: bool,
    /// `15W`: the weekday nearest the 15th, in the same month (bits 1..=31).
    nearest: u32,
    /// Days of the week (bits 0..=6, Sunday 0).
    dow: u8,
    /// `5L`: the month's last Friday (bits 0..=6).
    dow_last: u8,
    /// `2#2`: the second Tuesday; `dow_nth[k]` holds the weekdays wanted in week k + 1.
    dow_nth: [u8; 5],
    /// Both fields restricted: a day matches either (Vixie cron). Otherwise both must.
    or: bool,
}

const ALL_DOM: u32 = 0xFFFF_FFFE;
const ALL_DOW: u8 = 0x7F;

impl Days {
    fn has_specials(&self) -> bool {
        self.last || self.last_weekday || self.nearest != 0 || self.dow_last != 0 || {
            self.dow_nth.iter().any(|&n| n != 0)
        }
    }

    /// The (day-of-month, day-of-week) sets the `cron` crate's AND can use for this rule,
    /// or `None` when it cannot express it.
    pub(super) fn plain(&self) -> Option<(u32, u8)> {
        if self.has_specials() {
            None
        } else if !self.or {
            Some((self.dom, self.dow))
        } else if self.dom == ALL_DOM || self.dow == ALL_DOW {
            Some((ALL_DOM, ALL_DOW))
        } else {
            None
        }
    }

    /// True if the rule picks `date`. Computed day by day; [`Days::month_mask`] computes
    /// a whole month another way, and tests hold the two against each other.
    pub(super) fn matches(&self, date: NaiveDate) -> bool {
        let (y, m, d) = (date.year(), date.month(), date.day());
        let n = days_in_month(y, m);
        let w = date.weekday().num_days_from_sunday();
        let mut dom = self.dom & (1 << d) != 0
            || (self.last && d == n)
            || (self.last_weekday && d == last_weekday(y, m));
        if !dom && self.nearest != 0 {
            dom = (1..=31)
                .filter(|k| self.nearest & (1 << k) != 0)
                .any(|k| nearest_weekday(y, m, k) == Some(d));
        }
        let dow = self.dow & (1 << w) != 0
            || (self.dow_last & (1 << w) != 0 && d + 7 > n)
            || self.dow_nth[((d - 1) / 7) as usize] & (1 << w) != 0;
        if self.or { dom || dow } else { dom && dow }
    }

    /// The days of `month` the rule picks, as bits 1..=31.
    pub(super) fn month_mask(&self, year: i32, month: u32) -> u32 {
        let n = days_in_month(year, month);
        let valid = ALL_DOM & (u32::MAX >> (31 - n));
        let mut dom = self.dom & valid;
        if self.last {
            dom |= 1 << n;
        }
        if self.last_weekday {
            dom |= 1 << last_weekday(year, month);
        }
        let mut nearest = self.nearest;
        while nearest != 0 {
            let k = nearest.trailing_zeros();
            nearest &= nearest - 1;
            if let Some(d) = nearest_weekday(year, month, k) {
                dom |= 1 << d;
            }
        }
        let first = weekday(year, month, 1);
        let mut dow = 0;
        for w in 0..7u32 {
            // The days of the month that fall on weekday `w`: d0, d0 + 7, ...
            let d0 = 1 + (w + 7 - first) % 7;
            let mut each = 0u32;
            let mut d = d0;
            while d <= n {
                each |= 1 << d;
                d += 7;
            }
            if self.dow & (1 << w) != 0 {
                dow |= each;
            }
            if self.dow_last & (1 << w) != 0 {
                dow |= 1 << (31 - each.leading_zeros());
            }
            for (k, wanted) in self.dow_nth.iter().enumerate() {
                let d = d0 + 7 * k as u32;
                if wanted & (1 << w) != 0 && d <= n {
                    dow |= 1 << d;
                }
            }
        }
        if self.or { dom | dow } else { dom & dow }
    }
}

/// A parsed cron expression: its fields as sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Fields {
    seconds: u64,
    minutes: u64,
    hours: u32,
    /// Bits 1..=12.
    months: u16,
    /// Years since 1970.
    years: Bits,
    days: Days,
    /// The minute or the hour field starts with `*` (`*`, `*/5`): Debian cron runs such
    /// jobs by the clock across DST changes, and others at their wall-clock time.
    pub(super) wild: bool,
}

/// Why [`Fields::parse`] refused an expression.
#[derive(Debug)]
pub(super) enum ParseError {
    /// Not 5, 6 or 7 fields.
    Count(usize),
    /// This field, as written, and what is wrong with it.
    Field(Kind, String, String),
}

/// What a field parses into.
#[derive(Default)]
struct Parsed {
    values: Bits,
    /// Day fields: their specials.
    days: Days,
    /// The text starts with `*` or is `?` (Vixie's DOM_STAR / DOW_STAR).
    star: bool,
}

impl Fields {
    /// Parses 5, 6 or 7 whitespace-separated fields.
    pub(super) fn parse(fields: &[&str]) -> Result<Fields, ParseError> {
        let texts: Vec<&str> = match fields.len() {
            5 => ["0"].iter().chain(fields).copied().chain(["*"]).collect(),
            6 => fields.iter().copied().chain(["*"]).collect(),
            7 => fields.to_vec(),
            n => return Err(ParseError::Count(n)),
        };
        let mut parsed = Vec::with_capacity(7);
        for (kind, text) in Kind::ALL.into_iter().zip(&texts) {
            let p = parse_field(kind, text)
                .map_err(|reason| ParseError::Field(kind, text.to_string(), reason))?;
            parsed.push(p);
        }
        let bits64 = |p: &Parsed| p.values.0[0];
        let (dom, dow) = (&parsed[3], &parsed[5]);
        let days = Days {
            dom: bits64(dom) as u32,
            dow: bits64(dow) as u8,
            or: !dom.star && !dow.star,
            ..combine(&dom.days, &dow.days)
        };
        Ok(Fields {
            seconds: bits64(&parsed[0]),
            minutes: bits64(&parsed[1]),
            hours: bits64(&parsed[2]) as u32,
            months: bits64(&parsed[4]) as u16,
            years: parsed[6].values,
            days,
            wild: texts[1].starts_with('*') || texts[2].starts_with('*'),
        })
    }

    pub(super) fn days(&self) -> &Days {
        &self.days
    }

    pub(super) fn has_year(&self, y: i32) -> bool {
        u32::try_from(y)
            .ok()
            .and_then(|y| y.checked_sub(YEARS.0))
            .is_some_and(|i| self.years.contains(i))
    }

    /// The earliest time of day that matches.
    pub(super) fn first_time(&self) -> chrono::NaiveTime {
        chrono::NaiveTime::from_hms_opt(
            self.hours.trailing_zeros(),
            self.minutes.trailing_zeros(),
            self.seconds.trailing_zeros(),
        )
        .expect("every time field holds a value")
    }

    pub(super) fn has_month(&self, m: u32) -> bool {
        self.months & (1 << m) != 0
    }

    /// True if the wall-clock time `t` matches every field.
    pub(super) fn matches(&self, t: chrono::NaiveDateTime) -> bool {
        use chrono::Timelike;
        self.seconds & (1 << t.second()) != 0
            && self.minutes & (1 << t.minute()) != 0
            && self.hours & (1 << t.hour()) != 0
            && self.has_month(t.month())
            && self.has_year(t.year())
            && self.days.matches(t.date())
    }

    /// The first date on or after `from` whose year, month and day match, if any before
    /// the end of year 2100.
    pub(super) fn next_day(&self, from: NaiveDate) -> Option<NaiveDate> {
        let (mut y, mut m, mut d) = (from.year(), from.month(), from.day());
        while y <= YEARS.1 as i32 {
            if !self.has_year(y) {
                (y, m, d) = (y + 1, 1, 1);
                continue;
            }
            if self.has_month(m) {
                let mask = self.days.month_mask(y, m) & (u32::MAX << d);
                if mask != 0 {
                    return NaiveDate::from_ymd_opt(y, m, mask.trailing_zeros());
                }
            }
            (y, m, d) = if m == 12 {
                (y + 1, 1, 1)
            } else {
                (y, m + 1, 1)
            };
        }
        None
    }

    /// The expression the `cron` crate searches with: explicit lists in its own
    /// numbering (Sunday 1), and the days left to [`Days`] when its AND cannot say them.
    pub(super) fn engine_text(&self) -> String {
        let (dom, dow) = self.days.plain().unwrap_or((ALL_DOM, ALL_DOW));
        let dow_engine = (0..7)
            .filter(|w| dow & (1 << w) != 0)
            .map(|w| w + 1)
            .fold(0u64, |acc, w| acc | 1 << w);
        let years: Vec<u32> = (YEARS.0..=YEARS.1)
            .filter(|y| self.years.contains(y - YEARS.0))
            .collect();
        format!(
            "{} {} {} {} {} {} {}",
            list(self.seconds, 0, 59),
            list(self.minutes, 0, 59),
            list(u64::from(self.hours), 0, 23),
            list(u64::from(dom), 1, 31),
            list(u64::from(self.months), 1, 12),
            list(dow_engine, 1, 7),
            ranges(&years, YEARS),
        )
    }
}

fn combine(dom: &Days, dow: &Days) -> Days {
    Days {
        last: dom.last,
        last_weekday: dom.last_weekday,
        nearest: dom.nearest,
        dow_last: dow.dow_last,
        dow_nth: dow.dow_nth,
        ..Days::default()
    }
}

/// `*` for a full set, otherwise its runs as `a-b` ranges and single values.
fn list(bits: u64, lo: u32, hi: u32) -> String {
    let values: Vec<u32> = (lo..=hi).filter(|v| bits & (1 << v) != 0).collect();
    ranges(&values, (lo, hi))
}

fn ranges(values: &[u32], (lo, hi): (u32, u32)) -> String {
    if values.len() as u32 == hi - lo + 1 {
        return "*".into();
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let mut j = i;
        while j + 1 < values.len() && values[j + 1] == values[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            values[i].to_string()
        } else {
            format!("{}-{}", values[i], values[j])
        });
        i = j + 1;
    }
    out.join(",")
}

fn parse_field(kind: Kind, text: &str) -> Result<Parsed, String> {
    let mut p = Parsed {
        star: text.starts_with('*') || text == "?",
        ..Parsed::default()
    };
    for item in text.split(',') {
        let whole = item == text;
        parse_item(kind, item, whole, &mut p)?;
    }
    if p.values.is_empty() && p.days == Days::default() {
        // Only reachable through steps that select nothing; kept as a guard.
        return Err("selects no value".into());
    }
    Ok(p)
}

/// Says which part of the field a complaint is about, unless it is the whole field.
fn about(item: &str, whole: bool) -> String {
    if whole {
        String::new()
    } else {
        format!("`{item}` ")
    }
}

fn parse_item(kind: Kind, item: &str, whole: bool, p: &mut Parsed) -> Result<(), String> {
    let at = about(item, whole);
    if item.is_empty() {
        return Err("has an empty list item".into());
    }
    let upper = item.to_ascii_uppercase();
    if kind == Kind::Dom {
        if upper == "L" {
            p.days.last = true;
            return Ok(());
        }
        if upper == "LW" {
            p.days.last_weekday = true;
            return Ok(());
        }
        if let Some(day) = upper.strip_suffix('W') {
            let d = number(day)
                .ok_or_else(|| format!("{at}needs a day number before `W`, like `15W`"))?;
            if !(1..=31).contains(&d) {
                return Err(format!("{at}the day before `W` must be 1-31"));
            }
            p.days.nearest |= 1 << d;
            return Ok(());
        }
    }
    if kind == Kind::Dow {
        if let Some(w) = upper.strip_suffix('L') {
            if w.is_empty() {
                return Err(format!(
                    "{at}`L` in day-of-week needs a weekday before it, like `5L` (the last Friday)"
                ));
            }
            let w = weekday_value(w).map_err(|e| format!("{at}{e}"))?;
            p.days.dow_last |= 1 << (w % 7);
            return Ok(());
        }
        if let Some((w, nth)) = upper.split_once('#') {
            let w = weekday_value(w).map_err(|e| format!("{at}{e}"))?;
            match number(nth) {
                Some(n @ 1..=5) => p.days.dow_nth[n as usize - 1] |= 1 << (w % 7),
                _ => return Err(format!("{at}the week after `#` must be 1-5, like `2#2`")),
            }
            return Ok(());
        }
    }
    // Letters that mean something in another field only (`15W` in the month field).
    for (mark, only, what) in [
        ('W', "day-of-month", "nearest weekday, `15W`"),
        ('#', "day-of-week", "nth weekday, `2#2`"),
    ] {
        if item.contains(mark) && !is_name(kind, item) && kind.name() != only {
            return Err(format!("{at}`{mark}` ({what}) is only allowed in {only}"));
        }
    }
    if upper.ends_with('L') && !is_name(kind, item) && !matches!(kind, Kind::Dom | Kind::Dow) {
        return Err(format!(
            "{at}`L` (last) is only allowed in day-of-month and day-of-week"
        ));
    }
    let (base, step) = match item.split_once('/') {
        Some((b, s)) => (b, Some(s)),
        None => (item, None),
    };
    let (span_lo, span_hi) = kind.span();
    let (lo, hi) = if base == "*" || base == "?" {
        if base == "?" && !matches!(kind, Kind::Dom | Kind::Dow) {
            return Err(format!(
                "{at}`?` is only allowed in day-of-month and day-of-week"
            ));
        }
        (span_lo, span_hi)
    } else if let Some((a, b)) = base.split_once('-') {
        let a = value(kind, a, whole, item)?;
        let mut b = value(kind, b, whole, item)?;
        // `SAT-SUN`: Sunday as 7 closes a range of weekdays.
        if kind == Kind::Dow && b == 0 && a > 0 {
            b = 7;
        }
        if a > b {
            let (lo, hi) = kind.bounds();
            return Err(format!(
                "{at}range `{base}` runs backwards; split it, like `{a}-{hi},{lo}-{b}`"
            ));
        }
        (a, b)
    } else {
        let v = value(kind, base, whole, item)?;
        match step {
            Some(_) => (v, span_hi.max(v)),
            None => (v, v),
        }
    };
    let step = match step {
        None => 1,
        Some(s) => {
            let size = kind.bounds().1 - kind.bounds().0 + 1;
            let size = if kind == Kind::Dow { 7 } else { size };
            match number(s) {
                Some(n) if (1..=size).contains(&n) => n,
                _ => {
                    let mut m = format!(
                        "{at}the step in `{item}` must be 1-{size} (a cron step starts over every {})",
                        kind.cycle()
                    );
                    if matches!(kind, Kind::Second | Kind::Minute | Kind::Hour) {
                        m.push_str("; for longer intervals use `@every`, like `@every 90m`");
                    }
                    return Err(m);
                }
            }
        }
    };
    let offset = if kind == Kind::Year { YEARS.0 } else { 0 };
    let mut v = lo;
    while v <= hi {
        // Day-of-week 7 is Sunday, 0.
        let stored = if kind == Kind::Dow { v % 7 } else { v - offset };
        p.values.insert(stored);
        v += step;
    }
    Ok(())
}

fn number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Digits beyond u32 are out of every range: keep them as a huge value.
    Some(s.parse().unwrap_or(u32::MAX))
}

fn name_value(kind: Kind, s: &str) -> Option<u32> {
    let upper = s.to_ascii_uppercase();
    let table: &[&str] = match kind {
        Kind::Month => &MONTHS,
        Kind::Dow => &WEEKDAYS,
        _ => return None,
    };
    let first = if kind == Kind::Month { 1 } else { 0 };
    table
        .iter()
        .position(|n| upper == *n || (upper.len() == 3 && n.starts_with(&upper)))
        .map(|i| i as u32 + first)
}

fn is_name(kind: Kind, s: &str) -> bool {
    s.split(['-', '/'])
        .any(|part| name_value(kind, part).is_some())
}

/// A number or name within the field's bounds.
fn value(kind: Kind, s: &str, whole: bool, item: &str) -> Result<u32, String> {
    let (lo, hi) = kind.bounds();
    if let Some(v) = number(s) {
        if v < lo || v > hi {
            let at = if whole && s == item {
                String::new()
            } else {
                format!("`{s}` ")
            };
            return Err(format!("{at}{}", kind.must_be()));
        }
        return Ok(v);
    }
    if let Some(v) = name_value(kind, s) {
        return Ok(v);
    }
    let at = about(item, whole);
    Err(match kind {
        Kind::Month => format!("{at}`{s}` is not a month: use 1-12 or JAN-DEC"),
        Kind::Dow => format!("{at}`{s}` is not a weekday: use 0-7 (0 and 7 are Sunday) or SUN-SAT"),
        _ if s.is_empty() => format!("{at}is incomplete: {}", kind.hint()),
        _ => format!("{at}`{s}` is not valid here: {}", kind.hint()),
    })
}

fn weekday_value(s: &str) -> Result<u32, String> {
    match number(s) {
        Some(v @ 0..=7) => Ok(v),
        Some(_) => Err(format!("`{s}` {}", Kind::Dow.must_be())),
        None => name_value(Kind::Dow, s).ok_or_else(|| {
            format!("`{s}` is not a weekday: use 0-7 (0 and 7 are Sunday) or SUN-SAT")
        }),
    }
}

pub(super) fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Day of the week of a date, Sunday 0.
fn weekday(year: i32, month: u32, day: u32) -> u32 {
    NaiveDate::from_ymd_opt(year, month, day)
        .map(|d| d.weekday().num_days_from_sunday())
        .unwrap_or(0)
}

/// The month's last Monday-to-Friday day.
fn last_weekday(year: i32, month: u32) -> u32 {
    let n = days_in_month(year, month);
    match weekday(year, month, n) {
        0 => n - 2,
        6 => n - 1,
        _ => n,
    }
}

/// The Monday-to-Friday day nearest day `k` without leaving the month (Quartz's `kW`);
/// `None` when the month has no day `k`.
fn nearest_weekday(year: i32, month: u32, k: u32) -> Option<u32> {
    let n = days_in_month(year, month);
    if k > n {
        return None;
    }
    Some(match weekday(year, month, k) {
        6 if k == 1 => 3,
        6 => k - 1,
        0 if k == n => k - 2,
        0 => k + 1,
        _ => k,
    })
}
