//! The emulator sends what real Stripe sends, and its test clock reaches
//! renewals, failed payments and the end of a retry window in seconds: each
//! test drives the real service through the emulator's Stripe API and checks
//! the emulator's answers and what the service stored from its webhooks.

use diesel::prelude::*;
use serde_json::{json, Value};

use crate::support::*;

const DAY: i64 = 86_400;

#[derive(QueryableByName, Debug)]
struct Stored {
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    period_end: Option<i64>,
}

/// The service's `subscriptions` row for `id`.
fn stored(app: &TestApp, id: &str) -> Option<Stored> {
    diesel::sql_query(
        "SELECT status, extract(epoch FROM current_period_end)::bigint AS period_end \
         FROM subscriptions WHERE id = $1",
    )
    .bind::<diesel::sql_types::Text, _>(id)
    .get_result(&mut app.db())
    .optional()
    .unwrap()
}

async fn stored_status_becomes(app: &TestApp, id: &str, status: &str) {
    eventually(&format!("{id} stored as {status}"), || {
        stored(app, id).is_some_and(|s| s.status == status)
    })
    .await;
}

/// A client that follows the portal's redirects, as a browser does.
fn browser() -> reqwest::Client {
    reqwest::Client::new()
}

/// The subscription events the service received, in arrival order.
fn arrivals(app: &TestApp) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        #[diesel(column_name = type_)]
        type_: String,
    }
    diesel::sql_query(
        "SELECT type AS type_ FROM stripe_events \
         WHERE type LIKE 'customer.subscription.%' OR type LIKE 'invoice.%' ORDER BY received_at",
    )
    .load::<Row>(&mut app.db())
    .unwrap()
    .into_iter()
    .map(|r| r.type_)
    .collect()
}

/// The emulator's events of `type_`, oldest first.
async fn events_of(app: &TestApp, type_: &str) -> Vec<Value> {
    let list = emulator_get(app, &format!("events?type={type_}&limit=100")).await;
    let mut events = list["data"].as_array().unwrap().clone();
    events.reverse();
    events
}

/// A customer for `user`, made by the service as for a first portal visit.
async fn customer_for(app: &TestApp, user: &str) -> String {
    let token = token_for(user, Some(&format!("{user}@example.com")));
    assert_eq!(app.create_portal(&token).await.status(), 200);
    app.user(user).unwrap().stripe_customer_id.unwrap()
}

async fn subscribe(app: &TestApp, customer: &str, extra: &[(&str, &str)]) -> Value {
    let mut form = vec![
        ("customer", customer),
        ("items[0][price]", "price_emu_pro_monthly"),
    ];
    form.extend_from_slice(extra);
    let (status, sub) = emulator_post(app, "subscriptions", &form, None).await;
    assert_eq!(status, 200, "{sub}");
    sub
}

async fn advance(app: &TestApp, frozen_time: i64) -> (u16, Value) {
    emulator_post(
        app,
        "test_helpers/test_clocks/clock_any/advance",
        &[("frozen_time", &frozen_time.to_string())],
        None,
    )
    .await
}

fn period_end(sub: &Value) -> i64 {
    sub["items"]["data"][0]["current_period_end"]
        .as_i64()
        .unwrap()
}

/// An active subscription for `user`, stored by the service.
async fn active_subscription(app: &TestApp, user: &str, extra: &[(&str, &str)]) -> Value {
    let customer = customer_for(app, user).await;
    let sub = subscribe(app, &customer, extra).await;
    stored_status_becomes(app, sub["id"].as_str().unwrap(), "active").await;
    sub
}

#[actix_rt::test]
async fn a_new_subscription_is_created_incomplete_and_turns_active_in_the_same_second() {
    let app = spawn_emulated_app_with(|_| {}).await;
    account_settings(&app, &[("delivery_order", "in_order")]).await;
    let customer = customer_for(&app, "user_1").await;

    let sub = subscribe(&app, &customer, &[]).await;

    assert_eq!(sub["status"], "active", "the API answers the paid state");
    let id = sub["id"].as_str().unwrap();
    stored_status_becomes(&app, id, "active").await;
    let created = &events_of(&app, "customer.subscription.created").await[0];
    let updated = &events_of(&app, "customer.subscription.updated").await[0];
    let paid = &events_of(&app, "invoice.paid").await[0];
    assert_eq!(created["data"]["object"]["status"], "incomplete");
    assert_eq!(updated["data"]["object"]["status"], "active");
    assert_eq!(
        updated["data"]["previous_attributes"],
        json!({"status": "incomplete"})
    );
    assert_eq!(created["created"], updated["created"]);
    assert_eq!(created["created"], paid["created"]);
    assert_eq!(
        arrivals(&app),
        [
            "customer.subscription.created",
            "invoice.paid",
            "customer.subscription.updated"
        ],
        "Stripe's own order: the paid first invoice activates the subscription"
    );
}

