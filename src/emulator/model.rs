//! The emulated Stripe account's objects: customers, subscriptions,
//! invoices, portal and Checkout sessions and the account's settings, plus
//! the Stripe error an operation answers with. No behaviour beyond small
//! helpers: [`super::account`] changes these, [`super::objects`] renders them,
//! and [`super::store`] keeps them in Postgres as one JSON document (their
//! serde form), the events apart.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use super::entitlements::{ActiveEntitlement, Feature, ProductFeature};

/// Stripe's portal sessions expire after about five minutes without a visit.
pub(crate) const PORTAL_SESSION_TTL_SECS: i64 = 5 * 60;
pub(crate) const DAY: i64 = 86_400;
/// The API version events are rendered in: a clover-era version, where new
/// subscriptions default to flexible billing mode.
pub(crate) const API_VERSION: &str = "2025-09-30.clover";
/// The test card that always succeeds, the one that attaches but whose
/// charges fail, and the one that is declined (docs.stripe.com/testing).
pub(crate) const TEST_CARD_OK: &str = "4242424242424242";
pub(crate) const TEST_CARD_CHARGE_FAILS: &str = "4000000000000341";
pub(crate) const TEST_CARD_DECLINED: &str = "4000000000000002";
/// The card that asks for 3-D Secure authentication on every payment
/// (docs.stripe.com/testing#regulatory-cards).
pub(crate) const TEST_CARD_3DS: &str = "4000002760003184";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Address {
    pub(crate) line1: Option<String>,
    pub(crate) city: Option<String>,
    pub(crate) postal_code: Option<String>,
    pub(crate) country: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Card {
    pub(crate) last4: String,
    pub(crate) exp_month: u32,
    pub(crate) exp_year: u32,
    /// 4000 0000 0000 0341: attached, but every charge fails.
    pub(crate) charges_fail: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Customer {
    pub(crate) id: String,
    pub(crate) email: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) address: Address,
    pub(crate) card: Option<Card>,
    pub(crate) created: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct Price {
    pub(crate) id: &'static str,
    pub(crate) product: &'static str,
    pub(crate) product_name: &'static str,
    pub(crate) unit_amount: i64,
}

/// docs.stripe.com/billing/subscriptions/billing-mode
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BillingMode {
    Classic,
    Flexible,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PauseCollection {
    /// `keep_as_draft`, `mark_uncollectible` or `void`.
    pub(crate) behavior: String,
    pub(crate) resumes_at: Option<i64>,
}

/// An invoice Stripe is trying to collect, and when it tries next.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Collection {
    pub(crate) invoice: String,
    /// Charge attempts made so far.
    pub(crate) attempts: u32,
    /// When the first attempt was made; retries are spread from there.
    pub(crate) first_attempt: Option<i64>,
    pub(crate) next_attempt: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Subscription {
    pub(crate) id: String,
    pub(crate) customer: String,
    pub(crate) price: String,
    pub(crate) status: String,
    pub(crate) billing_mode: BillingMode,
    pub(crate) cancel_at_period_end: bool,
    pub(crate) cancel_at: Option<i64>,
    /// When a cancellation was requested (Stripe's meaning, also for a
    /// scheduled one), not when the subscription ended.
    pub(crate) canceled_at: Option<i64>,
    pub(crate) ended_at: Option<i64>,
    pub(crate) current_period_start: i64,
    pub(crate) current_period_end: i64,
    pub(crate) created: i64,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) cancellation_feedback: Option<String>,
    pub(crate) cancellation_comment: Option<String>,
    #[serde(deserialize_with = "cancellation_reason")]
    pub(crate) cancellation_reason: Option<Word>,
    pub(crate) pause_collection: Option<PauseCollection>,
    pub(crate) latest_invoice: Option<String>,
    pub(crate) collecting: Option<Collection>,
}

impl Subscription {
    /// Stripe's terminal statuses: nothing happens to these any more.
    pub(crate) fn has_ended(&self) -> bool {
        matches!(self.status.as_str(), "canceled" | "incomplete_expired")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Invoice {
    pub(crate) id: String,
    pub(crate) number: String,
    pub(crate) customer: String,
    pub(crate) subscription: Option<String>,
    pub(crate) amount: i64,
    pub(crate) description: String,
    pub(crate) created: i64,
    /// `draft`, `open`, `paid`, `uncollectible` or `void`.
    #[serde(deserialize_with = "invoice_status")]
    pub(crate) status: Word,
    #[serde(deserialize_with = "billing_reason")]
    pub(crate) billing_reason: Word,
    pub(crate) period_start: i64,
    pub(crate) period_end: i64,
    pub(crate) attempt_count: u32,
    pub(crate) paid_at: Option<i64>,
    pub(crate) next_payment_attempt: Option<i64>,
}

/// A portal deep link: the service's own type, Stripe's names.
pub(crate) use crate::stripe::client::FlowKind;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PortalSession {
    pub(crate) id: String,
    pub(crate) customer: String,
    pub(crate) return_url: String,
    pub(crate) created: i64,
    /// The last visit of one of its pages: it expires
    /// [`PORTAL_SESSION_TTL_SECS`] after that, as Stripe's does.
    pub(crate) last_used: i64,
    pub(crate) flow: Option<(FlowKind, Option<String>)>,
    pub(crate) configuration: String,
    pub(crate) locale: Option<String>,
}

/// What happens when the last retry of a renewal fails (Dashboard: Billing →
/// Revenue recovery → "If all retries for a payment fail").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Dunning {
    Unpaid,
    Canceled,
    PastDue,
}

/// The arrival order of the events one operation emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeliveryOrder {
    /// Stripe's: no guaranteed order (docs.stripe.com/webhooks "Event ordering").
    Shuffled,
    InOrder,
    Reverse,
}

/// The emulated account's settings (emulator-only, see the module doc).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct AccountSettings {
    pub(crate) dunning: Dunning,
    pub(crate) retry_days: i64,
    pub(crate) delivery_order: DeliveryOrder,
    /// Whether events are sent to the webhook endpoint at all. Off is an
    /// endpoint Stripe cannot reach or has disabled: events are still
    /// created and listed by the Events API, and none created while off is
    /// ever sent (Stripe does not send a disabled endpoint's events later).
    pub(crate) deliveries: bool,
    /// Whether `GET /v1/events` answers. Off, it answers 503 `api_error`, as
    /// Stripe does during an incident: what the drift check exists for.
    pub(crate) events_api: bool,
    /// A fault: the next POST to this path (`/v1/customers`) answers 500
    /// `api_error` as a failure after its endpoint began executing, having
    /// changed nothing; like every such answer it is saved under its
    /// `Idempotency-Key` and replayed for a day. One-shot: cleared as it fires.
    pub(crate) fail_next_post: Option<String>,
    /// How long every API answer is held while its request executes (0 to
    /// [`MAX_LATENCY_MS`]), its `Idempotency-Key` in flight meanwhile: two
    /// requests with one key sent together then meet, and the second gets
    /// Stripe's 409 `idempotency_key_in_use`.
    pub(crate) latency_ms: u64,
}

/// The longest `latency_ms` the account settings take.
pub(crate) const MAX_LATENCY_MS: u64 = 10_000;

impl Default for AccountSettings {
    fn default() -> Self {
        Self {
            dunning: Dunning::Canceled,
            retry_days: 14,
            delivery_order: DeliveryOrder::Shuffled,
            deliveries: true,
            events_api: true,
            fail_next_post: None,
            latency_ms: 0,
        }
    }
}

impl AccountSettings {
    pub(crate) fn to_json(&self) -> Value {
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
            "deliveries": if self.deliveries { "on" } else { "off" },
            "events_api": if self.events_api { "available" } else { "unavailable" },
            "fail_next_post": self.fail_next_post,
            "latency_ms": self.latency_ms,
        })
    }
}

