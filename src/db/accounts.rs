//! The `accounts` table: what is billed, a user (keyed by their JWT `sub`) or
//! an organisation (keyed `org:<org_id>`; see [`AccountId`]), with its Stripe
//! customer id and its paid flag. `users` and `organizations` are views of it
//! for apps (the `accounts` migration).

use chrono::{DateTime, TimeDelta, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text, Timestamptz};

use super::catalogue::{Price, Product};
use super::schema::{accounts, stripe_prices, stripe_products, subscriptions};
use super::subscriptions::{RuleParams, Subscription};
use crate::ids::{AccountId, CustomerId};

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = accounts)]
pub struct Account {
    pub id: AccountId,
    /// A user account's email, from their token; none for an organisation
    /// (its members' emails are theirs, not its own).
    pub email: Option<String>,
    /// An organisation's name, from its members' tokens (`org_name`).
    pub name: Option<String>,
    pub stripe_customer_id: Option<CustomerId>,
    pub paid: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a request knows of its account, kept current on the row: a user
/// account's email, an organisation's name (`None`: unknown, keep the row's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Known<'a> {
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
}

impl Known<'_> {
    /// Whether `row` already says all this.
    pub fn matches(&self, row: &Account) -> bool {
        (self.email.is_none() || row.email.as_deref() == self.email)
            && (self.name.is_none() || row.name.as_deref() == self.name)
    }
}

impl Known<'_> {
    /// An owned copy, for a closure run on the database's threads.
    pub fn to_owned(self) -> KnownOwned {
        KnownOwned {
            email: self.email.map(str::to_owned),
            name: self.name.map(str::to_owned),
        }
    }
}

/// [`Known`], owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownOwned {
    pub email: Option<String>,
    pub name: Option<String>,
}

impl KnownOwned {
    pub fn borrow(&self) -> Known<'_> {
        Known {
            email: self.email.as_deref(),
            name: self.name.as_deref(),
        }
    }
}

/// Inserts the account on first sight and keeps what the request knows of it
/// current. The common case, a known account with nothing new, is one
/// prepared `SELECT` (Diesel never prepares upserts); an unchanged row is
/// never rewritten.
pub fn upsert(conn: &mut PgConnection, id: &AccountId, known: Known<'_>) -> QueryResult<Account> {
    if let Some(account) = find(conn, id)? {
        if known.matches(&account) {
            return Ok(account);
        }
    }
    insert_or_update(conn, id, known)
}

/// The write half of [`upsert`], for a caller that has already read the row
/// and found it missing or with another email.
pub fn insert_or_update(
    conn: &mut PgConnection,
    id: &AccountId,
    known: Known<'_>,
) -> QueryResult<Account> {
    match upsert_statement(conn, id, known).optional()? {
        Some(user) => Ok(user),
        // A concurrent first request inserted the row after this statement's
        // snapshot was taken: the conflict made our insert a no-op and the
        // fallback SELECT could not see the row yet. A new statement can.
        None => find(conn, id)?.ok_or(diesel::result::Error::NotFound),
    }
}

fn upsert_statement(
    conn: &mut PgConnection,
    id: &AccountId,
    known: Known<'_>,
) -> QueryResult<Account> {
    diesel::sql_query(
        "WITH up AS ( \
             INSERT INTO accounts (id, kind, email, name) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET email = COALESCE(EXCLUDED.email, accounts.email), \
                                            name = COALESCE(EXCLUDED.name, accounts.name), \
                                            updated_at = now() \
             WHERE (EXCLUDED.email IS NOT NULL AND accounts.email IS DISTINCT FROM EXCLUDED.email) \
                OR (EXCLUDED.name IS NOT NULL AND accounts.name IS DISTINCT FROM EXCLUDED.name) \
             RETURNING * \
         ) \
         SELECT * FROM up \
         UNION ALL \
         SELECT * FROM accounts WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM up)",
    )
    .bind::<Text, _>(id)
    .bind::<Text, _>(id.kind().as_str())
    .bind::<Nullable<Text>, _>(known.email)
    .bind::<Nullable<Text>, _>(known.name)
    .get_result(conn)
}

/// The user's customer id (the user must exist).
pub fn customer_id(conn: &mut PgConnection, id: &AccountId) -> QueryResult<Option<CustomerId>> {
    accounts::table
        .find(id)
        .select(accounts::stripe_customer_id)
        .get_result(conn)
}

