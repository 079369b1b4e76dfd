//! `GET /openapi.json`: an OpenAPI 3.1 description of the whole HTTP API,
//! generated from the handlers' own annotations and types (utoipa), so it
//! cannot drift from the code: its paths are [`Endpoints`], the same list the
//! server routes from.

use actix_web::HttpResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorBody, ErrorCode};
use super::Endpoints;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "billing-portal",
        description = "Stripe Customer Portal service: portal sessions for signed-in users, \
                       signed Stripe webhooks synced into Postgres, billing status, and the \
                       Billing Settings page. Every error is `{\"message\", \"error\"}`; \
                       `POST /billing/refresh`'s also carry the stored status as `data`."
    ),
    components(schemas(ErrorBody, ErrorCode)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "billing", description = "For the signed-in user (JWT as bearer token or cookie)"),
        (name = "webhooks", description = "Called by Stripe"),
        (name = "page", description = "The Billing Settings page and its assets"),
        (name = "operations", description = "Probes and this document"),
    )
)]
pub(crate) struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer_jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256 JWT shared with the app: `sub` (user id) and `exp` required, \
                         `email` optional, `nbf` honoured when present",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "billing_session",
                "The same JWT in a same-origin cookie. POSTs authenticated this way must \
                 also send `X-Requested-With` (CSRF protection).",
            ))),
        );
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json"))
)]
pub(crate) async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

/// The whole document: the API's description and every endpoint.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(Endpoints::openapi());
    doc
}
