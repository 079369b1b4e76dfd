//! Issue 19: plans offered (`BILLING_PLANS`, `GET /billing/plans`), Checkout for unpaid users
//! (`POST /billing/create-checkout`), and the session applied the moment they return
//! (`POST /billing/refresh` with `checkoutSessionId`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::*;

const CHECKOUT_URL_BASE: &str = "https://checkout.stripe.test/c/pay/";

/// Answers `POST /v1/checkout/sessions` with `cs_test_1`, `cs_test_2`, … and, like Stripe,
/// the first answer again for a repeated `Idempotency-Key`; `GET /v1/checkout/sessions/{id}`
/// with the session as created (open), as [`CheckoutSessions::mount`] routes it.
#[derive(Clone, Default)]
struct CheckoutSessions {
    created: Arc<AtomicUsize>,
    replies: Arc<Mutex<HashMap<String, Value>>>,
    sessions: Arc<Mutex<HashMap<String, Value>>>,
}

impl CheckoutSessions {
    async fn mount(self, stripe: &MockServer) {
        Mock::given(method("POST"))
            .and(path("/v1/checkout/sessions"))
            .respond_with(self.clone())
            .mount(stripe)
            .await;
        Mock::given(method("GET"))
            .and(wiremock::matchers::path_regex(
                "^/v1/checkout/sessions/cs_[a-z_0-9]+$",
            ))
            .respond_with(move |request: &Request| {
                let id = request.url.path().rsplit('/').next().unwrap_or_default();
                match self.sessions.lock().unwrap().get(id) {
                    Some(session) => ResponseTemplate::new(200).set_body_json(session.clone()),
                    None => ResponseTemplate::new(404).set_body_json(json!({"error": {
                        "type": "invalid_request_error", "code": "resource_missing",
                        "message": format!("No such checkout.session: '{id}'"),
                    }})),
                }
            })
            .mount(stripe)
            .await;
    }
}

impl Respond for CheckoutSessions {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let key = header(request, "idempotency-key").map(str::to_owned);
        let mut replies = self.replies.lock().unwrap();
        if let Some(session) = key.as_ref().and_then(|k| replies.get(k)) {
            return ResponseTemplate::new(200)
                .insert_header("idempotent-replayed", "true")
                .set_body_json(session.clone());
        }
        let n = self.created.fetch_add(1, Ordering::SeqCst) + 1;
        let fields = form(request);
        let id = format!("cs_test_{n}");
        let session = json!({
            "id": id, "object": "checkout.session", "mode": "subscription", "status": "open",
            "customer": fields.get("customer"), "subscription": null,
            "client_reference_id": fields.get("client_reference_id"),
            "url": format!("{CHECKOUT_URL_BASE}{id}"),
        });
        if let Some(key) = key {
            replies.insert(key, session.clone());
        }
        self.sessions
            .lock()
            .unwrap()
            .insert(id.clone(), session.clone());
        ResponseTemplate::new(200).set_body_json(session)
    }
}

/// `GET /v1/prices/{id}` answers the price with its product expanded.
async fn stripe_has_price(stripe: &MockServer, id: &str, name: &str, amount: i64, active: bool) {
    let mut price = price_object(id, &format!("prod_{id}"), amount);
    price["active"] = json!(active);
    price["product"] = product_object(&format!("prod_{id}"), name);
    Mock::given(method("GET"))
        .and(path(format!("/v1/prices/{id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(price))
        .mount(stripe)
        .await;
}

/// `GET /v1/prices?lookup_keys[]=key` answers one price.
async fn stripe_has_lookup_key(stripe: &MockServer, key: &str, id: &str, name: &str, amount: i64) {
    let mut price = price_object(id, &format!("prod_{id}"), amount);
    price["lookup_key"] = json!(key);
    price["product"] = product_object(&format!("prod_{id}"), name);
    Mock::given(method("GET"))
        .and(path("/v1/prices"))
        .and(query_param("lookup_keys[]", key))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "url": "/v1/prices", "has_more": false, "data": [price]
        })))
        .mount(stripe)
        .await;
}

