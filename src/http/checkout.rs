//! `GET /billing/plans` and `POST /billing/create-checkout`: the plans the app
//! offers (`BILLING_PLANS`) and a Stripe Checkout Session for one of them
//! ([`crate::billing::checkout`]). The customer always comes from the user's
//! own row, never from the request.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{check_same_origin, AuthenticatedUser};
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::portal::json_object_body;
use super::status::PlanData;
use super::AppState;
use crate::billing::checkout;

/// One offered plan: the `BILLING_PLANS` entry to send as `plan`, and what it is
/// (the status's plan shape).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OfferedPlanData {
    /// The price id or lookup key, as `BILLING_PLANS` names it: what
    /// `POST /billing/create-checkout` takes as `plan`.
    #[schema(example = "price_1PgafmB7WZ01zgkW6dKueIc5")]
    id: String,
    #[serde(flatten)]
    plan: PlanData,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct PlansData {
    /// In `BILLING_PLANS` order; empty when none is offered (the page then says to contact the app).
    plans: Vec<OfferedPlanData>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct PlansResponse {
    #[schema(example = "plans")]
    message: &'static str,
    data: PlansData,
}

/// The plans the signed-in user may subscribe to.
///
/// `BILLING_PLANS`' prices that Stripe has and sells, read from Stripe at start-up and kept
/// current by `price.*` and `product.*` webhooks, in the configured order.
#[utoipa::path(
    get,
    path = "/billing/plans",
    tag = "billing",
    responses(
        (status = 200, description = "The offered plans", body = PlansResponse),
        (status = 400, description = "A bearer token and the cookie name different users or organisations", body = ErrorBody),
        (status = 401, description = "Not signed in: no token, an invalid or expired one (`invalid_token`, `token_expired`), or an `org_id` that is empty, too long or holds a control character (`invalid_org_id`)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
    security(("bearer_jwt" = []), ("session_cookie" = []))
)]
pub(crate) async fn billing_plans(
    _user: AuthenticatedUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let plans = checkout::offered_plans(&state.billing).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(PlansResponse {
            message: "plans",
            data: PlansData {
                plans: plans
                    .into_iter()
                    .map(|p| OfferedPlanData {
                        id: p.id,
                        plan: p.plan.into(),
                    })
                    .collect(),
            },
        }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateCheckoutRequest {
    /// One of the plans `GET /billing/plans` lists (its `id`).
    #[schema(example = "price_1PgafmB7WZ01zgkW6dKueIc5")]
    plan: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CheckoutData {
    /// The Stripe-hosted checkout page; after paying, it sends the user back to the Billing
    /// Settings page with `?from=checkout&session_id=cs_…`.
    #[schema(example = "https://checkout.stripe.com/c/pay/cs_test_a1B2c3")]
    checkout_url: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct CheckoutResponse {
    #[schema(example = "checkout created")]
    message: &'static str,
    data: CheckoutData,
}

/// Create a Stripe Checkout Session for the signed-in user to subscribe to a plan.
///
/// Refused before any Stripe call: a plan not offered (400 `unknown_plan`), a user who already
/// has a live subscription (409 `already_subscribed`). Creates the user's Stripe customer first
/// if they have none (exactly one, even under concurrent calls). Concurrent calls for the same
/// plan answer the same session.
#[utoipa::path(
    post,
    path = "/billing/create-checkout",
    tag = "billing",
    request_body(content = CreateCheckoutRequest, content_type = "application/json"),
    params(("X-Requested-With" = Option<String>, Header,
            description = "Required when authenticated by cookie (CSRF protection)")),
    responses(
        (status = 200, description = "Checkout Session created", body = CheckoutResponse),
        (status = 400, description = "Bad body, a plan not offered (`unknown_plan`), a token email Stripe would refuse (`invalid_email`), or a bearer token and the cookie naming different users or organisations", body = ErrorBody),
        (status = 401, description = "Not signed in: no token, an invalid or expired one (`invalid_token`, `token_expired`), or an `org_id` that is empty, too long or holds a control character (`invalid_org_id`)", body = ErrorBody),
        (status = 403, description = "Cross-site request refused, or `not_billing_manager`: the token acts for an organisation (`org_id`) and its `org_role` is not one of `BILLING_MANAGER_ROLES`", body = ErrorBody),
        (status = 409, description = "`already_subscribed`: the user has a live subscription; Manage Subscription (the portal) changes it", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 502, description = "Stripe failed or timed out (`stripe_error`, `stripe_timeout`, `stripe_unreachable`), or refused the API key (`stripe_auth_failed`)", body = ErrorBody),
        (status = 503, description = "Database unavailable or Stripe rate limiting", body = ErrorBody),
    ),
    security(("bearer_jwt" = []), ("session_cookie" = []))
)]
pub(crate) async fn create_checkout(
    req: HttpRequest,
    body: web::Bytes,
    user: AuthenticatedUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_same_origin(&req, &user, &state.origins)?;
    user.require_manager(&state.manager_roles)?;
    let request: CreateCheckoutRequest = json_object_body(&req, &body, "checkout request")?
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidBody,
                "the request body must be a JSON object with `plan`",
            )
        })?;
    let checkout_url = checkout::create(&state.billing, user.member(), &request.plan).await?;
    Ok(HttpResponse::Ok().json(CheckoutResponse {
        message: "checkout created",
        data: CheckoutData { checkout_url },
    }))
}
