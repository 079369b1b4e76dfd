//! `POST /billing/create-portal`: answers
//! `{"message":"portal created","data":{"portalUrl":"…"}}` for the signed-in
//! user. The optional JSON body may only choose presentation (`locale`); the
//! customer always comes from the user's own row, never from the request.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::auth::{check_same_origin, AuthenticatedUser};
use crate::billing::portal::portal_url;
use crate::error::ApiError;
use crate::startup::AppState;
use crate::stripe::client::Locale;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreatePortalRequest {
    locale: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PortalData {
    portal_url: String,
}

#[derive(Serialize)]
struct PortalResponse {
    message: &'static str,
    data: PortalData,
}

pub async fn create_portal(
    req: HttpRequest,
    body: web::Bytes,
    user: AuthenticatedUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_same_origin(&req, &user, &state.app_origin)?;
    let options = parse_body(&req, &body)?;
    let locale = options
        .locale
        .as_deref()
        .map(Locale::parse)
        .transpose()
        .map_err(|reason| ApiError::bad_request("invalid_locale", reason))?;
    let portal_url = portal_url(&state, &user, locale).await?;
    Ok(HttpResponse::Ok().json(PortalResponse {
        message: "portal created",
        data: PortalData { portal_url },
    }))
}

/// No body (or only white space) means no options; anything else must be a
/// JSON object of known fields.
fn parse_body(req: &HttpRequest, body: &[u8]) -> Result<CreatePortalRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(CreatePortalRequest::default());
    }
    if let Some(content_type) = req.headers().get(header::CONTENT_TYPE) {
        let json = content_type
            .to_str()
            .map(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            })
            .unwrap_or(false);
        if !json {
            return Err(ApiError::new(
                actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the request body must be JSON (Content-Type: application/json)",
            ));
        }
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("the request body is not a valid portal request: {e}"),
        )
    })
}
