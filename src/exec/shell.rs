//! Shell commands: `sh -c` in its own process group, with a timeout that kills the group
//! and a bounded tail of output kept for the log.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

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

/// After the shell exits, how long to wait for a background child to close its copy of
/// the output pipes before giving up on the rest of the output.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// Runs `command` with `sh -c` in a new process group with `env` added to the environment.
/// On timeout the whole group gets SIGKILL. Keeps the last `tail_bytes` of each stream.
pub async fn run_shell(
    command: &str,
    env: &[(&'static str, String)],
    timeout: Option<Duration>,
    tail_bytes: usize,
) -> std::io::Result<ShellResult> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn()?;
    let pgid = child.id().map(|p| p as i32);
    // If this future is dropped before the command ends (the node crashed or gave up on
    // it), the whole process group goes, not just `sh`.
    let mut guard = GroupGuard(pgid);
    let stdout = tokio::spawn(read_tail(child.stdout.take(), tail_bytes));
    let stderr = tokio::spawn(read_tail(child.stderr.take(), tail_bytes));

    let (status, timed_out) = match timeout {
        Some(t) => match tokio::time::timeout(t, child.wait()).await {
            Ok(s) => (Some(s?), false),
            Err(_) => {
                kill_group(pgid);
                let _ = child.wait().await;
                (None, true)
            }
        },
        None => (Some(child.wait().await?), false),
    };
    guard.0 = None;
    let stdout_tail = collect(stdout).await;
    let stderr_tail = collect(stderr).await;
    Ok(ShellResult {
        status,
        timed_out,
        stdout_tail,
        stderr_tail,
    })
}

/// Kills the process group when dropped, unless disarmed.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

fn kill_group(pgid: Option<i32>) {
    if let Some(pgid) = pgid.filter(|&p| p > 0) {
        // SAFETY: kill(2) with a negative pid signals the process group we created with
        // process_group(0); it touches no memory.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

async fn collect(task: tokio::task::JoinHandle<String>) -> String {
    let abort = task.abort_handle();
    match tokio::time::timeout(DRAIN_AFTER_EXIT, task).await {
        Ok(Ok(s)) => s,
        _ => {
            abort.abort();
            String::new()
        }
    }
}

async fn read_tail<R: AsyncRead + Unpin>(stream: Option<R>, tail_bytes: usize) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > tail_bytes {
                    let cut = tail.len() - tail_bytes;
                    tail.drain(..cut);
                }
            }
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
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

    #[tokio::test]
    async fn dropping_a_run_kills_its_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let cmd = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let run = run_shell(&cmd, &[], None, 64);
        // Give the shell time to start its child, then drop the run mid-way.
        let _ = tokio::time::timeout(Duration::from_millis(300), run).await;
        assert!(
            process_in_pidfile_ends(&pidfile).await,
            "the shell's child outlived the dropped run"
        );
    }

    /// Waits (bounded, 1 s) for the process whose pid the file holds to be gone or a
    /// zombie; returns whether it was.
    pub(crate) async fn process_in_pidfile_ends(pidfile: &std::path::Path) -> bool {
        let pid: i32 = std::fs::read_to_string(pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        for _ in 0..50 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z") {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_background_child_holding_the_pipe_does_not_hang_the_run() {
        let r = run_shell("sleep 2 & echo started", &[], None, 64)
            .await
            .unwrap();
        assert!(r.success());
    }
}
