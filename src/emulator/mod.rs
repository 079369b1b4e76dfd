//! A stateful, in-process Stripe emulator for a zero-config local run: when
//! `STRIPE_SECRET_KEY` is unset outside production, the service mounts it at
//! `/stripe-emulator/` on its own port and points its Stripe client there.
//!
//! It owns the emulated Stripe account: customers, subscriptions, seeded
//! products and prices, invoices and portal sessions, kept in memory. It speaks
//! Stripe's wire format ([`api`]: form-encoded requests, Stripe error objects,
//! `Idempotency-Key`), serves a hosted portal ([`portal`]), and emits the event
//! Stripe would for every state change, delivered asynchronously and signed to
//! the service's real `/webhooks/stripe`, retried with backoff on non-2xx. The
//! service's own code path does the sync; nothing is shortcut.
//!
//! Objects are rendered from Stripe's own example objects
//! (`fixtures/*.json`, from stripe/openapi `fixtures3.json`, MIT licence) so
//! async-stripe's strict types parse them.

pub mod api;
pub mod demo;
pub mod portal;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};

use crate::clock::Clock;
use crate::stripe::signature;

/// Stripe's portal sessions expire after about five minutes.
pub const PORTAL_SESSION_TTL_SECS: i64 = 5 * 60;
const DAY: i64 = 86_400;
/// Delivery attempts per event, with doubling backoff from [`RETRY_BASE`].
const DELIVERY_ATTEMPTS: u32 = 8;
const RETRY_BASE: Duration = Duration::from_millis(500);
/// The test card that always succeeds, and the one that is always declined.
pub const TEST_CARD_OK: &str = "4242424242424242";
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

#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub customer: String,
    pub price: String,
    pub status: String,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<i64>,
    pub current_period_start: i64,
    pub current_period_end: i64,
    pub created: i64,
    pub metadata: BTreeMap<String, String>,
    pub cancellation_feedback: Option<String>,
    pub cancellation_comment: Option<String>,
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

/// The emulated Stripe account.
#[derive(Default)]
pub struct State {
    pub customers: BTreeMap<String, Customer>,
    pub subscriptions: BTreeMap<String, Subscription>,
    pub invoices: Vec<Invoice>,
    pub sessions: HashMap<String, PortalSession>,
    /// Idempotency-Key → (request fingerprint, status, body).
    idempotency: HashMap<String, (String, u16, Value)>,
    /// Events produced by the current operation, delivered after the lock.
    outbox: Vec<Value>,
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

pub struct Emulator {
    state: Mutex<State>,
    counter: AtomicU64,
    /// `http://127.0.0.1:{port}/stripe-emulator`: the API base and portal host.
    pub base_url: String,
    webhook_url: String,
    webhook_secret: String,
    http: reqwest::Client,
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

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
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
            webhook_url,
            webhook_secret,
            http: reqwest::Client::new(),
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

    /// Runs one operation on the account, then sends the events it produced.
    pub fn with_state<T>(self: &Arc<Self>, f: impl FnOnce(&Self, &mut State) -> T) -> T {
        let (result, events) = {
            let mut state = self.lock();
            let result = f(self, &mut state);
            (result, std::mem::take(&mut state.outbox))
        };
        for event in events {
            self.deliver(event);
        }
        result
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
            created: now(),
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
            .filter(|s| s.customer == id && s.status != "canceled")
            .map(|s| s.id.clone())
            .collect();
        for sub in ids {
            self.cancel_now(state, &sub, None, None)?;
        }
        self.emit(state, "customer.deleted", customer_json(&customer), None);
        Ok(json!({"id": id, "object": "customer", "deleted": true}))
    }

