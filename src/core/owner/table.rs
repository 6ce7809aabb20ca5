//! The owners of many jobs, kept up to date incrementally as members join, leave, or
//! change their weight or tags.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::{cmp_weighted, job_key, node_key, score};
use crate::core::placement::{Constraints, Placement};
use crate::core::types::{JobId, NodeId};

/// Owners of many jobs, kept up to date incrementally as members join and leave.
///
/// A join scores only the new member against every job (O(jobs)); a leave recomputes only
/// the departed member's jobs (O(its jobs x members) plus a scan); a change of a member's
/// weight or tags recomputes its own jobs and scores it against the others. Member keys
/// are kept in dense arrays ordered by weight, so for a job without constraints the hot
/// loop is a multiply and a compare per member: within a run of equal weights the highest
/// raw score is the best (see the module docs of `owner`), and only the champions of the
/// runs are compared by weighted key.
#[derive(Debug, Clone)]
pub struct OwnerTable {
    /// Every member and its placement: what the dense arrays are built from.
    members: BTreeMap<NodeId, Placement>,
    /// Member ids, dense, ordered by (weight, id).
    ids: Vec<NodeId>,
    /// `node_key` of each member, parallel to `ids`.
    keys: Vec<u64>,
    /// The weight of each member, parallel to `ids`.
    weights: Vec<u32>,
    /// Runs of members with equal weight in the dense arrays: `(start, end)`.
    classes: Vec<(usize, usize)>,
    /// Per job slot: its key and, when it has one, (owner slot, score).
    jobs: Vec<JobOwner>,
    /// Distinct constraints of the jobs; entry 0 is "none".
    csets: Vec<ConstraintSet>,
    /// Where each constraint set is in `csets`.
    cset_index: BTreeMap<Constraints, u32>,
}

#[derive(Debug, Clone)]
struct ConstraintSet {
    constraints: Constraints,
    /// Job slots using it (it is kept when it drops to 0, to be reused).
    jobs: usize,
    /// Per member slot: whether its tags satisfy the constraints.
    eligible: Vec<bool>,
}

/// One job slot. 24 bytes, since every node keeps one per catalog job (issue 15, memory
/// per entry): whether the slot is set is folded into `cset` (see [`JobOwner::active`]).
#[derive(Debug, Clone, Copy)]
struct JobOwner {
    key: u64,
    score: u64,
    /// `NONE` when there is no owner (no eligible member, or a cleared job slot).
    owner: u32,
    /// Index into `csets` (0: no constraints); `CLEARED_CSET` for a cleared slot.
    cset: u32,
}

const NONE: u32 = u32::MAX;

/// The `cset` of a cleared job slot, which never gets an owner. `csets` never grows this
/// large: it holds one entry per distinct set of constraints.
const CLEARED_CSET: u32 = u32::MAX;

const CLEARED: JobOwner = JobOwner {
    key: 0,
    score: 0,
    owner: NONE,
    cset: CLEARED_CSET,
};

impl JobOwner {
    /// False for a cleared slot, which never gets an owner.
    fn active(&self) -> bool {
        self.cset != CLEARED_CSET
    }

    /// Set, and with constraints.
    fn constrained(&self) -> bool {
        self.active() && self.cset != 0
    }
}

impl Default for OwnerTable {
    fn default() -> Self {
        OwnerTable::new()
    }
}

impl OwnerTable {
    /// An empty table.
    pub fn new() -> Self {
        OwnerTable {
            members: BTreeMap::new(),
            ids: Vec::new(),
            keys: Vec::new(),
            weights: Vec::new(),
            classes: Vec::new(),
            jobs: Vec::new(),
            csets: vec![ConstraintSet {
                constraints: Constraints::default(),
                jobs: 0,
                eligible: Vec::new(),
            }],
            cset_index: BTreeMap::new(),
        }
    }

    /// Number of members.
    pub fn member_count(&self) -> usize {
        self.ids.len()
    }

