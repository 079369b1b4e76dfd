//! Signed `client_reference_id`s: how a Checkout that the buyer could have
//! opened with any reference (Payment Links and pricing tables take it from
//! the URL) still names the app user its customer belongs to.
//!
//! A signed reference is `<user_id>-<mac>`, `<mac>` being the unpadded
//! base64url of HMAC-SHA256(key, user_id): 43 characters, so the reference is
//! split at a fixed place from its end whatever the user id holds, and it uses
//! only the characters Payment Links accept (letters, digits, `-`, `_`). The
//! key is `CLIENT_REFERENCE_SECRET`'s bytes when that is set, else
//! HMAC-SHA256(`AUTH_JWT_SECRET`, [`DERIVATION_LABEL`]). The README documents
//! the format for apps that sign references themselves; the
//! `client-reference` command prints one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::ids::AccountId;
#[cfg(test)]
use crate::ids::UserId;

type HmacSha256 = Hmac<Sha256>;

/// What the default key is derived from `AUTH_JWT_SECRET` with. A derived key,
/// not the JWT secret itself, so a MAC a buyer sees can never serve as (or
/// help forge) a session token signature.
pub const DERIVATION_LABEL: &str = "billing-portal client_reference_id";

/// Characters of the encoded MAC: 32 bytes in unpadded base64.
const MAC_CHARS: usize = 43;
const SEPARATOR: char = '-';

/// The key references are signed with. Holds the keyed HMAC state, never
/// printed.
#[derive(Clone)]
pub struct ReferenceKey(HmacSha256);

impl std::fmt::Debug for ReferenceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReferenceKey(..)")
    }
}

impl ReferenceKey {
    /// `CLIENT_REFERENCE_SECRET` when set, else the key derived from
    /// `AUTH_JWT_SECRET`.
    pub fn from_secrets(
        client_reference_secret: Option<&SecretString>,
        jwt_secret: &SecretString,
    ) -> Self {
        match client_reference_secret {
            Some(secret) => Self::new(secret.expose_secret().as_bytes()),
            None => {
                let mut derive = keyed(jwt_secret.expose_secret().as_bytes());
                derive.update(DERIVATION_LABEL.as_bytes());
                Self::new(&derive.finalize().into_bytes())
            }
        }
    }

    fn new(key: &[u8]) -> Self {
        Self(keyed(key))
    }

    /// The signed reference for `user`'s account (`org:<id>` for an
    /// organisation's: Payment Links drop a reference with `:`, so an
    /// organisation's is for Checkout Sessions the app creates itself).
    pub fn sign(&self, user: &AccountId) -> String {
        let mut mac = self.0.clone();
        mac.update(user.as_str().as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{user}{SEPARATOR}{tag}")
    }

    /// The user a reference was signed for, or `None` when it is not one this
    /// key signed (a bare user id, another user's MAC, another key's).
    pub fn verify(&self, reference: &str) -> Option<AccountId> {
        let split = reference
            .len()
            .checked_sub(MAC_CHARS + SEPARATOR.len_utf8())?;
        // A reference with multi-byte characters near its end is not ours,
        // and must not make `split_at` panic.
        if !reference.is_char_boundary(split) {
            return None;
        }
        let (user, tag) = reference.split_at(split);
        let tag = URL_SAFE_NO_PAD.decode(tag.strip_prefix(SEPARATOR)?).ok()?;
        let user = AccountId::parse(user).ok()?;
        let mut mac = self.0.clone();
        mac.update(user.as_str().as_bytes());
        // Constant time.
        mac.verify_slice(&tag).ok()?;
        Some(user)
    }
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

/// Whether Payment Links and pricing tables keep `reference` as their
/// `client_reference_id`: they silently drop one longer than 200 characters
/// or with characters other than letters, digits, `-` and `_`.
pub fn payment_links_accept(reference: &str) -> bool {
    reference.len() <= 200
        && reference
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> ReferenceKey {
        ReferenceKey::from_secrets(
            Some(&SecretString::from(secret)),
            &SecretString::from("jwt"),
        )
    }

    fn user(id: &str) -> AccountId {
        AccountId::user(&UserId::parse(id).unwrap())
    }

    #[test]
    fn a_signed_reference_names_its_user_and_only_with_its_key() {
        let reference = key("k1").sign(&user("user_42"));

        assert_eq!(key("k1").verify(&reference), Some(user("user_42")));
        assert_eq!(key("k2").verify(&reference), None);
        assert!(payment_links_accept(&reference), "{reference}");
    }

    #[test]
    fn a_user_id_ending_like_a_reference_is_still_split_at_the_mac() {
        let tricky = user("a-b_c-0123456789012345678901234567890123456789012");
        let reference = key("k").sign(&tricky);

        assert_eq!(key("k").verify(&reference), Some(tricky));
    }

    #[test]
    fn bare_tampered_and_malformed_references_name_nobody() {
        let k = key("k");
        let signed = k.sign(&user("user_1"));
        let other_user = signed.replacen("user_1", "user_2", 1);
        let mut flipped = signed.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == 'A' { 'B' } else { 'A' });
        let cases = [
            "user_1".to_string(),
            "".to_string(),
            other_user,
            flipped,
            signed.replace('-', "."),
            signed[..signed.len() - 1].to_string(),
            format!("{signed}A"),
            format!("-{}", &signed[signed.len() - MAC_CHARS..]),
            format!("é{}", "é".repeat(MAC_CHARS)),
            format!("user\u{1}{}", &signed[signed.len() - MAC_CHARS - 1..]),
        ];
        for reference in cases {
            assert_eq!(k.verify(&reference), None, "{reference:?}");
        }
    }

    #[test]
    fn the_default_key_is_derived_from_the_jwt_secret_not_the_secret_itself() {
        let jwt = SecretString::from("jwt-secret");
        let derived = ReferenceKey::from_secrets(None, &jwt).sign(&user("u"));

        assert_ne!(derived, key("jwt-secret").sign(&user("u")));
        let label_mac = {
            let mut m = keyed(b"jwt-secret");
            m.update(DERIVATION_LABEL.as_bytes());
            m.finalize().into_bytes()
        };
        assert_eq!(derived, ReferenceKey::new(&label_mac).sign(&user("u")));
    }

    #[test]
    fn payment_links_drop_long_references_and_other_characters() {
        assert!(payment_links_accept("user_1-AZaz09_-"));
        assert!(!payment_links_accept("user.1"));
        assert!(!payment_links_accept("auth0|1"));
        assert!(!payment_links_accept(&"a".repeat(201)));
    }
}
