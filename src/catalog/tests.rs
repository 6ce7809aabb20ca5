//! Table tests of the catalog's merge and resolution rules.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;

use super::keys::{
    FileSetMarker, decode_file_entry, decode_marker, decode_register, encode_file_entry,
    encode_marker, encode_register,
};
use super::*;

fn n(id: &str) -> NodeId {
    NodeId::new(id)
}

fn j(name: &str) -> JobId {
    JobId::new(name)
}

fn v(millis: i64, node: &str) -> Version {
    Version {
        millis,
        counter: 0,
        node: n(node),
    }
}

fn def(schedule: &str) -> JobDef {
    JobDef::from_raw(RawJob {
        name: Some("x".into()),
        schedule: Some(schedule.into()),
        command: Some("true".into()),
        ..RawJob::default()
    })
    .unwrap()
    .1
}

fn job_reg(millis: i64, node: &str, schedule: Option<&str>) -> Register {
    Register {
        version: v(millis, node),
        value: Value::Job(schedule.map(def).map(Box::new)),
    }
}

const NOW: UnixMillis = UnixMillis(1_000_000);

fn catalog(me: &str) -> Catalog {
    Catalog::new(n(me), CatalogConfig::default())
}

fn file_set(generation: u64, jobs: &[(&str, &str, i64, &str)]) -> FileSet {
    FileSet {
        generation,
        jobs: jobs
            .iter()
            .map(|(name, schedule, millis, node)| {
                (
                    j(name),
                    FileEntry {
                        version: v(*millis, node),
                        def: def(schedule),
                    },
                )
            })
            .collect(),
    }
}

#[test]
fn the_greatest_version_wins_whatever_the_order() {
    // (version millis, writer, schedule or tombstone) in arrival order -> expected winner.
    type Op = (i64, &'static str, Option<&'static str>);
    let cases: &[(&[Op], Option<&str>)] = &[
        (
            &[(1, "a", Some("@every 1s")), (2, "b", Some("@every 2s"))],
            Some("@every 2s"),
        ),
        (
            &[(2, "b", Some("@every 2s")), (1, "a", Some("@every 1s"))],
            Some("@every 2s"),
        ),
        // Same millisecond: the greater node id wins.
        (
            &[(5, "b", Some("@every 2s")), (5, "a", Some("@every 1s"))],
            Some("@every 2s"),
        ),
        (
            &[(5, "a", Some("@every 1s")), (5, "b", Some("@every 2s"))],
            Some("@every 2s"),
        ),
        // A tombstone wins over older definitions and loses to newer ones.
        (&[(1, "a", Some("@every 1s")), (3, "b", None)], None),
        (&[(3, "b", None), (1, "a", Some("@every 1s"))], None),
        (
            &[(3, "b", None), (4, "a", Some("@every 4s"))],
            Some("@every 4s"),
        ),
    ];
    for (ops, want) in cases {
        let mut c = catalog("me");
        for (millis, node, schedule) in *ops {
            c.observe(NOW, Key::Job(j("x")), job_reg(*millis, node, *schedule));
        }
        let got = c.resolve(&j("x")).map(|r| r.def.schedule);
        assert_eq!(got.as_deref(), *want, "{ops:?}");
    }
}