#[actix_rt::test]
async fn delivered_in_reverse_a_new_subscription_still_ends_active() {
    let app = spawn_emulated_app_with(|_| {}).await;
    account_settings(&app, &[("delivery_order", "reverse")]).await;
    let customer = customer_for(&app, "user_1").await;

    let sub = subscribe(&app, &customer, &[]).await;
    let id = sub["id"].as_str().unwrap();
    eventually("all three events", || arrivals(&app).len() == 3).await;

    assert_eq!(
        arrivals(&app),
        [
            "customer.subscription.updated",
            "invoice.paid",
            "customer.subscription.created"
        ]
    );
    assert_eq!(stored(&app, id).unwrap().status, "active");
}

#[actix_rt::test]
async fn cancelling_at_period_end_in_the_portal_sets_cancel_at_in_flexible_mode() {
    let app = spawn_emulated_app_with(|_| {}).await;
    account_settings(&app, &[("delivery_order", "in_order")]).await;
    let sub = active_subscription(&app, "user_1", &[]).await;
    let id = sub["id"].as_str().unwrap();
    let portal: Value = app
        .create_portal(&token_for("user_1", Some("user_1@example.com")))
        .await
        .json()
        .await
        .unwrap();
    let url = portal["data"]["portalUrl"].as_str().unwrap();

    let page = browser()
        .post(format!("{url}/cancel"))
        .form(&[("subscription", id), ("when", "period_end")])
        .send()
        .await
        .unwrap();

    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Cancels on"));
    let after = emulator_get(&app, &format!("subscriptions/{id}")).await;
    assert_eq!(after["billing_mode"]["type"], "flexible");
    assert_eq!(after["cancel_at"], json!(period_end(&sub)));
    assert_eq!(after["cancel_at_period_end"], false);
    let updated = events_of(&app, "customer.subscription.updated").await;
    let previous = &updated.last().unwrap()["data"]["previous_attributes"];
    assert_eq!(previous["cancel_at"], Value::Null);
    assert!(previous.get("cancel_at").is_some(), "{previous}");
    assert!(previous.get("cancel_at_period_end").is_none(), "{previous}");
}

#[actix_rt::test]
async fn a_classic_subscription_cancelled_in_the_portal_sets_cancel_at_period_end() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let customer = customer_for(&app, "user_1").await;
    let sub = subscribe(&app, &customer, &[("billing_mode[type]", "classic")]).await;
    let id = sub["id"].as_str().unwrap();
    let portal: Value = app
        .create_portal(&token_for("user_1", Some("user_1@example.com")))
        .await
        .json()
        .await
        .unwrap();
    let url = portal["data"]["portalUrl"].as_str().unwrap();

    browser()
        .post(format!("{url}/cancel"))
        .form(&[("subscription", id), ("when", "period_end")])
        .send()
        .await
        .unwrap();

    let after = emulator_get(&app, &format!("subscriptions/{id}")).await;
    assert_eq!(after["billing_mode"]["type"], "classic");
    assert_eq!(after["cancel_at_period_end"], true);
    assert_eq!(after["cancel_at"], json!(period_end(&sub)));
}

#[actix_rt::test]
async fn the_api_sets_and_clears_cancel_at_and_refuses_what_stripe_refuses() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let customer = customer_for(&app, "user_1").await;
    let sub = subscribe(&app, &customer, &[]).await;
    let path = format!("subscriptions/{}", sub["id"].as_str().unwrap());
    let at = (sub["created"].as_i64().unwrap() + 5 * DAY).to_string();

    let (_, set) = emulator_post(&app, &path, &[("cancel_at", &at)], None).await;
    let (_, cleared) = emulator_post(&app, &path, &[("cancel_at", "")], None).await;
    let (not_a_number, nan) = emulator_post(&app, &path, &[("cancel_at", "soon")], None).await;
    let (in_the_past, _) = emulator_post(&app, &path, &[("cancel_at", "1000")], None).await;
    let (both, _) = emulator_post(
        &app,
        &path,
        &[("cancel_at", &at), ("cancel_at_period_end", "true")],
        None,
    )
    .await;

    assert_eq!(set["cancel_at"].to_string(), at);
    assert_eq!(set["cancel_at_period_end"], false);
    assert_eq!(cleared["cancel_at"], Value::Null);
    assert_eq!(not_a_number, 400);
    assert_eq!(nan["error"]["param"], "cancel_at");
    assert_eq!(in_the_past, 400);
    assert_eq!(both, 400);
}

