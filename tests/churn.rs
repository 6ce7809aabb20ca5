//! Process-level churn tests: 3 real `starling run` processes gossiping over UDP on
//! 127.0.0.1, real SIGTERMs, and a check of every slot the shell jobs recorded.
//!
//! Each job appends `$STARLING_NODE_ID $STARLING_JOB $STARLING_SCHEDULED_AT_MS` to one file;
//! after a warm-up (all 3 peers see each other) and until shortly before the end, every slot
//! of every job must appear there exactly once. On failure the peers' logs are kept and
//! their paths are printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use starling::{Clock, JobId, NodeId, SystemClock, UnixMillis};

mod common;
use common::{
    Proc, ceil_second, floor_second, free_port, read_runs, sleep_until, spawn_peer, write_jobs,
};

const JOBS: usize = 12;
/// (job, slot) -> the nodes that ran it.
type Runs = std::collections::BTreeMap<(String, i64), Vec<String>>;
const NAMES: [&str; 3] = ["a", "b", "c"];
/// What the last `membership changed` line of a peer's log shows once it sees all three.
const ALL_THREE: &str = r#"members=["a", "b", "c"] leaving=[]"#;

fn now() -> UnixMillis {
    SystemClock.now()
}

fn after(t: UnixMillis, ms: u64) -> UnixMillis {
    t.saturating_add(Duration::from_millis(ms))
}

/// The jobs `node` owns when all three are members, computed as the nodes compute it.
fn owned_by(node: &str) -> Vec<String> {
    let members: Vec<NodeId> = NAMES.iter().map(NodeId::new).collect();
    (0..JOBS)
        .map(|j| format!("job-{j:02}"))
        .filter(|j| starling::owner(&JobId::new(j), &members).unwrap().as_str() == node)
        .collect()
}

