//! Hostile input: every bad request gets its clear status and a JSON error,
//! and changes nothing (no rows, no Stripe call).

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

use crate::support::*;

struct Case {
    name: &'static str,
    method: reqwest::Method,
    path: &'static str,
    headers: Vec<(&'static str, HeaderValue)>,
    body: Vec<u8>,
    status: u16,
}

fn h(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap()
}

fn jwt(claims: Value, alg: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

fn later() -> i64 {
    now() + 600
}

fn signed(body: &[u8]) -> HeaderValue {
    h(&billing_portal::stripe::signature::sign(
        WEBHOOK_SECRET,
        now(),
        body,
    ))
}

fn cases() -> Vec<Case> {
    use reqwest::Method as M;
    let bearer = || {
        (
            "authorization",
            h(&format!("Bearer {}", token_for("user_1", None))),
        )
    };
    let json_type = || ("content-type", h("application/json"));
    let portal = |name, headers: Vec<(&'static str, HeaderValue)>, body: &[u8], status| Case {
        name,
        method: M::POST,
        path: "/billing/create-portal",
        headers,
        body: body.to_vec(),
        status,
    };
    let webhook = |name, headers: Vec<(&'static str, HeaderValue)>, body: Vec<u8>, status| Case {
        name,
        method: M::POST,
        path: "/webhooks/stripe",
        headers,
        body,
        status,
    };
    let signed_webhook = |name, body: Vec<u8>, status| {
        let signature = signed(&body);
        webhook(name, vec![("stripe-signature", signature)], body, status)
    };
    let sub_missing_customer = serde_json::to_vec(&event(
        "evt_x",
        "customer.subscription.updated",
        now(),
        json!({"id": "sub_1", "status": "active"}),
    ))
    .unwrap();
    let mut huge_created = event("evt_y", "invoice.paid", 0, json!({}));
    huge_created["created"] = json!(i64::MAX);
    let nested = format!("{{\"locale\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
    vec![
        portal("no credentials", vec![], b"", 401),
        portal(
            "garbage bearer",
            vec![("authorization", h("Bearer abc.def.ghi"))],
            b"",
            401,
        ),
        portal(
            "two tokens",
            vec![("authorization", h("Bearer a b"))],
            b"",
            401,
        ),
        portal(
            "Basic scheme",
            vec![("authorization", h("Basic dXNlcjpwYXNz"))],
            b"",
            401,
        ),
        portal(
            "non-ASCII authorization header",
            vec![(
                "authorization",
                HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
            )],
            b"",
            401,
        ),
        portal(
            "HS384 token",
            vec![(
                "authorization",
                h(&format!(
                    "Bearer {}",
                    jwt(
                        json!({"sub": "user_1", "exp": later()}),
                        jsonwebtoken::Algorithm::HS384
                    )
                )),
            )],
            b"",
            401,
        ),
        portal(
            "sub with a newline",
            vec![(
                "authorization",
                h(&format!(
                    "Bearer {}",
                    jwt(
                        json!({"sub": "user\n1", "exp": later()}),
                        jsonwebtoken::Algorithm::HS256
                    )
                )),
            )],
            b"",
            401,
        ),
        portal(
            "sub of 300 characters",
            vec![(
                "authorization",
                h(&format!(
                    "Bearer {}",
                    jwt(
                        json!({"sub": "u".repeat(300), "exp": later()}),
                        jsonwebtoken::Algorithm::HS256
                    )
                )),
            )],
            b"",
            401,
        ),
        portal(
            "sub that is a number",
            vec![(
                "authorization",
                h(&format!(
                    "Bearer {}",
                    jwt(
                        json!({"sub": 42, "exp": later()}),
                        jsonwebtoken::Algorithm::HS256
                    )
                )),
            )],
            b"",
            401,
        ),
        portal(
            "garbage cookie",
            vec![("cookie", h("billing_session=%%%"))],
            b"",
            401,
        ),
        portal("JSON array body", vec![bearer(), json_type()], b"[]", 400),
        portal(
            "JSON array read by position",
            vec![bearer(), json_type()],
            br#"["fr", "payment_method_update"]"#,
            400,
        ),
        portal(
            "locale of the wrong type",
            vec![bearer(), json_type()],
            br#"{"locale":5}"#,
            400,
        ),
        portal(
            "unknown locale",
            vec![bearer(), json_type()],
            br#"{"locale":"xx-yy"}"#,
            400,
        ),
        portal(
            "unknown flow",
            vec![bearer(), json_type()],
            br#"{"flow":"delete_everything"}"#,
            400,
        ),
        portal(
            "a customer named in the body",
            vec![bearer(), json_type()],
            br#"{"customer":"cus_other"}"#,
            400,
        ),
        portal(
            "invalid UTF-8 body",
            vec![bearer(), json_type()],
            b"{\"locale\":\"\xff\"}",
            400,
        ),
        portal(
            "truncated JSON",
            vec![bearer(), json_type()],
            br#"{"locale":"#,
            400,
        ),
        portal(
            "JSON nested 5000 deep",
            vec![bearer(), json_type()],
            nested.as_bytes(),
            400,
        ),
        portal(
            "body over 16 KiB",
            vec![bearer(), json_type()],
            &vec![b' '; 17 * 1024],
            413,
        ),
        portal(
            "text/plain body",
            vec![bearer(), ("content-type", h("text/plain"))],
            b"locale=fr",
            415,
        ),
        portal(
            "cookie without the CSRF header",
            vec![(
                "cookie",
                h(&format!("billing_session={}", token_for("user_1", None))),
            )],
            b"",
            403,
        ),
        portal(
            "cookie from another origin",
            vec![
                (
                    "cookie",
                    h(&format!("billing_session={}", token_for("user_1", None))),
                ),
                ("x-requested-with", h("x")),
                ("origin", h("https://evil.example")),
            ],
            b"",
            403,
        ),
        webhook("webhook without a signature", vec![], b"{}".to_vec(), 400),
        webhook(
            "non-ASCII signature header",
            vec![(
                "stripe-signature",
                HeaderValue::from_bytes(b"t=1,v1=\xff").unwrap(),
            )],
            b"{}".to_vec(),
            400,
        ),
        webhook(
            "timestamp that overflows",
            vec![("stripe-signature", h("t=99999999999999999999999,v1=00"))],
            b"{}".to_vec(),
            400,
        ),
        webhook(
            "signature from the future",
            vec![(
                "stripe-signature",
                h(&billing_portal::stripe::signature::sign(
                    WEBHOOK_SECRET,
                    now() + 3600,
                    b"{}",
                )),
            )],
            b"{}".to_vec(),
            400,
        ),
        webhook("body over 1 MiB", vec![], vec![b' '; 1024 * 1024 + 1], 413),
        signed_webhook("signed empty body", Vec::new(), 400),
        signed_webhook("signed JSON array", b"[]".to_vec(), 400),
        signed_webhook(
            "signed event whose type is a number",
            br#"{"id":"evt_1","type":5,"created":1,"data":{"object":{}}}"#.to_vec(),
            400,
        ),
        signed_webhook(
            "signed subscription without a customer",
            sub_missing_customer,
            400,
        ),
        signed_webhook(
            "signed event created at i64::MAX",
            serde_json::to_vec(&huge_created).unwrap(),
            400,
        ),
        signed_webhook("signed invalid UTF-8", b"{\"id\":\"\xff\"}".to_vec(), 400),
        Case {
            name: "GET on the webhook",
            method: M::GET,
            path: "/webhooks/stripe",
            headers: vec![],
            body: vec![],
            status: 405,
        },
        Case {
            name: "PUT on create-portal",
            method: M::PUT,
            path: "/billing/create-portal",
            headers: vec![bearer()],
            body: vec![],
            status: 405,
        },
        Case {
            name: "status with an expired token",
            method: M::GET,
            path: "/billing/status",
            headers: vec![(
                "authorization",
                h(&format!(
                    "Bearer {}",
                    jwt(
                        json!({"sub": "user_1", "exp": now() - 3600}),
                        jsonwebtoken::Algorithm::HS256
                    )
                )),
            )],
            body: vec![],
            status: 401,
        },
        Case {
            name: "an unknown path",
            method: M::GET,
            path: "/admin",
            headers: vec![],
            body: vec![],
            status: 404,
        },
    ]
}

#[actix_rt::test]
async fn every_hostile_request_is_refused_with_json_and_changes_nothing() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    let cases = cases();
    assert!(cases.len() >= 30);

    for case in cases {
        let mut headers = HeaderMap::new();
        for (name, value) in &case.headers {
            headers.insert(HeaderName::from_static(name), value.clone());
        }
        let response = app
            .client
            .request(case.method.clone(), app.url(case.path))
            .headers(headers)
            .body(case.body.clone())
            .send()
            .await
            .unwrap();

        assert_eq!(response.status().as_u16(), case.status, "{}", case.name);
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: not JSON ({e})", case.name));
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: {body}",
            case.name
        );
        assert!(
            body["error"].as_str().is_some_and(|c| !c.is_empty()),
            "{}: {body}",
            case.name
        );
        for table in ["users", "subscriptions", "stripe_events"] {
            assert_eq!(app.count(table), 0, "{}: {table} changed", case.name);
        }
    }
    assert!(app.stripe.received_requests().await.unwrap().is_empty());
}
