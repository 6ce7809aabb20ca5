//! The catalog task: this node's copy of the cluster-wide catalog ([`crate::catalog`]),
//! kept in step with gossip; the handle's catalog operations; which registers this node
//! publishes; and what the node's loop must run.
//!
//! # Who publishes a register
//!
//! Chitchat gives every node every node's state, but keeps a dead node's state only for
//! `dead_node_grace_period`, and a restarted node starts with an empty one. So a register
//! (an API definition, a pause, a run request, ...) cannot stay only in the state of the
//! node that wrote it. The writer publishes it first. Then, whenever membership changes
//! and every [`RECONCILE_INTERVALS`] gossip intervals, each node reads which live members
//! (not leaving) publish the current value of each register:
//!
//! - none: the register's *preferred* member, the one rendezvous hashing ranks first for
//!   the job's name (the job's owner), publishes it at once; any other node that knows it
//!   does after [`ADOPT_FALLBACK_INTERVALS`] intervals, in case the preferred member does
//!   not know it (a whole cluster restarted from data dirs, nodes missing);
//! - several: each one that is not the most preferred of them stops publishing it.
//!
//! A node that sees a newer value of a register it publishes stops publishing the old one.
//! So a definition outlives the node that accepted it, and normally one node publishes
//! each register. No node adopts anything until the startup delay has passed, so a node
//! that restarts learns who holds what before it acts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};
use xxhash_rust::xxh3::xxh3_64;

use super::Clock;
use super::listing::{JobInfo, JobListing, ListingState, MemberInfo};
use super::store::Store;
use crate::catalog::keys::{
    FileSetMarker, KEY_FILE_PREFIX, KEY_FILES, decode_file_entry, decode_marker, decode_register,
    encode_file_entry, encode_marker, encode_register, file_set_digest,
};
use crate::catalog::{
    Catalog, CatalogCounts, CatalogError, FileSet, GossipKey, JobDef, Key, Observed, Register,
    Source, Version,
};
use crate::cluster::Publisher;
use crate::cluster::catalog::{CatalogEvent, CatalogListeners, CatalogScan};
use crate::core::job::{JobSpec, RawJob};
use crate::core::owner::{job_key, node_key, score};
use crate::core::planner::View;
use crate::core::types::{FireId, JobId, NodeId, UnixMillis};

/// How often (in gossip intervals) a node checks who publishes what, besides membership
/// changes.
pub const RECONCILE_INTERVALS: u32 = 10;
/// How long (in gossip intervals) a register may go unpublished before a node that is not
/// its preferred member publishes it.
pub const ADOPT_FALLBACK_INTERVALS: u32 = 10;
/// How often (in gossip intervals) at most the catalog is written to the data dir while
/// it changes (and once more at a graceful shutdown).
pub const SAVE_INTERVALS: u32 = 5;

/// Counters and sizes of the catalog (for metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CatalogStats {
    /// What the catalog holds.
    pub counts: CatalogCounts,
    /// Registers this node publishes in its own gossip state.
    pub held: usize,
    /// Registers this node started publishing for a node that stopped (adopted).
    pub adopted: u64,
    /// Conflicts that appeared since the node started (each logged once).
    pub conflicts_detected: u64,
    /// Catalog values from gossip that did not decode, or were refused.
    pub refused: u64,
    /// [`Catalog::hash`]: equal on nodes that hold the same catalog.
    pub hash: u64,
    /// Times the maps with an entry per job were packed (see `node::compact`).
    pub compactions: u64,
}

/// What the node's loop must do about the catalog.
#[derive(Debug)]
pub(super) enum PlanUpdate {
    /// Register or update a job. `spec` is `None` when only `paused` changed. Slots at or
    /// before `floor` never fire.
    Set {
        name: JobId,
        spec: Option<JobSpec>,
        floor: UnixMillis,
        paused: bool,
    },
    /// The job left the catalog.
    Remove(JobId),
    /// Run `job` once, as the run request `id` made at `at` asks, if this node fires it.
    Request {
        id: FireId,
        job: JobId,
        at: UnixMillis,
    },
    /// Request `id` was claimed (or expired): nobody else runs it.
    Claimed(FireId),
    /// Cancel the run with this fire id if it runs here.
    Cancel(FireId),
    /// Pack the planner's maps (see `node::compact`).
    Compact,
}

