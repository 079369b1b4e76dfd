//! Features from Stripe Entitlements: each customer's active entitlements,
//! read in full from Stripe and stored by customer ([`crate::db::entitlements`]),
//! so `GET /billing/status` answers their lookup keys as `features` from
//! Postgres alone ([`features_for_customer`]).
//!
//! **When they are read.** Stripe says a customer's entitlements changed with
//! `entitlements.active_entitlement_summary.updated`, whose summary holds
//! only the first ten: the event is never trusted for the set, the set is
//! listed from `GET /v1/entitlements/active_entitlements`, every page
//! ([`StripeGateway::list_active_entitlements`]). A subscription change is
//! also a reason to read them (the summary event may be late, or not enabled
//! on the endpoint). Either way the reason is first recorded in Postgres, in
//! the transaction that records its event (`requested` is counted up, see the
//! migration), and the read happens after the delivery is answered, in the
//! background ([`refresh_in_background`]): a Stripe that does not answer
//! never fails or slows a webhook delivery, and the customer stays owed a
//! read until one succeeds. The catch-up reads every customer still owed one
//! ([`heal`]); `POST /billing/refresh` and `sync` read the customer's always
//! ([`refresh`]).
//!
//! **Order.** Every read of one customer's entitlements holds a per-customer
//! advisory lock ([`FetchLock`], `billing-entitlements:{customer}`) from
//! before it asks Stripe until what it read is stored, across instances: two
//! reads never cross, so an older read never overwrites a newer one. A read
//! records how many reads were asked for when it began; a reason recorded
//! while it was under way leaves the customer owed another read. In this
//! instance a customer has at most one background read at a time, and a
//! reason arriving meanwhile has it run once more; background reads take
//! turns, one at a time ([`Reads`]).
//!
//! [`StripeGateway::list_active_entitlements`]: crate::stripe::client::StripeGateway::list_active_entitlements

use std::collections::HashMap;
use std::sync::Mutex;

use super::refetch::FetchLock;
use super::{Billing, Error};
use crate::db::{self, entitlements};
use crate::ids::CustomerId;
use crate::stripe::client::{Patience, StripeFailure};

/// The most customers one catch-up run reads again; the rest wait for the next.
const PER_RUN: i64 = 500;

/// Failed reads in a row after which a run stops: Stripe is failing.
const FAILURES_IN_A_ROW: usize = 5;

/// `customer`'s features: the sorted lookup keys of its active entitlements
/// as last read from Stripe; empty for a customer never read. What
/// `GET /billing/status` answers as `features` (Postgres only).
pub async fn features_for_customer(
    billing: &Billing,
    customer: &CustomerId,
) -> Result<Vec<String>, Error> {
    let customer = customer.clone();
    Ok(db::run(&billing.pool, move |conn| {
        entitlements::features_of(conn, &customer)
    })
    .await?)
}

/// Reads `customer`'s active entitlements from Stripe now, every page, and
/// stores them; answers the stored features. Someone waits on it
/// (`POST /billing/refresh`).
pub async fn refresh(billing: &Billing, customer: &CustomerId) -> Result<Vec<String>, Error> {
    match read(billing, customer, Patience::Waiting, false).await? {
        Read::Stored(keys) => Ok(keys),
        Read::NotOwed => features_for_customer(billing, customer).await,
    }
}

/// [`refresh`] for a background read (`sync`), which can wait longer for
/// its retries.
pub(crate) async fn refresh_patiently(
    billing: &Billing,
    customer: &CustomerId,
) -> Result<(), Error> {
    read(billing, customer, Patience::Background, false).await?;
    Ok(())
}

/// What one read did.
enum Read {
    /// Stripe's set, as stored (sorted, distinct).
    Stored(Vec<String>),
    /// Only a read that was owed was wanted, and none was.
    NotOwed,
}

/// One read of `customer`'s entitlements under its lock. `only_if_owed`:
/// skip it when every reason recorded so far was covered by a read.
async fn read(
    billing: &Billing,
    customer: &CustomerId,
    patience: Patience,
    only_if_owed: bool,
) -> Result<Read, Error> {
    let stripe = billing.stripe()?;
    let mut lock =
        FetchLock::acquire_named(billing, format!("billing-entitlements:{customer}")).await?;
    let id = customer.clone();
    let seen = lock
        .read(move |conn| {
            let owed = entitlements::is_stale(conn, &id)?;
            Ok((entitlements::requested(conn, &id)?, owed))
        })
        .await;
    let (seen, owed) = match seen {
        Ok(seen) => seen,
        Err(e) => {
            lock.release().await;
            return Err(e.into());
        }
    };
    if only_if_owed && !owed {
        lock.release().await;
        return Ok(Read::NotOwed);
    }
    let listed = match stripe.list_active_entitlements(customer, patience).await {
        Ok(listed) => listed,
        // Stripe no longer knows the customer: it entitles nobody to anything.
        Err(StripeFailure::NoSuchCustomer) => Vec::new(),
        Err(failure) => {
            lock.release().await;
            return Err(failure.into());
        }
    };
    let mut keys: Vec<String> = listed.into_iter().map(|e| e.lookup_key).collect();
    keys.sort();
    keys.dedup();
    let (id, stored, started_at) = (customer.clone(), keys.clone(), lock.started_at);
    let changed = lock
        .store(move |conn| {
            let before = entitlements::features_of(conn, &id)?;
            entitlements::store(conn, &id, &stored, started_at, seen)?;
            match before == stored {
                true => Ok(None),
                false => crate::db::accounts::find_by_customer(conn, &id).map(Some),
            }
        })
        .await?;
    // Read your writes: the holder's status shows the new set here at once
    // (a customer nobody holds made the trigger drop every answer).
    match changed {
        None => {}
        Some(Some(account)) => billing.forget_status(&account),
        Some(None) => billing.wrote_statuses(),
    }
    Ok(Read::Stored(keys))
}

