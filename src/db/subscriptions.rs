//! The `subscriptions` table: the last known state of each Stripe
//! subscription, guarded so an older event, or an older fetch, never
//! overwrites newer state.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Jsonb, Nullable, Text, Timestamptz};

use super::schema::subscriptions;
use crate::ids::{AccountId, CustomerId, SubscriptionId};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = subscriptions)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub customer_id: CustomerId,
    pub user_id: Option<AccountId>,
    pub status: String,
    pub price_id: Option<String>,
    pub product_id: Option<String>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub last_event_at: DateTime<Utc>,
    pub cancel_at: Option<DateTime<Utc>>,
    pub pause_behavior: Option<String>,
    pub pause_resumes_at: Option<DateTime<Utc>>,
    pub past_due_since: Option<DateTime<Utc>>,
    pub synced_at: DateTime<Utc>,
}

/// A subscription state to store: the one mapping of a Stripe subscription
/// to a row (`billing::sync::state_of` builds it).
pub struct SubscriptionState<'a> {
    pub id: &'a SubscriptionId,
    pub customer_id: &'a CustomerId,
    pub user_id: Option<&'a AccountId>,
    pub status: &'a str,
    pub price_id: Option<&'a str>,
    pub product_id: Option<&'a str>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<DateTime<Utc>>,
    pub pause_behavior: Option<&'a str>,
    pub pause_resumes_at: Option<DateTime<Utc>>,
}

impl SubscriptionState<'_> {
    /// Whether storing this state would change `row`'s Stripe fields (the
    /// user link and bookkeeping columns aside).
    pub fn differs_from(&self, row: &Subscription) -> bool {
        row.status != self.status
            || row.customer_id != *self.customer_id
            || row.price_id.as_deref() != self.price_id
            || row.product_id.as_deref() != self.product_id
            || row.current_period_end != self.current_period_end
            || row.cancel_at_period_end != self.cancel_at_period_end
            || row.cancel_at != self.cancel_at
            || row.pause_behavior.as_deref() != self.pause_behavior
            || row.pause_resumes_at != self.pause_resumes_at
    }
}

/// Where a state comes from, which decides how it is ordered against the stored one.
pub enum Provenance<'a> {
    /// A webhook payload: as of the event's `created` second, with the event's
    /// `previous_attributes` (reduced, see `stripe::events::PreviousAttributes`).
    Event {
        created: DateTime<Utc>,
        previous: &'a serde_json::Map<String, serde_json::Value>,
    },
    /// Read from the API by a fetch that started at `started_at` (billing clock).
    Fetch { started_at: DateTime<Utc> },
}

/// What [`store`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Applied,
    /// Older than (or the same as) what is stored; nothing written.
    Stale,
    /// Same-second events that cannot be ordered; nothing written, the caller
    /// re-reads the subscription from Stripe.
    Undecidable,
}

/// The paid rule's parameters as the SQL side takes them.
pub struct RuleParams {
    pub now: DateTime<Utc>,
    pub grace_secs: i64,
    pub collection_paused_is_paid: bool,
}

#[diesel::declare_sql_function]
extern "SQL" {
    /// Defined by the `paid_correctness` migration, which gives the ordering
    /// rules; the `prepared_sync_functions` one says why they live in Postgres.
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
        cancel_at: Nullable<Timestamptz>,
        pause_behavior: Nullable<Text>,
        pause_resumes_at: Nullable<Timestamptz>,
        as_of: Timestamptz,
        fetched_at: Nullable<Timestamptz>,
        previous: Nullable<Jsonb>,
        now: Timestamptz,
        grace_secs: BigInt,
        paused_is_paid: Bool,
    ) -> Text;
}

/// Stores `state` unless the row already holds newer state (the rules are in
/// the migration that defines `billing_store_subscription`), and recomputes
/// the user's paid flag in the same statement: one prepared round trip for
/// the whole effect of a subscription event.
pub fn store(
    conn: &mut PgConnection,
    state: &SubscriptionState<'_>,
    provenance: &Provenance<'_>,
    rule: &RuleParams,
) -> QueryResult<Stored> {
    let (as_of, fetched_at, previous) = match provenance {
        Provenance::Event { created, previous } => (
            *created,
            None,
            Some(serde_json::Value::Object((*previous).clone())),
        ),
        // A fetch is as of the second it started: an event of an earlier
        // second is certainly older than what it read.
        Provenance::Fetch { started_at } => (
            DateTime::from_timestamp(started_at.timestamp(), 0).unwrap_or(*started_at),
            Some(*started_at),
            None,
        ),
    };
    let outcome: String = diesel::select(billing_store_subscription(
        state.id,
        state.customer_id,
        state.user_id,
        state.status,
        state.price_id,
        state.product_id,
        state.current_period_end,
        state.cancel_at_period_end,
        state.cancel_at,
        state.pause_behavior,
        state.pause_resumes_at,
        as_of,
        fetched_at,
        previous,
        rule.now,
        rule.grace_secs,
        rule.collection_paused_is_paid,
    ))
    .get_result(conn)?;
    Ok(match outcome.as_str() {
        "applied" => Stored::Applied,
        "stale" => Stored::Stale,
        _ => Stored::Undecidable,
    })
}

