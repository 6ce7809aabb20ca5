//! What the catalog task answers reads with: one job, the listing of every job (kept,
//! and after a change made again only for the jobs that changed: `GET /v1/jobs` over
//! 10,000 jobs, issue 15), and the members.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;

use super::catalog::CatalogTask;
use crate::catalog::{Conflict, Key, Source, Version};
use crate::core::job::RawJob;
use crate::core::placement::Constraints;
use crate::core::planner::View;
use crate::core::types::{JobId, NodeId};

/// One job as the catalog shows it (what `GET /v1/jobs/{name}` answers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobInfo {
    /// The job's name.
    pub name: JobId,
    /// Its definition, as jobs-file keys (keys at their default left out).
    pub definition: RawJob,
    /// Where the definition comes from.
    pub source: Source,
    /// Its version; `None` for in-process handler jobs (not in the catalog).
    pub version: Option<Version>,
    /// The member that runs it in this node's view (by the members' weights, among those
    /// whose tags satisfy its constraints).
    pub owner: Option<NodeId>,
    /// No live member satisfies its constraints: it runs nowhere (issue 18).
    pub unplaceable: bool,
    /// Paused: it fires nothing until resumed.
    pub paused: bool,
    /// The version of its last pause or resume, if any.
    pub pause_version: Option<Version>,
    /// Disagreements about it (empty normally).
    pub conflicts: Vec<Conflict>,
}

/// A member's state, as far as chitchat tells. Chitchat's failure detector has no
/// "suspected" state: a node past the phi threshold is dead to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Alive and a member (it may own jobs).
    Alive,
    /// Alive and leaving gracefully: it owns nothing any more.
    Leaving,
    /// Alive, but its clock is not verified against its peers' yet, or is off their median
    /// by more than `max_clock_offset`: it owns nothing until it is back (see `node::skew`).
    Clock,
    /// Not heard from: its state is kept until `dead_node_grace_period` has passed.
    Dead,
}

/// One node chitchat knows of (its newest generation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    /// Its id.
    pub id: NodeId,
    /// The address it gossips on.
    pub addr: SocketAddr,
    /// Alive, leaving, out of clock bound, or dead.
    pub state: MemberState,
    /// Its generation (its start time in Unix ms; grows with every restart).
    pub generation: u64,
    /// How many jobs of the catalog (and of this node's handler jobs) it owns in this
    /// node's view.
    pub jobs_owned: usize,
    /// True for the node answering.
    pub is_self: bool,
}

/// Every job and every conflict as one node sees them at one moment
/// ([`crate::node::CatalogClient::listing`]). The catalog task keeps it, and after a
/// change of some jobs makes the next one from it with only those jobs' entries made
/// again (the others are the same `Arc`s); after a membership change, it places every job
/// again and makes again only the entries whose owner moved. Readers share one copy
/// meanwhile.
#[derive(Debug, PartialEq, Eq)]
pub struct JobListing {
    /// Grows with every listing this node builds: two listings with the same number (of
    /// the same node's run) are the same listing.
    pub version: u64,
    /// Every job, as [`crate::node::CatalogClient::jobs`] shows them, in name order. An
    /// entry is the same `Arc` as in the listing before when that job did not change (so
    /// a reader can tell the changed ones with `Arc::ptr_eq`).
    pub jobs: Vec<Arc<JobInfo>>,
    /// Every conflict, as [`crate::node::CatalogClient::conflicts`] shows them.
    pub conflicts: Vec<Conflict>,
}

/// The catalog task's listing and what changed since it was made.
#[derive(Debug, Default)]
pub(super) struct ListingState {
    /// The last listing made, if any.
    last: Option<Arc<JobListing>>,
    /// How many listings were made (the next one's version).
    made: u64,
    /// Jobs whose entry may have changed since `last` was made.
    changed: BTreeSet<JobId>,
    /// Every job's owner may have changed (the membership view did).
    owners: bool,
    /// Each job's conflicts, when it has any, as of `last`.
    conflicts: BTreeMap<JobId, Vec<Conflict>>,
    /// Each job's placement constraints, when it has any, as of `last`: what placing it
    /// again after a membership change needs, without resolving its definition again.
    constraints: BTreeMap<JobId, Constraints>,
}

