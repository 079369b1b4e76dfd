//! A stateful, in-process Stripe emulator for a zero-config local run: when
//! `STRIPE_SECRET_KEY` is unset outside production, the service mounts it at
//! `/stripe-emulator/` on its own port and points its Stripe client there.
//!
//! It owns the emulated Stripe account: customers, subscriptions, seeded
//! products and prices, invoices, portal sessions and the account's settings,
//! kept in memory. It speaks Stripe's wire format ([`api`]: form-encoded
//! requests, Stripe error objects, `Idempotency-Key`), serves a hosted portal
//! ([`portal`]), and emits the events Stripe would for every state change,
//! signed and delivered to the service's real `/webhooks/stripe`
//! ([`delivery`]). The service's own code path does the sync; nothing is
//! shortcut.
//!
//! What it reproduces of real Stripe, because a fake that is kinder than Stripe
//! is a test the service passes for nothing (see `shared/stripe/BEHAVIOUR.md`):
//! - **Time.** Every stamp comes from the shared virtual [`Clock`]; a test
//!   clock advance ([`billing`]) runs renewals, payment retries, scheduled
//!   cancellations, resumptions and expiries in chronological order, each
//!   event stamped with the virtual second it happened at. Webhook signatures
//!   alone use the wall clock, as Stripe's do.
//! - **A new subscription** is created `incomplete` and turns `active` in the
//!   same second when its first invoice is paid; with a failing card it stays
//!   `incomplete` and expires after 23 hours.
//! - **Renewals** charge the customer's card an hour after the period ends;
//!   a failure makes the subscription `past_due`, Smart Retries try again
//!   within `retry_days`, and the account's dunning setting decides what the
//!   last failure does.
//! - **Billing modes**: new subscriptions are `flexible` (the default since
//!   API version 2025-09-30.clover), where the portal's "cancel at period end"
//!   sets `cancel_at` and leaves `cancel_at_period_end` false.
//! - **Pause collection**, and **delivery in no guaranteed order**.
//!
//! Test cards (docs.stripe.com/testing): 4242 4242 4242 4242 (`tok_visa`)
//! succeeds; 4000 0000 0000 0341 (`tok_chargeCustomerFail`) attaches to the
//! customer but every charge fails; 4000 0000 0000 0002 (`tok_chargeDeclined`)
//! is declined when attached. A customer with no card on file is charged as if
//! it had 4242 4242 4242 4242, so API-created subscriptions need no card.
//!
//! Emulator-only endpoints (not Stripe APIs), for tests and the demo:
//! - `POST /stripe-emulator/v1/test_helpers/account_settings` with any of
//!   `dunning=unpaid|canceled|past_due` (what the last failed retry does;
//!   default `canceled`, Stripe's default), `retry_days` (1–28, default 14,
//!   Stripe's default retry window) and `delivery_order=shuffled|in_order|
//!   reverse` (the arrival order of one operation's events; default
//!   `shuffled`). Answers the settings.
//! - Stripe's own `POST /v1/test_helpers/test_clocks/{id}/advance`
//!   (`frozen_time=<unix secs>`) drives the one account-wide clock, whatever
//!   the id.
//!
//! Objects are rendered from Stripe's own example objects
//! (`fixtures/*.json`, from stripe/openapi `fixtures3.json`, MIT licence) so
//! async-stripe's strict types parse them.

pub mod api;
pub mod billing;
pub mod delivery;
pub mod demo;
pub mod portal;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};

use crate::clock::Clock;

/// Stripe's portal sessions expire after about five minutes.
pub const PORTAL_SESSION_TTL_SECS: i64 = 5 * 60;
pub const DAY: i64 = 86_400;
/// The API version events are rendered in: a clover-era version, where new
/// subscriptions default to flexible billing mode.
pub const API_VERSION: &str = "2025-09-30.clover";
/// The test card that always succeeds, the one that attaches but whose
/// charges fail, and the one that is declined (docs.stripe.com/testing).
pub const TEST_CARD_OK: &str = "4242424242424242";
pub const TEST_CARD_CHARGE_FAILS: &str = "4000000000000341";
pub const TEST_CARD_DECLINED: &str = "4000000000000002";

