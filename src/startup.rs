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
use crate::http::auth::JwtVerifier;
use crate::http::{self, request_id, AppState};
use crate::stripe::signature::WebhookVerifier;
#[cfg(feature = "emulator")]
use std::sync::Arc;

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
        // very port. Configuration already refused a missing key in
        // production, and everywhere in a build without the emulator.
        #[cfg(feature = "emulator")]
        let emulator = crate::emulator::Mounted::start(&settings, port, &clock).map(Arc::new);
        #[cfg(feature = "emulator")]
        let (target, demo) = match &emulator {
            Some(emulator) => {
                let (key, api_base) = emulator.stripe_api();
                (StripeTarget::Other { key, api_base }, true)
            }
            None => (StripeTarget::Configured, false),
        };
        #[cfg(not(feature = "emulator"))]
        let (target, demo) = (StripeTarget::Configured, false);
        let billing = context::build(&settings, target, clock).await?;
        let state = web::Data::new(AppState {
            billing,
            origins: http::auth::OriginPolicy::new(&settings),
            webhook_verifier: WebhookVerifier::new(
                settings
                    .stripe
                    .webhook_secrets
                    .iter()
                    .map(|s| s.expose_secret().to_string())
                    .collect(),
                settings.stripe.webhook_tolerance_secs,
            ),
            demo,
        });
        sweep::spawn(state.billing.clone());
        let metrics = state.billing.metrics.clone();
        let jwt = web::Data::new(JwtVerifier::new(&settings.auth_jwt_secret));

        let server = HttpServer::new(move || {
            #[cfg(feature = "emulator")]
            let emulator = emulator.clone();
            let metrics = metrics.clone();
            App::new()
                .wrap(http::json_errors())
                .wrap_fn(move |req, srv| {
                    let metrics = metrics.clone();
                    let method = req.method().clone();
                    let call = srv.call(req);
                    async move {
                        let res = call.await?;
                        // The route pattern, not the path: bounded label values.
                        let route = res
                            .request()
                            .match_pattern()
                            .unwrap_or_else(|| "unmatched".into());
                        metrics.http_request(&method, &route, res.status());
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
