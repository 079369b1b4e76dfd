//! The zero-config mode: no `STRIPE_SECRET_KEY` outside production starts the
//! in-process Stripe emulator on the service's own port.

use serde_json::Value;
use stripe_billing::subscription::{
    CancelSubscription, CreateSubscription, CreateSubscriptionItems, ListSubscription,
    ListSubscriptionStatus, RetrieveSubscription, UpdateSubscription,
};
use stripe_core::customer::{CreateCustomer, DeleteCustomer, RetrieveCustomer};

use crate::support::*;

#[actix_rt::test]
async fn the_emulators_answers_parse_with_async_stripes_types() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let client = emulator_client(&app);

    let customer = CreateCustomer::new()
        .email("ada@example.com")
        .send(&client)
        .await
        .unwrap();
    let fetched = RetrieveCustomer::new(customer.id.clone())
        .send(&client)
        .await
        .unwrap();
    let sub = CreateSubscription::new()
        .customer(customer.id.to_string())
        .items(vec![CreateSubscriptionItems {
            price: Some("price_emu_starter_monthly".into()),
            ..Default::default()
        }])
        .send(&client)
        .await
        .unwrap();
    let retrieved = RetrieveSubscription::new(sub.id.clone())
        .send(&client)
        .await
        .unwrap();
    let ending = UpdateSubscription::new(sub.id.clone())
        .cancel_at_period_end(true)
        .send(&client)
        .await
        .unwrap();
    let listed = ListSubscription::new()
        .customer(customer.id.to_string())
        .status(ListSubscriptionStatus::All)
        .send(&client)
        .await
        .unwrap();
    let canceled = CancelSubscription::new(sub.id.clone())
        .send(&client)
        .await
        .unwrap();
    let deleted = DeleteCustomer::new(customer.id.clone())
        .send(&client)
        .await
        .unwrap();

    let stripe_core::customer::RetrieveCustomerReturned::Customer(fetched) = fetched else {
        panic!("a live customer came back as deleted");
    };
    assert_eq!(fetched.email.as_deref(), Some("ada@example.com"));
    assert_eq!(retrieved.status.as_str(), "active");
    assert_eq!(
        retrieved.items.data[0].price.id.as_str(),
        "price_emu_starter_monthly"
    );
    assert!(ending.cancel_at_period_end);
    assert_eq!(listed.data.len(), 1);
    assert_eq!(canceled.status.as_str(), "canceled");
    assert_eq!(deleted.id, customer.id);
    // The catalogue and invoices, in the strict shared types.
    for (path, kind) in [
        ("prices", "price"),
        ("products", "product"),
        ("invoices", "invoice"),
    ] {
        let list = emulator_get(&app, path).await;
        let data = list["data"].as_array().unwrap();
        assert!(!data.is_empty(), "{path}");
        for item in data {
            let parsed = match kind {
                "price" => serde_json::from_value::<stripe_shared::Price>(item.clone()).map(|_| ()),
                "product" => {
                    serde_json::from_value::<stripe_shared::Product>(item.clone()).map(|_| ())
                }
                _ => serde_json::from_value::<stripe_shared::Invoice>(item.clone()).map(|_| ()),
            };
            assert!(parsed.is_ok(), "{path}: {parsed:?}");
        }
    }
}

#[actix_rt::test]
async fn create_portal_works_with_no_stripe_key_at_all() {
    let app = spawn_emulated_app_with(|_| {}).await;

    let response = app
        .create_portal(&token_for("user_1", Some("ada@example.com")))
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let url = body["data"]["portalUrl"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/stripe-emulator/p/session/bps_", app.address)),
        "{url}"
    );
    let portal = app.client.get(url).send().await.unwrap();
    assert_eq!(portal.status(), 200);
    let html = portal.text().await.unwrap();
    assert!(html.contains("Return to app") && html.contains("Invoice history"));
    // "Return to app" brings the marker that makes the page re-read Stripe.
    let back = format!(
        r#"<a id="return-to-app" href="{}/settings/billing?from=portal">"#,
        app.address
    );
    assert!(html.contains(&back), "{html}");
}

