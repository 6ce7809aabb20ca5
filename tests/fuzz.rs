//! Fuzz targets on stable Rust (proptest; issue 16, item 6): every decoder of outside input
//! gets arbitrary and mutated bytes, and must refuse bad ones with an error, never panic,
//! never accept a tampered packet.
//!
//! | target | input |
//! |---|---|
//! | `sealed_packet_opener` | arbitrary datagrams, and sealed packets with flipped bits, cuts and tails |
//! | `jobs_file_parser` | arbitrary text, and jobs files built from real keys with random values |
//! | `api_job_body` | arbitrary bytes and JSON objects as a `PUT /v1/jobs/{name}` body |
//! | `schedule_parser` | arbitrary text and cron/`@every`/`@at`-like text, in several timezones |
//! | `gossip_values` | catalog keys and values, fire records and placement tags as a keyed peer could send them: arbitrary text, and random payloads under a valid header |
//! | `data_dir_decoders` | the fire records, catalog and run history files: random bytes, and random payloads under a valid header (magic, version, checksum) so the decoder itself runs |
//!
//! Each target runs `STARLING_FUZZ_CASES` cases (default 10,000: about 30 s for all of
//! them in a debug build); run longer with e.g. `STARLING_FUZZ_CASES=200000 cargo test
//! --release --test fuzz`. A failure prints the shrunk input and the seed to replay it.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use starling::core::job::parse_jobs_toml;
use starling::core::schedule::{Dst, parse_timezone};
use starling::security::{ClusterKey, CountedNonces, KEY_LEN, Keyring, Seal};
use starling::{NodeId, Schedule, UnixMillis};

fn cases() -> u32 {
    std::env::var("STARLING_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        // Nothing here reads files proptest would persist failures to.
        failure_persistence: None,
        ..Config::default()
    })
}

const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

#[test]
fn sealed_packet_opener() {
    let ring = |b: &[u8]| {
        Keyring::new(
            b.iter()
                .map(|&s| ClusterKey::from_bytes([s; KEY_LEN]))
                .collect(),
        )
        .unwrap()
    };
    let receiver = Seal::new(&ring(&[1, 2]), "prod", Duration::from_secs(600));
    let sender = Seal::new(&ring(&[2]), "prod", Duration::from_secs(600));
    let nonces = CountedNonces::from_os();
    let known_id = ring(&[2]).sealing().id().0;
    let strategy = (
        prop::collection::vec(any::<u8>(), 0..2_000),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..1_500),
        any::<prop::sample::Index>(),
        0usize..80,
        prop::collection::vec(any::<u8>(), 0..8),
    );
    runner()
        .run(&strategy, |(mut bytes, dress, plain, bit, cut, tail)| {
            let mut out = Vec::new();
            if dress && bytes.len() > 5 {
                // The best chance for random bytes: the sealed format and a known key id.
                bytes[0] = starling::security::SEALED_FORMAT;
                bytes[1..5].copy_from_slice(&known_id);
            }
            prop_assert!(receiver.open(&bytes, NOW, &mut out).is_err());
            prop_assert!(out.is_empty());
            let mut packet = Vec::new();
            sender.seal(&plain, NOW, &nonces, &mut packet);
            receiver.open(&packet, NOW, &mut out).unwrap();
            prop_assert_eq!(&out, &plain);
            let mut flipped = packet.clone();
            let i = bit.index(flipped.len() * 8);
            flipped[i / 8] ^= 1 << (i % 8);
            prop_assert!(receiver.open(&flipped, NOW, &mut out).is_err());
            let short = &packet[..packet.len().saturating_sub(cut.max(1))];
            prop_assert!(receiver.open(short, NOW, &mut out).is_err());
            if !tail.is_empty() {
                let mut longer = packet.clone();
                longer.extend_from_slice(&tail);
                prop_assert!(receiver.open(&longer, NOW, &mut out).is_err());
            }
            Ok(())
        })
        .unwrap();
}

