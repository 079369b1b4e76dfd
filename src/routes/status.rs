//! `GET /billing/status`: whether the signed-in user is paid, and their
//! current subscription, answered from Postgres only (never a Stripe call).

use actix_web::{web, HttpResponse};
use chrono::SecondsFormat;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthenticatedUser;
use crate::billing::summary::summarize;
use crate::db::{self, subscriptions, users};
use crate::error::{ApiError, ErrorBody};
use crate::startup::AppState;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusData {
    /// Whether the user has a subscription that grants access.
    paid: bool,
    /// The current subscription's Stripe status (`active`, `past_due`, `canceled`…).
    #[schema(example = "active")]
    status: Option<String>,
    #[schema(example = "price_1PgafmB7WZ01zgkW6dKueIc5")]
    price_id: Option<String>,
    #[schema(example = "prod_QXg1hqf4jFNsqG")]
    product_id: Option<String>,
    /// RFC 3339.
    #[schema(format = DateTime, example = "2026-12-24T00:00:00Z")]
    current_period_end: Option<String>,
    /// The subscription ends at `currentPeriodEnd` instead of renewing.
    cancel_at_period_end: bool,
}

#[derive(Serialize, ToSchema)]
pub struct StatusResponse {
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
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
    security(("bearer_jwt" = []), ("session_cookie" = []))
)]
pub async fn billing_status(
    user: AuthenticatedUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (id, email) = (user.id.as_str().to_owned(), user.email);
    let (row, subs) = db::run(&state.pool, move |conn| {
        // The steady state, a known user whose email is unchanged, is one
        // prepared statement; a new user or a changed email is written first.
        match users::find_with_subscriptions(conn, &id)? {
            Some((row, subs)) if email.is_none() || row.email == email => Ok((row, subs)),
            _ => {
                let row = users::insert_or_update(conn, &id, email.as_deref())?;
                Ok((row, subscriptions::of_user(conn, &id)?))
            }
        }
    })
    .await?;
    let summary = summarize(row.paid, &subs, state.paid_rule.past_due_is_paid);
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(StatusResponse {
            message: "billing status",
            data: StatusData {
                paid: summary.paid,
                status: summary.status,
                price_id: summary.price_id,
                product_id: summary.product_id,
                current_period_end: summary
                    .current_period_end
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
                cancel_at_period_end: summary.cancel_at_period_end,
            },
        }))
}
