//! Who is paid, and why: the past-due grace with a limit, paused collection,
//! flexible-mode cancellation, the explained status, same-second ties settled
//! by Stripe, fetched state that never goes backwards, and lenient reading of
//! fields Stripe may send in another shape.

use billing_portal::billing::status::{AccessFacts, PaidRule, Reason, SubscriptionStatus};
use billing_portal::billing::sweep;
use billing_portal::billing::sync::{apply_subscription, Outcome};
use billing_portal::clock::Clock;
use billing_portal::context::{self, StripeTarget};
use billing_portal::db::subscriptions::Provenance;
use billing_portal::stripe::events::parse_subscription;
use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::support::*;

const DAY: i64 = 86_400;

async fn app_with_user(
    customize: impl FnOnce(&mut std::collections::HashMap<String, String>),
) -> TestApp {
    let app = spawn_app_with(customize).await;
    app.given().user("user_1").with_customer("cus_1").store();
    app
}

fn subscription(status: &str, created: i64) -> Value {
    current_subscription("sub_1", "cus_1", status, created + 30 * DAY)
}

async fn status_of(app: &TestApp) -> Value {
    app.status(&token_for("user_1", None)).await["data"].clone()
}

fn rfc3339(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[actix_rt::test]
async fn the_paid_rule_in_postgres_agrees_with_the_rule_in_rust_in_every_case() {
    let app = spawn_app().await;
    let mut conn = app.db();
    let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let statuses = [
        "active",
        "trialing",
        "past_due",
        "canceled",
        "unpaid",
        "incomplete",
        "incomplete_expired",
        "paused",
        "something_new",
    ];
    let sinces = [
        None,
        Some(now - TimeDelta::days(3)),
        Some(now - TimeDelta::days(20)),
    ];
    let mut checked = 0;
    for status in statuses {
        for since in sinces {
            for paused in [false, true] {
                for days in [0, 14] {
                    for paused_is_paid in [false, true] {
                        let rule = PaidRule::new(days, paused_is_paid);
                        let parsed = SubscriptionStatus::parse(status);
                        let rust = rule.grants_access(
                            AccessFacts {
                                status: &parsed,
                                past_due_since: since,
                                collection_paused: paused,
                            },
                            now,
                        );
                        let sql: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
                            "billing_grants_access(",
                        )
                        .bind::<diesel::sql_types::Text, _>(status)
                        .sql(", ")
                        .bind::<diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>, _>(since)
                        .sql(", ")
                        .bind::<diesel::sql_types::Nullable<diesel::sql_types::Text>, _>(
                            paused.then_some("void"),
                        )
                        .sql(", ")
                        .bind::<diesel::sql_types::Timestamptz, _>(now)
                        .sql(", ")
                        .bind::<diesel::sql_types::BigInt, _>(rule.grace_secs())
                        .sql(", ")
                        .bind::<diesel::sql_types::Bool, _>(paused_is_paid)
                        .sql(")"))
                        .get_result(&mut conn)
                        .unwrap();
                        assert_eq!(
                            sql, rust,
                            "{status} since {since:?} paused {paused} grace {days} paused_is_paid {paused_is_paid}"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 9 * 3 * 2 * 2 * 2);
}

#[actix_rt::test]
async fn a_past_due_user_keeps_access_in_the_grace_and_the_status_says_until_when() {
    let app = app_with_user(|_| {}).await;
    let t = now() - 3_600;

    app.deliver(&event(
        "evt_1",
        "customer.subscription.updated",
        t,
        subscription("past_due", t),
    ))
    .await;

    let status = status_of(&app).await;
    assert_eq!(status["paid"], true);
    assert_eq!(status["reason"], "past_due_in_grace");
    assert_eq!(status["graceEndsAt"], rfc3339(t + 14 * DAY));
    assert!(status["syncedAt"].is_string(), "{status}");
    assert!(app.user("user_1").unwrap().paid);
}

#[actix_rt::test]
async fn past_due_for_longer_than_the_grace_is_unpaid_in_the_status_and_the_column() {
    let app = app_with_user(|_| {}).await;
    let t = now() - 15 * DAY;

    app.deliver(&event(
        "evt_1",
        "customer.subscription.updated",
        t,
        subscription("past_due", t),
    ))
    .await;

    let status = status_of(&app).await;
    assert_eq!(status["paid"], false);
    assert_eq!(status["reason"], "past_due_grace_ended");
    assert!(!app.user("user_1").unwrap().paid);
}

#[actix_rt::test]
async fn the_grace_counts_from_when_the_subscription_became_past_due_not_from_its_last_event() {
    let app = app_with_user(|vars| {
        vars.insert("BILLING_PAST_DUE_GRACE_DAYS".into(), "3".into());
    })
    .await;
    let t = now() - 4 * DAY;
    app.deliver(&event(
        "evt_1",
        "customer.subscription.updated",
        t,
        subscription("past_due", t),
    ))
    .await;
    // A later change that leaves it past due (Stripe retried and failed again).
    let mut later = subscription("past_due", t);
    later["cancel_at"] = json!(t + 30 * DAY);
    app.deliver(&event(
        "evt_2",
        "customer.subscription.updated",
        now() - 60,
        later,
    ))
    .await;

    let status = status_of(&app).await;
    assert_eq!(status["reason"], "past_due_grace_ended");
    assert_eq!(status["graceEndsAt"], rfc3339(t + 3 * DAY));
    assert!(!app.user("user_1").unwrap().paid);
}

#[actix_rt::test]
async fn the_sweep_turns_users_paid_off_when_a_grace_ends_with_no_new_event() {
    let app = app_with_user(|_| {}).await;
    let t = now() - 60;
    app.deliver(&event(
        "evt_1",
        "customer.subscription.updated",
        t,
        subscription("past_due", t),
    ))
    .await;
    assert!(app.user("user_1").unwrap().paid);
    // A second instance's view of the same database and rule (14 days' grace).
    let clock = Clock::system();
    let billing = context::build(&app.settings, StripeTarget::Configured, clock.clone())
        .await
        .unwrap();

    let before = sweep::sweep_once(&billing).await.unwrap();
    clock.advance(14 * DAY);
    let after = sweep::sweep_once(&billing).await.unwrap();

    assert_eq!((before, after), (0, 1));
    assert!(!app.user("user_1").unwrap().paid);
}

#[actix_rt::test]
async fn paused_collection_grants_access_only_when_configured_to() {
    for (setting, paid) in [("true", true), ("false", false)] {
        let app = app_with_user(|vars| {
            vars.insert("BILLING_COLLECTION_PAUSED_IS_PAID".into(), setting.into());
        })
        .await;
        let t = now() - 60;
        let mut sub = subscription("active", t);
        sub["pause_collection"] = json!({"behavior": "keep_as_draft", "resumes_at": t + DAY});

        app.deliver(&event("evt_1", "customer.subscription.updated", t, sub))
            .await;

        let status = status_of(&app).await;
        assert_eq!(status["status"], "active", "setting {setting}");
        assert_eq!(status["reason"], "collection_paused", "setting {setting}");
        assert_eq!(status["paid"], paid, "setting {setting}");
        assert_eq!(app.user("user_1").unwrap().paid, paid, "setting {setting}");
    }
}

#[actix_rt::test]
async fn a_flexible_mode_cancellation_is_reported_as_cancel_at() {
    let app = app_with_user(|_| {}).await;
    let t = now() - 60;
    let mut sub = subscription("active", t);
    sub["cancel_at"] = json!(t + 30 * DAY);
    sub["cancel_at_period_end"] = json!(false);

    app.deliver(&event_with_previous(
        "evt_1",
        "customer.subscription.updated",
        t,
        sub,
        json!({"cancel_at": null}),
    ))
    .await;

    let status = status_of(&app).await;
    assert_eq!(status["cancelAt"], rfc3339(t + 30 * DAY));
    assert_eq!(status["cancelAtPeriodEnd"], false);
    assert_eq!(status["paid"], true);
    assert_eq!(status["reason"], "active");
}

#[actix_rt::test]
async fn a_user_without_a_subscription_is_explained_as_such() {
    let app = app_with_user(|_| {}).await;

    let status = status_of(&app).await;

    assert_eq!(status["reason"], "no_subscription");
    assert_eq!(status["cancelAt"], Value::Null);
    assert_eq!(status["graceEndsAt"], Value::Null);
    assert_eq!(status["syncedAt"], Value::Null);
}

/// Cancel and renew in the same second: each event's previous_attributes
/// describe the other, so neither order can be read from them. Stripe's
/// current state decides, whatever STRIPE_WEBHOOK_REFETCH says.
#[actix_rt::test]
async fn same_second_events_that_cannot_be_ordered_are_settled_by_reading_stripe() {
    let app = app_with_user(|_| {}).await;
    let t = now() - 60;
    let end = t + 30 * DAY;
    let renewed = subscription("active", t);
    let mut canceling = renewed.clone();
    canceling["cancel_at"] = json!(end);
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions/sub_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&renewed))
        .expect(1)
        .mount(&app.stripe)
        .await;
    let cancel = event_with_previous(
        "evt_cancel",
        "customer.subscription.updated",
        t,
        canceling,
        json!({"cancel_at": null}),
    );
    let renew = event_with_previous(
        "evt_renew",
        "customer.subscription.updated",
        t,
        renewed,
        json!({"cancel_at": end}),
    );

    assert_eq!(app.deliver(&renew).await.status(), 200);
    assert_eq!(app.deliver(&cancel).await.status(), 200);

    assert_eq!(status_of(&app).await["cancelAt"], Value::Null);
    assert_eq!(app.event_outcome("evt_cancel"), "applied");
}

#[actix_rt::test]
async fn a_tie_whose_stripe_read_fails_is_not_acknowledged_so_stripe_redelivers_it() {
    let app = app_with_user(|_| {}).await;
    let t = now() - 60;
    let mut first = subscription("active", t);
    first["items"]["data"][0]["price"]["id"] = json!("price_a");
    let mut second = subscription("active", t);
    second["items"]["data"][0]["price"]["id"] = json!("price_b");
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions/sub_1"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"error": {
            "type": "api_error", "message": "boom"}})))
        .mount(&app.stripe)
        .await;

    app.deliver(&event("evt_a", "customer.subscription.updated", t, first))
        .await;
    let response = app
        .deliver(&event("evt_b", "customer.subscription.updated", t, second))
        .await;

    assert_eq!(response.status(), 502);
    assert_eq!(app.count("stripe_events"), 1, "evt_b must stay unrecorded");
}

