#!/usr/bin/env python3
"""Reference outputs for Starling's cron conformance suite (issue 13).

Writes tests/fixtures/cron/conformance.toml: for each (expression, timezone, start) case,
the next fire times after `start` as computed by two Python cron libraries, croniter and
cronsim. tests/cron_conformance.rs computes the same with Starling and fails on any
disagreement that tests/fixtures/cron/differences.toml does not list with its reason.

Run it by hand when the cases change; the Rust test needs no Python:

    pip install croniter cronsim
    python3 scripts/cron_fixtures.py

Each reference output is a list of up to N times in RFC 3339 with the zone's offset, then
"end" when the reference found no further time, or a single "error: ..." when it refused
the expression. Timezones come from Python's zoneinfo (the system tz database); the file
header records its version and both libraries' versions.

Where a reference spells a rule another way, it gets its own spelling (same meaning):
- cronsim has no @ shorthands: it gets the 5-field expression the shorthand stands for;
- croniter writes "the last Friday" as `L5`, not `5L`;
- croniter reads 6 and 7 fields with the seconds first when told so
  (second_at_beginning=True), which is Starling's order.
Nothing else is translated: an expression a reference does not support stays an error.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from croniter import croniter
from cronsim import CronSim

N = 5
UTC = "UTC"
NEW_YEAR = "2027-01-01T00:00:00Z"  # a Friday

SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def case(cid, expr, zone=UTC, start=NEW_YEAR, note=""):
    return {"id": cid, "expr": expr, "timezone": zone, "start": start, "note": note}


def plain_cases():
    """Cases without a DST change: the dialect."""
    c = []
    # The expressions issue 13 names.
    c += [
        case("issue/weekdays-at-nine", "0 9 * * 1-5", note="Monday to Friday"),
        case("issue/dow-7-is-sunday", "0 0 * * 7"),
        case("issue/dow-0-is-sunday", "0 0 * * 0"),
        case("issue/dow-list", "0 0 * * 1,3,5", note="Mon, Wed, Fri"),
        case("issue/dow-names", "0 9 * * MON-FRI"),
        case("issue/dom-or-dow", "0 0 13 * 5", note="every 13th and every Friday"),
        case("issue/never-fires", "0 0 30 2 *", note="refused"),
        case("issue/annually", "@annually"),
        case("issue/midnight", "@midnight"),
        case("issue/minute-61", "61 * * * *", note="refused"),
        case("issue/fall-back-every-30-minutes", "*/30 * * * *", "America/New_York",
             "2027-11-07T04:00:00Z", note="both passes of 01:00-01:59"),
        case("issue/fall-back-hourly", "0 * * * *", "America/New_York",
             "2027-11-07T03:30:00Z", note="both passes of 01:00"),
        case("issue/spring-forward-daily", "30 2 * * *", "Europe/Paris",
             "2027-03-27T12:00:00Z", note="03:00 on 2027-03-28"),
        case("issue/third-friday", "0 0 * * 5#3"),
        case("issue/last-friday", "0 0 * * 5L"),
        case("issue/nearest-weekday", "0 0 15W * *"),
    ]
    for short in ["@yearly", "@monthly", "@weekly", "@daily", "@hourly"]:
        c.append(case(f"shorthand/{short[1:]}", short))
    # Day of week.
    for cid, expr in [
        ("dow/range-0-6-step-2", "0 0 * * 0-6/2"),
        ("dow/names-step", "0 0 * * MON-FRI/2"),
        ("dow/lower-case", "0 0 * * mon,wed"),
        ("dow/full-name", "0 0 * * Friday"),
        ("dow/sat-sun", "0 0 * * SAT-SUN"),
        ("dow/5-7", "0 0 * * 5-7"),
        ("dow/1-7", "0 0 * * 1-7"),
        ("dow/star-step-3", "0 0 * * */3"),
        ("dow/start-step", "0 0 * * 1/2"),
        ("dow/backwards", "0 0 * * 5-1"),
        ("dow/8", "0 0 * * 8"),
        ("dow/question-mark", "0 12 ? * WED"),
        ("dow/first-monday", "0 12 * * 1#1"),
        ("dow/fifth-friday", "0 0 * * 5#5"),
        ("dow/fifth-monday-of-february", "0 0 * 2 1#5"),
        ("dow/second-tuesday", "0 0 * * 2#2"),
        ("dow/last-sunday", "0 0 * * 0L"),
        ("dow/last-sunday-as-7", "0 0 * * 7L"),
        ("dow/week-6", "0 0 * * 1#6"),
    ]:
        c.append(case(cid, expr))
    # Day of month, and both day fields.
    for cid, expr in [
        ("dom/first-and-fifteenth", "0 0 1,15 * *"),
        ("dom/step", "0 0 */10 * *"),
        ("dom/range-step", "0 0 1-31/7 * *"),
        ("dom/31st", "0 0 31 * *"),
        ("dom/last", "0 0 L * *"),
        ("dom/last-of-february", "0 0 L 2 *"),
        ("dom/last-weekday", "0 0 LW * *"),
        ("dom/first-weekday", "0 0 1W * *"),
        ("dom/nearest-31st", "0 0 31W * *"),
        ("dom/32", "0 0 32 * *"),
        ("dom/april-31st", "0 0 31 4 *"),
        ("both/first-and-mondays", "0 0 1,15 * MON"),
        ("both/star-step-and-monday", "0 0 */2 * 1"),
        ("both/first-week-or-monday", "0 0 1-7 * 1"),
        ("both/question-mark", "0 0 13 * ?"),
        ("both/last-or-friday", "0 0 L * 5"),
        ("both/star-and-last-friday", "0 0 * * 5L"),
        ("both/31st-or-sunday-in-april", "0 0 31 4 0"),
    ]:
        c.append(case(cid, expr))
    # Minutes, hours, months, steps, ranges.
    for cid, expr in [
        ("time/every-7-minutes", "*/7 * * * *"),
        ("time/from-5-every-15", "5/15 * * * *"),
        ("time/office-hours", "10-40/10 9-17 * * *"),
        ("time/every-5-hours", "0 */5 * * *"),
        ("time/hour-list", "30 0,12,23 * * *"),
        ("time/backwards-hours", "0 22-2 * * *"),
        ("time/step-0", "*/0 * * * *"),
        ("time/minute-60", "60 * * * *"),
        ("time/hour-24", "0 24 * * *"),
        ("month/quarterly", "0 0 1 */3 *"),
        ("month/names", "0 0 1 JAN,JUL *"),
        ("month/lower-range", "0 0 1 jan-mar *"),
        ("month/13", "0 0 1 13 *"),
        ("month/w-in-month", "0 0 * 15W *"),
        ("fields/four", "0 0 * *"),
    ]:
        c.append(case(cid, expr))
    # Seconds first (6 fields) and years (7 fields).
    for cid, expr, start in [
        ("six/every-15-seconds", "*/15 * * * * *", NEW_YEAR),
        ("six/weekdays", "0 0 9 * * 1-5", NEW_YEAR),
        ("six/seconds-list", "5,35 */10 * * * *", NEW_YEAR),
        ("six/or", "30 0 0 13 * 5", NEW_YEAR),
        ("seven/leap-days", "0 0 0 29 2 * 2028-2036", NEW_YEAR),
        ("seven/one-year", "0 0 12 1 1 * 2030", NEW_YEAR),
        ("seven/year-list", "0 0 0 1 1 * 2027,2029,2031", NEW_YEAR),
        ("seven/year-step", "0 0 0 1 6 * 2030/5", NEW_YEAR),
        ("seven/last-years", "0 0 0 1 1 * 2099-2100", "2098-06-01T00:00:00Z"),
        ("seven/year-1969", "0 0 0 1 1 * 1969", NEW_YEAR),
        ("seven/feb-29-2027", "0 0 0 29 2 * 2027", NEW_YEAR),
    ]:
        c.append(case(cid, expr, start=start))
    # Leap days.
    for cid, expr, start in [
        ("leap/feb-29", "0 0 29 2 *", NEW_YEAR),
        ("leap/feb-29-monday-or", "0 0 29 2 1", NEW_YEAR),
        ("leap/2096-and-after", "0 0 29 2 *", "2095-01-01T00:00:00Z"),
        ("leap/last-of-february-2100", "0 0 L 2 *", "2098-01-01T00:00:00Z"),
        ("leap/century-2000", "0 12 29 2 *", "1999-01-01T00:00:00Z"),
    ]:
        c.append(case(cid, expr, start=start))
    # Zones without a DST change in the window: a fixed offset of half an hour.
    for cid, expr, zone in [
        ("zone/kolkata-daily", "30 9 * * *", "Asia/Kolkata"),
        ("zone/kolkata-weekdays", "0 18 * * 1-5", "Asia/Kolkata"),
        ("zone/tokyo-or", "0 0 13 * 5", "Asia/Tokyo"),
        ("zone/tehran-hourly", "15 * * * *", "Asia/Tehran"),
    ]:
        c.append(case(cid, expr, zone=zone))
    return c


DST_ZONES = [
    "America/New_York",
    "Europe/Paris",
    "Europe/London",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/Havana",
    "Pacific/Chatham",
]


def transitions(zone, year=2027):
    """The instants (UTC) in `year` where `zone`'s offset changes, and whether it grows."""
    tz = ZoneInfo(zone)
    t = datetime(year, 1, 1, tzinfo=timezone.utc)
    prev = t.astimezone(tz).utcoffset()
    out = []
    while t.year == year:
        # Every transition here falls on a quarter hour.
        t2 = t + timedelta(minutes=15)
        off = t2.astimezone(tz).utcoffset()
        if off != prev:
            out.append((t2, off > prev))
        prev, t = off, t2
    return out


