//! Where run processes are started: `sh -c` by `clone(CLONE_VM | CLONE_VFORK)` (as
//! `posix_spawn` does) on one thread that lives as long as the process, so a run's shell
//! gets SIGKILL when this process dies (`PR_SET_PDEATHSIG`) and not before.
//!
//! Not `fork`: a fork copies the page tables of this whole process (a node with 10,000 jobs
//! holds some 250 MB) with its memory map locked, marks every page copy-on-write, and the
//! child's exec then tears the copy down again. At 10,000 runs due in one second that was
//! 5-50 ms per run on a loaded 2-core machine, one run at a time, so a burst took minutes,
//! and every thread of the node, gossip's included, paid for the locked map and the
//! copy-on-write faults (issue 14, `scripts/burst.sh`). std's `Command` forks whenever a
//! `pre_exec` hook is set, and the hook is the only way it offers to set the
//! parent-death signal or enter a cgroup before exec: hence this module.
//!
//! The kernel sends the parent-death signal when the *thread* that started the child
//! exits, not the process. A runtime's threads come and go (blocking-pool threads exit
//! when idle, a runtime shut down takes its workers), which would kill runs that should
//! live on. So every shell is started on the `starling-spawn` thread, which never exits.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

/// What to start: `sh -c COMMAND` with this environment, in a process group of its own,
/// stdin from `/dev/null`, stdout and stderr to pipes.
pub(crate) struct ShellSpawn {
    /// `sh`, found on `PATH`.
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// `cgroup.procs` of the run's cgroup, open for writing: the child writes `0` to it
    /// before exec, so nothing it starts can be outside it. A duplicate owned here: the
    /// caller's descriptor closes with its future, which may be dropped while this request
    /// waits for the spawning thread, and the child would then write to whatever file got
    /// that number next.
    cgroup_procs: Option<OwnedFd>,
}

impl ShellSpawn {
    /// `sh -c command`, with this process's environment less `remove`, plus `add`.
    pub(crate) fn new(
        command: &str,
        remove: &[&str],
        add: &[(&str, String)],
        cgroup_procs: Option<BorrowedFd<'_>>,
    ) -> io::Result<ShellSpawn> {
        let cstring = |b: &[u8]| {
            CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"))
        };
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| {
                !remove.iter().any(|r| k.as_bytes() == r.as_bytes())
                    && !add.iter().any(|(a, _)| k.as_bytes() == a.as_bytes())
            })
            .collect();
        env.extend(add.iter().map(|(k, v)| (k.into(), v.into())));
        let envp = env
            .iter()
            .map(|(k, v)| cstring(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect::<io::Result<_>>()?;
        Ok(ShellSpawn {
            program: sh_path()?.clone(),
            argv: vec![
                cstring(b"sh")?,
                cstring(b"-c")?,
                cstring(command.as_bytes())?,
            ],
            envp,
            cgroup_procs: cgroup_procs.map(|fd| fd.try_clone_to_owned()).transpose()?,
        })
    }
}

/// `sh` on this process's `PATH`, looked up once (as `Command::new("sh")` did per run).
fn sh_path() -> io::Result<&'static CString> {
    static SH: OnceLock<Option<CString>> = OnceLock::new();
    SH.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        std::env::split_paths(&path)
            .map(|dir| dir.join("sh"))
            .find(|p| {
                std::fs::metadata(p).is_ok_and(|m| {
                    m.is_file()
                        && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                })
            })
            .and_then(|p| CString::new(p.as_os_str().as_bytes()).ok())
    })
    .as_ref()
    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no sh on PATH"))
}

/// A started shell: its pid, its output pipes, and its exit to wait for. Dropping it
/// before it was waited for kills the shell (SIGKILL) and reaps it in the background.
pub(crate) struct RunChild {
    pid: libc::pid_t,
    /// Readable once the shell exits; `None` where `pidfd_open` is missing (Linux < 5.3):
    /// then `wait` polls.
    pidfd: Option<AsyncFd<OwnedFd>>,
    /// The shell's standard output, until taken.
    pub(crate) stdout: Option<pipe::Receiver>,
    /// The shell's standard error, until taken.
    pub(crate) stderr: Option<pipe::Receiver>,
    status: Option<ExitStatus>,
}

impl RunChild {
    /// The shell's pid (also its process group's id).
    pub(crate) fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the shell to exit and reaps it. Cancel-safe.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        if self.status.is_none() {
            self.status = Some(reap(self.pid, self.pidfd.as_ref()).await?);
        }
        Ok(self.status.unwrap_or_else(|| ExitStatus::from_raw(0)))
    }
}

