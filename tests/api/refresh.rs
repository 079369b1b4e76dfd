//! `POST /billing/refresh`: coming back from the portal, the page asks the
//! service to re-read the user's subscriptions from Stripe, so it shows what
//! the user just did even when the webhook is late or never comes. At most one
//! Stripe read per user per 10 seconds; every answer that is not a fresh
//! status still carries the stored one, for the page to fall back to.

use std::time::Duration;

use diesel::prelude::*;
use serde_json::{json, Value};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::support::*;

const DAY: i64 = 86_400;

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .post(app.url("/billing/refresh"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn list(subs: Vec<Value>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "object": "list", "data": subs, "has_more": false, "url": "/v1/subscriptions"
    }))
}

/// What Stripe answers when `customer`'s subscriptions are listed.
async fn stripe_lists(app: &TestApp, customer: &str, answer: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .and(query_param("customer", customer))
        .and(query_param("status", "all"))
        .respond_with(answer)
        .mount(&app.stripe)
        .await;
}

fn sub(status: &str) -> Value {
    current_subscription("sub_1", "cus_1", status, now() + 20 * DAY)
}

/// user_1 (ada@example.com) holds cus_1, whose subscription sub_1 the
/// webhook stored as `status` a while ago.
async fn stored_as(app: &TestApp, status: &str) {
    app.given().user("user_1").with_customer("cus_1").store();
    let delivered = app
        .deliver(&event(
            "evt_1",
            "customer.subscription.created",
            now() - 1000,
            sub(status),
        ))
        .await;
    assert_eq!(delivered.status(), 200);
    // The user has been seen before, so their email is already stored.
    app.status(&token()).await;
}

fn token() -> String {
    token_for("user_1", Some("ada@example.com"))
}

/// Everything a refresh may change, but for the time of the last read.
fn snapshot(app: &TestApp) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        row: String,
    }
    diesel::sql_query(
        "SELECT row_to_json(s)::text AS row FROM subscriptions s \
         UNION ALL \
         SELECT json_build_array(id, email, stripe_customer_id, paid, updated_at)::text FROM users \
         ORDER BY 1",
    )
    .load::<Row>(&mut app.db())
    .unwrap()
    .into_iter()
    .map(|r| r.row)
    .collect()
}

/// An error answer that falls back to the stored status: its code, and its
/// `data` equal to what `GET /billing/status` answers now.
async fn assert_falls_back(app: &TestApp, response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(body["data"], app.status(&token()).await["data"], "{body}");
}

#[actix_rt::test]
async fn a_refresh_stores_the_cancellation_stripe_holds_and_answers_what_status_answers() {
    let app = spawn_app().await;
    stored_as(&app, "active").await;
    stripe_lists(&app, "cus_1", list(vec![sub("canceled")])).await;

    let response = refresh(&app, &token()).await;

    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["paid"], false);
    assert_eq!(body["data"]["status"], "canceled");
    assert_eq!(body["data"]["reason"], "canceled");
    assert_eq!(body, app.status(&token()).await);
    assert!(!app.user("user_1").unwrap().paid);
    let listed = app.stripe_requests("GET", "/v1/subscriptions").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        header(&listed[0], "authorization"),
        Some(format!("Bearer {STRIPE_KEY}").as_str())
    );
}

#[actix_rt::test]
async fn a_refresh_makes_a_user_paid_whose_activation_webhook_never_came() {
    let app = spawn_app().await;
    stored_as(&app, "incomplete").await;
    assert!(!app.user("user_1").unwrap().paid);
    stripe_lists(&app, "cus_1", list(vec![sub("active")])).await;

    let response = refresh(&app, &token()).await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["paid"], true);
    assert_eq!(body["data"]["status"], "active");
    assert_eq!(body, app.status(&token()).await);
    assert!(app.user("user_1").unwrap().paid);
}

