//! `POST /webhooks/stripe`: verify Stripe's signature over the raw bytes,
//! only then parse (leniently), then record and apply the event in one
//! transaction. 200 `{"received":true}` once stored; 400 for a bad signature
//! or payload (nothing stored); 5xx when it could not be stored, so Stripe
//! delivers it again and nothing acknowledged is ever lost. A delivery signed
//! in this host's future is accepted and reported as clock skew.

use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::{web, HttpRequest, HttpResponse};

use crate::billing::refetch::{self, Refetcher};
use crate::billing::sync::{self, Outcome};
use crate::db::{self, events};
use crate::error::{ApiError, ErrorBody};
use crate::startup::AppState;
use crate::stripe::events::{parse_event, EventKind};
use crate::stripe::signature;

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Received {
    received: bool,
}

/// Stripe webhook endpoint: verifies the signature, then records and applies
/// the event once.
#[utoipa::path(
    post,
    path = "/webhooks/stripe",
    tag = "webhooks",
    params(("Stripe-Signature" = String, Header,
            description = "`t=<unix time>,v1=<hex HMAC-SHA256 of \"{t}.{body}\">` with the endpoint's `whsec_` secret")),
    request_body(content = Object, content_type = "application/json",
                 description = "A Stripe event, at most 1 MiB"),
    responses(
        (status = 200, description = "Stored (or already stored)", body = Received),
        (status = 400, description = "Bad signature or not an event; nothing stored", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 502, description = "Re-reading the subscription from Stripe failed (`STRIPE_WEBHOOK_REFETCH`, or a same-second tie); Stripe will retry", body = ErrorBody),
        (status = 503, description = "Could not be stored; Stripe will retry", body = ErrorBody),
    )
)]
pub async fn stripe_webhook(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let header = req
        .headers()
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or(""));
    let now = chrono::Utc::now().timestamp();
    let signed_at = state
        .webhook_verifier
        .verify(header, &body, now)
        .map_err(|e| {
            log::warn!("webhook refused: {e}");
            state.metrics.signature_failures.inc();
            rejected(&state, "unverified");
            ApiError::bad_request(e.code(), e.to_string())
        })?;
    if let Some(ahead) = signature::ahead_of_clock(signed_at, now) {
        clock_skew(&state, ahead);
    }
    let event = parse_event(&body).map_err(|e| {
        rejected(&state, "not_an_event");
        ApiError::bad_request("invalid_event", e.to_string())
    })?;
    if sync::timestamp(event.created).is_none() {
        rejected(&state, &event.type_);
        return Err(ApiError::bad_request(
            "invalid_event",
            "event `created` is not a valid time",
        ));
    }

    let refetcher = |stripe| Refetcher {
        pool: &state.pool,
        stripe,
        clock: &state.clock,
        rule: state.paid_rule,
        lock_timeout_ms: state.customer_lock_timeout_ms,
    };
    let (event_id, event_type) = (event.id.clone(), event.type_.clone());
    if state.webhook_refetch && matches!(event.kind, EventKind::Subscription(..)) {
        let id = event.id.clone();
        // A redelivery must not cost a Stripe call.
        if db::run(&state.pool, move |conn| events::exists(conn, &id)).await? {
            return Ok(received(&state, &event_id, &event_type, Outcome::Duplicate));
        }
        let outcome =
            refetch::apply_event_refetched(&refetcher(state.stripe()?), event.into()).await?;
        return Ok(received(&state, &event_id, &event_type, outcome));
    }

    // Shared, not copied: a tie re-reads and applies the same event again.
    let event = std::sync::Arc::new(event);
    let (rule, clock, payload) = (state.paid_rule, state.clock.clone(), event.clone());
    let outcome = db::run(&state.pool, move |conn| {
        sync::apply_event(conn, &payload, None, rule, clock.now())
    })
    .await?;
    let outcome = if outcome == Outcome::Undecidable {
        // Two events of one second that neither lifecycle order nor
        // previous_attributes can order: Stripe's current state decides.
        log::info!("webhook {event_id} {event_type}: same-second tie; re-reading from Stripe");
        state.metrics.tie_refetches.inc();
        refetch::apply_event_refetched(&refetcher(state.stripe()?), event).await?
    } else {
        outcome
    };
    Ok(received(&state, &event_id, &event_type, outcome))
}

/// A delivery signed `ahead` seconds in this host's future: accepted (as Stripe's libraries
/// do), counted every time, and logged once per process so a skewed clock does not flood the
/// log with one line per delivery.
fn clock_skew(state: &AppState, ahead: u64) {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    state.metrics.webhook_clock_skew.inc();
    if !LOGGED.swap(true, Ordering::Relaxed) {
        log::warn!(
            "clock skew: a Stripe webhook was signed {ahead} s ahead of this host's clock, so \
             this host's clock is behind Stripe's by at least that much; check NTP on this host \
             (logged once; billing_portal_webhook_clock_skew_total counts every such delivery)"
        );
    }
}

fn rejected(state: &AppState, type_: &str) {
    state
        .metrics
        .webhook_events
        .with_label_values(&[type_, "rejected"])
        .inc();
}

fn received(state: &AppState, id: &str, type_: &str, outcome: Outcome) -> HttpResponse {
    log::info!("webhook {id} {type_}: {}", outcome.as_str());
    state
        .metrics
        .webhook_events
        .with_label_values(&[type_, outcome.as_str()])
        .inc();
    HttpResponse::Ok().json(Received { received: true })
}