/// Every subscription of a deleted customer ends: Stripe cancels them with
/// the customer. Returns the users whose paid flag must be recomputed.
pub fn cancel_all_of_customer(
    conn: &mut PgConnection,
    customer_id: &CustomerId,
    as_of: DateTime<Utc>,
) -> QueryResult<Vec<AccountId>> {
    diesel::update(subscriptions::table.filter(subscriptions::customer_id.eq(customer_id)))
        .set((
            subscriptions::status.eq("canceled"),
            subscriptions::cancel_at_period_end.eq(false),
            subscriptions::cancel_at.eq(None::<DateTime<Utc>>),
            subscriptions::past_due_since.eq(None::<DateTime<Utc>>),
            subscriptions::last_event_at.eq(diesel::dsl::sql::<Timestamptz>(
                "GREATEST(last_event_at, ",
            )
            .bind::<Timestamptz, _>(as_of)
            .sql(")")),
            subscriptions::updated_at.eq(diesel::dsl::now),
        ))
        .returning(subscriptions::user_id)
        .get_results::<Option<AccountId>>(conn)
        .map(|users| users.into_iter().flatten().collect())
}

/// Gives every subscription of `customer_id` to `user_id`, who now holds the
/// customer: those stored without a user (their events came first) and those
/// `metadata.user_id` gave to someone else. Returns how many moved and the
/// users they moved from, whose paid flag the caller recomputes.
pub fn link_customer(
    conn: &mut PgConnection,
    customer_id: &CustomerId,
    user_id: &AccountId,
) -> QueryResult<Linked> {
    // Locked, so the holders read are the ones the update replaces.
    let rows: Vec<(SubscriptionId, Option<AccountId>)> = subscriptions::table
        .filter(subscriptions::customer_id.eq(customer_id))
        .filter(subscriptions::user_id.is_distinct_from(user_id))
        .select((subscriptions::id, subscriptions::user_id))
        .for_update()
        .load(conn)?;
    if rows.is_empty() {
        return Ok(Linked::default());
    }
    let ids: Vec<&SubscriptionId> = rows.iter().map(|(id, _)| id).collect();
    diesel::update(subscriptions::table.filter(subscriptions::id.eq_any(ids)))
        .set(subscriptions::user_id.eq(user_id))
        .execute(conn)?;
    let mut previous: Vec<AccountId> = rows.iter().filter_map(|(_, user)| user.clone()).collect();
    previous.sort();
    previous.dedup();
    Ok(Linked {
        moved: rows.len(),
        previous_holders: previous,
    })
}

/// What [`link_customer`] did.
#[derive(Debug, Default)]
pub struct Linked {
    pub moved: usize,
    /// Users who held some of those subscriptions before.
    pub previous_holders: Vec<AccountId>,
}

pub fn of_user(conn: &mut PgConnection, user_id: &AccountId) -> QueryResult<Vec<Subscription>> {
    subscriptions::table
        .filter(subscriptions::user_id.eq(user_id))
        .select(Subscription::as_select())
        .load(conn)
}

pub fn find(conn: &mut PgConnection, id: &SubscriptionId) -> QueryResult<Option<Subscription>> {
    subscriptions::table
        .find(id)
        .select(Subscription::as_select())
        .first(conn)
        .optional()
}

/// Subscriptions that keep a user paid although their period ended more than
/// `overdue` before `now` (so no renewal reached the service: a renewal moves
/// the period end forward), leaving out those the drift check re-read within
/// the last `overdue`; oldest period end first, at most `limit`.
pub fn drifting(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    overdue: chrono::Duration,
    limit: i64,
) -> QueryResult<Vec<Subscription>> {
    use super::schema::accounts;
    let before = now - overdue;
    subscriptions::table
        .inner_join(accounts::table)
        .filter(accounts::paid)
        .filter(subscriptions::status.eq_any(["active", "trialing", "past_due"]))
        .filter(subscriptions::current_period_end.lt(before))
        .filter(
            subscriptions::drift_checked_at
                .is_null()
                .or(subscriptions::drift_checked_at.lt(before)),
        )
        .order(subscriptions::current_period_end.asc())
        .limit(limit)
        .select(Subscription::as_select())
        .load(conn)
}

/// Notes that the drift check re-read `id` at `now`.
pub fn mark_drift_checked(
    conn: &mut PgConnection,
    id: &SubscriptionId,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::update(subscriptions::table.find(id))
        .set(subscriptions::drift_checked_at.eq(now))
        .execute(conn)
        .map(|_| ())
}
