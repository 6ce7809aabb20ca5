//! The cluster-wide job catalog: every job definition, from jobs files and from the API,
//! versioned and merged the same way on every node. Pure: time comes in as an argument.
//!
//! # What it holds
//!
//! - *Registers* ([`Key`]): the API definition of a job (or its tombstone), whether a job
//!   is paused, run-now requests, their claims, and cancel requests. One value per key
//!   cluster-wide; the greater [`Version`] wins (last writer wins by a hybrid logical
//!   clock, see [`version`]).
//! - *File sets*: per node, the jobs its jobs file defines ([`FileEntry`]). A node speaks
//!   only for its own file; a new generation of a node (a restart) replaces its set.
//!
//! # How a job's definition is decided ([`Catalog::resolve`])
//!
//! 1. If any node's file defines the name, a file definition runs. When files disagree
//!    (a *drift* conflict), the definition the most nodes' files hold wins; a tie goes to
//!    the one loaded most recently (its greatest version), then by version order. Every
//!    node applies the same rule to the same inputs, so one definition runs everywhere.
//! 2. Otherwise the API definition runs, unless it is a tombstone.
//! 3. An API definition of a name a file defines is *shadowed*: the file wins. Writes
//!    through the API are refused for such names ([`CatalogError::FileDefined`]); the
//!    conflict is only seen when a file starts defining a name the API had created.
//! 4. A job is paused while its pause register says so, whatever its source.
//!
//! In-process handler jobs (`NodeBuilder::handler_job`) are not in the catalog: they exist
//! only on the nodes that registered the handler. The catalog refuses API writes to their
//! names on those nodes ([`CatalogError::LocalJob`]).
//!
//! # Lifetimes
//!
//! A tombstone (a deleted definition, a resume) is kept for
//! [`CatalogConfig::tombstone_ttl`] after its write, then forgotten everywhere. A node
//! that comes back after longer than that with an older copy of a deleted definition (from
//! its data dir) brings it back. Run and cancel requests and their claims are kept for
//! [`CatalogConfig::request_ttl`]. Versions more than [`CatalogConfig::max_ahead`] ahead
//! of this node's clock are refused, as fire records are: a node with a wild clock would
//! otherwise win every write for as long as its clock is off.

pub mod def;
pub mod keys;
pub mod version;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

pub use def::JobDef;
pub use keys::{FileEntry, GossipKey, Key, MAX_VALUE_BYTES, Register, Value};
pub use version::{Hlc, Version};

use crate::core::job::{JobError, RawJob};
use crate::core::limits::MAX_JOBS;
use crate::core::types::{FireId, JobId, NodeId, UnixMillis};

/// Lifetimes in the catalog.
#[derive(Clone, Debug)]
pub struct CatalogConfig {
    /// How long a tombstone (a deleted definition, a resumed pause) is kept. Default 24 h.
    pub tombstone_ttl: Duration,
    /// How long run and cancel requests and their claims are kept. Default 10 min.
    pub request_ttl: Duration,
    /// Versions further ahead of this node's clock are refused. Default 10 min.
    pub max_ahead: Duration,
}

/// Default [`CatalogConfig::tombstone_ttl`].
pub const DEFAULT_TOMBSTONE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default [`CatalogConfig::request_ttl`].
pub const DEFAULT_REQUEST_TTL: Duration = Duration::from_secs(600);

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            tombstone_ttl: DEFAULT_TOMBSTONE_TTL,
            request_ttl: DEFAULT_REQUEST_TTL,
            max_ahead: Duration::from_secs(600),
        }
    }
}

