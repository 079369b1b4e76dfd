//! Applying Stripe's word on subscriptions to Postgres, exactly once and in
//! order. One entry point per source: [`apply_event`] for verified webhook
//! events (the event row and its effect commit in one transaction), and
//! [`apply_subscription`] for subscription state from any source.
//!
//! Rules: the user for a subscription is the one holding its customer, else
//! the one named by `metadata.user_id`; unknown customers are stored without a
//! user and linked when the customer is. A user's paid flag is recomputed in
//! the same transaction as every change that can move it.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::auth::UserId;
use crate::db::subscriptions::{self, SubscriptionState};
use crate::db::{events, users};
use crate::stripe::events::{CheckoutSessionObject, Event, EventKind, SubscriptionObject};

/// What a delivery did; stored on the event row and counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Already recorded: a redelivery, nothing done.
    Duplicate,
    /// Older than the state already stored, nothing done.
    Stale,
    /// A type this service does not act on.
    Ignored,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Stale => "stale",
            Self::Ignored => "ignored",
        }
    }
}

/// The paid rule, from `BILLING_PAST_DUE_IS_PAID`.
#[derive(Debug, Clone, Copy)]
pub struct PaidRule {
    pub past_due_is_paid: bool,
}

impl PaidRule {
    /// The stored statuses that make a user paid (the SQL side of
    /// [`SubscriptionStatus::grants_access`]; a test keeps the two in step).
    pub fn paid_statuses(self) -> &'static [&'static str] {
        if self.past_due_is_paid {
            &["active", "trialing", "past_due"]
        } else {
            &["active", "trialing"]
        }
    }
}

pub fn timestamp(secs: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(secs, 0)
}

/// Records and applies one verified event in a single transaction. `fresh`
/// is the subscription as just fetched from the API (`STRIPE_WEBHOOK_REFETCH`),
/// applied instead of the payload's copy.
pub fn apply_event(
    conn: &mut PgConnection,
    event: &Event,
    fresh: Option<&SubscriptionObject>,
    rule: PaidRule,
) -> QueryResult<Outcome> {
    let created = timestamp(event.created).unwrap_or(DateTime::UNIX_EPOCH);
    conn.transaction(|conn| {
        if !events::claim(
            conn,
            &event.id,
            &event.type_,
            created,
            Outcome::Applied.as_str(),
        )? {
            return Ok(Outcome::Duplicate);
        }
        let outcome = match &event.kind {
            EventKind::Subscription(payload) => match fresh {
                Some(fresh) => apply_subscription(conn, fresh, created, true, rule)?,
                None => apply_subscription(conn, payload, created, false, rule)?,
            },
            EventKind::CustomerDeleted { customer_id } => {
                customer_deleted(conn, customer_id, created, rule)?
            }
            EventKind::CheckoutCompleted(session) => checkout_completed(conn, session, rule)?,
            EventKind::Ignored => Outcome::Ignored,
        };
        if outcome != Outcome::Applied {
            events::set_outcome(conn, &event.id, outcome.as_str())?;
        }
        Ok(outcome)
    })
}

/// Stores one subscription's state as of `as_of` (unless newer state is
/// already stored) and recomputes its user's paid flag. Call inside a
/// transaction.
pub fn apply_subscription(
    conn: &mut PgConnection,
    sub: &SubscriptionObject,
    as_of: DateTime<Utc>,
    authoritative: bool,
    rule: PaidRule,
) -> QueryResult<Outcome> {
    let user = user_for(conn, sub)?;
    let stored = subscriptions::store_if_newer(
        conn,
        &SubscriptionState {
            id: &sub.id,
            customer_id: &sub.customer_id,
            user_id: user.as_deref(),
            status: sub.status.as_str(),
            price_id: sub.price_id.as_deref(),
            product_id: sub.product_id.as_deref(),
            current_period_end: sub.current_period_end.and_then(timestamp),
            cancel_at_period_end: sub.cancel_at_period_end,
            as_of,
        },
        authoritative,
        rule.paid_statuses(),
    )?;
    Ok(if stored {
        Outcome::Applied
    } else {
        Outcome::Stale
    })
}

fn user_for(conn: &mut PgConnection, sub: &SubscriptionObject) -> QueryResult<Option<String>> {
    if let Some(user) = users::find_by_customer(conn, &sub.customer_id)? {
        return Ok(Some(user));
    }
    match sub.metadata_user_id.as_deref().map(UserId::parse) {
        Some(Ok(user)) => {
            users::link_customer_if_unset(conn, user.as_str(), &sub.customer_id)?;
            Ok(Some(user.as_str().to_string()))
        }
        Some(Err(reason)) => {
            log::warn!(
                "subscription {}: ignoring metadata.user_id: {reason}",
                sub.id
            );
            Ok(None)
        }
        None => Ok(None),
    }
}

pub fn customer_deleted(
    conn: &mut PgConnection,
    customer_id: &str,
    as_of: DateTime<Utc>,
    rule: PaidRule,
) -> QueryResult<Outcome> {
    let mut affected = subscriptions::cancel_all_of_customer(conn, customer_id, as_of)?;
    affected.extend(users::forget_customer(conn, customer_id)?);
    affected.sort();
    affected.dedup();
    for user in affected {
        users::recompute_paid(conn, &user, rule.paid_statuses())?;
    }
    Ok(Outcome::Applied)
}

fn checkout_completed(
    conn: &mut PgConnection,
    session: &CheckoutSessionObject,
    rule: PaidRule,
) -> QueryResult<Outcome> {
    let (Some(reference), Some(customer)) = (&session.client_reference_id, &session.customer_id)
    else {
        return Ok(Outcome::Ignored);
    };
    let Ok(user) = UserId::parse(reference) else {
        return Ok(Outcome::Ignored);
    };
    users::link_customer_if_unset(conn, user.as_str(), customer)?;
    if users::find_by_customer(conn, customer)?.as_deref() == Some(user.as_str()) {
        subscriptions::link_customer(conn, customer, user.as_str())?;
        users::recompute_paid(conn, user.as_str(), rule.paid_statuses())?;
    }
    Ok(Outcome::Applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::status::SubscriptionStatus;

    #[test]
    fn the_stored_paid_statuses_agree_with_the_status_rule() {
        let every = [
            "active",
            "trialing",
            "past_due",
            "canceled",
            "unpaid",
            "incomplete",
            "incomplete_expired",
            "paused",
            "something_new",
        ];
        for past_due_is_paid in [true, false] {
            let rule = PaidRule { past_due_is_paid };
            for status in every {
                assert_eq!(
                    rule.paid_statuses().contains(&status),
                    SubscriptionStatus::parse(status).grants_access(past_due_is_paid),
                    "{status} with grace {past_due_is_paid}"
                );
            }
        }
    }
}
