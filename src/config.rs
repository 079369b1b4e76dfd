//! Settings: the defaults in [`SETTINGS`], then `config/{APP_ENV}.toml` (compiled into
//! the binary: editing one takes a rebuild), then the environment variables of the same
//! names (environment wins).
//!
//! [`SETTINGS`] is the one list of configuration variables: start-up loading
//! reads exactly those, and a test checks that README.md's configuration table
//! and `.env.example` list exactly those, with the same defaults.
//!
//! Secrets (`STRIPE_SECRET_KEY`, `STRIPE_WEBHOOK_SECRET`, `AUTH_JWT_SECRET`) come
//! from the environment only, are held as [`SecretString`] so they never print,
//! and are refused if a config file tries to set them. Validation reports every
//! problem at once, each naming its variable, a value of the wrong type among them:
//! every environment refuses a Stripe key or webhook secret of the wrong kind (saying
//! which kind it is); `APP_ENV=production` refuses a missing secret, a development
//! default or an obviously weak one, and a missing or insecure `APP_BASE_URL`; the
//! other environments refuse a live Stripe key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use config::builder::DefaultState;
use config::{Config, ConfigBuilder, File, FileFormat};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

/// Used only outside production when `AUTH_JWT_SECRET` is unset, so that
/// `cargo run` works with no set-up; a warning says so at start-up.
pub const DEV_JWT_SECRET: &str = "development-only-jwt-secret-do-not-use-in-production";
/// Used only outside production when `STRIPE_WEBHOOK_SECRET` is unset.
pub const DEV_WEBHOOK_SECRET: &str = "whsec_development_only_do_not_use_in_production";

/// One configuration variable.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The environment variable; its lower-case form is the key in `config/*.toml`.
    pub name: &'static str,
    /// The value when nothing sets it; `None`: unset.
    pub default: Option<&'static str>,
    /// Environment only (refused in a config file), never logged.
    pub secret: bool,
    /// Whether `config/{development,production}.toml` may set it too. The others are read
    /// from the environment alone: secrets, `APP_ENV` (it chooses the file), a path to a
    /// secret, and `RUST_LOG` (read by env_logger in `main`).
    pub in_files: bool,
    /// What it does, as the README's configuration table says it (markdown).
    pub meaning: &'static str,
}

/// A setting the environment or a config file may set.
const fn file_or_env(
    name: &'static str,
    default: Option<&'static str>,
    meaning: &'static str,
) -> Setting {
    Setting {
        in_files: true,
        ..env_only(name, default, meaning)
    }
}

/// A setting read from the environment alone.
const fn env_only(
    name: &'static str,
    default: Option<&'static str>,
    meaning: &'static str,
) -> Setting {
    Setting {
        name,
        default,
        secret: false,
        in_files: false,
        meaning,
    }
}

/// A secret: environment only, no default, never logged.
const fn secret_env(name: &'static str, meaning: &'static str) -> Setting {
    Setting {
        name,
        default: None,
        secret: true,
        in_files: false,
        meaning,
    }
}

/// Every configuration variable the service reads, in the README's order.
#[rustfmt::skip]
pub const SETTINGS: &[Setting] = &[
    env_only("APP_ENV", Some("development"),
        "`development`, `test` or `production`; production refuses missing secrets and unsafe defaults, naming every variable at fault at once"),
    file_or_env("DATABASE_URL", Some("postgres://postgres@127.0.0.1:5432/billing_portal"),
        "Postgres; the database is created if missing"),
    file_or_env("DATABASE_POOL_SIZE", Some("10"),
        "connections in this instance's pool"),
    file_or_env("DATABASE_LOCK_POOL_SIZE", Some("4"),
        "connections kept apart, besides the pool, for work that holds a lock while it waits on Stripe (creating a user's Stripe customer, re-reading a subscription); at most this many such waits at once, so a slow Stripe never holds the pool other requests use"),
    file_or_env("DATABASE_CONNECT_TIMEOUT_SECS", Some("5"),
        "how long to wait for a connection (then 503)"),
    file_or_env("DATABASE_STATEMENT_TIMEOUT_MS", Some("5000"),
        "Postgres `statement_timeout` for every pooled connection; a request waits for the database at most this plus `DATABASE_CONNECT_TIMEOUT_SECS` (then 503), even when Postgres stops answering; 0 is refused"),
    file_or_env("STATUS_CACHE_ENTRIES", Some("100000"),
        "how many accounts' `GET /billing/status` answers each instance keeps in memory (least recently read dropped first; about 100 bytes each); every change is dropped on every instance through Postgres `LISTEN/NOTIFY` within 80 ms, at once on the instance that made it; 0 turns the cache off (every read goes to Postgres)"),
    file_or_env("STATUS_CACHE_LISTEN_URL", None,
        "where the status cache's one listening connection (`LISTEN billing_status`) connects; unset: `DATABASE_URL`. Set it to a direct connection when `DATABASE_URL` goes through PgBouncer in transaction mode, which cannot `LISTEN`"),
    file_or_env("HOST", Some("127.0.0.1"),
        "listen address (`0.0.0.0` in `config/production.toml`)"),
    file_or_env("PORT", Some("8080"),
        "listen port"),
    file_or_env("APP_BASE_URL", None,
        "public origin of your app; the portal's return URL is this + `PORTAL_RETURN_PATH` + `?from=portal`; unset: this service's own origin, `http://localhost:` and the port it listens on (warned about outside production when it names localhost on another port); required in production, `https://`"),
    file_or_env("PORTAL_RETURN_PATH", Some("/settings/billing"),
        "where Stripe sends the user back, with `from=portal` added to the query: the Billing Settings page then re-reads the subscription from Stripe"),
    file_or_env("TRUSTED_PROXIES", None,
        "comma-separated IPs or CIDR ranges (`10.0.0.0/8`) of your reverse proxies: only from these peers do `Forwarded` / `X-Forwarded-Host` / `X-Forwarded-Proto` name this service's public origin for the cross-site check; from anyone else they are ignored"),
    secret_env("STRIPE_SECRET_KEY",
        "`sk_test_…` or `sk_live_…`, or a restricted `rk_test_…` / `rk_live_…` (a live key only with `APP_ENV=production`, a test key there is warned about; any other kind of key is refused, saying which kind it is); unset outside production starts the local Stripe emulator; required in production and in builds without the `emulator` feature"),
    env_only("EMULATOR_ALLOW_PUBLIC", Some("false"),
        "`true` lets the local Stripe emulator (no `STRIPE_SECRET_KEY`) listen on a non-loopback `HOST`; it takes any key and its demo signs in anyone, so without this such a `HOST` refuses to start"),
    file_or_env("STRIPE_API_BASE", None,
        "point the Stripe client elsewhere (tests, a local fake); unset means Stripe's API"),
    file_or_env("STRIPE_TIMEOUT_SECS", Some("10"),
        "Stripe client timeout, 1 to 10: the limit of each attempt, and of a whole call someone waits on (a click, a webhook delivery) with its retries; background reads (`sync`, catch-up) retry for up to 30 s"),
    file_or_env("STRIPE_MAX_NETWORK_RETRIES", Some("2"),
        "retries of a Stripe call after the first attempt, 0 to 5, as Stripe's own libraries make them (see [Talking to Stripe](#talking-to-stripe))"),
    file_or_env("STRIPE_CA_FILE", None,
        "a PEM file of certificate authorities trusted for Stripe calls besides the public ones (a TLS-inspecting proxy, a local stand-in)"),
    secret_env("HTTPS_PROXY",
        "`http://[user:password@]host:port` of the proxy Stripe's `https://` API is reached through (`https_proxy` too); never logged"),
    env_only("NO_PROXY", None,
        "comma-separated hosts reached without `HTTPS_PROXY` (`no_proxy` too)"),
    secret_env("STRIPE_WEBHOOK_SECRET",
        "`whsec_…` (anything else is refused); several, comma separated, while a secret is rolled"),
    env_only("STRIPE_WEBHOOK_SECRET_FILE", None,
        "a file holding the `whsec_…` secret, read when `STRIPE_WEBHOOK_SECRET` is unset"),
    file_or_env("STRIPE_WEBHOOK_TOLERANCE_SECS", Some("300"),
        "how old a signature timestamp may be; a future one is accepted, as by Stripe's libraries; 0 is refused"),
    file_or_env("STRIPE_WEBHOOK_REFETCH", Some("false"),
        "retrieve each subscription from Stripe before applying its event (same-second ties that cannot be ordered are retrieved whatever this says)"),
    file_or_env("STRIPE_CATCHUP_INTERVAL_SECS", Some("300"),
        "how often one instance lists the Events API for events that were never delivered and re-reads paid subscriptions whose renewal never arrived (see [When webhooks fail](#when-webhooks-fail)); also at start-up; 0 turns it off, at most 86400"),
    file_or_env("STRIPE_READ_BUDGET_PER_SEC", Some("10"),
        "Stripe requests per second the catch-up, the drift check and the reads of missing plan prices may make together, 1 to 50 (Stripe allows 25 in test mode, 100 in live mode)"),
    file_or_env("BILLING_PLANS", None,
        "comma-separated Stripe price ids (`price_…`) or lookup keys the Billing Settings page offers to subscribe to through Stripe Checkout, in this order (see [Subscriptions and Checkout](#subscriptions-and-checkout)); unset: no plan is offered and the page says to contact the app (with the local emulator: its seeded `price_emu_starter_monthly,price_emu_pro_monthly`)"),
    file_or_env("STRIPE_PORTAL_CONFIGURATION", None,
        "`bpc_…` portal configuration id (else your default configuration)"),
    secret_env("AUTH_JWT_SECRET",
        "HS256 secret shared with your app; in production at least 32 bytes, and not the development default, one character or a shorter string repeated, nor fewer than 8 different characters"),
    file_or_env("BILLING_MANAGER_ROLES", Some("owner,admin"),
        "comma-separated `org_role` values whose members may open an organisation's portal and subscribe it (others get `403 not_billing_manager` but read its status); compared exactly; see [Organisations and features](#organisations-and-features)"),
    secret_env("CLIENT_REFERENCE_SECRET",
        "key of signed `client_reference_id`s (see [Linking a checkout to a user](#linking-a-checkout-to-a-user)); unset: derived from `AUTH_JWT_SECRET`; at least 32 bytes in production"),
    file_or_env("BILLING_PAST_DUE_GRACE_DAYS", Some("14"),
        "days a `past_due` subscription keeps access, counted from when it became past due (Stripe's default retry window is two weeks); 0 = none, at most 366. Replaces `BILLING_PAST_DUE_IS_PAID`, which is refused"),
    file_or_env("BILLING_COLLECTION_PAUSED_IS_PAID", Some("true"),
        "whether an `active` subscription whose payment collection is paused (`pause_collection`) keeps access"),
    file_or_env("EVENT_RETENTION_DAYS", Some("90"),
        "how long webhook event ids are kept for dedupe before `prune` removes them; at least 7"),
    file_or_env("SHUTDOWN_TIMEOUT_SECS", Some("25"),
        "after SIGTERM or Ctrl-C, how long in-flight requests may take to finish"),
    file_or_env("HTTP_HEAD_TIMEOUT_SECS", Some("5"),
        "how long a request's headers may take to arrive: a new connection's first from when it opens, a later one's from its first byte (idle keep-alive time does not count); then `408 request_timeout` and the connection is closed"),
    file_or_env("HTTP_BODY_TIMEOUT_SECS", Some("10"),
        "how long a request body may take to arrive once its headers have (a 1 MiB webhook needs about 1 s at 10 Mbit/s); then `408 request_timeout` and the connection is closed"),
    file_or_env("HTTP_MAX_CONNECTIONS", Some("4096"),
        "open connections this instance accepts at once (shared equally by its workers, one per core; lowered to fit the file-descriptor limit, which start-up raises to its hard maximum); more wait in the listen backlog"),
    secret_env("METRICS_TOKEN",
        "when set, `/metrics` answers only `Authorization: Bearer <token>` (else 401); in production `/metrics` is served only with it or on `METRICS_ADDR`"),
    file_or_env("METRICS_ADDR", None,
        "serve `/metrics` on this separate address (e.g. `127.0.0.1:9090`) instead of the main one, where it then answers 404; production refuses a non-loopback one without `METRICS_TOKEN`"),
    env_only("RUST_LOG", Some("info"),
        "env_logger filter"),
];

