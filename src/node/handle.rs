//! The handle a running node is driven through, and its counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::{ChitchatId, NodeState};

use tokio::sync::{mpsc, oneshot, watch};

use super::catalog::{CatalogCmd, CatalogStats};
use super::config::ConfigError;
use super::jobs::{JobsChange, JobsError};
use super::listing::{JobInfo, JobListing, MemberInfo};
use super::{Clock, NodeConfig};
use crate::catalog::{CatalogError, Conflict, Key, Register, Version};
use crate::cluster::{GossipKeys, GossipSecurity, GossipStats, Traffic, api_addresses};
use crate::core::job::{JobSpec, RawJob};
use crate::core::placement::{Constraints, Placement};
use crate::core::planner::View;
use crate::core::types::{FireId, JobId, NodeId, UnixMillis};
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
    /// Run-now requests this node took on (see [`CatalogClient::run_job`]).
    pub requested_runs: u64,
    /// Runs cancelled here on request (see [`CatalogClient::cancel_run`]).
    pub cancelled: u64,
    /// Jobs this node owns in its current view (a gauge).
    pub jobs_owned: u64,
    /// Jobs no live member may own in this node's view: their constraints match nobody's
    /// tags (a gauge).
    pub unplaceable_jobs: u64,
    /// This node's clock minus the median of the cluster's clocks, ms, once estimated.
    pub clock_offset_ms: Option<i64>,
    /// True while that offset is beyond `max_clock_offset`: the node owns no job then.
    pub clock_out_of_bound: bool,
    /// Slots of unplaceable jobs that came due, counted by the node that would own each
    /// job without its constraints (so once in the cluster).
    pub unplaceable_slots: u64,
}

pub(super) enum Command {
    /// Leave; answers with the counters as they are after the drain.
    Shutdown(oneshot::Sender<Stats>),
    Stats(oneshot::Sender<Stats>),
    Reconfigure(Box<NodeConfig>, oneshot::Sender<Vec<&'static str>>),
    SetPlacement(Placement, oneshot::Sender<()>),
    Unplaceable(oneshot::Sender<Vec<(JobId, Constraints)>>),
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
    pub(super) catalog: CatalogClient,
    pub(super) catalog_task: tokio::task::JoinHandle<()>,
    /// The node's clock, for readers outside the loop (the API's schedule previews).
    pub(super) clock: Arc<dyn Clock>,
    pub(super) clock_status: watch::Receiver<super::ClockStatus>,
}

impl NodeHandle {
    /// This node's clock against the cluster's: its offset from the median of the clocks
    /// it knows, the estimate's error bound, and whether it is within `max_clock_offset`
    /// (see `node::skew`).
    pub fn clock_status(&self) -> super::ClockStatus {
        *self.clock_status.borrow()
    }

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

    /// A receiver of this node's view, which changes with every membership change (the
    /// simulator records them).
    pub fn watch_view(&self) -> watch::Receiver<View> {
        self.view.clone()
    }

    /// The owner of `job` in this node's current view, by the members' weights: the same
    /// pure function every node uses, so it answers for jobs this node does not know too.
    /// It does not know a job's constraints: for a job with constraints, see
    /// [`NodeHandle::unplaceable`] and the API's `owner`.
    pub fn owner_of(&self, job: &str) -> Option<NodeId> {
        let view = self.view.borrow();
        crate::core::owner::owner_placed(
            &JobId::new(job),
            &Constraints::default(),
            view.placed_members(),
        )
        .cloned()
    }

