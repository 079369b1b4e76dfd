//! Subscribing from the Billing Settings page (issue 19): the plans the app
//! offers (`BILLING_PLANS`), a Stripe Checkout Session for an unpaid user
//! ([`create`]), and the session applied the moment the buyer comes back
//! ([`apply_on_return`]), before (or without) its webhooks.
//!
//! - **Plans.** Each `BILLING_PLANS` entry, a price id or a lookup key, is
//!   resolved from Stripe at start-up, in the background ([`resolve_in_background`],
//!   never on start-up's path), into the catalogue tables the status's plan
//!   names come from (`db::catalogue`), which `price.*`/`product.*` webhooks
//!   keep current. A price Stripe does not have, or no longer sells
//!   (`active: false`), is a start-up warning naming it, and is not offered.
//! - **Checkout.** Refused before any Stripe call: a plan not offered, a user
//!   with a live subscription. The customer is the user's one
//!   ([`customers::ensure`], as the portal does). Under an advisory lock on
//!   the user (on the lock pool, as the customer's creation) the user's
//!   recorded open session ([`accounts::OpenCheckout`]) settles what happens:
//!   the same plan gets that session back (double clicks, two tabs, two
//!   instances: one session); another plan expires it at Stripe first
//!   (docs.stripe.com/api/checkout/sessions/expire), so two payable sessions
//!   can never become two subscriptions; one that was paid meanwhile is
//!   applied and the click answers `already_subscribed`. Only then is a new
//!   session created and recorded. Its request carries a fresh
//!   `Idempotency-Key` per click (the transport's), so a 500 Stripe saved
//!   never replays to the next click.
//! - **Return.** Only the user's recorded session is applied (any other id is
//!   refused without a Stripe call), at most once per refresh interval: it
//!   is read from Stripe with its subscription expanded under the customer's
//!   fetch lock, refused unless its customer is the user's, and its
//!   subscription stored as fetched state through the same ordering rules as
//!   webhooks ([`apply_subscription`]).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use chrono::TimeDelta;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use log::{info, warn};

use super::customers::{self, Member};
use super::plans::{self, Plan};
use super::refetch::FetchLock;
use super::refresh;
use super::summary::{self, BillingSummary};
use super::sync::apply_subscription;
use super::{Billing, Error};
use crate::db::accounts::RefreshClaim;
use crate::db::catalogue::{Price, Product};
use crate::db::schema::{stripe_prices, stripe_products};
use crate::db::subscriptions::{self, Provenance};
use crate::db::{self, accounts, OpenTransaction};
use crate::ids::{email_problem, CustomerId};
use crate::stripe::client::{
    CheckoutRequest, CheckoutSession, SessionSubscription, StripeFailure, StripeGateway,
};
use crate::stripe::status::SubscriptionStatus;

/// What the emulator offers when `BILLING_PLANS` is unset: its seeded prices,
/// so `cargo run` shows plans.
pub const EMULATOR_PLANS: [&str; 2] = ["price_emu_starter_monthly", "price_emu_pro_monthly"];

/// How long `GET /billing/plans` waits, just after start-up, for the first
/// resolution of `BILLING_PLANS` (a few reads of Stripe's).
const FIRST_PASS_WAIT: Duration = Duration::from_secs(5);

/// How long the background resolution waits before trying again the entries
/// Stripe failed to answer (not those it said do not exist).
const RETRY_EVERY: Duration = Duration::from_secs(60);

/// The plans offered: the `BILLING_PLANS` entries in order, and the price
/// each resolved to (only those Stripe has and sells).
#[derive(Debug)]
pub struct Offer {
    entries: Vec<String>,
    resolved: RwLock<HashMap<String, String>>,
    /// Whether the start-up resolution has tried every entry once: until
    /// then, an empty list would wrongly tell the page nothing is offered.
    first_pass: tokio::sync::watch::Sender<bool>,
}

impl Offer {
    pub fn new(entries: Vec<String>) -> Self {
        Self {
            first_pass: tokio::sync::watch::Sender::new(entries.is_empty()),
            entries,
            resolved: RwLock::default(),
        }
    }