#[derive(Debug, Clone, Default)]
pub struct Address {
    pub line1: Option<String>,
    pub city: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Card {
    pub brand: String,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: u32,
    /// 4000 0000 0000 0341: attached, but every charge fails.
    pub charges_fail: bool,
}

#[derive(Debug, Clone)]
pub struct Customer {
    pub id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub address: Address,
    pub card: Option<Card>,
    pub created: i64,
}

#[derive(Debug, Clone)]
pub struct Price {
    pub id: &'static str,
    pub product: &'static str,
    pub product_name: &'static str,
    pub unit_amount: i64,
}

/// docs.stripe.com/billing/subscriptions/billing-mode
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingMode {
    Classic,
    Flexible,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseCollection {
    /// `keep_as_draft`, `mark_uncollectible` or `void`.
    pub behavior: String,
    pub resumes_at: Option<i64>,
}

/// An invoice Stripe is trying to collect, and when it tries next.
#[derive(Debug, Clone)]
pub struct Collection {
    pub invoice: String,
    /// Charge attempts made so far.
    pub attempts: u32,
    /// When the first attempt was made; retries are spread from there.
    pub first_attempt: Option<i64>,
    pub next_attempt: i64,
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub customer: String,
    pub price: String,
    pub status: String,
    pub billing_mode: BillingMode,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<i64>,
    /// When a cancellation was requested (Stripe's meaning, also for a
    /// scheduled one), not when the subscription ended.
    pub canceled_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub current_period_start: i64,
    pub current_period_end: i64,
    pub created: i64,
    pub metadata: BTreeMap<String, String>,
    pub cancellation_feedback: Option<String>,
    pub cancellation_comment: Option<String>,
    pub cancellation_reason: Option<&'static str>,
    pub pause_collection: Option<PauseCollection>,
    pub latest_invoice: Option<String>,
    pub collecting: Option<Collection>,
}

impl Subscription {
    /// Stripe's terminal statuses: nothing happens to these any more.
    pub fn has_ended(&self) -> bool {
        matches!(self.status.as_str(), "canceled" | "incomplete_expired")
    }
}

#[derive(Debug, Clone)]
pub struct Invoice {
    pub id: String,
    pub number: String,
    pub customer: String,
    pub subscription: Option<String>,
    pub amount: i64,
    pub description: String,
    pub created: i64,
    /// `draft`, `open`, `paid`, `uncollectible` or `void`.
    pub status: &'static str,
    pub billing_reason: &'static str,
    pub period_start: i64,
    pub period_end: i64,
    pub attempt_count: u32,
    pub paid_at: Option<i64>,
    pub next_payment_attempt: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowKind {
    PaymentMethodUpdate,
    SubscriptionCancel,
    SubscriptionUpdate,
}

#[derive(Debug, Clone)]
pub struct PortalSession {
    pub id: String,
    pub customer: String,
    pub return_url: String,
    pub created: i64,
    pub flow: Option<(FlowKind, Option<String>)>,
    pub configuration: String,
    pub locale: Option<String>,
}

/// What happens when the last retry of a renewal fails (Dashboard: Billing →
/// Revenue recovery → "If all retries for a payment fail").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dunning {
    Unpaid,
    Canceled,
    PastDue,
}

/// The arrival order of the events one operation emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOrder {
    /// Stripe's: no guaranteed order (docs.stripe.com/webhooks "Event ordering").
    Shuffled,
    InOrder,
    Reverse,
}

/// The emulated account's settings (emulator-only, see the module doc).
#[derive(Debug, Clone)]
pub struct AccountSettings {
    pub dunning: Dunning,
    pub retry_days: i64,
    pub delivery_order: DeliveryOrder,
}

impl Default for AccountSettings {
    fn default() -> Self {
        Self {
            dunning: Dunning::Canceled,
            retry_days: 14,
            delivery_order: DeliveryOrder::Shuffled,
        }
    }
}

impl AccountSettings {
    pub fn to_json(&self) -> Value {
        json!({
            "object": "emulator.account_settings",
            "dunning": match self.dunning {
                Dunning::Unpaid => "unpaid",
                Dunning::Canceled => "canceled",
                Dunning::PastDue => "past_due",
            },
            "retry_days": self.retry_days,
            "delivery_order": match self.delivery_order {
                DeliveryOrder::Shuffled => "shuffled",
                DeliveryOrder::InOrder => "in_order",
                DeliveryOrder::Reverse => "reverse",
            },
        })
    }
}

/// The emulated Stripe account.
#[derive(Default)]
pub struct State {
    pub customers: BTreeMap<String, Customer>,
    pub subscriptions: BTreeMap<String, Subscription>,
    pub invoices: Vec<Invoice>,
    pub sessions: HashMap<String, PortalSession>,
    pub settings: AccountSettings,
    /// Idempotency-Key → (request fingerprint, status, body).
    idempotency: HashMap<String, (String, u16, Value)>,
    /// The instant the current operation happens at: pinned for a whole
    /// operation so its events share one `created` second, as at Stripe, and
    /// set to each due time while a test clock advance replays the past.
    at: Option<i64>,
    /// Every event emitted, oldest first, for `GET /v1/events`.
    pub events: Vec<Value>,
    /// Events of the operation in progress.
    outbox: Vec<Value>,
    /// Finished operations' events, each in its arrival order, sent after
    /// the lock.
    batches: Vec<Vec<Value>>,
}

impl State {
    pub fn invoice_mut(&mut self, id: &str) -> Option<&mut Invoice> {
        self.invoices.iter_mut().find(|i| i.id == id)
    }
}

/// A Stripe-style error: HTTP status, type, code, message, param.
#[derive(Debug, Clone)]
pub struct StripeApiError {
    pub status: u16,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub message: String,
    pub param: Option<&'static str>,
}

impl StripeApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            status: 400,
            kind: "invalid_request_error",
            code: param.map(|_| "parameter_invalid"),
            message: message.into(),
            param,
        }
    }

    pub fn missing(what: &str, id: &str, param: &'static str) -> Self {
        Self {
            status: 404,
            kind: "invalid_request_error",
            code: Some("resource_missing"),
            message: format!("No such {what}: '{id}'"),
            param: Some(param),
        }
    }

    pub fn card_declined() -> Self {
        Self {
            status: 402,
            kind: "card_error",
            code: Some("card_declined"),
            message: "Your card was declined.".into(),
            param: None,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"error": {"type": self.kind, "code": self.code, "message": self.message, "param": self.param}})
    }
}

