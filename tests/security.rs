//! Gossip security (issue 16): replays of captured packets, nodes with a wrong key or none,
//! hostile datagrams, and key rotation, over real UDP on 127.0.0.1; the process-level tests
//! run the real binary.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use starling::cluster::{
    Cluster, DatagramSocket, Datagrams, Event, GossipConfig, GossipSecurity, GossipTransport,
    Publish, Record, UdpDatagrams,
};
use starling::security::{ClusterKey, KEY_LEN, Keyring, OsEntropy};
use starling::{Clock, FireRecord, JobId, NodeId, SystemClock, UnixMillis};
use tokio::sync::mpsc;

mod common;

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], common::free_port()))
}

/// Every datagram a node sends, as it left: what an attacker on the network captures.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Vec<u8>>>>);

#[async_trait::async_trait]
impl Datagrams for Capture {
    async fn bind(&self, addr: SocketAddr) -> anyhow::Result<Box<dyn DatagramSocket>> {
        Ok(Box::new(CaptureSocket {
            inner: UdpDatagrams.bind(addr).await?,
            log: self.clone(),
        }))
    }
}

struct CaptureSocket {
    inner: Box<dyn DatagramSocket>,
    log: Capture,
}

#[async_trait::async_trait]
impl DatagramSocket for CaptureSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send_to(&mut self, to: SocketAddr, payload: &[u8]) -> anyhow::Result<()> {
        self.log.0.lock().unwrap().push(payload.to_vec());
        self.inner.send_to(to, payload).await
    }

    async fn recv_from(&mut self, buf: &mut [u8]) -> anyhow::Result<(usize, SocketAddr)> {
        self.inner.recv_from(buf).await
    }
}

struct Peer {
    cluster: Cluster,
    security: Arc<GossipSecurity>,
    events: mpsc::UnboundedReceiver<Event>,
}

/// A gossiping node (the cluster adapter alone: no planner) sealing with `keys`, refusing
/// packets dated further than `window` from its clock.
async fn peer(
    id: &str,
    addr: SocketAddr,
    seeds: Vec<SocketAddr>,
    keys: &Keyring,
    window: Duration,
    datagrams: Arc<dyn Datagrams>,
) -> Peer {
    let config = GossipConfig {
        node_id: NodeId::new(id),
        generation: 1,
        listen_addr: addr,
        advertise_addr: addr,
        seeds,
        cluster_id: "replays".into(),
        gossip_interval: Duration::from_millis(50),
        phi_threshold: 8.0,
        dead_node_grace_period: Duration::from_secs(60),
        placement: Default::default(),
        initial_status: starling::cluster::STATUS_ALIVE,
    };
    let security = GossipSecurity::new(
        Some(keys),
        &config.cluster_id,
        window,
        Arc::new(SystemClock),
        Arc::new(OsEntropy),
    );
    let transport = GossipTransport::new(datagrams, security.clone());
    let (tx, events) = mpsc::unbounded_channel();
    let cluster = Cluster::spawn(&config, Arc::new(transport), tx)
        .await
        .expect("gossip starts");
    Peer {
        cluster,
        security,
        events,
    }
}

fn ring(seed: u8) -> Keyring {
    Keyring::new(vec![ClusterKey::from_bytes([seed; KEY_LEN])]).unwrap()
}

fn live(p: &Peer) -> Vec<String> {
    let live = p.cluster.live_watcher().borrow().clone();
    live.keys().map(|id| id.node_id.to_string()).collect()
}

/// Waits (bounded) for a fire record of job `j` at `slot` to reach `p`.
async fn wait_record(p: &mut Peer, slot: i64) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = p.events.recv().await {
            if matches!(ev, Event::Record(ref r) if r.record.slot == UnixMillis(slot)) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the record of slot {slot} never arrived"));
}

async fn publish(p: &Peer, slot: i64) {
    p.cluster
        .publisher()
        .publish(&Publish {
            records: vec![Record {
                job: JobId::new("j"),
                record: FireRecord::single(UnixMillis(slot), 1),
                node: NodeId::new("a"),
            }],
            ..Publish::default()
        })
        .await;
}