    /// Waits, at most `limit`, until every entry has been tried once.
    async fn first_pass_done(&self, limit: Duration) {
        let mut done = self.first_pass.subscribe();
        let _ = tokio::time::timeout(limit, done.wait_for(|done| *done)).await;
    }

    /// The price `entry` resolved to, when it is offered.
    fn price_of(&self, entry: &str) -> Option<String> {
        let resolved = self.resolved.read().unwrap_or_else(|e| e.into_inner());
        resolved.get(entry).cloned()
    }

    /// The offered entries and their prices, in `BILLING_PLANS` order.
    fn offered(&self) -> Vec<(String, String)> {
        let resolved = self.resolved.read().unwrap_or_else(|e| e.into_inner());
        self.entries
            .iter()
            .filter_map(|e| resolved.get(e).map(|p| (e.clone(), p.clone())))
            .collect()
    }

    fn resolve(&self, entry: &str, price: &str) {
        let mut resolved = self.resolved.write().unwrap_or_else(|e| e.into_inner());
        resolved.insert(entry.to_owned(), price.to_owned());
    }
}

/// Resolves every `BILLING_PLANS` entry from Stripe, in a task of its own;
/// returns at once. Entries Stripe failed to answer are tried again every
/// [`RETRY_EVERY`] until each is resolved or refused.
pub fn resolve_in_background(billing: &Billing) {
    if billing.offer.entries.is_empty() || billing.stripe.is_none() {
        billing.offer.first_pass.send_replace(true);
        return;
    }
    let billing = billing.clone();
    tokio::spawn(async move {
        let mut pending = billing.offer.entries.clone();
        loop {
            let mut failed = Vec::new();
            for entry in pending {
                if let Err(e) = resolve_one(&billing, &entry).await {
                    warn!(
                        "BILLING_PLANS: could not read `{entry}` from Stripe (tried again in {} s): {e}",
                        RETRY_EVERY.as_secs()
                    );
                    failed.push(entry);
                }
            }
            billing.offer.first_pass.send_replace(true);
            if failed.is_empty() {
                return;
            }
            pending = failed;
            tokio::time::sleep(RETRY_EVERY).await;
        }
    });
}

/// Reads one entry's price and stores it; a price Stripe does not have or no
/// longer sells is warned about and left out.
async fn resolve_one(billing: &Billing, entry: &str) -> Result<(), Error> {
    let stripe = billing.stripe()?;
    billing.read_budget.take().await;
    // Stamped a second before the read began, as `plans::learn` does: an
    // event of that second always wins over the read.
    let started = billing.clock.now().timestamp();
    let started_at = chrono::DateTime::from_timestamp(started - 1, 0).unwrap_or_default();
    let offered = billing
        .read_budget
        .noted(stripe.resolve_offered_price(entry).await)?;
    let Some(offered) = offered else {
        warn!(
            "BILLING_PLANS: Stripe has no price `{entry}` (with this key's mode): it is not offered"
        );
        return Ok(());
    };
    if !offered.price.active || offered.price.deleted {
        warn!(
            "BILLING_PLANS: the price `{entry}` ({}) is inactive in Stripe: it is not offered",
            offered.price.id
        );
        return Ok(());
    }
    // A subscription-mode Checkout sells only recurring prices; a one-time
    // price would be refused by Stripe on every click (docs.stripe.com/api/checkout/sessions/create#create_checkout_session-mode).
    if offered.price.recurring.is_none() {
        warn!(
            "BILLING_PLANS: the price `{entry}` ({}) is not recurring, so Checkout cannot \
             subscribe to it: it is not offered",
            offered.price.id
        );
        return Ok(());
    }
    let price = offered.price;
    let id = price.id.clone();
    db::transaction(&billing.pool, move |conn| {
        plans::store_price(conn, &price, started_at)?;
        if let Some(product) = &price.product {
            plans::store_product(conn, product, started_at)?;
        }
        Ok(())
    })
    .await?;
    billing.offer.resolve(entry, &id);
    info!("BILLING_PLANS: `{entry}` is offered as price {id}");
    Ok(())
}

/// One offered plan: the `BILLING_PLANS` entry that names it, and what it is.
#[derive(Debug, Clone)]
pub(crate) struct OfferedPlan {
    pub(crate) id: String,
    pub(crate) plan: Plan,
}