/// A change to a subscription, as the API or the portal asks for it.
#[derive(Debug, Default)]
pub struct SubscriptionChange {
    pub price: Option<String>,
    pub cancel_at_period_end: Option<bool>,
    /// `Some(None)` clears a scheduled cancellation.
    pub cancel_at: Option<Option<i64>>,
    /// `Some(None)` resumes collection.
    pub pause_collection: Option<Option<PauseCollection>>,
    pub feedback: Option<String>,
}

/// A Checkout stand-in: the session that completes with a subscription.
#[derive(Debug, Clone)]
pub struct Checkout {
    pub client_reference_id: String,
}

pub struct Emulator {
    state: Mutex<State>,
    counter: AtomicU64,
    /// `http://127.0.0.1:{port}/stripe-emulator`: the API base and portal host.
    pub base_url: String,
    deliveries: delivery::Deliveries,
    /// Shared with the service: the emulator's "now", which a test can
    /// advance like a Stripe test clock.
    pub clock: Clock,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// The test card behind one of Stripe's test tokens.
pub fn token_card(token: &str) -> Option<&'static str> {
    match token {
        "tok_visa" => Some(TEST_CARD_OK),
        "tok_chargeCustomerFail" => Some(TEST_CARD_CHARGE_FAILS),
        "tok_chargeDeclined" => Some(TEST_CARD_DECLINED),
        _ => None,
    }
}

/// One calendar month after `t`, as Stripe's monthly periods run (the 31st
/// runs to the last day of a shorter month).
pub fn add_month(t: i64) -> i64 {
    chrono::DateTime::from_timestamp(t, 0)
        .and_then(|d| d.checked_add_months(chrono::Months::new(1)))
        .map_or(t + 30 * DAY, |d| d.timestamp())
}

