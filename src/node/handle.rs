//! The handle a running node is driven through, and its counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::{ChitchatId, NodeState};

use tokio::sync::{mpsc, oneshot, watch};

use super::NodeConfig;
use super::config::ConfigError;
use super::jobs::{JobsChange, JobsError};
use crate::cluster::{GossipSecurity, GossipStats, Traffic, api_addresses};
use crate::core::job::JobSpec;
use crate::core::planner::View;
use crate::core::types::{JobId, NodeId};
use crate::history::History;
use crate::metrics::{Metrics, Scrape};
use crate::security::{KeyError, Keyring};

/// Counters a node keeps about its runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Slots started here.
    pub fired: u64,
    /// Of those, slots started late (catch-up).
    pub fired_late: u64,
    /// Runs that ended in failure after all retries (failed, timed out or panicked).
    pub failed: u64,
    /// Slots that will not run: older than the catch-up window.
    pub missed: u64,
    /// Slots dropped by a `once` or `skip` misfire policy.
    pub skipped: u64,
    /// Slots skipped because the job's previous run was still running (`overlap = forbid`;
    /// behind a run that started late, only if it was still running when it would have
    /// ended had it started on time).
    pub overlap_skipped: u64,
    /// Runs cancelled because a newer slot of the job started (`overlap = replace`).
    pub replaced: u64,
    /// Runs not started in quorum mode: the node lost the quorum before a quorum was known
    /// to hold the run's record, so the majority side runs the slot instead (or, if the
    /// record reached it, this node runs it late once it hears so: `repaired`).
    pub abandoned: u64,
    /// Abandoned runs this node ran late because the majority side had seen their record
    /// and so had not run them (see `Planner::abandon`).
    pub repaired: u64,
    /// Slots this node ran that it learned another node ran too (from that node's fire
    /// record: a healed partition, a stalled node that came back). Each node counts its
    /// side, so a slot run on two nodes counts once on each.
    pub duplicates_detected: u64,
    /// Jobs whose owner changed in this node's view, summed over every membership change.
    pub ownership_changes: u64,
}

pub(super) enum Command {
    /// Leave; answers with the counters as they are after the drain.
    Shutdown(oneshot::Sender<Stats>),
    Stats(oneshot::Sender<Stats>),
    ReplaceJobs(Vec<JobSpec>, oneshot::Sender<Result<JobsChange, JobsError>>),
    Reconfigure(Box<NodeConfig>, oneshot::Sender<Vec<&'static str>>),
}

/// A running node. Dropping it leaves the node running; call [`NodeHandle::shutdown`].
pub struct NodeHandle {
    pub(super) node_id: NodeId,
    pub(super) gossip: Arc<GossipSecurity>,
    pub(super) view: watch::Receiver<View>,
    pub(super) cmd: mpsc::UnboundedSender<Command>,
    pub(super) task: tokio::task::JoinHandle<()>,
    pub(super) history: Arc<History>,
    /// Saves the history now and then, with a data dir.
    pub(super) history_flush: Option<tokio::task::JoinHandle<()>>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) traffic: Arc<Traffic>,
    /// Chitchat's live nodes and their keys.
    pub(super) live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
}

impl NodeHandle {
    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// Members that may own jobs in this node's current view (alive, not leaving), sorted.
    pub fn members(&self) -> Vec<NodeId> {
        self.view.borrow().members.iter().cloned().collect()
    }

    /// The current view (members and every alive node, including leaving ones).
    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// The owner of `job` in this node's current view: the same pure function every node
    /// uses, so it answers for jobs this node does not know too.
    pub fn owner_of(&self, job: &str) -> Option<NodeId> {
        crate::core::owner::owner(&JobId::new(job), &self.view.borrow().members).cloned()
    }

