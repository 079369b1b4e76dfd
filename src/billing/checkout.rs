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
//!   ([`customers::ensure`], as the portal does). Double clicks make one
//!   session: the request runs under an advisory lock on the user (on the
//!   lock pool, as the customer's creation), and its `Idempotency-Key` is
//!   derived from every parameter sent, the user's subscription history and
//!   their attempt, so the second click's request is Stripe's replay of the
//!   first's (docs.stripe.com/api/idempotent_requests). A 500 Stripe saved
//!   under that key (replayed for 24 hours) moves the attempt on, as
//!   `customer_key_attempt` does for customers.
//! - **Return.** The session is read from Stripe with its subscription
//!   expanded, refused unless its customer is the user's, and its
//!   subscription stored as fetched state under the customer's fetch lock,
//!   through the same ordering rules as webhooks ([`apply_subscription`]).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use log::{info, warn};
use sha2::{Digest, Sha256};

use super::customers::{self, Member};
use super::plans::{self, Plan};
use super::refetch::FetchLock;
use super::summary::{self, BillingSummary};
use super::sync::apply_subscription;
use super::{Billing, Error};
use crate::db::catalogue::{Price, Product};
use crate::db::schema::{stripe_prices, stripe_products};
use crate::db::subscriptions::{self, Provenance};
use crate::db::{self, users, OpenTransaction};
use crate::ids::{email_problem, CustomerId};
use crate::stripe::client::{CheckoutRequest, SessionSubscription, StripeFailure};
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
    let (id, email, price) = (
        user.id.clone(),
        user.email.map(str::to_owned),
        price_id.clone(),
    );
    // One round trip: the user (recorded, as the portal records them), their
    // subscriptions, and whether the price is still sold.
    let (subs, on_sale) = db::run(&billing.pool, move |conn| {
        if refused.is_none() {
            users::upsert(conn, &id, email.as_deref())?;
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
    let history = subs.len();
    let mut customer = customers::ensure(billing, user.clone()).await?;
    let mut replaced = false;
    loop {
        let request = CheckoutRequest {
            customer: &customer,
            price_id: &price_id,
            user_id: user.id,
            success_url: &billing.checkout_return_url,
            cancel_url: &billing.checkout_cancel_url,
        };
        match create_locked(billing, &request, history).await {
            Err(Error::Stripe(StripeFailure::NoSuchCustomer)) if !replaced => {
                warn!(
                    "Stripe no longer knows customer {customer} of user {}; creating a new one",
                    user.id
                );
                customer = customers::create(billing, user.id, user.email, Some(&customer)).await?;
                replaced = true;
            }
            Err(e) => return Err(e),
            Ok(url) => {
                billing.metrics.checkout_sessions.inc();
                return Ok(url);
            }
        }
    }
}

/// The session request under the user's checkout lock, with the key of their
/// current attempt; a failure Stripe saved moves the attempt on.
async fn create_locked(
    billing: &Billing,
    request: &CheckoutRequest<'_>,
    history: usize,
) -> Result<String, Error> {
    let stripe = billing.stripe()?;
    let mut tx = OpenTransaction::begin(&billing.locks).await?;
    let (id, lock) = (
        request.user_id.clone(),
        format!("billing-checkout:{}", request.user_id),
    );
    let attempt = tx
        .run_waiting(billing.lock_wait(), move |conn| {
            diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, $2))")
                .bind::<Text, _>(lock)
                .bind::<BigInt, _>(0)
                .execute(conn)?;
            users::checkout_key_attempt(conn, &id)
        })
        .await?;
    let key = idempotency_key(request, history, attempt);
    match stripe.create_checkout_session(request, &key).await {
        Ok(url) => {
            tx.commit().await?;
            info!(
                "created a Checkout Session for user {} (customer {})",
                request.user_id, request.customer
            );
            Ok(url)
        }
        Err(failure) => {
            let id = request.user_id.clone();
            let ended = if failure.saved_by_stripe() {
                // Stripe replays this failure for 24 hours under this key:
                // the next click makes a new attempt, with a new key.
                match tx
                    .run(move |conn| users::next_checkout_key_attempt(conn, &id))
                    .await
                {
                    Ok(()) => tx.commit().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            } else {
                tx.rollback().await.map_err(|e| e.to_string())
            };
            if let Err(e) = ended {
                warn!("ending the transaction of a failed checkout creation failed: {e}");
            }
            Err(failure.into())
        }
    }
}

/// `checkout-<sha256>-<history>-<attempt>`: the hash covers the exact form
/// body sent (Stripe refuses a key reused with other parameters), `history`
/// the user's subscriptions so far (a new purchase after one ended is a new
/// session), `attempt` the user's checkout attempt. At most 100 ASCII
/// characters, within Stripe's 255.
fn idempotency_key(request: &CheckoutRequest<'_>, history: usize, attempt: i32) -> String {
    let hash = Sha256::digest(request.form().as_bytes());
    format!("checkout-{}-{history}-{attempt}", hex::encode(hash))
}

/// Whether `id` looks like a Checkout Session id: Stripe's ids are short and
/// URL-safe; anything else is refused before it reaches a URL.
pub(crate) fn is_session_id(id: &str) -> bool {
    id.starts_with("cs_")
        && id.len() <= 255
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Applies the Checkout Session `session_id` the user came back from: read
/// from Stripe, refused ([`Error::CheckoutNotYours`]) unless its customer is
/// the user's, its subscription stored as fetched state. Answers the user's
/// status, as a refresh does.
pub(crate) async fn apply_on_return(
    billing: &Billing,
    user: Member<'_>,
    session_id: &str,
) -> Result<BillingSummary, Error> {
    let stripe = billing.stripe()?;
    let (id, email) = (user.id.clone(), user.email.map(str::to_owned));
    let customer: Option<CustomerId> = db::run(&billing.pool, move |conn| {
        let row = users::upsert(conn, &id, email.as_deref())?;
        Ok(row.stripe_customer_id)
    })
    .await?;
    // Without a customer, no session can be the user's.
    let customer = customer.ok_or(Error::CheckoutNotYours)?;
    let lock = FetchLock::acquire(billing, &customer).await?;
    let session = match stripe.retrieve_checkout_session(session_id).await {
        Ok(session) => session,
        Err(failure) => {
            lock.release().await;
            // "No such checkout.session": as much the user's as another's.
            return Err(match failure {
                StripeFailure::Api { status: 404, .. } => Error::CheckoutNotYours,
                other => other.into(),
            });
        }
    };
    if session.customer.as_ref() != Some(&customer) {
        lock.release().await;
        warn!(
            "user {} came back from checkout session {session_id}, which is not for their \
             customer {customer}: refused",
            user.id
        );
        return Err(Error::CheckoutNotYours);
    }
    let sub = match session.subscription {
        // Not paid (yet): nothing to apply; the webhook will bring it.
        None => {
            lock.release().await;
            return summary::of_user(billing, user).await;
        }
        Some(SessionSubscription::Expanded(sub)) => *sub,
        Some(SessionSubscription::Id(id)) => match stripe.retrieve_subscription(&id).await {
            Ok(sub) => sub,
            Err(failure) => {
                lock.release().await;
                return Err(failure.into());
            }
        },
    };
    if sub.customer_id != customer {
        lock.release().await;
        return Err(Error::CheckoutNotYours);
    }
    let (rule, clock, started_at) = (billing.rule, billing.clock.clone(), lock.started_at);
    lock.store(move |conn| {
        let fetched = Provenance::Fetch { started_at };
        apply_subscription(conn, &sub, &fetched, rule, clock.now())
    })
    .await
    .map_err(Error::from)?;
    billing.metrics.checkouts_applied.inc();
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