/// The user's customer id, and the attempt at creating one the next request
/// makes (its idempotency key ends in it).
pub fn customer_and_key_attempt(
    conn: &mut PgConnection,
    id: &AccountId,
) -> QueryResult<(Option<CustomerId>, i32)> {
    accounts::table
        .find(id)
        .select((accounts::stripe_customer_id, accounts::customer_key_attempt))
        .get_result(conn)
}

/// Moves the user's customer creation on to its next attempt, after Stripe
/// saved a failure under the current one's key.
pub fn next_customer_key_attempt(conn: &mut PgConnection, id: &AccountId) -> QueryResult<()> {
    diesel::update(accounts::table.find(id))
        .set(accounts::customer_key_attempt.eq(accounts::customer_key_attempt + 1))
        .execute(conn)
        .map(drop)
}

/// The user's Checkout Session that may still be open: its id, the price it
/// sells and its hosted page.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct OpenCheckout {
    pub session_id: String,
    pub price: String,
    pub url: String,
}

/// The user's [`OpenCheckout`], if one is recorded.
pub fn open_checkout(conn: &mut PgConnection, id: &AccountId) -> QueryResult<Option<OpenCheckout>> {
    let row: Option<(Option<String>, Option<String>, Option<String>)> = accounts::table
        .find(id)
        .select((
            accounts::checkout_session_id,
            accounts::checkout_session_price,
            accounts::checkout_session_url,
        ))
        .get_result(conn)
        .optional()?;
    Ok(match row {
        Some((Some(session_id), Some(price), Some(url))) => Some(OpenCheckout {
            session_id,
            price,
            url,
        }),
        _ => None,
    })
}

/// Records `open` as the user's Checkout Session (`None`: none is open).
pub fn set_open_checkout(
    conn: &mut PgConnection,
    id: &AccountId,
    open: Option<&OpenCheckout>,
) -> QueryResult<()> {
    diesel::update(accounts::table.find(id))
        .set((
            accounts::checkout_session_id.eq(open.map(|o| o.session_id.as_str())),
            accounts::checkout_session_price.eq(open.map(|o| o.price.as_str())),
            accounts::checkout_session_url.eq(open.map(|o| o.url.as_str())),
        ))
        .execute(conn)
        .map(drop)
}

