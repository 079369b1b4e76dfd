//! Fetch-and-store: reading a subscription's state from the Stripe API and
//! storing it, so that fetched state never goes backwards.
//!
//! Two reads of one customer's subscriptions can cross: a slower read that
//! started first would land last and overwrite newer state. So every
//! fetch-and-store holds a transaction-scoped Postgres advisory lock on the
//! customer from before the read until the store commits, which orders them
//! across all instances; and the store itself refuses a read that started
//! before newer state was written (see the `paid_correctness` migration).
//! The lock is held on the lock pool (`DATABASE_LOCK_POOL_SIZE`), never on
//! the main pool, since it is held while Stripe answers.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Text};
use diesel::RunQueryDsl;

use super::sync::{self, Fetched, Outcome};
use super::{Billing, Error};
use crate::db::{DbError, OpenTransaction};
use crate::ids::CustomerId;
use crate::stripe::events::{Event, EventKind};

/// The customer's fetch lock, held by an open transaction until
/// [`FetchLock::store`] commits or the lock is dropped (rolled back).
pub(crate) struct FetchLock {
    tx: OpenTransaction,
    /// When the read began, on the billing clock: after the lock was granted.
    pub(crate) started_at: DateTime<Utc>,
}

impl FetchLock {
    pub(crate) async fn acquire(
        billing: &Billing,
        customer_id: &CustomerId,
    ) -> Result<Self, DbError> {
        Self::acquire_named(billing, format!("billing-fetch:{customer_id}")).await
    }

    /// The lock named `key`: another lock per customer for another kind of
    /// read (`billing-entitlements:{customer}`), so that reads of one kind
    /// take turns without waiting on the other kind's.
    pub(crate) async fn acquire_named(billing: &Billing, key: String) -> Result<Self, DbError> {
        let mut tx = OpenTransaction::begin(&billing.locks).await?;
        tx.run_waiting(billing.lock_wait(), move |conn| {
            diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, $2))")
                .bind::<Text, _>(key)
                .bind::<BigInt, _>(0)
                .execute(conn)
        })
        .await?;
        Ok(Self {
            tx,
            started_at: billing.clock.now(),
        })
    }

    /// Runs `store` in the locked transaction and commits, releasing the lock.
    pub(crate) async fn store<T, F>(mut self, store: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut diesel::PgConnection) -> diesel::QueryResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let value = self.tx.run(store).await?;
        self.tx.commit().await?;
        Ok(value)
    }

    /// Runs `read` in the locked transaction, keeping the lock.
    pub(crate) async fn read<T, F>(&mut self, read: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut diesel::PgConnection) -> diesel::QueryResult<T> + Send + 'static,
        T: Send + 'static,
    {
        self.tx.run(read).await
    }

    /// Gives the lock back without storing anything.
    pub(crate) async fn release(self) {
        if let Err(e) = self.tx.rollback().await {
            log::warn!("releasing a fetch lock failed (the connection is discarded): {e}");
        }
    }
}

/// Re-reads the subscription of a subscription event from Stripe and applies
/// the event with what was read, under the customer's fetch lock. Used when
/// `STRIPE_WEBHOOK_REFETCH` is on, and whenever an event cannot be ordered
/// against the stored state ([`Outcome::Undecidable`]) whatever that says.
pub(crate) async fn apply_event_refetched(
    billing: &Billing,
    event: Arc<Event>,
) -> Result<Outcome, Error> {
    let EventKind::Subscription(payload, _) = &event.kind else {
        // Nothing to re-read: only subscription events are ever undecidable.
        let (rule, clock) = (billing.rule, billing.clock.clone());
        let key = billing.client_reference.clone();
        let (outcome, touched) = crate::db::run(&billing.pool, move |conn| {
            sync::apply_event(conn, &event, None, &key, rule, clock.now())
        })
        .await?;
        billing.touched(&touched);
        return Ok(outcome);
    };
    let stripe = billing.stripe()?;
    let lock = FetchLock::acquire(billing, &payload.customer_id).await?;
    let subscription = match stripe.retrieve_subscription(&payload.id).await {
        Ok(subscription) => subscription,
        Err(failure) => {
            lock.release().await;
            return Err(failure.into());
        }
    };
    let fresh = Fetched {
        subscription,
        started_at: lock.started_at,
    };
    let (rule, clock) = (billing.rule, billing.clock.clone());
    let key = billing.client_reference.clone();
    let (outcome, touched) = lock
        .store(move |conn| sync::apply_event(conn, &event, Some(&fresh), &key, rule, clock.now()))
        .await?;
    billing.touched(&touched);
    Ok(outcome)
}
