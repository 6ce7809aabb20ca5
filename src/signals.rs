//! Signals of `starling run`: SIGHUP reloads the config and jobs files; SIGINT or SIGTERM
//! leaves the cluster gracefully, and a second one during the leave exits at once.

use starling::logs::RateLimit;
use starling::{JobSpec, NodeConfig, NodeHandle, Stats};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{error, info, warn};

/// A reload's config, jobs, and the keys it changed that the node does not know of and
/// that need a restart (the API's).
pub type Loaded = (NodeConfig, Vec<JobSpec>, Vec<&'static str>);

/// What a signal asks of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ask {
    Reload,
    Leave(&'static str, i32),
}

/// The signals `starling run` handles, registered before the node starts: until then a
/// SIGHUP would kill the process (issue 14: SIGHUP killed the node without a graceful
/// leave or a log line).
pub struct Signals {
    hup: Signal,
    int: Signal,
    term: Signal,
}

impl Signals {
    /// Takes over SIGHUP, SIGINT and SIGTERM.
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) -> Ask {
        tokio::select! {
            _ = self.hup.recv() => Ask::Reload,
            _ = self.int.recv() => Ask::Leave("SIGINT", libc::SIGINT),
            _ = self.term.recv() => Ask::Leave("SIGTERM", libc::SIGTERM),
        }
    }

    /// Waits for SIGINT or SIGTERM, and returns its name; reloads on SIGHUP with `load`
    /// (which reads and checks the config and jobs files) meanwhile.
    pub async fn until_leave(
        &mut self,
        node: &NodeHandle,
        load: impl Fn() -> anyhow::Result<Loaded>,
    ) -> &'static str {
        loop {
            match self.next().await {
                Ask::Reload => reload(node, &load).await,
                Ask::Leave(name, _) => return name,
            }
        }
    }

    /// Leaves the cluster gracefully (`signal` asked for it), and exits the process at
    /// once, with status 128 + the signal's number, on a second SIGINT or SIGTERM
    /// meanwhile. Logs the node's counters once it has left, after its runs ended.
    pub async fn leave(mut self, node: NodeHandle, signal: &'static str, logs: &RateLimit) {
        info!(
            signal,
            "leaving the cluster (a second SIGINT or SIGTERM exits at once)"
        );
        let leave = node.shutdown_with_stats();
        tokio::pin!(leave);
        loop {
            tokio::select! {
                stats = &mut leave => {
                    log_counters(&stats);
                    return;
                }
                ask = self.next() => match ask {
                    Ask::Reload => info!("SIGHUP ignored: the node is leaving"),
                    Ask::Leave(name, number) => {
                        // Running jobs die with the process: their shells by the kernel
                        // (parent-death signal), the rest by the reaper.
                        warn!(signal = name, "second signal during the leave: exiting now; running jobs are killed");
                        logs.flush();
                        std::process::exit(128 + number);
                    }
                },
            }
        }
    }
}

/// SIGHUP: reads and checks both files first, and changes nothing on any error.
async fn reload(node: &NodeHandle, load: &impl Fn() -> anyhow::Result<Loaded>) {
    info!("SIGHUP: reloading the config and jobs files");
    let (config, jobs, mut restart) = match load() {
        Ok(loaded) => loaded,
        Err(e) => {
            let error = starling::logs::escape(&format!("{e:#}")).into_owned();
            error!(%error, "reload failed: nothing changed, the node keeps its config and jobs");
            return;
        }
    };
    // The cluster keys first: a rotation step (README, Security). Keys given in
    // STARLING_CLUSTER_KEY were removed from the environment at start: none to re-read.
    if let Some(keys) = &config.cluster_keys {
        match node.set_cluster_keys(keys) {
            Ok(()) => info!(
                sealing_key = %keys.sealing().id(),
                keys = ?keys.ids(),
                "cluster keys reloaded"
            ),
            Err(e) => error!(error = %e, "cluster keys not reloaded; keeping the current ones"),
        }
    }
    match node.reconfigure(config).await {
        Ok(keys) => restart.extend(keys),
        Err(e) => {
            error!(error = %e, "reload failed: nothing changed, the node keeps its config and jobs");
            return;
        }
    }
    if !restart.is_empty() {
        warn!(
            keys = ?restart,
            "reload: these config keys take effect only after a restart; they keep their running values"
        );
    }
    match node.replace_jobs(jobs).await {
        Ok(change) => info!(%change, "jobs reloaded"),
        Err(e) => error!(error = %e, "reload failed: the jobs are unchanged"),
    }
}

fn log_counters(s: &Stats) {
    info!(
        fired = s.fired,
        fired_late = s.fired_late,
        failed = s.failed,
        missed = s.missed,
        skipped_by_misfire_policy = s.skipped,
        skipped_by_overlap = s.overlap_skipped,
        replaced = s.replaced,
        abandoned = s.abandoned,
        repaired = s.repaired,
        duplicates_detected = s.duplicates_detected,
        ownership_changes = s.ownership_changes,
        "run counters of this node"
    );
}