/// Why a catalog operation was refused. The catalog is unchanged when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The definition is invalid; the message names the job and the key.
    #[error(transparent)]
    Invalid(#[from] JobError),
    /// The name is defined by the jobs file of these nodes: change it there.
    #[error("job `{name}` is defined in the jobs file of {}; change it there", list(.nodes))]
    FileDefined {
        /// The job.
        name: JobId,
        /// The nodes whose files define it.
        nodes: Vec<NodeId>,
    },
    /// The name belongs to an in-process handler job of this node.
    #[error("job `{0}` is an in-process handler job of this node; it is not in the catalog")]
    LocalJob(JobId),
    /// No such job (or, for a cancel, no such run request).
    #[error("job `{0}` is not in the catalog")]
    NotFound(JobId),
    /// The encoded definition is over the size limit.
    #[error(
        "job `{name}`: the definition takes {size} bytes encoded, over the limit of {limit}; shorten the command (put long scripts in a file and run that)"
    )]
    TooLarge {
        /// The job.
        name: JobId,
        /// Its encoded size (key and value).
        size: usize,
        /// [`MAX_VALUE_BYTES`].
        limit: usize,
    },
    /// The catalog already holds the most API jobs it accepts.
    #[error(
        "job `{name}`: the catalog already holds {limit} API jobs, the most it accepts; delete one first"
    )]
    TooMany {
        /// The job that was not created.
        name: JobId,
        /// [`crate::core::limits::MAX_JOBS`].
        limit: usize,
    },
    /// The node stopped; nothing was written.
    #[error("the node is not running")]
    Stopped,
}

fn list(nodes: &[NodeId]) -> String {
    let names: Vec<String> = nodes.iter().map(|n| format!("`{n}`")).collect();
    names.join(", ")
}

/// Where a definition comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The API (or `CatalogClient::put_job`).
    Api,
    /// The jobs files of these nodes (those holding the definition that runs).
    File {
        /// The nodes, sorted.
        nodes: Vec<NodeId>,
    },
    /// An in-process handler job of this node (`NodeBuilder::handler_job`).
    Local,
}

/// The definition that runs for one job, as every node decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The job.
    pub name: JobId,
    /// Its definition.
    pub def: JobDef,
    /// Where the definition comes from.
    pub source: Source,
    /// Its version (for a file definition, the newest load of it among its nodes).
    pub version: Version,
    /// Paused: it fires nothing until resumed.
    pub paused: bool,
    /// The version of the last pause or resume, if any.
    pub pause_version: Option<Version>,
}

/// One definition in a drift conflict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DriftEntry {
    /// The definition, as jobs-file keys.
    pub definition: RawJob,
    /// The nodes whose files hold it, sorted.
    pub nodes: Vec<NodeId>,
    /// The newest version among them.
    pub version: Version,
    /// True for the definition that runs.
    pub chosen: bool,
}

/// A disagreement about a job, reported on every node the same way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Conflict {
    /// The jobs files of several nodes define the job differently; the `chosen` entry
    /// runs everywhere (see the module docs for the rule).
    FileDrift {
        /// The job.
        job: JobId,
        /// Each definition, the chosen one first.
        definitions: Vec<DriftEntry>,
    },
    /// The job runs after jobs that are not in the catalog (deleted after it was
    /// written): it never runs until they are back.
    MissingParent {
        /// The job.
        job: JobId,
        /// Its parents that are missing.
        parents: Vec<JobId>,
    },
    /// An API definition exists for a name a jobs file defines: the file's runs.
    ApiShadowed {
        /// The job.
        job: JobId,
        /// The API definition's version.
        version: Version,
        /// The nodes whose files define it.
        files: Vec<NodeId>,
    },
}

impl Conflict {
    /// The job it is about.
    pub fn job(&self) -> &JobId {
        match self {
            Conflict::FileDrift { job, .. }
            | Conflict::ApiShadowed { job, .. }
            | Conflict::MissingParent { job, .. } => job,
        }
    }
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conflict::FileDrift { job, definitions } => {
                write!(
                    f,
                    "job `{job}` is defined differently by the jobs files of "
                )?;
                let groups: Vec<String> = definitions
                    .iter()
                    .map(|d| {
                        format!(
                            "[{}]{}",
                            list(&d.nodes),
                            if d.chosen { " (runs)" } else { "" }
                        )
                    })
                    .collect();
                f.write_str(&groups.join(" and "))
            }
            Conflict::MissingParent { job, parents } => {
                let names: Vec<String> = parents.iter().map(|p| format!("`{p}`")).collect();
                write!(
                    f,
                    "job `{job}` runs after {}, which the catalog does not hold; it does not run until they are back",
                    names.join(", ")
                )
            }
            Conflict::ApiShadowed { job, files, .. } => write!(
                f,
                "job `{job}` has an API definition, but the jobs file of {} defines it too; the file's runs",
                list(files)
            ),
        }
    }
}