/// Three peers `a`, `b`, `c` seeding each other, each incarnation logging to a file of its own.
struct Cluster {
    dir: tempfile::TempDir,
    out: PathBuf,
    jobs: PathBuf,
    ports: [u16; 3],
    peers: Vec<Proc>,
    /// Per peer, the log of every incarnation, the current one last.
    logs: Vec<Vec<PathBuf>>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("runs.txt");
        let jobs = write_jobs(dir.path(), JOBS, &out);
        let ports = [free_port(), free_port(), free_port()];
        let mut c = Cluster {
            dir,
            out,
            jobs,
            ports,
            peers: Vec::new(),
            logs: vec![Vec::new(), Vec::new(), Vec::new()],
        };
        for i in 0..3 {
            let p = c.spawn(i);
            c.peers.push(p);
        }
        c
    }

    fn spawn(&mut self, i: usize) -> Proc {
        let seeds: Vec<u16> = (0..3).filter(|&k| k != i).map(|k| self.ports[k]).collect();
        let log = self
            .dir
            .path()
            .join(format!("{}-{}.log", NAMES[i], self.logs[i].len()));
        self.logs[i].push(log.clone());
        spawn_peer(NAMES[i], self.ports[i], &seeds, &self.jobs, &log)
    }

    /// Starts peer `i` again: same node id, same listen address, same seeds, a new log.
    fn restart(&mut self, i: usize) {
        assert!(self.peers[i].0.is_none(), "{} is still running", NAMES[i]);
        self.peers[i] = self.spawn(i);
    }

    fn log(&self, i: usize) -> String {
        read(self.logs[i].last().unwrap())
    }

    /// Waits (bounded) until every peer's latest `membership changed` line shows all three
    /// members and nobody leaving; returns when, or fails the test.
    fn wait_all_three(&mut self, timeout: Duration, what: &str) -> UnixMillis {
        let deadline = after(now(), timeout.as_millis() as u64);
        for _ in 0..1_000 {
            let seen: Vec<bool> = (0..3)
                .map(|i| {
                    self.log(i)
                        .lines()
                        .rfind(|l| l.contains("membership changed"))
                        .is_some_and(|l| l.contains(ALL_THREE))
                })
                .collect();
            if seen.iter().all(|&s| s) {
                return now();
            }
            let exited = (0..3).find(|&i| self.peers[i].0.is_some() && !self.peers[i].is_running());
            if let Some(i) = exited {
                self.fail(&format!("{what}: {} exited on its own", NAMES[i]));
            }
            if now() >= deadline {
                self.fail(&format!(
                    "{what}: peers did not all see a, b and c within {timeout:?} (saw all three: {seen:?})"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.fail(&format!("{what}: wait loop exhausted"));
    }

    /// SIGTERM peer `i`, wait for its exit, and check it left gracefully.
    fn leave(&mut self, i: usize) {
        let status = self.peers[i].terminate();
        if !status.success() {
            self.fail(&format!(
                "{} exited with {status} after SIGTERM, not success",
                NAMES[i]
            ));
        }
        let log = self.log(i);
        for needle in ["leaving: stopped firing", "left the cluster"] {
            if !log.contains(needle) {
                self.fail(&format!(
                    "{}'s log lacks {needle:?} after SIGTERM",
                    NAMES[i]
                ));
            }
        }
    }

    /// SIGTERM every peer still running.
    fn stop_all(&mut self) {
        for i in 0..3 {
            if self.peers[i].0.is_some() {
                self.leave(i);
            }
        }
    }

    /// The lines of every log that mention `job` and `slot`, with the log's file name.
    fn log_lines_about(&self, job: &str, slot: UnixMillis) -> Vec<String> {
        let (job, slot) = (format!("job={job} "), format!("{slot}"));
        let mut lines = Vec::new();
        for path in self.logs.iter().flatten() {
            let name = path.file_name().unwrap().to_string_lossy();
            for l in read(path).lines() {
                if l.contains(&job) && l.contains(&slot) && lines.len() < 20 {
                    lines.push(format!("    {name}: {l}"));
                }
            }
        }
        lines
    }

    fn log_paths(&self) -> String {
        self.logs
            .iter()
            .flatten()
            .chain(std::iter::once(&self.out))
            .map(|p| format!("  {}\n", p.display()))
            .collect()
    }

    /// Fails the test, keeping the logs and the runs file and naming their paths.
    fn fail(&mut self, msg: &str) -> ! {
        self.dir.disable_cleanup(true);
        panic!("{msg}\nlogs and runs (kept):\n{}", self.log_paths());
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Every slot of every job in `[from, to]` that did not run exactly once, each followed by
/// the peers' log lines about that slot.
fn slot_problems(c: &Cluster, runs: &Runs, from: i64, to: i64) -> Vec<String> {
    let mut problems = Vec::new();
    for j in 0..JOBS {
        let job = format!("job-{j:02}");
        let mut s = from;
        while s <= to {
            let nodes = runs.get(&(job.clone(), s)).cloned().unwrap_or_default();
            if nodes.len() != 1 {
                let kind = if nodes.is_empty() {
                    "MISSING"
                } else {
                    "DUPLICATE"
                };
                problems.push(format!("{kind} {job} {} ran on {nodes:?}", UnixMillis(s)));
                problems.extend(c.log_lines_about(&job, UnixMillis(s)));
            }
            s += 1000;
        }
    }
    problems
}

#[test]
fn graceful_leave_of_one_of_three_processes_loses_and_duplicates_no_slot() {
    let started = now();
    let mut c = Cluster::start();
    let converged = c.wait_all_three(Duration::from_secs(20), "startup");
    // Startup delay (1 s) and handoffs (0.8 s) are over 2 s after everyone sees everyone.
    let window_start = ceil_second(after(started, 4_000)).max(ceil_second(after(converged, 2_000)));

    // The leaver owns the most jobs, so the leave matters.
    let leaver = (0..3).max_by_key(|&i| owned_by(NAMES[i]).len()).unwrap();
    let moved = owned_by(NAMES[leaver]);
    sleep_until(UnixMillis(window_start + 3_000));
    // Mid-second, so the SIGTERM does not race a slot.
    sleep_until(UnixMillis(ceil_second(now()) + 500));
    let term_at = now();
    c.leave(leaver);
    let exited_at = now();
    sleep_until(after(exited_at, 7_000));
    // Slots of the last 2 s may still be starting; they are not counted.
    let window_end = floor_second(now()) - 2_000;
    c.stop_all();

    let runs = read_runs(&c.out);
    let mut problems = slot_problems(&c, &runs, window_start, window_end);
    // The leaver fired nothing after the SIGTERM.
    for ((job, slot), nodes) in &runs {
        if *slot > term_at.0 && nodes.iter().any(|n| n == NAMES[leaver]) {
            problems.push(format!(
                "{} ran {job} {} after its SIGTERM at {term_at}",
                NAMES[leaver],
                UnixMillis(*slot)
            ));
        }
    }
    // The survivors ran every one of the leaver's jobs after it was gone.
    for job in &moved {
        let taken: Vec<(i64, &String)> = runs
            .iter()
            .filter(|((j, s), _)| j == job && *s > exited_at.0 && *s <= window_end)
            .flat_map(|((_, s), n)| n.iter().map(move |n| (*s, n)))
            .collect();
        if taken.len() < 3 || taken.iter().any(|(_, n)| n.as_str() == NAMES[leaver]) {
            problems.push(format!(
                "{job} (owned by the leaver {}) after its exit at {exited_at} ran {taken:?}",
                NAMES[leaver]
            ));
        }
    }
    // The survivors saw it leave (status=leaving), not just vanish.
    let announced = format!(r#"leaving=["{}"]"#, NAMES[leaver]);
    if !(0..3)
        .filter(|&i| i != leaver)
        .any(|i| c.log(i).contains(&announced))
    {
        problems.push(format!(
            "no survivor logged {} as leaving ({announced})",
            NAMES[leaver]
        ));
    }
    if !problems.is_empty() {
        let msg = format!(
            "graceful leave of {} (SIGTERM at {term_at}, exited at {exited_at}), window {} ..= {}:\n{}",
            NAMES[leaver],
            UnixMillis(window_start),
            UnixMillis(window_end),
            problems.join("\n")
        );
        c.fail(&msg);
    }
}

#[test]
fn rolling_restart_of_three_processes_loses_and_duplicates_no_slot() {
    let started = now();
    let mut c = Cluster::start();
    let converged = c.wait_all_three(Duration::from_secs(20), "startup");
    let window_start = ceil_second(after(started, 4_000)).max(ceil_second(after(converged, 2_000)));
    sleep_until(UnixMillis(window_start + 2_000));

    const DOWN_MS: [u64; 3] = [0, 1_000, 2_500];
    let mut restarted_at = [UnixMillis(0); 3];
    let mut back_at = [UnixMillis(0); 3];
    for i in 0..3 {
        // Mid-second, so the SIGTERM does not race a slot.
        sleep_until(UnixMillis(ceil_second(now()) + 500));
        c.leave(i);
        // Down for a while, a different while for each: the others take its jobs over
        // meanwhile, and still hold its old incarnation's state when it comes back.
        sleep_until(after(now(), DOWN_MS[i]));
        restarted_at[i] = now();
        c.restart(i);
        back_at[i] = c.wait_all_three(
            Duration::from_secs(15),
            &format!("after restarting {}", NAMES[i]),
        );
        // Let the handoff back to it (0.8 s) complete before the next one goes.
        sleep_until(after(back_at[i], 2_000));
    }
    sleep_until(after(now(), 3_000));
    let window_end = floor_second(now()) - 2_000;
    c.stop_all();

    let runs = read_runs(&c.out);
    let mut problems = slot_problems(&c, &runs, window_start, window_end);
    // Every node ran its own jobs again after its restart.
    for i in 0..3 {
        let mine = owned_by(NAMES[i]);
        let ran: usize = runs
            .iter()
            .filter(|((j, s), n)| {
                *s > restarted_at[i].0
                    && *s <= window_end
                    && mine.contains(j)
                    && n.iter().any(|n| n == NAMES[i])
            })
            .count();
        if ran == 0 {
            problems.push(format!(
                "{} ran none of its jobs {mine:?} after its restart at {} (back at {})",
                NAMES[i], restarted_at[i], back_at[i]
            ));
        }
    }
    if !problems.is_empty() {
        let times: Vec<String> = (0..3)
            .map(|i| {
                format!(
                    "{} restarted at {}, all three seen at {}",
                    NAMES[i], restarted_at[i], back_at[i]
                )
            })
            .collect();
        let msg = format!(
            "rolling restart ({}), window {} ..= {}:\n{}",
            times.join("; "),
            UnixMillis(window_start),
            UnixMillis(window_end),
            problems.join("\n")
        );
        c.fail(&msg);
    }
}
