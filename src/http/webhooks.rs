//! `POST /webhooks/stripe`: verify Stripe's signature over the raw bytes,
//! only then parse (leniently), then record and apply the event in one
//! transaction. 200 `{"received":true}` once stored; 400 for a bad signature
//! or payload (nothing stored); 5xx when it could not be stored, so Stripe
//! delivers it again and nothing acknowledged is ever lost. A delivery signed
//! in this host's future is accepted and reported as clock skew. Every
//! verification feeds [`WebhookHealth`](crate::billing::webhook_health), which
//! says once when none has verified for ten minutes.

use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::{web, HttpRequest, HttpResponse};

use super::error::{ApiError, ErrorBody, ErrorCode};
use super::AppState;
use crate::billing::sync::{self, Outcome};
use crate::billing::webhook;
use crate::billing::webhook_health::{Change, WINDOW_SECS};
use crate::ids::EventId;
use crate::metrics::Source;
use crate::stripe::events::parse_event;
use crate::stripe::signature;
use crate::stripe::transport::API_VERSION;

#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Received {
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
pub(crate) async fn stripe_webhook(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let header = req
        .headers()
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or(""));
    let now = chrono::Utc::now().timestamp();
    let verified = state.webhook_verifier.verify(header, &body, now);
    // The billing clock, so that the emulator's test clock moves the window too; in production
    // it is the system clock, as `now` is.
    let at = state.billing.clock.now();
    let signed_at = verified.map_err(|e| {
        log::warn!("webhook refused: {e}");
        state.billing.metrics.signature_failure(&e);
        health_changed(state.billing.webhook_health.refused(at, &e));
        rejected(&state, "unverified");
        ApiError::from(e)
    })?;
    health_changed(state.billing.webhook_health.verified(at));
    if let Some(ahead) = signature::ahead_of_clock(signed_at, now) {
        clock_skew(&state, ahead);
    }
    let event = parse_event(&body).map_err(|e| {
        rejected(&state, "not_an_event");
        ApiError::bad_request(ErrorCode::InvalidEvent, e.to_string())
    })?;
    if sync::timestamp(event.created).is_none() {
        rejected(&state, &event.type_);
        return Err(ApiError::bad_request(
            ErrorCode::InvalidEvent,
            "event `created` is not a valid time",
        ));
    }

    if let Some(version) = &event.api_version {
        other_version(version, &event.id);
    }
    let (event_id, event_type) = (event.id.clone(), event.type_.clone());
    let outcome = webhook::receive(&state.billing, event).await?;
    Ok(received(&state, &event_id, &event_type, outcome))
}

/// A delivery signed `ahead` seconds in this host's future: accepted (as Stripe's libraries
/// do), counted every time, and logged once per process so a skewed clock does not flood the
/// log with one line per delivery.
fn clock_skew(state: &AppState, ahead: u64) {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    state.billing.metrics.webhook_clock_skew.inc();
    if !LOGGED.swap(true, Ordering::Relaxed) {
        log::warn!(
            "clock skew: a Stripe webhook was signed {ahead} s ahead of this host's clock, so \
             this host's clock is behind Stripe's by at least that much; check NTP on this host \
             (logged once; billing_portal_webhook_clock_skew_total counts every such delivery)"
        );
    }
}

/// An event rendered with another API version than the one this service
/// sends: still read (the parser is lenient across versions), and said once
/// per process, with what to change, so the two can be aligned.
fn other_version(version: &str, event: &EventId) {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if version != API_VERSION && !LOGGED.swap(true, Ordering::Relaxed) {
        log::warn!(
            "webhook event {event} was rendered with Stripe API version {version}, this service \
             speaks {API_VERSION}: it is read all the same, but set the webhook endpoint's API \
             version to {API_VERSION} (Dashboard > Developers > Webhooks > the endpoint; \
             `stripe listen --latest` locally) so both read the same shapes (logged once)"
        );
    }
}

/// Logs when deliveries stop verifying, once, and when they verify again, once.
fn health_changed(change: Change) {
    match change {
        Change::None => {}
        Change::Alarm {
            last_verified,
            refused,
        } => {
            let since = match last_verified {
                Some(at) => format!("the last verified one arrived at {}", at.to_rfc3339()),
                None => "none has verified since this instance started".into(),
            };
            log::error!(
                "Stripe webhooks are failing: for {} minutes no delivery has verified \
                 ({since}), and {refused} since then matched no secret in \
                 STRIPE_WEBHOOK_SECRET, so their events are not being applied. The endpoint's \
                 signing secret was most likely rolled on one side only: set \
                 STRIPE_WEBHOOK_SECRET (or the file STRIPE_WEBHOOK_SECRET_FILE names) to the \
                 endpoint's Signing secret (Stripe Dashboard → Webhooks → this endpoint; with \
                 `stripe listen`, the whsec_… it prints), or to the old and the new one, comma \
                 separated, while rolling. Meanwhile the catch-up from the Events API applies \
                 their events (STRIPE_CATCHUP_INTERVAL_SECS). Logged once until a delivery \
                 verifies again; \
                 billing_portal_webhook_signature_failures_total{{reason=\"signature_mismatch\"}} \
                 counts every one",
                WINDOW_SECS / 60
            );
        }
        Change::Recovered { refused } => log::info!(
            "Stripe webhook deliveries verify again, after {refused} refused for a signature \
             that matched no secret"
        ),
    }
}

fn rejected(state: &AppState, type_: &str) {
    state.billing.metrics.webhook_event(type_, "rejected");
}

fn received(state: &AppState, id: &EventId, type_: &str, outcome: Outcome) -> HttpResponse {
    log::info!("webhook {id} {type_}: {}", outcome.as_str());
    state.billing.metrics.webhook_event(type_, outcome.as_str());
    if outcome == Outcome::Applied {
        state.billing.metrics.healing.applied(Source::Delivery);
    }
    HttpResponse::Ok().json(Received { received: true })
}
