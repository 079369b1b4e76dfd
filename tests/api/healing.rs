//! Self-healing: the catch-up from Stripe's Events API applies what no
//! delivery brought (after a restart, across instances, through bad pages),
//! and the drift check re-reads a paid subscription whose renewal never came.
//! The fake Stripe answers the Events API in Stripe's shape
//! (docs.stripe.com/api/events/list: newest first, `has_more`,
//! `starting_after`); the emulator tests run the service against the
//! emulator with webhook deliveries switched off.

use std::collections::HashMap;

use billing_portal::billing::catchup::{self, Report, Since};
use billing_portal::billing::drift;
use billing_portal::billing::Billing;
use billing_portal::clock::Clock;
use billing_portal::context::{self, StripeTarget};
use chrono::{TimeDelta, Utc};
use diesel::prelude::*;
use serde_json::{json, Value};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::support::*;

const DAY: i64 = 86_400;

/// A page of `GET /v1/events`.
fn events_page(events: &[Value], has_more: bool) -> Value {
    json!({"object": "list", "url": "/v1/events", "has_more": has_more, "data": events})
}

async fn mount_events(app: &TestApp, page: Value) {
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page))
        .mount(&app.stripe)
        .await;
}

/// The service's context beside the app (a second instance's view of the
/// same database and fake Stripe), on `clock`.
async fn billing_of(app: &TestApp, clock: Clock) -> Billing {
    context::build(&app.settings, StripeTarget::Configured, clock)
        .await
        .unwrap()
}

async fn catch_up(app: &TestApp, since: Since) -> Result<Report, catchup::CatchupError> {
    catchup::run(&billing_of(app, Clock::system()).await, since, |_| {}).await
}

/// `created[gte]` of every Events API request, in order.
async fn listed_since(app: &TestApp) -> Vec<i64> {
    app.stripe_requests("GET", "/v1/events")
        .await
        .iter()
        .map(|r| {
            r.url
                .query_pairs()
                .find(|(k, _)| k == "created[gte]")
                .map(|(_, v)| v.parse().unwrap())
                .expect("every listing is bounded by created[gte]")
        })
        .collect()
}

fn stored_events(app: &TestApp) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    diesel::sql_query("SELECT id FROM stripe_events ORDER BY id")
        .load::<Row>(&mut app.db())
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

async fn metrics_of(app: &TestApp, base: &str) -> String {
    app.client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn renewed(id: &str, customer: &str, period_end: i64) -> Value {
    current_subscription(id, customer, "active", period_end)
}

// --- The catch-up against Stripe's Events API shape.

/// A delivered event, created three hours ago (where a first catch-up starts,
/// less the margin); its `created`.
async fn delivered_three_hours_ago(app: &TestApp) -> i64 {
    let delivered = now() - 3 * 3600;
    app.deliver(&event(
        "evt_delivered",
        "customer.subscription.updated",
        delivered,
        renewed("sub_9", "cus_9", delivered + 30 * DAY),
    ))
    .await;
    delivered
}

/// `user_1` with customer `cus_1`, and Stripe's Events API listing the
/// `customer.subscription.created` that would make them paid (`evt_missed`),
/// which no delivery brought.
async fn app_with_one_missed_event() -> TestApp {
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();
    let t = now() - 600;
    mount_events(
        &app,
        events_page(
            &[event(
                "evt_missed",
                "customer.subscription.created",
                t,
                renewed("sub_1", "cus_1", t + 30 * DAY),
            )],
            false,
        ),
    )
    .await;
    app
}

#[actix_rt::test]
async fn the_catch_up_applies_an_event_no_delivery_brought_and_a_second_run_changes_nothing() {
    let app = app_with_one_missed_event().await;

    let first = catch_up(&app, Since::Auto).await.unwrap();
    let second = catch_up(&app, Since::Auto).await.unwrap();

    assert!(app.user("user_1").unwrap().paid);
    assert_eq!((first.listed, first.applied), (1, 1));
    assert_eq!((second.listed, second.applied, second.unchanged), (1, 0, 1));
    assert_eq!(stored_events(&app), ["evt_missed"]);
    assert_eq!(app.event_outcome("evt_missed"), "applied");
}

#[actix_rt::test]
async fn the_catch_up_asks_only_for_the_types_the_service_handles_and_reads_every_page() {
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();
    let t = now() - 600;
    // Newest first: page one holds the later event, page two the earlier.
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .and(query_param("starting_after", "evt_2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(events_page(
            &[event(
                "evt_1",
                "customer.subscription.created",
                t,
                current_subscription("sub_1", "cus_1", "incomplete", t + 30 * DAY),
            )],
            false,
        )))
        .mount(&app.stripe)
        .await;
    mount_events(
        &app,
        events_page(
            &[event(
                "evt_2",
                "customer.subscription.updated",
                t + 1,
                renewed("sub_1", "cus_1", t + 30 * DAY),
            )],
            true,
        ),
    )
    .await;

    let report = catch_up(&app, Since::Auto).await.unwrap();

    assert_eq!(report.listed, 2);
    assert!(app.user("user_1").unwrap().paid, "the later event wins");
    let requests = app.stripe_requests("GET", "/v1/events").await;
    assert_eq!(requests.len(), 2);
    let types: Vec<String> = requests[0]
        .url
        .query_pairs()
        .filter(|(k, _)| k.starts_with("types["))
        .map(|(_, v)| v.into_owned())
        .collect();
    let mut handled: Vec<&str> = billing_portal::stripe::events::HANDLED_TYPES.to_vec();
    let mut asked: Vec<&str> = types.iter().map(String::as_str).collect();
    handled.sort();
    asked.sort();
    assert_eq!(asked, handled);
}

