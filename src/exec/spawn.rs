//! Where run processes are forked: one thread that lives as long as the process, so a
//! run's shell gets SIGKILL when this process dies (`PR_SET_PDEATHSIG`) and not before.
//!
//! The kernel sends the parent-death signal when the *thread* that forked the child exits,
//! not the process. Tokio forks on whichever thread polls the spawning task, and a
//! runtime's threads come and go (blocking-pool threads exit when idle, a runtime shut
//! down takes its workers), which would kill runs that should live on. So every shell is
//! forked on the `starling-spawn` thread, which never exits, inside the caller's runtime
//! so that the child is waited for there.

use std::io;
use std::os::fd::RawFd;
use std::sync::OnceLock;
use std::sync::mpsc;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

struct Request {
    cmd: Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

static SPAWNER: OnceLock<Option<mpsc::Sender<Request>>> = OnceLock::new();

fn spawner() -> Option<&'static mpsc::Sender<Request>> {
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Request>();
            std::thread::Builder::new()
                .name("starling-spawn".into())
                .spawn(move || {
                    // `tx` lives in a static: this loop never ends, nor does the thread.
                    while let Ok(mut req) = rx.recv() {
                        let _entered = req.runtime.enter();
                        let _ = req.reply.send(req.cmd.spawn());
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Spawns `cmd` from the spawning thread, after arranging for the child, between fork
/// and exec, to get SIGKILL when this process dies, and to move itself into the cgroup
/// whose `cgroup.procs` is open as `cgroup_procs`. Must be called inside a tokio runtime.
pub(crate) async fn spawn(mut cmd: Command, cgroup_procs: Option<RawFd>) -> io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: prctl, getppid and write are, and it allocates
    // nothing (io::Error from an OS code does not allocate). `cgroup_procs` is open in the
    // parent until the spawn returns, so the child's copy is valid.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then no signal will come.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if let Some(fd) = cgroup_procs {
                // `0` moves the writing process: the child is in its cgroup before it runs
                // anything, so nothing it starts can be outside it.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let Some(spawner) = spawner() else {
        // No thread could be started: fork here. The parent-death signal then follows this
        // thread, which in a runtime's worker pool lives as long as the runtime.
        return cmd.spawn();
    };
    let (reply, rx) = oneshot::channel();
    let req = Request {
        cmd,
        runtime: tokio::runtime::Handle::current(),
        reply,
    };
    if let Err(mpsc::SendError(mut req)) = spawner.send(req) {
        return req.cmd.spawn();
    }
    rx.await
        .unwrap_or_else(|_| Err(io::Error::other("the spawning thread is gone")))
}
