//! Per-run cgroups (v2): each shell run in a cgroup of its own, so everything it starts,
//! `setsid` children and daemons included, can be killed at once with `cgroup.kill`.
//!
//! The runs of this process live in `<own cgroup>/starling/<pid>/run-<n>`, where `<own
//! cgroup>` is the cgroup this process runs in. Nothing is enabled in `subtree_control`,
//! so the rule that a cgroup with processes may not hand controllers to its children does
//! not get in the way. The [`super::reaper`] kills and removes `starling/<pid>` if this
//! process dies without doing so itself; at start, the sub-trees of processes that no
//! longer exist are cleaned up too.
//!
//! When cgroup v2 is not mounted, not writable (a container with `/sys/fs/cgroup`
//! read-only, a user without a delegated cgroup), or has no `cgroup.kill` (Linux before
//! 5.14), runs fall back to process groups, with one info line saying why.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tracing::info;

/// The cgroups of this process's runs, if cgroup v2 is usable here.
#[derive(Debug)]
pub(crate) struct Cgroups {
    /// `<own cgroup>/starling/<pid>`: every run's cgroup is a child of it.
    root: PathBuf,
    next: AtomicU64,
    /// Set when moving a run into its cgroup failed although creating it worked: runs use
    /// process groups from then on.
    broken: AtomicBool,
}

static CGROUPS: OnceLock<Option<Cgroups>> = OnceLock::new();

/// The cgroups of this process's runs: probed once, on first use. `None` when cgroup v2
/// is not usable, said once in the log.
pub(crate) fn cgroups() -> Option<&'static Cgroups> {
    CGROUPS
        .get_or_init(|| match probe() {
            Ok(c) => {
                info!(root = %c.root.display(), "job processes are contained by a cgroup v2 per run");
                super::reaper::watch_cgroup(&c.root);
                Some(c)
            }
            Err(why) => {
                info!(reason = %why, "cgroup v2 is not usable here: job processes are contained by process group only (a job's setsid children can outlive its timeout; see the README)");
                None
            }
        })
        .as_ref()
        .filter(|c| !c.broken.load(Ordering::Relaxed))
}

impl Cgroups {
    /// A new, empty cgroup for one run.
    pub(crate) fn create(&self) -> io::Result<RunCgroup> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("run-{n}"));
        std::fs::create_dir(&dir)?;
        let procs = match std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
        {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(e);
            }
        };
        Ok(RunCgroup {
            dir,
            procs: Some(procs),
        })
    }

    /// A run could not be moved into its cgroup: use process groups from now on.
    pub(crate) fn give_up(&self, error: &io::Error) {
        if !self.broken.swap(true, Ordering::Relaxed) {
            info!(error = %error, "could not move a job into its cgroup: job processes are contained by process group only from now on");
        }
    }
}

/// One run's cgroup. Dropping it kills whatever is left in it and removes it.
#[derive(Debug)]
pub(crate) struct RunCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, open for writing: the child writes `0` to it between fork and exec
    /// to move itself in, before it can start anything.
    procs: Option<File>,
}

impl RunCgroup {
    /// The descriptor of `cgroup.procs` (close-on-exec), for the child to write to.
    pub(crate) fn procs_fd(&self) -> Option<BorrowedFd<'_>> {
        self.procs.as_ref().map(|f| f.as_fd())
    }

    /// SIGKILL to every process in the cgroup, at once.
    pub(crate) fn kill(&self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), b"1");
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        self.procs = None;
        self.kill();
        // The killed processes take a moment to exit; until then the directory cannot go.
        if std::fs::remove_dir(&self.dir).is_err() {
            remove_later(std::mem::take(&mut self.dir));
        }
    }
}

/// Removes an emptied cgroup once its processes are gone: tried every 20 ms for 2 s on the
/// runtime, if there is one. What is left is removed by the reaper when this process ends.
fn remove_later(dir: PathBuf) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            match std::fs::remove_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {}
                _ => return,
            }
        }
    });
}

fn probe() -> Result<Cgroups, String> {
    let own = own_cgroup_dir()?;
    let tree = own.join("starling");
    match std::fs::create_dir(&tree) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", tree.display())),
    }
    sweep(&tree);
    let root = tree.join(std::process::id().to_string());
    // Left by an earlier process with this pid that died with its reaper: empty it.
    if root.exists() {
        clear(&root);
    }
    std::fs::create_dir(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    if !root.join("cgroup.kill").exists() {
        let _ = std::fs::remove_dir(&root);
        return Err("the kernel has no cgroup.kill (Linux 5.14 or later has it)".into());
    }
    Ok(Cgroups {
        root,
        next: AtomicU64::new(0),
        broken: AtomicBool::new(false),
    })
}

/// The directory of this process's own cgroup in the v2 hierarchy.
fn own_cgroup_dir() -> Result<PathBuf, String> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2 hierarchy")?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    cgroup_dir(path, &mounts).ok_or_else(|| "cgroup v2 is not mounted here".to_string())
}

/// Where cgroup `path` is, given the mount table (`/proc/self/mountinfo`): under the mount
/// point of a `cgroup2` mount whose root holds it.
fn cgroup_dir(path: &str, mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        let mut fields = mount.split_whitespace().skip(3);
        let root = unescape(fields.next()?);
        let point = unescape(fields.next()?);
        let rel = Path::new(path).strip_prefix(&root).ok()?;
        Some(Path::new(&point).join(rel))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = b
            .get(i + 1..i + 4)
            .filter(|_| b[i] == b'\\')
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match code {
            Some(c) => {
                out.push(c);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Kills and removes the sub-trees of processes that no longer exist (their reaper was
/// killed with them).
fn sweep(tree: &Path) {
    let Ok(entries) = std::fs::read_dir(tree) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            clear(&e.path());
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// Kills everything in `dir`'s tree and removes its child cgroups (bounded: 1 s).
fn clear(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.kill"), b"1");
    for _ in 0..50 {
        let mut left = false;
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) && std::fs::remove_dir(e.path()).is_err()
                {
                    left = true;
                }
            }
        }
        if !left {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_cgroup_is_found_under_the_cgroup2_mount_that_holds_it() {
        let hybrid = "30 23 0:26 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n\
                      31 23 0:27 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup_dir("/", hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "25 1 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup_dir("/system.slice/starling.service", unified),
            Some(PathBuf::from(
                "/sys/fs/cgroup/system.slice/starling.service"
            ))
        );
        // A container that sees only its own sub-tree, mounted at a path with a space.
        let nested = "40 30 0:22 /docker/abc /sys/fs/my\\040cgroup ro - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup_dir("/docker/abc/app", nested),
            Some(PathBuf::from("/sys/fs/my cgroup/app"))
        );
        assert_eq!(cgroup_dir("/elsewhere", nested), None);
        assert_eq!(
            cgroup_dir("/", "31 23 0:27 / /x rw - cgroup cgroup rw\n"),
            None
        );
    }
}
