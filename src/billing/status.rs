//! The subscription status as a domain type, and the rule for which statuses pay.
//!
//! Decides whether a subscription in a given [`SubscriptionStatus`] (Stripe's vocabulary, owned
//! by [`crate::stripe::status`]) grants access ([`PaidRule`]) and why ([`Reason`]). The rule's
//! parameters come from configuration through the caller; this module reads no settings itself.
//!
//! The same rule runs in Postgres as `billing_grants_access` (the
//! `paid_correctness` migration) so `users.paid` can be recomputed in the statement that stores
//! a subscription; `tests/api/paid.rs` holds the two together over every combination.

use chrono::{DateTime, TimeDelta, Utc};

pub use crate::stripe::status::SubscriptionStatus;

/// Why a user is or is not paid: a stable code apps and the page can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Active,
    Trialing,
    /// Payment failed; Stripe is retrying and the grace period has not ended.
    PastDueInGrace,
    PastDueGraceEnded,
    /// `pause_collection` is set: the status stays `active` but no invoice is collected.
    CollectionPaused,
    Canceled,
    Unpaid,
    Incomplete,
    IncompleteExpired,
    Paused,
    /// A status this service does not know (Stripe added one): unpaid until understood.
    UnrecognizedStatus,
    NoSubscription,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Self::Active,
        Self::Trialing,
        Self::PastDueInGrace,
        Self::PastDueGraceEnded,
        Self::CollectionPaused,
        Self::Canceled,
        Self::Unpaid,
        Self::Incomplete,
        Self::IncompleteExpired,
        Self::Paused,
        Self::UnrecognizedStatus,
        Self::NoSubscription,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Trialing => "trialing",
            Self::PastDueInGrace => "past_due_in_grace",
            Self::PastDueGraceEnded => "past_due_grace_ended",
            Self::CollectionPaused => "collection_paused",
            Self::Canceled => "canceled",
            Self::Unpaid => "unpaid",
            Self::Incomplete => "incomplete",
            Self::IncompleteExpired => "incomplete_expired",
            Self::Paused => "paused",
            Self::UnrecognizedStatus => "unrecognized_status",
            Self::NoSubscription => "no_subscription",
        }
    }
}

/// What the rule needs to know about one subscription.
#[derive(Debug, Clone, Copy)]
pub struct AccessFacts<'a> {
    pub status: &'a SubscriptionStatus,
    /// When it became `past_due` (Stripe time); `None` unless past due.
    pub past_due_since: Option<DateTime<Utc>>,
    /// Whether `pause_collection` is set.
    pub collection_paused: bool,
}

/// The paid rule, from `BILLING_PAST_DUE_GRACE_DAYS` and `BILLING_COLLECTION_PAUSED_IS_PAID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaidRule {
    /// How long `past_due` keeps access, counted from when it became past due. Stripe retries a
    /// failed renewal for up to two weeks by default (Smart Retries), then applies the account's
    /// dunning setting, which may be "leave past due" forever: the grace is what ends access then.
    pub past_due_grace: TimeDelta,
    pub collection_paused_is_paid: bool,
}

impl PaidRule {
    pub fn new(past_due_grace_days: u32, collection_paused_is_paid: bool) -> Self {
        Self {
            past_due_grace: TimeDelta::days(i64::from(past_due_grace_days)),
            collection_paused_is_paid,
        }
    }

    /// Seconds of grace, as the SQL side of the rule takes them.
    pub fn grace_secs(self) -> i64 {
        self.past_due_grace.num_seconds()
    }

    /// When the grace of a subscription past due since `since` ends.
    pub fn grace_ends_at(self, since: DateTime<Utc>) -> DateTime<Utc> {
        since + self.past_due_grace
    }

    /// Whether the subscription makes its user paid at `now`, and why.
    ///
    /// Unknown statuses are unpaid: access is granted only for states we understand.
    pub fn judge(self, facts: AccessFacts<'_>, now: DateTime<Utc>) -> (bool, Reason) {
        use SubscriptionStatus as S;
        match facts.status {
            S::Active | S::Trialing if facts.collection_paused => {
                (self.collection_paused_is_paid, Reason::CollectionPaused)
            }
            S::Active => (true, Reason::Active),
            S::Trialing => (true, Reason::Trialing),
            S::PastDue => match facts.past_due_since {
                Some(since) if now < self.grace_ends_at(since) => (true, Reason::PastDueInGrace),
                _ => (false, Reason::PastDueGraceEnded),
            },
            S::Canceled => (false, Reason::Canceled),
            S::Unpaid => (false, Reason::Unpaid),
            S::Incomplete => (false, Reason::Incomplete),
            S::IncompleteExpired => (false, Reason::IncompleteExpired),
            S::Paused => (false, Reason::Paused),
            S::Unknown(_) => (false, Reason::UnrecognizedStatus),
        }
    }

