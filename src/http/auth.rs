//! Who is calling: an HS256 JWT shared with the app, from
//! `Authorization: Bearer <jwt>` or the `billing_session` cookie.
//!
//! `sub` (the app's user id) and `exp` are required, `email` optional, and
//! `nbf`, when present, is honoured. Only
//! HS256 is accepted: `none`, RS256 and every other algorithm, a bad signature,
//! an expired token and a missing `sub` all answer 401. Reads `AUTH_JWT_SECRET`.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorCode};
use crate::billing::customers::Member;
use crate::ids::UserId;

pub(crate) const SESSION_COOKIE: &str = "billing_session";
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// How the credentials arrived; cookie-authenticated writes need CSRF checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CredentialSource {
    Bearer,
    Cookie,
}

#[derive(Debug, Clone)]
pub struct AuthenticatedUser {
    pub(crate) id: UserId,
    pub email: Option<String>,
    pub(crate) source: CredentialSource,
}

impl AuthenticatedUser {
    /// The user as the use cases take them.
    pub(crate) fn member(&self) -> Member<'_> {
        Member {
            id: &self.id,
            email: self.email.as_deref(),
        }
    }
}

/// Verifies tokens; built once at start-up and shared as `web::Data`.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    pub fn new(secret: &SecretString) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        // A token carrying `nbf` (RFC 7519 §4.1.5) is refused before that time.
        validation.validate_nbf = true;
        Self {
            key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            validation,
        }
    }

    pub fn verify(&self, token: &str) -> Result<(UserId, Option<String>), ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::unauthorized(
                    ErrorCode::TokenExpired,
                    "session expired, sign in again",
                ),
                _ => ApiError::unauthorized(ErrorCode::InvalidToken, "invalid session token"),
            },
        )?;
        let id = UserId::parse(&data.claims.sub)
            .map_err(|reason| ApiError::unauthorized(ErrorCode::InvalidToken, reason))?;
        let email = data.claims.email.filter(|e| !e.trim().is_empty());
        Ok((id, email))
    }
}

/// Signs a session token: used by the `token` command for curl examples and
/// by tests. The app that embeds this service signs its own.
pub fn issue_token(secret: &SecretString, claims: &Claims) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
    .expect("HS256 signing with an in-memory key cannot fail")
}

/// The header the Billing Settings page sends with every request. A
/// cross-site form cannot set it, and a cross-site `fetch` that sets it needs a
/// CORS preflight this service never grants.
pub(crate) const CSRF_HEADER: &str = "x-requested-with";

/// Cross-site request forgery guard for state-changing requests. Bearer tokens
/// are never sent by a browser on its own, so only cookie-authenticated
/// requests are checked: they must carry [`CSRF_HEADER`], and an `Origin`
/// header, when present, must be this service's own origin (as the `Host`
/// header names it) or the app's (`APP_BASE_URL`).
pub(crate) fn check_same_origin(
    req: &HttpRequest,
    user: &AuthenticatedUser,
    app_origin: &str,
) -> Result<(), ApiError> {
    if user.source == CredentialSource::Bearer {
        return Ok(());
    }
    if !req.headers().contains_key(CSRF_HEADER) {
        return Err(ApiError::forbidden(
            ErrorCode::CsrfHeaderMissing,
            "cookie-authenticated requests must send the X-Requested-With header",
        ));
    }
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let own_host = req.connection_info().host().to_string();
    let same_host = url::Url::parse(origin)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(port) => format!("{h}:{port}"),
                None => h.to_string(),
            })
        })
        .is_some_and(|host| host == own_host);
    if same_host || origin == app_origin {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            ErrorCode::CrossOriginRequest,
            "this request came from another site and was refused",
        ))
    }
}

fn credentials(req: &HttpRequest) -> Result<(String, CredentialSource), ApiError> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| {
            ApiError::unauthorized(ErrorCode::InvalidToken, "invalid Authorization header")
        })?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::unauthorized(
                ErrorCode::InvalidToken,
                "the Authorization header must be `Bearer <token>`",
            ));
        }
        return Ok((token.trim().to_string(), CredentialSource::Bearer));
    }
    if let Some(cookie) = req.cookie(SESSION_COOKIE) {
        return Ok((cookie.value().to_string(), CredentialSource::Cookie));
    }
    Err(ApiError::unauthorized(
        ErrorCode::Unauthenticated,
        "sign in required: send a Bearer token or the billing_session cookie",
    ))
}

impl FromRequest for AuthenticatedUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready((|| {
            let verifier = req
                .app_data::<web::Data<JwtVerifier>>()
                .ok_or_else(|| ApiError::internal("JwtVerifier is not registered"))?;
            let (token, source) = credentials(req)?;
            let (id, email) = verifier.verify(&token)?;
            Ok(AuthenticatedUser { id, email, source })
        })())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let claims = Claims {
            sub: "u1".into(),
            exp: chrono::Utc::now().timestamp() + 60,
            email: None,
        };
        let token = issue_token(&SecretString::from("secret-a"), &claims);
        let verifier = JwtVerifier::new(&SecretString::from("secret-b"));
        assert_eq!(verifier.verify(&token).unwrap_err().code(), "invalid_token");
        let verifier = JwtVerifier::new(&SecretString::from("secret-a"));
        assert_eq!(verifier.verify(&token).unwrap().0.as_str(), "u1");
    }
}
