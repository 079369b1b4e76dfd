//! Building Stripe webhook deliveries: events around subscription objects in
//! the current API shape (Stripe's own fixture) and the old one (top-level
//! `current_period_end`, items with `plan`), signed like Stripe signs them.

use serde_json::{json, Value};

use super::app::{TestApp, JWT_SECRET, WEBHOOK_SECRET};

/// Stripe's example subscription (fixtures3.json) with our values filled in.
pub fn current_subscription(id: &str, customer: &str, status: &str, period_end: i64) -> Value {
    let mut sub: Value =
        serde_json::from_str(include_str!("../../fixtures/subscription.json")).unwrap();
    sub["id"] = json!(id);
    sub["customer"] = json!(customer);
    sub["status"] = json!(status);
    sub["cancel_at"] = Value::Null;
    sub["cancel_at_period_end"] = json!(false);
    sub["pause_collection"] = Value::Null;
    sub["metadata"] = json!({});
    let item = &mut sub["items"]["data"][0];
    item["subscription"] = json!(id);
    item["current_period_end"] = json!(period_end);
    item["current_period_start"] = json!(period_end - 30 * 86_400);
    item["price"]["id"] = json!("price_pro_monthly");
    item["price"]["product"] = json!("prod_pro");
    sub
}

/// The shape of API versions before 2025-03-31: period on the subscription,
/// `plan` on the items, no `price`.
pub fn old_subscription(id: &str, customer: &str, status: &str, period_end: i64) -> Value {
    json!({
        "id": id, "object": "subscription", "customer": customer, "status": status,
        "current_period_start": period_end - 30 * 86_400, "current_period_end": period_end,
        "cancel_at_period_end": false, "metadata": {},
        "items": {"object": "list", "data": [{
            "id": "si_old", "object": "subscription_item",
            "plan": {"id": "plan_legacy", "object": "plan", "product": "prod_legacy",
                     "interval": "month", "amount": 900}
        }]},
        "plan": {"id": "plan_legacy", "object": "plan", "product": "prod_legacy"}
    })
}

/// Stripe's example price (fixtures3.json `price`) with our values: `unit_amount` in US cents,
/// every month, no nickname.
pub fn price_object(id: &str, product: &str, unit_amount: i64) -> Value {
    json!({
        "id": id, "object": "price", "active": true, "billing_scheme": "per_unit",
        "created": 1_721_948_530, "currency": "usd",
        "custom_unit_amount": {"maximum": null, "minimum": null, "preset": null},
        "livemode": false, "lookup_key": null, "metadata": {}, "nickname": null,
        "product": product,
        "recurring": {"interval": "month", "interval_count": 1, "meter": null,
                      "usage_type": "licensed", "trial_period_days": null},
        "tax_behavior": "unspecified", "tiers_mode": null, "transform_quantity": null,
        "type": "recurring", "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount.to_string()
    })
}

/// Stripe's example product (fixtures3.json `product`) named `name`.
pub fn product_object(id: &str, name: &str) -> Value {
    json!({
        "id": id, "object": "product", "active": true, "created": 1_721_948_530,
        "default_price": null, "description": null, "images": [], "livemode": false,
        "marketing_features": [], "metadata": {}, "name": name, "package_dimensions": null,
        "shippable": null, "statement_descriptor": null, "tax_code": null, "type": "service",
        "unit_label": null, "updated": 1_721_948_530, "url": null
    })
}

/// The events that store the plan the fixture subscriptions are on: product
/// `prod_pro` ("Pro") and its price `price_pro_monthly` (29.00), at `created`.
pub fn pro_plan_events(created: i64) -> [Value; 2] {
    [
        event(
            "evt_product",
            "product.created",
            created,
            product_object("prod_pro", "Pro"),
        ),
        event(
            "evt_price",
            "price.created",
            created,
            price_object("price_pro_monthly", "prod_pro", 2900),
        ),
    ]
}

pub fn event(id: &str, type_: &str, created: i64, object: Value) -> Value {
    json!({
        "id": id, "object": "event", "type": type_, "created": created,
        "api_version": "2025-08-27.basil", "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": object}
    })
}

/// `event` with `data.previous_attributes`, as Stripe sends on `*.updated`.
pub fn event_with_previous(
    id: &str,
    type_: &str,
    created: i64,
    object: Value,
    previous: Value,
) -> Value {
    let mut event = event(id, type_, created, object);
    event["data"]["previous_attributes"] = previous;
    event
}

/// `t=…,v1=…` for `body`, computed by openssl, not by the code under test.
pub fn openssl_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{timestamp}.").as_bytes()).unwrap();
    stdin.write_all(body).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    // "SHA2-256(stdin)= <hex>"
    let hex = text.rsplit(' ').next().unwrap().trim();
    format!("t={timestamp},v1={hex}")
}

/// `openssl dgst -sha256 <args> -binary` over `input`.
fn openssl_hmac(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256"])
        .args(args)
        .arg("-binary")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap().stdout
}

/// A `client_reference_id` for `user` signed as the README documents, by
/// openssl, not by the code under test: `<user>-<unpadded base64url of
/// HMAC-SHA256(key, user)>`, the key being `CLIENT_REFERENCE_SECRET`'s bytes
/// when `secret` is given, else HMAC-SHA256(AUTH_JWT_SECRET,
/// "billing-portal client_reference_id") (the test app's JWT secret).
pub fn signed_reference(user: &str, secret: Option<&str>) -> String {
    use base64::Engine as _;
    let mac = match secret {
        Some(secret) => openssl_hmac(&["-hmac", secret], user.as_bytes()),
        None => {
            let key = openssl_hmac(
                &["-hmac", JWT_SECRET],
                b"billing-portal client_reference_id",
            );
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            openssl_hmac(
                &["-mac", "HMAC", "-macopt", &format!("hexkey:{hex}")],
                user.as_bytes(),
            )
        }
    };
    assert_eq!(mac.len(), 32, "openssl gave no HMAC");
    format!(
        "{user}-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac)
    )
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `event` as Stripe would deliver it to the service at `base`: signed now
/// with the configured secret. Owned, so it can be sent from a spawned task.
pub fn signed_delivery(
    client: &reqwest::Client,
    base: &str,
    event: &Value,
) -> reqwest::RequestBuilder {
    let body = serde_json::to_vec(event).unwrap();
    let signature = billing_portal::stripe::signature::sign(WEBHOOK_SECRET, now(), &body);
    client
        .post(format!("{base}/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body)
}

impl TestApp {
    pub async fn post_webhook(&self, body: &[u8], signature: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/webhooks/stripe"))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        request.send().await.unwrap()
    }

    /// Delivers `event` signed with the configured secret, as Stripe would.
    pub async fn deliver(&self, event: &Value) -> reqwest::Response {
        signed_delivery(&self.client, &self.address, event)
            .send()
            .await
            .unwrap()
    }

    /// Delivers `event` to the instance at `base`; `None` when nothing answers.
    pub async fn deliver_to(&self, base: &str, event: &Value) -> Option<u16> {
        signed_delivery(&self.client, base, event)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    pub async fn status(&self, token: &str) -> Value {
        let response = self
            .client
            .get(self.url("/billing/status"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}
