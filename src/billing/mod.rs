//! The use cases: everything the service does, in terms of users, customers
//! and subscriptions, independent of HTTP. Handlers and CLI commands call
//! these; these call the infrastructure ([`crate::db`], [`crate::stripe`]).
//!
//! - [`status`]: subscription statuses and the paid rule;
//! - [`summary`]: what a user's billing status is ([`summary::of_user`]);
//! - [`status_cache`]: those answers kept in memory, dropped by Postgres
//!   notifications;
//! - [`plans`]: the names and prices of plans (stored from price and product
//!   events, read from Stripe once when missing);
//! - [`customers`]: the user's one Stripe customer;
//! - [`portal`]: portal sessions and their deep-link flows;
//! - [`entitlements`]: each customer's features (Stripe Entitlements), read
//!   in full from Stripe and stored by customer;
//! - [`checkout`]: the plans offered (`BILLING_PLANS`), Checkout Sessions for
//!   unpaid users, and a session applied when the buyer comes back;
//! - [`webhook`]: receiving one verified Stripe event;
//! - [`sync`]: applying Stripe's subscription state to Postgres, in order;
//! - [`refetch`]: reading it back from the API without going backwards;
//! - [`reference`]: signed `client_reference_id`s, which link a checkout's
//!   customer to a user;
//! - [`resync`]: repairing every customer (the `sync` command);
//! - [`refresh`]: re-reading one user's subscriptions from Stripe when they
//!   come back from the portal (`POST /billing/refresh`);
//! - [`sweep`]: ending grace periods on time;
//! - [`catchup`]: applying the events no delivery brought, from the Events API;
//! - [`drift`]: re-reading paid subscriptions whose renewal never arrived;
//! - [`healing`]: running those two at start-up and periodically;
//! - [`webhook_health`]: whether deliveries still verify (the age of the last
//!   verified one, the once-logged alarm when none has for ten minutes).
//!
//! [`Billing`] is what they share; `crate::context::build` makes it from the
//! settings, for the server, every command and every test alike.

pub mod catchup;
pub mod checkout;
pub mod customers;
pub mod drift;
pub mod entitlements;
pub mod healing;
pub mod plans;
pub mod portal;
pub mod reference;
pub mod refetch;
pub mod refresh;
pub mod resync;
pub mod status;
pub mod status_cache;
pub mod summary;
pub mod sweep;
pub mod sync;
pub mod turns;
pub mod webhook;
pub mod webhook_health;

use std::sync::Arc;

use crate::clock::Clock;
use crate::db::{DbError, PgPool};
use crate::metrics::Metrics;
use crate::stripe::budget::ReadBudget;
use crate::stripe::client::{StripeFailure, StripeGateway, StripeMode};

pub use status::PaidRule;