    /// Waits until this node's view has exactly `n` members, or `timeout` passes. Returns
    /// whether it did.
    pub async fn wait_for_members(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.view.clone();
        tokio::time::timeout(timeout, rx.wait_for(|v| v.members.len() == n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The HTTP API address of every live node that has an API (this one included, if it
    /// has one), as they publish it in gossip.
    pub fn api_addresses(&self) -> BTreeMap<NodeId, SocketAddr> {
        api_addresses(&self.live.borrow())
    }

    /// This node's run history (its own runs only; the API merges the cluster's).
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// The node's metrics in the Prometheus text format, with values read now.
    pub async fn metrics_text(&self) -> String {
        let view = self.view();
        let scrape = Scrape {
            stats: self.stats().await,
            members: view.members.len(),
            alive: view.alive.len(),
            gossip_bytes: self.traffic.bytes(),
            history: (self.history.len(), self.history.bytes()),
            gauges: Vec::new(),
        };
        self.metrics.render(scrape)
    }

    /// The node's run counters.
    pub async fn stats(&self) -> Stats {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Stats(tx)).is_err() {
            return Stats::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Makes `jobs` this node's jobs, without a restart: jobs it does not have are added,
    /// jobs missing from `jobs` are removed (a run in progress goes on to its end), and
    /// jobs whose definition changed are updated in place, keeping their records, so no
    /// slot runs twice. Jobs run by in-process handlers ([`NodeBuilder::handler_job`])
    /// stay as they are, and `jobs` may not name them. The whole set is checked first: on
    /// error nothing changes.
    ///
    /// A job added fires its first slot after the change; a new schedule applies to slots
    /// after the change. Each node applies its own set: give every node the same one.
    ///
    /// [`NodeBuilder::handler_job`]: super::NodeBuilder::handler_job
    pub async fn replace_jobs(&self, jobs: Vec<JobSpec>) -> Result<JobsChange, JobsError> {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::ReplaceJobs(jobs, tx)).is_err() {
            return Err(JobsError::Stopped);
        }
        rx.await.unwrap_or(Err(JobsError::Stopped))
    }

    /// Applies the settings of `config` that can change while the node runs
    /// ([`NodeConfig::LIVE_KEYS`]: `drain_timeout`, `retry_backoff`,
    /// `retry_backoff_max`) and returns the keys whose new values need a restart, which
    /// keep their old values. An invalid `config` changes nothing.
    pub async fn reconfigure(&self, config: NodeConfig) -> Result<Vec<&'static str>, ConfigError> {
        config.validate()?;
        let (tx, rx) = oneshot::channel();
        if self
            .cmd
            .send(Command::Reconfigure(Box::new(config), tx))
            .is_err()
        {
            return Ok(Vec::new());
        }
        Ok(rx.await.unwrap_or_default())
    }

    /// The gossip transport's counters: packets and bytes sent and received, and every
    /// dropped packet by reason (no seal, wrong key, forged, stale, ...).
    pub fn gossip_stats(&self) -> GossipStats {
        self.gossip.stats()
    }

    /// Replaces the cluster keys from the next gossip packet on (a key rotation step: see
    /// the README's Security section). The node keeps its keys on error; a node started
    /// without a key cannot be given one ([`KeyError::StartedOpen`]).
    pub fn set_cluster_keys(&self, keys: &Keyring) -> Result<(), KeyError> {
        self.gossip.set_keyring(keys)
    }

    /// Graceful leave: stop firing, announce `leaving` for a few gossip rounds so peers take
    /// over without a gap, let running jobs finish (up to the drain timeout), stop gossip.
    pub async fn shutdown(self) {
        let _ = self.shutdown_with_stats().await;
    }

    /// [`NodeHandle::shutdown`], returning the node's counters as they are once its
    /// running jobs have finished (or were killed at the drain timeout).
    pub async fn shutdown_with_stats(self) -> Stats {
        let (tx, rx) = oneshot::channel();
        let stats = if self.cmd.send(Command::Shutdown(tx)).is_ok() {
            rx.await.unwrap_or_default()
        } else {
            Stats::default()
        };
        let _ = self.task.await;
        if let Some(flush) = self.history_flush {
            flush.abort();
            let history = self.history.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || history.save()).await {
                tracing::warn!(error = %e, "could not save the run history");
            }
        }
        let g = self.gossip.stats();
        tracing::info!(
            packets_sent = g.packets_sent,
            bytes_sent = g.bytes_sent,
            packets_received = g.packets_received,
            packets_accepted = g.packets_accepted,
            packets_rejected = g.rejected(),
            "gossip counters of this node"
        );
        stats
    }

    /// Stops at once without leaving, as a crash would: gossip stops, running jobs are
    /// killed, peers find out through failure detection. For tests and demos.
    pub fn abort(self) {
        self.task.abort();
        if let Some(flush) = self.history_flush {
            flush.abort();
        }
    }
}
