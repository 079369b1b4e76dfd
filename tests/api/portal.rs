use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::support::*;

/// What the key must cover, computed independently of the service: the
/// replaced customer (length-prefixed) and the exact form body Stripe got,
/// then the user's first creation attempt.
fn expected_idempotency_key(request: &wiremock::Request, replacing: Option<&str>) -> String {
    expected_key_of_attempt(request, replacing, 0)
}

/// [`expected_idempotency_key`] of the user's `attempt`-th creation attempt
/// (one more after each failure Stripe saved).
fn expected_key_of_attempt(
    request: &wiremock::Request,
    replacing: Option<&str>,
    attempt: u32,
) -> String {
    let mut h = Sha256::new();
    match replacing {
        Some(old) => {
            h.update([1]);
            h.update((old.len() as u64).to_be_bytes());
            h.update(old.as_bytes());
        }
        None => h.update([0]),
    }
    h.update(&request.body);
    format!("customer-{}-{attempt}", hex::encode(h.finalize()))
}

async fn portal_url_of(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["data"]["portalUrl"].as_str().unwrap().to_string()
}

#[actix_rt::test]
async fn a_first_call_creates_the_customer_and_answers_the_portal_url() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;

    let response = app
        .create_portal(&token_for("user_1", Some("ada@example.com")))
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        format!(
            r#"{{"message":"portal created","data":{{"portalUrl":"{PORTAL_URL_BASE}cus_fake_1"}}}}"#
        )
    );
    let created = app.stripe_requests("POST", "/v1/customers").await;
    assert_eq!(created.len(), 1);
    let fields = form(&created[0]);
    assert_eq!(fields["email"], "ada@example.com");
    assert_eq!(fields["metadata[user_id]"], "user_1");
    assert_eq!(
        header(&created[0], "authorization"),
        Some(format!("Bearer {STRIPE_KEY}").as_str())
    );
    assert_eq!(
        header(&created[0], "idempotency-key"),
        Some(expected_idempotency_key(&created[0], None).as_str())
    );
    let sessions = app
        .stripe_requests("POST", "/v1/billing_portal/sessions")
        .await;
    assert_eq!(sessions.len(), 1);
    let fields = form(&sessions[0]);
    assert_eq!(fields["customer"], "cus_fake_1");
    assert_eq!(
        fields["return_url"],
        format!("{APP_BASE_URL}/settings/billing?from=portal")
    );
    assert!(!fields.contains_key("configuration"));
    assert!(!fields.contains_key("locale"));
    let user = app.user("user_1").unwrap();
    assert_eq!(user.stripe_customer_id.as_deref(), Some("cus_fake_1"));
    assert_eq!(user.email.as_deref(), Some("ada@example.com"));
}

#[actix_rt::test]
async fn a_second_call_reuses_the_stored_customer() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    let token = token_for("user_1", None);

    let first = portal_url_of(app.create_portal(&token).await).await;
    let second = portal_url_of(app.create_portal(&token).await).await;

    assert_eq!(first, second);
    assert_eq!(app.stripe_requests("POST", "/v1/customers").await.len(), 1);
    assert_eq!(
        app.stripe_requests("POST", "/v1/billing_portal/sessions")
            .await
            .len(),
        2
    );
}

#[actix_rt::test]
async fn twenty_concurrent_first_calls_create_exactly_one_customer() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    let token = token_for("user_1", Some("ada@example.com"));

    let responses = futures::future::join_all((0..20).map(|_| app.create_portal(&token))).await;

    let mut urls = Vec::new();
    for response in responses {
        urls.push(portal_url_of(response).await);
    }
    assert!(
        urls.iter()
            .all(|u| u == &format!("{PORTAL_URL_BASE}cus_fake_1")),
        "{urls:?}"
    );
    assert_eq!(app.stripe_requests("POST", "/v1/customers").await.len(), 1);
    assert_eq!(
        app.user("user_1").unwrap().stripe_customer_id.as_deref(),
        Some("cus_fake_1")
    );
}

/// Other users' requests, all at once, while one user's Stripe calls hang:
/// each must be answered 200 (the main pool has four connections and a
/// 2 s connect timeout, so a hanging user who held them would make these 503).
async fn other_users_are_served(app: &TestApp, round: &str) {
    let statuses = (0..8).map(|n| {
        app.client
            .get(app.url("/billing/status"))
            .bearer_auth(token_for(&format!("other_{round}_{n}"), None))
            .send()
    });
    for response in futures::future::join_all(statuses).await {
        assert_eq!(response.unwrap().status(), 200, "round {round}");
    }
}

