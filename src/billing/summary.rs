//! A user's billing status as `GET /billing/status` reports it, from Postgres
//! only: whether they are paid and why, the subscription that best describes
//! them and its plan, and whether they have a Stripe customer at all.

use chrono::{DateTime, Utc};

use super::customers::Member;
use super::plans::{self, Plan};
use super::status::{AccessFacts, PaidRule, Reason, SubscriptionStatus};
use super::{Billing, Error};
use crate::db::subscriptions::Subscription;
use crate::db::{self, accounts, entitlements};

/// The user's billing status, from Postgres only (never a Stripe call on its
/// way), judged now rather than read from `users.paid`: an ended grace shows
/// at once. Records the user (and a changed email) on the way. A current
/// subscription whose price or product is not stored yet has them read in
/// the background ([`plans::learn_in_background`]); until then its plan is
/// what is known, or `None`. Served from memory when this instance's
/// [`StatusCache`](super::status_cache::StatusCache) has it.
pub(crate) async fn of_user(billing: &Billing, user: Member<'_>) -> Result<BillingSummary, Error> {
    let known = user.known();
    let cache = billing.status_cache.as_ref();
    if let Some(cached) =
        cache.and_then(|c| c.get(user.id, known.email, known.name, billing.clock.now()))
    {
        return Ok(cached);
    }
    // Registered before the read: a change notified meanwhile is not stored over.
    let fill = cache.map(|c| c.fill(user.id));
    let (id, known) = (user.id.clone(), known.to_owned());
    let ((row, rows), features) = db::run(&billing.pool, move |conn| {
        // The steady state, a known account with nothing new, is one
        // prepared statement; a new account or a changed email or name is
        // written first.
        let found = match accounts::find_with_subscriptions(conn, &id)? {
            Some((row, rows)) if known.borrow().matches(&row) => (row, rows),
            _ => {
                accounts::insert_or_update(conn, &id, known.borrow())?;
                accounts::find_with_subscriptions(conn, &id)?
                    .ok_or(diesel::result::Error::NotFound)?
            }
        };
        // Entitlements: the customer's stored features (none without one).
        let features = match &found.0.stripe_customer_id {
            Some(customer) => entitlements::features_of(conn, customer)?,
            None => Vec::new(),
        };
        Ok((found, features))
    })
    .await?;
    let (subs, catalogue): (Vec<Subscription>, Vec<_>) = rows
        .into_iter()
        .map(|(sub, price, product)| (sub, (price, product)))
        .unzip();
    let now = billing.clock.now();
    let mut summary = summarize(&subs, billing.rule, now);
    summary.has_customer = row.stripe_customer_id.is_some();
    summary.account_name = row.name;
    summary.features = features;
    let mut valid_until = changes_by_itself_at(&subs, billing.rule, now);
    if let Some(i) = current_index(&subs, billing.rule, now) {
        let (price, product) = &catalogue[i];
        summary.plan = plans::plan_of(price.as_ref(), product.as_ref());
        let sub = &subs[i];
        let missing = price.is_none() || (sub.product_id.is_some() && product.is_none());
        if let (true, Some(price)) = (missing, &sub.price_id) {
            plans::learn_in_background(billing, price, sub.product_id.as_deref());
            // Kept a minute at most, so that a read that failed is asked for
            // again; one that succeeds stores the price, which drops every
            // answer (the `status_notify` migration).
            let retry = now + chrono::TimeDelta::seconds(PLAN_RETRY_SECS);
            valid_until = Some(valid_until.map_or(retry, |t| t.min(retry)));
        }
    }
    if let Some(fill) = fill {
        fill.store(&summary, row.email.as_deref(), valid_until);
    }
    Ok(summary)
}

/// How long an answer whose plan is not stored yet is kept in the status
/// cache before the plan is asked for again.
const PLAN_RETRY_SECS: i64 = 60;