/// Reads `customer`'s entitlements in a task of its own, if it is owed a
/// read (the caller recorded why, in Postgres, first). Returns at once. While
/// this instance has a read of the customer under way, it is run once more
/// after it instead. Shares the read budget of the other background reads.
pub(crate) fn refresh_in_background(billing: &Billing, customer: &CustomerId) {
    if billing.stripe.is_none() || !billing.entitlement_reads.start(customer) {
        return;
    }
    let (billing, customer) = (billing.clone(), customer.clone());
    // A plain tokio task, as the sweep's (see `sweep::spawn`): it outlives
    // the delivery that asked for it.
    tokio::spawn(async move {
        loop {
            // One background read at a time per instance: each holds a
            // connection of the lock pool while Stripe answers, and a slow
            // Stripe must not take them all from refreshes and re-reads.
            let turn = billing.entitlement_reads.turns.acquire().await;
            billing.read_budget.take().await;
            let read = read(&billing, &customer, Patience::Background, true).await;
            drop(turn);
            match &read {
                Ok(_) => billing.read_budget.succeeded(),
                Err(Error::Stripe(StripeFailure::RateLimited { .. })) => {
                    billing.read_budget.throttled();
                }
                Err(_) => {}
            }
            if let Err(e) = read {
                log::warn!(
                    "customer {customer}: reading its entitlements from Stripe failed; its \
                     features stay as last read until the next catch-up reads them: {e}"
                );
            }
            if !billing.entitlement_reads.finish(&customer) {
                break;
            }
        }
    });
}

/// What [`heal`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HealReport {
    /// Customers whose entitlements were read again.
    pub read: usize,
    /// Of those owed a read, how many could not be read (tried next run).
    pub failed: usize,
}

/// Reads again the entitlements of every customer owed a read (at most
/// [`PER_RUN`], within the read budget, stopping after
/// [`FAILURES_IN_A_ROW`] failures): the reads a webhook asked for that
/// failed, or that a process stopped before making. Run by the catch-up.
pub async fn heal(billing: &Billing) -> Result<HealReport, Error> {
    billing.stripe()?;
    let owed = db::run(&billing.pool, move |conn| {
        entitlements::stale(conn, PER_RUN)
    })
    .await?;
    let mut report = HealReport::default();
    let mut failing = 0;
    for customer in owed {
        if failing == FAILURES_IN_A_ROW {
            log::warn!(
                "entitlements: {FAILURES_IN_A_ROW} reads in a row failed; the rest wait for the \
                 next run"
            );
            break;
        }
        billing.read_budget.take().await;
        match read(billing, &customer, Patience::Background, true).await {
            Ok(Read::Stored(_)) => {
                billing.read_budget.succeeded();
                report.read += 1;
                failing = 0;
            }
            Ok(Read::NotOwed) => failing = 0,
            Err(e) => {
                if let Error::Stripe(StripeFailure::RateLimited { .. }) = e {
                    billing.read_budget.throttled();
                }
                log::warn!("customer {customer}: reading its entitlements failed: {e}");
                report.failed += 1;
                failing += 1;
            }
        }
    }
    Ok(report)
}

/// The background reads of this instance: the customers with one under way,
/// each with whether another was asked for meanwhile (holding only reads in
/// flight, so it never grows past them), and the one turn to read.
#[derive(Debug)]
pub struct Reads {
    in_flight: Mutex<HashMap<CustomerId, bool>>,
    turns: tokio::sync::Semaphore,
}

impl Default for Reads {
    fn default() -> Self {
        Self {
            in_flight: Mutex::default(),
            turns: tokio::sync::Semaphore::new(1),
        }
    }
}

impl Reads {
    /// Whether a read of `customer` may start now; if one is under way, it
    /// is told to run once more instead.
    fn start(&self, customer: &CustomerId) -> bool {
        let mut reads = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        match reads.get_mut(customer) {
            Some(again) => {
                *again = true;
                false
            }
            None => {
                reads.insert(customer.clone(), false);
                true
            }
        }
    }

    /// The read of `customer` is over: whether to run it once more.
    fn finish(&self, customer: &CustomerId) -> bool {
        let mut reads = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        match reads.get_mut(customer) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                reads.remove(customer);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_during_a_read_runs_it_once_more_and_then_it_ends() {
        let reads = Reads::default();
        let customer = CustomerId::from("cus_1");

        assert!(reads.start(&customer));
        assert!(!reads.start(&customer), "under way");
        assert!(!reads.start(&customer), "still under way");
        assert!(reads.finish(&customer), "asked for again: once more");
        assert!(!reads.finish(&customer), "nothing asked since");
        assert!(reads.start(&customer), "a new read");
    }
}