    /// Publishes a new weight and tags for this node, as `weight` and `tags` in a config
    /// given to [`NodeHandle::reconfigure`] do: every node's view follows, and jobs move as
    /// for a join or a leave (with the same handoff delay).
    pub async fn set_placement(&self, placement: Placement) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::SetPlacement(placement, tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The jobs no live member may own in this node's view (their constraints match
    /// nobody's tags), with their constraints. They run nowhere until a member that has
    /// the tags is back.
    pub async fn unplaceable(&self) -> Vec<(JobId, Constraints)> {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Unplaceable(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
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

    /// The time on this node's clock (the system clock, or the simulator's).
    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    /// This node's run history (its own runs only; the API merges the cluster's).
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// The node's metrics in the Prometheus text format, with values read now.
    pub async fn metrics_text(&self) -> String {
        let view = self.view();
        let mut scrape = Scrape {
            stats: self.stats().await,
            members: view.members.len(),
            alive: view.alive.len(),
            gossip_bytes: self.traffic.bytes(),
            history: (self.history.len(), self.history.bytes()),
            ..Scrape::default()
        };
        if let Ok(catalog) = self.catalog.stats().await {
            scrape.catalog(&catalog);
        }
        let g = self.gossip.stats();
        scrape.counters.extend([
            (
                "starling_gossip_packets_dropped",
                "Gossip datagrams dropped unopened: no seal, a wrong key, forged, stale, or not chitchat (README, Security: Dropped packets)",
                g.rejected(),
            ),
            (
                "starling_gossip_member_entries_cut",
                "Entries of nodes past the member limit cut from received gossip, so this node never learned of those nodes (README, Limits)",
                g.member_entries_cut,
            ),
        ]);
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

    /// Makes `jobs` this node's jobs-file definitions in the catalog (a reloaded jobs
    /// file), without a restart: jobs it did not define are added, jobs missing from
    /// `jobs` leave the catalog unless another node's file defines them (a run in progress
    /// goes on to its end), and jobs whose definition changed are updated in place on
    /// every node, keeping their records, so no slot runs twice. The returned change is
    /// of this node's definitions. Jobs run by in-process handlers
    /// ([`NodeBuilder::handler_job`]) stay as they are, and `jobs` may not name them. The
    /// whole set is checked first: on error nothing changes.
    ///
    /// A job added fires its first slot after the change; a new schedule applies to slots
    /// after the change. Nodes whose files disagree about a job are reported as a conflict
    /// (see [`crate::catalog`]): give every node the same file.
    ///
    /// [`NodeBuilder::handler_job`]: super::NodeBuilder::handler_job
    pub async fn replace_jobs(&self, jobs: Vec<JobSpec>) -> Result<JobsChange, JobsError> {
        let (tx, rx) = oneshot::channel();
        if self
            .catalog
            .cmd
            .send(CatalogCmd::ReplaceJobs(jobs, tx))
            .is_err()
        {
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

    /// The keys this node's gossip seals and opens with, and the key each peer (by gossip
    /// address) last sealed its packets with.
    pub fn gossip_keys(&self) -> GossipKeys {
        self.gossip.keys()
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
        // The catalog task saves the catalog and ends (clients the user kept get
        // `Stopped` from then on).
        let (tx, rx) = oneshot::channel();
        if self.catalog.cmd.send(CatalogCmd::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
        let _ = self.catalog_task.await;
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
        self.catalog_task.abort();
        self.task.abort();
        if let Some(flush) = self.history_flush {
            flush.abort();
        }
    }

    /// The catalog operations of this node (list, put, delete, pause, resume, run now,
    /// cancel, members): a cheap handle to clone into other tasks (an HTTP server's state).
    pub fn catalog(&self) -> CatalogClient {
        self.catalog.clone()
    }
}

/// The cluster-wide job catalog, as seen and changed through one node (see
/// [`crate::catalog`] for the rules and the README's "Catalog" part). Get one from
/// [`NodeHandle::catalog`]; clones share the node. Any node answers for the whole
/// cluster: reads come from the node's own copy of the catalog, and writes spread to every
/// node by gossip.
///
/// Every method returns [`CatalogError::Stopped`] once the node has stopped, with nothing
/// done.
#[derive(Clone, Debug)]
pub struct CatalogClient {
    pub(super) cmd: mpsc::UnboundedSender<CatalogCmd>,
}

impl CatalogClient {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, CatalogError>>) -> CatalogCmd,
    ) -> Result<T, CatalogError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(make(tx)).map_err(|_| CatalogError::Stopped)?;
        rx.await.map_err(|_| CatalogError::Stopped)?
    }

    /// Every job in the cluster-wide catalog, and this node's in-process handler jobs, in
    /// name order: definition, source, version, owner in this node's view, paused,
    /// conflicts. Answers from this node's copy of the catalog (every node holds all of
    /// it); a change made elsewhere shows here once gossip brought it, normally within a
    /// few gossip intervals.
    pub async fn jobs(&self) -> Result<Vec<JobInfo>, CatalogError> {
        Ok(self
            .listing()
            .await?
            .jobs
            .iter()
            .map(|j| (**j).clone())
            .collect())
    }

    /// [`CatalogClient::jobs`] and [`CatalogClient::conflicts`] at one moment, shared: the
    /// node builds a listing again only once its catalog or its membership view changed
    /// (a listing is never staler than either), so repeated reads of a large catalog cost
    /// a message each, and [`JobListing::version`] tells whether anything changed.
    pub async fn listing(&self) -> Result<Arc<JobListing>, CatalogError> {
        self.ask(CatalogCmd::Listing).await
    }

    /// One job, as [`CatalogClient::jobs`] shows it. [`CatalogError::NotFound`] if the
    /// catalog has no definition of it (a deleted job included).
    pub async fn job(&self, name: &str) -> Result<JobInfo, CatalogError> {
        self.ask(|tx| CatalogCmd::Get(JobId::new(name), tx)).await
    }

    /// Creates or replaces a job through the catalog (an *API job*), from the jobs
    /// file's keys; `job.name` is required and `command` too (a shell job is the only kind
    /// that travels). The new definition wins over any older one (a hybrid logical clock
    /// orders writes, see [`crate::catalog::version`]), reaches every node by gossip, and
    /// runs on its owner; an update keeps the job's past runs, so no slot runs twice, and
    /// its slots from before the update do not run.
    ///
    /// Returns once the definition is published here and has been sent to a peer (or two
    /// gossip intervals passed, or there is no peer). Errors, with nothing written:
    /// [`CatalogError::Invalid`] names the job and the bad key; [`CatalogError::FileDefined`]
    /// when a jobs file defines the name (change it there); [`CatalogError::LocalJob`] for
    /// an in-process handler job of this node; [`CatalogError::TooLarge`] over
    /// [`crate::catalog::MAX_VALUE_BYTES`] encoded.
    pub async fn put_job(&self, job: RawJob) -> Result<JobInfo, CatalogError> {
        self.ask(|tx| CatalogCmd::Put(Box::new(job), tx)).await
    }

    /// Deletes an API job: a tombstone replaces it everywhere and it stops firing on its
    /// owner as soon as the owner learns of it (a run in progress finishes). Returns the
    /// deletion's version. Errors: [`CatalogError::NotFound`],
    /// [`CatalogError::FileDefined`], [`CatalogError::LocalJob`].
    pub async fn delete_job(&self, name: &str) -> Result<Version, CatalogError> {
        self.ask(|tx| CatalogCmd::Delete(JobId::new(name), tx))
            .await
    }

    /// Pauses a job of any source: it fires nothing from the moment its owner learns of it
    /// until resumed (a run in progress finishes; [`CatalogClient::run_job`] still works).
    /// [`CatalogError::NotFound`] for an unknown job.
    pub async fn pause_job(&self, name: &str) -> Result<JobInfo, CatalogError> {
        self.ask(|tx| CatalogCmd::Pause(JobId::new(name), true, tx))
            .await
    }

    /// Resumes a paused job. Slots that came due while it was paused are not caught up:
    /// it runs its slots after the resume. [`CatalogError::NotFound`] for an unknown job.
    pub async fn resume_job(&self, name: &str) -> Result<JobInfo, CatalogError> {
        self.ask(|tx| CatalogCmd::Pause(JobId::new(name), false, tx))
            .await
    }

    /// Asks for a job to run once, now, on its owner, outside its schedule. Returns the
    /// run's fire id (`STARLING_FIRE_ID`), distinct from every slot's. The owner claims the
    /// request in gossip before it runs it, so it runs once even if ownership moves
    /// meanwhile (under the same conditions as a slot: a partition may run it on both
    /// sides). A request no node claims within the catalog's request lifetime (10 min) is
    /// dropped. [`CatalogError::NotFound`] for an unknown job.
    pub async fn run_job(&self, name: &str) -> Result<FireId, CatalogError> {
        self.ask(|tx| CatalogCmd::Run(JobId::new(name), tx)).await
    }

    /// Asks for the run with fire id `fire_id` (a slot's or a run-now request's) to be
    /// cancelled, wherever it runs: every node that runs it (normally one) stops it (a
    /// shell job's whole process group is killed), and a run-now request not started yet
    /// never starts. Returns once the request is published; it does not wait for the run
    /// to stop, nor check that one runs.
    pub async fn cancel_run(&self, fire_id: FireId) -> Result<(), CatalogError> {
        self.ask(|tx| CatalogCmd::Cancel(fire_id, tx)).await
    }

    /// Every conflict in the catalog (jobs files that disagree, API definitions shadowed
    /// by a file), in job order. The same on every node that holds the same catalog.
    pub async fn conflicts(&self) -> Result<Vec<Conflict>, CatalogError> {
        Ok(self.listing().await?.conflicts.clone())
    }

    /// Every node chitchat knows of (newest generation of each): id, address, alive,
    /// leaving or dead, generation, and how many jobs it owns in this node's view.
    pub async fn members(&self) -> Result<Vec<MemberInfo>, CatalogError> {
        self.ask(CatalogCmd::Members).await
    }

    /// Every register this node's copy of the catalog holds (API definitions and their
    /// tombstones, pauses, run and cancel requests, claims), in key order: for debugging,
    /// and for the simulator's checks.
    pub async fn registers(&self) -> Result<Vec<(Key, Register)>, CatalogError> {
        self.ask(CatalogCmd::Registers).await
    }

    /// Sizes and counters of the catalog, and its hash (equal on nodes holding the same
    /// catalog).
    pub async fn stats(&self) -> Result<CatalogStats, CatalogError> {
        self.ask(CatalogCmd::Stats).await
    }
}