def iso(dt):
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def dst_cases():
    """Around both 2027 changes of each zone: the rules of issue 13."""
    c = []
    for zone in DST_ZONES:
        tz = ZoneInfo(zone)
        for change, forward in transitions(zone):
            before = (change - timedelta(seconds=1)).astimezone(tz)
            after = change.astimezone(tz)
            kind = "spring" if forward else "fall"
            if forward:
                # The gap: local times from just after `before` up to `after`.
                start_local = before + timedelta(seconds=1)
            else:
                # The repeated interval starts at `after` (local), in both passes.
                start_local = after
            # Times 15 and 25 minutes into the skipped or repeated interval (wall clock).
            t15 = start_local + timedelta(minutes=15)
            h, m = t15.hour, t15.minute
            m2 = (t15 + timedelta(minutes=10)).minute
            day_before = iso(change - timedelta(hours=26))
            hours_before = iso(change - timedelta(hours=3))
            just_before = iso(change - timedelta(minutes=90))
            p = f"dst/{zone}/{kind}"
            c += [
                case(f"{p}/fixed", f"{m} {h} * * *", zone, day_before),
                case(f"{p}/fixed-two", f"{m},{m2} {h} * * *", zone, day_before),
                case(f"{p}/every-15-minutes", "*/15 * * * *", zone, just_before),
                case(f"{p}/hourly", "0 * * * *", zone, hours_before),
                case(f"{p}/minute-step-fixed-hour", f"*/20 {h} * * *", zone, day_before),
                case(f"{p}/six-field-fixed", f"0 {m} {h} * * *", zone, day_before),
                case(f"{p}/daily", "@daily", zone, day_before),
            ]
            if not forward:
                # Starting inside the second pass of the repeated interval.
                inside = iso(change + timedelta(minutes=20))
                c.append(case(f"{p}/fixed-from-second-pass", f"{m} {h} * * *", zone, inside))
    return c


