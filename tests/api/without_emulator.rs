//! Where the local Stripe emulator does not run (a Stripe key is set, or the
//! build has no `emulator` feature), its routes and the demo's are unknown
//! paths like any other: the service's JSON 404.

use serde_json::Value;

use crate::support::*;

#[actix_rt::test]
async fn with_a_stripe_key_the_emulator_and_demo_never_run() {
    let app = spawn_app().await;

    let api = app
        .client
        .get(app.url("/stripe-emulator/v1/prices"))
        .bearer_auth("sk_test_x")
        .send()
        .await
        .unwrap();
    let demo = app
        .client
        .post(app.url("/demo/sign-in"))
        .send()
        .await
        .unwrap();
    let page = app.get_text("/settings/billing").await;

    assert_eq!(api.status(), 404);
    assert_eq!(demo.status(), 404);
    assert!(page.contains(r#"<meta name="billing-demo" content="off">"#));
}

#[actix_rt::test]
async fn the_emulators_paths_answer_the_services_json_404() {
    let app = spawn_app().await;

    for (method, path) in [
        ("GET", "/stripe-emulator/v1/prices"),
        ("GET", "/stripe-emulator/p/session/bps_1"),
        ("POST", "/demo/sign-in"),
        ("POST", "/demo/subscribe"),
    ] {
        let response = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .send()
            .await
            .unwrap();

        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "not_found", "{path}");
    }
}