impl Emulator {
    pub fn new(
        base_url: String,
        webhook_url: String,
        webhook_secret: String,
        clock: Clock,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            counter: AtomicU64::new(0),
            base_url,
            deliveries: delivery::Deliveries::new(webhook_url, webhook_secret),
            clock,
        })
    }

    /// The seeded catalogue: two monthly plans.
    pub fn prices() -> [Price; 2] {
        [
            Price {
                id: "price_emu_starter_monthly",
                product: "prod_emu_starter",
                product_name: "Starter",
                unit_amount: 900,
            },
            Price {
                id: "price_emu_pro_monthly",
                product: "prod_emu_pro",
                product_name: "Pro",
                unit_amount: 2900,
            },
        ]
    }

    pub fn price(id: &str) -> Option<Price> {
        Self::prices().into_iter().find(|p| p.id == id)
    }

    /// A fresh id with Stripe's prefix, unique in this process.
    pub fn new_id(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!("{prefix}_emu{n}{}", &random[..10])
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind, still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The emulated "now": the instant of the operation in progress, else the
    /// virtual clock.
    pub fn now(&self, state: &State) -> i64 {
        state.at.unwrap_or_else(|| self.clock.unix())
    }

    /// Runs one operation on the account at one instant of the virtual clock,
    /// then sends the events it produced.
    pub fn with_state<T>(self: &Arc<Self>, f: impl FnOnce(&Self, &mut State) -> T) -> T {
        let mut state = self.lock();
        state.at = Some(self.clock.unix());
        let result = f(self, &mut state);
        state.at = None;
        self.end_operation(&mut state);
        // Queued under the lock, so operations arrive in the order they ran.
        for batch in std::mem::take(&mut state.batches) {
            self.deliveries.send(self, batch);
        }
        result
    }

    /// Closes the current operation: its events, put in the account's
    /// delivery order, become one batch.
    fn end_operation(&self, state: &mut State) {
        let mut events = std::mem::take(&mut state.outbox);
        if events.is_empty() {
            return;
        }
        match state.settings.delivery_order {
            DeliveryOrder::InOrder => {}
            DeliveryOrder::Reverse => events.reverse(),
            DeliveryOrder::Shuffled => delivery::shuffle(&mut events),
        }
        state.batches.push(events);
    }

    /// Replays the stored answer for a repeated `Idempotency-Key`, or runs
    /// `f` and stores its answer. A key reused with other parameters is an
    /// `idempotency_error`, as at Stripe.
    pub fn idempotent(
        self: &Arc<Self>,
        key: Option<&str>,
        fingerprint: String,
        f: impl FnOnce(&Self, &mut State) -> Result<Value, StripeApiError>,
    ) -> (u16, Value) {
        self.with_state(|emu, state| {
            if let Some((seen, status, body)) = key.and_then(|k| state.idempotency.get(k)) {
                if *seen != fingerprint {
                    let err = StripeApiError {
                        status: 400,
                        kind: "idempotency_error",
                        code: None,
                        message: "Keys for idempotent requests can only be used with the same \
                                  parameters they were first used with."
                            .into(),
                        param: None,
                    };
                    return (err.status, err.to_json());
                }
                return (*status, body.clone());
            }
            let (status, body) = match f(emu, state) {
                Ok(body) => (200, body),
                Err(err) => (err.status, err.to_json()),
            };
            if let Some(key) = key {
                state
                    .idempotency
                    .insert(key.to_string(), (fingerprint, status, body.clone()));
            }
            (status, body)
        })
    }

    // --- Operations shared by the API and the hosted portal. Each records the
    // events Stripe would send.

    pub fn create_customer(
        &self,
        state: &mut State,
        email: Option<String>,
        name: Option<String>,
        metadata: BTreeMap<String, String>,
    ) -> Customer {
        let customer = Customer {
            id: self.new_id("cus"),
            email,
            name,
            metadata,
            address: Address::default(),
            card: None,
            created: self.now(state),
        };
        state
            .customers
            .insert(customer.id.clone(), customer.clone());
        self.emit(state, "customer.created", customer_json(&customer), None);
        customer
    }

    pub fn delete_customer(&self, state: &mut State, id: &str) -> Result<Value, StripeApiError> {
        let customer = state
            .customers
            .remove(id)
            .ok_or_else(|| StripeApiError::missing("customer", id, "id"))?;
        // Deleting a customer cancels its subscriptions at once.
        let ids: Vec<String> = state
            .subscriptions
            .values()
            .filter(|s| s.customer == id && !s.has_ended())
            .map(|s| s.id.clone())
            .collect();
        for sub in ids {
            self.cancel_now(state, &sub, None, None)?;
        }
        self.emit(state, "customer.deleted", customer_json(&customer), None);
        Ok(json!({"id": id, "object": "customer", "deleted": true}))
    }

    /// Creates a subscription the way Stripe does with the default
    /// `payment_behavior=allow_incomplete`: `incomplete` until its first
    /// invoice is paid, which with a working card happens in the same second
    /// (so `created` and `updated` share a `created` second and may arrive in
    /// either order: laravel/cashier-stripe PR #1466). With a failing card it
    /// stays `incomplete` and expires after 23 hours
    /// (docs.stripe.com/billing/subscriptions/overview#payment-status).
    pub fn create_subscription(
        &self,
        state: &mut State,
        customer: &str,
        price: &str,
        metadata: BTreeMap<String, String>,
        billing_mode: BillingMode,
        checkout: Option<Checkout>,
    ) -> Result<Subscription, StripeApiError> {
        if !state.customers.contains_key(customer) {
            return Err(StripeApiError::missing("customer", customer, "customer"));
        }
        let price = Self::price(price)
            .ok_or_else(|| StripeApiError::missing("price", price, "items[0][price]"))?;
        let t = self.now(state);
        let id = self.new_id("sub");
        let invoice = self.new_invoice(
            state,
            &id,
            customer,
            &price,
            format!("{} (monthly)", price.product_name),
            "subscription_create",
            (t, t),
        );
        let mut sub = Subscription {
            id: id.clone(),
            customer: customer.to_string(),
            price: price.id.to_string(),
            status: "incomplete".into(),
            billing_mode,
            cancel_at_period_end: false,
            cancel_at: None,
            canceled_at: None,
            ended_at: None,
            current_period_start: t,
            current_period_end: add_month(t),
            created: t,
            metadata,
            cancellation_feedback: None,
            cancellation_comment: None,
            cancellation_reason: None,
            pause_collection: None,
            latest_invoice: Some(invoice.clone()),
            collecting: None,
        };
        state.subscriptions.insert(id.clone(), sub.clone());
        self.emit(
            state,
            "customer.subscription.created",
            subscription_json(&sub),
            None,
        );
        // A failed first payment is not retried: the customer must confirm
        // it before the subscription expires.
        if self.charge(state, customer, &invoice, None) {
            sub = self.set_status(state, &id, "active");
            if let Some(checkout) = checkout {
                let session = json!({
                    "id": self.new_id("cs_test"), "object": "checkout.session",
                    "mode": "subscription", "status": "complete", "payment_status": "paid",
                    "customer": customer, "subscription": id, "invoice": invoice,
                    "client_reference_id": checkout.client_reference_id,
                    "created": t, "livemode": false, "metadata": {},
                });
                self.emit(state, "checkout.session.completed", session, None);
            }
        }
        Ok(sub)
    }

    /// Moves a subscription to `status`, emitting `updated` with the status
    /// it had.
    fn set_status(&self, state: &mut State, id: &str, status: &str) -> Subscription {
        let sub = state
            .subscriptions
            .get_mut(id)
            .expect("set_status is called for a stored subscription");
        let previous = json!({"status": sub.status});
        sub.status = status.to_string();
        let sub = sub.clone();
        self.emit(
            state,
            "customer.subscription.updated",
            subscription_json(&sub),
            Some(previous),
        );
        sub
    }

    /// Attempts to pay an open or draft invoice with its customer's card:
    /// marks it paid (`invoice.paid`) or counts a failed attempt
    /// (`invoice.payment_failed`, carrying `retry_at` as its
    /// `next_payment_attempt`). Returns whether it was paid.
    fn charge(
        &self,
        state: &mut State,
        customer: &str,
        invoice: &str,
        retry_at: Option<i64>,
    ) -> bool {
        let t = self.now(state);
        // No card on file is charged as the emulator's implicit 4242 card.
        let fails = state
            .customers
            .get(customer)
            .and_then(|c| c.card.as_ref())
            .is_some_and(|c| c.charges_fail);
        let Some(i) = state.invoice_mut(invoice) else {
            return false;
        };
        i.attempt_count += 1;
        i.next_payment_attempt = None;
        if fails {
            i.status = "open";
            i.next_payment_attempt = retry_at;
        } else {
            i.status = "paid";
            i.paid_at = Some(t);
        }
        let object = invoice_json(i, &self.base_url);
        let type_ = if fails {
            "invoice.payment_failed"
        } else {
            "invoice.paid"
        };
        self.emit(state, type_, object, None);
        !fails
    }

    fn live_subscription<'a>(
        state: &'a mut State,
        id: &str,
    ) -> Result<&'a mut Subscription, StripeApiError> {
        let sub = state
            .subscriptions
            .get_mut(id)
            .ok_or_else(|| StripeApiError::missing("subscription", id, "id"))?;
        if sub.has_ended() {
            return Err(StripeApiError::invalid(
                format!(
                    "A {} subscription can only update its cancellation_details and metadata.",
                    sub.status.replace('_', " ")
                ),
                None,
            ));
        }
        Ok(sub)
    }

    /// The portal's "cancel at the end of the billing period": in flexible
    /// mode the portal sets `cancel_at` to the period end and leaves
    /// `cancel_at_period_end` false; in classic mode it sets
    /// `cancel_at_period_end` (docs.stripe.com/billing/subscriptions/billing-mode/compare;
    /// stripe/stripe-node #2470).
    pub fn schedule_cancel(
        &self,
        state: &mut State,
        id: &str,
        feedback: Option<String>,
    ) -> Result<Subscription, StripeApiError> {
        let sub = Self::live_subscription(state, id)?;
        let change = match sub.billing_mode {
            BillingMode::Flexible => SubscriptionChange {
                cancel_at: Some(Some(sub.current_period_end)),
                feedback,
                ..Default::default()
            },
            BillingMode::Classic => SubscriptionChange {
                cancel_at_period_end: Some(true),
                feedback,
                ..Default::default()
            },
        };
        self.update_subscription(state, id, change)
    }

    /// Applies a change as Stripe's `POST /v1/subscriptions/{id}` does, and
    /// emits one `updated` with the `previous_attributes` it changed.
    ///
    /// `cancel_at_period_end` behaves the same in both billing modes through
    /// the API (only the portal chooses `cancel_at` in flexible mode); it and
    /// `cancel_at` cannot be sent together, as at Stripe; either one set
    /// records `canceled_at` (docs.stripe.com/api/subscriptions/object#subscription_object-canceled_at).
    pub fn update_subscription(
        &self,
        state: &mut State,
        id: &str,
        change: SubscriptionChange,
    ) -> Result<Subscription, StripeApiError> {
        let t = self.now(state);
        let new_price = change
            .price
            .as_deref()
            .map(|p| {
                Self::price(p).ok_or_else(|| StripeApiError::missing("price", p, "items[0][price]"))
            })
            .transpose()?;
        if change.cancel_at_period_end.is_some() && change.cancel_at.is_some() {
            return Err(StripeApiError::invalid(
                "You may only specify one of these parameters: cancel_at, cancel_at_period_end.",
                Some("cancel_at"),
            ));
        }
        if let Some(Some(at)) = change.cancel_at {
            if at <= t {
                return Err(StripeApiError::invalid(
                    format!("cancel_at must be in the future (now is {t})."),
                    Some("cancel_at"),
                ));
            }
        }
        if let Some(Some(pause)) = &change.pause_collection {
            if pause.resumes_at.is_some_and(|r| r <= t) {
                return Err(StripeApiError::invalid(
                    format!("pause_collection[resumes_at] must be in the future (now is {t})."),
                    Some("pause_collection"),
                ));
            }
        }
        let sub = Self::live_subscription(state, id)?;
        let before = subscription_json(sub);
        let mut previous = serde_json::Map::new();
        let record = |field: &str, previous: &mut serde_json::Map<String, Value>| {
            previous
                .entry(field.to_string())
                .or_insert_with(|| before[field].clone());
        };
        if let Some(price) = &new_price {
            if sub.price != price.id {
                record("items", &mut previous);
                sub.price = price.id.to_string();
            }
        }
        let scheduled = match (change.cancel_at_period_end, change.cancel_at) {
            (Some(true), _) => Some((true, Some(sub.current_period_end))),
            (Some(false), _) | (_, Some(None)) => Some((false, None)),
            (None, Some(Some(at))) => Some((false, Some(at))),
            (None, None) => None,
        };
        if let Some((at_period_end, cancel_at)) = scheduled {
            if (sub.cancel_at_period_end, sub.cancel_at) != (at_period_end, cancel_at) {
                if sub.cancel_at_period_end != at_period_end {
                    record("cancel_at_period_end", &mut previous);
                }
                if sub.cancel_at != cancel_at {
                    record("cancel_at", &mut previous);
                }
                let canceled_at = cancel_at.map(|_| t);
                if sub.canceled_at != canceled_at {
                    record("canceled_at", &mut previous);
                }
                sub.cancel_at_period_end = at_period_end;
                sub.cancel_at = cancel_at;
                sub.canceled_at = canceled_at;
                sub.cancellation_reason = cancel_at.map(|_| "cancellation_requested");
                sub.cancellation_feedback = cancel_at.and(change.feedback);
            }
        }
        if let Some(pause) = change.pause_collection {
            if sub.pause_collection != pause {
                record("pause_collection", &mut previous);
                sub.pause_collection = pause;
            }
        }
        let sub = sub.clone();
        if !previous.is_empty() {
            self.emit(
                state,
                "customer.subscription.updated",
                subscription_json(&sub),
                Some(Value::Object(previous)),
            );
        }
        if let Some(price) = new_price {
            if before["items"]["data"][0]["price"]["id"] != json!(price.id) {
                let invoice = self.new_invoice(
                    state,
                    &sub.id,
                    &sub.customer,
                    &price,
                    format!("Switch to {}", price.product_name),
                    "subscription_update",
                    (t, t),
                );
                self.charge(state, &sub.customer, &invoice, None);
            }
        }
        Ok(sub)
    }

    pub fn cancel_now(
        &self,
        state: &mut State,
        id: &str,
        feedback: Option<String>,
        comment: Option<String>,
    ) -> Result<Subscription, StripeApiError> {
        let t = self.now(state);
        let sub = Self::live_subscription(state, id)?;
        sub.canceled_at = Some(t);
        sub.cancellation_feedback = feedback;
        sub.cancellation_comment = comment;
        self.end_subscription(state, id, "cancellation_requested");
        Ok(state.subscriptions[id].clone())
    }

    /// Ends a subscription now (`customer.subscription.deleted`, status
    /// `canceled`): cancelled by request, at its `cancel_at`, or by dunning.
    fn end_subscription(&self, state: &mut State, id: &str, reason: &'static str) {
        let t = self.now(state);
        let Some(sub) = state.subscriptions.get_mut(id) else {
            return;
        };
        sub.status = "canceled".into();
        sub.ended_at = Some(t);
        sub.canceled_at.get_or_insert(t);
        sub.cancellation_reason = Some(reason);
        sub.collecting = None;
        let object = subscription_json(sub);
        self.emit(state, "customer.subscription.deleted", object, None);
    }

    /// Attaches a card by number (the portal's form). 4000 0000 0000 0341
    /// attaches, but its charges fail; 4000 0000 0000 0002 is declined.
    pub fn set_card(
        &self,
        state: &mut State,
        customer: &str,
        number: &str,
        exp_month: u32,
        exp_year: u32,
    ) -> Result<(), StripeApiError> {
        let digits: String = number.chars().filter(char::is_ascii_digit).collect();
        if digits == TEST_CARD_DECLINED {
            return Err(StripeApiError::card_declined());
        }
        if digits != TEST_CARD_OK && digits != TEST_CARD_CHARGE_FAILS {
            return Err(StripeApiError {
                status: 402,
                kind: "card_error",
                code: Some("incorrect_number"),
                message: "Your card number is incorrect. In this emulator use the test card \
                          4242 4242 4242 4242 (or 4000 0000 0000 0341, whose charges fail)."
                    .into(),
                param: Some("number"),
            });
        }
        if !(1..=12).contains(&exp_month) || exp_year < 2000 {
            return Err(StripeApiError::invalid(
                "Your card's expiration date is invalid.",
                Some("exp_month"),
            ));
        }
        let c = state
            .customers
            .get_mut(customer)
            .ok_or_else(|| StripeApiError::missing("customer", customer, "customer"))?;
        let card = Card {
            brand: "visa".into(),
            last4: digits[12..].to_string(),
            exp_month,
            exp_year,
            charges_fail: digits == TEST_CARD_CHARGE_FAILS,
        };
        c.card = Some(card.clone());
        let object = customer_json(c);
        let pm = self.new_id("pm");
        self.emit(
            state,
            "payment_method.attached",
            json!({"id": pm, "object": "payment_method", "type": "card", "customer": customer,
                   "card": {"brand": "visa", "last4": card.last4, "exp_month": exp_month, "exp_year": exp_year}}),
            None,
        );
        self.emit(state, "customer.updated", object, None);
        Ok(())
    }

    /// Attaches a card by Stripe's test token (the API's `source`
    /// parameter): `tok_visa`, `tok_chargeCustomerFail` or
    /// `tok_chargeDeclined` (docs.stripe.com/testing#cards-responses).
    pub fn set_card_token(
        &self,
        state: &mut State,
        customer: &str,
        token: &str,
    ) -> Result<(), StripeApiError> {
        let number =
            token_card(token).ok_or_else(|| StripeApiError::missing("token", token, "source"))?;
        let year = chrono::DateTime::from_timestamp(self.now(state), 0)
            .map_or(2030, |d| chrono::Datelike::year(&d) as u32 + 3);
        self.set_card(state, customer, number, 12, year)
    }

    pub fn set_address(
        &self,
        state: &mut State,
        customer: &str,
        name: Option<String>,
        address: Address,
    ) -> Result<(), StripeApiError> {
        let c = state
            .customers
            .get_mut(customer)
            .ok_or_else(|| StripeApiError::missing("customer", customer, "customer"))?;
        c.address = address;
        if name.is_some() {
            c.name = name;
        }
        let object = customer_json(c);
        self.emit(state, "customer.updated", object, None);
        Ok(())
    }

    /// Stores a new draft invoice and returns its id.
    #[allow(clippy::too_many_arguments)]
    fn new_invoice(
        &self,
        state: &mut State,
        subscription: &str,
        customer: &str,
        price: &Price,
        description: String,
        billing_reason: &'static str,
        (period_start, period_end): (i64, i64),
    ) -> String {
        let invoice = Invoice {
            id: self.new_id("in"),
            number: format!("EMU-{:04}", state.invoices.len() + 1),
            customer: customer.to_string(),
            subscription: Some(subscription.to_string()),
            amount: price.unit_amount,
            description,
            created: self.now(state),
            status: "draft",
            billing_reason,
            period_start,
            period_end,
            attempt_count: 0,
            paid_at: None,
            next_payment_attempt: None,
        };
        let id = invoice.id.clone();
        state.invoices.push(invoice);
        id
    }

    fn emit(&self, state: &mut State, type_: &str, object: Value, previous: Option<Value>) {
        let mut data = json!({ "object": object });
        if let Some(previous) = previous {
            data["previous_attributes"] = previous;
        }
        let created = self.now(state);
        let event = json!({
            "id": self.new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": created,
            "data": data,
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null},
            "type": type_,
        });
        state.events.push(event.clone());
        state.outbox.push(event);
    }

    pub fn portal_url(&self, session: &str) -> String {
        format!("{}/p/session/{session}", self.base_url)
    }
}

