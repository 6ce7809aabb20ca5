//! Unplaceable jobs: jobs whose constraints no live member satisfies. Nobody runs them;
//! this keeps track of which they are and of their slots that come due meanwhile, so that
//! they are reported (issue 18) rather than silently skipped.
//!
//! Every node sees the same set (ownership is a pure function of the view). One node
//! reports each job's slots: the one that would own it without its constraints (its
//! *stand-in*), so a slot is counted once in the cluster. When a member that satisfies
//! the job comes back, it owns the job again and treats the slots it finds late as
//! misfires, per the job's misfire policy and catch-up window, as after any takeover.

use std::collections::BTreeMap;

use super::job::JobSpec;
use super::placement::Constraints;
use super::planner::MAX_COUNTED_MISSES;
use super::schedule::Schedule;
use super::types::{JobId, NodeId, UnixMillis};

/// The unplaceable jobs in this node's view.
#[derive(Debug, Default)]
pub struct Unplaceable {
    jobs: BTreeMap<JobId, Entry>,
}

#[derive(Debug)]
struct Entry {
    constraints: Constraints,
    schedule: Schedule,
    /// This node is the job's stand-in: it reports its slots.
    reporter: bool,
    /// The next slot to report, when this node reports them.
    next: Option<UnixMillis>,
}

/// A change of the set, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// No live member satisfies `job`'s constraints any more.
    Unplaceable {
        /// The job.
        job: JobId,
        /// Its constraints.
        constraints: Constraints,
        /// This node reports its slots.
        reporter: bool,
    },
    /// A live member satisfies `job`'s constraints again (or the job is gone).
    Placeable {
        /// The job.
        job: JobId,
        /// This node reported its slots.
        reporter: bool,
    },
}

/// Slots of an unplaceable job that came due: `count` slots from `first` to `last`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueSlots {
    /// The job.
    pub job: JobId,
    /// The first slot.
    pub first: UnixMillis,
    /// The last slot.
    pub last: UnixMillis,
    /// How many (counting stops at [`MAX_COUNTED_MISSES`]).
    pub count: u64,
}

impl Unplaceable {
    /// An empty set.
    pub fn new() -> Unplaceable {
        Unplaceable::default()
    }

    /// Takes the set as the planner sees it at `now` (its `unplaceable()`: each job with
    /// its stand-in) and returns what changed. Slots at or before `now` are not reported
    /// for a job that just became unplaceable: they were its owner's.
    pub fn update(
        &mut self,
        now: UnixMillis,
        me: &NodeId,
        current: &[(&JobSpec, Option<&NodeId>)],
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut next: BTreeMap<JobId, Entry> = BTreeMap::new();
        for (spec, stand_in) in current {
            let reporter = *stand_in == Some(me);
            let entry = match self.jobs.remove(&spec.name) {
                Some(mut e) => {
                    if reporter && !e.reporter {
                        e.next = spec.schedule.next_after(now);
                    }
                    e.reporter = reporter;
                    e.constraints = spec.constraints.clone();
                    e.schedule = spec.schedule.clone();
                    e
                }
                None => {
                    changes.push(Change::Unplaceable {
                        job: spec.name.clone(),
                        constraints: spec.constraints.clone(),
                        reporter,
                    });
                    Entry {
                        constraints: spec.constraints.clone(),
                        schedule: spec.schedule.clone(),
                        reporter,
                        next: reporter.then(|| spec.schedule.next_after(now)).flatten(),
                    }
                }
            };
            next.insert(spec.name.clone(), entry);
        }
        for (job, e) in std::mem::replace(&mut self.jobs, next) {
            changes.push(Change::Placeable {
                job,
                reporter: e.reporter,
            });
        }
        changes
    }

    /// The slots of the jobs this node reports that came due by `now`.
    pub fn poll(&mut self, now: UnixMillis) -> Vec<DueSlots> {
        let mut out = Vec::new();
        for (job, e) in &mut self.jobs {
            let mut due: Option<DueSlots> = None;
            while let Some(s) = e.next.filter(|&s| s <= now) {
                let d = due.get_or_insert(DueSlots {
                    job: job.clone(),
                    first: s,
                    last: s,
                    count: 0,
                });
                d.last = s;
                d.count += 1;
                e.next = if d.count >= MAX_COUNTED_MISSES {
                    // Down for ages: jump to now without counting the rest.
                    e.schedule.next_after(now)
                } else {
                    e.schedule.next_after(s)
                };
            }
            out.extend(due);
        }
        out
    }

    /// When [`Unplaceable::poll`] next has slots to report, if ever.
    pub fn next_deadline(&self) -> Option<UnixMillis> {
        self.jobs.values().filter_map(|e| e.next).min()
    }

