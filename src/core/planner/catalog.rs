//! The job set: jobs added, updated and removed (from files or the catalog), added with a
//! floor, paused and resumed.
//!
//! Definitions change in place with [`Planner::update_job`], which keeps what the planner
//! knows of the job's past (its cursor, the records it saw, its epochs), so an update
//! never makes one slot run twice. A *floor* ([`Planner::skip_until`]) keeps slots from
//! before the definition that runs now from firing: a job created at 10:00:00.5 does not
//! run its 10:00:00 slot, and a resumed job does not catch up what came due while it was
//! paused.

use super::job::{Job, Mine};
use super::{Planner, PlannerError};
use crate::core::job::JobSpec;
use crate::core::schedule::Schedule;
use crate::core::types::{JobId, UnixMillis};

impl Planner {
    /// Packs the job index (a B-tree rebuilt from its sorted entries has full nodes) and
    /// gives back the room the job slots grew into beyond what they hold. Nothing the
    /// planner decides changes; the node does it once its catalog settles after growing
    /// (see `node::compact`).
    pub fn compact(&mut self) {
        self.index = std::mem::take(&mut self.index).into_iter().collect();
        self.jobs.shrink_to_fit();
        self.owners.shrink_to_fit();
    }

    /// Registers a catalog job at `now`: [`Planner::add_job`], then slots at or before
    /// `floor` never fire ([`Planner::skip_until`]), and a paused job fires nothing until
    /// [`Planner::set_paused`].
    pub fn add_catalog_job(
        &mut self,
        now: UnixMillis,
        spec: JobSpec,
        floor: UnixMillis,
        paused: bool,
    ) -> Result<(), PlannerError> {
        let name = spec.name.clone();
        self.add_job(now, spec)?;
        if floor > UnixMillis::MIN {
            self.skip_until(&name, floor);
        }
        if paused {
            self.set_paused(now, &name, true, UnixMillis::MIN);
        }
        Ok(())
    }

    /// Pauses or resumes registered job `name` at `now`. A paused job fires nothing; on
    /// resume, slots at or before `floor` never fire. Returns false if the job is not
    /// registered.
    pub fn set_paused(
        &mut self,
        _now: UnixMillis,
        name: &JobId,
        paused: bool,
        floor: UnixMillis,
    ) -> bool {
        let Some(&idx) = self.index.get(name) else {
            return false;
        };
        let Some(j) = self.jobs[idx].as_mut() else {
            return false;
        };
        if j.paused == paused {
            return true;
        }
        j.paused = paused;
        if paused {
            j.break_range();
        } else {
            j.floor = j.floor.max(floor);
            j.update_cursor();
        }
        let mine = j.mine();
        self.reschedule(idx, mine);
        true
    }

    /// True if registered job `name` is paused.
    pub fn is_paused(&self, name: &JobId) -> bool {
        self.index
            .get(name)
            .and_then(|&i| self.jobs[i].as_ref())
            .is_some_and(|j| j.paused)
    }

    /// The ownership epoch (fencing token) a run of `name` started here now would carry:
    /// the current stretch's, or one above every epoch seen. For runs outside the
    /// schedule (run-now requests); `None` if the job is not registered.
    pub fn epoch_for_extra_run(&self, name: &JobId) -> Option<u64> {
        let j = self.jobs[*self.index.get(name)?].as_ref()?;
        Some(match (j.tenure(), j.mine()) {
            (Some(t), Mine::From(_)) => t.epoch,
            _ => j.seen.epoch_seen.saturating_add(1),
        })
    }

    /// Room for `additional` more jobs without reallocating.
    pub fn reserve(&mut self, additional: usize) {
        self.jobs.reserve_exact(additional);
        self.owners.reserve(additional);
    }

    /// Registers a job at `now`. Slots at or before `now` (or a known record) never fire.
    pub fn add_job(&mut self, now: UnixMillis, mut spec: JobSpec) -> Result<(), PlannerError> {
        if self.index.contains_key(&spec.name) {
            return Err(PlannerError::DuplicateJob(spec.name));
        }
        self.share_schedule(&mut spec);
        let idx = self.free.pop().unwrap_or(self.jobs.len());
        let seen = self.stray_records.remove(&spec.name).unwrap_or_default();
        self.owners
            .set_job_constrained(idx, &spec.name, &spec.constraints);
        self.index.insert(spec.name.clone(), idx);
        let lookback = self.config.startup_delay + self.config.handoff_delay;
        let job = Job::new(spec, now.saturating_sub(lookback), seen);
        if idx == self.jobs.len() {
            self.jobs.push(Some(Box::new(job)));
        } else {
            self.jobs[idx] = Some(Box::new(job));
        }
        if !self.leaving && self.is_mine(idx) {
            // A new job has no previous owner to hand over from.
            self.set_mine(idx, Mine::From(now));
        }
        Ok(())
    }

