//! Executors: how a fired slot runs.
//!
//! An [`Executor`] runs one attempt of one slot and reports an [`Outcome`] (and, through
//! [`Executor::report`], a [`Report`] with what the attempt printed). The node runtime
//! wraps it with retries and backoff, and catches panics, so a failing or panicking job
//! never takes the node down. [`DefaultExecutor`] runs shell commands (`sh -c`), HTTP
//! requests (`http`) and in-process async handlers; the simulator brings its own executor.
//!
//! A shell run's processes are kept together and die with it (see [`Containment`]): a
//! cgroup v2 per run where usable (`cgroup`), else a process group; the shell is forked
//! from a thread that lives as long as the process (`spawn`), so it dies with the
//! process; and a reaper process kills what is left if the process is killed (`reaper`).

mod cgroup;
mod http;
mod reaper;
mod shell;
mod spawn;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use crate::core::job::ExecSpec;
use crate::core::types::{FireId, JobId, NodeId, UnixMillis};

pub use reaper::REAPER_ENV;
pub use shell::{Containment, DRAIN_AFTER_EXIT, ShellResult, run_shell, run_shell_contained};

/// A boxed future, as executors and handlers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a run knows about itself. Shell jobs get the same facts as environment variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunContext {
    /// The job (`STARLING_JOB`).
    pub job: JobId,
    /// The slot's scheduled time (`STARLING_SCHEDULED_AT`, `STARLING_SCHEDULED_AT_MS`).
    pub scheduled_at: UnixMillis,
    /// The slot's idempotency key (`STARLING_FIRE_ID`).
    pub fire_id: FireId,
    /// The node running it (`STARLING_NODE_ID`).
    pub node_id: NodeId,
    /// 1 for the first attempt, 2 for the first retry, ... (`STARLING_ATTEMPT`).
    pub attempt: u32,
    /// The ownership epoch (`STARLING_EPOCH`): a fencing token that grows with every change
    /// of the job's owner. A job's side effects can store the highest epoch they saw and
    /// reject writes from a lower one, which can only come from a stale owner.
    pub epoch: u64,
}

impl RunContext {
    /// The environment a shell job sees, in a fixed order.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("STARLING_JOB", self.job.to_string()),
            ("STARLING_SCHEDULED_AT", self.scheduled_at.to_rfc3339()),
            ("STARLING_SCHEDULED_AT_MS", self.scheduled_at.0.to_string()),
            ("STARLING_FIRE_ID", self.fire_id.to_string()),
            ("STARLING_NODE_ID", self.node_id.to_string()),
            ("STARLING_ATTEMPT", self.attempt.to_string()),
            ("STARLING_EPOCH", self.epoch.to_string()),
        ]
    }
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Success,
    /// A shell command exited with this non-zero status (its output is in the
    /// [`Report`]).
    Exited(i32),
    /// It failed otherwise; the text says how (the handler's error, the signal that killed
    /// the shell, a command that could not start).
    Failed(String),
    /// It ran past its timeout and was stopped (a shell job's process group is killed).
    TimedOut,
    /// It panicked (in-process handlers only); the text is the panic message.
    Panicked(String),
}

impl Outcome {
    /// True for [`Outcome::Success`].
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Success => f.write_str("success"),
            Outcome::Exited(code) => write!(f, "exit status {code}"),
            Outcome::Failed(why) => write!(f, "failed: {why}"),
            Outcome::TimedOut => f.write_str("timed out"),
            Outcome::Panicked(msg) => write!(f, "panicked: {msg}"),
        }
    }
}

/// What one attempt reports: how it ended and the last bytes of what it printed (shell
/// jobs; empty for handlers). The run history keeps the tails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// The tail of its standard output (lossy UTF-8).
    pub stdout_tail: String,
    /// The tail of its standard error (lossy UTF-8).
    pub stderr_tail: String,
}

impl From<Outcome> for Report {
    fn from(outcome: Outcome) -> Report {
        Report {
            outcome,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
        }
    }
}

/// The error type in-process handlers return.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An in-process job, for library users. Any
/// `Fn(RunContext) -> impl Future<Output = Result<(), HandlerError>>` closure is one; `?`
/// converts any error type into [`HandlerError`].
pub trait JobHandler: Send + Sync + 'static {
    /// Runs one attempt of one slot.
    fn call(&self, ctx: RunContext) -> BoxFuture<Result<(), HandlerError>>;
}

impl<F, Fut> JobHandler for F
where
    F: Fn(RunContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn call(&self, ctx: RunContext) -> BoxFuture<Result<(), HandlerError>> {
        Box::pin((self)(ctx))
    }
}

/// Runs one attempt of a slot. Implementations must not panic across `execute`; the
/// runtime catches panics anyway.
pub trait Executor: Send + Sync + 'static {
    /// Runs `exec` for `ctx` and reports how it ended. `timeout` is already resolved.
    fn execute(&self, exec: &ExecSpec, ctx: RunContext) -> BoxFuture<Outcome>;

    /// [`Executor::execute`] with what the attempt printed; the node calls this one.
    /// Default: `execute`'s outcome and no output.
    fn report(&self, exec: &ExecSpec, ctx: RunContext) -> BoxFuture<Report> {
        let run = self.execute(exec, ctx);
        Box::pin(async move { Report::from(run.await) })
    }

    /// Told of a slot that will not run because of the job's overlap policy: `forbid` and
    /// the previous run still running, or `replace` and a newer slot cancelled it before it
    /// started. The node logs and counts it already; the simulator's executor records it.
    /// Default: nothing.
    fn skipped(&self, _ctx: &RunContext) {}
}

