//! Demo mode, only while the emulator runs: `POST /demo/sign-in` sets a
//! session cookie for a demo user, and `POST /demo/subscribe` is a stand-in
//! for Stripe Checkout that creates a subscription in the emulator. The
//! subscription reaches Postgres the way a real one does: the emulator's
//! signed webhooks, as a Checkout sends them (`customer.subscription.created`
//! `incomplete`, `updated` `active`, `invoice.paid` and
//! `checkout.session.completed`, all in one second, in no guaranteed order).

use std::collections::BTreeMap;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{BillingMode, Checkout, Emulator};
use crate::billing::customers;
use crate::http::auth::{
    check_same_origin, issue_token, AuthenticatedUser, Claims, SESSION_COOKIE,
};
use crate::http::error::{ApiError, ErrorCode};
use crate::http::AppState;

pub const DEMO_USER: &str = "demo_user";
pub const DEMO_EMAIL: &str = "demo@example.com";

/// Demo mode: the emulator runs and demo sign-in is offered.
pub struct DemoMode {
    pub emulator: std::sync::Arc<Emulator>,
    pub jwt_secret: secrecy::SecretString,
}

pub async fn sign_in(demo: web::Data<DemoMode>) -> Result<HttpResponse, ApiError> {
    let token = issue_token(
        &demo.jwt_secret,
        &Claims {
            sub: DEMO_USER.into(),
            email: Some(DEMO_EMAIL.into()),
            exp: chrono::Utc::now().timestamp() + 8 * 3600,
        },
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

pub async fn subscribe(
    req: HttpRequest,
    user: AuthenticatedUser,
    state: web::Data<AppState>,
    demo: web::Data<DemoMode>,
) -> Result<HttpResponse, ApiError> {
    check_same_origin(&req, &user, &state.app_origin)?;
    let emulator = demo.emulator.clone();
    let customer = customers::ensure(&state.billing, user.member())
        .await?
        .to_string();
    let price = Emulator::prices()[1].id;
    let metadata = BTreeMap::from([("user_id".to_string(), user.id.as_str().to_string())]);
    let created = emulator.with_state(|emu, s| {
        let active = s
            .subscriptions
            .values()
            .any(|sub| sub.customer == customer && !sub.has_ended());
        if active {
            return Ok(None);
        }
        let checkout = Checkout {
            client_reference_id: user.id.as_str().to_string(),
        };
        emu.create_subscription(
            s,
            &customer,
            price,
            metadata,
            BillingMode::Flexible,
            Some(checkout),
        )
        .map(Some)
    });
    match created {
        Ok(Some(sub)) => Ok(HttpResponse::Ok().json(json!({
            "message": "subscription created",
            "data": {"subscriptionId": sub.id}
        }))),
        Ok(None) => Err(ApiError::conflict(
            ErrorCode::AlreadySubscribed,
            "you already have a subscription; manage it in the portal",
        )),
        Err(e) => Err(ApiError::bad_gateway(ErrorCode::StripeError, e.message)),
    }
}
