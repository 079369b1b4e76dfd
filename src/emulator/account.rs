//! The emulated account's operations, shared by the API and the hosted
//! portal: each changes the [`State`] under one lock, at one instant of the
//! virtual clock, and records the events Stripe would send, which
//! [`super::delivery`] sends once the operation ends.
//!
//! The lock is the account's row in Postgres ([`super::store`]), so the
//! operations of every instance on one database take turns on one account;
//! an async mutex keeps this instance's copy of it, which an operation brings
//! up to date first. Database work runs on the blocking thread pool, never on
//! an async worker (the connection travels with the open transaction, as the
//! service's own locking work does); the operation itself, plain computation
//! on the copy, runs on the worker in between, so it may borrow the request
//! and build its answer in place.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::delivery;
use super::model::*;
use super::objects::*;
use super::store::{self, Seen, Snapshot, Store};
use crate::clock::Clock;
use crate::db::DbError;

/// How long an `Idempotency-Key` is remembered (Stripe: at least 24 hours).
const IDEMPOTENCY_KEY_TTL_SECS: i64 = DAY;
/// How far back `GET /v1/events` reaches, as at Stripe: older events are
/// never listed again, so they are not kept.
pub(crate) const EVENT_RETENTION_SECS: i64 = 30 * DAY;

/// Why an operation could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("the emulator's database is unavailable: {0}")]
    Unavailable(#[from] DbError),
    #[error(
        "the emulator's account stored in Postgres (schema {schema}) cannot be read: {0}; \
         `billing-portal emulator-reset` starts it over",
        schema = store::SCHEMA
    )]
    Unreadable(String),
}

/// This instance's copy of the account.
struct Replica {
    state: State,
    /// What of the stored account it holds; `None` when it may differ (an
    /// operation failed or was cancelled before it was written): the next
    /// one reads everything again.
    seen: Option<Seen>,
    /// The document as last read or written, so an operation that changed
    /// nothing (a `GET` through the API) writes nothing.
    document: String,
    /// The stored test clock offset as last read or written.
    clock_offset_secs: i64,
}

impl Replica {
    fn empty() -> Self {
        Self {
            state: State::default(),
            seen: None,
            document: String::new(),
            clock_offset_secs: 0,
        }
    }
}

/// Unix seconds of real time.
type WallClock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// An API answer as [`Emulator::idempotent`] gives it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
    /// The saved answer to an earlier request with the same
    /// `Idempotency-Key`, which Stripe marks `Idempotent-Replayed: true`.
    pub(crate) replayed: bool,
}

impl Answer {
    fn error(err: &StripeApiError) -> Self {
        Self {
            status: err.status,
            body: err.to_json(),
            replayed: false,
        }
    }
}

/// An `Idempotency-Key` claimed by the request executing with it, given back
/// when the request has answered (or was dropped).
struct InFlight<'a> {
    keys: &'a std::sync::Mutex<HashSet<String>>,
    key: String,
}