def fmt(dt):
    return dt.isoformat()


def start_in(zone, start):
    return datetime.fromisoformat(start.replace("Z", "+00:00")).astimezone(ZoneInfo(zone))


def run_croniter(expr, zone, start):
    spelled = re.sub(r"\b([0-7])L\b", r"L\1", expr)
    kw = {}
    if not expr.startswith("@") and len(expr.split()) in (6, 7):
        kw["second_at_beginning"] = True
    try:
        it = croniter(spelled, start_in(zone, start), **kw)
    except Exception as e:  # the reference refuses the expression
        return [f"error: {type(e).__name__}: {e}"]
    out = []
    for _ in range(N):
        try:
            out.append(fmt(it.get_next(datetime)))
        except Exception as e:
            if "failed to find" in str(e) or type(e).__name__ == "CroniterBadDateError":
                out.append("end")
                break
            return [f"error: {type(e).__name__}: {e}"]
    return out


def run_cronsim(expr, zone, start):
    spelled = SHORTHANDS.get(expr.lower(), expr)
    try:
        it = CronSim(spelled, start_in(zone, start))
    except Exception as e:
        return [f"error: {type(e).__name__}: {e}"]
    out = []
    for _ in range(N):
        try:
            out.append(fmt(next(it)))
        except StopIteration:
            out.append("end")
            break
        except Exception as e:
            return [f"error: {type(e).__name__}: {e}"]
    return out


def toml_str(s):
    # JSON string syntax is valid TOML basic-string syntax for these characters.
    return json.dumps(s, ensure_ascii=True)


def toml_list(xs):
    return "[" + ", ".join(toml_str(x) for x in xs) + "]"


def tzdata_version():
    for path in ["/usr/share/zoneinfo/tzdata.zi"]:
        if os.path.exists(path):
            with open(path) as f:
                return f.readline().strip().removeprefix("# version ")
    return "unknown"


def main():
    cases = plain_cases() + dst_cases()
    ids = [c["id"] for c in cases]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        sys.exit(f"duplicate case ids: {sorted(dupes)}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_path = os.path.join(root, "tests", "fixtures", "cron", "conformance.toml")
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    lines = [
        "# Generated by scripts/cron_fixtures.py; do not edit by hand.",
        f"# croniter {importlib.metadata.version('croniter')}, "
        f"cronsim {importlib.metadata.version('cronsim')}, tz database {tzdata_version()}.",
        f"# Up to {N} next fire times after `start`; \"end\": no further time; "
        "\"error: ...\": refused.",
        "",
    ]
    for c in cases:
        ci = run_croniter(c["expr"], c["timezone"], c["start"])
        cs = run_cronsim(c["expr"], c["timezone"], c["start"])
        lines += [
            "[[case]]",
            f"id = {toml_str(c['id'])}",
            f"expr = {toml_str(c['expr'])}",
            f"timezone = {toml_str(c['timezone'])}",
            f"start = {toml_str(c['start'])}",
        ]
        if c["note"]:
            lines.append(f"note = {toml_str(c['note'])}")
        lines += [f"croniter = {toml_list(ci)}", f"cronsim = {toml_list(cs)}", ""]
    with open(out_path, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {len(cases)} cases to {os.path.relpath(out_path, root)}")


if __name__ == "__main__":
    main()
