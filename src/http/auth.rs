//! Who is calling: an HS256 JWT shared with the app, from
//! `Authorization: Bearer <jwt>` or the `billing_session` cookie.
//!
//! `sub` (the app's user id) and `exp` are required, `email` optional, and
//! `nbf`, when present, is honoured. `org_id`, when present, makes every
//! billing endpoint act for that organisation's account rather than the
//! user's own; `org_role` says whether the member may manage its billing
//! (`BILLING_MANAGER_ROLES`; no role: a plain member) and `org_name` names it
//! on the page and on its Stripe customer. Only
//! HS256 is accepted: `none`, RS256 and every other algorithm, a bad signature,
//! an expired token and a missing `sub` all answer 401. A bearer token and a
//! cookie naming two different users answer 400 `ambiguous_credentials`.
//! Reads `AUTH_JWT_SECRET`. Also the cross-site guard for cookie-authenticated
//! writes ([`check_same_origin`], [`OriginPolicy`]).

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use ipnet::IpNet;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorCode};
use crate::billing::customers::Member;
use crate::config::Settings;
use crate::ids::{check_app_id, AccountId, OrgId, UserId};

pub(crate) const SESSION_COOKIE: &str = "billing_session";
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The organisation the user acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// The user's role in it (`owner`, `admin`, `member`…: the app's words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_role: Option<String>,
    /// The organisation's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_name: Option<String>,
}

impl Claims {
    /// A user's claims, acting for themselves.
    pub fn user(sub: impl Into<String>, exp: i64, email: Option<String>) -> Self {
        Self {
            sub: sub.into(),
            exp,
            email,
            org_id: None,
            org_role: None,
            org_name: None,
        }
    }
}

/// How the credentials arrived; cookie-authenticated writes need CSRF checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CredentialSource {
    Bearer,
    Cookie,
}

/// Who a verified token names: the user, and the account they act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    pub email: Option<String>,
    /// The user's own account, or their organisation's (`org_id`).
    pub account: AccountId,
    /// `org_role`, for an organisation's account.
    pub role: Option<String>,
    /// `org_name`, when it is a name one can show (else ignored).
    pub org_name: Option<String>,
    /// Whether they may open the account's portal and subscribe it: always for
    /// their own account; for an organisation's, a role in
    /// `BILLING_MANAGER_ROLES`.
    pub can_manage: bool,
}

#[derive(Debug, Clone)]
pub struct AuthenticatedUser {
    pub(crate) identity: Identity,
    pub(crate) source: CredentialSource,
}

impl AuthenticatedUser {
    /// The user as the use cases take them.
    pub(crate) fn member(&self) -> Member<'_> {
        Member {
            id: &self.identity.account,
            email: self.identity.email.as_deref(),
            org_name: self.identity.org_name.as_deref(),
        }
    }

    /// Refuses a member of an organisation whose role may not manage its
    /// billing (403 `not_billing_manager`), before anything is created.
    pub(crate) fn require_manager(&self, roles: &[String]) -> Result<(), ApiError> {
        if self.identity.can_manage {
            return Ok(());
        }
        Err(ApiError::forbidden(
            ErrorCode::NotBillingManager,
            format!(
                "only members with the role {} can manage this organisation's billing; ask one of them",
                if roles.is_empty() { "(none: BILLING_MANAGER_ROLES is empty)".to_owned() } else { roles.join(" or ") }
            ),
        ))
    }
}

/// Verifies tokens; built once at start-up and shared as `web::Data`.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    /// `BILLING_MANAGER_ROLES`.
    manager_roles: Vec<String>,
}

impl JwtVerifier {
    pub fn new(secret: &SecretString, manager_roles: &[String]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        // A token carrying `nbf` (RFC 7519 §4.1.5) is refused before that time.
        validation.validate_nbf = true;
        Self {
            key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            validation,
            manager_roles: manager_roles.to_vec(),
        }
    }

