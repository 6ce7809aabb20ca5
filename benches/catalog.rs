//! The catalog at 10,000 jobs (targets from issue 15), over real UDP on loopback with
//! in-process nodes at the default gossip interval:
//!
//! 1. memory per catalog entry beyond the definition's own bytes (target < 1 KiB): a
//!    counting allocator, for the catalog alone (`starling::catalog::Catalog`, what every
//!    node keeps per entry) and for whole nodes (catalog, catalog task, chitchat's copies,
//!    planner), with the definition's own bytes (its gossip value) subtracted; for whole
//!    nodes, the fewest bytes held over 5 s of samples (what is in flight left out), just
//!    after the load and once every node packed its maps (`node::compact`);
//! 2. steady-state gossip bytes per node per second, the same three nodes with no catalog
//!    job (the baseline, measured first in the same run) and then with 10,000;
//! 3. how long a node that joins the cluster takes to hold the whole catalog (target:
//!    within 10 s), and its gossip bytes meanwhile.
//!
//! The jobs are API jobs (`CatalogClient::put_job`) with a yearly schedule, so none fires
//! during the bench. Run with `cargo bench --bench catalog`. `BENCH_CATALOG_JOBS`
//! overrides the 10,000, `BENCH_STEADY_SECS` the 10 s of each steady-state measurement.

use std::time::Duration;

use starling::catalog::keys::encode_register;
use starling::catalog::{Catalog, CatalogConfig, JobDef, Key, Register, Value, Version};
use starling::{Node, NodeConfig, NodeHandle, NodeId, RawJob, UnixMillis};