    pub fn grants_access(self, facts: AccessFacts<'_>, now: DateTime<Utc>) -> bool {
        self.judge(facts, now).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [(&str, SubscriptionStatus); 8] = [
        ("active", SubscriptionStatus::Active),
        ("trialing", SubscriptionStatus::Trialing),
        ("past_due", SubscriptionStatus::PastDue),
        ("canceled", SubscriptionStatus::Canceled),
        ("unpaid", SubscriptionStatus::Unpaid),
        ("incomplete", SubscriptionStatus::Incomplete),
        ("incomplete_expired", SubscriptionStatus::IncompleteExpired),
        ("paused", SubscriptionStatus::Paused),
    ];

    #[test]
    fn every_known_wire_string_parses_and_round_trips() {
        for (wire, status) in KNOWN {
            let parsed = SubscriptionStatus::parse(wire);

            assert_eq!(parsed, status);
            assert_eq!(parsed.as_str(), wire);
            assert_eq!(parsed.to_string(), wire);
        }
    }

    #[test]
    fn an_unrecognised_status_is_kept_verbatim_as_unknown() {
        let parsed = SubscriptionStatus::parse("on_hold_for_review");

        assert_eq!(
            parsed,
            SubscriptionStatus::Unknown("on_hold_for_review".into())
        );
        assert_eq!(parsed.as_str(), "on_hold_for_review");
    }

    #[test]
    fn parsing_is_case_sensitive_like_stripe() {
        assert_eq!(
            SubscriptionStatus::parse("Active"),
            SubscriptionStatus::Unknown("Active".into())
        );
    }

    fn facts(status: &SubscriptionStatus) -> AccessFacts<'_> {
        AccessFacts {
            status,
            past_due_since: None,
            collection_paused: false,
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn active_and_trialing_grant_access_whatever_the_grace() {
        for days in [0, 14] {
            let rule = PaidRule::new(days, true);
            assert_eq!(
                rule.judge(facts(&SubscriptionStatus::Active), at(0)),
                (true, Reason::Active)
            );
            assert_eq!(
                rule.judge(facts(&SubscriptionStatus::Trialing), at(0)),
                (true, Reason::Trialing)
            );
        }
    }

    #[test]
    fn past_due_grants_access_until_the_grace_counted_from_when_it_became_past_due_ends() {
        let rule = PaidRule::new(14, true);
        let status = SubscriptionStatus::PastDue;
        let since = at(1_000_000);
        let facts = AccessFacts {
            past_due_since: Some(since),
            ..facts(&status)
        };
        let ends = since + TimeDelta::days(14);

        assert_eq!(
            rule.judge(facts, ends - TimeDelta::seconds(1)),
            (true, Reason::PastDueInGrace)
        );
        assert_eq!(rule.judge(facts, ends), (false, Reason::PastDueGraceEnded));
        assert_eq!(rule.grace_ends_at(since), ends);
    }

    #[test]
    fn a_grace_of_zero_days_makes_past_due_unpaid_at_once() {
        let status = SubscriptionStatus::PastDue;
        let facts = AccessFacts {
            past_due_since: Some(at(100)),
            ..facts(&status)
        };

        assert_eq!(
            PaidRule::new(0, true).judge(facts, at(100)),
            (false, Reason::PastDueGraceEnded)
        );
    }

    #[test]
    fn paused_collection_grants_access_only_when_configured_to() {
        let status = SubscriptionStatus::Active;
        let paused = AccessFacts {
            collection_paused: true,
            ..facts(&status)
        };

        assert_eq!(
            PaidRule::new(14, true).judge(paused, at(0)),
            (true, Reason::CollectionPaused)
        );
        assert_eq!(
            PaidRule::new(14, false).judge(paused, at(0)),
            (false, Reason::CollectionPaused)
        );
    }

    #[test]
    fn unpaid_ended_paused_and_unknown_statuses_never_grant_access() {
        let denied = [
            SubscriptionStatus::Canceled,
            SubscriptionStatus::Unpaid,
            SubscriptionStatus::Incomplete,
            SubscriptionStatus::IncompleteExpired,
            SubscriptionStatus::Paused,
            SubscriptionStatus::Unknown("active ".into()),
            SubscriptionStatus::Unknown(String::new()),
        ];
        for status in denied {
            assert!(
                !PaidRule::new(366, true).grants_access(facts(&status), at(0)),
                "{status:?} granted access"
            );
        }
    }

    #[test]
    fn every_reason_has_a_distinct_stable_code() {
        let codes: std::collections::HashSet<&str> =
            Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
    }

    #[test]
    fn only_canceled_and_incomplete_expired_are_terminal() {
        for (_, status) in KNOWN {
            let expected = matches!(
                status,
                SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired
            );
            assert_eq!(status.is_terminal(), expected, "{status:?}");
        }
        assert!(!SubscriptionStatus::Unknown("gone".into()).is_terminal());
    }

    #[test]
    fn deserializing_accepts_known_and_unknown_strings() {
        let parsed: Vec<SubscriptionStatus> =
            serde_json::from_str(r#"["past_due","brand_new_status"]"#).unwrap();

        assert_eq!(
            parsed,
            [
                SubscriptionStatus::PastDue,
                SubscriptionStatus::Unknown("brand_new_status".into())
            ]
        );
    }

    #[test]
    fn deserializing_a_non_string_is_an_error_not_a_panic() {
        assert!(serde_json::from_str::<SubscriptionStatus>("42").is_err());
        assert!(serde_json::from_str::<SubscriptionStatus>("null").is_err());
    }
}
