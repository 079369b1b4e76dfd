//! Receiving one verified, parsed Stripe event: record it and apply it once,
//! in order ([`super::sync`]), re-reading the subscription from Stripe when
//! `STRIPE_WEBHOOK_REFETCH` asks for it or when the event cannot be ordered
//! against the stored state ([`Outcome::Undecidable`]). An event of the other
//! Stripe mode than the key's is only recorded ([`Outcome::WrongMode`]). A
//! subscription change or an entitlement summary has the customer's
//! entitlements read in the background ([`entitlements`]).

use std::sync::Arc;

use super::refetch::apply_event_refetched;
use super::sync::{self, Outcome};
use super::{entitlements, plans};
use super::{Billing, Error};
use crate::db::{self, events};
use crate::stripe::client::StripeMode;
use crate::stripe::events::{Event, EventKind};

/// What the delivery did. An error means nothing was acknowledged: the caller
/// answers so that Stripe delivers the event again. A subscription stored with
/// a price or product Postgres does not know yet has them read from Stripe in
/// the background ([`plans::learn_in_background`]).
pub(crate) async fn receive(billing: &Billing, event: Event) -> Result<Outcome, Error> {
    let plan = match &event.kind {
        EventKind::Subscription(sub, _) => sub
            .price_id
            .clone()
            .map(|price| (price, sub.product_id.clone())),
        _ => None,
    };
    // Whose entitlements a subscription change or a summary event may change.
    let entitled = match &event.kind {
        EventKind::Subscription(sub, _) => Some(sub.customer_id.clone()),
        EventKind::EntitlementSummary { customer_id } => Some(customer_id.clone()),
        _ => None,
    };
    let outcome = apply(billing, event).await?;
    if let (Outcome::Applied, Some((price, product))) = (outcome, plan) {
        plans::learn_in_background(billing, &price, product.as_deref());
    }
    if let (Outcome::Applied, Some(customer)) = (outcome, entitled) {
        // Owed since the event's transaction; a failed read is the catch-up's.
        entitlements::refresh_in_background(billing, &customer);
    }
    Ok(outcome)
}

async fn apply(billing: &Billing, mut event: Event) -> Result<Outcome, Error> {
    // A test-mode endpoint secret (`stripe listen` prints one) beside a live
    // key would otherwise let a test-mode checkout make a user paid for real.
    let mode = StripeMode::of_livemode(event.livemode);
    if mode != billing.stripe_mode {
        log::warn!(
            "webhook {} {}: a {mode}-mode event, but STRIPE_SECRET_KEY is a {}-mode key; \
             recorded as wrong_mode, nothing changed (is a {mode}-mode webhook secret configured?)",
            event.id,
            event.type_,
            billing.stripe_mode
        );
        return Ok(db::run(&billing.pool, move |conn| {
            sync::record_only(conn, &event, Outcome::WrongMode)
        })
        .await?);
    }
    // Ordering trusts `created`; one dated far ahead (a sender's bad clock,
    // or a forgery with a leaked secret) would make every real event after it
    // stale until that date. Beyond the signature tolerance it counts as now.
    let now = billing.clock.unix();
    if event.created > now.saturating_add(billing.future_tolerance_secs) {
        log::warn!(
            "webhook {} {}: created {} s in the future; ordered as received now",
            event.id,
            event.type_,
            event.created - now
        );
        event.created = now;
    }
    if billing.webhook_refetch && matches!(event.kind, EventKind::Subscription(..)) {
        let id = event.id.clone();
        // A redelivery must not cost a Stripe call.
        if db::run(&billing.pool, move |conn| events::exists(conn, &id)).await? {
            return Ok(Outcome::Duplicate);
        }
        return apply_event_refetched(billing, event.into()).await;
    }

    // Shared, not copied: a tie re-reads and applies the same event again.
    let event = Arc::new(event);
    let (rule, clock, payload) = (billing.rule, billing.clock.clone(), event.clone());
    let key = billing.client_reference.clone();
    let (outcome, touched) = db::run(&billing.pool, move |conn| {
        sync::apply_event(conn, &payload, None, &key, rule, clock.now())
    })
    .await?;
    billing.touched(&touched);
    if outcome != Outcome::Undecidable {
        return Ok(outcome);
    }
    // Two events of one second that neither lifecycle order nor
    // previous_attributes can order: Stripe's current state decides.
    log::info!(
        "webhook {} {}: same-second tie; re-reading from Stripe",
        event.id,
        event.type_
    );
    billing.metrics.tie_refetches.inc();
    apply_event_refetched(billing, event).await
}