/// Retired variables: set, they refuse start-up with the reason, so that a silently ignored
/// setting never changes who is paid.
const RETIRED: &[(&str, &str)] = &[(
    "BILLING_PAST_DUE_IS_PAID",
    "was replaced by BILLING_PAST_DUE_GRACE_DAYS (days a past_due subscription keeps access; \
     0 = none, default 14): unset it and set that",
)];

/// `BILLING_PLANS` (or `BILLING_MANAGER_ROLES`) as a list: each comma-separated entry
/// trimmed, empty ones and repeats dropped, the order kept.
fn split_plans(value: &str) -> Vec<String> {
    let mut plans: Vec<String> = Vec::new();
    for plan in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if !plans.iter().any(|p| p == plan) {
            plans.push(plan.to_string());
        }
    }
    plans
}

/// The setting named `name`, which must be in [`SETTINGS`].
fn setting_named(name: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} is not in SETTINGS"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Test,
    Production,
}

impl AppEnv {
    fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "development" | "dev" | "local" => Ok(Self::Development),
            "test" => Ok(Self::Test),
            "production" | "prod" => Ok(Self::Production),
            other => Err(format!(
                "`{other}` is not one of development, test, production"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Test => "test",
            Self::Production => "production",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    /// Every problem validation found, each naming its variable, so that one start
    /// reports them all.
    #[error("{}", describe(.0))]
    Refused(Vec<Problem>),
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: &'static str,
    /// What is wrong, as the phrase that follows the variable's name.
    pub what: String,
    /// Refused because `APP_ENV=production` (accepted in the other environments).
    pub production: bool,
}

/// `APP_ENV=production refuses to start: 2 problems: (1) A …; (2) B …`, in one line.
fn describe(problems: &[Problem]) -> String {
    let header = if problems.iter().any(|p| p.production) {
        "APP_ENV=production refuses to start"
    } else {
        "configuration"
    };
    let count = match problems.len() {
        1 => String::new(),
        n => format!("{n} problems: "),
    };
    let list: Vec<String> = problems
        .iter()
        .enumerate()
        .map(|(i, p)| match problems.len() {
            1 => format!("{} {}", p.key, p.what),
            _ => format!("({}) {} {}", i + 1, p.key, p.what),
        })
        .collect();
    format!("{header}: {count}{}", list.join("; "))
}

/// The problems [`Settings::validate`] collects.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn invalid(&mut self, key: &'static str, reason: impl std::fmt::Display) {
        self.refuse(key, format!("is invalid: {reason}"));
    }

    fn refuse(&mut self, key: &'static str, what: impl Into<String>) {
        self.0.push(Problem {
            key,
            what: what.into(),
            production: false,
        });
    }

    fn unsafe_for_production(&mut self, key: &'static str, what: impl Into<String>) {
        self.0.push(Problem {
            key,
            what: what.into(),
            production: true,
        });
    }

    fn into_result(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Refused(self.0))
        }
    }
}

/// `TRUSTED_PROXIES`: addresses (a /32 or /128) and CIDR ranges, comma separated.
fn parse_trusted_proxies(value: Option<&str>) -> Result<Vec<IpNet>, String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("`{entry}` is not an IP address or a CIDR range such as 10.0.0.0/8")
                })
        })
        .collect()
}

/// [`Raw`] from the built `config`. A value of the wrong type is a problem of its own (the
/// `config` crate stops at the first one): its setting's default stands in and the rest is
/// read again, so every such value is reported, each under its variable's name.
fn read_raw(
    mut builder: ConfigBuilder<DefaultState>,
    mut config: Config,
    problems: &mut Problems,
) -> Result<Raw, ConfigError> {
    let mut replaced = Vec::new();
    loop {
        let error = match config.try_deserialize::<Raw>() {
            Ok(raw) => return Ok(raw),
            Err(error) => error,
        };
        let load = || ConfigError::Load(error.to_string());
        let (key, what) = type_error(&error).ok_or_else(load)?;
        let setting = SETTINGS
            .iter()
            .find(|s| s.in_files && s.name.eq_ignore_ascii_case(&key))
            .ok_or_else(load)?;
        // A default of the wrong type would come back for ever: a bug here, not a setting.
        let default = setting
            .default
            .filter(|_| !replaced.contains(&setting.name))
            .ok_or_else(load)?;
        problems.invalid(setting.name, what);
        replaced.push(setting.name);
        builder = builder
            .set_override(key, default)
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        config = builder
            .clone()
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
    }
}

/// The key a type error is about, and what its setting takes, in words.
fn type_error(error: &config::ConfigError) -> Option<(String, String)> {
    let (key, inner) = match error {
        config::ConfigError::At {
            error,
            key: Some(key),
            ..
        } => (key, error.as_ref()),
        config::ConfigError::Type { key: Some(key), .. } => (key, error),
        _ => return None,
    };
    let config::ConfigError::Type {
        unexpected,
        expected,
        ..
    } = inner
    else {
        return None;
    };
    // `unexpected` reads `string "abc"` or ``64-bit integer `70000` ``.
    let takes = if *expected == "a boolean" {
        "true or false".to_string()
    } else if expected.contains("integer") {
        // Every numeric setting counts something: none is negative.
        let most = if expected.contains("16 bit") {
            " and at most 65535"
        } else if expected.contains("32 bit") {
            " and at most 4294967295"
        } else {
            ""
        };
        format!("a whole number, 0 or more{most}")
    } else {
        (*expected).to_string()
    };
    Some((key.clone(), format!("must be {takes}, not {unexpected}")))
}

/// The settings read from the environment only (secrets, and what a config
/// file must not switch on), as [`Settings::validate`] receives them.
struct EnvOnly {
    stripe_secret_key: Option<SecretString>,
    /// The webhook secret(s), and the variable they came from (`STRIPE_WEBHOOK_SECRET`, or
    /// `STRIPE_WEBHOOK_SECRET_FILE` naming the file that holds them).
    webhook_secret: Option<(&'static str, String)>,
    jwt_secret: Option<SecretString>,
    emulator_allow_public: Option<String>,
    client_reference_secret: Option<SecretString>,
    metrics_token: Option<SecretString>,
    https_proxy: Option<SecretString>,
    no_proxy: Option<String>,
}

/// Why a build without the `emulator` cargo feature needs `STRIPE_SECRET_KEY`
/// in every environment: nothing else could answer its Stripe calls.
const NO_EMULATOR: &str =
    "this build has no local Stripe emulator (it was built without the `emulator` feature)";

/// What the defaults, the config file and the environment say, before validation: one field
/// per [`SETTINGS`] entry that config files may set (an unknown key is refused, so the two
/// cannot drift apart).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    database_url: String,
    status_cache_listen_url: Option<String>,
    database_pool_size: u32,
    database_lock_pool_size: u32,
    status_cache_entries: u32,
    database_connect_timeout_secs: u64,
    database_statement_timeout_ms: u64,
    host: String,
    port: u16,
    app_base_url: Option<String>,
    portal_return_path: String,
    trusted_proxies: Option<String>,
    stripe_api_base: Option<String>,
    stripe_timeout_secs: u64,
    stripe_max_network_retries: u32,
    stripe_ca_file: Option<String>,
    stripe_webhook_tolerance_secs: u64,
    stripe_webhook_refetch: bool,
    stripe_portal_configuration: Option<String>,
    billing_plans: Option<String>,
    billing_manager_roles: String,
    stripe_catchup_interval_secs: u64,
    stripe_read_budget_per_sec: u32,
    billing_past_due_grace_days: u32,
    billing_collection_paused_is_paid: bool,
    shutdown_timeout_secs: u64,
    event_retention_days: u32,
    http_head_timeout_secs: u64,
    http_body_timeout_secs: u64,
    http_max_connections: usize,
    metrics_addr: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub app_env: AppEnv,
    pub database: DatabaseSettings,
    pub host: String,
    pub port: u16,
    /// Public origin of the app, without a trailing slash: `APP_BASE_URL`, else this
    /// service's own origin (see [`Settings::listening_on`]).
    pub app_base_url: String,
    /// Whether `APP_BASE_URL` set `app_base_url` (else it follows the listener).
    pub app_base_url_configured: bool,
    pub portal_return_path: String,
    /// The reverse proxies whose forwarded headers are believed (`TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<IpNet>,
    pub stripe: StripeSettings,
    pub auth_jwt_secret: SecretString,
    /// `CLIENT_REFERENCE_SECRET`; `None`: a key derived from `auth_jwt_secret`.
    pub client_reference_secret: Option<SecretString>,
    /// `STATUS_CACHE_ENTRIES`: see `billing::status_cache` (0: off).
    pub status_cache_entries: u32,
    /// `BILLING_MANAGER_ROLES`: the `org_role`s that may manage an
    /// organisation's billing, trimmed, without empty entries.
    pub billing_manager_roles: Vec<String>,
    /// How long a `past_due` subscription keeps access, counted from when it
    /// became past due (`BILLING_PAST_DUE_GRACE_DAYS`).
    pub billing_past_due_grace_days: u32,
    /// Whether an `active` subscription whose collection is paused grants
    /// access (`BILLING_COLLECTION_PAUSED_IS_PAID`).
    pub billing_collection_paused_is_paid: bool,
    /// How long in-flight requests may finish after SIGTERM/Ctrl-C.
    pub shutdown_timeout: Duration,
    /// `stripe_events` rows older than this are removed by `prune`.
    pub event_retention_days: u32,
    /// Whether the emulator may listen on a non-loopback address (`EMULATOR_ALLOW_PUBLIC`).
    pub emulator_allow_public: bool,
    pub http: HttpSettings,
    pub metrics: MetricsSettings,
}