#[actix_rt::test]
async fn a_second_refresh_within_ten_seconds_answers_429_with_the_stored_status_and_reads_nothing()
{
    let app = spawn_app().await;
    stored_as(&app, "active").await;
    stripe_lists(&app, "cus_1", list(vec![sub("active")])).await;
    assert_eq!(refresh(&app, &token()).await.status(), 200);

    let again = refresh(&app, &token()).await;

    assert_eq!(again.status(), 429);
    let retry_after: u64 = again
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("whole seconds");
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    assert_falls_back(&app, again, 429, "refresh_too_soon").await;
    assert_eq!(
        app.stripe_requests("GET", "/v1/subscriptions").await.len(),
        1
    );
}

#[actix_rt::test]
async fn concurrent_refreshes_of_one_user_read_stripe_once() {
    let app = spawn_app().await;
    stored_as(&app, "active").await;
    stripe_lists(&app, "cus_1", list(vec![sub("active")])).await;

    let answers = futures::future::join_all((0..6).map(|_| {
        let request = app
            .client
            .post(app.url("/billing/refresh"))
            .bearer_auth(token());
        async move { request.send().await.unwrap().status().as_u16() }
    }))
    .await;

    let mut answers = answers;
    answers.sort();
    assert_eq!(answers, [200, 429, 429, 429, 429, 429]);
    assert_eq!(
        app.stripe_requests("GET", "/v1/subscriptions").await.len(),
        1
    );
}

#[actix_rt::test]
async fn a_user_without_a_customer_gets_the_stored_status_and_stripe_hears_nothing() {
    let app = spawn_app().await;
    app.given().user("user_1").store();

    let known = refresh(&app, &token()).await;
    let known_again = refresh(&app, &token()).await;
    let unknown = refresh(&app, &token_for("user_new", None)).await;

    assert_eq!(known.status(), 200);
    assert_eq!(
        known.json::<Value>().await.unwrap(),
        app.status(&token()).await
    );
    // No read, so nothing to limit.
    assert_eq!(known_again.status(), 200);
    assert_eq!(unknown.status(), 200);
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(unknown["data"]["userId"], "user_new");
    assert_eq!(unknown["data"]["reason"], "no_subscription");
    assert!(app.user("user_new").is_some());
    let received = app.stripe.received_requests().await.unwrap_or_default();
    assert!(received.is_empty(), "{received:?}");
}

#[actix_rt::test]
async fn a_failing_stripe_answers_502_with_the_stored_status_and_changes_nothing() {
    let app = spawn_app().await;
    stored_as(&app, "active").await;
    stripe_lists(
        &app,
        "cus_1",
        stripe_error(
            500,
            "api_error",
            None,
            "Something went wrong on Stripe's end.",
        ),
    )
    .await;
    let before = snapshot(&app);

    let response = refresh(&app, &token()).await;

    assert_falls_back(&app, response, 502, "stripe_error").await;
    assert_eq!(snapshot(&app), before);
    assert!(app.user("user_1").unwrap().paid);
}

#[actix_rt::test]
async fn a_stripe_that_does_not_answer_in_time_answers_502_with_the_stored_status() {
    let app = spawn_app_with(|vars| {
        vars.insert("STRIPE_TIMEOUT_SECS".into(), "1".into());
    })
    .await;
    stored_as(&app, "active").await;
    stripe_lists(
        &app,
        "cus_1",
        list(vec![sub("canceled")]).set_delay(Duration::from_secs(5)),
    )
    .await;
    let before = snapshot(&app);

    let response = refresh(&app, &token()).await;

    assert_falls_back(&app, response, 502, "stripe_timeout").await;
    assert_eq!(snapshot(&app), before);
}

#[actix_rt::test]
async fn an_unreachable_or_rate_limiting_stripe_answers_with_the_stored_status() {
    let unreachable = spawn_app_with(|vars| {
        let nobody = format!("http://127.0.0.1:{}", free_port());
        vars.insert("STRIPE_API_BASE".into(), nobody);
    })
    .await;
    stored_as(&unreachable, "active").await;
    let before = snapshot(&unreachable);

    let response = refresh(&unreachable, &token()).await;

    assert_falls_back(&unreachable, response, 502, "stripe_unreachable").await;
    assert_eq!(snapshot(&unreachable), before);

    let limited = spawn_app().await;
    stored_as(&limited, "active").await;
    stripe_lists(
        &limited,
        "cus_1",
        stripe_error(429, "invalid_request_error", None, "Too many requests"),
    )
    .await;

    let response = refresh(&limited, &token()).await;

    assert_falls_back(&limited, response, 503, "stripe_rate_limited").await;
}