/// The emulated Stripe account. Its serde form is what [`super::store`]
/// keeps; the fields it skips belong to one operation in progress, and the
/// events are stored one row each.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct State {
    pub(crate) customers: BTreeMap<String, Customer>,
    pub(crate) subscriptions: BTreeMap<String, Subscription>,
    pub(crate) invoices: Vec<Invoice>,
    pub(crate) sessions: BTreeMap<String, PortalSession>,
    pub(crate) checkout_sessions: BTreeMap<String, CheckoutSession>,
    pub(crate) settings: AccountSettings,
    /// Idempotency-Key → the first request's answer, kept for a day.
    pub(super) idempotency: BTreeMap<String, Replay>,
    /// How many ids the account has handed out, across restarts and
    /// instances: the start of every id's unique part.
    pub(super) ids_issued: u64,
    /// The instant the current operation happens at: pinned for a whole
    /// operation so its events share one `created` second, as at Stripe, and
    /// set to each due time while a test clock advance replays the past.
    #[serde(skip)]
    pub(super) at: Option<i64>,
    /// Every event emitted, oldest first, for `GET /v1/events` (those older
    /// than the Events API reaches are dropped as operations are stored).
    #[serde(skip)]
    pub(crate) events: Vec<Value>,
    /// Events of the operation in progress.
    #[serde(skip)]
    pub(super) outbox: Vec<Value>,
    /// Finished operations' events, each in its arrival order, sent after
    /// the lock.
    #[serde(skip)]
    pub(super) batches: Vec<Vec<Value>>,
    /// Whether the seeded catalogue's `product.created` and `price.created`
    /// have been emitted (before the account's first customer).
    pub(super) catalogue_announced: bool,
    /// Features made through the API (the seeded ones are in
    /// [`super::entitlements`]), by id.
    pub(crate) features: BTreeMap<String, Feature>,
    /// Features attached to products through the API, by product.
    pub(crate) product_features: BTreeMap<String, Vec<ProductFeature>>,
    /// Each customer's active entitlements, as last worked out.
    pub(crate) entitlements: BTreeMap<String, Vec<ActiveEntitlement>>,
}

