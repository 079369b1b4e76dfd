//! The in-process Stripe emulator (no `STRIPE_SECRET_KEY`): an app that runs it, its API as
//! async-stripe and a plain HTTP client see it, and its account settings.

use serde_json::Value;
use stripe::ClientBuilder;

use super::app::{free_port, spawn_app_with, TestApp};

/// The service with no Stripe key, reachable at `APP_BASE_URL` (so the
/// portal's "Return to app" comes back to it).
pub async fn spawn_emulated_app_with(
    customize: impl FnOnce(&mut std::collections::HashMap<String, String>),
) -> TestApp {
    let port = free_port();
    spawn_app_with(|vars| {
        vars.remove("STRIPE_SECRET_KEY");
        vars.remove("STRIPE_API_BASE");
        vars.insert("PORT".into(), port.to_string());
        vars.insert("APP_BASE_URL".into(), format!("http://127.0.0.1:{port}"));
        customize(vars);
    })
    .await
}

/// async-stripe's own client, pointed at the emulator's API.
pub fn emulator_client(app: &TestApp) -> stripe::Client {
    ClientBuilder::new("sk_test_emulator")
        .url(format!("{}/stripe-emulator/", app.address))
        .build()
        .unwrap()
}

pub async fn emulator_post(
    app: &TestApp,
    path: &str,
    form: &[(&str, &str)],
    key: Option<&str>,
) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url(&format!("/stripe-emulator/v1/{path}")))
        .bearer_auth("sk_test_emulator")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish(),
        );
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// What the emulator answered a POST: status, body, and whether Stripe's
/// `Idempotent-Replayed: true` header marks it as the saved answer to an
/// earlier request with the same `Idempotency-Key`.
#[derive(Debug)]
pub struct EmulatorAnswer {
    pub status: u16,
    pub body: Value,
    pub replayed: bool,
}

/// `POST /stripe-emulator/v1/{path}` with an `Idempotency-Key`, headers kept.
pub async fn emulator_post_keyed(
    app: &TestApp,
    path: &str,
    form: &[(&str, &str)],
    key: &str,
) -> EmulatorAnswer {
    let response = app
        .client
        .post(app.url(&format!("/stripe-emulator/v1/{path}")))
        .bearer_auth("sk_test_emulator")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("idempotency-key", key)
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish(),
        )
        .send()
        .await
        .unwrap();
    let replayed = match response.headers().get("idempotent-replayed") {
        None => false,
        Some(v) if v == "true" => true,
        Some(other) => panic!("Idempotent-Replayed: {other:?}"),
    };
    EmulatorAnswer {
        status: response.status().as_u16(),
        replayed,
        body: response.json().await.unwrap(),
    }
}

/// The ids of the customers the emulator created (its `customer.created` events).
pub async fn emulated_customers(app: &TestApp) -> Vec<String> {
    let events = emulator_get(app, "events?type=customer.created&limit=100").await;
    events["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{events}"))
        .iter()
        .map(|e| e["data"]["object"]["id"].as_str().unwrap().to_string())
        .collect()
}

