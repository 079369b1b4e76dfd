//! The user's one Stripe customer: found in their row, or created while
//! holding the row lock.
//!
//! Exactly one customer per user, even under concurrent first clicks and
//! across instances: the creation happens while holding the user's row lock
//! (`SELECT … FOR UPDATE`), and the Stripe request carries an idempotency key
//! derived from every parameter it sends, so even a commit that fails after
//! Stripe answered gets the same customer back on the next try. A
//! `STRIPE_SECRET_KEY` of the other test/live mode than the stored customer is
//! a configuration error, never a reason to replace the customer.

use log::{info, warn};

use super::{Billing, Error};
use crate::db::{self, subscriptions, users, OpenTransaction};
use crate::ids::{CustomerId, UserId};

/// The signed-in user as the use cases need them: who, and the email their
/// token carries (kept current on their row and their new customer).
#[derive(Debug, Clone)]
pub struct Member<'a> {
    pub id: &'a UserId,
    pub email: Option<&'a str>,
}

/// The user's Stripe customer, created if they have none (upserting the
/// user first).
pub async fn ensure(billing: &Billing, user: Member<'_>) -> Result<CustomerId, Error> {
    let (id, email) = (user.id.clone(), user.email.map(str::to_owned));
    let row = db::run(&billing.pool, move |conn| {
        users::upsert(conn, &id, email.as_deref())
    })
    .await?;
    match row.stripe_customer_id {
        Some(customer) => Ok(customer),
        None => create(billing, &row.id, row.email.as_deref(), None).await,
    }
}

/// The user's customer id, created under the row lock when the row holds none
/// (or still holds `stale`, the customer Stripe said is gone). Whoever waited
/// on the lock finds the id the first request stored and creates nothing.
pub(crate) async fn create(
    billing: &Billing,
    user_id: &UserId,
    email: Option<&str>,
    stale: Option<&CustomerId>,
) -> Result<CustomerId, Error> {
    let stripe = billing.stripe()?;
    let mut tx = OpenTransaction::begin(&billing.pool).await?;
    let id = user_id.clone();
    // The lock holder may be waiting on Stripe for up to its client timeout;
    // the default statement timeout would give up sooner.
    let current = tx
        .run_waiting(billing.lock_wait(), move |conn| {
            users::lock_customer_id(conn, &id)
        })
        .await?;
    if let Some(current) = current.filter(|c| Some(c) != stale) {
        tx.commit().await?;
        return Ok(current);
    }

    match stripe.create_customer(user_id, email, stale).await {
        Ok(customer) => {
            let (id, stored, rule) = (user_id.clone(), customer.clone(), billing.rule);
            let now = billing.clock.now();
            tx.run(move |conn| {
                users::set_customer_id(conn, &id, &stored)?;
                // Webhooks may have stored this customer's subscriptions
                // before we knew whose it was.
                if subscriptions::link_customer(conn, &stored, &id)? > 0 {
                    users::recompute_paid(conn, &id, &rule.at(now))?;
                }
                Ok(())
            })
            .await?;
            tx.commit().await?;
            info!("created Stripe customer {customer} for user {user_id}");
            Ok(customer)
        }
        Err(failure) => {
            if let Err(e) = tx.rollback().await {
                warn!("rollback after a failed customer creation failed: {e}");
            }
            Err(failure.into())
        }
    }
}
