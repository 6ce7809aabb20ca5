//! Changing a running node's own jobs (a reloaded jobs file): the new set is checked whole,
//! then becomes this node's jobs-file definitions in the catalog (see
//! `node::catalog`), so every node adds, removes or changes those jobs in place, without
//! a restart and without running a slot twice (`Planner::update_job`). A job this node's
//! file no longer holds leaves the catalog unless another node's file defines it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::catalog::JobDef;
use crate::core::job::JobSpec;
use crate::core::types::JobId;

/// What [`NodeHandle::replace_jobs`](super::NodeHandle::replace_jobs) changed, by job
/// name, each list sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobsChange {
    /// Jobs the node did not have.
    pub added: Vec<JobId>,
    /// Jobs the node had that the new set does not hold. A run of one in progress goes on
    /// to its end.
    pub removed: Vec<JobId>,
    /// Jobs whose definition changed (schedule, timezone, command, timeout, retries,
    /// policies). Their records stay, so no slot runs twice; a new schedule applies to
    /// slots after the change.
    pub changed: Vec<JobId>,
}

impl JobsChange {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl fmt::Display for JobsChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no change");
        }
        let mut first = true;
        for (what, names) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("changed", &self.changed),
        ] {
            if names.is_empty() {
                continue;
            }
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            let names: Vec<&str> = names.iter().map(JobId::as_str).collect();
            write!(f, "{what} {}", names.join(", "))?;
        }
        Ok(())
    }
}

/// Why a new job set was refused. The node's jobs are unchanged when one is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobsError {
    /// Two jobs of the new set share a name.
    #[error("job `{0}` is declared more than once; job names must be unique")]
    Duplicate(JobId),
    /// A job of the new set has the name of a job run by an in-process handler, which a
    /// new set can neither replace nor remove.
    #[error("job `{0}` is run by an in-process handler of this node; choose another name")]
    HandlerJob(JobId),
    /// A job of the new set has no command or URL, and no handler or custom executor runs
    /// it.
    #[error("job `{0}` has no command or URL")]
    NothingToRun(JobId),
    /// The node has stopped (or is leaving).
    #[error("the node has stopped")]
    Stopped,
    /// The catalog refused a job (a definition over the size limit).
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
}

/// The jobs of a node that a new set replaces: every job but those run by in-process
/// handlers, which stay as they are.
#[derive(Debug, Default)]
pub(super) struct Replaceable {
    /// Jobs run by in-process handlers (`NodeBuilder::handler_job`).
    pub(super) handlers: BTreeSet<JobId>,
    /// True with the default executor: a job needs a command or a handler.
    pub(super) needs_command: bool,
}

impl Replaceable {
    /// Checks a new set of this node's jobs whole: no name twice, none of a handler job,
    /// a command for each unless a custom executor runs them. Returns it by name.
    pub(super) fn check(&self, jobs: Vec<JobSpec>) -> Result<BTreeMap<JobId, JobSpec>, JobsError> {
        let mut new: BTreeMap<JobId, JobSpec> = BTreeMap::new();
        for spec in jobs {
            if self.handlers.contains(&spec.name) {
                return Err(JobsError::HandlerJob(spec.name));
            }
            if self.needs_command && spec.exec.command.is_none() && spec.exec.http.is_none() {
                return Err(JobsError::NothingToRun(spec.name));
            }
            if let Some(dup) = new.insert(spec.name.clone(), spec) {
                return Err(JobsError::Duplicate(dup.name));
            }
        }
        Ok(new)
    }
}

/// What changed from this node's jobs-file definitions `old` to `new`.
pub(super) fn change(old: &BTreeMap<JobId, JobDef>, new: &BTreeMap<JobId, JobDef>) -> JobsChange {
    let mut change = JobsChange::default();
    for (name, def) in new {
        match old.get(name) {
            None => change.added.push(name.clone()),
            Some(o) if o != def => change.changed.push(name.clone()),
            Some(_) => {}
        }
    }
    change.removed = old
        .keys()
        .filter(|n| !new.contains_key(*n))
        .cloned()
        .collect();
    change
}
