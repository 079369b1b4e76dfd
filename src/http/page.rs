//! `GET /settings/billing`: the Billing Settings page. Its HTML, CSS and
//! JavaScript (`src/web/`) are embedded in the binary, so the page needs no
//! build step and loads nothing from elsewhere; the Content-Security-Policy
//! allows only this origin, and the page may not be framed. Outside
//! production `GET /` leads to it, since `/` is where a newcomer first looks.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse};

use super::error::{ApiError, ErrorBody};
use super::AppState;

const HTML: &str = include_str!("../web/billing.html");
const CSS: &str = include_str!("../web/billing.css");
const JS: &str = include_str!("../web/billing.js");

pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

fn asset(content_type: &'static str, body: &str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // The page shows live billing state: never serve it from a cache.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body.to_string())
}

/// The Billing Settings page (HTML).
#[utoipa::path(get, path = "/settings/billing", tag = "page",
    responses((status = 200, description = "The page", content_type = "text/html")))]
pub(crate) async fn billing_page(state: web::Data<AppState>) -> HttpResponse {
    if state.demo {
        return asset(
            "text/html; charset=utf-8",
            DEMO_HTML.get_or_init(|| {
                HTML.replace(
                    r#"<meta name="billing-demo" content="off">"#,
                    r#"<meta name="billing-demo" content="on">"#,
                )
            }),
        );
    }
    asset("text/html; charset=utf-8", HTML)
}

/// `/` outside production: the page, where `http://localhost:8080/` should lead a person
/// trying the service. In production the service answers only the prefixes the app's
/// domain proxies to it, so `/` stays the API's usual JSON 404 there.
#[utoipa::path(get, path = "/", tag = "page", responses(
    (status = 302, description = "Outside production: to the Billing Settings page",
        headers(("Location" = String, description = "`/settings/billing`"))),
    (status = 404, description = "In production", body = ErrorBody)))]
pub(crate) async fn root(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.production {
        return Err(ApiError::not_found());
    }
    Ok(HttpResponse::Found()
        .insert_header((header::LOCATION, "/settings/billing"))
        .finish())
}

/// The page with demo mode on, built once.
static DEMO_HTML: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The page's stylesheet.
#[utoipa::path(get, path = "/settings/billing/assets/billing.css", tag = "page",
    responses((status = 200, description = "CSS", content_type = "text/css")))]
pub(crate) async fn billing_css() -> HttpResponse {
    asset("text/css; charset=utf-8", CSS)
}

/// The page's script.
#[utoipa::path(get, path = "/settings/billing/assets/billing.js", tag = "page",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript")))]
pub(crate) async fn billing_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", JS)
}
