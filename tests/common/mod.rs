//! Helpers shared by the integration tests.
//!
//! This module is compiled into every test file that declares `mod common;`, and not
//! every file uses every helper.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use starling::{Clock, SystemClock, UnixMillis};

pub mod trio;

/// The `starling` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_starling");

/// A port on 127.0.0.1 free for UDP and TCP a moment ago, from below the kernel's
/// ephemeral range (32768-60999 by default). A port found by binding port 0 comes from that
/// range, and the kernel could hand it to another socket of a test running at the same
/// time (a client's, an id probe's) before the node meant for it binds it: "Address
/// already in use", seen in tests/catalog.rs. Each test process walks its own stretch of
/// 20000-31999 (placed by its pid) and never hands out a port twice.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(LOW + (start + i) % SPAN).expect("below 32000");
        if UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port in 20000-31999 on 127.0.0.1");
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves nothing behind.
pub struct Proc(pub Option<Child>);

impl Proc {
    pub fn kill9(&mut self) {
        if let Some(c) = &mut self.0 {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        self.0 = None;
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.0.take().expect("running");
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        for _ in 0..200 {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c.kill().ok();
        c.wait().ok();
        panic!("process did not exit within 10 s of SIGTERM");
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`) to the process.
    pub fn signal(&self, signal: i32) {
        let c = self.0.as_ref().expect("running");
        // SAFETY: signalling our own child.
        let rc = unsafe { libc::kill(c.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", c.id());
    }

    /// Whether the process is still running (it has not exited on its own).
    pub fn is_running(&mut self) -> bool {
        match &mut self.0 {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn sleep_until(t: UnixMillis) {
    let ms = t.millis_since(SystemClock.now());
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms as u64));
    }
}

/// Writes `n` jobs `job-00`.. firing `@every 1s`, each appending
/// `$STARLING_NODE_ID $STARLING_JOB $STARLING_SCHEDULED_AT_MS` to `out`.
pub fn write_jobs(dir: &Path, n: usize, out: &Path) -> PathBuf {
    let mut text = String::new();
    for j in 0..n {
        text.push_str(&format!(
            "[[jobs]]\nname = \"job-{j:02}\"\nschedule = \"@every 1s\"\ncommand = \"echo $STARLING_NODE_ID $STARLING_JOB $STARLING_SCHEDULED_AT_MS >> {}\"\n\n",
            out.display()
        ));
    }
    let path = dir.join("jobs.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `starling run` as `name` on 127.0.0.1:`port`, its stderr (the log) going to `log`.
pub fn spawn_peer(name: &str, port: u16, seeds: &[u16], jobs: &Path, log: &Path) -> Proc {
    spawn_peer_with(name, port, seeds, jobs, log, &[])
}

/// [`spawn_peer`] with extra `starling run` flags.
pub fn spawn_peer_with(
    name: &str,
    port: u16,
    seeds: &[u16],
    jobs: &Path,
    log: &Path,
    extra: &[&str],
) -> Proc {
    Proc(Some(
        peer_command(name, port, seeds, jobs, log, extra)
            .spawn()
            .unwrap(),
    ))
}

/// The command [`spawn_peer_with`] runs, to adjust (its environment, say) before spawning.
pub fn peer_command(
    name: &str,
    port: u16,
    seeds: &[u16],
    jobs: &Path,
    log: &Path,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--node-id", name])
        .args(extra)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--jobs", &jobs.to_string_lossy()]);
    for s in seeds {
        cmd.args(["--seed", &format!("127.0.0.1:{s}")]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    cmd
}

/// The first whole second at or after `t`, in Unix milliseconds.
pub fn ceil_second(t: UnixMillis) -> i64 {
    (t.0 + 999).div_euclid(1000) * 1000
}

/// The last whole second at or before `t`, in Unix milliseconds.
pub fn floor_second(t: UnixMillis) -> i64 {
    t.0.div_euclid(1000) * 1000
}

/// (job, slot) -> nodes that ran it, from the lines the jobs appended.
pub fn read_runs(path: &Path) -> BTreeMap<(String, i64), Vec<String>> {
    let mut m: BTreeMap<(String, i64), Vec<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 3, "malformed line {line:?}");
        m.entry((f[1].to_string(), f[2].parse().unwrap()))
            .or_default()
            .push(f[0].to_string());
    }
    m
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a node to bind later: from
/// [`free_port`]'s range, not port 0's (the ephemeral range, where a client socket of a
/// test running at the same time may take it first).
pub fn free_tcp_port() -> u16 {
    free_port()
}

/// `GET path` over plain HTTP/1.1 to 127.0.0.1:`port` (no token): the body, or `None`
/// when the server is not up yet or does not answer 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The value of the unlabelled metric `name` in a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

pub fn starling(args: &[&str]) -> Output {
    let o = Command::new(BIN).args(args).output().unwrap();
    assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
    o
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits (bounded by `within`) until the log at `path` satisfies `done`; returns its text.
pub fn wait_for_log(path: &Path, within: Duration, done: impl Fn(&str) -> bool) -> (bool, String) {
    let deadline = SystemClock.now().saturating_add(within);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if done(&text) {
            return (true, text);
        }
        if SystemClock.now() >= deadline {
            return (false, text);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// Pids of the processes whose environment holds `STARLING_NODE_ID=<node>` and
/// `STARLING_JOB=<job>`: a run's processes and everything they started, `setsid` ones too.
pub fn processes_of(node: &str, job: &str) -> Vec<u32> {
    let (want_node, want_job) = (
        format!("STARLING_NODE_ID={node}"),
        format!("STARLING_JOB={job}"),
    );
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let mut vars = env.split(|&b| b == 0);
        let vars: Vec<&[u8]> = vars.by_ref().collect();
        if vars.contains(&want_node.as_bytes()) && vars.contains(&want_job.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}
