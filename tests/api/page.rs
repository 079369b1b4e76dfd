use serde_json::Value;

use crate::support::*;

async fn cookie_post(app: &TestApp, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.client.post(app.url("/billing/create-portal")).header(
        "cookie",
        format!("billing_session={}", token_for("user_1", None)),
    );
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[actix_rt::test]
async fn the_billing_page_is_served_with_a_self_only_content_security_policy() {
    let app = spawn_app().await;

    let response = app
        .client
        .get(app.url("/settings/billing"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "same-origin");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = response.text().await.unwrap();
    assert!(html.contains("/settings/billing/assets/billing.js"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resources"
    );
}

#[actix_rt::test]
async fn the_page_assets_are_served_with_their_content_types() {
    let app = spawn_app().await;

    for (path, kind) in [
        ("/settings/billing/assets/billing.css", "text/css"),
        ("/settings/billing/assets/billing.js", "text/javascript"),
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
    }
}

#[actix_rt::test]
async fn a_cookie_authenticated_post_without_the_custom_header_is_refused() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;

    let response = cookie_post(&app, &[]).await;

    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "csrf_header_missing");
    assert!(app.stripe.received_requests().await.unwrap().is_empty());
}

#[actix_rt::test]
async fn a_cookie_authenticated_post_from_another_origin_is_refused() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;

    let response = cookie_post(
        &app,
        &[
            ("x-requested-with", "billing-portal"),
            ("origin", "https://evil.example"),
        ],
    )
    .await;

    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "cross_origin_request");
    assert!(app.stripe.received_requests().await.unwrap().is_empty());
}

#[actix_rt::test]
async fn a_cookie_authenticated_post_from_the_app_or_the_service_origin_is_accepted() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    let own_origin = app.address.clone();

    let from_app = cookie_post(
        &app,
        &[
            ("x-requested-with", "billing-portal"),
            ("origin", APP_BASE_URL),
        ],
    )
    .await;
    let from_service = cookie_post(
        &app,
        &[
            ("x-requested-with", "billing-portal"),
            ("origin", &own_origin),
        ],
    )
    .await;

    assert_eq!(from_app.status(), 200);
    assert_eq!(from_service.status(), 200);
}

#[actix_rt::test]
async fn a_bearer_authenticated_post_needs_no_csrf_header() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;

    let response = app.create_portal(&token_for("user_1", None)).await;

    assert_eq!(response.status(), 200);
}
