//! Three real `starling run` processes `a`, `b`, `c` on 127.0.0.1 seeding each other, with
//! jobs that record every run in one file, and the checks the process-level tests share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use starling::{Clock, JobId, NodeId, SystemClock, UnixMillis};

use super::{Proc, free_port, peer_command, write_jobs};

/// (job, slot) -> the nodes that ran it.
pub type Runs = std::collections::BTreeMap<(String, i64), Vec<String>>;
pub const NAMES: [&str; 3] = ["a", "b", "c"];
/// What the last `membership changed` line of a peer's log shows once it sees all three.
pub const ALL_THREE: &str = r#"members=["a", "b", "c"] leaving=[]"#;

pub fn now() -> UnixMillis {
    SystemClock.now()
}

pub fn after(t: UnixMillis, ms: u64) -> UnixMillis {
    t.saturating_add(Duration::from_millis(ms))
}

/// Of `jobs` jobs, those `node` owns when all three are members, computed as the nodes
/// compute it.
pub fn owned_by(node: &str, jobs: usize) -> Vec<String> {
    let members: Vec<NodeId> = NAMES.iter().map(NodeId::new).collect();
    (0..jobs)
        .map(|j| format!("job-{j:02}"))
        .filter(|j| starling::owner(&JobId::new(j), &members).unwrap().as_str() == node)
        .collect()
}

/// Three peers `a`, `b`, `c` seeding each other, each incarnation logging to a file of its own.
pub struct Trio {
    pub dir: tempfile::TempDir,
    pub out: PathBuf,
    pub jobs: PathBuf,
    /// How many jobs (`job-00`..).
    pub job_count: usize,
    pub ports: [u16; 3],
    pub peers: Vec<Proc>,
    /// Per peer, the log of every incarnation, the current one last.
    pub logs: Vec<Vec<PathBuf>>,
    /// Extra `starling run` flags of every peer.
    pub extra: Vec<String>,
    /// Per peer, extra environment variables of its process.
    pub env: [Vec<(String, String)>; 3],
}

impl Trio {
    /// Starts the three peers with `job_count` jobs firing every second, each with the
    /// `extra` flags.
    pub fn start(job_count: usize, extra: &[&str]) -> Trio {
        let mut c = Trio::prepare(job_count, extra);
        c.spawn_all();
        c
    }

    /// [`Trio::start`] without starting anything yet: the jobs file and the environment
    /// may be changed first, then [`Trio::spawn_all`].
    pub fn prepare(job_count: usize, extra: &[&str]) -> Trio {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("runs.txt");
        let jobs = write_jobs(dir.path(), job_count, &out);
        let ports = [free_port(), free_port(), free_port()];
        Trio {
            dir,
            out,
            jobs,
            job_count,
            ports,
            peers: Vec::new(),
            logs: vec![Vec::new(), Vec::new(), Vec::new()],
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Default::default(),
        }
    }

    /// Starts the three peers of a [`Trio::prepare`]d trio.
    pub fn spawn_all(&mut self) {
        for i in 0..3 {
            let p = self.spawn(i);
            self.peers.push(p);
        }
    }

    pub fn spawn(&mut self, i: usize) -> Proc {
        let seeds: Vec<u16> = (0..3).filter(|&k| k != i).map(|k| self.ports[k]).collect();
        let log = self
            .dir
            .path()
            .join(format!("{}-{}.log", NAMES[i], self.logs[i].len()));
        self.logs[i].push(log.clone());
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let mut cmd = peer_command(NAMES[i], self.ports[i], &seeds, &self.jobs, &log, &extra);
        cmd.envs(self.env[i].iter().map(|(k, v)| (k, v)));
        Proc(Some(cmd.spawn().unwrap()))
    }

    /// Starts peer `i` again: same node id, same listen address, same seeds, a new log.
    pub fn restart(&mut self, i: usize) {
        assert!(self.peers[i].0.is_none(), "{} is still running", NAMES[i]);
        self.peers[i] = self.spawn(i);
    }

    pub fn log(&self, i: usize) -> String {
        read(self.logs[i].last().unwrap())
    }