type Reply<T> = oneshot::Sender<Result<T, CatalogError>>;

/// A request to the catalog task.
pub(super) enum CatalogCmd {
    Listing(Reply<Arc<JobListing>>),
    Registers(Reply<Vec<(Key, Register)>>),
    Get(JobId, Reply<JobInfo>),
    Put(Box<RawJob>, Reply<JobInfo>),
    Delete(JobId, Reply<Version>),
    Pause(JobId, bool, Reply<JobInfo>),
    Run(JobId, Reply<FireId>),
    Cancel(FireId, Reply<()>),
    Members(Reply<Vec<MemberInfo>>),
    Stats(Reply<CatalogStats>),
    /// A new set of this node's jobs-file definitions (`NodeHandle::replace_jobs`).
    ReplaceJobs(
        Vec<JobSpec>,
        oneshot::Sender<Result<super::JobsChange, super::JobsError>>,
    ),
    /// From a run-now run: claim request `id`; the answer is the claim's publication
    /// sequence number, or `None` if somebody claimed it first.
    Claim(FireId, oneshot::Sender<Option<u64>>),
    /// From a run: it succeeded, and some job runs after its job (see `node::after`).
    Succeeded {
        parent: JobId,
        fire_id: FireId,
        slot: UnixMillis,
    },
    /// The node stops: save the catalog, answer, and end.
    Stop(oneshot::Sender<()>),
}

/// Adapts a `replace_jobs` answer to [`CatalogTask::publish_then`].
fn reply_ok(
    reply: oneshot::Sender<Result<super::JobsChange, super::JobsError>>,
) -> Reply<super::JobsChange> {
    let (tx, rx) = oneshot::channel::<Result<super::JobsChange, CatalogError>>();
    tokio::spawn(async move {
        if let Ok(r) = rx.await {
            let _ = reply.send(r.map_err(Into::into));
        }
    });
    tx
}

/// What the loop was told about a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Applied {
    pub(super) digest: u64,
    pub(super) paused: bool,
}

/// The floor of a job a node starts with: a file job starts as jobs always did (its
/// slots since registration run, so a restart catches up its own downtime); an API job
/// runs no slot from before its definition, nor from before its last resume.
pub(super) fn first_floor(r: &crate::catalog::Resolved) -> UnixMillis {
    match r.source {
        Source::Api => {
            let resumed = r
                .pause_version
                .as_ref()
                .filter(|_| !r.paused)
                .map_or(UnixMillis::MIN, Version::time);
            r.version.time().max(resumed)
        }
        _ => UnixMillis::MIN,
    }
}

/// The catalog task's state. Built by the node builder, run by [`CatalogTask::run`].
pub(super) struct CatalogTask {
    pub(super) catalog: Catalog,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) publisher: Publisher,
    pub(super) events: mpsc::UnboundedReceiver<CatalogEvent>,
    /// Keeps the catalog's gossip listeners subscribed while the task runs.
    pub(super) _listeners: CatalogListeners,
    pub(super) cmds: mpsc::UnboundedReceiver<CatalogCmd>,
    pub(super) view: watch::Receiver<View>,
    pub(super) to_loop: mpsc::UnboundedSender<PlanUpdate>,
    pub(super) gossip_interval: Duration,
    /// Nothing is adopted before this (see the module docs).
    pub(super) adopt_after: UnixMillis,
    /// This node's generation.
    pub(super) generation: u64,
    /// Definitions of this node's handler jobs, for listing.
    pub(super) local: BTreeMap<JobId, JobDef>,
    /// What the loop was told, per job.
    pub(super) applied: BTreeMap<JobId, Applied>,
    /// Registers this node publishes (with the catalog's current value).
    pub(super) held: BTreeSet<Key>,
    /// xxh3 of the current value of every register, as published.
    pub(super) hashes: BTreeMap<Key, u64>,
    /// Registers nobody was seen to publish, since when.
    pub(super) unheld_since: BTreeMap<Key, UnixMillis>,
    /// Jobs with a conflict, already logged.
    pub(super) conflicted: BTreeSet<JobId>,
    /// Jobs to re-plan at the next flush.
    pub(super) dirty: BTreeSet<JobId>,
    /// Keys to set and delete in this node's state at the next flush.
    pub(super) sets: Vec<(String, String)>,
    pub(super) deletes: Vec<String>,
    /// File sets to read: (node, generation).
    pub(super) file_reads: BTreeSet<(NodeId, u64)>,
    pub(super) stats: CatalogStats,
    /// What `replace_jobs` may change.
    pub(super) replaceable: super::jobs::Replaceable,
    /// The data dir, if any, and whether the catalog changed since it was last saved.
    pub(super) store: Option<Arc<Store>>,
    pub(super) unsaved: bool,
    /// The listing of every job, and what changed since (see [`CatalogTask::listing`]).
    pub(super) listing: ListingState,
    /// When the maps with an entry per job were last packed (see `node::compact`).
    pub(super) packing: super::compact::Packing,
    /// Which jobs run after which (`after`).
    pub(super) deps: crate::core::after::Dependencies,
    /// Shared with runs: the jobs with children.
    pub(super) triggers: Arc<super::after::Triggers>,
}

