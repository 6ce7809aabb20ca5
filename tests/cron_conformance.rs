//! Conformance of Starling's cron schedules with two reference implementations, croniter
//! and cronsim (issue 13).
//!
//! `tests/fixtures/cron/conformance.toml` holds, per (expression, timezone, start) case,
//! the next fire times each reference computed; `scripts/cron_fixtures.py` writes it (run
//! by hand; this test needs no Python). Every case where Starling disagrees with a
//! reference must be listed in `tests/fixtures/cron/differences.toml` with its reason, and
//! every listing must still disagree, so the list stays the whole truth.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat};
use serde::Deserialize;
use starling::core::schedule::parse_timezone;
use starling::{Schedule, UnixMillis};

const FIXTURE: &str = include_str!("fixtures/cron/conformance.toml");
const DIFFERENCES: &str = include_str!("fixtures/cron/differences.toml");
const REFERENCES: [&str; 2] = ["croniter", "cronsim"];

#[derive(Deserialize)]
struct Fixture {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    id: String,
    expr: String,
    timezone: String,
    start: String,
    croniter: Vec<String>,
    cronsim: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Differences {
    reasons: BTreeMap<String, String>,
    difference: Vec<Difference>,
}

/// One case where Starling deliberately differs, and from which reference(s), by reason.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Difference {
    case: String,
    croniter: Option<String>,
    cronsim: Option<String>,
}

impl Case {
    fn reference(&self, name: &str) -> &[String] {
        match name {
            "croniter" => &self.croniter,
            _ => &self.cronsim,
        }
    }

    /// Starling's answer in the fixture's form: up to as many times as a reference may
    /// give, then "end" if there are no more, or "error: ..." for a refused expression.
    fn ours(&self) -> Vec<String> {
        let tz = parse_timezone(&self.timezone).expect("the fixture's zones exist");
        let schedule = match Schedule::parse(&self.expr, tz) {
            Ok(s) => s,
            Err(e) => return vec![format!("error: {e}")],
        };
        let start = DateTime::parse_from_rfc3339(&self.start).expect("RFC 3339 start");
        let mut t = UnixMillis(start.timestamp_millis());
        let mut out = Vec::new();
        for _ in 0..5 {
            let Some(next) = schedule.next_after(t) else {
                out.push("end".to_string());
                break;
            };
            let local = DateTime::from_timestamp_millis(next.0)
                .expect("in range")
                .with_timezone(&tz);
            out.push(local.to_rfc3339_opts(SecondsFormat::AutoSi, false));
            t = next;
        }
        out
    }
}

/// Both refusing counts as agreeing, whatever the words; otherwise the times must match.
fn agree(ours: &[String], theirs: &[String]) -> bool {
    let refused = |v: &[String]| v.first().is_some_and(|s| s.starts_with("error:"));
    if refused(ours) || refused(theirs) {
        refused(ours) && refused(theirs)
    } else {
        ours == theirs
    }
}

#[test]
fn starling_agrees_with_croniter_and_cronsim_except_where_listed() {
    let fixture: Fixture = toml::from_str(FIXTURE).expect("the fixture parses");
    let listed: Differences = toml::from_str(DIFFERENCES).expect("the differences parse");
    assert!(
        fixture.case.len() >= 150,
        "issue 13 asks for at least 150 cases"
    );
    let ids: BTreeSet<&str> = fixture.case.iter().map(|c| c.id.as_str()).collect();
    let mut reasons_used = BTreeSet::new();
    let mut expected = BTreeMap::new();
    for d in &listed.difference {
        assert!(ids.contains(d.case.as_str()), "unknown case `{}`", d.case);
        for (reference, reason) in [("croniter", &d.croniter), ("cronsim", &d.cronsim)] {
            if let Some(reason) = reason {
                assert!(
                    listed.reasons.contains_key(reason),
                    "`{}`: no reason `{reason}`",
                    d.case
                );
                reasons_used.insert(reason.as_str());
                let old = expected.insert((d.case.as_str(), reference), reason.as_str());
                assert!(old.is_none(), "`{}` listed twice", d.case);
            }
        }
    }
    let unused: Vec<_> = listed
        .reasons
        .keys()
        .filter(|r| !reasons_used.contains(r.as_str()))
        .collect();
    assert!(unused.is_empty(), "reasons never used: {unused:?}");

    let mut problems = Vec::new();
    let mut agreed = BTreeMap::<&str, usize>::new();
    let mut both = 0;
    for case in &fixture.case {
        let ours = case.ours();
        let mut differs = 0;
        for reference in REFERENCES {
            let theirs = case.reference(reference);
            let listed = expected.get(&(case.id.as_str(), reference));
            match (agree(&ours, theirs), listed) {
                (true, None) => *agreed.entry(reference).or_default() += 1,
                (false, Some(_)) => differs += 1,
                (true, Some(reason)) => problems.push(format!(
                    "{}: listed as differing from {reference} ({reason}) but agrees: {ours:?}",
                    case.id
                )),
                (false, None) => problems.push(format!(
                    "{}: `{}` in {} after {}: differs from {reference}, not listed\n  ours:   {ours:?}\n  theirs: {theirs:?}",
                    case.id, case.expr, case.timezone, case.start
                )),
            }
        }
        if differs == REFERENCES.len() {
            both += 1;
        }
    }
    println!(
        "{} cases: agree with croniter {}, with cronsim {}; listed differences: croniter {}, \
         cronsim {}; differ from both {}",
        fixture.case.len(),
        agreed.get("croniter").copied().unwrap_or(0),
        agreed.get("cronsim").copied().unwrap_or(0),
        listed
            .difference
            .iter()
            .filter(|d| d.croniter.is_some())
            .count(),
        listed
            .difference
            .iter()
            .filter(|d| d.cronsim.is_some())
            .count(),
        both,
    );
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