/// A TOML value for a job key: sometimes right, mostly not.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}".prop_map(|s| format!("{s:?}")),
        Just("\"@every 1s\"".to_string()),
        Just("\"0 0 * * *\"".to_string()),
        Just("\"@at 2030-01-01T00:00:00Z\"".to_string()),
        Just("\"Europe/Paris\"".to_string()),
        Just("\"forbid\"".to_string()),
        Just("\"10s\"".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("true".to_string()),
        Just("[1, 2]".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("\"http\"".to_string()),
        Just("\"http://127.0.0.1:1/x\"".to_string()),
        Just("{ region = \"eu\" }".to_string()),
        Just("{ \"Content-Type\" = \"text/plain\" }".to_string()),
        "[a-z0-9 ]{0,12}",
    ]
}

fn jobs_file() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "name",
        "schedule",
        "timezone",
        "dst",
        "command",
        "timeout",
        "retries",
        "misfire",
        "catch_up_window",
        "overlap",
        "kind",
        "url",
        "method",
        "headers",
        "body",
        "expect_status",
        "constraints",
        "unknown",
    ]);
    let entry = prop::collection::vec((key, toml_value()), 0..8).prop_map(|kv| {
        let mut s = String::from("[[jobs]]\n");
        for (k, v) in kv {
            s.push_str(&format!("{k} = {v}\n"));
        }
        s
    });
    prop::collection::vec(entry, 0..4).prop_map(|e| e.concat())
}

