//! Fuzzes `parse_event`, `parse_subscription` and `parse_price` from `src/stripe/events.rs` on raw
//! bytes (the corpus files are webhook bodies / subscription and price objects as Stripe sends
//! them).
//!
//! Properties checked:
//! - Neither function panics (nor overflows the stack, nor exhausts memory), on any input.
//! - A parsed event has a non-empty `id` and `type`, and its `type` decides its `kind`.
//! - Whatever the parsers return as an identifier (subscription, customer, checkout session,
//!   price, product, an entitlement summary's customer) is non-empty, and optional ids/metadata/names are `None` rather than
//!   `Some("")`; a price's currency is three lower-case letters and its interval count at least 1.
//! - Only a body that is valid JSON can parse, and `NotJson` is only reported for a body that
//!   is not (checked in that direction only: see `check_error`).
#![no_main]

use billing_portal::stripe::events::{
    parse_event, parse_price, parse_subscription, CheckoutSessionObject, EventKind,
    EventParseError, PriceObject, ProductObject, SubscriptionObject,
};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;

const SUBSCRIPTION_TYPES: [&str; 5] = [
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
];

fn is_json(data: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(data).is_ok()
}

fn check_optional<T: AsRef<str>>(name: &str, value: &Option<T>) {
    if let Some(v) = value {
        assert!(
            !v.as_ref().is_empty(),
            "{name} is Some(\"\") instead of None"
        );
    }
}

fn check_subscription(sub: &SubscriptionObject) {
    assert!(
        !sub.id.as_str().is_empty(),
        "subscription with an empty id: {sub:?}"
    );
    assert!(
        !sub.customer_id.as_str().is_empty(),
        "subscription with an empty customer: {sub:?}"
    );
    check_optional("price_id", &sub.price_id);
    check_optional("product_id", &sub.product_id);
    check_optional("metadata_user_id", &sub.metadata_user_id);
}

fn check_checkout(session: &CheckoutSessionObject) {
    assert!(
        !session.id.is_empty(),
        "checkout session with an empty id: {session:?}"
    );
    check_optional("customer_id", &session.customer_id);
    check_optional("client_reference_id", &session.client_reference_id);
    check_optional("metadata_user_id", &session.metadata_user_id);
    check_optional("subscription_id", &session.subscription_id);
}

fn check_product(product: &ProductObject) {
    assert!(!product.id.is_empty(), "product with an empty id: {product:?}");
    check_optional("product name", &product.name);
}

fn check_price(price: &PriceObject) {
    assert!(!price.id.is_empty(), "price with an empty id: {price:?}");
    check_optional("price product_id", &price.product_id);
    check_optional("nickname", &price.nickname);
    if let Some(currency) = &price.currency {
        assert!(
            currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_lowercase()),
            "currency {currency:?} is not a lower-case ISO 4217 code"
        );
    }
    if let Some(recurring) = &price.recurring {
        assert!(!recurring.interval.is_empty(), "an empty interval: {price:?}");
        assert!(recurring.interval_count >= 1, "interval count below 1: {price:?}");
    }
    if let Some(product) = &price.product {
        check_product(product);
        assert_eq!(
            price.product_id.as_deref(),
            Some(product.id.as_str()),
            "an expanded product other than the price's product id"
        );
    }
}

/// `NotAnEvent` promises the body was JSON. The converse (`NotJson` only for non-JSON) is not
/// asserted: serde_json's `IgnoredAny`, which the parser uses to tell the two apart, accepts
/// strings that reading into a `String` rejects as syntax errors (a lone `\ud800` escape,
/// invalid UTF-8 bytes), so such bodies are reported as `NotJson`. Both are refusals.
fn check_error(data: &[u8], err: &EventParseError) {
    if let EventParseError::NotAnEvent(message) = err {
        assert!(
            is_json(data),
            "NotAnEvent ({message}) for a body that is not JSON"
        );
    }
    // Display must work for the error response body.
    let _ = err.to_string();
}

fuzz_target!(|data: &[u8]| {
    match parse_event(data) {
        Ok(event) => {
            assert!(
                !event.id.as_str().is_empty(),
                "event with an empty id: {event:?}"
            );
            assert!(
                !event.type_.is_empty(),
                "event with an empty type: {event:?}"
            );
            assert!(
                is_json(data),
                "an event parsed from a body that is not JSON"
            );
            let is_subscription_type = SUBSCRIPTION_TYPES.contains(&event.type_.as_str());
            match &event.kind {
                EventKind::Subscription(sub, _) => {
                    assert!(is_subscription_type, "{} gave a subscription", event.type_);
                    check_subscription(sub);
                }
                EventKind::CustomerDeleted { customer_id } => {
                    assert_eq!(event.type_, "customer.deleted");
                    assert!(
                        !customer_id.as_str().is_empty(),
                        "customer.deleted with an empty id"
                    );
                }
                EventKind::CheckoutCompleted(session) => {
                    assert_eq!(event.type_, "checkout.session.completed");
                    check_checkout(session);
                }
                EventKind::Price(price) => {
                    assert!(event.type_.starts_with("price."), "{} gave a price", event.type_);
                    assert!(
                        price.deleted || event.type_ != "price.deleted",
                        "price.deleted gave a price not deleted"
                    );
                    check_price(price);
                }
                EventKind::Product(product) => {
                    assert!(event.type_.starts_with("product."), "{} gave a product", event.type_);
                    assert!(
                        product.deleted || event.type_ != "product.deleted",
                        "product.deleted gave a product not deleted"
                    );
                    check_product(product);
                }
                EventKind::EntitlementSummary { customer_id } => {
                    assert_eq!(
                        event.type_,
                        "entitlements.active_entitlement_summary.updated"
                    );
                    assert!(
                        !customer_id.as_str().is_empty(),
                        "an entitlement summary with an empty customer"
                    );
                }
                EventKind::Ignored => {
                    assert!(
                        !billing_portal::stripe::events::HANDLED_TYPES
                            .contains(&event.type_.as_str()),
                        "handled type {} was ignored",
                        event.type_
                    );
                }
            }
        }
        Err(err) => check_error(data, &err),
    }

    match parse_subscription(data) {
        Ok(sub) => {
            assert!(
                is_json(data),
                "a subscription parsed from a body that is not JSON"
            );
            check_subscription(&sub);
        }
        Err(err) => check_error(data, &err),
    }

    match parse_price(data) {
        Ok(price) => {
            assert!(is_json(data), "a price parsed from a body that is not JSON");
            check_price(&price);
        }
        Err(err) => check_error(data, &err),
    }
});