/// Sends every captured datagram to `to` from `from`: the dead node's own address, so the
/// replay looks exactly like the node's traffic.
async fn replay(packets: &[Vec<u8>], from: SocketAddr, to: SocketAddr) {
    let mut socket = None;
    for _ in 0..100 {
        // The dead node's socket closes as its task is dropped.
        match tokio::net::UdpSocket::bind(from).await {
            Ok(s) => {
                socket = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let socket = socket.expect("the dead node's address never came free");
    for p in packets {
        socket.send_to(p, to).await.unwrap();
    }
}

/// Replays of a node's captured packets, sent from its own address after it died:
/// - at a node that saw its later state, they change nothing: no key goes back to an older
///   value and the dead node does not come back to life, although every one of them is
///   authentic and inside the replay window (chitchat applies a node's key-values and
///   heartbeats only above the versions it holds);
/// - at a node started later that never heard of it, every one is older than the replay
///   window and is dropped before chitchat sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_packets_neither_roll_state_back_nor_revive_a_dead_node() {
    let window = Duration::from_secs(3);
    let keys = ring(1);
    let (a_addr, b_addr, c_addr) = (free_addr(), free_addr(), free_addr());
    let capture = Capture::default();
    let a = peer(
        "a",
        a_addr,
        vec![b_addr],
        &keys,
        window,
        Arc::new(capture.clone()),
    )
    .await;
    let mut b = peer(
        "b",
        b_addr,
        vec![a_addr],
        &keys,
        window,
        Arc::new(UdpDatagrams),
    )
    .await;
    publish(&a, 1_000).await;
    wait_record(&mut b, 1_000).await;
    publish(&a, 2_000).await;
    wait_record(&mut b, 2_000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.cluster.abort();
    let captured_at = SystemClock.now();
    let packets = capture.0.lock().unwrap().clone();
    assert!(
        packets.len() > 10,
        "only {} packets captured",
        packets.len()
    );
    let mut watch = b.cluster.live_watcher();
    tokio::time::timeout(
        Duration::from_secs(10),
        watch.wait_for(|l| l.keys().all(|id| &*id.node_id != "a")),
    )
    .await
    .expect("b never saw a die")
    .unwrap();
    while b.events.try_recv().is_ok() {}

    let accepted = b.security.stats().packets_accepted;
    replay(&packets, a_addr, b_addr).await;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(live(&b), ["b"], "a replay revived the dead node");
    }
    let s = b.security.stats();
    assert!(
        s.packets_accepted >= accepted + packets.len() as u64 * 9 / 10,
        "the replayed packets should have reached chitchat (inside the window): {s:?}"
    );
    let changed: Vec<Event> = std::iter::from_fn(|| b.events.try_recv().ok()).collect();
    assert!(
        changed.is_empty(),
        "a replay changed the dead node's state: {changed:?}"
    );

    // Past the window, a node that never heard of `a` gets nothing from the same packets.
    let past = captured_at.saturating_add(window + Duration::from_millis(300));
    common::sleep_until(past);
    let c = peer(
        "c",
        c_addr,
        Vec::new(),
        &keys,
        window,
        Arc::new(UdpDatagrams),
    )
    .await;
    replay(&packets, a_addr, c_addr).await;
    let mut stale = 0;
    for _ in 0..100 {
        stale = c.security.stats().rejected_stale;
        if stale == packets.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stale, packets.len() as u64, "{:?}", c.security.stats());
    assert_eq!(c.security.stats().packets_accepted, 0);
    assert_eq!(c.cluster.known_peers().await, 0);
    // A node's live set holds itself only after its first gossip round, which the
    // stale count above may beat (CI saw [] here); then it must hold c alone.
    let mut w = c.cluster.live_watcher();
    let _ = tokio::time::timeout(Duration::from_secs(5), w.wait_for(|l| !l.is_empty())).await;
    assert_eq!(live(&c), ["c"]);
    b.cluster.shutdown().await;
    c.cluster.shutdown().await;
}

// ---- Process level: the real binary ----

use std::path::{Path, PathBuf};

use common::{Proc, ceil_second, floor_second, peer_command, read_runs, sleep_until, write_jobs};

const JOBS: usize = 9;

fn now() -> UnixMillis {
    SystemClock.now()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A key in its file form, and its id as the logs show it.
fn key_text(seed: u8) -> (String, String) {
    let k = ClusterKey::from_bytes([seed; KEY_LEN]);
    (k.to_base64().to_string(), k.id().to_string())
}

fn write_key_file(path: &Path, keys: &[&str]) {
    std::fs::write(path, keys.join("\n") + "\n").unwrap();
}

/// Processes `starling run`, each logging to a file in one kept-on-failure directory.
struct Procs {
    dir: tempfile::TempDir,
    names: Vec<String>,
    ports: Vec<u16>,
    procs: Vec<Proc>,
}

impl Procs {
    fn new() -> Procs {
        Procs {
            dir: tempfile::tempdir().unwrap(),
            names: Vec::new(),
            ports: Vec::new(),
            procs: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self, i: usize) -> String {
        read(&self.path(&format!("{}.log", self.names[i])))
    }

    /// Starts node `name` seeding every port in `seeds`; `env` adds to its environment.
    fn spawn(
        &mut self,
        name: &str,
        port: u16,
        seeds: &[u16],
        jobs: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> usize {
        let seeds: Vec<u16> = seeds.iter().copied().filter(|&s| s != port).collect();
        let log = self.path(&format!("{name}.log"));
        let mut cmd = peer_command(name, port, &seeds, jobs, &log, extra);
        cmd.env_remove("STARLING_CLUSTER_KEY")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
        self.names.push(name.to_string());
        self.ports.push(port);
        self.procs.push(Proc(Some(cmd.spawn().unwrap())));
        self.procs.len() - 1
    }

    /// Waits (bounded) until each of `who` logged `needle` at least `count` times.
    fn wait_log(&mut self, who: &[usize], needle: &str, count: usize, what: &str) {
        let deadline = now().saturating_add(Duration::from_secs(20));
        for _ in 0..400 {
            if who
                .iter()
                .all(|&i| self.log(i).matches(needle).count() >= count)
            {
                return;
            }
            if let Some(&i) = who.iter().find(|&&i| !self.procs[i].is_running()) {
                self.fail(&format!("{what}: {} exited", self.names[i]));
            }
            if now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.fail(&format!(
            "{what}: not every one of {who:?} logged {needle:?} x{count}"
        ));
    }

    /// The last line of `i`'s log containing `needle`.
    fn last_line(&self, i: usize, needle: &str) -> String {
        self.log(i)
            .lines()
            .rfind(|l| l.contains(needle))
            .unwrap_or_default()
            .to_string()
    }

    fn hup(&self, i: usize) {
        let pid = self.procs[i].0.as_ref().expect("running").id();
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(pid as i32, libc::SIGHUP);
        }
    }

    fn stop_all(&mut self) {
        for i in 0..self.procs.len() {
            if self.procs[i].0.is_some() {
                let status = self.procs[i].terminate();
                if !status.success() {
                    self.fail(&format!("{} exited with {status}", self.names[i]));
                }
            }
        }
    }

    /// Fails the test if there are `problems`, found in the slots `from ..= to`.
    fn fail_if_any(&mut self, problems: &[String], from: i64, to: i64) {
        if !problems.is_empty() {
            let msg = format!(
                "window {} ..= {}:\n{}",
                UnixMillis(from),
                UnixMillis(to),
                problems.join("\n")
            );
            self.fail(&msg);
        }
    }

    fn fail(&mut self, msg: &str) -> ! {
        self.dir.disable_cleanup(true);
        panic!("{msg}\nlogs (kept) in {}", self.dir.path().display());
    }
}

/// Every slot of the `JOBS` jobs in `[from, to]` that did not run exactly once, on one of
/// `members`.
fn slot_problems(out: &Path, members: &[&str], from: i64, to: i64) -> Vec<String> {
    let runs = read_runs(out);
    let mut problems = Vec::new();
    for j in 0..JOBS {
        let job = format!("job-{j:02}");
        for s in (from..=to).step_by(1000) {
            let nodes = runs.get(&(job.clone(), s)).cloned().unwrap_or_default();
            if nodes.len() != 1 || !members.contains(&nodes[0].as_str()) {
                problems.push(format!("{job} {} ran on {nodes:?}", UnixMillis(s)));
            }
        }
    }
    for ((job, slot), nodes) in &runs {
        if nodes.iter().any(|n| !members.contains(&n.as_str())) {
            problems.push(format!("{job} {} ran on {nodes:?}", UnixMillis(*slot)));
        }
    }
    problems
}

/// Three nodes with the cluster key (one reads it from `STARLING_CLUSTER_KEY`), a fourth
/// with another key and a fifth with none, all given each other as seeds; meanwhile 100,000
/// hostile datagrams hit the first node's gossip port. The outsiders never become members,
/// know no other node and no key of one, and run nothing (they have no job of their own,
/// and the cluster's jobs never reach them); the cluster runs every slot once; the first
/// node drops the flood with a handful of log lines; a job of the node that read its key
/// from the environment does not see it, nor the API token it read from there.
#[test]
fn outsiders_and_a_flood_of_hostile_datagrams_get_nothing_and_change_nothing() {
    let mut p = Procs::new();
    let out = p.path("runs.txt");
    let jobs = write_jobs(p.dir.path(), JOBS, &out);
    // A job of `a`, the node that read the key from its environment, prints what it sees.
    let env_out = p.path("env.txt");
    let members: Vec<NodeId> = ["a", "b", "c"].iter().map(NodeId::new).collect();
    let env_job = (0..100)
        .map(|i| format!("env-{i}"))
        .find(|j| starling::owner(&JobId::new(j), &members).unwrap().as_str() == "a")
        .unwrap();
    let mut text = read(&jobs);
    text.push_str(&format!(
        "[[jobs]]\nname = \"{env_job}\"\nschedule = \"@every 1s\"\ncommand = \"echo ${{STARLING_CLUSTER_KEY:-absent}} ${{STARLING_API_TOKEN:-absent}} >> {}\"\n",
        env_out.display()
    ));
    std::fs::write(&jobs, text).unwrap();
    let empty = p.path("none.toml");
    std::fs::write(&empty, "").unwrap();
    let (k1, k1_id) = key_text(1);
    let (k2, _) = key_text(2);
    let (k1_file, k2_file) = (p.path("k1.key"), p.path("k2.key"));
    write_key_file(&k1_file, &[&k1]);
    write_key_file(&k2_file, &[&k2]);
    let ports: Vec<u16> = (0..5).map(|_| common::free_port()).collect();
    let k1_flag = ["--cluster-key-file", k1_file.to_str().unwrap()];
    let k2_flag = ["--cluster-key-file", k2_file.to_str().unwrap()];
    let started = now();
    // `a` also serves the API with a token from its environment, which no job may see.
    let a = p.spawn(
        "a",
        ports[0],
        &ports,
        &jobs,
        &["--api", "127.0.0.1:0"],
        &[
            ("STARLING_CLUSTER_KEY", &k1),
            ("STARLING_API_TOKEN", "api-token-0123456789abcdef"),
        ],
    );
    let b = p.spawn("b", ports[1], &ports, &jobs, &k1_flag, &[]);
    let c = p.spawn("c", ports[2], &ports, &jobs, &k1_flag, &[]);
    let d = p.spawn("d", ports[3], &ports, &empty, &k2_flag, &[]);
    let e = p.spawn("e", ports[4], &ports, &empty, &[], &[]);
    let all_three = r#"members=["a", "b", "c"] leaving=[]"#;
    p.wait_log(&[a, b, c], all_three, 1, "startup");
    let from = ceil_second(now().saturating_add(Duration::from_millis(2_000))).max(ceil_second(
        started.saturating_add(Duration::from_millis(4_000)),
    ));
    sleep_until(UnixMillis(from + 1_000));

    // The flood, at `a`: random bytes, empty datagrams, plain chitchat-looking bytes, and
    // sealed-looking packets under a's own key id (forged) and an unknown one.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let k1_id_bytes = ClusterKey::from_bytes([1; KEY_LEN]).id().0;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = [0u8; 1_400];
    for i in 0..100_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 1_400) as usize;
        for (k, byte) in buf[..len].iter_mut().enumerate() {
            *byte = (x >> (k % 8 * 8)) as u8 ^ k as u8;
        }
        match i % 5 {
            0 => {}
            1 if len > 1 => buf[..2].copy_from_slice(&[0x53, 0xB0]),
            2 if len > 5 => {
                buf[0] = 0xA1;
                buf[1..5].copy_from_slice(&k1_id_bytes);
            }
            3 if len > 0 => buf[0] = 0xA1,
            _ => {}
        }
        let len = if i % 50 == 4 { 0 } else { len };
        // A full socket buffer drops datagrams, as a real flood does.
        let _ = socket.send_to(&buf[..len], target);
    }
    sleep_until(now().saturating_add(Duration::from_millis(3_000)));
    let to = floor_second(now()) - 2_000;
    p.stop_all();

    let mut problems = slot_problems(&out, &["a", "b", "c"], from, to);
    for i in [a, b, c] {
        let log = p.log(i);
        for l in log.lines().filter(|l| l.contains("membership changed")) {
            if l.contains("\"d\"") || l.contains("\"e\"") {
                problems.push(format!("{} counted an outsider: {l}", p.names[i]));
            }
        }
        if !log.contains(&format!(
            "gossip is sealed with the cluster key sealing_key={k1_id}"
        )) {
            problems.push(format!("{} did not log its sealing key", p.names[i]));
        }
    }
    for (i, kind) in [(d, "another key"), (e, "no key")] {
        let log = p.log(i);
        if log
            .lines()
            .any(|l| l.contains("membership changed") && l.contains("\"a\""))
        {
            problems.push(format!("the node with {kind} saw a member"));
        }
        let stopped = p.last_line(i, "gossip stopped");
        if !stopped.contains("other_nodes_known=0 keys_of_other_nodes=0") {
            problems.push(format!("the node with {kind} learned something: {stopped}"));
        }
        let counters = p.last_line(i, "gossip counters");
        if !counters.contains("packets_accepted=0") {
            problems.push(format!("the node with {kind} accepted packets: {counters}"));
        }
    }
    let seen = read(&env_out);
    if seen.is_empty() || seen.lines().any(|l| l != "absent absent") {
        problems.push(format!(
            "the job saw STARLING_CLUSTER_KEY or STARLING_API_TOKEN: {:?}",
            seen.lines().next()
        ));
    }
    if !p.log(e).contains("gossip is open") {
        problems.push("the node without a key did not warn that gossip is open".into());
    }
    // The flood was dropped and counted, with few log lines: at most one per kind per 10 s.
    let counters = p.last_line(a, "gossip counters");
    let rejected: u64 = counters
        .split("packets_rejected=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if rejected < 1_000 {
        problems.push(format!(
            "a dropped only {rejected} packets of the flood: {counters}"
        ));
    }
    let warned = p
        .log(a)
        .lines()
        .filter(|l| l.contains("dropped a gossip packet"))
        .count();
    if warned > 14 {
        problems.push(format!("a logged {warned} lines about dropped packets"));
    }
    for kind in [
        "without a seal",
        "not in this node's keyring",
        "failed authentication",
    ] {
        if !p.log(a).contains(kind) {
            problems.push(format!("a never logged a dropped packet {kind:?}"));
        }
    }
    p.fail_if_any(&problems, from, to);
}

/// A key rotation on three live processes, by the README's three steps, each one a rewrite
/// of every node's key file and a SIGHUP: add the new key second, make it first, remove the
/// old one. Every slot runs once throughout, no packet is ever dropped, and the nodes end
/// sealing with the new key alone.
#[test]
fn keys_rotate_on_live_processes_with_no_missed_slot() {
    let mut p = Procs::new();
    let out = p.path("runs.txt");
    let jobs = write_jobs(p.dir.path(), JOBS, &out);
    let (old, old_id) = key_text(1);
    let (new, new_id) = key_text(2);
    let ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let files: Vec<PathBuf> = ["a", "b", "c"]
        .iter()
        .map(|n| p.path(&format!("{n}.key")))
        .collect();
    let started = now();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        write_key_file(&files[i], &[&old]);
        let flag = ["--cluster-key-file", files[i].to_str().unwrap()];
        p.spawn(name, ports[i], &ports, &jobs, &flag, &[]);
    }
    let all = [0, 1, 2];
    p.wait_log(&all, r#"members=["a", "b", "c"] leaving=[]"#, 1, "startup");
    let from = ceil_second(now().saturating_add(Duration::from_millis(2_000))).max(ceil_second(
        started.saturating_add(Duration::from_millis(4_000)),
    ));
    sleep_until(UnixMillis(from + 500));
    let steps: [&[&str]; 3] = [&[&old, &new], &[&new, &old], &[&new]];
    for (n, keys) in steps.iter().enumerate() {
        // One node at a time, as an operator would: the others still run the step before.
        for i in all {
            write_key_file(&files[i], keys);
            p.hup(i);
            p.wait_log(
                &[i],
                "cluster keys reloaded",
                n + 1,
                &format!("step {}", n + 1),
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    sleep_until(now().saturating_add(Duration::from_millis(2_500)));
    let to = floor_second(now()) - 2_000;
    p.stop_all();

    let mut problems = slot_problems(&out, &["a", "b", "c"], from, to);
    for i in all {
        let reloaded = p.last_line(i, "cluster keys reloaded");
        if !reloaded.contains(&format!("sealing_key={new_id} keys=[KeyId({new_id})]")) {
            problems.push(format!("{} ended with {reloaded}", p.names[i]));
        }
        if !p.log(i).contains(&format!("sealing_key={old_id}")) {
            problems.push(format!("{} never sealed with the old key", p.names[i]));
        }
        let counters = p.last_line(i, "gossip counters");
        if !counters.contains("packets_rejected=0") {
            problems.push(format!("{} dropped packets: {counters}", p.names[i]));
        }
    }
    p.fail_if_any(&problems, from, to);
}

/// `--api` on an address other than loopback, with no token, is refused at start with an
/// error naming the flag and where a token comes from (checked before binding, so nothing
/// listens beyond 127.0.0.0/8 here).
#[test]
fn an_api_beyond_loopback_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("none.toml");
    std::fs::write(&empty, "").unwrap();
    let port = common::free_port().to_string();
    for api in ["0.0.0.0:0", "10.255.255.1:7947"] {
        let out = std::process::Command::new(common::BIN)
            .args([
                "run",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--api",
                api,
            ])
            .args(["--jobs", empty.to_str().unwrap()])
            .env_remove("STARLING_API_TOKEN")
            .env_remove("STARLING_CLUSTER_KEY")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{api}: started: {err}");
        assert!(
            err.contains(&format!("--api {api}"))
                && err.contains("STARLING_API_TOKEN")
                && err.contains("api_token_file")
                && !err.contains("panicked"),
            "{api}: {err}"
        );
    }
}

/// Three keyed nodes and a fourth with another key, all seeding each other. The fourth
/// defines a job of its own, its attempt to inject one: it runs there alone, and no keyed
/// node lists or runs it, while the fourth lists and runs none of the cluster's jobs. A
/// job created through a keyed node's API keeps running through kill -9 of that node.
#[test]
fn a_wrong_key_node_injects_nothing_and_an_api_job_outlives_its_keyed_acceptor() {
    let mut p = Procs::new();
    let out = p.path("runs.txt");
    let jobs = write_jobs(p.dir.path(), JOBS, &out);
    let injected_out = p.path("injected.txt");
    let injected = p.path("inject.toml");
    std::fs::write(
        &injected,
        format!(
            "[[jobs]]\nname = \"injected\"\nschedule = \"@every 1s\"\ncommand = \"echo $STARLING_NODE_ID $STARLING_JOB $STARLING_SCHEDULED_AT_MS >> {}\"\n",
            injected_out.display()
        ),
    )
    .unwrap();
    let (k1, _) = key_text(1);
    let (k2, _) = key_text(2);
    let (k1_file, k2_file) = (p.path("k1.key"), p.path("k2.key"));
    write_key_file(&k1_file, &[&k1]);
    write_key_file(&k2_file, &[&k2]);
    let ports: Vec<u16> = (0..4).map(|_| common::free_port()).collect();
    let apis: Vec<String> = (0..4)
        .map(|_| format!("127.0.0.1:{}", common::free_tcp_port()))
        .collect();
    let token = "api-token-0123456789abcdef";
    let key = |f: &Path| ["--cluster-key-file".to_string(), f.display().to_string()];
    let spawn = |p: &mut Procs, i: usize, name: &str, jobs: &Path, key_file: &Path| {
        let [flag, file] = key(key_file);
        let args = [flag.as_str(), file.as_str(), "--api", apis[i].as_str()];
        p.spawn(
            name,
            ports[i],
            &ports,
            jobs,
            &args,
            &[("STARLING_API_TOKEN", token)],
        )
    };
    let a = spawn(&mut p, 0, "a", &jobs, &k1_file);
    let b = spawn(&mut p, 1, "b", &jobs, &k1_file);
    let c = spawn(&mut p, 2, "c", &jobs, &k1_file);
    let d = spawn(&mut p, 3, "d", &injected, &k2_file);
    p.wait_log(
        &[a, b, c],
        r#"members=["a", "b", "c"] leaving=[]"#,
        1,
        "startup",
    );

    // A job created through a's API, recorded in the same file as the cluster's.
    let dyn_out = p.path("dyn.txt");
    let add = std::process::Command::new(common::BIN)
        .args(["jobs", "add", "--api", &apis[0], "--name", "dyn"])
        .args(["--schedule", "@every 1s", "--command"])
        .arg(format!(
            "echo $STARLING_NODE_ID $STARLING_JOB $STARLING_SCHEDULED_AT_MS >> {}",
            dyn_out.display()
        ))
        .env("STARLING_API_TOKEN", token)
        .output()
        .unwrap();
    if !add.status.success() {
        p.fail(&format!(
            "jobs add: {}",
            String::from_utf8_lossy(&add.stderr)
        ));
    }
    sleep_until(now().saturating_add(Duration::from_millis(3_000)));
    let api_jobs = |i: usize| -> Vec<String> {
        let port: u16 = apis[i].rsplit(':').next().unwrap().parse().unwrap();
        let body = std::process::Command::new(common::BIN)
            .args(["jobs", "ls", "--json", "--api", &apis[i]])
            .env("STARLING_API_TOKEN", token)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body.stdout)
            .unwrap_or_else(|e| panic!("jobs ls on {port}: {e}: {body:?}"));
        let list = v["jobs"].as_array().cloned().unwrap_or_default();
        let mut names: Vec<String> = list
            .iter()
            .filter_map(|j| j["name"].as_str().map(String::from))
            .collect();
        names.sort();
        names
    };
    let mut problems = Vec::new();
    let mut cluster_jobs: Vec<String> = (0..JOBS).map(|j| format!("job-{j:02}")).collect();
    cluster_jobs.insert(0, "dyn".into());
    cluster_jobs.sort();
    for i in [b, c] {
        let seen = api_jobs(i);
        if seen != cluster_jobs {
            problems.push(format!("{} lists {seen:?}", p.names[i]));
        }
    }
    let seen_by_d = api_jobs(d);
    if seen_by_d != ["injected"] {
        problems.push(format!("the node with another key lists {seen_by_d:?}"));
    }

    // kill -9 of the node that accepted the job: it keeps running on the others.
    let killed = now();
    p.procs[a].kill9();
    sleep_until(killed.saturating_add(Duration::from_millis(6_000)));
    p.stop_all();

    let dyn_runs = read_runs(&dyn_out);
    let after: Vec<_> = dyn_runs
        .iter()
        .filter(|((_, slot), _)| *slot >= killed.0 + 3_000)
        .collect();
    if after.len() < 2
        || after
            .iter()
            .any(|(_, n)| n.len() != 1 || n[0] == "a" || n[0] == "d")
    {
        problems.push(format!("dyn after the kill -9 of a: {after:?}"));
    }
    if dyn_runs.values().any(|n| n.len() != 1) {
        problems.push(format!("dyn ran a slot twice: {dyn_runs:?}"));
    }
    let injected_runs = read_runs(&injected_out);
    if injected_runs.is_empty() || injected_runs.values().flatten().any(|n| n != "d") {
        problems.push(format!(
            "injected ran on {:?}",
            injected_runs.values().collect::<Vec<_>>()
        ));
    }
    if read_runs(&out).values().flatten().any(|n| n == "d") {
        problems.push("the node with another key ran a job of the cluster".into());
    }
    p.fail_if_any(&problems, killed.0, killed.0 + 6_000);
}
