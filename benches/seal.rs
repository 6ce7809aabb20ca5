//! What sealing gossip costs (issue 16), sealed against plain in the same run.
//!
//! 1. **Per packet.** For packets of 100 B to 16 KiB: the CPU time (of the thread) to seal
//!    and open one (`Seal::seal` + `Seal::open`), against the baseline of sending and
//!    receiving the same bytes once over a loopback UDP socket pair (what every gossip
//!    packet costs anyway).
//! 2. **A cluster.** 5 nodes in this process gossip over real UDP on 127.0.0.1 at the
//!    default gossip interval (200 ms), each with the same 20 `@every 1s` in-process jobs,
//!    so fire records flow. Phases of `BENCH_SECONDS` (8) alternate plain and sealed,
//!    `BENCH_ROUNDS` (3) of each; each phase starts fresh nodes and measures its steady
//!    state: bytes and packets sent per node per second, the seal's bytes, and the CPU time
//!    of the whole process (every thread, by `getrusage`) per second. The summary gives
//!    each sealed/plain ratio (target: CPU < 1.1x).
//!
//! Run with `cargo bench --bench seal`.

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use starling::cluster::GossipStats;
use starling::security::{ClusterKey, CountedNonces, KEY_LEN, Keyring, Seal};
use starling::{HandlerError, JobSpec, Node, NodeConfig, NodeHandle, RunContext, UnixMillis};