/// The offered plans, in `BILLING_PLANS` order, read from Postgres: a price
/// deleted or archived since is left out. Just after start-up, waits (at most
/// [`FIRST_PASS_WAIT`]) for the resolution to have tried every entry once.
pub(crate) async fn offered_plans(billing: &Billing) -> Result<Vec<OfferedPlan>, Error> {
    billing.offer.first_pass_done(FIRST_PASS_WAIT).await;
    let offered = billing.offer.offered();
    if offered.is_empty() {
        return Ok(Vec::new());
    }
    let plans = db::run(&billing.pool, move |conn| {
        let mut plans = Vec::new();
        for (entry, price_id) in &offered {
            let Some((price, product)) = stored_price(conn, price_id)? else {
                continue;
            };
            if let Some(plan) = plans::plan_of(Some(&price), product.as_ref()) {
                plans.push(OfferedPlan {
                    id: entry.clone(),
                    plan,
                });
            }
        }
        Ok(plans)
    })
    .await?;
    Ok(plans)
}

/// The stored price `id` with its product, unless it is deleted or archived
/// (`price.updated` with `active: false`).
fn stored_price(
    conn: &mut PgConnection,
    id: &str,
) -> QueryResult<Option<(Price, Option<Product>)>> {
    let Some(price) = stripe_prices::table
        .find(id)
        .select(Price::as_select())
        .first(conn)
        .optional()?
        .filter(|p| !p.deleted && p.active)
    else {
        return Ok(None);
    };
    let product = match &price.product_id {
        Some(product) => stripe_products::table
            .find(product)
            .select(Product::as_select())
            .first(conn)
            .optional()?,
        None => None,
    };
    Ok(Some((price, product)))
}

/// Creates a Checkout Session of `plan` (an offered `BILLING_PLANS` entry) for
/// `user` and answers its URL.
pub(crate) async fn create(
    billing: &Billing,
    user: Member<'_>,
    plan: &str,
) -> Result<String, Error> {
    let price_id = billing.offer.price_of(plan).ok_or(Error::UnknownPlan)?;
    billing.stripe()?;
    let refused = user.email.and_then(email_problem);
    let (id, known, price) = (user.id.clone(), user.known().to_owned(), price_id.clone());
    // One round trip: the user (recorded, as the portal records them), their
    // subscriptions, and whether the price is still sold.
    let (subs, on_sale) = db::run(&billing.pool, move |conn| {
        if refused.is_none() {
            accounts::upsert(conn, &id, known.borrow())?;
        }
        let subs = subscriptions::of_user(conn, &id)?;
        Ok((subs, stored_price(conn, &price)?.is_some()))
    })
    .await?;
    if !on_sale {
        return Err(Error::UnknownPlan);
    }
    if subs
        .iter()
        .any(|s| !SubscriptionStatus::parse(&s.status).is_terminal())
    {
        return Err(Error::AlreadySubscribed);
    }
    let mut customer = customers::ensure(billing, user.clone()).await?;
    let mut replaced = false;
    loop {
        let request = CheckoutRequest {
            customer: &customer,
            price_id: &price_id,
            account: user.id,
            success_url: &billing.checkout_return_url,
            cancel_url: &billing.checkout_cancel_url,
        };
        match create_locked(billing, &request).await {
            Err(Error::Stripe(StripeFailure::NoSuchCustomer)) if !replaced => {
                warn!(
                    "Stripe no longer knows customer {customer} of account {}; creating a new one",
                    user.id
                );
                customer =
                    customers::create(billing, user.id, user.contact(), Some(&customer)).await?;
                replaced = true;
            }
            Err(e) => return Err(e),
            Ok(url) => return Ok(url),
        }
    }
}

/// What the user's recorded session settled before this click.
enum Settled {
    /// The same plan's session, still open: its page.
    Reuse(String),
    /// A new session, to record.
    Created(accounts::OpenCheckout),
    /// A live subscription is stored (`session: None`; `forget`: the
    /// recorded session, expired now, is forgotten), or the recorded session
    /// was paid meanwhile (its id: applied once the lock is let go, and kept
    /// recorded, for its own tab's return and for the next click to re-read).
    Paid {
        session: Option<String>,
        forget: bool,
    },
}

