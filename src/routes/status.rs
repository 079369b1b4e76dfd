//! `GET /billing/status`: whether the signed-in user is paid, and their
//! current subscription, answered from Postgres only (never a Stripe call).

use actix_web::{web, HttpResponse};
use chrono::SecondsFormat;
use serde::Serialize;

use crate::auth::AuthenticatedUser;
use crate::billing::summary::summarize;
use crate::db::{self, subscriptions, users};
use crate::error::ApiError;
use crate::startup::AppState;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusData {
    paid: bool,
    status: Option<String>,
    price_id: Option<String>,
    product_id: Option<String>,
    current_period_end: Option<String>,
    cancel_at_period_end: bool,
}

#[derive(Serialize)]
struct StatusResponse {
    message: &'static str,
    data: StatusData,
}

pub async fn billing_status(
    user: AuthenticatedUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (id, email) = (user.id.as_str().to_owned(), user.email);
    let (row, subs) = db::run(&state.pool, move |conn| {
        let row = users::upsert(conn, &id, email.as_deref())?;
        let subs = subscriptions::of_user(conn, &id)?;
        Ok((row, subs))
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
