use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use crate::support::*;

async fn post_flow(app: &TestApp, user: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/billing/create-portal"))
        .bearer_auth(token_for(user, None))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn subscribed_user(app: &TestApp, status: &str, cancel_at_period_end: bool) {
    app.given().user("user_1").with_customer("cus_1").store();
    let mut sub = current_subscription("sub_of_user_1", "cus_1", status, now() + 86_400);
    sub["cancel_at_period_end"] = json!(cancel_at_period_end);
    app.deliver(&event("evt_1", "customer.subscription.created", now(), sub))
        .await;
}

async fn session_fields(app: &TestApp) -> HashMap<String, String> {
    let sessions = app
        .stripe_requests("POST", "/v1/billing_portal/sessions")
        .await;
    assert_eq!(sessions.len(), 1);
    form(&sessions[0])
}

fn flow_fields(fields: &HashMap<String, String>) -> HashMap<&str, &str> {
    fields
        .iter()
        .filter(|(k, _)| k.starts_with("flow_data"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[actix_rt::test]
async fn the_payment_method_flow_sends_its_flow_data_and_returns_to_the_billing_page() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    subscribed_user(&app, "active", false).await;

    let response = post_flow(&app, "user_1", json!({"flow": "payment_method_update"})).await;

    assert_eq!(response.status(), 200);
    let fields = session_fields(&app).await;
    let return_url = format!("{APP_BASE_URL}/settings/billing?from=portal");
    assert_eq!(
        flow_fields(&fields),
        HashMap::from([
            ("flow_data[type]", "payment_method_update"),
            ("flow_data[after_completion][type]", "redirect"),
            (
                "flow_data[after_completion][redirect][return_url]",
                return_url.as_str()
            ),
        ])
    );
}

#[actix_rt::test]
async fn the_cancel_flow_names_the_users_own_subscription_from_postgres() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    subscribed_user(&app, "active", false).await;

    let response = post_flow(&app, "user_1", json!({"flow": "subscription_cancel"})).await;

    assert_eq!(response.status(), 200);
    let fields = session_fields(&app).await;
    let return_url = format!("{APP_BASE_URL}/settings/billing?from=portal");
    assert_eq!(
        flow_fields(&fields),
        HashMap::from([
            ("flow_data[type]", "subscription_cancel"),
            (
                "flow_data[subscription_cancel][subscription]",
                "sub_of_user_1"
            ),
            ("flow_data[after_completion][type]", "redirect"),
            (
                "flow_data[after_completion][redirect][return_url]",
                return_url.as_str()
            ),
        ])
    );
    assert_eq!(fields["customer"], "cus_1");
}

#[actix_rt::test]
async fn the_update_flow_names_the_users_own_subscription_from_postgres() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    subscribed_user(&app, "trialing", false).await;

    let response = post_flow(
        &app,
        "user_1",
        json!({"flow": "subscription_update", "locale": "de"}),
    )
    .await;

    assert_eq!(response.status(), 200);
    let fields = session_fields(&app).await;
    assert_eq!(fields["flow_data[type]"], "subscription_update");
    assert_eq!(
        fields["flow_data[subscription_update][subscription]"],
        "sub_of_user_1"
    );
    assert_eq!(fields["locale"], "de");
}

#[actix_rt::test]
async fn a_flow_that_needs_a_subscription_gives_409_to_a_user_without_one() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;

    for flow in ["subscription_cancel", "subscription_update"] {
        let response = post_flow(&app, "user_without", json!({ "flow": flow })).await;

        assert_eq!(response.status(), 409, "{flow}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "no_subscription");
    }
    assert!(app.stripe.received_requests().await.unwrap().is_empty());
}

#[actix_rt::test]
async fn a_canceled_subscription_cannot_be_canceled_or_updated_again() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    subscribed_user(&app, "canceled", false).await;

    let response = post_flow(&app, "user_1", json!({"flow": "subscription_update"})).await;

    assert_eq!(response.status(), 409);
}

#[actix_rt::test]
async fn canceling_a_subscription_already_ending_gives_409_that_says_so() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    subscribed_user(&app, "active", true).await;

    let response = post_flow(&app, "user_1", json!({"flow": "subscription_cancel"})).await;

    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "subscription_already_canceling");
}

/// Flexible billing mode (the default since API 2025-09-30.clover) schedules
/// a cancellation with `cancel_at` alone (docs.stripe.com/billing/subscriptions/
/// billing-mode/compare): the guard must see it too.
#[actix_rt::test]
async fn canceling_a_subscription_set_to_end_in_flexible_mode_gives_409_too() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    app.given().user("user_1").with_customer("cus_1").store();
    let period_end = now() + 86_400;
    let mut sub = current_subscription("sub_of_user_1", "cus_1", "active", period_end);
    sub["cancel_at"] = json!(period_end);
    sub["cancel_at_period_end"] = json!(false);
    app.deliver(&event("evt_1", "customer.subscription.updated", now(), sub))
        .await;

    let response = post_flow(&app, "user_1", json!({"flow": "subscription_cancel"})).await;

    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "subscription_already_canceling");
    assert!(app
        .stripe_requests("POST", "/v1/billing_portal/sessions")
        .await
        .is_empty());
}

#[actix_rt::test]
async fn an_unknown_flow_is_refused_with_400() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;

    let response = post_flow(&app, "user_1", json!({"flow": "customer_update"})).await;

    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_flow");
    assert!(app.stripe.received_requests().await.unwrap().is_empty());
}

#[actix_rt::test]
async fn no_body_sends_no_flow_data() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;

    app.create_portal(&token_for("user_1", None)).await;

    assert!(flow_fields(&session_fields(&app).await).is_empty());
}

// --- OpenAPI

async fn openapi(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

#[actix_rt::test]
async fn every_served_route_is_documented_and_every_documented_route_is_served() {
    let app = spawn_app().await;
    let doc = openapi(&app).await;

    let served: BTreeSet<(String, String)> = billing_portal::http::served()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();

    assert_eq!(documented(&doc), served);
    // And the live server really answers each documented operation.
    for (method, path) in documented(&doc) {
        let request = match method.as_str() {
            "GET" => app.client.get(app.url(&path)),
            _ => app.client.post(app.url(&path)),
        };
        let status = request.send().await.unwrap().status().as_u16();
        assert!(
            ![404, 405].contains(&status),
            "{method} {path} answered {status}"
        );
    }
}

#[actix_rt::test]
async fn the_openapi_document_describes_security_errors_and_the_webhook_signature() {
    let app = spawn_app().await;

    let doc = openapi(&app).await;

    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer_jwt"]["scheme"], "bearer");
    assert_eq!(schemes["session_cookie"]["in"], "cookie");
    assert_eq!(schemes["session_cookie"]["name"], "billing_session");
    let error = &doc["components"]["schemas"]["ErrorBody"]["properties"];
    assert!(error["message"].is_object() && error["error"].is_object());
    let webhook = &doc["paths"]["/webhooks/stripe"]["post"];
    let params = webhook["parameters"].as_array().unwrap();
    assert!(params
        .iter()
        .any(|p| p["name"] == "Stripe-Signature" && p["in"] == "header" && p["required"] == true));
    let flows = &doc["components"]["schemas"]["PortalFlowName"]["enum"];
    assert_eq!(
        flows,
        &json!([
            "payment_method_update",
            "subscription_cancel",
            "subscription_update"
        ])
    );
}