    /// Room for `additional` more job slots without reallocating (and no more: every node
    /// keeps a slot per catalog job, issue 15).
    pub fn reserve(&mut self, additional: usize) {
        self.jobs.reserve_exact(additional);
    }

    /// Gives back the room the job slots grew into beyond what they hold (up to as many
    /// again, as jobs were added one by one): for when the set of jobs has stopped growing
    /// (`Planner::compact`), not after every add.
    pub fn shrink_to_fit(&mut self) {
        self.jobs.shrink_to_fit();
    }

    /// Sets the job in slot `idx` (growing the table as needed), without constraints, and
    /// computes its owner.
    pub fn set_job(&mut self, idx: usize, job: &JobId) {
        self.set_job_constrained(idx, job, &Constraints::default());
    }

    /// Sets the job in slot `idx` with its constraints and computes its owner; returns
    /// whether the owner changed (a job replaced in place with new constraints).
    pub fn set_job_constrained(
        &mut self,
        idx: usize,
        job: &JobId,
        constraints: &Constraints,
    ) -> bool {
        if idx >= self.jobs.len() {
            self.jobs.resize(idx + 1, CLEARED);
        }
        let before = self.jobs[idx].owner;
        self.clear_job(idx);
        let cset = self.intern(constraints);
        let key = job_key(job.as_str());
        let mut j = JobOwner {
            key,
            score: 0,
            owner: NONE,
            cset,
        };
        (j.owner, j.score) = self.best(&j, NONE);
        self.jobs[idx] = j;
        before != j.owner
    }

    /// The index of `constraints` in `csets`, added if new.
    fn intern(&mut self, constraints: &Constraints) -> u32 {
        if constraints.is_empty() {
            return 0;
        }
        let idx = match self.cset_index.get(constraints) {
            Some(&i) => i,
            None => {
                let i = self.csets.len() as u32;
                let eligible = self.eligibility(constraints);
                self.csets.push(ConstraintSet {
                    constraints: constraints.clone(),
                    jobs: 0,
                    eligible,
                });
                self.cset_index.insert(constraints.clone(), i);
                i
            }
        };
        self.csets[idx as usize].jobs += 1;
        idx
    }

    fn eligibility(&self, constraints: &Constraints) -> Vec<bool> {
        self.ids
            .iter()
            .map(|id| {
                self.members
                    .get(id)
                    .is_some_and(|p| p.satisfies(constraints))
            })
            .collect()
    }

    /// Clears job slot `idx`.
    pub fn clear_job(&mut self, idx: usize) {
        if let Some(j) = self.jobs.get_mut(idx) {
            if j.constrained() {
                self.csets[j.cset as usize].jobs -= 1;
            }
            *j = CLEARED;
        }
    }

    /// The owner of job slot `idx`, if it has one.
    pub fn owner_of(&self, idx: usize) -> Option<&NodeId> {
        let j = self.jobs.get(idx)?;
        self.ids.get(j.owner as usize)
    }

    /// True when job slot `idx` is set and has constraints.
    pub fn is_constrained(&self, idx: usize) -> bool {
        self.jobs.get(idx).is_some_and(JobOwner::constrained)
    }

    /// The member that would own job slot `idx` if its owner were gone.
    pub fn runner_up(&self, idx: usize) -> Option<&NodeId> {
        let j = self.jobs.get(idx)?;
        if !j.active() {
            return None;
        }
        self.ids.get(self.best(j, j.owner).0 as usize)
    }

    /// The member that would own job slot `idx` if it had no constraints: the node that
    /// reports it while no member satisfies them.
    pub fn stand_in(&self, idx: usize) -> Option<&NodeId> {
        let j = self.jobs.get(idx)?;
        if !j.active() {
            return None;
        }
        let free = JobOwner { cset: 0, ..*j };
        self.ids.get(self.best(&free, NONE).0 as usize)
    }