#[actix_rt::test]
async fn advancing_the_clock_past_the_period_end_renews_the_subscription() {
    let app = spawn_emulated_app_with(|_| {}).await;
    account_settings(&app, &[("delivery_order", "in_order")]).await;
    let sub = active_subscription(&app, "user_1", &[]).await;
    let id = sub["id"].as_str().unwrap();
    let end = period_end(&sub);

    let (status, clock) = advance(&app, end + DAY).await;

    assert_eq!(status, 200, "{clock}");
    assert_eq!(clock["object"], "test_helpers.test_clock");
    assert_eq!(clock["frozen_time"], json!(end + DAY));
    assert_eq!(clock["status"], "ready");
    let renewed = emulator_get(&app, &format!("subscriptions/{id}")).await;
    let new_end = period_end(&renewed);
    assert!(
        new_end >= end + 28 * DAY && new_end <= end + 31 * DAY,
        "one calendar month on: {end} → {new_end}"
    );
    assert_eq!(renewed["status"], "active");
    eventually("the renewed period stored", || {
        stored(&app, id).and_then(|s| s.period_end) == Some(new_end)
    })
    .await;
    assert_eq!(stored(&app, id).unwrap().status, "active");
    let renewal = events_of(&app, "customer.subscription.updated").await;
    let renewal = renewal.last().unwrap();
    assert_eq!(renewal["created"], json!(end), "stamped when it happened");
    assert_eq!(
        renewal["data"]["previous_attributes"]["items"]["data"][0]["current_period_end"],
        json!(end)
    );
}

/// A stored, active subscription whose customer's card then starts failing
/// (Stripe's test token for 4000 0000 0000 0341).
async fn subscription_with_failing_card(app: &TestApp) -> Value {
    let sub = active_subscription(app, "user_1", &[]).await;
    let customer = sub["customer"].as_str().unwrap();
    let (status, body) = emulator_post(
        app,
        &format!("customers/{customer}"),
        &[("source", "tok_chargeCustomerFail")],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    sub
}

#[actix_rt::test]
async fn a_renewal_charged_to_a_failing_card_makes_the_subscription_past_due() {
    let app = spawn_emulated_app_with(|_| {}).await;
    account_settings(&app, &[("delivery_order", "in_order")]).await;
    let sub = subscription_with_failing_card(&app).await;
    let id = sub["id"].as_str().unwrap();

    let (status, _) = advance(&app, period_end(&sub) + 2 * 3_600).await;

    assert_eq!(status, 200);
    let after = emulator_get(&app, &format!("subscriptions/{id}")).await;
    assert_eq!(after["status"], "past_due");
    stored_status_becomes(&app, id, "past_due").await;
    let failed = events_of(&app, "invoice.payment_failed").await;
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["data"]["object"]["next_payment_attempt"].is_i64());
}

#[actix_rt::test]
async fn when_the_last_retry_fails_the_dunning_setting_decides_the_status() {
    for (dunning, status) in [("unpaid", "unpaid"), ("canceled", "canceled")] {
        let app = spawn_emulated_app_with(|_| {}).await;
        account_settings(
            &app,
            &[
                ("delivery_order", "in_order"),
                ("dunning", dunning),
                ("retry_days", "3"),
            ],
        )
        .await;
        let sub = subscription_with_failing_card(&app).await;
        let id = sub["id"].as_str().unwrap();
        let first_attempt = period_end(&sub) + 3_600;

        advance(&app, first_attempt + 3 * DAY - 60).await;
        stored_status_becomes(&app, id, "past_due").await;
        let (advanced, _) = advance(&app, first_attempt + 3 * DAY + 60).await;

        assert_eq!(advanced, 200);
        let after = emulator_get(&app, &format!("subscriptions/{id}")).await;
        assert_eq!(after["status"], status, "dunning={dunning}");
        stored_status_becomes(&app, id, status).await;
    }
}

