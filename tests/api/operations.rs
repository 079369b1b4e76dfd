//! What operators rely on: `sync` repairs missed webhooks, `/metrics` moves,
//! request ids, and SIGTERM loses no webhook in flight.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, ResponseTemplate};

use crate::support::*;

const DAY: i64 = 86_400;

fn list(subs: Vec<Value>, has_more: bool) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "object": "list", "data": subs, "has_more": has_more, "url": "/v1/subscriptions"
    }))
}

fn sub(id: &str, customer: &str, status: &str) -> Value {
    current_subscription(id, customer, status, now() + 20 * DAY)
}

async fn mount_list(
    app: &TestApp,
    customer: &str,
    after: Option<&str>,
    response: ResponseTemplate,
) {
    let mock = Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .and(query_param("customer", customer))
        .and(query_param("status", "all"));
    let mock = match after {
        Some(after) => mock.and(query_param("starting_after", after)),
        None => mock.and(query_param_is_missing("starting_after")),
    };
    mock.respond_with(response).mount(&app.stripe).await;
    // `sync` reads each customer's entitlements too: these have none.
    mount_no_entitlements(&app.stripe, customer).await;
}

/// Stripe holds state our database missed: a cancellation, a new
/// subscription, five subscriptions over three pages, and a rate limit.
async fn drifted_app() -> TestApp {
    let app = spawn_app().await;
    let t = now() - 1000;
    for (user, customer) in [
        ("user_a", "cus_a"),
        ("user_b", "cus_b"),
        ("user_c", "cus_c"),
        ("user_d", "cus_d"),
    ] {
        app.given().user(user).with_customer(customer).store();
    }
    // user_a's cancellation webhook was missed: we still think it is active.
    app.deliver(&event(
        "evt_a",
        "customer.subscription.created",
        t,
        sub("sub_a", "cus_a", "active"),
    ))
    .await;
    assert!(app.user("user_a").unwrap().paid);

    mount_list(
        &app,
        "cus_a",
        None,
        list(vec![sub("sub_a", "cus_a", "canceled")], false),
    )
    .await;
    mount_list(
        &app,
        "cus_b",
        None,
        list(vec![sub("sub_b", "cus_b", "active")], false),
    )
    .await;
    mount_list(
        &app,
        "cus_c",
        None,
        list(
            vec![
                sub("sub_c1", "cus_c", "canceled"),
                sub("sub_c2", "cus_c", "canceled"),
            ],
            true,
        ),
    )
    .await;
    mount_list(
        &app,
        "cus_c",
        Some("sub_c2"),
        list(
            vec![
                sub("sub_c3", "cus_c", "canceled"),
                sub("sub_c4", "cus_c", "incomplete_expired"),
            ],
            true,
        ),
    )
    .await;
    mount_list(
        &app,
        "cus_c",
        Some("sub_c4"),
        list(vec![sub("sub_c5", "cus_c", "trialing")], false),
    )
    .await;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .and(query_param("customer", "cus_d"))
        .respond_with(stripe_error(
            429,
            "invalid_request_error",
            None,
            "Too many requests",
        ))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.stripe)
        .await;
    mount_list(
        &app,
        "cus_d",
        None,
        list(vec![sub("sub_d", "cus_d", "past_due")], false),
    )
    .await;
    app
}

fn run_sync(app: &TestApp, args: &[&str]) -> (bool, String) {
    app.run_command("sync", args)
}

fn paid_flags(app: &TestApp) -> Vec<(String, bool)> {
    ["user_a", "user_b", "user_c", "user_d"]
        .into_iter()
        .map(|u| (u.to_string(), app.user(u).unwrap().paid))
        .collect()
}

#[actix_rt::test]
async fn sync_dry_run_prints_the_drift_and_writes_nothing() {
    let app = drifted_app().await;
    let before = (paid_flags(&app), app.count("subscriptions"));

    let (ok, output) = run_sync(&app, &["--dry-run"]);

    assert!(ok, "{output}");
    assert!(
        output.contains("would change sub_a of user_a: active price_pro_monthly -> canceled"),
        "{output}"
    );
    assert!(
        output.contains("customers checked: 4, subscriptions would change: 8, failures: 0"),
        "{output}"
    );
    assert_eq!((paid_flags(&app), app.count("subscriptions")), before);
}

