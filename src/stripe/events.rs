//! Lenient parsing of verified Stripe webhook bodies and subscription objects.
//!
//! Owns the mapping from Stripe's JSON to the few fields the service acts on: the event
//! envelope (`id`, `type`, `created`), subscriptions, deleted customers, completed Checkout
//! sessions, and the prices and products that name a subscription's plan. Everything else is
//! ignored.
//!
//! Stripe delivers webhooks in the API version of the account (or endpoint), so the same event
//! arrives in different shapes: current versions put `current_period_end` on each subscription
//! item and give items a `price`; older ones put it on the subscription and give items a `plan`.
//! A strict typed model (such as async-stripe's `Event`) rejects one shape or the other, so this
//! module deserializes into small private structs with every field optional, ignores unknown
//! fields, accepts unknown enum values, and only then checks for what it really needs.
//!
//! Parsing is two passes over the bytes, without building a `serde_json::Value`: the first reads
//! the envelope and skips `data.object` (checking only that it is an object), the second runs
//! only for the handled types and reads `data.object` straight into the struct for that type.
//! Unhandled types therefore never have their object parsed. This module reads no settings.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use crate::ids::{CustomerId, EventId, SubscriptionId};
use crate::stripe::status::SubscriptionStatus;

/// A verified Stripe event, reduced to what the service uses.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: EventId,
    pub type_: String,
    /// Stripe's creation time (unix seconds); orders events applied to the same subscription.
    pub created: i64,
    /// `livemode`: made by live-mode data. Only an explicit `true` is live; Stripe sends it on
    /// every event, and one without it is taken as test mode, so it can never act on a live
    /// instance.
    pub livemode: bool,
    /// `api_version`: the version Stripe rendered the event's object with (the
    /// webhook endpoint's). Events of any version are read; see
    /// [`crate::stripe::transport::API_VERSION`].
    pub api_version: Option<String>,
    pub kind: EventKind,
}

/// The event types this service acts on: the arms of [`parse_event`]'s
/// match (a test holds the two together); every other type is
/// [`EventKind::Ignored`].
pub const HANDLED_TYPES: [&str; 14] = [
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.deleted",
    "checkout.session.completed",
    "price.created",
    "price.updated",
    "price.deleted",
    "product.created",
    "product.updated",
    "product.deleted",
    "entitlements.active_entitlement_summary.updated",
];

/// What an event means to the service.
#[derive(Debug, Clone)]
pub enum EventKind {
    /// `customer.subscription.{created,updated,deleted,paused,resumed}`, with what the event's
    /// `data.previous_attributes` says the state was just before it.
    Subscription(SubscriptionObject, PreviousAttributes),
    /// `customer.deleted`.
    CustomerDeleted { customer_id: CustomerId },
    /// `checkout.session.completed`.
    CheckoutCompleted(CheckoutSessionObject),
    /// `price.{created,updated,deleted}`.
    Price(PriceObject),
    /// `product.{created,updated,deleted}`.
    Product(ProductObject),
    /// `entitlements.active_entitlement_summary.updated`: the customer's
    /// entitlements changed. Only the customer is read: the summary carries
    /// the first ten entitlements only, so they are read in full from the API.
    EntitlementSummary { customer_id: CustomerId },
    /// Any other type (including other `customer.subscription.*` types); its object is not read.
    Ignored,
}

/// The subscription fields the service stores, from either API shape.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionObject {
    pub id: SubscriptionId,
    pub customer_id: CustomerId,
    pub status: SubscriptionStatus,
    /// `items.data[0].price.id`, else `items.data[0].plan.id`, else top-level `plan.id`.
    pub price_id: Option<String>,
    /// The `product` of the same sources, in the same order (an id or an expanded object).
    pub product_id: Option<String>,
    /// Top-level `current_period_end` (older API versions), else the latest of the items'.
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    /// When the subscription is set to end: flexible billing mode (the default for new
    /// subscriptions since API version 2025-09-30) schedules a cancellation with this alone.
    pub cancel_at: Option<i64>,
    /// `pause_collection`: invoices are not collected while the status stays `active`.
    pub pause_collection: Option<PauseCollection>,
    /// `metadata.user_id` when present and non-empty.
    pub metadata_user_id: Option<String>,
    /// `metadata.org_id` when present and non-empty (an organisation's subscription).
    pub metadata_org_id: Option<String>,
}

/// `pause_collection` of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseCollection {
    /// `keep_as_draft`, `mark_uncollectible`, `void`, or whatever Stripe adds later, verbatim.
    pub behavior: String,
    pub resumes_at: Option<i64>,
}

/// An event's `data.previous_attributes`, reduced to the fields that order two states of one
/// subscription, under the keys of `billing_state_json` in SQL: `status`, `price_id`,
/// `current_period_end`, `cancel_at_period_end`, `cancel_at`, `pause_behavior`,
/// `pause_resumes_at`. A key is present only when the event says that field changed (its value
/// may be `null`); a value of the wrong type is dropped, never an error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PreviousAttributes(pub serde_json::Map<String, serde_json::Value>);

/// The Checkout session fields used to link a customer to an app user.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckoutSessionObject {
    pub id: String,
    pub customer_id: Option<CustomerId>,
    /// As the session carries it: Payment Links and pricing tables let the buyer choose it.
    pub client_reference_id: Option<String>,
    /// `metadata.user_id` when present and non-empty: only whoever created the session with the
    /// secret key can set it.
    pub metadata_user_id: Option<String>,
    /// `metadata.org_id`, likewise (an organisation's checkout).
    pub metadata_org_id: Option<String>,
    pub subscription_id: Option<SubscriptionId>,
}

/// The price fields that say what a plan costs and how often (docs.stripe.com/api/prices/object).
#[derive(Debug, Clone, PartialEq)]
pub struct PriceObject {
    pub id: String,
    /// `product`: its id, whether Stripe sent the id or the expanded object.
    pub product_id: Option<String>,
    /// The product itself, when `product` was expanded (`expand[]=product`).
    pub product: Option<ProductObject>,
    /// `nickname`, when a non-empty string.
    pub nickname: Option<String>,
    /// `unit_amount`, in the currency's smallest unit (2900 is $29.00); absent for prices that
    /// have none (tiered, customer-chosen amounts).
    pub unit_amount: Option<i64>,
    /// `currency`, lower-cased, when it is three ASCII letters (an ISO 4217 code).
    pub currency: Option<String>,
    /// `recurring`; absent for a one-time price.
    pub recurring: Option<Recurring>,
    /// A `price.deleted` event, or an object saying `"deleted": true`.
    pub deleted: bool,
    /// `active`: whether Stripe still sells it (an archived price is `false`); true when absent.
    pub active: bool,
}

/// A price's `recurring`: every `interval_count` `interval`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurring {
    /// `day`, `week`, `month`, `year`, or whatever Stripe adds later, verbatim.
    pub interval: String,
    /// At least 1; Stripe's default, 1, when absent or not a positive integer.
    pub interval_count: i32,
}

/// The product fields the service shows: its name (docs.stripe.com/api/products/object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductObject {
    pub id: String,
    /// `name`, when a non-empty string.
    pub name: Option<String>,
    /// A `product.deleted` event, or an object saying `"deleted": true`.
    pub deleted: bool,
}

