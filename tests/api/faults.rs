//! Faults, on loopback and bounded: Postgres cut mid-stream, the service
//! killed with SIGKILL under load, and Stripe failing in every way on
//! create-portal. After Stripe-style redelivery, state is as if nothing broke.

use std::time::Duration;

use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::events::*;
use crate::fake_stripe::*;
use crate::helpers::*;
use crate::proxy::{route_database_through, TcpProxy};
use crate::scale::Instance;

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

#[tokio::test]
async fn postgres_cut_mid_stream_gives_5xx_and_redelivery_applies_every_event_once() {
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let app = spawn_app_with(|vars| route_database_through(vars, &proxy)).await;
    app.execute("INSERT INTO users (id, stripe_customer_id) VALUES ('user_1', 'cus_1')");
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

#[tokio::test]
async fn sigkill_under_load_then_redelivery_ends_in_the_in_order_state() {
    let app = spawn_app().await;
    app.execute("INSERT INTO users (id, stripe_customer_id) VALUES ('user_1', 'cus_1')");
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

#[tokio::test]
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

#[tokio::test]
async fn retries_after_stripe_failures_never_make_a_second_customer() {
    let app = spawn_app().await;
    // Customer creation works; portal sessions fail twice (500, then slow).
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .respond_with(stripe_error(500, "api_error", None, "boom"))
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
