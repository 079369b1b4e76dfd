//! A user's billing status as `GET /billing/status` reports it, from Postgres
//! only: the paid flag, and the subscription that best describes the user.

use chrono::{DateTime, Utc};

use crate::billing::status::SubscriptionStatus;
use crate::db::subscriptions::Subscription;

#[derive(Debug, Clone, PartialEq)]
pub struct BillingSummary {
    pub paid: bool,
    pub status: Option<String>,
    pub price_id: Option<String>,
    pub product_id: Option<String>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
}

/// The user's current subscription: one that grants access if any does, else
/// the one changed most recently (so a canceled user sees "canceled", not
/// nothing). Also the subscription portal deep links act on.
pub fn current_subscription(
    subs: &[Subscription],
    past_due_is_paid: bool,
) -> Option<&Subscription> {
    subs.iter().max_by_key(|s| {
        (
            SubscriptionStatus::parse(&s.status).grants_access(past_due_is_paid),
            s.last_event_at,
        )
    })
}

pub fn summarize(paid: bool, subs: &[Subscription], past_due_is_paid: bool) -> BillingSummary {
    let current = current_subscription(subs, past_due_is_paid);
    BillingSummary {
        paid,
        status: current.map(|s| s.status.clone()),
        price_id: current.and_then(|s| s.price_id.clone()),
        product_id: current.and_then(|s| s.product_id.clone()),
        current_period_end: current.and_then(|s| s.current_period_end),
        cancel_at_period_end: current.is_some_and(|s| s.cancel_at_period_end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: &str, status: &str, changed: i64) -> Subscription {
        Subscription {
            id: id.into(),
            customer_id: "cus_1".into(),
            user_id: Some("u1".into()),
            status: status.into(),
            price_id: Some(format!("price_{id}")),
            product_id: None,
            current_period_end: None,
            cancel_at_period_end: false,
            last_event_at: DateTime::from_timestamp(changed, 0).unwrap(),
        }
    }

    #[test]
    fn an_active_subscription_is_shown_over_a_more_recently_canceled_one() {
        let subs = [sub("a", "active", 100), sub("b", "canceled", 200)];
        let summary = summarize(true, &subs, true);
        assert_eq!(summary.status.as_deref(), Some("active"));
        assert_eq!(summary.price_id.as_deref(), Some("price_a"));
    }

    #[test]
    fn without_access_the_most_recent_subscription_is_shown() {
        let subs = [
            sub("a", "canceled", 100),
            sub("b", "incomplete_expired", 200),
        ];
        let summary = summarize(false, &subs, true);
        assert_eq!(summary.status.as_deref(), Some("incomplete_expired"));
    }

    #[test]
    fn a_user_without_subscriptions_has_no_status() {
        let summary = summarize(false, &[], true);
        assert_eq!(summary.status, None);
        assert!(!summary.cancel_at_period_end);
    }
}