async fn stripe_lacks_price(stripe: &MockServer, id: &str) {
    // Stripe's own answer (docs.stripe.com/error-codes#resource-missing).
    Mock::given(method("GET"))
        .and(path(format!("/v1/prices/{id}")))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {
            "code": "resource_missing", "param": "id", "type": "invalid_request_error",
            "message": format!("No such price: '{id}'"),
        }})))
        .mount(stripe)
        .await;
}

/// The service offering `plans`, started against a fake Stripe that already knows
/// `price_starter` ($9), `pro_monthly` (a lookup key for `price_pro`, $29) and two prices it
/// refuses, one missing, one inactive: the start-up read finds them there.
async fn app_with_plans(
    plans: &str,
    customize: impl FnOnce(&mut HashMap<String, String>),
) -> TestApp {
    let stripe = MockServer::start().await;
    stripe_has_price(&stripe, "price_starter", "Starter", 900, true).await;
    stripe_lacks_price(&stripe, "price_gone").await;
    stripe_has_lookup_key(&stripe, "pro_monthly", "price_pro", "Pro", 2900).await;
    stripe_has_price(&stripe, "price_retired", "Retired", 500, false).await;
    let mut app = spawn_app_with(|vars| {
        vars.insert("BILLING_PLANS".into(), plans.into());
        vars.insert("STRIPE_API_BASE".into(), stripe.uri());
        customize(vars);
    })
    .await;
    app.stripe = stripe;
    app
}

