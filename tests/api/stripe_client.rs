//! The Stripe transport as a user and an operator notice it: connections
//! kept alive over TLS, `HTTPS_PROXY`, Stripe's retry rules
//! (docs.stripe.com/error-low-level; stripe-node's `_shouldRetry`), and
//! errors that say what to change.

use std::time::{Duration, Instant};

use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::support::*;

/// A service whose Stripe is the fake behind a TLS stand-in, and the stand-in.
async fn app_over_tls(
    customize: impl FnOnce(&mut std::collections::HashMap<String, String>),
) -> (TestApp, TlsStripe) {
    let tls = TlsStripe::start().await;
    let app = spawn_app_with(|vars| {
        tls.front(vars);
        customize(vars);
    })
    .await;
    (app, tls)
}

const SESSIONS: &str = "/v1/billing_portal/sessions";

/// Stripe answers every portal session request with `answer`.
async fn portal_sessions_answer(app: &TestApp, answer: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(SESSIONS))
        .respond_with(answer)
        .mount(&app.stripe)
        .await;
}

/// Stripe answers the first portal session request with `answer`, the
/// others as [`mount_working_stripe`] does.
async fn first_portal_session_answers(app: &TestApp, answer: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(SESSIONS))
        .respond_with(answer)
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.stripe)
        .await;
    mount_working_stripe(&app.stripe).await;
}

/// The portal session requests Stripe received.
async fn portal_session_requests(app: &TestApp) -> Vec<wiremock::Request> {
    app.stripe_requests("POST", SESSIONS).await
}

/// A 400 with Stripe's error object `error`.
fn invalid_request(error: Value) -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(serde_json::json!({ "error": error }))
}

/// `user_1` with a stored customer: every portal open is one Stripe request.
fn known_customer(app: &TestApp) -> String {
    app.given()
        .user("user_1")
        .with_customer("cus_known")
        .store();
    token_for("user_1", None)
}

#[actix_rt::test]
async fn a_warm_service_opens_the_portal_over_one_reused_tls_connection() {
    let (app, tls) = app_over_tls(|_| {}).await;
    mount_working_stripe(&app.stripe).await;
    let token = known_customer(&app);

    for _ in 0..50 {
        assert_eq!(app.create_portal(&token).await.status(), 200);
    }

    let sessions = portal_session_requests(&app).await;
    assert_eq!(sessions.len(), 50);
    // One, but the pool may race a new connection against a connection that
    // is a moment from being handed back: at most two, the bound
    // (async-stripe's client opened one per call: 50).
    assert!(tls.connections() <= 2, "{} connections", tls.connections());
}

#[actix_rt::test]
async fn stripe_calls_go_through_the_https_proxy_when_one_is_set() {
    let proxy = ConnectProxy::start().await;
    let (app, tls) = app_over_tls(|vars| {
        vars.insert("HTTPS_PROXY".into(), proxy.url.clone());
    })
    .await;
    mount_working_stripe(&app.stripe).await;
    let token = known_customer(&app);

    for _ in 0..3 {
        assert_eq!(app.create_portal(&token).await.status(), 200);
    }

    assert_eq!(proxy.tunnels(), vec![format!("localhost:{}", tls.port)]);
    assert_eq!(tls.connections(), 1);
}

#[actix_rt::test]
async fn no_proxy_names_the_hosts_reached_without_it() {
    let proxy = ConnectProxy::start().await;
    let (app, _tls) = app_over_tls(|vars| {
        vars.insert("HTTPS_PROXY".into(), proxy.url.clone());
        vars.insert("NO_PROXY".into(), "localhost".into());
    })
    .await;
    mount_working_stripe(&app.stripe).await;
    let token = known_customer(&app);

    assert_eq!(app.create_portal(&token).await.status(), 200);

    assert!(proxy.tunnels().is_empty(), "{:?}", proxy.tunnels());
}

#[actix_rt::test]
async fn a_409_stripe_says_to_retry_is_retried_with_the_same_idempotency_key() {
    let app = spawn_app().await;
    first_portal_session_answers(
        &app,
        stripe_error(409, "invalid_request_error", None, "lock timeout")
            .append_header("Stripe-Should-Retry", "true"),
    )
    .await;
    let token = known_customer(&app);

    assert_eq!(app.create_portal(&token).await.status(), 200);

    let sessions = portal_session_requests(&app).await;
    assert_eq!(sessions.len(), 2);
    let key = header(&sessions[0], "idempotency-key").map(str::to_owned);
    assert!(key.is_some(), "every POST carries an Idempotency-Key");
    assert_eq!(header(&sessions[1], "idempotency-key"), key.as_deref());
}

