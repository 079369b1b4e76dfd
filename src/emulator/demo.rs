//! Demo mode, only while the emulator runs: `POST /demo/sign-in` sets a
//! session cookie for a demo user. Subscribing goes the way it does with a
//! real key: the page's plan list, `POST /billing/create-checkout`, and the
//! emulator's Checkout.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::SecretString;
use serde_json::json;

use crate::http::auth::{check_browser_write, issue_token, Claims, SESSION_COOKIE};
use crate::http::error::ApiError;
use crate::http::AppState;

const DEMO_USER: &str = "demo_user";
const DEMO_EMAIL: &str = "demo@example.com";

/// The demo's own wiring: the session secret it signs in with.
pub(super) struct Demo {
    jwt_secret: SecretString,
}

impl Demo {
    pub(super) fn new(jwt_secret: SecretString) -> Self {
        Self { jwt_secret }
    }
}

pub(super) fn configure(cfg: &mut web::ServiceConfig, demo: web::Data<Demo>) {
    cfg.app_data(demo)
        .route("/demo/sign-in", web::post().to(sign_in));
}

/// Checked like every cookie write: another site's page must not sign its
/// visitor in as the demo user (login CSRF).
async fn sign_in(
    req: HttpRequest,
    state: web::Data<AppState>,
    demo: web::Data<Demo>,
) -> Result<HttpResponse, ApiError> {
    check_browser_write(&req, &state.origins)?;
    let token = issue_token(
        &demo.jwt_secret,
        &Claims::user(
            DEMO_USER,
            chrono::Utc::now().timestamp() + 8 * 3600,
            Some(DEMO_EMAIL.into()),
        ),
    );
    let cookie = Cookie::build(SESSION_COOKIE, token)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .finish();
    Ok(HttpResponse::Ok()
        .cookie(cookie)
        .json(json!({"message": "signed in as the demo user", "data": {"userId": DEMO_USER}})))
}
