//! Plan names and prices on `GET /billing/status` (issue 17): the subscription's price (amount,
//! currency, interval) and its product's name, stored from `price.*` and `product.*` webhooks,
//! read from Stripe once when missing, and never a reason for a status request to fail; and what
//! tells a former customer (a Stripe customer, no live subscription) from a never-customer.

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::support::*;

const DAY: i64 = 86_400;

async fn app_with_user() -> TestApp {
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();
    app
}

async fn status_of(app: &TestApp) -> Value {
    app.status(&token_for("user_1", None)).await["data"].clone()
}

async fn delivered(app: &TestApp, event: &Value) {
    let response = app.deliver(event).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// user_1's active subscription to `price_pro_monthly` of `prod_pro`, through the webhook.
async fn subscribed(app: &TestApp, id: &str, created: i64) {
    let sub = current_subscription("sub_1", "cus_1", "active", created + 30 * DAY);
    delivered(
        app,
        &event(id, "customer.subscription.updated", created, sub),
    )
    .await;
}

/// `GET /v1/prices/{id}` answered with the price, its product expanded.
async fn stripe_knows_price(app: &TestApp, price: Value, product: Value) {
    let mut expanded = price.clone();
    expanded["product"] = product;
    Mock::given(method("GET"))
        .and(path(format!(
            "/v1/prices/{}",
            price["id"].as_str().unwrap()
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(expanded))
        .mount(&app.stripe)
        .await;
}

async fn price_reads(app: &TestApp, id: &str) -> Vec<wiremock::Request> {
    app.stripe_requests("GET", &format!("/v1/prices/{id}"))
        .await
}

async fn plan_becomes(app: &TestApp, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let plan = status_of(app).await["plan"].clone();
        if check(&plan) {
            return plan;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[actix_rt::test]
async fn status_answers_the_plan_from_the_price_and_product_their_webhooks_stored() {
    let app = app_with_user().await;
    let t = now() - 60;
    let mut price = price_object("price_pro_monthly", "prod_pro", 2900);
    price["nickname"] = json!("Pro monthly");
    delivered(
        &app,
        &event(
            "evt_product",
            "product.created",
            t,
            product_object("prod_pro", "Pro"),
        ),
    )
    .await;
    delivered(&app, &event("evt_price", "price.created", t, price)).await;
    subscribed(&app, "evt_sub", t + 1).await;

    let status = status_of(&app).await;

    assert_eq!(
        status["plan"],
        json!({"name": "Pro", "amount": 2900, "currency": "usd",
               "interval": "month", "intervalCount": 1})
    );
    assert_eq!(status["paid"], true);
    assert_eq!(app.event_outcome("evt_product"), "applied");
    assert_eq!(app.event_outcome("evt_price"), "applied");
    assert!(price_reads(&app, "price_pro_monthly").await.is_empty());
}

#[actix_rt::test]
async fn a_product_renamed_by_product_updated_shows_the_new_name_and_an_older_event_changes_nothing_back(
) {
    let app = app_with_user().await;
    let t = now() - 600;
    delivered(
        &app,
        &event(
            "evt_created",
            "product.created",
            t,
            product_object("prod_pro", "Pro"),
        ),
    )
    .await;
    delivered(
        &app,
        &event(
            "evt_price",
            "price.created",
            t,
            price_object("price_pro_monthly", "prod_pro", 2900),
        ),
    )
    .await;
    subscribed(&app, "evt_sub", t + 1).await;

    delivered(
        &app,
        &event_with_previous(
            "evt_renamed",
            "product.updated",
            t + 300,
            product_object("prod_pro", "Pro Plus"),
            json!({"name": "Pro"}),
        ),
    )
    .await;
    let renamed = status_of(&app).await["plan"]["name"].clone();
    // A rename made earlier, delivered late (Stripe does not order deliveries).
    delivered(
        &app,
        &event_with_previous(
            "evt_late",
            "product.updated",
            t + 100,
            product_object("prod_pro", "Professional"),
            json!({"name": "Pro"}),
        ),
    )
    .await;

    assert_eq!(renamed, "Pro Plus");
    assert_eq!(status_of(&app).await["plan"]["name"], "Pro Plus");
    assert_eq!(app.event_outcome("evt_late"), "stale");
}

#[actix_rt::test]
async fn an_unknown_price_is_read_from_stripe_once_with_its_product_and_stored() {
    let app = app_with_user().await;
    let mut price = price_object("price_pro_monthly", "prod_pro", 2900);
    price["nickname"] = json!("Pro monthly");
    stripe_knows_price(&app, price, product_object("prod_pro", "Pro")).await;
    let t = now() - 60;

    subscribed(&app, "evt_1", t).await;
    let plan = plan_becomes(&app, "the price read from Stripe", |plan| !plan.is_null()).await;
    // More events of the subscription and more status requests: nothing more to read.
    subscribed(&app, "evt_2", t + 1).await;
    for _ in 0..3 {
        assert_eq!(status_of(&app).await["plan"], plan);
    }

    assert_eq!(
        plan,
        json!({"name": "Pro", "amount": 2900, "currency": "usd",
               "interval": "month", "intervalCount": 1})
    );
    let reads = price_reads(&app, "price_pro_monthly").await;
    assert_eq!(reads.len(), 1);
    let query = reads[0].url.query().unwrap_or_default().replace("%5B", "[");
    assert!(
        query.contains("expand[") && query.contains("=product"),
        "{query}"
    );
    assert_eq!(app.count("stripe_prices"), 1);
    assert_eq!(app.count("stripe_products"), 1);
}

#[actix_rt::test]
async fn a_stripe_failure_reading_the_price_leaves_the_plan_null_and_the_status_200() {
    let app = app_with_user().await;
    Mock::given(method("GET"))
        .and(path("/v1/prices/price_pro_monthly"))
        .respond_with(stripe_error(500, "api_error", None, "boom"))
        .mount(&app.stripe)
        .await;

    subscribed(&app, "evt_1", now() - 60).await;
    for _ in 0..300 {
        if !price_reads(&app, "price_pro_monthly").await.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let status = status_of(&app).await;

    assert!(!price_reads(&app, "price_pro_monthly").await.is_empty());
    assert_eq!(status["plan"], Value::Null);
    assert_eq!(status["paid"], true);
    assert_eq!(status["status"], "active");
}

#[actix_rt::test]
async fn an_old_shape_subscription_is_shown_by_its_plan_read_from_stripe() {
    let app = app_with_user().await;
    let mut plan = price_object("plan_legacy", "prod_legacy", 900);
    plan["recurring"]["interval"] = json!("year");
    stripe_knows_price(&app, plan, product_object("prod_legacy", "Legacy")).await;

    let sub = old_subscription("sub_1", "cus_1", "active", now() + 300 * DAY);
    delivered(
        &app,
        &event("evt_old", "customer.subscription.created", now() - 60, sub),
    )
    .await;

    let plan = plan_becomes(&app, "the legacy plan", |plan| !plan.is_null()).await;
    assert_eq!(
        plan,
        json!({"name": "Legacy", "amount": 900, "currency": "usd",
               "interval": "year", "intervalCount": 1})
    );
}

#[actix_rt::test]
async fn a_deleted_product_keeps_its_last_name_and_a_price_without_a_nickname_is_still_shown() {
    let app = app_with_user().await;
    let t = now() - 600;
    delivered(
        &app,
        &event(
            "evt_product",
            "product.created",
            t,
            product_object("prod_pro", "Pro"),
        ),
    )
    .await;
    delivered(
        &app,
        &event(
            "evt_price",
            "price.created",
            t,
            price_object("price_pro_monthly", "prod_pro", 2900),
        ),
    )
    .await;
    subscribed(&app, "evt_sub", t + 1).await;

    // Stripe's own deletion sends the product; an older API, only what was deleted.
    let mut gone = product_object("prod_pro", "Pro");
    gone["active"] = json!(false);
    delivered(&app, &event("evt_deleted", "product.deleted", t + 10, gone)).await;
    delivered(
        &app,
        &event(
            "evt_deleted_again",
            "product.deleted",
            t + 20,
            json!({"id": "prod_pro", "object": "product", "deleted": true}),
        ),
    )
    .await;

    let status = status_of(&app).await;
    assert_eq!(status["plan"]["name"], "Pro");
    assert_eq!(status["plan"]["amount"], 2900);
    assert_eq!(app.event_outcome("evt_deleted"), "applied");
    assert!(price_reads(&app, "price_pro_monthly").await.is_empty());
}

#[actix_rt::test]
async fn a_price_whose_product_is_unknown_is_named_by_its_nickname() {
    let app = app_with_user().await;
    // The product cannot be read either: the nickname is all there is.
    Mock::given(method("GET"))
        .and(path("/v1/prices/price_pro_monthly"))
        .respond_with(stripe_error(500, "api_error", None, "boom"))
        .mount(&app.stripe)
        .await;
    let mut price = price_object("price_pro_monthly", "prod_pro", 2900);
    price["nickname"] = json!("Pro monthly");
    let t = now() - 60;
    delivered(&app, &event("evt_price", "price.created", t, price)).await;
    subscribed(&app, "evt_sub", t + 1).await;

    let plan = status_of(&app).await["plan"].clone();

    assert_eq!(plan["name"], "Pro monthly");
    assert_eq!(plan["amount"], 2900);
}

#[actix_rt::test]
async fn a_one_time_price_has_no_interval() {
    let app = app_with_user().await;
    let mut price = price_object("price_pro_monthly", "prod_pro", 49_900);
    price["recurring"] = Value::Null;
    price["type"] = json!("one_time");
    let t = now() - 60;
    delivered(
        &app,
        &event(
            "evt_product",
            "product.created",
            t,
            product_object("prod_pro", "Lifetime"),
        ),
    )
    .await;
    delivered(&app, &event("evt_price", "price.created", t, price)).await;
    subscribed(&app, "evt_sub", t + 1).await;

    let plan = status_of(&app).await["plan"].clone();

    assert_eq!(
        plan,
        json!({"name": "Lifetime", "amount": 49_900, "currency": "usd",
               "interval": null, "intervalCount": null})
    );
}

#[actix_rt::test]
async fn price_and_product_events_of_odd_shapes_are_acknowledged_and_never_fail_a_status_request() {
    let app = app_with_user().await;
    let t = now() - 600;
    subscribed(&app, "evt_sub", t).await;
    let mut odd: Vec<Value> = Vec::new();
    // Tiered pricing has no unit amount; a currency in capitals; a recurring
    // block of the wrong types; a product without a name.
    let mut tiered = price_object("price_pro_monthly", "prod_pro", 0);
    tiered["unit_amount"] = Value::Null;
    tiered["billing_scheme"] = json!("tiered");
    tiered["currency"] = json!("USD");
    odd.push(tiered);
    let mut weird = price_object("price_pro_monthly", "prod_pro", 2900);
    weird["recurring"] = json!({"interval": 5, "interval_count": "two"});
    weird["currency"] = json!("dollars");
    weird["nickname"] = json!(["not", "text"]);
    odd.push(weird);
    let mut counted = price_object("price_pro_monthly", "prod_pro", 2900);
    counted["recurring"]["interval_count"] = json!(-3);
    odd.push(counted);

    for (i, price) in odd.into_iter().enumerate() {
        delivered(
            &app,
            &event(
                &format!("evt_odd_{i}"),
                "price.updated",
                t + 10 * (i as i64 + 1),
                price,
            ),
        )
        .await;
        let plan = status_of(&app).await["plan"].clone();
        match i {
            0 => {
                assert_eq!(plan["amount"], Value::Null, "{plan}");
                assert_eq!(plan["currency"], "usd", "{plan}");
            }
            1 => {
                assert_eq!(plan["currency"], Value::Null, "{plan}");
                assert_eq!(plan["interval"], Value::Null, "{plan}");
                assert_eq!(plan["name"], Value::Null, "{plan}");
            }
            _ => assert_eq!(
                (&plan["interval"], &plan["intervalCount"]),
                (&json!("month"), &json!(1)),
                "{plan}"
            ),
        }
    }
    let mut nameless = product_object("prod_pro", "x");
    nameless["name"] = Value::Null;
    delivered(
        &app,
        &event("evt_nameless", "product.updated", t + 100, nameless),
    )
    .await;
    assert_eq!(status_of(&app).await["plan"]["name"], Value::Null);

    // No id at all is no price: refused as not an event, nothing stored.
    let response = app
        .deliver(&event(
            "evt_no_id",
            "price.created",
            t + 200,
            json!({"object": "price", "unit_amount": 1}),
        ))
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(app.count("stripe_events WHERE id = 'evt_no_id'"), 0);
}

#[actix_rt::test]
async fn status_tells_a_former_customer_from_a_never_customer_without_naming_the_customer() {
    let app = app_with_user().await;
    let t = now() - 600;
    subscribed(&app, "evt_sub", t).await;
    let sub = current_subscription("sub_1", "cus_1", "canceled", t + 30 * DAY);
    delivered(
        &app,
        &event("evt_end", "customer.subscription.deleted", t + 60, sub),
    )
    .await;

    let former = app
        .client
        .get(app.url("/billing/status"))
        .bearer_auth(token_for("user_1", None))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let never = app.status(&token_for("user_2", None)).await["data"].clone();

    let former: Value = serde_json::from_str(&former).unwrap_or_else(|_| panic!("{former}"));
    assert_eq!(former["data"]["paid"], false);
    assert_eq!(former["data"]["hasCustomer"], true);
    assert_eq!(never["hasCustomer"], false);
    assert_eq!(never["plan"], Value::Null);
    assert!(
        !former.to_string().contains("cus_1"),
        "the Stripe customer id leaked: {former}"
    );
}
