//! Job dependencies (`after = ["extract"]`): parents, cycles, and the fire ids of child runs.
//!
//! A job with `after` has no schedule of its own ([`Schedule::After`]): it runs once for
//! each successful run of each job it names. "Each" is per parent fire id: a parent's
//! slot that succeeds (after any retries) yields one child run whose fire id is
//! [`child_fire_id`] of the parent's fire id and the child's name, the same on every node.
//! Two parents, or two slots of one parent, are two child runs; a parent slot that ran
//! twice (a partition) is still one child run, since both runs carry the same fire id.
//!
//! Within one jobs file every parent must be a job of that file, and the graph must have
//! no cycle; through the API every parent must be a job of the catalog, and a write that
//! would close a cycle is refused. Both name the cycle: `cycle a -> b -> a`, read as "a
//! runs after b, which runs after a".

use std::collections::{BTreeMap, BTreeSet};

use xxhash_rust::xxh3::xxh3_64;

use super::job::{JobError, JobSpec, validate_job_name};
use super::schedule::Schedule;
use super::types::{FireId, JobId};

/// Most parents one job may name.
pub const MAX_PARENTS: usize = 16;

/// How a dependent job's schedule text starts: `@after a,b` is the canonical form of
/// `after = ["a", "b"]` inside a definition (the catalog and gossip carry the schedule as
/// text). Users write the `after` key; the `schedule` key refuses this spelling.
pub const AFTER_PREFIX: &str = "@after";

/// The fire id of `child`'s run for the parent run with fire id `parent`:
/// `xxh3_64(child bytes ++ [0xfd] ++ parent fire id little-endian)`. A slot's fire id
/// uses the separator 0xff and a run-now request's 0xfe, so none of them hash the same
/// input. A chain `a -> b -> c` derives `c`'s from `b`'s.
pub fn child_fire_id(parent: FireId, child: &JobId) -> FireId {
    let mut bytes = Vec::with_capacity(child.as_str().len() + 9);
    bytes.extend_from_slice(child.as_str().as_bytes());
    bytes.push(0xfd);
    bytes.extend_from_slice(&parent.0.to_le_bytes());
    FireId(xxh3_64(&bytes))
}

/// The parents of an `after` list as written, checked (each a valid job name, at most
/// [`MAX_PARENTS`], not `name` itself), sorted and without repeats.
pub fn check_parents(name: &str, parents: &[String]) -> Result<Vec<JobId>, String> {
    if parents.is_empty() {
        return Err("is empty; name the jobs this one runs after".into());
    }
    if parents.len() > MAX_PARENTS {
        return Err(format!(
            "names {} jobs, more than {MAX_PARENTS}",
            parents.len()
        ));
    }
    let mut out = BTreeSet::new();
    for p in parents {
        validate_job_name(p).map_err(|m| format!("a parent's name {m}"))?;
        if p == name {
            return Err(format!("cycle {name} -> {name}"));
        }
        out.insert(JobId::new(p));
    }
    Ok(out.into_iter().collect())
}

/// The canonical schedule text of a job that runs after `parents` (see [`AFTER_PREFIX`]).
pub fn schedule_text(parents: &[JobId]) -> String {
    let names: Vec<&str> = parents.iter().map(JobId::as_str).collect();
    format!("{AFTER_PREFIX} {}", names.join(","))
}

/// Parses the text after [`AFTER_PREFIX`]: comma-separated job names.
pub(super) fn parse_text(rest: &str) -> Result<Vec<JobId>, String> {
    let names: Vec<String> = rest
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    check_parents("", &names)
}

/// The parents of `spec` (empty for a job with a schedule of its own).
pub fn parents(spec: &JobSpec) -> &[JobId] {
    match &spec.schedule {
        Schedule::After(p) => p,
        _ => &[],
    }
}

/// Words for a dependent job's schedule: `after extract, load`.
pub fn describe(parents: &[JobId]) -> String {
    let names: Vec<&str> = parents.iter().map(JobId::as_str).collect();
    format!("after {}", names.join(", "))
}

