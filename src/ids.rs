//! The identifiers every layer passes around, as distinct types: the app's
//! user id and Stripe's customer, subscription and event ids. A function that
//! takes a customer and a user cannot be called with the two swapped.
//!
//! Each is text in Postgres (diesel maps it directly) and in JSON. Only
//! [`UserId`] is validated: it comes from the app's token or from Stripe
//! metadata. Stripe's ids are taken as Stripe sends them.

use std::fmt;

use diesel::deserialize::{FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{Output, ToSql};
use diesel::sql_types::Text;

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, AsExpression, FromSqlRow)]
        #[diesel(sql_type = Text)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl ToSql<Text, Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> diesel::serialize::Result {
                <str as ToSql<Text, Pg>>::to_sql(&self.0, out)
            }
        }

        impl FromSql<Text, Pg> for $name {
            fn from_sql(bytes: PgValue<'_>) -> diesel::deserialize::Result<Self> {
                <String as FromSql<Text, Pg>>::from_sql(bytes).map(Self)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

/// Stripe ids as Stripe sends them: no validation, so an id format Stripe
/// changes never breaks webhook processing.
macro_rules! stripe_id {
    ($(#[$doc:meta])* $name:ident) => {
        text_id!($(#[$doc])* $name);

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }
    };
}

text_id!(
    /// The app's user id (`sub`): non-empty, at most 255 characters, no
    /// control characters, so it is safe in a database key, a log line and
    /// Stripe metadata. Made only by [`UserId::parse`].
    UserId
);
stripe_id!(
    /// A Stripe customer, `cus_…`.
    CustomerId
);
stripe_id!(
    /// A Stripe subscription, `sub_…`.
    SubscriptionId
);
stripe_id!(
    /// A Stripe event, `evt_…`.
    EventId
);

const MAX_USER_ID_LEN: usize = 255;

impl UserId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("user id is empty".into());
        }
        if s.chars().count() > MAX_USER_ID_LEN {
            return Err(format!(
                "user id is longer than {MAX_USER_ID_LEN} characters"
            ));
        }
        if s.chars().any(char::is_control) {
            return Err("user id contains control characters".into());
        }
        Ok(Self(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_id_must_not_be_empty() {
        assert!(UserId::parse("").is_err());
    }

    #[test]
    fn a_user_id_must_not_contain_control_characters() {
        assert!(UserId::parse("user\n1").is_err());
    }

    #[test]
    fn a_user_id_of_256_characters_is_too_long() {
        assert!(UserId::parse(&"a".repeat(255)).is_ok());
        assert!(UserId::parse(&"a".repeat(256)).is_err());
    }
}