/// The answer to a request sent with an `Idempotency-Key`, replayed to the
/// same key for 24 hours, as Stripe does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Replay {
    /// The request it answered (method, path, body).
    pub(crate) fingerprint: String,
    pub(crate) status: u16,
    pub(crate) body: Value,
    /// Unix seconds on the wall clock (Stripe forgets keys by real time).
    pub(crate) at: i64,
}

/// A word the code holds as `&'static str` (a status, a reason), read back
/// from a stored document by one of the functions below. The alias keeps
/// serde from borrowing the field from the document (it would for a
/// `&str` it sees written out), which a `'static` one cannot be. A stored
/// word missing from their lists makes the document unreadable, and the
/// emulator says so (naming `emulator-reset`): add new words there.
pub(crate) type Word = &'static str;

fn one_of<'de, D: Deserializer<'de>>(
    d: D,
    what: &str,
    words: &[&'static str],
) -> Result<&'static str, D::Error> {
    let word = String::deserialize(d)?;
    words
        .iter()
        .find(|w| **w == word)
        .copied()
        .ok_or_else(|| serde::de::Error::custom(format!("unknown {what} `{word}`")))
}

fn invoice_status<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let words = ["draft", "open", "paid", "uncollectible", "void"];
    one_of(d, "invoice status", &words)
}

fn billing_reason<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let words = [
        "subscription_create",
        "subscription_cycle",
        "subscription_update",
    ];
    one_of(d, "billing reason", &words)
}

fn checkout_status<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    one_of(
        d,
        "Checkout Session status",
        &["open", "complete", "expired"],
    )
}

fn cancellation_reason<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'static str>, D::Error> {
    let words = ["cancellation_requested", "payment_failed"];
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(word) => one_of(
            serde::de::value::StringDeserializer::<D::Error>::new(word),
            "cancellation reason",
            &words,
        )
        .map(Some),
    }
}