    /// How many jobs are unplaceable.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// True when every job is placeable.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// True when `job` is unplaceable.
    pub fn contains(&self, job: &JobId) -> bool {
        self.jobs.contains_key(job)
    }

    /// The unplaceable jobs and their constraints, in name order.
    pub fn jobs(&self) -> impl Iterator<Item = (&JobId, &Constraints)> {
        self.jobs.iter().map(|(j, e)| (j, &e.constraints))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::placement::{Placement, Tags};
    use crate::core::planner::{Planner, PlannerConfig, View};

    fn constrained(name: &str, region: &str) -> JobSpec {
        let mut spec = JobSpec::parse(name, "@every 1s").unwrap();
        spec.constraints = Constraints::new(
            [("region".to_string(), region.to_string())]
                .into_iter()
                .collect(),
        )
        .unwrap();
        spec
    }

    fn view(members: &[(&str, Option<&str>)]) -> View {
        let mut v = View::of(members.iter().map(|(n, _)| NodeId::new(n)));
        for (n, region) in members {
            if let Some(r) = region {
                let tags = Tags::new(
                    [("region".to_string(), r.to_string())]
                        .into_iter()
                        .collect(),
                )
                .unwrap();
                v.placements.insert(
                    NodeId::new(n),
                    Placement {
                        weight: 1,
                        tags: Arc::new(tags),
                    },
                );
            }
        }
        v
    }

    #[test]
    fn a_job_whose_tagged_node_left_is_reported_by_its_stand_in_and_runs_nowhere() {
        let t0 = UnixMillis(10_000);
        let me = NodeId::new("a");
        let mut p = Planner::new(me.clone(), PlannerConfig::default(), t0);
        p.add_job(t0, constrained("eu-only", "eu")).unwrap();
        p.set_view(t0, view(&[("a", None), ("b", Some("eu"))]));
        let mut u = Unplaceable::new();
        assert!(u.update(t0, &me, &p.unplaceable()).is_empty());
        assert_eq!(p.owner_of(&JobId::new("eu-only")).unwrap().as_str(), "b");

        // b dies: nobody satisfies the job; a, the only member, is its stand-in.
        let t1 = UnixMillis(12_500);
        p.set_view(t1, view(&[("a", None)]));
        assert_eq!(p.owner_of(&JobId::new("eu-only")), None);
        let changes = u.update(t1, &me, &p.unplaceable());
        assert_eq!(
            changes,
            [Change::Unplaceable {
                job: JobId::new("eu-only"),
                constraints: constrained("x", "eu").constraints,
                reporter: true,
            }]
        );
        assert_eq!(u.next_deadline(), Some(UnixMillis(13_000)));
        p.poll(UnixMillis(16_000));
        assert!(
            p.drain()
                .all(|a| !matches!(a, crate::core::planner::Action::Fire { .. })),
            "an unplaceable job runs nowhere"
        );
        let due = u.poll(UnixMillis(16_000));
        assert_eq!(
            due,
            [DueSlots {
                job: JobId::new("eu-only"),
                first: UnixMillis(13_000),
                last: UnixMillis(16_000),
                count: 4,
            }]
        );
        assert!(u.poll(UnixMillis(16_500)).is_empty());

        // An eu node joins: the job is placeable again.
        p.set_view(UnixMillis(17_000), view(&[("a", None), ("c", Some("eu"))]));
        let changes = u.update(UnixMillis(17_000), &me, &p.unplaceable());
        assert_eq!(
            changes,
            [Change::Placeable {
                job: JobId::new("eu-only"),
                reporter: true,
            }]
        );
        assert!(u.is_empty() && u.next_deadline().is_none());
    }

    #[test]
    fn only_the_stand_in_reports_slots() {
        let t0 = UnixMillis(0);
        let spec = constrained("gpu-job", "mars");
        let stand_in = NodeId::new("b");
        let mut u = Unplaceable::new();
        let changes = u.update(t0, &NodeId::new("a"), &[(&spec, Some(&stand_in))]);
        assert!(matches!(
            &changes[..],
            [Change::Unplaceable {
                reporter: false,
                ..
            }]
        ));
        assert_eq!(u.next_deadline(), None);
        assert!(u.poll(UnixMillis(60_000)).is_empty());
        assert!(u.contains(&JobId::new("gpu-job")));
        // The stand-in left; this node takes over the reporting from now on.
        let me = NodeId::new("a");
        assert!(
            u.update(UnixMillis(60_000), &me, &[(&spec, Some(&me))])
                .is_empty()
        );
        assert_eq!(u.next_deadline(), Some(UnixMillis(61_000)));
    }
}
