//! The status cache (`billing::status_cache`): `GET /billing/status` served
//! from memory on every instance, never staler than its bound. Two instances
//! on one database: the in-process app (A) takes the changes, a separate
//! process (B) answers under a steady status load from four pollers; every
//! answer B gives is checked against the change it reflects and when the
//! request was sent. A request sent after the change was acknowledged plus
//! the bound that still reflects an older state is a violation, whatever the
//! machine's load: a poller that is descheduled only sends later, so its
//! answer can only be fresher (the timestamps never make a stale answer
//! look fresh, nor a fresh one stale).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::RunQueryDsl;
use serde_json::{json, Value};

use crate::support::*;

/// The issue's bound: a change applied through one instance is answered by
/// the others within 100 ms.
const BOUND: Duration = Duration::from_millis(100);
/// Change `k` sets the period end to `BASE_PERIOD_END + k` days: an answer
/// says which change it reflects.
const DAY: i64 = 86_400;

fn base_period_end() -> i64 {
    // Whole days from a fixed point, so each answer maps back to its change.
    (now() / DAY + 30) * DAY
}

/// Change `k`, as Stripe would send it: each event one second newer.
fn change(k: i64, base: i64) -> Value {
    event(
        &format!("evt_change_{k}"),
        "customer.subscription.updated",
        now() - 1_000 + k,
        current_subscription("sub_1", "cus_1", "active", base + k * DAY),
    )
}

/// Which change an answer reflects.
fn change_seen(status: &Value, base: i64) -> i64 {
    let end = status["data"]["currentPeriodEnd"]
        .as_str()
        .unwrap_or_else(|| panic!("no period end in {status}"));
    let end = chrono::DateTime::parse_from_rfc3339(end)
        .unwrap()
        .timestamp();
    (end - base) / DAY
}

/// What one poller saw: when it sent the request, and which change the
/// answer reflects.
type Samples = Arc<Mutex<Vec<(Instant, i64)>>>;

/// Four pollers reading `base_url`'s status for `token` until `stop`.
fn poll(base_url: &str, token: &str, base: i64, stop: &Arc<AtomicBool>) -> Samples {
    let samples: Samples = Arc::default();
    for _ in 0..4 {
        let (url, token, samples, stop) = (
            format!("{base_url}/billing/status"),
            token.to_owned(),
            samples.clone(),
            stop.clone(),
        );
        let client = reqwest::Client::new();
        tokio::spawn(async move {
            // Bounded: a test that fails to stop its pollers does not spin forever.
            for _ in 0..100_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let sent = Instant::now();
                let Ok(response) = client.get(&url).bearer_auth(&token).send().await else {
                    continue;
                };
                if response.status() != 200 {
                    continue;
                }
                let status: Value = response.json().await.unwrap();
                samples
                    .lock()
                    .unwrap()
                    .push((sent, change_seen(&status, base)));
            }
        });
    }
    samples
}

/// For a change acknowledged at `at`: how long after it a request was still
/// answered with an older state (zero when none was).
fn stale_for(samples: &[(Instant, i64)], k: i64, at: Instant) -> Duration {
    samples
        .iter()
        .filter(|(sent, seen)| *sent >= at && *seen < k)
        .map(|(sent, _)| *sent - at)
        .max()
        .unwrap_or_default()
}

async fn hits(client: &reqwest::Client, base_url: &str) -> f64 {
    metric_at(
        client,
        base_url,
        r#"status_cache_reads_total{outcome="hit"}"#,
    )
    .await
}

/// Applies change `k` through the app and answers when it was acknowledged.
async fn apply(app: &TestApp, k: i64, base: i64) -> Instant {
    let response = app.deliver(&change(k, base)).await;
    assert_eq!(response.status(), 200);
    Instant::now()
}

