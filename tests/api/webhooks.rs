use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::support::*;

const DAY: i64 = 86_400;

async fn app_with_linked_user() -> TestApp {
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();
    app
}

fn sub_event(id: &str, type_: &str, created: i64, status: &str) -> Value {
    event(
        id,
        type_,
        created,
        current_subscription("sub_1", "cus_1", status, created + 30 * DAY),
    )
}

async fn assert_refused(app: &TestApp, response: reqwest::Response, code: &str) {
    assert_eq!(response.status(), 400, "expected {code}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], code);
    assert_eq!(app.count("stripe_events"), 0);
    assert_eq!(app.count("subscriptions"), 0);
}

fn signed_body() -> Vec<u8> {
    serde_json::to_vec(&sub_event(
        "evt_1",
        "customer.subscription.created",
        now(),
        "active",
    ))
    .unwrap()
}

// --- Signature: vectors computed by openssl, not by our signer.

#[actix_rt::test]
async fn a_validly_signed_event_is_received_and_stored() {
    let app = app_with_linked_user().await;
    let body = signed_body();

    let response = app
        .post_webhook(
            &body,
            Some(&openssl_signature(WEBHOOK_SECRET, now(), &body)),
        )
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), r#"{"received":true}"#);
    assert_eq!(app.count("stripe_events"), 1);
    assert!(app.user("user_1").unwrap().paid);
}

#[actix_rt::test]
async fn a_tampered_body_is_refused() {
    let app = app_with_linked_user().await;
    let body = signed_body();
    let signature = openssl_signature(WEBHOOK_SECRET, now(), &body);
    let tampered = String::from_utf8(body)
        .unwrap()
        .replace("active", "trialing");

    let response = app
        .post_webhook(tampered.as_bytes(), Some(&signature))
        .await;

    assert_refused(&app, response, "signature_mismatch").await;
}

#[actix_rt::test]
async fn a_signature_made_with_another_secret_is_refused() {
    let app = app_with_linked_user().await;
    let body = signed_body();

    let response = app
        .post_webhook(
            &body,
            Some(&openssl_signature("whsec_attacker", now(), &body)),
        )
        .await;

    assert_refused(&app, response, "signature_mismatch").await;
}

#[actix_rt::test]
async fn the_second_configured_secret_is_accepted_while_rolling() {
    let app = spawn_app_with(|vars| {
        vars.insert(
            "STRIPE_WEBHOOK_SECRET".into(),
            "whsec_previous,whsec_rolled".into(),
        );
    })
    .await;
    let body = signed_body();

    let response = app
        .post_webhook(
            &body,
            Some(&openssl_signature("whsec_rolled", now(), &body)),
        )
        .await;

    assert_eq!(response.status(), 200);
}

#[actix_rt::test]
async fn two_v1_signatures_with_one_valid_are_accepted() {
    let app = app_with_linked_user().await;
    let body = signed_body();
    let t = now();
    let good = openssl_signature(WEBHOOK_SECRET, t, &body);
    let bad = openssl_signature("whsec_other", t, &body);
    let header = format!(
        "{},{},v0=deadbeef,{}",
        bad,
        good.split(',').nth(1).unwrap(),
        "scheme9=whatever"
    );

    let response = app.post_webhook(&body, Some(&header)).await;

    assert_eq!(response.status(), 200);
}

#[actix_rt::test]
async fn a_timestamp_older_than_the_tolerance_is_refused() {
    let app = app_with_linked_user().await;
    let body = signed_body();

    let response = app
        .post_webhook(
            &body,
            Some(&openssl_signature(WEBHOOK_SECRET, now() - 301, &body)),
        )
        .await;

    assert_refused(&app, response, "timestamp_out_of_tolerance").await;
}

async fn clock_skew_count(app: &TestApp) -> f64 {
    let text = app.get_text("/metrics").await;
    text.lines()
        .find(|l| l.starts_with("billing_portal_webhook_clock_skew_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no clock skew counter in:\n{text}"))
}

/// Stripe's libraries refuse only old timestamps (stripe-node `src/Webhooks.ts`, stripe-go
/// `webhook/client.go`): a host whose clock is behind must keep receiving events.
#[actix_rt::test]
async fn a_timestamp_further_in_the_future_than_the_tolerance_is_accepted_and_counted_as_clock_skew(
) {
    let app = app_with_linked_user().await;
    let body = signed_body();

    let response = app
        .post_webhook(
            &body,
            Some(&openssl_signature(WEBHOOK_SECRET, now() + 3600, &body)),
        )
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(app.count("stripe_events"), 1);
    assert!(app.user("user_1").unwrap().paid);
    assert_eq!(clock_skew_count(&app).await, 1.0);
}