/// The bounds every connection lives within.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// A new connection's first request head (`HTTP_HEAD_TIMEOUT_SECS`).
    pub head_timeout: Duration,
    /// A request body, from its headers on (`HTTP_BODY_TIMEOUT_SECS`).
    pub body_timeout: Duration,
    /// Open connections at once, all workers together (`HTTP_MAX_CONNECTIONS`).
    pub max_connections: usize,
}

/// Who may read `/metrics`, and where.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// `METRICS_TOKEN`: when set, required as a bearer token.
    pub token: Option<SecretString>,
    /// `METRICS_ADDR`: a listener of its own for `/metrics`.
    pub addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// May carry a password, hence secret; [`DatabaseSettings::display_target`] is loggable.
    pub url: SecretString,
    /// `STATUS_CACHE_LISTEN_URL` (secret like `url`); `None`: `url`.
    pub listen_url: Option<SecretString>,
    pub pool_size: u32,
    /// `DATABASE_LOCK_POOL_SIZE`: see `db::build_lock_pool`.
    pub lock_pool_size: u32,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// `None` outside production means the local emulator.
    pub secret_key: Option<SecretString>,
    pub api_base: Option<String>,
    pub timeout: Duration,
    /// `STRIPE_MAX_NETWORK_RETRIES`.
    pub max_network_retries: u32,
    /// `STRIPE_CA_FILE`.
    pub ca_file: Option<std::path::PathBuf>,
    /// `HTTPS_PROXY` (or `https_proxy`) and `NO_PROXY` (or `no_proxy`).
    pub https_proxy: Option<SecretString>,
    pub no_proxy: Option<String>,
    /// One or more, tried in turn while a secret is rolled.
    pub webhook_secrets: Vec<SecretString>,
    pub webhook_tolerance_secs: u64,
    pub webhook_refetch: bool,
    pub portal_configuration: Option<String>,
    /// `BILLING_PLANS`, split on commas and trimmed; `None` when unset.
    pub billing_plans: Option<Vec<String>>,
    /// `STRIPE_CATCHUP_INTERVAL_SECS`; `None` (0) turns the healing task off.
    pub catchup_interval: Option<Duration>,
    /// `STRIPE_READ_BUDGET_PER_SEC`.
    pub read_budget_per_sec: std::num::NonZeroU32,
}