    pub fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::unauthorized(
                    ErrorCode::TokenExpired,
                    "session expired, sign in again",
                ),
                _ => ApiError::unauthorized(ErrorCode::InvalidToken, "invalid session token"),
            },
        )?;
        let claims = data.claims;
        let user = UserId::parse(&claims.sub)
            .map_err(|reason| ApiError::unauthorized(ErrorCode::InvalidToken, reason))?;
        let email = claims.email.filter(|e| !e.trim().is_empty());
        let Some(org) = claims.org_id else {
            return Ok(Identity {
                account: AccountId::user(&user),
                user,
                email,
                role: None,
                org_name: None,
                can_manage: true,
            });
        };
        let org = OrgId::parse(&org).map_err(|reason| {
            ApiError::unauthorized(
                ErrorCode::InvalidOrgId,
                format!("the token's org_id is refused: {reason}"),
            )
        })?;
        // A role the app did not send is a plain member's: nothing is
        // assumed in the member's favour.
        let role = claims.org_role.filter(|r| !r.is_empty());
        let can_manage = role
            .as_ref()
            .is_some_and(|r| self.manager_roles.iter().any(|m| m == r));
        // A name is only shown and sent to Stripe (which keeps 256
        // characters); one that is not safe to show is left out.
        let org_name = claims
            .org_name
            .filter(|n| !n.trim().is_empty() && check_app_id("organisation name", n).is_ok());
        Ok(Identity {
            account: AccountId::organization(&org),
            user,
            email,
            role,
            org_name,
            can_manage,
        })
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

/// Which origins may send a cookie-authenticated write: the app's
/// (`APP_BASE_URL`) and this service's own, each compared whole (scheme, host
/// and port). The service's own origin is the `Host` the request was sent to,
/// over the scheme it arrived on; only a peer listed in `TRUSTED_PROXIES` may
/// name another with `Forwarded` / `X-Forwarded-Host` / `X-Forwarded-Proto`
/// (actix's `ConnectionInfo` believes those from anyone, so it is read only
/// for such a peer).
#[derive(Debug, Clone)]
pub(crate) struct OriginPolicy {
    app: url::Origin,
    trusted_proxies: Vec<IpNet>,
}

impl OriginPolicy {
    pub(crate) fn new(settings: &Settings) -> Self {
        let app = url::Url::parse(&settings.app_base_url)
            .map(|u| u.origin())
            // Configuration refuses an APP_BASE_URL that is not an absolute
            // URL; were it one, an opaque origin matches nothing.
            .unwrap_or_else(|_| url::Origin::new_opaque());
        Self {
            app,
            trusted_proxies: settings.trusted_proxies.clone(),
        }
    }

    fn sent_by_trusted_proxy(&self, req: &HttpRequest) -> bool {
        req.peer_addr().is_some_and(|peer| {
            let ip = peer.ip().to_canonical();
            self.trusted_proxies.iter().any(|net| net.contains(&ip))
        })
    }

    /// The origin this request was addressed to, when it names one.
    fn own_origin(&self, req: &HttpRequest) -> Option<url::Origin> {
        let (scheme, host) = if self.sent_by_trusted_proxy(req) {
            let info = req.connection_info();
            (info.scheme().to_owned(), info.host().to_owned())
        } else {
            let scheme = if req.app_config().secure() {
                "https"
            } else {
                "http"
            };
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
                .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))?;
            (scheme.to_owned(), host)
        };
        // A bare `host[:port]` only: nothing that would make the URL below
        // mean another host (`user@host`, `host/path`).
        if host.is_empty() || host.contains(['/', '\\', '@', '?', '#']) {
            return None;
        }
        url::Url::parse(&format!("{scheme}://{host}"))
            .ok()
            .map(|u| u.origin())
    }

    fn allows(&self, req: &HttpRequest, origin: &str) -> bool {
        let Ok(origin) = url::Url::parse(origin).map(|u| u.origin()) else {
            return false; // `null` (a sandboxed frame, a redirect chain) and garbage
        };
        // Opaque origins never equal one another.
        origin == self.app || self.own_origin(req).is_some_and(|own| origin == own)
    }
}

