//! Applying Stripe's word on subscriptions to Postgres, exactly once and in
//! order. One entry point per source: [`apply_event`] for verified webhook
//! events (the event row and its effect commit in one transaction), and
//! [`apply_subscription`] for subscription state from any source.
//!
//! Rules: the account for a subscription is the one holding its customer,
//! else the one named by its metadata (`org_id`, an organisation's, else
//! `user_id`); unknown customers are stored without an account, and once a
//! customer is linked all its subscriptions are its holder's (metadata never
//! keeps one from them). A completed checkout links its customer only to an
//! account no buyer can have chosen: its metadata, or a `client_reference_id`
//! signed with [`ReferenceKey`]. An account's paid flag is recomputed in the
//! same transaction as every change that can move it.
//! Price and product events are stored by [`super::plans`], in the same
//! transaction as their event row.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::plans;
use super::reference::ReferenceKey;
use crate::db::subscriptions::{self, Provenance, RuleParams, Stored, SubscriptionState};
use crate::db::{accounts, entitlements, events};
use crate::ids::{AccountId, CustomerId, OrgId, UserId};
use crate::stripe::events::{CheckoutSessionObject, Event, EventKind, SubscriptionObject};

/// What a delivery did; stored on the event row and counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Already recorded: a redelivery, nothing done.
    Duplicate,
    /// Older than the state already stored, nothing done.
    Stale,
    /// A type this service does not act on.
    Ignored,
    /// Of the other Stripe mode (test or live) than `STRIPE_SECRET_KEY`:
    /// recorded, nothing done.
    WrongMode,
    /// A checkout whose `client_reference_id` is neither signed nor vouched
    /// for by `metadata.user_id`: a buyer may have chosen it, so its customer
    /// is linked to nobody.
    UnverifiedReference,
    /// Same second as the stored state and unorderable: nothing recorded, so
    /// the caller re-reads the subscription from Stripe and applies the event
    /// again with what it read. Never stored on an event row.
    Undecidable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Stale => "stale",
            Self::Ignored => "ignored",
            Self::WrongMode => "wrong_mode",
            Self::UnverifiedReference => "unverified_reference",
            Self::Undecidable => "undecidable",
        }
    }
}

use super::status::PaidRule;

impl PaidRule {
    /// The rule's parameters at `now`, as the SQL side takes them.
    pub(crate) fn at(self, now: DateTime<Utc>) -> RuleParams {
        RuleParams {
            now,
            grace_secs: self.grace_secs(),
            collection_paused_is_paid: self.collection_paused_is_paid,
        }
    }
}

pub fn timestamp(secs: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(secs, 0)
}

/// A subscription as just read from the API, and when that read started.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub(crate) subscription: SubscriptionObject,
    pub(crate) started_at: DateTime<Utc>,
}