/// Why a body could not be turned into an [`Event`] or [`SubscriptionObject`].
#[derive(Debug, thiserror::Error)]
pub enum EventParseError {
    #[error("payload is not valid JSON")]
    NotJson,
    #[error("payload is not a Stripe event: {0}")]
    NotAnEvent(String),
}

/// Parse a verified webhook body.
pub fn parse_event(body: &[u8]) -> Result<Event, EventParseError> {
    let head: EnvelopeHead = from_json(body, "event")?;
    // The id becomes the dedupe key: an empty one would make every such
    // event a "duplicate" of the first.
    let blank: Vec<&str> = [("id", &head.id), ("type", &head.type_)]
        .into_iter()
        .filter(|(_, v)| v.trim().is_empty())
        .map(|(name, _)| name)
        .collect();
    if !blank.is_empty() {
        return Err(missing("event", &blank));
    }
    // Refused for good (400), not failed (500): Postgres text cannot hold a
    // NUL, and an id longer than any of Stripe's cannot be a key; Stripe
    // would retry a 500 for three days.
    if holds_nul(body) {
        return Err(EventParseError::NotAnEvent(
            "a string in the event holds a NUL character".into(),
        ));
    }
    too_long("event `id`", &head.id)?;

    let kind = match head.type_.as_str() {
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted"
        | "customer.subscription.paused"
        | "customer.subscription.resumed" => {
            let envelope: Envelope<SubscriptionWire> = from_json(body, &head.type_)?;
            let previous = match envelope.data.previous_attributes {
                Some(Lenient::Value(previous)) => previous.into_domain(),
                _ => PreviousAttributes::default(),
            };
            EventKind::Subscription(envelope.data.object.into_domain()?, previous)
        }
        "customer.deleted" => {
            let envelope: Envelope<CustomerWire> = from_json(body, &head.type_)?;
            let customer_id = non_empty(envelope.data.object.id)
                .ok_or_else(|| missing("customer object", &["id"]))?;
            too_long("customer `id`", &customer_id)?;
            EventKind::CustomerDeleted {
                customer_id: customer_id.into(),
            }
        }
        "checkout.session.completed" => {
            let envelope: Envelope<CheckoutWire> = from_json(body, &head.type_)?;
            EventKind::CheckoutCompleted(envelope.data.object.into_domain()?)
        }
        "price.created" | "price.updated" | "price.deleted" => {
            let envelope: Envelope<PriceObjectWire> = from_json(body, &head.type_)?;
            let deleted = head.type_ == "price.deleted";
            EventKind::Price(envelope.data.object.into_price(deleted)?)
        }
        "product.created" | "product.updated" | "product.deleted" => {
            let envelope: Envelope<ProductWire> = from_json(body, &head.type_)?;
            let deleted = head.type_ == "product.deleted";
            EventKind::Product(envelope.data.object.into_domain(deleted)?)
        }
        "entitlements.active_entitlement_summary.updated" => {
            let envelope: Envelope<EntitlementSummaryWire> = from_json(body, &head.type_)?;
            let customer_id = non_empty(envelope.data.object.customer)
                .ok_or_else(|| missing("active entitlement summary object", &["customer"]))?;
            too_long("summary `customer`", &customer_id)?;
            EventKind::EntitlementSummary {
                customer_id: customer_id.into(),
            }
        }
        _ => EventKind::Ignored,
    };

    Ok(Event {
        id: head.id.into(),
        type_: head.type_,
        created: head.created,
        livemode: head.livemode == Some(true),
        api_version: head.api_version.filter(|v| !v.is_empty()),
        kind,
    })
}

/// Parse a bare subscription object (as returned by `GET /v1/subscriptions/{id}` or an element
/// of a list) with the same lenient rules as webhook payloads.
pub fn parse_subscription(value: &[u8]) -> Result<SubscriptionObject, EventParseError> {
    from_json::<SubscriptionWire>(value, "subscription object")?.into_domain()
}

/// Parse a bare price object (as returned by `GET /v1/prices/{id}`, with `product` expanded or
/// not) with the same lenient rules as webhook payloads.
pub fn parse_price(value: &[u8]) -> Result<PriceObject, EventParseError> {
    // JSON first, as `parse_event` does: `NotAnEvent` promises the body was JSON
    // (a body that is not is `NotJson`, whatever it holds; found by the fuzzer).
    let price = from_json::<PriceObjectWire>(value, "price object")?;
    // Refused like an event's: Postgres text cannot hold a NUL.
    if holds_nul(value) {
        return Err(EventParseError::NotAnEvent(
            "a string in the price holds a NUL character".into(),
        ));
    }
    price.into_price(false)
}

/// Deserialize a top-level JSON object, telling "not JSON" apart from "JSON of the wrong shape".
fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, EventParseError> {
    // serde's derived structs also accept a JSON array (fields by position); a Stripe payload is
    // always an object, so anything else is refused before it can be misread.
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return Err(if is_json(body) {
            EventParseError::NotAnEvent(format!("{what}: expected a JSON object"))
        } else {
            EventParseError::NotJson
        });
    }

    serde_json::from_slice(body).map_err(|e| match e.classify() {
        // A data error is reported where it happens, which may be before a syntax error further
        // on; only call it "not an event" if the whole body is valid JSON.
        serde_json::error::Category::Data if is_json(body) => {
            EventParseError::NotAnEvent(format!("{what}: {e}"))
        }
        _ => EventParseError::NotJson,
    })
}

fn is_json(body: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(body).is_ok()
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Stripe's ids are at most 255 characters (docs.stripe.com/upgrades: "IDs
/// can be up to 255 characters long").
const MAX_ID_LEN: usize = 255;

fn too_long(what: &str, id: &str) -> Result<(), EventParseError> {
    match id.len() > MAX_ID_LEN {
        true => Err(EventParseError::NotAnEvent(format!(
            "{what} is longer than {MAX_ID_LEN} characters"
        ))),
        false => Ok(()),
    }
}

/// Whether the JSON text escapes a NUL (`\u0000`, the only way JSON can
/// carry one): a `u0000` after an odd run of backslashes.
fn holds_nul(body: &[u8]) -> bool {
    body.windows(5).enumerate().any(|(i, w)| {
        w == b"u0000" && body[..i].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 1
    })
}

fn missing(what: &str, fields: &[&str]) -> EventParseError {
    let names: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
    EventParseError::NotAnEvent(format!("{what} is missing {}", names.join(", ")))
}

// ---- wire shapes (private; every field optional, unknown fields ignored) ----

/// First pass: the envelope, with `data.object` only checked to be an object.
#[derive(Deserialize)]
#[serde(expecting = "a Stripe event object")]
struct EnvelopeHead {
    id: String,
    #[serde(rename = "type")]
    type_: String,
    created: i64,
    #[serde(default, deserialize_with = "lenient")]
    livemode: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    api_version: Option<String>,
    /// Never read: deserializing it is what requires `data.object` to be present and an object.
    #[serde(rename = "data")]
    _data: EnvelopeData<AnyObject>,
}

/// Second pass: the envelope again, reading only `data.object` as `T`.
#[derive(Deserialize)]
struct Envelope<T> {
    data: EnvelopeData<T>,
}

#[derive(Deserialize)]
struct EnvelopeData<T> {
    object: T,
    /// Only read for subscription events; anything but an object counts as absent.
    #[serde(default)]
    previous_attributes: Option<Lenient<PreviousWire>>,
}

/// A field read leniently: a value of the expected type, or anything else (kept as "other",
/// never an error). Stripe adds and reshapes fields across API versions; a field the service
/// can do without must not make it refuse the whole event.
#[derive(Deserialize)]
#[serde(untagged)]
enum Lenient<T> {
    Value(T),
    Other(IgnoredAny),
}

impl<T> Lenient<T> {
    fn ok(self) -> Option<T> {
        match self {
            Self::Value(v) => Some(v),
            Self::Other(_) => None,
        }
    }
}

/// `Option<Lenient<T>>` flattened: absent, `null` or of the wrong type is `None`.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Lenient<Option<T>>>::deserialize(deserializer)?
        .and_then(Lenient::ok)
        .flatten())
}

