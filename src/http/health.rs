//! `GET /healthz` (the process answers) and `GET /readyz` (the database does).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::db;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Object, example = json!({"status": "ok"}))))]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Prometheus metrics of this instance (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let pool = state.billing.pool.state();
    let gauge = &state.billing.metrics.db_pool;
    gauge
        .with_label_values(&["in_use"])
        .set(i64::from(pool.connections - pool.idle_connections));
    gauge
        .with_label_values(&["idle"])
        .set(i64::from(pool.idle_connections));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.billing.metrics.render())
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Object, example = json!({"status": "ready"})),
        (status = 503, description = "Database unreachable", body = ErrorBody),
    ))]
pub(crate) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    db::ping(&state.billing.pool).await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}
