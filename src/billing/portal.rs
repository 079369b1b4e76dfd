//! Portal sessions for a signed-in user: find or create the user's one Stripe
//! customer, then ask Stripe for a Customer Portal session for exactly that
//! customer.
//!
//! Exactly one customer per user, even under concurrent first clicks and
//! across instances: the creation happens while holding the user's row lock
//! (`SELECT … FOR UPDATE`), and the Stripe request carries an idempotency key
//! derived from the user id, so even a commit that fails after Stripe answered
//! gets the same customer back on the next try.

use log::{info, warn};

use crate::auth::AuthenticatedUser;
use crate::db::{self, subscriptions, users, OpenTransaction};
use crate::error::ApiError;
use crate::startup::AppState;
use crate::stripe::client::{Locale, StripeFailure, StripeGateway};

/// Returns the portal URL for `user`, creating their Stripe customer first if
/// they have none, or replacing it once if Stripe says it no longer exists.
pub async fn portal_url(
    state: &AppState,
    user: &AuthenticatedUser,
    locale: Option<Locale>,
) -> Result<String, ApiError> {
    let stripe = state.stripe()?;
    let (id, email) = (user.id.as_str().to_owned(), user.email.clone());
    let row = db::run(&state.pool, move |conn| {
        users::upsert(conn, &id, email.as_deref())
    })
    .await?;
    let email = row.email.as_deref();

    let customer = match row.stripe_customer_id.clone() {
        Some(customer) => customer,
        None => ensure_customer(state, stripe, &row.id, email, None).await?,
    };
    let session = stripe
        .create_portal_session(&customer, &state.portal_return_url, locale.as_ref())
        .await;
    match session {
        Err(StripeFailure::NoSuchCustomer) => {
            warn!(
                "Stripe no longer knows customer {customer} of user {}; creating a new one",
                row.id
            );
            let customer = ensure_customer(state, stripe, &row.id, email, Some(&customer)).await?;
            Ok(stripe
                .create_portal_session(&customer, &state.portal_return_url, locale.as_ref())
                .await?)
        }
        other => Ok(other?),
    }
}

/// The user's customer id, created under the row lock when the row holds none
/// (or still holds `stale`, the customer Stripe said is gone). Whoever waited
/// on the lock finds the id the first request stored and creates nothing.
async fn ensure_customer(
    state: &AppState,
    stripe: &StripeGateway,
    user_id: &str,
    email: Option<&str>,
    stale: Option<&str>,
) -> Result<String, ApiError> {
    let mut tx = OpenTransaction::begin(&state.pool).await?;
    let (id, lock_wait) = (user_id.to_owned(), state.customer_lock_timeout_ms);
    let current = tx
        .run(move |conn| {
            // The lock holder may be waiting on Stripe for up to its client
            // timeout; the default statement timeout would give up sooner.
            diesel::RunQueryDsl::execute(
                diesel::sql_query(format!("SET LOCAL statement_timeout = {lock_wait}")),
                conn,
            )?;
            users::lock_customer_id(conn, &id)
        })
        .await?;
    if let Some(current) = current.filter(|c| Some(c.as_str()) != stale) {
        tx.commit().await?;
        return Ok(current);
    }

    match stripe.create_customer(user_id, email, stale).await {
        Ok(customer) => {
            let (id, stored, rule) = (user_id.to_owned(), customer.clone(), state.paid_rule);
            tx.run(move |conn| {
                users::set_customer_id(conn, &id, &stored)?;
                // Webhooks may have stored this customer's subscriptions
                // before we knew whose it was.
                if subscriptions::link_customer(conn, &stored, &id)? > 0 {
                    users::recompute_paid(conn, &id, rule.paid_statuses())?;
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
