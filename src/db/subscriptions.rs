//! The `subscriptions` table: the last known state of each Stripe
//! subscription, guarded so an older event never overwrites newer state.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Nullable, Text, Timestamptz};

use super::schema::subscriptions;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = subscriptions)]
pub struct Subscription {
    pub id: String,
    pub customer_id: String,
    pub user_id: Option<String>,
    pub status: String,
    pub price_id: Option<String>,
    pub product_id: Option<String>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub last_event_at: DateTime<Utc>,
}

/// A subscription state to store, as of the Stripe time `as_of`.
pub struct SubscriptionState<'a> {
    pub id: &'a str,
    pub customer_id: &'a str,
    pub user_id: Option<&'a str>,
    pub status: &'a str,
    pub price_id: Option<&'a str>,
    pub product_id: Option<&'a str>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub as_of: DateTime<Utc>,
}

/// Stores `state` unless the row already holds newer state, and returns
/// whether it was stored. Newer means a later Stripe time; within the same
/// second (where `created` cannot order events) a terminal status already
/// stored is never undone. `authoritative` state (just fetched from the API)
/// is stored whatever its time, since it is current by definition.
pub fn upsert_if_newer(
    conn: &mut PgConnection,
    state: &SubscriptionState<'_>,
    authoritative: bool,
) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Stored {
        #[diesel(sql_type = Text)]
        #[allow(dead_code)]
        id: String,
    }
    let stored: Option<Stored> = diesel::sql_query(
        "INSERT INTO subscriptions AS s (id, customer_id, user_id, status, price_id, product_id, \
             current_period_end, cancel_at_period_end, last_event_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (id) DO UPDATE SET \
             customer_id = EXCLUDED.customer_id, \
             user_id = COALESCE(EXCLUDED.user_id, s.user_id), \
             status = EXCLUDED.status, \
             price_id = EXCLUDED.price_id, \
             product_id = EXCLUDED.product_id, \
             current_period_end = EXCLUDED.current_period_end, \
             cancel_at_period_end = EXCLUDED.cancel_at_period_end, \
             last_event_at = GREATEST(s.last_event_at, EXCLUDED.last_event_at), \
             updated_at = now() \
         WHERE $10 \
            OR s.last_event_at < EXCLUDED.last_event_at \
            OR (s.last_event_at = EXCLUDED.last_event_at \
                AND s.status NOT IN ('canceled', 'incomplete_expired')) \
         RETURNING s.id",
    )
    .bind::<Text, _>(state.id)
    .bind::<Text, _>(state.customer_id)
    .bind::<Nullable<Text>, _>(state.user_id)
    .bind::<Text, _>(state.status)
    .bind::<Nullable<Text>, _>(state.price_id)
    .bind::<Nullable<Text>, _>(state.product_id)
    .bind::<Nullable<Timestamptz>, _>(state.current_period_end)
    .bind::<Bool, _>(state.cancel_at_period_end)
    .bind::<Timestamptz, _>(state.as_of)
    .bind::<Bool, _>(authoritative)
    .get_result(conn)
    .optional()?;
    Ok(stored.is_some())
}

/// Every subscription of a deleted customer ends: Stripe cancels them with
/// the customer. Returns the users whose paid flag must be recomputed.
pub fn cancel_all_of_customer(
    conn: &mut PgConnection,
    customer_id: &str,
    as_of: DateTime<Utc>,
) -> QueryResult<Vec<String>> {
    diesel::update(subscriptions::table.filter(subscriptions::customer_id.eq(customer_id)))
        .set((
            subscriptions::status.eq("canceled"),
            subscriptions::cancel_at_period_end.eq(false),
            subscriptions::last_event_at.eq(diesel::dsl::sql::<Timestamptz>(
                "GREATEST(last_event_at, ",
            )
            .bind::<Timestamptz, _>(as_of)
            .sql(")")),
            subscriptions::updated_at.eq(diesel::dsl::now),
        ))
        .returning(subscriptions::user_id)
        .get_results::<Option<String>>(conn)
        .map(|users| users.into_iter().flatten().collect())
}

/// Attaches the customer's so far unlinked subscriptions to `user_id`.
pub fn link_customer(
    conn: &mut PgConnection,
    customer_id: &str,
    user_id: &str,
) -> QueryResult<usize> {
    diesel::update(
        subscriptions::table
            .filter(subscriptions::customer_id.eq(customer_id))
            .filter(subscriptions::user_id.is_null()),
    )
    .set(subscriptions::user_id.eq(user_id))
    .execute(conn)
}

pub fn of_user(conn: &mut PgConnection, user_id: &str) -> QueryResult<Vec<Subscription>> {
    subscriptions::table
        .filter(subscriptions::user_id.eq(user_id))
        .select(Subscription::as_select())
        .load(conn)
}

pub fn find(conn: &mut PgConnection, id: &str) -> QueryResult<Option<Subscription>> {
    subscriptions::table
        .find(id)
        .select(Subscription::as_select())
        .first(conn)
        .optional()
}
