//! Whether Stripe's webhook deliveries still verify, as this instance sees them: when the last
//! delivery whose signature verified arrived (the
//! `billing_portal_webhook_last_verified_delivery_age_seconds` gauge), and the alarm raised when
//! deliveries have failed for [`WINDOW_SECS`] because their signature matches no configured
//! secret, with none verified in that time (a signing secret rolled on one side only). The
//! failures must span the window and number at least [`MIN_REFUSALS`]: a request or two with a
//! made-up signature on a quiet instance are not ten minutes of failing deliveries, while Stripe
//! retries each refused delivery and keeps sending new ones.
//!
//! Only [`SignatureError::NoMatchingSignature`] counts towards the alarm: Stripe always sends a
//! well-formed `Stripe-Signature`, so a missing or malformed one is someone else, and a timestamp
//! older than the tolerance is a clock (or a replay), not a secret. Every reason is still counted
//! in `billing_portal_webhook_signature_failures_total{reason}`.
//!
//! Time is the billing clock ([`crate::clock`]), the system clock in production, so the emulator's
//! test clock (and a test) can make ten minutes pass at once. The state is per instance, one small
//! mutex taken once per delivery and once per scrape; the caller logs, outside the lock.

use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};

use crate::stripe::signature::SignatureError;

/// How long without a verified delivery, while deliveries are refused for their signature,
/// before the alarm: ten minutes.
pub const WINDOW_SECS: i64 = 600;

/// How many deliveries must have been refused, over at least the window, before the alarm.
pub const MIN_REFUSALS: u64 = 3;

/// What a delivery changed, for the caller to log once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing worth a line of its own (the delivery's own line says enough).
    None,
    /// Deliveries have stopped verifying: no verified one in the window (`last_verified`, if any
    /// since start, is older), and this one's signature matches no secret. `refused` is how many
    /// were refused so since the last verified one (or since start).
    Alarm {
        last_verified: Option<DateTime<Utc>>,
        refused: u64,
    },
    /// A delivery verified after the alarm: `refused` were refused in between.
    Recovered { refused: u64 },
}

/// See the module documentation. One per instance.
#[derive(Debug, Default)]
pub struct WebhookHealth {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the last delivery whose signature verified arrived; `None` before the first since
    /// start.
    last_verified: Option<DateTime<Utc>>,
    /// Deliveries refused for matching no secret since `last_verified` (or since start).
    refused: u64,
    /// When the first of those was refused.
    first_refused: Option<DateTime<Utc>>,
    /// The alarm has been logged and no delivery has verified since.
    alarmed: bool,
}

impl WebhookHealth {
    pub fn new() -> Self {
        Self::default()
    }

    /// A delivery's signature verified at `at`: the age starts again from here, and an alarm
    /// ends ([`Change::Recovered`], once).
    pub fn verified(&self, at: DateTime<Utc>) -> Change {
        let mut state = self.lock();
        state.last_verified = Some(at);
        state.first_refused = None;
        let refused = std::mem::take(&mut state.refused);
        if std::mem::take(&mut state.alarmed) {
            Change::Recovered { refused }
        } else {
            Change::None
        }
    }

    /// A delivery was refused at `at` for `error`: [`Change::Alarm`] when its signature matches
    /// no secret, deliveries have been refused so for at least [`WINDOW_SECS`], and none
    /// verified in the [`WINDOW_SECS`] up to `at` (nor since start), unless the alarm is already
    /// raised.
    pub fn refused(&self, at: DateTime<Utc>, error: &SignatureError) -> Change {
        if *error != SignatureError::NoMatchingSignature {
            return Change::None;
        }
        let mut state = self.lock();
        state.refused = state.refused.saturating_add(1);
        let first = *state.first_refused.get_or_insert(at);
        let window = TimeDelta::seconds(WINDOW_SECS);
        let verified_within = state.last_verified.is_some_and(|last| at - last <= window);
        if verified_within || state.alarmed || at - first < window || state.refused < MIN_REFUSALS {
            return Change::None;
        }
        state.alarmed = true;
        Change::Alarm {
            last_verified: state.last_verified,
            refused: state.refused,
        }
    }

