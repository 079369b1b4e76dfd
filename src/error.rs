//! The one error type every handler returns, and the JSON body it becomes:
//! `{"message":"<human readable>","error":"<stable_snake_case_code>"}`.
//!
//! Which variant to use: the constructors below name the situation (bad input,
//! unauthenticated, conflict, Stripe failed, database unavailable). 4xx messages
//! are written for the person at the keyboard; 5xx bodies are generic on purpose
//! and the cause (database or Stripe detail) goes only to the log, because
//! actix's default would put `Display` text, and so internal detail, in the body.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Logged for 5xx answers, never sent.
    cause: Option<String>,
}

/// The body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// For people: what went wrong and what to do.
    #[schema(example = "invalid session token")]
    pub message: &'a str,
    /// For programs: a stable snake_case code.
    #[schema(example = "invalid_token")]
    pub error: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            cause: None,
        }
    }

    /// Keeps the cause for the log line (5xx only; 4xx causes are the message).
    pub fn with_cause(mut self, cause: impl fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds the {limit} byte limit"),
        )
    }

    pub fn bad_gateway(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, code, message)
    }

    pub fn service_unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub fn internal(cause: impl fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal server error",
        )
        .with_cause(cause)
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)?;
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
        HttpResponse::build(self.status).json(ErrorBody {
            message: &self.message,
            error: self.code,
        })
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
        let body = body_of(ApiError::bad_request("invalid_body", "body is not JSON"));
        assert_eq!(
            body,
            r#"{"message":"body is not JSON","error":"invalid_body"}"#
        );
    }
}
