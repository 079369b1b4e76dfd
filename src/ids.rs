//! The identifiers every layer passes around, as distinct types: the app's
//! user id and Stripe's customer, subscription and event ids. A function that
//! takes a customer and a user cannot be called with the two swapped.
//!
//! Each is text in Postgres (diesel maps it directly) and in JSON. Ids the
//! app hands us ([`UserId`], [`OrgId`]) are validated by one rule,
//! [`check_app_id`]: they come from the app's token or from Stripe metadata.
//! Stripe's ids are taken as Stripe sends them.

use std::fmt;

use diesel::deserialize::{FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{Output, ToSql};
use diesel::sql_types::Text;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

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

/// An id the app hands us: a text id made only by its `parse`, which applies
/// [`check_app_id`].
macro_rules! app_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        text_id!($(#[$doc])* $name);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, String> {
                check_app_id($what, s)?;
                Ok(Self(s.to_string()))
            }
        }
    };
}

text_id!(
    /// The app's user id (`sub`), as [`check_app_id`] allows, and not
    /// beginning with [`ORG_PREFIX`] (that names an organisation's account).
    /// Made only by [`UserId::parse`].
    UserId
);

impl UserId {
    pub fn parse(s: &str) -> Result<Self, String> {
        check_app_id("user id", s)?;
        if s.starts_with(ORG_PREFIX) {
            return Err(format!(
                "user id begins with `{ORG_PREFIX}`, which names an organisation's account"
            ));
        }
        Ok(Self(s.to_string()))
    }
}

app_id!(
    /// The app's organisation id (the token's `org_id`), as [`check_app_id`]
    /// allows. Made only by [`OrgId::parse`].
    OrgId,
    "organisation id"
);

/// What an organisation's [`AccountId`] begins with, before the app's id.
pub const ORG_PREFIX: &str = "org:";

text_id!(
    /// The billable entity: the key of its row in `accounts`, its customer
    /// and subscriptions. A user's account is keyed by the user id itself (so
    /// every row from before organisations keeps its key); an organisation's
    /// by `org:<org id>`, which no user id may begin with. Made by
    /// [`AccountId::user`], [`AccountId::organization`] or
    /// [`AccountId::parse`].
    AccountId
);

/// Who an account bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    User,
    Organization,
}

impl AccountKind {
    /// `user` or `organization`: `accounts.kind` and the status's
    /// `account.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Organization => "organization",
        }
    }
}

impl AccountId {
    pub fn user(user: &UserId) -> Self {
        Self(user.0.clone())
    }

    pub fn organization(org: &OrgId) -> Self {
        Self(format!("{ORG_PREFIX}{org}"))
    }

    /// A stored or signed account key: `org:<org id>` or a user id, each
    /// checked by its own rule.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.strip_prefix(ORG_PREFIX) {
            Some(org) => OrgId::parse(org).map(|org| Self::organization(&org)),
            None => UserId::parse(s).map(|user| Self::user(&user)),
        }
    }

    pub fn kind(&self) -> AccountKind {
        if self.0.starts_with(ORG_PREFIX) {
            AccountKind::Organization
        } else {
            AccountKind::User
        }
    }

    /// The app's own id of what is billed: the organisation id without the
    /// prefix, or the user id.
    pub fn app_id(&self) -> &str {
        self.0.strip_prefix(ORG_PREFIX).unwrap_or(&self.0)
    }
}
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

const MAX_APP_ID_LEN: usize = 255;

/// The rule for every id the app hands us (`what` names it in the reason):
/// non-empty, at most 255 characters, and no character that is invisible or
/// reorders text, so the id is safe in a database key, a log line, Stripe
/// metadata and on a screen, and two ids that look the same are the same.
///
/// Refused by Unicode general category: controls (`Cc`), format characters
/// (`Cf`: bidi embeddings, overrides and isolates U+202A–U+202E and
/// U+2066–U+2069, zero-width space, joiners and marks U+200B–U+200F, U+2060,
/// U+FEFF, the soft hyphen, tag characters…), and the line and paragraph
/// separators (`Zl`, `Zp`), which end a line in many log viewers. Letters of
/// every script, digits, punctuation and symbols are fine.
pub fn check_app_id(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if s.chars().count() > MAX_APP_ID_LEN {
        return Err(format!("{what} is longer than {MAX_APP_ID_LEN} characters"));
    }
    if let Some(c) = s.chars().find(|c| invisible_or_reordering(*c)) {
        return Err(format!(
            "{what} contains U+{:04X}, a control, format or line separator character",
            c as u32
        ));
    }
    Ok(())
}