#[actix_rt::test]
async fn sync_makes_postgres_match_stripe_across_pages_and_a_rate_limit() {
    let app = drifted_app().await;

    let (ok, output) = run_sync(&app, &[]);

    assert!(ok, "{output}");
    assert!(
        output.contains("customers checked: 4, subscriptions changed: 8, failures: 0"),
        "{output}"
    );
    assert_eq!(
        paid_flags(&app),
        [
            ("user_a".into(), false),
            ("user_b".into(), true),
            ("user_c".into(), true),
            ("user_d".into(), true)
        ]
    );
    assert_eq!(app.count("subscriptions"), 8);
    // A second run finds nothing left to change.
    let (_, again) = run_sync(&app, &[]);
    assert!(again.contains("subscriptions changed: 0"), "{again}");
}

#[actix_rt::test]
async fn one_customers_failure_does_not_stop_the_others_and_fails_the_run() {
    let app = spawn_app().await;
    for (user, customer) in [("user_a", "cus_a"), ("user_b", "cus_b")] {
        app.given().user(user).with_customer(customer).store();
    }
    mount_list(
        &app,
        "cus_a",
        None,
        stripe_error(500, "api_error", None, "boom"),
    )
    .await;
    mount_list(
        &app,
        "cus_b",
        None,
        list(vec![sub("sub_b", "cus_b", "active")], false),
    )
    .await;

    let (ok, output) = run_sync(&app, &[]);

    assert!(!ok, "{output}");
    assert!(output.contains("FAILED cus_a of user_a"), "{output}");
    assert!(output.contains("failures: 1"), "{output}");
    assert!(app.user("user_b").unwrap().paid);
}

fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[actix_rt::test]
async fn metrics_count_requests_webhooks_portal_sessions_and_stripe_calls() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    app.given().user("user_1").with_customer("cus_1").store();
    let scrape = || async {
        app.client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = scrape().await;

    app.create_portal(&token_for("user_2", None)).await;
    let created = event(
        "evt_1",
        "customer.subscription.created",
        now(),
        sub("sub_1", "cus_1", "active"),
    );
    app.deliver(&created).await;
    app.deliver(&created).await;
    app.post_webhook(b"{}", Some("t=1,v1=00")).await;
    let after = scrape().await;

    let grew =
        |name: &str, labels: &str| metric(&after, name, labels) - metric(&before, name, labels);
    assert_eq!(
        grew("billing_portal_portal_sessions_created_total", ""),
        1.0
    );
    assert_eq!(
        grew(
            "billing_portal_webhook_events_total",
            r#"outcome="applied",type="customer.subscription.created""#
        ),
        1.0
    );
    assert_eq!(
        grew(
            "billing_portal_webhook_events_total",
            r#"outcome="duplicate",type="customer.subscription.created""#
        ),
        1.0
    );
    assert_eq!(
        grew(
            "billing_portal_webhook_signature_failures_total",
            r#"reason="timestamp_out_of_tolerance""#
        ),
        1.0
    );
    assert_eq!(
        grew(
            "billing_portal_stripe_api_calls_total",
            r#"operation="create_customer",outcome="ok""#
        ),
        1.0
    );
    assert_eq!(
        grew(
            "billing_portal_stripe_api_call_duration_seconds_count",
            r#"operation="create_portal_session""#
        ),
        1.0
    );
    assert_eq!(
        grew(
            "billing_portal_http_requests_total",
            r#"method="POST",route="/webhooks/stripe",status="200""#
        ),
        2.0
    );
    assert!(
        after.contains(r#"billing_portal_db_pool_connections{state="in_use"}"#),
        "{after}"
    );
}

#[actix_rt::test]
async fn every_response_carries_a_request_id_and_a_sane_incoming_one_is_kept() {
    let app = spawn_app().await;

    let generated = app.client.get(app.url("/healthz")).send().await.unwrap();
    let kept = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "req-from-proxy-42")
        .send()
        .await
        .unwrap();
    let replaced = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "x".repeat(300))
        .send()
        .await
        .unwrap();

    assert_eq!(generated.headers()["x-request-id"].len(), 32);
    assert_eq!(kept.headers()["x-request-id"], "req-from-proxy-42");
    assert_eq!(replaced.headers()["x-request-id"].len(), 32);
}

