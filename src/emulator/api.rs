//! The emulator's Stripe API under `/stripe-emulator/v1/…`: form-encoded
//! requests (bracketed keys like `metadata[user_id]`), Stripe error objects,
//! `Idempotency-Key` on POSTs, and list pagination (`limit`,
//! `starting_after`). Endpoints: customers (create, retrieve, update,
//! delete), billing portal sessions, subscriptions (create, retrieve, update,
//! cancel, list), products, prices, invoices (list).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::*;

type Form = HashMap<String, String>;

fn form(body: &[u8]) -> Form {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn query(req: &HttpRequest) -> Form {
    form(req.query_string().as_bytes())
}

fn metadata(form: &Form) -> BTreeMap<String, String> {
    form.iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect()
}

fn text(form: &Form, key: &str) -> Option<String> {
    form.get(key).filter(|v| !v.is_empty()).cloned()
}

fn flag(form: &Form, key: &str) -> Result<Option<bool>, StripeApiError> {
    match form.get(key).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(StripeApiError::invalid(
            format!("Invalid boolean: {key}"),
            None,
        )),
    }
}

fn answer(status: u16, body: Value) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default())
        .insert_header((
            "request-id",
            format!("req_emu{}", uuid::Uuid::new_v4().simple()),
        ))
        .json(body)
}

/// Pages through `items` (oldest first) the way Stripe lists do.
fn page(items: Vec<(String, Value)>, q: &Form, url: &str) -> Result<Value, StripeApiError> {
    let limit: usize = match q.get("limit") {
        None => 10,
        Some(l) => l
            .parse()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| {
                StripeApiError::invalid("limit must be between 1 and 100", Some("limit"))
            })?,
    };
    let start = match q.get("starting_after") {
        Some(after) => items
            .iter()
            .position(|(id, _)| id == after)
            .map(|i| i + 1)
            .ok_or_else(|| StripeApiError::missing("object", after, "starting_after"))?,
        None => 0,
    };
    let rest: Vec<Value> = items.into_iter().skip(start).map(|(_, v)| v).collect();
    let has_more = rest.len() > limit;
    Ok(list_json(
        rest.into_iter().take(limit).collect(),
        url,
        has_more,
    ))
}

/// Every `/v1/…` request lands here.
pub async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer sk_"));
    if !authorized {
        return answer(
            401,
            json!({"error": {"type": "invalid_request_error",
                   "message": "You did not provide a valid API key (Bearer sk_…)."}}),
        );
    }
    let path = req.match_info().query("path").to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|_| method == Method::POST)
        .map(str::to_string);
    let fingerprint = format!("{method} {path} {}", String::from_utf8_lossy(&body));
    let form = form(&body);
    let q = query(&req);
    let emu = emu.get_ref().clone();
    let (status, value) = emu.idempotent(key.as_deref(), fingerprint, |emu, state| {
        route(emu, state, &method, &segments, &form, &q)
    });
    answer(status, value)
}