#[actix_rt::test]
async fn a_500_stripe_says_not_to_retry_is_not_retried() {
    let app = spawn_app().await;
    portal_sessions_answer(
        &app,
        stripe_error(500, "api_error", None, "An unknown error occurred")
            .append_header("Stripe-Should-Retry", "false"),
    )
    .await;
    let token = known_customer(&app);

    let response = app.create_portal(&token).await;

    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "stripe_error");
    assert_eq!(portal_session_requests(&app).await.len(), 1);
}

#[actix_rt::test]
async fn a_400_is_never_retried() {
    let app = spawn_app().await;
    portal_sessions_answer(
        &app,
        stripe_error(
            400,
            "invalid_request_error",
            None,
            "Something is wrong with the request",
        ),
    )
    .await;
    let token = known_customer(&app);

    assert_eq!(app.create_portal(&token).await.status(), 502);
    assert_eq!(portal_session_requests(&app).await.len(), 1);
}

#[actix_rt::test]
async fn a_new_click_is_a_new_portal_session_with_its_own_key() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    let token = known_customer(&app);

    app.create_portal(&token).await;
    app.create_portal(&token).await;

    let sessions = portal_session_requests(&app).await;
    assert_ne!(
        header(&sessions[0], "idempotency-key"),
        header(&sessions[1], "idempotency-key")
    );
}

#[actix_rt::test]
async fn retry_after_is_waited_for_before_the_retry() {
    let app = spawn_app_with(|vars| {
        vars.insert("STRIPE_TIMEOUT_SECS".into(), "5".into());
    })
    .await;
    first_portal_session_answers(
        &app,
        stripe_error(
            429,
            "invalid_request_error",
            Some("rate_limit"),
            "Too many requests",
        )
        .append_header("Retry-After", "2"),
    )
    .await;
    let token = known_customer(&app);

    let started = Instant::now();
    let response = app.create_portal(&token).await;

    assert_eq!(response.status(), 200);
    // A lower bound only: a loaded machine can make it longer, never shorter.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[actix_rt::test]
async fn a_rate_limit_longer_than_the_click_can_wait_answers_503_with_stripes_retry_after() {
    let app = spawn_app().await;
    portal_sessions_answer(
        &app,
        stripe_error(
            429,
            "invalid_request_error",
            Some("rate_limit"),
            "Too many requests",
        )
        .append_header("Retry-After", "30"),
    )
    .await;
    let token = known_customer(&app);

    let response = app.create_portal(&token).await;

    assert_eq!(response.status(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("30")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "stripe_rate_limited");
    assert_eq!(
        portal_session_requests(&app).await.len(),
        1,
        "not retried: the wait Stripe asks for is longer than the click's budget"
    );
}

#[actix_rt::test]
async fn a_key_stripe_refuses_answers_stripe_auth_failed_naming_the_variable_and_not_the_key() {
    let app = spawn_app().await;
    portal_sessions_answer(
        &app,
        stripe_error(
            401,
            "invalid_request_error",
            None,
            &format!("Invalid API Key provided: {STRIPE_KEY}"),
        ),
    )
    .await;
    let token = known_customer(&app);

    let response = app.create_portal(&token).await;

    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "stripe_auth_failed");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("STRIPE_SECRET_KEY"), "{message}");
    assert!(!message.contains(STRIPE_KEY), "{message}");
    assert_eq!(
        portal_session_requests(&app).await.len(),
        1,
        "a refused key is not retried"
    );
}

#[actix_rt::test]
async fn an_unknown_portal_configuration_answers_portal_not_configured_naming_the_variable() {
    let app = spawn_app_with(|vars| {
        vars.insert("STRIPE_PORTAL_CONFIGURATION".into(), "bpc_gone".into());
    })
    .await;
    portal_sessions_answer(
        &app,
        invalid_request(serde_json::json!({
                        "type": "invalid_request_error",
                        "code": "resource_missing",
                        "param": "configuration",
                        "message": "No such configuration: 'bpc_gone'"
        })),
    )
    .await;
    let token = known_customer(&app);

    let response = app.create_portal(&token).await;

    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "portal_not_configured");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("STRIPE_PORTAL_CONFIGURATION"), "{message}");
}