#[actix_rt::test]
async fn pausing_collection_shows_in_the_answer_and_a_paused_renewal_charges_nothing() {
    let app = spawn_emulated_app_with(|_| {}).await;
    account_settings(&app, &[("delivery_order", "in_order")]).await;
    let sub = subscription_with_failing_card(&app).await;
    let path = format!("subscriptions/{}", sub["id"].as_str().unwrap());

    let (status, paused) = emulator_post(
        &app,
        &path,
        &[("pause_collection[behavior]", "mark_uncollectible")],
        None,
    )
    .await;
    let (bad, refused) = emulator_post(
        &app,
        &path,
        &[("pause_collection[behavior]", "sometimes")],
        None,
    )
    .await;
    // Read before the clock moves a month on: Stripe lists 30 days of events.
    let updated = events_of(&app, "customer.subscription.updated").await;
    advance(&app, period_end(&sub) + 2 * DAY).await;
    let renewed = emulator_get(&app, &path).await;
    let (_, resumed) = emulator_post(&app, &path, &[("pause_collection", "")], None).await;

    assert_eq!(status, 200, "{paused}");
    assert_eq!(
        paused["pause_collection"],
        json!({"behavior": "mark_uncollectible", "resumes_at": null})
    );
    assert_eq!(paused["status"], "active");
    assert!(updated
        .iter()
        .any(|e| e["data"]["previous_attributes"] == json!({"pause_collection": null})));
    assert_eq!(
        (bad, refused["error"]["param"].clone()),
        (400, json!("pause_collection"))
    );
    assert_eq!(renewed["status"], "active", "no charge, so no failure");
    assert!(period_end(&renewed) > period_end(&sub));
    assert!(events_of(&app, "invoice.payment_failed").await.is_empty());
    assert_eq!(resumed["pause_collection"], Value::Null);
}

#[actix_rt::test]
async fn advancing_the_clock_to_a_time_not_in_the_future_is_refused() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let clock = emulator_get(&app, "test_helpers/test_clocks/clock_any").await;
    let now = clock["frozen_time"].as_i64().unwrap();

    let (past, refused) = advance(&app, now - 60).await;
    let unchanged = emulator_get(&app, "test_helpers/test_clocks/clock_any").await;
    let (garbage, _) = emulator_post(
        &app,
        "test_helpers/test_clocks/clock_any/advance",
        &[("frozen_time", "tomorrow")],
        None,
    )
    .await;

    assert_eq!(past, 400);
    assert_eq!(refused["error"]["type"], "invalid_request_error");
    assert_eq!(refused["error"]["param"], "frozen_time");
    assert!(unchanged["frozen_time"].as_i64().unwrap() < now + 60);
    assert_eq!(garbage, 400);
}

#[actix_rt::test]
async fn the_portals_test_clock_control_advances_a_month_and_keeps_the_session() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let portal: Value = app
        .create_portal(&token_for("user_1", None))
        .await
        .json()
        .await
        .unwrap();
    let url = portal["data"]["portalUrl"].as_str().unwrap();
    let before = emulator_get(&app, "test_helpers/test_clocks/clock_any").await["frozen_time"]
        .as_i64()
        .unwrap();

    let page = browser()
        .post(format!("{url}/advance"))
        .form(&[("by", "1m")])
        .send()
        .await
        .unwrap();

    assert_eq!(page.status(), 200, "back on a live session");
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("The test clock now reads"));
    let after = emulator_get(&app, "test_helpers/test_clocks/clock_any").await["frozen_time"]
        .as_i64()
        .unwrap();
    assert!(after - before >= 28 * DAY, "{before} → {after}");
}

// --- What the service makes of it: /billing/status and users.paid, end to end.

async fn status_of(app: &TestApp, user: &str) -> Value {
    app.status(&token_for(user, None)).await["data"].clone()
}

