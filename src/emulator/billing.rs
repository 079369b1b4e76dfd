//! What happens to the account as time passes: the test clock advance
//! (docs.stripe.com/billing/testing/test-clocks) runs everything that falls
//! due before the new time, in chronological order, each step stamped with
//! the virtual second it happens at and delivered as its own operation:
//!
//! - an open Checkout Session expires at its `expires_at`
//!   (`checkout.session.expired`, docs.stripe.com/api/events/types#event_types-checkout.session.expired);
//! - a paused collection resumes at its `resumes_at`;
//! - an `incomplete` subscription whose first payment failed expires 23 hours
//!   after creation (docs.stripe.com/billing/subscriptions/overview#payment-status);
//! - a scheduled cancellation ends the subscription at its `cancel_at`;
//! - a period end renews: the period advances and a renewal invoice is
//!   created (a paused collection voids, keeps or writes it off instead);
//!   Stripe finalizes and charges it about an hour later
//!   (docs.stripe.com/billing/invoices/subscription#subscription-renewal);
//! - a charge that fails makes the subscription `past_due`; Smart Retries try
//!   again [`RETRIES`] times, the last one `retry_days` after the first
//!   attempt (docs.stripe.com/billing/revenue-recovery/smart-retries); when
//!   that fails too, the account's dunning setting makes the subscription
//!   `unpaid`, cancels it, or leaves it `past_due`. A retry that succeeds
//!   (a working card put in meanwhile) makes it `active` again.

use serde_json::{json, Value};

use super::account::Emulator;
use super::model::*;
use super::objects::*;

/// Retries after the first failed charge of an invoice.
pub(crate) const RETRIES: u32 = 3;
/// Stripe finalizes and charges a renewal invoice about an hour after
/// creating it.
const FINALIZE_AFTER: i64 = 3_600;
/// An `incomplete` subscription expires 23 hours after creation.
pub(crate) const INCOMPLETE_EXPIRES_AFTER: i64 = 23 * 3_600;
/// How far one advance may go: enough for any test or demo, and a bound on
/// the work one request does.
const MAX_ADVANCE: i64 = 2 * 366 * DAY;

/// What falls due, in the order Stripe runs things due at the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    ExpireCheckout,
    Resume,
    Expire,
    Cancel,
    Renew,
    Charge,
}

/// When `sub` next has something due, and what.
fn next_due(sub: &Subscription) -> Option<(i64, Due)> {
    if sub.has_ended() {
        return None;
    }
    let mut due = Vec::new();
    if let Some(at) = sub.pause_collection.as_ref().and_then(|p| p.resumes_at) {
        due.push((at, Due::Resume));
    }
    if sub.status == "incomplete" {
        due.push((sub.created + INCOMPLETE_EXPIRES_AFTER, Due::Expire));
    }
    if let Some(at) = sub.cancel_at {
        due.push((at, Due::Cancel));
    }
    if matches!(sub.status.as_str(), "active" | "trialing" | "past_due") {
        due.push((sub.current_period_end, Due::Renew));
    }
    if let Some(c) = &sub.collecting {
        due.push((c.next_attempt, Due::Charge));
    }
    due.into_iter().min()
}

pub(crate) fn test_clock_json(id: &str, frozen_time: i64) -> Value {
    json!({
        "id": id, "object": "test_helpers.test_clock", "created": frozen_time,
        "deletes_after": frozen_time + 30 * DAY, "frozen_time": frozen_time,
        "livemode": false, "name": "Emulator account clock", "status": "ready",
        "status_details": {},
    })
}