/// The session request under the user's checkout lock: the recorded session
/// settled first, a new one created and recorded only when needed.
async fn create_locked(billing: &Billing, request: &CheckoutRequest<'_>) -> Result<String, Error> {
    // Clicks of one user wait here, holding no connection, for the one ahead.
    let _turn = billing.checkouts.turn(request.account).await;
    let mut tx = OpenTransaction::begin(&billing.locks).await?;
    let (id, lock) = (
        request.account.clone(),
        format!("billing-checkout:{}", request.account),
    );
    let (open, live) = tx
        .run_waiting(billing.lock_wait(), move |conn| {
            diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, $2))")
                .bind::<Text, _>(lock)
                .bind::<BigInt, _>(0)
                .execute(conn)?;
            // Again under the lock: a click that waited for another may find
            // the subscription that one's session became.
            let live = subscriptions::of_user(conn, &id)?
                .iter()
                .any(|s| !SubscriptionStatus::parse(&s.status).is_terminal());
            Ok((accounts::open_checkout(conn, &id)?, live))
        })
        .await?;
    let settled = match (live, open) {
        (true, None) => Ok(Settled::Paid {
            session: None,
            forget: false,
        }),
        // A subscription from elsewhere (the Dashboard, the app's own
        // Checkout): the recorded session must not stay payable.
        (true, Some(open)) => Ok(Settled::Paid {
            session: None,
            forget: expire_quietly(billing, &open.session_id).await,
        }),
        (false, open) => settle_and_create(billing, request, open).await,
    };
    let record = match &settled {
        Ok(Settled::Created(open)) => Some(Some(open.clone())),
        Ok(Settled::Paid { forget: true, .. }) => Some(None),
        Ok(Settled::Reuse(_) | Settled::Paid { forget: false, .. }) | Err(_) => None,
    };
    let id = request.account.clone();
    let ended = match record {
        Some(open) => match tx
            .run(move |conn| accounts::set_open_checkout(conn, &id, open.as_ref()))
            .await
        {
            Ok(()) => tx.commit().await.map_err(Error::from),
            Err(e) => Err(e.into()),
        },
        None => tx.rollback().await.map_err(Error::from),
    };
    match (settled?, ended) {
        (Settled::Reuse(url), _) => Ok(url),
        (Settled::Created(open), Ok(())) => {
            billing.metrics.checkout_sessions.inc();
            info!(
                "created Checkout Session {} for user {} (customer {})",
                open.session_id, request.account, request.customer
            );
            Ok(open.url)
        }
        // Not recorded: the session would be one the next click cannot find
        // (and could not expire); the click fails rather than hand it out.
        (Settled::Created(open), Err(e)) => {
            warn!(
                "Checkout Session {} of user {} could not be recorded ({e}); not handed out",
                open.session_id, request.account
            );
            Err(e)
        }
        (Settled::Paid { session: None, .. }, _) => Err(Error::AlreadySubscribed),
        // Applied after the checkout lock's connection is back in the lock
        // pool: the fetch lock takes one of its own, and a click holding two
        // at once could starve the pool under a burst of users. The session
        // stays recorded, so should this fail the next click tries again.
        (
            Settled::Paid {
                session: Some(session),
                ..
            },
            _,
        ) => {
            if let Err(e) = read_and_apply(billing, request.customer, &session).await {
                warn!(
                    "Checkout Session {session} of user {} was paid; storing its subscription \
                     failed ({e}): its webhook or the next refresh will",
                    request.account
                );
            }
            Err(Error::AlreadySubscribed)
        }
    }
}

