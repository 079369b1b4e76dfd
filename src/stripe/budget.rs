//! The read budget: how fast the background reads (catch-up from the Events
//! API and the drift check) may call Stripe, shared by both so that healing
//! never spends the request rate users' clicks need. Stripe limits an account
//! to 25 requests per second in test mode and 100 in live mode
//! (docs.stripe.com/rate-limits); `STRIPE_READ_BUDGET_PER_SEC` (default 10)
//! stays well under either. Requests are spaced with jitter (governor), and a
//! 429 pauses every budgeted read for a jittered, doubling cool-down, so
//! several instances that were throttled together do not retry together.
//! Retries of one request follow Stripe's own libraries' rules, which obey
//! Stripe's `Stripe-Should-Retry` header (see [`super::transport`]).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Jitter, Quota, RateLimiter};

use super::client::StripeFailure;
use tokio::time::Instant;

/// The first cool-down after a 429; it doubles with each 429 in a row.
const COOL_DOWN: Duration = Duration::from_secs(1);
/// The longest cool-down: a minute, whatever Stripe keeps answering.
const MAX_COOL_DOWN: Duration = Duration::from_secs(60);

pub struct ReadBudget {
    limiter: DefaultDirectRateLimiter,
    /// No budgeted read starts before this instant (after a 429).
    paused_until: Mutex<Option<Instant>>,
    /// 429s in a row: the exponent of the next cool-down.
    strikes: AtomicU32,
}

impl std::fmt::Debug for ReadBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBudget").finish_non_exhaustive()
    }
}

impl ReadBudget {
    pub fn per_second(rate: NonZeroU32) -> Self {
        Self {
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            paused_until: Mutex::new(None),
            strikes: AtomicU32::new(0),
        }
    }

    /// Waits until one more read fits the budget.
    pub async fn take(&self) {
        let paused = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = paused {
            tokio::time::sleep_until(until).await;
        }
        self.limiter
            .until_ready_with_jitter(Jitter::up_to(Duration::from_millis(50)))
            .await;
    }

    /// Stripe answered 429: every budgeted read waits out a cool-down of
    /// between half and all of `COOL_DOWN × 2^(429s in a row)`, at most a
    /// minute. Returns the cool-down.
    pub fn throttled(&self) -> Duration {
        let strikes = self.strikes.fetch_add(1, Ordering::Relaxed).min(6);
        let full = (COOL_DOWN * 2u32.pow(strikes)).min(MAX_COOL_DOWN);
        let wait = Jitter::new(full / 2, full / 2) + Duration::ZERO;
        let until = Instant::now() + wait;
        let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        *paused = Some(paused.map_or(until, |p| p.max(until)));
        wait
    }

    /// A budgeted read succeeded: the next 429 starts the cool-down afresh.
    pub fn succeeded(&self) {
        self.strikes.store(0, Ordering::Relaxed);
    }

    /// Notes what a budgeted read answered (a success resets the cool-down,
    /// a 429 starts one) and hands the answer on.
    pub fn noted<T>(&self, answer: Result<T, StripeFailure>) -> Result<T, StripeFailure> {
        match &answer {
            Ok(_) => self.succeeded(),
            Err(StripeFailure::RateLimited { .. }) => {
                self.throttled();
            }
            Err(_) => {}
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_429_in_a_row_doubles_the_jittered_cool_down_up_to_a_minute() {
        let budget = ReadBudget::per_second(NonZeroU32::new(10).unwrap());
        for strikes in 0..10u32 {
            let full = (COOL_DOWN * 2u32.pow(strikes.min(6))).min(MAX_COOL_DOWN);
            let wait = budget.throttled();
            assert!(
                wait >= full / 2 && wait <= full,
                "429 number {}: {wait:?} not within {:?}..={full:?}",
                strikes + 1,
                full / 2
            );
        }
        budget.succeeded();
        assert!(budget.throttled() <= COOL_DOWN, "a success starts afresh");
    }

    #[test]
    fn cool_downs_are_jittered_so_throttled_instances_do_not_retry_together() {
        let waits: std::collections::HashSet<Duration> = (0..20)
            .map(|_| ReadBudget::per_second(NonZeroU32::new(10).unwrap()).throttled())
            .collect();
        assert!(waits.len() > 1, "20 first cool-downs were all {waits:?}");
    }

    #[actix_rt::test]
    async fn after_a_429_no_budgeted_read_starts_before_the_cool_down_ends() {
        // Tokio's clock, paused: the cool-down passes without waiting for it.
        tokio::time::pause();
        let budget = ReadBudget::per_second(NonZeroU32::new(10).unwrap());
        let wait = budget.throttled();
        let start = Instant::now();
        budget.take().await;
        assert!(start.elapsed() >= wait, "{:?} < {wait:?}", start.elapsed());
    }
}
