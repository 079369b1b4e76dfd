//! The HTTP layer: the routes, their handlers, authentication, the error
//! answers and the OpenAPI document. It calls the use cases ([`crate::billing`])
//! and maps their errors to HTTP ([`error`]); nothing below it imports it.
//!
//! Every route is declared once, in [`endpoints!`] below: the handler's
//! `#[utoipa::path]` gives its method and path, and both the server's routing
//! ([`configure`]) and the OpenAPI document ([`openapi::ApiDoc`]) are built
//! from that one list. Also body limits, and the JSON answers for unknown
//! paths, wrong methods and actix's own errors.

pub mod auth;
mod checkout;
pub mod edge;
pub mod error;
mod health;
pub mod openapi;
mod page;
mod portal;
mod refresh;
pub mod request_id;
mod status;
mod webhooks;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, HttpResponse, Route};
use utoipa::OpenApi as _;

use crate::billing::Billing;
use crate::stripe::signature::WebhookVerifier;
use error::{ApiError, ErrorBody, ErrorCode};
pub use health::MetricsAccess;

/// What every handler shares: the use cases' context and what only HTTP needs.
pub struct AppState {
    pub(crate) billing: Billing,
    /// The origins a cookie-authenticated write may come from.
    pub(crate) origins: auth::OriginPolicy,
    pub(crate) webhook_verifier: WebhookVerifier,
    /// Demo mode (the emulator runs): the page offers demo sign-in.
    pub(crate) demo: bool,
    /// `APP_ENV=production`: `/` is a 404 instead of leading to the page.
    pub(crate) production: bool,
    /// `BILLING_MANAGER_ROLES`, as the status tells members whom to ask.
    pub(crate) manager_roles: Vec<String>,
}

/// Portal requests carry at most a tiny JSON body.
const PORTAL_BODY_LIMIT: usize = 16 * 1024;
/// Stripe's events are far smaller; anything larger is not Stripe.
pub(crate) const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// Declares the served endpoints once: `Endpoints` documents them (its
/// OpenAPI paths come from each handler's `#[utoipa::path]`), and
/// `handlers()` names each handler by its operation id (its function name,
/// utoipa's default), which [`configure`] matches against that document.
macro_rules! endpoints {
    ($($module:ident :: $handler:ident),* $(,)?) => {
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($module::$handler),*))]
        pub(crate) struct Endpoints;

        fn handlers() -> Vec<(&'static str, Route)> {
            vec![$((stringify!($handler), web::route().to($module::$handler))),*]
        }
    };
}

endpoints! {
    portal::create_portal,
    checkout::billing_plans,
    checkout::create_checkout,
    refresh::refresh_billing,
    status::billing_status,
    webhooks::stripe_webhook,
    page::billing_page,
    page::root,
    page::billing_css,
    page::billing_js,
    health::healthz,
    health::readyz,
    health::metrics,
    openapi::openapi_json,
}

/// Every (method, path) the service answers, from the one declaration.
pub fn served() -> Vec<(Method, String)> {
    let mut served = Vec::new();
    for (path, item) in Endpoints::openapi().paths.paths {
        for (method, _) in operations(&item) {
            served.push((method, path.clone()));
        }
    }
    served
}

fn operations(
    item: &utoipa::openapi::PathItem,
) -> Vec<(Method, &utoipa::openapi::path::Operation)> {
    [
        (Method::GET, &item.get),
        (Method::POST, &item.post),
        (Method::PUT, &item.put),
        (Method::PATCH, &item.patch),
        (Method::DELETE, &item.delete),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_ref().map(|op| (method, op)))
    .collect()
}

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    let mut handlers = handlers();
    for (path, item) in Endpoints::openapi().paths.paths {
        let limit = match path.as_str() {
            "/webhooks/stripe" => WEBHOOK_BODY_LIMIT,
            _ => PORTAL_BODY_LIMIT,
        };
        let mut resource = web::resource(path.as_str()).app_data(web::PayloadConfig::new(limit));
        let mut methods = Vec::new();
        for (method, op) in operations(&item) {
            let id = op.operation_id.as_deref().unwrap_or_default();
            let at = handlers
                .iter()
                .position(|(name, _)| *name == id)
                .unwrap_or_else(|| panic!("{method} {path}: no handler named `{id}`"));
            resource = resource.route(handlers.swap_remove(at).1.method(method.clone()));
            methods.push(method);
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

/// The routes of the separate metrics listener (`METRICS_ADDR`): `/metrics`, and the usual
/// JSON 404 for anything else.
pub(crate) fn configure_metrics_listener(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/metrics").route(web::get().to(health::metrics)))
        .default_service(web::to(not_found));
}

/// Makes the errors actix answers by itself (a body over the limit, an
/// unreadable body) JSON like every other error; ours already are. An HTML
/// error page is left as it is: only the emulator's hosted portal renders one
/// (an expired session, with its way back to the app), for a person in a
/// browser, as Stripe's own hosted pages do.
pub(crate) fn json_errors<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(to_json_error)
}

fn to_json_error<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json_or_page = res.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
    });
    if is_json_or_page {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            (ErrorCode::PayloadTooLarge, "the request body is too large")
        }
        StatusCode::BAD_REQUEST => (ErrorCode::BadRequest, "the request could not be read"),
        s if s.is_server_error() => (ErrorCode::InternalError, "internal server error"),
        _ => (
            ErrorCode::HttpError,
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
            error: ErrorCode::MethodNotAllowed,
        })
}