/// Settles the user's recorded session, then creates a new one if needed.
async fn settle_and_create(
    billing: &Billing,
    request: &CheckoutRequest<'_>,
    open: Option<accounts::OpenCheckout>,
) -> Result<Settled, Error> {
    let stripe = billing.stripe()?;
    if let Some(open) = open {
        let same_plan = open.price == request.price_id;
        let state = match same_plan {
            true => stripe.retrieve_checkout_session(&open.session_id).await,
            false => match stripe.expire_checkout_session(&open.session_id).await {
                // Not open any more: paid (or expired) meanwhile; read it.
                Err(StripeFailure::Api { status: 400, .. }) => {
                    stripe.retrieve_checkout_session(&open.session_id).await
                }
                other => other,
            },
        };
        let session = match state {
            Ok(session) => session,
            // One Stripe no longer knows (a test-mode reset): a new one.
            Err(StripeFailure::Api { status: 404, .. }) => {
                return create_new(stripe, request).await
            }
            Err(e) => return Err(e.into()),
        };
        // The session of a customer the user no longer has (replaced since):
        // never handed out, never counted as theirs; expired, then a new one.
        if session.customer.as_ref() != Some(request.customer) {
            if session.status == "open" {
                expire_quietly(billing, &open.session_id).await;
            }
            return create_new(stripe, request).await;
        }
        return match session.status.as_str() {
            // Paid, and its subscription still runs: no second one. One that
            // has ended since (cancelled in the portal) is no reason to refuse.
            "complete" if subscription_runs(&session) => Ok(Settled::Paid {
                session: Some(open.session_id),
                forget: false,
            }),
            "complete" | "expired" => create_new(stripe, request).await,
            "open" if same_plan => Ok(Settled::Reuse(session.url.unwrap_or(open.url))),
            // Still open after the expiry was refused, or a state Stripe has
            // added since: creating another could leave two payable.
            other => Err(StripeFailure::InvalidResponse(format!(
                "the user's open Checkout Session {} could not be expired (status `{other}`)",
                open.session_id
            ))
            .into()),
        };
    }
    create_new(stripe, request).await
}

/// Whether a paid session's subscription still runs (an id only, not
/// expanded: assumed to).
fn subscription_runs(session: &CheckoutSession) -> bool {
    match &session.subscription {
        Some(SessionSubscription::Expanded(sub)) => !sub.status.is_terminal(),
        Some(SessionSubscription::Id(_)) => true,
        None => false,
    }
}

/// Expires `session` at Stripe, best effort; answers whether it was open and
/// is expired now. Not open (400: paid or expired already) or unknown (404)
/// is said by `false` without a warning: a paid one stays recorded, for its
/// own tab's return.
async fn expire_quietly(billing: &Billing, session: &str) -> bool {
    let Ok(stripe) = billing.stripe() else {
        return false;
    };
    match stripe.expire_checkout_session(session).await {
        Ok(_) => true,
        Err(StripeFailure::Api {
            status: 400 | 404, ..
        }) => false,
        Err(e) => {
            warn!("Checkout Session {session} could not be expired ({e}); it stays recorded");
            false
        }
    }
}

/// A new session, to record.
async fn create_new(
    stripe: &StripeGateway,
    request: &CheckoutRequest<'_>,
) -> Result<Settled, Error> {
    let session = stripe.create_checkout_session(request).await?;
    Ok(Settled::Created(accounts::OpenCheckout {
        url: session.url.unwrap_or_default(),
        session_id: session.id,
        price: request.price_id.to_string(),
    }))
}

/// A Checkout Session's state as read.
struct SessionState {
    status: String,
}

/// Reads the session `session_id` from Stripe under `customer`'s fetch lock
/// and, when it was paid, stores its subscription as fetched state through
/// the ordering rules. Refused ([`Error::CheckoutNotYours`]) when the session
/// or its subscription is another customer's.
async fn read_and_apply(
    billing: &Billing,
    customer: &CustomerId,
    session_id: &str,
) -> Result<SessionState, Error> {
    let stripe = billing.stripe()?;
    // Held from before the read until what it read is stored, so a
    // webhook's newer state is never overwritten by this read.
    let lock = FetchLock::acquire(billing, customer).await?;
    let read = async {
        let session = stripe.retrieve_checkout_session(session_id).await?;
        if session.customer.as_ref() != Some(customer) {
            warn!("checkout session {session_id} is not for customer {customer}: refused");
            return Err(Error::CheckoutNotYours);
        }
        let state = SessionState {
            status: session.status,
        };
        let sub = match session.subscription {
            // Not paid (yet): nothing to apply; the webhook will bring it.
            None => return Ok((state, None)),
            Some(SessionSubscription::Expanded(sub)) => *sub,
            Some(SessionSubscription::Id(id)) => stripe.retrieve_subscription(&id).await?,
        };
        if &sub.customer_id != customer {
            return Err(Error::CheckoutNotYours);
        }
        Ok((state, Some(sub)))
    };
    let (state, sub) = match read.await {
        Ok(read) => read,
        Err(e) => {
            lock.release().await;
            return Err(e);
        }
    };
    let Some(sub) = sub else {
        lock.release().await;
        return Ok(state);
    };
    let (rule, clock, started_at) = (billing.rule, billing.clock.clone(), lock.started_at);
    lock.store(move |conn| {
        let fetched = Provenance::Fetch { started_at };
        apply_subscription(conn, &sub, &fetched, rule, clock.now())
    })
    .await
    .map_err(Error::from)?;
    Ok(state)
}

