//! `POST /billing/refresh`: the signed-in user's subscriptions re-read from
//! Stripe ([`crate::billing::refresh`]), answered exactly as
//! `GET /billing/status` answers. The Billing Settings page calls it when the
//! user comes back from the portal (`?from=portal`).
//!
//! Its errors still know the stored status where it can be read: a refresh
//! too soon (429, with `Retry-After`), Stripe failing (502/503) or the
//! database unable to take the customer's lock carry it as `data`, so the page
//! shows the last known state instead of an error.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::{check_same_origin, AuthenticatedUser};
use super::error::{ApiError, ErrorBody, ErrorCode, ErrorWithStatusBody};
use super::portal::json_object_body;
use super::status::{self, StatusResponse};
use super::AppState;
use crate::billing::{checkout, refresh, summary};

/// Optional body: no body re-reads every subscription of the user.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RefreshRequest {
    /// The Checkout Session the user came back from (`session_id` of the page's
    /// `?from=checkout&session_id=cs_…`): only the session recorded for the user at
    /// create-checkout is read from Stripe (else 403 `checkout_session_not_yours`, without a
    /// Stripe call), and its subscription stored if it belongs to the user's customer; one
    /// read every 10 s at most, as a refresh.
    #[schema(example = "cs_test_a1B2c3", pattern = "^cs_[A-Za-z0-9_]{1,252}$")]
    checkout_session_id: Option<String>,
}

/// Re-read the signed-in user's subscriptions from Stripe, then answer their billing status.
///
/// Lists the user's subscriptions from Stripe (all statuses, every page),
/// stores them with the same ordering rules as webhooks, and answers exactly
/// what `GET /billing/status` answers. At most one Stripe read per user every
/// 10 seconds; a user without a Stripe customer gets the stored status with no
/// Stripe call. The 429, 502 and 503 answers carry the stored status as `data`.
///
/// With `checkoutSessionId` (the page, back from Stripe Checkout), reads that
/// Checkout Session with its subscription instead, and stores the subscription
/// as fetched state, so the user is paid before the webhook arrives.
#[utoipa::path(
    post,
    path = "/billing/refresh",
    tag = "billing",
    request_body(content = Option<RefreshRequest>, content_type = "application/json"),
    params(("X-Requested-With" = Option<String>, Header,
            description = "Required when authenticated by cookie (CSRF protection)")),
    responses(
        (status = 200, description = "Billing status, re-read from Stripe (or stored, for a user without a Stripe customer)", body = StatusResponse),
        (status = 400, description = "`invalid_body`: a body that is not a refresh request, or a `checkoutSessionId` that is not a Checkout Session id; or a bearer token and the cookie naming different users or organisations", body = ErrorBody),
        (status = 401, description = "Not signed in: no token, an invalid or expired one (`invalid_token`, `token_expired`), or an `org_id` that is empty, too long or holds a control character (`invalid_org_id`)", body = ErrorBody),
        (status = 403, description = "Cross-site request refused, or `checkout_session_not_yours`: the Checkout Session is not the one recorded for the user, or not for their Stripe customer (nothing changed)", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 429, description = "`refresh_too_soon`: this user's subscriptions were read from Stripe less than 10 s ago; the stored status as `data`",
         body = ErrorWithStatusBody,
         headers(("Retry-After" = u64, description = "Whole seconds until a refresh may read Stripe again, 1 to 10"))),
        (status = 502, description = "Stripe failed or timed out: nothing changed; the stored status as `data`", body = ErrorWithStatusBody),
        (status = 503, description = "Database unavailable, or Stripe rate limiting: nothing changed; the stored status as `data` when it could be read", body = ErrorWithStatusBody),
    ),
    security(("bearer_jwt" = []), ("session_cookie" = []))
)]
pub(crate) async fn refresh_billing(
    req: HttpRequest,
    body: web::Bytes,
    user: AuthenticatedUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_same_origin(&req, &user, &state.origins)?;
    let request: RefreshRequest =
        json_object_body(&req, &body, "refresh request")?.unwrap_or_default();
    let read = match request.checkout_session_id.as_deref() {
        Some(session) if !checkout::is_session_id(session) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidBody,
                "checkoutSessionId is not a Checkout Session id (cs_…)",
            ))
        }
        Some(session) => checkout::apply_on_return(&state.billing, user.member(), session).await,
        None => refresh::refresh(&state.billing, user.member()).await,
    };
    let failure = match read {
        Ok(summary) => return Ok(status::answer(&user, &state.manager_roles, summary)),
        // Nothing to fall back on: the session is not the user's.
        Err(crate::billing::Error::CheckoutNotYours) => {
            return Err(crate::billing::Error::CheckoutNotYours.into())
        }
        Err(failure) => ApiError::from(failure),
    };
    // Whatever failed, the stored status may still be readable: the page
    // shows it rather than an error.
    match summary::of_user(&state.billing, user.member()).await {
        Ok(stored) => {
            let data = serde_json::to_value(status::data(&user, &state.manager_roles, stored))
                .map_err(|e| ApiError::internal(format!("status as JSON: {e}")))?;
            Err(failure.with_data(data))
        }
        Err(_) => Err(failure),
    }
}
