//! The healing task: at start-up and every `STRIPE_CATCHUP_INTERVAL_SECS`
//! (and at once whenever the billing clock is advanced, in emulator mode),
//! one instance at a time, whichever wins a Postgres advisory lock, runs the
//! catch-up from the Events API ([`super::catchup`]) and then the drift
//! check ([`super::drift`]). Either failing is logged, counted in
//! `/metrics`, and retried on the next tick; the drift check runs even when
//! the catch-up failed, since it does not depend on the Events API.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool};
use futures_util::future::{select, Either};

use super::catchup::{self, Since};
use super::{drift, Billing};
use crate::db::DbError;
use crate::metrics::RunOutcome;

/// An arbitrary constant naming the healing task's advisory lock.
const HEALING_LOCK: i64 = 0x6269_6c6c_6865_616c; // "billheal"

/// The healing lock: a session-level advisory lock on a connection of its
/// own, outside both pools, so a run of any length takes no place that
/// requests, customer creations or re-reads need. Closing the connection
/// (release, or the process dying) releases it.
pub struct HealingLock {
    conn: diesel::PgConnection,
    pool: crate::db::PgPool,
}

impl HealingLock {
    /// The lock, or `None` when another instance (or command) holds it.
    pub async fn try_acquire(billing: &Billing) -> Result<Option<Self>, DbError> {
        let conn = billing.pool.connect_apart().await?;
        let (conn, locked) = billing
            .pool
            .run_apart(conn, |conn| {
                diesel::select(
                    diesel::dsl::sql::<Bool>("pg_try_advisory_lock(")
                        .bind::<BigInt, _>(HEALING_LOCK)
                        .sql(")"),
                )
                .get_result::<bool>(conn)
            })
            .await?;
        Ok(locked.then(|| Self {
            conn,
            pool: billing.pool.clone(),
        }))
    }

    /// Gives the lock back and closes its connection.
    pub async fn release(self) {
        let unlocked = self
            .pool
            .run_apart(self.conn, |conn| {
                diesel::select(
                    diesel::dsl::sql::<Bool>("pg_advisory_unlock(")
                        .bind::<BigInt, _>(HEALING_LOCK)
                        .sql(")"),
                )
                .get_result::<bool>(conn)
            })
            .await;
        // Either way the connection is closed here, and its session's locks with it.
        if let Err(e) = unlocked {
            log::warn!("releasing the healing lock failed (its connection is closed): {e}");
        }
    }
}

/// Runs the task in the background for the life of the process; `None`
/// (`STRIPE_CATCHUP_INTERVAL_SECS=0`) runs nothing.
pub(crate) fn spawn(billing: Billing, interval: Option<Duration>) {
    let Some(interval) = interval else {
        log::warn!(
            "STRIPE_CATCHUP_INTERVAL_SECS=0: no catch-up from the Events API and no drift check; \
             missed webhooks are repaired only by the `sync` or `catchup` command"
        );
        return;
    };
    if billing.stripe.is_none() {
        return;
    }
    // A plain tokio task, as the sweep's (see `sweep::spawn`).
    tokio::spawn(async move {
        loop {
            // Read before the run, so an advance during it starts the next one.
            let seen = billing.clock.offset_secs();
            heal_once(&billing).await;
            let tick = Box::pin(tokio::time::sleep(interval));
            let advanced = Box::pin(billing.clock.advanced_since(seen));
            if let Either::Right(_) = select(tick, advanced).await {
                log::debug!("billing clock advanced: catching up and checking for drift now");
            }
        }
    });
}

/// One catch-up and drift check, if this instance wins the lock.
pub(crate) async fn heal_once(billing: &Billing) {
    let metrics = &billing.metrics.healing;
    let lock = match HealingLock::try_acquire(billing).await {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            metrics.catchup_run(RunOutcome::Skipped);
            return;
        }
        Err(e) => {
            log::warn!("catch-up: could not take the healing lock (retried next tick): {e}");
            metrics.catchup_run(RunOutcome::Failed);
            return;
        }
    };
    match catchup::run(billing, Since::Auto, |_| {}).await {
        Ok(report) => {
            metrics.catchup_run(RunOutcome::Ok);
            if report.applied > 0 || report.skipped > 0 {
                log::info!(
                    "catch-up: {} events listed, {} applied that no delivery brought, {} skipped",
                    report.listed,
                    report.applied,
                    report.skipped
                );
            }
        }
        Err(e) => {
            metrics.catchup_run(RunOutcome::Failed);
            log::warn!("catch-up failed (retried next tick): {e}");
        }
    }
    match drift::run(billing).await {
        Ok(report) if report.checked > 0 => log::info!(
            "drift check: {} subscriptions re-read, {} repaired, {} failed",
            report.checked,
            report.repaired,
            report.failed
        ),
        Ok(_) => {}
        Err(e) => log::warn!("drift check failed (retried next tick): {e}"),
    }
    lock.release().await;
}