/// Stripe slow for one user (12 clicks waiting on their customer, then on
/// their portal session) is never felt by other users: connections are not
/// held while Stripe is waited for, and the clicks still make one customer.
#[actix_rt::test]
async fn twelve_clicks_waiting_on_a_slow_stripe_leave_other_users_served_and_make_one_customer() {
    let stripe = GatedStripe::start().await;
    let creating = stripe.gate(|path, form| {
        path == "/v1/customers"
            && form.get("metadata[user_id]").map(String::as_str) == Some("user_1")
    });
    // user_2 gets its customer first (cus_fake_1), while user_1's is held.
    let opening = stripe.gate(|path, form| {
        path == "/v1/billing_portal/sessions"
            && form.get("customer").map(String::as_str) == Some("cus_fake_2")
    });
    let app = spawn_app_with(|vars| {
        stripe.route(vars);
        vars.insert("DATABASE_POOL_SIZE".into(), "4".into());
        vars.insert("DATABASE_CONNECT_TIMEOUT_SECS".into(), "2".into());
        vars.insert("STRIPE_TIMEOUT_SECS".into(), "10".into());
    })
    .await;
    mount_working_stripe(&app.stripe).await;
    let token = token_for("user_1", Some("ada@example.com"));
    let clicks: Vec<_> = (0..12)
        .map(|_| {
            let click = app.create_portal_request(&token).send();
            tokio::spawn(async move { portal_url_of(click.await.unwrap()).await })
        })
        .collect();

    creating.arrived(1).await;
    other_users_are_served(&app, "creating").await;
    let other = app.create_portal(&token_for("user_2", None)).await;
    assert_eq!(
        portal_url_of(other).await,
        format!("{PORTAL_URL_BASE}cus_fake_1")
    );
    creating.open();

    opening.arrived(12).await;
    other_users_are_served(&app, "opening").await;
    opening.open();

    for click in clicks {
        assert_eq!(click.await.unwrap(), format!("{PORTAL_URL_BASE}cus_fake_2"));
    }
    let created_for_user_1 = app
        .stripe_requests("POST", "/v1/customers")
        .await
        .iter()
        .filter(|r| form(r)["metadata[user_id]"] == "user_1")
        .count();
    assert_eq!(created_for_user_1, 1);
    assert_eq!(
        app.user("user_1").unwrap().stripe_customer_id.as_deref(),
        Some("cus_fake_2")
    );
}

/// A subscription that names the user (`metadata.user_id`) links its
/// customer while their first click waits on Stripe for a new one: the
/// webhook does not wait for Stripe, and the linked customer is kept.
#[actix_rt::test]
async fn a_customer_linked_by_a_webhook_while_stripe_creates_one_is_kept_and_the_webhook_never_waits(
) {
    let stripe = GatedStripe::start().await;
    let creating = stripe.gate(|path, _| path == "/v1/customers");
    let app = spawn_app_with(|vars| {
        stripe.route(vars);
        vars.insert("STRIPE_TIMEOUT_SECS".into(), "10".into());
    })
    .await;
    mount_working_stripe(&app.stripe).await;
    let click = tokio::spawn(app.create_portal_request(&token_for("user_1", None)).send());
    creating.arrived(1).await;

    let mut sub = current_subscription("sub_1", "cus_linked", "active", now() + 86_400);
    sub["metadata"] = serde_json::json!({"user_id": "user_1"});
    let delivered = signed_delivery(
        &app.client,
        &app.address,
        &event("evt_1", "customer.subscription.created", now() - 10, sub),
    )
    .timeout(Duration::from_secs(30))
    .send()
    .await
    .unwrap();
    assert_eq!(delivered.status(), 200);
    creating.open();

    let url = portal_url_of(click.await.unwrap().unwrap()).await;
    assert_eq!(url, format!("{PORTAL_URL_BASE}cus_linked"));
    let user = app.user("user_1").unwrap();
    assert_eq!(user.stripe_customer_id.as_deref(), Some("cus_linked"));
    assert!(user.paid);
}

