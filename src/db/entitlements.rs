//! The `stripe_entitlements` table: each Stripe customer's active
//! entitlements as the sorted, distinct lookup keys of their features, keyed
//! by customer id alone (whoever holds the customer), plus whether a re-read
//! is owed (`requested > satisfied`, see the migration).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;

use super::schema::stripe_entitlements as ent;
use crate::ids::CustomerId;

/// Records that `customer`'s entitlements may have changed and must be read
/// again; call in the transaction that records why (its event). Answers the
/// customer's new `requested` count.
pub fn mark_stale(conn: &mut PgConnection, customer: &CustomerId) -> QueryResult<i64> {
    diesel::insert_into(ent::table)
        .values((ent::customer_id.eq(customer), ent::requested.eq(1_i64)))
        .on_conflict(ent::customer_id)
        .do_update()
        .set(ent::requested.eq(ent::requested + 1_i64))
        .returning(ent::requested)
        .get_result(conn)
}

/// How many re-reads of `customer` were asked for so far (0 for a customer
/// never seen): what a read beginning now covers.
pub fn requested(conn: &mut PgConnection, customer: &CustomerId) -> QueryResult<i64> {
    Ok(ent::table
        .find(customer)
        .select(ent::requested)
        .first(conn)
        .optional()?
        .unwrap_or(0))
}

/// Whether `customer`'s stored set is owed a re-read.
pub fn is_stale(conn: &mut PgConnection, customer: &CustomerId) -> QueryResult<bool> {
    Ok(ent::table
        .find(customer)
        .select(ent::requested.gt(ent::satisfied))
        .first(conn)
        .optional()?
        .unwrap_or(false))
}

/// Replaces `customer`'s whole set with `lookup_keys` (sorted and made
/// distinct here), as read from Stripe by a read that began at `synced_at`
/// after `seen` re-reads had been asked for.
pub fn store(
    conn: &mut PgConnection,
    customer: &CustomerId,
    lookup_keys: &[String],
    synced_at: DateTime<Utc>,
    seen: i64,
) -> QueryResult<()> {
    let mut keys = lookup_keys.to_vec();
    keys.sort();
    keys.dedup();
    diesel::insert_into(ent::table)
        .values((
            ent::customer_id.eq(customer),
            ent::lookup_keys.eq(&keys),
            ent::synced_at.eq(synced_at),
            ent::satisfied.eq(seen),
            ent::requested.eq(seen),
        ))
        .on_conflict(ent::customer_id)
        .do_update()
        .set((
            ent::lookup_keys.eq(excluded(ent::lookup_keys)),
            ent::synced_at.eq(excluded(ent::synced_at)),
            ent::satisfied.eq(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "GREATEST(stripe_entitlements.satisfied, EXCLUDED.satisfied)",
            )),
        ))
        .execute(conn)
        .map(|_| ())
}

/// `customer`'s features: the lookup keys of its active entitlements,
/// sorted; empty for a customer never read.
pub fn features_of(conn: &mut PgConnection, customer: &CustomerId) -> QueryResult<Vec<String>> {
    Ok(ent::table
        .find(customer)
        .select(ent::lookup_keys)
        .first(conn)
        .optional()?
        .unwrap_or_default())
}

/// Up to `limit` customers owed a re-read, longest-owed first by customer id
/// (any stable order does: each run takes the next ones).
pub fn stale(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<CustomerId>> {
    ent::table
        .filter(ent::requested.gt(ent::satisfied))
        .select(ent::customer_id)
        .order(ent::customer_id)
        .limit(limit)
        .load::<String>(conn)
        .map(|ids| ids.into_iter().map(CustomerId::from).collect())
}

/// Forgets a customer Stripe deleted: it entitles nobody to anything.
pub fn forget(conn: &mut PgConnection, customer: &CustomerId) -> QueryResult<()> {
    diesel::delete(ent::table.find(customer))
        .execute(conn)
        .map(|_| ())
}

/// Forgets the customers `ids` (the emulator's, on `emulator-reset`).
pub fn forget_all(conn: &mut PgConnection, ids: &[String]) -> QueryResult<usize> {
    diesel::delete(ent::table.filter(ent::customer_id.eq_any(ids))).execute(conn)
}