#[actix_rt::test]
async fn a_timestamp_a_few_seconds_ahead_is_not_counted_as_clock_skew() {
    let app = app_with_linked_user().await;
    let body = signed_body();

    let response = app
        .post_webhook(
            &body,
            Some(&openssl_signature(WEBHOOK_SECRET, now() + 5, &body)),
        )
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(clock_skew_count(&app).await, 0.0);
}

#[actix_rt::test]
async fn a_header_without_a_timestamp_is_refused() {
    let app = app_with_linked_user().await;
    let body = signed_body();
    let signature = openssl_signature(WEBHOOK_SECRET, now(), &body);
    let without_t = signature.split(',').nth(1).unwrap();

    let response = app.post_webhook(&body, Some(without_t)).await;

    assert_refused(&app, response, "malformed_signature").await;
}

#[actix_rt::test]
async fn a_garbage_header_is_refused() {
    let app = app_with_linked_user().await;

    let response = app
        .post_webhook(&signed_body(), Some("this is not a signature"))
        .await;

    assert_refused(&app, response, "malformed_signature").await;
}

#[actix_rt::test]
async fn a_missing_header_is_refused() {
    let app = app_with_linked_user().await;

    let response = app.post_webhook(&signed_body(), None).await;

    assert_refused(&app, response, "missing_signature").await;
}

#[actix_rt::test]
async fn a_body_over_one_mebibyte_is_refused_with_413_json() {
    let app = app_with_linked_user().await;
    let body = vec![b' '; 1024 * 1024 + 1];

    let response = app
        .post_webhook(
            &body,
            Some(&openssl_signature(WEBHOOK_SECRET, now(), &body)),
        )
        .await;

    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "payload_too_large");
    assert_eq!(app.count("stripe_events"), 0);
}

#[actix_rt::test]
async fn a_verified_payload_that_is_not_an_event_is_refused() {
    let app = app_with_linked_user().await;
    let body = br#"{"hello":"world"}"#;

    let response = app
        .post_webhook(body, Some(&openssl_signature(WEBHOOK_SECRET, now(), body)))
        .await;

    assert_refused(&app, response, "invalid_event").await;
}

#[actix_rt::test]
async fn a_signed_event_that_could_never_be_stored_is_refused_for_good() {
    // A 500 would make Stripe retry it for three days; Postgres text holds no
    // NUL, and Stripe's ids are at most 255 characters.
    let app = app_with_linked_user().await;
    let nul_id = sub_event(
        "evt_\u{0}x",
        "customer.subscription.created",
        now(),
        "active",
    );
    let long_id = sub_event(
        &format!("evt_{}", "x".repeat(5000)),
        "customer.subscription.created",
        now(),
        "active",
    );
    let mut nul_customer = sub_event("evt_3", "customer.subscription.created", now(), "active");
    nul_customer["data"]["object"]["customer"] = json!("cus_\u{0}1");

    for event in [nul_id, long_id, nul_customer] {
        let response = app.deliver(&event).await;
        assert_refused(&app, response, "invalid_event").await;
    }
}

#[actix_rt::test]
async fn an_event_dated_far_in_the_future_cannot_freeze_the_subscription() {
    // A `created` beyond the signature tolerance (300 s) is ordered as if it
    // were now, so the real events that follow it still apply.
    let app = app_with_linked_user().await;
    let token = token_for("user_1", None);
    let far = now() + 10 * DAY;
    app.deliver(&sub_event(
        "evt_far",
        "customer.subscription.created",
        far,
        "past_due",
    ))
    .await;

    let later = now() + 2;
    let response = app
        .deliver(&sub_event(
            "evt_real",
            "customer.subscription.updated",
            later,
            "active",
        ))
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(app.event_outcome("evt_real"), "applied");
    assert_eq!(app.status(&token).await["data"]["status"], "active");
}

// --- What events do.