    /// Jobs with the same cron text, timezone and DST rule share one parsed schedule (a
    /// parsed cron expression is several hundred bytes), and one copy of the text.
    fn share_schedule(&mut self, spec: &mut JobSpec) {
        if let Schedule::Cron(_) = spec.schedule {
            let key = (spec.schedule_text.clone(), spec.timezone.name(), spec.dst);
            match self.schedules.get_key_value(&key) {
                Some((shared_key, shared)) => {
                    spec.schedule = shared.clone();
                    spec.schedule_text = shared_key.0.clone();
                }
                None => {
                    self.schedules.insert(key, spec.schedule.clone());
                }
            }
        }
    }

    /// Unregisters a job; returns whether it was registered.
    ///
    /// What its records showed is kept (as for a job never registered here), so a job
    /// added back never reruns a slot it ran before. The slots this node ran count as
    /// another node's then, so that they do not pull the cursor back as an earlier
    /// generation's records would: the slots due while it was away are not caught up.
    pub fn remove_job(&mut self, name: &JobId) -> bool {
        let Some(idx) = self.index.remove(name) else {
            return false;
        };
        self.set_mine(idx, Mine::No);
        self.owners.clear_job(idx);
        self.abandoned.remove(name);
        if let Some(j) = self.jobs[idx].take() {
            let mut seen = j.seen;
            if let Some(own) = seen.take_own() {
                seen.record(own, seen.epoch_seen, Some(self.me_key), None);
            }
            self.stray_records.insert(name.clone(), seen);
        }
        self.free.push(idx);
        true
    }

    /// Replaces the definition of registered job `spec.name` (schedule, policies,
    /// command), keeping what this node knows of it: its records, its cursor, whether it
    /// owns it and under which epoch. So no slot runs twice across the change, and a run
    /// in progress counts for its overlap policy. A new schedule or timezone applies to
    /// slots after `now` only: the new schedule's slots before the change are not run
    /// (nor reported missed). Returns whether the job was registered.
    pub fn update_job(&mut self, now: UnixMillis, mut spec: JobSpec) -> bool {
        let Some(&idx) = self.index.get(&spec.name) else {
            return false;
        };
        let name = spec.name.clone();
        self.share_schedule(&mut spec);
        let Some(j) = self.jobs[idx].as_mut() else {
            return false;
        };
        let rescheduled = j.spec.schedule_text != spec.schedule_text
            || j.spec.timezone != spec.timezone
            || j.spec.dst != spec.dst;
        let placed = j.spec.constraints != spec.constraints;
        j.spec = spec;
        if rescheduled {
            j.forget_next_slot();
            // The stretch fired so far was of the old schedule's slots.
            j.break_range();
            self.skip_until(&name, now);
        }
        if placed {
            // New constraints move the job like a view change would.
            let prev = self.owners.owner_of(idx).cloned();
            let constraints = self.jobs[idx].as_ref().map(|j| j.spec.constraints.clone());
            if self
                .owners
                .set_job_constrained(idx, &name, &constraints.unwrap_or_default())
            {
                self.ownership_changes += 1;
                if !self.leaving && self.has_quorum() {
                    self.owner_changed(now, idx, prev, false);
                }
            }
        }
        true
    }