impl<'a> InFlight<'a> {
    /// `None` when another request holds `key`.
    fn claim(keys: &'a std::sync::Mutex<HashSet<String>>, key: &str) -> Option<Self> {
        let mut held = keys.lock().unwrap_or_else(PoisonError::into_inner);
        held.insert(key.to_string()).then(|| Self {
            keys,
            key: key.to_string(),
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut held = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        held.remove(&self.key);
    }
}

pub(crate) struct Emulator {
    account: Mutex<Replica>,
    /// The `Idempotency-Key`s of the requests this instance is executing,
    /// for Stripe's 409 `idempotency_key_in_use`. In memory, not in the
    /// store: a claim there would cost two more round trips per keyed POST on
    /// the emulator's two-connection pool, and a way to expire the claims of
    /// a process that died mid-request, where memory forgets them with the
    /// process. So two instances sharing one database do not see each other's
    /// requests in flight: the second one takes the account's lock after the
    /// first stored its answer (it is stored before the answer is held for
    /// `latency_ms`) and gets that answer replayed rather than a 409, kinder
    /// than Stripe but never run twice.
    in_flight: std::sync::Mutex<HashSet<String>>,
    /// The real time by which keys are forgotten (Stripe forgets them by
    /// real time, whatever a test clock says); a unit test sets its own.
    wall_clock: WallClock,
    /// `None` in unit tests: the account lives in memory only.
    store: Option<Store>,
    counter: AtomicU64,
    /// `http://127.0.0.1:{port}/stripe-emulator`: the API base and portal host.
    pub(crate) base_url: String,
    pub(super) deliveries: delivery::Deliveries,
    /// Shared with the service: the emulator's "now", which a test can
    /// advance like a Stripe test clock.
    pub(crate) clock: Clock,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// An account in memory only, as the unit tests use.
    #[cfg(test)]
    pub(crate) fn new(
        base_url: String,
        webhook_url: String,
        webhook_secret: String,
        clock: Clock,
    ) -> Arc<Self> {
        Arc::new(Self::build(
            base_url,
            webhook_url,
            webhook_secret,
            clock,
            None,
        ))
    }

    /// The account kept in `store`, as `snapshot` read it at start-up: the
    /// test clock takes up its stored offset here, before the service uses it.
    pub(crate) fn stored(
        base_url: String,
        webhook_url: String,
        webhook_secret: String,
        clock: Clock,
        store: Store,
        snapshot: Snapshot,
    ) -> Result<Arc<Self>, StoreError> {
        let mut emulator = Self::build(base_url, webhook_url, webhook_secret, clock, Some(store));
        let mut replica = std::mem::replace(emulator.account.get_mut(), Replica::empty());
        emulator.refresh(&mut replica, snapshot)?;
        *emulator.account.get_mut() = replica;
        Ok(Arc::new(emulator))
    }

    fn build(
        base_url: String,
        webhook_url: String,
        webhook_secret: String,
        clock: Clock,
        store: Option<Store>,
    ) -> Self {
        Self {
            account: Mutex::new(Replica::empty()),
            in_flight: std::sync::Mutex::default(),
            wall_clock: Arc::new(|| chrono::Utc::now().timestamp()),
            store,
            counter: AtomicU64::new(0),
            base_url,
            deliveries: delivery::Deliveries::new(webhook_url, webhook_secret),
            clock,
        }
    }

    /// The seeded catalogue: two monthly plans.
    pub(crate) fn prices() -> [Price; 2] {
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

    pub(crate) fn price(id: &str) -> Option<Price> {
        Self::prices().into_iter().find(|p| p.id == id)
    }

    /// A fresh id with Stripe's prefix: the account's count of ids handed out
    /// (stored with it, so unique across restarts and instances), then
    /// randomness.
    pub(crate) fn new_id(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!("{prefix}_{}{n}{}", super::ID_MARK, &random[..10])
    }

    /// Brings the copy up to what `snapshot` read: the document and the
    /// events when they changed, the test clock and the id count.
    fn refresh(&self, replica: &mut Replica, snapshot: Snapshot) -> Result<(), StoreError> {
        if let Some(text) = &snapshot.state {
            let unreadable = |e: serde_json::Error| StoreError::Unreadable(e.to_string());
            let mut state = store::parse_state(text).map_err(unreadable)?;
            let events: Vec<Value> = match &snapshot.events {
                Some(events) => serde_json::from_str(events).map_err(unreadable)?,
                None => Vec::new(),
            };
            state.events = if snapshot.all_events {
                events
            } else {
                let mut held = std::mem::take(&mut replica.state.events);
                held.extend(events);
                held
            };
            replica.document = serde_json::to_string(&state).map_err(unreadable)?;
            replica.state = state;
        }
        replica.seen = Some(snapshot.seen);
        replica.clock_offset_secs = snapshot.clock_offset_secs;
        // Another instance may have advanced the test clock.
        self.clock
            .advance(snapshot.clock_offset_secs - self.clock.offset_secs());
        self.counter
            .fetch_max(replica.state.ids_issued, Ordering::SeqCst);
        Ok(())
    }

    /// Reads the account without changing it (no operation, no events),
    /// as it is stored now.
    pub(crate) async fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, StoreError> {
        let mut replica = self.account.lock().await;
        if let Some(store) = &self.store {
            let snapshot = store.read(replica.seen).await?;
            self.refresh(&mut replica, snapshot)?;
        }
        Ok(f(&replica.state))
    }

    /// The emulated "now": the instant of the operation in progress, else the
    /// virtual clock.
    pub(crate) fn now(&self, state: &State) -> i64 {
        state.at.unwrap_or_else(|| self.clock.unix())
    }

    /// Runs one operation on the account at one instant of the virtual clock,
    /// stores it, then sends the events it produced. With a store, the
    /// account's row stays locked from the read to the commit, so operations
    /// of all instances take turns; one that fails to be stored answers
    /// [`StoreError`] and leaves nothing behind (its events are not sent).
    pub(crate) async fn with_state<T>(
        self: &Arc<Self>,
        f: impl FnOnce(&Self, &mut State) -> T,
    ) -> Result<T, StoreError> {
        let mut replica = self.account.lock().await;
        let Some(store) = &self.store else {
            let result = self.operate(&mut replica.state, f);
            self.send(&mut replica.state);
            return Ok(result);
        };
        let (tx, snapshot) = store.lock(replica.seen).await?;
        self.refresh(&mut replica, snapshot)?;
        // Until it is stored, the replica is ahead of the account.
        let Some(seen) = replica.seen.take() else {
            return Err(StoreError::Unreadable("no version was read".into()));
        };
        let emitted_before = replica.state.events.len();
        let result = self.operate(&mut replica.state, f);
        let state = &mut replica.state;
        let events: Vec<(i64, String)> = state.events[emitted_before..]
            .iter()
            .map(|e| (e["created"].as_i64().unwrap_or_default(), e.to_string()))
            .collect();
        let oldest_kept = self.clock.unix() - EVENT_RETENTION_SECS;
        state
            .events
            .retain(|e| e["created"].as_i64().unwrap_or_default() >= oldest_kept);
        let document =
            serde_json::to_string(state).map_err(|e| StoreError::Unreadable(e.to_string()))?;
        let clock_offset_secs = self.clock.offset_secs();
        let unchanged = events.is_empty()
            && document == replica.document
            && clock_offset_secs <= replica.clock_offset_secs;
        if unchanged {
            // Nothing to write (a `GET`): only the lock to let go of.
            store.release(tx).await?;
            replica.seen = Some(seen);
        } else {
            let write = store::Write {
                state: document.clone(),
                clock_offset_secs,
                events,
                oldest_kept,
            };
            replica.seen = Some(store.commit(tx, seen.last_event, write).await?);
            replica.document = document;
            replica.clock_offset_secs = clock_offset_secs;
        }
        self.send(&mut replica.state);
        Ok(result)
    }

    /// `f` at one pinned instant, its events closed into a batch.
    fn operate<T>(&self, state: &mut State, f: impl FnOnce(&Self, &mut State) -> T) -> T {
        state.at = Some(self.clock.unix());
        let result = f(self, state);
        // Still at the operation's instant: what it did to entitlements is
        // part of it, in the same second.
        self.end_operation(state);
        state.at = None;
        state.ids_issued = self.counter.load(Ordering::SeqCst);
        result
    }

    /// Queues the finished operations' events, under the lock, so operations
    /// arrive in the order they ran.
    fn send(self: &Arc<Self>, state: &mut State) {
        for batch in std::mem::take(&mut state.batches) {
            self.deliveries.send(self, batch);
        }
    }

    /// The seeded catalogue is made before the account's first customer, as
    /// a merchant makes products and prices before selling anything: its
    /// `product.created` and `price.created`, among the events of the
    /// operation that creates that customer. Only once per account.
    fn announce_catalogue(&self, state: &mut State) {
        if state.catalogue_announced {
            return;
        }
        state.catalogue_announced = true;
        for price in Self::prices() {
            self.emit(state, "product.created", product_json(&price), None);
        }
        for price in Self::prices() {
            self.emit(state, "price.created", price_json(&price), None);
        }
    }

    /// Closes the current operation: its events, put in the account's
    /// delivery order, become one batch.
    pub(super) fn end_operation(&self, state: &mut State) {
        // What the operation did to subscriptions may change entitlements.
        self.sync_entitlements(state);
        let mut events = std::mem::take(&mut state.outbox);
        if events.is_empty() || !state.settings.deliveries {
            return;
        }
        match state.settings.delivery_order {
            DeliveryOrder::InOrder => {}
            DeliveryOrder::Reverse => events.reverse(),
            DeliveryOrder::Shuffled => delivery::shuffle(&mut events),
        }
        state.batches.push(events);
    }

    /// Runs one API request the way Stripe's idempotency layer does
    /// (docs.stripe.com/api/idempotent_requests). With an `Idempotency-Key`:
    /// - while another request of this instance executes with the key, it is
    ///   refused (409 `idempotency_key_in_use`) and nothing is saved for it;
    /// - a key seen in the last 24 hours (real time) replays the saved answer,
    ///   same status and body, marked [`Answer::replayed`]; with other
    ///   parameters it is refused (400 `idempotency_error`);
    /// - otherwise `f` runs and its answer is saved under the key, in the same
    ///   transaction as what it changed, once its endpoint began executing:
    ///   a 200, or an error that [`StripeApiError::began_executing`] (a 5xx
    ///   included), or any error after a change. Validation failures before
    ///   execution are not saved: a retry runs again.
    ///
    /// When `held`, the answer of a request that ran is then held for the
    /// account's `latency_ms`, its key still in flight, the account's lock
    /// released meanwhile so other requests proceed.
    pub(crate) async fn idempotent(
        self: &Arc<Self>,
        key: Option<&str>,
        fingerprint: String,
        held: bool,
        f: impl FnOnce(&Self, &mut State) -> Result<Value, StripeApiError>,
    ) -> Result<Answer, StoreError> {
        let _in_flight = match key {
            None => None,
            Some(key) => match InFlight::claim(&self.in_flight, key) {
                Some(claim) => Some(claim),
                None => return Ok(Answer::error(&StripeApiError::key_in_use(key))),
            },
        };
        let (answer, hold_ms) = self
            .with_state(|emu, state| {
                if key.is_some() {
                    let wall = (emu.wall_clock)();
                    state
                        .idempotency
                        .retain(|_, r| wall - r.at < IDEMPOTENCY_KEY_TTL_SECS);
                }
                if let Some(saved) = key.and_then(|k| state.idempotency.get(k)) {
                    if saved.fingerprint != fingerprint {
                        return (Answer::error(&StripeApiError::key_reused()), 0);
                    }
                    let replay = Answer {
                        status: saved.status,
                        body: saved.body.clone(),
                        replayed: true,
                    };
                    return (replay, 0);
                }
                let events_before = state.outbox.len();
                let ids_before = emu.counter.load(Ordering::SeqCst);
                let result = f(emu, state);
                let changed = state.outbox.len() != events_before
                    || emu.counter.load(Ordering::SeqCst) != ids_before;
                let (status, body, saved) = match result {
                    Ok(body) => (200, body, true),
                    Err(err) => (err.status, err.to_json(), changed || err.began_executing()),
                };
                if let (Some(key), true) = (key, saved) {
                    let replay = Replay {
                        fingerprint,
                        status,
                        body: body.clone(),
                        at: (emu.wall_clock)(),
                    };
                    state.idempotency.insert(key.to_string(), replay);
                }
                let hold_ms = if held { state.settings.latency_ms } else { 0 };
                let answer = Answer {
                    status,
                    body,
                    replayed: false,
                };
                (answer, hold_ms)
            })
            .await?;
        if hold_ms > 0 {
            tokio::time::sleep(Duration::from_millis(hold_ms)).await;
        }
        Ok(answer)
    }

    // --- Operations shared by the API and the hosted portal. Each records the
    // events Stripe would send.

    pub(crate) fn create_customer(
        &self,
        state: &mut State,
        email: Option<String>,
        name: Option<String>,
        metadata: BTreeMap<String, String>,
    ) -> Customer {
        self.announce_catalogue(state);
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

    pub(crate) fn delete_customer(
        &self,
        state: &mut State,
        id: &str,
    ) -> Result<Value, StripeApiError> {
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
    /// Bought through the Checkout Session `checkout`, the subscription is
    /// recorded on it, and a paid first invoice completes it in the same
    /// second (`checkout.session.completed`).
    pub(crate) fn create_subscription(
        &self,
        state: &mut State,
        customer: &str,
        price: &str,
        metadata: BTreeMap<String, String>,
        billing_mode: BillingMode,
        checkout: Option<&str>,
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
        if let Some(session) = checkout.and_then(|id| state.checkout_sessions.get_mut(id)) {
            session.subscription = Some(id.clone());
        }
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
            let now = self.now(state);
            if let Some(session) = checkout.and_then(|id| state.checkout_sessions.get_mut(id)) {
                session.status = "complete";
                session.authenticating = None;
                session.invoice = Some(invoice.clone());
                let object = checkout_session_json(session, &self.checkout_url(&session.id), now);
                self.emit(state, "checkout.session.completed", object, None);
            }
        }
        Ok(sub)
    }

    /// Moves a subscription to `status`, emitting `updated` with the status
    /// it had.
    pub(super) fn set_status(&self, state: &mut State, id: &str, status: &str) -> Subscription {
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
    pub(super) fn charge(
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

    pub(super) fn live_subscription<'a>(
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
    pub(crate) fn schedule_cancel(
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
    pub(crate) fn update_subscription(
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

    pub(crate) fn cancel_now(
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
    pub(super) fn end_subscription(&self, state: &mut State, id: &str, reason: &'static str) {
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
    pub(crate) fn set_card(
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
    pub(crate) fn set_card_token(
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

    pub(crate) fn set_address(
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
    pub(super) fn new_invoice(
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

    pub(super) fn emit(
        &self,
        state: &mut State,
        type_: &str,
        object: Value,
        previous: Option<Value>,
    ) {
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

    pub(crate) fn portal_url(&self, session: &str) -> String {
        format!("{}/p/session/{session}", self.base_url)
    }

    /// A Checkout Session's hosted page, shaped like Stripe's
    /// `https://checkout.stripe.com/c/pay/cs_test_…`.
    pub(crate) fn checkout_url(&self, session: &str) -> String {
        format!("{}/c/pay/{session}", self.base_url)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use super::*;

    /// An account in memory that sends no webhooks, on a wall clock the test sets.
    fn emulator(wall: &Arc<AtomicI64>) -> Arc<Emulator> {
        let mut emu = Emulator::build(
            "http://e.test".into(),
            "http://e.test/w".into(),
            "whsec_x".into(),
            Clock::system(),
            None,
        );
        let wall = wall.clone();
        emu.wall_clock = Arc::new(move || wall.load(Ordering::SeqCst));
        emu.account.get_mut().state.settings.deliveries = false;
        Arc::new(emu)
    }

    async fn create_customer(emu: &Arc<Emulator>, key: &str) -> Answer {
        emu.idempotent(Some(key), "POST customers".into(), true, |emu, state| {
            let customer = emu.create_customer(state, None, None, BTreeMap::new());
            Ok(customer_json(&customer))
        })
        .await
        .unwrap()
    }

    #[actix_rt::test]
    async fn a_key_is_replayed_for_a_day_of_real_time_then_forgotten() {
        let wall = Arc::new(AtomicI64::new(1_800_000_000));
        let emu = emulator(&wall);

        let first = create_customer(&emu, "k").await;
        wall.fetch_add(IDEMPOTENCY_KEY_TTL_SECS - 1, Ordering::SeqCst);
        let within_the_day = create_customer(&emu, "k").await;
        wall.fetch_add(1, Ordering::SeqCst);
        let a_day_later = create_customer(&emu, "k").await;
        let a_day_later_again = create_customer(&emu, "k").await;

        assert!(!first.replayed);
        assert!(within_the_day.replayed);
        assert_eq!(within_the_day.body, first.body);
        assert!(!a_day_later.replayed, "{a_day_later:?}");
        assert_ne!(a_day_later.body["id"], first.body["id"]);
        // Saved anew, for another day.
        assert!(a_day_later_again.replayed);
        assert_eq!(a_day_later_again.body, a_day_later.body);
        let customers = emu.read(|state| state.customers.len()).await.unwrap();
        assert_eq!(customers, 2);
    }

    /// An `invalid_request_error` is a refusal before execution, not saved,
    /// unless the operation had already changed the account: that request
    /// did execute, and running it again on a retry would do it twice.
    #[actix_rt::test]
    async fn a_refusal_is_saved_only_when_the_operation_had_changed_something() {
        let wall = Arc::new(AtomicI64::new(1_800_000_000));
        let emu = emulator(&wall);
        let refuse = |key: &'static str, change: bool| {
            let emu = emu.clone();
            async move {
                emu.idempotent(Some(key), "POST x".into(), true, |emu, state| {
                    if change {
                        emu.create_customer(state, None, None, BTreeMap::new());
                    }
                    Err(StripeApiError::invalid("No.", Some("x")))
                })
                .await
                .unwrap()
            }
        };

        let checked = [
            refuse("checked", false).await,
            refuse("checked", false).await,
        ];
        let changed = [refuse("changed", true).await, refuse("changed", true).await];

        assert_eq!(
            checked.each_ref().map(|a| (a.status, a.replayed)),
            [(400, false); 2]
        );
        assert_eq!(
            changed.each_ref().map(|a| (a.status, a.replayed)),
            [(400, false), (400, true)]
        );
        let customers = emu.read(|state| state.customers.len()).await.unwrap();
        assert_eq!(customers, 1);
    }

    /// The latency holds the answer with the key in flight, not the account:
    /// other operations run meanwhile. The tokio clock is paused, so the held
    /// answer waits until the test advances it.
    #[actix_rt::test]
    async fn a_held_answer_keeps_its_key_in_flight_and_the_account_free() {
        tokio::time::pause();
        let wall = Arc::new(AtomicI64::new(1_800_000_000));
        let emu = emulator(&wall);
        emu.with_state(|_, state| state.settings.latency_ms = 1_000)
            .await
            .unwrap();

        let held = actix_rt::spawn({
            let emu = emu.clone();
            async move { create_customer(&emu, "k").await }
        });
        // Until the first request has run (its customer stored) and is held.
        while emu.read(|state| state.customers.len()).await.unwrap() == 0 {
            tokio::task::yield_now().await;
        }
        let meanwhile = emu
            .with_state(|emu, state| emu.create_customer(state, None, None, BTreeMap::new()))
            .await
            .unwrap();
        let concurrent = create_customer(&emu, "k").await;
        let still_held = !held.is_finished();
        tokio::time::advance(Duration::from_millis(1_000)).await;
        let first = held.await.unwrap();
        let after = create_customer(&emu, "k").await;

        assert!(still_held);
        assert!(!meanwhile.id.is_empty());
        assert_eq!(concurrent.status, 409, "{concurrent:?}");
        assert_eq!(concurrent.body["error"]["code"], "idempotency_key_in_use");
        assert_eq!((first.status, first.replayed), (200, false));
        assert_eq!((after.status, after.replayed), (200, true), "{after:?}");
        assert_eq!(after.body, first.body);
    }
}
