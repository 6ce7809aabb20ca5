//! The catalog a node starts with: its data dir's copy, its own jobs-file definitions, its
//! handler jobs, and the planner's first jobs.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{error, info};
use xxhash_rust::xxh3::xxh3_64;

use super::catalog::{Applied, first_floor};
use super::store::{CatalogFile, Store};
use crate::catalog::keys::encode_register;
use crate::catalog::{Catalog, CatalogError, FileSet, JobDef, Key, Observed};
use crate::core::job::JobSpec;
use crate::core::types::{FireId, JobId, UnixMillis};

/// The catalog as a node starts with it, before gossip: its own jobs-file definitions
/// (the builder's `job`/`jobs`), its handler jobs, and what the planner was given.
pub(super) struct CatalogStart {
    pub(super) catalog: Catalog,
    pub(super) own: FileSet,
    pub(super) applied: BTreeMap<JobId, Applied>,
    pub(super) local: BTreeMap<JobId, JobDef>,
    /// xxh3 of each register's value, as published.
    pub(super) hashes: BTreeMap<Key, u64>,
    /// Run-now requests from the data dir nobody has claimed.
    pub(super) requests: BTreeMap<FireId, (JobId, UnixMillis)>,
    /// Which jobs run after which, among the starting jobs.
    pub(super) deps: crate::core::after::Dependencies,
}

/// Builds the starting catalog, from the data dir's catalog file if there is one, and
/// registers its jobs, and the handler jobs (`handlers`), with `planner`.
pub(super) fn start_catalog(
    config: &super::NodeConfig,
    now: UnixMillis,
    generation: u64,
    jobs: Vec<JobSpec>,
    handlers: &BTreeSet<JobId>,
    store: Option<&Store>,
    planner: &mut crate::core::planner::Planner,
) -> Result<CatalogStart, super::NodeError> {
    let mut catalog = Catalog::new(config.node_id.clone(), config.catalog());
    let mut hashes = BTreeMap::new();
    match store.map(Store::load_catalog) {
        None | Some(CatalogFile::Missing) => {}
        Some(CatalogFile::Loaded(registers)) => {
            let n = registers.len();
            for (key, r) in registers {
                let hash = xxh3_64(encode_register(&r).as_bytes());
                if let Observed::Newer(_) = catalog.observe(now, key.clone(), r) {
                    hashes.insert(key, hash);
                }
            }
            info!(registers = n, "catalog read from the data dir");
        }
        Some(CatalogFile::Damaged { why, moved_to }) => match moved_to {
            Some(to) => {
                error!(problem = %why, moved_to = %to.display(), "the catalog file in the data dir is damaged: moved aside; starting without it (peers hold the catalog)");
            }
            None => {
                error!(problem = %why, "the catalog file in the data dir is damaged and could not be moved aside; starting without it, and not writing it");
            }
        },
    }
    let (local, files): (Vec<JobSpec>, Vec<JobSpec>) =
        jobs.into_iter().partition(|j| handlers.contains(&j.name));
    catalog.set_local(local.iter().map(|j| j.name.clone()));
    let defs = files.iter().map(|s| (s.name.clone(), JobDef::from_spec(s)));
    let (own, _) = catalog.set_own_files(now, generation, defs)?;
    let mut applied = BTreeMap::new();
    let mut deps = crate::core::after::Dependencies::default();
    for r in catalog.resolved() {
        if let Some(p) = r.def.parents() {
            deps.set(&r.name, &p);
        }
        let spec = r.def.to_spec(&r.name).map_err(CatalogError::from)?;
        planner.add_catalog_job(now, spec, first_floor(&r), r.paused)?;
        applied.insert(
            r.name.clone(),
            Applied {
                digest: r.def.digest(),
                paused: r.paused,
            },
        );
    }
    let local_defs = local
        .iter()
        .map(|s| (s.name.clone(), JobDef::from_spec(s)))
        .collect();
    for j in local {
        planner.add_job(now, j)?;
    }
    let requests = catalog
        .unclaimed_requests()
        .map(|(id, job, at)| (id, (job.clone(), at)))
        .collect();
    Ok(CatalogStart {
        catalog,
        own,
        applied,
        local: local_defs,
        hashes,
        requests,
        deps,
    })
}
