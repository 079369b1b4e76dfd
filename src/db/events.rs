//! The `stripe_events` table: one row per verified event, written in the same
//! transaction as the state change the event causes. Its primary key is what
//! turns a redelivery into a no-op.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use diesel::sql_types::{Bool, Nullable, Text, Timestamptz};

use super::schema::stripe_events;
use crate::ids::{AccountId, CustomerId, EventId};

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

/// [`claim`], and the account holding `customer` (as [`super::accounts::find_by_customer`]
/// reads it), in one statement: one round trip fewer for every subscription
/// event. `None` when the event was already claimed.
pub fn claim_with_holder(
    conn: &mut PgConnection,
    id: &EventId,
    type_: &str,
    created: DateTime<Utc>,
    outcome: &str,
    customer: &CustomerId,
) -> QueryResult<Option<Option<AccountId>>> {
    #[derive(QueryableByName)]
    struct Claim {
        #[diesel(sql_type = Bool)]
        claimed: bool,
        #[diesel(sql_type = Nullable<Text>)]
        holder: Option<AccountId>,
    }
    let claim: Claim = diesel::sql_query(
        "WITH claimed AS ( \
             INSERT INTO stripe_events (id, type, stripe_created_at, outcome) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1) \
         SELECT EXISTS (SELECT 1 FROM claimed) AS claimed, \
                (SELECT id FROM accounts WHERE stripe_customer_id = $5 LIMIT 1) AS holder",
    )
    .bind::<Text, _>(id)
    .bind::<Text, _>(type_)
    .bind::<Timestamptz, _>(created)
    .bind::<Text, _>(outcome)
    .bind::<Text, _>(customer)
    .get_result(conn)?;
    Ok(claim.claimed.then_some(claim.holder))
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

/// The Stripe `created` time of the newest event recorded, if any.
pub fn newest_created(conn: &mut PgConnection) -> QueryResult<Option<DateTime<Utc>>> {
    stripe_events::table
        .select(diesel::dsl::max(stripe_events::stripe_created_at))
        .get_result(conn)
}

/// Where the next catch-up starts, if a run has claimed a starting point.
pub fn catchup_since(conn: &mut PgConnection) -> QueryResult<Option<DateTime<Utc>>> {
    use super::schema::stripe_catchup;
    stripe_catchup::table
        .select(stripe_catchup::next_since)
        .first(conn)
        .optional()
}

/// The first run's claim: runs start at `since` until one completes.
/// Returns the starting point in force (another run's, if it claimed first).
pub fn claim_catchup_since(
    conn: &mut PgConnection,
    since: DateTime<Utc>,
) -> QueryResult<DateTime<Utc>> {
    use super::schema::stripe_catchup::dsl;
    diesel::insert_into(dsl::stripe_catchup)
        .values(dsl::next_since.eq(since))
        .on_conflict_do_nothing()
        .execute(conn)?;
    dsl::stripe_catchup.select(dsl::next_since).first(conn)
}

/// Records a completed run that listed everything created from `from` on:
/// the next run starts at `next`, unless this run began after the point in
/// force (a `--since` run over a later range leaves the gap before it to the
/// next run). `next` may be earlier than the point in force (one a clock
/// that ran ahead recorded): this run covered everything from `from`.
pub fn complete_catchup(
    conn: &mut PgConnection,
    from: DateTime<Utc>,
    next: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    applied: usize,
) -> QueryResult<()> {
    use super::schema::stripe_catchup::dsl;
    let applied = i32::try_from(applied).unwrap_or(i32::MAX);
    diesel::update(dsl::stripe_catchup)
        .set((
            dsl::next_since.eq(diesel::dsl::sql::<diesel::sql_types::Timestamptz>(
                "CASE WHEN next_since >= ",
            )
            .bind::<diesel::sql_types::Timestamptz, _>(from)
            .sql(" THEN ")
            .bind::<diesel::sql_types::Timestamptz, _>(next)
            .sql(" ELSE next_since END")),
            dsl::finished_at.eq(finished_at),
            dsl::applied.eq(applied),
        ))
        .execute(conn)
        .map(|_| ())
}