#[actix_rt::test]
async fn a_refresh_that_cannot_take_the_customers_fetch_lock_answers_503_with_the_stored_status() {
    let app = spawn_app_with(|vars| {
        vars.insert("STRIPE_TIMEOUT_SECS".into(), "1".into());
    })
    .await;
    stored_as(&app, "active").await;
    stripe_lists(&app, "cus_1", list(vec![sub("canceled")])).await;
    // Another read of the same customer (a webhook's re-read, `sync`) that never finishes.
    let held =
        app.hold_lock("SELECT pg_advisory_xact_lock(hashtextextended('billing-fetch:cus_1', 0))");

    let response = refresh(&app, &token()).await;

    assert_falls_back(&app, response, 503, "database_unavailable").await;
    held.release();
    assert!(app
        .stripe_requests("GET", "/v1/subscriptions")
        .await
        .is_empty());
    assert!(app.user("user_1").unwrap().paid);
}

#[actix_rt::test]
async fn a_customer_stripe_no_longer_knows_is_forgotten_as_sync_forgets_it() {
    let app = spawn_app().await;
    stored_as(&app, "active").await;
    stripe_lists(
        &app,
        "cus_1",
        stripe_error(
            404,
            "invalid_request_error",
            Some("resource_missing"),
            "No such customer: 'cus_1'",
        ),
    )
    .await;

    let response = refresh(&app, &token()).await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["paid"], false);
    assert_eq!(body["data"]["status"], "canceled");
    let user = app.user("user_1").unwrap();
    assert_eq!(user.stripe_customer_id, None);
    assert!(!user.paid);
}

