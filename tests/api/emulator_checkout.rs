//! The emulator's Checkout as real Stripe's (issue 19): Checkout Session objects in
//! Stripe's shape, and the hosted checkout page at their `url`, driven through its
//! plain HTML forms with Stripe's test cards (docs.stripe.com/testing).

use serde_json::Value;

use crate::support::*;

/// The session as the API answers it, its subscription expanded.
async fn retrieved(app: &TestApp, session: &str) -> Value {
    emulator_get(
        app,
        &format!("checkout/sessions/{session}?expand[]=subscription"),
    )
    .await
}

/// Where a paid session sends the browser: the success URL, its id in place.
fn success_for(app: &TestApp, session: &str) -> String {
    checkout_success_url(app).replace("{CHECKOUT_SESSION_ID}", session)
}

/// Whether an emulator event is part of a purchase: not the customer's creation, nor
/// the account's catalogue.
fn of_the_purchase(event: &Value) -> bool {
    let type_ = event["type"].as_str().unwrap_or_default();
    type_ != "customer.created" && !type_.starts_with("product.") && !type_.starts_with("price.")
}

#[actix_rt::test]
async fn a_checkout_session_has_stripes_shape_and_a_hosted_page_url() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let customer = emulated_customer(&app).await;

    let session = checkout_session_for(&app, &customer).await;

    let id = session["id"].as_str().unwrap();
    assert!(id.starts_with("cs_test_"), "{session}");
    assert_eq!(
        session["url"],
        app.url(&format!("/stripe-emulator/c/pay/{id}"))
    );
    assert_eq!(session["object"], "checkout.session");
    assert_eq!(session["mode"], "subscription");
    assert_eq!(session["status"], "open");
    assert_eq!(session["payment_status"], "unpaid");
    assert_eq!(session["customer"], customer.as_str());
    assert_eq!(session["client_reference_id"], "user_1");
    assert_eq!(session["metadata"]["user_id"], "user_1");
    assert_eq!(session["success_url"], checkout_success_url(&app));
    assert_eq!(session["cancel_url"], app.url("/settings/billing"));
    assert_eq!(session["subscription"], Value::Null);
    assert_eq!(session["amount_total"], 2900);
    // Stripe's default: open for 24 hours.
    assert_eq!(
        session["expires_at"].as_i64().unwrap() - session["created"].as_i64().unwrap(),
        24 * 3600
    );
    let parsed = serde_json::from_value::<stripe_shared::CheckoutSession>(session.clone());
    assert!(parsed.is_ok(), "{parsed:?}");
    assert_eq!(retrieved(&app, id).await, session);
}

#[actix_rt::test]
async fn the_emulator_refuses_checkout_parameters_it_cannot_honour_as_stripe_does() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let customer = emulated_customer(&app).await;
    let base = [
        ("mode", "subscription"),
        ("customer", customer.as_str()),
        ("line_items[0][price]", "price_emu_pro_monthly"),
    ];

    for (extra, param) in [
        (("cancel_url", "javascript:alert(1)"), "cancel_url"),
        (("success_url", "/relative"), "success_url"),
        (
            ("subscription_data[trial_period_days]", "7"),
            "subscription_data[trial_period_days]",
        ),
    ] {
        let mut form = base.to_vec();
        form.push(extra);
        let (status, body) = emulator_post(&app, "checkout/sessions", &form, None).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(body["error"]["param"], param, "{body}");
    }
}