/// Any JSON object, skipped without being stored.
struct AnyObject;

impl<'de> Deserialize<'de> for AnyObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyObjectVisitor;

        impl<'de> Visitor<'de> for AnyObjectVisitor {
            type Value = AnyObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnyObject)
            }
        }

        deserializer.deserialize_map(AnyObjectVisitor)
    }
}

/// Stripe's "expandable" references: either an id string, or the expanded object carrying
/// `id`. `null`, and an expanded object without `id`, give `None`.
fn expandable_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    struct ExpandableVisitor;

    impl<'de> Visitor<'de> for ExpandableVisitor {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an id string or an object with an `id`")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            // Read only `id`; the rest of the expanded object (a whole customer, say) is skipped
            // rather than buffered, which an untagged enum would do.
            let mut id = None;
            while let Some(key) = map.next_key::<Key>()? {
                match key {
                    Key::Id => id = map.next_value::<Option<String>>()?,
                    Key::Other => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(id)
        }
    }

    deserializer.deserialize_any(ExpandableVisitor)
}

/// A map key that is either `id` or something to skip, matched without allocating.
enum Key {
    Id,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(if v == "id" { Key::Id } else { Key::Other })
            }
        }

        deserializer.deserialize_identifier(KeyVisitor)
    }
}

#[derive(Deserialize)]
struct SubscriptionWire {
    id: Option<String>,
    #[serde(default, deserialize_with = "expandable_id")]
    customer: Option<String>,
    status: Option<SubscriptionStatus>,
    items: Option<ItemList>,
    /// Very old API versions: the single plan on the subscription itself.
    plan: Option<PriceWire>,
    /// Older API versions only; current ones have it per item.
    #[serde(default, deserialize_with = "lenient")]
    current_period_end: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    cancel_at_period_end: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    cancel_at: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    pause_collection: Option<PauseWire>,
    metadata: Option<MetadataWire>,
}

#[derive(Deserialize)]
struct PauseWire {
    #[serde(default, deserialize_with = "lenient")]
    behavior: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    resumes_at: Option<i64>,
}

impl PauseWire {
    /// A `pause_collection` without a behavior string is not a pause Stripe would send; it is
    /// treated as none rather than guessed at.
    fn into_domain(self) -> Option<PauseCollection> {
        Some(PauseCollection {
            behavior: non_empty(self.behavior)?,
            resumes_at: self.resumes_at,
        })
    }
}

/// `data.previous_attributes` of a subscription event. Each field: absent (`None`), or present
/// with a value (`Some`, the value possibly `null`), or present with a value of the wrong type
/// (`Some(Lenient::Other)`, dropped).
#[derive(Deserialize)]
struct PreviousWire {
    #[serde(default, deserialize_with = "present")]
    status: Option<Lenient<SubscriptionStatus>>,
    #[serde(default, deserialize_with = "present")]
    items: Option<Lenient<ItemList>>,
    #[serde(default, deserialize_with = "present")]
    plan: Option<Lenient<Option<PriceWire>>>,
    #[serde(default, deserialize_with = "present")]
    current_period_end: Option<Lenient<Option<i64>>>,
    #[serde(default, deserialize_with = "present")]
    cancel_at_period_end: Option<Lenient<bool>>,
    #[serde(default, deserialize_with = "present")]
    cancel_at: Option<Lenient<Option<i64>>>,
    #[serde(default, deserialize_with = "present")]
    pause_collection: Option<Lenient<Option<PauseWire>>>,
}

/// A field that is present, whatever its value, `null` included (which a plain `Option` would
/// read as absent): in `previous_attributes`, `"cancel_at": null` says it was unset before.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl PreviousWire {
    fn into_domain(self) -> PreviousAttributes {
        use serde_json::{json, Value};
        let mut map = serde_json::Map::new();
        let mut put = |key: &str, value: Value| {
            map.insert(key.to_string(), value);
        };
        if let Some(status) = self.status.and_then(Lenient::ok) {
            put("status", json!(status.as_str()));
        }
        // Old API versions: the plan and the period on the subscription itself.
        if let Some(plan) = self.plan.and_then(Lenient::ok) {
            put("price_id", json!(plan.and_then(|p| non_empty(p.id))));
        }
        if let Some(end) = self.current_period_end.and_then(Lenient::ok) {
            put("current_period_end", json!(end));
        }
        // Current versions: the items as they were, carrying price and period.
        if let Some(items) = self.items.and_then(Lenient::ok) {
            let items = items.data.unwrap_or_default();
            if let Some(end) = items.iter().filter_map(|i| i.current_period_end).max() {
                put("current_period_end", json!(end));
            }
            let first = items.into_iter().next();
            if let Some(id) = first
                .and_then(|i| i.price.or(i.plan))
                .and_then(|p| non_empty(p.id))
            {
                put("price_id", json!(id));
            }
        }
        if let Some(cape) = self.cancel_at_period_end.and_then(Lenient::ok) {
            put("cancel_at_period_end", json!(cape));
        }
        if let Some(cancel_at) = self.cancel_at.and_then(Lenient::ok) {
            put("cancel_at", json!(cancel_at));
        }
        if let Some(pause) = self.pause_collection.and_then(Lenient::ok) {
            let pause = pause.and_then(PauseWire::into_domain);
            put(
                "pause_behavior",
                json!(pause.as_ref().map(|p| p.behavior.clone())),
            );
            put("pause_resumes_at", json!(pause.and_then(|p| p.resumes_at)));
        }
        PreviousAttributes(map)
    }
}

#[derive(Deserialize)]
struct ItemList {
    data: Option<Vec<ItemWire>>,
}

#[derive(Deserialize)]
struct ItemWire {
    price: Option<PriceWire>,
    plan: Option<PriceWire>,
    #[serde(default, deserialize_with = "lenient")]
    current_period_end: Option<i64>,
}

/// A `price` or a `plan`: for our purposes they carry the same two fields.
#[derive(Deserialize)]
struct PriceWire {
    id: Option<String>,
    #[serde(default, deserialize_with = "expandable_id")]
    product: Option<String>,
}