/// Waits for child `pid` to exit, and reaps it. Cancel-safe.
async fn reap(pid: libc::pid_t, pidfd: Option<&AsyncFd<OwnedFd>>) -> io::Result<ExitStatus> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own unreaped child; `status` is a valid out pointer.
        match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
            0 => {}
            -1 => return Err(io::Error::last_os_error()),
            _ => return Ok(ExitStatus::from_raw(status)),
        }
        match pidfd {
            Some(fd) => fd.readable().await?.clear_ready(),
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

impl Drop for RunChild {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // SAFETY: the pid is our unreaped child's (a zombie keeps it), so it names no
        // other process.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
        }
        let (pid, pidfd) = (self.pid, self.pidfd.take());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            // Bounded: SIGKILL was sent; a process stuck in the kernel stays a zombie.
            rt.spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(60), reap(pid, pidfd.as_ref())).await;
            });
        }
    }
}

/// Kills and reaps a started shell that nobody took: the caller's future was dropped
/// while its request waited for the spawning thread or before it received the answer
/// (an overlap `replace`, a cancel, the node stopping).
struct Unclaimed(Option<libc::pid_t>);

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let mut status = 0;
            // SAFETY: our own unreaped child (nobody else knows its pid): SIGKILL, then a
            // wait that ends as soon as it died.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
        }
    }
}

/// What the spawning thread hands back.
struct Started {
    /// Disarmed once a [`RunChild`] owns the shell.
    unclaimed: Unclaimed,
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

struct Request {
    spawn: ShellSpawn,
    reply: oneshot::Sender<io::Result<Started>>,
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
                    while let Ok(req) = rx.recv() {
                        // Its future was dropped while it waited: start nothing.
                        if !req.reply.is_closed() {
                            let _ = req.reply.send(start(&req.spawn));
                        }
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Starts `spawn` from the spawning thread. Must be called inside a tokio runtime.
pub(crate) async fn spawn(spawn: ShellSpawn) -> io::Result<RunChild> {
    let started = match spawner() {
        Some(spawner) => {
            let (reply, rx) = oneshot::channel();
            match spawner.send(Request { spawn, reply }) {
                Ok(()) => rx
                    .await
                    .unwrap_or_else(|_| Err(io::Error::other("the spawning thread is gone")))?,
                // The thread is gone: start here. The parent-death signal then follows
                // this thread, which in a runtime's worker pool lives as long as the
                // runtime.
                Err(mpsc::SendError(req)) => start(&req.spawn)?,
            }
        }
        None => start(&spawn)?,
    };
    let mut started = started;
    let pid = started.pid;
    // From here on, dropping `child` kills and reaps the shell.
    started.unclaimed.0 = None;
    let mut child = RunChild {
        pid,
        pidfd: None,
        stdout: None,
        stderr: None,
        status: None,
    };
    // SAFETY: the pidfd is owned by the `AsyncFd`, which neither replaces nor closes it
    // while registered.
    child.pidfd = started
        .pidfd
        .map(|fd| unsafe { AsyncFd::register(fd) })
        .transpose()?;
    child.stdout = Some(pipe::Receiver::from_owned_fd(started.stdout)?);
    child.stderr = Some(pipe::Receiver::from_owned_fd(started.stderr)?);
    Ok(child)
}

/// A pipe, both ends close-on-exec: (read, write).
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just opened both; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// What the child reads (and, on failure, writes) between clone and exec. Everything in it
/// was prepared by the parent: the child allocates nothing.
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    parent: libc::pid_t,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    cgroup_procs: RawFd,
    /// The spawning thread's signal mask, restored once clone returned.
    mask: libc::sigset_t,
    /// The errno of the step that failed, 0 if exec was reached.
    error: libc::c_int,
    /// Whether the step that failed was the write to `cgroup.procs`.
    cgroup_failed: bool,
}

/// A shell could not enter its cgroup (the other failures of a start, such as too many
/// processes or descriptors for now, say nothing about cgroups).
#[derive(Debug)]
pub(crate) struct CgroupEntryFailed(io::Error);

impl std::fmt::Display for CgroupEntryFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entering the run's cgroup: {}", self.0)
    }
}

impl std::error::Error for CgroupEntryFailed {}

/// Whether `e` is a start that failed to enter its cgroup.
pub(crate) fn is_cgroup_entry(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<CgroupEntryFailed>())
}