/// Stripe replays a key's saved answer marked `Idempotent-Replayed: true`, and refuses the key
/// with other parameters: 400 `idempotency_error` (docs.stripe.com/api/idempotent_requests).
#[actix_rt::test]
async fn the_emulator_honours_idempotency_keys_and_answers_stripe_errors() {
    let app = spawn_emulated_app_with(|_| {}).await;

    let first = emulator_post_keyed(&app, "customers", &[("email", "a@x.test")], "k1").await;
    let again = emulator_post_keyed(&app, "customers", &[("email", "a@x.test")], "k1").await;
    let reuse = emulator_post_keyed(&app, "customers", &[("email", "b@x.test")], "k1").await;
    let (missing_status, missing) = emulator_post(
        &app,
        "billing_portal/sessions",
        &[("customer", "cus_nope"), ("return_url", "http://x.test")],
        None,
    )
    .await;

    assert_eq!((first.status, first.replayed), (200, false), "{first:?}");
    assert_eq!((again.status, again.replayed), (200, true), "{again:?}");
    assert_eq!(again.body, first.body);
    assert_eq!((reuse.status, reuse.replayed), (400, false), "{reuse:?}");
    assert_eq!(reuse.body["error"]["type"], "idempotency_error");
    assert_eq!(
        emulated_customers(&app).await,
        [first.body["id"].as_str().unwrap()]
    );
    assert_eq!(missing_status, 404);
    assert_eq!(missing["error"]["code"], "resource_missing");
    assert_eq!(missing["error"]["param"], "customer");
}

/// Stripe saves a key's first answer once the endpoint began executing, 500s included, and
/// replays it (docs.stripe.com/api/idempotent_requests: "Subsequent requests with the same key
/// return the same result, including 500 errors"); the failure changed nothing, and a new key
/// is a new attempt.
#[actix_rt::test]
async fn a_500_after_execution_began_is_replayed_to_its_key_and_created_nothing() {
    let app = spawn_emulated_app_with(|_| {}).await;
    account_settings(&app, &[("fail_next_post", "/v1/customers")]).await;
    let form = [("email", "a@x.test")];

    let failed = emulator_post_keyed(&app, "customers", &form, "k-500").await;
    let retried = emulator_post_keyed(&app, "customers", &form, "k-500").await;
    let created_by_the_failure = emulated_customers(&app).await;
    let new_attempt = emulator_post_keyed(&app, "customers", &form, "k-500-next").await;
    let (_, settings) = emulator_post(&app, "test_helpers/account_settings", &[], None).await;

    assert_eq!((failed.status, failed.replayed), (500, false), "{failed:?}");
    assert_eq!(failed.body["error"]["type"], "api_error");
    assert_eq!(failed.body["error"]["message"], "An unknown error occurred");
    assert_eq!(
        (retried.status, retried.replayed),
        (500, true),
        "{retried:?}"
    );
    assert_eq!(retried.body, failed.body);
    assert!(
        created_by_the_failure.is_empty(),
        "{created_by_the_failure:?}"
    );
    // The fault is one-shot.
    assert_eq!(
        (new_attempt.status, new_attempt.replayed),
        (200, false),
        "{new_attempt:?}"
    );
    assert_eq!(
        emulated_customers(&app).await,
        [new_attempt.body["id"].as_str().unwrap()]
    );
    assert_eq!(settings["fail_next_post"], Value::Null, "{settings}");
}