impl State {
    pub(crate) fn invoice_mut(&mut self, id: &str) -> Option<&mut Invoice> {
        self.invoices.iter_mut().find(|i| i.id == id)
    }
}

/// A Stripe-style error: HTTP status, type, code, message, param.
#[derive(Debug, Clone)]
pub(crate) struct StripeApiError {
    pub(crate) status: u16,
    pub(crate) kind: &'static str,
    pub(crate) code: Option<&'static str>,
    pub(crate) message: String,
    pub(crate) param: Option<&'static str>,
}

impl StripeApiError {
    pub(crate) fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            status: 400,
            kind: "invalid_request_error",
            code: param.map(|_| "parameter_invalid"),
            message: message.into(),
            param,
        }
    }

    pub(crate) fn missing(what: &str, id: &str, param: &'static str) -> Self {
        Self {
            status: 404,
            kind: "invalid_request_error",
            code: Some("resource_missing"),
            message: format!("No such {what}: '{id}'"),
            param: Some(param),
        }
    }

    /// Stripe's answer when it cannot serve a request (docs.stripe.com/error-codes: `api_error`).
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: 503,
            kind: "api_error",
            code: None,
            message: message.into(),
            param: None,
        }
    }

    /// Stripe's answer to a failure on its side while an endpoint executes
    /// (docs.stripe.com/error-low-level, "Server errors").
    pub(crate) fn unknown() -> Self {
        Self {
            status: 500,
            kind: "api_error",
            code: None,
            message: "An unknown error occurred".into(),
            param: None,
        }
    }

    /// A request with an `Idempotency-Key` another request is still
    /// executing with: 409, saved nothing, worth a retry. Stripe's wording
    /// (the code's description is at docs.stripe.com/error-codes). The type
    /// follows `shared/stripe/BEHAVIOUR.md`; answers logged from Stripe in
    /// 2018 carried `invalid_request_error` with the same code.
    pub(crate) fn key_in_use(key: &str) -> Self {
        Self {
            status: 409,
            kind: "idempotency_error",
            code: Some("idempotency_key_in_use"),
            message: format!(
                "There is currently another in-progress request using this Idempotent Key \
                 (that probably means you submitted twice, and the other request is still \
                 going through): {key}. Please try again later."
            ),
            param: None,
        }
    }

    /// A key reused with other parameters (docs.stripe.com/api/idempotent_requests).
    pub(crate) fn key_reused() -> Self {
        Self {
            status: 400,
            kind: "idempotency_error",
            code: None,
            message: "Keys for idempotent requests can only be used with the same parameters \
                      they were first used with."
                .into(),
            param: None,
        }
    }

    /// Whether this answer comes from an endpoint that began executing, so
    /// that Stripe saves it under the request's `Idempotency-Key`
    /// (docs.stripe.com/api/idempotent_requests: "We save results only after
    /// the execution of an endpoint begins. If incoming parameters fail
    /// validation [...] we don't save the idempotent result").
    ///
    /// Not begun: every `invalid_request_error`. In this emulator each one is
    /// a check made before the operation changes anything: a parameter that
    /// is missing, malformed or out of range (400), an object the request
    /// names that does not exist (404 `resource_missing`, including an
    /// unknown test token and an unknown URL), or a refusal read off the
    /// object before touching it (an ended subscription, a paid Checkout
    /// Session, 400). A retry with the same key is checked again, so it can
    /// succeed once corrected. [`super::account::Emulator::idempotent`] still
    /// saves one that followed a change (an id issued or an event emitted),
    /// since that request did execute.
    ///
    /// Begun: `card_error` (a declined card is the card network's answer
    /// during execution, and Stripe replays it: docs.stripe.com/error-low-level,
    /// "Content errors") and `api_error` (a 5xx on Stripe's side, replayed
    /// too). The idempotency layer's own refusals (`idempotency_error`) never
    /// reach this question.
    pub(crate) fn began_executing(&self) -> bool {
        self.kind != "invalid_request_error"
    }

    pub(crate) fn card_declined() -> Self {
        Self {
            status: 402,
            kind: "card_error",
            code: Some("card_declined"),
            message: "Your card was declined.".into(),
            param: None,
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({"error": {"type": self.kind, "code": self.code, "message": self.message, "param": self.param}})
    }
}