/// The child's side, on its own stack and in the parent's memory (CLONE_VM): only
/// async-signal-safe calls, no allocation, and it never returns into the parent's code.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive (the parent is suspended by
    // CLONE_VFORK until this process execs or exits). Every call below is async-signal-
    // safe and touches only memory the parent prepared.
    unsafe {
        let a = &mut *(arg as *mut ChildArgs);
        let fail = |a: &mut ChildArgs| -> ! {
            a.error = *libc::__errno_location();
            libc::_exit(127)
        };
        // The parent's handlers are not for this process: a signal before exec takes the
        // default action (the handlers table is this process's own copy: no CLONE_SIGHAND).
        // SIGPIPE too, which the Rust runtime ignores and std's `Command` restores: a
        // shell cannot undo a signal ignored when it started, and `yes | head -1` would
        // fail with EPIPE instead of ending quietly.
        for sig in 1..=libc::SIGRTMAX() {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
                && (old.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        // An empty mask, as std gives its children (the spawning thread's mask may block
        // signals a job expects).
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(a);
        }
        // The parent may have died between clone and prctl: then no signal will come.
        if libc::getppid() != a.parent {
            a.error = libc::ESRCH;
            libc::_exit(127);
        }
        if libc::setpgid(0, 0) != 0 {
            fail(a);
        }
        // `0` moves the writing process: the child is in its cgroup before it runs
        // anything, so nothing it starts can be outside it.
        if a.cgroup_procs >= 0 && libc::write(a.cgroup_procs, b"0".as_ptr().cast(), 1) != 1 {
            a.cgroup_failed = true;
            fail(a);
        }
        for (fd, to) in [(a.stdin, 0), (a.stdout, 1), (a.stderr, 2)] {
            let ok = if fd == to {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                libc::fcntl(fd, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, to) == to
            };
            if !ok {
                fail(a);
            }
        }
        libc::execve(a.program, a.argv, a.envp);
        fail(a)
    }
}

/// Starts the shell on this thread (see the module's doc for why not `fork`).
fn start(s: &ShellSpawn) -> io::Result<Started> {
    let (out_r, out_w) = pipe_pair()?;
    let (err_r, err_w) = pipe_pair()?;
    let null = std::fs::File::open("/dev/null")?;
    let nul = |v: &[CString]| {
        let mut p: Vec<*const libc::c_char> = v.iter().map(|c| c.as_ptr()).collect();
        p.push(std::ptr::null());
        p
    };
    let (argv, envp) = (nul(&s.argv), nul(&s.envp));
    let mut args = ChildArgs {
        program: s.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        parent: std::process::id() as libc::pid_t,
        stdin: null.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        cgroup_procs: s.cgroup_procs.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
        // SAFETY: a zeroed sigset_t is a valid value; pthread_sigmask fills it below.
        mask: unsafe { std::mem::zeroed() },
        error: 0,
        cgroup_failed: false,
    };
    // The child's stack: it runs on it until exec, while this thread waits.
    let mut stack = vec![0u8; 256 * 1024];
    // SAFETY: blocking every signal on this thread until the child has exec'd keeps a
    // handler of this process from running on the child's stack in the shared memory;
    // the previous mask is restored right after, and the child empties its own before exec. clone with
    // CLONE_VM | CLONE_VFORK suspends this thread until the child execs or exits, so
    // `args`, `argv`, `envp`, the strings and the stack outlive the child's use of them.
    // The stack pointer is the (16-byte aligned) top: stacks grow down on Linux's
    // architectures but parisc, which Rust does not target.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut args.mask);
        let top = stack.as_mut_ptr().add(stack.len());
        let top = top.sub(top as usize % 16);
        let pid = libc::clone(
            child_main,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut args as *mut ChildArgs).cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &args.mask, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    drop(stack);
    drop((out_w, err_w, null));
    // SAFETY: the child read `error` last before exec or exit, and it is suspended no more
    // than the parent: CLONE_VFORK returned.
    let error = unsafe { std::ptr::read_volatile(&args.error) };
    if error != 0 {
        let mut status = 0;
        // SAFETY: the child exited (exec was not reached): reap it.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let e = io::Error::from_raw_os_error(error);
        // SAFETY: as for `error`.
        if unsafe { std::ptr::read_volatile(&args.cgroup_failed) } {
            return Err(io::Error::new(e.kind(), CgroupEntryFailed(e)));
        }
        return Err(e);
    }
    // SAFETY: pidfd_open on our unreaped child; on success the descriptor is ours alone.
    let pidfd = unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        (fd >= 0).then(|| OwnedFd::from_raw_fd(fd as RawFd))
    };
    if let Some(fd) = &pidfd {
        // SAFETY: sets O_NONBLOCK on a descriptor we own (tokio's AsyncFd wants it).
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    }
    Ok(Started {
        unclaimed: Unclaimed(Some(pid)),
        pid,
        pidfd,
        stdout: out_r,
        stderr: err_r,
    })
}
