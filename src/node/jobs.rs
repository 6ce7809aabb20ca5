//! Changing a running node's jobs: a new set (a reloaded jobs file, a catalog) diffed
//! against the jobs it runs, then jobs added, removed or changed in place, without a
//! restart and without running a slot twice.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::runtime::Runtime;
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
    /// A job of the new set has no command, and no handler or custom executor runs it.
    #[error("job `{0}` has no command")]
    NothingToRun(JobId),
    /// The node has stopped (or is leaving).
    #[error("the node has stopped")]
    Stopped,
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

impl Runtime {
    /// Makes `jobs` the node's jobs, but for those run by in-process handlers: adds the
    /// new ones, removes those missing, and updates in place those whose definition
    /// changed (see [`crate::core::planner::Planner::update_job`]). The whole set is
    /// checked first; on error nothing changes.
    ///
    /// A job added here fires its first slot after now (see
    /// [`crate::core::planner::Planner::skip_until`]): it did not exist here before.
    pub(super) fn replace_jobs(&mut self, jobs: Vec<JobSpec>) -> Result<JobsChange, JobsError> {
        if self.planner.is_leaving() {
            return Err(JobsError::Stopped);
        }
        let mut new: BTreeMap<JobId, JobSpec> = BTreeMap::new();
        for spec in jobs {
            if self.replaceable.handlers.contains(&spec.name) {
                return Err(JobsError::HandlerJob(spec.name));
            }
            if self.replaceable.needs_command && spec.exec.command.is_none() {
                return Err(JobsError::NothingToRun(spec.name));
            }
            if let Some(dup) = new.insert(spec.name.clone(), spec) {
                return Err(JobsError::Duplicate(dup.name));
            }
        }
        let mut change = JobsChange::default();
        let mut changed = Vec::new();
        for old in self.planner.jobs() {
            if self.replaceable.handlers.contains(&old.name) {
                continue;
            }
            match new.remove(&old.name) {
                None => change.removed.push(old.name.clone()),
                Some(spec) if old.same_definition(&spec) => {}
                Some(spec) => changed.push(spec),
            }
        }
        let now = self.clock.now();
        for name in &change.removed {
            self.planner.remove_job(name);
        }
        for spec in changed {
            change.changed.push(spec.name.clone());
            self.planner.update_job(now, spec);
        }
        for (name, spec) in new {
            // Names were checked against every registered job: this cannot fail.
            if self.planner.add_job(now, spec).is_ok() {
                self.planner.skip_until(&name, now);
                change.added.push(name);
            }
        }
        Ok(change)
    }
}