/// Cross-site request forgery guard for state-changing requests. Bearer tokens
/// are never sent by a browser on its own, so only cookie-authenticated
/// requests are checked: they must carry [`CSRF_HEADER`], must not be marked
/// `Sec-Fetch-Site: cross-site` by the browser, and an `Origin` header, when
/// present, must be one [`OriginPolicy`] allows.
pub(crate) fn check_same_origin(
    req: &HttpRequest,
    user: &AuthenticatedUser,
    policy: &OriginPolicy,
) -> Result<(), ApiError> {
    if user.source == CredentialSource::Bearer {
        return Ok(());
    }
    check_browser_write(req, policy)
}

/// The cross-site checks of a write a browser may send with (or, for the
/// demo sign-in, to obtain) the session cookie: our header, which another
/// site's form cannot add, no `Sec-Fetch-Site: cross-site`, and an allowed
/// `Origin` when there is one.
pub(crate) fn check_browser_write(
    req: &HttpRequest,
    policy: &OriginPolicy,
) -> Result<(), ApiError> {
    if !req.headers().contains_key(CSRF_HEADER) {
        return Err(ApiError::forbidden(
            ErrorCode::CsrfHeaderMissing,
            "cookie-authenticated requests must send the X-Requested-With header",
        ));
    }
    let cross_origin = || {
        ApiError::forbidden(
            ErrorCode::CrossOriginRequest,
            "this request came from another site and was refused",
        )
    };
    // Fetch metadata (every current browser): the browser's own word that a
    // page of another site sent this, whatever the other headers say.
    let cross_site = req
        .headers()
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    if cross_site {
        return Err(cross_origin());
    }
    match req.headers().get(header::ORIGIN) {
        None => Ok(()),
        Some(origin) => match origin.to_str() {
            Ok(origin) if policy.allows(req, origin) => Ok(()),
            _ => Err(cross_origin()),
        },
    }
}

/// The bearer token of the `Authorization` header, if there is one; a header
/// that is there but not `Bearer <token>` is refused rather than skipped.
fn bearer_token(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
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
    Ok(Some(token.trim()))
}

/// Who is calling. A bearer token and the session cookie may come together
/// (a page holding a token in the same browser); when both are valid they
/// must name the same user acting for the same account. Preferring either one
/// silently is how a link carrying someone else's token would switch a
/// signed-in user into that account, so two are refused instead. A cookie
/// that does not verify (expired, from an old secret) is no session and does
/// not stand in the way of a valid bearer token.
fn authenticate(req: &HttpRequest, verifier: &JwtVerifier) -> Result<AuthenticatedUser, ApiError> {
    let cookie = req.cookie(SESSION_COOKIE);
    let Some(token) = bearer_token(req)? else {
        let Some(cookie) = cookie else {
            return Err(ApiError::unauthorized(
                ErrorCode::Unauthenticated,
                "sign in required: send a Bearer token or the billing_session cookie",
            ));
        };
        return Ok(AuthenticatedUser {
            identity: verifier.verify(cookie.value())?,
            source: CredentialSource::Cookie,
        });
    };
    let identity = verifier.verify(token)?;
    if let Some(Ok(by_cookie)) = cookie.map(|c| verifier.verify(c.value())) {
        if by_cookie.user != identity.user || by_cookie.account != identity.account {
            return Err(ApiError::bad_request(
                ErrorCode::AmbiguousCredentials,
                "the Authorization header and the billing_session cookie name different users \
                 or organisations; send only one of them",
            ));
        }
    }
    Ok(AuthenticatedUser {
        identity,
        source: CredentialSource::Bearer,
    })
}

impl FromRequest for AuthenticatedUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.app_data::<web::Data<JwtVerifier>>()
                .ok_or_else(|| ApiError::internal("JwtVerifier is not registered"))
                .and_then(|verifier| authenticate(req, verifier)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let claims = Claims::user("u1", chrono::Utc::now().timestamp() + 60, None);
        let token = issue_token(&SecretString::from("secret-a"), &claims);
        let verifier = JwtVerifier::new(&SecretString::from("secret-b"), &[]);
        assert_eq!(verifier.verify(&token).unwrap_err().code(), "invalid_token");
        let verifier = JwtVerifier::new(&SecretString::from("secret-a"), &[]);
        assert_eq!(verifier.verify(&token).unwrap().user.as_str(), "u1");
    }
}