impl CatalogTask {
    /// Runs until the node's handle and loop are gone.
    pub(super) async fn run(mut self) {
        let mut next_reconcile = self.clock.now();
        let save_every = self.gossip_interval * SAVE_INTERVALS;
        let mut next_save = self.clock.now().saturating_add(save_every);
        loop {
            let now = self.clock.now();
            if now >= next_reconcile {
                self.reconcile(now).await;
                self.flush().await;
                self.pack_if_settled().await;
                next_reconcile = now.saturating_add(self.gossip_interval * RECONCILE_INTERVALS);
            }
            if now >= next_save {
                self.save().await;
                next_save = now.saturating_add(save_every);
            }
            let wake = if self.unsaved {
                next_reconcile.min(next_save)
            } else {
                next_reconcile
            };
            let sleep = self.clock.sleep_until(wake);
            tokio::select! {
                _ = sleep => {}
                ev = self.events.recv() => {
                    let Some(ev) = ev else { return };
                    let now = self.clock.now();
                    self.on_event(now, ev);
                    while let Ok(ev) = self.events.try_recv() {
                        self.on_event(now, ev);
                    }
                    self.flush().await;
                }
                cmd = self.cmds.recv() => match cmd {
                    Some(CatalogCmd::Stop(done)) => {
                        self.save().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.on_cmd(cmd).await,
                    None => return,
                },
                changed = self.view.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // Membership changed: who publishes what may have too, and owners.
                    self.listing.owners_changed();
                    next_reconcile = self.clock.now();
                }
            }
        }
    }

    /// Publishes this node's own file set: its `file:` keys, then the `files` marker.
    pub(super) fn publish_files(&mut self, set: &FileSet, previous: &BTreeSet<JobId>) {
        let mut values = BTreeMap::new();
        for (name, e) in &set.jobs {
            values.insert(name.clone(), encode_file_entry(e));
        }
        for name in previous {
            if !values.contains_key(name) {
                self.deletes.push(format!("{KEY_FILE_PREFIX}{name}"));
            }
        }
        let marker = FileSetMarker {
            count: u32::try_from(values.len()).unwrap_or(u32::MAX),
            digest: file_set_digest(values.iter().map(|(n, v)| (n, v.as_str()))),
        };
        for (name, v) in values {
            self.sets.push((format!("{KEY_FILE_PREFIX}{name}"), v));
        }
        self.sets
            .push((KEY_FILES.to_string(), encode_marker(&marker)));
    }

    fn on_event(&mut self, now: UnixMillis, ev: CatalogEvent) {
        match GossipKey::parse(&ev.key) {
            Some(GossipKey::Register(key)) => match decode_register(&key, &ev.value) {
                Ok(r) => {
                    let hash = xxh3_64(ev.value.as_bytes());
                    self.take(now, key, r, hash);
                }
                Err(e) => {
                    self.stats.refused += 1;
                    debug!(key = %ev.key, from = %ev.node, error = %e, "catalog value refused");
                }
            },
            Some(GossipKey::FileSet) => {
                self.file_reads.insert((ev.node, ev.generation));
            }
            _ => {}
        }
    }

