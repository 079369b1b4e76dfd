//! The `sync` command: repairs Postgres after missed webhooks. For every user
//! with a Stripe customer it lists that customer's subscriptions from Stripe
//! (all statuses, every page) and applies each through
//! [`apply_subscription`], the code path the webhook uses, as authoritative
//! current state. One customer's failure does not stop the others.

use chrono::Utc;

use crate::billing::sync::{apply_subscription, timestamp, PaidRule};
use crate::db::subscriptions::{self, Provenance, Subscription};
use crate::db::{self, PgPool};
use crate::stripe::client::StripeGateway;
use crate::stripe::events::SubscriptionObject;

#[derive(Debug, Default)]
pub struct Report {
    pub customers: usize,
    pub changed: usize,
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
        let subs = match stripe.list_subscriptions(&customer).await {
            Ok(subs) => subs,
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
                    let now = Utc::now();
                    apply_subscription(
                        conn,
                        &sub,
                        &Provenance::Fetch { started_at: now },
                        rule,
                        now,
                    )
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