/// An app offering all four: two plans, and the two Stripe refuses.
async fn app_offering_plans() -> TestApp {
    let app = app_with_plans(
        "price_starter, price_gone, pro_monthly, price_retired",
        |_| {},
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(CustomerFactory::default())
        .mount(&app.stripe)
        .await;
    CheckoutSessions::default().mount(&app.stripe).await;
    app
}

async fn plans(app: &TestApp, token: &str) -> Value {
    let response = app
        .client
        .get(app.url("/billing/plans"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The plans once the start-up resolution has stored the two valid ones.
async fn resolved_plans(app: &TestApp, token: &str) -> Value {
    plans_offered(app, token, 2).await
}

/// The plans once the start-up resolution has stored `count` of them; a test
/// whose plans never resolve fails here, saying so (30 s: the resolution's
/// reads are loopback round trips).
async fn plans_offered(app: &TestApp, token: &str, count: usize) -> Value {
    for _ in 0..300 {
        let body = plans(app, token).await;
        if body["data"]["plans"]
            .as_array()
            .is_some_and(|p| p.len() >= count)
        {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{count} offered plan(s) were never resolved");
}

async fn create_checkout(app: &TestApp, token: &str, plan: &str) -> reqwest::Response {
    app.client
        .post(app.url("/billing/create-checkout"))
        .bearer_auth(token)
        .json(&json!({ "plan": plan }))
        .send()
        .await
        .unwrap()
}

async fn refresh_with_session(app: &TestApp, token: &str, session: &str) -> reqwest::Response {
    app.client
        .post(app.url("/billing/refresh"))
        .bearer_auth(token)
        .json(&json!({ "checkoutSessionId": session }))
        .send()
        .await
        .unwrap()
}

#[actix_rt::test]
async fn the_plans_are_listed_in_the_configured_order_without_a_missing_or_inactive_price() {
    let app = app_offering_plans().await;
    let token = token_for("user_1", None);

    // Right after start-up: the answer waits for the first read of every plan.
    let body = plans(&app, &token).await;

    assert_eq!(
        body,
        json!({"message": "plans", "data": {"plans": [
            {"id": "price_starter", "name": "Starter", "amount": 900, "currency": "usd",
             "interval": "month", "intervalCount": 1},
            {"id": "pro_monthly", "name": "Pro", "amount": 2900, "currency": "usd",
             "interval": "month", "intervalCount": 1},
        ]}})
    );
}

#[actix_rt::test]
async fn without_billing_plans_and_with_a_key_no_plan_is_offered() {
    let app = spawn_app().await;

    let body = plans(&app, &token_for("user_1", None)).await;

    assert_eq!(body, json!({"message": "plans", "data": {"plans": []}}));
    let response = create_checkout(&app, &token_for("user_1", None), "price_emu_pro_monthly").await;
    assert_eq!(response.status(), 400);
    assert!(app
        .stripe_requests("POST", "/v1/customers")
        .await
        .is_empty());
}

#[actix_rt::test]
async fn create_checkout_sends_a_subscription_session_for_the_users_customer() {
    let app = app_offering_plans().await;
    let token = token_for("user_1", Some("ada@example.com"));
    resolved_plans(&app, &token).await;

    let response = create_checkout(&app, &token, "pro_monthly").await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"message": "checkout created",
               "data": {"checkoutUrl": format!("{CHECKOUT_URL_BASE}cs_test_1")}})
    );
    let sessions = app.stripe_requests("POST", "/v1/checkout/sessions").await;
    assert_eq!(sessions.len(), 1);
    let fields = form(&sessions[0]);
    assert_eq!(fields["mode"], "subscription");
    assert_eq!(fields["customer"], "cus_fake_1");
    assert_eq!(fields["line_items[0][price]"], "price_pro");
    assert_eq!(fields["line_items[0][quantity]"], "1");
    assert_eq!(fields["client_reference_id"], "user_1");
    assert_eq!(fields["metadata[user_id]"], "user_1");
    assert_eq!(fields["subscription_data[metadata][user_id]"], "user_1");
    assert_eq!(
        fields["success_url"],
        format!("{APP_BASE_URL}/settings/billing?from=checkout&session_id={{CHECKOUT_SESSION_ID}}")
    );
    assert_eq!(
        fields["cancel_url"],
        format!("{APP_BASE_URL}/settings/billing")
    );
    assert!(header(&sessions[0], "idempotency-key").is_some());
    assert_eq!(
        app.user("user_1").unwrap().stripe_customer_id.as_deref(),
        Some("cus_fake_1")
    );
}

#[actix_rt::test]
async fn a_plan_not_offered_is_refused_before_any_stripe_call() {
    let app = app_offering_plans().await;
    let token = token_for("user_1", None);
    resolved_plans(&app, &token).await;

    for plan in ["price_other", "price_gone", "price_retired"] {
        let response = create_checkout(&app, &token, plan).await;

        assert_eq!(response.status(), 400, "{plan}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unknown_plan", "{plan}");
    }
    assert!(app
        .stripe_requests("POST", "/v1/customers")
        .await
        .is_empty());
    assert!(app
        .stripe_requests("POST", "/v1/checkout/sessions")
        .await
        .is_empty());
}

#[actix_rt::test]
async fn a_paid_user_gets_409_already_subscribed_and_no_session() {
    let app = app_offering_plans().await;
    let token = token_for("user_1", None);
    resolved_plans(&app, &token).await;
    app.given().user("user_1").with_customer("cus_1").store();
    let sub = current_subscription("sub_1", "cus_1", "active", now() + 86_400);
    app.deliver(&event("evt_1", "customer.subscription.created", now(), sub))
        .await;

    let response = create_checkout(&app, &token, "price_starter").await;

    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "already_subscribed");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("Manage Subscription"));
    assert!(app
        .stripe_requests("POST", "/v1/checkout/sessions")
        .await
        .is_empty());
}

#[actix_rt::test]
async fn two_concurrent_clicks_create_one_customer_and_one_session() {
    let app = app_offering_plans().await;
    let token = token_for("user_1", None);
    resolved_plans(&app, &token).await;

    let (a, b) = futures::join!(
        create_checkout(&app, &token, "price_starter"),
        create_checkout(&app, &token, "price_starter")
    );

    let a: Value = a.json().await.unwrap();
    let b: Value = b.json().await.unwrap();
    assert_eq!(
        a["data"]["checkoutUrl"], b["data"]["checkoutUrl"],
        "{a} {b}"
    );
    assert_eq!(app.stripe_requests("POST", "/v1/customers").await.len(), 1);
    let sessions = app.stripe_requests("POST", "/v1/checkout/sessions").await;
    assert_eq!(
        sessions.len(),
        1,
        "the second click gets the session the first recorded"
    );
}

#[actix_rt::test]
async fn after_a_stripe_500_the_next_click_uses_another_idempotency_key() {
    let app = app_with_plans("price_starter", |vars| {
        vars.insert("STRIPE_MAX_NETWORK_RETRIES".into(), "0".into());
    })
    .await;
    mount_working_stripe(&app.stripe).await;
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(stripe_error(500, "api_error", None, "boom"))
        .up_to_n_times(1)
        .mount(&app.stripe)
        .await;
    CheckoutSessions::default().mount(&app.stripe).await;
    let token = token_for("user_1", None);
    plans_offered(&app, &token, 1).await;

    let first = create_checkout(&app, &token, "price_starter").await;
    let second = create_checkout(&app, &token, "price_starter").await;

    assert_eq!(first.status(), 502);
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["error"], "stripe_error");
    assert_eq!(second.status(), 200);
    let sessions = app.stripe_requests("POST", "/v1/checkout/sessions").await;
    assert_eq!(sessions.len(), 2);
    assert_ne!(
        header(&sessions[0], "idempotency-key"),
        header(&sessions[1], "idempotency-key")
    );
}