fn invisible_or_reordering(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// What makes `email` one Stripe refuses, if anything. Stripe does not
/// publish its rule; this is the WHATWG HTML definition of a valid email
/// address (html.spec.whatwg.org, "valid e-mail address", what browsers'
/// `type=email` accept), with a dot in the domain, as an address on the
/// internet has, and Stripe's 512-character limit of `email`
/// (docs.stripe.com/api/customers/create).
pub fn email_problem(email: &str) -> Option<&'static str> {
    const LOCAL_SPECIALS: &str = ".!#$%&'*+/=?^_`{|}~-";
    if email.len() > 512 {
        return Some("longer than 512 characters");
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Some("no `@`");
    };
    if local.is_empty()
        || !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c))
    {
        return Some("the part before `@` is empty or holds a character addresses cannot");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |label: &&str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return Some("the domain is not a host name with a dot, such as example.com");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_organisations_account_key_is_its_id_behind_the_org_prefix_which_no_user_id_may_take() {
        let org = AccountId::parse("org:acme").unwrap();
        assert_eq!(org.kind(), AccountKind::Organization);
        assert_eq!(org.app_id(), "acme");
        assert_eq!(org, AccountId::organization(&OrgId::parse("acme").unwrap()));

        let user = AccountId::parse("user_1").unwrap();
        assert_eq!((user.kind(), user.app_id()), (AccountKind::User, "user_1"));
        assert!(UserId::parse("org:acme").is_err());
        assert!(
            AccountId::parse("org:").is_err(),
            "an empty organisation id"
        );
        assert!(AccountId::parse("org:ac\u{202e}me").is_err());
    }

    #[test]
    fn emails_stripe_accepts_pass_and_the_ones_it_refuses_say_why() {
        for ok in [
            "ada@example.com",
            "ada.lovelace+billing@mail.example.co.uk",
            "o'brien@example.ie",
            "x@a-b.io",
        ] {
            assert_eq!(email_problem(ok), None, "{ok}");
        }
        for bad in [
            "ada",
            "ada@",
            "@example.com",
            "ada@localhost",
            "ada@example..com",
            "ada@-example.com",
            "ada lovelace@example.com",
            "ada@exam_ple.com",
            "adä@example.com",
            "ada@example.com\n",
        ] {
            assert!(email_problem(bad).is_some(), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(501));
        assert_eq!(email_problem(&long), Some("longer than 512 characters"));
    }

    #[test]
    fn a_user_id_must_not_be_empty() {
        assert!(UserId::parse("").is_err());
    }

    #[test]
    fn a_user_id_must_not_contain_control_characters() {
        assert!(UserId::parse("user\n1").is_err());
    }

    #[test]
    fn a_user_id_must_not_contain_unicode_format_characters() {
        // Bidi overrides and isolates make a log line or an admin screen show
        // another id than the one stored; zero-width characters make two ids
        // that look the same.
        for c in [
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}', // embeddings, overrides
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}', // isolates
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}', // zero width, marks
            '\u{FEFF}',
            '\u{00AD}',
            '\u{061C}',
            '\u{2060}',
            '\u{E0001}', // BOM, soft hyphen, tags
            '\u{2028}',
            '\u{2029}', // line and paragraph separators
        ] {
            let id = format!("user{c}1");
            assert!(UserId::parse(&id).is_err(), "U+{:04X} accepted", c as u32);
        }
    }

    #[test]
    fn a_user_id_may_use_any_script() {
        for id in ["utilisateur_é", "用户_1", "مستخدم", "user-1@example.com"] {
            assert_eq!(UserId::parse(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn a_user_id_of_256_characters_is_too_long() {
        assert!(UserId::parse(&"a".repeat(255)).is_ok());
        assert!(UserId::parse(&"a".repeat(256)).is_err());
    }
}
