//! Stripe's subscription status: parsing the wire strings leniently, so a
//! status Stripe adds later never breaks webhook processing, and turning them
//! back into wire strings for storage. What a status means for access is the
//! billing rule's business (`crate::billing::status`).

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
