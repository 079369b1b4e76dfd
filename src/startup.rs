//! [`Application::build`]: the one place the service is wired together, used
//! by `main` and by every test. It prepares the database (create, migrate),
//! builds the pool and the Stripe client once, binds the listener (port 0 in
//! tests) and registers shared state outside the `HttpServer::new` closure so
//! all workers share one pool.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::middleware::Logger;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use log::{info, warn};
use secrecy::ExposeSecret;

use crate::auth::JwtVerifier;
use crate::billing::sync::PaidRule;
use crate::config::{AppEnv, Settings};
use crate::db::{self, PgPool};
use crate::error::ApiError;
use crate::routes;
use crate::stripe::client::StripeGateway;
use crate::stripe::signature::WebhookVerifier;

/// What every handler shares.
pub struct AppState {
    pub pool: PgPool,
    pub stripe: Option<StripeGateway>,
    pub portal_return_url: String,
    /// `APP_BASE_URL` as an origin, accepted in `Origin` headers.
    pub app_origin: String,
    /// How long a first create-portal may wait for the user's row lock: the
    /// holder may be waiting on Stripe for up to its client timeout.
    pub customer_lock_timeout_ms: u128,
    pub paid_rule: PaidRule,
    pub webhook_verifier: WebhookVerifier,
    pub webhook_refetch: bool,
}

impl AppState {
    pub fn stripe(&self) -> Result<&StripeGateway, ApiError> {
        self.stripe.as_ref().ok_or_else(|| {
            ApiError::service_unavailable(
                "stripe_not_configured",
                "Stripe is not configured: set STRIPE_SECRET_KEY",
            )
        })
    }
}

pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db_settings = settings.database.clone();
        let paid_rule = PaidRule {
            past_due_is_paid: settings.billing_past_due_is_paid,
        };
        let pool = web::block(move || {
            db::prepare_database(&db_settings)?;
            let pool = db::build_pool(&db_settings)?;
            // The paid rule may have changed since the flags were stored.
            let changed =
                db::users::recompute_all_paid(&mut *pool.get()?, paid_rule.paid_statuses())
                    .context("Failed to recompute paid flags")?;
            if changed > 0 {
                info!("paid rule changed: recomputed {changed} users' paid flag");
            }
            Ok::<_, anyhow::Error>(pool)
        })
        .await
        .context("database preparation did not finish")??;

        if settings.uses_development_secrets() {
            warn!(
                "AUTH_JWT_SECRET or STRIPE_WEBHOOK_SECRET is unset: using development-only \
                 defaults (refused when APP_ENV=production)"
            );
        }
        let stripe = match &settings.stripe.secret_key {
            Some(key) => Some(StripeGateway::new(
                key,
                settings.stripe.api_base.as_deref(),
                settings.stripe.timeout,
                settings.stripe.portal_configuration.clone(),
            )?),
            None => {
                warn!("STRIPE_SECRET_KEY is unset: create-portal answers 503 until it is set");
                None
            }
        };

        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("cannot listen on {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            pool,
            stripe,
            portal_return_url: settings.portal_return_url(),
            app_origin: settings.app_origin(),
            customer_lock_timeout_ms: settings.stripe.timeout.as_millis() * 2 + 5_000,
            paid_rule,
            webhook_verifier: WebhookVerifier::new(
                settings
                    .stripe
                    .webhook_secrets
                    .iter()
                    .map(|s| s.expose_secret().to_string())
                    .collect(),
                settings.stripe.webhook_tolerance_secs,
            ),
            webhook_refetch: settings.stripe.webhook_refetch,
        });
        let jwt = web::Data::new(JwtVerifier::new(&settings.auth_jwt_secret));

        let server = HttpServer::new(move || {
            App::new()
                .wrap(routes::json_errors())
                // Never the headers: they carry the session token.
                .wrap(Logger::new(r#"%a "%r" %s %b %Dms"#))
                .app_data(state.clone())
                .app_data(jwt.clone())
                .configure(routes::configure)
        })
        .listen(listener)?
        .run();
        info!(
            "listening on http://{}:{port} ({} environment)",
            settings.host,
            settings.app_env.as_str()
        );
        if settings.app_env == AppEnv::Production && settings.stripe.api_base.is_some() {
            warn!("STRIPE_API_BASE is set in production: Stripe calls do not go to Stripe");
        }
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
