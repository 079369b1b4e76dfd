//! Demo mode, only while the emulator runs: `POST /demo/sign-in` sets a
//! session cookie for a demo user, and `POST /demo/subscribe` buys the Pro
//! plan for the signed-in user as an app does with Stripe Checkout.
//!
//! The demo is a client of the emulator's Stripe API like any other, over
//! HTTP; it never touches the emulator's memory. The user's customer comes
//! from the service's own use case (created if the user has none), the
//! purchase is a Checkout Session, and the emulator-only test helper pays it
//! in the customer's place (there is no hosted checkout page to click
//! through). The subscription reaches Postgres the way a real one does: the
//! emulator's signed webhooks, as a Checkout sends them
//! (`customer.subscription.created` `incomplete`, `updated` `active`,
//! `invoice.paid` and `checkout.session.completed`, all in one second, in no
//! guaranteed order).

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::billing::customers;
use crate::http::auth::{
    check_browser_write, check_same_origin, issue_token, AuthenticatedUser, Claims, SESSION_COOKIE,
};
use crate::http::error::{ApiError, ErrorCode};
use crate::http::AppState;

const DEMO_USER: &str = "demo_user";
const DEMO_EMAIL: &str = "demo@example.com";
/// What the demo buys: the seeded Pro plan.
const DEMO_PRICE: &str = "price_emu_pro_monthly";

/// The demo's own wiring: the session secret it signs in with, and the
/// emulator's API it buys through.
pub(super) struct Demo {
    /// The emulator's Stripe API base on loopback.
    api_base: String,
    jwt_secret: SecretString,
    http: reqwest::Client,
}

impl Demo {
    pub(super) fn new(api_base: String, jwt_secret: SecretString) -> Self {
        Self {
            api_base,
            jwt_secret,
            http: reqwest::Client::new(),
        }
    }

    /// One Stripe API call, form-encoded as Stripe takes it. Stripe's error
    /// objects and an unreachable emulator become 502s, as the service's own
    /// Stripe failures do. A 409 `idempotency_key_in_use` (another click's
    /// request with the same key still executing) is retried with backoff, as
    /// Stripe's libraries retry a 409, until that request's saved answer is
    /// replayed: for up to about 12 s, longer than the emulator's longest
    /// `latency_ms` holds a request.
    async fn call(
        &self,
        method: Method,
        path: &str,
        form: &[(&str, &str)],
        idempotency_key: Option<&str>,
    ) -> Result<Value, ApiError> {
        let mut backoff = std::time::Duration::from_millis(250);
        for _ in 0..8 {
            match self
                .call_once(method.clone(), path, form, idempotency_key)
                .await
            {
                Err(Refusal::KeyInUse(_)) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
                }
                answered => return answered.map_err(Refusal::into_api_error),
            }
        }
        self.call_once(method, path, form, idempotency_key)
            .await
            .map_err(Refusal::into_api_error)
    }

    async fn call_once(
        &self,
        method: Method,
        path: &str,
        form: &[(&str, &str)],
        idempotency_key: Option<&str>,
    ) -> Result<Value, Refusal> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut request = self
            .http
            .request(method, format!("{}/v1/{path}", self.api_base))
            .bearer_auth(super::API_KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let unreachable = |e: reqwest::Error| {
            ApiError::bad_gateway(
                ErrorCode::StripeUnreachable,
                "the Stripe emulator did not answer",
            )
            .with_cause(e)
        };
        let response = request.send().await.map_err(unreachable)?;
        let ok = response.status().is_success();
        let bytes = response.bytes().await.map_err(unreachable)?;
        let value: Value = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
        if ok {
            return Ok(value);
        }
        let message = value["error"]["message"]
            .as_str()
            .unwrap_or("the Stripe emulator refused the request");
        let refused = ApiError::bad_gateway(ErrorCode::StripeError, message);
        if value["error"]["code"] == "idempotency_key_in_use" {
            Err(Refusal::KeyInUse(refused))
        } else {
            Err(Refusal::Other(refused))
        }
    }
}

/// Why one call failed: worth another try, or not.
enum Refusal {
    KeyInUse(ApiError),
    Other(ApiError),
}

impl Refusal {
    fn into_api_error(self) -> ApiError {
        match self {
            Self::KeyInUse(e) | Self::Other(e) => e,
        }
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Self::Other(e)
    }
}

pub(super) fn configure(cfg: &mut web::ServiceConfig, demo: web::Data<Demo>) {
    cfg.app_data(demo)
        .route("/demo/sign-in", web::post().to(sign_in))
        .route("/demo/subscribe", web::post().to(subscribe));
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

/// Stripe's statuses after which a subscription is over.
fn has_ended(subscription: &Value) -> bool {
    matches!(
        subscription["status"].as_str(),
        Some("canceled" | "incomplete_expired")
    )
}

async fn subscribe(
    req: HttpRequest,
    user: AuthenticatedUser,
    state: web::Data<AppState>,
    demo: web::Data<Demo>,
) -> Result<HttpResponse, ApiError> {
    check_same_origin(&req, &user, &state.origins)?;
    let customer = customers::ensure(&state.billing, user.member()).await?;
    let user_id = user.id.as_str();
    // Every subscription the customer ever had (the demo user has a few).
    let listed = demo
        .call(
            Method::GET,
            &format!("subscriptions?customer={customer}&status=all&limit=100"),
            &[],
            None,
        )
        .await?;
    let subscriptions = listed["data"].as_array().cloned().unwrap_or_default();
    if subscriptions.iter().any(|s| !has_ended(s)) {
        return Err(ApiError::conflict(
            ErrorCode::AlreadySubscribed,
            "you already have a subscription; manage it in the portal",
        ));
    }
    // Concurrent clicks see the same history, so they share the keys and
    // buy once: the others wait out the first one's request (409
    // `idempotency_key_in_use`, retried) and get its answer replayed.
    let purchase = format!("demo-checkout-{user_id}-{}", subscriptions.len());
    let session = demo
        .call(
            Method::POST,
            "checkout/sessions",
            &[
                ("mode", "subscription"),
                ("customer", customer.as_str()),
                ("line_items[0][price]", DEMO_PRICE),
                ("line_items[0][quantity]", "1"),
                ("client_reference_id", user_id),
                ("subscription_data[metadata][user_id]", user_id),
                ("success_url", &state.billing.checkout_return_url),
            ],
            Some(&purchase),
        )
        .await?;
    let session_id = session["id"].as_str().unwrap_or_default();
    let paid = demo
        .call(
            Method::POST,
            &format!("test_helpers/checkout/sessions/{session_id}/complete"),
            &[],
            Some(&format!("{purchase}-paid")),
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({
        "message": "subscription created",
        "data": {"subscriptionId": paid["subscription"]}
    })))
}
