//! The one error type every handler returns, and the JSON body it becomes:
//! `{"message":"<human readable>","error":"<stable_snake_case_code>"}`, and
//! for `POST /billing/refresh` also `"data"`, the stored billing status the
//! page falls back on ([`ErrorWithStatusBody`]).
//!
//! The codes are one enum, [`ErrorCode`], which the OpenAPI document lists.
//! The layers below speak their own errors ([`billing::Error`],
//! [`DbError`], [`StripeFailure`], [`SignatureError`]); this module alone
//! decides which status and code each becomes.
//!
//! 4xx messages are written for the person at the keyboard; 5xx bodies are
//! generic on purpose and the cause (database or Stripe detail) goes only to
//! the log, because actix's default would put `Display` text, and so internal
//! detail, in the body.

use std::fmt;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::billing;
use crate::db::DbError;
use crate::stripe::client::{PortalProblem, StripeFailure};
use crate::stripe::signature::SignatureError;

/// Every `error` code the service answers: stable, snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    // Authentication and CSRF.
    Unauthenticated,
    InvalidToken,
    TokenExpired,
    /// A bearer token and the session cookie name different users.
    AmbiguousCredentials,
    /// The token's `org_id` is empty, too long or holds a control character.
    InvalidOrgId,
    /// A member of an organisation whose role may not manage its billing
    /// (`BILLING_MANAGER_ROLES`).
    NotBillingManager,
    CsrfHeaderMissing,
    CrossOriginRequest,
    // Bad requests.
    BadRequest,
    InvalidBody,
    InvalidLocale,
    InvalidFlow,
    /// The token's email is not one Stripe accepts for a customer.
    InvalidEmail,
    UnsupportedMediaType,
    PayloadTooLarge,
    /// The request head or body did not arrive in time (408).
    RequestTimeout,
    /// The request head is over actix-http's limit (431).
    HeadersTooLarge,
    NotFound,
    MethodNotAllowed,
    HttpError,
    // Webhook deliveries.
    MissingSignature,
    MalformedSignature,
    TimestampOutOfTolerance,
    SignatureMismatch,
    InvalidEvent,
    // Billing state.
    NoSubscription,
    SubscriptionAlreadyCanceling,
    /// A refresh within 10 s of the user's last Stripe read (429).
    RefreshTooSoon,
    /// A checkout for a user who already has a live subscription (409).
    AlreadySubscribed,
    /// A checkout for a plan `BILLING_PLANS` does not offer (400).
    UnknownPlan,
    /// A Checkout Session on return that is not the signed-in user's (403).
    CheckoutSessionNotYours,
    // Stripe.
    StripeNotConfigured,
    StripeKeyModeMismatch,
    /// Stripe refused `STRIPE_SECRET_KEY` (401), or a restricted key lacks a permission (403).
    StripeAuthFailed,
    PortalNotConfigured,
    StripeRateLimited,
    StripeTimeout,
    StripeUnreachable,
    StripeError,
    // This service.
    DatabaseUnavailable,
    InternalError,
}

impl ErrorCode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::AmbiguousCredentials => "ambiguous_credentials",
            Self::InvalidOrgId => "invalid_org_id",
            Self::NotBillingManager => "not_billing_manager",
            Self::CsrfHeaderMissing => "csrf_header_missing",
            Self::CrossOriginRequest => "cross_origin_request",
            Self::BadRequest => "bad_request",
            Self::InvalidBody => "invalid_body",
            Self::InvalidLocale => "invalid_locale",
            Self::InvalidFlow => "invalid_flow",
            Self::InvalidEmail => "invalid_email",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::HeadersTooLarge => "headers_too_large",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::HttpError => "http_error",
            Self::MissingSignature => "missing_signature",
            Self::MalformedSignature => "malformed_signature",
            Self::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
            Self::SignatureMismatch => "signature_mismatch",
            Self::InvalidEvent => "invalid_event",
            Self::NoSubscription => "no_subscription",
            Self::SubscriptionAlreadyCanceling => "subscription_already_canceling",
            Self::RefreshTooSoon => "refresh_too_soon",
            Self::AlreadySubscribed => "already_subscribed",
            Self::UnknownPlan => "unknown_plan",
            Self::CheckoutSessionNotYours => "checkout_session_not_yours",
            Self::StripeNotConfigured => "stripe_not_configured",
            Self::StripeKeyModeMismatch => "stripe_key_mode_mismatch",
            Self::StripeAuthFailed => "stripe_auth_failed",
            Self::PortalNotConfigured => "portal_not_configured",
            Self::StripeRateLimited => "stripe_rate_limited",
            Self::StripeTimeout => "stripe_timeout",
            Self::StripeUnreachable => "stripe_unreachable",
            Self::StripeError => "stripe_error",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::InternalError => "internal_error",
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    /// Logged for 5xx answers, never sent.
    cause: Option<String>,
    /// Sent as `Retry-After` (whole seconds).
    retry_after_secs: Option<u64>,
    /// The stored billing status, sent as `data` ([`ErrorWithStatusBody`]).
    data: Option<serde_json::Value>,
}

