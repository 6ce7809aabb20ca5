//! Ownership: which live member runs a job, by rendezvous (highest-random-weight) hashing.
//!
//! # The hash, specified
//!
//! Every node must compute the same owner from the same view, whatever platform or Rust
//! release built it, so the hash is spelled out here and pinned by golden vectors:
//!
//! - `job_key  = xxh3_64(job name as UTF-8 bytes)` (seed 0),
//! - `node_key = xxh3_64(node id as UTF-8 bytes)` (seed 0),
//! - `score    = low64(m) ^ high64(m)`, the folded 128-bit multiply of
//!   `m = (job_key ^ 0x9E3779B97F4A7C15) * (node_key ^ 0xD6E8FEB86659FD93)` (as u128).
//!   Both inputs are already xxh3 outputs, so one multiply mixes them well enough; the
//!   distribution test below checks it.
//! - The owner is the member with the highest score; equal scores go to the greater node id.
//!
//! A combining multiply is used rather than hashing each (job, node) pair with xxh3 because
//! it is several times cheaper, and the full recompute for 100,000 jobs over 100 nodes has a
//! budget of 15 ms (see `benches/owners.rs`).
//!
//! # Weights and constraints
//!
//! Nodes may declare weights ([`Placement`]); ownership is then *weighted* rendezvous
//! hashing by the logarithmic method: the owner is the member with the highest
//! `key = weight / -ln(u)`, where `u` is the pair's score mapped into (0, 1):
//! `u = (2 * (score >> 12) + 1) / 2^53`, exact in an `f64`. Equal keys go to the higher raw
//! score, then to the greater node id. Each node then owns a share of the jobs proportional
//! to its weight.
//!
//! - When every member has the same weight the key is a monotone function of the raw
//!   score, so the owners are exactly the unweighted ones above: a cluster that declares no
//!   weights computes what earlier versions computed.
//! - `-ln(u)` is [`neg_ln_unit`]: a series evaluated with `+ - * /` only, in a fixed order,
//!   so every platform computes the same bits (the platform's `ln` may differ in its last
//!   bit between C libraries). It is monotone in the score by construction (positive
//!   series coefficients, Horner evaluation, and clamps where its pieces meet), which the
//!   class shortcut below relies on; its relative error against the true `-ln(u)` is below
//!   1e-14 (tested). The `rendezvous_hash` crate's weighted nodes are the reference it is
//!   tested and benchmarked against (`tests/ownership.rs`, `benches/owners.rs`).
//! - A job with constraints is owned by the best member among those whose tags satisfy
//!   them; with none, it has no owner (it is *unplaceable*).
//!
//! As ownership is a maximum over the eligible members of a per-(job, node) key, a leave
//! moves only the departed member's jobs, a join moves jobs only to the joiner, and a
//! member's weight or tag change moves jobs only to it (its key rose, or it became
//! eligible) or away from it (its key fell, or it no longer satisfies them).

use std::cmp::Ordering;

use xxhash_rust::xxh3::xxh3_64;

use super::placement::{Constraints, Placement};
use super::types::{JobId, NodeId};

mod table;

pub use table::OwnerTable;

/// The hash of a job name used by ownership.
pub fn job_key(job: &str) -> u64 {
    xxh3_64(job.as_bytes())
}

/// The hash of a node id used by ownership.
pub fn node_key(node: &str) -> u64 {
    xxh3_64(node.as_bytes())
}

/// The rendezvous score of a (job, node) pair; see the module docs for the specification.
#[inline]
pub fn score(job_key: u64, node_key: u64) -> u64 {
    let m =
        u128::from(job_key ^ 0x9E37_79B9_7F4A_7C15) * u128::from(node_key ^ 0xD6E8_FEB8_6659_FD93);
    (m as u64) ^ ((m >> 64) as u64)
}

