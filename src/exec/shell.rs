//! Shell commands: `sh -c` contained in a cgroup of its own (or its own process group),
//! with a timeout that kills everything it started, and a bounded tail of output kept for
//! the log.
//!
//! A run is its shell: when the shell exits or runs out of time, whatever it left
//! running in its cgroup (process group, without cgroups) is killed, and the output still
//! in the pipes is read for at most [`DRAIN_AFTER_EXIT`]. What each mode can miss is in
//! the README ("What a job can leave behind").

use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::cgroup::RunCgroup;
use super::spawn::{ShellSpawn, spawn};
use crate::logs::escape;

/// How a shell command ended.
#[derive(Debug)]
pub struct ShellResult {
    /// The exit status, if the shell exited (absent when killed on timeout).
    pub status: Option<ExitStatus>,
    /// True when the timeout fired and the process group was killed.
    pub timed_out: bool,
    /// The last bytes of standard output (lossy UTF-8).
    pub stdout_tail: String,
    /// The last bytes of standard error (lossy UTF-8).
    pub stderr_tail: String,
}

impl ShellResult {
    /// True if the shell exited with status 0.
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// How the shell ended: `exit status N`, the signal that killed it, or `killed`.
    pub fn describe_status(&self) -> String {
        match self.status {
            Some(s) => match s.code() {
                Some(c) => format!("exit status {c}"),
                None => format!("{s}"),
            },
            None => "killed".to_string(),
        }
    }

    /// A one-line description for logs: status and output tails.
    pub fn describe(&self) -> String {
        let mut out = self.describe_status();
        // Escaped: the text goes into a log line (see `logs::escape`).
        for (name, tail) in [("stdout", &self.stdout_tail), ("stderr", &self.stderr_tail)] {
            if !tail.is_empty() {
                out.push_str(&format!("; {name}: \"{}\"", escape(tail.trim_end())));
            }
        }
        out
    }
}

/// After the shell exits (and what it left running was killed), how long to keep reading
/// its output: a process that escaped the kill (without cgroups, a `setsid` child) may
/// hold the pipes open for ever. Both streams share it. It was a second per stream, which
/// delayed every such run's end by two (issue 14).
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(100);

/// How a shell run's processes are kept together, so they can be killed together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Containment {
    /// A cgroup v2 of its own when cgroups are usable here, else its own process group.
    #[default]
    Cgroup,
    /// Its own process group only.
    ProcessGroup,
}

/// Runs being started at once, at most (see `run_shell_contained`).
static SPAWNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);