#[actix_rt::test]
async fn the_catch_up_starts_ten_minutes_before_the_newest_stored_event_then_the_newest_listed() {
    let app = spawn_app().await;
    let delivered = delivered_three_hours_ago(&app).await;
    let listed = delivered + 3600;
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .respond_with(ResponseTemplate::new(200).set_body_json(events_page(
            &[event(
                "evt_listed",
                "customer.subscription.updated",
                listed,
                renewed("sub_9", "cus_9", listed + 30 * DAY),
            )],
            false,
        )))
        .up_to_n_times(1)
        .mount(&app.stripe)
        .await;
    mount_events(&app, events_page(&[], false)).await;

    for _ in 0..3 {
        catch_up(&app, Since::Auto).await.unwrap();
    }

    let since = listed_since(&app).await;
    assert_eq!(
        since,
        [delivered - 600, listed - 600, listed - 600],
        "the newest stored event, then the newest listed (by Stripe's clock), minus the margin; \
         a run that lists nothing leaves it"
    );
}

#[actix_rt::test]
async fn a_clock_that_ran_ahead_once_does_not_make_the_catch_up_skip_what_came_since() {
    let app = spawn_app().await;
    mount_events(&app, events_page(&[], false)).await;
    // A run on a host whose clock was a day ahead.
    let ahead = Clock::system();
    ahead.advance(DAY);
    catchup::run(&billing_of(&app, ahead).await, Since::Auto, |_| {})
        .await
        .unwrap();

    catch_up(&app, Since::Auto).await.unwrap();

    let since = listed_since(&app).await;
    assert!(since[1] <= now() - 600, "listed from the future: {since:?}");
}

#[actix_rt::test]
async fn the_catch_up_never_asks_for_more_than_the_30_days_stripe_keeps() {
    let app = spawn_app().await;
    mount_events(&app, events_page(&[], false)).await;

    catch_up(&app, Since::Auto).await.unwrap();
    catch_up(&app, Since::At(Utc::now() - TimeDelta::days(45)))
        .await
        .unwrap();

    for since in listed_since(&app).await {
        let back = now() - since;
        // The run's start, 30 days back; seen a little later by this test.
        assert!(
            (30 * DAY..=30 * DAY + 120).contains(&back),
            "listed from {back} s back"
        );
    }
}

#[actix_rt::test]
async fn a_malformed_or_unknown_event_in_a_page_is_skipped_and_the_rest_applied() {
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();
    let t = now() - 600;
    let mut no_object = event(
        "evt_broken",
        "customer.subscription.updated",
        t,
        json!(null),
    );
    no_object["data"] = json!({});
    let page = json!({
        // No `has_more`: read as the last page, as Stripe's libraries do.
        "object": "list", "url": "/v1/events",
        "data": [
            event("evt_unknown", "customer.tax_id.created", t, json!({"id": "txi_1"})),
            no_object,
            json!({"object": "event", "type": "customer.subscription.updated"}),
            event("evt_good", "customer.subscription.created", t,
                  renewed("sub_1", "cus_1", t + 30 * DAY)),
        ]
    });
    mount_events(&app, page).await;

    let report = catch_up(&app, Since::Auto).await.unwrap();

    assert_eq!(
        (report.listed, report.applied, report.skipped),
        (4, 1, 2),
        "{report:?}"
    );
    assert!(app.user("user_1").unwrap().paid);
    assert_eq!(stored_events(&app), ["evt_good", "evt_unknown"]);
    assert_eq!(app.event_outcome("evt_unknown"), "ignored");
    assert_eq!(app.stripe_requests("GET", "/v1/events").await.len(), 1);
}

