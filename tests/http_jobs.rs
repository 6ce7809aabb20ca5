//! Process-level test of HTTP jobs (issue 18): three `starling run` processes and a real
//! HTTP server started by the test, which records every request's idempotency key.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use starling::{Clock, FireId, JobId, SystemClock, UnixMillis};

mod common;
use common::{Proc, free_port, sleep_until, spawn_peer_with};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: BTreeMap<String, String>,
}

/// Serves 200 to every request on 127.0.0.1, recording it; returns the port.
fn server(seen: Arc<Mutex<Vec<Seen>>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut headers = BTreeMap::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            seen.lock().unwrap().push(Seen {
                line: line.trim().to_string(),
                headers,
            });
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    port
}

#[test]
fn an_http_job_sends_exactly_one_request_per_slot_carrying_its_fire_id() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let http = server(seen.clone());
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs.toml");
    std::fs::write(
        &jobs,
        format!(
            "[[jobs]]\nname = \"hook\"\nschedule = \"@every 1s\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{http}/hook\"\nmethod = \"POST\"\nbody = \"ping\"\nheaders = {{ \"X-Team\" = \"ops\" }}\n"
        ),
    )
    .unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let names = ["a", "b", "c"];
    let started = SystemClock.now();
    let mut peers: Vec<Proc> = (0..3)
        .map(|i| {
            let seeds: Vec<u16> = (0..3).filter(|&k| k != i).map(|k| ports[k]).collect();
            spawn_peer_with(
                names[i],
                ports[i],
                &seeds,
                &jobs,
                &dir.path().join(format!("{}.log", names[i])),
                &[],
            )
        })
        .collect();
    // Startup and convergence take a few seconds; from then on every slot is sent once.
    let first = (started.0 / 1000 + 4) * 1000;
    sleep_until(UnixMillis(first + 5_000));
    // 600 ms past a second boundary: the last slot's request is done.
    sleep_until(UnixMillis((SystemClock.now().0 / 1000 + 1) * 1000 + 600));
    let last = (SystemClock.now().0 / 1000) * 1000;
    for (i, p) in peers.iter_mut().enumerate() {
        let log = dir.path().join(format!("{}.log", names[i]));
        assert!(
            p.terminate().success(),
            "{}",
            std::fs::read_to_string(log).unwrap()
        );
    }
    let seen = seen.lock().unwrap().clone();
    let mut by_key: BTreeMap<String, Vec<&Seen>> = BTreeMap::new();
    for s in &seen {
        assert_eq!(s.line, "POST /hook HTTP/1.1", "{s:?}");
        assert_eq!(s.headers.get("x-team").map(String::as_str), Some("ops"));
        let epoch: u64 = s.headers["x-starling-epoch"].parse().unwrap();
        assert!(epoch >= 1, "{s:?}");
        by_key
            .entry(s.headers["idempotency-key"].clone())
            .or_default()
            .push(s);
    }
    let twice: Vec<_> = by_key.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "slots requested more than once: {twice:?}"
    );
    let job = JobId::new("hook");
    for slot in (first..=last).step_by(1000) {
        let key = FireId::of(&job, UnixMillis(slot)).to_string();
        assert!(
            by_key.contains_key(&key),
            "no request for the slot at {slot} (fire id {key}); seen {} requests",
            seen.len()
        );
    }
    // Every request is a slot's: its key is the fire id of the time it names.
    for (key, v) in &by_key {
        let at = v[0].headers["x-starling-scheduled-at"].clone();
        let ms = chrono::DateTime::parse_from_rfc3339(&at)
            .unwrap()
            .timestamp_millis();
        assert_eq!(key, &FireId::of(&job, UnixMillis(ms)).to_string());
    }
}
