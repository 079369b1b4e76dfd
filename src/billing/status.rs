//! The subscription status as a domain type, and the rule for which statuses pay.
//!
//! Owns `SubscriptionStatus`: parsing Stripe's wire strings (leniently, so a status Stripe adds
//! later never breaks webhook processing), turning them back into wire strings for storage, and
//! deciding whether a status grants access. The past-due grace decision is made by the caller's
//! configuration and passed in; this module reads no settings itself.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A Stripe subscription status.
///
/// Unrecognised values are kept verbatim in `Unknown` rather than rejected: Stripe adds statuses
/// over time and an event we cannot classify must still be stored (as unpaid) instead of failing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubscriptionStatus {
    Active,
    Trialing,
    PastDue,
    Canceled,
    Unpaid,
    Incomplete,
    IncompleteExpired,
    Paused,
    Unknown(String),
}

impl SubscriptionStatus {
    /// Parse a Stripe status string. Never fails: anything unrecognised becomes `Unknown`.
    pub fn parse(s: &str) -> Self {
        match s {
            "active" => Self::Active,
            "trialing" => Self::Trialing,
            "past_due" => Self::PastDue,
            "canceled" => Self::Canceled,
            "unpaid" => Self::Unpaid,
            "incomplete" => Self::Incomplete,
            "incomplete_expired" => Self::IncompleteExpired,
            "paused" => Self::Paused,
            other => Self::Unknown(other.to_owned()),
        }
    }

    /// The Stripe wire string; `Unknown` gives back exactly what was parsed, so storing and
    /// re-reading a status never loses information.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Active => "active",
            Self::Trialing => "trialing",
            Self::PastDue => "past_due",
            Self::Canceled => "canceled",
            Self::Unpaid => "unpaid",
            Self::Incomplete => "incomplete",
            Self::IncompleteExpired => "incomplete_expired",
            Self::Paused => "paused",
            Self::Unknown(s) => s,
        }
    }

    /// Whether Stripe will never move the subscription out of this status again.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Canceled | Self::IncompleteExpired)
    }

    /// Whether a subscription in this status makes its user paid.
    ///
    /// `past_due` is paid only while the configured grace allows it (Stripe is still retrying the
    /// payment). Unknown statuses are unpaid: access is granted only for states we understand.
    pub fn grants_access(&self, past_due_is_paid: bool) -> bool {
        match self {
            Self::Active | Self::Trialing => true,
            Self::PastDue => past_due_is_paid,
            Self::Canceled
            | Self::Unpaid
            | Self::Incomplete
            | Self::IncompleteExpired
            | Self::Paused
            | Self::Unknown(_) => false,
        }
    }
}

impl fmt::Display for SubscriptionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SubscriptionStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A visitor rather than `String::deserialize` so borrowed strings (the common case with
        // `serde_json::from_slice`) are matched without allocating.
        struct StatusVisitor;

        impl Visitor<'_> for StatusVisitor {
            type Value = SubscriptionStatus;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a subscription status string")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(SubscriptionStatus::parse(v))
            }
        }

        deserializer.deserialize_str(StatusVisitor)
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

    #[test]
    fn active_and_trialing_grant_access_regardless_of_grace() {
        for grace in [true, false] {
            assert!(SubscriptionStatus::Active.grants_access(grace));
            assert!(SubscriptionStatus::Trialing.grants_access(grace));
        }
    }

    #[test]
    fn past_due_grants_access_only_during_grace() {
        assert!(SubscriptionStatus::PastDue.grants_access(true));
        assert!(!SubscriptionStatus::PastDue.grants_access(false));
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
            assert!(!status.grants_access(true), "{status:?} granted access");
        }
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