impl Emulator {
    /// Stripe's test clock advance: runs everything due up to `frozen_time`
    /// (see the module doc), then leaves the shared clock there. Stripe
    /// answers `advancing` and works in the background; this answers once
    /// done, so the clock is `ready`.
    pub(crate) fn advance_clock(
        &self,
        state: &mut State,
        clock_id: &str,
        frozen_time: i64,
    ) -> Result<Value, StripeApiError> {
        let now = self.clock.unix();
        if frozen_time <= now {
            return Err(StripeApiError::invalid(
                format!(
                    "The test clock's new frozen_time ({frozen_time}) must be after its current \
                     frozen_time ({now})."
                ),
                Some("frozen_time"),
            ));
        }
        if frozen_time - now > MAX_ADVANCE {
            return Err(StripeApiError::invalid(
                format!("The emulator advances a test clock by at most {MAX_ADVANCE} seconds at a time."),
                Some("frozen_time"),
            ));
        }
        // Whatever this request did before is its own operation.
        self.end_operation(state);
        let pinned = state.at;
        loop {
            let sessions = state
                .checkout_sessions
                .values()
                .filter(|c| c.status == "open")
                .map(|c| (c.expires_at(), Due::ExpireCheckout, c.id.clone()));
            let next = state
                .subscriptions
                .values()
                .filter_map(|s| next_due(s).map(|(at, due)| (at, due, s.id.clone())))
                .chain(sessions)
                .filter(|(at, _, _)| *at <= frozen_time)
                .min();
            let Some((at, due, id)) = next else { break };
            state.at = Some(at);
            self.run_due(state, &id, due);
            self.end_operation(state);
        }
        state.at = pinned;
        self.clock.advance(frozen_time - self.clock.unix());
        Ok(test_clock_json(clock_id, frozen_time))
    }

    fn run_due(&self, state: &mut State, id: &str, due: Due) {
        match due {
            Due::ExpireCheckout => self.expire_checkout_session(state, id),
            Due::Resume => {
                let sub = state
                    .subscriptions
                    .get_mut(id)
                    .expect("due for a stored one");
                let previous =
                    json!({"pause_collection": subscription_json(sub)["pause_collection"]});
                sub.pause_collection = None;
                let object = subscription_json(sub);
                self.emit(
                    state,
                    "customer.subscription.updated",
                    object,
                    Some(previous),
                );
            }
            Due::Expire => {
                if let Some(invoice) = state.subscriptions[id].latest_invoice.clone() {
                    self.set_invoice_status(state, &invoice, "void", "invoice.voided");
                }
                self.set_status(state, id, "incomplete_expired");
            }
            Due::Cancel => self.end_subscription(state, id, "cancellation_requested"),
            Due::Renew => self.renew(state, id),
            Due::Charge => self.collect(state, id),
        }
    }

    /// An unpaid Checkout Session reaching its `expires_at`: it can no
    /// longer be paid (a 3-D Secure step in progress is dropped with it).
    pub(super) fn expire_checkout_session(&self, state: &mut State, id: &str) {
        let now = self.now(state);
        let url = self.checkout_url(id);
        let session = state
            .checkout_sessions
            .get_mut(id)
            .expect("due for a stored one");
        session.status = "expired";
        session.authenticating = None;
        let object = checkout_session_json(session, &url, now);
        self.emit(state, "checkout.session.expired", object, None);
    }

    /// Moves an invoice to `status` and emits `type_`.
    fn set_invoice_status(
        &self,
        state: &mut State,
        invoice: &str,
        status: &'static str,
        type_: &str,
    ) {
        if let Some(i) = state.invoice_mut(invoice) {
            i.status = status;
            i.next_payment_attempt = None;
            let object = invoice_json(i, &self.base_url);
            self.emit(state, type_, object, None);
        }
    }