#[actix_rt::test]
async fn stripe_failures_of_create_checkout_map_like_create_portals() {
    for (answer, status, code) in [
        (
            stripe_error(
                401,
                "invalid_request_error",
                None,
                "Invalid API Key provided",
            ),
            502,
            "stripe_auth_failed",
        ),
        (
            stripe_error(
                429,
                "invalid_request_error",
                Some("rate_limit"),
                "slow down",
            ),
            503,
            "stripe_rate_limited",
        ),
        (
            stripe_error(400, "invalid_request_error", None, "bad"),
            502,
            "stripe_error",
        ),
    ] {
        let app = app_with_plans("price_starter", |vars| {
            vars.insert("STRIPE_MAX_NETWORK_RETRIES".into(), "0".into());
        })
        .await;
        mount_working_stripe(&app.stripe).await;
        Mock::given(method("POST"))
            .and(path("/v1/checkout/sessions"))
            .respond_with(answer)
            .mount(&app.stripe)
            .await;
        let token = token_for("user_1", None);
        plans_offered(&app, &token, 1).await;

        let response = create_checkout(&app, &token, "price_starter").await;

        assert_eq!(response.status(), status, "{code}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], code);
    }
}

#[actix_rt::test]
async fn a_cookie_request_without_the_csrf_header_is_refused() {
    let app = app_offering_plans().await;
    let response = app
        .client
        .post(app.url("/billing/create-checkout"))
        .header(
            "cookie",
            format!("billing_session={}", token_for("user_1", None)),
        )
        .json(&json!({"plan": "price_starter"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 403);
    assert!(app
        .stripe_requests("POST", "/v1/checkout/sessions")
        .await
        .is_empty());
}

/// `GET /v1/checkout/sessions/{id}` answers the session: `status`, `customer`, and its
/// `subscription` (expanded, or null).
async fn stripe_has_session(
    app: &TestApp,
    id: &str,
    status: &str,
    customer: &str,
    subscription: Value,
) {
    Mock::given(method("GET"))
        .and(path(format!("/v1/checkout/sessions/{id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": id, "object": "checkout.session", "mode": "subscription",
            "status": status, "customer": customer, "subscription": subscription,
        })))
        .mount(&app.stripe)
        .await;
}

/// What create-checkout records for `user`: their open session.
fn record_checkout(app: &TestApp, user: &str, session: &str, price: &str) {
    use diesel::RunQueryDsl;
    diesel::sql_query(
        "UPDATE users SET checkout_session_id = $1, checkout_session_price = $2, \
         checkout_session_url = 'https://checkout.stripe.test/c/pay/' || $1 WHERE id = $3",
    )
    .bind::<diesel::sql_types::Text, _>(session)
    .bind::<diesel::sql_types::Text, _>(price)
    .bind::<diesel::sql_types::Text, _>(user)
    .execute(&mut app.db())
    .unwrap();
}

#[actix_rt::test]
async fn another_users_checkout_session_on_return_is_403_without_a_stripe_call() {
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();
    app.given().user("user_2").with_customer("cus_2").store();
    record_checkout(&app, "user_1", "cs_of_user_1", "price_starter");
    record_checkout(&app, "user_2", "cs_of_user_2", "price_starter");
    let sub = current_subscription("sub_2", "cus_2", "active", now() + 86_400);
    stripe_has_session(&app, "cs_of_user_2", "complete", "cus_2", sub).await;

    let response = refresh_with_session(&app, &token_for("user_1", None), "cs_of_user_2").await;

    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "checkout_session_not_yours");
    assert_eq!(app.count("subscriptions"), 0);
    assert!(!app.user("user_1").unwrap().paid);
    assert!(!app.user("user_2").unwrap().paid);
    assert!(
        app.stripe.received_requests().await.unwrap().is_empty(),
        "a session not recorded for the user costs no Stripe call"
    );
}

/// The recorded session, but Stripe says it belongs to another customer (the
/// user's customer was replaced meanwhile): refused, nothing stored.
#[actix_rt::test]
async fn a_recorded_session_of_another_customer_on_return_is_403_and_changes_nothing() {
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();
    record_checkout(&app, "user_1", "cs_1", "price_starter");
    let sub = current_subscription("sub_2", "cus_2", "active", now() + 86_400);
    stripe_has_session(&app, "cs_1", "complete", "cus_2", sub).await;

    let response = refresh_with_session(&app, &token_for("user_1", None), "cs_1").await;

    assert_eq!(response.status(), 403);
    assert_eq!(app.count("subscriptions"), 0);
    assert!(!app.user("user_1").unwrap().paid);
}

#[actix_rt::test]
async fn the_users_own_checkout_session_on_return_makes_them_paid_at_once() {
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();
    record_checkout(&app, "user_1", "cs_of_user_1", "price_starter");
    let sub = current_subscription("sub_1", "cus_1", "active", now() + 86_400);
    stripe_has_session(&app, "cs_of_user_1", "complete", "cus_1", sub).await;

    let response = refresh_with_session(&app, &token_for("user_1", None), "cs_of_user_1").await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["paid"], true, "{body}");
    assert!(app.user("user_1").unwrap().paid);
    let reads = app
        .stripe_requests("GET", "/v1/checkout/sessions/cs_of_user_1")
        .await;
    assert_eq!(
        reads[0].url.query(),
        Some("expand%5B%5D=subscription"),
        "the subscription comes expanded"
    );
}