impl Settings {
    /// Settings from the process environment and the config files.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Settings from any variable lookup (tests pass a map), layered over the
    /// config files embedded in the binary, so a deployed binary needs no files.
    ///
    /// Every problem is collected before anything is refused, so that one start reports
    /// them all: a value of the wrong type (`PORT=abc`) is one problem among the others,
    /// its default standing in while the rest is read and checked.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |key: &str| {
            // Every variable read here is one SETTINGS lists (or a retired one), so the
            // README and .env.example, checked against SETTINGS, cannot miss it.
            debug_assert!(
                SETTINGS.iter().any(|s| s.name == key) || RETIRED.iter().any(|r| r.0 == key),
                "{key} is read but not in SETTINGS"
            );
            lookup(key).filter(|v| !v.trim().is_empty())
        };
        let mut problems = Problems::default();
        for &(name, reason) in RETIRED {
            if var(name).is_some() {
                problems.refuse(name, reason);
            }
        }
        let app_env = AppEnv::parse(
            &var("APP_ENV")
                .or_else(|| setting_named("APP_ENV").default.map(Into::into))
                .unwrap_or_default(),
        )
        .unwrap_or_else(|reason| {
            // Read on as in development, so that the other problems are found too.
            problems.invalid("APP_ENV", reason);
            AppEnv::Development
        });

        let mut builder = Config::builder();
        for setting in SETTINGS.iter().filter(|s| s.in_files) {
            if let Some(default) = setting.default {
                builder = builder
                    .set_default(setting.name.to_ascii_lowercase(), default)
                    .map_err(|e| ConfigError::Load(e.to_string()))?;
            }
        }
        builder = builder.add_source(File::from_str(env_file(app_env), FileFormat::Toml));
        for setting in SETTINGS.iter().filter(|s| s.in_files) {
            if let Some(value) = var(setting.name) {
                builder = builder
                    .set_override(setting.name.to_ascii_lowercase(), value)
                    .map_err(|e| ConfigError::Load(e.to_string()))?;
            }
        }
        let config = builder
            .clone()
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        for setting in SETTINGS.iter().filter(|s| s.secret) {
            if config
                .get_string(&setting.name.to_ascii_lowercase())
                .is_ok()
            {
                problems.refuse(
                    setting.name,
                    "is a secret and must come from the environment, not a config file",
                );
            }
        }
        let raw = read_raw(builder, config, &mut problems)?;

        let secret = |key: &str| var(key).map(SecretString::from);
        let webhook_secret = match (
            var("STRIPE_WEBHOOK_SECRET"),
            var("STRIPE_WEBHOOK_SECRET_FILE"),
        ) {
            (Some(value), _) => Some(("STRIPE_WEBHOOK_SECRET", value)),
            // docker compose: `stripe listen --print-secret` writes it to a
            // shared volume, so nobody copies it by hand.
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(text) => Some(("STRIPE_WEBHOOK_SECRET_FILE", text.trim().to_string())),
                Err(e) => {
                    problems.invalid(
                        "STRIPE_WEBHOOK_SECRET_FILE",
                        format!("cannot read {path}: {e}"),
                    );
                    None
                }
            },
            (None, None) => None,
        };
        Self::validate(
            app_env,
            raw,
            EnvOnly {
                stripe_secret_key: secret("STRIPE_SECRET_KEY"),
                webhook_secret,
                jwt_secret: secret("AUTH_JWT_SECRET"),
                emulator_allow_public: var("EMULATOR_ALLOW_PUBLIC"),
                client_reference_secret: secret("CLIENT_REFERENCE_SECRET"),
                metrics_token: secret("METRICS_TOKEN"),
                // The lower-case spelling curl and most tools also read.
                https_proxy: secret("HTTPS_PROXY").or_else(|| {
                    lookup("https_proxy")
                        .filter(|v| !v.trim().is_empty())
                        .map(SecretString::from)
                }),
                no_proxy: var("NO_PROXY")
                    .or_else(|| lookup("no_proxy").filter(|v| !v.trim().is_empty())),
            },
            problems,
        )
    }

    fn validate(
        app_env: AppEnv,
        raw: Raw,
        env: EnvOnly,
        mut problems: Problems,
    ) -> Result<Self, ConfigError> {
        let EnvOnly {
            stripe_secret_key,
            webhook_secret,
            jwt_secret,
            emulator_allow_public,
            client_reference_secret,
            metrics_token,
            https_proxy,
            no_proxy,
        } = env;
        let production = app_env == AppEnv::Production;
        // Every problem is reported at once: one restart per problem is a slow way to
        // find five.

        let base = match raw.app_base_url.as_deref().map(Url::parse) {
            // Unset: this service's own origin, which [`Settings::listening_on`] settles.
            None => None,
            Some(Ok(base))
                if matches!(base.scheme(), "http" | "https") && base.host_str().is_some() =>
            {
                Some(base)
            }
            Some(Ok(_)) => {
                problems.invalid(
                    "APP_BASE_URL",
                    "must be an http(s) origin such as https://app.example.com",
                );
                None
            }
            Some(Err(e)) => {
                problems.invalid("APP_BASE_URL", format!("not an absolute URL ({e})"));
                None
            }
        };
        if !raw.portal_return_path.starts_with('/') {
            problems.invalid("PORTAL_RETURN_PATH", "must start with `/`");
        }
        let trusted_proxies =
            parse_trusted_proxies(raw.trusted_proxies.as_deref()).unwrap_or_else(|e| {
                problems.invalid("TRUSTED_PROXIES", e);
                Vec::new()
            });
        if raw.stripe_webhook_tolerance_secs == 0 {
            problems.invalid(
                "STRIPE_WEBHOOK_TOLERANCE_SECS",
                "0 would accept replays of any age; use a positive number of seconds (Stripe's default is 300)",
            );
        }
        if !(1..=10).contains(&raw.stripe_timeout_secs) {
            problems.invalid("STRIPE_TIMEOUT_SECS", "must be between 1 and 10 seconds");
        }
        if raw.stripe_max_network_retries > 5 {
            problems.invalid(
                "STRIPE_MAX_NETWORK_RETRIES",
                "must be between 0 and 5 (Stripe's libraries default to 2)",
            );
        }
        if let Some(path) = &raw.stripe_ca_file {
            if let Err(e) = crate::stripe::transport::ca_certificates(Path::new(path)) {
                problems.invalid("STRIPE_CA_FILE", e.to_string());
            }
        }
        if let Some(proxy) = &https_proxy {
            // The URL may hold a password: the problem never quotes it.
            let url = Url::parse(proxy.expose_secret()).ok();
            let usable = url.as_ref().is_some_and(|url| {
                matches!(url.scheme(), "http" | "https") && url.host_str().is_some()
            });
            if !usable || reqwest::Proxy::https(proxy.expose_secret()).is_err() {
                problems.invalid(
                    "HTTPS_PROXY",
                    "must be a proxy URL such as http://proxy.internal:3128",
                );
            }
        }
        if raw.stripe_catchup_interval_secs > 86_400 {
            problems.invalid(
                "STRIPE_CATCHUP_INTERVAL_SECS",
                "must be between 0 (off) and 86400 seconds (a day: Stripe retries a delivery \
                 for three days and lists events for 30)",
            );
        }
        if !(1..=50).contains(&raw.stripe_read_budget_per_sec) {
            problems.invalid(
                "STRIPE_READ_BUDGET_PER_SEC",
                "must be between 1 and 50 requests per second (Stripe allows 25 in test mode \
                 and 100 in live mode, shared with every other use of the key)",
            );
        }
        if raw.event_retention_days < 7 {
            // Stripe redelivers for up to three days; dedupe must outlive that.
            problems.invalid(
                "EVENT_RETENTION_DAYS",
                "must be at least 7 (Stripe retries deliveries for up to 3 days)",
            );
        }
        if raw.billing_past_due_grace_days > 366 {
            problems.invalid(
                "BILLING_PAST_DUE_GRACE_DAYS",
                "must be between 0 and 366 days (Stripe retries a failed payment for at \
                 most about a month; 14 matches its default retry window)",
            );
        }
        if raw.database_pool_size == 0 {
            problems.invalid("DATABASE_POOL_SIZE", "must be at least 1");
        }
        if raw.status_cache_entries > 10_000_000 {
            problems.invalid(
                "STATUS_CACHE_ENTRIES",
                "at most 10000000 (about 1 GB of answers); 0 turns the cache off",
            );
        }
        if raw.database_lock_pool_size == 0 {
            problems.invalid(
                "DATABASE_LOCK_POOL_SIZE",
                "must be at least 1 (no Stripe customer could be created)",
            );
        }
        if raw.database_statement_timeout_ms == 0 {
            problems.invalid(
                "DATABASE_STATEMENT_TIMEOUT_MS",
                "0 would let a query, and the request waiting for it, run forever; use a \
                 positive number of milliseconds",
            );
        } else if raw.database_statement_timeout_ms > 3_600_000 {
            // Every request may wait this long on a database that stops answering.
            problems.invalid(
                "DATABASE_STATEMENT_TIMEOUT_MS",
                "must be at most 3600000 (1 hour)",
            );
        }
        if raw.database_connect_timeout_secs > 3600 {
            problems.invalid(
                "DATABASE_CONNECT_TIMEOUT_SECS",
                "must be at most 3600 (1 hour)",
            );
        }
        if let Some(api_base) = &raw.stripe_api_base {
            if let Err(e) = Url::parse(api_base) {
                problems.invalid("STRIPE_API_BASE", format!("not an absolute URL ({e})"));
            }
        }
        let emulator_allow_public = match emulator_allow_public
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                problems.invalid("EMULATOR_ALLOW_PUBLIC", "must be true or false");
                false
            }
        };
        for (key, secs) in [
            ("HTTP_HEAD_TIMEOUT_SECS", raw.http_head_timeout_secs),
            ("HTTP_BODY_TIMEOUT_SECS", raw.http_body_timeout_secs),
        ] {
            if !(1..=3600).contains(&secs) {
                problems.invalid(key, "must be between 1 and 3600 seconds");
            }
        }
        if raw.http_max_connections == 0 {
            problems.invalid("HTTP_MAX_CONNECTIONS", "must be at least 1");
        }
        let metrics_addr = raw.metrics_addr.as_deref().and_then(|addr| match addr
            .parse::<std::net::SocketAddr>(
        ) {
            Ok(addr) => Some(addr),
            Err(e) => {
                problems.invalid(
                    "METRICS_ADDR",
                    format!("`{addr}` is not an address such as 127.0.0.1:9090 ({e})"),
                );
                None
            }
        });
        let (webhook_source, webhook_secret) = webhook_secret.unzip();
        let webhook_secrets: Vec<SecretString> = webhook_secret
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(SecretString::from)
            .collect();
        let source = webhook_source.unwrap_or("STRIPE_WEBHOOK_SECRET");
        for (i, secret) in webhook_secrets.iter().enumerate() {
            if let Some(problem) = webhook_secret_problem(secret.expose_secret()) {
                let entry = match webhook_secrets.len() {
                    1 => String::new(),
                    n => format!("entry {} of {n} ", i + 1),
                };
                problems.refuse(source, format!("{entry}{problem}"));
            }
        }

        let key_problem = stripe_secret_key
            .as_ref()
            .and_then(|key| api_key_problem(key.expose_secret()));
        if let Some(problem) = key_problem {
            problems.refuse("STRIPE_SECRET_KEY", problem);
        } else if !production
            && stripe_secret_key
                .as_ref()
                .is_some_and(|key| is_live_key(key.expose_secret()))
        {
            // Outside production the service accepts development defaults (a JWT secret
            // published in its source, relaxed checks); they must never guard real money.
            problems.invalid(
                "STRIPE_SECRET_KEY",
                format!(
                    "a live-mode key (sk_live_… or rk_live_…) is refused with APP_ENV={}: use a \
                     test-mode key (sk_test_…), or set APP_ENV=production, which refuses the \
                     development defaults",
                    app_env.as_str()
                ),
            );
        }

        if production {
            if stripe_secret_key.is_none() {
                problems.unsafe_for_production(
                    "STRIPE_SECRET_KEY",
                    if cfg!(feature = "emulator") {
                        "is not set (the local Stripe emulator never runs in production)".into()
                    } else {
                        format!("is not set ({NO_EMULATOR})")
                    },
                );
            }
            if webhook_secrets.is_empty() {
                problems.unsafe_for_production(
                    "STRIPE_WEBHOOK_SECRET",
                    "is not set, nor STRIPE_WEBHOOK_SECRET_FILE (webhooks could not be verified)",
                );
            } else if webhook_secrets
                .iter()
                .any(|s| s.expose_secret() == DEV_WEBHOOK_SECRET)
            {
                problems.unsafe_for_production(
                    "STRIPE_WEBHOOK_SECRET",
                    "is the development default published in this source (anyone could sign \
                     a webhook with it): use the `whsec_…` secret of your Stripe endpoint",
                );
            }
            match &jwt_secret {
                None => problems.unsafe_for_production("AUTH_JWT_SECRET", "is not set"),
                Some(secret) => {
                    if let Some(weakness) = jwt_secret_weakness(secret.expose_secret()) {
                        problems.unsafe_for_production(
                            "AUTH_JWT_SECRET",
                            format!(
                                "{weakness} (anyone who guesses it signs in as any user): \
                                 generate one with `openssl rand -hex 32`"
                            ),
                        );
                    }
                }
            }
            if metrics_addr.is_some_and(|a| !a.ip().is_loopback()) && metrics_token.is_none() {
                problems.unsafe_for_production(
                    "METRICS_ADDR",
                    "is not a loopback address and METRICS_TOKEN is not set (anyone who reaches \
                     it could read /metrics): set METRICS_TOKEN or listen on 127.0.0.1",
                );
            }
            if raw.app_base_url.is_none() {
                problems.unsafe_for_production(
                    "APP_BASE_URL",
                    "is not set: set the https:// origin of your app (Stripe sends users back \
                     to it after the portal)",
                );
            }
            if let Some(base) = &base {
                if is_loopback(base) {
                    problems.unsafe_for_production(
                        "APP_BASE_URL",
                        "still points at localhost (Stripe would send users back to their own machine)",
                    );
                } else if base.scheme() == "http" {
                    problems.unsafe_for_production(
                        "APP_BASE_URL",
                        "uses http:// (session cookies and Stripe's return would cross the \
                         network in clear): use https://",
                    );
                }
            }
        }

        let same_as_jwt = |reference: &SecretString| {
            jwt_secret
                .as_ref()
                .is_some_and(|jwt| jwt.expose_secret() == reference.expose_secret())
        };
        if client_reference_secret.as_ref().is_some_and(same_as_jwt) {
            // A signed reference is then an HS256 signature by the session key: a user who
            // chooses their own id could obtain a session token's signature.
            problems.refuse(
                "CLIENT_REFERENCE_SECRET",
                "must differ from AUTH_JWT_SECRET (unset it to derive a separate key from it)",
            );
        }
        if production
            && client_reference_secret
                .as_ref()
                .is_some_and(|s| s.expose_secret().len() < 32)
        {
            problems.unsafe_for_production(
                "CLIENT_REFERENCE_SECRET",
                "is shorter than 32 bytes (too weak for HMAC-SHA256); unset it to derive one from AUTH_JWT_SECRET",
            );
        }

        if stripe_secret_key.is_none() && !production && !cfg!(feature = "emulator") {
            problems.refuse(
                "STRIPE_SECRET_KEY",
                format!(
                    "is not set, and {NO_EMULATOR}: set it to a Stripe secret key (sk_test_… or \
                     sk_live_…)"
                ),
            );
        }
        problems.into_result()?;

        let webhook_secrets = if webhook_secrets.is_empty() {
            vec![SecretString::from(DEV_WEBHOOK_SECRET)]
        } else {
            webhook_secrets
        };
        Ok(Self {
            app_env,
            database: DatabaseSettings {
                url: SecretString::from(raw.database_url),
                listen_url: raw.status_cache_listen_url.map(SecretString::from),
                pool_size: raw.database_pool_size,
                lock_pool_size: raw.database_lock_pool_size,
                connect_timeout: Duration::from_secs(raw.database_connect_timeout_secs.max(1)),
                statement_timeout: Duration::from_millis(raw.database_statement_timeout_ms),
            },
            host: raw.host,
            port: raw.port,
            app_base_url_configured: raw.app_base_url.is_some(),
            app_base_url: match &raw.app_base_url {
                Some(url) => url.trim_end_matches('/').to_string(),
                // Until the listener is bound (`listening_on`), the port asked for.
                None => format!("http://localhost:{}", raw.port),
            },
            portal_return_path: raw.portal_return_path,
            trusted_proxies,
            stripe: StripeSettings {
                secret_key: stripe_secret_key,
                api_base: raw.stripe_api_base,
                timeout: Duration::from_secs(raw.stripe_timeout_secs),
                max_network_retries: raw.stripe_max_network_retries,
                ca_file: raw.stripe_ca_file.map(Into::into),
                https_proxy,
                no_proxy,
                webhook_secrets,
                webhook_tolerance_secs: raw.stripe_webhook_tolerance_secs,
                webhook_refetch: raw.stripe_webhook_refetch,
                portal_configuration: raw.stripe_portal_configuration,
                billing_plans: raw.billing_plans.as_deref().map(split_plans),
                catchup_interval: (raw.stripe_catchup_interval_secs > 0)
                    .then(|| Duration::from_secs(raw.stripe_catchup_interval_secs)),
                read_budget_per_sec: std::num::NonZeroU32::new(raw.stripe_read_budget_per_sec)
                    .unwrap_or(std::num::NonZeroU32::MIN),
            },
            auth_jwt_secret: jwt_secret.unwrap_or_else(|| SecretString::from(DEV_JWT_SECRET)),
            client_reference_secret,
            billing_manager_roles: split_plans(&raw.billing_manager_roles),
            status_cache_entries: raw.status_cache_entries,
            billing_past_due_grace_days: raw.billing_past_due_grace_days,
            billing_collection_paused_is_paid: raw.billing_collection_paused_is_paid,
            shutdown_timeout: Duration::from_secs(raw.shutdown_timeout_secs),
            event_retention_days: raw.event_retention_days,
            emulator_allow_public,
            http: HttpSettings {
                head_timeout: Duration::from_secs(raw.http_head_timeout_secs),
                body_timeout: Duration::from_secs(raw.http_body_timeout_secs),
                max_connections: raw.http_max_connections,
            },
            metrics: MetricsSettings {
                token: metrics_token,
                addr: metrics_addr,
            },
        })
    }

    /// Settles what depends on the address the listener was bound to (`PORT=0` picks one):
    /// without `APP_BASE_URL`, the app's origin is this service's own, so "Return to app"
    /// comes back to the port it listens on. With one naming this machine on another port,
    /// outside production, returns the warning start-up logs: it is right only when a proxy
    /// or a published container port forwards that port here.
    pub fn listening_on(&mut self, address: SocketAddr) -> Option<String> {
        if !self.app_base_url_configured {
            self.app_base_url = own_origin(address);
            return None;
        }
        if self.app_env == AppEnv::Production {
            return None;
        }
        let url = Url::parse(&self.app_base_url).ok()?;
        let named = url.port_or_known_default()?;
        (is_loopback(&url) && named != address.port()).then(|| {
            format!(
                "APP_BASE_URL={} names port {named}, but the service listens on port {} \
                 (PORT): \"Return to app\" and Stripe's return URL lead to port {named}. Unset \
                 APP_BASE_URL to use this service's own origin ({}), unless a proxy or a \
                 published port forwards {named} here",
                self.app_base_url,
                address.port(),
                own_origin(address),
            )
        })
    }

    /// Where Stripe sends the user back after the portal: the Billing Settings
    /// page, marked `from=portal` so that it re-reads the subscription from
    /// Stripe (`POST /billing/refresh`) instead of showing what the webhook
    /// has not brought yet.
    pub fn portal_return_url(&self) -> String {
        self.return_url("portal")
    }

    /// Where a checkout sends the buyer back (its `success_url`): the same
    /// page, marked `from=checkout`, with `session_id={CHECKOUT_SESSION_ID}`,
    /// which Stripe replaces with the session's id
    /// (docs.stripe.com/payments/checkout/custom-success-page).
    pub fn checkout_return_url(&self) -> String {
        self.return_url("checkout&session_id={CHECKOUT_SESSION_ID}")
    }

    /// The Billing Settings page itself: where an abandoned checkout goes back to.
    pub fn billing_page_url(&self) -> String {
        format!("{}{}", self.app_base_url, self.portal_return_path)
    }

    /// The plans the page offers: `BILLING_PLANS`, else, with the local
    /// emulator, its seeded prices.
    pub fn offered_plans(&self) -> Vec<String> {
        match &self.stripe.billing_plans {
            Some(plans) => plans.clone(),
            None if self.runs_emulator() => crate::billing::checkout::EMULATOR_PLANS
                .iter()
                .map(|p| p.to_string())
                .collect(),
            None => Vec::new(),
        }
    }

    /// `APP_BASE_URL` + `PORTAL_RETURN_PATH` with `from=<from>` added to its
    /// query, before any fragment.
    fn return_url(&self, from: &str) -> String {
        let path = &self.portal_return_path;
        let (path, fragment) = path
            .split_once('#')
            .map_or((path.as_str(), None), |(p, f)| (p, Some(f)));
        let separator = match path.find('?') {
            None => "?",
            Some(_) if path.ends_with(['?', '&']) => "",
            Some(_) => "&",
        };
        let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
        format!(
            "{}{path}{separator}from={from}{fragment}",
            self.app_base_url
        )
    }

    /// `APP_BASE_URL` reduced to its origin (`scheme://host[:port]`).
    pub fn app_origin(&self) -> String {
        Url::parse(&self.app_base_url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| self.app_base_url.clone())
    }

    /// What start-up warns about: settings it accepts that deserve a second look.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.uses_development_secrets() {
            warnings.push(
                "AUTH_JWT_SECRET or STRIPE_WEBHOOK_SECRET is unset: using development-only \
                 defaults (refused when APP_ENV=production, and on a non-loopback HOST)"
                    .to_string(),
            );
        }
        if self.app_env == AppEnv::Production
            && self
                .stripe
                .secret_key
                .as_ref()
                .is_some_and(|key| is_test_key(key.expose_secret()))
        {
            warnings.push(
                "STRIPE_SECRET_KEY is a test-mode key (sk_test_… or rk_test_…) in production: \
                 no real payment is taken; set the live key (sk_live_…) to go live"
                    .into(),
            );
        }
        if self.app_env == AppEnv::Production && self.stripe.api_base.is_some() {
            warnings.push(
                "STRIPE_API_BASE is set in production: Stripe calls do not go to Stripe".into(),
            );
        }
        warnings
    }

    /// Whether a development default stands in for a secret.
    pub fn uses_development_secrets(&self) -> bool {
        !self.development_defaults().is_empty()
    }

    /// The secrets a development default stands in for: published in this source, so
    /// they protect nothing beyond this machine.
    pub fn development_defaults(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.auth_jwt_secret.expose_secret() == DEV_JWT_SECRET {
            names.push("AUTH_JWT_SECRET");
        }
        if self
            .stripe
            .webhook_secrets
            .iter()
            .any(|s| s.expose_secret() == DEV_WEBHOOK_SECRET)
        {
            names.push("STRIPE_WEBHOOK_SECRET");
        }
        names
    }

    /// Whether the service runs the local Stripe emulator in place of Stripe: no key,
    /// outside production, in a build that has it.
    pub fn runs_emulator(&self) -> bool {
        cfg!(feature = "emulator")
            && self.stripe.secret_key.is_none()
            && self.app_env != AppEnv::Production
    }
}