// --- Stripe-shaped JSON.

fn fixture(name: &str) -> Value {
    let text = match name {
        "subscription" => include_str!("fixtures/subscription.json"),
        "price" => include_str!("fixtures/price.json"),
        "product" => include_str!("fixtures/product.json"),
        _ => include_str!("fixtures/invoice.json"),
    };
    serde_json::from_str(text).expect("embedded fixtures are valid JSON")
}

fn address_json(a: &Address) -> Value {
    json!({"city": a.city, "country": a.country, "line1": a.line1, "line2": null,
           "postal_code": a.postal_code, "state": null})
}

pub fn customer_json(c: &Customer) -> Value {
    json!({
        "id": c.id, "object": "customer", "address": address_json(&c.address), "balance": 0,
        "created": c.created, "currency": "usd", "default_source": null, "delinquent": false,
        "description": null, "discount": null, "email": c.email,
        "invoice_prefix": "EMU", "invoice_settings": {"custom_fields": null,
            "default_payment_method": null, "footer": null, "rendering_options": null},
        "livemode": false, "metadata": c.metadata, "name": c.name, "next_invoice_sequence": 1,
        "phone": null, "preferred_locales": [], "shipping": null, "tax_exempt": "none",
        "test_clock": null, "customer_account": null
    })
}