/// The body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody<'a> {
    /// For people: what went wrong and what to do.
    #[schema(example = "invalid session token")]
    pub(crate) message: &'a str,
    /// For programs: a stable snake_case code.
    #[schema(example = "invalid_token")]
    pub(crate) error: ErrorCode,
}

/// The body of a `POST /billing/refresh` error that still knows the user's
/// stored billing status: the usual message and code, and `data` as
/// `GET /billing/status` answers it, for the page to show instead.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorWithStatusBody<'a> {
    /// For people: what went wrong and what to do.
    #[schema(example = "Stripe did not answer in time, please retry")]
    pub(crate) message: &'a str,
    /// For programs: a stable snake_case code.
    #[schema(example = "stripe_timeout")]
    pub(crate) error: ErrorCode,
    /// The billing status stored before this request, as `GET /billing/status` answers it;
    /// absent only when it could not be read either (the database is down).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<super::status::StatusData>)]
    pub(crate) data: Option<&'a serde_json::Value>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            cause: None,
            retry_after_secs: None,
            data: None,
        }
    }

    /// Keeps the cause for the log line (5xx only; 4xx causes are the message).
    pub(crate) fn with_cause(mut self, cause: impl fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    /// Sends `Retry-After` with the answer, in whole seconds (at least 1).
    pub(crate) fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after_secs = Some(after.as_secs().max(1));
        self
    }

    /// Adds `data` to the body ([`ErrorWithStatusBody`]): the stored billing
    /// status the page falls back on.
    pub(crate) fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }

    pub(crate) fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn unauthorized(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub(crate) fn forbidden(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub(crate) fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub(crate) fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such endpoint",
        )
    }

    pub(crate) fn bad_gateway(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, code, message)
    }

    pub(crate) fn service_unavailable(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub(crate) fn internal(cause: impl fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            "internal server error",
        )
        .with_cause(cause)
    }

    #[cfg(test)]
    pub(crate) fn code(&self) -> &'static str {
        self.code.as_str()
    }

    #[cfg(test)]
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code.as_str())?;
        if let Some(cause) = &self.cause {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if self.status.is_server_error() {
            log::error!("{} {}", self.status.as_u16(), self);
        }
        let mut response = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after_secs {
            response.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
        }
        match &self.data {
            Some(data) => response.json(ErrorWithStatusBody {
                message: &self.message,
                error: self.code,
                data: Some(data),
            }),
            None => response.json(ErrorBody {
                message: &self.message,
                error: self.code,
            }),
        }
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        if err.is_unavailable() {
            ApiError::service_unavailable(
                ErrorCode::DatabaseUnavailable,
                "the database is unavailable, please retry shortly",
            )
            .with_cause(err)
        } else {
            ApiError::internal(err)
        }
    }
}