/// A price object of its own (a `price.*` event, `GET /v1/prices/{id}`): a subscription's
/// `price` carries the same fields, but what a subscription stores needs only [`PriceWire`]'s.
/// A `plan` (older API versions) is a price too: Stripe answers `GET /v1/prices/{plan id}`.
#[derive(Deserialize)]
struct PriceObjectWire {
    id: Option<String>,
    #[serde(default, deserialize_with = "expandable_product")]
    product: Option<ProductRef>,
    #[serde(default, deserialize_with = "lenient")]
    nickname: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    unit_amount: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    currency: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    recurring: Option<RecurringWire>,
    #[serde(default, deserialize_with = "lenient")]
    deleted: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    active: Option<bool>,
}

/// A price's `product`: an id, or the expanded product.
enum ProductRef {
    Id(String),
    Expanded(ProductWire),
}

impl ProductRef {
    fn id(&self) -> Option<String> {
        match self {
            Self::Id(id) => non_empty(Some(id.clone())),
            Self::Expanded(product) => non_empty(product.id.clone()),
        }
    }
}

/// Like [`expandable_id`], keeping an expanded product's fields: an id string, or an object
/// read as a product. `null`, or anything else, is `None`.
fn expandable_product<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<ProductRef>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Id(String),
        Expanded(ProductWire),
        Other(IgnoredAny),
    }
    Ok(match Option::<Wire>::deserialize(deserializer)? {
        Some(Wire::Id(id)) => Some(ProductRef::Id(id)),
        Some(Wire::Expanded(product)) => Some(ProductRef::Expanded(product)),
        Some(Wire::Other(_)) | None => None,
    })
}

#[derive(Deserialize)]
struct RecurringWire {
    #[serde(default, deserialize_with = "lenient")]
    interval: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    interval_count: Option<i64>,
}

impl RecurringWire {
    /// A `recurring` without an interval string is no interval anyone can show.
    fn into_domain(self) -> Option<Recurring> {
        Some(Recurring {
            interval: non_empty(self.interval)?,
            interval_count: self
                .interval_count
                .and_then(|n| i32::try_from(n).ok())
                .filter(|n| *n >= 1)
                .unwrap_or(1),
        })
    }
}

impl PriceObjectWire {
    /// The price of a `price.*` event (`deleted` for `price.deleted`) or an API read.
    fn into_price(self, deleted: bool) -> Result<PriceObject, EventParseError> {
        let id = non_empty(self.id).ok_or_else(|| missing("price object", &["id"]))?;
        too_long("price `id`", &id)?;
        let product_id = self.product.as_ref().and_then(ProductRef::id);
        if let Some(product) = &product_id {
            too_long("price `product`", product)?;
        }
        let product = match self.product {
            Some(ProductRef::Expanded(product)) if product_id.is_some() => {
                Some(product.into_domain(false)?)
            }
            _ => None,
        };
        Ok(PriceObject {
            id,
            product_id,
            product,
            nickname: non_empty(self.nickname),
            unit_amount: self.unit_amount,
            currency: self
                .currency
                .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()))
                .map(|c| c.to_ascii_lowercase()),
            recurring: self.recurring.and_then(RecurringWire::into_domain),
            deleted: deleted || self.deleted == Some(true),
            active: self.active != Some(false),
        })
    }
}

#[derive(Deserialize)]
struct ProductWire {
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    deleted: Option<bool>,
}

impl ProductWire {
    /// The product of a `product.*` event (`deleted` for `product.deleted`) or an expanded one.
    fn into_domain(self, deleted: bool) -> Result<ProductObject, EventParseError> {
        let id = non_empty(self.id).ok_or_else(|| missing("product object", &["id"]))?;
        too_long("product `id`", &id)?;
        Ok(ProductObject {
            id,
            name: non_empty(self.name),
            deleted: deleted || self.deleted == Some(true),
        })
    }
}

#[derive(Deserialize)]
struct MetadataWire {
    user_id: Option<String>,
    org_id: Option<String>,
}

impl SubscriptionWire {
    fn into_domain(self) -> Result<SubscriptionObject, EventParseError> {
        let (id, customer_id, status) =
            match (non_empty(self.id), non_empty(self.customer), self.status) {
                (Some(id), Some(customer), Some(status)) => (id, customer, status),
                (id, customer, status) => {
                    let absent = [
                        ("id", id.is_none()),
                        ("customer", customer.is_none()),
                        ("status", status.is_none()),
                    ];
                    let names: Vec<&str> = absent
                        .iter()
                        .filter(|(_, is_absent)| *is_absent)
                        .map(|(name, _)| *name)
                        .collect();
                    return Err(missing("subscription object", &names));
                }
            };

        let items = self.items.and_then(|list| list.data).unwrap_or_default();
        // An item-level period end exists per item; the subscription is paid up to the latest.
        let items_period_end = items
            .iter()
            .filter_map(|item| item.current_period_end)
            .max();
        let (item_price, item_plan) = items
            .into_iter()
            .next()
            .map(|item| (item.price, item.plan))
            .unwrap_or_default();

        let mut price_id = None;
        let mut product_id = None;
        for source in [item_price, item_plan, self.plan].into_iter().flatten() {
            price_id = price_id.or(non_empty(source.id));
            product_id = product_id.or(non_empty(source.product));
        }

        too_long("subscription `id`", &id)?;
        too_long("subscription `customer`", &customer_id)?;
        Ok(SubscriptionObject {
            id: id.into(),
            customer_id: customer_id.into(),
            status,
            price_id,
            product_id,
            current_period_end: self.current_period_end.or(items_period_end),
            cancel_at_period_end: self.cancel_at_period_end.unwrap_or(false),
            cancel_at: self.cancel_at,
            pause_collection: self.pause_collection.and_then(PauseWire::into_domain),
            metadata_user_id: non_empty(self.metadata.as_ref().and_then(|m| m.user_id.clone())),
            metadata_org_id: non_empty(self.metadata.and_then(|m| m.org_id)),
        })
    }
}

#[derive(Deserialize)]
struct CustomerWire {
    id: Option<String>,
}

/// An `entitlements.active_entitlement_summary`: only its customer is read.
#[derive(Deserialize)]
struct EntitlementSummaryWire {
    #[serde(default, deserialize_with = "expandable_id")]
    customer: Option<String>,
}

#[derive(Deserialize)]
struct CheckoutWire {
    id: Option<String>,
    #[serde(default, deserialize_with = "expandable_id")]
    customer: Option<String>,
    client_reference_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    metadata: Option<MetadataWire>,
    #[serde(default, deserialize_with = "expandable_id")]
    subscription: Option<String>,
}

