//! Features from Stripe Entitlements (issue 20): a customer's active entitlements are read in
//! full from `GET /v1/entitlements/active_entitlements` (every page, never the event summary's
//! first ten) whenever Stripe says they changed or a subscription of the customer changes, and
//! `GET /billing/status` answers their lookup keys, sorted, as `features`. A read that fails
//! loses nothing: the subscription is applied, and the refresh, the catch-up and `sync` read
//! the entitlements again.

use billing_portal::billing::catchup::{self, Since};
use billing_portal::clock::Clock;
use billing_portal::context::{self, StripeTarget};
use serde_json::{json, Value};
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, ResponseTemplate};

use crate::support::*;

const DAY: i64 = 86_400;
const ENTITLEMENTS: &str = "/v1/entitlements/active_entitlements";
const SUMMARY_UPDATED: &str = "entitlements.active_entitlement_summary.updated";

/// Stripe's active entitlement (docs.stripe.com/api/entitlements/active-entitlement/object).
fn entitlement(n: usize, lookup_key: &str) -> Value {
    json!({"id": format!("ent_{n:02}"), "object": "entitlements.active_entitlement",
           "feature": format!("feat_{n:02}"), "livemode": false, "lookup_key": lookup_key})
}

fn entitlements_page(data: &[Value], has_more: bool) -> Value {
    json!({"object": "list", "url": ENTITLEMENTS, "has_more": has_more, "data": data})
}

/// The event Stripe sends when `customer`'s entitlements change: its summary carries only the
/// first ten (docs.stripe.com/api/entitlements/active-entitlement-summary).
fn summary_event(id: &str, customer: &str, all: &[Value]) -> Value {
    let first: Vec<Value> = all.iter().take(10).cloned().collect();
    event(
        id,
        SUMMARY_UPDATED,
        now() - 5,
        json!({"object": "entitlements.active_entitlement_summary", "customer": customer,
               "livemode": false,
               "entitlements": {"object": "list", "data": first, "has_more": all.len() > 10,
                                "url": format!("/v1/customer/{customer}/entitlements")}}),
    )
}

/// Stripe answers `customer`'s active entitlements in pages of ten (whatever `limit` asks),
/// continuing after the last id of the page before.
async fn stripe_has_entitlements(app: &TestApp, customer: &str, all: &[Value]) {
    let pages: Vec<&[Value]> = all.chunks(10).collect();
    for (i, page) in pages.iter().enumerate() {
        let more = i + 1 < pages.len();
        let mock = Mock::given(method("GET"))
            .and(path(ENTITLEMENTS))
            .and(query_param("customer", customer));
        let mock = match i {
            0 => mock.and(query_param_is_missing("starting_after")),
            _ => mock.and(query_param(
                "starting_after",
                pages[i - 1].last().unwrap()["id"].as_str().unwrap(),
            )),
        };
        mock.respond_with(ResponseTemplate::new(200).set_body_json(entitlements_page(page, more)))
            .mount(&app.stripe)
            .await;
    }
    if all.is_empty() {
        Mock::given(method("GET"))
            .and(path(ENTITLEMENTS))
            .and(query_param("customer", customer))
            .respond_with(ResponseTemplate::new(200).set_body_json(entitlements_page(&[], false)))
            .mount(&app.stripe)
            .await;
    }
}

async fn features(app: &TestApp, user: &str) -> Value {
    app.status(&token_for(user, None)).await["data"]["features"].clone()
}

