//! The `sync` command: repairs Postgres after missed webhooks. For every user
//! with a Stripe customer it lists that customer's subscriptions from Stripe
//! (all statuses, every page) and applies each through
//! [`apply_subscription`], the code path the webhook uses, as authoritative
//! current state.
//!
//! A customer Stripe no longer knows (its list answers "No such customer", or
//! it is empty while Postgres holds subscriptions of it and the customer reads
//! as deleted) gets what a `customer.deleted` webhook does: its subscriptions
//! canceled, the customer forgotten, the paid flag recomputed. One customer's
//! failure does not stop the others, except a key of the wrong test/live
//! mode, which would fail every customer the same way and stops the run.

use anyhow::Context as _;
use chrono::Utc;
use diesel::prelude::*;

use crate::billing::sync::{apply_subscription, customer_deleted, timestamp, PaidRule};
use crate::db::schema;
use crate::db::subscriptions::{self, Subscription};
use crate::db::{self, PgPool};
use crate::stripe::client::{StripeFailure, StripeGateway};
use crate::stripe::events::SubscriptionObject;

#[derive(Debug, Default)]
pub struct Report {
    pub customers: usize,
    pub changed: usize,
    /// Customers Stripe no longer knows, forgotten (or, in a dry run, to be).
    pub forgotten: usize,
    pub failures: Vec<(String, String)>,
}

/// What the caller shows as the run goes.
pub enum Progress<'a> {
    Start {
        customers: usize,
    },
    Change {
        user: &'a str,
        subscription: &'a str,
        before: String,
        after: String,
    },
    Failed {
        user: &'a str,
        customer: &'a str,
        reason: String,
    },
    Checked {
        user: &'a str,
        customer: &'a str,
        subscriptions: usize,
    },
    /// Stripe no longer knows `customer`: it is (or would be) forgotten.
    Forgotten {
        user: &'a str,
        customer: &'a str,
    },
}

/// What listing one customer's subscriptions found.
enum Listed {
    Subscriptions(Vec<SubscriptionObject>),
    CustomerGone,
}

/// Lists `customer`'s subscriptions and tells a customer Stripe no longer
/// knows from one without any. The customer is only read when the list is
/// empty and Postgres still holds subscriptions of it, so a healthy run costs
/// no extra call.
async fn list(
    pool: &PgPool,
    stripe: &StripeGateway,
    customer: &str,
) -> anyhow::Result<Result<Listed, StripeFailure>> {
    let subs = match stripe.list_subscriptions(customer).await {
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
    Ok(match stripe.customer_is_deleted(customer).await {
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
    let Some(row) = stored else { return true };
    row.status != sub.status.as_str()
        || row.customer_id != sub.customer_id
        || row.price_id.as_deref() != sub.price_id.as_deref()
        || row.product_id.as_deref() != sub.product_id.as_deref()
        || row.cancel_at_period_end != sub.cancel_at_period_end
        || row.current_period_end != sub.current_period_end.and_then(timestamp)
}

pub async fn resync(
    pool: &PgPool,
    stripe: &StripeGateway,
    rule: PaidRule,
    dry_run: bool,
    mut progress: impl FnMut(Progress<'_>),
) -> anyhow::Result<Report> {
    let customers = db::run(pool, db::users::with_customers).await?;
    let mut report = Report {
        customers: customers.len(),
        ..Report::default()
    };
    progress(Progress::Start {
        customers: customers.len(),
    });
    for (user, customer) in customers {
        let subs = match list(pool, stripe, &customer).await? {
            Ok(Listed::Subscriptions(subs)) => subs,
            Ok(Listed::CustomerGone) => {
                report.forgotten += 1;
                progress(Progress::Forgotten {
                    user: &user,
                    customer: &customer,
                });
                if !dry_run {
                    // What a `customer.deleted` webhook does, in one transaction.
                    let gone = customer.clone();
                    db::transaction(pool, move |conn| {
                        customer_deleted(conn, &gone, Utc::now(), rule)
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
                    describe(&r.status, r.price_id.as_deref(), r.cancel_at_period_end)
                }),
                after: describe(
                    sub.status.as_str(),
                    sub.price_id.as_deref(),
                    sub.cancel_at_period_end,
                ),
            });
            if !dry_run {
                let sub = sub.clone();
                db::transaction(pool, move |conn| {
                    apply_subscription(conn, &sub, Utc::now(), true, rule)
                })
                .await?;
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