/// A cycle through `start` in the graph `parents_of`, as the path `start -> .. -> start`
/// following `after` edges, or `None`. The search visits each job once.
pub fn cycle_through<'a>(
    start: &JobId,
    parents_of: impl Fn(&JobId) -> Option<&'a [JobId]>,
) -> Option<Vec<JobId>> {
    // Depth-first from `start`, keeping the path, so the cycle found is a real path.
    let mut seen = BTreeSet::new();
    let mut path: Vec<(JobId, usize)> = vec![(start.clone(), 0)];
    seen.insert(start.clone());
    while let Some((node, i)) = path.last().cloned() {
        let ps = parents_of(&node).unwrap_or(&[]);
        let Some(next) = ps.get(i) else {
            path.pop();
            continue;
        };
        if let Some(top) = path.last_mut() {
            top.1 += 1;
        }
        if next == start {
            let mut cycle: Vec<JobId> = path.into_iter().map(|(n, _)| n).collect();
            cycle.push(start.clone());
            return Some(cycle);
        }
        if seen.insert(next.clone()) {
            path.push((next.clone(), 0));
        }
    }
    None
}

/// The message of a cycle: `cycle a -> b -> a`.
pub fn cycle_message(cycle: &[JobId]) -> String {
    let names: Vec<&str> = cycle.iter().map(JobId::as_str).collect();
    format!("cycle {}", names.join(" -> "))
}

/// Checks the `after` keys of one jobs file: every parent is a job of the file, and no
/// cycle. The first job (in file order) with a problem is named.
pub fn check_file(jobs: &[JobSpec]) -> Result<(), JobError> {
    let graph: BTreeMap<&JobId, &[JobId]> = jobs.iter().map(|j| (&j.name, parents(j))).collect();
    for j in jobs {
        for p in parents(j) {
            if !graph.contains_key(p) {
                return Err(JobError::Invalid {
                    job: j.name.to_string(),
                    key: "after",
                    message: format!(
                        "no job `{p}` in this jobs file (a job runs after jobs of its own file)"
                    ),
                });
            }
        }
    }
    for j in jobs.iter().filter(|j| !parents(j).is_empty()) {
        if let Some(cycle) = cycle_through(&j.name, |n| graph.get(n).copied()) {
            return Err(JobError::Invalid {
                job: j.name.to_string(),
                key: "after",
                message: cycle_message(&cycle),
            });
        }
    }
    Ok(())
}

/// Which jobs run after which: the children of each parent, kept in step with the job set.
#[derive(Clone, Debug, Default)]
pub struct Dependencies {
    parents: BTreeMap<JobId, Vec<JobId>>,
    children: BTreeMap<JobId, BTreeSet<JobId>>,
}

impl Dependencies {
    /// Records that `job` runs after `parents` (none: it has a schedule of its own).
    pub fn set(&mut self, job: &JobId, parents: &[JobId]) {
        self.remove(job);
        if parents.is_empty() {
            return;
        }
        for p in parents {
            self.children
                .entry(p.clone())
                .or_default()
                .insert(job.clone());
        }
        self.parents.insert(job.clone(), parents.to_vec());
    }

    /// Forgets `job` as a child (it left, or has a schedule now).
    pub fn remove(&mut self, job: &JobId) {
        for p in self.parents.remove(job).unwrap_or_default() {
            if let Some(c) = self.children.get_mut(&p) {
                c.remove(job);
                if c.is_empty() {
                    self.children.remove(&p);
                }
            }
        }
    }

    /// The jobs that run after `parent`, in name order.
    pub fn children(&self, parent: &JobId) -> impl Iterator<Item = &JobId> {
        self.children.get(parent).into_iter().flatten()
    }

    /// True if some job runs after `parent`.
    pub fn has_children(&self, parent: &JobId) -> bool {
        self.children.contains_key(parent)
    }

    /// Every job that runs after others, with its parents, in name order.
    pub fn parent_lists(&self) -> impl Iterator<Item = (&JobId, &[JobId])> {
        self.parents.iter().map(|(j, p)| (j, p.as_slice()))
    }

    /// Every job some job runs after, in name order.
    pub fn parent_names(&self) -> impl Iterator<Item = &JobId> {
        self.children.keys()
    }

