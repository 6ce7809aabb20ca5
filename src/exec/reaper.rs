//! The reaper: a small `sh` process that outlives this one and, when this process ends
//! however it ends (kill -9 included), kills what its runs left running.
//!
//! A killed process cannot clean up after itself, and `PR_SET_PDEATHSIG` reaches only a
//! run's shell, not what the shell started (issue 14: after kill -9 of a node, its job's
//! `sleep 1000` lived on beside the new owner's run). So the first run starts a reaper: a
//! `sh` in a process group of its own that ignores the usual stop signals and reads a
//! pipe only this process holds (close-on-exec, so runs do not inherit it). When the
//! pipe reaches end of file, this process is gone, and the reaper:
//! - writes `1` to `cgroup.kill` of this process's cgroup sub-tree (see
//!   [`super::cgroup`]) and removes it;
//! - if a run was started without a cgroup, kills every process whose environment holds
//!   `STARLING_REAPER=<the reaper's pid>`, which every run gets and its children inherit,
//!   `setsid` ones included (a process that clears or replaces its environment escapes).
//!
//! What it is told travels as lines on the pipe: `cgroup <dir>` and `scan`.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing::warn;

/// The environment variable that marks a run's processes for the reaper.
pub const REAPER_ENV: &str = "STARLING_REAPER";

/// Runs by `sh -c SCRIPT starling-reaper`. Reads its orders until end of file, then acts
/// on them. Bounded: the cgroup is removed within 5 s, and the scan stops after 5 passes.
const SCRIPT: &str = r#"
trap '' HUP INT TERM QUIT PIPE USR1 USR2
cg=
scan=
while IFS= read -r line; do
  case $line in
    "cgroup "*) cg=${line#cgroup } ;;
    scan) scan=1 ;;
  esac
done
if [ -n "$cg" ] && [ -d "$cg" ]; then
  echo 1 > "$cg/cgroup.kill" 2>/dev/null
  n=0
  while [ $n -lt 50 ]; do
    for d in "$cg"/*/; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
    rmdir "$cg" 2>/dev/null && break
    n=$((n + 1))
    sleep 0.1
  done
fi
if [ -n "$scan" ]; then
  pass=0
  while [ $pass -lt 5 ]; do
    found=
    for e in /proc/[0-9]*/environ; do
      if tr '\0' '\n' < "$e" 2>/dev/null | grep -qx "STARLING_REAPER=$$"; then
        p=${e#/proc/}
        kill -KILL "${p%/environ}" 2>/dev/null && found=1
      fi
    done
    [ -z "$found" ] && break
    pass=$((pass + 1))
  done
fi
"#;

struct Reaper {
    pid: u32,
    /// Never closed while this process lives: its end of file is the reaper's signal.
    orders: Mutex<ChildStdin>,
    scan: AtomicBool,
}

static REAPER: OnceLock<Option<Reaper>> = OnceLock::new();

fn reaper() -> Option<&'static Reaper> {
    REAPER
        .get_or_init(|| match start() {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(error = %e, "could not start the reaper: if this process is killed, what its jobs started may outlive it");
                None
            }
        })
        .as_ref()
}

fn start() -> std::io::Result<Reaper> {
    let mut child = Command::new("sh")
        .args(["-c", SCRIPT, "starling-reaper"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Not in this process's group: a signal to the group (Ctrl-C in a terminal, kill
        // -9 of the group) must not take the reaper with it.
        .process_group(0)
        .spawn()?;
    let orders = child.stdin.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
    // The child is never waited for: it outlives this process by design.
    Ok(Reaper {
        pid: child.id(),
        orders: Mutex::new(orders),
        scan: AtomicBool::new(false),
    })
}

fn order(r: &Reaper, line: &str) {
    let mut pipe = r.orders.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = writeln!(pipe, "{line}") {
        warn!(error = %e, "the reaper is gone: if this process is killed, what its jobs started may outlive it");
    }
}

/// Asks the reaper to kill and remove cgroup sub-tree `dir` when this process ends.
pub(crate) fn watch_cgroup(dir: &Path) {
    if let Some(r) = reaper() {
        order(r, &format!("cgroup {}", dir.display()));
    }
}

/// A run is starting without a cgroup: asks the reaper, once, to kill the processes that
/// carry [`REAPER_ENV`] when this process ends.
pub(crate) fn watch_environment() {
    if let Some(r) = reaper()
        && !r.scan.swap(true, Ordering::Relaxed)
    {
        order(r, "scan");
    }
}

/// The value of [`REAPER_ENV`] for this process's runs: the reaper's pid.
pub(crate) fn tag() -> Option<u32> {
    reaper().map(|r| r.pid)
}