#[allow(clippy::disallowed_methods)] // a benchmark measures wall time
fn instant() -> std::time::Instant {
    std::time::Instant::now()
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time of the calling thread, in nanoseconds: unlike wall time, it does not count
/// the time other processes of this shared machine hold the core.
fn thread_cpu_ns() -> f64 {
    // SAFETY: clock_gettime fills the struct it is given.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e9 + t.tv_nsec as f64
}

/// Median CPU nanoseconds per call of `f`, over 15 batches of `n` calls.
fn ns_per(n: u32, mut f: impl FnMut()) -> f64 {
    let mut batches = Vec::new();
    for _ in 0..15 {
        let t = thread_cpu_ns();
        for _ in 0..n {
            f();
        }
        batches.push((thread_cpu_ns() - t) / f64::from(n));
    }
    median(batches)
}

/// CPU nanoseconds to seal and open one packet of `size` bytes.
fn seal_open_ns(size: usize) -> f64 {
    let keys = Keyring::new(vec![ClusterKey::from_bytes([7; KEY_LEN])]).unwrap();
    let seal = Seal::new(&keys, "bench", Duration::from_secs(600));
    let now = UnixMillis(1_800_000_000_000);
    let plain: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let (mut sealed, mut opened) = (Vec::new(), Vec::new());
    // The nonces a node uses.
    let nonces = CountedNonces::from_os();
    ns_per(2_000, || {
        seal.seal(black_box(&plain), now, &nonces, &mut sealed);
        seal.open(black_box(&sealed), now, &mut opened).unwrap();
    })
}

fn per_packet() {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.connect(b.local_addr().unwrap()).unwrap();
    let mut recv = vec![0u8; 1 << 16];
    println!("per packet            seal+open    UDP send+recv (baseline)   ratio");
    for size in [100usize, 500, 1_500, 4_096, 16_384] {
        let plain: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let seal_open = seal_open_ns(size);
        let udp = ns_per(2_000, || {
            a.send(black_box(&plain)).unwrap();
            b.recv(&mut recv).unwrap();
        });
        println!(
            "{size:>6} B        {seal_open:>9.0} ns   {udp:>9.0} ns                {:>5.2}x",
            seal_open / udp
        );
    }
}

/// CPU time of the whole process so far, in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

const NODES: usize = 5;
const JOBS: usize = 20;

struct Phase {
    bytes_per_node_s: f64,
    packets_per_node_s: f64,
    seal_bytes_per_node_s: f64,
    cpu_percent: f64,
}

async fn cluster_phase(sealed: bool, seconds: u64) -> Phase {
    let addrs: Vec<SocketAddr> = (0..NODES)
        .map(|_| {
            UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        })
        .collect();
    let keys = Keyring::new(vec![ClusterKey::from_bytes([9; KEY_LEN])]).unwrap();
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let mut c = NodeConfig::new(format!("n{i}"), *addr);
        c.seeds = addrs.iter().copied().filter(|a| a != addr).collect();
        c.cluster_keys = sealed.then(|| keys.clone());
        let mut b = Node::builder(c);
        for j in 0..JOBS {
            let spec = JobSpec::parse(&format!("job-{j:02}"), "@every 1s").unwrap();
            b = b
                .handler_job(spec, |_ctx: RunContext| async {
                    Ok::<(), HandlerError>(())
                })
                .unwrap();
        }
        nodes.push(b.start().await.unwrap());
    }
    for n in &nodes {
        assert!(
            n.wait_for_members(NODES, Duration::from_secs(20)).await,
            "the nodes never converged"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sum = |nodes: &[NodeHandle]| {
        nodes.iter().fold(GossipStats::default(), |mut s, n| {
            let g = n.gossip_stats();
            s.bytes_sent += g.bytes_sent;
            s.envelope_bytes_sent += g.envelope_bytes_sent;
            s.packets_sent += g.packets_sent;
            s.packets_accepted += g.packets_accepted;
            s.rejected_plain += g.rejected();
            s
        })
    };
    let (s0, cpu0, t0) = (sum(&nodes), cpu_seconds(), instant());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (s1, cpu1, elapsed) = (sum(&nodes), cpu_seconds(), t0.elapsed().as_secs_f64());
    assert_eq!(s1.rejected_plain, 0, "a packet was dropped");
    for n in nodes {
        n.abort();
    }
    let per_node_s = |v: u64| v as f64 / NODES as f64 / elapsed;
    Phase {
        bytes_per_node_s: per_node_s(s1.bytes_sent - s0.bytes_sent),
        packets_per_node_s: per_node_s(s1.packets_sent - s0.packets_sent),
        seal_bytes_per_node_s: per_node_s(
            (s1.bytes_sent - s1.envelope_bytes_sent) - (s0.bytes_sent - s0.envelope_bytes_sent),
        ),
        cpu_percent: (cpu1 - cpu0) / elapsed * 100.0,
    }
}

fn main() {
    // Quiet: the nodes' logs are not the point here.
    per_packet();
    let seconds = env_or("BENCH_SECONDS", 8);
    let rounds = env_or("BENCH_ROUNDS", 3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut results: Vec<(bool, Phase)> = Vec::new();
    println!(
        "\n{NODES} nodes, {JOBS} @every 1s jobs each, gossip every 200 ms, {seconds} s per phase"
    );
    println!("phase   bytes/s/node  packets/s/node  seal bytes/s/node  CPU (% of a core)");
    for _ in 0..rounds {
        for sealed in [false, true] {
            let p = rt.block_on(cluster_phase(sealed, seconds));
            println!(
                "{:<7} {:>12.0}  {:>14.1}  {:>17.0}  {:>17.2}",
                if sealed { "sealed" } else { "plain" },
                p.bytes_per_node_s,
                p.packets_per_node_s,
                p.seal_bytes_per_node_s,
                p.cpu_percent
            );
            results.push((sealed, p));
        }
    }
    let med = |sealed: bool, f: fn(&Phase) -> f64| {
        median(
            results
                .iter()
                .filter(|(s, _)| *s == sealed)
                .map(|(_, p)| f(p))
                .collect(),
        )
    };
    let bytes_per_packet = med(true, |p| p.bytes_per_node_s / p.packets_per_node_s);
    let cost = seal_open_ns(bytes_per_packet as usize);
    // Every packet is sealed by its sender and opened by its receiver, all in this process.
    let predicted = cost * med(true, |p| p.packets_per_node_s) * NODES as f64 / 1e7;
    println!(
        "\nsealed packets average {bytes_per_packet:.0} bytes, {} of them the seal; sealing and opening one takes {cost:.0} ns of CPU, so the seal should add {predicted:.3}% of a core for the {NODES} nodes",
        starling::security::SEAL_OVERHEAD
    );
    println!("\nmedians          plain      sealed    sealed/plain");
    type Field = fn(&Phase) -> f64;
    let rows: [(&str, Field); 3] = [
        ("bytes/s/node", |p| p.bytes_per_node_s),
        ("packets/s/node", |p| p.packets_per_node_s),
        ("CPU % of core", |p| p.cpu_percent),
    ];
    for (name, f) in rows {
        let (plain, sealed) = (med(false, f), med(true, f));
        println!(
            "{name:<15} {plain:>9.2}  {sealed:>9.2}    {:>6.3}x",
            sealed / plain
        );
    }
    // Ratios per round (each sealed phase against the plain phase just before it), to see
    // the noise of this shared machine.
    let ratios: Vec<String> = results
        .chunks(2)
        .map(|pair| format!("{:.3}x", pair[1].1.cpu_percent / pair[0].1.cpu_percent))
        .collect();
    println!("CPU sealed/plain per round: {}", ratios.join(", "));
}