#[actix_rt::test]
async fn a_flow_whose_feature_is_off_answers_portal_not_configured_naming_the_dashboard_setting() {
    let app = spawn_app().await;
    portal_sessions_answer(&app, invalid_request(serde_json::json!({
                "type": "invalid_request_error",
                "param": "flow_data[type]",
                "message": "This subscription cannot be updated because the subscription update feature in the portal configuration is disabled."
}))).await;
    let token = known_customer(&app);

    let response = app
        .client
        .post(app.url("/billing/create-portal"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"flow": "payment_method_update"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "portal_not_configured");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("Customer portal"), "{message}");
    assert!(message.contains("subscription update feature"), "{message}");
}

#[actix_rt::test]
async fn a_token_email_stripe_would_refuse_is_400_invalid_email_before_any_stripe_call() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;

    for email in ["ada", "ada@localhost", "ada lovelace@example.com"] {
        let response = app.create_portal(&token_for("user_1", Some(email))).await;

        assert_eq!(response.status(), 400, "{email}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_email", "{email}");
    }
    assert!(app.stripe.received_requests().await.unwrap().is_empty());
    assert_eq!(app.user("user_1"), None, "nothing stored");
}

/// Opening the portal of an existing customer sends Stripe no email: an
/// address Stripe would refuse does not lock its user out.
#[actix_rt::test]
async fn a_user_with_a_customer_opens_the_portal_whatever_email_the_token_carries() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    app.given()
        .user("user_1")
        .with_customer("cus_known")
        .store();

    let response = app
        .create_portal(&token_for("user_1", Some("ada@intranet")))
        .await;

    assert_eq!(response.status(), 200);
    assert!(app
        .stripe_requests("POST", "/v1/customers")
        .await
        .is_empty());
}

#[actix_rt::test]
async fn an_email_stripe_refuses_all_the_same_is_400_invalid_email() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(invalid_request(serde_json::json!({
                        "type": "invalid_request_error",
                        "code": "email_invalid",
                        "param": "email",
                        "message": "Invalid email address: ada@example.invalid"
        })))
        .mount(&app.stripe)
        .await;

    let response = app
        .create_portal(&token_for("user_1", Some("ada@example.invalid")))
        .await;

    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_email");
    assert_eq!(app.user("user_1").unwrap().stripe_customer_id, None);
}

#[actix_rt::test]
async fn every_request_carries_the_one_stripe_version_the_readme_names() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;

    assert_eq!(
        app.create_portal(&token_for("user_1", None)).await.status(),
        200
    );

    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for request in app.stripe.received_requests().await.unwrap() {
        let version = header(&request, "stripe-version").unwrap().to_owned();
        assert!(
            readme.contains(&format!("`Stripe-Version: {version}`")),
            "README does not name {version}"
        );
    }
}

/// Through the emulator, which keeps idempotency as Stripe does: a 500 saved
/// under the customer request's key is replayed for 24 hours, so the next
/// click must come with the next attempt's key, and the user gets exactly one
/// customer.
#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn one_stripe_500_does_not_lock_a_user_out_and_leaves_them_one_customer() {
    let app = spawn_emulated_app_with(|_| {}).await;
    account_settings(&app, &[("fail_next_post", "/v1/customers")]).await;
    let token = token_for("user_1", Some("ada@example.com"));

    let failed = app.create_portal(&token).await;
    let retried = app.create_portal(&token).await;

    assert_eq!(failed.status(), 502);
    assert_eq!(retried.status(), 200);
    let customers = emulated_customers(&app).await;
    assert_eq!(customers.len(), 1, "{customers:?}");
    assert_eq!(
        app.user("user_1").unwrap().stripe_customer_id.as_deref(),
        Some(customers[0].as_str())
    );
}

/// An answer that never came: the emulator created the customer, but the
/// service gave up waiting. The next click sends the same key and Stripe (the
/// emulator) replays that customer: still one.
#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn a_customer_created_while_the_service_stopped_waiting_is_the_one_it_keeps() {
    let app = spawn_emulated_app_with(|vars| {
        vars.insert("STRIPE_TIMEOUT_SECS".into(), "1".into());
    })
    .await;
    account_settings(&app, &[("latency_ms", "3000")]).await;
    let token = token_for("user_1", Some("ada@example.com"));

    let failed = app.create_portal(&token).await;
    account_settings(&app, &[("latency_ms", "0")]).await;
    let mut retried = app.create_portal(&token).await;
    // The first request may still be executing in the emulator: Stripe
    // answers 409 for its key then, and a later click gets its replay.
    for _ in 0..20 {
        if retried.status() == 200 {
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(250)).await;
        retried = app.create_portal(&token).await;
    }

    assert_eq!(failed.status(), 502);
    assert_eq!(retried.status(), 200);
    let customers = emulated_customers(&app).await;
    assert_eq!(customers.len(), 1, "{customers:?}");
}
