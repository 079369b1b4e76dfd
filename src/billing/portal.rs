//! Portal sessions for a signed-in user: find or create the user's one Stripe
//! customer, then ask Stripe for a Customer Portal session for exactly that
//! customer.
//!
//! Exactly one customer per user, even under concurrent first clicks and
//! across instances: the creation happens while holding the user's row lock
//! (`SELECT … FOR UPDATE`), and the Stripe request carries an idempotency key
//! derived from every parameter it sends, so even a commit that fails after
//! Stripe answered gets the same customer back on the next try. A
//! `STRIPE_SECRET_KEY` of the other test/live mode than the stored customer is
//! a configuration error, never a reason to replace the customer.

use log::{info, warn};

use crate::auth::AuthenticatedUser;
use crate::billing::status::SubscriptionStatus;
use crate::billing::summary::{current_subscription, ends_at};
use crate::billing::sync::PaidRule;
use crate::db::{self, subscriptions, users, OpenTransaction};
use crate::error::ApiError;
use crate::startup::AppState;
use crate::stripe::client::{Locale, PortalFlow, StripeFailure, StripeGateway};

/// A deep link as the request names it; the subscription it acts on is
/// looked up for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowKind {
    PaymentMethodUpdate,
    SubscriptionCancel,
    SubscriptionUpdate,
}

impl FlowKind {
    pub const ALL: [(&'static str, FlowKind); 3] = [
        ("payment_method_update", FlowKind::PaymentMethodUpdate),
        ("subscription_cancel", FlowKind::SubscriptionCancel),
        ("subscription_update", FlowKind::SubscriptionUpdate),
    ];

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, kind)| *kind)
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a portal flow; use one of payment_method_update, \
                     subscription_cancel, subscription_update"
                )
            })
    }
}

#[derive(Debug, Default)]
pub struct PortalOptions {
    pub locale: Option<Locale>,
    pub flow: Option<FlowKind>,
}

/// Returns the portal URL for `user`, creating their Stripe customer first if
/// they have none, or replacing it once if Stripe says it no longer exists.
pub async fn portal_url(
    state: &AppState,
    user: &AuthenticatedUser,
    options: PortalOptions,
) -> Result<String, ApiError> {
    let stripe = state.stripe()?;
    let (id, email) = (user.id.as_str().to_owned(), user.email.clone());
    let (row, subs) = db::run(&state.pool, move |conn| {
        let row = users::upsert(conn, &id, email.as_deref())?;
        let subs = match options.flow {
            Some(FlowKind::SubscriptionCancel | FlowKind::SubscriptionUpdate) => {
                subscriptions::of_user(conn, &id)?
            }
            _ => Vec::new(),
        };
        Ok((row, subs))
    })
    .await?;
    let flow = options
        .flow
        .map(|kind| resolve_flow(kind, &subs, state.paid_rule, state.clock.now()))
        .transpose()?;
    let (locale, flow) = (options.locale.as_ref(), flow.as_ref());
    let email = row.email.as_deref();

    let customer = match row.stripe_customer_id.clone() {
        Some(customer) => customer,
        None => ensure_customer(state, stripe, &row.id, email, None).await?,
    };
    let session = stripe
        .create_portal_session(&customer, &state.portal_return_url, locale, flow)
        .await;
    let session = match session {
        Err(StripeFailure::NoSuchCustomer) => {
            warn!(
                "Stripe no longer knows customer {customer} of user {}; creating a new one",
                row.id
            );
            let customer = ensure_customer(state, stripe, &row.id, email, Some(&customer)).await?;
            stripe
                .create_portal_session(&customer, &state.portal_return_url, locale, flow)
                .await?
        }
        other => other?,
    };
    state.metrics.portal_sessions.inc();
    Ok(session)
}

/// The user's Stripe customer, created if they have none (upserting the
/// user first). For callers that need the customer, not a portal session.
pub async fn user_customer(state: &AppState, user: &AuthenticatedUser) -> Result<String, ApiError> {
    let stripe = state.stripe()?;
    let (id, email) = (user.id.as_str().to_owned(), user.email.clone());
    let row = db::run(&state.pool, move |conn| {
        users::upsert(conn, &id, email.as_deref())
    })
    .await?;
    match row.stripe_customer_id {
        Some(customer) => Ok(customer),
        None => ensure_customer(state, stripe, &row.id, row.email.as_deref(), None).await,
    }
}

/// The flow's subscription is the user's current one, and it must be one the
/// flow can act on; otherwise a 409 that says why, before any Stripe call.
fn resolve_flow(
    kind: FlowKind,
    subs: &[crate::db::subscriptions::Subscription],
    rule: PaidRule,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<PortalFlow, ApiError> {
    let live = current_subscription(subs, rule, now)
        .filter(|s| !SubscriptionStatus::parse(&s.status).is_terminal());
    let subscription = match (kind, live) {
        (FlowKind::PaymentMethodUpdate, _) => return Ok(PortalFlow::PaymentMethodUpdate),
        (_, None) => {
            return Err(ApiError::conflict(
                "no_subscription",
                "you have no current subscription to change or cancel",
            ))
        }
        // Classic billing mode sets `cancel_at_period_end`; flexible mode (the
        // default since API 2025-09-30) sets only `cancel_at`.
        (FlowKind::SubscriptionCancel, Some(s)) if ends_at(s).is_some() => {
            return Err(ApiError::conflict(
                "subscription_already_canceling",
                "your subscription is already set to end; renew it in the portal instead",
            ))
        }
        (_, Some(s)) => s.id.clone(),
    };
    Ok(match kind {
        FlowKind::SubscriptionCancel => PortalFlow::SubscriptionCancel { subscription },
        _ => PortalFlow::SubscriptionUpdate { subscription },
    })
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
            let now = state.clock.now();
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