#[actix_rt::test]
async fn an_active_subscription_makes_the_user_paid_and_deletion_makes_them_unpaid() {
    let app = app_with_linked_user().await;
    let token = token_for("user_1", None);
    let t = now() - 100;

    app.deliver(&sub_event(
        "evt_1",
        "customer.subscription.created",
        t,
        "active",
    ))
    .await;
    let paid = app.status(&token).await;
    app.deliver(&sub_event(
        "evt_2",
        "customer.subscription.deleted",
        t + 10,
        "canceled",
    ))
    .await;
    let unpaid = app.status(&token).await;

    assert_eq!(paid["message"], "billing status");
    assert_eq!(paid["data"]["paid"], true);
    assert_eq!(paid["data"]["status"], "active");
    assert_eq!(paid["data"]["priceId"], "price_pro_monthly");
    assert_eq!(paid["data"]["productId"], "prod_pro");
    assert_eq!(
        paid["data"]["currentPeriodEnd"],
        chrono::DateTime::from_timestamp(t + 30 * DAY, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    assert_eq!(paid["data"]["cancelAtPeriodEnd"], false);
    assert_eq!(unpaid["data"]["paid"], false);
    assert_eq!(unpaid["data"]["status"], "canceled");
}

#[actix_rt::test]
async fn old_api_version_payloads_update_the_status_too() {
    let app = app_with_linked_user().await;
    let token = token_for("user_1", None);
    let t = now() - 100;
    let old = |id: &str, type_: &str, created: i64, status: &str| {
        event(
            id,
            type_,
            created,
            old_subscription("sub_1", "cus_1", status, t + 30 * DAY),
        )
    };

    app.deliver(&old("evt_1", "customer.subscription.created", t, "active"))
        .await;
    let paid = app.status(&token).await;
    app.deliver(&old(
        "evt_2",
        "customer.subscription.deleted",
        t + 1,
        "canceled",
    ))
    .await;
    let unpaid = app.status(&token).await;

    assert_eq!(paid["data"]["paid"], true);
    assert_eq!(paid["data"]["priceId"], "plan_legacy");
    assert_eq!(paid["data"]["productId"], "prod_legacy");
    assert!(paid["data"]["currentPeriodEnd"].is_string());
    assert_eq!(unpaid["data"]["paid"], false);
}

#[actix_rt::test]
async fn a_redelivered_event_answers_200_and_changes_nothing() {
    let app = app_with_linked_user().await;
    let t = now() - 100;
    let created = sub_event("evt_1", "customer.subscription.created", t, "active");
    app.deliver(&created).await;
    app.deliver(&sub_event(
        "evt_2",
        "customer.subscription.updated",
        t + 10,
        "past_due",
    ))
    .await;

    let again = app.deliver(&created).await;

    assert_eq!(again.status(), 200);
    assert_eq!(app.count("stripe_events"), 2);
    assert_eq!(
        app.status(&token_for("user_1", None)).await["data"]["status"],
        "past_due"
    );
}

#[actix_rt::test]
async fn the_same_event_delivered_ten_times_at_once_has_one_effect() {
    let app = app_with_linked_user().await;
    let created = sub_event(
        "evt_1",
        "customer.subscription.created",
        now() - 100,
        "active",
    );

    let responses = futures::future::join_all((0..10).map(|_| app.deliver(&created))).await;

    assert!(responses.iter().all(|r| r.status() == 200));
    assert_eq!(app.count("stripe_events"), 1);
    assert_eq!(app.count("subscriptions"), 1);
    assert!(app.user("user_1").unwrap().paid);
}

#[actix_rt::test]
async fn an_older_event_arriving_late_never_overwrites_newer_state() {
    let app = app_with_linked_user().await;
    let t = now() - 100;
    app.deliver(&sub_event(
        "evt_new",
        "customer.subscription.updated",
        t + 10,
        "canceled",
    ))
    .await;

    let late = app
        .deliver(&sub_event(
            "evt_old",
            "customer.subscription.updated",
            t,
            "active",
        ))
        .await;

    assert_eq!(late.status(), 200);
    assert!(!app.user("user_1").unwrap().paid);
    assert_eq!(
        app.status(&token_for("user_1", None)).await["data"]["status"],
        "canceled"
    );
    assert_eq!(app.event_outcome("evt_old"), "stale");
}

#[actix_rt::test]
async fn a_cancellation_is_not_undone_by_another_event_of_the_same_second() {
    let app = app_with_linked_user().await;
    let t = now() - 100;
    app.deliver(&sub_event(
        "evt_a",
        "customer.subscription.deleted",
        t,
        "canceled",
    ))
    .await;

    app.deliver(&sub_event(
        "evt_b",
        "customer.subscription.updated",
        t,
        "active",
    ))
    .await;

    assert!(!app.user("user_1").unwrap().paid);
    assert_eq!(app.event_outcome("evt_b"), "stale");
}

#[actix_rt::test]
async fn past_due_is_paid_only_while_the_grace_setting_allows_it() {
    for (grace, expected) in [("14", true), ("0", false)] {
        let app = spawn_app_with(|vars| {
            vars.insert("BILLING_PAST_DUE_GRACE_DAYS".into(), grace.into());
        })
        .await;
        app.given().user("user_1").with_customer("cus_1").store();

        app.deliver(&sub_event(
            "evt_1",
            "customer.subscription.updated",
            now(),
            "past_due",
        ))
        .await;

        assert_eq!(app.user("user_1").unwrap().paid, expected, "grace={grace}");
    }
}

#[actix_rt::test]
async fn paused_and_unknown_statuses_are_unpaid() {
    let app = app_with_linked_user().await;
    let t = now() - 100;
    app.deliver(&sub_event(
        "evt_1",
        "customer.subscription.created",
        t,
        "active",
    ))
    .await;

    app.deliver(&sub_event(
        "evt_2",
        "customer.subscription.paused",
        t + 1,
        "paused",
    ))
    .await;
    let paused = app.user("user_1").unwrap().paid;
    app.deliver(&sub_event(
        "evt_3",
        "customer.subscription.resumed",
        t + 2,
        "active",
    ))
    .await;
    let resumed = app.user("user_1").unwrap().paid;
    app.deliver(&sub_event(
        "evt_4",
        "customer.subscription.updated",
        t + 3,
        "brand_new_status",
    ))
    .await;
    let unknown = app.user("user_1").unwrap().paid;

    assert_eq!((paused, resumed, unknown), (false, true, false));
}

#[actix_rt::test]
async fn an_unknown_customer_is_stored_without_a_user_and_linked_by_checkout() {
    let app = spawn_app().await;
    let t = now() - 100;
    app.deliver(&event(
        "evt_1",
        "customer.subscription.created",
        t,
        current_subscription("sub_9", "cus_unknown", "active", t + 30 * DAY),
    ))
    .await;
    assert_eq!(app.count("subscriptions"), 1);
    assert_eq!(app.count("users"), 0);

    app.deliver(&event(
        "evt_2",
        "checkout.session.completed",
        t + 1,
        json!({"id": "cs_1", "object": "checkout.session", "mode": "subscription",
               "customer": "cus_unknown",
               "client_reference_id": signed_reference("user_7", None),
               "subscription": "sub_9"}),
    ))
    .await;

    let user = app.user("user_7").unwrap();
    assert_eq!(user.stripe_customer_id.as_deref(), Some("cus_unknown"));
    assert!(user.paid);
}

#[actix_rt::test]
async fn checkout_never_replaces_a_customer_the_user_already_has() {
    let app = app_with_linked_user().await;

    app.deliver(&event(
        "evt_1",
        "checkout.session.completed",
        now(),
        json!({"id": "cs_1", "object": "checkout.session", "customer": "cus_other",
               "client_reference_id": signed_reference("user_1", None)}),
    ))
    .await;

    assert_eq!(
        app.user("user_1").unwrap().stripe_customer_id.as_deref(),
        Some("cus_1")
    );
}

// --- Linking a checkout's customer to a user (issue 15, item 5): only when
// the buyer cannot have chosen whom.

/// A subscription of a customer no user holds yet, then its checkout session.
async fn checkout_of_an_unknown_customer(app: &TestApp, session: Value) -> reqwest::Response {
    let t = now() - 100;
    app.deliver(&event(
        "evt_sub",
        "customer.subscription.created",
        t,
        current_subscription("sub_9", "cus_buyer", "active", t + 30 * DAY),
    ))
    .await;
    let mut object = json!({"id": "cs_1", "object": "checkout.session", "mode": "subscription",
                            "customer": "cus_buyer", "subscription": "sub_9"});
    object
        .as_object_mut()
        .unwrap()
        .extend(session.as_object().unwrap().clone());
    app.deliver(&event(
        "evt_checkout",
        "checkout.session.completed",
        t + 1,
        object,
    ))
    .await
}

/// Payment Links and pricing tables take `client_reference_id` from the URL
/// the buyer opens: whoever buys can name any user.
#[actix_rt::test]
async fn a_bare_client_reference_id_links_nobody_and_is_recorded_as_unverified() {
    let app = spawn_app().await;
    app.given().user("user_victim").store();

    let response =
        checkout_of_an_unknown_customer(&app, json!({"client_reference_id": "user_victim"})).await;

    assert_eq!(response.status(), 200);
    assert_eq!(app.event_outcome("evt_checkout"), "unverified_reference");
    let victim = app.user("user_victim").unwrap();
    assert_eq!(victim.stripe_customer_id, None);
    assert!(!victim.paid);
    assert_eq!(app.count("subscriptions WHERE user_id IS NULL"), 1);
}

#[actix_rt::test]
async fn a_checkout_session_with_metadata_user_id_links_its_customer_to_that_user() {
    let app = spawn_app().await;

    checkout_of_an_unknown_customer(&app, json!({"metadata": {"user_id": "user_7"}})).await;

    let user = app.user("user_7").unwrap();
    assert_eq!(user.stripe_customer_id.as_deref(), Some("cus_buyer"));
    assert!(user.paid);
    assert_eq!(app.event_outcome("evt_checkout"), "applied");
}

#[actix_rt::test]
async fn a_client_reference_id_signed_as_the_readme_documents_links_its_customer() {
    let app = spawn_app().await;

    checkout_of_an_unknown_customer(
        &app,
        json!({"client_reference_id": signed_reference("user_7", None)}),
    )
    .await;

    let user = app.user("user_7").unwrap();
    assert_eq!(user.stripe_customer_id.as_deref(), Some("cus_buyer"));
    assert!(user.paid);
    assert_eq!(app.event_outcome("evt_checkout"), "applied");
}

#[actix_rt::test]
async fn with_client_reference_secret_set_references_are_signed_with_it() {
    let secret = "a-client-reference-secret-of-32-bytes";
    let app = spawn_app_with(|vars| {
        vars.insert("CLIENT_REFERENCE_SECRET".into(), secret.into());
    })
    .await;

    checkout_of_an_unknown_customer(
        &app,
        json!({"client_reference_id": signed_reference("user_7", Some(secret))}),
    )
    .await;

    let user = app.user("user_7").unwrap();
    assert_eq!(user.stripe_customer_id.as_deref(), Some("cus_buyer"));
    assert!(user.paid);
}

#[actix_rt::test]
async fn a_reference_signed_for_another_user_or_with_another_key_links_nobody() {
    let for_someone_else =
        signed_reference("user_attacker", None).replacen("user_attacker", "user_victim", 1);
    let with_another_key = signed_reference("user_victim", Some("not-the-service-secret"));
    let truncated = signed_reference("user_victim", None);
    let truncated = truncated[..truncated.len() - 1].to_string();
    let app = spawn_app().await;
    app.given().user("user_victim").store();

    for (i, reference) in [for_someone_else, with_another_key, truncated]
        .into_iter()
        .enumerate()
    {
        let id = format!("evt_checkout_{i}");
        let response = app
            .deliver(&event(
                &id,
                "checkout.session.completed",
                now(),
                json!({"id": format!("cs_{i}"), "object": "checkout.session",
                       "customer": format!("cus_buyer_{i}"), "client_reference_id": reference}),
            ))
            .await;

        assert_eq!(response.status(), 200, "{reference}");
        assert_eq!(
            app.event_outcome(&id),
            "unverified_reference",
            "{reference}"
        );
    }
    assert_eq!(app.user("user_victim").unwrap().stripe_customer_id, None);
    assert_eq!(app.count("users"), 1);
}

#[actix_rt::test]
async fn metadata_user_id_names_the_user_when_the_customer_is_unknown() {
    let app = spawn_app().await;
    app.given().user("user_5").store();
    let mut sub = current_subscription("sub_5", "cus_5", "trialing", now() + 30 * DAY);
    sub["metadata"] = json!({"user_id": "user_5"});

    app.deliver(&event("evt_1", "customer.subscription.created", now(), sub))
        .await;

    let user = app.user("user_5").unwrap();
    assert!(user.paid);
    assert_eq!(user.stripe_customer_id.as_deref(), Some("cus_5"));
}

// --- Subscriptions that change hands (issue 15, item 11).

/// `sub_x` of `cus_x`, naming `user` in `metadata.user_id`.
fn sub_naming(id: &str, created: i64, user: &str) -> Value {
    let mut sub = current_subscription("sub_x", "cus_x", "active", created + 30 * DAY);
    sub["metadata"] = json!({ "user_id": user });
    event(id, "customer.subscription.updated", created, sub)
}

#[actix_rt::test]
async fn a_subscription_moved_by_metadata_user_id_leaves_its_previous_holder_unpaid() {
    let app = spawn_app().await;
    // user_b holds another customer, so cus_x stays unlinked and the
    // subscription is theirs by metadata alone.
    app.given().user("user_b").with_customer("cus_b").store();
    let t = now() - 100;
    app.deliver(&sub_naming("evt_1", t, "user_b")).await;
    assert!(app.user("user_b").unwrap().paid);

    app.deliver(&sub_naming("evt_2", t + 10, "user_c")).await;

    assert!(app.user("user_c").unwrap().paid);
    assert!(!app.user("user_b").unwrap().paid);
    assert_eq!(app.count("subscriptions WHERE user_id = 'user_c'"), 1);
}

#[actix_rt::test]
async fn a_customer_linked_by_checkout_takes_its_subscriptions_from_whoever_metadata_named() {
    let app = spawn_app().await;
    app.given().user("user_b").with_customer("cus_b").store();
    let t = now() - 100;
    app.deliver(&sub_naming("evt_1", t, "user_b")).await;
    assert!(app.user("user_b").unwrap().paid);

    app.deliver(&event(
        "evt_checkout",
        "checkout.session.completed",
        t + 10,
        json!({"id": "cs_1", "object": "checkout.session", "customer": "cus_x",
               "client_reference_id": "user_a", "metadata": {"user_id": "user_a"},
               "subscription": "sub_x"}),
    ))
    .await;

    let owner = app.user("user_a").unwrap();
    assert_eq!(owner.stripe_customer_id.as_deref(), Some("cus_x"));
    assert!(owner.paid);
    assert!(!app.user("user_b").unwrap().paid);
    assert_eq!(app.count("subscriptions WHERE user_id = 'user_a'"), 1);
}

#[actix_rt::test]
async fn metadata_user_id_never_takes_a_subscription_from_its_customers_owner() {
    let app = spawn_app().await;
    app.given().user("user_a").with_customer("cus_x").store();
    let t = now() - 100;

    app.deliver(&sub_naming("evt_1", t, "user_b")).await;

    assert_eq!(app.event_outcome("evt_1"), "applied");
    assert!(app.user("user_a").unwrap().paid);
    assert!(app.user("user_b").is_none());
    assert_eq!(app.count("subscriptions WHERE user_id = 'user_a'"), 1);
}

#[actix_rt::test]
async fn a_deleted_customer_is_forgotten_and_its_user_becomes_unpaid() {
    let app = app_with_linked_user().await;
    let t = now() - 100;
    app.deliver(&sub_event(
        "evt_1",
        "customer.subscription.created",
        t,
        "active",
    ))
    .await;

    app.deliver(&event(
        "evt_2",
        "customer.deleted",
        t + 5,
        json!({"id": "cus_1", "object": "customer", "deleted": true}),
    ))
    .await;

    let user = app.user("user_1").unwrap();
    assert!(!user.paid);
    assert_eq!(user.stripe_customer_id, None);
}

#[actix_rt::test]
async fn an_unhandled_event_type_is_acknowledged_and_recorded_as_ignored() {
    let app = app_with_linked_user().await;

    let response = app
        .deliver(&event(
            "evt_1",
            "invoice.paid",
            now(),
            json!({"id": "in_1", "object": "invoice"}),
        ))
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(app.event_outcome("evt_1"), "ignored");
}

#[actix_rt::test]
async fn with_refetch_the_subscription_is_read_from_stripe_before_applying() {
    let app = spawn_app_with(|vars| {
        vars.insert("STRIPE_WEBHOOK_REFETCH".into(), "true".into());
    })
    .await;
    app.given().user("user_1").with_customer("cus_1").store();
    let t = now() - 100;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions/sub_1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(current_subscription(
                "sub_1",
                "cus_1",
                "canceled",
                t + 30 * DAY,
            )),
        )
        .expect(1)
        .mount(&app.stripe)
        .await;
    let stale_payload = sub_event("evt_1", "customer.subscription.updated", t, "active");

    let first = app.deliver(&stale_payload).await;
    let redelivered = app.deliver(&stale_payload).await;

    assert_eq!(
        (first.status().as_u16(), redelivered.status().as_u16()),
        (200, 200)
    );
    let status = app.status(&token_for("user_1", None)).await;
    assert_eq!(status["data"]["status"], "canceled");
    assert_eq!(status["data"]["paid"], false);
}

#[actix_rt::test]
async fn while_the_database_is_down_events_are_refused_and_applied_once_redelivered() {
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let app = spawn_app_with(|vars| route_database_through(vars, &proxy)).await;
    app.given().user("user_1").with_customer("cus_1").store();
    let created = sub_event(
        "evt_1",
        "customer.subscription.created",
        now() - 10,
        "active",
    );

    proxy.cut();
    let refused = app.deliver(&created).await;
    proxy.restore();
    let redelivered = app.deliver(&created).await;

    assert!(refused.status().is_server_error(), "{}", refused.status());
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "database_unavailable");
    assert_eq!(redelivered.status(), 200);
    assert_eq!(app.count("stripe_events"), 1);
    assert!(app.user("user_1").unwrap().paid);
}