#[test]
fn jobs_file_parser() {
    let strategy = prop_oneof![
        jobs_file(),
        any::<String>(),
        "(\\[\\[jobs\\]\\]|[a-z_]{1,8} = |\"|\n|[ -~]){0,60}",
    ];
    runner()
        .run(&strategy, |text| {
            // Ok or an error, never a panic; an error is one line of reasonable length.
            if let Err(e) = parse_jobs_toml(&text) {
                prop_assert!(!e.to_string().is_empty());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn api_job_body() {
    let json_value = prop_oneof![
        "[ -~]{0,30}".prop_map(serde_json::Value::String),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::Bool),
        Just(serde_json::Value::Null),
        Just(serde_json::json!([1, "a"])),
        Just(serde_json::Value::String("@every 1s".into())),
    ];
    let key = prop::sample::select(vec![
        "name", "schedule", "command", "timezone", "timeout", "retries", "overlap", "x",
    ]);
    let object = prop::collection::btree_map(key, json_value, 0..6)
        .prop_map(|m| serde_json::to_vec(&m).unwrap());
    let strategy = prop_oneof![object, prop::collection::vec(any::<u8>(), 0..200)];
    runner()
        .run(&strategy, |body| {
            if let Ok(raw) = starling::api::job_from_json("fuzzed", &body) {
                // A body that reads is still checked whole; that must not panic either.
                let _ = raw.into_spec(1);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn schedule_parser() {
    let zones = [
        "UTC",
        "Europe/Paris",
        "Australia/Lord_Howe",
        "America/Santiago",
    ];
    let text = prop_oneof![
        any::<String>(),
        "[0-9*/,LW#?A-Za-z -]{0,40}",
        "@(every|at|daily|hourly|yearly|x) ?[0-9a-zA-Z:. -]{0,30}",
        (
            any::<u64>(),
            prop::sample::select(vec!["ms", "s", "m", "h", "d", "x", ""])
        )
            .prop_map(|(n, u)| format!("@every {n}{u}")),
    ];
    let strategy = (text, 0..zones.len(), any::<bool>(), 0i64..4_133_980_800_000);
    runner()
        .run(&strategy, |(text, z, strict, start)| {
            let tz = parse_timezone(zones[z]).unwrap();
            let dst = if strict { Dst::Strict } else { Dst::default() };
            if let Ok(s) = Schedule::parse_with(&text, tz, dst) {
                // A schedule that parses computes its next slot without panicking, and
                // the slot is later than the start.
                if let Some(next) = s.next_after(UnixMillis(start)) {
                    prop_assert!(next > UnixMillis(start), "{text}: {next:?} <= {start}");
                }
            }
            Ok(())
        })
        .unwrap();
}

/// Base64 text (the catalog's alphabet, no padding) of a random payload under a valid
/// header, so the decoder behind the checksum runs.
fn value_text() -> impl Strategy<Value = String> {
    use base64::Engine;
    let under_header = |payload: Vec<u8>| {
        let mut out = b"STRL".to_vec();
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(out)
    };
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9+/=]{0,200}",
        "[0-9/a-f-]{0,60}",
        "([a-z]{1,4}=[a-z0-9]{0,4},?){0,5}",
        prop::collection::vec(0u8..8, 0..200).prop_map(under_header),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(under_header),
    ]
}

#[test]
fn gossip_values() {
    use starling::catalog::GossipKey;
    use starling::catalog::keys::{decode_file_entry, decode_marker, decode_register};
    use starling::core::placement::Tags;
    let key = prop_oneof![
        any::<String>(),
        "(job|pause|run|ran|cancel|file|x):[a-z0-9]{0,16}",
        Just("files".to_string()),
    ];
    runner()
        .run(&(key, value_text()), |(key, value)| {
            // A peer's key and value are refused or taken whole, never a panic; a register
            // that decodes fits its key.
            if let Some(k) = GossipKey::parse(&key) {
                match k {
                    GossipKey::Register(k) => {
                        if let Ok(r) = decode_register(&k, &value) {
                            prop_assert!(r.value.fits(&k));
                        }
                    }
                    GossipKey::File(_) => drop(decode_file_entry(&value)),
                    GossipKey::FileSet => drop(decode_marker(&value)),
                }
            }
            if let Some(r) = starling::FireRecord::decode(&value) {
                prop_assert!(r.first <= r.slot);
            }
            drop(Tags::decode(&value));
            Ok(())
        })
        .unwrap();
}

/// A data-dir file: random bytes, or a random payload under a valid header, so the bincode
/// decoder behind the checksum gets the input.
fn data_file() -> impl Strategy<Value = Vec<u8>> {
    let header = |payload: Vec<u8>| {
        let mut out = b"STRL".to_vec();
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    };
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(header),
        // Small numbers decode as lengths and counts more often.
        prop::collection::vec(0u8..8, 0..300).prop_map(header),
    ]
}

#[test]
fn data_dir_decoders() {
    use starling::node::store::{CatalogFile, Store};
    let dir = tempfile::tempdir().unwrap();
    let node = NodeId::new("n1");
    let limits = starling::HistoryLimits::default();
    runner()
        .run(&(data_file(), 0u8..3), |(bytes, which)| {
            // Start each case with only the file under test.
            for e in std::fs::read_dir(dir.path()).unwrap() {
                std::fs::remove_file(e.unwrap().path()).unwrap();
            }
            let file = ["fire-records.bin", "catalog.bin", "history.bin"][which as usize];
            std::fs::write(dir.path().join(file), &bytes).unwrap();
            match which {
                0 => {
                    // Ok (with records) or a typed error naming the file.
                    if let Err(e) = Store::open(dir.path(), &node) {
                        prop_assert!(e.to_string().contains("fire-records.bin"), "{e}");
                    }
                }
                1 => {
                    let (store, _) = Store::open(dir.path(), &node).unwrap();
                    if let CatalogFile::Damaged { moved_to, .. } = store.load_catalog() {
                        prop_assert!(moved_to.is_some(), "a damaged file is moved aside");
                    }
                }
                _ => {
                    let h = starling::History::open(dir.path(), node.clone(), limits);
                    // Whatever loaded respects the bounds.
                    prop_assert!(h.len() <= limits.max_runs);
                }
            }
            Ok(())
        })
        .unwrap();
}
