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
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::request_id;
use actix_web::dev::Service;

use crate::auth::JwtVerifier;
use crate::billing::sweep;
use crate::billing::sync::PaidRule;
use crate::clock::Clock;
use crate::config::{AppEnv, Settings};
use crate::db::{self, PgPool};
use crate::error::ApiError;
use crate::routes;
use crate::stripe::client::StripeGateway;
use crate::stripe::signature::WebhookVerifier;

/// Demo mode: the local Stripe emulator runs (see `src/emulator/`), and the
/// page offers its demo sign-in and checkout.
pub struct DemoMode;

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
    pub demo: Option<DemoMode>,
    pub metrics: Arc<Metrics>,
    /// The billing clock; the emulator's when it runs (see [`crate::clock`]).
    pub clock: Clock,
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
        let paid_rule = PaidRule::new(
            settings.billing_past_due_grace_days,
            settings.billing_collection_paused_is_paid,
        );
        let clock = Clock::system();
        let start_clock = clock.clone();
        let pool = web::block(move || {
            db::prepare_database(&db_settings)?;
            let pool = db::build_pool(&db_settings)?;
            // The paid rule may have changed since the flags were stored.
            let changed =
                db::users::recompute_all_paid(&mut **pool.get()?, &paid_rule.at(start_clock.now()))
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
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("cannot listen on {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();

        // No key outside production: the in-process Stripe emulator, on this
        // very port. Configuration already refused a missing key in
        // production, and everywhere in a build without the emulator.
        #[cfg(feature = "emulator")]
        let emulator = crate::emulator::Mounted::start(&settings, port, &clock);
        let stripe_api = match &settings.stripe.secret_key {
            Some(key) => Some((key.clone(), settings.stripe.api_base.clone())),
            #[cfg(feature = "emulator")]
            None => emulator.as_ref().map(|e| e.stripe_api()),
            #[cfg(not(feature = "emulator"))]
            None => None,
        };
        let metrics = Arc::new(Metrics::new());
        let stripe = stripe_api
            .map(|(key, api_base)| {
                StripeGateway::new(
                    &key,
                    api_base.as_deref(),
                    settings.stripe.timeout,
                    settings.stripe.portal_configuration.clone(),
                    metrics.clone(),
                )
            })
            .transpose()?;
        #[cfg(feature = "emulator")]
        let (demo, emulator) = (emulator.as_ref().map(|_| DemoMode), emulator.map(Arc::new));
        #[cfg(not(feature = "emulator"))]
        let demo = None;
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
            demo,
            metrics: metrics.clone(),
            clock,
        });
        sweep::spawn(
            state.pool.clone(),
            state.clock.clone(),
            state.paid_rule,
            state.metrics.clone(),
        );
        let jwt = web::Data::new(JwtVerifier::new(&settings.auth_jwt_secret));

        let server = HttpServer::new(move || {
            #[cfg(feature = "emulator")]
            let emulator = emulator.clone();
            let metrics = metrics.clone();
            App::new()
                .wrap(routes::json_errors())
                .wrap_fn(move |req, srv| {
                    let metrics = metrics.clone();
                    let method = req.method().to_string();
                    let call = srv.call(req);
                    async move {
                        let res = call.await?;
                        // The route pattern, not the path: bounded label values.
                        let route = res
                            .request()
                            .match_pattern()
                            .unwrap_or_else(|| "unmatched".into());
                        metrics
                            .http_requests
                            .with_label_values(&[&method, &route, res.status().as_str()])
                            .inc();
                        Ok(res)
                    }
                })
                .wrap_fn(request_id::middleware)
                // One access line per request, with its id; never the
                // headers, which carry the session token.
                .wrap(Logger::new(r#"%{x-request-id}o %a "%r" %s %b %Dms"#))
                .app_data(state.clone())
                .app_data(jwt.clone())
                .configure(move |_cfg| {
                    #[cfg(feature = "emulator")]
                    if let Some(emulator) = emulator {
                        emulator.configure(_cfg);
                    }
                })
                .configure(routes::configure)
        })
        .listen(listener)?
        // SIGTERM and Ctrl-C: stop accepting, let in-flight requests finish
        // (a webhook either commits or its caller sees no 2xx), then stop.
        .shutdown_timeout(settings.shutdown_timeout.as_secs())
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
