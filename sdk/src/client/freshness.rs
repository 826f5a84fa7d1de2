//! The staleness limit (`max_staleness`): when the client has heard nothing from the
//! service — no event, no heartbeat, no successful poll — for longer than the limit,
//! every release serves its baseline with reason `STALE`, so a network partition that
//! hides a kill cannot keep a candidate running indefinitely.
//!
//! The hot path pays one relaxed load of a flag. A watchdog task sets the flag when the
//! limit passes (sleeping until the next possible deadline, never polling), and the sync
//! task clears it the moment it hears from the service again. Reading the clock on every
//! decision instead would cost more than the rest of the evaluation.

use super::state::Shared;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// When the service was last heard from, and whether that is too long ago.
pub(crate) struct Freshness {
    /// The client's start; `last_heard_ms` counts from it.
    epoch: Instant,
    /// Milliseconds from `epoch` to the last word from the service (or to the start).
    last_heard_ms: AtomicU64,
    /// True while the limit is exceeded. Always false without a limit.
    stale: AtomicBool,
    limit: Option<Duration>,
}

impl Freshness {
    /// Fresh now; `limit` `None` turns the rule off.
    pub(crate) fn new(limit: Option<Duration>) -> Self {
        Freshness { epoch: Instant::now(), last_heard_ms: AtomicU64::new(0), stale: AtomicBool::new(false), limit }
    }

    /// True while every decision must be the baseline. One relaxed load: the flag only
    /// needs to be seen soon, not in any order with other memory.
    #[inline]
    pub(crate) fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// The service just answered (an event, a heartbeat, a stream opened, a poll).
    pub(crate) fn heard(&self) {
        if self.limit.is_none() {
            return;
        }
        // SeqCst pairs with the watchdog's: either it sees this time, or this sees its flag.
        self.last_heard_ms.store(self.elapsed_ms(Instant::now()), Ordering::SeqCst);
        if self.stale.load(Ordering::SeqCst) && self.stale.swap(false, Ordering::SeqCst) {
            tracing::info!("heard from the cohort service again; decisions follow the configuration");
        }
    }

    fn elapsed_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// When the limit passes unless the service is heard from before.
    fn deadline(&self, limit: Duration) -> Instant {
        self.epoch + Duration::from_millis(self.last_heard_ms.load(Ordering::SeqCst)) + limit
    }
}

/// Sets the stale flag whenever `limit` passes without word from the service. Ends
/// when the client is dropped (it holds only a weak reference).
pub(crate) async fn watchdog(shared: Weak<Shared>, limit: Duration) {
    loop {
        let Some(shared) = shared.upgrade() else { return };
        let wake = shared.freshness().check(limit);
        drop(shared);
        tokio::time::sleep_until(wake).await;
    }
}

impl Freshness {
    /// Sets the flag if `limit` has passed in silence; says when to check again.
    fn check(&self, limit: Duration) -> Instant {
        let now = Instant::now();
        let deadline = self.deadline(limit);
        if self.is_stale() {
            // Stale until the sync task hears again; the next deadline is at least a
            // limit away from then, so checking once per limit misses nothing.
            return now + limit;
        }
        if now < deadline {
            return deadline;
        }
        self.stale.store(true, Ordering::SeqCst);
        if self.deadline(limit) > now {
            // Heard between the check and the flag: not stale after all.
            self.stale.store(false, Ordering::SeqCst);
            return self.deadline(limit);
        }
        tracing::warn!(
            limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
            "nothing heard from the cohort service within max_staleness; serving every release's baseline (STALE)"
        );
        now + limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn silence_beyond_the_limit_makes_decisions_stale_and_hearing_again_recovers() {
        let shared = Arc::new(Shared::new(Some(Duration::from_secs(10))));
        tokio::spawn(watchdog(Arc::downgrade(&shared), Duration::from_secs(10)));
        let fresh = shared.freshness();
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!fresh.is_stale(), "within the limit");
        fresh.heard();
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!fresh.is_stale(), "hearing restarts the clock");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(fresh.is_stale(), "past the limit");
        fresh.heard();
        assert!(!fresh.is_stale(), "recovers at once");
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(fresh.is_stale(), "and the limit applies again");
    }

    #[test]
    fn without_a_limit_nothing_is_ever_stale() {
        let fresh = Freshness::new(None);
        fresh.heard();
        assert!(!fresh.is_stale());
    }
}