impl ListingState {
    /// Jobs whose entries may have changed (a definition, pause, source or conflict).
    pub(super) fn jobs_changed<'a>(&mut self, names: impl IntoIterator<Item = &'a JobId>) {
        if self.last.is_none() {
            return;
        }
        self.changed.extend(names.into_iter().cloned());
    }

    /// Every job's owner may have changed (after a membership change). Only owners: a
    /// change of what the catalog holds (who publishes which file definition too) comes
    /// through [`Self::jobs_changed`].
    pub(super) fn owners_changed(&mut self) {
        self.owners = true;
    }
}

impl CatalogTask {
    /// The listing of the catalog as it is now: the one made before if nothing changed
    /// since; that one with the entries of the jobs that changed made again (issue 15:
    /// `GET /v1/jobs` right after a change of one job); after a membership change, that
    /// one with every job placed again, and only the entries whose owner moved made again
    /// (issue 15: right after a membership change, the API serializes only those). A view
    /// change the task has not seen yet is checked here, so owners are never staler than
    /// the view.
    pub(super) fn listing(&mut self) -> Arc<JobListing> {
        if self.view.has_changed().unwrap_or(true) {
            self.listing.owners_changed();
        }
        // Changes not flushed yet are in the catalog already.
        let pending: Vec<JobId> = self.dirty.iter().cloned().collect();
        self.listing.jobs_changed(&pending);
        let Some(last) = self.listing.last.clone() else {
            return self.whole_listing();
        };
        if self.listing.changed.is_empty() && !self.listing.owners {
            return last;
        }
        let mut names = std::mem::take(&mut self.listing.changed);
        // A job's missing-parent conflict changes with its parents' definitions.
        for name in names.clone() {
            names.extend(self.deps.children(&name).cloned());
        }
        let mut jobs = last.jobs.clone();
        if std::mem::take(&mut self.listing.owners) {
            self.place_again(&mut jobs);
        }
        for name in &names {
            let at = jobs.binary_search_by(|j| j.name.cmp(name));
            let made = self.placed_info(name);
            self.set_constraints(name, made.as_ref().map(|(_, c)| c));
            match (made.map(|(info, _)| info), at) {
                (Some(info), Ok(i)) => jobs[i] = Arc::new(info),
                (Some(info), Err(i)) => jobs.insert(i, Arc::new(info)),
                (None, Ok(i)) => {
                    jobs.remove(i);
                }
                (None, Err(_)) => {}
            }
            self.set_conflicts(name);
        }
        self.keep_listing(jobs)
    }

    /// Places every job of `jobs` in the current view; an entry whose owner (or whether it
    /// is unplaceable) moved is made again, the others stay the same `Arc`s.
    fn place_again(&self, jobs: &mut [Arc<JobInfo>]) {
        let none = Constraints::default();
        let view = self.view.borrow();
        for job in jobs.iter_mut() {
            let constraints = self.listing.constraints.get(&job.name).unwrap_or(&none);
            let (owner, unplaceable) = place(&view, &job.name, constraints);
            if job.owner.as_ref() != owner || job.unplaceable != unplaceable {
                let mut info = (**job).clone();
                info.owner = owner.cloned();
                info.unplaceable = unplaceable;
                *job = Arc::new(info);
            }
        }
    }

    /// A listing made from nothing.
    fn whole_listing(&mut self) -> Arc<JobListing> {
        let mut names = self.catalog.names();
        names.extend(self.local.keys().cloned());
        self.listing.constraints.clear();
        let mut jobs = Vec::with_capacity(names.len());
        for name in &names {
            if let Some((info, constraints)) = self.placed_info(name) {
                self.set_constraints(name, Some(&constraints));
                jobs.push(Arc::new(info));
            }
        }
        self.listing.conflicts.clear();
        for name in &names {
            self.set_conflicts(name);
        }
        self.listing.owners = false;
        self.listing.changed.clear();
        self.keep_listing(jobs)
    }

    /// Notes `name`'s conflicts for the listing (what `Catalog::all_conflicts` gathers).
    fn set_conflicts(&mut self, name: &JobId) {
        let c = self.catalog.conflicts(name);
        if c.is_empty() {
            self.listing.conflicts.remove(name);
        } else {
            self.listing.conflicts.insert(name.clone(), c);
        }
    }

