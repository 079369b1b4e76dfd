//! Micro-benchmarks of the per-request CPU work: verifying a webhook
//! signature, parsing an event, and checking a session JWT. Run with
//! `cargo bench`; criterion prints the figures.

use billing_portal::http::auth::{issue_token, Claims, JwtVerifier};
use billing_portal::stripe::events::parse_event;
use billing_portal::stripe::signature::{sign, WebhookVerifier};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use secrecy::SecretString;

/// A realistic `customer.subscription.updated` (Stripe's fixture subscription).
fn event_body() -> Vec<u8> {
    let mut sub: serde_json::Value =
        serde_json::from_str(include_str!("../tests/fixtures/subscription.json")).unwrap();
    sub["status"] = "active".into();
    serde_json::to_vec(&serde_json::json!({
        "id": "evt_bench", "object": "event", "type": "customer.subscription.updated",
        "created": 1_700_000_000, "api_version": "2025-08-27.basil", "livemode": false,
        "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null},
        "data": {"object": sub, "previous_attributes": {"status": "trialing"}}
    }))
    .unwrap()
}

fn signature(c: &mut Criterion) {
    let body = event_body();
    let now = 1_700_000_000;
    let header = sign("whsec_bench_secret", now, &body);
    let one = WebhookVerifier::new(vec!["whsec_bench_secret".into()], 300);
    let rolling = WebhookVerifier::new(vec!["whsec_old".into(), "whsec_bench_secret".into()], 300);
    let mut group = c.benchmark_group("signature");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("verify, one secret", |b| {
        b.iter(|| {
            one.verify(Some(black_box(&header)), black_box(&body), now)
                .unwrap()
        })
    });
    group.bench_function("verify, two secrets while rolling", |b| {
        b.iter(|| {
            rolling
                .verify(Some(black_box(&header)), black_box(&body), now)
                .unwrap()
        })
    });
    group.finish();
}

fn events(c: &mut Criterion) {
    let body = event_body();
    let ignored = br#"{"id":"evt_1","object":"event","type":"invoice.paid","created":1,"data":{"object":{"id":"in_1"}}}"#;
    let mut group = c.benchmark_group("event parsing");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("subscription.updated (current shape)", |b| {
        b.iter(|| parse_event(black_box(&body)).unwrap())
    });
    group.bench_function("ignored type", |b| {
        b.iter(|| parse_event(black_box(ignored)).unwrap())
    });
    group.finish();
}

fn jwt(c: &mut Criterion) {
    let secret = SecretString::from("bench-secret-0123456789abcdef0123456789");
    let token = issue_token(
        &secret,
        &Claims::user(
            "user_42",
            chrono::Utc::now().timestamp() + 3600,
            Some("ada@example.com".into()),
        ),
    );
    let verifier = JwtVerifier::new(&secret, &["owner".to_owned(), "admin".to_owned()]);
    c.bench_function("jwt check (HS256)", |b| {
        b.iter(|| verifier.verify(black_box(&token)).unwrap())
    });
}

criterion_group!(benches, signature, events, jwt);
criterion_main!(benches);