#[actix_rt::test]
async fn a_user_never_receives_a_session_for_another_users_customer() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    app.given().user("user_b").with_customer("cus_of_b").store();

    let url_a = portal_url_of(app.create_portal(&token_for("user_a", None)).await).await;
    let url_b = portal_url_of(app.create_portal(&token_for("user_b", None)).await).await;

    assert_eq!(url_a, format!("{PORTAL_URL_BASE}cus_fake_1"));
    assert_eq!(url_b, format!("{PORTAL_URL_BASE}cus_of_b"));
}

#[actix_rt::test]
async fn a_request_body_naming_a_customer_is_refused_and_nothing_is_sent_to_stripe() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    app.given().user("user_b").with_customer("cus_of_b").store();

    let response = app
        .client
        .post(app.url("/billing/create-portal"))
        .bearer_auth(token_for("user_a", None))
        .json(&serde_json::json!({"customer": "cus_of_b"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_body");
    assert!(app.stripe.received_requests().await.unwrap().is_empty());
}

#[actix_rt::test]
async fn the_locale_and_portal_configuration_are_passed_to_stripe() {
    let app = spawn_app_with(|vars| {
        vars.insert("STRIPE_PORTAL_CONFIGURATION".into(), "bpc_custom".into());
    })
    .await;
    mount_working_stripe(&app.stripe).await;

    let response = app
        .client
        .post(app.url("/billing/create-portal"))
        .bearer_auth(token_for("user_1", None))
        .json(&serde_json::json!({"locale": "fr"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let sessions = app
        .stripe_requests("POST", "/v1/billing_portal/sessions")
        .await;
    let fields = form(&sessions[0]);
    assert_eq!(fields["locale"], "fr");
    assert_eq!(fields["configuration"], "bpc_custom");
}

#[actix_rt::test]
async fn an_unknown_locale_is_refused_with_a_clear_message() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;

    let response = app
        .client
        .post(app.url("/billing/create-portal"))
        .bearer_auth(token_for("user_1", None))
        .json(&serde_json::json!({"locale": "klingon"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_locale");
    assert!(body["message"].as_str().unwrap().contains("klingon"));
    assert!(app.stripe.received_requests().await.unwrap().is_empty());
}

/// Stripe saves a 500 under its `Idempotency-Key` and replays it for 24 hours
/// (docs.stripe.com/api/idempotent_requests), saying `Stripe-Should-Retry:
/// false` (stripe-node's retry comment): the next click must send a new key,
/// or one Stripe error would lock the user out for a day.
#[actix_rt::test]
async fn after_a_stripe_500_the_next_click_makes_a_new_attempt_with_a_new_key() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(
            stripe_error(500, "api_error", None, "An unknown error occurred")
                .append_header("Stripe-Should-Retry", "false"),
        )
        .up_to_n_times(1)
        .mount(&app.stripe)
        .await;
    mount_working_stripe(&app.stripe).await;
    let token = token_for("user_1", None);

    let failed = app.create_portal(&token).await;

    assert_eq!(failed.status(), 502);
    let body: Value = failed.json().await.unwrap();
    assert_eq!(body["error"], "stripe_error");
    assert!(!body["message"].as_str().unwrap().contains("unknown error"));
    assert_eq!(app.user("user_1").unwrap().stripe_customer_id, None);
    assert_eq!(app.stripe_requests("POST", "/v1/customers").await.len(), 1);

    let retried = portal_url_of(app.create_portal(&token).await).await;
    assert_eq!(retried, format!("{PORTAL_URL_BASE}cus_fake_1"));
    let created = app.stripe_requests("POST", "/v1/customers").await;
    assert_eq!(created.len(), 2);
    assert_eq!(
        header(&created[0], "idempotency-key"),
        Some(expected_key_of_attempt(&created[0], None, 0).as_str())
    );
    assert_eq!(
        header(&created[1], "idempotency-key"),
        Some(expected_key_of_attempt(&created[1], None, 1).as_str())
    );
}

/// Without `Stripe-Should-Retry`, a 500 is retried (stripe-node, stripe-go),
/// with the same key: had Stripe created the customer, it hands that one back.
#[actix_rt::test]
async fn a_stripe_500_without_advice_is_retried_within_the_click_with_the_same_key() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(stripe_error(
            500,
            "api_error",
            None,
            "An unknown error occurred",
        ))
        .up_to_n_times(1)
        .mount(&app.stripe)
        .await;
    mount_working_stripe(&app.stripe).await;

    let url = portal_url_of(app.create_portal(&token_for("user_1", None)).await).await;

    assert_eq!(url, format!("{PORTAL_URL_BASE}cus_fake_1"));
    let created = app.stripe_requests("POST", "/v1/customers").await;
    assert_eq!(created.len(), 2);
    assert_eq!(
        header(&created[0], "idempotency-key"),
        header(&created[1], "idempotency-key")
    );
}

/// An answer that never came says nothing about whether Stripe created the
/// customer: the next click sends the same key, so Stripe hands back the
/// customer it may have created instead of a second one.
#[actix_rt::test]
async fn a_click_after_an_answer_that_never_came_sends_the_same_key() {
    let app = spawn_app_with(|vars| {
        vars.insert("STRIPE_TIMEOUT_SECS".into(), "1".into());
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(customer_json("cus_slow", None))
                .set_delay(Duration::from_secs(3)),
        )
        .up_to_n_times(1)
        .mount(&app.stripe)
        .await;
    mount_working_stripe(&app.stripe).await;
    let token = token_for("user_1", None);

    let failed = app.create_portal(&token).await;
    assert_eq!(failed.status(), 502);
    portal_url_of(app.create_portal(&token).await).await;

    let created = app.stripe_requests("POST", "/v1/customers").await;
    assert_eq!(created.len(), 2);
    assert_eq!(
        header(&created[0], "idempotency-key"),
        header(&created[1], "idempotency-key")
    );
}

#[actix_rt::test]
async fn a_stripe_that_does_not_answer_in_time_gives_502_within_the_client_timeout() {
    let app = spawn_app_with(|vars| {
        vars.insert("STRIPE_TIMEOUT_SECS".into(), "1".into());
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(customer_json("cus_slow", None))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&app.stripe)
        .await;

    let started = Instant::now();
    let response = app.create_portal(&token_for("user_1", None)).await;

    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "stripe_timeout");
    assert_eq!(app.user("user_1").unwrap().stripe_customer_id, None);
}

#[actix_rt::test]
async fn an_unreachable_stripe_gives_502_with_its_own_code() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app_with(|vars| {
        vars.insert("STRIPE_API_BASE".into(), format!("http://127.0.0.1:{port}"));
    })
    .await;

    let response = app.create_portal(&token_for("user_1", None)).await;

    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "stripe_unreachable");
}

/// Stripe answers `idempotency_error` for 24 h to a key reused with other
/// parameters (docs.stripe.com/api/idempotent_requests).
#[actix_rt::test]
async fn a_retry_after_the_email_changed_sends_another_idempotency_key() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(
            stripe_error(500, "api_error", None, "An unknown error occurred")
                .append_header("Stripe-Should-Retry", "false"),
        )
        .up_to_n_times(1)
        .mount(&app.stripe)
        .await;
    mount_working_stripe(&app.stripe).await;

    let failed = app
        .create_portal(&token_for("user_1", Some("old@example.com")))
        .await;
    let retried = app
        .create_portal(&token_for("user_1", Some("new@example.com")))
        .await;

    assert_eq!(failed.status(), 502);
    assert_eq!(retried.status(), 200);
    let created = app.stripe_requests("POST", "/v1/customers").await;
    assert_eq!(form(&created[1])["email"], "new@example.com");
    assert_ne!(
        header(&created[0], "idempotency-key"),
        header(&created[1], "idempotency-key")
    );
}

#[actix_rt::test]
async fn a_customer_deleted_in_stripe_is_replaced_once_and_stored() {
    let app = spawn_app().await;
    app.given()
        .user("user_1")
        .with_customer("cus_deleted")
        .store();
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .and(wiremock::matchers::body_string_contains(
            "customer=cus_deleted",
        ))
        .respond_with(stripe_error(
            400,
            "invalid_request_error",
            Some("resource_missing"),
            "No such customer: 'cus_deleted'",
        ))
        .mount(&app.stripe)
        .await;
    mount_working_stripe(&app.stripe).await;

    let url = portal_url_of(app.create_portal(&token_for("user_1", None)).await).await;

    assert_eq!(url, format!("{PORTAL_URL_BASE}cus_fake_1"));
    let created = app.stripe_requests("POST", "/v1/customers").await;
    assert_eq!(created.len(), 1);
    assert_eq!(
        header(&created[0], "idempotency-key"),
        Some(expected_idempotency_key(&created[0], Some("cus_deleted")).as_str())
    );
    assert_eq!(
        app.user("user_1").unwrap().stripe_customer_id.as_deref(),
        Some("cus_fake_1")
    );
}

#[actix_rt::test]
async fn an_unconfigured_portal_says_which_dashboard_setting_to_save() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .respond_with(stripe_error(
            400,
            "invalid_request_error",
            None,
            "No configuration provided and your test mode default configuration has not been \
             created. Provide a configuration or create your default by saving your customer \
             portal settings in test mode at https://dashboard.stripe.com/test/settings/billing/portal.",
        ))
        .mount(&app.stripe)
        .await;
    mount_working_stripe(&app.stripe).await;

    let response = app.create_portal(&token_for("user_1", None)).await;

    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "portal_not_configured");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("Settings > Billing > Customer portal"));
    // The customer was created and kept, ready for when the portal is saved.
    assert_eq!(
        app.user("user_1").unwrap().stripe_customer_id.as_deref(),
        Some("cus_fake_1")
    );
}

