//! `/metrics` stays bounded whatever clients send: every label value comes
//! from a closed set, so made-up HTTP methods or event types cannot create
//! series that are never freed (issue 15, item 1).

use serde_json::json;

use crate::support::*;

#[actix_rt::test]
async fn made_up_http_methods_are_all_counted_under_one_label() {
    let app = spawn_app().await;

    for i in 0..50 {
        let method = reqwest::Method::from_bytes(format!("MADEUP{i}").as_bytes()).unwrap();
        app.client
            .request(method, app.url("/healthz"))
            .send()
            .await
            .unwrap();
    }

    let metrics = app.get_text("/metrics").await;
    assert!(
        !metrics.contains("MADEUP"),
        "a made-up method became a label"
    );
    assert!(
        metrics.contains(r#"method="other""#),
        "made-up methods are not counted as other"
    );
}

#[actix_rt::test]
async fn signed_events_of_unknown_types_are_all_counted_under_one_label() {
    let app = spawn_app().await;

    for i in 0..20 {
        let event = event(
            &format!("evt_made_up_{i}"),
            &format!("made_up.type_{i}"),
            now(),
            json!({"id": "obj_1", "object": "thing"}),
        );
        assert_eq!(app.deliver(&event).await.status(), 200);
    }

    let metrics = app.get_text("/metrics").await;
    assert!(!metrics.contains("made_up"), "an event type became a label");
    assert!(
        metrics.contains(r#"type="other""#),
        "unknown event types are not counted as other"
    );
}