    /// Merges a register (from gossip or disk).
    pub(super) fn take(&mut self, now: UnixMillis, key: Key, r: Register, hash: u64) {
        match self.catalog.observe(now, key.clone(), r) {
            Observed::Newer(_) => {
                self.unsaved = true;
                self.hashes.insert(key.clone(), hash);
                // A newer value replaces ours: stop publishing the old one.
                if self.held.remove(&key) {
                    self.deletes.push(key.to_gossip());
                }
                self.unheld_since.remove(&key);
                self.touch(&key);
            }
            Observed::Refused => {
                self.stats.refused += 1;
                debug!(key = %key.to_gossip(), "catalog value refused: expired, or its version is far ahead of this node's clock");
            }
            Observed::Same | Observed::Older => {}
        }
    }

    /// A register changed: what the loop must hear of it.
    fn touch(&mut self, key: &Key) {
        match key {
            Key::Job(n) | Key::Pause(n) => {
                self.dirty.insert(n.clone());
            }
            Key::Run(id) => {
                if let Some((_, job, at)) = self.catalog.unclaimed_requests().find(|r| r.0 == *id) {
                    let job = job.clone();
                    let _ = self.to_loop.send(PlanUpdate::Request { id: *id, job, at });
                }
            }
            Key::Ran(id) => {
                let _ = self.to_loop.send(PlanUpdate::Claimed(*id));
            }
            Key::Cancel(id) => {
                let _ = self.to_loop.send(PlanUpdate::Cancel(*id));
            }
        }
    }

    /// A write of this node: publish it, and tell the loop.
    pub(super) fn wrote(&mut self, key: Key, r: &Register) {
        self.unsaved = true;
        let value = encode_register(r);
        self.hashes.insert(key.clone(), xxh3_64(value.as_bytes()));
        self.sets.push((key.to_gossip(), value));
        self.held.insert(key.clone());
        self.unheld_since.remove(&key);
        self.touch(&key);
    }

    /// Reads file sets, re-plans dirty jobs, and publishes pending keys. Returns the
    /// publication's sequence number, if there was one.
    pub(super) async fn flush(&mut self) -> Option<u64> {
        for (node, generation) in std::mem::take(&mut self.file_reads) {
            self.read_file_set(&node, generation).await;
        }
        let dirty = std::mem::take(&mut self.dirty);
        // Every change of what a job's listing entry shows passes here: its registers
        // (`touch`) and file definitions (`set_files`, `remove_files`, `set_own_files`).
        self.listing.jobs_changed(&dirty);
        for name in dirty {
            self.plan(&name);
            self.log_conflicts(&name);
        }
        if self.sets.is_empty() && self.deletes.is_empty() {
            return None;
        }
        let sets = std::mem::take(&mut self.sets);
        let deletes = std::mem::take(&mut self.deletes);
        Some(self.publisher.set_keys(&sets, &deletes).await)
    }

    async fn read_file_set(&mut self, node: &NodeId, generation: u64) {
        if node == self.catalog.node_id() {
            // Our own earlier generation: this generation's set replaced it.
            return;
        }
        let Some((Some(marker), keys)) = self.publisher.file_set(node, generation).await else {
            return;
        };
        let Ok(marker) = decode_marker(&marker) else {
            self.stats.refused += 1;
            return;
        };
        let names: Vec<(JobId, String)> =
            keys.into_iter().map(|(n, v)| (JobId::new(n), v)).collect();
        let digest = file_set_digest(names.iter().map(|(n, v)| (n, v.as_str())));
        if names.len() != marker.count as usize || digest != marker.digest {
            // Not all of it arrived yet; its marker comes again when it changes, and the
            // next reconcile reads it again.
            debug!(node = %node, generation, "file set incomplete; read again later");
            return;
        }
        let mut jobs = BTreeMap::new();
        for (name, value) in names {
            match decode_file_entry(&value) {
                Ok(e) if crate::core::job::validate_job_name(name.as_str()).is_ok() => {
                    jobs.insert(name, e);
                }
                _ => {
                    self.stats.refused += 1;
                    warn!(node = %node, job = %name, "a jobs-file definition in gossip does not decode; ignored");
                }
            }
        }
        let changed = self.catalog.set_files(node, FileSet { generation, jobs });
        self.dirty.extend(changed);
    }