/// Runs `command` with `sh -c`, contained per [`Containment::Cgroup`], with `env` added
/// to the environment. See [`run_shell_contained`].
pub async fn run_shell(
    command: &str,
    env: &[(&'static str, String)],
    timeout: Option<Duration>,
    tail_bytes: usize,
) -> std::io::Result<ShellResult> {
    run_shell_contained(command, env, timeout, tail_bytes, Containment::Cgroup).await
}

/// Runs `command` with `sh -c` in a cgroup or process group of its own (`containment`),
/// with `env` added to the environment, and keeps the last `tail_bytes` of each output
/// stream.
///
/// The shell gets SIGKILL if this process dies (see `spawn`), and the reaper kills the
/// rest. On timeout, everything in the run's cgroup (or process group) gets SIGKILL and
/// the result is returned at once, without waiting for output. When the shell exits,
/// what it left running is killed, and the output is read for at most
/// [`DRAIN_AFTER_EXIT`]. Dropping the future kills everything too.
pub async fn run_shell_contained(
    command: &str,
    env: &[(&'static str, String)],
    timeout: Option<Duration>,
    tail_bytes: usize,
    containment: Containment,
) -> std::io::Result<ShellResult> {
    let cgroups = match containment {
        Containment::Cgroup => super::cgroup::cgroups(),
        Containment::ProcessGroup => None,
    };
    // Few runs between their cgroup and their start at once: each holds descriptors
    // (`cgroup.procs`) meanwhile, and every exec copies and closes this process's whole
    // descriptor table, so 10,000 runs waiting for the spawning thread with theirs open made
    // each start cost 10,000 closes (issue 14, `scripts/burst.sh`).
    let permit = SPAWNING.acquire().await.map_err(std::io::Error::other)?;
    let mut cgroup = cgroups.and_then(|c| c.create().ok());
    let tag = super::reaper::tag().map(|t| t.to_string());
    let build = |cgroup_procs: Option<std::os::fd::BorrowedFd<'_>>| {
        let mut add: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
        if let Some(tag) = &tag {
            add.push((super::reaper::REAPER_ENV, tag.clone()));
        }
        // A job never sees the cluster key or the API token, even when the node read them
        // from its environment (issue 16).
        let remove = [crate::security::CLUSTER_KEY_ENV, crate::api::TOKEN_ENV];
        ShellSpawn::new(command, &remove, &add, cgroup_procs)
    };
    let in_cgroup = match &cgroup {
        Some(cg) => Some(build(cg.procs_fd())?),
        None => None,
    };
    let spawned = match in_cgroup {
        Some(request) => match spawn(request).await {
            Ok(child) => Ok(child),
            Err(e) => {
                // Created but could not be entered (no permission on a common ancestor,
                // a cgroup with controllers of its own): without cgroups from now on.
                // Another failure (too many processes or descriptors for now) is this
                // run's alone.
                if let Some(c) = cgroups
                    && super::spawn::is_cgroup_entry(&e)
                {
                    c.give_up(&e);
                }
                cgroup = None;
                Err(e)
            }
        },
        None => Err(std::io::ErrorKind::Unsupported.into()),
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(_) => {
            super::reaper::watch_environment();
            spawn(build(None)?).await?
        }
    };
    drop(permit);
    // If this future is dropped before the command ends (the node gave up on the run, or
    // is stopping), everything the run started goes, not just `sh`.
    let guard = Contained {
        group: i32::try_from(child.id()).ok(),
        cgroup,
    };
    let mut out = Tail::new(tail_bytes);
    let mut err = Tail::new(tail_bytes);
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (status, timed_out) = {
        let reading = futures::future::join(out.read(stdout), err.read(stderr));
        tokio::pin!(reading);
        let expiry = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        let mut read_all = false;
        let exited = loop {
            tokio::select! {
                status = child.wait() => break Some(status?),
                _ = &mut reading, if !read_all => read_all = true,
                () = &mut expiry => break None,
            }
        };
        // The run is over either way: whatever it left running goes.
        guard.kill();
        match exited {
            Some(status) => {
                if !read_all {
                    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut reading).await;
                }
                (Some(status), false)
            }
            None => {
                // Reported now, not after its output: the shell was just killed, so this
                // wait is short; bounded should it be stuck in the kernel.
                let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, child.wait()).await;
                (None, true)
            }
        }
    };
    drop(guard);
    Ok(ShellResult {
        status,
        timed_out,
        stdout_tail: out.into_string(),
        stderr_tail: err.into_string(),
    })
}

/// A run's processes: its process group, and its cgroup if it has one. Dropping it kills
/// them all and removes the cgroup.
struct Contained {
    group: Option<i32>,
    cgroup: Option<RunCgroup>,
}

impl Contained {
    fn kill(&self) {
        if let Some(cg) = &self.cgroup {
            cg.kill();
        }
        if let Some(pgid) = self.group.filter(|&p| p > 0) {
            // SAFETY: kill(2) with a negative pid signals the process group the shell
            // leads (process_group(0)); it touches no memory.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Contained {
    fn drop(&mut self) {
        self.kill();
        // Dropping the cgroup removes it.
    }
}

/// The last bytes of an output stream.
struct Tail {
    bytes: Vec<u8>,
    max: usize,
}

impl Tail {
    fn new(max: usize) -> Tail {
        Tail {
            bytes: Vec::new(),
            max,
        }
    }

    /// Reads `stream` to its end, keeping the last `max` bytes.
    async fn read<R: AsyncRead + Unpin>(&mut self, stream: Option<R>) {
        let Some(mut stream) = stream else {
            return;
        };
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.bytes.extend_from_slice(&buf[..n]);
                    if self.bytes.len() > self.max {
                        let cut = self.bytes.len() - self.max;
                        self.bytes.drain(..cut);
                    }
                }
            }
        }
    }

    fn into_string(self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_tail_of_long_output_is_kept() {
        let r = run_shell("seq 1 10000", &[], None, 16).await.unwrap();
        assert!(r.success());
        assert!(r.stdout_tail.len() <= 16);
        assert!(
            r.stdout_tail.ends_with("9999\n10000\n"),
            "{:?}",
            r.stdout_tail
        );
    }

    /// A job starts as `std::process::Command` would start it: SIGPIPE at its default
    /// (the Rust runtime ignores it in the node, and a shell cannot undo that), no signal
    /// blocked, and an exec failure reported as an error of the spawn.
    #[tokio::test]
    async fn a_job_starts_with_default_signals_and_an_empty_mask() {
        for containment in [Containment::Cgroup, Containment::ProcessGroup] {
            let r = run_shell_contained("yes | head -1", &[], None, 256, containment)
                .await
                .unwrap();
            assert!(r.success(), "{containment:?}: {r:?}");
            assert_eq!(
                (r.stdout_tail.as_str(), r.stderr_tail.as_str()),
                ("y\n", "")
            );
            let r = run_shell_contained(
                "grep -E '^Sig(Ign|Blk)' /proc/self/status",
                &[],
                None,
                256,
                containment,
            )
            .await
            .unwrap();
            let mask = |name: &str| {
                let line = r.stdout_tail.lines().find(|l| l.starts_with(name));
                let hex = line.and_then(|l| l.split_whitespace().nth(1));
                hex.and_then(|h| u64::from_str_radix(h, 16).ok())
            };
            assert_eq!(mask("SigBlk:"), Some(0), "{containment:?}: {r:?}");
            // Bit n-1 is signal n. Others may be ignored by whoever started the tests.
            let ignored = mask("SigIgn:").expect("SigIgn");
            assert_eq!(
                ignored & (1 << (libc::SIGPIPE - 1)),
                0,
                "{containment:?}: {r:?}"
            );
        }
    }

    /// Runs `cmd` (which writes the pid of a process it starts to the file `{pid}`) and
    /// returns the result and that pid file.
    async fn run_with_pidfile(
        cmd: &str,
        timeout: Option<Duration>,
        containment: Containment,
    ) -> (ShellResult, tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let cmd = cmd.replace("{pid}", &pidfile.display().to_string());
        let r = run_shell_contained(&cmd, &[], timeout, 64, containment)
            .await
            .unwrap();
        (r, dir, pidfile)
    }

    #[tokio::test]
    async fn dropping_a_run_kills_its_processes() {
        for containment in [Containment::Cgroup, Containment::ProcessGroup] {
            let dir = tempfile::tempdir().unwrap();
            let pidfile = dir.path().join("pid");
            let cmd = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
            let mut run = Box::pin(run_shell_contained(&cmd, &[], None, 64, containment));
            // Wait for the shell to start its child, then drop the run mid-way.
            for _ in 0..100 {
                if std::fs::metadata(&pidfile).is_ok_and(|m| m.len() > 0) {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(20), &mut run).await;
            }
            drop(run);
            assert!(
                process_in_pidfile_ends(&pidfile).await,
                "{containment:?}: the shell's child outlived the dropped run"
            );
        }
    }

    /// Waits (bounded, 5 s: the kill is immediate, but a loaded 2-core machine may not
    /// schedule the test for a second) for the process whose pid the file holds to be
    /// gone or a zombie; returns whether it was.
    pub(crate) async fn process_in_pidfile_ends(pidfile: &std::path::Path) -> bool {
        let pid: i32 = std::fs::read_to_string(pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        for _ in 0..250 {
            if !alive(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    fn alive(pid: i32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        !stat.is_empty() && stat.split_whitespace().nth(2) != Some("Z")
    }

    #[tokio::test]
    async fn what_a_run_left_running_is_killed_when_its_shell_exits() {
        for containment in [Containment::Cgroup, Containment::ProcessGroup] {
            let (r, _dir, pidfile) = run_with_pidfile(
                "sleep 30 & echo $! > {pid}; echo started",
                None,
                containment,
            )
            .await;
            assert!(r.success(), "{containment:?}: {r:?}");
            assert_eq!(r.stdout_tail, "started\n");
            assert!(
                process_in_pidfile_ends(&pidfile).await,
                "{containment:?}: the background child outlived its run"
            );
        }
    }

    /// Starts a `setsid` child that sleeps 30 s and writes its pid to `{pid}` once it is in
    /// a session of its own, and goes on only then (bounded, 5 s): a shell that went on at
    /// once could exit or be killed before its child left the process group, and the
    /// child died with the group (a loaded machine saw that: the case then tests nothing).
    const ESCAPED_CHILD: &str = "setsid sh -c 'echo $$ > {pid}; exec sleep 30' & \
        i=0; while [ ! -s {pid} ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done";

    #[tokio::test]
    async fn a_setsid_child_dies_with_its_timed_out_run_only_in_a_cgroup() {
        let cmd = &format!("{ESCAPED_CHILD}; sleep 30");
        let timeout = Some(Duration::from_secs(2));
        let (r, _dir, pidfile) = run_with_pidfile(cmd, timeout, Containment::ProcessGroup).await;
        assert!(r.timed_out);
        // The escape the README states for process groups: a new session leaves the group.
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            alive(pid),
            "expected the setsid child to escape its process group"
        );
        // SAFETY: killing the test's own stray child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        if super::super::cgroup::cgroups().is_none() {
            eprintln!("skipped the cgroup half: cgroup v2 is not usable here (see the log)");
            return;
        }
        let (r, _dir, pidfile) = run_with_pidfile(cmd, timeout, Containment::Cgroup).await;
        assert!(r.timed_out);
        assert!(
            process_in_pidfile_ends(&pidfile).await,
            "the setsid child outlived its timed-out run despite its cgroup"
        );
    }

    /// How long a run waits for output after its shell exits or times out, with a `setsid`
    /// child that holds the pipes open for 30 s (not killed without a cgroup). It was a
    /// second per stream after exit, and after a timeout too.
    ///
    /// Real time: this test used tokio's paused clock, which jumps to the next timer
    /// whenever the runtime idles, also while a real process is still starting or writing;
    /// on a loaded machine that made a run "wait" 0 s or 60 s of virtual time (CI saw
    /// both). So the bounds are loose (the run must not wait for the child, 30 s), and
    /// only the lower ones are exact.
    #[tokio::test]
    #[allow(clippy::disallowed_methods)] // measures the test's own runs
    async fn output_is_drained_for_a_bounded_time_and_a_timeout_is_reported_at_once() {
        // Far below the child's 30 s, far above a loaded machine's delays.
        const NOT_THE_CHILD: Duration = Duration::from_secs(10);
        let cases = [
            (format!("{ESCAPED_CHILD}; echo done"), None),
            (
                format!("{ESCAPED_CHILD}; sleep 30"),
                Some(Duration::from_secs(2)),
            ),
        ];
        for (cmd, timeout) in cases {
            let start = std::time::Instant::now();
            let (r, _dir, pidfile) =
                run_with_pidfile(&cmd, timeout, Containment::ProcessGroup).await;
            let waited = start.elapsed();
            let held = pid_alive(&pidfile);
            if let Some(pid) = read_pid(&pidfile) {
                // SAFETY: killing the test's own stray child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            let context = format!("{cmd}: {waited:?}, the setsid child alive: {held}, {r:?}");
            assert!(waited < NOT_THE_CHILD, "{context}");
            assert!(
                held,
                "the setsid child should outlive its run's process group: {context}"
            );
            match timeout {
                None => {
                    assert!(r.success(), "{context}");
                    assert_eq!(r.stdout_tail.trim(), "done", "{context}");
                    assert!(waited >= DRAIN_AFTER_EXIT, "{context}");
                }
                Some(t) => {
                    assert!(r.timed_out, "{context}");
                    assert!(waited >= t, "{context}");
                }
            }
        }
    }

    /// The pid the file holds, if it holds one.
    fn read_pid(pidfile: &std::path::Path) -> Option<i32> {
        std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
    }

    /// Whether the process whose pid `pidfile` holds is alive (false without a pid).
    fn pid_alive(pidfile: &std::path::Path) -> bool {
        read_pid(pidfile).is_some_and(alive)
    }
}
