//! `GET /healthz` (the process answers), `GET /readyz` (the database does) and `GET /metrics`,
//! with who may read the metrics on which listener ([`MetricsAccess`]).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{ApiError, ErrorBody, ErrorCode};
use super::AppState;
use crate::db;

/// Who may read `/metrics` on a listener (`METRICS_TOKEN`, `METRICS_ADDR`, `APP_ENV`).
#[derive(Clone)]
pub enum MetricsAccess {
    /// Anyone who reaches the listener.
    Open,
    /// Only with this bearer token; kept as its SHA-256 so comparing takes the same time
    /// whatever the length or content of the token sent.
    Token([u8; 32]),
    /// Not on this listener: 404, as for any unknown path.
    NotServed,
}

impl MetricsAccess {
    pub fn token(token: &SecretString) -> Self {
        Self::Token(Sha256::digest(token.expose_secret().as_bytes()).into())
    }

    fn check(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let expected = match self {
            Self::Open => return Ok(()),
            Self::NotServed => return Err(ApiError::not_found()),
            Self::Token(expected) => expected,
        };
        let sent = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(sent) = sent else {
            return Err(ApiError::unauthorized(
                ErrorCode::Unauthenticated,
                "/metrics needs `Authorization: Bearer <METRICS_TOKEN>`",
            ));
        };
        let sent: [u8; 32] = Sha256::digest(sent.as_bytes()).into();
        if bool::from(sent.ct_eq(expected)) {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                ErrorCode::InvalidToken,
                "this is not the metrics token",
            ))
        }
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Object, example = json!({"status": "ok"}))))]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Prometheus metrics of this instance (text exposition format). With `METRICS_TOKEN` set it
/// needs that bearer token; with `METRICS_ADDR` set it is served there only (404 here); in
/// production one of the two is required (404 otherwise).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, description = "`METRICS_TOKEN` is set and was not sent", body = ErrorBody),
        (status = 404, description = "Not served on this listener", body = ErrorBody),
    ))]
pub(crate) async fn metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
    access: Option<web::Data<MetricsAccess>>,
) -> Result<HttpResponse, ApiError> {
    // Every App registers its access; none registered would be a wiring mistake: not served.
    match access {
        Some(access) => access.check(&req)?,
        None => return Err(ApiError::not_found()),
    }
    let pool = state.billing.pool.state();
    let gauge = &state.billing.metrics.db_pool;
    gauge
        .with_label_values(&["in_use"])
        .set(i64::from(pool.connections - pool.idle_connections));
    gauge
        .with_label_values(&["idle"])
        .set(i64::from(pool.idle_connections));
    let billing = &state.billing;
    let age = billing
        .webhook_health
        .last_verified_age(billing.clock.now());
    billing.metrics.last_verified_age(age);
    Ok(HttpResponse::build(StatusCode::OK)
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.billing.metrics.render()))
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
