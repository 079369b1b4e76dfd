//! `spawn_app()`: the real service (via `Application::build`, as `main` does)
//! on a random port, with its own freshly created Postgres database, dropped
//! when the test ends, and a fake Stripe (wiremock) on loopback; plus what a
//! test reads back from that database and from the fake Stripe.

use std::collections::HashMap;

use billing_portal::config::Settings;
use billing_portal::http::auth::{issue_token, Claims};
use billing_portal::startup::Application;
use diesel::prelude::*;
use secrecy::SecretString;
use wiremock::MockServer;

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123";
pub const STRIPE_KEY: &str = "sk_test_fake_key_for_tests";
pub const WEBHOOK_SECRET: &str = "whsec_test_secret";
pub const APP_BASE_URL: &str = "https://app.example.test";

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A loopback port nothing listens on (for a service started with a fixed port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls until `check` holds (webhooks arrive asynchronously), at most 30 s:
/// generous, so a loaded machine only makes a passing test slower.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..300 {
        if check() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A live-mode key, which only `APP_ENV=production` accepts.
pub const LIVE_STRIPE_KEY: &str = "sk_live_fake_key_for_tests";
/// What a production instance's `/metrics` asks for.
pub const LIVE_METRICS_TOKEN: &str = "metrics-token-for-tests";

/// Makes the instance a live one: a live key, so `APP_ENV=production`, with
/// what production then requires (the test secrets are strong enough, and
/// `/metrics` is served only with a token).
pub fn live_instance(vars: &mut HashMap<String, String>) {
    vars.insert("APP_ENV".into(), "production".into());
    vars.insert("STRIPE_SECRET_KEY".into(), LIVE_STRIPE_KEY.into());
    vars.insert("METRICS_TOKEN".into(), LIVE_METRICS_TOKEN.into());
}

pub struct TestApp {
    pub address: String,
    pub stripe: MockServer,
    pub db_name: String,
    /// What the service was started with, for building the same context
    /// (`context::build`) beside it.
    pub settings: Settings,
    pub client: reqwest::Client,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with a chance to change the variables the service sees.
pub async fn spawn_app_with(customize: impl FnOnce(&mut HashMap<String, String>)) -> TestApp {
    try_spawn_app_with(customize).await.expect("app builds")
}

/// Like [`spawn_app_with`], for a test about a start-up refusal: the configuration error, or
/// [`Application::build`]'s, instead of a panic.
pub async fn try_spawn_app_with(
    customize: impl FnOnce(&mut HashMap<String, String>),
) -> anyhow::Result<TestApp> {
    let _ = env_logger::builder().is_test(true).try_init();
    let stripe = MockServer::start().await;
    let db_name = format!("billing_test_{}", uuid::Uuid::new_v4().simple());
    let mut vars: HashMap<String, String> = [
        ("APP_ENV", "test".to_string()),
        ("DATABASE_URL", format!("{}/{db_name}", admin_url())),
        ("DATABASE_POOL_SIZE", "8".into()),
        ("HOST", "127.0.0.1".into()),
        ("PORT", "0".into()),
        ("APP_BASE_URL", APP_BASE_URL.into()),
        ("STRIPE_SECRET_KEY", STRIPE_KEY.into()),
        ("STRIPE_API_BASE", stripe.uri()),
        ("STRIPE_TIMEOUT_SECS", "2".into()),
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
        ("AUTH_JWT_SECRET", JWT_SECRET.into()),
        // No healing task unless a test asks for it: its start-up read of the
        // Events API would be one more Stripe request in tests that count them.
        ("STRIPE_CATCHUP_INTERVAL_SECS", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    customize(&mut vars);
    let settings = Settings::from_lookup(|k| vars.get(k).cloned())?;
    let app = Application::build(settings.clone()).await?;
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    Ok(TestApp {
        address,
        stripe,
        db_name,
        settings,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // Well under the service's 5 s keep-alive: a connection the
            // server may be closing is never reused (on a starved machine a
            // POST raced that close and failed with IncompleteMessage).
            .pool_idle_timeout(std::time::Duration::from_secs(2))
            .build()
            .unwrap(),
    })
}

/// `billing_portal_<series>` (with its labels, if any) as the instance at
/// `base_url` answers `/metrics` now.
pub async fn metric_at(client: &reqwest::Client, base_url: &str, series: &str) -> f64 {
    let text = client
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("billing_portal_{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

pub fn token_for(sub: &str, email: Option<&str>) -> String {
    token_with(Claims::user(
        sub,
        chrono::Utc::now().timestamp() + 600,
        email.map(Into::into),
    ))
}

/// A token acting for organisation `org_id` with `role` (`None`: no
/// `org_role` claim) and, when given, its name.
pub fn org_token(sub: &str, org_id: &str, role: Option<&str>, name: Option<&str>) -> String {
    token_with(Claims {
        org_id: Some(org_id.into()),
        org_role: role.map(Into::into),
        org_name: name.map(Into::into),
        ..Claims::user(
            sub,
            chrono::Utc::now().timestamp() + 600,
            Some(format!("{sub}@example.test")),
        )
    })
}

pub fn token_with(claims: Claims) -> String {
    issue_token(&SecretString::from(JWT_SECRET), &claims)
}

#[derive(Debug, QueryableByName, PartialEq)]
pub struct UserRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub id: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub email: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub stripe_customer_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub paid: bool,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A direct connection to this test's database, to arrange and inspect state.
    /// The body of `GET path`, as text.
    pub async fn get_text(&self, path: &str) -> String {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// The body of `GET path`, as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        response.json().await.unwrap()
    }

    pub fn db(&self) -> PgConnection {
        PgConnection::establish(&format!("{}/{}", admin_url(), self.db_name))
            .expect("test database reachable")
    }

    pub fn user(&self, id: &str) -> Option<UserRow> {
        diesel::sql_query("SELECT id, email, stripe_customer_id, paid FROM users WHERE id = $1")
            .bind::<diesel::sql_types::Text, _>(id)
            .get_result(&mut self.db())
            .optional()
            .unwrap()
    }

    pub fn count(&self, table: &str) -> i64 {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
            .get_result::<Count>(&mut self.db())
            .unwrap()
            .n
    }

    pub async fn create_portal(&self, token: &str) -> reqwest::Response {
        self.create_portal_request(token).send().await.unwrap()
    }

    /// `POST /billing/create-portal`, to be sent later (from a spawned task).
    pub fn create_portal_request(&self, token: &str) -> reqwest::RequestBuilder {
        self.client
            .post(self.url("/billing/create-portal"))
            .bearer_auth(token)
    }

    /// Runs the service's `command` (`sync`, `catchup`…) on this app's
    /// database and fake Stripe: whether it succeeded, and what it printed.
    pub fn run_command(&self, command: &str, args: &[&str]) -> (bool, String) {
        self.run_command_with(command, args, |run| {
            run.env("STRIPE_SECRET_KEY", STRIPE_KEY)
                .env("STRIPE_API_BASE", self.stripe.uri());
        })
    }

    /// Runs the service's `command` on this app's database, with what `stripe`
    /// sets of the Stripe variables.
    pub fn run_command_with(
        &self,
        command: &str,
        args: &[&str],
        stripe: impl FnOnce(&mut std::process::Command),
    ) -> (bool, String) {
        let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_billing-portal"));
        run.arg(command)
            .args(args)
            .env("APP_ENV", "test")
            .env("DATABASE_URL", format!("{}/{}", admin_url(), self.db_name))
            .env("RUST_LOG", "off");
        stripe(&mut run);
        let output = run.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (
            output.status.success(),
            format!("{text}\nSTATUS {:?}", output.status),
        )
    }

    /// Requests the fake Stripe received at `method path`.
    pub async fn stripe_requests(&self, method: &str, path: &str) -> Vec<wiremock::Request> {
        self.stripe
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.method.as_str() == method && r.url.path() == path)
            .collect()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let name = self.db_name.clone();
        // WITH (FORCE) ends the still-running server's pooled connections.
        if let Ok(mut conn) = PgConnection::establish(&format!("{}/postgres", admin_url())) {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn);
        }
    }
}

/// The form fields of a request the fake Stripe received.
pub fn form(request: &wiremock::Request) -> HashMap<String, String> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

pub fn header<'a>(request: &'a wiremock::Request, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

impl TestApp {
    pub fn event_outcome(&self, id: &str) -> String {
        self.event_outcome_where("id", id)
    }

    /// The outcome of the (only) stored event of `type_`.
    #[cfg(feature = "emulator")]
    pub fn event_outcome_of_type(&self, type_: &str) -> String {
        self.event_outcome_where("type", type_)
    }

    fn event_outcome_where(&self, column: &str, value: &str) -> String {
        #[derive(QueryableByName)]
        struct Outcome {
            #[diesel(sql_type = diesel::sql_types::Text)]
            outcome: String,
        }
        diesel::sql_query(format!(
            "SELECT outcome FROM stripe_events WHERE {column} = $1"
        ))
        .bind::<diesel::sql_types::Text, _>(value)
        .get_result::<Outcome>(&mut self.db())
        .unwrap()
        .outcome
    }
}

/// A transaction holding row locks, to stall the service's own queries.
pub struct HeldLock(PgConnection);

impl HeldLock {
    pub fn release(mut self) {
        diesel::sql_query("COMMIT").execute(&mut self.0).unwrap();
    }
}

impl TestApp {
    /// Waits (at most 30 s, as [`eventually`]) until a request of the service is stuck
    /// behind a [`HeldLock`]: a backend of this test's database waiting on a lock. A test
    /// that needs a request in flight waits for this instead of sleeping and hoping.
    pub async fn wait_for_a_request_behind_the_lock(&self) {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        eventually("a request waiting on the held lock", || {
            diesel::sql_query(
                "SELECT count(*) AS n FROM pg_stat_activity \
                 WHERE datname = $1 AND wait_event_type = 'Lock'",
            )
            .bind::<diesel::sql_types::Text, _>(&self.db_name)
            .get_result::<Count>(&mut self.db())
            .unwrap()
            .n > 0
        })
        .await;
    }

    /// Runs `locking_sql` (e.g. `SELECT … FOR UPDATE`) in an open transaction.
    pub fn hold_lock(&self, locking_sql: &str) -> HeldLock {
        let mut conn = self.db();
        diesel::sql_query("BEGIN").execute(&mut conn).unwrap();
        diesel::sql_query(locking_sql).execute(&mut conn).unwrap();
        HeldLock(conn)
    }
}
