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

#[actix_rt::test]
async fn made_up_signature_headers_are_counted_under_a_fixed_set_of_reasons() {
    let app = spawn_app().await;
    let body = br#"{"id":"evt_1","object":"event"}"#;

    for i in 0..20 {
        let header = match i % 4 {
            0 => format!("made_up_{i}"),
            1 => format!("t={i},v1=made_up_{i}"),
            2 => format!("t={},v1={i:064x},v9=made_up_{i}", now()),
            _ => format!("t=made_up_{i},v1=00"),
        };
        let response = app.post_webhook(body, Some(&header)).await;
        assert_eq!(response.status(), 400, "{header}");
    }
    app.post_webhook(body, None).await;

    let metrics = app.get_text("/metrics").await;
    let mut reasons: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("billing_portal_webhook_signature_failures_total{"))
        .map(|l| l.split('}').next().unwrap())
        .collect();
    reasons.sort();
    assert!(!metrics.contains("made_up"), "a header became a label");
    assert_eq!(
        reasons,
        [
            r#"reason="malformed_signature""#,
            r#"reason="missing_signature""#,
            r#"reason="signature_mismatch""#,
            r#"reason="timestamp_out_of_tolerance""#,
        ]
    );
}