/// Runs shell commands with `sh -c` and registered in-process handlers.
#[derive(Default, Clone)]
pub struct DefaultExecutor {
    handlers: BTreeMap<JobId, Arc<dyn JobHandler>>,
    /// Bytes of each of stdout and stderr kept for the log.
    pub output_tail_bytes: usize,
    /// How shell runs are contained (default: a cgroup per run where usable).
    pub containment: Containment,
}

impl fmt::Debug for DefaultExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultExecutor")
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Finds out now how shell runs will be contained here (the first time, the log says which
/// way and why), and starts the reaper. Runs do it themselves otherwise; a node calls it
/// at start so the log says it up front.
pub fn prepare_containment(containment: Containment) {
    match containment {
        Containment::Cgroup if cgroup::cgroups().is_some() => return,
        Containment::Cgroup => {}
        Containment::ProcessGroup => tracing::info!(
            "job processes are contained by process group only (job_cgroups = false)"
        ),
    }
    reaper::watch_environment();
}

/// Default bytes of output kept per stream.
pub const DEFAULT_OUTPUT_TAIL: usize = crate::core::limits::OUTPUT_TAIL_BYTES;

impl DefaultExecutor {
    /// An executor with no handlers.
    pub fn new() -> Self {
        DefaultExecutor {
            handlers: BTreeMap::new(),
            output_tail_bytes: DEFAULT_OUTPUT_TAIL,
            containment: Containment::default(),
        }
    }

    /// Registers the in-process handler for `job`.
    pub fn register(&mut self, job: JobId, handler: Arc<dyn JobHandler>) {
        self.handlers.insert(job, handler);
    }

    /// True if `job` has an in-process handler.
    pub fn has_handler(&self, job: &JobId) -> bool {
        self.handlers.contains_key(job)
    }
}

impl Executor for DefaultExecutor {
    fn execute(&self, exec: &ExecSpec, ctx: RunContext) -> BoxFuture<Outcome> {
        let run = self.run(exec, ctx);
        Box::pin(async move { run.await.outcome })
    }

    fn report(&self, exec: &ExecSpec, ctx: RunContext) -> BoxFuture<Report> {
        Box::pin(self.run(exec, ctx))
    }
}

impl DefaultExecutor {
    /// One attempt, unboxed, so `execute` and `report` each box it once.
    fn run(
        &self,
        exec: &ExecSpec,
        ctx: RunContext,
    ) -> impl Future<Output = Report> + Send + 'static + use<> {
        let timeout = exec.timeout;
        let tail = self.output_tail_bytes;
        let containment = self.containment;
        // A handler, called now (a panic is caught here, whether the handler panics before
        // or inside its future; a timeout drops, so cancels, the future), or a command.
        let run = match self.handlers.get(&ctx.job) {
            Some(h) => Ok(std::panic::catch_unwind(AssertUnwindSafe(|| h.call(ctx)))
                .map(|fut| AssertUnwindSafe(fut).catch_unwind())),
            None => Err((exec.command.clone(), exec.http.clone(), ctx)),
        };
        async move {
            match run {
                Ok(Err(payload)) => Outcome::Panicked(panic_message(payload)).into(),
                Ok(Ok(fut)) => {
                    let result = match timeout {
                        Some(t) => match tokio::time::timeout(t, fut).await {
                            Ok(r) => r,
                            Err(_) => return Outcome::TimedOut.into(),
                        },
                        None => fut.await,
                    };
                    match result {
                        Ok(Ok(())) => Outcome::Success,
                        Ok(Err(e)) => Outcome::Failed(e.to_string()),
                        Err(payload) => Outcome::Panicked(panic_message(payload)),
                    }
                    .into()
                }
                Err((_, Some(spec), ctx)) => http::run_http(&spec, &ctx, timeout, tail).await,
                Err((Some(command), None, ctx)) => {
                    run_command(&command, &ctx, timeout, tail, containment).await
                }
                Err((None, None, ctx)) => Outcome::Failed(format!(
                    "job `{}` has neither a command, a URL nor a registered handler",
                    ctx.job
                ))
                .into(),
            }
        }
    }
}

