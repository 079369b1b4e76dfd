//! `GET /billing/status`: whether the signed-in user is paid, and their
//! current subscription and its plan, answered from Postgres only (a Stripe
//! call never stands in its way).

use actix_web::{web, HttpResponse};
use chrono::SecondsFormat;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::AuthenticatedUser;
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::billing::plans::Plan;
use crate::billing::summary::{self, BillingSummary};
use crate::ids::AccountKind;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusData {
    /// Who is asking: the signed-in user's id (the token's `sub`).
    #[schema(example = "user_1")]
    user_id: String,
    /// Whose billing this is: the user's own, or the organisation the token's `org_id` names.
    account: AccountData,
    /// The signed-in user's email from the token, when it carries one.
    #[schema(example = "ada@example.com")]
    email: Option<String>,
    /// Whether the user has a subscription that grants access now.
    paid: bool,
    /// Why the user is or is not paid, a stable code: `active`, `trialing`, `past_due_in_grace`,
    /// `past_due_grace_ended`, `collection_paused`, `canceled`, `unpaid`, `incomplete`,
    /// `incomplete_expired`, `paused`, `unrecognized_status`, `no_subscription`.
    #[schema(example = "active")]
    reason: &'static str,
    /// Whether the user has a Stripe customer. Unpaid with a customer is a former customer (or one
    /// whose first payment failed): their invoices and saved payment methods are in the portal,
    /// `POST /billing/create-portal` without a `flow`. The customer's id is never answered.
    has_customer: bool,
    /// The current subscription's Stripe status (`active`, `past_due`, `canceled`…).
    #[schema(example = "active")]
    status: Option<String>,
    #[schema(example = "price_1PgafmB7WZ01zgkW6dKueIc5")]
    price_id: Option<String>,
    #[schema(example = "prod_QXg1hqf4jFNsqG")]
    product_id: Option<String>,
    /// The current subscription's plan, for people to read ("Pro · $29.00 per month"): null
    /// without a subscription, and while neither its price nor its product is known yet (they
    /// are read from Stripe in the background; a later request has them).
    plan: Option<PlanData>,
    /// RFC 3339.
    #[schema(format = DateTime, example = "2026-12-24T00:00:00Z")]
    current_period_end: Option<String>,
    /// Classic billing mode's flag: the subscription ends at `currentPeriodEnd` instead of
    /// renewing. Flexible billing mode leaves it false; read `cancelAt`.
    cancel_at_period_end: bool,
    /// RFC 3339: when the subscription is set to end, in either billing mode; null when it renews.
    #[schema(format = DateTime, example = "2026-12-24T00:00:00Z")]
    cancel_at: Option<String>,
    /// RFC 3339: when a `past_due` subscription stops granting access
    /// (`BILLING_PAST_DUE_GRACE_DAYS` after it became past due); null otherwise.
    #[schema(format = DateTime, example = "2026-12-24T00:00:00Z")]
    grace_ends_at: Option<String>,
    /// RFC 3339: when the service last learned this subscription's state from Stripe (a webhook
    /// or a read from the API); null without a subscription.
    #[schema(format = DateTime, example = "2026-12-05T10:00:00Z")]
    synced_at: Option<String>,
    /// The lookup keys of the features the customer is entitled to now (Stripe Entitlements:
    /// the features of the products of their subscriptions), sorted; empty without a customer.
    /// Gate a feature on its lookup key being listed.
    #[schema(example = json!(["advanced_reports", "api_access"]))]
    features: Vec<String>,
}

/// The account billed, and what the signed-in user may do with it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Account)]
pub(crate) struct AccountData {
    /// `user` (the signed-in user's own billing) or `organization` (the token's `org_id`).
    #[serde(rename = "type")]
    #[schema(example = "organization")]
    kind: &'static str,
    /// The user id, or the organisation id, as the app knows it.
    #[schema(example = "org_acme")]
    id: String,
    /// The organisation's name, from the token's `org_name` (now or on an earlier request);
    /// null for a user's own billing and while no token has named it.
    #[schema(example = "Acme Inc.")]
    name: Option<String>,
    /// Whether the signed-in user may open the portal and subscribe: always for their own
    /// billing; for an organisation's, when their `org_role` is one of `BILLING_MANAGER_ROLES`.
    can_manage: bool,
    /// For an organisation's billing: the roles that may manage it (`BILLING_MANAGER_ROLES`), so
    /// a member who cannot knows whom to ask; empty for a user's own.
    #[schema(example = json!(["owner", "admin"]))]
    manager_roles: Vec<String>,
}