/// The first moment after `now` at which time alone changes the status of
/// an account with these subscriptions: the end of a past-due grace (the
/// only part of [`PaidRule::judge`] that reads the clock; which subscription
/// is current follows from it). `None`: only a change does.
pub(crate) fn changes_by_itself_at(
    subs: &[Subscription],
    rule: PaidRule,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    subs.iter()
        .filter(|s| s.status == SubscriptionStatus::PastDue.as_str())
        .filter_map(|s| s.past_due_since.map(|since| rule.grace_ends_at(since)))
        .filter(|ends| *ends > now)
        .min()
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BillingSummary {
    pub(crate) paid: bool,
    pub(crate) reason: Reason,
    pub(crate) status: Option<String>,
    pub(crate) price_id: Option<String>,
    pub(crate) product_id: Option<String>,
    pub(crate) current_period_end: Option<DateTime<Utc>>,
    pub(crate) cancel_at_period_end: bool,
    /// When the subscription is set to end, in either billing mode: `cancel_at`
    /// (flexible mode sets only that), else the period end when classic mode's
    /// `cancel_at_period_end` is set without it (older API versions).
    pub(crate) cancel_at: Option<DateTime<Utc>>,
    pub(crate) grace_ends_at: Option<DateTime<Utc>>,
    pub(crate) synced_at: Option<DateTime<Utc>>,
    /// The current subscription's plan, as far as its price and product are
    /// stored (only [`of_user`] looks them up).
    pub(crate) plan: Option<Plan>,
    /// Whether the user has a Stripe customer: with no subscription that
    /// grants access, a former customer (their invoices and saved payment
    /// methods are in the portal) rather than someone who never bought.
    pub(crate) has_customer: bool,
    /// The organisation's name as its row keeps it (only [`of_user`] reads
    /// it); `None` for a user's account.
    pub(crate) account_name: Option<String>,
    /// Entitlements: the lookup keys of the customer's active entitlements,
    /// sorted (see [`super::entitlements`]); empty without a customer.
    pub(crate) features: Vec<String>,
}

fn facts(s: &Subscription) -> (SubscriptionStatus, Option<DateTime<Utc>>, bool) {
    (
        SubscriptionStatus::parse(&s.status),
        s.past_due_since,
        s.pause_behavior.is_some(),
    )
}

/// Judges one stored subscription at `now`.
pub(crate) fn judge(s: &Subscription, rule: PaidRule, now: DateTime<Utc>) -> (bool, Reason) {
    let (status, past_due_since, collection_paused) = facts(s);
    rule.judge(
        AccessFacts {
            status: &status,
            past_due_since,
            collection_paused,
        },
        now,
    )
}

/// The user's current subscription: one that grants access if any does, else
/// the one changed most recently (so a canceled user sees "canceled", not
/// nothing). Also the subscription portal deep links act on.
pub(crate) fn current_subscription(
    subs: &[Subscription],
    rule: PaidRule,
    now: DateTime<Utc>,
) -> Option<&Subscription> {
    current_index(subs, rule, now).map(|i| &subs[i])
}

/// Where [`current_subscription`] is in `subs`.
fn current_index(subs: &[Subscription], rule: PaidRule, now: DateTime<Utc>) -> Option<usize> {
    subs.iter()
        .enumerate()
        .max_by_key(|(_, s)| (judge(s, rule, now).0, s.last_event_at))
        .map(|(i, _)| i)
}

/// When the subscription is set to end, in either billing mode.
pub(crate) fn ends_at(s: &Subscription) -> Option<DateTime<Utc>> {
    s.cancel_at
        .or(s.current_period_end.filter(|_| s.cancel_at_period_end))
}

/// The user's billing status at `now`. `paid` is judged here rather than read
/// from `users.paid`, so an ended grace shows at once; the sweep brings the
/// column along within a minute.
pub(crate) fn summarize(
    subs: &[Subscription],
    rule: PaidRule,
    now: DateTime<Utc>,
) -> BillingSummary {
    let current = current_subscription(subs, rule, now);
    let (paid, reason) = current.map_or((false, Reason::NoSubscription), |s| judge(s, rule, now));
    BillingSummary {
        paid,
        reason,
        status: current.map(|s| s.status.clone()),
        price_id: current.and_then(|s| s.price_id.clone()),
        product_id: current.and_then(|s| s.product_id.clone()),
        current_period_end: current.and_then(|s| s.current_period_end),
        cancel_at_period_end: current.is_some_and(|s| s.cancel_at_period_end),
        cancel_at: current.and_then(ends_at),
        grace_ends_at: current
            .filter(|s| s.status == SubscriptionStatus::PastDue.as_str())
            .and_then(|s| s.past_due_since)
            .map(|since| rule.grace_ends_at(since)),
        synced_at: current.map(|s| s.synced_at),
        plan: None,
        has_customer: false,
        account_name: None,
        features: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn sub(id: &str, status: &str, changed: i64) -> Subscription {
        let at = |t| DateTime::from_timestamp(t, 0).unwrap();
        Subscription {
            id: id.into(),
            customer_id: "cus_1".into(),
            user_id: Some(crate::ids::AccountId::parse("u1").unwrap()),
            status: status.into(),
            price_id: Some(format!("price_{id}")),
            product_id: None,
            current_period_end: Some(at(NOW + 86_400)),
            cancel_at_period_end: false,
            last_event_at: at(changed),
            cancel_at: None,
            pause_behavior: None,
            pause_resumes_at: None,
            past_due_since: (status == "past_due").then(|| at(changed)),
            synced_at: at(changed),
        }
    }

    fn rule() -> PaidRule {
        PaidRule::new(14, true)
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(NOW, 0).unwrap()
    }

    #[test]
    fn an_active_subscription_is_shown_over_a_more_recently_canceled_one() {
        let subs = [sub("a", "active", 100), sub("b", "canceled", 200)];
        let summary = summarize(&subs, rule(), now());
        assert_eq!(summary.status.as_deref(), Some("active"));
        assert_eq!(summary.price_id.as_deref(), Some("price_a"));
        assert_eq!((summary.paid, summary.reason), (true, Reason::Active));
    }

    #[test]
    fn without_access_the_most_recent_subscription_is_shown() {
        let subs = [
            sub("a", "canceled", 100),
            sub("b", "incomplete_expired", 200),
        ];
        let summary = summarize(&subs, rule(), now());
        assert_eq!(summary.status.as_deref(), Some("incomplete_expired"));
        assert_eq!(summary.reason, Reason::IncompleteExpired);
        assert!(!summary.paid);
    }

    #[test]
    fn a_user_without_subscriptions_has_no_status() {
        let summary = summarize(&[], rule(), now());
        assert_eq!(summary.status, None);
        assert_eq!(summary.reason, Reason::NoSubscription);
        assert!(!summary.cancel_at_period_end);
        assert_eq!(summary.synced_at, None);
    }

    #[test]
    fn a_flexible_mode_cancellation_reports_cancel_at_though_cancel_at_period_end_is_false() {
        let mut s = sub("a", "active", 100);
        s.cancel_at = s.current_period_end;

        let summary = summarize(&[s.clone()], rule(), now());

        assert!(!summary.cancel_at_period_end);
        assert_eq!(summary.cancel_at, s.current_period_end);
    }

    #[test]
    fn a_classic_cancellation_without_cancel_at_ends_at_the_period_end() {
        let mut s = sub("a", "active", 100);
        s.cancel_at_period_end = true;

        assert_eq!(ends_at(&s), s.current_period_end);
    }

    #[test]
    fn past_due_reports_when_its_grace_ends_and_then_that_it_ended() {
        let since = NOW - 86_400;
        let subs = [sub("a", "past_due", since)];

        let during = summarize(&subs, rule(), now());
        let after = summarize(&subs, rule(), now() + chrono::TimeDelta::days(14));

        assert_eq!((during.paid, during.reason), (true, Reason::PastDueInGrace));
        assert_eq!(
            during.grace_ends_at,
            DateTime::from_timestamp(since + 14 * 86_400, 0)
        );
        assert_eq!(
            (after.paid, after.reason),
            (false, Reason::PastDueGraceEnded)
        );
    }
}