    pub fn create_subscription(
        &self,
        state: &mut State,
        customer: &str,
        price: &str,
        metadata: BTreeMap<String, String>,
    ) -> Result<Subscription, StripeApiError> {
        if !state.customers.contains_key(customer) {
            return Err(StripeApiError::missing("customer", customer, "customer"));
        }
        let price = Self::price(price)
            .ok_or_else(|| StripeApiError::missing("price", price, "items[0][price]"))?;
        let t = now();
        let sub = Subscription {
            id: self.new_id("sub"),
            customer: customer.to_string(),
            price: price.id.to_string(),
            status: "active".into(),
            cancel_at_period_end: false,
            canceled_at: None,
            current_period_start: t,
            current_period_end: t + 30 * DAY,
            created: t,
            metadata,
            cancellation_feedback: None,
            cancellation_comment: None,
        };
        state.subscriptions.insert(sub.id.clone(), sub.clone());
        self.emit(
            state,
            "customer.subscription.created",
            subscription_json(&sub),
            None,
        );
        self.invoice(
            state,
            &sub,
            &price,
            format!("{} (monthly)", price.product_name),
        );
        Ok(sub)
    }

    fn live_subscription<'a>(
        state: &'a mut State,
        id: &str,
    ) -> Result<&'a mut Subscription, StripeApiError> {
        let sub = state
            .subscriptions
            .get_mut(id)
            .ok_or_else(|| StripeApiError::missing("subscription", id, "id"))?;
        if sub.status == "canceled" {
            return Err(StripeApiError::invalid(
                "A canceled subscription can only update its cancellation_details and metadata.",
                None,
            ));
        }
        Ok(sub)
    }

    /// Switches plan (and invoices the new one) and/or sets
    /// `cancel_at_period_end`.
    pub fn update_subscription(
        &self,
        state: &mut State,
        id: &str,
        price: Option<&str>,
        cancel_at_period_end: Option<bool>,
        feedback: Option<String>,
    ) -> Result<Subscription, StripeApiError> {
        let new_price = price
            .map(|p| {
                Self::price(p).ok_or_else(|| StripeApiError::missing("price", p, "items[0][price]"))
            })
            .transpose()?;
        let sub = Self::live_subscription(state, id)?;
        let before = subscription_json(sub);
        let mut previous = serde_json::Map::new();
        if let Some(price) = &new_price {
            if sub.price != price.id {
                previous.insert("items".into(), before["items"].clone());
                sub.price = price.id.to_string();
            }
        }
        if let Some(cancel) = cancel_at_period_end {
            if sub.cancel_at_period_end != cancel {
                previous.insert(
                    "cancel_at_period_end".into(),
                    json!(sub.cancel_at_period_end),
                );
                sub.cancel_at_period_end = cancel;
                sub.cancellation_feedback = if cancel { feedback } else { None };
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
        if let Some(price) = new_price.filter(|_| !sub.cancel_at_period_end || price.is_some()) {
            if before["items"]["data"][0]["price"]["id"] != json!(price.id) {
                self.invoice(
                    state,
                    &sub,
                    &price,
                    format!("Switch to {}", price.product_name),
                );
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
        let sub = Self::live_subscription(state, id)?;
        sub.status = "canceled".into();
        sub.canceled_at = Some(now());
        sub.cancel_at_period_end = false;
        sub.cancellation_feedback = feedback;
        sub.cancellation_comment = comment;
        let sub = sub.clone();
        self.emit(
            state,
            "customer.subscription.deleted",
            subscription_json(&sub),
            None,
        );
        Ok(sub)
    }

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
        if digits != TEST_CARD_OK {
            return Err(StripeApiError {
                status: 402,
                kind: "card_error",
                code: Some("incorrect_number"),
                message: "Your card number is incorrect. In this emulator use the test card \
                          4242 4242 4242 4242."
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
        c.card = Some(Card {
            brand: "visa".into(),
            last4: digits[12..].to_string(),
            exp_month,
            exp_year,
        });
        let object = customer_json(c);
        let pm = self.new_id("pm");
        self.emit(
            state,
            "payment_method.attached",
            json!({"id": pm, "object": "payment_method", "type": "card", "customer": customer,
                   "card": {"brand": "visa", "last4": &digits[12..], "exp_month": exp_month, "exp_year": exp_year}}),
            None,
        );
        self.emit(state, "customer.updated", object, None);
        Ok(())
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

    fn invoice(&self, state: &mut State, sub: &Subscription, price: &Price, description: String) {
        let number = format!("EMU-{:04}", state.invoices.len() + 1);
        let invoice = Invoice {
            id: self.new_id("in"),
            number,
            customer: sub.customer.clone(),
            subscription: Some(sub.id.clone()),
            amount: price.unit_amount,
            description,
            created: now(),
        };
        let object = invoice_json(&invoice, &self.base_url);
        state.invoices.push(invoice);
        self.emit(state, "invoice.paid", object, None);
    }

    fn emit(&self, state: &mut State, type_: &str, object: Value, previous: Option<Value>) {
        let mut data = json!({ "object": object });
        if let Some(previous) = previous {
            data["previous_attributes"] = previous;
        }
        state.outbox.push(json!({
            "id": self.new_id("evt"),
            "object": "event",
            "api_version": "2025-08-27.basil",
            "created": now(),
            "data": data,
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null},
            "type": type_,
        }));
    }

    /// Sends one event to the service's webhook endpoint, signed like Stripe
    /// signs, retrying with doubling backoff until it is acknowledged.
    fn deliver(self: &Arc<Self>, event: Value) {
        let emu = self.clone();
        actix_web::rt::spawn(async move {
            let body = event.to_string();
            let (id, type_) = (event["id"].clone(), event["type"].clone());
            let mut wait = RETRY_BASE;
            for attempt in 1..=DELIVERY_ATTEMPTS {
                let header = signature::sign(&emu.webhook_secret, now(), body.as_bytes());
                let outcome = emu
                    .http
                    .post(&emu.webhook_url)
                    .header("content-type", "application/json")
                    .header("stripe-signature", header)
                    .body(body.clone())
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match outcome {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => log::warn!(
                        "emulator: delivery {attempt} of {type_} {id} answered {}; retrying in {wait:?}",
                        r.status()
                    ),
                    Err(e) => log::warn!(
                        "emulator: delivery {attempt} of {type_} {id} failed ({e}); retrying in {wait:?}"
                    ),
                }
                actix_web::rt::time::sleep(wait).await;
                wait *= 2;
            }
            log::error!("emulator: gave up delivering {type_} {id}");
        });
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
    v["cancel_at"] = if s.cancel_at_period_end {
        json!(s.current_period_end)
    } else {
        Value::Null
    };
    v["canceled_at"] = json!(s.canceled_at);
    v["ended_at"] = json!(s.canceled_at);
    v["cancellation_details"] = json!({"comment": s.cancellation_comment,
        "feedback": s.cancellation_feedback, "reason": s.canceled_at.map(|_| "cancellation_requested")});
    v["metadata"] = json!(s.metadata);
    v["pause_collection"] = Value::Null;
    v["pending_update"] = Value::Null;
    v["next_pending_invoice_item_invoice"] = Value::Null;
    v["latest_invoice"] = Value::Null;
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
    v["period_start"] = json!(i.created);
    v["period_end"] = json!(i.created);
    v["status"] = json!("paid");
    v["description"] = json!(i.description);
    for field in [
        "amount_due",
        "amount_paid",
        "subtotal",
        "subtotal_excluding_tax",
        "total",
        "total_excluding_tax",
    ] {
        v[field] = json!(i.amount);
    }
    v["amount_remaining"] = json!(0);
    v["currency"] = json!("usd");
    v["billing_reason"] = json!("subscription_create");
    v["collection_method"] = json!("charge_automatically");
    v["status_transitions"] = json!({"finalized_at": i.created, "marked_uncollectible_at": null,
                                     "paid_at": i.created, "voided_at": null});
    v["parent"] = json!({"quote_details": null, "type": "subscription_details",
        "subscription_details": {"metadata": null, "subscription": i.subscription}});
    v["lines"] = json!({"object": "list", "data": [], "has_more": false,
                        "url": format!("/v1/invoices/{}/lines", i.id)});
    v["hosted_invoice_url"] = json!(format!("{base_url}/invoices/{}/pdf", i.id));
    v["invoice_pdf"] = json!(format!("{base_url}/invoices/{}/pdf", i.id));
    v["webhooks_delivered_at"] = json!(i.created);
    v["due_date"] = Value::Null;
    v["automatically_finalizes_at"] = Value::Null;
    v["next_payment_attempt"] = Value::Null;
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
