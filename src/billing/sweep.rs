//! The grace sweep: a past-due grace period ends with no event from Stripe,
//! so time alone must turn `users.paid` off. Every [`SWEEP_INTERVAL`] (and at
//! once whenever the billing clock is advanced, in emulator mode) one instance
//! at a time — whichever wins a transaction-scoped Postgres advisory lock —
//! recomputes the flag of every user with a past-due subscription. The status
//! endpoint does not wait for it: it judges the stored subscriptions at the
//! moment it answers.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool};
use futures_util::future::{select, Either};

use super::Billing;
use crate::db::{self, accounts, DbError};

/// Well inside the promised minute between a grace ending and the flag
/// following, and cheap: one indexed statement over past-due subscriptions.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// An arbitrary constant naming this sweep's advisory lock.
const SWEEP_LOCK: i64 = 0x6269_6c6c_7377_6570; // "billswep"

/// Runs the sweep in the background for the life of the process.
pub(crate) fn spawn(billing: Billing) {
    // A plain tokio task (not actix's thread-local spawn): `Application::build`
    // runs under actix's runtime in `main` and under a bare tokio one in tests.
    tokio::spawn(async move {
        let mut seen = billing.clock.offset_secs();
        loop {
            let tick = Box::pin(tokio::time::sleep(SWEEP_INTERVAL));
            let advanced = Box::pin(billing.clock.advanced_since(seen));
            if let Either::Right(_) = select(tick, advanced).await {
                log::debug!("billing clock advanced: sweeping grace periods now");
            }
            // Read before the sweep, so an advance during it starts the next one.
            seen = billing.clock.offset_secs();
            match sweep_once(&billing).await {
                Ok(0) => {}
                Ok(n) => {
                    log::info!("grace sweep: {n} users' paid flag changed");
                    billing.metrics.grace_expirations.inc_by(n as u64);
                }
                Err(e) => log::warn!("grace sweep failed (retried next tick): {e}"),
            }
        }
    });
}

/// One sweep; returns how many users' flag changed (0 when another instance
/// holds the lock and does the work).
pub async fn sweep_once(billing: &Billing) -> Result<usize, DbError> {
    let (clock, rule) = (billing.clock.clone(), billing.rule);
    db::transaction(&billing.pool, move |conn| {
        let locked: bool = diesel::select(
            diesel::dsl::sql::<Bool>("pg_try_advisory_xact_lock(")
                .bind::<BigInt, _>(SWEEP_LOCK)
                .sql(")"),
        )
        .get_result(conn)?;
        if !locked {
            return Ok(0);
        }
        accounts::recompute_past_due(conn, &rule.at(clock.now()))
    })
    .await
}
