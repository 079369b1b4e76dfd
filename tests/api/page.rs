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

async fn assert_refused_as_cross_origin(app: &TestApp, case: &str, response: reqwest::Response) {
    assert_eq!(response.status(), 403, "{case}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "cross_origin_request", "{case}");
    assert!(
        app.stripe.received_requests().await.unwrap().is_empty(),
        "{case}"
    );
}

#[actix_rt::test]
async fn an_origin_must_match_the_app_or_the_service_in_scheme_host_and_port() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    // The service answers plain HTTP on this address.
    let own_host = app.address.trim_start_matches("http://").to_string();
    let other_port = APP_BASE_URL.to_string() + ":8443";

    for (case, origin) in [
        (
            "the service's host over https",
            format!("https://{own_host}"),
        ),
        (
            "the app's host over http",
            APP_BASE_URL.replace("https://", "http://"),
        ),
        ("the app's host on another port", other_port),
        ("an opaque origin", "null".to_string()),
    ] {
        let response = cookie_post(
            &app,
            &[("x-requested-with", "billing-portal"), ("origin", &origin)],
        )
        .await;
        assert_refused_as_cross_origin(&app, case, response).await;
    }
}

#[actix_rt::test]
async fn forwarded_host_headers_from_an_untrusted_client_are_ignored() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;

    for (case, header, value) in [
        ("X-Forwarded-Host", "x-forwarded-host", "evil.example"),
        ("Forwarded", "forwarded", "host=evil.example;proto=https"),
    ] {
        let response = cookie_post(
            &app,
            &[
                ("x-requested-with", "billing-portal"),
                ("origin", "https://evil.example"),
                ("x-forwarded-proto", "https"),
                (header, value),
            ],
        )
        .await;
        assert_refused_as_cross_origin(&app, case, response).await;
    }
}

#[actix_rt::test]
async fn a_cookie_authenticated_write_the_browser_marks_cross_site_is_refused() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;

    // Without an Origin header, and even with the app's own: the browser
    // says the page that sent it is on another site.
    for (case, origin) in [
        ("no Origin", None),
        ("the app's Origin", Some(APP_BASE_URL)),
    ] {
        let mut headers = vec![
            ("x-requested-with", "billing-portal"),
            ("sec-fetch-site", "cross-site"),
        ];
        headers.extend(origin.map(|o| ("origin", o)));
        let response = cookie_post(&app, &headers).await;
        assert_refused_as_cross_origin(&app, case, response).await;
    }
}

#[actix_rt::test]
async fn behind_a_trusted_proxy_the_public_origin_it_forwards_is_the_services_own() {
    let public = "https://billing.example.test";
    let forwarded = [
        ("x-requested-with", "billing-portal"),
        ("origin", public),
        ("x-forwarded-host", "billing.example.test"),
        ("x-forwarded-proto", "https"),
        ("sec-fetch-site", "same-origin"),
    ];

    let behind = spawn_app_with(|vars| {
        vars.insert("TRUSTED_PROXIES".into(), "10.0.0.0/8, 127.0.0.1".into());
    })
    .await;
    mount_working_stripe(&behind.stripe).await;
    assert_eq!(cookie_post(&behind, &forwarded).await.status(), 200);
    let rfc7239 = [
        ("x-requested-with", "billing-portal"),
        ("origin", public),
        (
            "forwarded",
            "for=192.0.2.1;proto=https;host=billing.example.test",
        ),
    ];
    assert_eq!(cookie_post(&behind, &rfc7239).await.status(), 200);

    // The same headers from a peer that is not a listed proxy prove nothing.
    let elsewhere = spawn_app_with(|vars| {
        vars.insert("TRUSTED_PROXIES".into(), "10.0.0.0/8".into());
    })
    .await;
    mount_working_stripe(&elsewhere.stripe).await;
    let response = cookie_post(&elsewhere, &forwarded).await;
    assert_refused_as_cross_origin(&elsewhere, "untrusted peer", response).await;
}

// --- `/`: the address the README's first lines point at (issue 17).

#[actix_rt::test]
async fn the_root_opens_the_billing_page_outside_production() {
    let app = spawn_app().await;

    let response = app.client.get(app.url("/")).send().await.unwrap();

    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "/settings/billing");
}

/// In production the service sits behind the app's own domain, which proxies only the
/// billing prefixes; its `/` stays the API's usual JSON 404.
#[actix_rt::test]
async fn the_root_is_the_usual_json_404_in_production() {
    let app = spawn_app_with(live_instance).await;

    let response = app.client.get(app.url("/")).send().await.unwrap();

    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}