impl CheckoutWire {
    fn into_domain(self) -> Result<CheckoutSessionObject, EventParseError> {
        Ok(CheckoutSessionObject {
            id: non_empty(self.id).ok_or_else(|| missing("checkout session object", &["id"]))?,
            customer_id: non_empty(self.customer).map(CustomerId::from),
            client_reference_id: non_empty(self.client_reference_id),
            metadata_user_id: non_empty(self.metadata.as_ref().and_then(|m| m.user_id.clone())),
            metadata_org_id: non_empty(self.metadata.and_then(|m| m.org_id)),
            subscription_id: non_empty(self.subscription).map(SubscriptionId::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unescaped_backslash_u0000_is_a_nul() {
        assert!(holds_nul(br#"{"id":"evt_\u0000"}"#));
        assert!(holds_nul(br#"{"id":"evt_\\\u0000"}"#));
        assert!(!holds_nul(br#"{"id":"evt_\\u0000"}"#));
        assert!(!holds_nul(br#"{"id":"evt_u0000"}"#));
    }

    #[test]
    fn handled_types_are_exactly_the_types_the_parser_acts_on() {
        let body = |type_: &str| {
            format!(r#"{{"id":"evt_1","type":"{type_}","created":1,"data":{{"object":{{}}}}}}"#)
        };
        for type_ in HANDLED_TYPES {
            // An empty object is not enough for a type the parser acts on.
            let parsed = parse_event(body(type_).as_bytes());
            assert!(
                !matches!(
                    parsed,
                    Ok(Event {
                        kind: EventKind::Ignored,
                        ..
                    })
                ),
                "{type_} is listed as handled but parsed as ignored"
            );
        }
        for type_ in ["invoice.paid", "customer.created", "made_up.type"] {
            let parsed = parse_event(body(type_).as_bytes()).unwrap();
            assert!(matches!(parsed.kind, EventKind::Ignored), "{type_}");
        }
    }

    /// Stripe's current-shape example subscription (fixtures3.json `subscription`, trimmed of
    /// blocks the service never reads, ids and values kept). Items carry `price` (and, as in the
    /// fixture, a placeholder `plan`) and the period end lives on the item.
    const CURRENT_SUBSCRIPTION: &str = r#"{
        "id": "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw",
        "object": "subscription",
        "application": null,
        "automatic_tax": {"enabled": false, "liability": {"type": "account"}, "disabled_reason": null},
        "billing_cycle_anchor": 1234567890,
        "billing_mode": {"type": "classic", "flexible": {}},
        "cancel_at": 1234567890,
        "cancel_at_period_end": true,
        "canceled_at": 1234567890,
        "cancellation_details": {"comment": null, "feedback": null, "reason": null},
        "collection_method": "charge_automatically",
        "created": 1234567890,
        "currency": "usd",
        "customer": "cus_QXg1o8vcGmoR32",
        "default_payment_method": null,
        "discounts": [],
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_QXhVnC2h0Jczwc",
                    "object": "subscription_item",
                    "created": 1721954054,
                    "current_period_end": 976287773,
                    "current_period_start": 1896570518,
                    "discounts": [],
                    "metadata": {},
                    "plan": {
                        "id": "obj_123", "object": "plan", "active": true, "amount": null,
                        "interval": "month", "interval_count": 797691627, "product": null
                    },
                    "price": {
                        "id": "price_1PgafmB7WZ01zgkW6dKueIc5",
                        "object": "price",
                        "active": true,
                        "billing_scheme": "per_unit",
                        "currency": "usd",
                        "product": "prod_QXg1hqf4jFNsqG",
                        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
                        "type": "recurring",
                        "unit_amount": 2000
                    },
                    "quantity": 1,
                    "subscription": "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw",
                    "tax_rates": []
                }
            ],
            "has_more": false,
            "url": "/v1/subscription_items?subscription=sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"
        },
        "latest_invoice": null,
        "livemode": false,
        "metadata": {"user_id": "user_42"},
        "pause_collection": {"behavior": "mark_uncollectible", "resumes_at": null},
        "start_date": 1234567890,
        "status": "active",
        "trial_end": 1234567890,
        "trial_start": 1234567890
    }"#;

    /// An old-API-version subscription (pre-2020 shape): period end on the subscription, a
    /// top-level `plan`, and items that carry `plan` but no `price`.
    const OLD_SUBSCRIPTION: &str = r#"{
        "id": "sub_old_1",
        "object": "subscription",
        "cancel_at_period_end": false,
        "current_period_start": 1500000000,
        "current_period_end": 1502678400,
        "customer": "cus_old_1",
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_old_1",
                    "object": "subscription_item",
                    "plan": {"id": "gold_monthly", "object": "plan", "amount": 999, "product": "prod_gold"},
                    "quantity": 1
                }
            ],
            "has_more": false
        },
        "metadata": {},
        "plan": {"id": "gold_monthly", "object": "plan", "amount": 999, "product": "prod_gold"},
        "quantity": 1,
        "status": "past_due"
    }"#;

    fn event_with(type_: &str, object: &str) -> Vec<u8> {
        format!(
            r#"{{"id":"evt_1","object":"event","api_version":"2025-03-31.basil","created":1700000000,
                "data":{{"object":{object},"previous_attributes":{{}}}},"livemode":false,
                "pending_webhooks":1,"request":{{"id":null,"idempotency_key":null}},"type":"{type_}"}}"#
        )
        .into_bytes()
    }

    fn subscription_of(event: Event) -> SubscriptionObject {
        match event.kind {
            EventKind::Subscription(sub, _) => sub,
            other => panic!("expected a subscription event, got {other:?}"),
        }
    }

    #[test]
    fn a_current_shape_subscription_update_reads_status_price_product_and_item_period_end() {
        let body = event_with("customer.subscription.updated", CURRENT_SUBSCRIPTION);

        let event = parse_event(&body).unwrap();

        assert_eq!(event.id, "evt_1");
        assert_eq!(event.type_, "customer.subscription.updated");
        assert_eq!(event.created, 1_700_000_000);
        assert_eq!(
            subscription_of(event),
            SubscriptionObject {
                id: "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw".into(),
                customer_id: "cus_QXg1o8vcGmoR32".into(),
                status: SubscriptionStatus::Active,
                price_id: Some("price_1PgafmB7WZ01zgkW6dKueIc5".into()),
                product_id: Some("prod_QXg1hqf4jFNsqG".into()),
                current_period_end: Some(976_287_773),
                cancel_at_period_end: true,
                cancel_at: Some(1_234_567_890),
                pause_collection: Some(PauseCollection {
                    behavior: "mark_uncollectible".into(),
                    resumes_at: None,
                }),
                metadata_user_id: Some("user_42".into()),
                metadata_org_id: None,
            }
        );
    }

    #[test]
    fn an_old_shape_subscription_reads_top_level_period_end_and_item_plan() {
        let body = event_with("customer.subscription.created", OLD_SUBSCRIPTION);

        let sub = subscription_of(parse_event(&body).unwrap());

        assert_eq!(sub.status, SubscriptionStatus::PastDue);
        assert_eq!(sub.price_id.as_deref(), Some("gold_monthly"));
        assert_eq!(sub.product_id.as_deref(), Some("prod_gold"));
        assert_eq!(sub.current_period_end, Some(1_502_678_400));
        assert!(!sub.cancel_at_period_end);
        assert_eq!(sub.cancel_at, None);
        assert_eq!(sub.metadata_user_id, None);
    }

    #[test]
    fn a_very_old_subscription_without_items_falls_back_to_the_top_level_plan() {
        let object = r#"{"id":"sub_1","customer":"cus_1","status":"active",
            "plan":{"id":"plan_basic","product":{"id":"prod_basic","object":"product"}}}"#;

        let sub = parse_subscription(object.as_bytes()).unwrap();

        assert_eq!(sub.price_id.as_deref(), Some("plan_basic"));
        assert_eq!(sub.product_id.as_deref(), Some("prod_basic"));
        assert_eq!(sub.current_period_end, None);
    }

    #[test]
    fn the_period_end_is_the_latest_of_several_items() {
        let object = r#"{"id":"sub_1","customer":"cus_1","status":"trialing","items":{"data":[
            {"price":{"id":"price_a","product":"prod_a"},"current_period_end":100},
            {"price":{"id":"price_b","product":"prod_b"},"current_period_end":300},
            {"price":{"id":"price_c","product":"prod_c"},"current_period_end":null}]}}"#;

