//! The `stripe_prices` and `stripe_products` tables: what the billing status
//! says of a subscription's plan (its price's amount, currency and interval,
//! its product's name), each row guarded so an older state, from a late event
//! or an earlier read, never overwrites a newer one.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text, Timestamptz};

use super::schema::{stripe_prices, stripe_products};

/// A stored price.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = stripe_prices)]
pub struct Price {
    pub id: String,
    pub product_id: Option<String>,
    pub nickname: Option<String>,
    pub unit_amount: Option<i64>,
    pub currency: Option<String>,
    pub recurring_interval: Option<String>,
    pub recurring_interval_count: Option<i32>,
    pub deleted: bool,
    /// Whether Stripe still sells it (`active`); an archived price is not offered.
    pub active: bool,
}

/// A stored product.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = stripe_products)]
pub struct Product {
    pub id: String,
    pub name: Option<String>,
    pub deleted: bool,
}

/// A price's state to store, as of `as_of` (Stripe's time).
pub struct PriceState<'a> {
    pub id: &'a str,
    pub product_id: Option<&'a str>,
    pub nickname: Option<&'a str>,
    pub unit_amount: Option<i64>,
    pub currency: Option<&'a str>,
    pub recurring_interval: Option<&'a str>,
    pub recurring_interval_count: Option<i32>,
    pub deleted: bool,
    pub active: bool,
    pub as_of: DateTime<Utc>,
}

/// A product's state to store, as of `as_of`.
pub struct ProductState<'a> {
    pub id: &'a str,
    pub name: Option<&'a str>,
    pub deleted: bool,
    pub as_of: DateTime<Utc>,
}

// The rules both upserts share, in SQL:
// - a state older than the stored one changes nothing (Stripe does not order
//   deliveries); within one second a deletion is never undone, as no state
//   follows a deletion;
// - a deletion keeps what the row knew for whatever the deleted object leaves
//   out (an older API sends only `{"id", "deleted": true}`): subscriptions may
//   still bill a deleted price, and its name is still what they bought.

/// Stores `price` unless newer state is stored; answers whether it did.
pub fn store_price(conn: &mut PgConnection, price: &PriceState<'_>) -> QueryResult<bool> {
    diesel::sql_query(
        "INSERT INTO stripe_prices AS p (id, product_id, nickname, unit_amount, currency, \
             recurring_interval, recurring_interval_count, deleted, as_of, active) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (id) DO UPDATE SET \
             product_id = CASE WHEN EXCLUDED.deleted \
                 THEN COALESCE(EXCLUDED.product_id, p.product_id) ELSE EXCLUDED.product_id END, \
             nickname = CASE WHEN EXCLUDED.deleted \
                 THEN COALESCE(EXCLUDED.nickname, p.nickname) ELSE EXCLUDED.nickname END, \
             unit_amount = CASE WHEN EXCLUDED.deleted \
                 THEN COALESCE(EXCLUDED.unit_amount, p.unit_amount) ELSE EXCLUDED.unit_amount END, \
             currency = CASE WHEN EXCLUDED.deleted \
                 THEN COALESCE(EXCLUDED.currency, p.currency) ELSE EXCLUDED.currency END, \
             recurring_interval = CASE WHEN EXCLUDED.deleted \
                 THEN COALESCE(EXCLUDED.recurring_interval, p.recurring_interval) \
                 ELSE EXCLUDED.recurring_interval END, \
             recurring_interval_count = CASE WHEN EXCLUDED.deleted \
                 THEN COALESCE(EXCLUDED.recurring_interval_count, p.recurring_interval_count) \
                 ELSE EXCLUDED.recurring_interval_count END, \
             deleted = EXCLUDED.deleted, \
             active = CASE WHEN EXCLUDED.deleted THEN p.active ELSE EXCLUDED.active END, \
             as_of = EXCLUDED.as_of, \
             updated_at = now() \
         WHERE p.as_of < EXCLUDED.as_of \
            OR (p.as_of = EXCLUDED.as_of AND (EXCLUDED.deleted OR NOT p.deleted))",
    )
    .bind::<Text, _>(price.id)
    .bind::<Nullable<Text>, _>(price.product_id)
    .bind::<Nullable<Text>, _>(price.nickname)
    .bind::<Nullable<BigInt>, _>(price.unit_amount)
    .bind::<Nullable<Text>, _>(price.currency)
    .bind::<Nullable<Text>, _>(price.recurring_interval)
    .bind::<Nullable<Integer>, _>(price.recurring_interval_count)
    .bind::<Bool, _>(price.deleted)
    .bind::<Timestamptz, _>(price.as_of)
    .bind::<Bool, _>(price.active)
    .execute(conn)
    .map(|stored| stored == 1)
}

/// Stores `product` unless newer state is stored; answers whether it did.
pub fn store_product(conn: &mut PgConnection, product: &ProductState<'_>) -> QueryResult<bool> {
    diesel::sql_query(
        "INSERT INTO stripe_products AS p (id, name, deleted, as_of) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET \
             name = CASE WHEN EXCLUDED.deleted \
                 THEN COALESCE(EXCLUDED.name, p.name) ELSE EXCLUDED.name END, \
             deleted = EXCLUDED.deleted, \
             as_of = EXCLUDED.as_of, \
             updated_at = now() \
         WHERE p.as_of < EXCLUDED.as_of \
            OR (p.as_of = EXCLUDED.as_of AND (EXCLUDED.deleted OR NOT p.deleted))",
    )
    .bind::<Text, _>(product.id)
    .bind::<Nullable<Text>, _>(product.name)
    .bind::<Bool, _>(product.deleted)
    .bind::<Timestamptz, _>(product.as_of)
    .execute(conn)
    .map(|stored| stored == 1)
}

/// Whether the price `price_id`, and the product `product_id` when given,
/// are stored.
pub fn known(
    conn: &mut PgConnection,
    price_id: &str,
    product_id: Option<&str>,
) -> QueryResult<bool> {
    let price: bool = diesel::select(diesel::dsl::exists(stripe_prices::table.find(price_id)))
        .get_result(conn)?;
    match (price, product_id) {
        (false, _) => Ok(false),
        (true, None) => Ok(true),
        (true, Some(product)) => {
            diesel::select(diesel::dsl::exists(stripe_products::table.find(product)))
                .get_result(conn)
        }
    }
}
