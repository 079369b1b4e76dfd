//! The emulated Stripe account's objects, held in memory: customers,
//! subscriptions, invoices, portal and Checkout sessions and the account's
//! settings, plus
//! the Stripe error an operation answers with. No behaviour beyond small
//! helpers: [`super::account`] changes these, [`super::objects`] renders them.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

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
    pub checkout_sessions: HashMap<String, CheckoutSession>,
    pub settings: AccountSettings,
    /// Idempotency-Key → (request fingerprint, status, body).
    pub(super) idempotency: HashMap<String, (String, u16, Value)>,
    /// The instant the current operation happens at: pinned for a whole
    /// operation so its events share one `created` second, as at Stripe, and
    /// set to each due time while a test clock advance replays the past.
    pub(super) at: Option<i64>,
    /// Every event emitted, oldest first, for `GET /v1/events`.
    pub events: Vec<Value>,
    /// Events of the operation in progress.
    pub(super) outbox: Vec<Value>,
    /// Finished operations' events, each in its arrival order, sent after
    /// the lock.
    pub(super) batches: Vec<Vec<Value>>,
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

/// A Checkout Session in `subscription` mode. The emulator has no hosted
/// checkout page: the emulator-only test helper pays it, standing in for the
/// customer, and paying it creates the subscription.
#[derive(Debug, Clone)]
pub struct CheckoutSession {
    pub id: String,
    pub customer: String,
    pub price: String,
    pub client_reference_id: Option<String>,
    /// `subscription_data[metadata]`, given to the subscription it creates.
    pub subscription_metadata: BTreeMap<String, String>,
    pub success_url: Option<String>,
    pub created: i64,
    /// `open` until paid, then `complete`.
    pub status: &'static str,
    pub subscription: Option<String>,
    pub invoice: Option<String>,
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