/// The shared context of every use case. Cloning is cheap (handles).
#[derive(Clone)]
pub struct Billing {
    pub pool: PgPool,
    /// The lock pool (`DATABASE_LOCK_POOL_SIZE`): connections for work that
    /// holds a lock while it waits on Stripe, so that `pool` never does.
    pub locks: PgPool,
    /// The customer creations in flight in this instance.
    pub creations: customers::Creations,
    /// The create-checkout clicks in flight in this instance, one at a time
    /// per user.
    pub checkouts: turns::Turns<()>,
    /// None only without a key and without the emulator.
    pub stripe: Option<StripeGateway>,
    pub rule: PaidRule,
    /// The billing clock; the emulator's when it runs (see [`crate::clock`]).
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    /// Whether this instance's webhook deliveries still verify.
    pub webhook_health: Arc<webhook_health::WebhookHealth>,
    /// Where the portal sends the user back: the Billing Settings page,
    /// marked `from=portal` so that it re-reads Stripe ([`refresh`]).
    pub portal_return_url: String,
    /// Where a checkout sends the buyer back (its `success_url`): the same
    /// page, marked `from=checkout` and carrying Stripe's
    /// `{CHECKOUT_SESSION_ID}` placeholder, so the page can have that session
    /// applied ([`checkout::apply_on_return`]).
    pub checkout_return_url: String,
    /// Where an abandoned checkout sends the buyer (its `cancel_url`): the page.
    pub checkout_cancel_url: String,
    /// The plans offered (`BILLING_PLANS`) and what they resolved to.
    pub offer: Arc<checkout::Offer>,
    /// How long to wait for a user's customer lock or a customer's fetch
    /// lock: the holder may be waiting on Stripe for up to its client timeout.
    pub lock_timeout_ms: u128,
    /// `STRIPE_WEBHOOK_REFETCH`: apply subscription events with the state
    /// re-read from Stripe instead of the payload's copy.
    pub webhook_refetch: bool,
    /// `STRIPE_WEBHOOK_TOLERANCE_SECS`: an event's `created` further than
    /// this in the future is ordered as if it were now.
    pub future_tolerance_secs: i64,
    /// The mode of `STRIPE_SECRET_KEY` (test for the emulator): an event of
    /// the other mode is recorded and changes nothing.
    pub stripe_mode: StripeMode,
    /// What `client_reference_id`s are signed with (`CLIENT_REFERENCE_SECRET`,
    /// else derived from `AUTH_JWT_SECRET`).
    pub client_reference: reference::ReferenceKey,
    /// What the catch-up, the drift check and the reads of missing prices
    /// may spend on Stripe reads.
    pub read_budget: Arc<ReadBudget>,
    /// How far back a catch-up lists: Stripe's 30 days, or
    /// `EVENT_RETENTION_DAYS` if shorter (older ids may have been pruned).
    pub catchup_reach: chrono::Duration,
    /// This instance's reads of missing prices (see [`plans`]).
    pub plan_reads: Arc<plans::Reads>,
    /// This instance's background reads of customers' entitlements (see
    /// [`entitlements`]).
    pub entitlement_reads: Arc<entitlements::Reads>,
    /// This instance's status answers in memory (`STATUS_CACHE_ENTRIES`);
    /// `None` when off, and for commands (only a server keeps one).
    pub status_cache: Option<Arc<status_cache::StatusCache>>,
}

impl Billing {
    pub fn stripe(&self) -> Result<&StripeGateway, Error> {
        self.stripe.as_ref().ok_or(Error::StripeNotConfigured)
    }

    /// After this instance changed `account`'s status: its next status read
    /// is the change's, here at once (the notification reaches the other
    /// instances).
    pub(crate) fn forget_status(&self, account: &crate::ids::AccountId) {
        if let Some(cache) = &self.status_cache {
            cache.forget(account.as_str());
        }
    }

    /// After an event's transaction: what it changed, dropped here at once.
    pub(crate) fn touched(&self, touched: &sync::Touched) {
        match touched {
            sync::Touched::Nothing => {}
            sync::Touched::Account(account) => self.forget_status(account),
            sync::Touched::Unknown => self.wrote_statuses(),
        }
    }

    /// After this instance changed accounts it does not name (a catch-up, a
    /// customer deleted, a checkout linked): see [`status_cache::StatusCache::wrote`].
    pub(crate) fn wrote_statuses(&self) {
        if let Some(cache) = &self.status_cache {
            cache.wrote();
        }
    }

    /// [`Billing::lock_timeout_ms`] as a duration.
    pub(crate) fn lock_wait(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::try_from(self.lock_timeout_ms).unwrap_or(u64::MAX))
    }
}

/// Why a use case failed, in its own terms; the HTTP layer decides what each
/// means on the wire.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Stripe is not configured: set STRIPE_SECRET_KEY")]
    StripeNotConfigured,
    /// A flow that acts on a subscription, for a user without a current one.
    #[error("no current subscription to change or cancel")]
    NoSubscription,
    /// A cancel flow for a subscription already set to end.
    #[error("the subscription is already set to end")]
    AlreadyCanceling,
    /// A refresh sooner than [`refresh::MIN_INTERVAL_SECS`] after the
    /// user's last Stripe read; the next may come in `retry_after_secs`.
    #[error("the subscriptions were read from Stripe moments ago; retry in {retry_after_secs} s")]
    RefreshTooSoon { retry_after_secs: u64 },
    /// A customer would be created with an email Stripe refuses; says why.
    #[error("the email is not one Stripe accepts ({0})")]
    InvalidEmail(&'static str),
    /// A checkout for a plan that is not offered (not in `BILLING_PLANS`, or
    /// not a price Stripe sells).
    #[error("this plan is not offered")]
    UnknownPlan,
    /// A checkout for a user who has a live subscription.
    #[error("the user already has a subscription")]
    AlreadySubscribed,
    /// A checkout session on return that is not for the user's customer (or
    /// that Stripe does not know).
    #[error("the checkout session is not the signed-in user's")]
    CheckoutNotYours,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Stripe(#[from] StripeFailure),
}
