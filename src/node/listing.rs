//! What the catalog task answers reads with: one job, the listing of every job (built
//! once per change of the catalog or of the membership view, and shared until the next
//! one: `GET /v1/jobs` over 10,000 jobs, issue 15), and the members.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;

use super::catalog::CatalogTask;
use crate::catalog::{Conflict, Key, Source, Version};
use crate::core::job::RawJob;
use crate::core::placement::Constraints;
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
    /// Alive, leaving or dead.
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
/// ([`crate::node::CatalogClient::listing`]). The catalog task builds it again only once
/// the catalog or its membership view changed, so readers share one copy meanwhile.
#[derive(Debug, PartialEq, Eq)]
pub struct JobListing {
    /// Grows with every listing this node builds: two listings with the same number (of
    /// the same node's run) are the same listing.
    pub version: u64,
    /// Every job, as [`crate::node::CatalogClient::jobs`] shows them, in name order.
    pub jobs: Vec<JobInfo>,
    /// Every conflict, as [`crate::node::CatalogClient::conflicts`] shows them.
    pub conflicts: Vec<Conflict>,
}

impl CatalogTask {
    /// The listing of the catalog as it is now: the one built before, unless the catalog
    /// or the membership view changed since (the task drops it on each change; a view
    /// change the task has not seen yet is checked here, so owners are never staler than
    /// the view).
    pub(super) fn listing(&mut self) -> Arc<JobListing> {
        if self.view.has_changed().unwrap_or(true) {
            self.listing = None;
        }
        if let Some(l) = &self.listing {
            return l.clone();
        }
        self.listings += 1;
        let listing = Arc::new(JobListing {
            version: self.listings,
            jobs: self.list(),
            conflicts: self.catalog.all_conflicts(),
        });
        self.listing = Some(listing.clone());
        listing
    }

    /// The owner of a job with `constraints` in this node's view, the planner's way; and
    /// whether it is unplaceable (members, but none that satisfies them).
    fn placed_owner(&self, name: &JobId, constraints: &Constraints) -> (Option<NodeId>, bool) {
        let view = self.view.borrow();
        let owner =
            crate::core::owner::owner_placed(name, constraints, view.placed_members()).cloned();
        let unplaceable = owner.is_none() && !view.members.is_empty();
        (owner, unplaceable)
    }

    pub(super) fn info(&self, name: &JobId) -> Option<JobInfo> {
        if let Some(def) = self.local.get(name) {
            let (owner, unplaceable) = self.placed_owner(name, &def.constraints);
            return Some(JobInfo {
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
            });
        }
        let r = self.catalog.resolve(name)?;
        let (owner, unplaceable) = self.placed_owner(name, &r.def.constraints);
        Some(JobInfo {
            name: name.clone(),
            definition: r.def.to_raw(name),
            source: r.source,
            version: Some(r.version),
            owner,
            unplaceable,
            paused: r.paused,
            pause_version: r.pause_version,
            conflicts: self.catalog.conflicts(name),
        })
    }

    fn list(&self) -> Vec<JobInfo> {
        let mut names = self.catalog.names();
        names.extend(self.local.keys().cloned());
        names.iter().filter_map(|n| self.info(n)).collect()
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
                let state = match (row.live, row.leaving) {
                    (true, false) => MemberState::Alive,
                    (true, true) => MemberState::Leaving,
                    (false, _) => MemberState::Dead,
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
