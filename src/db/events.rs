//! The `stripe_events` table: one row per verified event, written in the same
//! transaction as the state change the event causes. Its primary key is what
//! turns a redelivery into a no-op.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::schema::stripe_events;
use crate::ids::EventId;

/// Claims the event id for this transaction. `false` means another delivery
/// already recorded it (or is recording it: the insert waits on that
/// transaction and then sees the conflict), so nothing must be applied.
pub fn claim(
    conn: &mut PgConnection,
    id: &EventId,
    type_: &str,
    created: DateTime<Utc>,
    outcome: &str,
) -> QueryResult<bool> {
    diesel::insert_into(stripe_events::table)
        .values((
            stripe_events::id.eq(id),
            stripe_events::type_.eq(type_),
            stripe_events::stripe_created_at.eq(created),
            stripe_events::outcome.eq(outcome),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .map(|inserted| inserted == 1)
}

pub fn set_outcome(conn: &mut PgConnection, id: &EventId, outcome: &str) -> QueryResult<()> {
    diesel::update(stripe_events::table.find(id))
        .set(stripe_events::outcome.eq(outcome))
        .execute(conn)
        .map(|_| ())
}

/// Deletes recorded events received before `cutoff`, in batches so no single
/// statement holds locks or bloats WAL for long. Returns how many went.
pub fn prune(conn: &mut PgConnection, cutoff: DateTime<Utc>, batch: i64) -> QueryResult<usize> {
    let mut total = 0;
    loop {
        let deleted = diesel::sql_query(
            "DELETE FROM stripe_events WHERE id IN ( \
                 SELECT id FROM stripe_events WHERE received_at < $1 LIMIT $2)",
        )
        .bind::<diesel::sql_types::Timestamptz, _>(cutoff)
        .bind::<diesel::sql_types::BigInt, _>(batch)
        .execute(conn)?;
        total += deleted;
        if deleted < batch as usize {
            return Ok(total);
        }
    }
}

pub fn exists(conn: &mut PgConnection, id: &EventId) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(stripe_events::table.find(id))).get_result(conn)
}
