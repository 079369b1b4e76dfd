//! Faults, on loopback and bounded: Postgres cut mid-stream or frozen, the
//! service killed with SIGKILL under load, and Stripe failing in every way on
//! create-portal. After Stripe-style redelivery, state is as if nothing broke.

use std::time::{Duration, Instant};

use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::support::*;

/// Redelivers each refused event until it is acknowledged, as Stripe does.
async fn redeliver_until_acknowledged(app: &TestApp, base: &str, events: &[Value]) {
    for event in events {
        for attempt in 0.. {
            assert!(attempt < 50, "event {} never acknowledged", event["id"]);
            if app.deliver_to(base, event).await == Some(200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[actix_rt::test]
async fn postgres_cut_mid_stream_gives_5xx_and_redelivery_applies_every_event_once() {
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let app = spawn_app_with(|vars| route_database_through(vars, &proxy)).await;
    app.given().user("user_1").with_customer("cus_1").store();
    let events: Vec<Value> = (0..30)
        .map(|i| {
            event(
                &format!("evt_{i}"),
                "customer.subscription.created",
                now() - 100,
                current_subscription(&format!("sub_{i}"), "cus_1", "active", now() + 86_400),
            )
        })
        .collect();

    let mut refused = Vec::new();
    for (i, event) in events.iter().enumerate() {
        if i == 10 {
            proxy.cut();
        }
        if i == 20 {
            proxy.restore();
        }
        let status = app.deliver_to(&app.address, event).await;
        if status != Some(200) {
            assert!(status.is_some_and(|s| s >= 500), "refused with {status:?}");
            refused.push(event.clone());
        }
    }
    redeliver_until_acknowledged(&app, &app.address, &refused).await;

    assert!(
        refused.len() >= 10,
        "only {} refused while down",
        refused.len()
    );
    assert_eq!(app.count("stripe_events"), 30);
    assert_eq!(app.count("subscriptions"), 30);
    assert!(app.user("user_1").unwrap().paid);
}

/// A Postgres that stops answering without closing anything (SIGSTOP, a hung
/// host): the kernel keeps acknowledging, so no socket option notices; only
/// the service's own deadline does.
#[actix_rt::test]
async fn a_frozen_postgres_answers_503_within_the_database_timeouts_and_recovers_when_it_thaws() {
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let app = spawn_app_with(|vars| {
        route_database_through(vars, &proxy); // connect timeout 1 s
        vars.insert("DATABASE_STATEMENT_TIMEOUT_MS".into(), "1000".into());
    })
    .await;
    mount_working_stripe(&app.stripe).await;
    app.given().user("user_1").with_customer("cus_1").store();
    let token = token_for("user_1", None);
    let paid = event(
        "evt_frozen",
        "customer.subscription.created",
        now() - 100,
        current_subscription("sub_1", "cus_1", "active", now() + 86_400),
    );
    assert_eq!(app.status(&token).await["data"]["paid"], false);

    proxy.freeze();
    let requests = [
        (
            "status",
            app.client
                .get(app.url("/billing/status"))
                .bearer_auth(&token),
        ),
        ("webhook", signed_delivery(&app.client, &app.address, &paid)),
        (
            "create-portal",
            app.client
                .post(app.url("/billing/create-portal"))
                .bearer_auth(token_for("user_2", None)),
        ),
    ];
    for (what, request) in requests {
        let started = Instant::now();
        let response = request
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer while Postgres is frozen: {e}"));
        let waited = started.elapsed();

        assert_eq!(response.status(), 503, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "database_unavailable", "{what}: {body}");
        // The bound is 1 s to connect + 1 s per statement; 10 s only says
        // "bounded" on a loaded machine.
        assert!(
            waited < Duration::from_secs(10),
            "{what} answered after {waited:?}"
        );
    }

    proxy.thaw();
    // What was stuck finishes once Postgres answers; the service recovers
    // by itself, and the webhook, refused while frozen, is stored once.
    redeliver_until_acknowledged(&app, &app.address, std::slice::from_ref(&paid)).await;
    assert_eq!(app.status(&token).await["data"]["paid"], true);
    assert_eq!(app.count("stripe_events"), 1);
    let portal = app.create_portal(&token_for("user_2", None)).await;
    assert_eq!(portal.status(), 200);
}

#[actix_rt::test]
async fn sigkill_under_load_then_redelivery_ends_in_the_in_order_state() {
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();
    let port = free_port();
    let mut service = Instance::start_on(&app, port).await;
    let base = service.base.clone();
    let statuses = [
        "trialing", "active", "past_due", "active", "unpaid", "active", "canceled",
    ];
    let t = now() - 1000;
    // 70 events for one subscription, strictly ordered by `created`.
    let events: Vec<Value> = (0..70)
        .map(|i| {
            let status = statuses[i % statuses.len()];
            let mut sub = current_subscription("sub_1", "cus_1", status, t + 86_400 + i as i64);
            sub["cancel_at_period_end"] = (i % 3 == 0).into();
            event(
                &format!("evt_{i}"),
                "customer.subscription.updated",
                t + i as i64,
                sub,
            )
        })
        .collect();

    // Eight at a time; the process is killed while they are in flight.
    let mut refused = Vec::new();
    for (n, batch) in events.chunks(8).enumerate() {
        if n == 4 {
            service.kill();
        }
        let answers =
            futures::future::join_all(batch.iter().map(|e| app.deliver_to(&base, e))).await;
        for (event, answer) in batch.iter().zip(answers) {
            if answer != Some(200) {
                refused.push(event.clone());
            }
        }
    }
    let restarted = Instance::start_on(&app, port).await;
    refused.reverse(); // Stripe promises no order on retries.
    redeliver_until_acknowledged(&app, &restarted.base, &refused).await;
    drop(restarted);

    assert!(!refused.is_empty());
    let last = &events[69]["data"]["object"];
    let status = app.status(&token_for("user_1", None)).await;
    assert_eq!(status["data"]["status"], last["status"]);
    assert_eq!(
        status["data"]["cancelAtPeriodEnd"],
        last["cancel_at_period_end"]
    );
    assert_eq!(
        status["data"]["currentPeriodEnd"],
        chrono::DateTime::from_timestamp(t + 86_400 + 69, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    assert_eq!(app.count("stripe_events"), 70);
}

#[actix_rt::test]
async fn a_rate_limited_stripe_gives_503_with_a_clear_message() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(stripe_error(
            429,
            "invalid_request_error",
            None,
            "Too many requests",
        ))
        .mount(&app.stripe)
        .await;

    let response = app.create_portal(&token_for("user_1", None)).await;

    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "stripe_rate_limited");
    assert!(body["message"].as_str().unwrap().contains("retry"));
    assert_eq!(app.user("user_1").unwrap().stripe_customer_id, None);
}

#[actix_rt::test]
async fn retries_after_stripe_failures_never_make_a_second_customer() {
    let app = spawn_app().await;
    // Customer creation works; portal sessions fail twice (500 that Stripe
    // says not to retry, then slow).
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .respond_with(
            stripe_error(500, "api_error", None, "boom")
                .append_header("Stripe-Should-Retry", "false"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.stripe)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&app.stripe)
        .await;
    mount_working_stripe(&app.stripe).await;
    let token = token_for("user_1", None);

    let first = app.create_portal(&token).await.status().as_u16();
    let second = app.create_portal(&token).await.status().as_u16();
    let third = app.create_portal(&token).await;

    assert_eq!((first, second), (502, 502));
    assert_eq!(third.status(), 200);
    assert_eq!(app.stripe_requests("POST", "/v1/customers").await.len(), 1);
    assert_eq!(
        app.user("user_1").unwrap().stripe_customer_id.as_deref(),
        Some("cus_fake_1")
    );
}