#[actix_rt::test]
async fn refresh_takes_the_same_sign_in_and_cross_site_rules_as_create_portal() {
    let app = spawn_app().await;
    stored_as(&app, "active").await;
    stripe_lists(&app, "cus_1", list(vec![sub("active")])).await;
    let cookie = format!("billing_session={}", token());
    let post = || app.client.post(app.url("/billing/refresh"));

    let anonymous = post().send().await.unwrap();
    let bad_token = post().bearer_auth("not.a.jwt").send().await.unwrap();
    let cross_site_form = post().header("cookie", &cookie).send().await.unwrap();
    let other_origin = post()
        .header("cookie", &cookie)
        .header("x-requested-with", "billing-portal")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    let marked_cross_site = post()
        .header("cookie", &cookie)
        .header("x-requested-with", "billing-portal")
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();

    for (response, status, code) in [
        (anonymous, 401, "unauthenticated"),
        (bad_token, 401, "invalid_token"),
        (cross_site_form, 403, "csrf_header_missing"),
        (other_origin, 403, "cross_origin_request"),
        (marked_cross_site, 403, "cross_origin_request"),
    ] {
        assert_eq!(response.status(), status, "{code}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], code);
        assert!(body.get("data").is_none(), "{body}");
    }
    assert!(app
        .stripe_requests("GET", "/v1/subscriptions")
        .await
        .is_empty());
    // The page's own request: the cookie, the header, its own origin.
    let page = post()
        .header("cookie", &cookie)
        .header("x-requested-with", "billing-portal")
        .header("origin", APP_BASE_URL)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(
        app.stripe_requests("GET", "/v1/subscriptions").await.len(),
        1
    );
}

#[actix_rt::test]
async fn refresh_is_in_the_openapi_document_with_its_fallback_body() {
    let app = spawn_app().await;

    let doc = app.get_json("/openapi.json").await;

    let operation = &doc["paths"]["/billing/refresh"]["post"];
    assert!(operation.is_object(), "{doc}");
    for status in ["200", "401", "403", "429", "502", "503"] {
        assert!(operation["responses"][status].is_object(), "{status}");
    }
    assert!(operation["responses"]["429"]["headers"]["Retry-After"].is_object());
    let schemas = &doc["components"]["schemas"];
    let fallback = &schemas["ErrorWithStatusBody"]["properties"];
    assert!(
        fallback["data"]
            .to_string()
            .contains(r##""$ref":"#/components/schemas/StatusData""##),
        "{fallback}"
    );
    assert!(schemas["StatusData"]["properties"]["paid"].is_object());
    let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
    assert!(
        codes
            .as_array()
            .unwrap()
            .contains(&json!("refresh_too_soon")),
        "{codes}"
    );
}

// --- With the emulator: webhooks switched off, Stripe's word only by reading it.

#[cfg(feature = "emulator")]
mod emulated {
    use super::*;

    /// A subscription for `user`, stored by webhook; then deliveries stop.
    async fn subscribed_then_deaf(app: &TestApp, user: &str) -> (String, String) {
        let (customer, sub) = emulated_paid_user(app, user).await;
        account_settings(app, &[("deliveries", "off")]).await;
        (customer, sub["id"].as_str().unwrap().to_owned())
    }

    #[actix_rt::test]
    async fn with_webhooks_off_a_cancellation_in_the_portal_shows_after_a_refresh() {
        let app = spawn_emulated_app_with(|_| {}).await;
        let token = token_for("user_1", Some("ada@example.com"));
        let (_, sub) = subscribed_then_deaf(&app, "user_1").await;
        let portal: Value = app.create_portal(&token).await.json().await.unwrap();
        let url = portal["data"]["portalUrl"].as_str().unwrap();

        let canceled = reqwest::Client::new()
            .post(format!("{url}/cancel"))
            .form(&[("subscription", sub.as_str()), ("when", "now")])
            .send()
            .await
            .unwrap();
        assert_eq!(canceled.status(), 200);
        // The emulator made the event, and sent it nowhere.
        let events = emulator_get(&app, "events?type=customer.subscription.deleted").await;
        assert_eq!(events["data"].as_array().unwrap().len(), 1);
        assert_eq!(
            app.count("stripe_events WHERE type = 'customer.subscription.deleted'"),
            0
        );
        assert_eq!(app.status(&token).await["data"]["paid"], true);

        let response = refresh(&app, &token).await;

        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["data"]["paid"], false, "{body}");
        assert_eq!(body["data"]["status"], "canceled");
        assert_eq!(body, app.status(&token).await);
        assert!(!app.user("user_1").unwrap().paid);
    }

    #[actix_rt::test]
    async fn a_refresh_reads_stripe_again_once_ten_seconds_have_passed_on_the_billing_clock() {
        let app = spawn_emulated_app_with(|_| {}).await;
        let token = token_for("user_1", Some("ada@example.com"));
        let (_, sub) = subscribed_then_deaf(&app, "user_1").await;
        assert_eq!(refresh(&app, &token).await.status(), 200);
        let path = format!("subscriptions/{sub}");
        let (status, _) =
            emulator_post(&app, &path, &[("cancel_at_period_end", "true")], None).await;
        assert_eq!(status, 200);

        let too_soon = refresh(&app, &token).await;
        assert_eq!(too_soon.status(), 429);
        let stale: Value = too_soon.json().await.unwrap();
        assert_eq!(stale["data"]["cancelAt"], Value::Null, "{stale}");
        // The emulator's test clock is the service's billing clock.
        let (advanced, body) = emulator_post(
            &app,
            "test_helpers/test_clocks/clock_any/advance",
            &[("frozen_time", &(now() + 11).to_string())],
            None,
        )
        .await;
        assert_eq!(advanced, 200, "{body}");

        let later = refresh(&app, &token).await;

        assert_eq!(later.status(), 200);
        let body: Value = later.json().await.unwrap();
        assert!(body["data"]["cancelAt"].is_string(), "{body}");
        assert_eq!(body["data"]["paid"], true);
    }
}