    /// Tells the loop what changed about `name`.
    fn plan(&mut self, name: &JobId) {
        let resolved = if self.catalog.is_local(name) {
            None
        } else {
            self.catalog.resolve(name)
        };
        let Some(r) = resolved else {
            if self.applied.remove(name).is_some() {
                let _ = self.to_loop.send(PlanUpdate::Remove(name.clone()));
            }
            self.set_parents(name, None);
            return;
        };
        let digest = r.def.digest();
        let prev = self.applied.get(name).copied();
        if prev
            == Some(Applied {
                digest,
                paused: r.paused,
            })
        {
            return;
        }
        let changed = prev.is_none_or(|a| a.digest != digest);
        if changed {
            self.set_parents(name, r.def.parents());
        }
        let spec = if changed {
            match r.def.to_spec(name) {
                Ok(spec) => Some(spec),
                Err(e) => {
                    warn!(job = %name, error = %e, "the catalog's definition does not load on this node; not running it here");
                    if self.applied.remove(name).is_some() {
                        let _ = self.to_loop.send(PlanUpdate::Remove(name.clone()));
                    }
                    return;
                }
            }
        } else {
            None
        };
        let resumed = r
            .pause_version
            .as_ref()
            .filter(|_| !r.paused)
            .map_or(UnixMillis::MIN, Version::time);
        // A job learned while the node runs runs no slot from before its definition (or
        // its last resume); a changed one keeps its past (`Planner::update_job`), and a
        // resumed one runs no slot from its pause.
        let floor = match prev {
            None => r.version.time().max(resumed),
            Some(_) => resumed,
        };
        self.applied.insert(
            name.clone(),
            Applied {
                digest,
                paused: r.paused,
            },
        );
        let _ = self.to_loop.send(PlanUpdate::Set {
            name: name.clone(),
            spec,
            floor,
            paused: r.paused,
        });
    }

    pub(super) fn log_conflicts(&mut self, name: &JobId) {
        let conflicts = self.catalog.conflicts(name);
        if conflicts.is_empty() {
            if self.conflicted.remove(name) {
                info!(job = %name, "catalog conflict resolved");
            }
            return;
        }
        if self.conflicted.insert(name.clone()) {
            self.stats.conflicts_detected += 1;
            for c in &conflicts {
                warn!(job = %name, conflict = %c, "catalog conflict");
            }
        }
    }

    /// The member rendezvous hashing ranks first for `key` among `members`, and a
    /// member's rank: (score, id).
    fn rank(key: &Key, node: &NodeId) -> (u64, NodeId) {
        let k = match key.job() {
            Some(j) => job_key(j.as_str()),
            None => job_key(&key.to_gossip()),
        };
        (score(k, node_key(node.as_str())), node.clone())
    }

