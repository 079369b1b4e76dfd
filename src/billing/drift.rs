//! The drift check: a paid user's subscription whose period ended more than
//! [`OVERDUE`] ago (a renewal whose webhook never came,
//! and that the catch-up could not list either: the Events API failing, or an
//! outage longer than the 30 days it reaches back) is re-read from Stripe and
//! stored as Stripe holds it now, through the fetch path that never goes
//! backwards ([`super::refetch::FetchLock`]). Stripe renews a subscription at
//! its period end and charges about an hour later, so an hour without news
//! is drift, not a renewal under way. A subscription is re-read at most once
//! per [`OVERDUE`], whether the read succeeded or failed, so one Stripe has
//! not renewed yet (or cannot read) does not cost a read on every run; each
//! run re-reads at most [`PER_RUN`], within the read budget, and stops after
//! [`FAILURES_IN_A_ROW`] failed reads.

use super::refetch::FetchLock;
use super::sync::{apply_subscription, state_of};
use super::Billing;
use crate::db;
use crate::db::subscriptions::{self, Provenance};

/// How long after a period end a paid subscription without news is re-read.
pub const OVERDUE: chrono::Duration = chrono::Duration::hours(1);

/// The most subscriptions one run re-reads; the oldest overdue go first and
/// the rest wait for the next run.
const PER_RUN: i64 = 500;

/// Failed re-reads in a row after which a run stops: Stripe is failing, and
/// the rest wait for the next run rather than each waiting out its retries.
const FAILURES_IN_A_ROW: usize = 5;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Subscriptions re-read.
    pub checked: usize,
    /// Of those, how many Stripe had moved on (the stored state changed).
    pub repaired: usize,
    /// Of those, how many could not be read (tried again next run).
    pub failed: usize,
}

/// Re-reads every overdue paid subscription. The caller holds the healing
/// lock ([`super::healing::HealingLock`]).
pub async fn run(billing: &Billing) -> Result<Report, super::Error> {
    let stripe = billing.stripe()?;
    let now = billing.clock.now();
    let overdue = db::run(&billing.pool, move |conn| {
        subscriptions::drifting(conn, now, OVERDUE, PER_RUN)
    })
    .await?;
    let mut report = Report::default();
    let mut failing = 0;
    for row in overdue {
        if failing == FAILURES_IN_A_ROW {
            log::warn!(
                "drift check: {FAILURES_IN_A_ROW} re-reads in a row failed; the rest wait for \
                 the next run"
            );
            break;
        }
        let (id, customer) = (row.id.clone(), row.customer_id.clone());
        report.checked += 1;
        billing.read_budget.take().await;
        let lock = FetchLock::acquire(billing, &customer).await?;
        let read = billing
            .read_budget
            .noted(stripe.retrieve_subscription_patiently(&id).await);
        let subscription = match read {
            Ok(subscription) => subscription,
            Err(failure) => {
                lock.release().await;
                log::warn!(
                    "drift check: re-reading {id} of {customer} failed (tried again in an \
                     hour): {failure}"
                );
                billing.metrics.healing.drift_reread("failed");
                report.failed += 1;
                failing += 1;
                db::run(&billing.pool, move |conn| {
                    subscriptions::mark_drift_checked(conn, &id, now)
                })
                .await?;
                continue;
            }
        };
        failing = 0;
        // Stripe moved on (renewed, ended, failed a payment) or still holds
        // what is stored (its renewal is late): either way it is stored now.
        let moved_on = state_of(&subscription, row.user_id.as_ref()).differs_from(&row);
        let (rule, clock, started_at) = (billing.rule, billing.clock.clone(), lock.started_at);
        lock.store(move |conn| {
            let now = clock.now();
            apply_subscription(
                conn,
                &subscription,
                &Provenance::Fetch { started_at },
                rule,
                now,
            )?;
            subscriptions::mark_drift_checked(conn, &id, now)
        })
        .await
        .map_err(super::Error::from)?;
        // Whose answer it changed is the store's to know (a holder may have
        // changed): all answers wait for the listener (rare: hourly at most).
        billing.wrote_statuses();
        if moved_on {
            log::info!(
                "drift check: {} of {customer} had no news for over an hour after its period \
                 ended; stored as Stripe holds it now",
                row.id
            );
            billing.metrics.healing.drift_reread("repaired");
            report.repaired += 1;
        } else {
            billing.metrics.healing.drift_reread("unchanged");
        }
    }
    Ok(report)
}