/// One node's jobs-file definitions, from one of its generations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileSet {
    /// The node's generation they came from.
    pub generation: u64,
    /// The definitions by name.
    pub jobs: BTreeMap<JobId, FileEntry>,
}

/// What [`Catalog::observe`] did with a register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// It is newer than what the catalog held, which it replaces (if anything).
    Newer(Option<Register>),
    /// The catalog holds the same version.
    Same,
    /// The catalog holds a newer version.
    Older,
    /// Refused: its version is too far ahead of this node's clock, or it expired.
    Refused,
}

/// Counts of what the catalog holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CatalogCounts {
    /// Jobs with a definition that runs (API or file), paused or not.
    pub jobs: usize,
    /// Of those, paused.
    pub paused: usize,
    /// Live API definitions.
    pub api: usize,
    /// Tombstones of API definitions.
    pub tombstones: usize,
    /// File definitions, summed over the nodes.
    pub file_entries: usize,
    /// Nodes whose file sets are known.
    pub file_nodes: usize,
    /// Run and cancel requests and claims.
    pub requests: usize,
    /// Current conflicts.
    pub conflicts: usize,
    /// Versioned registers of every kind (definitions, tombstones, pauses, requests).
    pub registers: usize,
    /// The time (Unix ms) of the newest version among them: equal on nodes that hold the
    /// same catalog, and moving with every write. 0 when there is none.
    pub newest_version_ms: i64,
}

/// The catalog as one node knows it. See the module docs.
#[derive(Debug)]
pub struct Catalog {
    me: NodeId,
    config: CatalogConfig,
    hlc: Hlc,
    registers: BTreeMap<Key, Register>,
    files: BTreeMap<NodeId, FileSet>,
    local: BTreeSet<JobId>,
    /// The ids of the nodes that wrote the registers held: each register's version shares
    /// one of these instead of holding its own copy of a few writers' ids (issue 15,
    /// memory per entry). As many as nodes ever wrote to the catalog.
    writers: BTreeSet<NodeId>,
    /// The schedule texts of the definitions held: definitions with the same text share
    /// one copy (a catalog uses a handful of schedules; issue 15, memory per entry). Texts
    /// no definition uses any more go when the catalog is packed, or when there are
    /// twice as many texts as registers.
    schedules: BTreeSet<Arc<str>>,
}