/// `GET /billing/status` of the instance at `base_url`.
async fn status_at(app: &TestApp, base_url: &str, token: &str) -> Value {
    app.client
        .get(format!("{base_url}/billing/status"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A paid user, and a second instance whose listening connection alone
/// goes through `proxy` (its pool reads Postgres directly, so it keeps
/// answering whatever the proxy does), answering change 0 from memory.
async fn listening_through(proxy: &TcpProxy) -> (TestApp, Instance, String, i64) {
    let app = spawn_app().await;
    let base = base_period_end();
    let token = paid_user(&app, base).await;
    let listen =
        format!("{}/{}", admin_url(), app.db_name).replace(":5432/", &format!(":{}/", proxy.port));
    let other = Instance::start_logging(&app, &[("STATUS_CACHE_LISTEN_URL", &listen)]).await;
    until_cached(&app, &other.base, &token, 0, base).await;
    (app, other, token, base)
}

/// Waits (bounded) until `base_url` answers change `k` from memory: the
/// cache holds it and is listening.
async fn until_cached(app: &TestApp, base_url: &str, token: &str, k: i64, base: i64) {
    for _ in 0..200 {
        let before = hits(&app.client, base_url).await;
        let status = status_at(app, base_url, token).await;
        if change_seen(&status, base) == k && hits(&app.client, base_url).await > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base_url} never answered change {k} from its cache");
}

async fn paid_user(app: &TestApp, base: i64) -> String {
    app.given().user("user_1").with_customer("cus_1").store();
    apply(app, 0, base).await;
    token_for("user_1", Some("ada@example.com"))
}

#[actix_rt::test]
async fn a_change_through_one_instance_is_answered_by_the_other_within_100_ms_at_p99() {
    let app = spawn_app().await;
    let base = base_period_end();
    let token = paid_user(&app, base).await;
    let other = Instance::start(&app).await;
    until_cached(&app, &other.base, &token, 0, base).await;
    let hits_before = hits(&app.client, &other.base).await;

    let stop = Arc::new(AtomicBool::new(false));
    let samples = poll(&other.base, &token, base, &stop);
    let mut changed = Vec::new();
    for k in 1..=30 {
        changed.push((k, apply(&app, k, base).await));
        // Lets the pollers read the change (and any staleness) before the next.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let samples = samples.lock().unwrap().clone();
    let mut stale: Vec<Duration> = changed
        .iter()
        .map(|(k, at)| stale_for(&samples, *k, *at))
        .collect();
    stale.sort();
    let p50 = stale[stale.len() / 2];
    let p99 = stale[(stale.len() * 99).div_ceil(100) - 1];
    println!(
        "{} answers; stale after the change: p50 {p50:?}, p99 {p99:?}, max {:?}",
        samples.len(),
        stale.last().unwrap()
    );
    assert!(p99 < BOUND, "p99 {p99:?}: {stale:?}");
    assert!(
        samples.iter().any(|(_, seen)| *seen == 30),
        "the last change was answered"
    );
    // And the cache was what answered, not Postgres every time.
    let served = hits(&app.client, &other.base).await - hits_before;
    assert!(served > 0.0, "no answer came from memory");
}

#[actix_rt::test]
async fn with_its_listening_connection_stalled_an_instance_never_answers_older_than_the_bound() {
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let (app, other, token, base) = listening_through(&proxy).await;

    // Postgres stops answering the listener, without closing anything: no
    // notification, no error, only silence.
    proxy.freeze();
    let stop = Arc::new(AtomicBool::new(false));
    let samples = poll(&other.base, &token, base, &stop);
    let at = apply(&app, 1, base).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, Ordering::SeqCst);

    let samples = samples.lock().unwrap().clone();
    let stale = stale_for(&samples, 1, at);
    assert!(stale < BOUND, "answered change 0 {stale:?} after change 1");
    assert!(
        samples
            .iter()
            .any(|(sent, seen)| *sent > at + BOUND && *seen == 1),
        "no answer after the change: {} samples",
        samples.len()
    );

    // The listener catches up once Postgres answers again, and answers come
    // from memory again, the change included.
    proxy.thaw();
    apply(&app, 2, base).await;
    until_cached(&app, &other.base, &token, 2, base).await;
}

#[actix_rt::test]
async fn with_its_listening_connection_cut_an_instance_reads_postgres_until_it_listens_again() {
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let (app, other, token, base) = listening_through(&proxy).await;

    proxy.cut();
    for _ in 0..200 {
        if metric_at(&app.client, &other.base, "status_cache_listening").await == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric_at(&app.client, &other.base, "status_cache_listening").await,
        0.0
    );
    assert_eq!(
        metric_at(&app.client, &other.base, "status_cache_entries").await,
        0.0,
        "what was cached may miss changes: dropped"
    );
    apply(&app, 1, base).await;
    let status = status_at(&app, &other.base, &token).await;
    assert_eq!(change_seen(&status, base), 1, "read from Postgres");

    proxy.restore();
    apply(&app, 2, base).await;
    until_cached(&app, &other.base, &token, 2, base).await;
    assert_eq!(
        metric_at(&app.client, &other.base, "status_cache_listening").await,
        1.0
    );
}

#[actix_rt::test]
async fn an_operators_sql_reaches_every_instances_answer() {
    let app = spawn_app().await;
    let base = base_period_end();
    let token = paid_user(&app, base).await;
    let other = Instance::start(&app).await;
    until_cached(&app, &other.base, &token, 0, base).await;
    until_cached(&app, &app.address, &token, 0, base).await;

    // Not through the service at all: the trigger notifies anyway.
    diesel::sql_query("UPDATE subscriptions SET status = 'canceled' WHERE id = 'sub_1'")
        .execute(&mut app.db())
        .unwrap();

    for base_url in [&other.base, &app.address] {
        let mut seen = String::new();
        for _ in 0..100 {
            let status = status_at(&app, base_url, &token).await;
            seen = status["data"]["status"].as_str().unwrap().to_owned();
            if seen == "canceled" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen, "canceled", "{base_url}");
    }
}

/// Polls `base_url`'s status (bounded) until `check` holds; its last answer.
async fn until_answered(
    app: &TestApp,
    base_url: &str,
    token: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let mut status = Value::Null;
    for _ in 0..100 {
        status = status_at(app, base_url, token).await;
        if check(&status["data"]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    status
}

/// Each table an answer is made of, changed by plain SQL (no instance
/// involved): the other instance's cached answer follows. Without a trigger
/// on one of them, that answer would stay as cached until evicted.
#[actix_rt::test]
async fn every_table_an_answer_is_made_of_notifies_the_other_instance() {
    let app = spawn_app().await;
    let base = base_period_end();
    let t = now() - 2_000;
    for plan_event in pro_plan_events(t) {
        assert_eq!(app.deliver(&plan_event).await.status(), 200);
    }
    let token = paid_user(&app, base).await;
    let other = Instance::start(&app).await;
    until_cached(&app, &other.base, &token, 0, base).await;
    let sql = |statement: &str| {
        diesel::sql_query(statement).execute(&mut app.db()).unwrap();
    };

    sql("UPDATE stripe_products SET name = 'Pro Plus' WHERE id = 'prod_pro'");
    let status = until_answered(&app, &other.base, &token, |d| {
        d["plan"]["name"] == "Pro Plus"
    })
    .await;
    assert_eq!(status["data"]["plan"]["name"], "Pro Plus", "products");

    sql("UPDATE stripe_prices SET unit_amount = 3900 WHERE id = 'price_pro_monthly'");
    let status = until_answered(&app, &other.base, &token, |d| d["plan"]["amount"] == 3900).await;
    assert_eq!(status["data"]["plan"]["amount"], 3900, "prices");

    sql(
        "INSERT INTO stripe_entitlements (customer_id, lookup_keys) VALUES ('cus_1', '{sso}') \
         ON CONFLICT (customer_id) DO UPDATE SET lookup_keys = EXCLUDED.lookup_keys",
    );
    let status = until_answered(&app, &other.base, &token, |d| {
        d["features"] == json!(["sso"])
    })
    .await;
    assert_eq!(status["data"]["features"], json!(["sso"]), "entitlements");

    sql("UPDATE accounts SET stripe_customer_id = NULL WHERE id = 'user_1'");
    let status = until_answered(&app, &other.base, &token, |d| d["hasCustomer"] == false).await;
    assert_eq!(status["data"]["hasCustomer"], false, "accounts");

    sql("TRUNCATE subscriptions");
    let status = until_answered(&app, &other.base, &token, |d| d["status"].is_null()).await;
    assert_eq!(status["data"]["status"], Value::Null, "a truncated table");
}

#[actix_rt::test]
async fn an_instance_answers_its_own_webhook_change_at_once() {
    let app = spawn_app().await;
    let base = base_period_end();
    let token = paid_user(&app, base).await;
    until_cached(&app, &app.address, &token, 0, base).await;

    for k in 1..=10 {
        apply(&app, k, base).await;
        // No wait: the instance that applied it drops its own answer.
        assert_eq!(change_seen(&app.status(&token).await, base), k);
    }
}

#[actix_rt::test]
async fn with_status_cache_entries_0_every_answer_is_read_from_postgres() {
    let app = spawn_app_with(|vars| {
        vars.insert("STATUS_CACHE_ENTRIES".into(), "0".into());
    })
    .await;
    let base = base_period_end();
    let token = paid_user(&app, base).await;

    for _ in 0..3 {
        assert_eq!(change_seen(&app.status(&token).await, base), 0);
    }
    assert_eq!(hits(&app.client, &app.address).await, 0.0);
    assert_eq!(
        metric_at(&app.client, &app.address, "status_cache_entries").await,
        0.0
    );
}
