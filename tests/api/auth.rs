use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::support::*;

fn b64(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

fn signed(alg: Algorithm, secret: &str, claims: Value) -> String {
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn in_ten_minutes() -> i64 {
    chrono::Utc::now().timestamp() + 600
}

/// Each case: a name, and the Authorization header or cookie it sends.
fn bad_credentials() -> Vec<(&'static str, Option<String>, Option<String>)> {
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&json!({"sub": "user_1", "exp": in_ten_minutes()}))
    );
    vec![
        ("no credentials at all", None, None),
        ("a Basic scheme", Some("Basic dXNlcjpwYXNz".into()), None),
        ("a Bearer without token", Some("Bearer ".into()), None),
        ("garbage", Some("Bearer not.a.jwt".into()), None),
        ("alg none", Some(format!("Bearer {unsigned}")), None),
        (
            "HS512 instead of HS256",
            Some(format!(
                "Bearer {}",
                signed(
                    Algorithm::HS512,
                    JWT_SECRET,
                    json!({"sub": "user_1", "exp": in_ten_minutes()})
                )
            )),
            None,
        ),
        (
            "a wrong secret",
            Some(format!(
                "Bearer {}",
                signed(
                    Algorithm::HS256,
                    "another-secret",
                    json!({"sub": "user_1", "exp": in_ten_minutes()})
                )
            )),
            None,
        ),
        (
            "an expired token",
            Some(format!(
                "Bearer {}",
                signed(
                    Algorithm::HS256,
                    JWT_SECRET,
                    json!({"sub": "user_1", "exp": chrono::Utc::now().timestamp() - 3600})
                )
            )),
            None,
        ),
        (
            "no sub",
            Some(format!(
                "Bearer {}",
                signed(
                    Algorithm::HS256,
                    JWT_SECRET,
                    json!({"exp": in_ten_minutes()})
                )
            )),
            None,
        ),
        (
            "an empty sub",
            Some(format!(
                "Bearer {}",
                signed(
                    Algorithm::HS256,
                    JWT_SECRET,
                    json!({"sub": "", "exp": in_ten_minutes()})
                )
            )),
            None,
        ),
        (
            "no exp",
            Some(format!(
                "Bearer {}",
                signed(Algorithm::HS256, JWT_SECRET, json!({"sub": "user_1"}))
            )),
            None,
        ),
        (
            "a tampered cookie",
            None,
            Some(format!("{}x", token_for("user_1", None))),
        ),
    ]
}

#[actix_rt::test]
async fn every_bad_credential_answers_401_json_and_changes_nothing() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;

    for (case, authorization, cookie) in bad_credentials() {
        let mut request = app.client.post(app.url("/billing/create-portal"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        if let Some(value) = cookie {
            request = request.header("cookie", format!("billing_session={value}"));
        }
        let response = request.send().await.unwrap();

        assert_eq!(response.status(), 401, "{case}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{case}"
        );
        assert!(
            ["unauthenticated", "invalid_token", "token_expired"]
                .contains(&body["error"].as_str().unwrap()),
            "{case}: {body}"
        );
    }
    assert_eq!(app.count("users"), 0);
    assert!(app.stripe.received_requests().await.unwrap().is_empty());
}

#[actix_rt::test]
async fn an_expired_token_is_told_apart_from_an_invalid_one() {
    let app = spawn_app().await;
    let expired = signed(
        Algorithm::HS256,
        JWT_SECRET,
        json!({"sub": "user_1", "exp": chrono::Utc::now().timestamp() - 3600}),
    );

    let response = app.create_portal(&expired).await;

    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "token_expired");
}

#[actix_rt::test]
async fn a_token_that_is_not_valid_yet_is_refused() {
    let app = spawn_app().await;
    let now = chrono::Utc::now().timestamp();
    let not_yet = signed(
        Algorithm::HS256,
        JWT_SECRET,
        json!({"sub": "user_1", "exp": now + 7200, "nbf": now + 3600}),
    );

    let response = app.create_portal(&not_yet).await;

    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(app.count("users"), 0);
}

#[actix_rt::test]
async fn the_session_cookie_authenticates_like_a_bearer_token() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;

    let response = app
        .client
        .post(app.url("/billing/create-portal"))
        .header(
            "cookie",
            format!("billing_session={}", token_for("user_c", None)),
        )
        .header("x-requested-with", "fetch")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert!(app.user("user_c").is_some());
}

#[actix_rt::test]
async fn a_user_id_with_a_bidi_override_or_a_zero_width_character_is_refused() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;

    // "user_1" shown reversed after U+202E, and "user_1" with an invisible
    // U+200B: each would look like another user in a log line or Stripe.
    for sub in ["\u{202E}1_resu", "user\u{200B}_1", "\u{FEFF}user_1"] {
        let token = token_for(sub, None);

        let response = app.create_portal(&token).await;

        assert_eq!(response.status(), 401, "{sub:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_token", "{sub:?}");
    }
    assert_eq!(app.count("users"), 0);
    assert!(app.stripe.received_requests().await.unwrap().is_empty());
}

/// The victim's browser holds their session cookie; a page that adopted
/// someone else's token would send it as a bearer beside that cookie.
async fn with_cookie_and_bearer(
    request: reqwest::RequestBuilder,
    cookie_user: &str,
    bearer_user: &str,
) -> reqwest::Response {
    request
        .header(
            "cookie",
            format!("billing_session={}", token_for(cookie_user, None)),
        )
        .bearer_auth(token_for(bearer_user, None))
        .header("x-requested-with", "billing-portal")
        .send()
        .await
        .unwrap()
}

#[actix_rt::test]
async fn a_bearer_token_and_a_session_cookie_for_different_users_are_refused_as_ambiguous() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;
    app.given()
        .user("victim")
        .with_customer("cus_victim")
        .store();

    let portal = app.client.post(app.url("/billing/create-portal"));
    let status = app.client.get(app.url("/billing/status"));
    for (what, request) in [("create-portal", portal), ("status", status)] {
        let response = with_cookie_and_bearer(request, "victim", "attacker").await;

        assert_eq!(response.status(), 400, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "ambiguous_credentials", "{what}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    assert!(app.user("attacker").is_none());
    assert!(app.stripe.received_requests().await.unwrap().is_empty());
}

#[actix_rt::test]
async fn a_bearer_token_and_a_session_cookie_for_the_same_user_are_accepted() {
    let app = spawn_app().await;
    mount_working_stripe(&app.stripe).await;

    let request = app.client.post(app.url("/billing/create-portal"));
    let response = with_cookie_and_bearer(request, "user_1", "user_1").await;

    assert_eq!(response.status(), 200);
    assert!(app.user("user_1").is_some());
}

#[actix_rt::test]
async fn the_status_names_the_user_it_answers_for() {
    let app = spawn_app().await;

    let response = app
        .client
        .get(app.url("/billing/status"))
        .bearer_auth(token_for("user_7", Some("ada@example.com")))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["userId"], "user_7", "{body}");
    assert_eq!(body["data"]["email"], "ada@example.com", "{body}");
}