#[actix_rt::test]
async fn a_body_that_is_not_json_is_refused() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    let token = token_for("user_1", None);

    let not_json = app
        .client
        .post(app.url("/billing/create-portal"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{locale:")
        .send()
        .await
        .unwrap();
    let form_body = app
        .client
        .post(app.url("/billing/create-portal"))
        .bearer_auth(&token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("locale=fr")
        .send()
        .await
        .unwrap();

    assert_eq!(not_json.status(), 400);
    assert_eq!(form_body.status(), 415);
    assert!(app.stripe.received_requests().await.unwrap().is_empty());
    assert!(app.user("user_1").is_none());
}

#[actix_rt::test]
async fn a_json_null_body_means_no_options() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;

    let response = app
        .client
        .post(app.url("/billing/create-portal"))
        .bearer_auth(token_for("user_1", None))
        .json(&Value::Null)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let fields = form(
        &app.stripe_requests("POST", "/v1/billing_portal/sessions")
            .await[0],
    );
    assert!(!fields.contains_key("locale"));
}

#[actix_rt::test]
async fn get_is_not_allowed_on_create_portal() {
    let app = spawn_app().await;

    let response = app
        .client
        .get(app.url("/billing/create-portal"))
        .bearer_auth(token_for("user_1", None))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
}

#[actix_rt::test]
async fn a_key_of_the_wrong_mode_is_a_configuration_error_and_replaces_no_customer() {
    let app = spawn_app().await;
    app.given()
        .user("user_1")
        .with_customer("cus_live_1")
        .store();
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .respond_with(stripe_error(
            404,
            "invalid_request_error",
            Some("resource_missing"),
            "No such customer: 'cus_live_1'; a similar object exists in live mode, but a test \
             mode key was used to make this request.",
        ))
        .mount(&app.stripe)
        .await;
    mount_working_stripe(&app.stripe).await;

    let response = app.create_portal(&token_for("user_1", None)).await;

    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "stripe_key_mode_mismatch");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("STRIPE_SECRET_KEY"), "{message}");
    assert!(message.contains("test-mode key"), "{message}");
    assert!(message.contains("live mode"), "{message}");
    assert!(app
        .stripe_requests("POST", "/v1/customers")
        .await
        .is_empty());
    assert_eq!(
        app.user("user_1").unwrap().stripe_customer_id.as_deref(),
        Some("cus_live_1")
    );
}

/// `PORT=8095 cargo run` with no `APP_BASE_URL`: Stripe must send the user back to
/// the port the service listens on (here the random one a test binds).
#[actix_rt::test]
async fn without_app_base_url_stripe_sends_the_user_back_to_the_port_the_service_listens_on() {
    let app = spawn_app_with(|vars| {
        vars.remove("APP_BASE_URL");
    })
    .await;
    mount_working_stripe(&app.stripe).await;

    portal_url_of(app.create_portal(&token_for("user_1", None)).await).await;

    let sessions = app
        .stripe_requests("POST", "/v1/billing_portal/sessions")
        .await;
    let port = app.address.rsplit(':').next().unwrap();
    let back = url::Url::parse(&form(&sessions[0])["return_url"]).unwrap();
    assert_eq!(
        back.origin().ascii_serialization(),
        format!("http://localhost:{port}")
    );
    assert_eq!(back.path(), "/settings/billing");
}
