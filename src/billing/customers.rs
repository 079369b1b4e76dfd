//! The user's one Stripe customer: found in their row, or created once.
//!
//! Exactly one customer per user, even under concurrent first clicks and
//! across instances, and no connection of the main pool is held while Stripe
//! is waited for, so one user's slow Stripe call is never felt by others:
//!
//! - Clicks in one instance queue behind the first ([`Creations`]), holding
//!   no connection and no thread, and take its answer.
//! - The creation itself runs under a transaction-scoped advisory lock on the
//!   user, which orders it across instances, taken on the small lock pool
//!   (`DATABASE_LOCK_POOL_SIZE`): at most that many creations wait on Stripe
//!   at once, and nothing else waits for them. An advisory lock rather than
//!   the user's row lock: the row is also written by webhooks (the paid flag,
//!   a checkout's customer), which must not wait on Stripe either. If the
//!   request is cancelled, the connection is discarded with its transaction
//!   open and Postgres releases the lock.
//! - The id is stored only where the row holds none (or still the customer
//!   being replaced), so a customer a checkout webhook linked meanwhile is
//!   kept.
//! - The Stripe request carries an idempotency key derived from every
//!   parameter it sends, so a retry after a lost answer or a failed commit
//!   gets the same customer back.
//!
//! Stripe's idempotency alone, without the lock, would not make it exactly
//! one: a concurrent request with the same key gets 409 rather than the
//! customer, keys expire after 24 hours, and two tabs whose tokens carry
//! different emails send different parameters, hence different keys
//! (docs.stripe.com/api/idempotent_requests).
//!
//! A `STRIPE_SECRET_KEY` of the other test/live mode than the stored customer
//! is a configuration error, never a reason to replace the customer.

use diesel::sql_types::{BigInt, Text};
use diesel::{OptionalExtension, RunQueryDsl};
use log::{info, warn};

use super::turns::Turns;
use super::{sync, Billing, Error};
use crate::db::{accounts, DbError, OpenTransaction};
use crate::ids::{email_problem, AccountId, AccountKind, CustomerId};
use crate::stripe::client::{StripeFailure, StripeGateway};

/// The signed-in user as the use cases need them: the account they act for
/// (their own, or their organisation's), the email their token carries and
/// the organisation's name when it carries one.
#[derive(Debug, Clone)]
pub struct Member<'a> {
    pub id: &'a AccountId,
    pub email: Option<&'a str>,
    pub org_name: Option<&'a str>,
}

impl<'a> Member<'a> {
    /// What a customer created or replaced for this click carries: the
    /// user's email; for an organisation, its name (see [`Contact`]).
    pub(crate) fn contact(&self) -> Contact<'a> {
        match self.id.kind() {
            AccountKind::User => Contact {
                email: self.email,
                name: None,
            },
            AccountKind::Organization => Contact {
                email: None,
                name: self.org_name,
            },
        }
    }

    /// What the account's row keeps of this request: a user's email (kept
    /// current on their row), an organisation's name. An organisation's row
    /// takes no member's email.
    pub(crate) fn known(&self) -> accounts::Known<'_> {
        match self.id.kind() {
            AccountKind::User => accounts::Known {
                email: self.email,
                name: None,
            },
            AccountKind::Organization => accounts::Known {
                email: None,
                name: self.org_name,
            },
        }
    }
}

/// The user's Stripe customer, created if they have none (upserting the
/// user first). An email Stripe would refuse (`email_invalid`) is never
/// stored nor sent: a user who has a customer goes on (opening their portal
/// sends no email), one who needs a customer is refused before any Stripe
/// call ([`Error::InvalidEmail`]).
pub async fn ensure(billing: &Billing, user: Member<'_>) -> Result<CustomerId, Error> {
    if let Some(problem) = user.email.and_then(email_problem) {
        let id = user.id.clone();
        let existing = crate::db::run(&billing.pool, move |conn| {
            accounts::customer_id(conn, &id).optional()
        })
        .await?;
        return existing.flatten().ok_or(Error::InvalidEmail(problem));
    }
    let id = user.id.clone();
    let (email, name) = (
        user.known().email.map(str::to_owned),
        user.known().name.map(str::to_owned),
    );
    let row = crate::db::run(&billing.pool, move |conn| {
        let known = accounts::Known {
            email: email.as_deref(),
            name: name.as_deref(),
        };
        accounts::upsert(conn, &id, known)
    })
    .await?;
    match row.stripe_customer_id {
        Some(customer) => Ok(customer),
        None => create(billing, &row.id, Contact::of(&row, &user), None).await,
    }
}

/// What a new customer is created with: the user's email, or an
/// organisation's name and no email. Not the email of the member who
/// happens to click: the idempotency key covers the whole request, so after
/// an answer that never came another manager's click would send another key
/// and could make a second customer. Checkout asks the buyer for the email
/// a customer lacks; the portal can set it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Contact<'a> {
    pub(crate) email: Option<&'a str>,
    pub(crate) name: Option<&'a str>,
}

impl<'a> Contact<'a> {
    pub(crate) fn of(row: &'a accounts::Account, member: &Member<'a>) -> Self {
        match row.id.kind() {
            AccountKind::User => Self {
                email: row.email.as_deref(),
                name: None,
            },
            AccountKind::Organization => Self {
                email: None,
                name: row.name.as_deref().or(member.org_name),
            },
        }
    }
}

