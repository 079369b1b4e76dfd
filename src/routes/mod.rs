//! HTTP routes: one table ([`endpoints`]) says which method and path go to
//! which handler; [`configure`] registers it, and a test checks it against
//! the OpenAPI document so the two cannot drift. Also body limits, and the
//! JSON answers for unknown paths, wrong methods and actix's own errors.

mod health;
pub mod openapi;
mod page;
mod portal;
mod status;
mod webhooks;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, HttpResponse, Route};

use crate::error::{ApiError, ErrorBody};

/// Portal requests carry at most a tiny JSON body.
const PORTAL_BODY_LIMIT: usize = 16 * 1024;
/// Stripe's events are far smaller; anything larger is not Stripe.
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// Every route the service answers: method, path, handler.
fn endpoints() -> Vec<(Method, &'static str, Route)> {
    vec![
        (
            Method::POST,
            "/billing/create-portal",
            web::post().to(portal::create_portal),
        ),
        (
            Method::GET,
            "/billing/status",
            web::get().to(status::billing_status),
        ),
        (
            Method::POST,
            "/webhooks/stripe",
            web::post().to(webhooks::stripe_webhook),
        ),
        (
            Method::GET,
            "/settings/billing",
            web::get().to(page::billing_page),
        ),
        (
            Method::GET,
            "/settings/billing/assets/billing.css",
            web::get().to(page::billing_css),
        ),
        (
            Method::GET,
            "/settings/billing/assets/billing.js",
            web::get().to(page::billing_js),
        ),
        (Method::GET, "/healthz", web::get().to(health::healthz)),
        (Method::GET, "/readyz", web::get().to(health::readyz)),
        (Method::GET, "/metrics", web::get().to(health::metrics)),
        (
            Method::GET,
            "/openapi.json",
            web::get().to(openapi::openapi_json),
        ),
    ]
}

/// The (method, path) pairs [`configure`] registers.
pub fn served() -> Vec<(Method, &'static str)> {
    endpoints().into_iter().map(|(m, p, _)| (m, p)).collect()
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut by_path: Vec<(&'static str, Vec<Method>, Vec<Route>)> = Vec::new();
    for (method, path, route) in endpoints() {
        match by_path.iter_mut().find(|(p, _, _)| *p == path) {
            Some((_, methods, routes)) => {
                methods.push(method);
                routes.push(route);
            }
            None => by_path.push((path, vec![method], vec![route])),
        }
    }
    for (path, methods, routes) in by_path {
        let limit = match path {
            "/webhooks/stripe" => WEBHOOK_BODY_LIMIT,
            _ => PORTAL_BODY_LIMIT,
        };
        let mut resource = web::resource(path).app_data(web::PayloadConfig::new(limit));
        for route in routes {
            resource = resource.route(route);
        }
        // RFC 9110 §15.5.6: a 405 must say which methods the path does allow.
        let allow = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        cfg.service(resource.default_service(web::to(move || {
            let allow = allow.clone();
            async move { method_not_allowed(&allow) }
        })));
    }
    cfg.default_service(web::to(not_found));
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

fn method_not_allowed(allow: &str) -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, allow))
        .json(ErrorBody {
            message: "this method is not allowed on this path",
            error: "method_not_allowed",
        })
}