// --- Test and live mode (issue 15, item 6).

fn metric_value(metrics: &str, line_start: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A test-mode webhook secret beside a live key (`stripe listen` prints one):
/// a test-mode checkout must not make anyone paid on the live instance.
#[actix_rt::test]
async fn a_test_mode_event_on_a_live_instance_is_acknowledged_as_wrong_mode_and_changes_nothing() {
    let app = spawn_app_with(live_instance).await;
    app.given().user("user_1").with_customer("cus_1").store();
    let t = now() - 100;
    let mut checkout = event(
        "evt_checkout",
        "checkout.session.completed",
        t,
        json!({"id": "cs_1", "object": "checkout.session", "customer": "cus_9",
               "metadata": {"user_id": "user_9"}, "subscription": "sub_9"}),
    );
    checkout["livemode"] = json!(false);
    let test_mode = sub_event("evt_test", "customer.subscription.created", t, "active");
    assert_eq!(test_mode["livemode"], false);

    let responses = [
        app.deliver(&test_mode).await.status(),
        app.deliver(&checkout).await.status(),
        app.deliver(&test_mode).await.status(),
    ];

    assert_eq!(responses.map(|s| s.as_u16()), [200, 200, 200]);
    assert_eq!(app.event_outcome("evt_test"), "wrong_mode");
    assert_eq!(app.event_outcome("evt_checkout"), "wrong_mode");
    assert_eq!(app.count("subscriptions"), 0);
    assert!(!app.user("user_1").unwrap().paid);
    assert!(app.user("user_9").is_none());
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(LIVE_METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric_value(
            &metrics,
            r#"billing_portal_webhook_events_total{outcome="wrong_mode",type="customer.subscription.created"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
}

#[actix_rt::test]
async fn a_live_mode_event_applies_on_a_live_instance_and_changes_nothing_on_a_test_one() {
    // rk_live_/rk_test_ keys: `live_keys_are_live_and_every_other_key_is_test`.
    for (key, expected) in [
        (LIVE_STRIPE_KEY, "applied"),
        ("sk_test_fake_key_for_tests", "wrong_mode"),
    ] {
        let app = spawn_app_with(|vars| {
            if key.starts_with("sk_live_") {
                live_instance(vars);
            } else {
                vars.insert("STRIPE_SECRET_KEY".into(), key.into());
            }
        })
        .await;
        app.given().user("user_1").with_customer("cus_1").store();
        let mut live = sub_event("evt_live", "customer.subscription.created", now(), "active");
        live["livemode"] = json!(true);

        assert_eq!(app.deliver(&live).await.status(), 200, "{key}");

        assert_eq!(app.event_outcome("evt_live"), expected, "{key}");
        assert_eq!(
            app.user("user_1").unwrap().paid,
            expected == "applied",
            "{key}"
        );
    }
}

// --- Issue 16, item 4: webhook health you can see (the delivery side).

const SIGNATURE_FAILURES: &str = "billing_portal_webhook_signature_failures_total";
const LAST_VERIFIED_AGE: &str = "billing_portal_webhook_last_verified_delivery_age_seconds";

/// The value of the `SIGNATURE_FAILURES` series for `reason`, if it is there.
fn signature_failures(metrics: &str, reason: &str) -> Option<f64> {
    metric_value(
        metrics,
        &format!(r#"{SIGNATURE_FAILURES}{{reason="{reason}"}} "#),
    )
}

/// The age gauge, or `None` while it is absent.
fn last_verified_age(metrics: &str) -> Option<f64> {
    metric_value(metrics, &format!("{LAST_VERIFIED_AGE} "))
}

/// Signed correctly, of a type the service does not act on: verified, stored, changes nothing.
fn harmless_event(id: &str) -> Value {
    event(id, "made_up.health_check", now(), json!({"id": "obj_1"}))
}

#[actix_rt::test]
async fn each_refused_signature_is_counted_under_its_reason_and_every_reason_starts_at_zero() {
    let app = app_with_linked_user().await;
    let body = signed_body();
    let before = app.get_text("/metrics").await;

    let refusals = [
        app.post_webhook(&body, None).await,
        app.post_webhook(&body, Some("hello")).await,
        app.post_webhook(
            &body,
            Some(&openssl_signature(WEBHOOK_SECRET, now() - 301, &body)),
        )
        .await,
        app.post_webhook(&body, Some(&openssl_signature("whsec_old", now(), &body)))
            .await,
        app.post_webhook(&body, Some(&openssl_signature("whsec_old", now(), &body)))
            .await,
    ];

    assert!(refusals.iter().all(|r| r.status() == 400));
    let after = app.get_text("/metrics").await;
    for (reason, count) in [
        ("missing_signature", 1.0),
        ("malformed_signature", 1.0),
        ("timestamp_out_of_tolerance", 1.0),
        ("signature_mismatch", 2.0),
    ] {
        assert_eq!(signature_failures(&before, reason), Some(0.0), "{reason}");
        assert_eq!(signature_failures(&after, reason), Some(count), "{reason}");
    }
}

#[actix_rt::test]
async fn the_last_verified_delivery_age_is_absent_until_a_delivery_verifies_then_near_zero() {
    let app = app_with_linked_user().await;
    let body = signed_body();
    let refused = app
        .post_webhook(&body, Some(&openssl_signature("whsec_old", now(), &body)))
        .await;
    let refused_only = app.get_text("/metrics").await;
    let started = std::time::Instant::now();

    let verified = app.deliver(&harmless_event("evt_health")).await;
    let age = last_verified_age(&app.get_text("/metrics").await);

    // Bounded by this test's own stopwatch, not by how fast the machine is.
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(
        (refused.status().as_u16(), verified.status().as_u16()),
        (400, 200)
    );
    assert_eq!(last_verified_age(&refused_only), None, "{refused_only}");
    let age = age.expect("the age is shown once a delivery verified");
    assert!(
        (0.0..=elapsed + 1.0).contains(&age),
        "{age} after {elapsed} s"
    );
}

#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn the_last_verified_delivery_age_grows_with_the_billing_clock() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let started = std::time::Instant::now();
    assert_eq!(
        app.deliver(&harmless_event("evt_health")).await.status(),
        200
    );

    advance_billing_clock(&app.client, &app.address, 3600).await;
    let age = last_verified_age(&app.get_text("/metrics").await);

    let elapsed = started.elapsed().as_secs_f64();
    let age = age.expect("the age is shown once a delivery verified");
    // The advance counts from the emulator's own reading, whole seconds.
    assert!(
        (3599.0..=3601.0 + elapsed).contains(&age),
        "{age} an hour later, {elapsed} s on the wall"
    );
}

/// A secret rolled on one side only: every delivery is refused, and the log says so once,
/// naming the setting, rather than once per delivery. Ten minutes pass on the instance's
/// billing clock (the emulator's test clock), not on the wall.
#[cfg(feature = "emulator")]
#[actix_rt::test]
async fn ten_minutes_of_deliveries_that_match_no_secret_are_logged_once_until_one_verifies_again() {
    let app = spawn_app().await;
    let instance = Instance::start_emulated_logging(&app).await;
    let base = &instance.base;
    let refuse = |n: usize| {
        let client = app.client.clone();
        let base = base.clone();
        async move {
            for _ in 0..n {
                let body = signed_body();
                let status = client
                    .post(format!("{base}/webhooks/stripe"))
                    .header("content-type", "application/json")
                    .header(
                        "stripe-signature",
                        openssl_signature("whsec_rolled_in_the_dashboard", now(), &body),
                    )
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 400);
            }
        }
    };
    let alarms = |log: &str| {
        log.lines()
            .filter(|l| l.contains("STRIPE_WEBHOOK_SECRET"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let recoveries = |log: &str| log.lines().filter(|l| l.contains("verify again")).count();

    assert_eq!(
        app.deliver_to(base, &harmless_event("evt_1")).await,
        Some(200)
    );
    refuse(5).await;
    let within_ten_minutes = instance.log();
    advance_billing_clock(&app.client, base, 601).await;
    refuse(20).await;
    let after_ten_minutes = instance.log();
    assert_eq!(
        app.deliver_to(base, &harmless_event("evt_2")).await,
        Some(200)
    );
    refuse(5).await;
    let after_recovery = instance.log();
    advance_billing_clock(&app.client, base, 601).await;
    refuse(5).await;
    let failing_again = instance.log();

    assert_eq!(alarms(&within_ten_minutes), Vec::<String>::new());
    let alarm = alarms(&after_ten_minutes);
    assert_eq!(alarm.len(), 1, "{after_ten_minutes}");
    assert!(alarm[0].contains("ERROR"), "{}", alarm[0]);
    assert!(alarm[0].contains("Signing secret"), "{}", alarm[0]);
    assert!(!alarm[0].contains("whsec_rolled"), "{}", alarm[0]);
    assert_eq!(recoveries(&after_ten_minutes), 0);
    assert_eq!(alarms(&after_recovery).len(), 1, "{after_recovery}");
    assert_eq!(recoveries(&after_recovery), 1, "{after_recovery}");
    assert_eq!(alarms(&failing_again).len(), 2, "{failing_again}");
}