impl Catalog {
    /// An empty catalog for node `me`.
    pub fn new(me: NodeId, config: CatalogConfig) -> Catalog {
        Catalog {
            me,
            config,
            hlc: Hlc::default(),
            registers: BTreeMap::new(),
            files: BTreeMap::new(),
            local: BTreeSet::new(),
            writers: BTreeSet::new(),
            schedules: BTreeSet::new(),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.me
    }

    /// The lifetimes in use.
    pub fn config(&self) -> &CatalogConfig {
        &self.config
    }

    /// Names of this node's in-process handler jobs (not in the catalog, see the module
    /// docs).
    pub fn set_local(&mut self, names: impl IntoIterator<Item = JobId>) {
        self.local = names.into_iter().collect();
    }

    /// True if `name` is an in-process handler job of this node.
    pub fn is_local(&self, name: &JobId) -> bool {
        self.local.contains(name)
    }

    /// The in-process handler jobs of this node.
    pub fn local(&self) -> &BTreeSet<JobId> {
        &self.local
    }

    /// The register at `key`.
    pub fn register(&self, key: &Key) -> Option<&Register> {
        self.registers.get(key)
    }

    /// Number of registers held (tombstones included).
    pub fn register_count(&self) -> usize {
        self.registers.len()
    }

    /// Rebuilds the register map from its sorted entries, so that its B-tree nodes are
    /// full (see `node::compact`): the same registers in the same order. Drops the
    /// schedule texts no definition uses any more.
    pub fn compact(&mut self) {
        self.registers = std::mem::take(&mut self.registers).into_iter().collect();
        self.schedules.retain(|s| Arc::strong_count(s) > 1);
    }

    /// A definition in `value` takes the shared copy of its schedule text.
    fn share_schedule(&mut self, value: &mut Value) {
        let Value::Job(Some(def)) = value else {
            return;
        };
        match self.schedules.get(&def.schedule) {
            Some(shared) => def.schedule = shared.clone(),
            None => {
                if self.schedules.len() >= 2 * self.registers.len() + 64 {
                    self.schedules.retain(|s| Arc::strong_count(s) > 1);
                }
                self.schedules.insert(def.schedule.clone());
            }
        }
    }

    /// Every register, in key order.
    pub fn registers(&self) -> impl Iterator<Item = (&Key, &Register)> {
        self.registers.iter()
    }

    /// The file sets, by node.
    pub fn file_sets(&self) -> &BTreeMap<NodeId, FileSet> {
        &self.files
    }

    fn expired(&self, key: &Key, r: &Register, now: UnixMillis) -> bool {
        let age = now.millis_since(r.version.time());
        let older_than = |d: Duration| age > i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        match (key, &r.value) {
            (_, Value::Job(None)) | (_, Value::Pause(false)) => {
                older_than(self.config.tombstone_ttl)
            }
            // A pause of a job nobody defines any more is forgotten like a tombstone.
            (_, Value::Pause(true)) => {
                older_than(self.config.tombstone_ttl)
                    && key
                        .job()
                        .is_none_or(|name| self.resolve_def(name).is_none())
            }
            (_, Value::Run(_) | Value::Ran(_) | Value::Cancel | Value::After { .. }) => {
                older_than(self.config.request_ttl)
            }
            (_, Value::Job(Some(_))) => false,
        }
    }

    /// Merges a register seen in gossip or read from disk at `now`. See [`Observed`].
    pub fn observe(&mut self, now: UnixMillis, key: Key, mut r: Register) -> Observed {
        if !r.value.fits(&key)
            || r.version.time() > now.saturating_add(self.config.max_ahead)
            || self.expired(&key, &r, now)
        {
            return Observed::Refused;
        }
        self.hlc.observe(&r.version);
        match self.registers.get(&key) {
            Some(old) if old.version == r.version => Observed::Same,
            Some(old) if old.version > r.version => Observed::Older,
            _ => {
                match self.writers.get(&r.version.node) {
                    Some(id) => r.version.node = id.clone(),
                    None => {
                        self.writers.insert(r.version.node.clone());
                    }
                }
                self.share_schedule(&mut r.value);
                Observed::Newer(self.registers.insert(key, r))
            }
        }
    }

    /// Writes `value` at `key` as this node, at `now`: a version above everything seen.
    fn write(&mut self, now: UnixMillis, key: Key, mut value: Value) -> (Key, Register) {
        self.share_schedule(&mut value);
        let r = Register {
            version: self.hlc.tick(now, &self.me),
            value,
        };
        self.registers.insert(key.clone(), r.clone());
        (key, r)
    }

    /// The nodes whose files define `name`, sorted.
    pub fn file_nodes(&self, name: &JobId) -> Vec<NodeId> {
        self.files
            .iter()
            .filter(|(_, s)| s.jobs.contains_key(name))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Creates or replaces the API definition of `name`. Returns the write to publish.
    pub fn put(
        &mut self,
        now: UnixMillis,
        name: JobId,
        def: JobDef,
    ) -> Result<(Key, Register), CatalogError> {
        if self.local.contains(&name) {
            return Err(CatalogError::LocalJob(name));
        }
        let nodes = self.file_nodes(&name);
        if !nodes.is_empty() {
            return Err(CatalogError::FileDefined { name, nodes });
        }
        self.check_after(&name, &def)?;
        let key = Key::Job(name.clone());
        let live = |r: Option<&Register>| {
            matches!(
                r,
                Some(Register {
                    value: Value::Job(Some(_)),
                    ..
                })
            )
        };
        // A new API job past the bound is refused (core::limits; issue 16); a change to an
        // existing one is not.
        if !live(self.registers.get(&key)) {
            let jobs = self.registers.values().filter(|r| live(Some(r))).count();
            if jobs >= MAX_JOBS {
                return Err(CatalogError::TooMany {
                    name,
                    limit: MAX_JOBS,
                });
            }
        }
        let probe = Register {
            version: self.hlc.clone().tick(now, &self.me),
            value: Value::Job(Some(Box::new(def))),
        };
        let size = key.to_gossip().len() + keys::encode_register(&probe).len();
        if size > MAX_VALUE_BYTES {
            return Err(CatalogError::TooLarge {
                name,
                size,
                limit: MAX_VALUE_BYTES,
            });
        }
        Ok(self.write(now, key, probe.value))
    }

    /// Refuses a definition whose parents (`after`) are not all jobs of the catalog (or
    /// handler jobs of this node), or that would close a cycle (see `core::after`).
    fn check_after(&self, name: &JobId, def: &JobDef) -> Result<(), CatalogError> {
        let Some(parents) = def.parents() else {
            return Ok(());
        };
        let invalid = |message: String| {
            CatalogError::Invalid(JobError::Invalid {
                job: name.to_string(),
                key: "after",
                message,
            })
        };
        if let Some(p) = parents.iter().find(|p| !self.exists(p)) {
            return Err(invalid(format!("no job `{p}` in the catalog")));
        }
        let mut graph: BTreeMap<JobId, Vec<JobId>> = self
            .names()
            .into_iter()
            .filter_map(|n| {
                let p = self.resolve_def(&n)?.0.parents()?;
                Some((n, p))
            })
            .collect();
        graph.insert(name.clone(), parents);
        match crate::core::after::cycle_through(name, |n| graph.get(n).map(Vec::as_slice)) {
            Some(cycle) => Err(invalid(crate::core::after::cycle_message(&cycle))),
            None => Ok(()),
        }
    }

    /// The parents of `name` (`after`) that are not jobs of the catalog any more (a
    /// parent deleted after the child was written): the child never runs until they are.
    pub fn missing_parents(&self, name: &JobId) -> Vec<JobId> {
        let Some(parents) = self.resolve_def(name).and_then(|(d, _, _)| d.parents()) else {
            return Vec::new();
        };
        parents.into_iter().filter(|p| !self.exists(p)).collect()
    }

    /// Deletes the API definition of `name` (a tombstone), and its pause. Returns the
    /// writes to publish.
    pub fn delete(
        &mut self,
        now: UnixMillis,
        name: &JobId,
    ) -> Result<Vec<(Key, Register)>, CatalogError> {
        if self.local.contains(name) {
            return Err(CatalogError::LocalJob(name.clone()));
        }
        let nodes = self.file_nodes(name);
        if !nodes.is_empty() {
            return Err(CatalogError::FileDefined {
                name: name.clone(),
                nodes,
            });
        }
        let key = Key::Job(name.clone());
        if !matches!(
            self.registers.get(&key),
            Some(Register {
                value: Value::Job(Some(_)),
                ..
            })
        ) {
            return Err(CatalogError::NotFound(name.clone()));
        }
        let mut out = vec![self.write(now, key, Value::Job(None))];
        // A job created again later under this name starts unpaused.
        if self.is_paused(name) {
            out.push(self.write(now, Key::Pause(name.clone()), Value::Pause(false)));
        }
        Ok(out)
    }

    /// True if `name` is a job this node knows: in the catalog, or a handler job here.
    pub fn exists(&self, name: &JobId) -> bool {
        self.local.contains(name) || self.resolve_def(name).is_some()
    }

    /// Pauses or resumes `name` (any source). Returns the write to publish.
    pub fn set_paused(
        &mut self,
        now: UnixMillis,
        name: &JobId,
        paused: bool,
    ) -> Result<(Key, Register), CatalogError> {
        if !self.exists(name) {
            return Err(CatalogError::NotFound(name.clone()));
        }
        Ok(self.write(now, Key::Pause(name.clone()), Value::Pause(paused)))
    }

    /// True if the pause register of `name` says paused.
    pub fn is_paused(&self, name: &JobId) -> bool {
        matches!(
            self.registers.get(&Key::Pause(name.clone())),
            Some(Register {
                value: Value::Pause(true),
                ..
            })
        )
    }

    /// Asks for `name` to run once, now, on its owner. Returns the request's fire id and
    /// the write to publish.
    pub fn request_run(
        &mut self,
        now: UnixMillis,
        name: &JobId,
    ) -> Result<(FireId, (Key, Register)), CatalogError> {
        if !self.exists(name) {
            return Err(CatalogError::NotFound(name.clone()));
        }
        let version = self.hlc.tick(now, &self.me);
        let id = request_id(name, &version);
        let r = Register {
            version,
            value: Value::Run(name.clone()),
        };
        self.registers.insert(Key::Run(id), r.clone());
        Ok((id, (Key::Run(id), r)))
    }

    /// Asks for the run with fire id `id` to be cancelled, wherever it runs. Returns the
    /// write to publish.
    pub fn request_cancel(&mut self, now: UnixMillis, id: FireId) -> (Key, Register) {
        self.write(now, Key::Cancel(id), Value::Cancel)
    }

    /// Claims run request `id` for this node; `None` if it is unknown or claimed already.
    pub fn claim(&mut self, now: UnixMillis, id: FireId) -> Option<(Key, Register)> {
        if !self.registers.contains_key(&Key::Run(id)) || self.registers.contains_key(&Key::Ran(id))
        {
            return None;
        }
        Some(self.write(now, Key::Ran(id), Value::Ran(self.me.clone())))
    }

    /// Asks for `child` to run once because its parent's run `parent_fire` of `slot`
    /// succeeded (`core::after`). The request's fire id derives from the parent's, so a
    /// parent slot that ran twice asks once: `None` when this node already holds the
    /// request or its claim.
    pub fn request_after(
        &mut self,
        now: UnixMillis,
        child: &JobId,
        parent: &JobId,
        parent_fire: FireId,
        slot: UnixMillis,
    ) -> Option<(FireId, (Key, Register))> {
        let id = crate::core::after::child_fire_id(parent_fire, child);
        if self.registers.contains_key(&Key::Run(id)) || self.registers.contains_key(&Key::Ran(id))
        {
            return None;
        }
        let value = Value::After {
            job: child.clone(),
            parent: parent.clone(),
            parent_fire,
            slot: slot.0,
        };
        Some((id, self.write(now, Key::Run(id), value)))
    }

    /// Run requests nobody has claimed yet: `(fire id, job, slot)`. A run-now request's
    /// slot is the time it was made; a dependent run's is its parent's slot.
    pub fn unclaimed_requests(&self) -> impl Iterator<Item = (FireId, &JobId, UnixMillis)> {
        let lo = Key::Run(FireId(0));
        let hi = Key::Run(FireId(u64::MAX));
        self.registers
            .range(lo..=hi)
            .filter_map(|(k, r)| match (k, &r.value) {
                (Key::Run(id), _) if self.registers.contains_key(&Key::Ran(*id)) => None,
                (Key::Run(id), Value::Run(job)) => Some((*id, job, r.version.time())),
                (Key::Run(id), Value::After { job, slot, .. }) => {
                    Some((*id, job, UnixMillis(*slot)))
                }
                _ => None,
            })
    }

    /// Cancel requests: the fire ids to cancel.
    pub fn cancels(&self) -> impl Iterator<Item = FireId> + '_ {
        let lo = Key::Cancel(FireId(0));
        let hi = Key::Cancel(FireId(u64::MAX));
        self.registers.range(lo..=hi).filter_map(|(k, _)| match k {
            Key::Cancel(id) => Some(*id),
            _ => None,
        })
    }

    /// Replaces the file set of `node` with what generation `generation` of it holds.
    /// Sets from an older generation than the one held are ignored. Returns the names
    /// whose file definitions changed.
    pub fn set_files(&mut self, node: &NodeId, set: FileSet) -> BTreeSet<JobId> {
        for e in set.jobs.values() {
            self.hlc.observe(&e.version);
        }
        let old = match self.files.get(node) {
            Some(old) if old.generation > set.generation => return BTreeSet::new(),
            Some(old) => old.jobs.clone(),
            None => BTreeMap::new(),
        };
        let changed = changed_names(&old, &set.jobs);
        self.files.insert(node.clone(), set);
        changed
    }

    /// Forgets the file set of `node` (its state left gossip). Returns the names whose
    /// file definitions changed.
    pub fn remove_files(&mut self, node: &NodeId) -> BTreeSet<JobId> {
        match self.files.remove(node) {
            Some(set) => set.jobs.into_keys().collect(),
            None => BTreeSet::new(),
        }
    }

    /// This node's own jobs-file definitions at `now` (a start, or a reload). A definition
    /// unchanged since the last call keeps its version. Returns the new set (to publish)
    /// and the names whose definitions changed anywhere in the catalog's view.
    pub fn set_own_files(
        &mut self,
        now: UnixMillis,
        generation: u64,
        defs: impl IntoIterator<Item = (JobId, JobDef)>,
    ) -> Result<(FileSet, BTreeSet<JobId>), CatalogError> {
        let old = self
            .files
            .get(&self.me)
            .map(|s| s.jobs.clone())
            .unwrap_or_default();
        let mut jobs = BTreeMap::new();
        for (name, def) in defs {
            let version = match old.get(&name) {
                Some(e) if e.def == def => e.version.clone(),
                _ => self.hlc.tick(now, &self.me),
            };
            let entry = FileEntry { version, def };
            let size = keys::KEY_FILE_PREFIX.len()
                + name.as_str().len()
                + keys::encode_file_entry(&entry).len();
            if size > MAX_VALUE_BYTES {
                return Err(CatalogError::TooLarge {
                    name,
                    size,
                    limit: MAX_VALUE_BYTES,
                });
            }
            jobs.insert(name, entry);
        }
        let set = FileSet { generation, jobs };
        let changed = self.set_files(&self.me.clone(), set.clone());
        Ok((set, changed))
    }

    /// Forgets what expired at `now` (see the module docs). Returns the keys removed.
    pub fn gc(&mut self, now: UnixMillis) -> Vec<Key> {
        let expired: Vec<Key> = self
            .registers
            .iter()
            .filter(|(k, r)| self.expired(k, r, now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            self.registers.remove(k);
        }
        expired
    }

    /// The file definitions of `name`, grouped: `(definition, nodes, newest version)`,
    /// the one that runs first (see the module docs for the rule).
    fn file_groups(&self, name: &JobId) -> Vec<(&JobDef, Vec<NodeId>, &Version)> {
        let mut groups: Vec<(&JobDef, Vec<NodeId>, &Version)> = Vec::new();
        for (node, set) in &self.files {
            let Some(e) = set.jobs.get(name) else {
                continue;
            };
            match groups.iter_mut().find(|g| *g.0 == e.def) {
                Some(g) => {
                    g.1.push(node.clone());
                    if e.version > *g.2 {
                        g.2 = &e.version;
                    }
                }
                None => groups.push((&e.def, vec![node.clone()], &e.version)),
            }
        }
        groups.sort_by(|a, b| (b.1.len(), b.2).cmp(&(a.1.len(), a.2)));
        groups
    }

    fn resolve_def(&self, name: &JobId) -> Option<(&JobDef, Source, &Version)> {
        if let Some((def, nodes, version)) = self.file_groups(name).into_iter().next() {
            return Some((def, Source::File { nodes }, version));
        }
        match self.registers.get(&Key::Job(name.clone())) {
            Some(Register {
                version,
                value: Value::Job(Some(def)),
            }) => Some((def, Source::Api, version)),
            _ => None,
        }
    }

    /// The definition that runs for `name`, if any (see the module docs). Handler jobs
    /// of this node are not in it.
    pub fn resolve(&self, name: &JobId) -> Option<Resolved> {
        let (def, source, version) = self.resolve_def(name)?;
        let pause = self.registers.get(&Key::Pause(name.clone()));
        Some(Resolved {
            name: name.clone(),
            def: def.clone(),
            source,
            version: version.clone(),
            paused: matches!(pause.map(|p| &p.value), Some(Value::Pause(true))),
            pause_version: pause.map(|p| p.version.clone()),
        })
    }

    /// Every name with a definition or a tombstone, in order.
    pub fn names(&self) -> BTreeSet<JobId> {
        let mut names: BTreeSet<JobId> = self
            .registers
            .keys()
            .filter_map(|k| match k {
                Key::Job(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        for set in self.files.values() {
            names.extend(set.jobs.keys().cloned());
        }
        names
    }

    /// Every job with a definition that runs, in name order.
    pub fn resolved(&self) -> Vec<Resolved> {
        self.names()
            .iter()
            .filter_map(|n| self.resolve(n))
            .collect()
    }

    /// The conflicts about `name` (see [`Conflict`]).
    pub fn conflicts(&self, name: &JobId) -> Vec<Conflict> {
        let groups = self.file_groups(name);
        let mut out = Vec::new();
        if groups.len() > 1 {
            out.push(Conflict::FileDrift {
                job: name.clone(),
                definitions: groups
                    .iter()
                    .enumerate()
                    .map(|(i, (def, nodes, version))| DriftEntry {
                        definition: def.to_raw(name),
                        nodes: nodes.clone(),
                        version: (*version).clone(),
                        chosen: i == 0,
                    })
                    .collect(),
            });
        }
        if let Some(Register {
            version,
            value: Value::Job(Some(_)),
        }) = self.registers.get(&Key::Job(name.clone()))
            && !groups.is_empty()
        {
            let mut files: Vec<NodeId> = groups.iter().flat_map(|g| g.1.clone()).collect();
            files.sort();
            out.push(Conflict::ApiShadowed {
                job: name.clone(),
                version: version.clone(),
                files,
            });
        }
        let missing = self.missing_parents(name);
        if !missing.is_empty() {
            out.push(Conflict::MissingParent {
                job: name.clone(),
                parents: missing,
            });
        }
        out
    }

    /// Every conflict, in name order.
    pub fn all_conflicts(&self) -> Vec<Conflict> {
        self.names()
            .iter()
            .flat_map(|n| self.conflicts(n))
            .collect()
    }

    /// A hash of the jobs that run (name, definition, version, source, paused), equal on
    /// every node that holds the same catalog.
    pub fn hash(&self) -> u64 {
        let mut h = Xxh3::new();
        for r in self.resolved() {
            h.update(r.name.as_str().as_bytes());
            h.update(&[0xff]);
            h.update(&r.def.digest().to_le_bytes());
            h.update(r.version.to_string().as_bytes());
            h.update(&[0xff, u8::from(r.paused), u8::from(r.source == Source::Api)]);
        }
        h.digest()
    }

    /// Counts of what the catalog holds.
    pub fn counts(&self) -> CatalogCounts {
        let mut c = CatalogCounts {
            registers: self.registers.len(),
            ..CatalogCounts::default()
        };
        for (k, r) in &self.registers {
            c.newest_version_ms = c.newest_version_ms.max(r.version.millis);
            match (k, &r.value) {
                (_, Value::Job(Some(_))) => c.api += 1,
                (_, Value::Job(None)) => c.tombstones += 1,
                (_, Value::Pause(_)) => {}
                _ => c.requests += 1,
            }
        }
        c.file_nodes = self.files.len();
        c.file_entries = self.files.values().map(|s| s.jobs.len()).sum();
        for name in self.names() {
            if let Some(r) = self.resolve(&name) {
                c.jobs += 1;
                c.paused += usize::from(r.paused);
            }
            c.conflicts += self.conflicts(&name).len();
        }
        c
    }
}

/// The fire id of a run request: `xxh3_64(job ++ [0xfe] ++ millis ++ counter ++ node)`
/// (little-endian integers). A slot's fire id hashes `job ++ [0xff] ++ slot` (see
/// [`FireId::of`]), so the two never hash the same input.
pub fn request_id(job: &JobId, version: &Version) -> FireId {
    let mut bytes = job.as_str().as_bytes().to_vec();
    bytes.push(0xfe);
    bytes.extend_from_slice(&version.millis.to_le_bytes());
    bytes.extend_from_slice(&version.counter.to_le_bytes());
    bytes.extend_from_slice(version.node.as_str().as_bytes());
    FireId(xxh3_64(&bytes))
}

fn changed_names(
    old: &BTreeMap<JobId, FileEntry>,
    new: &BTreeMap<JobId, FileEntry>,
) -> BTreeSet<JobId> {
    let mut out = BTreeSet::new();
    for (name, e) in old {
        if new.get(name) != Some(e) {
            out.insert(name.clone());
        }
    }
    for (name, e) in new {
        if old.get(name) != Some(e) {
            out.insert(name.clone());
        }
    }
    out
}
