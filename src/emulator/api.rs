//! The emulator's Stripe API under `/stripe-emulator/v1/…`: form-encoded
//! requests (bracketed keys like `metadata[user_id]`), Stripe error objects,
//! `Idempotency-Key` on POSTs (saved answers replayed with
//! `Idempotent-Replayed: true`; see [`Emulator::idempotent`]), and list pagination (`limit`,
//! `starting_after`). Endpoints: customers (create, retrieve, update,
//! delete; `source=tok_…` attaches a test card), billing portal sessions,
//! subscriptions (create with `billing_mode[type]`, retrieve, update with
//! `cancel_at`, `cancel_at_period_end` and `pause_collection`, cancel, list),
//! products and prices (list, retrieve; a price with `expand[]=product`),
//! invoices (list), events (list: `type` or `types[]`,
//! `created[gte]`…, the last 30 days only), Checkout
//! Sessions in `subscription` mode (create, retrieve, `expand[]=subscription`;
//! each one's `url` is the hosted checkout page), Stripe's test clock
//! advance, and the emulator-only test helpers: account settings and paying
//! a Checkout Session (see the module doc of [`super`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::account::{Answer, Emulator, EVENT_RETENTION_SECS};
use super::billing;
use super::entitlements;
use super::model::*;
use super::objects::*;

type Form = HashMap<String, String>;