/// Records and applies one verified event in a single transaction. `fresh`
/// is the subscription as just fetched from the API (`STRIPE_WEBHOOK_REFETCH`,
/// or after [`Outcome::Undecidable`]), applied instead of the payload's copy.
/// `key` verifies a checkout's signed `client_reference_id`. `now` is the
/// billing clock's.
pub(crate) fn apply_event(
    conn: &mut PgConnection,
    event: &Event,
    fresh: Option<&Fetched>,
    key: &ReferenceKey,
    rule: PaidRule,
    now: DateTime<Utc>,
) -> QueryResult<(Outcome, Touched)> {
    let created = timestamp(event.created).unwrap_or(DateTime::UNIX_EPOCH);
    let applied = Outcome::Applied.as_str();
    let result = conn.transaction(|conn| {
        let (outcome, touched) = match &event.kind {
            EventKind::Subscription(payload, previous) => {
                // The claim and the customer's holder in one round trip.
                let Some(holder) = events::claim_with_holder(
                    conn,
                    &event.id,
                    &event.type_,
                    created,
                    applied,
                    &payload.customer_id,
                )?
                else {
                    return Ok((Outcome::Duplicate, Touched::Nothing));
                };
                let (sub, provenance) = match fresh {
                    Some(fresh) => (
                        &fresh.subscription,
                        Provenance::Fetch {
                            started_at: fresh.started_at,
                        },
                    ),
                    None => (
                        payload,
                        Provenance::Event {
                            created,
                            previous: &previous.0,
                        },
                    ),
                };
                // The statement's snapshot may predate a link that committed
                // while its insert waited on another delivery of this event:
                // an unheld customer is looked up again (rare: a new customer).
                let holder = match holder {
                    Some(holder) => Some(holder),
                    None => accounts::find_by_customer(conn, &payload.customer_id)?,
                };
                let linking = holder.is_none();
                let user = user_for_held(conn, sub, holder)?;
                let outcome =
                    apply_subscription_as(conn, sub, user.as_ref(), &provenance, rule, now)?;
                let touched = match user {
                    // The account it belongs to; one just linked to the
                    // customer changed whatever the outcome. None: stored
                    // unlinked, in no account's answer.
                    Some(user) if linking || outcome == Outcome::Applied => Touched::Account(user),
                    _ => Touched::Nothing,
                };
                (outcome, touched)
            }
            kind => {
                if !events::claim(conn, &event.id, &event.type_, created, applied)? {
                    return Ok((Outcome::Duplicate, Touched::Nothing));
                }
                let outcome = match kind {
                    EventKind::CustomerDeleted { customer_id } => {
                        customer_deleted(conn, customer_id, created, rule, now)?
                    }
                    EventKind::CheckoutCompleted(session) => {
                        checkout_completed(conn, session, key, rule, now)?
                    }
                    EventKind::Price(price) => plans::store_price(conn, price, created)?,
                    EventKind::Product(product) => plans::store_product(conn, product, created)?,
                    EventKind::EntitlementSummary { customer_id } => {
                        // Read in full after the delivery (the summary holds ten at most).
                        entitlements::mark_stale(conn, customer_id)?;
                        Outcome::Applied
                    }
                    EventKind::Ignored => Outcome::Ignored,
                    EventKind::Subscription(..) => unreachable!("matched above"),
                };
                // A summary only records that a read is owed, and what was not
                // applied (an ignored type, a stale price) changed nothing.
                let touched = match (kind, outcome) {
                    (EventKind::EntitlementSummary { .. }, _) => Touched::Nothing,
                    (_, Outcome::Applied) => Touched::Unknown,
                    _ => Touched::Nothing,
                };
                (outcome, touched)
            }
        };
        match outcome {
            // Unclaim the event: it is applied for real once re-read.
            Outcome::Undecidable => return Err(diesel::result::Error::RollbackTransaction),
            Outcome::Applied => {}
            other => events::set_outcome(conn, &event.id, other.as_str())?,
        }
        Ok((outcome, touched))
    });
    match result {
        Err(diesel::result::Error::RollbackTransaction) => {
            Ok((Outcome::Undecidable, Touched::Nothing))
        }
        other => other,
    }
}

/// Whose billing status an applied event may have changed, for this
/// instance's status cache to drop at once (read your writes); the other
/// instances hear it from Postgres (`billing::status_cache`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Touched {
    Nothing,
    Account(AccountId),
    /// Some accounts, not named here (a customer deleted, a checkout linked,
    /// a plan renamed): rare.
    Unknown,
}

/// Records a verified event that must change nothing, with `outcome`
/// ([`Outcome::Duplicate`] when it was already recorded).
pub(crate) fn record_only(
    conn: &mut PgConnection,
    event: &Event,
    outcome: Outcome,
) -> QueryResult<Outcome> {
    let created = timestamp(event.created).unwrap_or(DateTime::UNIX_EPOCH);
    Ok(
        match events::claim(conn, &event.id, &event.type_, created, outcome.as_str())? {
            true => outcome,
            false => Outcome::Duplicate,
        },
    )
}

