//! Plan names and prices: what `GET /billing/status` says of the current
//! subscription's plan ("Pro", 2900 `usd` every `month`), so no page has to
//! show a Stripe id. Prices and products are kept in Postgres
//! (`db::catalogue`) from `price.*` and `product.*` events, applied in order
//! like subscriptions' ([`store_price`], [`store_product`], called by
//! [`super::sync::apply_event`]), and, when a subscription names a price or
//! product that is not stored (its events came before this service listened,
//! or were never enabled), read from Stripe once, in the background
//! ([`learn_in_background`]): never on a status request's path, so a missing
//! name never fails or slows one; the plan is `null` until it is known.
//!
//! Each instance reads a missing price at most once at a time, and after a
//! failure not again for [`RETRY_AFTER`] ([`Reads`]); the reads share the
//! read budget of the other background reads (`STRIPE_READ_BUDGET_PER_SEC`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::PgConnection;

use super::sync::Outcome;
use super::{Billing, Error};
use crate::db::catalogue::{self, PriceState, ProductState};
use crate::db::{self};
use crate::stripe::client::StripeFailure;
use crate::stripe::events::{PriceObject, ProductObject};

/// How long an instance waits before reading again a price whose read failed.
pub const RETRY_AFTER: Duration = Duration::from_secs(600);

/// What the status says of a plan. Each field is `None` when not known: a
/// name when neither the product's name nor the price's nickname is, an
/// amount for a price without one (tiered, customer-chosen), an interval for
/// a one-time price.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Plan {
    /// The product's name, else the price's nickname.
    pub(crate) name: Option<String>,
    /// In the currency's smallest unit.
    pub(crate) amount: Option<i64>,
    /// Lower-case ISO 4217.
    pub(crate) currency: Option<String>,
    pub(crate) interval: Option<String>,
    pub(crate) interval_count: Option<i32>,
}

/// The plan of a subscription whose price and product are stored as given;
/// `None` when neither is.
pub(crate) fn plan_of(
    price: Option<&catalogue::Price>,
    product: Option<&catalogue::Product>,
) -> Option<Plan> {
    if price.is_none() && product.is_none() {
        return None;
    }
    let name = product
        .and_then(|p| p.name.clone())
        .or_else(|| price.and_then(|p| p.nickname.clone()));
    Some(Plan {
        name,
        amount: price.and_then(|p| p.unit_amount),
        currency: price.and_then(|p| p.currency.clone()),
        interval: price.and_then(|p| p.recurring_interval.clone()),
        interval_count: price
            .filter(|p| p.recurring_interval.is_some())
            .and_then(|p| p.recurring_interval_count),
    })
}

/// Stores a price from an event (or a read) as of `as_of`, unless newer
/// state is stored ([`Outcome::Stale`]). Call inside a transaction.
pub(crate) fn store_price(
    conn: &mut PgConnection,
    price: &PriceObject,
    as_of: DateTime<Utc>,
) -> diesel::QueryResult<Outcome> {
    let recurring = price.recurring.as_ref();
    let stored = catalogue::store_price(
        conn,
        &PriceState {
            id: &price.id,
            product_id: price.product_id.as_deref(),
            nickname: price.nickname.as_deref(),
            unit_amount: price.unit_amount,
            currency: price.currency.as_deref(),
            recurring_interval: recurring.map(|r| r.interval.as_str()),
            recurring_interval_count: recurring.map(|r| r.interval_count),
            deleted: price.deleted,
            active: price.active,
            as_of,
        },
    )?;
    Ok(if stored {
        Outcome::Applied
    } else {
        Outcome::Stale
    })
}

/// Stores a product as of `as_of`, unless newer state is stored.
pub(crate) fn store_product(
    conn: &mut PgConnection,
    product: &ProductObject,
    as_of: DateTime<Utc>,
) -> diesel::QueryResult<Outcome> {
    let stored = catalogue::store_product(
        conn,
        &ProductState {
            id: &product.id,
            name: product.name.as_deref(),
            deleted: product.deleted,
            as_of,
        },
    )?;
    Ok(if stored {
        Outcome::Applied
    } else {
        Outcome::Stale
    })
}

/// The reads of missing prices this instance has made: one at a time per
/// price, none again after a success, and none for [`RETRY_AFTER`] after a
/// failure. Bounded: past [`Reads::LIMIT`] prices it forgets all but the reads
/// in flight (at worst a price is checked in Postgres once more).
#[derive(Debug, Default)]
pub struct Reads(Mutex<HashMap<String, Read>>);

#[derive(Debug, Clone, Copy)]
enum Read {
    InFlight,
    Done,
    Failed(Instant),
}

impl Reads {
    const LIMIT: usize = 10_000;

    /// Whether a read of `price` may start now; if so, it is in flight.
    fn start(&self, price: &str) -> bool {
        let mut reads = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match reads.get(price) {
            Some(Read::InFlight | Read::Done) => return false,
            Some(Read::Failed(at)) if at.elapsed() < RETRY_AFTER => return false,
            _ => {}
        }
        if reads.len() >= Self::LIMIT {
            reads.retain(|_, read| matches!(read, Read::InFlight));
        }
        reads.insert(price.to_owned(), Read::InFlight);
        true
    }

    fn finish(&self, price: &str, done: bool) {
        let read = if done {
            Read::Done
        } else {
            Read::Failed(Instant::now())
        };
        let mut reads = self.0.lock().unwrap_or_else(|e| e.into_inner());
        reads.insert(price.to_owned(), read);
    }
}