/// Runs a shell job's attempt.
async fn run_command(
    command: &str,
    ctx: &RunContext,
    timeout: Option<Duration>,
    tail: usize,
    containment: Containment,
) -> Report {
    let env = ctx.env();
    let r = match run_shell_contained(command, &env, timeout, tail, containment).await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("could not start `sh -c`: {e}")).into(),
    };
    let outcome = if r.timed_out {
        Outcome::TimedOut
    } else if r.success() {
        // A successful run's output is logged too (its tail), so operators see what
        // their jobs print; a failed run's goes into the failure's log line.
        let out = r.stdout_tail.trim_end();
        if !out.is_empty() {
            // Escaped, so the job cannot forge log lines (issue 14).
            let output = crate::logs::escape(out);
            tracing::info!(job = %ctx.job, slot = %ctx.scheduled_at, output = %output, "job output");
        }
        Outcome::Success
    } else {
        match r.status.and_then(|s| s.code()) {
            Some(code) => Outcome::Exited(code),
            None => Outcome::Failed(r.describe_status()),
        }
    };
    Report {
        outcome,
        stdout_tail: r.stdout_tail,
        stderr_tail: r.stderr_tail,
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Retry backoff: `base * 2^(attempt-1)`, capped at `max`.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(job: &str) -> RunContext {
        RunContext {
            job: JobId::new(job),
            scheduled_at: UnixMillis(1_700_000_000_000),
            fire_id: FireId::of(&JobId::new(job), UnixMillis(1_700_000_000_000)),
            node_id: NodeId::new("n1"),
            attempt: 1,
            epoch: 1,
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Duration::from_secs(1);
        let m = Duration::from_secs(10);
        assert_eq!(backoff(1, b, m), Duration::from_secs(1));
        assert_eq!(backoff(2, b, m), Duration::from_secs(2));
        assert_eq!(backoff(3, b, m), Duration::from_secs(4));
        assert_eq!(backoff(5, b, m), Duration::from_secs(10));
        assert_eq!(backoff(60, b, m), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_shell_job_sees_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let exec = ExecSpec {
            command: Some(format!(
                "echo \"$STARLING_JOB $STARLING_SCHEDULED_AT $STARLING_SCHEDULED_AT_MS $STARLING_FIRE_ID $STARLING_NODE_ID $STARLING_ATTEMPT\" > {}",
                out.display()
            ).into()),
            ..ExecSpec::default()
        };
        let c = ctx("report");
        let outcome = DefaultExecutor::new().execute(&exec, c.clone()).await;
        assert_eq!(outcome, Outcome::Success);
        let got = std::fs::read_to_string(out).unwrap();
        assert_eq!(
            got.trim(),
            format!(
                "report 2023-11-14T22:13:20.000Z 1700000000000 {} n1 1",
                c.fire_id
            )
        );
    }

    #[tokio::test]
    async fn a_failing_shell_job_reports_its_exit_code_and_output_tails() {
        let exec = ExecSpec {
            command: Some("echo to-stdout; echo to-stderr >&2; exit 3".into()),
            ..ExecSpec::default()
        };
        let report = DefaultExecutor::new().report(&exec, ctx("x")).await;
        assert_eq!(report.outcome, Outcome::Exited(3));
        assert_eq!(report.stdout_tail, "to-stdout\n");
        assert_eq!(report.stderr_tail, "to-stderr\n");
        assert_eq!(
            DefaultExecutor::new().execute(&exec, ctx("x")).await,
            Outcome::Exited(3)
        );
        let killed = ExecSpec {
            command: Some("kill -9 $$".into()),
            ..ExecSpec::default()
        };
        let outcome = DefaultExecutor::new().execute(&killed, ctx("x")).await;
        assert!(
            matches!(&outcome, Outcome::Failed(why) if why.contains("signal")),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_timed_out_shell_job_has_its_process_group_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        // The background child shares the process group; it must die too.
        let exec = ExecSpec {
            command: Some(format!("sleep 30 & echo $! > {}; wait", pidfile.display()).into()),
            timeout: Some(Duration::from_millis(300)),
            ..ExecSpec::default()
        };
        let outcome = DefaultExecutor::new().execute(&exec, ctx("slow")).await;
        assert_eq!(outcome, Outcome::TimedOut);
        assert!(
            shell::tests::process_in_pidfile_ends(&pidfile).await,
            "the background child survived the timeout"
        );
    }

    #[tokio::test]
    async fn handlers_run_in_process_and_panics_are_caught() {
        let mut ex = DefaultExecutor::new();
        ex.register(
            JobId::new("ok"),
            Arc::new(|c: RunContext| async move {
                assert_eq!(c.attempt, 1);
                Ok::<(), HandlerError>(())
            }),
        );
        ex.register(
            JobId::new("boom"),
            Arc::new(|_c: RunContext| async move {
                panic!("handler exploded");
                #[allow(unreachable_code)]
                Ok::<(), HandlerError>(())
            }),
        );
        ex.register(
            JobId::new("err"),
            Arc::new(|_c: RunContext| async move { Err::<(), HandlerError>("nope".into()) }),
        );
        let spec = ExecSpec::default();
        assert_eq!(ex.execute(&spec, ctx("ok")).await, Outcome::Success);
        assert_eq!(
            ex.execute(&spec, ctx("boom")).await,
            Outcome::Panicked("handler exploded".into())
        );
        assert_eq!(
            ex.execute(&spec, ctx("err")).await,
            Outcome::Failed("nope".into())
        );
        assert!(matches!(
            ex.execute(&spec, ctx("unknown")).await,
            Outcome::Failed(_)
        ));
    }
}