/// The owner of `job` among `members`: the highest score, ties to the greater id.
///
/// Deterministic for a given set of members, whatever order they come in.
pub fn owner<'a>(job: &JobId, members: impl IntoIterator<Item = &'a NodeId>) -> Option<&'a NodeId> {
    let jk = job_key(job.as_str());
    members
        .into_iter()
        .map(|n| (score(jk, node_key(n.as_str())), n))
        .max()
        .map(|(_, n)| n)
}

/// `2^-53`: the scale of the unit values scores map to.
const UNIT_SCALE: f64 = 1.0 / 9_007_199_254_740_992.0;

/// The unit value `u` in (0, 1) a score maps to, and `1 - u`, both exact:
/// `u = (2 * (score >> 12) + 1) / 2^53`.
#[inline]
fn unit(score: u64) -> (f64, f64) {
    // Odd and below 2^53, so the conversion is exact and u is never 0 or 1.
    let num = 2 * (score >> 12) + 1;
    let u = num as f64 * UNIT_SCALE;
    let x = ((1u64 << 53) - num) as f64 * UNIT_SCALE;
    (u, x)
}

/// `1 / (1 + step * n)` for `n` in `0..N`, computed at compile time (IEEE division, the
/// same bits everywhere).
const fn reciprocals<const N: usize>(step: f64) -> [f64; N] {
    let mut out = [0.0; N];
    let mut n = 0;
    while n < N {
        out[n] = 1.0 / (1.0 + step * n as f64);
        n += 1;
    }
    out
}

/// `-ln(1 - x) / x = sum x^n / (n + 1)`, for `x <= 1/16`: the 15th term is below 1e-18.
const SERIES_NEAR_ONE: [f64; 14] = reciprocals(1.0);
/// `ln(m) / (2s) = sum s^2n / (2n + 1)` with `s = (m - 1) / (m + 1) < 1/3`: the 18th term
/// is below 1e-18.
const SERIES_ATANH: [f64; 17] = reciprocals(2.0);
/// Below this `1 - u` the series near one is used.
const NEAR_ONE: f64 = 1.0 / 16.0;

/// Horner evaluation of `sum c[n] t^n`. With `t >= 0` and positive coefficients it is
/// non-decreasing in `t`: every step rounds a non-decreasing value (no fused multiply-add:
/// Rust never contracts one implicitly).
#[inline]
fn horner(c: &[f64], t: f64) -> f64 {
    let mut acc = 0.0;
    for &k in c.iter().rev() {
        acc = acc * t + k;
    }
    acc
}

/// `-ln(1 - x)` for `x <= NEAR_ONE`.
#[inline]
fn neg_ln_near_one(x: f64) -> f64 {
    x * horner(&SERIES_NEAR_ONE, x)
}

/// `-ln(u)` for the unit value `u` a score maps to (see the module docs): platform
/// independent, non-increasing in `score`, always positive and finite.
pub fn neg_ln_unit(score: u64) -> f64 {
    let (u, x) = unit(score);
    if x <= NEAR_ONE {
        return neg_ln_near_one(x);
    }
    // u = m * 2^-e with m in [1, 2) and e >= 1 (u >= 2^-53 is a normal number).
    let bits = u.to_bits();
    let e = 1023 - ((bits >> 52) & 0x7ff) as i64;
    let m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    // ln(m) = 2 atanh(s); m - 1 is exact, and s grows with m.
    let s = (m - 1.0) / (m + 1.0);
    let ln_m = 2.0 * (s * horner(&SERIES_ATANH, s * s));
    let at = |k: i64| k as f64 * std::f64::consts::LN_2;
    // Clamped to the value where the next piece begins, so rounding cannot make the
    // function rise where two pieces meet (a larger u must never get a larger -ln u).
    let floor = if e == 1 {
        neg_ln_near_one(NEAR_ONE)
    } else {
        at(e - 1)
    };
    (at(e) - ln_m).max(floor)
}

/// The weighted key of a (job, node) pair: `weight / -ln(u)`; the highest wins.
pub fn weighted_key(score: u64, weight: u32) -> f64 {
    f64::from(weight) / neg_ln_unit(score)
}

