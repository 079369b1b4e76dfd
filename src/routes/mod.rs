//! HTTP routes: which path goes to which handler, body limits, and the JSON
//! answers for unknown paths and methods.

mod health;
mod portal;

use actix_web::{web, HttpResponse};

use crate::error::ApiError;

/// Portal requests carry at most a tiny JSON body.
const PORTAL_BODY_LIMIT: usize = 16 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/billing/create-portal")
            .app_data(web::PayloadConfig::new(PORTAL_BODY_LIMIT))
            .route(web::post().to(portal::create_portal))
            .default_service(web::to(method_not_allowed)),
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