    /// Checks who publishes what (see the module docs), forgets what expired, and re-reads
    /// file sets that changed or left.
    async fn reconcile(&mut self, now: UnixMillis) {
        let hashes = &self.hashes;
        let scan: CatalogScan = self
            .publisher
            .catalog_scan(|k| match GossipKey::parse(k) {
                Some(GossipKey::Register(key)) => hashes.get(&key).copied(),
                _ => None,
            })
            .await;
        let members = self.view.borrow().members.clone();
        let me = self.catalog.node_id().clone();
        let fallback = i64::try_from((self.gossip_interval * ADOPT_FALLBACK_INTERVALS).as_millis())
            .unwrap_or(i64::MAX);
        let mut adopt = Vec::new();
        let mut release = Vec::new();
        for (key, _) in self.catalog.registers() {
            let gossip = key.to_gossip();
            let holders: Vec<&NodeId> = scan
                .holders
                .get(&gossip)
                .map(|h| h.iter().filter(|n| members.contains(*n)).collect())
                .unwrap_or_default();
            let mine = self.held.contains(key);
            if holders.is_empty() && !mine {
                // A node that is leaving (or not a member yet) adopts nothing.
                if now < self.adopt_after || !members.contains(&me) {
                    continue;
                }
                let since = *self.unheld_since.entry(key.clone()).or_insert(now);
                let preferred = members.iter().max_by_key(|n| Self::rank(key, n)) == Some(&me);
                if preferred || now.millis_since(since) >= fallback {
                    adopt.push(key.clone());
                }
            } else {
                self.unheld_since.remove(key);
                let my_rank = Self::rank(key, &me);
                if mine && holders.iter().any(|h| Self::rank(key, h) > my_rank) {
                    release.push(key.clone());
                }
            }
        }
        for key in adopt {
            if let Some(r) = self.catalog.register(&key) {
                let value = encode_register(r);
                self.sets.push((key.to_gossip(), value));
                self.held.insert(key.clone());
                self.unheld_since.remove(&key);
                self.stats.adopted += 1;
            }
        }
        for key in release {
            self.held.remove(&key);
            self.deletes.push(key.to_gossip());
        }
        for key in self.catalog.gc(now) {
            self.unsaved = true;
            if self.held.remove(&key) {
                self.deletes.push(key.to_gossip());
            }
            self.hashes.remove(&key);
            self.unheld_since.remove(&key);
            match &key {
                Key::Run(id) => {
                    let _ = self.to_loop.send(PlanUpdate::Claimed(*id));
                }
                _ => self.touch(&key),
            }
        }
        // File sets: a node whose state left gossip takes its set along; a generation
        // newer than the one held, with its marker set, is read.
        let mut newest: BTreeMap<&NodeId, (u64, bool)> = BTreeMap::new();
        for row in scan.nodes.iter().filter(|r| !r.me) {
            let e = newest.entry(&row.id).or_insert((row.generation, false));
            if row.generation >= e.0 {
                *e = (row.generation, row.files_marker.is_some());
            }
        }
        let gone: Vec<NodeId> = self
            .catalog
            .file_sets()
            .keys()
            .filter(|n| **n != me && !newest.contains_key(n))
            .cloned()
            .collect();
        for node in gone {
            let changed = self.catalog.remove_files(&node);
            self.dirty.extend(changed);
        }
        for (node, (generation, marked)) in newest {
            let held = self.catalog.file_sets().get(node).map(|s| s.generation);
            if marked && held.is_none_or(|g| g < generation) {
                self.file_reads.insert((node.clone(), generation));
            }
        }
        self.stats.held = self.held.len();
    }