/// Relative slack of [`key_bounds`], far above the error of [`neg_ln_unit`].
const BOUND_SLACK: f64 = 1.0 / (1u64 << 30) as f64;

/// Bounds of [`weighted_key`] without a logarithm: `x <= -ln(1 - x) <= x / (1 - x)`.
#[inline]
fn key_bounds(score: u64, weight: u32) -> (f64, f64) {
    let (u, x) = unit(score);
    let hi = f64::from(weight) / x;
    (hi * u * (1.0 - BOUND_SLACK), hi * (1.0 + BOUND_SLACK))
}

/// How two candidates for one job compare: by [`weighted_key`], then by raw score (node
/// ids break what is left). Equal weights compare by raw score alone, which is the same
/// order (the key grows with the score); different weights compare by cheap bounds
/// first, and by the keys themselves only when the bounds overlap.
#[inline]
pub fn cmp_weighted(a_score: u64, a_weight: u32, b_score: u64, b_weight: u32) -> Ordering {
    if a_weight == b_weight {
        return a_score.cmp(&b_score);
    }
    let (a_lo, a_hi) = key_bounds(a_score, a_weight);
    let (b_lo, b_hi) = key_bounds(b_score, b_weight);
    if a_lo > b_hi {
        return Ordering::Greater;
    }
    if b_lo > a_hi {
        return Ordering::Less;
    }
    weighted_key(a_score, a_weight)
        .total_cmp(&weighted_key(b_score, b_weight))
        .then(a_score.cmp(&b_score))
}