fn fetched(status: &str, price: &str) -> billing_portal::stripe::events::SubscriptionObject {
    let mut sub = subscription(status, now());
    sub["items"]["data"][0]["price"]["id"] = json!(price);
    parse_subscription(sub.to_string().as_bytes()).unwrap()
}

/// Stores what a fetch that started at `started_at` read, as `sync` and the
/// tie-break do.
fn store_fetched(
    conn: &mut PgConnection,
    status: &str,
    price: &str,
    started_at: DateTime<Utc>,
) -> Outcome {
    apply_subscription(
        conn,
        &fetched(status, price),
        &Provenance::Fetch { started_at },
        PaidRule::new(14, true),
        Utc::now(),
    )
    .unwrap()
}

#[actix_rt::test]
async fn a_fetch_that_started_before_the_stored_state_was_written_does_not_overwrite_it() {
    let app = app_with_user(|_| {}).await;
    let mut conn = app.db();
    let started_late = Utc::now();
    let started_early = started_late - TimeDelta::seconds(5);

    let newer = store_fetched(&mut conn, "active", "price_newer", started_late);
    let older = store_fetched(&mut conn, "active", "price_older", started_early);

    assert_eq!((newer, older), (Outcome::Applied, Outcome::Stale));
    assert_eq!(status_of(&app).await["priceId"], "price_newer");
}