#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn through_the_emulator_a_paid_checkout_is_applied_on_return_with_webhooks_held_back() {
    let app = spawn_emulated_app_with(|_| {}).await;
    account_settings(&app, &[("deliveries", "off")]).await;
    let token = token_for("user_1", Some("ada@example.com"));
    plans_offered(&app, &token, 2).await;
    let offered = plans(&app, &token).await;
    assert_eq!(offered["data"]["plans"][1]["id"], "price_emu_pro_monthly");
    assert_eq!(counter(&app, "checkout_sessions_created_total").await, 0.0);

    let response = create_checkout(&app, &token, "price_emu_pro_monthly").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let url = body["data"]["checkoutUrl"].as_str().unwrap();
    let session = url.rsplit('/').next().unwrap().to_string();
    assert!(session.starts_with("cs_test"), "{url}");
    let (status, paid) = emulator_post(
        &app,
        &format!("test_helpers/checkout/sessions/{session}/complete"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200, "{paid}");
    assert!(
        !app.user("user_1").unwrap().paid,
        "no webhook was delivered"
    );

    let response = refresh_with_session(&app, &token, &session).await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["paid"], true, "{body}");
    assert!(app.user("user_1").unwrap().paid);
    // A second click now: already subscribed.
    let again = create_checkout(&app, &token, "price_emu_pro_monthly").await;
    assert_eq!(again.status(), 409);
    assert_eq!(counter(&app, "checkout_sessions_created_total").await, 1.0);
    assert_eq!(
        counter(&app, "checkouts_applied_on_return_total").await,
        1.0
    );
}

