//! Process-level tests of `starling next` and `starling check` (issue 13): the real
//! binary, its output, its exit status, and the same slots whatever the process's own
//! timezone and locale.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_starling");

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("TZ").env_remove("LC_ALL");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `starling next` for `30 2 * * *` in Paris after 2027-03-27, plus `extra` flags.
fn paris(extra: &[&str]) -> Output {
    let mut args = vec![
        "next",
        "30 2 * * *",
        "--timezone",
        "Europe/Paris",
        "--after",
        "2027-03-27T00:00:00Z",
    ];
    args.extend_from_slice(extra);
    run(&args, &[])
}

#[test]
fn next_prints_fire_times_with_the_zones_offset() {
    let o = paris(&["--count", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Paris skips 02:30 on 2027-03-28: the job runs when the gap ends.
    assert_eq!(
        stdout(&o),
        "2027-03-27T02:30:00+01:00\n2027-03-28T03:00:00+02:00\n2027-03-29T02:30:00+02:00\n"
    );
    let o = paris(&["--count", "2", "--dst", "strict"]);
    assert_eq!(
        stdout(&o),
        "2027-03-27T02:30:00+01:00\n2027-03-29T02:30:00+02:00\n"
    );
    // Unquoted words are joined; shorthands work; UTC by default.
    let o = run(
        &[
            "next",
            "@annually",
            "--after",
            "2027-06-01T00:00:00Z",
            "--count",
            "1",
        ],
        &[],
    );
    assert_eq!(stdout(&o), "2028-01-01T00:00:00+00:00\n");
    let o = run(
        &[
            "next",
            "0",
            "9",
            "*",
            "*",
            "1-5",
            "--after",
            "2027-01-01T10:00:00Z",
            "--count",
            "1",
        ],
        &[],
    );
    assert_eq!(stdout(&o), "2027-01-04T09:00:00+00:00\n", "{}", stderr(&o));
}

#[test]
fn next_exits_2_with_the_error_on_stderr() {
    for (args, want) in [
        (
            vec!["next", "0 0 25 * * *"],
            "field `hour` (`25`): must be 0-23",
        ),
        (vec!["next", "0 0 30 2 *"], "never fires"),
        (vec!["next", "0 0 * * 5#6"], "`#` must be 1-5"),
        (
            vec!["next", "0 0 * * *", "--timezone", "Mars/Olympus"],
            "Mars/Olympus",
        ),
        (vec!["next", "0 0 * * *", "--after", "tomorrow"], "--after"),
        (vec!["next", "0 0 * * *", "--dst", "lenient"], "lenient"),
        (
            vec![
                "next",
                "0 0 0 1 1 * 2026",
                "--after",
                "2026-06-01T00:00:00Z",
            ],
            "never fires after 2026-06-01T00:00:00+00:00",
        ),
    ] {
        let o = run(&args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{args:?}: {}", stdout(&o));
        let e = stderr(&o);
        assert!(e.contains(want) && !e.contains("panicked"), "{args:?}: {e}");
    }
}

#[test]
fn every_process_timezone_and_locale_computes_the_same_slots() {
    // Across New York's fall-back, Lord Howe's 30-minute change and a leap day.
    let cases: [&[&str]; 3] = [
        &[
            "next",
            "*/30 * * * *",
            "--timezone",
            "America/New_York",
            "--after",
            "2027-11-07T04:40:00Z",
            "--count",
            "4",
        ],
        &[
            "next",
            "15 2 * * *",
            "--timezone",
            "Australia/Lord_Howe",
            "--after",
            "2027-10-02T00:00:00Z",
            "--count",
            "2",
        ],
        &[
            "next",
            "0 12 L 2 *",
            "--after",
            "2027-06-01T00:00:00Z",
            "--count",
            "2",
        ],
    ];
    let expected = [
        "2027-11-07T01:00:00-04:00\n2027-11-07T01:30:00-04:00\n2027-11-07T01:00:00-05:00\n2027-11-07T01:30:00-05:00\n",
        "2027-10-03T02:30:00+11:00\n2027-10-04T02:15:00+11:00\n",
        "2028-02-29T12:00:00+00:00\n2029-02-28T12:00:00+00:00\n",
    ];
    let envs: [&[(&str, &str)]; 6] = [
        &[],
        &[("TZ", "UTC"), ("LANG", "C")],
        &[("TZ", "America/New_York"), ("LANG", "en_US.UTF-8")],
        &[("TZ", "Australia/Lord_Howe"), ("LC_ALL", "de_DE.UTF-8")],
        &[("TZ", "Asia/Kolkata"), ("LC_ALL", "tr_TR.UTF-8")],
        &[("TZ", "Nowhere/Invalid"), ("LANG", "ja_JP.UTF-8")],
    ];
    for (args, want) in cases.iter().zip(expected) {
        for env in envs {
            let o = run(args, env);
            assert!(o.status.success(), "{args:?} {env:?}: {}", stderr(&o));
            assert_eq!(stdout(&o), want, "{args:?} under {env:?}");
        }
    }
}

#[test]
fn check_takes_the_file_or_the_jobs_flag_and_prints_slots_with_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.toml");
    std::fs::write(
        &file,
        "[[jobs]]\nname = \"report\"\nschedule = \"30 2 * * *\"\ntimezone = \"Europe/Paris\"\n\
         command = \"true\"\n\
         [[jobs]]\nname = \"tick\"\nschedule = \"*/15 * * * * *\"\ncommand = \"true\"\ndst = \"strict\"\n",
    )
    .unwrap();
    let path = file.to_string_lossy().into_owned();
    let by_flag = run(&["check", "--jobs", &path], &[]);
    let by_arg = run(&["check", &path], &[]);
    assert!(by_flag.status.success(), "{}", stderr(&by_flag));
    let text = stdout(&by_flag);
    let header = |l: &str| l.starts_with("tick") || l.starts_with("report");
    let strip = |t: &str| {
        t.lines()
            .filter(|l| header(l) || l.trim().starts_with("20"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&text).len(), 8, "{text}");
    assert!(
        text.contains("dst strict") && text.contains("dst debian"),
        "{text}"
    );
    let slots: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("20"))
        .collect();
    assert_eq!(slots.len(), 6, "three slots per job: {text}");
    for s in &slots[..3] {
        // 02:30 Paris time, in winter or summer (or 03:00 on the day of the change).
        assert!(
            chrono::DateTime::parse_from_rfc3339(s).is_ok()
                && (s.ends_with("+01:00") || s.ends_with("+02:00")),
            "{s}"
        );
    }
    for s in &slots[3..] {
        assert!(s.ends_with("+00:00"), "{s}");
    }
    // The same jobs either way (the slots move with the clock between the two runs).
    assert_eq!(
        text.lines().filter(|l| header(l)).collect::<Vec<_>>(),
        stdout(&by_arg)
            .lines()
            .filter(|l| header(l))
            .collect::<Vec<_>>()
    );
    let both = run(&["check", &path, "--jobs", &path], &[]);
    assert_eq!(both.status.code(), Some(2), "clap refuses both");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[jobs]]\nname = \"billing\"\nschedule = \"0 0 25 * * *\"\ncommand = \"true\"\n",
    )
    .unwrap();
    let o = run(&["check", "--jobs", &bad.to_string_lossy()], &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(
            "job `billing`: `schedule`: `0 0 25 * * *`: field `hour` (`25`): must be 0-23"
        ),
        "{}",
        stderr(&o)
    );
}
