//! `starling demo`: three real peers as child processes, one killed midway.

use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use starling::{Clock, SystemClock, UnixMillis};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const JOBS: [&str; 6] = [
    "backup",
    "billing",
    "reports",
    "cache-warm",
    "emails",
    "cleanup",
];

/// Children killed (SIGKILL) when dropped, so an early error leaves nothing behind.
struct Peer {
    name: &'static str,
    child: Option<Child>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn sleep_until(t: UnixMillis) {
    let ms = t.millis_since(SystemClock.now());
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms as u64));
    }
}

/// One line of the run log: node, job, slot (ms), start time (ms).
struct RunLine {
    node: String,
    job: String,
    slot: i64,
    started: i64,
}

fn read_runs(path: &Path) -> Vec<RunLine> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 4 {
                return None;
            }
            Some(RunLine {
                node: f[0].to_string(),
                job: f[1].to_string(),
                slot: f[2].parse().ok()?,
                started: f[3].parse().ok()?,
            })
        })
        .collect()
}

pub fn run(duration: Duration, keep: bool) -> anyhow::Result<()> {
    let clock = SystemClock;
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "starling-demo-{}-{}",
        std::process::id(),
        clock.now().0
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let runs = dir.join("runs.log");
    let mut jobs = String::new();
    for j in JOBS {
        jobs.push_str(&format!(
            "[[jobs]]\nname = \"{j}\"\nschedule = \"@every 1s\"\ncommand = \"echo $STARLING_NODE_ID $STARLING_JOB $STARLING_SCHEDULED_AT_MS $(date +%s%3N) >> {}\"\n\n",
            runs.display()
        ));
    }
    let jobs_path = dir.join("jobs.toml");
    std::fs::write(&jobs_path, jobs)?;
    // The peers seal their gossip, as a production cluster should (README, Security).
    let mut key = [0u8; starling::security::KEY_LEN];
    starling::security::Entropy::fill(&starling::security::OsEntropy, &mut key);
    let key = starling::security::ClusterKey::from_bytes(key);
    let key_path = dir.join("cluster.key");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key_path)?
            .write_all(format!("{}\n", key.to_base64().as_str()).as_bytes())?;
    }

    let ports: Vec<u16> = (0..NODES.len())
        .map(|_| free_port())
        .collect::<anyhow::Result<_>>()?;
    let exe = std::env::current_exe()?;
    println!(
        "Starling demo: 3 peers on 127.0.0.1, {} jobs firing every second, {:?}.",
        JOBS.len(),
        duration
    );
    println!(
        "Working directory: {}; gossip sealed with cluster key {}.\n",
        dir.display(),
        key.id()
    );
    let t0 = clock.now();
    let mut peers = Vec::new();
    for (i, name) in NODES.iter().enumerate() {
        let mut cmd = Command::new(&exe);
        cmd.arg("run")
            .args(["--node-id", name])
            .args(["--listen", &format!("127.0.0.1:{}", ports[i])])
            .args(["--jobs", &jobs_path.to_string_lossy()])
            .args(["--cluster-key-file", &key_path.to_string_lossy()])
            .env_remove(starling::security::CLUSTER_KEY_ENV);
        for (k, p) in ports.iter().enumerate() {
            if k != i {
                cmd.args(["--seed", &format!("127.0.0.1:{p}")]);
            }
        }
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let child = cmd.spawn().context("starting a peer")?;
        peers.push(Peer {
            name,
            child: Some(child),
        });
        println!(
            "t={:>5.1}s  started {name} (gossip on 127.0.0.1:{})",
            secs(t0),
            ports[i]
        );
    }

    // Owners as the peers will compute them.
    let members: Vec<starling::NodeId> = NODES.iter().map(starling::NodeId::new).collect();
    let owner_before: BTreeMap<&str, String> = JOBS
        .iter()
        .map(|j| {
            (
                *j,
                starling::owner(&starling::JobId::new(j), &members)
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    let victim = "node-b";
    let survivors: Vec<starling::NodeId> = members
        .iter()
        .filter(|m| m.as_str() != victim)
        .cloned()
        .collect();

    // Kill 600 ms after a second boundary: the victim's last records (slots fire on the
    // second) have had three gossip rounds to reach its peers.
    let half = t0.saturating_add(duration / 2);
    let kill_at = UnixMillis((half.0 / 1000) * 1000 + 600);
    sleep_until(kill_at);
    let killed_at = clock.now();
    if let Some(c) = &mut peers[1].child {
        c.kill().ok();
        c.wait().ok();
    }
    peers[1].child = None;
    let moved: Vec<&str> = JOBS
        .iter()
        .copied()
        .filter(|j| owner_before[j] == victim)
        .collect();
    println!(
        "t={:>5.1}s  killed {victim} with SIGKILL; it owned: {}",
        secs(t0),
        moved.join(", ")
    );

    sleep_until(t0.saturating_add(duration));
    let stopped_at = clock.now();
    for p in &mut peers {
        if let Some(c) = &mut p.child {
            // SAFETY: sending SIGTERM to our own child process.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
    }
    for p in &mut peers {
        if let Some(mut c) = p.child.take() {
            let deadline = clock.now().saturating_add(Duration::from_secs(10));
            loop {
                if c.try_wait()?.is_some() {
                    break;
                }
                if clock.now() > deadline {
                    c.kill().ok();
                    c.wait().ok();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            println!(
                "t={:>5.1}s  {} left the cluster (SIGTERM)",
                secs(t0),
                p.name
            );
        }
    }

    // Who ran what.
    let lines = read_runs(&runs);
    let mut by_slot: BTreeMap<(&str, i64), Vec<&str>> = BTreeMap::new();
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &lines {
        by_slot.entry((&l.job, l.slot)).or_default().push(&l.node);
        *per_node.entry(&l.node).or_default() += 1;
    }
    // Slots every job must have run: from the first second all peers were up until the
    // peers were told to stop.
    let first = lines.iter().map(|l| l.slot).min().unwrap_or(0);
    let start = first + 2_000;
    let end = (stopped_at.0 / 1000) * 1000 - 1_000;
    let mut missing = Vec::new();
    let mut duplicates = Vec::new();
    for j in JOBS {
        let mut s = start;
        while s <= end {
            match by_slot.get(&(j, s)).map(Vec::len).unwrap_or(0) {
                0 => missing.push((j, s)),
                1 => {}
                _ => duplicates.push((j, s)),
            }
            s += 1000;
        }
    }
    println!(
        "\n{:<12} {:<10} {:<10} {:>5}",
        "job", "owner", "after kill", "runs"
    );
    for j in JOBS {
        let after = starling::owner(&starling::JobId::new(j), &survivors).unwrap();
        let n = lines.iter().filter(|l| l.job == j).count();
        println!(
            "{j:<12} {:<10} {:<10} {n:>5}",
            owner_before[j],
            after.as_str()
        );
    }
    println!();
    for (node, n) in &per_node {
        println!("{node} ran {n} slot(s)");
    }
    // Failover: crash -> first run by the new owner of a job the victim owned.
    let mut failover: Vec<i64> = moved
        .iter()
        .filter_map(|j| {
            lines
                .iter()
                .filter(|l| l.job == *j && l.node != victim && l.started >= killed_at.0)
                .map(|l| l.started - killed_at.0)
                .min()
        })
        .collect();
    failover.sort_unstable();
    if let Some(m) = failover.get(failover.len() / 2) {
        println!(
            "\nfailover: the new owners ran their first slot {:.2}s after the crash (median of {} job(s))",
            *m as f64 / 1000.0,
            failover.len()
        );
    }
    let checked: BTreeSet<i64> = (0..)
        .map(|k| start + k * 1000)
        .take_while(|s| *s <= end)
        .collect();
    println!(
        "checked {} slots ({} jobs x {} seconds): {} duplicate(s), {} missing",
        checked.len() * JOBS.len(),
        JOBS.len(),
        checked.len(),
        duplicates.len(),
        missing.len()
    );
    for (j, s) in duplicates.iter().take(10) {
        println!(
            "  duplicate: {j} slot {} ran on {:?}",
            UnixMillis(*s),
            by_slot[&(*j, *s)]
        );
    }
    for (j, s) in missing.iter().take(10) {
        println!("  missing: {j} slot {}", UnixMillis(*s));
    }
    if keep {
        println!("\nLogs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if !duplicates.is_empty() || !missing.is_empty() {
        anyhow::bail!("the demo saw duplicates or missing slots");
    }
    Ok(())
}

fn secs(t0: UnixMillis) -> f64 {
    SystemClock.now().millis_since(t0) as f64 / 1000.0
}
