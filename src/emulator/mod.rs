//! A stateful, in-process Stripe emulator for a zero-config local run: when
//! `STRIPE_SECRET_KEY` is unset outside production, the service mounts it at
//! `/stripe-emulator/` on its own port and points its Stripe client there.
//! It takes any `sk_` key and its demo signs in anyone, so start-up refuses a
//! non-loopback listener for it unless `EMULATOR_ALLOW_PUBLIC=true`.
//! It is compiled only with the `emulator` cargo feature (on by default);
//! production builds (`--no-default-features`) carry none of it.
//!
//! [`Mounted`] is all the service sees of it. Inside, one module per job:
//! - [`model`]: the emulated account's objects (customers, subscriptions,
//!   seeded products and prices, invoices, portal sessions, the account's
//!   settings);
//! - [`store`]: the account kept in Postgres, in the emulator's own schema
//!   `stripe_emulator` of the service's database (created by the emulator
//!   when it starts; not a migration, production builds have no emulator),
//!   so it survives a restart and every instance on that database shares
//!   one account and one test clock; `billing-portal emulator-reset` ([`reset`])
//!   empties it;
//! - [`account`]: the operations on them, shared by the API and the portal,
//!   each recording the events Stripe would send; [`objects`] renders them
//!   in Stripe's JSON shapes;
//! - [`entitlements`]: product features and each customer's active
//!   entitlements, with the summary event Stripe sends when they change;
//! - [`billing`]: what time does to them (renewals, dunning, test clocks);
//! - [`api`]: Stripe's wire format under `/stripe-emulator/v1/` (form-encoded
//!   requests, Stripe error objects, `Idempotency-Key`);
//! - [`portal`]: the hosted Customer Portal pages and invoice PDFs, and the
//!   hosted checkout page at a Checkout Session's `url`;
//! - [`delivery`]: every event, signed, to the service's real
//!   `/webhooks/stripe`, retried until acknowledged;
//! - [`demo`]: demo sign-in (the demo user subscribes through the page's
//!   Checkout, as any user does).
//!
//! The service's own code path does the sync; nothing is shortcut.
//!
//! **Where the account lives.** Each operation locks the account's row,
//! brings this instance's copy up to date (reading only what changed), runs,
//! and writes the document back in the same transaction: operations of all
//! instances take turns, and each sees the last one's result at once. The
//! database work goes to the blocking thread pool, as all of the service's
//! does, with the service's timeouts (`DATABASE_CONNECT_TIMEOUT_SECS`,
//! `DATABASE_STATEMENT_TIMEOUT_MS`) on a pool of its own (two connections);
//! the operation itself is plain computation on the copy, on the worker, so
//! the handlers keep borrowing their request. When Postgres does not answer,
//! the API says so as Stripe does (503 `api_error`, worth a retry) and the
//! portal with a page. The test clock's offset is stored with the account and
//! restored at start-up, before the service reads its billing clock; an
//! instance whose clock another one advanced catches up at its next
//! operation. Deliveries pending when a process stops are lost, as to an
//! endpoint that is down: the events stay listed by `GET /v1/events`, where
//! the service's start-up catch-up finds them.
//!
//! What it reproduces of real Stripe, because a fake that is kinder than Stripe
//! is a test the service passes for nothing (see `shared/stripe/BEHAVIOUR.md`):
//! - **Time.** Every stamp comes from the shared virtual [`Clock`]; a test
//!   clock advance ([`billing`]) runs renewals, payment retries, scheduled
//!   cancellations, resumptions and expiries in chronological order, each
//!   event stamped with the virtual second it happened at. Webhook signatures
//!   alone use the wall clock, as Stripe's do.
//! - **A new subscription** is created `incomplete` and turns `active` in the
//!   same second when its first invoice is paid; with a failing card it stays
//!   `incomplete` and expires after 23 hours.
//! - **Renewals** charge the customer's card an hour after the period ends;
//!   a failure makes the subscription `past_due`, Smart Retries try again
//!   within `retry_days`, and the account's dunning setting decides what the
//!   last failure does.
//! - **Billing modes**: new subscriptions are `flexible` (the default since
//!   API version 2025-09-30.clover), where the portal's "cancel at period end"
//!   sets `cancel_at` and leaves `cancel_at_period_end` false.
//! - **Pause collection**, and **delivery in no guaranteed order**.
//! - **Idempotency** (docs.stripe.com/api/idempotent_requests): a POST's
//!   `Idempotency-Key` saves its first answer once the endpoint began
//!   executing, 5xx included, and replays it for 24 hours of real time with
//!   `Idempotent-Replayed: true`; a refusal before execution (an
//!   `invalid_request_error`: a parameter check or an unknown object) saves
//!   nothing, so a retry runs again; the key with other parameters is a 400
//!   `idempotency_error`; a request arriving while another one with its key
//!   executes gets 409 `idempotency_key_in_use` (this instance's requests
//!   only: see [`account`]).
//! - **Checkout** (docs.stripe.com/api/checkout/sessions): `mode=subscription`
//!   sessions for an existing customer and one price, in Stripe's shape
//!   (`status` `open`/`complete`/`expired` after `expires_at`, 24 hours by
//!   default; `payment_status`; `subscription`, expanded on
//!   `expand[]=subscription`), whose `url` is the hosted checkout page
//!   `/stripe-emulator/c/pay/{id}`: plain HTML forms, test cards as Stripe
//!   documents them (4242… pays, 4000 0000 0000 0002 is declined, 4000 0027
//!   6000 3184 asks for 3-D Secure), paying as the test helper below does,
//!   then on to `success_url` with `{CHECKOUT_SESSION_ID}` filled in. A paid
//!   session answers again with that redirect: a double submit buys once.
//!   A test clock advance past `expires_at` sends `checkout.session.expired`.
//!   What it cannot do (another mode, more line items, trials, discounts) is
//!   refused with Stripe's `invalid_request_error`, never ignored.
//! - **The catalogue**: the seeded products and prices are made before the
//!   account's first customer, whose creation also sends their
//!   `product.created` and `price.created`; `GET /v1/prices/{id}` expands
//!   `product` on `expand[]=product`, as Stripe does.
//!
//! Test cards (docs.stripe.com/testing): 4242 4242 4242 4242 (`tok_visa`)
//! succeeds; 4000 0000 0000 0341 (`tok_chargeCustomerFail`) attaches to the
//! customer but every charge fails; 4000 0000 0000 0002 (`tok_chargeDeclined`)
//! is declined when attached. A customer with no card on file is charged as if
//! it had 4242 4242 4242 4242, so API-created subscriptions need no card.
//!
//! Emulator-only endpoints (not Stripe APIs), for tests and the demo:
//! - `POST /stripe-emulator/v1/test_helpers/checkout/sessions/{id}/complete`
//!   pays an open Checkout Session (`POST /v1/checkout/sessions`,
//!   `mode=subscription`) as its customer would on the hosted page, with the
//!   card on file.
//! - `POST /stripe-emulator/v1/test_helpers/account_settings` with any of
//!   `dunning=unpaid|canceled|past_due` (what the last failed retry does;
//!   default `canceled`, Stripe's default), `retry_days` (1–28, default 14,
//!   Stripe's default retry window) and `delivery_order=shuffled|in_order|
//!   reverse` (the arrival order of one operation's events; default
//!   `shuffled`) and `deliveries=on|off` (off: events are created and listed
//!   by `GET /v1/events` but never sent, as to an endpoint Stripe cannot
//!   reach; default `on`) and `events_api=available|unavailable`
//!   (unavailable: `GET /v1/events` answers 503 `api_error`, as during a
//!   Stripe incident) and `fail_next_post=/v1/<path>` (a one-shot fault: the
//!   next POST to that path answers 500 `api_error` "An unknown error
//!   occurred", a failure after its endpoint began executing, changing
//!   nothing, saved under its `Idempotency-Key` and replayed for 24 hours;
//!   empty clears it) and `latency_ms` (0–10000, default 0: every API
//!   answer but this endpoint's is held that long while its request
//!   executes, its key in flight, the account not locked meanwhile, so two
//!   requests with one key sent together meet). Answers the settings.
//! - Stripe's own `POST /v1/test_helpers/test_clocks/{id}/advance`
//!   (`frozen_time=<unix secs>`) drives the one account-wide clock, whatever
//!   the id.
//!
//! Objects are rendered from Stripe's own example objects
//! (`fixtures/*.json`, from stripe/openapi `fixtures3.json`, MIT licence) so
//! async-stripe's strict types parse them.

