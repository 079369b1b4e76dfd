//! The service's clock for billing decisions: when a past-due grace ends, when
//! fetched state was read, when the periodic sweep runs.
//!
//! In production it is the system clock. In emulator mode the emulator shares
//! the same `Clock` and can move it forward, like a Stripe test clock
//! (docs.stripe.com/billing/testing/test-clocks), so a test or the demo reaches
//! a renewal, a failed payment or the end of a grace period in seconds. Every
//! advance wakes whoever waits in [`Clock::advanced_since`] (the paid-flag sweep), so
//! time-driven changes follow at once rather than on the next tick.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Seconds added to the system clock; only ever grows.
    offset_secs: AtomicI64,
    advanced: Notify,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("offset_secs", &self.offset_secs())
            .finish()
    }
}

impl Clock {
    /// The system clock, not advanced.
    pub fn system() -> Self {
        Self::default()
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::seconds(self.offset_secs())
    }

    /// Unix seconds of [`Clock::now`], Stripe's `created` resolution.
    pub fn unix(&self) -> i64 {
        self.now().timestamp()
    }

    pub fn offset_secs(&self) -> i64 {
        self.inner.offset_secs.load(Ordering::SeqCst)
    }

    /// Moves the clock forward by `secs` (a negative or zero amount does
    /// nothing: time never runs backwards) and wakes the waiters.
    pub fn advance(&self, secs: i64) {
        if secs > 0 {
            self.inner.offset_secs.fetch_add(secs, Ordering::SeqCst);
            self.inner.advanced.notify_waiters();
        }
    }

    /// Resolves once the clock has been advanced past `seen` (an earlier
    /// [`Clock::offset_secs`]): at once if it already was, so an advance
    /// made while the caller was busy (a sweep, a catch-up) is not missed.
    pub async fn advanced_since(&self, seen: i64) {
        loop {
            let mut notified = std::pin::pin!(self.inner.advanced.notified());
            // Registered before the check, so an advance between the two wakes it.
            notified.as_mut().enable();
            if self.offset_secs() != seen {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn an_advance_made_before_the_wait_began_is_not_missed() {
        let clock = Clock::system();
        let seen = clock.offset_secs();
        clock.advance(60);

        // Resolves at once; a wait that missed the advance would hang here.
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            clock.advanced_since(seen),
        )
        .await
        .expect("the earlier advance counts");
    }

    #[test]
    fn advancing_moves_now_forward_and_never_back() {
        let clock = Clock::system();
        let before = clock.unix();

        clock.advance(86_400);
        clock.advance(-10_000);

        assert!(clock.unix() >= before + 86_400);
        assert!(clock.unix() < before + 86_400 + 60);
        assert_eq!(clock.offset_secs(), 86_400);
    }

    #[test]
    fn clones_share_one_clock() {
        let clock = Clock::system();
        let shared = clock.clone();

        shared.advance(60);

        assert_eq!(clock.offset_secs(), 60);
    }
}