/// A plan as its price and product describe it. Each field is null when not known.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Plan)]
pub(crate) struct PlanData {
    /// The product's name, else the price's nickname.
    #[schema(example = "Pro")]
    name: Option<String>,
    /// What one period costs, in the currency's smallest unit, as Stripe counts it (`2900` with
    /// `usd` is $29.00; `500` with `jpy` is ¥500): the price's `unit_amount`. Null for a price
    /// without one (tiered, customer-chosen amounts).
    #[schema(example = 2900)]
    amount: Option<i64>,
    /// Lower-case ISO 4217 currency code, as Stripe gives it.
    #[schema(example = "usd")]
    currency: Option<String>,
    /// `day`, `week`, `month` or `year` (Stripe's `recurring.interval`); null for a one-time
    /// price.
    #[schema(example = "month")]
    interval: Option<String>,
    /// How many intervals one period spans (`3` with `month`: every three months), at least 1;
    /// null for a one-time price.
    #[schema(example = 1, minimum = 1)]
    interval_count: Option<i32>,
}

impl From<Plan> for PlanData {
    fn from(plan: Plan) -> Self {
        Self {
            name: plan.name,
            amount: plan.amount,
            currency: plan.currency,
            interval: plan.interval,
            interval_count: plan.interval_count,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct StatusResponse {
    #[schema(example = "billing status")]
    message: &'static str,
    data: StatusData,
}

/// Whether the signed-in user is paid, and their current subscription.
#[utoipa::path(
    get,
    path = "/billing/status",
    tag = "billing",
    responses(
        (status = 200, description = "Billing status", body = StatusResponse),
        (status = 400, description = "A bearer token and the cookie name different users or organisations", body = ErrorBody),
        (status = 401, description = "Not signed in: no token, an invalid or expired one (`invalid_token`, `token_expired`), or an `org_id` that is empty, too long or holds a control character (`invalid_org_id`)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
    security(("bearer_jwt" = []), ("session_cookie" = []))
)]
pub(crate) async fn billing_status(
    user: AuthenticatedUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let summary = summary::of_user(&state.billing, user.member()).await?;
    Ok(answer(&user, &state.manager_roles, summary))
}

/// The answer of `GET /billing/status` for `user`, whose status is
/// `summary`; also `POST /billing/refresh`'s.
pub(super) fn answer(
    user: &AuthenticatedUser,
    manager_roles: &[String],
    summary: BillingSummary,
) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(StatusResponse {
            message: "billing status",
            data: data(user, manager_roles, summary),
        })
}

/// The `data` of [`answer`].
pub(super) fn data(
    user: &AuthenticatedUser,
    manager_roles: &[String],
    summary: BillingSummary,
) -> StatusData {
    let rfc3339 = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let identity = &user.identity;
    let kind = identity.account.kind();
    StatusData {
        user_id: identity.user.to_string(),
        account: AccountData {
            kind: kind.as_str(),
            id: identity.account.app_id().to_owned(),
            name: summary.account_name.clone(),
            can_manage: identity.can_manage,
            manager_roles: match kind {
                AccountKind::User => Vec::new(),
                AccountKind::Organization => manager_roles.to_vec(),
            },
        },
        email: identity.email.clone(),
        paid: summary.paid,
        reason: summary.reason.as_str(),
        has_customer: summary.has_customer,
        status: summary.status,
        price_id: summary.price_id,
        product_id: summary.product_id,
        plan: summary.plan.map(PlanData::from),
        current_period_end: summary.current_period_end.map(rfc3339),
        cancel_at_period_end: summary.cancel_at_period_end,
        cancel_at: summary.cancel_at.map(rfc3339),
        grace_ends_at: summary.grace_ends_at.map(rfc3339),
        synced_at: summary.synced_at.map(rfc3339),
        features: summary.features,
    }
}