/// `billing_portal_<name>` as `/metrics` answers it now.
#[cfg(feature = "emulator")]
async fn counter(app: &TestApp, name: &str) -> f64 {
    metric_at(&app.client, &app.address, name).await
}

#[actix_rt::test]
async fn a_price_archived_by_webhook_is_no_longer_offered() {
    let app = app_offering_plans().await;
    let token = token_for("user_1", None);
    resolved_plans(&app, &token).await;
    let mut archived = price_object("price_starter", "prod_price_starter", 900);
    archived["active"] = json!(false);

    let response = app
        .deliver(&event("evt_archived", "price.updated", now(), archived))
        .await;

    assert_eq!(response.status(), 200);
    let body = plans(&app, &token).await;
    let ids: Vec<&str> = body["data"]["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["pro_monthly"]);
    let refused = create_checkout(&app, &token, "price_starter").await;
    assert_eq!(refused.status(), 400);
    assert!(app
        .stripe_requests("POST", "/v1/checkout/sessions")
        .await
        .is_empty());
}

#[actix_rt::test]
async fn a_checkout_session_id_that_is_not_one_is_400_without_a_stripe_call() {
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();

    for id in ["sub_1", "cs_../../customers/cus_2", ""] {
        let response = refresh_with_session(&app, &token_for("user_1", None), id).await;

        assert_eq!(response.status(), 400, "{id:?}");
    }
    assert!(app
        .stripe
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty());
}

#[actix_rt::test]
async fn an_unpaid_session_on_return_changes_nothing_and_answers_the_status() {
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();
    record_checkout(&app, "user_1", "cs_open", "price_starter");
    stripe_has_session(&app, "cs_open", "open", "cus_1", Value::Null).await;

    let response = refresh_with_session(&app, &token_for("user_1", None), "cs_open").await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["paid"], false, "{body}");
    assert_eq!(app.count("subscriptions"), 0);
}

/// The id of the session a create-checkout answer's URL opens.
#[cfg(feature = "emulator")]
async fn session_of(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let url = body["data"]["checkoutUrl"].as_str().unwrap().to_string();
    url.rsplit('/').next().unwrap().to_string()
}

/// Two tabs, two plans: two open sessions could become two subscriptions.
/// The second click expires the first session at Stripe before it opens its
/// own, so only one can be paid.
#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn a_click_for_another_plan_expires_the_open_session_so_only_one_can_be_paid() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let token = token_for("user_1", Some("ada@example.com"));
    plans_offered(&app, &token, 2).await;

    let first = session_of(create_checkout(&app, &token, "price_emu_starter_monthly").await).await;
    let second = session_of(create_checkout(&app, &token, "price_emu_pro_monthly").await).await;

    assert_ne!(first, second);
    let first_now = emulator_get(&app, &format!("checkout/sessions/{first}")).await;
    assert_eq!(first_now["status"], "expired", "{first_now}");
    let (status, refused) = emulator_post(
        &app,
        &format!("test_helpers/checkout/sessions/{first}/complete"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 400, "the expired session cannot be paid: {refused}");
    let second_now = emulator_get(&app, &format!("checkout/sessions/{second}")).await;
    assert_eq!(second_now["status"], "open", "{second_now}");
}