    /// Writes the catalog's registers to the data dir, if there is one and they changed.
    async fn save(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        if !self.unsaved {
            return;
        }
        self.unsaved = false;
        let registers: Vec<(Key, Register)> = self
            .catalog
            .registers()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.save_catalog(registers)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.unsaved = true;
                warn!(error = %e, rate_limited = true, "could not save the catalog in the data dir; trying again");
            }
            Err(e) => warn!(error = %e, "saving the catalog failed"),
        }
    }

    /// Publishes the pending writes, and answers once they went to a peer (or there is
    /// none, or two gossip intervals passed), so an acknowledged write has left the node.
    async fn publish_then<T: Send + 'static>(&mut self, reply: Reply<T>, value: T) {
        let seq = self.flush().await;
        // Any live peer serves: the wait is for the publication to reach one.
        let peer = match seq {
            Some(_) => self.publisher.a_live_peer().await,
            None => None,
        };
        let (Some(seq), Some(addr)) = (seq, peer) else {
            let _ = reply.send(Ok(value));
            return;
        };
        let confirm = self.publisher.confirm(addr, seq, self.gossip_interval * 2);
        tokio::spawn(async move {
            let _ = confirm.await;
            let _ = reply.send(Ok(value));
        });
    }

    async fn on_cmd(&mut self, cmd: CatalogCmd) {
        let now = self.clock.now();
        match cmd {
            CatalogCmd::Listing(reply) => {
                let _ = reply.send(Ok(self.listing()));
            }
            CatalogCmd::Registers(reply) => {
                let registers = self
                    .catalog
                    .registers()
                    .map(|(k, r)| (k.clone(), r.clone()))
                    .collect();
                let _ = reply.send(Ok(registers));
            }
            CatalogCmd::Get(name, reply) => {
                let _ = reply.send(self.info(&name).ok_or(CatalogError::NotFound(name)));
            }
            CatalogCmd::Put(raw, reply) => {
                let written = JobDef::from_raw(*raw)
                    .map_err(CatalogError::from)
                    .and_then(|(name, def)| Ok((name.clone(), self.catalog.put(now, name, def)?)));
                match written {
                    Ok((name, (key, r))) => {
                        self.wrote(key, &r);
                        info!(job = %name, version = %r.version, "catalog: job put");
                        let info = self.info(&name);
                        match info {
                            Some(info) => self.publish_then(reply, info).await,
                            None => {
                                let _ = reply.send(Err(CatalogError::NotFound(name)));
                            }
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            CatalogCmd::Delete(name, reply) => match self.catalog.delete(now, &name) {
                Ok(writes) => {
                    for (key, r) in &writes {
                        self.wrote(key.clone(), r);
                    }
                    info!(job = %name, "catalog: job deleted");
                    let version = writes[0].1.version.clone();
                    self.publish_then(reply, version).await;
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            CatalogCmd::Pause(name, paused, reply) => {
                match self.catalog.set_paused(now, &name, paused) {
                    Ok((key, r)) => {
                        self.wrote(key, &r);
                        info!(job = %name, paused, "catalog: job {}", if paused { "paused" } else { "resumed" });
                        match self.info(&name) {
                            Some(info) => self.publish_then(reply, info).await,
                            None => {
                                let _ = reply.send(Err(CatalogError::NotFound(name)));
                            }
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            CatalogCmd::Run(name, reply) => match self.catalog.request_run(now, &name) {
                Ok((id, (key, r))) => {
                    self.wrote(key, &r);
                    info!(job = %name, fire_id = %id, "catalog: run requested");
                    self.publish_then(reply, id).await;
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            CatalogCmd::Cancel(id, reply) => {
                let (key, r) = self.catalog.request_cancel(now, id);
                self.wrote(key, &r);
                info!(fire_id = %id, "catalog: cancel requested");
                self.publish_then(reply, ()).await;
            }
            CatalogCmd::Claim(id, reply) => {
                let seq = match self.catalog.claim(now, id) {
                    Some((key, r)) => {
                        self.wrote(key, &r);
                        self.flush().await
                    }
                    None => None,
                };
                let _ = reply.send(seq);
            }
            CatalogCmd::Members(reply) => {
                let _ = reply.send(Ok(self.members().await));
            }
            CatalogCmd::Stats(reply) => {
                let mut stats = self.stats.clone();
                stats.counts = self.catalog.counts();
                stats.held = self.held.len();
                stats.hash = self.catalog.hash();
                let _ = reply.send(Ok(stats));
            }
            CatalogCmd::Stop(done) => {
                let _ = done.send(());
            }
            CatalogCmd::Succeeded {
                parent,
                fire_id,
                slot,
            } => self.parent_succeeded(parent, fire_id, slot).await,
            CatalogCmd::ReplaceJobs(specs, reply) => {
                let new = match self.replaceable.check(specs) {
                    Ok(new) => new,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                let defs: BTreeMap<JobId, JobDef> = new
                    .iter()
                    .map(|(n, s)| (n.clone(), JobDef::from_spec(s)))
                    .collect();
                let old: BTreeMap<JobId, JobDef> = self
                    .catalog
                    .file_sets()
                    .get(self.catalog.node_id())
                    .map(|s| {
                        s.jobs
                            .iter()
                            .map(|(n, e)| (n.clone(), e.def.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                match self
                    .catalog
                    .set_own_files(now, self.generation, defs.clone())
                {
                    Ok((set, changed)) => {
                        let previous = old.keys().cloned().collect();
                        self.publish_files(&set, &previous);
                        self.dirty.extend(changed);
                        let change = super::jobs::change(&old, &defs);
                        info!(change = %change, "catalog: this node's jobs replaced");
                        self.publish_then(reply_ok(reply), change).await;
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
        }
    }
}
