//! The one place wall-clock time enters a node.

use std::time::Duration;

use crate::core::types::UnixMillis;
use crate::exec::BoxFuture;

/// A source of wall-clock time. The node reads time only through this; the simulator
/// brings its own (paused tokio time plus a per-node offset).
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> UnixMillis;

    /// Completes at (or soon after) `deadline` on this clock. May complete early; callers
    /// re-read [`Clock::now`] and go back to sleep if so.
    fn sleep_until(&self, deadline: UnixMillis) -> BoxFuture<()> {
        let wait = deadline.millis_since(self.now()).clamp(0, MAX_SLEEP_MS);
        Box::pin(tokio::time::sleep(Duration::from_millis(wait as u64)))
    }

    /// Blocks the calling thread until `deadline` if that is at most `within` away;
    /// otherwise, or if this clock cannot be waited on by blocking a thread (the default),
    /// returns at once. A node calls it only on its own scheduler thread, after
    /// [`Clock::sleep_until`] woke it `within` early and it prepared the deadline's runs:
    /// tokio's timer wakes up to about 2 ms late, a blocked thread within about 0.1 ms. If
    /// this returns before the deadline, the node waits for it by [`Clock::sleep_until`]
    /// before starting them.
    fn block_until(&self, deadline: UnixMillis, within: Duration) {
        let _ = (deadline, within);
    }

    /// A monotonic instant, for measuring how long the node was away (a stopped process,
    /// see `node::health`): unlike [`Clock::now`], it never jumps when the wall clock is
    /// set. It keeps counting while the process is stopped (SIGSTOP), as Linux's
    /// `CLOCK_MONOTONIC` does; it may stop during a system suspend, which the node then
    /// notices as a wall-clock step instead. The default is tokio's clock: the system's
    /// monotonic clock, or the simulator's paused time.
    fn monotonic(&self) -> tokio::time::Instant {
        #[allow(clippy::disallowed_methods)] // monotonic, never a wall-clock reading
        tokio::time::Instant::now()
    }
}

/// Sleeps are cut to this, so a wall clock that jumps is noticed within a second.
const MAX_SLEEP_MS: i64 = 1_000;

/// The operating system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl SystemClock {
    #[allow(clippy::disallowed_methods)] // the one real clock
    fn since_epoch() -> Duration {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    }

    /// Microseconds from now until `deadline` (negative once past).
    fn micros_until(deadline: UnixMillis) -> i64 {
        let now_us = i64::try_from(Self::since_epoch().as_micros()).unwrap_or(i64::MAX);
        deadline.0.saturating_mul(1_000).saturating_sub(now_us)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(i64::try_from(Self::since_epoch().as_millis()).unwrap_or(i64::MAX))
    }

    /// Waits with microsecond precision: computing the wait from a now truncated to the
    /// millisecond would wake up to a millisecond late on top of the timer's own rounding.
    fn sleep_until(&self, deadline: UnixMillis) -> BoxFuture<()> {
        let wait_us = Self::micros_until(deadline).clamp(0, MAX_SLEEP_MS * 1_000);
        Box::pin(tokio::time::sleep(Duration::from_micros(wait_us as u64)))
    }

    fn block_until(&self, deadline: UnixMillis, within: Duration) {
        let wait_us = Self::micros_until(deadline);
        if wait_us > 0 && (wait_us as u128) <= within.as_micros() {
            std::thread::sleep(Duration::from_micros(wait_us as u64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_until_returns_at_the_deadline_not_before() {
        let clock = SystemClock;
        for _ in 0..5 {
            let deadline = clock.now().saturating_add(Duration::from_millis(15));
            clock.block_until(deadline, Duration::from_millis(50));
            assert!(clock.now() >= deadline);
        }
    }

    #[test]
    fn block_until_does_not_block_for_a_deadline_beyond_within() {
        let clock = SystemClock;
        let deadline = clock.now().saturating_add(Duration::from_secs(60));
        clock.block_until(deadline, Duration::from_millis(3));
        // Blocking would have taken a minute.
        assert!(clock.now() < deadline);
        // A deadline already past does not block either.
        clock.block_until(UnixMillis(0), Duration::from_millis(3));
    }
}