#[actix_rt::test]
async fn sigterm_lets_a_webhook_in_flight_commit_and_then_exits_cleanly() {
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();
    app.deliver(&event(
        "evt_0",
        "customer.subscription.created",
        now() - 100,
        sub("sub_1", "cus_1", "trialing"),
    ))
    .await;
    let mut service = Instance::start(&app).await;
    let base = service.base.clone();
    // Hold the subscription's row lock so the webhook stalls mid-transaction.
    let blocker = app.hold_lock("SELECT 1 FROM subscriptions WHERE id = 'sub_1' FOR UPDATE");
    let request = signed_delivery(
        &app.client,
        &base,
        &event(
            "evt_1",
            "customer.subscription.updated",
            now() - 50,
            sub("sub_1", "cus_1", "active"),
        ),
    );
    let in_flight = tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
    // In flight for sure: waiting on the lock inside its transaction.
    app.wait_for_a_request_behind_the_lock().await;

    service.terminate();
    // However long the signal takes to be handled: new connections end up refused (or
    // closed unanswered, when the kernel still queued one on the closing listener).
    let started = Instant::now();
    loop {
        match app.client.get(format!("{base}/healthz")).send().await {
            Err(_) => break,
            Ok(answered) => assert!(
                started.elapsed() < Duration::from_secs(30),
                "new connections are still served after SIGTERM: {}",
                answered.status()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    blocker.release();
    let answered = in_flight.await.unwrap();
    let started = Instant::now();
    let exit = loop {
        if let Some(status) = service.exited() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the service did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    assert_eq!(answered.unwrap(), 200);
    assert_eq!(app.event_outcome("evt_1"), "applied");
    assert!(app.user("user_1").unwrap().paid);
    assert!(exit.success(), "{exit:?}");
}

// --- sync repairs what it can and refuses what it must (issue 13).

fn stored_status(app: &TestApp, subscription: &str) -> (String, Option<String>) {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        status: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        price_id: Option<String>,
    }
    let row: Row = diesel::RunQueryDsl::get_result(
        diesel::sql_query("SELECT status, price_id FROM subscriptions WHERE id = $1")
            .bind::<diesel::sql_types::Text, _>(subscription),
        &mut app.db(),
    )
    .unwrap();
    (row.status, row.price_id)
}

/// Users `user_a`/`cus_a`, `user_b`/`cus_b`, … each paid through a webhook
/// for `sub_a`, `sub_b`, …
async fn paid_users(letters: &[&str]) -> TestApp {
    let app = spawn_app().await;
    for l in letters {
        app.given()
            .user(&format!("user_{l}"))
            .with_customer(&format!("cus_{l}"))
            .store();
        app.deliver(&event(
            &format!("evt_{l}"),
            "customer.subscription.created",
            now() - 1000,
            sub(&format!("sub_{l}"), &format!("cus_{l}"), "active"),
        ))
        .await;
        assert!(app.user(&format!("user_{l}")).unwrap().paid);
    }
    app
}

#[actix_rt::test]
async fn sync_stores_subscriptions_in_older_api_version_shapes_and_succeeds() {
    let app = spawn_app().await;
    for (user, customer) in [("user_a", "cus_a"), ("user_b", "cus_b")] {
        app.given().user(user).with_customer(customer).store();
    }
    // Before 2025-03-31: period on the subscription, items carry only `plan`;
    // plus a field no version of ours knows, and no `billing_mode`.
    let mut old = old_subscription("sub_old", "cus_a", "active", now() + 20 * DAY);
    old["a_field_from_the_future"] = json!({"nested": [1, {"deep": null}]});
    // Older still: the plan on the subscription and no `items` at all.
    let oldest = json!({
        "id": "sub_oldest", "object": "subscription", "customer": "cus_b",
        "status": "trialing", "current_period_end": now() + 10 * DAY,
        "cancel_at_period_end": false, "metadata": {}, "livemode": false,
        "plan": {"id": "plan_ancient", "object": "plan", "product": "prod_ancient"}
    });
    mount_list(&app, "cus_a", None, list(vec![old], false)).await;
    mount_list(&app, "cus_b", None, list(vec![oldest], false)).await;

    let (ok, output) = run_sync(&app, &[]);

    assert!(ok, "{output}");
    assert!(
        output.contains("customers checked: 2, subscriptions changed: 2, failures: 0"),
        "{output}"
    );
    assert_eq!(
        stored_status(&app, "sub_old"),
        ("active".into(), Some("plan_legacy".into()))
    );
    assert_eq!(
        stored_status(&app, "sub_oldest"),
        ("trialing".into(), Some("plan_ancient".into()))
    );
    assert!(app.user("user_a").unwrap().paid);
    assert!(app.user("user_b").unwrap().paid);
}

const MODE_MISMATCH: &str = "a similar object exists in live mode, but a test mode key was used \
                             to make this request.";

#[actix_rt::test]
async fn sync_with_a_key_of_the_wrong_mode_stops_at_once_naming_the_key_and_forgets_nothing() {
    let app = paid_users(&["a", "b"]).await;
    for customer in ["cus_a", "cus_b"] {
        mount_list(
            &app,
            customer,
            None,
            stripe_error(
                404,
                "invalid_request_error",
                Some("resource_missing"),
                &format!("No such customer: '{customer}'; {MODE_MISMATCH}"),
            ),
        )
        .await;
    }

    let (ok, output) = run_sync(&app, &[]);

    assert!(!ok, "{output}");
    assert!(output.contains("STRIPE_SECRET_KEY"), "{output}");
    assert!(output.contains("live mode"), "{output}");
    // Every other customer would answer the same: one request, then stop.
    assert_eq!(
        app.stripe_requests("GET", "/v1/subscriptions").await.len(),
        1
    );
    for l in ["a", "b"] {
        let user = app.user(&format!("user_{l}")).unwrap();
        assert_eq!(user.stripe_customer_id, Some(format!("cus_{l}")));
        assert!(user.paid);
        assert_eq!(stored_status(&app, &format!("sub_{l}")).0, "active");
    }
    assert!(app
        .stripe_requests("POST", "/v1/customers")
        .await
        .is_empty());
}

/// `cus_a`: listing its subscriptions answers "No such customer".
/// `cus_b`: the list is empty and the customer reads `{"deleted": true}`.
/// `cus_c`: the list is empty but Stripe still knows the customer: kept.
async fn app_with_customers_gone_from_stripe() -> TestApp {
    let app = paid_users(&["a", "b", "c"]).await;
    mount_list(
        &app,
        "cus_a",
        None,
        stripe_error(
            404,
            "invalid_request_error",
            Some("resource_missing"),
            "No such customer: 'cus_a'",
        ),
    )
    .await;
    mount_list(&app, "cus_b", None, list(vec![], false)).await;
    mount_list(&app, "cus_c", None, list(vec![], false)).await;
    Mock::given(method("GET"))
        .and(path("/v1/customers/cus_b"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "cus_b", "object": "customer", "deleted": true
        })))
        .mount(&app.stripe)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/customers/cus_c"))
        .respond_with(ResponseTemplate::new(200).set_body_json(customer_json("cus_c", None)))
        .mount(&app.stripe)
        .await;
    app
}

#[actix_rt::test]
async fn sync_forgets_a_customer_stripe_no_longer_knows_and_the_next_portal_visit_creates_one() {
    let app = app_with_customers_gone_from_stripe().await;

    let (ok, output) = run_sync(&app, &[]);

    assert!(ok, "{output}");
    for gone in ["cus_a", "cus_b"] {
        assert!(
            output.contains(&format!(
                "customer {gone} no longer exists in Stripe: forgotten"
            )),
            "{output}"
        );
    }
    assert!(output.contains("failures: 0"), "{output}");
    for l in ["a", "b"] {
        let user = app.user(&format!("user_{l}")).unwrap();
        assert!(!user.paid, "user_{l}");
        assert_eq!(user.stripe_customer_id, None, "user_{l}");
        assert_eq!(stored_status(&app, &format!("sub_{l}")).0, "canceled");
    }
    let kept = app.user("user_c").unwrap();
    assert!(kept.paid);
    assert_eq!(kept.stripe_customer_id.as_deref(), Some("cus_c"));

    mount_working_stripe(&app.stripe).await;
    let response = app.create_portal(&token_for("user_a", None)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.stripe_requests("POST", "/v1/customers").await.len(), 1);
    assert_eq!(
        app.user("user_a").unwrap().stripe_customer_id.as_deref(),
        Some("cus_fake_1")
    );
}

#[actix_rt::test]
async fn sync_dry_run_reports_a_customer_stripe_no_longer_knows_and_writes_nothing() {
    let app = app_with_customers_gone_from_stripe().await;

    let (ok, output) = run_sync(&app, &["--dry-run"]);

    assert!(ok, "{output}");
    assert!(
        output.contains("customer cus_a no longer exists in Stripe: would be forgotten"),
        "{output}"
    );
    for l in ["a", "b", "c"] {
        let user = app.user(&format!("user_{l}")).unwrap();
        assert!(user.paid, "user_{l}");
        assert_eq!(user.stripe_customer_id, Some(format!("cus_{l}")));
    }
}
