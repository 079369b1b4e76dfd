//! [`Application::build`]: the HTTP server, wired together, used by `main`
//! and by every test. It binds the listener (port 0 in tests), starts the
//! emulator when there is no Stripe key, builds the shared context once
//! ([`crate::context::build`]) and registers it outside the `HttpServer::new`
//! closure so all workers share one pool.

use std::net::TcpListener;

use actix_web::dev::{Server, Service};
use actix_web::middleware::Logger;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use log::{info, warn};
use secrecy::ExposeSecret;

use crate::billing::sweep;
use crate::clock::Clock;
use crate::config::{AppEnv, Settings};
use crate::context::{self, StripeTarget};
use crate::emulator::demo::DemoMode;
use crate::emulator::{self, Emulator};
use crate::http::auth::JwtVerifier;
use crate::http::{self, request_id, AppState};
use crate::stripe::signature::WebhookVerifier;

/// Portal links should open on the origin the user browses (so
/// `APP_BASE_URL` when it is this very server on localhost), else loopback.
fn emulator_public_origin(app_origin: &str, port: u16) -> Option<String> {
    let url = url::Url::parse(app_origin).ok()?;
    let local = matches!(url.host_str(), Some("localhost" | "127.0.0.1"));
    (local && url.port_or_known_default() == Some(port)).then(|| app_origin.to_string())
}

pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        if settings.uses_development_secrets() {
            warn!(
                "AUTH_JWT_SECRET or STRIPE_WEBHOOK_SECRET is unset: using development-only \
                 defaults (refused when APP_ENV=production)"
            );
        }
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("cannot listen on {}:{}", settings.host, settings.port))?;
        let port = listener.local_addr()?.port();
        let clock = Clock::system();

        // No key outside production: the in-process Stripe emulator, on this
        // very port (config validation already refused this in production).
        let emulator = match (&settings.stripe.secret_key, settings.app_env) {
            (None, env) if env != AppEnv::Production => {
                let local = format!("http://127.0.0.1:{port}");
                let public =
                    emulator_public_origin(&settings.app_origin(), port).unwrap_or(local.clone());
                let emu = Emulator::new(
                    format!("{public}/stripe-emulator"),
                    format!("{local}/webhooks/stripe"),
                    settings.stripe.webhook_secrets[0]
                        .expose_secret()
                        .to_string(),
                    clock.clone(),
                );
                warn!(
                    "*** STRIPE_SECRET_KEY is unset: using the LOCAL STRIPE EMULATOR at {public}/stripe-emulator \
                     (no real Stripe calls; demo sign-in enabled). Set STRIPE_SECRET_KEY to use Stripe. ***"
                );
                Some((emu, format!("{local}/stripe-emulator")))
            }
            _ => None,
        };
        let target = match &emulator {
            Some((_, api_base)) => StripeTarget::Emulator(api_base.clone()),
            None => StripeTarget::Configured,
        };
        let billing = context::build(&settings, target, clock.clone()).await?;
        let demo = emulator.map(|(emulator, _)| DemoMode {
            emulator,
            jwt_secret: settings.auth_jwt_secret.clone(),
        });
        let state = web::Data::new(AppState {
            billing,
            app_origin: settings.app_origin(),
            webhook_verifier: WebhookVerifier::new(
                settings
                    .stripe
                    .webhook_secrets
                    .iter()
                    .map(|s| s.expose_secret().to_string())
                    .collect(),
                settings.stripe.webhook_tolerance_secs,
            ),
            demo: demo.is_some(),
        });
        sweep::spawn(state.billing.clone());
        let metrics = state.billing.metrics.clone();
        let jwt = web::Data::new(JwtVerifier::new(&settings.auth_jwt_secret));

        let demo = demo.map(web::Data::new);
        let server = HttpServer::new(move || {
            let demo = demo.clone();
            let metrics = metrics.clone();
            App::new()
                .wrap(http::json_errors())
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
                .configure(move |cfg| {
                    if let Some(demo) = demo {
                        cfg.app_data(web::Data::new(demo.emulator.clone()));
                        cfg.app_data(demo);
                        emulator::portal::configure(cfg);
                        cfg.route("/demo/sign-in", web::post().to(emulator::demo::sign_in));
                        cfg.route("/demo/subscribe", web::post().to(emulator::demo::subscribe));
                    }
                })
                .configure(http::configure)
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
