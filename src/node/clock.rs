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
}

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(i64::try_from(Self::since_epoch().as_millis()).unwrap_or(i64::MAX))
    }

    /// Waits with microsecond precision: computing the wait from a now truncated to the
    /// millisecond would wake up to a millisecond late on top of the timer's own rounding.
    fn sleep_until(&self, deadline: UnixMillis) -> BoxFuture<()> {
        let now_us = i64::try_from(Self::since_epoch().as_micros()).unwrap_or(i64::MAX);
        let wait_us = deadline
            .0
            .saturating_mul(1_000)
            .saturating_sub(now_us)
            .clamp(0, MAX_SLEEP_MS * 1_000);
        Box::pin(tokio::time::sleep(Duration::from_micros(wait_us as u64)))
    }
}