/// Whether `id` looks like a Checkout Session id: Stripe's ids are short and
/// URL-safe; anything else is refused before it reaches a URL.
pub(crate) fn is_session_id(id: &str) -> bool {
    id.starts_with("cs_")
        && (4..=255).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Applies the Checkout Session `session_id` the user came back from: only
/// the session recorded for them at create-checkout (any other id is
/// refused, [`Error::CheckoutNotYours`], without a Stripe call), at most one
/// Stripe read per [`refresh::MIN_INTERVAL_SECS`] (the refresh's claim), read
/// and applied by [`read_and_apply`]. Answers the user's status, as a refresh
/// does.
pub(crate) async fn apply_on_return(
    billing: &Billing,
    user: Member<'_>,
    session_id: &str,
) -> Result<BillingSummary, Error> {
    billing.stripe()?;
    let now = billing.clock.now();
    let refused = user.email.and_then(email_problem);
    let (id, known, asked) = (
        user.id.clone(),
        user.known().to_owned(),
        session_id.to_owned(),
    );
    let claim = db::run(&billing.pool, move |conn| {
        if refused.is_none() {
            accounts::upsert(conn, &id, known.borrow())?;
        }
        let recorded = accounts::open_checkout(conn, &id)?;
        if recorded.is_none_or(|open| open.session_id != asked) {
            return Ok(None);
        }
        accounts::claim_refresh(
            conn,
            &id,
            now,
            TimeDelta::seconds(refresh::MIN_INTERVAL_SECS),
        )
        .map(Some)
    })
    .await?;
    match claim {
        None => {
            warn!(
                "user {} came back with checkout session {session_id}, not the one recorded \
                 for them: refused",
                user.id
            );
            return Err(Error::CheckoutNotYours);
        }
        Some(RefreshClaim::Granted(customer)) => {
            let state = read_and_apply(billing, &customer, session_id).await?;
            if state.status == "complete" {
                billing.metrics.checkouts_applied.inc();
            }
        }
        // A recorded session always has a customer; forgotten meanwhile
        // (`customer.deleted`): nothing of theirs to read.
        Some(RefreshClaim::NoCustomer) => {}
        Some(RefreshClaim::TooSoon { last }) => {
            return Err(Error::RefreshTooSoon {
                retry_after_secs: refresh::retry_after(last, now),
            })
        }
    }
    // Read your writes: this instance's cached answer predates what was just stored.
    billing.forget_status(user.id);
    summary::of_user(billing, user).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkout_session_ids_are_stripes_shape_only() {
        assert!(is_session_id("cs_test_a1B2c3"));
        assert!(!is_session_id("cs_test/../../customers"));
        assert!(!is_session_id("sub_123"));
        assert!(!is_session_id(""));
    }

    #[test]
    fn the_offer_keeps_the_configured_order_and_only_resolved_entries() {
        let offer = Offer::new(vec!["b".into(), "a".into(), "c".into()]);
        offer.resolve("a", "price_a");
        offer.resolve("b", "price_b");

        assert_eq!(
            offer.offered(),
            vec![
                ("b".to_string(), "price_b".to_string()),
                ("a".to_string(), "price_a".to_string())
            ]
        );
        assert_eq!(offer.price_of("c"), None);
    }
}
