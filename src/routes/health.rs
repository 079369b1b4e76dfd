//! `GET /healthz` (the process answers) and `GET /readyz` (the database does).

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::db;
use crate::error::ApiError;
use crate::startup::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    db::ping(&state.pool).await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}