mod account;
mod api;
mod billing;
mod delivery;
mod demo;
mod entitlements;
mod model;
mod objects;
mod portal;
mod store;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use actix_web::web;
use log::{info, warn};
use secrecy::{ExposeSecret, SecretString};

use crate::clock::Clock;
use crate::config::Settings;
use account::Emulator;

pub use store::{has_account, reset, Cleared, SCHEMA};

/// The key the service's Stripe client and the demo send: the emulator
/// takes any `sk_` key.
const API_KEY: &str = "sk_test_emulator";

/// What follows the Stripe prefix of every id the emulator makes
/// (`cus_emu…`, `sub_emu…`).
const ID_MARK: &str = "emu";

/// How every customer id the emulator makes starts (so a person can tell
/// them from Stripe's; `emulator-reset` goes by the ids the account holds).
pub const CUSTOMER_ID_PREFIX: &str = "cus_emu";

/// The emulator as the service mounts it on its own port.
pub(crate) struct Mounted {
    emulator: Arc<Emulator>,
    /// The API base on loopback, for the service's own Stripe client and the
    /// demo: it never depends on how users reach the service.
    local_api_base: String,
    demo: web::Data<demo::Demo>,
    /// The app's billing page, for the portal's pages that have no session to return from.
    app_page: web::Data<portal::AppPage>,
}