/// The user's customer id, created when the row holds none (or still holds
/// `stale`, the customer Stripe said is gone). Whoever waited for another
/// click's creation takes its answer, or finds the id it stored, and creates
/// nothing.
pub(crate) async fn create(
    billing: &Billing,
    user_id: &AccountId,
    contact: Contact<'_>,
    stale: Option<&CustomerId>,
) -> Result<CustomerId, Error> {
    if let Some(problem) = contact.email.and_then(email_problem) {
        return Err(Error::InvalidEmail(problem));
    }
    let stripe = billing.stripe()?;
    let mut turn = billing.creations.turn(user_id).await;
    match turn.as_ref() {
        Some(Answer::Customer(customer)) if Some(customer) != stale => return Ok(customer.clone()),
        Some(Answer::Stripe(failure)) => return Err(failure.clone().into()),
        Some(Answer::DatabaseUnavailable(reason)) => {
            return Err(DbError::Unavailable(reason.clone()).into())
        }
        // The customer being replaced, or nothing left: this click creates.
        Some(Answer::Customer(_)) | None => {}
    }
    let result = create_locked(billing, stripe, user_id, contact, stale).await;
    *turn = Answer::of(&result);
    result
}

/// Creates the customer under the user's advisory lock, on the lock pool.
async fn create_locked(
    billing: &Billing,
    stripe: &StripeGateway,
    user_id: &AccountId,
    contact: Contact<'_>,
    stale: Option<&CustomerId>,
) -> Result<CustomerId, Error> {
    let mut tx = OpenTransaction::begin(&billing.locks).await?;
    let (id, key) = (user_id.clone(), format!("billing-customer:{user_id}"));
    let (current, attempt) = tx
        .run_waiting(billing.lock_wait(), move |conn| {
            diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, $2))")
                .bind::<Text, _>(key)
                .bind::<BigInt, _>(0)
                .execute(conn)?;
            accounts::customer_and_key_attempt(conn, &id)
        })
        .await?;
    if let Some(current) = current.filter(|c| Some(c) != stale) {
        tx.commit().await?;
        return Ok(current);
    }

    let customer = match stripe
        .create_customer(user_id, contact, stale, attempt)
        .await
    {
        Ok(customer) => customer,
        Err(failure) => {
            let id = user_id.clone();
            let ended = if failure.saved_by_stripe() {
                // Stripe replays this failure for 24 hours under this key:
                // the next click makes a new attempt, with a new key.
                match tx
                    .run(move |conn| accounts::next_customer_key_attempt(conn, &id))
                    .await
                {
                    Ok(()) => tx.commit().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            } else {
                tx.rollback().await.map_err(|e| e.to_string())
            };
            if let Err(e) = ended {
                warn!("ending the transaction of a failed customer creation failed: {e}");
            }
            return Err(failure.into());
        }
    };
    let (id, created, replacing, rule) = (
        user_id.clone(),
        customer.clone(),
        stale.cloned(),
        billing.rule,
    );
    let now = billing.clock.now();
    let linked = tx
        .run(move |conn| {
            if !accounts::store_customer_id(conn, &id, &created, replacing.as_ref())? {
                return accounts::customer_id(conn, &id);
            }
            // Webhooks may have stored this customer's subscriptions
            // before we knew whose it was.
            if sync::link_subscriptions(conn, &created, &id, rule, now)? > 0 {
                accounts::recompute_paid(conn, &id, &rule.at(now))?;
            }
            Ok(Some(created))
        })
        .await?;
    tx.commit().await?;
    // Read your writes: `hasCustomer` (and any subscription linked) changed.
    billing.forget_status(user_id);
    match linked {
        Some(linked) if linked == customer => {
            info!("created Stripe customer {customer} for user {user_id}");
            Ok(customer)
        }
        Some(linked) => {
            warn!(
                "Stripe customer {customer} created for user {user_id} is unused: \
                 {linked} was linked to them meanwhile"
            );
            Ok(linked)
        }
        // The user's customer was forgotten meanwhile (`customer.deleted`)
        // after another was linked: the next click creates one again.
        None => Err(DbError::Unavailable(format!(
            "the Stripe customer of user {user_id} changed while one was created; retry"
        ))
        .into()),
    }
}

/// The customer creations in flight in this instance, one per user. Later
/// clicks wait for their turn behind the first, holding nothing, then take
/// the answer it left; they ask Stripe themselves only when it left none (its
/// request was cancelled, or failed in a way that says nothing about theirs).
pub type Creations = Turns<Option<Answer>>;

/// What a creation answered, for the clicks that waited on it.
#[derive(Debug, Clone)]
pub enum Answer {
    Customer(CustomerId),
    Stripe(StripeFailure),
    DatabaseUnavailable(String),
}

impl Answer {
    fn of(result: &Result<CustomerId, Error>) -> Option<Self> {
        match result {
            Ok(customer) => Some(Self::Customer(customer.clone())),
            Err(Error::Stripe(failure)) => Some(Self::Stripe(failure.clone())),
            Err(Error::Db(DbError::Unavailable(reason))) => {
                Some(Self::DatabaseUnavailable(reason.clone()))
            }
            Err(Error::Db(e)) if e.is_unavailable() => {
                Some(Self::DatabaseUnavailable(e.to_string()))
            }
            // Not about Stripe or the database's reach: each click finds out.
            Err(_) => None,
        }
    }
}