    /// The parents of `job`.
    pub fn parents(&self, job: &JobId) -> &[JobId] {
        self.parents.get(job).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::job::parse_jobs_toml;

    fn err(text: &str) -> String {
        parse_jobs_toml(text).unwrap_err().to_string()
    }

    fn job(name: &str, after: &str) -> String {
        format!("[[jobs]]\nname = \"{name}\"\nafter = [{after}]\ncommand = \"x\"\n")
    }

    const EXTRACT: &str =
        "[[jobs]]\nname = \"extract\"\nschedule = \"@every 1m\"\ncommand = \"x\"\n";

    #[test]
    fn an_after_job_has_no_slots_and_names_its_parents() {
        let jobs = parse_jobs_toml(&format!("{EXTRACT}{}", job("load", "\"extract\""))).unwrap();
        let load = &jobs[1];
        assert_eq!(parents(load), &[JobId::new("extract")]);
        assert_eq!(&*load.schedule_text, "@after extract");
        assert_eq!(load.schedule.next_after(crate::UnixMillis(0)), None);
        assert!(!load.schedule.is_slot(crate::UnixMillis(60_000)));
        assert_eq!(describe(parents(load)), "after extract");
    }

    #[test]
    fn cycles_are_refused_with_the_cycle_named() {
        let e = err(&job("a", "\"a\""));
        assert_eq!(e, "job `a`: `after`: cycle a -> a");
        let e = err(&format!("{}{}", job("a", "\"b\""), job("b", "\"a\"")));
        assert_eq!(e, "job `a`: `after`: cycle a -> b -> a");
        let e = err(&format!(
            "{EXTRACT}{}{}{}",
            job("a", "\"extract\", \"c\""),
            job("b", "\"a\""),
            job("c", "\"b\"")
        ));
        assert_eq!(e, "job `a`: `after`: cycle a -> c -> b -> a");
        // A diamond is no cycle.
        parse_jobs_toml(&format!(
            "{EXTRACT}{}{}{}",
            job("a", "\"extract\""),
            job("b", "\"extract\""),
            job("c", "\"a\", \"b\"")
        ))
        .unwrap();
    }

    #[test]
    fn bad_after_keys_name_the_job_and_the_key() {
        let e = err(&job("load", "\"extrakt\""));
        assert_eq!(
            e,
            "job `load`: `after`: no job `extrakt` in this jobs file (a job runs after jobs of its own file)"
        );
        let e = err(&job("load", ""));
        assert!(e.starts_with("job `load`: `after`: is empty"), "{e}");
        let e = err(&job("load", "\"a b\""));
        assert!(e.starts_with("job `load`: `after`: a parent's name"), "{e}");
        let e = err(&format!(
            "[[jobs]]\nname = \"load\"\nschedule = \"@every 1m\"\nafter = [\"extract\"]\ncommand = \"x\"\n{EXTRACT}"
        ));
        assert!(
            e.starts_with("job `load`: `after`: a job with `after`"),
            "{e}"
        );
        let e = err("[[jobs]]\nname = \"load\"\nschedule = \"@after extract\"\ncommand = \"x\"\n");
        assert!(
            e.starts_with("job `load`: `schedule`:") && e.contains("after = ["),
            "{e}"
        );
        let many: Vec<String> = (0..=MAX_PARENTS).map(|i| format!("\"p{i}\"")).collect();
        let e = err(&job("load", &many.join(",")));
        assert!(e.contains("more than 16"), "{e}");
    }

    #[test]
    fn child_fire_ids_are_stable_and_distinct_from_slot_ids() {
        let parent = FireId::of(&JobId::new("extract"), crate::UnixMillis(60_000));
        let a = child_fire_id(parent, &JobId::new("load"));
        assert_eq!(a, child_fire_id(parent, &JobId::new("load")));
        assert_ne!(a, child_fire_id(parent, &JobId::new("report")));
        assert_ne!(a, child_fire_id(FireId(parent.0 + 1), &JobId::new("load")));
        // Golden: every node and every later version derives the same id.
        assert_eq!(
            child_fire_id(FireId(0x0123_4567_89ab_cdef), &JobId::new("load")).to_string(),
            "ebb55ba2f587f82e"
        );
    }

    #[test]
    fn the_index_follows_sets_and_removals() {
        let mut d = Dependencies::default();
        let (e, l, r) = (
            JobId::new("extract"),
            JobId::new("load"),
            JobId::new("report"),
        );
        d.set(&l, std::slice::from_ref(&e));
        d.set(&r, &[e.clone(), l.clone()]);
        assert_eq!(d.children(&e).collect::<Vec<_>>(), vec![&l, &r]);
        d.set(&r, &[]);
        assert_eq!(d.children(&e).collect::<Vec<_>>(), vec![&l]);
        assert!(!d.has_children(&l));
        d.remove(&l);
        assert!(!d.has_children(&e));
    }
}