    /// Slots of `name` at or before `at` will not fire here, nor count as missed: a job
    /// added, or given a new schedule, while the node runs starts after the change.
    /// Returns whether the job is registered.
    pub fn skip_until(&mut self, name: &JobId, at: UnixMillis) -> bool {
        let Some(&idx) = self.index.get(name) else {
            return false;
        };
        let Some(j) = self.jobs[idx].as_mut() else {
            return false;
        };
        j.floor = j.floor.max(at);
        j.update_cursor();
        let mine = j.mine();
        self.reschedule(idx, mine);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::job::{ExecSpec, Misfire, Overlap};
    use crate::core::planner::{Action, PlannerConfig, View};
    use crate::core::schedule::Schedule;
    use crate::core::types::NodeId;

    fn spec(name: &str, schedule: &str) -> JobSpec {
        JobSpec {
            name: JobId::new(name),
            schedule: Schedule::parse(schedule, chrono_tz::Tz::UTC).unwrap(),
            schedule_text: schedule.into(),
            timezone: chrono_tz::Tz::UTC,
            misfire: Misfire::All,
            catch_up_window: Duration::from_secs(60),
            overlap: Overlap::Allow,
            dst: Default::default(),
            exec: ExecSpec::default(),
            constraints: Default::default(),
        }
    }

    fn planner() -> Planner {
        let mut p = Planner::new(
            NodeId::new("a"),
            PlannerConfig {
                startup_delay: Duration::ZERO,
                ..PlannerConfig::default()
            },
            UnixMillis(0),
        );
        p.set_view(UnixMillis(0), View::of([NodeId::new("a")]));
        p
    }

    /// Polls every 100 ms from `from` to `to`; returns the slots fired, in order.
    fn run(p: &mut Planner, from: i64, to: i64) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        let mut t = from;
        while t <= to {
            p.poll(UnixMillis(t));
            while p.next_deadline().is_some_and(|d| d.0 <= t) {
                p.poll(UnixMillis(t));
            }
            out.extend(p.drain().filter_map(|a| match a {
                Action::Fire { job, slot, .. } => Some((job.to_string(), slot.0)),
                _ => None,
            }));
            t += 100;
        }
        out
    }

    fn slots(fired: &[(String, i64)]) -> Vec<i64> {
        fired.iter().map(|f| f.1).collect()
    }

    #[test]
    fn a_job_created_at_a_time_does_not_run_the_slots_before_it() {
        let mut p = planner();
        // Created at 10.5 s, learned here at 10.6 s: the 9 s and 10 s slots (inside the
        // registration lookback) are before it.
        let (now, floor) = (UnixMillis(10_600), UnixMillis(10_500));
        p.add_catalog_job(now, spec("j", "@every 1s"), floor, false)
            .unwrap();
        assert_eq!(
            slots(&run(&mut p, 10_600, 13_000)),
            [11_000, 12_000, 13_000]
        );
    }

    #[test]
    fn an_update_keeps_the_cursor_so_no_slot_runs_twice() {
        let mut p = planner();
        p.add_catalog_job(UnixMillis(0), spec("j", "@every 1s"), UnixMillis(0), false)
            .unwrap();
        assert_eq!(slots(&run(&mut p, 0, 4_000)), [1_000, 2_000, 3_000, 4_000]);
        // Every 2 s from 4.1 s on: slot 4 s ran under the old definition.
        assert!(p.update_job(UnixMillis(4_100), spec("j", "@every 2s")));
        assert_eq!(slots(&run(&mut p, 4_100, 9_000)), [6_000, 8_000]);
    }

    #[test]
    fn a_paused_job_fires_nothing_and_resumes_after_its_floor() {
        let mut p = planner();
        let j = JobId::new("j");
        p.add_catalog_job(UnixMillis(0), spec("j", "@every 1s"), UnixMillis(0), false)
            .unwrap();
        assert_eq!(slots(&run(&mut p, 0, 2_000)), [1_000, 2_000]);
        assert!(p.set_paused(UnixMillis(2_100), &j, true, UnixMillis::MIN));
        assert!(p.is_paused(&j));
        assert_eq!(run(&mut p, 2_100, 6_000), []);
        assert_eq!(p.next_deadline(), None);
        // Resumed at 6.05 s: nothing of the pause is caught up.
        assert!(p.set_paused(UnixMillis(6_100), &j, false, UnixMillis(6_050)));
        assert_eq!(slots(&run(&mut p, 6_100, 8_000)), [7_000, 8_000]);
        // Added paused: nothing until resumed.
        p.add_catalog_job(
            UnixMillis(8_000),
            spec("k", "@every 1s"),
            UnixMillis(0),
            true,
        )
        .unwrap();
        let fired = run(&mut p, 8_100, 10_000);
        assert!(fired.iter().all(|f| f.0 == "j"), "{fired:?}");
        assert!(!p.set_paused(UnixMillis(0), &JobId::new("nope"), true, UnixMillis::MIN));
    }
}