impl From<StripeFailure> for ApiError {
    fn from(failure: StripeFailure) -> Self {
        let err = match &failure {
            StripeFailure::KeyModeMismatch { data_mode } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::StripeKeyModeMismatch,
                format!(
                    "STRIPE_SECRET_KEY is a {key}-mode key but the stored customer exists in \
                     {data_mode} mode: set STRIPE_SECRET_KEY to the {data_mode}-mode key of the \
                     Stripe account, the mode the data was created in.",
                    key = data_mode.other()
                ),
            ),
            StripeFailure::PortalNotConfigured(problem) => ApiError::bad_gateway(
                ErrorCode::PortalNotConfigured,
                match problem {
                    PortalProblem::NotSaved => "The Stripe Customer Portal is not configured for \
                        this account: open the Stripe Dashboard, Settings > Billing > Customer \
                        portal, and save the settings (in the same test or live mode as \
                        STRIPE_SECRET_KEY), or set STRIPE_PORTAL_CONFIGURATION."
                        .to_string(),
                    PortalProblem::UnknownConfiguration => "STRIPE_PORTAL_CONFIGURATION names a \
                        portal configuration this Stripe account does not have in this mode: set \
                        it to a bpc_… id listed by GET /v1/billing_portal/configurations with the \
                        same key, or unset it to use the default configuration."
                        .to_string(),
                    PortalProblem::FeatureDisabled(stripe_says) => format!(
                        "The Stripe Customer Portal configuration does not allow this: \
                         {stripe_says} Turn the feature on in the Stripe Dashboard, Settings > \
                         Billing > Customer portal (or in STRIPE_PORTAL_CONFIGURATION's \
                         configuration), or open the portal without a flow."
                    ),
                },
            ),
            StripeFailure::AuthenticationFailed { .. } => ApiError::bad_gateway(
                ErrorCode::StripeAuthFailed,
                "Stripe refused this service's API key: the operator must set \
                 STRIPE_SECRET_KEY to a current secret key (Stripe Dashboard, Developers > API \
                 keys), or give the restricted key the permissions it needs.",
            ),
            StripeFailure::InvalidEmail(_) => ApiError::bad_request(
                ErrorCode::InvalidEmail,
                "Stripe does not accept the email address of your account; correct it in your \
                 profile, then try again.",
            ),
            StripeFailure::RateLimited { retry_after } => ApiError::service_unavailable(
                ErrorCode::StripeRateLimited,
                "Stripe is rate limiting requests, please retry in a few seconds",
            )
            .with_retry_after(retry_after.unwrap_or(Duration::from_secs(1))),
            StripeFailure::Timeout => ApiError::bad_gateway(
                ErrorCode::StripeTimeout,
                "Stripe did not answer in time, please retry",
            ),
            StripeFailure::Unreachable(_) => ApiError::bad_gateway(
                ErrorCode::StripeUnreachable,
                "Stripe cannot be reached right now, please retry",
            ),
            StripeFailure::Api { retry_after, .. } => {
                let err = ApiError::bad_gateway(
                    ErrorCode::StripeError,
                    "Stripe could not process the request, please retry",
                );
                match retry_after {
                    Some(after) => err.with_retry_after(*after),
                    None => err,
                }
            }
            StripeFailure::NoSuchCustomer | StripeFailure::InvalidResponse(_) => {
                ApiError::bad_gateway(
                    ErrorCode::StripeError,
                    "Stripe could not process the request, please retry",
                )
            }
        };
        err.with_cause(failure)
    }
}

impl From<SignatureError> for ApiError {
    fn from(err: SignatureError) -> Self {
        let code = match err {
            SignatureError::MissingHeader => ErrorCode::MissingSignature,
            SignatureError::MalformedHeader => ErrorCode::MalformedSignature,
            SignatureError::TimestampOutOfTolerance => ErrorCode::TimestampOutOfTolerance,
            SignatureError::NoMatchingSignature => ErrorCode::SignatureMismatch,
        };
        ApiError::bad_request(code, err.to_string())
    }
}