/// A request whose parameters fail validation, or that names an object that does not exist,
/// never began executing, so Stripe saves nothing for its key (docs.stripe.com/api/idempotent_requests:
/// "If incoming parameters fail validation [...] we don't save the idempotent result"): a retry is
/// validated again rather than replayed, and the corrected request may keep the key. A declined
/// card is decided while executing: that answer is saved (docs.stripe.com/error-low-level).
#[actix_rt::test]
async fn a_request_refused_before_execution_saves_nothing_for_its_key() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let (_, customer) = emulator_post(&app, "customers", &[], None).await;
    let customer = customer["id"].as_str().unwrap();
    let incomplete = [("customer", customer)];
    let corrected = [
        ("customer", customer),
        ("items[0][price]", "price_emu_pro_monthly"),
    ];
    let unknown = [("customer", "cus_nope"), ("return_url", "http://x.test")];
    let declined = [("source", "tok_chargeDeclined")];

    let refused = emulator_post_keyed(&app, "subscriptions", &incomplete, "k-sub").await;
    let refused_again = emulator_post_keyed(&app, "subscriptions", &incomplete, "k-sub").await;
    let subscribed = emulator_post_keyed(&app, "subscriptions", &corrected, "k-sub").await;
    let missing = emulator_post_keyed(&app, "billing_portal/sessions", &unknown, "k-bps").await;
    let missing_again =
        emulator_post_keyed(&app, "billing_portal/sessions", &unknown, "k-bps").await;
    let card = emulator_post_keyed(&app, "customers", &declined, "k-card").await;
    let card_again = emulator_post_keyed(&app, "customers", &declined, "k-card").await;

    assert_eq!(
        (refused.status, refused.replayed),
        (400, false),
        "{refused:?}"
    );
    assert_eq!(refused.body["error"]["type"], "invalid_request_error");
    assert_eq!(
        (refused_again.status, refused_again.replayed),
        (400, false),
        "{refused_again:?}"
    );
    assert_eq!(
        (subscribed.status, subscribed.replayed),
        (200, false),
        "{subscribed:?}"
    );
    assert_eq!(subscribed.body["object"], "subscription");
    assert_eq!(
        (missing.status, missing.replayed),
        (404, false),
        "{missing:?}"
    );
    assert_eq!(
        (missing_again.status, missing_again.replayed),
        (404, false),
        "{missing_again:?}"
    );
    assert_eq!((card.status, card.replayed), (402, false), "{card:?}");
    assert_eq!(card.body["error"]["code"], "card_declined");
    assert_eq!(
        (card_again.status, card_again.replayed),
        (402, true),
        "{card_again:?}"
    );
    assert_eq!(card_again.body, card.body);
}

/// While a request runs, Stripe refuses another with its key: 409 `idempotency_error`,
/// `idempotency_key_in_use` (docs.stripe.com/error-codes), saving nothing for the refused one;
/// the key then replays the first answer. The emulator's `latency_ms` holds each answer while
/// its request executes, so two requests sent together meet.
#[actix_rt::test]
async fn a_concurrent_request_with_the_same_key_is_refused_while_the_first_runs() {
    let app = spawn_emulated_app_with(|_| {}).await;
    account_settings(&app, &[("latency_ms", "5000")]).await;
    let form = [("email", "a@x.test")];

    let (one, two) = futures::join!(
        emulator_post_keyed(&app, "customers", &form, "k-twice"),
        emulator_post_keyed(&app, "customers", &form, "k-twice"),
    );
    account_settings(&app, &[("latency_ms", "0")]).await;
    let later = emulator_post_keyed(&app, "customers", &form, "k-twice").await;

    let (ran, refused) = if one.status == 200 {
        (one, two)
    } else {
        (two, one)
    };
    assert_eq!((ran.status, ran.replayed), (200, false), "{ran:?}");
    assert_eq!(
        (refused.status, refused.replayed),
        (409, false),
        "{refused:?}"
    );
    assert_eq!(refused.body["error"]["type"], "idempotency_error");
    assert_eq!(refused.body["error"]["code"], "idempotency_key_in_use");
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("another in-progress request"), "{message}");
    assert_eq!((later.status, later.replayed), (200, true), "{later:?}");
    assert_eq!(later.body, ran.body);
    assert_eq!(
        emulated_customers(&app).await,
        [ran.body["id"].as_str().unwrap()]
    );
}

