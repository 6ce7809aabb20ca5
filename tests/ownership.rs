//! Starling's owners against the reference: the `rendezvous_hash` crate, which the user
//! named, ranking members by the same scores (see `tests/reference/mod.rs`).

mod reference;

use starling::core::owner::{owner, owner_placed};
use starling::core::placement::{Constraints, Placement};
use starling::{JobId, NodeId};

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i}")).collect()
}

#[test]
fn unweighted_owners_are_the_crates_exactly() {
    let names = ids(40);
    let mut nodes = rendezvous_hash::RendezvousNodes::new(reference::ScoreHasher);
    for n in &names {
        nodes.insert(n.as_str());
    }
    let members: Vec<NodeId> = names.iter().map(NodeId::new).collect();
    for j in 0..10_000 {
        let job = format!("job-{j}");
        let theirs = *nodes.calc_candidates(&job.as_str()).next().unwrap();
        let ours = owner(&JobId::new(&job), &members).unwrap();
        assert_eq!(ours.as_str(), theirs, "{job}");
    }
}

#[test]
fn weighted_owners_are_the_crates_except_at_near_ties() {
    let names = ids(100);
    for weights in [
        // Capacity classes, as `--weight auto` gives on machines of 2 to 16 CPUs.
        (0..100).map(|i| [2, 4, 8, 16][i % 4]).collect::<Vec<u32>>(),
        // Every weight different.
        (0..100).map(|i| 1 + i as u32 * 37 % 1000).collect(),
        // One heavy node among light ones.
        (0..100).map(|i| if i == 7 { 50 } else { 1 }).collect(),
    ] {
        let members: Vec<(&str, u32)> = names
            .iter()
            .map(String::as_str)
            .zip(weights.iter().copied())
            .collect();
        let nodes = reference::weighted_nodes(&members);
        let placed: Vec<(NodeId, Placement)> = members
            .iter()
            .map(|(n, w)| (NodeId::new(n), Placement::weighted(*w)))
            .collect();
        let (mut near, mut compared) = (0, 0);
        for j in 0..6_000 {
            let job = format!("job-{j}");
            let (theirs, near_tie) = reference::weighted_owner(&nodes, &job);
            let ours = owner_placed(
                &JobId::new(&job),
                &Constraints::default(),
                placed.iter().map(|(n, p)| (n, p)),
            )
            .unwrap();
            if near_tie {
                near += 1;
                continue;
            }
            compared += 1;
            assert_eq!(ours.as_str(), theirs, "{job} with weights {weights:?}");
        }
        assert!(near <= 1, "{near} near ties in 6,000 jobs");
        assert!(compared >= 5_999);
    }
}