    /// Waits (bounded) until every peer's latest `membership changed` line shows all three
    /// members and nobody leaving; returns when, or fails the test.
    pub fn wait_all_three(&mut self, timeout: Duration, what: &str) -> UnixMillis {
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
    pub fn leave(&mut self, i: usize) {
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
    pub fn stop_all(&mut self) {
        for i in 0..3 {
            if self.peers[i].0.is_some() {
                self.leave(i);
            }
        }
    }

    /// The lines of every log that mention `job` and `slot`, with the log's file name.
    pub fn log_lines_about(&self, job: &str, slot: UnixMillis) -> Vec<String> {
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

    pub fn log_paths(&self) -> String {
        self.logs
            .iter()
            .flatten()
            .chain(std::iter::once(&self.out))
            .map(|p| format!("  {}\n", p.display()))
            .collect()
    }

    /// Fails the test if there are `problems`, headed by `what` and the checked window.
    pub fn fail_on(&mut self, what: &str, from: i64, to: i64, problems: &[String]) {
        if !problems.is_empty() {
            let msg = format!(
                "{what}, window {} ..= {}:\n{}",
                UnixMillis(from),
                UnixMillis(to),
                problems.join("\n")
            );
            self.fail(&msg);
        }
    }

    /// Fails the test, keeping the logs and the runs file and naming their paths.
    pub fn fail(&mut self, msg: &str) -> ! {
        self.dir.disable_cleanup(true);
        panic!("{msg}\nlogs and runs (kept):\n{}", self.log_paths());
    }
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Every slot of every job in `[from, to]` that did not run exactly once, each followed by
/// the peers' log lines about that slot.
///
/// A slot no node ran is not a problem when a node logged that it skipped it under
/// `forbid` behind a run that was really running ([`skipped_behind_a_running_run`]): a run
/// of its own whose end it logged later, or another node's run that node logged (its end
/// can be gossiped a round late). CI saw the second after a SIGSTOP: the interim owner's
/// run of slot 27 took 789 ms on the loaded machine, and the resumed owner skipped slot 28
/// at 28.05 s, the end not yet heard of. A slot skipped behind a run that had ended or
/// never ran, or for any other reason, is still a problem.
pub fn slot_problems(c: &Trio, runs: &Runs, from: i64, to: i64) -> Vec<String> {
    let mut problems = Vec::new();
    for j in 0..c.job_count {
        let job = format!("job-{j:02}");
        let mut s = from;
        while s <= to {
            let nodes = runs.get(&(job.clone(), s)).cloned().unwrap_or_default();
            if nodes.is_empty() && skipped_behind_a_running_run(c, &job, UnixMillis(s)) {
                s += 1000;
                continue;
            }
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

/// Whether a peer skipped `job`'s `slot` under `forbid` behind a run of its own that was
/// really still running: one of its logs has the skip, naming that run, and the run's end
/// comes later in the same log. That is `forbid` doing its job when a run outlasted a
/// second: `echo` runs took 2 s on this 2-core machine at load 15, and churn failed with
/// the next slot "MISSING". A skip behind a run that had ended is not excused.
pub fn skipped_behind_a_running_run(c: &Trio, job: &str, slot: UnixMillis) -> bool {
    let (job, slot) = (format!(" job={job} "), format!(" slot={slot} "));
    c.logs.iter().flatten().any(|path| {
        let text = read(path);
        text.lines()
            .filter(|l| l.contains("slot skipped") && l.contains(&job) && l.contains(&slot))
            .any(|skip| skipped_behind_a_running_run_line(c, &text, skip))
    })
}

/// Whether the `slot skipped` line `skip` of the log `log` is `forbid` doing its job: the
/// run it names, when this node's (`slot <slot> here`, or a late run's slot alone), ended
/// (its `run succeeded` or `run failed` line) after that line; when another node's
/// (`slot <slot> on <node>`), it is in that node's logs (its end may be gossiped a round
/// after it, see [`slot_problems`]).
pub fn skipped_behind_a_running_run_line(c: &Trio, log: &str, skip: &str) -> bool {
    let Some((_, running)) = skip.split_once(" running=") else {
        return false;
    };
    let (running, logs, after) = match running.strip_prefix("slot ").map(|r| r.split_once(' ')) {
        Some(Some((r, "here"))) => (r, vec![log.to_string()], true),
        Some(Some((r, on))) => {
            let Some(i) = on
                .strip_prefix("on ")
                .and_then(|n| NAMES.iter().position(|m| *m == n))
            else {
                return false;
            };
            (r, c.logs[i].iter().map(|p| read(p)).collect(), false)
        }
        Some(None) => return false,
        None => (running, vec![log.to_string()], true),
    };
    let (Some(job), Some(at)) = (
        skip.split_whitespace().find(|f| f.starts_with("job=")),
        skip.split_whitespace().next(),
    ) else {
        return false;
    };
    let (job, running) = (format!(" {job} "), format!(" slot={running} "));
    logs.iter().flat_map(|l| l.lines()).any(|l| {
        (l.contains("run succeeded") || l.contains("run failed"))
            && l.contains(&job)
            && l.contains(&running)
            // RFC 3339 timestamps of one format: their text orders as their times.
            && (!after || l.split_whitespace().next().is_some_and(|t| t > at))
    })
}