    /// A period end: the next period starts and its invoice is created.
    fn renew(&self, state: &mut State, id: &str) {
        let t = self.now(state);
        let sub = state
            .subscriptions
            .get_mut(id)
            .expect("due for a stored one");
        let before = subscription_json(sub);
        let price = Emulator::price(&sub.price).expect("subscriptions only hold seeded prices");
        let (start, end) = (sub.current_period_end, add_month(sub.current_period_end));
        sub.current_period_start = start;
        sub.current_period_end = end;
        let (customer, paused) = (sub.customer.clone(), sub.pause_collection.clone());
        let invoice = self.new_invoice(
            state,
            id,
            &customer,
            &price,
            format!("{} (monthly)", price.product_name),
            "subscription_cycle",
            (start, end),
        );
        let sub = state.subscriptions.get_mut(id).expect("still stored");
        sub.latest_invoice = Some(invoice.clone());
        let previous =
            json!({"items": before["items"], "latest_invoice": before["latest_invoice"]});
        let object = subscription_json(sub);
        self.emit(
            state,
            "customer.subscription.updated",
            object,
            Some(previous),
        );
        let created = invoice_json(
            state.invoice_mut(&invoice).expect("just stored"),
            &self.base_url,
        );
        self.emit(state, "invoice.created", created, None);
        // Paused collection: no charge, so no failure either; the invoice is
        // handled per `behavior` (docs.stripe.com/billing/subscriptions/pause-payment).
        match paused.as_ref().map(|p| p.behavior.as_str()) {
            Some("void") => self.set_invoice_status(state, &invoice, "void", "invoice.voided"),
            Some("mark_uncollectible") => self.set_invoice_status(
                state,
                &invoice,
                "uncollectible",
                "invoice.marked_uncollectible",
            ),
            Some(_) => {}
            None => {
                let sub = state.subscriptions.get_mut(id).expect("still stored");
                // An older invoice still in dunning gives way to this one.
                sub.collecting = Some(Collection {
                    invoice: invoice.clone(),
                    attempts: 0,
                    first_attempt: None,
                    next_attempt: t + FINALIZE_AFTER,
                });
                if let Some(i) = state.invoice_mut(&invoice) {
                    i.next_payment_attempt = Some(t + FINALIZE_AFTER);
                }
            }
        }
    }

