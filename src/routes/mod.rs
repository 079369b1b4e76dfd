//! HTTP routes: which path goes to which handler, body limits, and the JSON
//! answers for unknown paths and methods.

mod health;
mod page;
mod portal;
mod status;
mod webhooks;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, HttpResponse};

use crate::error::{ApiError, ErrorBody};

/// Portal requests carry at most a tiny JSON body.
const PORTAL_BODY_LIMIT: usize = 16 * 1024;
/// Stripe's events are far smaller; anything larger is not Stripe.
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/billing/create-portal")
            .app_data(web::PayloadConfig::new(PORTAL_BODY_LIMIT))
            .route(web::post().to(portal::create_portal))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/billing/status")
            .route(web::get().to(status::billing_status))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/webhooks/stripe")
            .app_data(web::PayloadConfig::new(WEBHOOK_BODY_LIMIT))
            .route(web::post().to(webhooks::stripe_webhook))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/settings/billing")
            .route(web::get().to(page::billing_page))
            .default_service(web::to(method_not_allowed)),
    )
    .route(
        "/settings/billing/assets/billing.css",
        web::get().to(page::billing_css),
    )
    .route(
        "/settings/billing/assets/billing.js",
        web::get().to(page::billing_js),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(health::healthz))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(health::readyz))
            .default_service(web::to(method_not_allowed)),
    )
    .default_service(web::to(not_found));
}

/// Makes the errors actix answers by itself (a body over the limit, an
/// unreadable body) JSON like every other error; ours already are.
pub fn json_errors<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(to_json_error)
}

fn to_json_error<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::BAD_REQUEST => ("bad_request", "the request could not be read"),
        s if s.is_server_error() => ("internal_error", "internal server error"),
        _ => (
            "http_error",
            status.canonical_reason().unwrap_or("request failed"),
        ),
    };
    let (req, _) = res.into_parts();
    let response: HttpResponse<BoxBody> = HttpResponse::build(status).json(ErrorBody {
        message,
        error: code,
    });
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response).map_into_right_body::<B>(),
    ))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found())
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed on this path",
    ))
}