#[actix_rt::test]
async fn paying_with_4242_completes_the_session_and_returns_to_the_success_url_with_its_id() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let customer = emulated_customer(&app).await;
    let session = checkout_session_for(&app, &customer).await;
    let (id, url) = (
        session["id"].as_str().unwrap(),
        session["url"].as_str().unwrap(),
    );
    let browser = no_redirects();

    let (status, html) = html_page(&browser, url).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Pro") && html.contains("$29.00"), "{html}");
    let back = format!(r#"<a id="cancel" href="{}">"#, app.url("/settings/billing"));
    assert!(html.contains(&back), "{html}");
    for field in [r#"name="number""#, r#"name="exp""#, r#"name="cvc""#] {
        assert!(html.contains(field), "{field}: {html}");
    }
    let paid = pay_on_checkout_page(&browser, url, "4242 4242 4242 4242").await;

    assert_eq!(redirected_to(&paid), success_for(&app, id));
    let session = retrieved(&app, id).await;
    assert_eq!(session["status"], "complete", "{session}");
    assert_eq!(session["payment_status"], "paid");
    assert_eq!(session["url"], Value::Null);
    assert_eq!(session["subscription"]["object"], "subscription");
    assert_eq!(session["subscription"]["status"], "active");
    assert_eq!(session["subscription"]["metadata"]["user_id"], "user_1");
    // What real Stripe sends for a Checkout, as the test helper sends it: in one second.
    let events = emulator_get(&app, "events?limit=100").await;
    let purchase: Vec<&Value> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| of_the_purchase(e))
        .collect();
    let types: Vec<&str> = purchase
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            // The Pro product has features: the customer's entitlements changed.
            "entitlements.active_entitlement_summary.updated",
            "checkout.session.completed",
            "customer.subscription.updated",
            "invoice.paid",
            "customer.subscription.created",
        ]
    );
    let seconds: std::collections::HashSet<i64> = purchase
        .iter()
        .map(|e| e["created"].as_i64().unwrap())
        .collect();
    assert_eq!(seconds.len(), 1, "{seconds:?}");
    assert_eq!(purchase[1]["data"]["object"]["id"], id);
    assert_eq!(
        purchase[1]["data"]["object"]["metadata"]["user_id"],
        "user_1"
    );
}

#[actix_rt::test]
async fn the_declining_card_shows_stripes_message_creates_nothing_and_another_card_can_pay() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let customer = emulated_customer(&app).await;
    let session = checkout_session_for(&app, &customer).await;
    let (id, url) = (
        session["id"].as_str().unwrap(),
        session["url"].as_str().unwrap(),
    );
    let browser = no_redirects();

    let declined = pay_on_checkout_page(&browser, url, "4000 0000 0000 0002").await;

    let back = redirected_to(&declined);
    assert!(back.starts_with(&format!("{url}?")), "{back}");
    let (status, html) = html_page(&browser, &back).await;
    assert_eq!(status, 200);
    assert!(html.contains("Your card was declined."), "{html}");
    assert!(html.contains(r#"name="number""#), "the form again: {html}");
    let session = retrieved(&app, id).await;
    assert_eq!(
        (&session["status"], &session["payment_status"]),
        (&"open".into(), &"unpaid".into())
    );
    assert!(emulated_subscriptions(&app, &customer).await.is_empty());
    // A number that is no card at all, in Stripe's words.
    let invalid = pay_on_checkout_page(&browser, url, "4242 4242 4242 4241").await;
    let (_, html) = html_page(&browser, &redirected_to(&invalid)).await;
    assert!(html.contains("Your card number is invalid."), "{html}");
    // Then a working card.
    let paid = pay_on_checkout_page(&browser, url, "4242424242424242").await;
    assert_eq!(redirected_to(&paid), success_for(&app, id));
    assert_eq!(emulated_subscriptions(&app, &customer).await.len(), 1);
}

#[actix_rt::test]
async fn the_3d_secure_card_asks_for_authentication_and_completing_it_pays() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let customer = emulated_customer(&app).await;
    let session = checkout_session_for(&app, &customer).await;
    let (id, url) = (
        session["id"].as_str().unwrap(),
        session["url"].as_str().unwrap(),
    );
    let browser = no_redirects();

    let asked = pay_on_checkout_page(&browser, url, "4000 0027 6000 3184").await;

    let step = redirected_to(&asked);
    assert_eq!(step, format!("{url}/authenticate"));
    let (status, html) = html_page(&browser, &step).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("Complete authentication") && html.contains("Fail authentication"),
        "{html}"
    );
    assert!(emulated_subscriptions(&app, &customer).await.is_empty());
    assert_eq!(retrieved(&app, id).await["status"], "open");
    let completed = browser
        .post(&step)
        .form(&[("outcome", "complete")])
        .send()
        .await
        .unwrap();
    assert_eq!(redirected_to(&completed), success_for(&app, id));
    let session = retrieved(&app, id).await;
    assert_eq!(session["payment_status"], "paid");
    assert_eq!(session["subscription"]["status"], "active");
}