#[actix_rt::test]
async fn a_run_that_fails_on_a_later_page_keeps_what_it_applied_and_starts_there_again() {
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();
    // A delivered event fixes where the first run starts (else 30 days back,
    // which moves with every second).
    let delivered = delivered_three_hours_ago(&app).await;
    let t = now() - 600;
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .and(query_param("starting_after", "evt_2"))
        .respond_with(stripe_error(
            400,
            "invalid_request_error",
            None,
            "Invalid starting_after",
        ))
        .mount(&app.stripe)
        .await;
    mount_events(
        &app,
        events_page(
            &[event(
                "evt_2",
                "customer.subscription.created",
                t,
                renewed("sub_1", "cus_1", t + 30 * DAY),
            )],
            true,
        ),
    )
    .await;

    let first = catch_up(&app, Since::Auto).await;
    let _ = catch_up(&app, Since::Auto).await;

    assert!(first.is_err(), "{first:?}");
    assert!(app.user("user_1").unwrap().paid, "page one was applied");
    let since = listed_since(&app).await;
    assert_eq!(
        (since[0], since[2]),
        (delivered - 600, delivered - 600),
        "the second run starts where the first did, not at the newest event it stored"
    );
}

#[actix_rt::test]
async fn a_500_that_stripe_says_not_to_retry_is_not_retried_and_one_without_the_header_is() {
    let app = spawn_app().await;
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .respond_with(
            stripe_error(500, "api_error", None, "Something went wrong")
                .insert_header("Stripe-Should-Retry", "false"),
        )
        .up_to_n_times(1)
        .mount(&app.stripe)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .respond_with(stripe_error(500, "api_error", None, "Something went wrong"))
        .mount(&app.stripe)
        .await;

    let told_not_to = catch_up(&app, Since::Auto).await;
    let after_first = app.stripe_requests("GET", "/v1/events").await.len();
    let without_header = catch_up(&app, Since::Auto).await;
    let after_second = app.stripe_requests("GET", "/v1/events").await.len();

    assert!(told_not_to.is_err() && without_header.is_err());
    assert_eq!(after_first, 1, "Stripe-Should-Retry: false is final");
    assert_eq!(after_second - after_first, 3, "three attempts otherwise");
}

// --- The drift check.

/// `user_1`, paid by `sub_1` whose period ended `ended_ago` seconds ago, with
/// the event that stored it from before then.
async fn paid_with_period_ended(app: &TestApp, ended_ago: i64) -> i64 {
    app.given().user("user_1").with_customer("cus_1").store();
    let end = now() - ended_ago;
    let response = app
        .deliver(&event(
            "evt_before",
            "customer.subscription.updated",
            end - 20 * DAY,
            renewed("sub_1", "cus_1", end),
        ))
        .await;
    assert_eq!(response.status(), 200);
    assert!(app.user("user_1").unwrap().paid);
    end
}

fn stored_period_end(app: &TestApp, id: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        end: i64,
    }
    diesel::sql_query(
        "SELECT extract(epoch FROM current_period_end)::bigint AS end FROM subscriptions WHERE id = $1",
    )
    .bind::<diesel::sql_types::Text, _>(id)
    .get_result::<Row>(&mut app.db())
    .unwrap()
    .end
}

