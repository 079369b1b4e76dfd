//! [`Application::build`]: the HTTP server, wired together, used by `main`
//! and by every test. It binds the listener (port 0 in tests), starts the
//! emulator when there is no Stripe key, builds the shared context once
//! ([`crate::context::build`]) and registers it outside the App factory so
//! all workers share one pool. Outside production it keeps what is safe only
//! on a developer's machine (the emulator, development secrets) to loopback.
//!
//! The server is what actix-web's `HttpServer` assembles (actix-server
//! workers, graceful shutdown on SIGTERM within `SHUTDOWN_TIMEOUT_SECS`,
//! keep-alive, a cap on open connections), put together here so that each
//! connection's stream can be wrapped in [`JsonErrors`]: the errors actix-http
//! answers before routing get JSON bodies like every other error.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_http::{HttpService, KeepAlive, Request, Response};
use actix_rt::net::TcpStream;
use actix_server::{GracefulShutdownSignal, Server, ServerBuilder};
use actix_service::{
    fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{AppConfig, Service};
use actix_web::{web, App};
use anyhow::Context;
use log::{info, warn};
use secrecy::ExposeSecret;

use crate::billing::status_cache::StatusCache;
use crate::billing::{checkout, healing, sweep};
use crate::clock::Clock;
use crate::config::{AppEnv, Settings};
use crate::context::{self, StripeTarget};
use crate::http::auth::JwtVerifier;
use crate::http::edge::access_log;
use crate::http::edge::body_timeout::BodyTimeout;
use crate::http::edge::raw_errors::{self, JsonErrors};
use crate::http::{self, request_id, AppState, MetricsAccess};
use crate::stripe::signature::WebhookVerifier;
#[cfg(feature = "emulator")]
use std::sync::Arc;

/// File descriptors kept aside from connections: the database pool, the Stripe
/// client's sockets, the listeners, log and files.
const RESERVED_FDS: u64 = 128;

/// How long a connection may take to send its request (see `HttpSettings`).
#[derive(Debug, Clone, Copy)]
struct Limits {
    head_timeout: Duration,
    body_timeout: Duration,
}

pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    pub async fn build(mut settings: Settings) -> anyhow::Result<Self> {
        for warning in settings.warnings() {
            warn!("{warning}");
        }
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .with_context(|| format!("cannot listen on {}:{}", settings.host, settings.port))?;
        let address = listener.local_addr()?;
        // Without APP_BASE_URL, "Return to app" comes back to the port bound here.
        if let Some(warning) = settings.listening_on(address) {
            warn!("{warning}");
        }
        refuse_public_development_defaults(&settings, address)?;
        let port = address.port();
        let clock = Clock::system();

        // No key outside production: the in-process Stripe emulator, on this
        // very port. Configuration already refused a missing key in
        // production, and everywhere in a build without the emulator.
        #[cfg(feature = "emulator")]
        let emulator = crate::emulator::Mounted::start(&settings, address, &clock)
            .await?
            .map(Arc::new);
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
        let mut billing = context::build(&settings, target, clock).await?;
        billing.status_cache = StatusCache::start(
            settings.status_cache_entries,
            crate::db::listen_url(&settings.database),
            billing.metrics.clone(),
        );
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
            production: settings.app_env == AppEnv::Production,
            manager_roles: settings.billing_manager_roles.clone(),
        });
        sweep::spawn(state.billing.clone());
        healing::spawn(state.billing.clone(), settings.stripe.catchup_interval);
        checkout::resolve_in_background(&state.billing);
        let metrics = state.billing.metrics.clone();
        let jwt = web::Data::new(JwtVerifier::new(
            &settings.auth_jwt_secret,
            &settings.billing_manager_roles,
        ));

        let fd_limit = raise_fd_limit();
        let max_connections = connection_cap(&settings, fd_limit);
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let limits = Limits {
            head_timeout: settings.http.head_timeout,
            body_timeout: settings.http.body_timeout,
        };
        let metrics_listener = settings
            .metrics
            .addr
            .map(|addr| {
                TcpListener::bind(addr)
                    .with_context(|| format!("cannot listen on {addr} (METRICS_ADDR)"))
            })
            .transpose()?;
        let token = settings.metrics.token.as_ref().map(MetricsAccess::token);
        let main_metrics = match (&metrics_listener, &token) {
            (Some(_), _) => MetricsAccess::NotServed,
            (None, Some(token)) => token.clone(),
            (None, None) if settings.app_env == AppEnv::Production => {
                warn!("/metrics is not served: set METRICS_TOKEN or METRICS_ADDR to serve it");
                MetricsAccess::NotServed
            }
            (None, None) => MetricsAccess::Open,
        };

        // The App factory of each listener: the main one (every route, and the emulator's) or
        // the metrics one (`METRICS_ADDR`).
        let app = move |main: bool, access: MetricsAccess| {
            let state = state.clone();
            let jwt = jwt.clone();
            let metrics = metrics.clone();
            #[cfg(feature = "emulator")]
            let emulator = emulator.clone();
            move || {
                #[cfg(feature = "emulator")]
                let emulator = emulator.clone();
                let metrics = metrics.clone();
                App::new()
                    .wrap(http::json_errors())
                    .wrap(BodyTimeout::new(limits.body_timeout))
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
                    .wrap(access_log::logger())
                    .wrap_fn(raw_errors::track_requests)
                    .app_data(state.clone())
                    .app_data(jwt.clone())
                    .app_data(web::Data::new(access.clone()))
                    .configure(move |cfg| {
                        if !main {
                            return http::configure_metrics_listener(cfg);
                        }
                        #[cfg(feature = "emulator")]
                        if let Some(emulator) = emulator {
                            emulator.configure(cfg);
                        }
                        http::configure(cfg);
                    })
            }
        };

        let mut builder = actix_server::Server::build()
            .workers(workers)
            // actix counts connections per worker.
            .max_concurrent_connections((max_connections / workers).max(1))
            // SIGTERM and Ctrl-C: stop accepting, let in-flight requests finish
            // (a webhook either commits or its caller sees no 2xx), then stop.
            .shutdown_timeout(settings.shutdown_timeout.as_secs());
        let shutdown = builder.graceful_shutdown_signal();
        builder = listen(
            builder,
            "billing-portal",
            listener,
            app(true, main_metrics),
            limits,
            shutdown.clone(),
        )?;
        let metrics_addr = match metrics_listener {
            Some(listener) => {
                let addr = listener.local_addr()?;
                let access = token.unwrap_or(MetricsAccess::Open);
                builder = listen(
                    builder,
                    "metrics",
                    listener,
                    app(false, access),
                    limits,
                    shutdown,
                )?;
                Some(addr)
            }
            None => None,
        };
        let server = builder.run();
        info!(
            "listening on http://{}:{port} ({} environment); at most {max_connections} \
             connections, request heads within {}s, bodies within {}s",
            settings.host,
            settings.app_env.as_str(),
            limits.head_timeout.as_secs(),
            limits.body_timeout.as_secs(),
        );
        if let Some(addr) = metrics_addr {
            info!("/metrics on http://{addr}/metrics");
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

/// Adds a listener serving `app` over HTTP/1 to `builder`, with the settings
/// `HttpServer` would give it, each connection wrapped in [`JsonErrors`].
fn listen<F, I, S, B>(
    builder: ServerBuilder,
    name: &str,
    listener: TcpListener,
    app: F,
    limits: Limits,
    shutdown: GracefulShutdownSignal,
) -> std::io::Result<ServerBuilder>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig, InitError = ()> + 'static,
    S::Error: Into<Response<BoxBody>> + 'static,
    S::Response: Into<Response<B>> + 'static,
    B: MessageBody + 'static,
{
    let addr = listener.local_addr()?;
    builder.listen(name, listener, move || {
        let shutdown = shutdown.clone();
        let http = HttpService::build()
            // In-flight keep-alive connections close after their current answer
            // once a graceful shutdown starts.
            .graceful_shutdown_signal(move || {
                let shutdown = shutdown.clone();
                async move { shutdown.notified().await }
            })
            .keep_alive(KeepAlive::default())
            .client_request_timeout(limits.head_timeout)
            .client_disconnect_timeout(Duration::from_secs(1))
            .h1_allow_half_closed(true)
            .local_addr(addr)
            // The App reports the requests it takes to the connection's stream.
            .on_connect_ext(|io: &JsonErrors<TcpStream>, ext| {
                ext.insert(io.requests());
            })
            .h1(map_config(app(), move |()| {
                // What HttpServer passes: plain HTTP, the listener's address as
                // the host of a request that names none.
                AppConfig::__priv_test_new(false, addr.to_string(), addr)
            }));
        fn_service(move |io: TcpStream| {
            let peer = io.peer_addr().ok();
            std::future::ready(Ok((JsonErrors::new(io, limits.head_timeout), peer)))
        })
        .and_then(http)
    })
}

/// Raises the soft limit on open files to the hard one, so that connections,
/// not descriptors, are what runs out first; returns the limit in force.
fn raise_fd_limit() -> Option<u64> {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?.0;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(now) if now > before => {
            info!("file descriptors: soft limit raised from {before} to {now}");
            Some(now)
        }
        Ok(now) => {
            info!("file descriptors: limit {now}");
            Some(now)
        }
        Err(e) => {
            warn!("file descriptors: cannot raise the soft limit {before}: {e}");
            Some(before)
        }
    }
}

/// `HTTP_MAX_CONNECTIONS`, lowered when the descriptor limit could not hold
/// that many connections beside what the service itself keeps open.
fn connection_cap(settings: &Settings, fd_limit: Option<u64>) -> usize {
    let wanted = settings.http.max_connections;
    let Some(limit) = fd_limit else {
        return wanted;
    };
    let room = limit
        .saturating_sub(
            RESERVED_FDS
                + u64::from(settings.database.pool_size)
                + u64::from(settings.database.lock_pool_size),
        )
        .max(1);
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    if room < wanted {
        warn!(
            "HTTP_MAX_CONNECTIONS={wanted} does not fit the file-descriptor limit {limit}: \
             accepting at most {room} connections (raise the hard limit, e.g. `ulimit -Hn`)"
        );
        room
    } else {
        wanted
    }
}