#[actix_rt::test]
async fn every_emulated_change_reaches_postgres_through_the_signed_webhook() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let token = token_for("user_1", Some("ada@example.com"));
    assert_eq!(app.create_portal(&token).await.status(), 200);
    let customer = app.user("user_1").unwrap().stripe_customer_id.unwrap();

    let (status, sub) = emulator_post(
        &app,
        "subscriptions",
        &[
            ("customer", &customer),
            ("items[0][price]", "price_emu_pro_monthly"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200);
    eventually("paid", || app.user("user_1").unwrap().paid).await;
    let sub_id = sub["id"].as_str().unwrap();
    app.client
        .delete(app.url(&format!("/stripe-emulator/v1/subscriptions/{sub_id}")))
        .bearer_auth("sk_test_emulator")
        .send()
        .await
        .unwrap();
    eventually("unpaid", || !app.user("user_1").unwrap().paid).await;

    // `created` (incomplete) and `updated` (active) share a second and arrive
    // in either order: `created` is applied first or recognised as older.
    let created = app.event_outcome_of_type("customer.subscription.created");
    assert!(
        ["applied", "stale"].contains(&created.as_str()),
        "{created}"
    );
    assert_eq!(
        app.event_outcome_of_type("customer.subscription.deleted"),
        "applied"
    );
}

/// The service's webhook endpoint fails while its `stripe_events` table is locked (each
/// delivery waits out the statement timeout and answers 503); the emulator, whose account
/// lives in its own schema, goes on working, and retries until a delivery is stored.
#[actix_rt::test]
async fn a_delivery_that_fails_is_retried_until_it_is_stored() {
    let app = spawn_emulated_app_with(|vars| {
        vars.insert("DATABASE_STATEMENT_TIMEOUT_MS".into(), "300".into());
    })
    .await;
    let token = token_for("user_1", None);
    assert_eq!(app.create_portal(&token).await.status(), 200);
    let customer = app.user("user_1").unwrap().stripe_customer_id.unwrap();
    // Every event of that first operation (customer.created and the catalogue's
    // product and price events) stored before the table is locked.
    let sent = emulator_get(&app, "events?limit=100").await["data"]
        .as_array()
        .unwrap()
        .len();
    eventually("the first operation's events to be stored", || {
        app.count("stripe_events") == sent as i64
    })
    .await;

    let lock = app.hold_lock("LOCK TABLE stripe_events IN ACCESS EXCLUSIVE MODE");
    let (status, _) = emulator_post(
        &app,
        "subscriptions",
        &[
            ("customer", &customer),
            ("items[0][price]", "price_emu_pro_monthly"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200);
    for _ in 0..300 {
        if refused_deliveries(&app).await > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        refused_deliveries(&app).await > 0,
        "no delivery was refused"
    );
    lock.release();

    eventually("the retried delivery", || app.user("user_1").unwrap().paid).await;
}

/// How many webhook deliveries the service answered 503.
async fn refused_deliveries(app: &TestApp) -> u64 {
    app.get_text("/metrics")
        .await
        .lines()
        .filter(|l| {
            l.starts_with("billing_portal_http_requests_total{")
                && l.contains("route=\"/webhooks/stripe\"")
                && l.contains("status=\"503\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[actix_rt::test]
async fn demo_sign_in_and_checkout_make_the_demo_user_paid_by_webhook() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();

    let signed_in = client
        .post(app.url("/demo/sign-in"))
        .header("x-requested-with", "billing-portal")
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    checkout_through_emulator(&client, &app.address, "price_emu_pro_monthly").await;

    eventually("the demo user to be paid", || {
        app.user("demo_user").is_some_and(|u| u.paid)
    })
    .await;
    let (again, body) =
        create_checkout_at(&client, &app.address, "price_emu_starter_monthly").await;
    assert_eq!(again, 409, "{body}");
    assert_eq!(body["error"], "already_subscribed");
}

/// Two clicks on "Subscribe" at once, with the emulator holding each answer: the second waits
/// for the first under the user's lock and sends the same idempotency key, so both get the
/// one session, and paying it buys one subscription.
#[actix_rt::test]
async fn two_subscribe_clicks_at_once_open_one_checkout_session() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let signed_in = browser
        .post(app.url("/demo/sign-in"))
        .header("x-requested-with", "billing-portal")
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    // The plans resolved before the latency makes everything slow.
    for _ in 0..300 {
        let plans: Value = browser
            .get(app.url("/billing/plans"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if plans["data"]["plans"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    account_settings(&app, &[("latency_ms", "1000")]).await;

    let ((one, a), (two, b)) = futures::join!(
        create_checkout_at(&browser, &app.address, "price_emu_pro_monthly"),
        create_checkout_at(&browser, &app.address, "price_emu_pro_monthly")
    );

    assert_eq!((one, two), (200, 200), "{a} {b}");
    assert_eq!(a["data"]["checkoutUrl"], b["data"]["checkoutUrl"]);
    let customers = emulated_customers(&app).await;
    assert_eq!(customers.len(), 1, "{customers:?}");
}

/// Login CSRF: another site's page must not sign a visitor in as the demo
/// user (whose card and plan would then be the attacker's to watch).
#[actix_rt::test]
async fn another_site_cannot_sign_a_visitor_in_as_the_demo_user() {
    let app = spawn_emulated_app_with(|_| {}).await;

    for (name, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let response = app
            .client
            .post(app.url("/demo/sign-in"))
            .header("x-requested-with", "billing-portal")
            .header(name, value)
            .send()
            .await
            .unwrap();

        assert_eq!(response.status(), 403, "{name}: {value}");
        assert!(response.headers().get("set-cookie").is_none(), "{name}");
    }
    // A plain form post from another site cannot add the header.
    let form_post = app
        .client
        .post(app.url("/demo/sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(form_post.status(), 403);
    assert!(form_post.headers().get("set-cookie").is_none());
}

/// Whether an emulator event is part of a purchase: not the customer's creation, nor the
/// account's catalogue (its products and prices, announced before its first customer).
fn of_the_purchase(event: &Value) -> bool {
    let type_ = event["type"].as_str().unwrap_or_default();
    type_ != "customer.created" && !type_.starts_with("product.") && !type_.starts_with("price.")
}

#[actix_rt::test]
async fn the_pages_checkout_goes_through_checkout_sessions_and_sends_what_checkout_sends() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    client
        .post(app.url("/demo/sign-in"))
        .header("x-requested-with", "billing-portal")
        .send()
        .await
        .unwrap();

    let (_, paid) = checkout_through_emulator(&client, &app.address, "price_emu_pro_monthly").await;

    let subscription = paid["subscription"].as_str().unwrap();
    let events = emulator_get(&app, "events?limit=100").await;
    let types: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| of_the_purchase(e))
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    // Newest first, as Stripe lists events.
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
    let seconds: std::collections::HashSet<i64> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| of_the_purchase(e))
        .map(|e| e["created"].as_i64().unwrap())
        .collect();
    assert_eq!(seconds.len(), 1, "all in one second: {seconds:?}");
    let completed = &events["data"][1]["data"]["object"];
    assert_eq!(completed["subscription"], subscription);
    assert_eq!(completed["client_reference_id"], "demo_user");
    assert_eq!(completed["payment_status"], "paid");
    // It brings the buyer back to the page, which has that session applied.
    assert_eq!(
        completed["success_url"],
        format!(
            "{}/settings/billing?from=checkout&session_id={{CHECKOUT_SESSION_ID}}",
            app.address
        )
    );
    let session = completed["id"].as_str().unwrap();
    let (again, body) = emulator_post(
        &app,
        &format!("test_helpers/checkout/sessions/{session}/complete"),
        &[],
        None,
    )
    .await;
    assert_eq!(again, 400, "{body}");
    eventually("the checkout event to be applied", || {
        app.count("stripe_events WHERE type = 'checkout.session.completed' AND outcome = 'applied'")
            == 1
    })
    .await;
}

// --- The hosted portal's sessions: a way back from every dead end, and a session
// that lasts while it is used (issue 17).

/// A new portal session's URL, for `user`.
async fn portal_session(app: &TestApp, user: &str) -> String {
    let response = app.create_portal(&token_for(user, None)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["data"]["portalUrl"].as_str().unwrap().to_string()
}

/// A portal page that is not there, as a browser gets it: its status, and its HTML.
async fn dead_end(app: &TestApp, request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let html = response.text().await.unwrap();
    assert!(
        content_type.starts_with("text/html"),
        "{content_type}: {html}"
    );
    assert!(!html.contains(r#""message""#), "{html}");
    // In the emulator's style, with the way back to the app's billing page.
    assert!(html.contains("Test mode: local Stripe emulator"), "{html}");
    assert_eq!(return_link(&html), app.url("/settings/billing"), "{html}");
    (status, html)
}

/// Where a portal page's "Return to app" leads, without its query (which may say where
/// the user comes from).
fn return_link(html: &str) -> String {
    let href = html
        .split_once(r#"id="return-to-app" href=""#)
        .and_then(|(_, rest)| rest.split_once('"'))
        .unwrap_or_else(|| panic!("no Return to app link: {html}"))
        .0;
    let url = url::Url::parse(&href.replace("&#38;", "&")).unwrap();
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

#[actix_rt::test]
async fn an_expired_portal_session_is_a_page_with_a_way_back_to_the_app() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let url = portal_session(&app, "user_1").await;

    advance_billing_clock(&app.client, &app.address, 6 * 60).await;
    let (status, html) = dead_end(&app, app.client.get(&url)).await;
    let (action, _) = dead_end(
        &app,
        app.client
            .post(format!("{url}/address"))
            .form(&[("name", "Ada")]),
    )
    .await;

    assert_eq!(status, 410);
    assert_eq!(action, 410);
    assert!(html.contains("expired"), "{html}");
}

#[actix_rt::test]
async fn an_unknown_portal_session_is_a_page_with_a_way_back_to_the_app() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let url = app.url("/stripe-emulator/p/session/bps_no_such_session");

    let (status, html) = dead_end(&app, app.client.get(&url)).await;
    let (plan, _) = dead_end(
        &app,
        app.client.get(format!("{url}/plan?subscription=sub_1")),
    )
    .await;
    let (invoice, _) = dead_end(
        &app,
        app.client
            .get(app.url("/stripe-emulator/invoices/in_nope/pdf")),
    )
    .await;

    assert_eq!((status, plan, invoice), (404, 404, 404));
    assert!(html.contains("not valid"), "{html}");
}

/// Like Stripe's portal: the session lapses after five minutes without a visit, not five
/// minutes after it was created while the customer is still in it. The emulator's test
/// clock moves the time the portal reads; nothing sleeps.
#[actix_rt::test]
async fn a_portal_session_stays_valid_while_it_is_used_and_lapses_five_minutes_after_the_last_use()
{
    let app = spawn_emulated_app_with(|_| {}).await;
    let url = portal_session(&app, "user_1").await;

    for minute in [4, 8, 12] {
        advance_billing_clock(&app.client, &app.address, 4 * 60).await;
        let page = app.client.get(&url).send().await.unwrap();
        assert_eq!(
            page.status(),
            200,
            "{minute} minutes after creation, in use"
        );
    }
    // An action counts as use too.
    advance_billing_clock(&app.client, &app.address, 4 * 60).await;
    let saved = app
        .client
        .post(format!("{url}/address"))
        .form(&[("name", "Ada")])
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 303, "16 minutes after creation, in use");
    advance_billing_clock(&app.client, &app.address, 4 * 60).await;
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 200);

    advance_billing_clock(&app.client, &app.address, 5 * 60 + 30).await;
    let (status, _) = dead_end(&app, app.client.get(&url)).await;
    assert_eq!(status, 410, "five and a half minutes without a visit");
}

/// `PORT=8095 cargo run` with no `APP_BASE_URL`: the portal's "Return to app" comes
/// back to that port, on the origin the README opens (`localhost`).
#[actix_rt::test]
async fn without_app_base_url_the_portal_returns_to_the_port_the_service_listens_on() {
    let app = spawn_emulated_app_with(|vars| {
        vars.remove("APP_BASE_URL");
    })
    .await;
    let port = app.address.rsplit(':').next().unwrap();

    let url = portal_session(&app, "user_1").await;
    let local = format!("http://localhost:{port}");
    assert!(
        url.starts_with(&format!("{local}/stripe-emulator/p/session/")),
        "{url}"
    );
    let html = app
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert_eq!(return_link(&html), format!("{local}/settings/billing"));
}

#[actix_rt::test]
async fn the_emulator_serves_a_price_with_its_product_expanded_and_a_product_as_stripe_does() {
    let app = spawn_emulated_app_with(|_| {}).await;

    let expanded = emulator_get(&app, "prices/price_emu_pro_monthly?expand[]=product").await;
    let plain = emulator_get(&app, "prices/price_emu_pro_monthly").await;
    let product = emulator_get(&app, "products/prod_emu_pro").await;
    let missing = emulator_get(&app, "prices/price_nobody_made").await;

    assert_eq!(expanded["object"], "price");
    assert_eq!(expanded["unit_amount"], 2900);
    assert_eq!(expanded["currency"], "usd");
    assert_eq!(expanded["recurring"]["interval"], "month");
    assert_eq!(expanded["product"]["id"], "prod_emu_pro");
    assert_eq!(expanded["product"]["name"], "Pro");
    assert_eq!(plain["product"], "prod_emu_pro");
    assert_eq!(product["name"], "Pro");
    // In the strict shared types, as async-stripe would read them.
    for price in [&expanded, &plain] {
        let parsed = serde_json::from_value::<stripe_shared::Price>(price.clone());
        assert!(parsed.is_ok(), "{parsed:?}");
    }
    let parsed = serde_json::from_value::<stripe_shared::Product>(product.clone());
    assert!(parsed.is_ok(), "{parsed:?}");
    assert_eq!(missing["error"]["code"], "resource_missing", "{missing}");
}

#[actix_rt::test]
async fn the_emulator_announces_its_catalogue_and_the_status_names_the_plan_bought() {
    let app = spawn_emulated_app_with(|_| {}).await;
    let token = token_for("user_1", Some("ada@example.com"));
    assert_eq!(app.create_portal(&token).await.status(), 200);
    let customer = app.user("user_1").unwrap().stripe_customer_id.unwrap();
    subscribe_through_emulator(&app, &customer).await;

    let events = emulator_get(&app, "events?limit=100").await;
    let mut catalogue: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .filter(|t| t.starts_with("product.") || t.starts_with("price."))
        .collect();
    catalogue.sort();
    assert_eq!(
        catalogue,
        [
            "price.created",
            "price.created",
            "product.created",
            "product.created"
        ]
    );
    eventually("the catalogue's events applied", || {
        app.count(
            "stripe_events WHERE type IN ('product.created', 'price.created') \
             AND outcome = 'applied'",
        ) == 4
    })
    .await;
    eventually("the subscription stored as paid", || {
        app.user("user_1").unwrap().paid
    })
    .await;
    let plan = app.status(&token).await["data"]["plan"].clone();
    assert_eq!(
        plan,
        serde_json::json!({"name": "Pro", "amount": 2900, "currency": "usd",
                           "interval": "month", "intervalCount": 1})
    );
}
