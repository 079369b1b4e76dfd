//! Refresh on return (`POST /billing/refresh`): the signed-in user's billing
//! status re-read from Stripe, for the Billing Settings page when the user
//! comes back from the portal (`?from=portal`) or a checkout, before the
//! webhook has arrived, or when it never will.
//!
//! The user's subscriptions are listed from Stripe (all statuses, every page;
//! retried only within `STRIPE_TIMEOUT_SECS`, since someone is waiting and the
//! page has the stored status to fall back on) and stored as `sync` stores them ([`super::resync`]):
//! under the customer's fetch lock ([`FetchLock`]), held from before the read
//! until the store commits, through [`apply_subscription`] as fetched state,
//! so a read never overwrites newer state a webhook wrote meanwhile. A
//! customer Stripe no longer knows is forgotten, as `sync` forgets it.
//!
//! At most one read per user every [`MIN_INTERVAL_SECS`] seconds, across
//! instances: the read is claimed in Postgres first (`users.refreshed_at`,
//! on the billing clock), and a sooner refresh is refused with how long to
//! wait ([`Error::RefreshTooSoon`]). A user without a customer has nothing in
//! Stripe to read: their stored status, with no Stripe call and no claim.

use chrono::{DateTime, TimeDelta, Utc};

use super::customers::Member;
use super::entitlements;
use super::refetch::FetchLock;
use super::resync::{self, Listed};
use super::summary::{self, BillingSummary};
use super::sync::{apply_subscription, customer_deleted};
use super::{Billing, Error};
use crate::db::accounts::{self, RefreshClaim};
use crate::db::subscriptions::Provenance;
use crate::db::{self};
use crate::ids::CustomerId;
use crate::stripe::client::Patience;

/// The least time between two Stripe reads of one user's subscriptions.
pub(crate) const MIN_INTERVAL_SECS: i64 = 10;

/// Reads the user's subscriptions from Stripe, stores them, and answers the
/// user's billing status as [`summary::of_user`] does, from Postgres after
/// the store. Fails without changing any subscription when Stripe or the
/// database fails; [`Error::RefreshTooSoon`] when the user's last read was
/// less than [`MIN_INTERVAL_SECS`] ago.
pub(crate) async fn refresh(billing: &Billing, user: Member<'_>) -> Result<BillingSummary, Error> {
    let now = billing.clock.now();
    let (id, known) = (user.id.clone(), user.known().to_owned());
    let claim = db::run(&billing.pool, move |conn| {
        // Records the account (and a changed email or name), as a status
        // request does.
        accounts::upsert(conn, &id, known.borrow())?;
        accounts::claim_refresh(conn, &id, now, TimeDelta::seconds(MIN_INTERVAL_SECS))
    })
    .await?;
    match claim {
        RefreshClaim::Granted(customer) => {
            read_and_store(billing, &customer).await?;
            // The subscriptions are stored; entitlements Stripe cannot read
            // now stay as last read (the customer is owed a read if a change
            // asked for one, which the catch-up makes).
            if let Err(e) = entitlements::refresh(billing, &customer).await {
                log::warn!("refresh: customer {customer}'s entitlements not read: {e}");
            }
        }
        RefreshClaim::NoCustomer => {}
        RefreshClaim::TooSoon { last } => {
            return Err(Error::RefreshTooSoon {
                retry_after_secs: retry_after(last, now),
            })
        }
    }
    // Read your writes: this instance's cached answer predates what was just stored.
    billing.forget_status(user.id);
    summary::of_user(billing, user).await
}

/// Lists `customer`'s subscriptions from Stripe and stores them, under the
/// customer's fetch lock.
async fn read_and_store(billing: &Billing, customer: &CustomerId) -> Result<(), Error> {
    let stripe = billing.stripe()?;
    // Held from before the read until what it read is stored, so a webhook's
    // re-read or `sync` of the same customer never crosses this read.
    let lock = FetchLock::acquire(billing, customer).await?;
    let listed = match resync::list(&billing.pool, stripe, customer, Patience::Waiting).await {
        Ok(Ok(listed)) => listed,
        Ok(Err(failure)) => {
            lock.release().await;
            return Err(failure.into());
        }
        Err(failure) => {
            lock.release().await;
            return Err(failure.into());
        }
    };
    let (rule, clock) = (billing.rule, billing.clock.clone());
    match listed {
        Listed::Subscriptions(subs) => {
            let started_at = lock.started_at;
            lock.store(move |conn| {
                for sub in &subs {
                    let fetched = Provenance::Fetch { started_at };
                    apply_subscription(conn, sub, &fetched, rule, clock.now())?;
                }
                Ok(())
            })
            .await?;
        }
        Listed::CustomerGone => {
            lock.release().await;
            log::warn!("customer {customer} no longer exists in Stripe: forgotten");
            // What a `customer.deleted` webhook does, in one transaction.
            let gone = customer.clone();
            db::transaction(&billing.pool, move |conn| {
                let now = clock.now();
                customer_deleted(conn, &gone, now, rule, now)
            })
            .await?;
        }
    }
    Ok(())
}

/// Whole seconds until the user's next read may be claimed, 1 to
/// [`MIN_INTERVAL_SECS`]: a client that waits that long is not refused again
/// (unless someone else refreshed meanwhile).
pub(crate) fn retry_after(last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> u64 {
    let interval = TimeDelta::seconds(MIN_INTERVAL_SECS);
    let wait_ms = last.map_or(0, |last| (last + interval - now).num_milliseconds());
    let wait_secs = (wait_ms + 999).div_euclid(1000);
    wait_secs.clamp(1, MIN_INTERVAL_SECS).unsigned_abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap() + TimeDelta::milliseconds(ms)
    }

    #[test]
    fn the_wait_is_the_rest_of_the_interval_rounded_up_to_whole_seconds() {
        assert_eq!(retry_after(Some(at(0, 0)), at(0, 0)), 10);
        assert_eq!(retry_after(Some(at(0, 0)), at(3, 0)), 7);
        assert_eq!(retry_after(Some(at(0, 0)), at(3, 1)), 7);
        assert_eq!(retry_after(Some(at(0, 0)), at(3, 999)), 7);
        assert_eq!(retry_after(Some(at(0, 0)), at(9, 500)), 1);
    }

    #[test]
    fn the_wait_is_never_under_one_second_nor_over_the_interval() {
        // The interval has just passed: whoever refused meant "very soon".
        assert_eq!(retry_after(Some(at(0, 0)), at(10, 0)), 1);
        assert_eq!(retry_after(None, at(0, 0)), 1);
        // A claim from an instance whose clock runs ahead.
        assert_eq!(retry_after(Some(at(5, 0)), at(0, 0)), 10);
    }
}