pub async fn emulator_get(app: &TestApp, path: &str) -> Value {
    app.client
        .get(app.url(&format!("/stripe-emulator/v1/{path}")))
        .bearer_auth("sk_test_emulator")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Sets the emulated account's settings (an emulator-only endpoint).
pub async fn account_settings(app: &TestApp, form: &[(&str, &str)]) {
    let (status, body) = emulator_post(app, "test_helpers/account_settings", form, None).await;
    assert_eq!(status, 200, "{body}");
}

/// Moves the billing clock of the emulated service at `base` forward by at least `secs`, with
/// Stripe's test-clock advance (`frozen_time` counted from the clock's own reading, so
/// however long the two requests take, it moves by `secs` or more).
pub async fn advance_billing_clock(client: &reqwest::Client, base: &str, secs: i64) {
    let clock_url = format!("{base}/stripe-emulator/v1/test_helpers/test_clocks/clock_any");
    let clock: Value = client
        .get(&clock_url)
        .bearer_auth("sk_test_emulator")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let frozen_time = clock["frozen_time"].as_i64().unwrap() + secs;
    let response = client
        .post(format!("{clock_url}/advance"))
        .bearer_auth("sk_test_emulator")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("frozen_time={frozen_time}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// A Pro subscription for `customer`, made through the emulator's Stripe API
/// (a customer without a card is charged as if it had 4242…).
pub async fn subscribe_through_emulator(app: &TestApp, customer: &str) -> Value {
    let (status, sub) = emulator_post(
        app,
        "subscriptions",
        &[
            ("customer", customer),
            ("items[0][price]", "price_emu_pro_monthly"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{sub}");
    sub
}

/// `user` made a customer by a first portal visit, then subscribed through the
/// emulator, and stored as paid from the webhooks: (customer, subscription).
pub async fn emulated_paid_user(app: &TestApp, user: &str) -> (String, Value) {
    let token = super::app::token_for(user, Some("ada@example.com"));
    assert_eq!(app.create_portal(&token).await.status(), 200);
    let customer = app.user(user).unwrap().stripe_customer_id.unwrap();
    let sub = subscribe_through_emulator(app, &customer).await;
    super::app::eventually("the subscription stored as paid", || {
        app.user(user).unwrap().paid
    })
    .await;
    (customer, sub)
}

/// `GET /stripe-emulator/v1/{path}` on the service at `base`: status and body.
pub async fn emulator_get_at(client: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    let response = client
        .get(format!("{base}/stripe-emulator/v1/{path}"))
        .bearer_auth("sk_test_emulator")
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// `POST /stripe-emulator/v1/{path}` (form-encoded) on the service at `base`.
pub async fn emulator_post_at(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, Value) {
    let response = client
        .post(format!("{base}/stripe-emulator/v1/{path}"))
        .bearer_auth("sk_test_emulator")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish(),
        )
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// `POST /billing/create-checkout` for `plan` from `client` (its session cookie) at `base`,
/// once the start-up resolution offers it: status and body.
pub async fn create_checkout_at(client: &reqwest::Client, base: &str, plan: &str) -> (u16, Value) {
    for _ in 0..300 {
        let response = client
            .post(format!("{base}/billing/create-checkout"))
            .header("x-requested-with", "billing-portal")
            .json(&serde_json::json!({ "plan": plan }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        // Until the background resolution has read the emulator's prices.
        if status == 400 && body["error"] == "unknown_plan" {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        }
        return (status, body);
    }
    panic!("{plan} was never offered");
}

/// The page's Subscribe as a browser runs it against the service at `base` (the session cookie
/// in `client`): a Checkout Session for `plan`, then the emulator's test helper pays it in the
/// hosted checkout page's place. The session's id, and the session as the helper answers it.
pub async fn checkout_through_emulator(
    client: &reqwest::Client,
    base: &str,
    plan: &str,
) -> (String, Value) {
    let (status, body) = create_checkout_at(client, base, plan).await;
    assert_eq!(status, 200, "{body}");
    let url = body["data"]["checkoutUrl"].as_str().unwrap();
    // Stripe's `…/c/pay/cs_…`: the session's id is the URL's last segment.
    let session = url.rsplit('/').next().unwrap().to_string();
    let (status, paid) = emulator_post_at(
        client,
        base,
        &format!("test_helpers/checkout/sessions/{session}/complete"),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{paid}");
    (session, paid)
}

/// The demo as a browser runs it against the service at `base`: signs in (the session cookie
/// lands in `client`'s jar) and buys the Pro plan through Checkout; the subscription's id.
pub async fn demo_subscribe(client: &reqwest::Client, base: &str) -> String {
    let response = client
        .post(format!("{base}/demo/sign-in"))
        .header("x-requested-with", "billing-portal")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "demo sign-in");
    let (_, paid) = checkout_through_emulator(client, base, "price_emu_pro_monthly").await;
    paid["subscription"].as_str().unwrap().to_string()
}

impl TestApp {
    /// Runs the service's `command` on this app's database as `cargo run -- <command>` does,
    /// without a Stripe key: whether it succeeded, and what it printed.
    pub fn run_emulated_command(&self, command: &str, args: &[&str]) -> (bool, String) {
        self.run_command_with(command, args, |run| {
            run.env_remove("STRIPE_SECRET_KEY")
                .env_remove("STRIPE_API_BASE");
        })
    }

    /// The ids of the subscriptions stored in Postgres.
    pub fn subscription_ids(&self) -> Vec<String> {
        use diesel::prelude::*;
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            id: String,
        }
        diesel::sql_query("SELECT id FROM subscriptions ORDER BY id")
            .load::<Row>(&mut self.db())
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    }
}

// --- The hosted checkout page (`<emulator>/c/pay/{id}`), driven as a browser without
// JavaScript drives it: plain form posts, redirects not followed.

/// A browser that stops at every redirect, so a test sees where each answer leads.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A customer made through the emulator's API: its id.
pub async fn emulated_customer(app: &TestApp) -> String {
    let (status, customer) =
        emulator_post(app, "customers", &[("email", "ada@example.com")], None).await;
    assert_eq!(status, 200, "{customer}");
    customer["id"].as_str().unwrap().to_string()
}

/// Where the app's Checkout sends the buyer back to, as the service asks Stripe for it.
pub fn checkout_success_url(app: &TestApp) -> String {
    app.url("/settings/billing?from=checkout&session_id={CHECKOUT_SESSION_ID}")
}

/// A Checkout Session for the Pro plan, created as the service creates one with real Stripe.
pub async fn checkout_session_for(app: &TestApp, customer: &str) -> Value {
    let success = checkout_success_url(app);
    let cancel = app.url("/settings/billing");
    let (status, session) = emulator_post(
        app,
        "checkout/sessions",
        &[
            ("mode", "subscription"),
            ("customer", customer),
            ("line_items[0][price]", "price_emu_pro_monthly"),
            ("line_items[0][quantity]", "1"),
            ("client_reference_id", "user_1"),
            ("metadata[user_id]", "user_1"),
            ("subscription_data[metadata][user_id]", "user_1"),
            ("success_url", &success),
            ("cancel_url", &cancel),
        ],
        Some(&format!("checkout-{customer}")),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    session
}

/// Submits the hosted page's card form (`number`, `exp`, `cvc`) at the session's `url`.
pub async fn pay_on_checkout_page(
    browser: &reqwest::Client,
    url: &str,
    number: &str,
) -> reqwest::Response {
    browser
        .post(url)
        .form(&[("number", number), ("exp", "12 / 34"), ("cvc", "123")])
        .send()
        .await
        .unwrap()
}

/// Where a redirect leads (its `Location`), asserting it is a 303 See Other.
pub fn redirected_to(response: &reqwest::Response) -> String {
    assert_eq!(response.status(), 303, "{response:?}");
    response.headers()["location"].to_str().unwrap().to_string()
}

/// A page's status and HTML.
pub async fn html_page(browser: &reqwest::Client, url: &str) -> (u16, String) {
    let response = browser.get(url).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Every subscription the emulator holds for `customer`, whatever its status.
pub async fn emulated_subscriptions(app: &TestApp, customer: &str) -> Vec<Value> {
    let listed = emulator_get(
        app,
        &format!("subscriptions?customer={customer}&status=all&limit=100"),
    )
    .await;
    listed["data"].as_array().unwrap().clone()
}
