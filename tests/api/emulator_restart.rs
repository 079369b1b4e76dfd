//! The emulator's account lives in Postgres (schema `stripe_emulator`), beside the service's
//! rows: a restart continues the demo where it was, every instance on one database sees one
//! account and one test clock, and `emulator-reset` starts the demo over. Each instance here is
//! the built binary started without a Stripe key, as `cargo run` is.

use serde_json::{json, Value};

use crate::support::*;

const DAY: i64 = 86_400;

fn demo_browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `POST /billing/create-portal` on the instance at `base` for the demo user, with `body`.
async fn create_portal_at(app: &TestApp, base: &str, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{base}/billing/create-portal"))
        .bearer_auth(token_for("demo_user", Some("demo@example.com")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn demo_user_paid(app: &TestApp) -> bool {
    app.user("demo_user").is_some_and(|u| u.paid)
}

#[actix_rt::test]
async fn a_restart_in_the_middle_of_the_demo_loop_continues_where_it_left_off() {
    let app = spawn_app().await;
    let port = free_port();
    let mut first = Instance::start_emulated_on(&app, port).await;
    let browser = demo_browser();
    let subscription = demo_subscribe(&browser, &first.base).await;
    eventually("the demo user to be paid", || demo_user_paid(&app)).await;
    let customer = app.user("demo_user").unwrap().stripe_customer_id.unwrap();

    first.kill();
    let second = Instance::start_emulated_on(&app, port).await;

    // The emulator still knows the customer and the subscription.
    let (status, sub) = emulator_get_at(
        &app.client,
        &second.base,
        &format!("subscriptions/{subscription}"),
    )
    .await;
    assert_eq!(status, 200, "{sub}\n{}", second.log());
    assert_eq!(
        (sub["status"].as_str(), sub["customer"].as_str()),
        (Some("active"), Some(customer.as_str()))
    );
    // The portal opens on the same customer and shows the subscription.
    let (status, portal) = create_portal_at(&app, &second.base, json!({})).await;
    assert_eq!(status, 200, "{portal}");
    assert_eq!(
        app.user("demo_user").unwrap().stripe_customer_id.as_deref(),
        Some(customer.as_str()),
        "the customer was kept, not replaced"
    );
    let url = portal["data"]["portalUrl"].as_str().unwrap();
    let page = browser.get(url).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains(&format!("cancel?subscription={subscription}")),
        "{page}"
    );
    // Cancelling, as the page's "Cancel" action does (a portal deep link), still works.
    let (status, cancel) =
        create_portal_at(&app, &second.base, json!({"flow": "subscription_cancel"})).await;
    assert_eq!(status, 200, "{cancel}");
    let url = cancel["data"]["portalUrl"].as_str().unwrap();
    let confirmed = browser
        .post(format!("{url}/cancel"))
        .form(&[("subscription", subscription.as_str()), ("when", "now")])
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 303);
    eventually("the cancellation to reach Postgres", || {
        !demo_user_paid(&app)
    })
    .await;
}

#[actix_rt::test]
async fn instances_on_one_database_share_one_emulated_account() {
    let app = spawn_app().await;
    let one = Instance::start_emulated_on(&app, free_port()).await;
    let other = Instance::start_emulated_on(&app, free_port()).await;
    let client = &app.client;

    let (status, customer) = emulator_post_at(
        client,
        &one.base,
        "customers",
        &[("email", "ada@example.com")],
    )
    .await;
    assert_eq!(status, 200, "{customer}");
    let id = customer["id"].as_str().unwrap();
    let (status, fetched) = emulator_get_at(client, &other.base, &format!("customers/{id}")).await;
    assert_eq!(status, 200, "{fetched}");
    assert_eq!(fetched["email"], "ada@example.com");

    // A change through one is what the other answers next, with no wait.
    let (status, _) = emulator_post_at(
        client,
        &other.base,
        &format!("customers/{id}"),
        &[("name", "Ada Lovelace")],
    )
    .await;
    assert_eq!(status, 200);
    let (_, fetched) = emulator_get_at(client, &one.base, &format!("customers/{id}")).await;
    assert_eq!(fetched["name"], "Ada Lovelace");
    let (_, sub) = emulator_post_at(
        client,
        &one.base,
        "subscriptions",
        &[
            ("customer", id),
            ("items[0][price]", "price_emu_pro_monthly"),
        ],
    )
    .await;
    let sub = sub["id"].as_str().unwrap();
    let canceled = client
        .delete(format!(
            "{}/stripe-emulator/v1/subscriptions/{sub}",
            other.base
        ))
        .bearer_auth("sk_test_emulator")
        .send()
        .await
        .unwrap();
    assert_eq!(canceled.status(), 200);
    let (_, seen) = emulator_get_at(client, &one.base, &format!("subscriptions/{sub}")).await;
    assert_eq!(seen["status"], "canceled");

    // Ids made by either never meet.
    let mut ids = std::collections::HashSet::new();
    for base in [&one.base, &other.base, &one.base, &other.base] {
        let (_, c) = emulator_post_at(client, base, "customers", &[]).await;
        assert!(ids.insert(c["id"].as_str().unwrap().to_string()), "{c}");
    }
    // Both list the same events, the catch-up's source.
    let (_, listed_one) = emulator_get_at(client, &one.base, "events?limit=100").await;
    let (_, listed_other) = emulator_get_at(client, &other.base, "events?limit=100").await;
    assert_eq!(listed_one["data"], listed_other["data"]);
    assert!(listed_one["data"].as_array().unwrap().len() >= 9);
    // One test clock: an advance through one moves the other's.
    advance_billing_clock(client, &one.base, 10 * DAY).await;
    let (_, clock_one) =
        emulator_get_at(client, &one.base, "test_helpers/test_clocks/clock_any").await;
    let (_, clock_other) =
        emulator_get_at(client, &other.base, "test_helpers/test_clocks/clock_any").await;
    assert!(
        clock_other["frozen_time"].as_i64().unwrap()
            >= clock_one["frozen_time"].as_i64().unwrap() - 5,
        "{clock_one} {clock_other}"
    );
}

#[actix_rt::test]
async fn the_test_clock_survives_a_restart() {
    let app = spawn_app().await;
    let port = free_port();
    let mut first = Instance::start_emulated_on(&app, port).await;
    advance_billing_clock(&app.client, &first.base, 40 * DAY).await;
    let (_, before) = emulator_get_at(
        &app.client,
        &first.base,
        "test_helpers/test_clocks/clock_any",
    )
    .await;
    let before = before["frozen_time"].as_i64().unwrap();

    first.kill();
    let second = Instance::start_emulated_on(&app, port).await;

    let (_, after) = emulator_get_at(
        &app.client,
        &second.base,
        "test_helpers/test_clocks/clock_any",
    )
    .await;
    let after = after["frozen_time"].as_i64().unwrap();
    // It kept running while the service was down, as a clock does, and never went back.
    assert!(
        after >= before && after < before + DAY,
        "{before} -> {after}"
    );
    // What the emulator stamps from then on is on that clock.
    let (_, customer) = emulator_post_at(&app.client, &second.base, "customers", &[]).await;
    assert!(
        customer["created"].as_i64().unwrap() >= before,
        "{customer}"
    );
}

#[actix_rt::test]
async fn emulator_reset_empties_the_emulator_and_the_next_demo_starts_clean() {
    let app = spawn_app().await;
    // A customer from real Stripe (this database once ran with a test key) is not the
    // emulator's to forget.
    app.given()
        .user("user_2")
        .with_customer("cus_NffrFeUfNV2Hib")
        .store();
    // Nor one whose random id happens to start like the emulator's (about 1 in 238,000
    // real ids do): the reset forgets the ids the emulator's account holds, no others.
    app.given()
        .user("user_3")
        .with_customer("cus_emuQ7xYTa0Lp2K")
        .store();
    let running = Instance::start_emulated_on(&app, free_port()).await;
    let browser = demo_browser();
    let old = demo_subscribe(&browser, &running.base).await;
    eventually("the demo user to be paid", || demo_user_paid(&app)).await;
    let old_customer = app.user("demo_user").unwrap().stripe_customer_id.unwrap();

    let (ok, out) = app.run_emulated_command("emulator-reset", &[]);

    assert!(ok, "{out}");
    assert!(out.contains("1 customer, 1 subscription"), "{out}");
    assert!(
        out.contains("forgot the Stripe customer of 1 user"),
        "{out}"
    );
    // The running instance answers from the emptied account at once.
    let (status, _) =
        emulator_get_at(&app.client, &running.base, &format!("subscriptions/{old}")).await;
    assert_eq!(status, 404);
    let (status, _) = emulator_get_at(
        &app.client,
        &running.base,
        &format!("customers/{old_customer}"),
    )
    .await;
    assert_eq!(status, 404);
    let (_, events) = emulator_get_at(&app.client, &running.base, "events").await;
    assert_eq!(events["data"], json!([]));
    // The service forgot what pointed at it.
    let user = app.user("demo_user").unwrap();
    assert_eq!((user.stripe_customer_id, user.paid), (None, false));
    assert_eq!(app.count("subscriptions"), 0);
    assert_eq!(
        app.user("user_2").unwrap().stripe_customer_id.as_deref(),
        Some("cus_NffrFeUfNV2Hib")
    );
    assert_eq!(
        app.user("user_3").unwrap().stripe_customer_id.as_deref(),
        Some("cus_emuQ7xYTa0Lp2K")
    );

    // The next demo starts from nothing: a new customer, a new subscription.
    let new = demo_subscribe(&browser, &running.base).await;
    eventually("the demo user to be paid again", || demo_user_paid(&app)).await;
    assert_ne!(new, old);
    let new_customer = app.user("demo_user").unwrap().stripe_customer_id.unwrap();
    assert_ne!(new_customer, old_customer);
    assert_eq!(app.subscription_ids(), [new]);
}

#[actix_rt::test]
async fn emulator_reset_does_nothing_in_a_database_without_an_emulator_account() {
    let app = spawn_app().await;
    app.given()
        .user("user_1")
        .with_customer("cus_emuQ7xYTa0Lp2K")
        .store();

    let (ok, out) = app.run_emulated_command("emulator-reset", &[]);

    assert!(!ok, "{out}");
    assert!(out.contains("holds no emulator account"), "{out}");
    assert_eq!(
        app.user("user_1").unwrap().stripe_customer_id.as_deref(),
        Some("cus_emuQ7xYTa0Lp2K")
    );
}

#[actix_rt::test]
async fn emulator_reset_refuses_to_run_with_a_stripe_key() {
    let app = spawn_app().await;
    app.given()
        .user("user_1")
        .with_customer("cus_emu0abcdef1234")
        .store();

    let (ok, out) = app.run_command("emulator-reset", &[]);

    assert!(!ok, "{out}");
    assert!(out.contains("STRIPE_SECRET_KEY"), "{out}");
    assert_eq!(
        app.user("user_1").unwrap().stripe_customer_id.as_deref(),
        Some("cus_emu0abcdef1234")
    );
}