    /// Seconds from the last verified delivery to `now`, never negative (the system clock may
    /// step back); `None` before the first since start.
    pub fn last_verified_age(&self, now: DateTime<Utc>) -> Option<f64> {
        let last = self.lock().last_verified?;
        let millis = (now - last).num_milliseconds().max(0);
        // Exact up to 2^53 ms (285,000 years).
        Some(millis as f64 / 1000.0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent at every step, so a panic elsewhere while it was held
        // leaves nothing to repair.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MISMATCH: SignatureError = SignatureError::NoMatchingSignature;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn alarmed(change: &Change) -> bool {
        matches!(change, Change::Alarm { .. })
    }

    #[test]
    fn deliveries_refused_for_ten_minutes_after_the_last_verified_one_raise_one_alarm() {
        let health = WebhookHealth::new();
        health.verified(at(0));

        let within: Vec<Change> = (1..=10)
            .map(|minute| health.refused(at(minute * 60), &MISMATCH))
            .collect();
        let after = health.refused(at(60 + WINDOW_SECS), &MISMATCH);
        let later: Vec<Change> = (12..=60)
            .map(|minute| health.refused(at(minute * 60 + 1), &MISMATCH))
            .collect();

        assert!(within.iter().all(|c| *c == Change::None), "{within:?}");
        assert_eq!(
            after,
            Change::Alarm {
                last_verified: Some(at(0)),
                refused: 11
            }
        );
        assert!(later.iter().all(|c| *c == Change::None), "{later:?}");
    }

    #[test]
    fn a_verified_delivery_inside_the_window_keeps_the_alarm_off() {
        let health = WebhookHealth::new();
        health.verified(at(0));
        health.refused(at(300), &MISMATCH);
        health.verified(at(540));

        let refused = health.refused(at(WINDOW_SECS + 120), &MISMATCH);

        assert_eq!(refused, Change::None);
    }

    #[test]
    fn a_delivery_verified_exactly_ten_minutes_ago_is_still_inside_the_window() {
        let health = WebhookHealth::new();
        health.verified(at(0));
        health.refused(at(1), &MISMATCH);

        assert_eq!(health.refused(at(WINDOW_SECS), &MISMATCH), Change::None);
        assert!(alarmed(&health.refused(at(WINDOW_SECS + 1), &MISMATCH)));
    }

    #[test]
    fn with_none_verified_since_start_ten_minutes_of_mismatches_raise_the_alarm_and_one_does_not() {
        let health = WebhookHealth::new();

        let first = health.refused(at(0), &MISMATCH);
        let second = health.refused(at(1), &MISMATCH);
        let ten_minutes_on = health.refused(at(WINDOW_SECS), &MISMATCH);
        let after = health.refused(at(WINDOW_SECS + 1), &MISMATCH);

        assert_eq!((first, second), (Change::None, Change::None));
        assert_eq!(
            ten_minutes_on,
            Change::Alarm {
                last_verified: None,
                refused: 3
            }
        );
        assert_eq!(after, Change::None);
    }

    #[test]
    fn a_verified_delivery_ends_the_alarm_once_and_a_new_one_needs_ten_more_minutes() {
        let health = WebhookHealth::new();
        health.refused(at(0), &MISMATCH);
        health.refused(at(1), &MISMATCH);
        assert!(alarmed(&health.refused(at(WINDOW_SECS), &MISMATCH)));

        let recovered = health.verified(at(WINDOW_SECS + 2));
        let again = health.verified(at(WINDOW_SECS + 3));
        let soon = health.refused(at(WINDOW_SECS + 4), &MISMATCH);
        health.refused(at(WINDOW_SECS + 5), &MISMATCH);
        let late = health.refused(at(2 * WINDOW_SECS + 4), &MISMATCH);

        assert_eq!(recovered, Change::Recovered { refused: 3 });
        assert_eq!(again, Change::None);
        assert_eq!(soon, Change::None);
        assert_eq!(
            late,
            Change::Alarm {
                last_verified: Some(at(WINDOW_SECS + 3)),
                refused: 3
            }
        );
    }

    #[test]
    fn missing_malformed_and_expired_signatures_never_raise_the_alarm() {
        let health = WebhookHealth::new();
        health.verified(at(0));

        let changes: Vec<Change> = [
            SignatureError::MissingHeader,
            SignatureError::MalformedHeader,
            SignatureError::TimestampOutOfTolerance,
        ]
        .iter()
        .map(|error| health.refused(at(WINDOW_SECS * 6), error))
        .collect();

        assert!(changes.iter().all(|c| *c == Change::None), "{changes:?}");
        health.refused(at(WINDOW_SECS * 6), &MISMATCH);
        health.refused(at(WINDOW_SECS * 6 + 1), &MISMATCH);
        assert!(alarmed(&health.refused(at(WINDOW_SECS * 7), &MISMATCH)));
    }

    #[test]
    fn two_made_up_signatures_ten_minutes_apart_on_a_quiet_instance_raise_nothing() {
        let health = WebhookHealth::new();

        let first = health.refused(at(0), &MISMATCH);
        let second = health.refused(at(WINDOW_SECS + 1), &MISMATCH);

        assert_eq!((first, second), (Change::None, Change::None));
    }

    #[test]
    fn a_clock_stepped_back_neither_raises_the_alarm_nor_shows_a_negative_age() {
        let health = WebhookHealth::new();
        health.verified(at(WINDOW_SECS * 10));

        assert_eq!(health.refused(at(0), &MISMATCH), Change::None);
        assert_eq!(health.last_verified_age(at(0)), Some(0.0));
    }

    #[test]
    fn the_age_is_absent_before_any_verified_delivery_then_counts_from_the_last_one() {
        let health = WebhookHealth::new();
        assert_eq!(health.last_verified_age(at(0)), None);
        health.refused(at(0), &MISMATCH);
        assert_eq!(health.last_verified_age(at(1)), None);

        health.verified(at(10));
        health.verified(at(20));

        assert_eq!(health.last_verified_age(at(20)), Some(0.0));
        assert_eq!(health.last_verified_age(at(3620)), Some(3600.0));
        let half = at(21) + TimeDelta::milliseconds(500);
        assert_eq!(health.last_verified_age(half), Some(1.5));
    }
}
