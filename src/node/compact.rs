//! Packing a node's per-job maps once its catalog stops growing (issue 15, memory per entry).
//!
//! A B-tree filled by inserts in key order (a node learning a catalog from gossip, or from
//! its data dir) keeps its nodes about half full, and one filled at random about two
//! thirds; rebuilt from its sorted entries, its nodes are full. A node keeps several maps
//! with an entry per catalog job: the catalog's registers, the catalog task's bookkeeping,
//! chitchat's key-values of every node, the planner's index. At a reconcile, once the
//! catalog holds at least [`MIN_GROWTH`] registers and a sixteenth more than when it was
//! last packed, and did not grow since the previous reconcile (so not while a catalog
//! streams in), the catalog task rebuilds them all: O(registers), at most once per
//! reconcile period, like the reconcile's own scan. Contents and order do not change, so
//! nothing anyone reads does. Inserts afterwards split full nodes again; the next growth is
//! packed the same way.

use std::collections::{BTreeMap, BTreeSet};

use tracing::debug;

use super::catalog::{CatalogTask, PlanUpdate};

/// Growth (in registers) below which the maps are not rebuilt.
pub const MIN_GROWTH: usize = 64;

/// When the maps were last packed.
#[derive(Debug, Default)]
pub(super) struct Packing {
    /// Registers the catalog held when its maps were last packed.
    packed: usize,
    /// Registers it held at the previous reconcile.
    previous: usize,
}

impl Packing {
    /// Whether to pack now, the catalog holding `len` registers at this reconcile.
    fn due(&mut self, len: usize) -> bool {
        let settled = len == self.previous;
        self.previous = len;
        // Registers that expired count as room for new ones.
        self.packed = self.packed.min(len);
        let grown = len - self.packed;
        settled && grown >= MIN_GROWTH.max(self.packed / 16)
    }
}

impl CatalogTask {
    /// Packs every map with an entry per register or job, if the catalog grew and settled
    /// since they were last packed.
    pub(super) async fn pack_if_settled(&mut self) {
        let len = self.catalog.register_count();
        if !self.packing.due(len) {
            return;
        }
        self.catalog.compact();
        pack(&mut self.applied);
        pack(&mut self.hashes);
        pack(&mut self.unheld_since);
        self.held = std::mem::take(&mut self.held)
            .into_iter()
            .collect::<BTreeSet<_>>();
        self.publisher.compact_states().await;
        let _ = self.to_loop.send(PlanUpdate::Compact);
        self.packing.packed = len;
        self.stats.compactions += 1;
        debug!(registers = len, "catalog maps packed");
    }
}

/// Rebuilds `map` from its sorted entries: full B-tree nodes.
fn pack<K: Ord, V>(map: &mut BTreeMap<K, V>) {
    *map = std::mem::take(map).into_iter().collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_once_the_catalog_grew_and_settled() {
        let mut p = Packing::default();
        // Growing: never while registers keep arriving.
        assert!(!p.due(1_000));
        assert!(!p.due(5_000));
        // Settled after growing.
        assert!(p.due(5_000));
        p.packed = 5_000;
        assert!(!p.due(5_000));
        // Less than a sixteenth more: not worth a rebuild.
        assert!(!p.due(5_200));
        assert!(!p.due(5_200));
        // A sixteenth more, settled.
        assert!(!p.due(5_400));
        assert!(p.due(5_400));
        p.packed = 5_400;
        // Expired registers make room: growth counts from the smaller size (350 more
        // than 5,000, where 5,350 is less than the 5,400 last packed).
        assert!(!p.due(5_000));
        assert!(!p.due(5_350));
        assert!(p.due(5_350));
    }

    #[test]
    fn a_small_catalog_is_never_packed() {
        let mut p = Packing::default();
        assert!(!p.due(MIN_GROWTH - 1));
        assert!(!p.due(MIN_GROWTH - 1));
        assert!(!p.due(MIN_GROWTH));
        assert!(p.due(MIN_GROWTH));
    }

    #[test]
    fn packing_keeps_contents_and_order() {
        let mut m: BTreeMap<u32, u32> = (0..1_000).map(|i| (i * 7 % 1_000, i)).collect();
        let before: Vec<_> = m.iter().map(|(k, v)| (*k, *v)).collect();
        pack(&mut m);
        assert_eq!(m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(), before);
    }
}
