//! The `subscriptions` table: the last known state of each Stripe
//! subscription, guarded so an older event never overwrites newer state.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Nullable, Text, Timestamptz};

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

#[diesel::declare_sql_function]
extern "SQL" {
    /// Defined by the `prepared_sync_functions` migration, which says why
    /// these statements live in Postgres.
    #[allow(clippy::too_many_arguments)]
    fn billing_store_subscription(
        id: Text,
        customer_id: Text,
        user_id: Nullable<Text>,
        status: Text,
        price_id: Nullable<Text>,
        product_id: Nullable<Text>,
        current_period_end: Nullable<Timestamptz>,
        cancel_at_period_end: Bool,
        as_of: Timestamptz,
        authoritative: Bool,
        paid_statuses: Array<Text>,
    ) -> Bool;
}

/// Stores `state` unless the row already holds newer state, and returns
/// whether it was stored. Newer means a later Stripe time; within the same
/// second (where `created` cannot order events) a terminal status already
/// stored is never undone. `authoritative` state (just fetched from the API)
/// is stored whatever its time, since it is current by definition.
///
/// When stored for a user, that user's paid flag is recomputed from
/// `paid_statuses` in the same statement: one prepared round trip for the
/// whole effect of a subscription event.
pub fn store_if_newer(
    conn: &mut PgConnection,
    state: &SubscriptionState<'_>,
    authoritative: bool,
    paid_statuses: &[&str],
) -> QueryResult<bool> {
    diesel::select(billing_store_subscription(
        state.id,
        state.customer_id,
        state.user_id,
        state.status,
        state.price_id,
        state.product_id,
        state.current_period_end,
        state.cancel_at_period_end,
        state.as_of,
        authoritative,
        paid_statuses,
    ))
    .get_result(conn)
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