async fn mount_subscription(app: &TestApp, subscription: Value) {
    Mock::given(method("GET"))
        .and(path(format!(
            "/v1/subscriptions/{}",
            subscription["id"].as_str().unwrap()
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(subscription))
        .mount(&app.stripe)
        .await;
}

#[actix_rt::test]
async fn a_paid_subscription_two_hours_past_its_period_end_with_no_event_is_re_read() {
    let app = spawn_app().await;
    let end = paid_with_period_ended(&app, 2 * 3600).await;
    mount_subscription(&app, renewed("sub_1", "cus_1", end + 30 * DAY)).await;
    let billing = billing_of(&app, Clock::system()).await;

    let report = drift::run(&billing).await.unwrap();

    assert_eq!((report.checked, report.repaired), (1, 1));
    assert_eq!(stored_period_end(&app, "sub_1"), end + 30 * DAY);
}

#[actix_rt::test]
async fn a_period_that_ended_less_than_an_hour_ago_is_not_drift() {
    let app = spawn_app().await;
    paid_with_period_ended(&app, 30 * 60).await;
    let billing = billing_of(&app, Clock::system()).await;

    let report = drift::run(&billing).await.unwrap();

    assert_eq!(report, drift::Report::default());
    // Not re-read (its price, unknown here, may be read in the background).
    assert!(app
        .stripe_requests("GET", "/v1/subscriptions/sub_1")
        .await
        .is_empty());
}

#[actix_rt::test]
async fn a_subscription_stripe_has_not_renewed_yet_is_re_read_once_an_hour_not_every_run() {
    let app = spawn_app().await;
    let end = paid_with_period_ended(&app, 2 * 3600).await;
    // Stripe still holds the old period (its renewal is late).
    mount_subscription(&app, renewed("sub_1", "cus_1", end)).await;
    let clock = Clock::system();
    let billing = billing_of(&app, clock.clone()).await;

    let first = drift::run(&billing).await.unwrap();
    let again = drift::run(&billing).await.unwrap();
    clock.advance(3601);
    let an_hour_later = drift::run(&billing).await.unwrap();

    assert_eq!(
        (first.checked, again.checked, an_hour_later.checked),
        (1, 0, 1)
    );
    assert_eq!(first.repaired, 0);
    assert_eq!(
        app.stripe_requests("GET", "/v1/subscriptions/sub_1")
            .await
            .len(),
        2
    );
}

#[actix_rt::test]
async fn a_failed_re_read_changes_nothing_and_is_tried_again_an_hour_later() {
    let app = spawn_app().await;
    let end = paid_with_period_ended(&app, 2 * 3600).await;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions/sub_1"))
        .respond_with(stripe_error(
            400,
            "invalid_request_error",
            None,
            "Something is off",
        ))
        .up_to_n_times(1)
        .mount(&app.stripe)
        .await;
    mount_subscription(&app, renewed("sub_1", "cus_1", end + 30 * DAY)).await;
    let clock = Clock::system();
    let billing = billing_of(&app, clock.clone()).await;

    let failed = drift::run(&billing).await.unwrap();
    assert_eq!((failed.checked, failed.failed), (1, 1));
    assert_eq!(stored_period_end(&app, "sub_1"), end);
    let at_once = drift::run(&billing).await.unwrap();
    clock.advance(3601);
    let retried = drift::run(&billing).await.unwrap();

    assert_eq!(at_once.checked, 0, "a failed read waits an hour too");
    assert_eq!(retried.repaired, 1);
    assert_eq!(stored_period_end(&app, "sub_1"), end + 30 * DAY);
}

// --- Across instances: one catch-up at a time, and the start-up run.

/// Variables that point an instance at `stripe_base` with the healing task on.
fn healing_vars(stripe_base: &str) -> Vec<(String, String)> {
    vec![
        ("STRIPE_API_BASE".into(), stripe_base.into()),
        ("STRIPE_CATCHUP_INTERVAL_SECS".into(), "3600".into()),
        ("STRIPE_TIMEOUT_SECS".into(), "10".into()),
    ]
}

async fn start_instance(app: &TestApp, vars: &[(String, String)]) -> Instance {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Instance::start_logging(app, &vars).await
}

/// Waits until `series` in the `/metrics` of the instance at `base` reads
/// `value` (30 s at most).
async fn metric_becomes(app: &TestApp, base: &str, series: &str, value: f64) {
    for _ in 0..300 {
        if metric(&metrics_of(app, base).await, series) == value {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "{series} never became {value}: {}",
        metric(&metrics_of(app, base).await, series)
    );
}

#[actix_rt::test]
async fn two_instances_starting_together_list_the_events_once_and_apply_each_once() {
    let app = app_with_one_missed_event().await;
    let gated = GatedStripe::start().await;
    let mut vars = HashMap::from([("STRIPE_API_BASE".to_string(), app.stripe.uri())]);
    gated.route(&mut vars);
    let listing = gated.gate(|path, _| path == "/v1/events");
    let vars = healing_vars(&vars["STRIPE_API_BASE"]);

    let first = start_instance(&app, &vars).await;
    listing.arrived(1).await;
    let second = start_instance(&app, &vars).await;
    let skipped = "billing_portal_catchup_runs_total{outcome=\"skipped\"}";
    metric_becomes(&app, &second.base, skipped, 1.0).await;
    listing.open();
    eventually("the missed event applied", || {
        app.user("user_1").is_some_and(|u| u.paid)
    })
    .await;

    assert_eq!(app.stripe_requests("GET", "/v1/events").await.len(), 1);
    // The run's counters are final once it has ended (the user is paid a moment before).
    let finished = "billing_portal_catchup_runs_total{outcome=\"ok\"}";
    metric_becomes(&app, &first.base, finished, 1.0).await;
    let mut by_catchup = 0.0;
    for instance in [&first, &second] {
        let body = metrics_of(&app, &instance.base).await;
        by_catchup += metric(
            &body,
            "billing_portal_events_applied_total{source=\"catchup\"}",
        );
    }
    assert_eq!(by_catchup, 1.0, "each event applied once in all");
    assert_eq!(stored_events(&app), ["evt_missed"]);
}

// --- Against the emulator, with webhook deliveries switched off.

/// The emulator, standing in for Stripe for other instances: deliveries off,
/// its own healing task off.
#[cfg(feature = "emulator")]
async fn stripe_without_deliveries() -> TestApp {
    let stripe = spawn_emulated_app_with(|_| {}).await;
    account_settings(&stripe, &[("deliveries", "off")]).await;
    stripe
}

#[cfg(feature = "emulator")]
fn pointed_at(stripe: &TestApp) -> Vec<(String, String)> {
    let mut vars = healing_vars(&format!("{}/stripe-emulator", stripe.address));
    vars.push(("STRIPE_SECRET_KEY".into(), "sk_test_emulator".into()));
    vars
}

#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn after_a_restart_the_catch_up_applies_what_happened_while_the_service_was_down() {
    let stripe = stripe_without_deliveries().await;
    let app = spawn_app().await;
    let vars = pointed_at(&stripe);
    let mut before = start_instance(&app, &vars).await;
    let token = token_for("user_1", Some("user_1@example.com"));
    let portal = app
        .client
        .post(format!("{}/billing/create-portal", before.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(portal.status(), 200);
    let customer = app.user("user_1").unwrap().stripe_customer_id.unwrap();
    before.kill();

    // While the service is down, the user subscribes; no delivery comes.
    subscribe_through_emulator(&stripe, &customer).await;
    assert!(!app.user("user_1").unwrap().paid);
    let after = start_instance(&app, &vars).await;

    eventually("the start-up catch-up makes user_1 paid", || {
        app.user("user_1").is_some_and(|u| u.paid)
    })
    .await;
    // The run's counters are final once it has ended.
    metric_becomes(
        &app,
        &after.base,
        "billing_portal_catchup_last_run_succeeded",
        1.0,
    )
    .await;
    let body = metrics_of(&app, &after.base).await;
    assert!(
        metric(
            &body,
            "billing_portal_events_applied_total{source=\"catchup\"}"
        ) >= 1.0
    );
    assert_eq!(
        metric(
            &body,
            "billing_portal_events_applied_total{source=\"delivery\"}"
        ),
        0.0
    );
}

#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn a_renewal_whose_webhook_never_came_is_repaired_by_the_drift_check_when_the_events_api_is_down(
) {
    let app = spawn_emulated_app_with(|vars| {
        vars.insert("STRIPE_CATCHUP_INTERVAL_SECS".into(), "3600".into());
        // The healing lock takes no place in the lock pool the re-read needs.
        vars.insert("DATABASE_LOCK_POOL_SIZE".into(), "1".into());
    })
    .await;
    let (_, sub) = emulated_paid_user(&app, "user_1").await;
    let id = sub["id"].as_str().unwrap().to_string();
    let end = sub["items"]["data"][0]["current_period_end"]
        .as_i64()
        .unwrap();
    account_settings(
        &app,
        &[("deliveries", "off"), ("events_api", "unavailable")],
    )
    .await;

    // Past the period end and the renewal charge an hour later, plus an hour.
    let (status, clock) = emulator_post(
        &app,
        "test_helpers/test_clocks/clock_any/advance",
        &[("frozen_time", &(end + 2 * 3600 + 60).to_string())],
        None,
    )
    .await;
    assert_eq!(status, 200, "{clock}");
    let renewed = emulator_get(&app, &format!("subscriptions/{id}")).await;
    let new_end = renewed["items"]["data"][0]["current_period_end"]
        .as_i64()
        .unwrap();
    assert!(new_end > end);

    eventually("the drift check stores the renewed period", || {
        stored_period_end(&app, &id) == new_end
    })
    .await;
    // Counted just after the store commits.
    let repaired = "billing_portal_drift_rereads_total{outcome=\"repaired\"}";
    metric_becomes(&app, &app.address, repaired, 1.0).await;
    let body = metrics_of(&app, &app.address).await;
    assert_eq!(
        metric(&body, "billing_portal_catchup_last_run_succeeded"),
        0.0
    );
    assert!(app.user("user_1").unwrap().paid);
}

#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn the_emulators_events_api_filters_by_types_and_created_and_reaches_back_30_days() {
    let stripe = stripe_without_deliveries().await;
    let (_, customer) =
        emulator_post(&stripe, "customers", &[("email", "a@example.com")], None).await;
    let customer = customer["id"].as_str().unwrap().to_string();
    let sub = subscribe_through_emulator(&stripe, &customer).await;
    let created = sub["created"].as_i64().unwrap();
    let ids = |list: &Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    };

    let only = emulator_get(
        &stripe,
        "events?types[0]=customer.subscription.created&types[1]=customer.deleted",
    )
    .await;
    let later = emulator_get(&stripe, &format!("events?created[gt]={created}")).await;
    emulator_post(
        &stripe,
        "test_helpers/test_clocks/clock_any/advance",
        &[("frozen_time", &(created + 31 * DAY).to_string())],
        None,
    )
    .await;
    let month_later = emulator_get(&stripe, "events?types[0]=customer.subscription.created").await;

    assert_eq!(ids(&only), ["customer.subscription.created"]);
    assert!(ids(&later).is_empty(), "{later}");
    assert!(
        ids(&month_later).is_empty(),
        "older than 30 days: {month_later}"
    );
}

// --- The `catchup` command.

#[actix_rt::test]
async fn the_catchup_command_applies_missed_events_since_a_duration_and_prints_a_summary() {
    let app = app_with_one_missed_event().await;

    let (ok, output) = app.run_command("catchup", &["--since", "6h"]);

    assert!(ok, "{output}");
    assert!(
        output.contains("applied evt_missed customer.subscription.created"),
        "{output}"
    );
    assert!(
        output.contains("events listed: 1, applied: 1, already stored or older: 0, skipped: 0"),
        "{output}"
    );
    assert!(app.user("user_1").unwrap().paid);
    let back = now() - listed_since(&app).await[0];
    assert!((6 * 3600..6 * 3600 + 120).contains(&back), "{back}");
}

#[actix_rt::test]
async fn the_catchup_command_refuses_a_since_it_cannot_read_and_changes_nothing() {
    let app = spawn_app().await;

    let (ok, output) = app.run_command("catchup", &["--since", "last tuesday"]);

    assert!(!ok);
    assert!(
        output.contains("RFC 3339") && output.contains("90m, 6h, 3d"),
        "{output}"
    );
    assert!(app.stripe.received_requests().await.unwrap().is_empty());
}

#[actix_rt::test]
async fn a_since_run_before_any_automatic_one_leaves_the_older_events_to_it() {
    let app = spawn_app().await;
    let delivered = delivered_three_hours_ago(&app).await;
    let recent = now() - 1800;
    mount_events(
        &app,
        events_page(
            &[event(
                "evt_recent",
                "customer.subscription.updated",
                recent,
                renewed("sub_9", "cus_9", recent + 30 * DAY),
            )],
            false,
        ),
    )
    .await;

    catch_up(&app, Since::At(Utc::now() - TimeDelta::hours(1)))
        .await
        .unwrap();
    catch_up(&app, Since::Auto).await.unwrap();

    let since = listed_since(&app).await;
    assert_eq!(
        since[1],
        delivered - 600,
        "from before the newest event delivered, not the one the --since run stored"
    );
}