#[actix_rt::test]
async fn a_fetch_does_not_overwrite_a_same_second_event_written_after_it_started() {
    let app = app_with_user(|_| {}).await;
    let started_at = Utc::now();
    // The event's second is the fetch's, and it lands while the fetch runs.
    let created = started_at.timestamp();
    let mut sub = subscription("active", created);
    sub["items"]["data"][0]["price"]["id"] = json!("price_event");
    app.deliver(&event(
        "evt_1",
        "customer.subscription.updated",
        created,
        sub,
    ))
    .await;

    let outcome = store_fetched(&mut app.db(), "active", "price_fetched", started_at);

    assert_eq!(outcome, Outcome::Stale);
    assert_eq!(status_of(&app).await["priceId"], "price_event");
}

#[actix_rt::test]
async fn a_fetch_overwrites_an_event_from_an_earlier_second() {
    let app = app_with_user(|_| {}).await;
    let t = now() - 60;
    app.deliver(&event(
        "evt_1",
        "customer.subscription.updated",
        t,
        subscription("past_due", t),
    ))
    .await;

    let outcome = store_fetched(&mut app.db(), "active", "price_pro_monthly", Utc::now());

    assert_eq!(outcome, Outcome::Applied);
    assert_eq!(status_of(&app).await["reason"], "active");
}

/// Bad input inside a verified event: stored leniently, nothing panics,
/// nothing else changes.
#[actix_rt::test]
async fn malformed_optional_fields_are_read_leniently_and_change_nothing_else() {
    let app = app_with_user(|_| {}).await;
    let t = now() - 60;
    let mut sub = subscription("active", t);
    sub["cancel_at"] = json!("next tuesday");
    sub["pause_collection"] = json!({"behavior": "hibernate", "resumes_at": "later"});
    let mut body = event("evt_1", "customer.subscription.updated", t, sub);
    body["data"]["previous_attributes"] = json!("not an object");

    let response = app.deliver(&body).await;

    assert_eq!(response.status(), 200);
    assert_eq!(app.event_outcome("evt_1"), "applied");
    let status = status_of(&app).await;
    assert_eq!(status["status"], "active");
    assert_eq!(status["cancelAt"], Value::Null);
    // An unknown pause behaviour is still a pause: stored verbatim.
    assert_eq!(status["reason"], "collection_paused");
    assert_eq!(status["priceId"], "price_pro_monthly");
    assert_eq!(app.count("subscriptions"), 1);
}

#[actix_rt::test]
async fn every_reason_code_is_in_the_openapi_description() {
    let app = spawn_app().await;
    let doc: Value = app.get_json("/openapi.json").await;
    let description = doc["components"]["schemas"]["StatusData"]["properties"]["reason"]
        ["description"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for reason in Reason::ALL {
        assert!(
            description.contains(&format!("`{}`", reason.as_str())),
            "{} missing from {description}",
            reason.as_str()
        );
    }
}