impl From<billing::Error> for ApiError {
    fn from(err: billing::Error) -> Self {
        match err {
            billing::Error::StripeNotConfigured => ApiError::service_unavailable(
                ErrorCode::StripeNotConfigured,
                "Stripe is not configured: set STRIPE_SECRET_KEY",
            ),
            billing::Error::NoSubscription => ApiError::conflict(
                ErrorCode::NoSubscription,
                "you have no current subscription to change or cancel",
            ),
            // Classic billing mode sets `cancel_at_period_end`; flexible mode
            // (the default since API 2025-09-30) sets only `cancel_at`.
            billing::Error::AlreadyCanceling => ApiError::conflict(
                ErrorCode::SubscriptionAlreadyCanceling,
                "your subscription is already set to end; renew it in the portal instead",
            ),
            billing::Error::RefreshTooSoon { retry_after_secs } => {
                let mut err = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::RefreshTooSoon,
                    format!(
                        "your subscription was read from Stripe moments ago; \
                         refresh again in {retry_after_secs} s"
                    ),
                );
                err.retry_after_secs = Some(retry_after_secs);
                err
            }
            billing::Error::InvalidEmail(problem) => ApiError::bad_request(
                ErrorCode::InvalidEmail,
                format!(
                    "the email in your session token is not one Stripe accepts ({problem}); \
                     correct it in your account, then sign in again"
                ),
            ),
            billing::Error::UnknownPlan => ApiError::bad_request(
                ErrorCode::UnknownPlan,
                "this plan is not offered; GET /billing/plans lists the plans you can subscribe to",
            ),
            billing::Error::AlreadySubscribed => ApiError::conflict(
                ErrorCode::AlreadySubscribed,
                "you already have a subscription; change or cancel it with Manage Subscription",
            ),
            billing::Error::CheckoutNotYours => ApiError::forbidden(
                ErrorCode::CheckoutSessionNotYours,
                "this checkout session is not yours",
            ),
            billing::Error::Db(e) => e.into(),
            billing::Error::Stripe(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn body_of(err: ApiError) -> String {
        let bytes = err.error_response().into_body().try_into_bytes().unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn each_signature_failure_reason_is_the_error_code_it_answers() {
        for error in SignatureError::ALL {
            let reason = error.reason();

            assert_eq!(ApiError::from(error).code(), reason);
        }
    }

    #[test]
    fn a_server_error_body_never_carries_its_cause() {
        let body = body_of(ApiError::internal(
            "connection to 10.0.0.3 failed: password authentication failed",
        ));
        assert_eq!(
            body,
            r#"{"message":"internal server error","error":"internal_error"}"#
        );
    }

    #[test]
    fn a_client_error_body_has_message_and_code() {
        let body = body_of(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "body is not JSON",
        ));
        assert_eq!(
            body,
            r#"{"message":"body is not JSON","error":"invalid_body"}"#
        );
    }

    #[test]
    fn the_mode_mismatch_error_tells_the_operator_which_key_to_use() {
        let err = ApiError::from(StripeFailure::KeyModeMismatch {
            data_mode: crate::stripe::client::StripeMode::Live,
        });

        assert_eq!(err.code(), "stripe_key_mode_mismatch");
        assert!(
            err.message()
                .contains("STRIPE_SECRET_KEY is a test-mode key")
                && err.message().contains("live-mode key"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn signature_error_codes_are_stable_snake_case() {
        let code = |e: SignatureError| ApiError::from(e).code();
        assert_eq!(code(SignatureError::MissingHeader), "missing_signature");
        assert_eq!(code(SignatureError::MalformedHeader), "malformed_signature");
        assert_eq!(
            code(SignatureError::TimestampOutOfTolerance),
            "timestamp_out_of_tolerance"
        );
        assert_eq!(
            code(SignatureError::NoMatchingSignature),
            "signature_mismatch"
        );
    }

    #[test]
    fn a_refresh_too_soon_says_when_to_retry_and_can_carry_the_stored_status() {
        let err = ApiError::from(billing::Error::RefreshTooSoon {
            retry_after_secs: 7,
        })
        .with_data(serde_json::json!({"paid": true}));

        let response = err.error_response();

        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get("retry-after").unwrap(), "7");
        let bytes = response.into_body().try_into_bytes().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"], "refresh_too_soon");
        assert!(body["message"].as_str().unwrap().contains("7 s"), "{body}");
        assert_eq!(body["data"], serde_json::json!({"paid": true}));
    }

    #[test]
    fn every_code_serializes_as_its_name() {
        for code in [ErrorCode::InvalidToken, ErrorCode::StripeKeyModeMismatch] {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.as_str())
            );
        }
    }
}