    /// A member's placement, if it is a member.
    pub fn placement(&self, node: &NodeId) -> Option<&Placement> {
        self.members.get(node)
    }

    /// True if member slot `a` with `score_a` beats `b` with `score_b` for a job: higher
    /// weighted key, then raw score, then the greater node id.
    fn beats(&self, a: u32, score_a: u64, b: u32, score_b: u64) -> bool {
        if b == NONE {
            return true;
        }
        let (wa, wb) = (self.weights[a as usize], self.weights[b as usize]);
        match cmp_weighted(score_a, wa, score_b, wb) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => self.ids[a as usize] > self.ids[b as usize],
        }
    }

    /// The best member for job `j`, other than member slot `exclude`, and its score.
    fn best(&self, j: &JobOwner, exclude: u32) -> (u32, u64) {
        if j.cset == 0 && exclude == NONE {
            let mut best = (NONE, 0);
            for &(start, end) in &self.classes {
                let (c, s) = self.champion(j.key, start, end);
                if self.beats(c, s, best.0, best.1) {
                    best = (c, s);
                }
            }
            return best;
        }
        let eligible = (j.cset != 0).then(|| &self.csets[j.cset as usize].eligible);
        let mut best = (NONE, 0);
        for (i, &k) in self.keys.iter().enumerate() {
            let i32 = i as u32;
            if i32 == exclude || eligible.is_some_and(|e| !e[i]) {
                continue;
            }
            let s = score(j.key, k);
            if self.beats(i32, s, best.0, best.1) {
                best = (i32, s);
            }
        }
        best
    }

    /// The member with the highest raw score for a job key among slots `start..end` (a run
    /// of equal weights, never empty), and its score.
    #[inline]
    fn champion(&self, key: u64, start: usize, end: usize) -> (u32, u64) {
        let keys = &self.keys[start..end];
        let (mut best, mut best_s, mut tie) = (0usize, score(key, keys[0]), false);
        for (i, &k) in keys.iter().enumerate().skip(1) {
            let s = score(key, k);
            if s > best_s {
                (best, best_s, tie) = (i, s, false);
            } else if s == best_s {
                tie = true;
            }
        }
        if tie {
            // Equal 64-bit scores: astronomically rare, resolved by id off the hot path.
            for (i, &k) in keys.iter().enumerate() {
                if score(key, k) == best_s && self.ids[start + i] > self.ids[start + best] {
                    best = i;
                }
            }
        }
        ((start + best) as u32, best_s)
    }

    /// Rebuilds the dense arrays from `members`; returns where each old member slot went
    /// (`NONE` for a member that is gone).
    fn rebuild(&mut self) -> Vec<u32> {
        let old = std::mem::take(&mut self.ids);
        let mut order: Vec<(&NodeId, &Placement)> = self.members.iter().collect();
        // Stable: ids stay in order inside a weight.
        order.sort_by_key(|(_, p)| p.weight);
        self.ids = order.iter().map(|(id, _)| (*id).clone()).collect();
        self.keys = self.ids.iter().map(|id| node_key(id.as_str())).collect();
        self.weights = order.iter().map(|(_, p)| p.weight).collect();
        self.classes.clear();
        let mut start = 0;
        for i in 1..=self.weights.len() {
            if i == self.weights.len() || self.weights[i] != self.weights[start] {
                self.classes.push((start, i));
                start = i;
            }
        }
        for c in 1..self.csets.len() {
            let eligible = self.eligibility(&self.csets[c].constraints);
            self.csets[c].eligible = eligible;
        }
        let slot: BTreeMap<&NodeId, u32> = self
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id, i as u32))
            .collect();
        old.iter()
            .map(|id| slot.get(id).copied().unwrap_or(NONE))
            .collect()
    }

    /// Adds a member with the default placement; returns the job slots whose owner changed
    /// (they all moved to it). Adding a present member changes nothing.
    pub fn join(&mut self, node: &NodeId) -> Vec<usize> {
        self.join_with_previous(node)
            .into_iter()
            .map(|(i, _)| i)
            .collect()
    }

    /// Like [`OwnerTable::join`], with each moved job's previous owner.
    pub fn join_with_previous(&mut self, node: &NodeId) -> Vec<(usize, Option<NodeId>)> {
        if self.members.contains_key(node) {
            return Vec::new();
        }
        self.upsert(node, &Placement::default())
    }

    /// Adds a member, or changes a member's weight or tags; returns the job slots whose
    /// owner changed, each with its previous owner. Jobs move only to the member (it joined,
    /// its weight rose, it gained tags) or away from it (its weight fell, it lost tags).
    pub fn upsert(&mut self, node: &NodeId, placement: &Placement) -> Vec<(usize, Option<NodeId>)> {
        if self.members.get(node) == Some(placement) {
            return Vec::new();
        }
        let old_slot = self.ids.iter().position(|n| n == node).map(|i| i as u32);
        self.members.insert(node.clone(), placement.clone());
        let old_ids = self.ids.clone();
        let remap = self.rebuild();
        let x = self
            .ids
            .iter()
            .position(|n| n == node)
            .expect("the member was just added") as u32;
        let mut moved = Vec::new();
        for i in 0..self.jobs.len() {
            let j = self.jobs[i];
            if !j.active() {
                continue;
            }
            if old_slot.is_some() && j.owner == old_slot.unwrap_or(NONE) {
                // Its own job: it may keep it or lose it to anyone.
                let (o, s) = self.best(&j, NONE);
                self.jobs[i].owner = o;
                self.jobs[i].score = s;
                if o != x {
                    moved.push((i, Some(node.clone())));
                }
                continue;
            }
            let prev = if j.owner == NONE {
                NONE
            } else {
                remap[j.owner as usize]
            };
            self.jobs[i].owner = prev;
            if j.cset != 0 && !self.csets[j.cset as usize].eligible[x as usize] {
                continue;
            }
            let s = score(j.key, self.keys[x as usize]);
            if self.beats(x, s, prev, j.score) {
                let before = (j.owner != NONE).then(|| old_ids[j.owner as usize].clone());
                self.jobs[i].owner = x;
                self.jobs[i].score = s;
                moved.push((i, before));
            }
        }
        moved
    }

    /// Removes a member; returns the job slots it owned, now owned by the survivors (or by
    /// nobody, for a job whose constraints no survivor satisfies).
    pub fn leave(&mut self, node: &NodeId) -> Vec<usize> {
        if self.members.remove(node).is_none() {
            return Vec::new();
        }
        let gone = self
            .ids
            .iter()
            .position(|n| n == node)
            .expect("members and ids agree") as u32;
        let remap = self.rebuild();
        let mut moved = Vec::new();
        for i in 0..self.jobs.len() {
            let j = self.jobs[i];
            if !j.active() || j.owner == NONE {
                continue;
            }
            if j.owner == gone {
                let (o, s) = self.best(&j, NONE);
                self.jobs[i].owner = o;
                self.jobs[i].score = s;
                moved.push(i);
            } else {
                self.jobs[i].owner = remap[j.owner as usize];
            }
        }
        moved
    }

    /// Recomputes every job's owner from scratch (the reference the incremental paths
    /// must match, and the full-recompute benchmark).
    pub fn recompute_all(&mut self) {
        for i in 0..self.jobs.len() {
            let j = self.jobs[i];
            if !j.active() {
                continue;
            }
            let (o, s) = self.best(&j, NONE);
            self.jobs[i].owner = o;
            self.jobs[i].score = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::owner::{owner, owner_placed};
    use crate::core::placement::Tags;

    fn nodes(ids: &[&str]) -> Vec<NodeId> {
        ids.iter().map(NodeId::new).collect()
    }

    /// One per catalog job on every node (issue 15): 32 bytes before `active` was folded
    /// into `cset`.
    #[test]
    fn a_job_slot_stays_within_24_bytes() {
        assert!(std::mem::size_of::<JobOwner>() <= 24);
    }

    #[test]
    fn a_cleared_slot_has_no_owner_and_a_set_one_does() {
        let mut t = OwnerTable::new();
        t.join(&NodeId::new("a"));
        t.set_job(2, &JobId::new("x"));
        for idx in [0, 1] {
            assert_eq!(t.owner_of(idx), None);
            assert_eq!(t.runner_up(idx), None);
            assert_eq!(t.stand_in(idx), None);
            assert!(!t.is_constrained(idx));
        }
        assert_eq!(t.owner_of(2).map(NodeId::as_str), Some("a"));
        assert_eq!(t.stand_in(2).map(NodeId::as_str), Some("a"));
        t.join(&NodeId::new("b"));
        t.recompute_all();
        assert_eq!(
            t.owner_of(0),
            None,
            "joins and recomputes skip cleared slots"
        );
        t.clear_job(2);
        assert_eq!(t.owner_of(2), None);
        t.shrink_to_fit();
        assert_eq!(t.jobs.capacity(), t.jobs.len());
    }

    #[test]
    fn incremental_table_matches_full_recompute() {
        let jobs: Vec<JobId> = (0..2000).map(|j| JobId::new(format!("job-{j}"))).collect();
        let mut t = OwnerTable::new();
        for n in nodes(&["a", "b", "c"]) {
            t.join(&n);
        }
        for (i, j) in jobs.iter().enumerate() {
            t.set_job(i, j);
        }
        let check = |t: &OwnerTable, members: &[NodeId]| {
            for (i, j) in jobs.iter().enumerate() {
                assert_eq!(t.owner_of(i), owner(j, members), "{j}");
            }
        };
        check(&t, &nodes(&["a", "b", "c"]));
        let moved = t.join(&NodeId::new("d"));
        assert!(
            moved
                .iter()
                .all(|&i| t.owner_of(i).unwrap().as_str() == "d")
        );
        check(&t, &nodes(&["a", "b", "c", "d"]));
        let before: Vec<Option<NodeId>> = (0..jobs.len()).map(|i| t.owner_of(i).cloned()).collect();
        let moved = t.leave(&NodeId::new("b"));
        for (i, b) in before.iter().enumerate() {
            let was_b = b.as_ref().unwrap().as_str() == "b";
            assert_eq!(moved.contains(&i), was_b);
        }
        check(&t, &nodes(&["a", "c", "d"]));
        t.join(&NodeId::new("e"));
        check(&t, &nodes(&["a", "c", "d", "e"]));
        assert_eq!(t.join(&NodeId::new("e")), Vec::<usize>::new());
        t.leave(&NodeId::new("a"));
        t.leave(&NodeId::new("c"));
        t.leave(&NodeId::new("d"));
        t.leave(&NodeId::new("e"));
        assert_eq!(t.owner_of(0), None);
        t.join(&NodeId::new("z"));
        check(&t, &nodes(&["z"]));
    }

    fn placed(weight: u32, tags: &[(&str, &str)]) -> Placement {
        Placement {
            weight,
            tags: Arc::new(
                Tags::new(
                    tags.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                )
                .unwrap(),
            ),
        }
    }

    fn constraints(pairs: &[(&str, &str)]) -> Constraints {
        Constraints::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap()
    }

    /// A small deterministic generator for the random walk below.
    fn next(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *state >> 33
    }

    #[test]
    fn a_random_walk_of_joins_leaves_and_changes_matches_the_reference_and_moves_only_what_must_move()
     {
        let regions = ["eu", "us"];
        let jobs: Vec<(JobId, Constraints)> = (0..600)
            .map(|j| {
                let c = match j % 6 {
                    0 => constraints(&[("region", regions[j % 2])]),
                    1 => constraints(&[("gpu", "true")]),
                    _ => Constraints::default(),
                };
                (JobId::new(format!("job-{j}")), c)
            })
            .collect();
        let mut t = OwnerTable::new();
        for (i, (j, c)) in jobs.iter().enumerate() {
            t.set_job_constrained(i, j, c);
        }
        let mut members: BTreeMap<NodeId, Placement> = BTreeMap::new();
        let mut rng = 7u64;
        for step in 0..300 {
            let before: Vec<Option<NodeId>> =
                (0..jobs.len()).map(|i| t.owner_of(i).cloned()).collect();
            let node = NodeId::new(format!("n{}", next(&mut rng) % 8));
            let leave = members.contains_key(&node) && next(&mut rng) % 3 == 0;
            let moved: Vec<(usize, Option<NodeId>)> = if leave {
                members.remove(&node);
                t.leave(&node)
                    .into_iter()
                    .map(|i| (i, Some(node.clone())))
                    .collect()
            } else {
                let mut tags = vec![("region", regions[(next(&mut rng) % 2) as usize])];
                if next(&mut rng) % 3 == 0 {
                    tags.push(("gpu", "true"));
                }
                let p = placed(1 + (next(&mut rng) % 4) as u32, &tags);
                members.insert(node.clone(), p.clone());
                t.upsert(&node, &p)
            };
            for (i, (j, c)) in jobs.iter().enumerate() {
                let want = owner_placed(j, c, members.iter());
                assert_eq!(t.owner_of(i), want, "step {step}: {j}");
                let changed = before[i].as_ref() != want;
                let reported = moved.iter().find(|(k, _)| *k == i);
                assert_eq!(
                    reported.is_some(),
                    changed,
                    "step {step}: {j} moved unreported"
                );
                if let Some((_, prev)) = reported {
                    assert_eq!(prev, &before[i], "step {step}: {j}'s previous owner");
                    // Only jobs that must move: to the changed member or away from it.
                    assert!(
                        want == Some(&node) || prev.as_ref() == Some(&node),
                        "step {step}: {j} moved from {prev:?} to {want:?}, not involving {node}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_constrained_job_has_no_owner_without_an_eligible_member_and_a_stand_in() {
        let mut t = OwnerTable::new();
        t.upsert(&NodeId::new("a"), &placed(1, &[("region", "us")]));
        t.upsert(&NodeId::new("b"), &placed(1, &[]));
        t.set_job_constrained(0, &JobId::new("eu-only"), &constraints(&[("region", "eu")]));
        assert_eq!(t.owner_of(0), None);
        assert!(t.is_constrained(0));
        assert!(t.stand_in(0).is_some());
        let moved = t.upsert(&NodeId::new("c"), &placed(1, &[("region", "eu")]));
        assert_eq!(moved, vec![(0, None)]);
        assert_eq!(t.owner_of(0).map(NodeId::as_str), Some("c"));
        assert_eq!(t.runner_up(0), None, "nobody else satisfies it");
        assert_eq!(t.leave(&NodeId::new("c")), vec![0]);
        assert_eq!(t.owner_of(0), None);
    }

    #[test]
    fn heavier_members_own_proportionally_more() {
        let mut t = OwnerTable::new();
        for (n, w) in [("a", 1), ("b", 1), ("c", 2), ("d", 4)] {
            t.upsert(&NodeId::new(n), &Placement::weighted(w));
        }
        let jobs = 40_000;
        for i in 0..jobs {
            t.set_job(i, &JobId::new(format!("job-{i}")));
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for i in 0..jobs {
            *counts.entry(t.owner_of(i).unwrap().as_str()).or_default() += 1;
        }
        for (n, share) in [
            ("a", 1.0 / 8.0),
            ("b", 1.0 / 8.0),
            ("c", 2.0 / 8.0),
            ("d", 4.0 / 8.0),
        ] {
            let got = counts[n] as f64 / jobs as f64;
            assert!(
                (got - share).abs() < 0.01,
                "{n} owns {got:.4}, expected {share}"
            );
        }
    }
}