    /// Notes `name`'s placement constraints for placing it again (none: it has no entry).
    fn set_constraints(&mut self, name: &JobId, constraints: Option<&Constraints>) {
        match constraints {
            Some(c) if !c.is_empty() => {
                self.listing.constraints.insert(name.clone(), c.clone());
            }
            _ => {
                self.listing.constraints.remove(name);
            }
        }
    }

    fn keep_listing(&mut self, jobs: Vec<Arc<JobInfo>>) -> Arc<JobListing> {
        self.listing.made += 1;
        let listing = Arc::new(JobListing {
            version: self.listing.made,
            jobs,
            conflicts: self.listing.conflicts.values().flatten().cloned().collect(),
        });
        self.listing.last = Some(listing.clone());
        listing
    }

    /// The owner of a job with `constraints` in this node's view, the planner's way; and
    /// whether it is unplaceable (members, but none that satisfies them).
    fn placed_owner(&self, name: &JobId, constraints: &Constraints) -> (Option<NodeId>, bool) {
        let view = self.view.borrow();
        let (owner, unplaceable) = place(&view, name, constraints);
        (owner.cloned(), unplaceable)
    }

    pub(super) fn info(&self, name: &JobId) -> Option<JobInfo> {
        self.placed_info(name).map(|(info, _)| info)
    }

    /// [`Self::info`], and the placement constraints it was placed by.
    fn placed_info(&self, name: &JobId) -> Option<(JobInfo, Constraints)> {
        if let Some(def) = self.local.get(name) {
            let (owner, unplaceable) = self.placed_owner(name, &def.constraints);
            let info = JobInfo {
                name: name.clone(),
                definition: def.to_raw(name),
                source: Source::Local,
                version: None,
                owner,
                unplaceable,
                paused: self.catalog.is_paused(name),
                pause_version: self
                    .catalog
                    .register(&Key::Pause(name.clone()))
                    .map(|r| r.version.clone()),
                conflicts: Vec::new(),
            };
            return Some((info, def.constraints.clone()));
        }
        let r = self.catalog.resolve(name)?;
        let (owner, unplaceable) = self.placed_owner(name, &r.def.constraints);
        let info = JobInfo {
            name: name.clone(),
            definition: r.def.to_raw(name),
            source: r.source,
            version: Some(r.version),
            owner,
            unplaceable,
            paused: r.paused,
            pause_version: r.pause_version,
            conflicts: self.catalog.conflicts(name),
        };
        Some((info, r.def.constraints))
    }

    pub(super) async fn members(&self) -> Vec<MemberInfo> {
        let scan = self.publisher.catalog_scan(|_| None).await;
        let mut owned: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut names = self.catalog.names();
        names.extend(self.local.keys().cloned());
        for name in names {
            let constraints = match self.local.get(&name) {
                Some(def) => Some(def.constraints.clone()),
                None => self
                    .catalog
                    .resolve(&name)
                    .map(|r| r.def.constraints.clone()),
            };
            if let Some(c) = constraints
                && let (Some(o), _) = self.placed_owner(&name, &c)
            {
                *owned.entry(o).or_default() += 1;
            }
        }
        let mut newest: BTreeMap<NodeId, &crate::cluster::catalog::NodeRow> = BTreeMap::new();
        for row in &scan.nodes {
            let e = newest.entry(row.id.clone()).or_insert(row);
            if row.generation > e.generation {
                *e = row;
            }
        }
        newest
            .into_values()
            .map(|row| {
                let state = match (row.live, row.leaving, row.clock) {
                    (true, true, _) => MemberState::Leaving,
                    (true, false, true) => MemberState::Clock,
                    (true, false, false) => MemberState::Alive,
                    (false, _, _) => MemberState::Dead,
                };
                MemberInfo {
                    id: row.id.clone(),
                    addr: row.addr,
                    state,
                    generation: row.generation,
                    jobs_owned: owned.get(&row.id).copied().unwrap_or(0),
                    is_self: row.me,
                }
            })
            .collect()
    }
}

/// The owner of a job with `constraints` in `view`, the planner's way; and whether it is
/// unplaceable (members, but none that satisfies them).
fn place<'v>(
    view: &'v View,
    name: &JobId,
    constraints: &Constraints,
) -> (Option<&'v NodeId>, bool) {
    let owner = crate::core::owner::owner_placed(name, constraints, view.placed_members());
    (owner, owner.is_none() && !view.members.is_empty())
}
