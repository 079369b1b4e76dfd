//! [`Application::build`]: the HTTP server, wired together, used by `main`
//! and by every test. It binds the listener (port 0 in tests), starts the
//! emulator when there is no Stripe key, builds the shared context once
//! ([`crate::context::build`]) and registers it outside the `HttpServer::new`
//! closure so all workers share one pool. Outside production it keeps what is
//! safe only on a developer's machine (the emulator, development secrets) to
//! loopback.

use std::net::{SocketAddr, TcpListener};

use actix_web::dev::{Server, Service};
use actix_web::middleware::Logger;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use log::{info, warn};
use secrecy::ExposeSecret;

use crate::billing::sweep;
use crate::clock::Clock;
use crate::config::Settings;
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
        for warning in settings.warnings() {
            warn!("{warning}");
        }
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("cannot listen on {}:{}", settings.host, settings.port))?;
        let address = listener.local_addr()?;
        refuse_public_development_defaults(&settings, address)?;
        let port = address.port();
        let clock = Clock::system();

        // No key outside production: the in-process Stripe emulator, on this
        // very port. Configuration already refused a missing key in
        // production, and everywhere in a build without the emulator.
        #[cfg(feature = "emulator")]
        let emulator = crate::emulator::Mounted::start(&settings, address, &clock).map(Arc::new);
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
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Outside production, what is safe only on the developer's own machine stays there: the
/// emulator takes any `sk_` key and its demo signs in anyone, and a development default
/// secret is published in this source, so anyone could sign a session or a webhook with
/// it. On a non-loopback address the service refuses to start and names the ways out,
/// rather than listen elsewhere than `HOST` says (a container's published port would then
/// answer nothing, with no reason given).
fn refuse_public_development_defaults(
    settings: &Settings,
    address: SocketAddr,
) -> anyhow::Result<()> {
    if address.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    if settings.runs_emulator() {
        anyhow::ensure!(
            settings.emulator_allow_public,
            "refusing to listen on {address}: without STRIPE_SECRET_KEY the service runs the \
             local Stripe emulator, which takes any `sk_` key and whose demo signs in anyone, so \
             it serves loopback only. Set HOST=127.0.0.1, or STRIPE_SECRET_KEY to use Stripe, or \
             EMULATOR_ALLOW_PUBLIC=true to open it to everyone who can reach {address}"
        );
        // An open demo, as asked: the emulator already lets anyone act as anyone, so
        // the development secrets put nothing more at risk.
        return Ok(());
    }
    let defaults = settings.development_defaults();
    let (is, their, defaults_are) = match defaults.len() {
        1 => ("is", "its", "default is"),
        _ => ("are", "their", "defaults are"),
    };
    anyhow::ensure!(
        defaults.is_empty(),
        "refusing to listen on {address}: {names} {is} unset, and {their} development \
         {defaults_are} published in this source (anyone could sign a session or a webhook \
         with them), so they serve loopback only. Set {names} (`openssl rand -hex 32` for \
         AUTH_JWT_SECRET, Stripe's `whsec_…` for STRIPE_WEBHOOK_SECRET), or HOST=127.0.0.1",
        names = defaults.join(" and "),
    );
    Ok(())
}
