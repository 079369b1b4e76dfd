//! Stripe-shaped JSON for the emulator's objects: the API's answers and the
//! events' `data.object`. Objects start from Stripe's own example objects
//! (`fixtures/*.json`, from stripe/openapi `fixtures3.json`, MIT licence) so
//! async-stripe's strict types parse them.

use serde_json::{json, Value};

use super::account::Emulator;
use super::model::*;

fn fixture(name: &str) -> Value {
    let text = match name {
        "subscription" => include_str!("fixtures/subscription.json"),
        "price" => include_str!("fixtures/price.json"),
        "product" => include_str!("fixtures/product.json"),
        "checkout_session" => include_str!("fixtures/checkout_session.json"),
        _ => include_str!("fixtures/invoice.json"),
    };
    serde_json::from_str(text).expect("embedded fixtures are valid JSON")
}

fn address_json(a: &Address) -> Value {
    json!({"city": a.city, "country": a.country, "line1": a.line1, "line2": null,
           "postal_code": a.postal_code, "state": null})
}

pub(crate) fn customer_json(c: &Customer) -> Value {
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

pub(crate) fn price_json(p: &Price) -> Value {
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

pub(crate) fn product_json(p: &Price) -> Value {
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

pub(crate) fn subscription_json(s: &Subscription) -> Value {
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

pub(crate) fn invoice_json(i: &Invoice, base_url: &str) -> Value {
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

pub(crate) fn portal_session_json(s: &PortalSession, url: &str) -> Value {
    let flow = s.flow.as_ref().map(|(kind, sub)| {
        json!({
            "type": kind.as_str(),
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

/// A Checkout Session at `now` (an open one past `expires_at` reads
/// `expired`), its hosted page at `url`
/// (docs.stripe.com/api/checkout/sessions/object).
pub(crate) fn checkout_session_json(s: &CheckoutSession, url: &str, now: i64) -> Value {
    let price = Emulator::price(&s.price).expect("sessions only hold seeded prices");
    let status = s.status_at(now);
    let mut v = fixture("checkout_session");
    v["id"] = json!(s.id);
    v["status"] = json!(status);
    v["payment_status"] = json!(if status == "complete" {
        "paid"
    } else {
        "unpaid"
    });
    v["customer"] = json!(s.customer);
    v["subscription"] = json!(s.subscription);
    v["invoice"] = json!(s.invoice);
    v["client_reference_id"] = json!(s.client_reference_id);
    v["metadata"] = json!(s.metadata);
    v["success_url"] = json!(s.success_url);
    v["cancel_url"] = json!(s.cancel_url);
    // Stripe gives the URL only while the session can be paid.
    v["url"] = if status == "open" {
        json!(url)
    } else {
        Value::Null
    };
    v["created"] = json!(s.created);
    v["expires_at"] = json!(s.expires_at());
    v["amount_subtotal"] = json!(price.unit_amount);
    v["amount_total"] = json!(price.unit_amount);
    v
}

pub(crate) fn list_json(data: Vec<Value>, url: &str, has_more: bool) -> Value {
    json!({"object": "list", "data": data, "has_more": has_more, "url": url})
}