/// Stores one subscription's state (unless newer state is already stored)
/// and recomputes its user's paid flag. Call inside a transaction.
pub fn apply_subscription(
    conn: &mut PgConnection,
    sub: &SubscriptionObject,
    provenance: &Provenance<'_>,
    rule: PaidRule,
    now: DateTime<Utc>,
) -> QueryResult<Outcome> {
    let holder = accounts::find_by_customer(conn, &sub.customer_id)?;
    let user = user_for_held(conn, sub, holder)?;
    apply_subscription_as(conn, sub, user.as_ref(), provenance, rule, now)
}

/// [`apply_subscription`] for the account `user_for_held` found.
fn apply_subscription_as(
    conn: &mut PgConnection,
    sub: &SubscriptionObject,
    user: Option<&AccountId>,
    provenance: &Provenance<'_>,
    rule: PaidRule,
    now: DateTime<Utc>,
) -> QueryResult<Outcome> {
    let stored = subscriptions::store(conn, &state_of(sub, user), provenance, &rule.at(now))?;
    Ok(match stored {
        Stored::Applied => {
            // A subscription change may change the customer's entitlements:
            // they are owed a read (`super::entitlements`).
            entitlements::mark_stale(conn, &sub.customer_id)?;
            Outcome::Applied
        }
        Stored::Stale => Outcome::Stale,
        Stored::Undecidable => Outcome::Undecidable,
    })
}

/// The one mapping of a Stripe subscription to the row that stores it.
pub(crate) fn state_of<'a>(
    sub: &'a SubscriptionObject,
    user: Option<&'a AccountId>,
) -> SubscriptionState<'a> {
    let pause = sub.pause_collection.as_ref();
    SubscriptionState {
        id: &sub.id,
        customer_id: &sub.customer_id,
        user_id: user,
        status: sub.status.as_str(),
        price_id: sub.price_id.as_deref(),
        product_id: sub.product_id.as_deref(),
        current_period_end: sub.current_period_end.and_then(timestamp),
        cancel_at_period_end: sub.cancel_at_period_end,
        cancel_at: sub.cancel_at.and_then(timestamp),
        pause_behavior: pause.map(|p| p.behavior.as_str()),
        pause_resumes_at: pause.and_then(|p| p.resumes_at).and_then(timestamp),
    }
}

/// The account a Stripe object's metadata names, set server side with the
/// secret key (a buyer cannot set metadata): `org_id`, an organisation's,
/// else `user_id`, a user's; each by its own id rule, so `user_id` can never
/// name an organisation's account.
fn named_in_metadata(org: Option<&str>, user: Option<&str>) -> Option<Result<AccountId, String>> {
    match (org, user) {
        (Some(org), _) => Some(OrgId::parse(org).map(|org| AccountId::organization(&org))),
        (None, Some(user)) => Some(UserId::parse(user).map(|user| AccountId::user(&user))),
        (None, None) => None,
    }
}

/// The account a subscription belongs to: `holder`, the account holding its
/// customer (looked up by the caller), else the one its metadata names, which
/// is then linked to the customer.
fn user_for_held(
    conn: &mut PgConnection,
    sub: &SubscriptionObject,
    holder: Option<AccountId>,
) -> QueryResult<Option<AccountId>> {
    let named = named_in_metadata(
        sub.metadata_org_id.as_deref(),
        sub.metadata_user_id.as_deref(),
    );
    if let Some(holder) = holder {
        if named
            .as_ref()
            .is_some_and(|named| named.as_ref() != Ok(&holder))
        {
            // Its text is not logged: it may not even be a valid id.
            log::warn!(
                "subscription {}: ignoring its metadata, which names another account than \
                 {holder}, who holds its customer {}",
                sub.id,
                sub.customer_id
            );
        }
        return Ok(Some(holder));
    }
    match named {
        Some(Ok(user)) => {
            accounts::link_customer_if_unset(conn, &user, &sub.customer_id)?;
            Ok(Some(user))
        }
        Some(Err(reason)) => {
            log::warn!(
                "subscription {}: ignoring metadata.org_id / user_id: {reason}",
                sub.id
            );
            Ok(None)
        }
        None => Ok(None),
    }
}