pub fn price_json(p: &Price) -> Value {
    let mut v = fixture("price");
    v["id"] = json!(p.id);
    v["product"] = json!(p.product);
    v["unit_amount"] = json!(p.unit_amount);
    v["unit_amount_decimal"] = json!(p.unit_amount.to_string());
    v["nickname"] = json!(format!("{} monthly", p.product_name));
    v["transform_quantity"] = Value::Null;
    v["created"] = json!(1_700_000_000);
    v
}

pub fn product_json(p: &Price) -> Value {
    let mut v = fixture("product");
    v["id"] = json!(p.product);
    v["name"] = json!(p.product_name);
    v["description"] = json!(format!("The {} plan", p.product_name));
    v["default_price"] = json!(p.id);
    v["package_dimensions"] = Value::Null;
    v["type"] = json!("service");
    v["created"] = json!(1_700_000_000);
    v["updated"] = json!(1_700_000_000);
    v
}

pub fn subscription_json(s: &Subscription) -> Value {
    let price = Emulator::price(&s.price).expect("subscriptions only hold seeded prices");
    let mut v = fixture("subscription");
    v["id"] = json!(s.id);
    v["customer"] = json!(s.customer);
    v["status"] = json!(s.status);
    v["created"] = json!(s.created);
    v["start_date"] = json!(s.created);
    v["billing_cycle_anchor"] = json!(s.current_period_start);
    v["billing_cycle_anchor_config"] = Value::Null;
    v["billing_schedules"] = json!([]);
    v["cancel_at_period_end"] = json!(s.cancel_at_period_end);
    v["cancel_at"] = json!(s.cancel_at);
    v["canceled_at"] = json!(s.canceled_at);
    v["ended_at"] = json!(s.ended_at);
    v["cancellation_details"] = json!({"comment": s.cancellation_comment,
        "feedback": s.cancellation_feedback, "reason": s.cancellation_reason});
    v["billing_mode"] = match s.billing_mode {
        BillingMode::Flexible => json!({"type": "flexible",
            "flexible": {"proration_discounts": "included"}, "updated_at": s.created}),
        BillingMode::Classic => json!({"type": "classic", "flexible": null, "updated_at": null}),
    };
    v["metadata"] = json!(s.metadata);
    v["pause_collection"] = match &s.pause_collection {
        Some(p) => json!({"behavior": p.behavior, "resumes_at": p.resumes_at}),
        None => Value::Null,
    };
    v["pending_update"] = Value::Null;
    v["next_pending_invoice_item_invoice"] = Value::Null;
    v["latest_invoice"] = json!(s.latest_invoice);
    v["trial_end"] = Value::Null;
    v["trial_start"] = Value::Null;
    let item = &mut v["items"]["data"][0];
    item["id"] = json!(format!("si_{}", &s.id[4..]));
    item["subscription"] = json!(s.id);
    item["created"] = json!(s.created);
    item["current_period_start"] = json!(s.current_period_start);
    item["current_period_end"] = json!(s.current_period_end);
    item["price"] = price_json(&price);
    let plan = &mut item["plan"];
    plan["id"] = json!(price.id);
    plan["product"] = json!(price.product);
    plan["amount"] = json!(price.unit_amount);
    plan["amount_decimal"] = json!(price.unit_amount.to_string());
    plan["currency"] = json!("usd");
    plan["billing_scheme"] = json!("per_unit");
    plan["interval_count"] = json!(1);
    plan["livemode"] = json!(false);
    plan["created"] = json!(1_700_000_000);
    plan["transform_usage"] = Value::Null;
    v["items"]["url"] = json!(format!("/v1/subscription_items?subscription={}", s.id));
    v
}