fn form(body: &[u8]) -> Form {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn query(req: &HttpRequest) -> Form {
    form(req.query_string().as_bytes())
}

fn metadata(form: &Form) -> BTreeMap<String, String> {
    metadata_under(form, "metadata[")
}

/// The `{prefix}key]=value` pairs, such as `subscription_data[metadata][key]`.
fn metadata_under(form: &Form, prefix: &str) -> BTreeMap<String, String> {
    form.iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(prefix)
                .and_then(|k| k.strip_suffix(']'))
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect()
}

/// Whether `expand[]` (or `expand[0]`…) names `field`, as Stripe's expansion
/// of a related object's id into the object (docs.stripe.com/expand).
fn expands(q: &Form, field: &str) -> bool {
    metadata_under(q, "expand[").values().any(|v| v == field)
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

fn integer(form: &Form, key: &'static str) -> Result<Option<i64>, StripeApiError> {
    form.get(key)
        .map(|v| {
            v.parse()
                .map_err(|_| StripeApiError::invalid(format!("Invalid integer: {v}"), Some(key)))
        })
        .transpose()
}

/// `source=tok_…`, checked before anything is created: Stripe fails the
/// whole request on a bad token.
fn source(form: &Form) -> Result<Option<String>, StripeApiError> {
    match text(form, "source") {
        None => Ok(None),
        Some(token) => match token_card(&token) {
            Some(TEST_CARD_DECLINED) => Err(StripeApiError::card_declined()),
            Some(_) => Ok(Some(token)),
            None => Err(StripeApiError::missing("token", &token, "source")),
        },
    }
}

/// `cancel_at`: a unix time, empty to clear, or (flexible mode only) Stripe's
/// `min_period_end`/`max_period_end`, which with one item are its period end
/// (docs.stripe.com/changelog/basil/2025-05-28/cancel-at-enums).
fn cancel_at(
    form: &Form,
    sub: Option<&Subscription>,
) -> Result<Option<Option<i64>>, StripeApiError> {
    let Some(value) = form.get("cancel_at") else {
        return Ok(None);
    };
    match (value.as_str(), sub) {
        ("", _) => Ok(Some(None)),
        ("min_period_end" | "max_period_end", Some(sub))
            if sub.billing_mode == BillingMode::Flexible =>
        {
            Ok(Some(Some(sub.current_period_end)))
        }
        ("min_period_end" | "max_period_end", _) => Err(StripeApiError::invalid(
            format!(
                "cancel_at={value} is only available for subscriptions in flexible billing mode."
            ),
            Some("cancel_at"),
        )),
        _ => integer(form, "cancel_at").map(Some),
    }
}

/// `pause_collection[behavior]` (+ `[resumes_at]`), or an empty
/// `pause_collection=` to resume (docs.stripe.com/api/subscriptions/update#update_subscription-pause_collection).
fn pause_collection(form: &Form) -> Result<Option<Option<PauseCollection>>, StripeApiError> {
    let behavior = form.get("pause_collection[behavior]");
    let resumes_at = integer(form, "pause_collection[resumes_at]")?;
    match (form.get("pause_collection"), behavior) {
        (Some(empty), None) if empty.is_empty() && resumes_at.is_none() => Ok(Some(None)),
        (_, Some(b)) if matches!(b.as_str(), "keep_as_draft" | "mark_uncollectible" | "void") => {
            Ok(Some(Some(PauseCollection {
                behavior: b.clone(),
                resumes_at,
            })))
        }
        (_, Some(b)) => Err(StripeApiError::invalid(
            format!(
                "Invalid pause_collection[behavior]: must be one of keep_as_draft, \
                 mark_uncollectible, or void (got '{b}')."
            ),
            Some("pause_collection"),
        )),
        (None, None) if resumes_at.is_none() => Ok(None),
        _ => Err(StripeApiError::invalid(
            "Missing required param: pause_collection[behavior].",
            Some("pause_collection"),
        )),
    }
}

fn answer(status: u16, body: Value) -> HttpResponse {
    respond(Answer {
        status,
        body,
        replayed: false,
    })
}

/// A replayed answer carries `Idempotent-Replayed: true`, as Stripe's do
/// (docs.stripe.com/error-low-level), so a client can stop retrying it. An
/// error carries `Stripe-Should-Retry` where Stripe says it: `false` on a 500
/// (stripe-node's `_shouldRetry`: "we expect the stripe-should-retry header
/// to be false in most cases when a 500 is returned, since our idempotency
/// framework would typically replay it anyway"), `true` on a 409 for a key
/// still in flight and on a 503 for a request that never ran.
fn respond(answer: Answer) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(answer.status).unwrap_or_default();
    let mut response = HttpResponse::build(status);
    response.insert_header((
        "request-id",
        format!("req_emu{}", uuid::Uuid::new_v4().simple()),
    ));
    if answer.replayed {
        response.insert_header(("idempotent-replayed", "true"));
    }
    match answer.status {
        500 => {
            response.insert_header(("stripe-should-retry", "false"));
        }
        409 | 503 => {
            response.insert_header(("stripe-should-retry", "true"));
        }
        _ => {}
    }
    response.json(answer.body)
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
pub(crate) async fn handle(
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
    let target = format!("/v1/{}", segments.join("/"));
    // The emulator's own settings answer at once whatever `latency_ms` is, so
    // a test turns it on and off without waiting.
    let held = segments != ["test_helpers", "account_settings"];
    let outcome = emu
        .idempotent(key.as_deref(), fingerprint, held, |emu, state| {
            let faulty = state.settings.fail_next_post.as_ref() == Some(&target);
            if method == Method::POST && faulty {
                // Fails as the endpoint begins: saved under the key, nothing
                // else changed but the one-shot fault spent.
                state.settings.fail_next_post = None;
                return Err(StripeApiError::unknown());
            }
            route(emu, state, &method, &segments, &form, &q)
        })
        .await;
    match outcome {
        Ok(answered) => respond(answered),
        // What Stripe answers when it cannot serve a request: worth a retry.
        Err(e) => {
            log::warn!("emulator: {method} /v1/{path} not served: {e}");
            let err = StripeApiError::unavailable(e.to_string());
            answer(err.status, err.to_json())
        }
    }
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
            let token = source(form)?;
            let c = emu.create_customer(
                state,
                text(form, "email"),
                text(form, "name"),
                metadata(form),
            );
            if let Some(token) = token {
                emu.set_card_token(state, &c.id, &token)?;
            }
            Ok(customer_json(&state.customers[&c.id]))
        }
        ("GET", ["customers", id]) => state
            .customers
            .get(*id)
            .map(customer_json)
            .ok_or_else(|| StripeApiError::missing("customer", id, "id")),
        ("POST", ["customers", id]) => {
            let token = source(form)?;
            if !state.customers.contains_key(*id) {
                return Err(StripeApiError::missing("customer", id, "id"));
            }
            if let Some(token) = token {
                emu.set_card_token(state, id, &token)?;
            }
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
            let mode = match form.get("billing_mode[type]").map(String::as_str) {
                None | Some("flexible") => BillingMode::Flexible,
                Some("classic") => BillingMode::Classic,
                Some(other) => {
                    return Err(StripeApiError::invalid(
                        format!("Invalid billing_mode[type]: must be one of classic or flexible (got '{other}')."),
                        Some("billing_mode"),
                    ))
                }
            };
            let sub =
                emu.create_subscription(state, &customer, &price, metadata(form), mode, None)?;
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
                    "active_or_past" => !s.has_ended(),
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
            let change = SubscriptionChange {
                price: form.get("items[0][price]").cloned(),
                cancel_at_period_end: flag(form, "cancel_at_period_end")?,
                cancel_at: cancel_at(form, state.subscriptions.get(*id))?,
                pause_collection: pause_collection(form)?,
                feedback: text(form, "cancellation_details[feedback]"),
            };
            let sub = emu.update_subscription(state, id, change)?;
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
        ("POST", ["test_helpers", "test_clocks", clock, "advance"]) => {
            let frozen_time = integer(form, "frozen_time")?.ok_or_else(|| {
                StripeApiError::invalid("Missing required param: frozen_time.", Some("frozen_time"))
            })?;
            emu.advance_clock(state, clock, frozen_time)
        }
        ("GET", ["test_helpers", "test_clocks", clock]) => {
            Ok(billing::test_clock_json(clock, emu.clock.unix()))
        }
        ("POST", ["test_helpers", "account_settings"]) => account_settings(state, form),
        ("POST", ["checkout", "sessions"]) => create_checkout_session(emu, state, form, q),
        ("GET", ["checkout", "sessions", id]) => {
            let session = state
                .checkout_sessions
                .get(*id)
                .ok_or_else(|| StripeApiError::missing("checkout session", id, "id"))?;
            Ok(checkout_session_object(emu, state, session, q))
        }
        ("POST", ["checkout", "sessions", id, "expire"]) => {
            expire_checkout_session(emu, state, id, &merged(form, q))
        }
        ("POST", ["test_helpers", "checkout", "sessions", id, "complete"]) => {
            complete_checkout_session(emu, state, id, q)
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
        ("GET", ["prices", id]) => {
            let price =
                Emulator::price(id).ok_or_else(|| StripeApiError::missing("price", id, "id"))?;
            let mut object = price_json(&price);
            if expands(q, "product") {
                object["product"] = product_json(&price);
            }
            Ok(object)
        }
        ("GET", ["products", id]) => Emulator::prices()
            .iter()
            .find(|p| p.product == *id)
            .map(product_json)
            .ok_or_else(|| StripeApiError::missing("product", id, "id")),
        ("GET", ["events"]) => {
            if !state.settings.events_api {
                return Err(StripeApiError::unavailable(
                    "The Events API is unavailable (emulator setting events_api=unavailable).",
                ));
            }
            // Newest first, as Stripe lists, and only the last 30 days
            // (docs.stripe.com/api/events/list: "going back up to 30 days").
            let oldest = emu.now(state) - EVENT_RETENTION_SECS;
            let types = listed_types(q)?;
            let created = created_range(q)?;
            let items = state
                .events
                .iter()
                .rev()
                .filter(|e| {
                    let at = e["created"].as_i64().unwrap_or_default();
                    at >= oldest
                        && created.contains(&at)
                        && types
                            .as_ref()
                            .is_none_or(|t| t.iter().any(|t| e["type"] == json!(t)))
                })
                .map(|e| (e["id"].as_str().unwrap_or_default().to_string(), e.clone()))
                .collect();
            page(items, q, "/v1/events")
        }
        ("POST", ["entitlements", "features"]) => {
            emu.create_feature(state, text(form, "name"), text(form, "lookup_key"))
        }
        ("GET", ["entitlements", "features"]) => page(
            entitlements::list_features(state),
            q,
            "/v1/entitlements/features",
        ),
        ("POST", ["products", id, "features"]) => {
            emu.attach_feature(state, id, text(form, "entitlement_feature"))
        }
        ("GET", ["products", id, "features"]) => page(
            entitlements::list_product_features(state, id)?,
            q,
            &format!("/v1/products/{id}/features"),
        ),
        ("GET", ["entitlements", "active_entitlements"]) => page(
            entitlements::list_active_entitlements(state, q.get("customer"))?,
            q,
            "/v1/entitlements/active_entitlements",
        ),
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

/// The event types a list asks for: `type` (one, with `*` wildcards left
/// out), or `types[]` / `types[0]`… (up to 20, docs.stripe.com/api/events/list);
/// `None` lists every type. Both at once is Stripe's `parameter_unknown`-like
/// refusal.
fn listed_types(q: &Form) -> Result<Option<Vec<String>>, StripeApiError> {
    let types: Vec<String> = metadata_under(q, "types[").into_values().collect();
    match (q.get("type"), types.is_empty()) {
        (Some(_), false) => Err(StripeApiError::invalid(
            "You may only specify one of these parameters: type, types.",
            Some("types"),
        )),
        (Some(one), true) => Ok(Some(vec![one.clone()])),
        (None, true) => Ok(None),
        (None, false) if types.len() > 20 => Err(StripeApiError::invalid(
            "types may contain at most 20 event types.",
            Some("types"),
        )),
        (None, false) => Ok(Some(types)),
    }
}

/// `created` as Stripe's lists take it: an exact second, or any of
/// `created[gt]`, `created[gte]`, `created[lt]`, `created[lte]`.
fn created_range(q: &Form) -> Result<std::ops::RangeInclusive<i64>, StripeApiError> {
    let bound = |key: &'static str| integer(q, key);
    if let Some(exact) = bound("created")? {
        return Ok(exact..=exact);
    }
    let low = match (bound("created[gt]")?, bound("created[gte]")?) {
        (Some(gt), _) => gt.saturating_add(1),
        (None, Some(gte)) => gte,
        (None, None) => i64::MIN,
    };
    let high = match (bound("created[lt]")?, bound("created[lte]")?) {
        (Some(lt), _) => lt.saturating_sub(1),
        (None, Some(lte)) => lte,
        (None, None) => i64::MAX,
    };
    Ok(low..=high)
}

/// The emulator-only account settings (see the module doc of [`super`]).
fn account_settings(state: &mut State, form: &Form) -> Result<Value, StripeApiError> {
    let mut settings = state.settings.clone();
    if let Some(dunning) = form.get("dunning") {
        settings.dunning = match dunning.as_str() {
            "unpaid" => Dunning::Unpaid,
            "canceled" => Dunning::Canceled,
            "past_due" => Dunning::PastDue,
            other => {
                return Err(StripeApiError::invalid(
                    format!(
                    "Invalid dunning: must be one of unpaid, canceled or past_due (got '{other}')."
                ),
                    Some("dunning"),
                ))
            }
        };
    }
    if let Some(days) = integer(form, "retry_days")? {
        // Up to four weeks, so a renewal's retries end before the next one.
        if !(1..=28).contains(&days) {
            return Err(StripeApiError::invalid(
                "retry_days must be between 1 and 28.",
                Some("retry_days"),
            ));
        }
        settings.retry_days = days;
    }
    if let Some(order) = form.get("delivery_order") {
        settings.delivery_order = match order.as_str() {
            "shuffled" => DeliveryOrder::Shuffled,
            "in_order" => DeliveryOrder::InOrder,
            "reverse" => DeliveryOrder::Reverse,
            other => {
                return Err(StripeApiError::invalid(
                    format!("Invalid delivery_order: must be one of shuffled, in_order or reverse (got '{other}')."),
                    Some("delivery_order"),
                ))
            }
        };
    }
    if let Some(deliveries) = form.get("deliveries") {
        settings.deliveries = match deliveries.as_str() {
            "on" => true,
            "off" => false,
            other => {
                return Err(StripeApiError::invalid(
                    format!("Invalid deliveries: must be on or off (got '{other}')."),
                    Some("deliveries"),
                ))
            }
        };
    }
    if let Some(path) = form.get("fail_next_post") {
        let path = path.trim_end_matches('/');
        settings.fail_next_post = match path {
            "" => None,
            path if path.starts_with("/v1/") => Some(path.to_string()),
            other => {
                return Err(StripeApiError::invalid(
                    format!(
                        "Invalid fail_next_post: must be an API path such as /v1/customers, \
                         or empty to clear it (got '{other}')."
                    ),
                    Some("fail_next_post"),
                ))
            }
        };
    }
    if let Some(ms) = integer(form, "latency_ms")? {
        settings.latency_ms = u64::try_from(ms)
            .ok()
            .filter(|ms| *ms <= MAX_LATENCY_MS)
            .ok_or_else(|| {
                StripeApiError::invalid(
                    format!("latency_ms must be between 0 and {MAX_LATENCY_MS}."),
                    Some("latency_ms"),
                )
            })?;
    }
    if let Some(events_api) = form.get("events_api") {
        settings.events_api = match events_api.as_str() {
            "available" => true,
            "unavailable" => false,
            other => {
                return Err(StripeApiError::invalid(
                    format!(
                        "Invalid events_api: must be available or unavailable (got '{other}')."
                    ),
                    Some("events_api"),
                ))
            }
        };
    }
    state.settings = settings;
    Ok(state.settings.to_json())
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
        Some(name) => {
            let kind = FlowKind::parse(name).map_err(|_| {
                StripeApiError::invalid(
                    format!("Invalid flow_data[type]: {name}"),
                    Some("flow_data"),
                )
            })?;
            if !kind.needs_subscription() {
                Some((kind, None))
            } else {
                let key = format!("flow_data[{name}][subscription]");
                let sub_id = text(form, &key).ok_or_else(|| {
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
                Some((kind, Some(sub_id)))
            }
        }
    };
    let now = emu.now(state);
    let session = PortalSession {
        id: emu.new_id("bps"),
        customer,
        return_url: text(form, "return_url").unwrap_or_else(|| "/".into()),
        created: now,
        last_used: now,
        flow,
        configuration: text(form, "configuration").unwrap_or_else(|| "bpc_emulator_default".into()),
        locale: text(form, "locale"),
    };
    let url = emu.portal_url(&session.id);
    let value = portal_session_json(&session, &url);
    state.sessions.insert(session.id.clone(), session);
    Ok(value)
}

/// A Checkout Session as the API answers it: `subscription` expanded into
/// the object on `expand[]=subscription` (docs.stripe.com/expand), in the
/// body or the query string, as Stripe takes it.
fn checkout_session_object(
    emu: &Emulator,
    state: &State,
    session: &CheckoutSession,
    expand: &Form,
) -> Value {
    let mut object = checkout_session_json(session, &emu.checkout_url(&session.id), emu.now(state));
    if expands(expand, "subscription") {
        if let Some(sub) = session
            .subscription
            .as_ref()
            .and_then(|id| state.subscriptions.get(id))
        {
            object["subscription"] = subscription_json(sub);
        }
    }
    object
}

/// `POST /v1/checkout/sessions/{id}/expire` (docs.stripe.com/api/checkout/sessions/expire):
/// an open session can no longer be paid, and `checkout.session.expired` is
/// sent; a session that is not open (paid, or already expired) is refused
/// with a 400 and stays as it is.
fn expire_checkout_session(
    emu: &Emulator,
    state: &mut State,
    id: &str,
    expand: &Form,
) -> Result<Value, StripeApiError> {
    let session = state
        .checkout_sessions
        .get(id)
        .ok_or_else(|| StripeApiError::missing("checkout session", id, "id"))?;
    let status = checkout_session_object(emu, state, session, expand)["status"].clone();
    if status != "open" {
        return Err(StripeApiError::invalid(
            format!(
                "Only Checkout Sessions with a status in [\"open\"] can be expired. This \
                 Checkout Session has a status of {}.",
                status.as_str().unwrap_or("unknown")
            ),
            None,
        ));
    }
    emu.expire_checkout_session(state, id);
    Ok(checkout_session_object(
        emu,
        state,
        &state.checkout_sessions[id],
        expand,
    ))
}

/// `success_url` or `cancel_url`: an absolute `http(s)` URL, as Stripe
/// requires (the hosted page links and redirects to them).
fn checkout_url_param(form: &Form, key: &'static str) -> Result<Option<String>, StripeApiError> {
    let Some(value) = text(form, key) else {
        return Ok(None);
    };
    match url::Url::parse(&value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(Some(value)),
        _ => Err(StripeApiError {
            status: 400,
            kind: "invalid_request_error",
            code: Some("url_invalid"),
            message: "Not a valid URL".into(),
            param: Some(key),
        }),
    }
}

/// What the emulator's Checkout cannot do, refused as Stripe refuses a
/// parameter rather than ignored: a session that silently dropped a trial or
/// a second line item would be a test passed for nothing.
const UNSUPPORTED_CHECKOUT_PARAMS: [&str; 6] = [
    "line_items[1][price]",
    "subscription_data[trial_period_days]",
    "subscription_data[trial_end]",
    "discounts[0][coupon]",
    "discounts[0][promotion_code]",
    "customer_email",
];

/// `POST /v1/checkout/sessions`, `mode=subscription` with one price, for an
/// existing customer (what the demo and an app with signed-in users send):
/// `client_reference_id`, `metadata[…]`, `subscription_data[metadata][…]`,
/// `success_url` (`{CHECKOUT_SESSION_ID}` is replaced on the way back),
/// `cancel_url` and `expires_at` (30 minutes to 24 hours ahead, default 24
/// hours). Its `url` is the emulator's hosted checkout page.
fn create_checkout_session(
    emu: &Emulator,
    state: &mut State,
    form: &Form,
    q: &Form,
) -> Result<Value, StripeApiError> {
    if form.get("mode").map(String::as_str) != Some("subscription") {
        return Err(StripeApiError::invalid(
            "This emulator's Checkout supports mode=subscription only.",
            Some("mode"),
        ));
    }
    if let Some(param) = UNSUPPORTED_CHECKOUT_PARAMS
        .into_iter()
        .find(|p| form.contains_key(*p))
    {
        return Err(StripeApiError::invalid(
            format!("This emulator's Checkout does not support {param}."),
            Some(param),
        ));
    }
    if !matches!(
        form.get("ui_mode").map(String::as_str),
        None | Some("hosted" | "hosted_page")
    ) {
        return Err(StripeApiError::invalid(
            "This emulator's Checkout has the hosted page only (ui_mode=hosted_page).",
            Some("ui_mode"),
        ));
    }
    let customer = text(form, "customer").ok_or_else(|| {
        StripeApiError::invalid(
            "This emulator's Checkout needs an existing customer.",
            Some("customer"),
        )
    })?;
    if !state.customers.contains_key(&customer) {
        return Err(StripeApiError::missing("customer", &customer, "customer"));
    }
    let price = text(form, "line_items[0][price]").ok_or_else(|| {
        StripeApiError::invalid(
            "Missing required param: line_items[0][price].",
            Some("line_items"),
        )
    })?;
    if Emulator::price(&price).is_none() {
        return Err(StripeApiError::missing(
            "price",
            &price,
            "line_items[0][price]",
        ));
    }
    if integer(form, "line_items[0][quantity]")?.is_some_and(|q| q != 1) {
        return Err(StripeApiError::invalid(
            "This emulator sells a quantity of 1.",
            Some("line_items"),
        ));
    }
    let success_url = checkout_url_param(form, "success_url")?;
    let cancel_url = checkout_url_param(form, "cancel_url")?;
    let now = emu.now(state);
    // docs.stripe.com/api/checkout/sessions/create#create_checkout_session-expires_at
    let expires_at = integer(form, "expires_at")?;
    if expires_at.is_some_and(|at| !(now + 30 * 60..=now + CHECKOUT_SESSION_TTL_SECS).contains(&at))
    {
        return Err(StripeApiError::invalid(
            "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout              Session creation.",
            Some("expires_at"),
        ));
    }
    let session = CheckoutSession {
        id: emu.new_id("cs_test"),
        customer,
        price,
        client_reference_id: text(form, "client_reference_id"),
        subscription_metadata: metadata_under(form, "subscription_data[metadata]["),
        success_url,
        cancel_url,
        metadata: metadata(form),
        created: now,
        expires_at: Some(expires_at.unwrap_or(now + CHECKOUT_SESSION_TTL_SECS)),
        status: "open",
        subscription: None,
        invoice: None,
        authenticating: None,
    };
    let value = checkout_session_object(emu, state, &session, &merged(form, q));
    state.checkout_sessions.insert(session.id.clone(), session);
    Ok(value)
}

/// A POST's parameters, body and query string together (`expand[]` may be in either).
fn merged(form: &Form, q: &Form) -> Form {
    let mut all = q.clone();
    all.extend(form.iter().map(|(k, v)| (k.clone(), v.clone())));
    all
}

/// The emulator-only `POST /v1/test_helpers/checkout/sessions/{id}/complete`:
/// pays an open session as its customer would on the hosted page, with the
/// card on file (none: the emulator's implicit 4242). The subscription is
/// created `incomplete` and turns `active` when its first invoice is paid,
/// and the session completes, all in one second
/// (`customer.subscription.created`, `customer.subscription.updated`,
/// `invoice.paid`, `checkout.session.completed`). With a card whose charges
/// fail, the subscription stays `incomplete` and the session open.
fn complete_checkout_session(
    emu: &Emulator,
    state: &mut State,
    id: &str,
    q: &Form,
) -> Result<Value, StripeApiError> {
    let session = state
        .checkout_sessions
        .get(id)
        .cloned()
        .ok_or_else(|| StripeApiError::missing("checkout session", id, "id"))?;
    if session.status != "open" || session.subscription.is_some() {
        return Err(StripeApiError::invalid(
            "This Checkout Session was already paid.",
            None,
        ));
    }
    if session.status_at(emu.now(state)) == "expired" {
        return Err(StripeApiError::invalid(
            "This Checkout Session has expired.",
            None,
        ));
    }
    emu.create_subscription(
        state,
        &session.customer,
        &session.price,
        session.subscription_metadata,
        BillingMode::Flexible,
        Some(id),
    )?;
    Ok(checkout_session_object(
        emu,
        state,
        &state.checkout_sessions[id],
        q,
    ))
}