impl Mounted {
    /// The emulator when no `STRIPE_SECRET_KEY` is set outside production
    /// (configuration already refused a missing key in production), else
    /// `None`. It shares the service's billing `clock`, which takes up the
    /// stored test clock here, before the service uses it, and delivers its
    /// events to the service's webhook endpoint on `address`, the listener's
    /// (start-up already refused a non-loopback one unless
    /// `EMULATOR_ALLOW_PUBLIC=true`). Its account is read from Postgres
    /// (creating the database and the emulator's schema when missing).
    pub(crate) async fn start(
        settings: &Settings,
        address: SocketAddr,
        clock: &Clock,
    ) -> anyhow::Result<Option<Self>> {
        if !settings.runs_emulator() {
            return Ok(None);
        }
        let port = address.port();
        let local = format!("http://{}", reachable(address));
        let public = public_origin(&settings.app_origin(), port).unwrap_or(local.clone());
        let database = settings.database.clone();
        let (store, snapshot) = web::block(move || store::Store::open(&database))
            .await
            .map_err(|e| anyhow::anyhow!("the emulator's start-up did not finish: {e}"))??;
        let emulator = Emulator::stored(
            format!("{public}/stripe-emulator"),
            format!("{local}/webhooks/stripe"),
            settings.stripe.webhook_secrets[0]
                .expose_secret()
                .to_string(),
            clock.clone(),
            store,
            snapshot,
        )?;
        warn!(
            "*** STRIPE_SECRET_KEY is unset: using the LOCAL STRIPE EMULATOR at {public}/stripe-emulator \
             (no real Stripe calls; demo sign-in enabled). Set STRIPE_SECRET_KEY to use Stripe. ***"
        );
        if address.ip().to_canonical().is_loopback() {
            warn!(
                "the emulator and demo sign-in listen on loopback only ({address}): \
                 EMULATOR_ALLOW_PUBLIC=true with a non-loopback HOST would open them to others"
            );
        } else {
            warn!(
                "*** EMULATOR_ALLOW_PUBLIC=true: the emulator and demo sign-in are open to anyone \
                 who can reach {address}: any `sk_` key lists and cancels every subscription ***"
            );
        }
        let (customers, subscriptions) = emulator
            .read(|state| (state.customers.len(), state.subscriptions.len()))
            .await?;
        let days_ahead = clock.offset_secs() / 86_400;
        info!(
            "the emulator's account is kept in Postgres (schema {SCHEMA}): {customers} \
             customer(s), {subscriptions} subscription(s){}; `billing-portal emulator-reset` \
             starts the demo over",
            if clock.offset_secs() > 0 {
                format!(", its test clock {days_ahead} days ahead")
            } else {
                String::new()
            }
        );
        let local_api_base = format!("{local}/stripe-emulator");
        let demo = demo::Demo::new(settings.auth_jwt_secret.clone());
        Ok(Some(Self {
            emulator,
            local_api_base,
            demo: web::Data::new(demo),
            app_page: web::Data::new(portal::AppPage(settings.portal_return_url())),
        }))
    }

    /// The key and API base the service's Stripe client uses.
    pub(crate) fn stripe_api(&self) -> (SecretString, Option<String>) {
        (
            SecretString::from(API_KEY),
            Some(self.local_api_base.clone()),
        )
    }

    /// Registers the emulator's routes (`/stripe-emulator/…`) and the demo's
    /// (`/demo/…`) on one worker's app.
    pub(crate) fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::new(self.emulator.clone()));
        cfg.service(
            web::scope("/stripe-emulator")
                .app_data(self.app_page.clone())
                .route("/v1/{path:.*}", web::route().to(api::handle))
                .configure(portal::configure),
        );
        demo::configure(cfg, self.demo.clone());
    }
}

/// Where this process reaches its own listener: the address itself, or
/// loopback for a wildcard one (`0.0.0.0`, `::`).
fn reachable(address: SocketAddr) -> SocketAddr {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, address.port())
}

/// Portal links should open on the origin the user browses (so
/// `APP_BASE_URL` when it is this very server on localhost), else loopback.
fn public_origin(app_origin: &str, port: u16) -> Option<String> {
    let url = url::Url::parse(app_origin).ok()?;
    let local = matches!(url.host_str(), Some("localhost" | "127.0.0.1"));
    (local && url.port_or_known_default() == Some(port)).then(|| app_origin.to_string())
}