/// Waits until `user`'s status answers `wanted` as its features.
async fn features_become(app: &TestApp, user: &str, wanted: Value) {
    for _ in 0..300 {
        if features(app, user).await == wanted {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "features never became {wanted}; they are {}",
        features(app, user).await
    );
}

/// Waits until the fake Stripe has been asked for entitlements `n` times.
async fn reads_arrive(app: &TestApp, n: usize) {
    for _ in 0..300 {
        if app.stripe_requests("GET", ENTITLEMENTS).await.len() >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{n} reads of entitlements never arrived");
}

async fn delivered(app: &TestApp, event: &Value) {
    let response = app.deliver(event).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

fn subscription_event(id: &str, status: &str) -> Value {
    let sub = current_subscription("sub_1", "cus_1", status, now() + 20 * DAY);
    event(id, "customer.subscription.created", now() - 10, sub)
}

/// Lookup keys in an order of their own, so that sorted is not how Stripe listed them.
fn key(n: usize) -> String {
    format!("feature_{:02}", (n * 7) % 25)
}

#[actix_rt::test]
async fn twenty_five_entitlements_over_three_pages_all_arrive_sorted_though_the_event_carries_ten()
{
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();
    let all: Vec<Value> = (0..25).map(|n| entitlement(n, &key(n))).collect();
    stripe_has_entitlements(&app, "cus_1", &all).await;

    delivered(&app, &summary_event("evt_summary", "cus_1", &all)).await;

    let mut sorted: Vec<String> = (0..25).map(key).collect();
    sorted.sort();
    features_become(&app, "user_1", json!(sorted)).await;
    let reads = app.stripe_requests("GET", ENTITLEMENTS).await;
    assert_eq!(reads.len(), 3, "one read of every page");
    for read in &reads {
        let query: Vec<(String, String)> = read.url.query_pairs().into_owned().collect();
        assert!(query.contains(&("limit".into(), "100".into())), "{query:?}");
    }
    assert_eq!(app.event_outcome("evt_summary"), "applied");
}

#[actix_rt::test]
async fn a_feature_removed_from_the_customer_is_gone_after_the_next_summary_event() {
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();
    let both = [entitlement(1, "reports"), entitlement(2, "api_access")];
    stripe_has_entitlements(&app, "cus_1", &both).await;
    delivered(&app, &summary_event("evt_1", "cus_1", &both)).await;
    features_become(&app, "user_1", json!(["api_access", "reports"])).await;

    app.stripe.reset().await;
    let left = [entitlement(2, "api_access")];
    stripe_has_entitlements(&app, "cus_1", &left).await;
    delivered(&app, &summary_event("evt_2", "cus_1", &left)).await;

    features_become(&app, "user_1", json!(["api_access"])).await;
}

#[actix_rt::test]
async fn a_subscription_event_has_the_customers_entitlements_read_again() {
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();
    stripe_has_entitlements(
        &app,
        "cus_1",
        &[entitlement(1, "sso"), entitlement(2, "audit_log")],
    )
    .await;

    delivered(&app, &subscription_event("evt_sub", "active")).await;

    features_become(&app, "user_1", json!(["audit_log", "sso"])).await;
    assert!(app.user("user_1").unwrap().paid);
}

#[actix_rt::test]
async fn a_user_without_a_customer_has_no_features() {
    let app = spawn_app().await;

    assert_eq!(features(&app, "user_new").await, json!([]));
    assert!(app.stripe.received_requests().await.unwrap().is_empty());
}

/// An app whose Stripe client tries each request once: a failed read is over when the fake
/// Stripe has seen it.
async fn app_without_retries() -> TestApp {
    let app = spawn_app_with(|vars| {
        vars.insert("STRIPE_MAX_NETWORK_RETRIES".into(), "0".into());
    })
    .await;
    app.given().user("user_1").with_customer("cus_1").store();
    app
}

/// Stripe fails every read of entitlements; answers once the failed read arrived.
async fn entitlements_fail_during_a_subscription_event(app: &TestApp) {
    Mock::given(method("GET"))
        .and(path(ENTITLEMENTS))
        .respond_with(stripe_error(
            500,
            "api_error",
            None,
            "Something went wrong on Stripe's end.",
        ))
        .mount(&app.stripe)
        .await;
    delivered(app, &subscription_event("evt_sub", "active")).await;
    reads_arrive(app, 1).await;
    assert_eq!(app.event_outcome("evt_sub"), "applied");
    assert!(app.user("user_1").unwrap().paid);
    assert_eq!(features(app, "user_1").await, json!([]));
    app.stripe.reset().await;
}

#[actix_rt::test]
async fn entitlements_stripe_could_not_answer_during_a_subscription_event_arrive_with_the_next_catch_up(
) {
    let app = app_without_retries().await;
    entitlements_fail_during_a_subscription_event(&app).await;
    stripe_has_entitlements(&app, "cus_1", &[entitlement(1, "exports")]).await;
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"object": "list", "url": "/v1/events",
                                      "has_more": false, "data": []})),
        )
        .mount(&app.stripe)
        .await;

    let billing = context::build(&app.settings, StripeTarget::Configured, Clock::system())
        .await
        .unwrap();
    catchup::run(&billing, Since::Auto, |_| {}).await.unwrap();

    // The catch-up ran beside the service (another instance's context): the
    // service's status cache hears of it from Postgres, within its bound.
    features_become(&app, "user_1", json!(["exports"])).await;
}

#[actix_rt::test]
async fn entitlements_stripe_could_not_answer_during_a_subscription_event_arrive_with_the_next_refresh(
) {
    let app = app_without_retries().await;
    entitlements_fail_during_a_subscription_event(&app).await;
    stripe_has_entitlements(&app, "cus_1", &[entitlement(1, "exports")]).await;
    let sub = current_subscription("sub_1", "cus_1", "active", now() + 20 * DAY);
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"object": "list", "url": "/v1/subscriptions", "has_more": false,
                   "data": [sub]}),
        ))
        .mount(&app.stripe)
        .await;

    let response = app
        .client
        .post(app.url("/billing/refresh"))
        .bearer_auth(token_for("user_1", None))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["features"], json!(["exports"]), "{body}");
}