pub fn invoice_json(i: &Invoice, base_url: &str) -> Value {
    let mut v = fixture("invoice");
    v["id"] = json!(i.id);
    v["number"] = json!(i.number);
    v["customer"] = json!(i.customer);
    v["created"] = json!(i.created);
    v["effective_at"] = json!(i.created);
    v["period_start"] = json!(i.period_start);
    v["period_end"] = json!(i.period_end);
    v["status"] = json!(i.status);
    v["description"] = json!(i.description);
    for field in [
        "amount_due",
        "subtotal",
        "subtotal_excluding_tax",
        "total",
        "total_excluding_tax",
    ] {
        v[field] = json!(i.amount);
    }
    let paid = if i.status == "paid" { i.amount } else { 0 };
    v["amount_paid"] = json!(paid);
    v["amount_remaining"] = json!(i.amount - paid);
    v["attempt_count"] = json!(i.attempt_count);
    v["attempted"] = json!(i.attempt_count > 0);
    v["auto_advance"] = json!(matches!(i.status, "draft" | "open"));
    v["currency"] = json!("usd");
    v["billing_reason"] = json!(i.billing_reason);
    v["collection_method"] = json!("charge_automatically");
    let finalized = (i.status != "draft").then_some(i.created);
    v["status_transitions"] = json!({"finalized_at": finalized,
        "marked_uncollectible_at": (i.status == "uncollectible").then_some(i.created),
        "paid_at": i.paid_at, "voided_at": (i.status == "void").then_some(i.created)});
    v["parent"] = json!({"quote_details": null, "type": "subscription_details",
        "subscription_details": {"metadata": null, "subscription": i.subscription}});
    v["lines"] = json!({"object": "list", "data": [], "has_more": false,
                        "url": format!("/v1/invoices/{}/lines", i.id)});
    v["hosted_invoice_url"] = json!(format!("{base_url}/invoices/{}/pdf", i.id));
    v["invoice_pdf"] = json!(format!("{base_url}/invoices/{}/pdf", i.id));
    v["webhooks_delivered_at"] = json!(i.created);
    v["due_date"] = Value::Null;
    v["automatically_finalizes_at"] = Value::Null;
    v["next_payment_attempt"] = json!(i.next_payment_attempt);
    v
}

