//! Settings: `config/base.toml`, then `config/{APP_ENV}.toml`, then the
//! environment variables named in DESIGN.md (environment wins).
//!
//! Secrets (`STRIPE_SECRET_KEY`, `STRIPE_WEBHOOK_SECRET`, `AUTH_JWT_SECRET`) come
//! from the environment only, are held as [`SecretString`] so they never print,
//! and are refused if a config file tries to set them. `APP_ENV=production`
//! refuses to start with a missing secret or an unsafe development default and
//! names the variable at fault.

use std::time::Duration;

use config::{Config, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

/// Used only outside production when `AUTH_JWT_SECRET` is unset, so that
/// `cargo run` works with no set-up; a warning says so at start-up.
pub const DEV_JWT_SECRET: &str = "development-only-jwt-secret-do-not-use-in-production";
/// Used only outside production when `STRIPE_WEBHOOK_SECRET` is unset.
pub const DEV_WEBHOOK_SECRET: &str = "whsec_development_only_do_not_use_in_production";

/// Non-secret keys that may come from the config files or the environment.
const KEYS: &[&str] = &[
    "database_url",
    "database_pool_size",
    "database_connect_timeout_secs",
    "database_statement_timeout_ms",
    "host",
    "port",
    "app_base_url",
    "portal_return_path",
    "stripe_api_base",
    "stripe_timeout_secs",
    "stripe_webhook_tolerance_secs",
    "stripe_webhook_refetch",
    "stripe_portal_configuration",
    "billing_past_due_grace_days",
    "billing_collection_paused_is_paid",
    "shutdown_timeout_secs",
    "event_retention_days",
];
/// Secret keys: (config key, environment name). Environment only.
const SECRET_KEYS: &[(&str, &str)] = &[
    ("stripe_secret_key", "STRIPE_SECRET_KEY"),
    ("stripe_webhook_secret", "STRIPE_WEBHOOK_SECRET"),
    ("auth_jwt_secret", "AUTH_JWT_SECRET"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Test,
    Production,
}

impl AppEnv {
    fn parse(s: &str) -> Result<Self, ConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "development" | "dev" | "local" => Ok(Self::Development),
            "test" => Ok(Self::Test),
            "production" | "prod" => Ok(Self::Production),
            other => Err(ConfigError::Invalid {
                key: "APP_ENV",
                reason: format!("`{other}` is not one of development, test, production"),
            }),
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
    #[error("configuration: {key} is invalid: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("configuration: {0}")]
    Load(String),
    #[error("APP_ENV=production refuses to start: {key} {reason}")]
    UnsafeForProduction { key: &'static str, reason: String },
    #[error("configuration: STRIPE_SECRET_KEY is not set, and {NO_EMULATOR}: set it to a Stripe secret key (sk_test_… or sk_live_…)")]
    NoStripeKey,
}

/// Why a build without the `emulator` cargo feature needs `STRIPE_SECRET_KEY`
/// in every environment: nothing else could answer its Stripe calls.
const NO_EMULATOR: &str =
    "this build has no local Stripe emulator (it was built without the `emulator` feature)";

/// What the config files and the environment say, before validation.
#[derive(Deserialize)]
struct Raw {
    database_url: String,
    database_pool_size: u32,
    database_connect_timeout_secs: u64,
    database_statement_timeout_ms: u64,
    host: String,
    port: u16,
    app_base_url: String,
    portal_return_path: String,
    stripe_api_base: Option<String>,
    stripe_timeout_secs: u64,
    stripe_webhook_tolerance_secs: u64,
    stripe_webhook_refetch: bool,
    stripe_portal_configuration: Option<String>,
    billing_past_due_grace_days: u32,
    billing_collection_paused_is_paid: bool,
    shutdown_timeout_secs: u64,
    event_retention_days: u32,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub app_env: AppEnv,
    pub database: DatabaseSettings,
    pub host: String,
    pub port: u16,
    /// Public origin of the app, without a trailing slash.
    pub app_base_url: String,
    pub portal_return_path: String,
    pub stripe: StripeSettings,
    pub auth_jwt_secret: SecretString,
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
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// May carry a password, hence secret; [`DatabaseSettings::display_target`] is loggable.
    pub url: SecretString,
    pub pool_size: u32,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// `None` outside production means the local emulator.
    pub secret_key: Option<SecretString>,
    pub api_base: Option<String>,
    pub timeout: Duration,
    /// One or more, tried in turn while a secret is rolled.
    pub webhook_secrets: Vec<SecretString>,
    pub webhook_tolerance_secs: u64,
    pub webhook_refetch: bool,
    pub portal_configuration: Option<String>,
}

impl Settings {
    /// Settings from the process environment and the config files.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Settings from any variable lookup (tests pass a map), layered over the
    /// config files embedded in the binary, so a deployed binary needs no files.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        if var("BILLING_PAST_DUE_IS_PAID").is_some() {
            // A silently ignored setting would change who is paid.
            return Err(ConfigError::Invalid {
                key: "BILLING_PAST_DUE_IS_PAID",
                reason: "was replaced by BILLING_PAST_DUE_GRACE_DAYS (days a past_due \
                         subscription keeps access; 0 = none, default 14): unset it and set that"
                    .into(),
            });
        }
        let app_env = AppEnv::parse(&var("APP_ENV").unwrap_or_default())?;

        let mut builder = Config::builder()
            .add_source(File::from_str(
                include_str!("../config/base.toml"),
                FileFormat::Toml,
            ))
            .add_source(File::from_str(env_file(app_env), FileFormat::Toml));
        for key in KEYS {
            if let Some(value) = var(&key.to_ascii_uppercase()) {
                builder = builder
                    .set_override(*key, value)
                    .map_err(|e| ConfigError::Load(e.to_string()))?;
            }
        }
        let config = builder
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        for (key, env_name) in SECRET_KEYS {
            if config.get_string(key).is_ok() {
                return Err(ConfigError::Invalid {
                    key: env_name,
                    reason: "is a secret and must come from the environment, not a config file"
                        .into(),
                });
            }
        }
        let raw: Raw = config
            .try_deserialize()
            .map_err(|e| ConfigError::Load(e.to_string()))?;

        let secret = |key: &str| var(key).map(SecretString::from);
        let webhook_secret = match (
            var("STRIPE_WEBHOOK_SECRET"),
            var("STRIPE_WEBHOOK_SECRET_FILE"),
        ) {
            (Some(value), _) => Some(value),
            // docker compose: `stripe listen --print-secret` writes it to a
            // shared volume, so nobody copies it by hand.
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| ConfigError::Invalid {
                        key: "STRIPE_WEBHOOK_SECRET_FILE",
                        reason: format!("cannot read {path}: {e}"),
                    })?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        Self::validate(
            app_env,
            raw,
            secret("STRIPE_SECRET_KEY"),
            webhook_secret,
            secret("AUTH_JWT_SECRET"),
        )
    }

    fn validate(
        app_env: AppEnv,
        raw: Raw,
        stripe_secret_key: Option<SecretString>,
        webhook_secret: Option<String>,
        jwt_secret: Option<SecretString>,
    ) -> Result<Self, ConfigError> {
        let production = app_env == AppEnv::Production;
        let unsafe_for_production = |key: &'static str, reason: &str| {
            Err(ConfigError::UnsafeForProduction {
                key,
                reason: reason.to_string(),
            })
        };

        let base = Url::parse(&raw.app_base_url).map_err(|e| ConfigError::Invalid {
            key: "APP_BASE_URL",
            reason: format!("not an absolute URL ({e})"),
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(ConfigError::Invalid {
                key: "APP_BASE_URL",
                reason: "must be an http(s) origin such as https://app.example.com".into(),
            });
        }
        if !raw.portal_return_path.starts_with('/') {
            return Err(ConfigError::Invalid {
                key: "PORTAL_RETURN_PATH",
                reason: "must start with `/`".into(),
            });
        }
        if raw.stripe_webhook_tolerance_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "STRIPE_WEBHOOK_TOLERANCE_SECS",
                reason: "0 would accept replays of any age; use a positive number of seconds (Stripe's default is 300)".into(),
            });
        }
        if !(1..=10).contains(&raw.stripe_timeout_secs) {
            return Err(ConfigError::Invalid {
                key: "STRIPE_TIMEOUT_SECS",
                reason: "must be between 1 and 10 seconds".into(),
            });
        }
        if raw.event_retention_days < 7 {
            // Stripe redelivers for up to three days; dedupe must outlive that.
            return Err(ConfigError::Invalid {
                key: "EVENT_RETENTION_DAYS",
                reason: "must be at least 7 (Stripe retries deliveries for up to 3 days)".into(),
            });
        }
        if raw.billing_past_due_grace_days > 366 {
            return Err(ConfigError::Invalid {
                key: "BILLING_PAST_DUE_GRACE_DAYS",
                reason: "must be between 0 and 366 days (Stripe retries a failed payment for at \
                         most about a month; 14 matches its default retry window)"
                    .into(),
            });
        }
        if raw.database_pool_size == 0 {
            return Err(ConfigError::Invalid {
                key: "DATABASE_POOL_SIZE",
                reason: "must be at least 1".into(),
            });
        }
        if let Some(api_base) = &raw.stripe_api_base {
            Url::parse(api_base).map_err(|e| ConfigError::Invalid {
                key: "STRIPE_API_BASE",
                reason: format!("not an absolute URL ({e})"),
            })?;
        }
        let webhook_secrets: Vec<SecretString> = webhook_secret
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(SecretString::from)
            .collect();

        if production {
            if stripe_secret_key.is_none() {
                return unsafe_for_production(
                    "STRIPE_SECRET_KEY",
                    &if cfg!(feature = "emulator") {
                        "is not set (the local Stripe emulator never runs in production)".into()
                    } else {
                        format!("is not set ({NO_EMULATOR})")
                    },
                );
            }
            if webhook_secrets.is_empty() {
                return unsafe_for_production(
                    "STRIPE_WEBHOOK_SECRET",
                    "is not set, nor STRIPE_WEBHOOK_SECRET_FILE (webhooks could not be verified)",
                );
            }
            match &jwt_secret {
                None => return unsafe_for_production("AUTH_JWT_SECRET", "is not set"),
                Some(s) if s.expose_secret().len() < 32 => {
                    return unsafe_for_production(
                        "AUTH_JWT_SECRET",
                        "is shorter than 32 bytes (too weak for HS256)",
                    )
                }
                Some(_) => {}
            }
            if matches!(base.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")) {
                return unsafe_for_production(
                    "APP_BASE_URL",
                    "still points at localhost (Stripe would send users back to their own machine)",
                );
            }
        }

        if stripe_secret_key.is_none() && !cfg!(feature = "emulator") {
            return Err(ConfigError::NoStripeKey);
        }

        let webhook_secrets = if webhook_secrets.is_empty() {
            vec![SecretString::from(DEV_WEBHOOK_SECRET)]
        } else {
            webhook_secrets
        };
        Ok(Self {
            app_env,
            database: DatabaseSettings {
                url: SecretString::from(raw.database_url),
                pool_size: raw.database_pool_size,
                connect_timeout: Duration::from_secs(raw.database_connect_timeout_secs.max(1)),
                statement_timeout: Duration::from_millis(raw.database_statement_timeout_ms),
            },
            host: raw.host,
            port: raw.port,
            app_base_url: raw.app_base_url.trim_end_matches('/').to_string(),
            portal_return_path: raw.portal_return_path,
            stripe: StripeSettings {
                secret_key: stripe_secret_key,
                api_base: raw.stripe_api_base,
                timeout: Duration::from_secs(raw.stripe_timeout_secs),
                webhook_secrets,
                webhook_tolerance_secs: raw.stripe_webhook_tolerance_secs,
                webhook_refetch: raw.stripe_webhook_refetch,
                portal_configuration: raw.stripe_portal_configuration,
            },
            auth_jwt_secret: jwt_secret.unwrap_or_else(|| SecretString::from(DEV_JWT_SECRET)),
            billing_past_due_grace_days: raw.billing_past_due_grace_days,
            billing_collection_paused_is_paid: raw.billing_collection_paused_is_paid,
            shutdown_timeout: Duration::from_secs(raw.shutdown_timeout_secs),
            event_retention_days: raw.event_retention_days,
        })
    }

    /// Where Stripe sends the user back after the portal.
    pub fn portal_return_url(&self) -> String {
        format!("{}{}", self.app_base_url, self.portal_return_path)
    }

    /// `APP_BASE_URL` reduced to its origin (`scheme://host[:port]`).
    pub fn app_origin(&self) -> String {
        Url::parse(&self.app_base_url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| self.app_base_url.clone())
    }

    /// Whether a development default stands in for a secret (logged as a warning).
    pub fn uses_development_secrets(&self) -> bool {
        self.auth_jwt_secret.expose_secret() == DEV_JWT_SECRET
            || self
                .stripe
                .webhook_secrets
                .iter()
                .any(|s| s.expose_secret() == DEV_WEBHOOK_SECRET)
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
            ("AUTH_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("APP_BASE_URL", "https://app.example.com"),
        ]
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
            "http://localhost:8080/settings/billing"
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
            "https://app.example.com/account/billing"
        );
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
    fn a_zero_webhook_tolerance_is_refused() {
        let err = settings(&[("STRIPE_WEBHOOK_TOLERANCE_SECS", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("STRIPE_WEBHOOK_TOLERANCE_SECS"), "{err}");
    }

    #[test]
    fn a_stripe_timeout_above_ten_seconds_is_refused() {
        assert!(settings(&[("STRIPE_TIMEOUT_SECS", "30")]).is_err());
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
        assert!(!printed.contains("0123456789abcdef"));
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