impl DatabaseSettings {
    /// `host:port/database` without user or password, for log lines and errors.
    pub fn display_target(&self) -> String {
        match Url::parse(self.url.expose_secret()) {
            Ok(url) => format!(
                "{}:{}{}",
                url.host_str().unwrap_or("localhost"),
                url.port().unwrap_or(5432),
                url.path()
            ),
            Err(_) => "(unparsable DATABASE_URL)".into(),
        }
    }
}

/// Whether `key` is a live-mode Stripe API key (secret or restricted).
fn is_live_key(key: &str) -> bool {
    key.starts_with("sk_live_") || key.starts_with("rk_live_")
}

/// Whether `key` is a test-mode Stripe API key (secret or restricted).
fn is_test_key(key: &str) -> bool {
    key.starts_with("sk_test_") || key.starts_with("rk_test_")
}

/// Where a Stripe account's API keys are.
const API_KEYS_ARE: &str = "copy the secret key (sk_test_… in test mode, sk_live_… in live mode) \
     from the Stripe Dashboard → Developers → API keys";

/// Why `key` cannot be `STRIPE_SECRET_KEY`, if it cannot: the API takes secret (`sk_`) and
/// restricted (`rk_`) keys, of either mode. Says what the value is instead, by its prefix
/// alone: the key itself is never printed.
fn api_key_problem(key: &str) -> Option<String> {
    if is_live_key(key) || is_test_key(key) {
        return None;
    }
    let what = if key.starts_with("pk_") {
        "is a publishable key (pk_…), which only identifies your account to Stripe.js and \
         cannot call the API"
    } else if key.starts_with("whsec_") {
        "is a webhook signing secret (whsec_…), which belongs in STRIPE_WEBHOOK_SECRET"
    } else {
        "is not a Stripe API key (those start with sk_test_, sk_live_, rk_test_ or rk_live_)"
    };
    Some(format!("{what}: {API_KEYS_ARE}"))
}

/// Why `secret` cannot be a webhook signing secret, if it cannot (they all start with
/// `whsec_`). Says what it is instead, by its prefix alone.
fn webhook_secret_problem(secret: &str) -> Option<String> {
    if secret.starts_with("whsec_") {
        return None;
    }
    let what = if ["sk_", "rk_"].iter().any(|p| secret.starts_with(p)) {
        "is an API key (sk_…/rk_…), which belongs in STRIPE_SECRET_KEY"
    } else if secret.starts_with("pk_") {
        "is a publishable key (pk_…)"
    } else {
        "is not a webhook signing secret (those start with whsec_)"
    };
    Some(format!(
        "{what}: set your endpoint's signing secret (whsec_…), from the Stripe Dashboard → \
         Developers → Webhooks → the endpoint → Signing secret, or the one `stripe listen` prints"
    ))
}

/// The origin a browser on this machine reaches the listener at: `localhost` for a loopback
/// or wildcard address (the README's first link), else the address itself.
fn own_origin(address: SocketAddr) -> String {
    let ip = address.ip().to_canonical();
    if ip.is_loopback() || ip.is_unspecified() {
        format!("http://localhost:{}", address.port())
    } else {
        format!("http://{}", SocketAddr::new(ip, address.port()))
    }
}

/// Whether `url` names this machine (`localhost`, `127.0.0.0/8`, `[::1]`).
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Why `secret` is too weak to sign sessions in production, if it is. No check proves a
/// secret random; these catch the obvious values people do deploy: the published
/// default, short ones, one character or one word repeated, a handful of characters.
fn jwt_secret_weakness(secret: &str) -> Option<&'static str> {
    let bytes = secret.as_bytes();
    if secret == DEV_JWT_SECRET {
        return Some("is the development default published in this source");
    }
    if bytes.len() < 32 {
        return Some("is shorter than 32 bytes (too weak for HS256)");
    }
    // The shortest period the secret repeats with, if it repeats at least twice.
    let period = (1..=bytes.len() / 2).find(|&p| bytes[p..].iter().zip(bytes).all(|(a, b)| a == b));
    match period {
        Some(1) => return Some("is one character repeated"),
        Some(_) => return Some("repeats a shorter string"),
        None => {}
    }
    let distinct = bytes
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    // `openssl rand -hex 32` uses all 16 hex digits; 64 random ones from fewer than 8 is
    // about as likely as guessing the secret.
    (distinct < 8).then_some("uses fewer than 8 different characters")
}