        let sub = parse_subscription(object.as_bytes()).unwrap();

        assert_eq!(sub.price_id.as_deref(), Some("price_a"));
        assert_eq!(sub.current_period_end, Some(300));
    }

    #[test]
    fn an_unknown_status_is_accepted_as_unknown() {
        let object = CURRENT_SUBSCRIPTION.replace(r#""status": "active""#, r#""status": "frozen""#);
        let body = event_with("customer.subscription.updated", &object);

        let sub = subscription_of(parse_event(&body).unwrap());

        assert_eq!(sub.status, SubscriptionStatus::Unknown("frozen".into()));
    }

    #[test]
    fn unknown_fields_are_ignored_everywhere() {
        let object = r#"{"id":"sub_1","customer":"cus_1","status":"canceled","brand_new":{"deep":[1,2,{"x":null}]},
            "items":{"data":[{"price":{"id":"price_1","product":"prod_1","novel":true},"extra":7}],"more":"x"},
            "metadata":{"user_id":"u1","other":"v"}}"#;
        let body = event_with("customer.subscription.deleted", object)
            .into_iter()
            .chain(b" ".iter().copied())
            .collect::<Vec<u8>>();

        let sub = subscription_of(parse_event(&body).unwrap());

        assert_eq!(sub.status, SubscriptionStatus::Canceled);
        assert_eq!(sub.price_id.as_deref(), Some("price_1"));
        assert_eq!(sub.metadata_user_id.as_deref(), Some("u1"));
    }

    #[test]
    fn an_expanded_customer_object_gives_its_id() {
        let object = r#"{"id":"sub_1","status":"active","customer":{"id":"cus_expanded","object":"customer",
            "email":"a@example.com","address":{"city":null},"metadata":{"id":"not_this"}}}"#;
        let body = event_with("customer.subscription.resumed", object);

        let sub = subscription_of(parse_event(&body).unwrap());

        assert_eq!(sub.customer_id, "cus_expanded");
    }

    #[test]
    fn an_empty_metadata_user_id_is_treated_as_absent() {
        let object =
            r#"{"id":"sub_1","customer":"cus_1","status":"paused","metadata":{"user_id":""}}"#;

        let sub = parse_subscription(object.as_bytes()).unwrap();

        assert_eq!(sub.metadata_user_id, None);
    }

    #[test]
    fn a_subscription_missing_customer_and_status_is_not_an_event_naming_both() {
        let body = event_with("customer.subscription.updated", r#"{"id":"sub_1"}"#);

        let err = parse_event(&body).unwrap_err();

        let EventParseError::NotAnEvent(message) = err else {
            panic!("expected NotAnEvent, got {err:?}");
        };
        assert!(message.contains("`customer`"), "{message}");
        assert!(message.contains("`status`"), "{message}");
        assert!(!message.contains("`id`"), "{message}");
    }

    #[test]
    fn only_an_explicit_livemode_true_is_live() {
        let body = |livemode: &str| {
            format!(
                r#"{{"id":"evt_1","type":"invoice.paid","created":1,{livemode}"data":{{"object":{{}}}}}}"#
            )
        };
        for (livemode, live) in [
            (r#""livemode":true,"#, true),
            (r#""livemode":false,"#, false),
            ("", false),
            (r#""livemode":null,"#, false),
            (r#""livemode":"true","#, false),
        ] {
            let event = parse_event(body(livemode).as_bytes()).unwrap();

            assert_eq!(event.livemode, live, "{livemode}");
        }
    }

    #[test]
    fn customer_deleted_gives_the_customer_id() {
        let object =
            r#"{"id":"cus_QXg1o8vcGmoR32","object":"customer","deleted":true,"email":null}"#;
        let body = event_with("customer.deleted", object);

        let event = parse_event(&body).unwrap();

        assert!(matches!(
            event.kind,
            EventKind::CustomerDeleted { ref customer_id } if customer_id == "cus_QXg1o8vcGmoR32"
        ));
    }

    #[test]
    fn checkout_session_completed_gives_customer_reference_and_subscription() {
        let object = r#"{"id":"cs_test_a1","object":"checkout.session","mode":"subscription",
            "status":"complete","customer":"cus_1","client_reference_id":"user_42",
            "metadata":{"user_id":"user_43","plan":"pro"},
            "subscription":{"id":"sub_1","object":"subscription","status":"active"}}"#;
        let body = event_with("checkout.session.completed", object);

        let event = parse_event(&body).unwrap();

        let EventKind::CheckoutCompleted(session) = event.kind else {
            panic!("expected a checkout event, got {:?}", event.kind);
        };
        assert_eq!(
            session,
            CheckoutSessionObject {
                id: "cs_test_a1".into(),
                customer_id: Some("cus_1".into()),
                client_reference_id: Some("user_42".into()),
                metadata_user_id: Some("user_43".into()),
                metadata_org_id: None,
                subscription_id: Some("sub_1".into()),
            }
        );
    }

    #[test]
    fn a_payment_mode_checkout_session_has_no_customer_or_subscription() {
        let object =
            r#"{"id":"cs_test_b2","customer":null,"client_reference_id":null,"subscription":null}"#;
        let body = event_with("checkout.session.completed", object);

        let EventKind::CheckoutCompleted(session) = parse_event(&body).unwrap().kind else {
            panic!("expected a checkout event");
        };
        assert_eq!(session.customer_id, None);
        assert_eq!(session.client_reference_id, None);
        assert_eq!(session.metadata_user_id, None);
        assert_eq!(session.subscription_id, None);
    }

    #[test]
    fn a_checkout_metadata_user_id_that_is_not_a_string_is_absent_not_refused() {
        for metadata in [r#"{"user_id":7}"#, r#""x""#, r#"{"user_id":""}"#, "null"] {
            let object = format!(r#"{{"id":"cs_1","customer":"cus_1","metadata":{metadata}}}"#);
            let body = event_with("checkout.session.completed", &object);

            let EventKind::CheckoutCompleted(session) = parse_event(&body).unwrap().kind else {
                panic!("expected a checkout event");
            };
            assert_eq!(session.metadata_user_id, None, "{metadata}");
        }
    }

    /// Stripe's example price (fixtures3.json `price`), with a nickname.
    const PRICE: &str = r#"{"active":true,"billing_scheme":"per_unit","created":1234567890,
        "currency":"usd","custom_unit_amount":{"maximum":null,"minimum":null,"preset":null},
        "id":"price_1PgafmB7WZ01zgkW6dKueIc5","livemode":false,"lookup_key":null,"metadata":{},
        "nickname":"Pro monthly","object":"price","product":"prod_QXg1hqf4jFNsqG",
        "recurring":{"interval":"month","interval_count":1,"meter":null,"usage_type":"licensed",
        "trial_period_days":null},"tax_behavior":"unspecified","tiers_mode":null,
        "transform_quantity":{"divide_by":1592560163,"round":"down"},"type":"recurring",
        "unit_amount":2000,"unit_amount_decimal":"2000"}"#;

    fn price_of(body: &[u8]) -> PriceObject {
        match parse_event(body).unwrap().kind {
            EventKind::Price(price) => price,
            other => panic!("expected a price event, got {other:?}"),
        }
    }

    #[test]
    fn a_price_event_gives_what_the_price_costs_and_how_often() {
        let price = price_of(&event_with("price.created", PRICE));

        assert_eq!(
            price,
            PriceObject {
                id: "price_1PgafmB7WZ01zgkW6dKueIc5".into(),
                product_id: Some("prod_QXg1hqf4jFNsqG".into()),
                product: None,
                nickname: Some("Pro monthly".into()),
                unit_amount: Some(2000),
                currency: Some("usd".into()),
                recurring: Some(Recurring {
                    interval: "month".into(),
                    interval_count: 1
                }),
                deleted: false,
                active: true,
            }
        );
        assert!(price_of(&event_with("price.deleted", PRICE)).deleted);
        let archived = PRICE.replace(r#""active":true"#, r#""active":false"#);
        assert!(!price_of(&event_with("price.updated", &archived)).active);
    }

    #[test]
    fn a_price_read_with_its_product_expanded_gives_the_products_name() {
        let expanded = PRICE.replace(
            r#""product":"prod_QXg1hqf4jFNsqG""#,
            r#""product":{"id":"prod_QXg1hqf4jFNsqG","object":"product","name":"Pro",
                "images":[],"metadata":{"id":"not_this"}}"#,
        );

        let price = parse_price(expanded.as_bytes()).unwrap();

        assert_eq!(price.product_id.as_deref(), Some("prod_QXg1hqf4jFNsqG"));
        assert_eq!(
            price.product,
            Some(ProductObject {
                id: "prod_QXg1hqf4jFNsqG".into(),
                name: Some("Pro".into()),
                deleted: false
            })
        );
    }

    #[test]
    fn price_fields_of_odd_shapes_are_read_as_absent_not_refused() {
        for (field, value) in [
            ("unit_amount", "null"),
            ("unit_amount", r#""2000""#),
            ("nickname", "7"),
            ("nickname", r#""""#),
            ("currency", r#""US dollars""#),
            ("recurring", "null"),
            ("recurring", r#"{"interval":9}"#),
            ("product", "[1]"),
        ] {
            let object = format!(r#"{{"id":"price_1","{field}":{value}}}"#);

            let price = price_of(&event_with("price.updated", &object));

            let absent = match field {
                "unit_amount" => price.unit_amount.is_none(),
                "nickname" => price.nickname.is_none(),
                "currency" => price.currency.is_none(),
                "recurring" => price.recurring.is_none(),
                _ => price.product_id.is_none(),
            };
            assert!(absent, "{field}: {value} gave {price:?}");
        }
    }

    #[test]
    fn a_currency_is_lower_cased_and_a_count_that_is_no_positive_integer_is_one() {
        for (count, read) in [("3", 3), ("0", 1), ("-2", 1), (r#""two""#, 1), ("1e99", 1)] {
            let object = format!(
                r#"{{"id":"price_1","currency":"EUR","recurring":{{"interval":"week","interval_count":{count}}}}}"#
            );

            let price = price_of(&event_with("price.updated", &object));

            assert_eq!(price.currency.as_deref(), Some("eur"));
            assert_eq!(
                price.recurring,
                Some(Recurring {
                    interval: "week".into(),
                    interval_count: read
                }),
                "{count}"
            );
        }
    }

    #[test]
    fn a_product_event_gives_its_name_and_a_deletion_says_so() {
        let object = r#"{"id":"prod_1","object":"product","name":"Pro","active":true,
            "marketing_features":[],"package_dimensions":null}"#;

        let Event { kind, .. } = parse_event(&event_with("product.updated", object)).unwrap();
        let EventKind::Product(product) = kind else {
            panic!("expected a product event, got {kind:?}");
        };
        let Event { kind, .. } = parse_event(&event_with(
            "product.deleted",
            r#"{"id":"prod_1","object":"product","deleted":true}"#,
        ))
        .unwrap();
        let EventKind::Product(deleted) = kind else {
            panic!("expected a product event, got {kind:?}");
        };

        assert_eq!(
            product,
            ProductObject {
                id: "prod_1".into(),
                name: Some("Pro".into()),
                deleted: false
            }
        );
        assert_eq!((deleted.name, deleted.deleted), (None, true));
    }

    #[test]
    fn a_price_or_product_without_an_id_is_not_an_event() {
        for type_ in ["price.created", "product.updated"] {
            for object in [r#"{"name":"Pro","unit_amount":1}"#, r#"{"id":""}"#] {
                assert!(
                    matches!(
                        parse_event(&event_with(type_, object)),
                        Err(EventParseError::NotAnEvent(_))
                    ),
                    "{type_} {object}"
                );
            }
        }
    }

    #[test]
    fn a_price_read_from_the_api_holding_a_nul_is_refused() {
        let body = PRICE.replace("Pro monthly", r"Pro\u0000monthly");

        assert!(matches!(
            parse_price(body.as_bytes()),
            Err(EventParseError::NotAnEvent(_))
        ));
    }

    #[test]
    fn an_unhandled_type_is_ignored_even_with_a_weird_object() {
        let object = r#"{"id":12,"customer":[true],"status":{"nested":"x"},"items":"not a list"}"#;
        let body = event_with("invoice.paid", object);

        let event = parse_event(&body).unwrap();

        assert_eq!(event.type_, "invoice.paid");
        assert!(matches!(event.kind, EventKind::Ignored));
    }

    #[test]
    fn other_subscription_types_are_ignored() {
        let body = event_with("customer.subscription.trial_will_end", r#"{"weird":1}"#);

        let event = parse_event(&body).unwrap();

        assert!(matches!(event.kind, EventKind::Ignored));
    }

    #[test]
    fn an_event_with_an_empty_id_or_type_is_not_an_event() {
        for body in [
            r#"{"id":"","type":"","created":1,"data":{"object":{}}}"#,
            r#"{"id":"evt_1","type":" ","created":1,"data":{"object":{}}}"#,
        ] {
            assert!(matches!(
                parse_event(body.as_bytes()),
                Err(EventParseError::NotAnEvent(_))
            ));
        }
    }

    #[test]
    fn json_that_is_not_an_event_is_not_an_event() {
        let cases: [&[u8]; 8] = [
            br#"{}"#,
            br#"[]"#,
            br#"["evt_1","invoice.paid",1,{"object":{}}]"#,
            br#""hello""#,
            br#"{"id":"evt_1","type":"invoice.paid","created":"yesterday","data":{"object":{}}}"#,
            br#"{"id":"evt_1","type":"invoice.paid","created":1.5,"data":{"object":{}}}"#,
            br#"{"id":"evt_1","type":"invoice.paid","created":1,"data":{"object":null}}"#,
            br#"{"id":7,"type":"invoice.paid","created":1,"data":{"object":{}}}"#,
        ];
        for body in cases {
            let result = parse_event(body);

            assert!(
                matches!(result, Err(EventParseError::NotAnEvent(_))),
                "{}: {result:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn garbage_bytes_are_not_json() {
        let cases: [&[u8]; 6] = [
            b"",
            b"\xff\xfe\x00garbage",
            b"{\"id\":",
            b"{\"id\":7, nonsense",
            b"not json at all",
            b"{\"id\":\"evt_1\"} trailing",
        ];
        for body in cases {
            let result = parse_event(body);

            assert!(
                matches!(result, Err(EventParseError::NotJson)),
                "{}: {result:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn deeply_nested_input_is_an_error_not_a_stack_overflow() {
        let mut body =
            br#"{"id":"e","type":"invoice.paid","created":1,"data":{"object":{"x":"#.to_vec();
        body.extend(std::iter::repeat_n(b'[', 100_000));

        assert!(parse_event(&body).is_err());
    }

    #[test]
    fn a_bare_subscription_parses_like_a_webhook_one() {
        let from_api = parse_subscription(CURRENT_SUBSCRIPTION.as_bytes()).unwrap();
        let from_webhook = subscription_of(
            parse_event(&event_with(
                "customer.subscription.updated",
                CURRENT_SUBSCRIPTION,
            ))
            .unwrap(),
        );

        assert_eq!(from_api, from_webhook);
    }

    #[test]
    fn a_bare_subscription_of_the_wrong_shape_is_rejected() {
        assert!(matches!(
            parse_subscription(br#"{"id":"sub_1","customer":"cus_1","status":5}"#),
            Err(EventParseError::NotAnEvent(_))
        ));
        assert!(matches!(
            parse_subscription(b"{oops"),
            Err(EventParseError::NotJson)
        ));
    }

    fn previous_of(body: &[u8]) -> PreviousAttributes {
        match parse_event(body).unwrap().kind {
            EventKind::Subscription(_, previous) => previous,
            other => panic!("expected a subscription event, got {other:?}"),
        }
    }

    fn with_previous(previous: &str) -> Vec<u8> {
        let body = String::from_utf8(event_with(
            "customer.subscription.updated",
            CURRENT_SUBSCRIPTION,
        ))
        .unwrap();
        body.replace(
            r#""previous_attributes":{}"#,
            &format!(r#""previous_attributes":{previous}"#),
        )
        .into_bytes()
    }

    #[test]
    fn previous_attributes_are_reduced_to_the_fields_that_order_states() {
        let body = with_previous(
            r#"{"status":"incomplete","cancel_at":null,"cancel_at_period_end":true,
                "pause_collection":{"behavior":"void","resumes_at":1700000500},
                "items":{"data":[{"price":{"id":"price_old","product":"prod_1"},"current_period_end":1699000000}]},
                "latest_invoice":"in_1","metadata":{"x":"y"}}"#,
        );

        let previous = previous_of(&body);

        assert_eq!(
            serde_json::Value::Object(previous.0),
            serde_json::json!({
                "status": "incomplete", "cancel_at": null, "cancel_at_period_end": true,
                "pause_behavior": "void", "pause_resumes_at": 1_700_000_500,
                "price_id": "price_old", "current_period_end": 1_699_000_000
            })
        );
    }

    #[test]
    fn previous_attributes_that_are_not_an_object_count_as_absent() {
        for previous in [r#""status""#, "[1,2]", "null", "42", "{}"] {
            let body = with_previous(previous);

            let event = parse_event(&body).unwrap();

            let EventKind::Subscription(sub, previous) = event.kind else {
                panic!("expected a subscription event");
            };
            assert!(previous.0.is_empty(), "{previous:?}");
            assert_eq!(sub.status, SubscriptionStatus::Active);
        }
    }

    #[test]
    fn previous_attributes_of_the_wrong_type_are_dropped_one_by_one() {
        let body = with_previous(r#"{"status":7,"cancel_at":"soon","cancel_at_period_end":false}"#);

        let previous = previous_of(&body);

        assert_eq!(
            serde_json::Value::Object(previous.0),
            serde_json::json!({"cancel_at_period_end": false})
        );
    }

    #[test]
    fn fields_of_the_wrong_type_are_read_as_absent_not_refused() {
        let object = r#"{"id":"sub_1","customer":"cus_1","status":"active","cancel_at":"tomorrow",
            "cancel_at_period_end":"yes","current_period_end":[1],
            "pause_collection":{"behavior":"freeze_everything","resumes_at":"later"}}"#;

        let sub = parse_subscription(object.as_bytes()).unwrap();

        assert_eq!(sub.cancel_at, None);
        assert!(!sub.cancel_at_period_end);
        assert_eq!(sub.current_period_end, None);
        assert_eq!(
            sub.pause_collection,
            Some(PauseCollection {
                behavior: "freeze_everything".into(),
                resumes_at: None
            })
        );
    }

    #[test]
    fn a_pause_collection_that_is_not_an_object_or_lacks_a_behavior_is_no_pause() {
        for pause in [r#""paused""#, "null", "{}", r#"{"behavior":""}"#, "true"] {
            let object = format!(
                r#"{{"id":"sub_1","customer":"cus_1","status":"active","pause_collection":{pause}}}"#
            );

            let sub = parse_subscription(object.as_bytes()).unwrap();

            assert_eq!(sub.pause_collection, None, "{pause}");
        }
    }

    #[test]
    fn a_price_body_that_is_not_json_is_not_json_whatever_it_holds() {
        // The fuzzer's input: an event-looking body with a missing comma and an escaped NUL.
        let body = br#"{"id":"price_1","nickname":"\u0000""currency":"usd"}"#;
        assert!(matches!(parse_price(body), Err(EventParseError::NotJson)));
        let json = br#"{"id":"price_1","nickname":"a\u0000b","currency":"usd"}"#;
        assert!(matches!(
            parse_price(json),
            Err(EventParseError::NotAnEvent(_))
        ));
    }

    #[test]
    fn an_entitlement_summary_names_its_customer_and_nothing_of_the_summary_is_trusted() {
        let body = |object: &str| {
            format!(
                r#"{{"id":"evt_1","type":"entitlements.active_entitlement_summary.updated",
                    "created":1,"data":{{"object":{object}}}}}"#
            )
        };
        let summary = r#"{"object":"entitlements.active_entitlement_summary",
            "customer":"cus_1","livemode":false,
            "entitlements":{"object":"list","data":[],"has_more":true}}"#;

        let parsed = parse_event(body(summary).as_bytes()).unwrap();
        let expanded = parse_event(body(r#"{"customer":{"id":"cus_2"}}"#).as_bytes()).unwrap();

        assert!(matches!(parsed.kind,
            EventKind::EntitlementSummary { ref customer_id } if customer_id == "cus_1"));
        assert!(matches!(expanded.kind,
            EventKind::EntitlementSummary { ref customer_id } if customer_id == "cus_2"));
        assert!(matches!(
            parse_event(body(r#"{"customer":""}"#).as_bytes()),
            Err(EventParseError::NotAnEvent(_))
        ));
    }
}