/// A change to a subscription, as the API or the portal asks for it.
#[derive(Debug, Default)]
pub(crate) struct SubscriptionChange {
    pub(crate) price: Option<String>,
    pub(crate) cancel_at_period_end: Option<bool>,
    /// `Some(None)` clears a scheduled cancellation.
    pub(crate) cancel_at: Option<Option<i64>>,
    /// `Some(None)` resumes collection.
    pub(crate) pause_collection: Option<Option<PauseCollection>>,
    pub(crate) feedback: Option<String>,
}

/// A Checkout Session in `subscription` mode, paid on the emulator's hosted
/// checkout page (`url`, see the portal's `checkout` module) or, for tests and the demo,
/// by the emulator-only test helper standing in for the customer. Paying it
/// creates the subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CheckoutSession {
    pub(crate) id: String,
    pub(crate) customer: String,
    pub(crate) price: String,
    pub(crate) client_reference_id: Option<String>,
    /// `subscription_data[metadata]`, given to the subscription it creates.
    pub(crate) subscription_metadata: BTreeMap<String, String>,
    pub(crate) success_url: Option<String>,
    /// Where the hosted page's "Back" link leads; none: no link, as at Stripe.
    #[serde(default)]
    pub(crate) cancel_url: Option<String>,
    /// The session's own `metadata[...]`.
    #[serde(default)]
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) created: i64,
    /// When an unpaid session expires: 24 hours after creation unless the
    /// request set `expires_at` (docs.stripe.com/api/checkout/sessions/create#create_checkout_session-expires_at).
    /// `None` in documents stored before it was kept: the default.
    #[serde(default)]
    pub(crate) expires_at: Option<i64>,
    /// `open` until paid (`complete`) or past `expires_at` (`expired`).
    #[serde(deserialize_with = "checkout_status")]
    pub(crate) status: Word,
    pub(crate) subscription: Option<String>,
    pub(crate) invoice: Option<String>,
    /// The 3-D Secure card (4000 0027 6000 3184) entered on the hosted
    /// page, waiting for the customer's authentication before it is charged.
    #[serde(default)]
    pub(crate) authenticating: Option<Card>,
}

/// How long a Checkout Session stays open by default (Stripe: 24 hours).
pub(crate) const CHECKOUT_SESSION_TTL_SECS: i64 = 24 * 3_600;

impl CheckoutSession {
    pub(crate) fn expires_at(&self) -> i64 {
        self.expires_at
            .unwrap_or(self.created + CHECKOUT_SESSION_TTL_SECS)
    }

    /// Its status at `now`: an open session past its `expires_at` is
    /// `expired`, whether or not a test clock advance recorded it yet.
    pub(crate) fn status_at(&self, now: i64) -> Word {
        if self.status == "open" && now >= self.expires_at() {
            "expired"
        } else {
            self.status
        }
    }
}

/// The test card behind one of Stripe's test tokens.
pub(crate) fn token_card(token: &str) -> Option<&'static str> {
    match token {
        "tok_visa" => Some(TEST_CARD_OK),
        "tok_chargeCustomerFail" => Some(TEST_CARD_CHARGE_FAILS),
        "tok_chargeDeclined" => Some(TEST_CARD_DECLINED),
        _ => None,
    }
}

/// One calendar month after `t`, as Stripe's monthly periods run (the 31st
/// runs to the last day of a shorter month).
pub(crate) fn add_month(t: i64) -> i64 {
    chrono::DateTime::from_timestamp(t, 0)
        .and_then(|d| d.checked_add_months(chrono::Months::new(1)))
        .map_or(t + 30 * DAY, |d| d.timestamp())
}