    /// One charge attempt of the invoice being collected.
    fn collect(&self, state: &mut State, id: &str) {
        let t = self.now(state);
        let sub = &state.subscriptions[id];
        let Some(mut collection) = sub.collecting.clone() else {
            return;
        };
        let (customer, status) = (sub.customer.clone(), sub.status.clone());
        if collection.attempts == 0 {
            // The hour's grace is over: the draft is finalized, then charged.
            self.set_invoice_status(state, &collection.invoice, "open", "invoice.finalized");
        }
        collection.attempts += 1;
        let first = *collection.first_attempt.get_or_insert(t);
        let retry_days = state.settings.retry_days;
        // Retries spread evenly over the window; the last at its end.
        let retry_at = (collection.attempts <= RETRIES).then(|| {
            first + retry_days * DAY * i64::from(collection.attempts) / i64::from(RETRIES)
        });
        if self.charge(state, &customer, &collection.invoice, retry_at) {
            state.subscriptions.get_mut(id).expect("stored").collecting = None;
            if status != "active" {
                self.set_status(state, id, "active");
            }
            return;
        }
        if let Some(retry_at) = retry_at {
            collection.next_attempt = retry_at;
            state.subscriptions.get_mut(id).expect("stored").collecting = Some(collection);
            if status == "active" {
                self.set_status(state, id, "past_due");
            }
            return;
        }
        state.subscriptions.get_mut(id).expect("stored").collecting = None;
        match state.settings.dunning {
            Dunning::Unpaid => {
                self.set_status(state, id, "unpaid");
            }
            Dunning::Canceled => self.end_subscription(state, id, "payment_failed"),
            Dunning::PastDue => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::Clock;

    fn emulator() -> Arc<Emulator> {
        Emulator::new(
            "http://e.test".into(),
            "http://e.test/w".into(),
            "whsec_x".into(),
            Clock::system(),
        )
    }

    /// A subscription created in `state` (events cleared), optionally with
    /// the card whose charges fail.
    fn subscribed(emu: &Emulator, state: &mut State, failing_card: bool) -> String {
        state.at = Some(emu.clock.unix());
        let customer = emu.create_customer(state, None, None, Default::default());
        let sub = emu
            .create_subscription(
                state,
                &customer.id,
                "price_emu_pro_monthly",
                Default::default(),
                BillingMode::Flexible,
                None,
            )
            .unwrap();
        if failing_card {
            emu.set_card_token(state, &customer.id, "tok_chargeCustomerFail")
                .unwrap();
        }
        state.at = None;
        // Ends the operation as the API does (its entitlements worked out),
        // its events dropped.
        emu.end_operation(state);
        state.batches.clear();
        sub.id
    }

    /// The events of every batch since the last call: (type, created, status).
    fn events(state: &mut State) -> Vec<(String, i64, String)> {
        std::mem::take(&mut state.batches)
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_string(),
                    e["created"].as_i64().unwrap(),
                    e["data"]["object"]["status"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn a_renewal_is_charged_an_hour_after_the_period_ends_and_stamped_then() {
        let emu = emulator();
        let mut state = State::default();
        state.settings.delivery_order = DeliveryOrder::InOrder;
        let id = subscribed(&emu, &mut state, false);
        let end = state.subscriptions[&id].current_period_end;

        emu.advance_clock(&mut state, "clock", end + DAY).unwrap();

        let sub = &state.subscriptions[&id];
        assert_eq!(sub.status, "active");
        assert_eq!(sub.current_period_start, end);
        assert_eq!(sub.current_period_end, add_month(end));
        let happened: Vec<(String, i64)> = events(&mut state)
            .into_iter()
            .map(|(t, at, _)| (t, at))
            .collect();
        assert_eq!(
            happened,
            [
                ("customer.subscription.updated".to_string(), end),
                ("invoice.created".into(), end),
                ("invoice.finalized".into(), end + FINALIZE_AFTER),
                ("invoice.paid".into(), end + FINALIZE_AFTER),
            ]
        );
        assert!(emu.clock.unix() >= end + DAY);
    }

    #[test]
    fn failed_retries_end_as_the_dunning_setting_says() {
        for (dunning, status) in [
            (Dunning::Unpaid, "unpaid"),
            (Dunning::Canceled, "canceled"),
            (Dunning::PastDue, "past_due"),
        ] {
            let emu = emulator();
            let mut state = State::default();
            state.settings.dunning = dunning;
            let id = subscribed(&emu, &mut state, true);
            let end = state.subscriptions[&id].current_period_end;
            let first_attempt = end + FINALIZE_AFTER;

            emu.advance_clock(&mut state, "clock", first_attempt + 14 * DAY - 1)
                .unwrap();
            assert_eq!(state.subscriptions[&id].status, "past_due", "{dunning:?}");
            let failures = events(&mut state)
                .iter()
                .filter(|(t, _, _)| t == "invoice.payment_failed")
                .count();
            assert_eq!(
                failures as u32, RETRIES,
                "{dunning:?}: the first attempt and all but the last retry"
            );

            emu.advance_clock(&mut state, "clock", first_attempt + 14 * DAY)
                .unwrap();
            assert_eq!(state.subscriptions[&id].status, status, "{dunning:?}");
        }
    }

    #[test]
    fn a_retry_after_the_card_is_replaced_makes_the_subscription_active() {
        let emu = emulator();
        let mut state = State::default();
        let id = subscribed(&emu, &mut state, true);
        let end = state.subscriptions[&id].current_period_end;
        emu.advance_clock(&mut state, "clock", end + 2 * 3_600)
            .unwrap();
        assert_eq!(state.subscriptions[&id].status, "past_due");

        let customer = state.subscriptions[&id].customer.clone();
        emu.set_card_token(&mut state, &customer, "tok_visa")
            .unwrap();
        emu.advance_clock(&mut state, "clock", end + 10 * DAY)
            .unwrap();

        assert_eq!(state.subscriptions[&id].status, "active");
        assert!(state.subscriptions[&id].collecting.is_none());
    }

    #[test]
    fn a_first_payment_that_fails_leaves_it_incomplete_until_it_expires() {
        let emu = emulator();
        let mut state = State {
            at: Some(emu.clock.unix()),
            ..Default::default()
        };
        let customer = emu.create_customer(&mut state, None, None, Default::default());
        emu.set_card_token(&mut state, &customer.id, "tok_chargeCustomerFail")
            .unwrap();
        let sub = emu
            .create_subscription(
                &mut state,
                &customer.id,
                "price_emu_pro_monthly",
                Default::default(),
                BillingMode::Flexible,
                None,
            )
            .unwrap();
        state.at = None;
        assert_eq!(sub.status, "incomplete");
        let types: Vec<&str> = state
            .outbox
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert!(types.contains(&"invoice.payment_failed"), "{types:?}");
        assert!(
            !types.contains(&"customer.subscription.updated"),
            "{types:?}"
        );
        state.outbox.clear();

        emu.advance_clock(
            &mut state,
            "clock",
            sub.created + INCOMPLETE_EXPIRES_AFTER - 1,
        )
        .unwrap();
        assert_eq!(state.subscriptions[&sub.id].status, "incomplete");
        emu.advance_clock(&mut state, "clock", sub.created + INCOMPLETE_EXPIRES_AFTER)
            .unwrap();
        assert_eq!(state.subscriptions[&sub.id].status, "incomplete_expired");
    }

    #[test]
    fn a_scheduled_cancellation_ends_the_subscription_at_the_period_end_without_renewing() {
        let emu = emulator();
        let mut state = State::default();
        let id = subscribed(&emu, &mut state, false);
        state.at = Some(emu.clock.unix());
        emu.schedule_cancel(&mut state, &id, None).unwrap();
        state.at = None;
        let end = state.subscriptions[&id].current_period_end;

        emu.advance_clock(&mut state, "clock", end + DAY).unwrap();

        let sub = &state.subscriptions[&id];
        assert_eq!((sub.status.as_str(), sub.ended_at), ("canceled", Some(end)));
        assert!(!state
            .invoices
            .iter()
            .any(|i| i.billing_reason == "subscription_cycle"));
    }

    #[test]
    fn a_renewal_while_collection_is_paused_charges_nothing_and_collection_resumes() {
        let emu = emulator();
        let mut state = State::default();
        let id = subscribed(&emu, &mut state, true);
        let end = state.subscriptions[&id].current_period_end;
        state.at = Some(emu.clock.unix());
        emu.update_subscription(
            &mut state,
            &id,
            SubscriptionChange {
                pause_collection: Some(Some(PauseCollection {
                    behavior: "void".into(),
                    resumes_at: Some(end + 5 * DAY),
                })),
                ..Default::default()
            },
        )
        .unwrap();
        state.at = None;

        emu.advance_clock(&mut state, "clock", end + 4 * DAY)
            .unwrap();
        let sub = &state.subscriptions[&id];
        assert_eq!(sub.status, "active", "no charge, so no failure");
        let latest = sub.latest_invoice.clone().unwrap();
        let renewal = state.invoice_mut(&latest).unwrap();
        assert_eq!(renewal.status, "void");

        emu.advance_clock(&mut state, "clock", end + 6 * DAY)
            .unwrap();
        assert_eq!(state.subscriptions[&id].pause_collection, None);
    }

    #[test]
    fn the_clock_refuses_to_go_back_or_stand_still() {
        let emu = emulator();
        let mut state = State::default();
        let now = emu.clock.unix();

        for to in [now - 10, now] {
            let err = emu.advance_clock(&mut state, "clock", to).unwrap_err();
            assert_eq!((err.status, err.param), (400, Some("frozen_time")));
        }
        assert_eq!(emu.clock.offset_secs(), 0);
    }
}