/// The owner of `job` among `members` with their placements: the best of those that
/// satisfy `constraints` by [`cmp_weighted`], ties to the greater id. `None` when none
/// satisfies them. The reference the [`OwnerTable`] must match.
pub fn owner_placed<'a>(
    job: &JobId,
    constraints: &Constraints,
    members: impl IntoIterator<Item = (&'a NodeId, &'a Placement)>,
) -> Option<&'a NodeId> {
    let jk = job_key(job.as_str());
    let mut best: Option<(u64, u32, &NodeId)> = None;
    for (id, p) in members {
        if !p.satisfies(constraints) {
            continue;
        }
        let s = score(jk, node_key(id.as_str()));
        let better = best.is_none_or(|(bs, bw, bid)| {
            cmp_weighted(s, p.weight, bs, bw).then_with(|| id.cmp(bid)) == Ordering::Greater
        });
        if better {
            best = Some((s, p.weight, id));
        }
    }
    best.map(|(_, _, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[&str]) -> Vec<NodeId> {
        ids.iter().map(NodeId::new).collect()
    }

    #[test]
    fn golden_vectors_pin_the_hash() {
        // If one of these changes, nodes built from different versions disagree about
        // owners. Do not update them without a migration plan. The values were checked
        // against the Python `xxhash` package and a Python transcription of `score`.
        assert_eq!(job_key("backup"), 0x10d6_6c68_868a_4646);
        assert_eq!(node_key("node-1"), 0x0db0_9edf_d945_8385);
        assert_eq!(score(1, 2), 0xbd60_66e6_b2ae_ea0c);
        assert_eq!(
            score(job_key("backup"), node_key("node-1")),
            0xc64a_6c3f_1170_7a43
        );
        let members = nodes(&["a", "b", "c", "d", "e"]);
        let table: Vec<&str> = ["backup", "billing", "reports", "cache-warm", "j0", "j1"]
            .iter()
            .map(|j| owner(&JobId::new(j), &members).unwrap().as_str())
            .collect();
        assert_eq!(table, ["b", "e", "a", "e", "b", "e"]);
    }

    #[test]
    fn owner_does_not_depend_on_member_order() {
        let mut members = nodes(&["n1", "n2", "n3", "n4", "n5", "n6", "n7"]);
        for j in 0..200 {
            let job = JobId::new(format!("job-{j}"));
            let a = owner(&job, &members).cloned();
            members.reverse();
            let b = owner(&job, &members).cloned();
            members.rotate_left(3);
            let c = owner(&job, &members).cloned();
            assert_eq!(a, b);
            assert_eq!(a, c);
        }
    }

    #[test]
    fn no_members_no_owner() {
        assert_eq!(owner(&JobId::new("x"), &Vec::<NodeId>::new()), None);
    }

    #[test]
    fn load_spreads_evenly() {
        let members = nodes(&["n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9"]);
        let mut counts = std::collections::BTreeMap::new();
        for j in 0..20_000 {
            let o = owner(&JobId::new(format!("job-{j}")), &members).unwrap();
            *counts.entry(o.clone()).or_insert(0) += 1;
        }
        for (n, c) in counts {
            // Expected 2000 each; allow +-10%.
            assert!((1800..=2200).contains(&c), "{n} owns {c}");
        }
    }

    #[test]
    fn only_the_departed_members_jobs_move() {
        let all = nodes(&["a", "b", "c", "d"]);
        let survivors = nodes(&["a", "b", "d"]);
        let mut moved = 0;
        for j in 0..1000 {
            let job = JobId::new(format!("job-{j}"));
            let before = owner(&job, &all).unwrap();
            let after = owner(&job, &survivors).unwrap();
            if before.as_str() != "c" {
                assert_eq!(before, after, "{job} moved although its owner stayed");
            } else {
                moved += 1;
            }
        }
        assert!(moved > 150, "c owned only {moved} jobs");
    }

    #[test]
    fn golden_vectors_pin_the_weighted_key() {
        // As for the hash: nodes of different versions must agree, so these never change.
        // The values come from a Python transcription of this module (with the `xxhash`
        // package), whose results equal Python's math.log and math.log1p on these points.
        assert_eq!(neg_ln_unit(0).to_bits(), 0x4042_5e4f_7b27_37fa); // 53 ln 2
        assert_eq!(neg_ln_unit(u64::MAX).to_bits(), 0x3ca0_0000_0000_0000); // 2^-53
        assert_eq!(neg_ln_unit(1 << 63).to_bits(), 0x3fe6_2e42_fefa_39ed);
        assert_eq!(
            neg_ln_unit(0x9E37_79B9_7F4A_7C15).to_bits(),
            0x3fde_cc2c_aec5_160b
        );
        assert_eq!(
            weighted_key(score(job_key("backup"), node_key("node-1")), 3).to_bits(),
            0x4027_7d13_dbdf_b2c4
        );
        let members: Vec<(NodeId, Placement)> = [("a", 1), ("b", 2), ("c", 4), ("d", 1), ("e", 8)]
            .iter()
            .map(|(n, w)| (NodeId::new(n), Placement::weighted(*w)))
            .collect();
        let table: Vec<&str> = ["backup", "billing", "reports", "cache-warm", "j0", "j1"]
            .iter()
            .map(|j| {
                owner_placed(
                    &JobId::new(j),
                    &Constraints::default(),
                    members.iter().map(|(n, p)| (n, p)),
                )
                .unwrap()
                .as_str()
            })
            .collect();
        assert_eq!(table, ["b", "e", "e", "e", "b", "e"]);
    }

    /// Scores spread over the whole range, and the places where the pieces of
    /// `neg_ln_unit` meet (the series near one, each power of two).
    fn probe_scores() -> Vec<u64> {
        let mut out = Vec::new();
        let mut x = 0x243F_6A88_85A3_08D3u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push(x);
        }
        let near_one = ((1u64 << 53) - (1u64 << 49)) << 11; // u = 15/16
        for e in 0..64 {
            let p = 1u64 << e;
            out.extend([p, p.wrapping_sub(1), p.wrapping_add(1)]);
            for d in 0..64u64 {
                out.push(p.wrapping_sub(d << 12));
                out.push(p.wrapping_add(d << 12));
            }
        }
        for d in 0..4096u64 {
            out.push(near_one.wrapping_sub(d << 12));
            out.push(near_one.wrapping_add(d << 12));
        }
        out.extend([0, 1, u64::MAX, u64::MAX - 1]);
        out.sort_unstable();
        out.dedup();
        out
    }

    #[test]
    fn neg_ln_unit_is_monotone_positive_and_accurate() {
        let scores = probe_scores();
        let mut prev = f64::INFINITY;
        for &s in &scores {
            let l = neg_ln_unit(s);
            assert!(l > 0.0 && l.is_finite(), "{s:#x}: {l}");
            assert!(l <= prev, "not monotone at {s:#x}: {l} after {prev}");
            prev = l;
            let (u, _) = unit(s);
            let reference = -u.ln();
            let err = ((l - reference) / reference).abs();
            // The platform's ln loses precision for u near 1 (it sees only u, not 1 - u),
            // so compare there against log1p of the exact 1 - u.
            let (_, x) = unit(s);
            let reference_near_one = -(-x).ln_1p();
            let err_near_one = ((l - reference_near_one) / reference_near_one).abs();
            assert!(
                err.min(err_near_one) < 1e-14,
                "{s:#x}: {l} vs {reference} / {reference_near_one}"
            );
        }
    }

    #[test]
    fn equal_weights_give_the_unweighted_owners() {
        let ids = nodes(&["n0", "n1", "n2", "n3", "n4", "n5", "n6"]);
        for w in [1, 3, 64] {
            let p = Placement::weighted(w);
            for j in 0..2000 {
                let job = JobId::new(format!("job-{j}"));
                assert_eq!(
                    owner_placed(&job, &Constraints::default(), ids.iter().map(|n| (n, &p))),
                    owner(&job, &ids),
                    "{job} with every weight {w}"
                );
            }
        }
    }

    #[test]
    fn comparing_by_bounds_agrees_with_comparing_keys() {
        let scores = probe_scores();
        let mut disagreements = 0;
        for (i, &a) in scores.iter().enumerate().step_by(7) {
            let b = scores[(i * 7919) % scores.len()];
            for (wa, wb) in [(1, 2), (3, 1), (1, 10_000), (7, 8)] {
                let by_keys = weighted_key(a, wa)
                    .total_cmp(&weighted_key(b, wb))
                    .then(a.cmp(&b));
                if cmp_weighted(a, wa, b, wb) != by_keys {
                    disagreements += 1;
                }
            }
        }
        assert_eq!(disagreements, 0);
    }

    #[test]
    fn a_weight_change_moves_only_jobs_to_or_from_that_member() {
        let ids = nodes(&["a", "b", "c", "d"]);
        let weights = |c: u32| -> Vec<(NodeId, Placement)> {
            ids.iter()
                .map(|n| {
                    let w = if n.as_str() == "c" { c } else { 2 };
                    (n.clone(), Placement::weighted(w))
                })
                .collect()
        };
        let none = Constraints::default();
        let (before, after) = (weights(2), weights(5));
        let (mut gained, mut lowered_lost) = (0, 0);
        for j in 0..5000 {
            let job = JobId::new(format!("job-{j}"));
            let b = owner_placed(&job, &none, before.iter().map(|(n, p)| (n, p))).unwrap();
            let a = owner_placed(&job, &none, after.iter().map(|(n, p)| (n, p))).unwrap();
            if a != b {
                assert_eq!(a.as_str(), "c", "{job} moved from {b} to {a}");
                gained += 1;
            }
            let lower = weights(1);
            let l = owner_placed(&job, &none, lower.iter().map(|(n, p)| (n, p))).unwrap();
            if l != b {
                assert_eq!(b.as_str(), "c", "{job} moved from {b} to {l}");
                lowered_lost += 1;
            }
        }
        assert!(
            gained > 500 && lowered_lost > 300,
            "{gained} {lowered_lost}"
        );
    }
}