mod counting;
use counting::{Counting, current};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[allow(clippy::disallowed_methods)] // benchmark measurement clock
fn mono_now() -> std::time::Instant {
    std::time::Instant::now()
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Job `i`: a yearly schedule (it never fires during the bench), a command of typical
/// length.
fn raw(i: usize) -> RawJob {
    RawJob {
        name: Some(format!("bench-job-{i:05}")),
        schedule: Some("0 0 0 1 1 *".into()),
        command: Some(format!(
            "/usr/local/bin/report --tenant {i} --out /var/tmp/r{i}"
        )),
        ..RawJob::default()
    }
}

/// `n` API definitions as registers from gossip.
fn registers(n: usize) -> Vec<(Key, Register)> {
    (0..n)
        .map(|i| {
            let (name, def) = JobDef::from_raw(raw(i)).expect("valid");
            (
                Key::Job(name),
                Register {
                    version: Version {
                        millis: 1_700_000_000_000 + i as i64,
                        counter: 0,
                        node: NodeId::new("node-a"),
                    },
                    value: Value::Job(Some(Box::new(def))),
                },
            )
        })
        .collect()
}

/// The catalog alone: `n` API definitions observed from gossip. Everything the catalog
/// holds is counted (its map, the registers, the definitions' strings), from the
/// definitions' decoding on; the definitions' own strings are then subtracted.
fn catalog_memory(n: usize) {
    let (value_bytes, def_heap) = {
        let registers = registers(n);
        let value_bytes: usize = registers
            .iter()
            .map(|(k, r)| k.to_gossip().len() + encode_register(r).len())
            .sum();
        // The definitions' own heap bytes, as the catalog keeps them.
        let def_heap: usize = registers
            .iter()
            .map(|(k, r)| {
                let name = k.job().map_or(0, |j| j.as_str().len());
                let def = match &r.value {
                    Value::Job(Some(d)) => {
                        d.schedule.len()
                            + d.command.as_ref().map_or(0, |c| c.len())
                            + d.timezone.as_ref().map_or(0, String::len)
                    }
                    _ => 0,
                };
                name + def
            })
            .sum();
        (value_bytes, def_heap)
    };
    let before = current();
    let registers = registers(n);
    let mut catalog = Catalog::new(NodeId::new("me"), CatalogConfig::default());
    let now = UnixMillis(1_700_000_000_000 + n as i64);
    for (k, r) in registers {
        catalog.observe(now, k, r);
    }
    let held = current().saturating_sub(before);
    assert_eq!(catalog.counts().api, n);
    let per = held as f64 / n as f64;
    println!(
        "catalog alone, {n} API definitions: {per:.0} bytes per entry in memory, of which {:.0} are the definition's own strings (name, schedule, command): {:.0} bytes per entry beyond them (target < 1024); the gossip value is {:.0} bytes per entry",
        def_heap as f64 / n as f64,
        per - def_heap as f64 / n as f64,
        value_bytes as f64 / n as f64,
    );
    drop(catalog);
}

fn config(name: &str, port: u16, seeds: &[u16]) -> NodeConfig {
    let mut c = NodeConfig::new(name, format!("127.0.0.1:{port}").parse().expect("addr"));
    c.seeds = seeds
        .iter()
        .map(|p| format!("127.0.0.1:{p}").parse().expect("addr"))
        .collect();
    c
}

async fn start(name: &str, port: u16, seeds: &[u16]) -> NodeHandle {
    Node::builder(config(name, port, seeds))
        .start()
        .await
        .expect("node starts")
}

fn sent(nodes: &[&NodeHandle]) -> Vec<(u64, u64)> {
    nodes
        .iter()
        .map(|n| {
            let s = n.gossip_stats();
            (s.bytes_sent, s.bytes_received)
        })
        .collect()
}

/// Gossip bytes per node per second (sent, received) over `secs`.
async fn steady(nodes: &[&NodeHandle], secs: u64) -> (f64, f64) {
    let before = sent(nodes);
    let t0 = mono_now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let took = t0.elapsed().as_secs_f64();
    let after = sent(nodes);
    let (mut s, mut r) = (0u64, 0u64);
    for (b, a) in before.iter().zip(&after) {
        s += a.0 - b.0;
        r += a.1 - b.1;
    }
    let per = |x: u64| x as f64 / nodes.len() as f64 / took;
    (per(s), per(r))
}

/// How many of `nodes` packed their maps (`node::compact`).
async fn packed_count(nodes: &[&NodeHandle]) -> usize {
    let mut k = 0;
    for node in nodes {
        k += usize::from(
            node.catalog()
                .stats()
                .await
                .is_ok_and(|s| s.compactions > 0),
        );
    }
    k
}

/// What the nodes hold beyond `mem0`, without what is in flight (gossip buffers, queued
/// updates): the fewest bytes allocated at once over 20 samples 250 ms apart, and the
/// samples' spread.
async fn held(mem0: usize) -> (usize, usize) {
    let mut samples = Vec::with_capacity(20);
    for _ in 0..20 {
        samples.push(current().saturating_sub(mem0));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    samples.sort_unstable();
    (samples[0], samples[samples.len() - 1] - samples[0])
}

async fn held_everywhere(nodes: &[&NodeHandle], n: usize, timeout: Duration) -> Option<f64> {
    let t0 = mono_now();
    while t0.elapsed() < timeout {
        let mut all = true;
        for node in nodes {
            let api = node.catalog().stats().await.map_or(0, |s| s.counts.api);
            all &= api == n;
        }
        if all {
            return Some(t0.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn main() {
    let n = env_usize("BENCH_CATALOG_JOBS", 10_000);
    let secs = env_usize("BENCH_STEADY_SECS", 10) as u64;
    catalog_memory(n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(cluster(n, secs));
}

async fn cluster(n: usize, secs: u64) {
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let a = start("a", ports[0], &[ports[1], ports[2]]).await;
    let b = start("b", ports[1], &[ports[0], ports[2]]).await;
    let c = start("c", ports[2], &[ports[0], ports[1]]).await;
    for node in [&a, &b, &c] {
        assert!(node.wait_for_members(3, Duration::from_secs(20)).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (s0, r0) = steady(&[&a, &b, &c], secs).await;
    println!(
        "steady state, 3 nodes, no catalog job (baseline): {s0:.0} bytes sent and {r0:.0} received per node per second"
    );

    // Load: the jobs spread over the three nodes, 256 writes in flight.
    let mem0 = current();
    let t0 = mono_now();
    let clients = [a.catalog(), b.catalog(), c.catalog()];
    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..(i + 256).min(n))
            .map(|k| {
                let client = clients[k % 3].clone();
                tokio::spawn(async move { client.put_job(raw(k)).await })
            })
            .collect();
        for t in batch {
            t.await.expect("a put task").expect("a put");
        }
        i += 256;
    }
    let put_secs = t0.elapsed().as_secs_f64();
    let converged = held_everywhere(&[&a, &b, &c], n, Duration::from_secs(120))
        .await
        .expect("the three nodes hold the catalog within 2 minutes");
    println!(
        "loaded {n} API jobs through the three nodes in {put_secs:.1} s ({:.0} puts/s, each acknowledged once sent to a peer); all three held all of them {converged:.1} s later",
        n as f64 / put_secs
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let packed_nodes = packed_count(&[&a, &b, &c]).await;
    let (loaded, loaded_spread) = held(mem0).await;
    let mut value_bytes = 0;
    for k in 0..n {
        let (name, def) = JobDef::from_raw(raw(k)).expect("valid");
        let r = Register {
            version: Version {
                millis: 1_700_000_000_000,
                counter: 0,
                node: NodeId::new("a"),
            },
            value: Value::Job(Some(Box::new(def))),
        };
        value_bytes += Key::Job(name).to_gossip().len() + encode_register(&r).len();
    }
    let value = value_bytes as f64 / n as f64;
    let per = |bytes: usize| bytes as f64 / 3.0 / n as f64;
    println!(
        "whole nodes 3 s after the load ({packed_nodes} of 3 had packed their maps when the samples began): {:.0} bytes per entry per node (catalog, catalog task, chitchat's copy of every node's state, the planner's job), {:.0} beyond the definition's gossip value ({value:.0} bytes); the samples spread over {:.0} bytes per entry per node",
        per(loaded),
        per(loaded) - value,
        per(loaded_spread)
    );
    // Once the catalog settles, each node packs its maps (`node::compact`): wait for it.
    let t0 = mono_now();
    let mut packed = false;
    while t0.elapsed() < Duration::from_secs(60) && !packed {
        tokio::time::sleep(Duration::from_millis(200)).await;
        packed = packed_count(&[&a, &b, &c]).await == 3;
    }
    if packed {
        let waited = t0.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (settled, settled_spread) = held(mem0).await;
        println!(
            "whole nodes once their maps were packed ({waited:.1} s later): {:.0} bytes per entry per node, {:.0} beyond the definition's gossip value (target < 1024); the samples spread over {:.0} bytes per entry per node",
            per(settled),
            per(settled) - value,
            per(settled_spread)
        );
    } else {
        println!("whole nodes: the maps were NOT packed within 60 s");
    }
    let mut held = 0;
    for node in [&a, &b, &c] {
        held += node.catalog().stats().await.map_or(0, |s| s.held);
    }
    println!("registers published: {held} in all (one node each, normally)");
    let (s1, r1) = steady(&[&a, &b, &c], secs).await;
    println!(
        "steady state, 3 nodes, {n} catalog jobs: {s1:.0} bytes sent and {r1:.0} received per node per second ({:.2}x the baseline's sent bytes)",
        s1 / s0.max(1.0)
    );

    // A fourth node joins and learns the whole catalog.
    let t0 = mono_now();
    let d = start("d", ports[3], &[ports[0], ports[1], ports[2]]).await;
    let joined = held_everywhere(&[&d], n, Duration::from_secs(60)).await;
    let total = t0.elapsed().as_secs_f64();
    let d_bytes = {
        let s = d.gossip_stats();
        (s.bytes_sent, s.bytes_received)
    };
    match joined {
        Some(_) => println!(
            "a node joining the cluster held all {n} jobs {total:.2} s after it was started (target within 10 s); it received {:.1} MB meanwhile",
            d_bytes.1 as f64 / 1e6
        ),
        None => println!("a node joining the cluster did NOT hold all {n} jobs within 60 s"),
    }
    for node in [a, b, c, d] {
        node.abort();
    }
}