/// A session paid in another tab whose webhooks have not arrived: the next
/// click finds it paid, applies it and answers 409, rather than sell a
/// second subscription.
#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn a_session_paid_meanwhile_makes_the_next_click_409_and_the_user_paid() {
    let app = spawn_emulated_app_with(|_| {}).await;
    account_settings(&app, &[("deliveries", "off")]).await;
    let token = token_for("user_1", Some("ada@example.com"));
    plans_offered(&app, &token, 2).await;
    let first = session_of(create_checkout(&app, &token, "price_emu_starter_monthly").await).await;
    let (status, _) = emulator_post(
        &app,
        &format!("test_helpers/checkout/sessions/{first}/complete"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200);

    for plan in ["price_emu_pro_monthly", "price_emu_starter_monthly"] {
        let again = create_checkout(&app, &token, plan).await;
        assert_eq!(again.status(), 409, "{plan}");
    }

    assert!(
        app.user("user_1").unwrap().paid,
        "applied without a webhook"
    );
    let customer = app.user("user_1").unwrap().stripe_customer_id.unwrap();
    assert_eq!(emulated_subscriptions(&app, &customer).await.len(), 1);
}

/// A lookup key that starts like a price id (`price_pro`): Stripe has no
/// price of that id, so it is looked up as a key, and offered.
#[actix_rt::test]
async fn a_lookup_key_that_looks_like_a_price_id_is_still_offered() {
    // Known to the fake Stripe before the service starts and reads it.
    let stripe = MockServer::start().await;
    stripe_lacks_price(&stripe, "price_pro").await;
    stripe_has_lookup_key(&stripe, "price_pro", "price_1Pro", "Pro", 2900).await;
    let app = spawn_app_with(|vars| {
        vars.insert("BILLING_PLANS".into(), "price_pro".into());
        vars.insert("STRIPE_API_BASE".into(), stripe.uri());
    })
    .await;
    let token = token_for("user_1", None);

    let offered = plans_offered(&app, &token, 1).await;

    assert_eq!(offered["data"]["plans"][0]["id"], "price_pro");
    assert_eq!(offered["data"]["plans"][0]["name"], "Pro");
}

/// Paid through the page, then cancelled in the portal: the recorded session
/// is complete, but its subscription has ended, so the next Subscribe opens a
/// new session rather than answer `already_subscribed`.
#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn a_user_who_paid_then_cancelled_can_subscribe_again() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let token = token_for("user_1", Some("ada@example.com"));
    plans_offered(&app, &token, 2).await;
    let first = session_of(create_checkout(&app, &token, "price_emu_pro_monthly").await).await;
    let (status, paid) = emulator_post(
        &app,
        &format!("test_helpers/checkout/sessions/{first}/complete"),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 200, "{paid}");
    let subscription = paid["subscription"].as_str().unwrap().to_string();
    let cancelled = app
        .client
        .delete(app.url(&format!("/stripe-emulator/v1/subscriptions/{subscription}")))
        .bearer_auth("sk_test_emulator")
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    eventually("the cancellation is delivered", || {
        app.count("subscriptions WHERE status = 'canceled'") == 1
    })
    .await;
    assert!(!app.user("user_1").unwrap().paid);

    let again = create_checkout(&app, &token, "price_emu_pro_monthly").await;

    assert_eq!(again.status(), 200);
    let second = session_of(again).await;
    assert_ne!(first, second);
}