/// The schedule text of job `name`'s definition in `c`.
fn schedule_of(c: &Catalog, name: &str) -> std::sync::Arc<str> {
    match &c.register(&Key::Job(j(name))).unwrap().value {
        Value::Job(Some(d)) => d.schedule.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn definitions_with_the_same_schedule_share_one_copy_of_its_text() {
    let mut c = catalog("me");
    // Decoded one by one from gossip, each arrives with its own copy.
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let key = Key::Job(j(name));
        let r = job_reg(10 + i as i64, "a", Some("*/5 * * * *"));
        let r = decode_register(&key, &encode_register(&r)).unwrap();
        assert_eq!(c.observe(NOW, key, r), Observed::Newer(None));
    }
    c.put(NOW, j("c"), def("*/5 * * * *")).unwrap();
    let a = schedule_of(&c, "a");
    assert!(std::sync::Arc::ptr_eq(&a, &schedule_of(&c, "b")));
    assert!(std::sync::Arc::ptr_eq(&a, &schedule_of(&c, "c")));
    assert_eq!(&*a, "*/5 * * * *");
    // Another schedule is its own text; packing changes nothing that is read.
    c.put(NOW, j("b"), def("@every 2s")).unwrap();
    let hash = c.hash();
    c.compact();
    assert_eq!(c.hash(), hash);
    assert_eq!(&*schedule_of(&c, "b"), "@every 2s");
    assert!(std::sync::Arc::ptr_eq(&a, &schedule_of(&c, "c")));
}

#[test]
fn observe_reports_newer_same_older_and_refuses_the_far_future_and_the_expired() {
    let mut c = catalog("me");
    let key = Key::Job(j("x"));
    assert_eq!(
        c.observe(NOW, key.clone(), job_reg(10, "a", Some("@every 1s"))),
        Observed::Newer(None)
    );
    assert_eq!(
        c.observe(NOW, key.clone(), job_reg(10, "a", Some("@every 1s"))),
        Observed::Same
    );
    assert_eq!(
        c.observe(NOW, key.clone(), job_reg(9, "z", Some("@every 9s"))),
        Observed::Older
    );
    assert!(matches!(
        c.observe(NOW, key.clone(), job_reg(11, "a", None)),
        Observed::Newer(Some(_))
    ));
    let ahead = NOW.0 + 11 * 60 * 1000;
    assert_eq!(
        c.observe(NOW, key.clone(), job_reg(ahead, "a", Some("@every 1s"))),
        Observed::Refused,
        "more than 10 min ahead"
    );
    // A tombstone older than its lifetime is not taken back in.
    let old = NOW.0 - DEFAULT_TOMBSTONE_TTL.as_millis() as i64 - 1;
    assert_eq!(
        c.observe(NOW, Key::Job(j("y")), job_reg(old, "a", None)),
        Observed::Refused
    );
    // A definition that old is (definitions never expire).
    assert_eq!(
        c.observe(NOW, Key::Job(j("y")), job_reg(old, "a", Some("@every 1s"))),
        Observed::Newer(None)
    );
    // A value of the wrong kind for its key.
    let wrong = Register {
        version: v(12, "a"),
        value: Value::Pause(true),
    };
    assert_eq!(c.observe(NOW, key, wrong), Observed::Refused);
}

#[test]
fn files_win_over_the_api_and_drift_goes_to_the_most_nodes_then_the_newest() {
    struct Case {
        files: &'static [(&'static str, &'static str, i64)], // (node, schedule, version)
        api: Option<&'static str>,
        want: Option<(&'static str, &'static [&'static str])>, // (schedule, file nodes; [] = API)
        drift: bool,
        shadowed: bool,
    }
    let cases = [
        Case {
            files: &[],
            api: Some("@every 1s"),
            want: Some(("@every 1s", &[])),
            drift: false,
            shadowed: false,
        },
        Case {
            files: &[("a", "@every 2s", 5), ("b", "@every 2s", 6)],
            api: None,
            want: Some(("@every 2s", &["a", "b"])),
            drift: false,
            shadowed: false,
        },
        Case {
            files: &[("a", "@every 2s", 5)],
            api: Some("@every 1s"),
            want: Some(("@every 2s", &["a"])),
            drift: false,
            shadowed: true,
        },
        // Two nodes against one: the two win, although the one is newer.
        Case {
            files: &[
                ("a", "@every 2s", 5),
                ("b", "@every 3s", 9),
                ("c", "@every 2s", 1),
            ],
            api: None,
            want: Some(("@every 2s", &["a", "c"])),
            drift: true,
            shadowed: false,
        },
        // A tie: the newest load wins.
        Case {
            files: &[("a", "@every 2s", 5), ("b", "@every 3s", 9)],
            api: None,
            want: Some(("@every 3s", &["b"])),
            drift: true,
            shadowed: false,
        },
        Case {
            files: &[],
            api: None,
            want: None,
            drift: false,
            shadowed: false,
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let mut c = catalog("me");
        for (node, schedule, millis) in case.files {
            c.set_files(&n(node), file_set(1, &[("x", schedule, *millis, node)]));
        }
        if let Some(s) = case.api {
            c.observe(NOW, Key::Job(j("x")), job_reg(100, "z", Some(s)));
        }
        let got = c.resolve(&j("x"));
        match case.want {
            None => assert_eq!(got, None, "case {i}"),
            Some((schedule, nodes)) => {
                let got = got
                    .clone()
                    .unwrap_or_else(|| panic!("case {i}: nothing resolved"));
                assert_eq!(&*got.def.schedule, schedule, "case {i}");
                let want_source = if nodes.is_empty() {
                    Source::Api
                } else {
                    Source::File {
                        nodes: nodes.iter().map(|x| n(x)).collect(),
                    }
                };
                assert_eq!(got.source, want_source, "case {i}");
            }
        }
        let conflicts = c.conflicts(&j("x"));
        let drift = conflicts
            .iter()
            .any(|c| matches!(c, Conflict::FileDrift { .. }));
        let shadowed = conflicts
            .iter()
            .any(|c| matches!(c, Conflict::ApiShadowed { .. }));
        assert_eq!((drift, shadowed), (case.drift, case.shadowed), "case {i}");
        if let Some(Conflict::FileDrift { definitions, .. }) = conflicts.first() {
            assert!(definitions[0].chosen && !definitions[1].chosen, "case {i}");
            assert_eq!(
                Some(definitions[0].definition.schedule.clone().unwrap()),
                got.map(|g| g.def.schedule.to_string()),
                "case {i}: the chosen entry is the one that runs"
            );
        }
    }
}

#[test]
fn drift_resolution_does_not_depend_on_arrival_order() {
    let sets = [
        ("a", file_set(1, &[("x", "@every 2s", 5, "a")])),
        ("b", file_set(1, &[("x", "@every 3s", 9, "b")])),
        ("c", file_set(1, &[("x", "@every 4s", 9, "c")])),
    ];
    let mut hashes = Vec::new();
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
        let mut c = catalog("me");
        for i in order {
            c.set_files(&n(sets[i].0), sets[i].1.clone());
        }
        assert_eq!(
            &*c.resolve(&j("x")).unwrap().def.schedule,
            "@every 4s",
            "one each: the greatest version (9@c > 9@b) wins"
        );
        hashes.push(c.hash());
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
}

#[test]
fn writes_are_refused_for_file_jobs_handler_jobs_unknown_jobs_and_oversize_definitions() {
    let mut c = catalog("me");
    c.set_files(&n("a"), file_set(1, &[("f", "@every 1s", 1, "a")]));
    c.set_local([j("h")]);
    assert_eq!(
        c.put(NOW, j("f"), def("@every 2s")),
        Err(CatalogError::FileDefined {
            name: j("f"),
            nodes: vec![n("a")]
        })
    );
    assert_eq!(
        c.put(NOW, j("h"), def("@every 2s")),
        Err(CatalogError::LocalJob(j("h")))
    );
    assert!(matches!(
        c.delete(NOW, &j("f")),
        Err(CatalogError::FileDefined { .. })
    ));
    assert_eq!(
        c.delete(NOW, &j("nope")),
        Err(CatalogError::NotFound(j("nope")))
    );
    assert_eq!(
        c.set_paused(NOW, &j("nope"), true),
        Err(CatalogError::NotFound(j("nope")))
    );
    let mut big = def("@every 1s");
    big.command = Some("x".repeat(MAX_VALUE_BYTES).into());
    assert!(matches!(
        c.put(NOW, j("big"), big),
        Err(CatalogError::TooLarge {
            limit: MAX_VALUE_BYTES,
            ..
        })
    ));
    assert_eq!(c.resolve(&j("big")), None, "nothing was written");
    // Pausing works for any source; the error message names the nodes of a file job.
    assert!(c.set_paused(NOW, &j("f"), true).is_ok());
    assert!(c.resolve(&j("f")).unwrap().paused);
    let e = c
        .put(NOW, j("f"), def("@every 2s"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`f`") && e.contains("`a`"), "{e}");
}

#[test]
fn a_delete_also_resumes_so_a_job_created_again_runs() {
    let mut c = catalog("me");
    c.put(NOW, j("x"), def("@every 1s")).unwrap();
    c.set_paused(NOW, &j("x"), true).unwrap();
    let writes = c.delete(NOW, &j("x")).unwrap();
    assert_eq!(writes.len(), 2);
    assert_eq!(c.resolve(&j("x")), None);
    c.put(NOW, j("x"), def("@every 1s")).unwrap();
    let r = c.resolve(&j("x")).unwrap();
    assert!(!r.paused);
    assert_eq!(r.source, Source::Api);
}

#[test]
fn each_write_gets_a_version_above_everything_seen() {
    let mut c = catalog("me");
    // Another node, clock 5 s ahead, wrote the job.
    c.observe(
        NOW,
        Key::Job(j("x")),
        job_reg(NOW.0 + 5_000, "a", Some("@every 1s")),
    );
    let (_, r) = c.put(NOW, j("x"), def("@every 2s")).unwrap();
    assert!(r.version > v(NOW.0 + 5_000, "a"));
    assert_eq!(&*c.resolve(&j("x")).unwrap().def.schedule, "@every 2s");
}

#[test]
fn tombstones_and_requests_are_forgotten_after_their_lifetimes() {
    let mut c = Catalog::new(
        n("me"),
        CatalogConfig {
            tombstone_ttl: Duration::from_secs(60),
            request_ttl: Duration::from_secs(10),
            ..CatalogConfig::default()
        },
    );
    c.put(NOW, j("x"), def("@every 1s")).unwrap();
    c.put(NOW, j("y"), def("@every 1s")).unwrap();
    c.delete(NOW, &j("y")).unwrap();
    let (id, _) = c.request_run(NOW, &j("x")).unwrap();
    c.request_cancel(NOW, FireId(7));
    assert_eq!(c.unclaimed_requests().count(), 1);
    assert_eq!(c.gc(NOW.saturating_add(Duration::from_secs(5))), vec![]);
    let gone = c.gc(NOW.saturating_add(Duration::from_secs(11)));
    assert_eq!(gone, vec![Key::Run(id), Key::Cancel(FireId(7))]);
    let gone = c.gc(NOW.saturating_add(Duration::from_secs(61)));
    assert_eq!(gone, vec![Key::Job(j("y"))]);
    assert!(
        c.resolve(&j("x")).is_some(),
        "a live definition never expires"
    );
}

#[test]
fn a_run_request_is_claimed_once() {
    let mut c = catalog("me");
    c.put(NOW, j("x"), def("@every 1s")).unwrap();
    assert_eq!(
        c.request_run(NOW, &j("nope")).unwrap_err(),
        CatalogError::NotFound(j("nope"))
    );
    let (id, _) = c.request_run(NOW, &j("x")).unwrap();
    assert_ne!(id, FireId::of(&j("x"), NOW), "not a slot's fire id");
    let pending: Vec<FireId> = c.unclaimed_requests().map(|(id, _, _)| id).collect();
    assert_eq!(pending, vec![id]);
    assert!(c.claim(NOW, id).is_some());
    assert!(c.claim(NOW, id).is_none(), "claimed already");
    assert_eq!(c.unclaimed_requests().count(), 0);
    assert!(c.claim(NOW, FireId(1)).is_none(), "unknown request");
}

#[test]
fn own_file_definitions_keep_their_version_while_unchanged() {
    let mut c = catalog("me");
    let (first, changed) = c
        .set_own_files(
            NOW,
            1,
            [(j("a"), def("@every 1s")), (j("b"), def("@every 2s"))],
        )
        .unwrap();
    assert_eq!(changed.len(), 2);
    let later = NOW.saturating_add(Duration::from_secs(60));
    let (second, changed) = c
        .set_own_files(
            later,
            1,
            [(j("a"), def("@every 1s")), (j("b"), def("@every 3s"))],
        )
        .unwrap();
    assert_eq!(changed, [j("b")].into());
    assert_eq!(first.jobs[&j("a")].version, second.jobs[&j("a")].version);
    assert!(second.jobs[&j("b")].version > first.jobs[&j("b")].version);
    let (_, changed) = c
        .set_own_files(later, 1, [(j("a"), def("@every 1s"))])
        .unwrap();
    assert_eq!(changed, [j("b")].into(), "b left the file");
    assert_eq!(c.resolve(&j("b")), None);
}

#[test]
fn a_file_set_from_an_older_generation_is_ignored() {
    let mut c = catalog("me");
    c.set_files(&n("a"), file_set(2, &[("x", "@every 1s", 1, "a")]));
    let changed = c.set_files(&n("a"), file_set(1, &[("y", "@every 1s", 1, "a")]));
    assert!(changed.is_empty());
    assert!(c.resolve(&j("x")).is_some() && c.resolve(&j("y")).is_none());
    // A newer generation replaces the set wholesale.
    let changed = c.set_files(&n("a"), file_set(3, &[("y", "@every 1s", 1, "a")]));
    assert_eq!(changed, [j("x"), j("y")].into());
    assert_eq!(c.remove_files(&n("a")), [j("y")].into());
    assert_eq!(c.resolved(), vec![]);
}

#[test]
fn the_hash_is_the_same_for_the_same_catalog_and_changes_with_it() {
    let regs = [
        (Key::Job(j("x")), job_reg(1, "a", Some("@every 1s"))),
        (Key::Job(j("y")), job_reg(2, "b", Some("@every 2s"))),
        (Key::Job(j("x")), job_reg(3, "c", Some("@every 3s"))),
        (
            Key::Pause(j("y")),
            Register {
                version: v(4, "a"),
                value: Value::Pause(true),
            },
        ),
    ];
    let mut a = catalog("a");
    let mut b = catalog("b");
    for (k, r) in regs.iter().cloned() {
        a.observe(NOW, k, r);
    }
    for (k, r) in regs.iter().rev().cloned() {
        b.observe(NOW, k, r);
    }
    assert_eq!(a.hash(), b.hash());
    b.set_paused(NOW, &j("y"), false).unwrap();
    assert_ne!(a.hash(), b.hash());
    let counts = a.counts();
    assert_eq!((counts.jobs, counts.paused, counts.api), (2, 1, 2));
}

#[test]
fn values_round_trip_and_misplaced_values_are_refused() {
    let r = job_reg(5, "a", Some("@every 1s"));
    let text = encode_register(&r);
    assert_eq!(decode_register(&Key::Job(j("x")), &text), Ok(r));
    assert!(decode_register(&Key::Pause(j("x")), &text).is_err());
    let e = FileEntry {
        version: v(1, "a"),
        def: def("@every 1s"),
    };
    assert_eq!(decode_file_entry(&encode_file_entry(&e)), Ok(e));
    let m = FileSetMarker {
        count: 3,
        digest: 9,
    };
    assert_eq!(decode_marker(&encode_marker(&m)), Ok(m));
    for (key, want) in [
        ("job:x", Some(GossipKey::Register(Key::Job(j("x"))))),
        ("pause:x", Some(GossipKey::Register(Key::Pause(j("x"))))),
        (
            "run:00000000000000ff",
            Some(GossipKey::Register(Key::Run(FireId(255)))),
        ),
        ("file:x", Some(GossipKey::File(j("x")))),
        ("files", Some(GossipKey::FileSet)),
        ("job:", None),
        ("job:a b", None),
        ("run:ff", None),
        ("running:x", None),
        ("fire:x", None),
        ("status", None),
    ] {
        assert_eq!(GossipKey::parse(key), want, "{key:?}");
        if let Some(GossipKey::Register(k)) = &want {
            assert_eq!(k.to_gossip(), key);
        }
    }
}

fn arb_def() -> impl Strategy<Value = JobDef> {
    (
        "[ -~]{0,40}",
        proptest::option::of("[A-Za-z/_]{0,20}"),
        proptest::option::of(".{0,60}"),
        proptest::option::of(0u64..10_000),
        any::<u32>(),
        0u8..3,
        0u64..1_000_000,
        0u8..3,
        any::<bool>(),
    )
        .prop_map(
            |(schedule, timezone, command, timeout, retries, m, w, o, strict)| JobDef {
                schedule: schedule.into(),
                timezone,
                dst: if strict { Dst::Strict } else { Dst::Debian },
                command: command.map(Into::into),
                timeout: timeout.map(Duration::from_millis),
                retries,
                misfire: [Misfire::All, Misfire::Once, Misfire::Skip][m as usize],
                catch_up_window: Duration::from_millis(w),
                overlap: [Overlap::Allow, Overlap::Forbid, Overlap::Replace][o as usize],
                constraints: Default::default(),
                http: None,
            },
        )
}

use crate::core::job::{Misfire, Overlap};
use crate::core::schedule::Dst;

proptest! {
    #[test]
    fn arbitrary_gossip_text_never_panics(key in "[a-z:]{0,8}.{0,20}", text in ".{0,400}") {
        let _ = GossipKey::parse(&key);
        let _ = decode_register(&Key::Job(j("x")), &text);
        let _ = decode_file_entry(&text);
        let _ = decode_marker(&text);
    }

    #[test]
    fn arbitrary_payloads_with_valid_framing_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        // A valid header and checksum around random bytes: only the payload decoder runs.
        let text = crate::encoding::encode_text(&serde_bytes_wrapper(payload), 1);
        let _ = decode_register(&Key::Job(j("x")), &text);
        let _ = decode_file_entry(&text);
    }

    #[test]
    fn definitions_from_anywhere_round_trip_or_fail_cleanly(d in arb_def(), millis in any::<i64>()) {
        let r = Register { version: Version { millis, counter: 0, node: n("a") }, value: Value::Job(Some(Box::new(d.clone()))) };
        let text = encode_register(&r);
        prop_assert_eq!(decode_register(&Key::Job(j("x")), &text), Ok(r));
        // Whatever arrives, turning it into a job never panics; a valid one comes back.
        if let Ok(spec) = d.to_spec(&j("x")) {
            let canon = JobDef::from_spec(&spec);
            prop_assert_eq!(JobDef::from_spec(&canon.to_spec(&j("x")).unwrap()), canon);
        }
        let mut c = catalog("me");
        c.observe(UnixMillis(millis), Key::Job(j("x")), decode_register(&Key::Job(j("x")), &text).unwrap());
        let _ = c.resolve(&j("x"));
        let _ = c.hash();
    }
}

/// Raw bytes that decode as whatever the payload decoder makes of them: encoded as a
/// tuple of bytes so the framing is `encode`'s own.
fn serde_bytes_wrapper(bytes: Vec<u8>) -> RawBytes {
    RawBytes(bytes)
}

struct RawBytes(Vec<u8>);

impl serde::Serialize for RawBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(self.0.len())?;
        for b in &self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

#[test]
fn resolution_reads_every_node_once() {
    // Many nodes defining the same job the same way: one group, all nodes named.
    let mut c = catalog("me");
    let mut want = Vec::new();
    for i in 0..20 {
        let id = format!("n{i:02}");
        c.set_files(&n(&id), file_set(1, &[("x", "@every 1s", i, &id)]));
        want.push(n(&id));
    }
    let r = c.resolve(&j("x")).unwrap();
    assert_eq!(r.source, Source::File { nodes: want });
    assert_eq!(r.version, v(19, "n19"));
    assert!(c.conflicts(&j("x")).is_empty());
    let _: BTreeMap<JobId, Resolved> = c
        .resolved()
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
}

/// Every definition the parser accepts fits in gossip, from the API and from a file: the
/// bounds of `core::limits` on each field add up to less than `MAX_VALUE_BYTES` (issue 16).
#[test]
fn a_largest_definition_fits_in_gossip() {
    use crate::core::limits::{MAX_COMMAND_BYTES, MAX_JOB_NAME_BYTES, MAX_SCHEDULE_BYTES};
    let list = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let mut schedule = format!("{} {} {} * * * 2030-2031", list(60), list(60), list(24));
    assert!(schedule.len() <= MAX_SCHEDULE_BYTES, "{}", schedule.len());
    // Pad the year field up to the limit with repeats of a year (still a valid list).
    while schedule.len() + 5 <= MAX_SCHEDULE_BYTES {
        schedule.push_str(",2030");
    }
    let name = "n".repeat(MAX_JOB_NAME_BYTES);
    let raw = RawJob {
        name: Some(name.clone()),
        schedule: Some(schedule),
        timezone: Some("America/Argentina/ComodRivadavia".into()),
        dst: Some("strict".into()),
        // Four-byte characters: the most bytes per character a command can have.
        command: Some("\u{1F600}".repeat(MAX_COMMAND_BYTES / 4)),
        timeout: Some("1h 1m 1s 1ms".into()),
        retries: Some(crate::core::limits::MAX_RETRIES),
        misfire: Some("once".into()),
        catch_up_window: Some("23h 59m 59s 999ms".into()),
        overlap: Some("replace".into()),
        // A shell job: the keys of other kinds stay unset.
        ..RawJob::default()
    };
    let (id, big) = JobDef::from_raw(raw).expect("the largest valid definition parses");
    let mut c = catalog("a");
    c.put(NOW, id.clone(), big.clone())
        .expect("the largest definition fits as an API job");
    let mut c = catalog("b");
    c.set_own_files(NOW, 1, [(id, big)])
        .expect("the largest definition fits as a file job");
    assert_eq!(name.len(), MAX_JOB_NAME_BYTES);
}

/// The catalog refuses a new API job past `MAX_JOBS`, and still accepts a change to an
/// existing one.
#[test]
fn api_jobs_past_the_limit_are_refused() {
    let mut c = catalog("a");
    for i in 0..MAX_JOBS {
        c.put(NOW, j(&format!("j{i}")), def("@every 1s")).unwrap();
    }
    let e = c.put(NOW, j("one-more"), def("@every 1s")).unwrap_err();
    assert_eq!(
        e,
        CatalogError::TooMany {
            name: j("one-more"),
            limit: MAX_JOBS
        }
    );
    assert!(e.to_string().contains("10000"), "{e}");
    assert_eq!(c.resolve(&j("one-more")), None, "nothing was written");
    c.put(NOW, j("j7"), def("@every 2s"))
        .expect("a change to an existing job is accepted");
}