async fn status_becomes(
    app: &TestApp,
    user: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..300 {
        let status = status_of(app, user).await;
        if check(&status) {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "timed out waiting for {user}'s status to show {what}: {}",
        status_of(app, user).await
    );
}

/// A first purchase sends `created` (incomplete) and `updated` (active) in one
/// second; Stripe does not order deliveries. Every order ends paid.
#[actix_rt::test]
async fn a_new_subscription_delivered_in_any_order_makes_its_user_paid() {
    let app = spawn_emulated_app_with(|_| {}).await;
    for (n, order) in ["reverse", "shuffled", "in_order", "shuffled", "reverse"]
        .iter()
        .enumerate()
    {
        account_settings(&app, &[("delivery_order", order)]).await;
        let user = format!("user_{n}");
        let customer = customer_for(&app, &user).await;

        subscribe(&app, &customer, &[]).await;

        let status = status_becomes(&app, &user, "paid", |s| s["paid"] == true).await;
        assert_eq!(status["reason"], "active", "{order}");
        assert!(app.user(&user).unwrap().paid, "{order}");
    }
}

#[actix_rt::test]
async fn a_flexible_mode_cancellation_in_the_portal_is_reported_as_cancel_at() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let sub = active_subscription(&app, "user_1", &[]).await;
    let id = sub["id"].as_str().unwrap();
    let end = period_end(&sub);

    let (status, canceled) = emulator_post(
        &app,
        &format!("subscriptions/{id}"),
        &[("cancel_at", &end.to_string())],
        None,
    )
    .await;

    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["cancel_at_period_end"], false);
    let expected = chrono::DateTime::from_timestamp(end, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let status = status_becomes(&app, "user_1", "cancelAt", |s| s["cancelAt"].is_string()).await;
    assert_eq!(status["cancelAt"], expected);
    assert_eq!(status["cancelAtPeriodEnd"], false);
    assert_eq!(status["paid"], true);
}

/// A failed renewal with the account's dunning set to "leave past due": the
/// grace is all that ends access, and it does so with no event from Stripe.
#[actix_rt::test]
async fn a_failed_renewal_keeps_access_in_the_grace_and_loses_it_when_the_grace_ends() {
    let app = spawn_emulated_app_with(|_| {}).await;
    account_settings(&app, &[("dunning", "past_due"), ("retry_days", "3")]).await;
    let sub = subscription_with_failing_card(&app).await;
    let id = sub["id"].as_str().unwrap();
    let renewal = period_end(&sub);

    advance(&app, renewal + 3_600).await;
    stored_status_becomes(&app, id, "past_due").await;
    let in_grace = status_becomes(&app, "user_1", "past_due_in_grace", |s| {
        s["reason"] == "past_due_in_grace"
    })
    .await;
    assert_eq!(in_grace["paid"], true);
    assert!(app.user("user_1").unwrap().paid);
    let grace_ends =
        chrono::DateTime::parse_from_rfc3339(in_grace["graceEndsAt"].as_str().unwrap())
            .unwrap()
            .timestamp();
    assert!(
        (grace_ends - (renewal + 14 * DAY)).abs() <= 2 * 3_600,
        "{in_grace}"
    );

    // Past the last retry (3 days): left past due, still in grace.
    advance(&app, renewal + 5 * DAY).await;
    let settled = subscription_events(&app);
    assert_eq!(
        status_of(&app, "user_1").await["reason"],
        "past_due_in_grace"
    );

    // Past the grace: no event arrives, yet the user is unpaid, in the
    // status and (through the sweep the clock wakes) in users.paid.
    advance(&app, grace_ends + 60).await;
    let ended = status_of(&app, "user_1").await;
    assert_eq!(
        (ended["paid"].clone(), ended["reason"].clone()),
        (json!(false), json!("past_due_grace_ended"))
    );
    eventually("users.paid turned off by the sweep", || {
        !app.user("user_1").unwrap().paid
    })
    .await;
    assert_eq!(
        subscription_events(&app),
        settled,
        "no subscription event was needed"
    );
}

fn subscription_events(app: &TestApp) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(
        "SELECT count(*) AS n FROM stripe_events WHERE type LIKE 'customer.subscription.%'",
    )
    .get_result::<Count>(&mut app.db())
    .unwrap()
    .n
}

#[actix_rt::test]
async fn paused_collection_through_the_emulator_is_paid_only_when_configured_to() {
    for (setting, paid) in [("true", true), ("false", false)] {
        let app = spawn_emulated_app_with(|vars| {
            vars.insert("BILLING_COLLECTION_PAUSED_IS_PAID".into(), setting.into());
        })
        .await;
        let sub = active_subscription(&app, "user_1", &[]).await;

        let (status, _) = emulator_post(
            &app,
            &format!("subscriptions/{}", sub["id"].as_str().unwrap()),
            &[("pause_collection[behavior]", "keep_as_draft")],
            None,
        )
        .await;

        assert_eq!(status, 200);
        let shown = status_becomes(&app, "user_1", "collection_paused", |s| {
            s["reason"] == "collection_paused"
        })
        .await;
        assert_eq!(shown["paid"], paid, "setting {setting}");
        assert_eq!(shown["status"], "active", "setting {setting}");
        eventually("users.paid follows", || {
            app.user("user_1").unwrap().paid == paid
        })
        .await;
    }
}