fn env_file(app_env: AppEnv) -> &'static str {
    match app_env {
        AppEnv::Development | AppEnv::Test => include_str!("../config/development.toml"),
        AppEnv::Production => include_str!("../config/production.toml"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        #[allow(unused_mut)]
        let mut map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Without the emulator no environment starts without a key: the
        // tests about other settings in the default environment get one
        // (the refusal itself has its own test below).
        #[cfg(not(feature = "emulator"))]
        if !map.contains_key("APP_ENV") {
            map.entry("STRIPE_SECRET_KEY".into())
                .or_insert_with(|| "sk_test_config".into());
        }
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    fn production_vars() -> Vec<(&'static str, &'static str)> {
        vec![
            ("APP_ENV", "production"),
            ("STRIPE_SECRET_KEY", "sk_live_123"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_abc"),
            ("AUTH_JWT_SECRET", STRONG_JWT_SECRET),
            ("APP_BASE_URL", "https://app.example.com"),
        ]
    }

    /// What `openssl rand -hex 32` prints.
    const STRONG_JWT_SECRET: &str =
        "3f9c1e0b7a2d4c8e9f1a6b3d5e7c0a2b4d6f8e1c3a5b7d9f0e2c4a6b8d0f1e3a";

    /// Production's variables with `key` set to `value` instead.
    fn production_with(key: &'static str, value: &'static str) -> Result<Settings, ConfigError> {
        let mut vars = production_vars();
        vars.retain(|(k, _)| *k != key);
        vars.push((key, value));
        settings(&vars)
    }

    fn production_error_without(key: &str) -> String {
        let vars: Vec<_> = production_vars()
            .into_iter()
            .filter(|(k, _)| *k != key)
            .collect();
        settings(&vars).unwrap_err().to_string()
    }

    #[cfg(feature = "emulator")]
    #[test]
    fn development_starts_with_no_variables_at_all() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.app_env, AppEnv::Development);
        assert_eq!(s.port, 8080);
        assert_eq!(
            s.portal_return_url(),
            "http://localhost:8080/settings/billing?from=portal"
        );
        assert!(s.stripe.secret_key.is_none());
        assert!(s.uses_development_secrets());
    }

    #[test]
    fn environment_variables_win_over_config_files() {
        let s = settings(&[
            ("PORT", "9999"),
            ("APP_BASE_URL", "https://app.example.com/"),
            ("PORTAL_RETURN_PATH", "/account/billing"),
        ])
        .unwrap();
        assert_eq!(s.port, 9999);
        assert_eq!(
            s.portal_return_url(),
            "https://app.example.com/account/billing?from=portal"
        );
    }

    #[test]
    fn the_return_urls_carry_the_marker_that_makes_the_page_re_read_stripe() {
        let s = settings(&[
            ("APP_BASE_URL", "https://app.example.com"),
            ("PORTAL_RETURN_PATH", "/account/billing?tab=plan#top"),
        ])
        .unwrap();

        assert_eq!(
            s.portal_return_url(),
            "https://app.example.com/account/billing?tab=plan&from=portal#top"
        );
        assert_eq!(
            s.checkout_return_url(),
            "https://app.example.com/account/billing?tab=plan&from=checkout&session_id={CHECKOUT_SESSION_ID}#top"
        );
    }

    #[test]
    fn billing_plans_keep_their_order_trimmed_without_empty_entries_or_repeats() {
        let s = settings(&[(
            "BILLING_PLANS",
            " price_pro , pro_yearly,,price_pro,price_starter ",
        )])
        .unwrap();

        assert_eq!(
            s.offered_plans(),
            ["price_pro", "pro_yearly", "price_starter"]
        );
    }

    #[test]
    fn without_billing_plans_only_the_emulator_offers_its_seeded_prices() {
        let emulated = settings(&[]).unwrap();
        let keyed = settings(&[("STRIPE_SECRET_KEY", "sk_test_abc")]).unwrap();

        let expected: Vec<String> = if cfg!(feature = "emulator") {
            crate::billing::checkout::EMULATOR_PLANS
                .iter()
                .map(|p| p.to_string())
                .collect()
        } else {
            Vec::new()
        };
        assert_eq!(emulated.offered_plans(), expected);
        assert!(keyed.offered_plans().is_empty());
        assert_eq!(
            emulated.billing_page_url(),
            format!("{}/settings/billing", emulated.app_base_url)
        );
    }

    #[test]
    fn the_environment_file_wins_over_the_defaults_and_a_variable_over_both() {
        assert_eq!(settings(&[]).unwrap().host, "127.0.0.1");
        assert_eq!(settings(&production_vars()).unwrap().host, "0.0.0.0");
        let mut vars = production_vars();
        vars.push(("HOST", "10.0.0.1"));
        assert_eq!(settings(&vars).unwrap().host, "10.0.0.1");
    }

    #[test]
    fn several_comma_separated_webhook_secrets_are_all_kept() {
        let s = settings(&[("STRIPE_WEBHOOK_SECRET", "whsec_old, whsec_new")]).unwrap();
        let secrets: Vec<_> = s
            .stripe
            .webhook_secrets
            .iter()
            .map(|s| s.expose_secret().to_string())
            .collect();
        assert_eq!(secrets, ["whsec_old", "whsec_new"]);
    }

    #[test]
    fn the_webhook_secret_can_come_from_a_file() {
        let path = std::env::temp_dir().join(format!("whsec-{}", std::process::id()));
        std::fs::write(&path, "whsec_from_file\n").unwrap();
        let s = settings(&[("STRIPE_WEBHOOK_SECRET_FILE", path.to_str().unwrap())]).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            s.stripe.webhook_secrets[0].expose_secret(),
            "whsec_from_file"
        );
    }

    #[test]
    fn an_unreadable_webhook_secret_file_is_named() {
        let err = settings(&[("STRIPE_WEBHOOK_SECRET_FILE", "/nonexistent/whsec")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("STRIPE_WEBHOOK_SECRET_FILE"), "{err}");
    }

    #[test]
    fn production_with_every_secret_starts() {
        let s = settings(&production_vars()).unwrap();
        assert_eq!(s.app_env, AppEnv::Production);
        assert!(!s.uses_development_secrets());
    }

    #[test]
    fn production_names_each_missing_secret() {
        for key in [
            "STRIPE_SECRET_KEY",
            "STRIPE_WEBHOOK_SECRET",
            "AUTH_JWT_SECRET",
        ] {
            let err = production_error_without(key);
            assert!(err.contains(key), "{err}");
            assert!(err.contains("production"), "{err}");
        }
    }

    #[test]
    fn production_refuses_the_localhost_base_url() {
        let err = production_error_without("APP_BASE_URL");
        assert!(err.contains("APP_BASE_URL"), "{err}");
    }

    #[test]
    fn production_refuses_a_short_jwt_secret() {
        let mut vars = production_vars();
        vars.retain(|(k, _)| *k != "AUTH_JWT_SECRET");
        vars.push(("AUTH_JWT_SECRET", "short"));
        let err = settings(&vars).unwrap_err().to_string();
        assert!(err.contains("32 bytes"), "{err}");
    }

    #[test]
    fn trusted_proxies_are_addresses_or_cidr_ranges() {
        let s = settings(&[("TRUSTED_PROXIES", " 10.0.0.0/8, 192.0.2.7 ,::1 ")]).unwrap();
        let listed: Vec<String> = s.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(listed, ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]);
        assert!(settings(&[]).unwrap().trusted_proxies.is_empty());
        let err = settings(&[("TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("TRUSTED_PROXIES") && err.contains("proxy.internal"),
            "{err}"
        );
    }

    #[test]
    fn a_live_stripe_key_is_refused_outside_production() {
        for env in [None, Some("development"), Some("test")] {
            for key in ["sk_live_51Hx0000000000", "rk_live_51Hx0000000000"] {
                let mut vars = vec![("STRIPE_SECRET_KEY", key)];
                vars.extend(env.map(|env| ("APP_ENV", env)));
                let err = settings(&vars).unwrap_err().to_string();
                assert!(err.contains("STRIPE_SECRET_KEY"), "{err}");
                assert!(err.contains("live-mode key"), "{err}");
                assert!(err.contains("APP_ENV=production"), "{err}");
                assert!(
                    !err.contains("51Hx"),
                    "the key itself is never printed: {err}"
                );
            }
        }
        assert!(settings(&[("STRIPE_SECRET_KEY", "sk_test_1")]).is_ok());
    }

    #[test]
    fn production_refuses_the_development_secrets_published_in_this_source() {
        let rolled = format!("whsec_new,{DEV_WEBHOOK_SECRET}").leak();
        for (key, value) in [
            ("AUTH_JWT_SECRET", DEV_JWT_SECRET),
            ("STRIPE_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET),
            ("STRIPE_WEBHOOK_SECRET", &*rolled),
        ] {
            let err = production_with(key, value).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
            assert!(err.contains("development default"), "{err}");
            assert!(!err.contains(value), "{err}");
        }
    }

    #[test]
    fn production_refuses_a_jwt_secret_of_one_repeated_character_or_pattern() {
        for weak in [
            "a".repeat(64),
            "0123456789abcdef".repeat(2),
            "Secret!".repeat(6),
            // Long enough, but from a handful of characters.
            "abababababababababababababababbbabab".into(),
        ] {
            let err = production_with("AUTH_JWT_SECRET", weak.clone().leak())
                .unwrap_err()
                .to_string();
            assert!(err.contains("AUTH_JWT_SECRET"), "{weak}: {err}");
            assert!(!err.contains(&weak), "{err}");
        }
        // What `openssl rand -hex 32` and `openssl rand -base64 32` print.
        for strong in [
            STRONG_JWT_SECRET,
            "q0H4t7Vx2pLk9sR3mN8bY1cZ6wE5uJ0aGfD2hK4iO7s=",
        ] {
            assert!(
                production_with("AUTH_JWT_SECRET", strong).is_ok(),
                "{strong}"
            );
        }
    }

    #[test]
    fn production_refuses_an_http_base_url_except_on_loopback() {
        let err = production_with("APP_BASE_URL", "http://app.example.com")
            .unwrap_err()
            .to_string();
        assert!(err.contains("APP_BASE_URL"), "{err}");
        assert!(err.contains("https://"), "{err}");
        // Loopback is refused for another reason, said once.
        for local in [
            "http://localhost:8080",
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
        ] {
            let err = production_with("APP_BASE_URL", local)
                .unwrap_err()
                .to_string();
            assert!(err.contains("localhost"), "{err}");
            assert!(!err.contains("https://"), "{err}");
        }
    }

    #[test]
    fn production_warns_about_a_test_mode_stripe_key() {
        let s = production_with("STRIPE_SECRET_KEY", "sk_test_51Hx000").unwrap();

        let warnings = s.warnings().join("\n");
        assert!(warnings.contains("STRIPE_SECRET_KEY"), "{warnings}");
        assert!(warnings.contains("test-mode"), "{warnings}");
        assert!(!warnings.contains("51Hx"), "{warnings}");
        assert!(settings(&production_vars()).unwrap().warnings().is_empty());
    }

    #[test]
    fn every_problem_is_reported_at_once_each_naming_its_variable() {
        let err = settings(&[
            ("APP_ENV", "production"),
            ("AUTH_JWT_SECRET", "short"),
            ("APP_BASE_URL", "http://app.example.com"),
            ("STRIPE_TIMEOUT_SECS", "30"),
        ])
        .unwrap_err()
        .to_string();
        for key in [
            "STRIPE_SECRET_KEY",
            "STRIPE_WEBHOOK_SECRET",
            "AUTH_JWT_SECRET",
            "APP_BASE_URL",
            "STRIPE_TIMEOUT_SECS",
        ] {
            assert!(err.contains(key), "{key}: {err}");
        }
        assert!(err.contains("5 problems"), "{err}");

        let err = settings(&[
            ("DATABASE_LOCK_POOL_SIZE", "0"),
            ("DATABASE_STATEMENT_TIMEOUT_MS", "0"),
            ("STRIPE_TIMEOUT_SECS", "30"),
            ("EVENT_RETENTION_DAYS", "1"),
        ])
        .unwrap_err()
        .to_string();
        for key in [
            "DATABASE_LOCK_POOL_SIZE",
            "DATABASE_STATEMENT_TIMEOUT_MS",
            "STRIPE_TIMEOUT_SECS",
            "EVENT_RETENTION_DAYS",
        ] {
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn the_client_reference_secret_must_not_be_the_session_key() {
        let err = settings(&[
            ("AUTH_JWT_SECRET", "shared-secret-0123456789abcdef-xyz"),
            (
                "CLIENT_REFERENCE_SECRET",
                "shared-secret-0123456789abcdef-xyz",
            ),
        ])
        .unwrap_err()
        .to_string();

        assert!(err.contains("CLIENT_REFERENCE_SECRET"), "{err}");
        assert!(err.contains("AUTH_JWT_SECRET"), "{err}");
        assert!(!err.contains("shared-secret"), "{err}");
    }

    #[test]
    fn database_timeouts_are_bounded() {
        for (key, value) in [
            ("DATABASE_STATEMENT_TIMEOUT_MS", "99999999999"),
            ("DATABASE_CONNECT_TIMEOUT_SECS", "99999999999"),
        ] {
            let err = settings(&[(key, value)]).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn production_refuses_a_short_client_reference_secret() {
        let mut vars = production_vars();
        vars.push(("CLIENT_REFERENCE_SECRET", "abc123"));

        let err = settings(&vars).unwrap_err().to_string();

        assert!(err.contains("CLIENT_REFERENCE_SECRET"), "{err}");
        assert!(!err.contains("abc123"), "{err}");
    }

    #[test]
    fn a_zero_webhook_tolerance_is_refused() {
        let err = settings(&[("STRIPE_WEBHOOK_TOLERANCE_SECS", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("STRIPE_WEBHOOK_TOLERANCE_SECS"), "{err}");
    }

    #[test]
    fn a_zero_statement_timeout_or_lock_pool_is_refused() {
        for key in ["DATABASE_STATEMENT_TIMEOUT_MS", "DATABASE_LOCK_POOL_SIZE"] {
            let err = settings(&[(key, "0")]).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn a_stripe_timeout_above_ten_seconds_is_refused() {
        assert!(settings(&[("STRIPE_TIMEOUT_SECS", "30")]).is_err());
    }

    #[test]
    fn the_transport_settings_are_checked_at_start_up_naming_each_variable() {
        let err = |vars: &[(&str, &str)]| settings(vars).unwrap_err().to_string();

        assert!(err(&[("STRIPE_MAX_NETWORK_RETRIES", "9")]).contains("STRIPE_MAX_NETWORK_RETRIES"));
        let missing = err(&[("STRIPE_CA_FILE", "/nonexistent/ca.pem")]);
        assert!(missing.contains("STRIPE_CA_FILE"), "{missing}");
        for proxy in ["proxy.internal:3128", "not a url", "ftp://proxy.internal"] {
            let with_password = proxy.replace("proxy.internal", "user:s3cret@proxy.internal");
            let refused = err(&[("HTTPS_PROXY", &with_password)]);
            assert!(refused.contains("HTTPS_PROXY"), "{refused}");
            assert!(!refused.contains("s3cret"), "{refused}");
        }
        let ok = settings(&[
            ("HTTPS_PROXY", "http://user:s3cret@proxy.internal:3128"),
            ("NO_PROXY", "localhost"),
            ("STRIPE_MAX_NETWORK_RETRIES", "0"),
        ])
        .unwrap();
        assert_eq!(ok.stripe.max_network_retries, 0);
        assert_eq!(ok.stripe.no_proxy.as_deref(), Some("localhost"));
    }

    #[test]
    fn an_unknown_app_env_is_refused() {
        let err = settings(&[("APP_ENV", "staging")]).unwrap_err().to_string();
        assert!(err.contains("APP_ENV"), "{err}");
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let s = settings(&production_vars()).unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains("sk_live_123"));
        assert!(!printed.contains("whsec_abc"));
        assert!(!printed.contains(&STRONG_JWT_SECRET[..16]));
    }

    #[test]
    fn the_database_target_hides_the_password() {
        let s = settings(&[("DATABASE_URL", "postgres://app:hunter2@db:6543/billing")]).unwrap();
        assert_eq!(s.database.display_target(), "db:6543/billing");
    }

    #[test]
    fn the_retired_past_due_flag_is_refused_naming_its_replacement() {
        let err = settings(&[("BILLING_PAST_DUE_IS_PAID", "true")]).unwrap_err();

        let message = err.to_string();
        assert!(message.contains("BILLING_PAST_DUE_IS_PAID"), "{message}");
        assert!(message.contains("BILLING_PAST_DUE_GRACE_DAYS"), "{message}");
    }

    #[test]
    fn the_grace_defaults_to_stripes_two_week_retry_window_and_is_bounded() {
        let defaults = settings(&[]).unwrap();
        assert_eq!(defaults.billing_past_due_grace_days, 14);
        assert!(defaults.billing_collection_paused_is_paid);
        assert_eq!(
            settings(&[("BILLING_PAST_DUE_GRACE_DAYS", "0")])
                .unwrap()
                .billing_past_due_grace_days,
            0
        );
        assert!(settings(&[("BILLING_PAST_DUE_GRACE_DAYS", "400")]).is_err());
        assert!(settings(&[("BILLING_PAST_DUE_GRACE_DAYS", "-1")]).is_err());
    }

    #[test]
    fn production_refuses_metrics_on_a_public_address_without_a_token() {
        let mut vars = production_vars();
        vars.push(("METRICS_ADDR", "0.0.0.0:9090"));
        let err = settings(&vars).unwrap_err().to_string();
        assert!(
            err.contains("METRICS_ADDR") && err.contains("METRICS_TOKEN"),
            "{err}"
        );

        vars.push(("METRICS_TOKEN", "a-long-random-metrics-token"));
        assert!(settings(&vars).is_ok());
        let mut loopback = production_vars();
        loopback.push(("METRICS_ADDR", "127.0.0.1:9090"));
        assert_eq!(
            settings(&loopback).unwrap().metrics.addr,
            Some("127.0.0.1:9090".parse().unwrap())
        );
    }

    #[test]
    fn connection_bounds_have_defaults_and_refuse_zero() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.http.head_timeout, Duration::from_secs(5));
        assert_eq!(s.http.body_timeout, Duration::from_secs(10));
        assert_eq!(s.http.max_connections, 4096);
        for key in [
            "HTTP_HEAD_TIMEOUT_SECS",
            "HTTP_BODY_TIMEOUT_SECS",
            "HTTP_MAX_CONNECTIONS",
        ] {
            let err = settings(&[(key, "0")]).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        let err = settings(&[("METRICS_ADDR", "localhost")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("METRICS_ADDR"), "{err}");
    }

    // --- every problem at once, type errors included (issue 17)

    #[test]
    fn values_of_the_wrong_type_are_reported_at_once_with_the_other_problems() {
        let err = settings(&[
            ("PORT", "abc"),
            ("DATABASE_POOL_SIZE", "ten"),
            ("STRIPE_WEBHOOK_REFETCH", "maybe"),
            ("BILLING_PAST_DUE_GRACE_DAYS", "-1"),
            ("STRIPE_TIMEOUT_SECS", "30"),
            ("TRUSTED_PROXIES", "proxy.internal"),
        ])
        .unwrap_err()
        .to_string();

        for key in [
            "PORT",
            "DATABASE_POOL_SIZE",
            "STRIPE_WEBHOOK_REFETCH",
            "BILLING_PAST_DUE_GRACE_DAYS",
            "STRIPE_TIMEOUT_SECS",
            "TRUSTED_PROXIES",
        ] {
            assert!(err.contains(key), "{key}: {err}");
        }
        assert!(err.contains("6 problems"), "{err}");
        // The variable's own name, never the config crate's lower-case key.
        assert!(!err.contains("`port`"), "{err}");
    }

    #[test]
    fn a_type_error_says_what_the_variable_takes() {
        for (key, value, takes) in [
            ("PORT", "abc", "whole number"),
            ("PORT", "70000", "whole number"),
            ("HTTP_MAX_CONNECTIONS", "lots", "whole number"),
            (
                "BILLING_COLLECTION_PAUSED_IS_PAID",
                "sometimes",
                "true or false",
            ),
        ] {
            let err = settings(&[(key, value)]).unwrap_err().to_string();
            assert!(err.contains(key), "{key}={value}: {err}");
            assert!(err.contains(value), "{key}={value}: {err}");
            assert!(err.contains(takes), "{key}={value}: {err}");
        }
    }

    #[test]
    fn production_reports_type_errors_beside_its_missing_secrets() {
        let err = settings(&[
            ("APP_ENV", "production"),
            ("PORT", "http"),
            ("STRIPE_CATCHUP_INTERVAL_SECS", "5m"),
        ])
        .unwrap_err()
        .to_string();

        for key in [
            "PORT",
            "STRIPE_CATCHUP_INTERVAL_SECS",
            "STRIPE_SECRET_KEY",
            "STRIPE_WEBHOOK_SECRET",
            "AUTH_JWT_SECRET",
            "APP_BASE_URL",
        ] {
            assert!(err.contains(key), "{key}: {err}");
        }
        assert!(err.contains("6 problems"), "{err}");
    }

    #[test]
    fn a_retired_flag_an_unreadable_secret_file_and_a_bad_value_are_reported_together() {
        let err = settings(&[
            ("BILLING_PAST_DUE_IS_PAID", "true"),
            ("STRIPE_WEBHOOK_SECRET_FILE", "/nonexistent/whsec"),
            ("PORT", "abc"),
        ])
        .unwrap_err()
        .to_string();

        for key in [
            "BILLING_PAST_DUE_IS_PAID",
            "STRIPE_WEBHOOK_SECRET_FILE",
            "PORT",
        ] {
            assert!(err.contains(key), "{key}: {err}");
        }
        assert!(err.contains("3 problems"), "{err}");
    }

    // --- Stripe key formats

    /// Each kind of value people paste into STRIPE_SECRET_KEY by mistake, and what the
    /// refusal must call it.
    const WRONG_API_KEYS: &[(&str, &str)] = &[
        ("pk_test_51Hx0000000000", "publishable key"),
        ("pk_live_51Hx0000000000", "publishable key"),
        ("whsec_51Hx0000000000", "webhook signing secret"),
        ("sk_51Hx0000000000", "not a Stripe API key"),
        ("51Hx0000000000", "not a Stripe API key"),
        ("Bearer sk_test_51Hx0000000000", "not a Stripe API key"),
    ];

    #[test]
    fn a_stripe_api_key_of_the_wrong_kind_is_refused_saying_which_kind_it_is() {
        for (key, kind) in WRONG_API_KEYS {
            for vars in [
                vec![("STRIPE_SECRET_KEY", *key)],
                production_vars()
                    .into_iter()
                    .map(|(k, v)| {
                        if k == "STRIPE_SECRET_KEY" {
                            (k, *key)
                        } else {
                            (k, v)
                        }
                    })
                    .collect(),
            ] {
                let err = settings(&vars).unwrap_err().to_string();
                assert!(err.contains("STRIPE_SECRET_KEY"), "{key}: {err}");
                assert!(err.contains(kind), "{key}: {err}");
                // Where the right one is.
                assert!(err.contains("Developers → API keys"), "{key}: {err}");
                assert!(
                    !err.contains("51Hx"),
                    "the key itself is never printed: {err}"
                );
            }
        }
    }

    #[test]
    fn secret_and_restricted_keys_of_either_mode_are_accepted_where_their_mode_is() {
        for key in ["sk_test_51Hx0000000000", "rk_test_51Hx0000000000"] {
            assert!(settings(&[("STRIPE_SECRET_KEY", key)]).is_ok(), "{key}");
            let s = production_with("STRIPE_SECRET_KEY", key).unwrap();
            let warnings = s.warnings().join("\n");
            assert!(warnings.contains("STRIPE_SECRET_KEY"), "{key}: {warnings}");
            assert!(warnings.contains("test-mode"), "{key}: {warnings}");
        }
        for key in ["sk_live_51Hx0000000000", "rk_live_51Hx0000000000"] {
            assert!(production_with("STRIPE_SECRET_KEY", key).is_ok(), "{key}");
            assert!(settings(&[("STRIPE_SECRET_KEY", key)]).is_err(), "{key}");
        }
    }

    #[test]
    fn every_webhook_secret_must_be_a_whsec_secret() {
        for (value, entry, kind) in [
            ("sk_test_51Hx0000000000", "", "API key"),
            (
                "whsec_new,pk_live_51Hx0000000000",
                "entry 2",
                "publishable key",
            ),
            (
                "51Hx0000000000, whsec_old",
                "entry 1",
                "not a webhook signing secret",
            ),
        ] {
            let err = settings(&[("STRIPE_WEBHOOK_SECRET", value)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("STRIPE_WEBHOOK_SECRET"), "{value}: {err}");
            assert!(err.contains(entry), "{value}: {err}");
            assert!(err.contains(kind), "{value}: {err}");
            assert!(err.contains("whsec_"), "{value}: {err}");
            assert!(!err.contains("51Hx"), "{err}");
        }
        let err = production_with("STRIPE_WEBHOOK_SECRET", "sk_live_51Hx0000000000")
            .unwrap_err()
            .to_string();
        assert!(err.contains("STRIPE_WEBHOOK_SECRET"), "{err}");
    }

    #[test]
    fn a_webhook_secret_file_holding_something_else_is_refused_naming_the_file_variable() {
        let path = std::env::temp_dir().join(format!("not-whsec-{}", std::process::id()));
        std::fs::write(&path, "sk_test_51Hx0000000000\n").unwrap();
        let err = settings(&[("STRIPE_WEBHOOK_SECRET_FILE", path.to_str().unwrap())])
            .unwrap_err()
            .to_string();
        std::fs::remove_file(&path).unwrap();

        assert!(err.contains("STRIPE_WEBHOOK_SECRET_FILE"), "{err}");
        assert!(err.contains("whsec_"), "{err}");
        assert!(!err.contains("51Hx"), "{err}");
    }

    // --- APP_BASE_URL follows the listener (issue 17)

    /// The page Stripe sends the user back to: the return URL without its query (which
    /// may say where the user comes from).
    fn return_page(s: &Settings) -> String {
        let url = Url::parse(&s.portal_return_url()).unwrap();
        format!("{}{}", url.origin().ascii_serialization(), url.path())
    }

    #[test]
    fn without_app_base_url_the_return_url_is_on_the_port_the_service_listens_on() {
        let s = settings(&[("PORT", "8095")]).unwrap();

        assert_eq!(return_page(&s), "http://localhost:8095/settings/billing");
        assert_eq!(s.app_origin(), "http://localhost:8095");
    }

    #[test]
    fn without_app_base_url_the_bound_listener_settles_the_origin() {
        for (host, bound, origin) in [
            ("127.0.0.1", "127.0.0.1:41234", "http://localhost:41234"),
            ("0.0.0.0", "0.0.0.0:8080", "http://localhost:8080"),
            ("::1", "[::1]:8095", "http://localhost:8095"),
            ("192.0.2.7", "192.0.2.7:8080", "http://192.0.2.7:8080"),
        ] {
            let mut s = settings(&[("HOST", host), ("PORT", "0")]).unwrap();

            assert_eq!(s.listening_on(bound.parse().unwrap()), None, "{bound}");
            assert_eq!(s.app_origin(), origin, "{bound}");
            assert_eq!(return_page(&s), format!("{origin}/settings/billing"));
        }
    }

    #[test]
    fn an_app_base_url_on_another_local_port_is_warned_about_naming_both() {
        let mut s = settings(&[("APP_BASE_URL", "http://localhost:8080")]).unwrap();

        let warning = s.listening_on("127.0.0.1:8095".parse().unwrap()).unwrap();

        for named in ["APP_BASE_URL=http://localhost:8080", "port 8095", "PORT"] {
            assert!(warning.contains(named), "{named}: {warning}");
        }
        // Kept as set: a proxy may well forward that port here.
        assert_eq!(return_page(&s), "http://localhost:8080/settings/billing");
        for (base, bound) in [
            ("http://localhost:8080", "127.0.0.1:8080"),
            ("https://app.example.com", "127.0.0.1:8095"),
            ("http://127.0.0.1:9000", "0.0.0.0:9000"),
        ] {
            let mut s = settings(&[("APP_BASE_URL", base)]).unwrap();
            assert_eq!(s.listening_on(bound.parse().unwrap()), None, "{base}");
        }
        let mut s = settings(&[("APP_BASE_URL", "http://127.0.0.1:9000")]).unwrap();
        assert!(s.listening_on("127.0.0.1:9001".parse().unwrap()).is_some());
    }

    #[test]
    fn production_requires_app_base_url() {
        let err = production_error_without("APP_BASE_URL");

        assert!(err.contains("APP_BASE_URL is not set"), "{err}");
        assert!(err.contains("https://"), "{err}");
    }

    fn repository_file(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// README.md's configuration table as [`SETTINGS`] renders it, row by row.
    fn readme_rows() -> Vec<String> {
        let mut rows = vec![
            "| variable | default | secret | meaning |".to_string(),
            "|---|---|---|---|".to_string(),
        ];
        rows.extend(SETTINGS.iter().map(|s| {
            let default = s.default.map_or("none".into(), |d| format!("`{d}`"));
            let secret = if s.secret { "yes" } else { "no" };
            format!("| `{}` | {default} | {secret} | {} |", s.name, s.meaning)
        }));
        rows
    }

    #[test]
    fn the_readme_configuration_table_is_the_settings_table() {
        let readme = repository_file("README.md");
        let section = readme
            .split_once("\n## Configuration\n")
            .expect("README.md has a `## Configuration` section")
            .1;
        let table: Vec<&str> = section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .collect();
        let expected = readme_rows();
        let names = |rows: &[&str]| -> Vec<String> {
            rows.iter()
                .skip(2)
                .filter_map(|r| r.split('`').nth(1).map(String::from))
                .collect()
        };
        let expected_refs: Vec<&str> = expected.iter().map(String::as_str).collect();
        assert_eq!(
            names(&table),
            names(&expected_refs),
            "README.md's configuration table must name exactly SETTINGS (src/config.rs), in order"
        );
        for (row, want) in table.iter().zip(&expected) {
            assert_eq!(
                row,
                want,
                "README.md's configuration table differs from SETTINGS (src/config.rs); the whole \
                 table should read:\n{}",
                expected.join("\n")
            );
        }
    }

    /// Set in `.env` only for docker-compose.yml's postgres service; the binary never reads them.
    const COMPOSE_ONLY: &[&str] = &["POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"];

    #[test]
    fn env_example_lists_every_setting_once_each_with_a_comment() {
        let text = repository_file(".env.example");
        let mut listed = Vec::new();
        let mut previous: Option<&str> = None;
        for line in text.lines() {
            // `NAME=value`, or `#NAME=value` for one left unset.
            let entry = line.strip_prefix('#').unwrap_or(line);
            let name = entry.split_once('=').map(|(n, _)| n).filter(|n| {
                n.starts_with(|c: char| c.is_ascii_uppercase())
                    && n.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            });
            match name {
                Some(name) => {
                    assert!(
                        previous.is_some_and(|p| p.starts_with("# ")),
                        ".env.example: {name} has no comment line above it"
                    );
                    let value = &entry[name.len() + 1..];
                    let real_looking = ["sk_test_", "sk_live_", "rk_test_", "rk_live_", "whsec_"]
                        .iter()
                        .filter_map(|prefix| value.strip_prefix(prefix))
                        .any(|rest| {
                            rest.len() >= 8 && rest.chars().all(|c| c.is_ascii_alphanumeric())
                        });
                    assert!(
                        !real_looking,
                        ".env.example: {name} holds a real-looking secret"
                    );
                    assert!(!listed.contains(&name), ".env.example lists {name} twice");
                    // A comment that states the default, `(default 14)`, states SETTINGS' one.
                    let stated = previous
                        .and_then(|p| p.split_once("(default "))
                        .and_then(|(_, rest)| rest.split([',', ')']).next());
                    if let (Some(stated), Some(setting)) =
                        (stated, SETTINGS.iter().find(|s| s.name == name))
                    {
                        assert_eq!(
                            Some(stated),
                            setting.default,
                            ".env.example: the comment above {name} states another default"
                        );
                    }
                    listed.push(name);
                }
                None => previous = Some(line),
            }
            if name.is_some() {
                previous = None;
            }
        }
        let mut listed: Vec<&str> = listed
            .into_iter()
            .filter(|n| !COMPOSE_ONLY.contains(n))
            .collect();
        let mut expected: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        listed.sort_unstable();
        expected.sort_unstable();
        assert_eq!(
            listed, expected,
            ".env.example must list exactly the names in SETTINGS (src/config.rs), plus {COMPOSE_ONLY:?}"
        );
    }

    #[test]
    fn the_settings_table_is_consistent() {
        for (i, s) in SETTINGS.iter().enumerate() {
            assert!(
                SETTINGS[..i].iter().all(|other| other.name != s.name),
                "{} is in SETTINGS twice",
                s.name
            );
            assert!(
                !(s.secret && s.in_files),
                "{} is a secret but may be in a file",
                s.name
            );
            assert!(
                !(s.secret && s.default.is_some()),
                "{} is a secret with a default",
                s.name
            );
        }
        for (name, _) in RETIRED {
            assert!(
                SETTINGS.iter().all(|s| s.name != *name),
                "{name} is retired"
            );
        }
    }

    #[cfg(not(feature = "emulator"))]
    #[test]
    fn without_the_emulator_a_missing_stripe_key_is_refused_in_every_environment() {
        for env in ["development", "test"] {
            let err = settings(&[("APP_ENV", env)]).unwrap_err().to_string();
            assert!(err.contains("STRIPE_SECRET_KEY"), "{err}");
            assert!(err.contains("no local Stripe emulator"), "{err}");
        }
        let err = production_error_without("STRIPE_SECRET_KEY");
        assert!(err.contains("STRIPE_SECRET_KEY"), "{err}");
        assert!(err.contains("no local Stripe emulator"), "{err}");
    }

    #[cfg(not(feature = "emulator"))]
    #[test]
    fn without_the_emulator_development_starts_with_a_stripe_key() {
        let s = settings(&[
            ("APP_ENV", "development"),
            ("STRIPE_SECRET_KEY", "sk_test_1"),
        ]);
        assert!(s.unwrap().stripe.secret_key.is_some());
    }
}