#[actix_rt::test]
async fn the_sync_command_reads_every_customers_entitlements() {
    let app = spawn_app().await;
    app.given().user("user_1").with_customer("cus_1").store();
    stripe_has_entitlements(&app, "cus_1", &[entitlement(1, "exports")]).await;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"object": "list", "url": "/v1/subscriptions",
                                      "has_more": false, "data": []})),
        )
        .mount(&app.stripe)
        .await;

    let (ok, output) = app.run_command("sync", &[]);

    assert!(ok, "{output}");
    assert_eq!(features(&app, "user_1").await, json!(["exports"]));
}

#[actix_rt::test]
async fn a_summary_event_for_a_customer_no_user_holds_yet_is_kept_for_when_one_does() {
    let app = spawn_app().await;
    stripe_has_entitlements(&app, "cus_1", &[entitlement(1, "exports")]).await;
    delivered(
        &app,
        &summary_event("evt_1", "cus_1", &[entitlement(1, "exports")]),
    )
    .await;
    reads_arrive(&app, 1).await;

    app.given().user("user_1").with_customer("cus_1").store();

    features_become(&app, "user_1", json!(["exports"])).await;
}

#[actix_rt::test]
async fn the_status_documents_features_in_the_openapi_schema() {
    let app = spawn_app().await;

    let doc = app.get_json("/openapi.json").await;

    let data = &doc["components"]["schemas"]["StatusData"];
    assert_eq!(data["properties"]["features"]["type"], "array", "{data}");
    assert!(data["required"]
        .as_array()
        .unwrap()
        .contains(&json!("features")));
}

/// Through the emulator: its seeded products carry features, and features made and attached
/// through its API count as at Stripe.
#[cfg(feature = "emulator")]
mod emulated {
    use super::*;

    /// The seeded Pro product's features' lookup keys, sorted.
    const PRO: [&str; 3] = ["advanced_reports", "api_access", "priority_support"];

    #[actix_rt::test]
    async fn subscribing_to_a_plan_whose_product_has_features_shows_them_sorted_in_status() {
        let app = spawn_emulated_app_with(|_| {}).await;

        let (customer, _) = emulated_paid_user(&app, "user_1").await;

        features_become(&app, "user_1", json!(PRO)).await;
        let events = emulator_get(&app, &format!("events?type={SUMMARY_UPDATED}")).await;
        let summary = &events["data"][0]["data"]["object"];
        assert_eq!(summary["customer"], json!(customer), "{events}");
        assert_eq!(summary["entitlements"]["data"].as_array().unwrap().len(), 3);
    }

    #[actix_rt::test]
    async fn features_attached_through_the_api_are_listed_in_pages_summarized_in_ten_and_end_with_the_subscription(
    ) {
        let app = spawn_emulated_app_with(|_| {}).await;
        let mut keys: Vec<String> = PRO.iter().map(|k| k.to_string()).collect();
        for n in 0..12 {
            let lookup_key = format!("extra_{:02}", (n * 5) % 12);
            let (status, feature) = emulator_post(
                &app,
                "entitlements/features",
                &[("name", &format!("Extra {n}")), ("lookup_key", &lookup_key)],
                None,
            )
            .await;
            assert_eq!(status, 200, "{feature}");
            let (status, attached) = emulator_post(
                &app,
                "products/prod_emu_pro/features",
                &[("entitlement_feature", feature["id"].as_str().unwrap())],
                None,
            )
            .await;
            assert_eq!(status, 200, "{attached}");
            keys.push(lookup_key);
        }
        keys.sort();

        let (customer, sub) = emulated_paid_user(&app, "user_1").await;

        features_become(&app, "user_1", json!(keys)).await;
        let mut listed = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let cursor = after
                .as_ref()
                .map_or(String::new(), |a| format!("&starting_after={a}"));
            let page = emulator_get(
                &app,
                &format!("entitlements/active_entitlements?customer={customer}&limit=4{cursor}"),
            )
            .await;
            let data = page["data"].as_array().unwrap_or_else(|| panic!("{page}"));
            assert!(data.len() <= 4);
            listed.extend(data.iter().map(|e| e["lookup_key"].clone()));
            after = data.last().map(|e| e["id"].as_str().unwrap().to_string());
            if page["has_more"] != json!(true) {
                break;
            }
        }
        assert_eq!(listed.len(), 15);
        let events = emulator_get(&app, &format!("events?type={SUMMARY_UPDATED}")).await;
        let summary = &events["data"][0]["data"]["object"]["entitlements"];
        assert_eq!(summary["data"].as_array().unwrap().len(), 10, "{summary}");
        assert_eq!(summary["has_more"], true);

        let canceled = app
            .client
            .delete(app.url(&format!(
                "/stripe-emulator/v1/subscriptions/{}",
                sub["id"].as_str().unwrap()
            )))
            .bearer_auth("sk_test_emulator")
            .send()
            .await
            .unwrap();
        assert_eq!(canceled.status(), 200);

        features_become(&app, "user_1", json!([])).await;
    }
}