fn route(
    emu: &Emulator,
    state: &mut State,
    method: &Method,
    segments: &[&str],
    form: &Form,
    q: &Form,
) -> Result<Value, StripeApiError> {
    match (method.as_str(), segments) {
        ("POST", ["customers"]) => {
            let c = emu.create_customer(
                state,
                text(form, "email"),
                text(form, "name"),
                metadata(form),
            );
            Ok(customer_json(&c))
        }
        ("GET", ["customers", id]) => state
            .customers
            .get(*id)
            .map(customer_json)
            .ok_or_else(|| StripeApiError::missing("customer", id, "id")),
        ("POST", ["customers", id]) => {
            let c = state
                .customers
                .get_mut(*id)
                .ok_or_else(|| StripeApiError::missing("customer", id, "id"))?;
            if let Some(email) = text(form, "email") {
                c.email = Some(email);
            }
            if let Some(name) = text(form, "name") {
                c.name = Some(name);
            }
            c.metadata.extend(metadata(form));
            let object = customer_json(c);
            emu.emit(state, "customer.updated", object.clone(), None);
            Ok(object)
        }
        ("DELETE", ["customers", id]) => emu.delete_customer(state, id),
        ("POST", ["billing_portal", "sessions"]) => create_portal_session(emu, state, form),
        ("POST", ["subscriptions"]) => {
            let customer = text(form, "customer").ok_or_else(|| {
                StripeApiError::invalid("Missing required param: customer.", Some("customer"))
            })?;
            let price = text(form, "items[0][price]").ok_or_else(|| {
                StripeApiError::invalid("Missing required param: items[0][price].", Some("items"))
            })?;
            let sub = emu.create_subscription(state, &customer, &price, metadata(form))?;
            Ok(subscription_json(&sub))
        }
        ("GET", ["subscriptions"]) => {
            let status = q
                .get("status")
                .map(String::as_str)
                .unwrap_or("active_or_past");
            let items = state
                .subscriptions
                .values()
                .filter(|s| q.get("customer").is_none_or(|c| *c == s.customer))
                .filter(|s| match status {
                    "all" => true,
                    // Stripe's default hides canceled subscriptions.
                    "active_or_past" => s.status != "canceled",
                    wanted => s.status == wanted,
                })
                .map(|s| (s.id.clone(), subscription_json(s)))
                .collect();
            page(items, q, "/v1/subscriptions")
        }
        ("GET", ["subscriptions", id]) => state
            .subscriptions
            .get(*id)
            .map(subscription_json)
            .ok_or_else(|| StripeApiError::missing("subscription", id, "id")),
        ("POST", ["subscriptions", id]) => {
            let sub = emu.update_subscription(
                state,
                id,
                form.get("items[0][price]").map(String::as_str),
                flag(form, "cancel_at_period_end")?,
                text(form, "cancellation_details[feedback]"),
            )?;
            Ok(subscription_json(&sub))
        }
        ("DELETE", ["subscriptions", id]) => {
            let sub = emu.cancel_now(
                state,
                id,
                text(form, "cancellation_details[feedback]"),
                text(form, "cancellation_details[comment]"),
            )?;
            Ok(subscription_json(&sub))
        }
        ("GET", ["products"]) => {
            let items = Emulator::prices()
                .iter()
                .map(|p| (p.product.to_string(), product_json(p)))
                .collect();
            page(items, q, "/v1/products")
        }
        ("GET", ["prices"]) => {
            let items = Emulator::prices()
                .iter()
                .map(|p| (p.id.to_string(), price_json(p)))
                .collect();
            page(items, q, "/v1/prices")
        }
        ("GET", ["invoices"]) => {
            let items = state
                .invoices
                .iter()
                .rev()
                .filter(|i| q.get("customer").is_none_or(|c| *c == i.customer))
                .map(|i| (i.id.clone(), invoice_json(i, &emu.base_url)))
                .collect();
            page(items, q, "/v1/invoices")
        }
        _ => Err(StripeApiError {
            status: 404,
            kind: "invalid_request_error",
            code: None,
            message: format!(
                "Unrecognized request URL ({method} /v1/{}). This emulator implements what \
                 billing-portal uses.",
                segments.join("/")
            ),
            param: None,
        }),
    }
}

fn create_portal_session(
    emu: &Emulator,
    state: &mut State,
    form: &Form,
) -> Result<Value, StripeApiError> {
    let customer = text(form, "customer").ok_or_else(|| {
        StripeApiError::invalid("Missing required param: customer.", Some("customer"))
    })?;
    if !state.customers.contains_key(&customer) {
        return Err(StripeApiError::missing("customer", &customer, "customer"));
    }
    let flow = match form.get("flow_data[type]").map(String::as_str) {
        None => None,
        Some("payment_method_update") => Some((FlowKind::PaymentMethodUpdate, None)),
        Some(kind @ ("subscription_cancel" | "subscription_update")) => {
            let (flow, key) = if kind == "subscription_cancel" {
                (
                    FlowKind::SubscriptionCancel,
                    "flow_data[subscription_cancel][subscription]",
                )
            } else {
                (
                    FlowKind::SubscriptionUpdate,
                    "flow_data[subscription_update][subscription]",
                )
            };
            let sub_id = text(form, key).ok_or_else(|| {
                StripeApiError::invalid(
                    format!("Missing required param: {key}."),
                    Some("flow_data"),
                )
            })?;
            let sub = state
                .subscriptions
                .get(&sub_id)
                .filter(|s| s.customer == customer)
                .ok_or_else(|| StripeApiError::missing("subscription", &sub_id, "flow_data"))?;
            if sub.status == "canceled" {
                return Err(StripeApiError::invalid(
                    "You can't create a portal session for a canceled subscription.",
                    Some("flow_data"),
                ));
            }
            Some((flow, Some(sub_id)))
        }
        Some(other) => {
            return Err(StripeApiError::invalid(
                format!("Invalid flow_data[type]: {other}"),
                Some("flow_data"),
            ))
        }
    };
    let session = PortalSession {
        id: emu.new_id("bps"),
        customer,
        return_url: text(form, "return_url").unwrap_or_else(|| "/".into()),
        created: now(),
        flow,
        configuration: text(form, "configuration").unwrap_or_else(|| "bpc_emulator_default".into()),
        locale: text(form, "locale"),
    };
    let url = emu.portal_url(&session.id);
    let value = portal_session_json(&session, &url);
    state.sessions.insert(session.id.clone(), session);
    Ok(value)
}
