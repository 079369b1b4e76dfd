//! `POST /billing/create-portal`: answers
//! `{"message":"portal created","data":{"portalUrl":"…"}}` for the signed-in
//! user. The optional JSON body may only choose presentation (`locale`); the
//! customer always comes from the user's own row, never from the request.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{check_same_origin, AuthenticatedUser};
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::AppState;
use crate::billing::portal::{self, PortalOptions};
use crate::stripe::client::{FlowKind, Locale, PORTAL_LOCALES};

/// Optional body; no body opens the portal's home page.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreatePortalRequest {
    /// A locale the Stripe portal supports (`fr`, `pt-BR`, `auto`…).
    #[schema(value_type = Option<PortalLocale>)]
    locale: Option<String>,
    /// Open the portal straight on one task; after it, the portal returns to
    /// the Billing Settings page.
    #[schema(value_type = Option<FlowKind>)]
    flow: Option<String>,
}

/// A locale the Stripe Customer Portal supports: the schema lists exactly
/// [`PORTAL_LOCALES`], the list [`Locale::parse`] accepts.
pub(crate) struct PortalLocale;

impl utoipa::PartialSchema for PortalLocale {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(PORTAL_LOCALES.iter().copied()))
            .examples(["fr"])
            .into()
    }
}

impl ToSchema for PortalLocale {}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PortalData {
    /// The Stripe-hosted portal session; valid for a few minutes.
    #[schema(example = "https://billing.stripe.com/p/session/test_YWNjdF8x")]
    portal_url: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct PortalResponse {
    #[schema(example = "portal created")]
    message: &'static str,
    data: PortalData,
}

/// Create a Customer Portal session for the signed-in user.
///
/// Creates the user's Stripe customer first if they have none (exactly one,
/// even under concurrent calls). The customer is always the user's own.
#[utoipa::path(
    post,
    path = "/billing/create-portal",
    tag = "billing",
    request_body(content = Option<CreatePortalRequest>, content_type = "application/json"),
    params(("X-Requested-With" = Option<String>, Header,
            description = "Required when authenticated by cookie (CSRF protection)")),
    responses(
        (status = 200, description = "Portal session created", body = PortalResponse),
        (status = 400, description = "Bad body, locale or flow, a token email Stripe would refuse (`invalid_email`), or a bearer token and the cookie naming different users or organisations", body = ErrorBody),
        (status = 401, description = "Not signed in: no token, an invalid or expired one (`invalid_token`, `token_expired`), or an `org_id` that is empty, too long or holds a control character (`invalid_org_id`)", body = ErrorBody),
        (status = 403, description = "Cross-site request refused, or `not_billing_manager`: the token acts for an organisation (`org_id`) and its `org_role` is not one of `BILLING_MANAGER_ROLES`", body = ErrorBody),
        (status = 409, description = "The flow needs a subscription the user does not have", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 502, description = "Stripe failed or timed out (`stripe_error`, `stripe_timeout`, `stripe_unreachable`), refused the API key (`stripe_auth_failed`), or the portal is not configured for this (`portal_not_configured`)", body = ErrorBody),
        (status = 503, description = "Database unavailable or Stripe rate limiting", body = ErrorBody),
    ),
    security(("bearer_jwt" = []), ("session_cookie" = []))
)]
pub(crate) async fn create_portal(
    req: HttpRequest,
    body: web::Bytes,
    user: AuthenticatedUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_same_origin(&req, &user, &state.origins)?;
    user.require_manager(&state.manager_roles)?;
    let options = parse_body(&req, &body)?;
    let locale = options
        .locale
        .as_deref()
        .map(Locale::parse)
        .transpose()
        .map_err(|reason| ApiError::bad_request(ErrorCode::InvalidLocale, reason))?;
    let flow = options
        .flow
        .as_deref()
        .map(FlowKind::parse)
        .transpose()
        .map_err(|reason| ApiError::bad_request(ErrorCode::InvalidFlow, reason))?;
    let portal_url = portal::open(
        &state.billing,
        user.member(),
        PortalOptions { locale, flow },
    )
    .await?;
    Ok(HttpResponse::Ok().json(PortalResponse {
        message: "portal created",
        data: PortalData { portal_url },
    }))
}

/// No body (or only white space) means no options; anything else must be a
/// JSON object of known fields.
fn parse_body(req: &HttpRequest, body: &[u8]) -> Result<CreatePortalRequest, ApiError> {
    Ok(json_object_body(req, body, "portal request")?.unwrap_or_default())
}

/// A JSON object body of known fields, `None` when there is none (no body,
/// only white space, or `null`); `what` names it in the error message.
pub(super) fn json_object_body<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    body: &[u8],
    what: &str,
) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
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
                ErrorCode::UnsupportedMediaType,
                "the request body must be JSON (Content-Type: application/json)",
            ));
        }
    }
    let invalid = |e: serde_json::Error| {
        ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!("the request body is not a valid {what}: {e}"),
        )
    };
    // A value first: serde would also read the struct from a JSON array by
    // position (`["fr", null]`), and `null` is the documented "no options".
    match serde_json::from_slice::<serde_json::Value>(body).map_err(invalid)? {
        serde_json::Value::Null => Ok(None),
        value @ serde_json::Value::Object(_) => {
            serde_json::from_value(value).map(Some).map_err(invalid)
        }
        _ => Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!("the request body is not a valid {what}: it must be a JSON object"),
        )),
    }
}
