//! Paces the starts of runs: at most [`STARTS_PER_SECOND`] a second on a node, so a
//! burst of due runs cannot hold the node's runtime, or the machine's cores, for as long
//! as starting all of them at once takes.
//!
//! Issue 14: two nodes with 10,000 jobs due in the same second each started them all at
//! once. A start (a clone and exec of `sh`) costs about a millisecond of a loaded 2-core
//! machine, so their gossip waited behind seconds of starts, long enough for a peer to be
//! suspected. The simulator's `load-burst` scenario charges each start to the node's
//! processor and fails without the pace. Runs are admitted on a fixed schedule, one every
//! `1 / STARTS_PER_SECOND`, after [`BURST`] at once: each run waits once, for its own
//! turn, in the order it asked, so ten thousand runs cost ten thousand timers, not one
//! wake-up each per turn.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Run starts a node makes per second, at most. A few 1 ms starts of `sh` a millisecond
/// keep a core busy: half of one at this rate. 10,000 runs due at once start within 20 s.
pub const STARTS_PER_SECOND: u32 = 500;

/// Runs that start at once, without waiting, after a quiet spell.
pub const BURST: u32 = 20;

/// The schedule of run starts (see the module's doc).
#[derive(Default)]
pub(super) struct Pace {
    /// The turn after the last one given out.
    next: Mutex<Option<Instant>>,
}

impl Pace {
    /// Waits for this run's turn to start, given the time `now` (monotonic).
    pub(super) async fn turn(&self, now: Instant) {
        let interval = Duration::from_secs(1) / STARTS_PER_SECOND;
        // After a quiet spell, up to BURST turns are due at once.
        let earliest = now.checked_sub(interval * BURST).unwrap_or(now);
        let at = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let at = next.map_or(earliest, |n| n.max(earliest));
            *next = Some(at + interval);
            at
        };
        if at > now {
            tokio::time::sleep_until(at).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_runs_is_spread_at_the_pace_after_the_first_few() {
        #[allow(clippy::disallowed_methods)] // paused tokio time
        let start = Instant::now();
        let pace = std::sync::Arc::new(Pace::default());
        let n = (BURST + STARTS_PER_SECOND) as usize;
        let mut turns = Vec::new();
        for _ in 0..n {
            let pace = pace.clone();
            turns.push(tokio::spawn(async move {
                pace.turn(start).await;
                #[allow(clippy::disallowed_methods)] // paused tokio time
                Instant::now().duration_since(start)
            }));
        }
        let mut at = Vec::new();
        for t in turns {
            at.push(t.await.unwrap());
        }
        let at_once = at.iter().filter(|d| d.is_zero()).count();
        assert_eq!(at_once, BURST as usize + 1, "{at:?}");
        // The rest follow one per interval: the last a second (less one turn) later.
        let last = *at.iter().max().unwrap();
        assert!(last < Duration::from_secs(1), "{last:?}");
        assert!(last >= Duration::from_millis(990), "{last:?}");
        // In the order they asked.
        assert!(at.windows(2).all(|w| w[0] <= w[1]), "{at:?}");
    }
}