pub fn portal_session_json(s: &PortalSession, url: &str) -> Value {
    let flow = s.flow.as_ref().map(|(kind, sub)| {
        let type_ = match kind {
            FlowKind::PaymentMethodUpdate => "payment_method_update",
            FlowKind::SubscriptionCancel => "subscription_cancel",
            FlowKind::SubscriptionUpdate => "subscription_update",
        };
        json!({
            "type": type_,
            "after_completion": {"type": "redirect", "redirect": {"return_url": s.return_url},
                                 "hosted_confirmation": null},
            "subscription_cancel": if *kind == FlowKind::SubscriptionCancel {
                json!({"subscription": sub, "retention": null}) } else { Value::Null },
            "subscription_update": if *kind == FlowKind::SubscriptionUpdate {
                json!({"subscription": sub}) } else { Value::Null },
            "subscription_update_confirm": null
        })
    });
    json!({
        "id": s.id, "object": "billing_portal.session", "configuration": s.configuration,
        "created": s.created, "customer": s.customer, "flow": flow, "livemode": false,
        "locale": s.locale, "on_behalf_of": null, "return_url": s.return_url, "url": url,
        "customer_account": null
    })
}

pub fn list_json(data: Vec<Value>, url: &str, has_more: bool) -> Value {
    json!({"object": "list", "data": data, "has_more": has_more, "url": url})
}