/// Makes sure the price `price_id` (and the product `product_id`, when
/// given) get stored: checks Postgres and, for what is missing, reads the
/// price with its product from Stripe and stores both, in a task of its own.
/// Returns at once. Nothing happens without a Stripe client, or while this
/// instance already has (or recently failed) such a read.
pub(crate) fn learn_in_background(billing: &Billing, price_id: &str, product_id: Option<&str>) {
    if billing.stripe.is_none() || !billing.plan_reads.start(price_id) {
        return;
    }
    let billing = billing.clone();
    let (price, product) = (price_id.to_owned(), product_id.map(str::to_owned));
    // A plain tokio task, as the sweep's (see `sweep::spawn`): it outlives
    // the request or delivery that asked for it.
    tokio::spawn(async move {
        let learned = learn(&billing, &price, product.as_deref()).await;
        if let Err(e) = &learned {
            log::warn!(
                "price {price}: could not read it from Stripe; its plan shows no name or amount \
                 until it is read (tried again in {} min, or at its next event): {e}",
                RETRY_AFTER.as_secs() / 60
            );
        }
        billing.plan_reads.finish(&price, learned.is_ok());
    });
}

/// What [`learn_in_background`] does in its task.
async fn learn(billing: &Billing, price_id: &str, product_id: Option<&str>) -> Result<(), Error> {
    let (price, product) = (price_id.to_owned(), product_id.map(str::to_owned));
    let known = db::run(&billing.pool, move |conn| {
        catalogue::known(conn, &price, product.as_deref())
    })
    .await?;
    if known {
        return Ok(());
    }
    let stripe = billing.stripe()?;
    billing.read_budget.take().await;
    // What the read answers is Stripe's state as of its start, or later. Events
    // carry whole seconds, so the read is stamped a second before the second it
    // started in: an event of that second (a rename just after the read began,
    // or just before it) always wins over the read, whichever arrives last.
    let started = billing.clock.now().timestamp();
    let started_at = chrono::DateTime::from_timestamp(started - 1, 0).unwrap_or_default();
    let price = billing
        .read_budget
        .noted(stripe.retrieve_price(price_id).await)?;
    let wanted = product_id.map(str::to_owned);
    let complete = db::transaction(&billing.pool, move |conn| {
        store_price(conn, &price, started_at)?;
        if let Some(product) = &price.product {
            store_product(conn, product, started_at)?;
        }
        // Whatever `product_id` names must be known now, or the read is
        // tried again later (a Stripe that did not expand `product`).
        let product = wanted.as_deref().or(price.product_id.as_deref());
        catalogue::known(conn, &price.id, product)
    })
    .await?;
    match complete {
        true => Ok(()),
        false => Err(Error::Stripe(StripeFailure::InvalidResponse(format!(
            "the price {price_id} came back without its product expanded"
        )))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price() -> catalogue::Price {
        catalogue::Price {
            id: "price_1".into(),
            product_id: Some("prod_1".into()),
            nickname: Some("Pro monthly".into()),
            unit_amount: Some(2900),
            currency: Some("usd".into()),
            recurring_interval: Some("month".into()),
            recurring_interval_count: Some(1),
            deleted: false,
            active: true,
        }
    }

    fn product(name: Option<&str>) -> catalogue::Product {
        catalogue::Product {
            id: "prod_1".into(),
            name: name.map(Into::into),
            deleted: false,
        }
    }

    #[test]
    fn the_name_is_the_products_else_the_prices_nickname() {
        let named = plan_of(Some(&price()), Some(&product(Some("Pro")))).unwrap();
        let nameless = plan_of(Some(&price()), Some(&product(None))).unwrap();
        let unknown = plan_of(Some(&price()), None).unwrap();

        assert_eq!(named.name.as_deref(), Some("Pro"));
        assert_eq!(nameless.name.as_deref(), Some("Pro monthly"));
        assert_eq!(unknown.name.as_deref(), Some("Pro monthly"));
        assert_eq!(
            named,
            Plan {
                name: Some("Pro".into()),
                amount: Some(2900),
                currency: Some("usd".into()),
                interval: Some("month".into()),
                interval_count: Some(1),
            }
        );
    }

    #[test]
    fn a_product_alone_names_the_plan_and_nothing_known_is_no_plan() {
        let plan = plan_of(None, Some(&product(Some("Pro")))).unwrap();

        assert_eq!(plan.name.as_deref(), Some("Pro"));
        assert_eq!((plan.amount, plan.interval), (None, None));
        assert_eq!(plan_of(None, None), None);
    }

    #[test]
    fn a_one_time_price_has_neither_interval_nor_count() {
        let one_time = catalogue::Price {
            recurring_interval: None,
            recurring_interval_count: Some(1),
            ..price()
        };

        let plan = plan_of(Some(&one_time), None).unwrap();

        assert_eq!((plan.interval, plan.interval_count), (None, None));
        assert_eq!(plan.amount, Some(2900));
    }

    #[test]
    fn a_price_is_read_once_at_a_time_and_not_again_soon_after_a_failure() {
        let reads = Reads::default();

        assert!(reads.start("price_1"));
        assert!(!reads.start("price_1"), "in flight");
        assert!(reads.start("price_2"));
        reads.finish("price_1", false);
        assert!(!reads.start("price_1"), "failed just now");
        reads.finish("price_2", true);
        assert!(!reads.start("price_2"), "already read");
    }
}