/// Stores `customer_id` as the user's customer only where the row holds none,
/// or still `replacing`; answers whether it did. A customer linked meanwhile
/// by other means (a checkout webhook) is kept.
pub fn store_customer_id(
    conn: &mut PgConnection,
    id: &AccountId,
    customer_id: &CustomerId,
    replacing: Option<&CustomerId>,
) -> QueryResult<bool> {
    let free = accounts::stripe_customer_id
        .is_null()
        .or(accounts::stripe_customer_id.eq(replacing));
    diesel::update(accounts::table.find(id).filter(free))
        .set((
            accounts::stripe_customer_id.eq(customer_id),
            accounts::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .map(|stored| stored > 0)
}

pub fn set_customer_id(
    conn: &mut PgConnection,
    id: &AccountId,
    customer_id: &CustomerId,
) -> QueryResult<()> {
    diesel::update(accounts::table.find(id))
        .set((
            accounts::stripe_customer_id.eq(customer_id),
            accounts::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .map(|_| ())
}

pub fn find(conn: &mut PgConnection, id: &AccountId) -> QueryResult<Option<Account>> {
    accounts::table
        .find(id)
        .select(Account::as_select())
        .first(conn)
        .optional()
}

/// A subscription with its price and product, when stored (`db::catalogue`).
pub type WithPlan = (Subscription, Option<Price>, Option<Product>);

/// The user and all their subscriptions, each with its price and product, in
/// one prepared statement (left joins), for the status endpoint's steady
/// state; `None` for an unknown user.
pub fn find_with_subscriptions(
    conn: &mut PgConnection,
    id: &AccountId,
) -> QueryResult<Option<(Account, Vec<WithPlan>)>> {
    type Row = (
        Account,
        Option<Subscription>,
        Option<Price>,
        Option<Product>,
    );
    let rows: Vec<Row> = accounts::table
        .left_join(subscriptions::table)
        .left_join(
            stripe_prices::table.on(stripe_prices::id.nullable().eq(subscriptions::price_id)),
        )
        .left_join(
            stripe_products::table.on(stripe_products::id.nullable().eq(subscriptions::product_id)),
        )
        .filter(accounts::id.eq(id))
        .select((
            Account::as_select(),
            Option::<Subscription>::as_select(),
            Option::<Price>::as_select(),
            Option::<Product>::as_select(),
        ))
        .load(conn)?;
    let with_plan = |(_, sub, price, product): Row| sub.map(|sub| (sub, price, product));
    let mut rows = rows.into_iter();
    let Some(first) = rows.next() else {
        return Ok(None);
    };
    let user = first.0.clone();
    let subs = with_plan(first)
        .into_iter()
        .chain(rows.filter_map(with_plan));
    Ok(Some((user, subs.collect())))
}

/// The user holding `customer_id`, if any.
pub fn find_by_customer(
    conn: &mut PgConnection,
    customer_id: &CustomerId,
) -> QueryResult<Option<AccountId>> {
    accounts::table
        .filter(accounts::stripe_customer_id.eq(customer_id))
        .select(accounts::id)
        .first(conn)
        .optional()
}

/// Forgets a customer Stripe deleted; returns the user that held it.
pub fn forget_customer(
    conn: &mut PgConnection,
    customer_id: &CustomerId,
) -> QueryResult<Option<AccountId>> {
    diesel::update(accounts::table.filter(accounts::stripe_customer_id.eq(customer_id)))
        .set((
            accounts::stripe_customer_id.eq(None::<CustomerId>),
            accounts::updated_at.eq(diesel::dsl::now),
        ))
        .returning(accounts::id)
        .get_result(conn)
        .optional()
}

/// What [`forget_customers`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForgottenCustomers {
    /// Users whose customer was forgotten (they get a new one on their next
    /// create-portal).
    pub users: usize,
    /// Subscription rows deleted.
    pub subscriptions: usize,
}

/// Forgets exactly the customers `ids`, and deletes their subscriptions
/// outright (no cancellation is recorded: to the service they never
/// existed), recomputing the paid flag of every user concerned at
/// `rule.now`. For starting the emulator's demo over (`emulator-reset`), with
/// the ids the emulator's own account holds, so a real Stripe customer that
/// happens to share their prefix is never touched.
pub fn forget_customers(
    conn: &mut PgConnection,
    ids: &[String],
    rule: &RuleParams,
) -> QueryResult<ForgottenCustomers> {
    let owners: Vec<Option<AccountId>> =
        diesel::delete(subscriptions::table.filter(subscriptions::customer_id.eq_any(ids)))
            .returning(subscriptions::user_id)
            .get_results(conn)?;
    let subscriptions = owners.len();
    let holders: Vec<AccountId> =
        diesel::update(accounts::table.filter(accounts::stripe_customer_id.eq_any(ids)))
            .set((
                accounts::stripe_customer_id.eq(None::<CustomerId>),
                accounts::updated_at.eq(diesel::dsl::now),
            ))
            .returning(accounts::id)
            .get_results(conn)?;
    let forgotten = ForgottenCustomers {
        users: holders.len(),
        subscriptions,
    };
    let mut concerned: Vec<AccountId> = owners.into_iter().flatten().chain(holders).collect();
    concerned.sort();
    concerned.dedup();
    for user in &concerned {
        recompute_paid(conn, user, rule)?;
    }
    Ok(forgotten)
}

/// Makes sure the user exists and, when they have no customer yet and no
/// other user holds this one, links `customer_id` to them. Used for customers
/// that reach us through Stripe (checkout, subscription metadata) rather than
/// through create-portal.
pub fn link_customer_if_unset(
    conn: &mut PgConnection,
    id: &AccountId,
    customer_id: &CustomerId,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO accounts (id, kind, stripe_customer_id) \
         SELECT $1, $3, CASE WHEN EXISTS (SELECT 1 FROM accounts WHERE stripe_customer_id = $2) \
                             THEN NULL ELSE $2 END \
         ON CONFLICT (id) DO UPDATE SET stripe_customer_id = EXCLUDED.stripe_customer_id, \
                                        updated_at = now() \
         WHERE accounts.stripe_customer_id IS NULL AND EXCLUDED.stripe_customer_id IS NOT NULL",
    )
    .bind::<Text, _>(id)
    .bind::<Text, _>(customer_id)
    .bind::<Text, _>(id.kind().as_str())
    .execute(conn)
    .map(|_| ())
}

#[diesel::declare_sql_function]
extern "SQL" {
    /// Defined by the `paid_correctness` migration, over `billing_grants_access`.
    fn billing_recompute_paid(
        user_id: Text,
        now: Timestamptz,
        grace_secs: BigInt,
        paused_is_paid: Bool,
    ) -> Bool;
}

/// Sets the user's paid flag from their subscriptions at `rule.now`. Writes
/// only when the flag changes.
pub fn recompute_paid(
    conn: &mut PgConnection,
    id: &AccountId,
    rule: &RuleParams,
) -> QueryResult<()> {
    diesel::select(billing_recompute_paid(
        id,
        rule.now,
        rule.grace_secs,
        rule.collection_paused_is_paid,
    ))
    .get_result::<bool>(conn)
    .map(|_| ())
}

/// Recomputes every user's paid flag, for when the paid rule itself changed
/// (`BILLING_PAST_DUE_GRACE_DAYS`, `BILLING_COLLECTION_PAUSED_IS_PAID`).
/// Returns how many flags changed.
pub fn recompute_all_paid(conn: &mut PgConnection, rule: &RuleParams) -> QueryResult<usize> {
    recompute_where(conn, rule, "TRUE")
}

/// Recomputes the flag of every user with a past-due subscription: the only
/// flags that time alone changes (a grace period ends with no event). Uses the
/// partial index on past-due subscriptions. Returns how many flags changed.
pub fn recompute_past_due(conn: &mut PgConnection, rule: &RuleParams) -> QueryResult<usize> {
    recompute_where(
        conn,
        rule,
        "u.id IN (SELECT user_id FROM subscriptions WHERE status = 'past_due')",
    )
}

fn recompute_where(
    conn: &mut PgConnection,
    rule: &RuleParams,
    users_filter: &'static str,
) -> QueryResult<usize> {
    diesel::sql_query(format!(
        "UPDATE accounts SET paid = p.paid, updated_at = now() \
         FROM (SELECT u.id, EXISTS (SELECT 1 FROM subscriptions s \
                                    WHERE s.user_id = u.id \
                                      AND billing_grants_access(s.status, s.past_due_since, \
                                          s.pause_behavior, $1, $2, $3)) AS paid \
               FROM accounts u WHERE {users_filter}) p \
         WHERE accounts.id = p.id AND accounts.paid IS DISTINCT FROM p.paid"
    ))
    .bind::<Timestamptz, _>(rule.now)
    .bind::<BigInt, _>(rule.grace_secs)
    .bind::<Bool, _>(rule.collection_paused_is_paid)
    .execute(conn)
}

/// What claiming a user's refresh read found ([`claim_refresh`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshClaim {
    /// The read is the caller's: the user's customer, to read.
    Granted(CustomerId),
    /// The user has no Stripe customer (or no row): there is nothing to read.
    NoCustomer,
    /// A read of this user was claimed at `last`, less than the interval ago.
    TooSoon { last: Option<DateTime<Utc>> },
}

/// Claims the user's refresh read at `now` (billing clock), unless one was
/// claimed less than `interval` before. One conditional UPDATE, so callers
/// on any number of instances cannot both win. A claim more than `interval`
/// ahead of `now` was made by a clock that has since gone back (the
/// emulator's test clock, reset by a restart) and does not hold anyone off.
pub fn claim_refresh(
    conn: &mut PgConnection,
    id: &AccountId,
    now: DateTime<Utc>,
    interval: TimeDelta,
) -> QueryResult<RefreshClaim> {
    let free = accounts::refreshed_at
        .is_null()
        .or(accounts::refreshed_at.le(now - interval))
        .or(accounts::refreshed_at.gt(now + interval));
    let claimed = diesel::update(
        accounts::table
            .find(id)
            .filter(accounts::stripe_customer_id.is_not_null())
            .filter(free),
    )
    .set(accounts::refreshed_at.eq(now))
    .returning(accounts::stripe_customer_id.assume_not_null())
    .get_result::<CustomerId>(conn)
    .optional()?;
    if let Some(customer) = claimed {
        return Ok(RefreshClaim::Granted(customer));
    }
    let row: Option<(Option<CustomerId>, Option<DateTime<Utc>>)> = accounts::table
        .find(id)
        .select((accounts::stripe_customer_id, accounts::refreshed_at))
        .first(conn)
        .optional()?;
    Ok(match row {
        Some((Some(_), last)) => RefreshClaim::TooSoon { last },
        _ => RefreshClaim::NoCustomer,
    })
}

/// (user id, customer id) for every user with a Stripe customer.
pub fn with_customers(conn: &mut PgConnection) -> QueryResult<Vec<(AccountId, CustomerId)>> {
    accounts::table
        .filter(accounts::stripe_customer_id.is_not_null())
        .order(accounts::id)
        .select((accounts::id, accounts::stripe_customer_id.assume_not_null()))
        .load(conn)
}
