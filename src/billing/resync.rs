//! The `sync` command: repairs Postgres after missed webhooks. For every user
//! with a Stripe customer it lists that customer's subscriptions from Stripe
//! (all statuses, every page) and applies each through
//! [`apply_subscription`], the code path the webhook uses, as authoritative
//! current state.
//!
//! A customer Stripe no longer knows (its list answers "No such customer", or
//! it is empty while Postgres holds subscriptions of it and the customer reads
//! as deleted) gets what a `customer.deleted` webhook does: its subscriptions
//! canceled, the customer forgotten, the paid flag recomputed. Each
//! customer's active entitlements are read again in full too
//! ([`entitlements`]). One customer's
//! failure does not stop the others, except a key of the wrong test/live
//! mode, which would fail every customer the same way and stops the run.

use anyhow::Context as _;

use diesel::prelude::*;

use super::entitlements;
use super::refetch::FetchLock;
use super::sync::{apply_subscription, customer_deleted, state_of};
use super::Billing;
use crate::db::schema;
use crate::db::subscriptions::{self, Provenance, Subscription};
use crate::db::{self, DbError, PgPool};
use crate::ids::{AccountId, CustomerId, SubscriptionId};
use crate::stripe::client::{Patience, StripeFailure, StripeGateway};
use crate::stripe::events::SubscriptionObject;

#[derive(Debug, Default)]
pub struct Report {
    pub customers: usize,
    pub changed: usize,
    /// Customers Stripe no longer knows, forgotten (or, in a dry run, to be).
    pub forgotten: usize,
    pub failures: Vec<(CustomerId, String)>,
}

/// What the caller shows as the run goes.
pub enum Progress<'a> {
    Start {
        customers: usize,
    },
    Change {
        user: &'a AccountId,
        subscription: &'a SubscriptionId,
        before: String,
        after: String,
    },
    Failed {
        user: &'a AccountId,
        customer: &'a CustomerId,
        reason: String,
    },
    Checked {
        user: &'a AccountId,
        customer: &'a CustomerId,
        subscriptions: usize,
    },
    /// Stripe no longer knows `customer`: it is (or would be) forgotten.
    Forgotten {
        user: &'a AccountId,
        customer: &'a CustomerId,
    },
}

/// What listing one customer's subscriptions found.
pub(super) enum Listed {
    Subscriptions(Vec<SubscriptionObject>),
    CustomerGone,
}

/// Lists `customer`'s subscriptions and tells a customer Stripe no longer
/// knows from one without any. The customer is only read when the list is
/// empty and Postgres still holds subscriptions of it, so a healthy run costs
/// no extra call. `patience` says how long the reads may take with their
/// retries: `sync`'s can wait, a refresh has someone waiting.
pub(super) async fn list(
    pool: &PgPool,
    stripe: &StripeGateway,
    customer: &CustomerId,
    patience: Patience,
) -> Result<Result<Listed, StripeFailure>, DbError> {
    let subs = match stripe.list_subscriptions(customer, patience).await {
        Ok(subs) => subs,
        Err(StripeFailure::NoSuchCustomer) => return Ok(Ok(Listed::CustomerGone)),
        Err(failure) => return Ok(Err(failure)),
    };
    if !subs.is_empty() {
        return Ok(Ok(Listed::Subscriptions(subs)));
    }
    let id = customer.to_owned();
    let stored: i64 = db::run(pool, move |conn| {
        schema::subscriptions::table
            .filter(schema::subscriptions::customer_id.eq(&id))
            .count()
            .get_result(conn)
    })
    .await?;
    if stored == 0 {
        return Ok(Ok(Listed::Subscriptions(subs)));
    }
    Ok(match stripe.customer_is_deleted(customer, patience).await {
        Ok(true) => Ok(Listed::CustomerGone),
        Ok(false) => Ok(Listed::Subscriptions(subs)),
        Err(failure) => Err(failure),
    })
}

fn describe(status: &str, price: Option<&str>, ending: bool) -> String {
    format!(
        "{status} {}{}",
        price.unwrap_or("(no price)"),
        if ending { " (ends at period end)" } else { "" }
    )
}

/// Whether applying `sub` would change what is stored.
fn differs(stored: Option<&Subscription>, sub: &SubscriptionObject) -> bool {
    stored.is_none_or(|row| state_of(sub, row.user_id.as_ref()).differs_from(row))
}