#[actix_rt::test]
async fn failing_3d_secure_returns_to_the_form_with_stripes_message_and_pays_nothing() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let customer = emulated_customer(&app).await;
    let session = checkout_session_for(&app, &customer).await;
    let (id, url) = (
        session["id"].as_str().unwrap(),
        session["url"].as_str().unwrap(),
    );
    let browser = no_redirects();
    let asked = pay_on_checkout_page(&browser, url, "4000 0027 6000 3184").await;

    let failed = browser
        .post(redirected_to(&asked))
        .form(&[("outcome", "fail")])
        .send()
        .await
        .unwrap();

    let back = redirected_to(&failed);
    assert!(back.starts_with(&format!("{url}?")), "{back}");
    let (_, html) = html_page(&browser, &back).await;
    assert!(
        html.contains(
            "We are unable to authenticate your payment method. Please choose a different \
             payment method and try again."
        ),
        "{html}"
    );
    assert_eq!(retrieved(&app, id).await["status"], "open");
    assert!(emulated_subscriptions(&app, &customer).await.is_empty());
    // The authentication is spent: its page leads back to the card form.
    let again = browser
        .get(format!("{url}/authenticate"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirected_to(&again), url);
}

#[actix_rt::test]
async fn a_double_submit_buys_one_subscription_and_both_land_on_the_success_url() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let customer = emulated_customer(&app).await;
    let session = checkout_session_for(&app, &customer).await;
    let (id, url) = (
        session["id"].as_str().unwrap(),
        session["url"].as_str().unwrap(),
    );
    let browser = no_redirects();

    let (first, second) = futures::join!(
        pay_on_checkout_page(&browser, url, "4242 4242 4242 4242"),
        pay_on_checkout_page(&browser, url, "4242 4242 4242 4242"),
    );
    let late = pay_on_checkout_page(&browser, url, "4242 4242 4242 4242").await;

    for paid in [&first, &second, &late] {
        assert_eq!(redirected_to(paid), success_for(&app, id));
    }
    assert_eq!(emulated_subscriptions(&app, &customer).await.len(), 1);
    // The page itself, once paid, leads on too.
    let opened = browser.get(url).send().await.unwrap();
    assert_eq!(redirected_to(&opened), success_for(&app, id));
}

#[actix_rt::test]
async fn an_expired_or_unknown_checkout_session_is_a_page_with_a_way_back_and_cannot_be_paid() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let customer = emulated_customer(&app).await;
    let session = checkout_session_for(&app, &customer).await;
    let (id, url) = (
        session["id"].as_str().unwrap(),
        session["url"].as_str().unwrap(),
    );
    let browser = no_redirects();
    let (status, html) = html_page(
        &browser,
        &app.url("/stripe-emulator/c/pay/cs_test_no_such_session"),
    )
    .await;
    assert_eq!(status, 404, "{html}");
    assert!(html.contains(&app.url("/settings/billing")), "{html}");

    advance_billing_clock(&app.client, &app.address, 24 * 3600).await;
    let (status, html) = html_page(&browser, url).await;
    let paid = pay_on_checkout_page(&browser, url, "4242 4242 4242 4242").await;

    assert_eq!(status, 410, "{html}");
    assert!(html.contains("expired"), "{html}");
    assert!(html.contains(&app.url("/settings/billing")), "{html}");
    assert_eq!(paid.status(), 410);
    assert!(emulated_subscriptions(&app, &customer).await.is_empty());
    let expired = retrieved(&app, id).await;
    assert_eq!(expired["status"], "expired");
    assert_eq!(expired["url"], Value::Null);
    // Stripe's event, stamped with the second the session expired at.
    let events = emulator_get(&app, "events?type=checkout.session.expired").await;
    let events = events["data"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["created"], session["expires_at"]);
    assert_eq!(events[0]["data"]["object"]["id"], id);
    assert_eq!(events[0]["data"]["object"]["status"], "expired");
}