pub(crate) fn customer_deleted(
    conn: &mut PgConnection,
    customer_id: &CustomerId,
    as_of: DateTime<Utc>,
    rule: PaidRule,
    now: DateTime<Utc>,
) -> QueryResult<Outcome> {
    let mut affected = subscriptions::cancel_all_of_customer(conn, customer_id, as_of)?;
    affected.extend(accounts::forget_customer(conn, customer_id)?);
    entitlements::forget(conn, customer_id)?;
    affected.sort();
    affected.dedup();
    for user in affected {
        accounts::recompute_paid(conn, &user, &rule.at(now))?;
    }
    Ok(Outcome::Applied)
}

/// Whom a completed checkout names as its customer's user.
enum Named<'a> {
    /// Someone holding a secret chose the user: the service's own session
    /// (`metadata.user_id`, set server side) or a signed reference.
    Vouched(AccountId),
    /// A reference anyone could have typed into a Payment Link's URL.
    Unverified(&'a str),
    Nobody,
}

fn named_user<'a>(session: &'a CheckoutSessionObject, key: &ReferenceKey) -> Named<'a> {
    // A session created with the secret key carries `metadata.user_id`; a
    // buyer cannot set metadata. Issue 19's create-checkout sets it there.
    let named = named_in_metadata(
        session.metadata_org_id.as_deref(),
        session.metadata_user_id.as_deref(),
    );
    match named {
        Some(Ok(user)) => return Named::Vouched(user),
        Some(Err(reason)) => log::warn!(
            "checkout session {}: ignoring metadata.org_id / user_id: {reason}",
            session.id
        ),
        None => {}
    }
    match session.client_reference_id.as_deref() {
        Some(reference) => match key.verify(reference) {
            Some(user) => Named::Vouched(user),
            None => Named::Unverified(reference),
        },
        None => Named::Nobody,
    }
}

fn checkout_completed(
    conn: &mut PgConnection,
    session: &CheckoutSessionObject,
    key: &ReferenceKey,
    rule: PaidRule,
    now: DateTime<Utc>,
) -> QueryResult<Outcome> {
    let Some(customer) = &session.customer_id else {
        return Ok(Outcome::Ignored);
    };
    let user = match named_user(session, key) {
        Named::Vouched(user) => user,
        Named::Nobody => return Ok(Outcome::Ignored),
        Named::Unverified(reference) => {
            // A checkout for a customer the named user already holds (what an
            // app's own session for a signed-in user sends, as the emulator's
            // demo does) links nothing new.
            if accounts::find_by_customer(conn, customer)?.is_some_and(|held| held == reference) {
                return Ok(Outcome::Applied);
            }
            // The reference itself is not logged: the buyer may have chosen it.
            log::warn!(
                "checkout session {}: client_reference_id is not signed and the session has no \
                 metadata.user_id, so customer {customer} is linked to nobody (a buyer can choose \
                 it on Payment Links and pricing tables; see README, \"Linking a checkout to a user\")",
                session.id
            );
            return Ok(Outcome::UnverifiedReference);
        }
    };
    accounts::link_customer_if_unset(conn, &user, customer)?;
    if accounts::find_by_customer(conn, customer)?.as_ref() == Some(&user) {
        link_subscriptions(conn, customer, &user, rule, now)?;
        accounts::recompute_paid(conn, &user, &rule.at(now))?;
    }
    Ok(Outcome::Applied)
}

/// Gives the subscriptions of `customer` to `user`, who now holds it, and
/// recomputes the paid flag of everyone they came from (the caller that of
/// `user`). Returns how many moved. Call inside a transaction.
pub(crate) fn link_subscriptions(
    conn: &mut PgConnection,
    customer: &CustomerId,
    user: &AccountId,
    rule: PaidRule,
    now: DateTime<Utc>,
) -> QueryResult<usize> {
    let linked = subscriptions::link_customer(conn, customer, user)?;
    for previous in &linked.previous_holders {
        log::info!("customer {customer}'s subscriptions moved from user {previous} to {user}");
        accounts::recompute_paid(conn, previous, &rule.at(now))?;
    }
    Ok(linked.moved)
}