/// Whether the stored subscription is set to end, in either billing mode.
fn ending(row: &Subscription) -> bool {
    crate::billing::summary::ends_at(row).is_some()
}

/// How long a run waits for a webhook's re-read of the same customer, which
/// may itself wait on Stripe for up to the client timeout (at most 10 s).
const FETCH_LOCK_TIMEOUT_MS: u128 = 30_000;

pub async fn resync(
    billing: &Billing,
    dry_run: bool,
    mut progress: impl FnMut(Progress<'_>),
) -> anyhow::Result<Report> {
    let stripe = billing.stripe()?;
    let billing = &Billing {
        lock_timeout_ms: FETCH_LOCK_TIMEOUT_MS,
        ..billing.clone()
    };
    let (pool, rule, clock) = (&billing.pool, billing.rule, &billing.clock);
    let customers = db::run(pool, db::accounts::with_customers).await?;
    let mut report = Report {
        customers: customers.len(),
        ..Report::default()
    };
    progress(Progress::Start {
        customers: customers.len(),
    });
    for (user, customer) in customers {
        // Held from before the read until what it read is stored, so a
        // webhook's re-read of the same customer never crosses this one.
        let lock = FetchLock::acquire(billing, &customer).await?;
        let listed = list(pool, stripe, &customer, Patience::Background).await;
        let lock = match &listed {
            Ok(Ok(Listed::Subscriptions(_))) => Some(lock),
            _ => {
                lock.release().await;
                None
            }
        };
        let subs = match listed? {
            Ok(Listed::Subscriptions(subs)) => subs,
            Ok(Listed::CustomerGone) => {
                report.forgotten += 1;
                progress(Progress::Forgotten {
                    user: &user,
                    customer: &customer,
                });
                if !dry_run {
                    // What a `customer.deleted` webhook does, in one transaction.
                    let (gone, clock) = (customer.clone(), clock.clone());
                    db::transaction(pool, move |conn| {
                        let now = clock.now();
                        customer_deleted(conn, &gone, now, rule, now)
                    })
                    .await?;
                }
                continue;
            }
            Err(failure @ StripeFailure::KeyModeMismatch { .. }) => {
                // Every other customer would answer the same; and nothing may
                // be forgotten or replaced on the strength of it.
                return Err(anyhow::Error::new(failure)).with_context(|| {
                    format!(
                        "customer {customer} of user {user}: stopping, every customer would \
                         fail the same way; use the STRIPE_SECRET_KEY of the mode the data \
                         was created in"
                    )
                });
            }
            Err(failure) => {
                progress(Progress::Failed {
                    user: &user,
                    customer: &customer,
                    reason: failure.to_string(),
                });
                report.failures.push((customer, failure.to_string()));
                continue;
            }
        };
        let Some(lock) = lock else { continue };
        let mut changed = Vec::new();
        for sub in &subs {
            let id = sub.id.clone();
            let stored = db::run(pool, move |conn| subscriptions::find(conn, &id)).await?;
            if !differs(stored.as_ref(), sub) {
                continue;
            }
            report.changed += 1;
            progress(Progress::Change {
                user: &user,
                subscription: &sub.id,
                before: stored.as_ref().map_or("(missing)".into(), |r| {
                    describe(&r.status, r.price_id.as_deref(), ending(r))
                }),
                after: describe(
                    sub.status.as_str(),
                    sub.price_id.as_deref(),
                    sub.cancel_at_period_end || sub.cancel_at.is_some(),
                ),
            });
            changed.push(sub.clone());
        }
        if dry_run || changed.is_empty() {
            lock.release().await;
        } else {
            let started_at = lock.started_at;
            let now = clock.clone();
            lock.store(move |conn| {
                for sub in &changed {
                    apply_subscription(
                        conn,
                        sub,
                        &Provenance::Fetch { started_at },
                        rule,
                        now.now(),
                    )?;
                }
                Ok(())
            })
            .await?;
        }
        if !dry_run {
            // Every customer's whole set of entitlements, as for its subscriptions.
            if let Err(e) = entitlements::refresh_patiently(billing, &customer).await {
                let reason = format!("reading its entitlements failed: {e}");
                progress(Progress::Failed {
                    user: &user,
                    customer: &customer,
                    reason: reason.clone(),
                });
                report.failures.push((customer, reason));
                continue;
            }
        }
        progress(Progress::Checked {
            user: &user,
            customer: &customer,
            subscriptions: subs.len(),
        });
    }
    Ok(report)
}
