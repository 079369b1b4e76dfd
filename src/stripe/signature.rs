//! Verification of Stripe's `Stripe-Signature` webhook header.
//!
//! Owns the header format (`t=<unix seconds>,v1=<hex>,...`), the HMAC-SHA256 scheme Stripe
//! signs with, the timestamp tolerance check and the constant-time comparison. It is done here
//! with `hmac`/`sha2`/`subtle` rather than through a Stripe SDK so that the raw request bytes are
//! verified *before* anything parses them, and so the check has no dependency on API versions.
//!
//! The secrets (`STRIPE_WEBHOOK_SECRET`, several while one is rolled) and the tolerance
//! (`STRIPE_WEBHOOK_TOLERANCE_SECS`) are read by the configuration layer and handed to
//! [`WebhookVerifier::new`]; this module reads no settings itself and never prints a secret.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

type HmacSha256 = Hmac<Sha256>;

/// Checks `Stripe-Signature` headers against one or more webhook signing secrets.
pub struct WebhookVerifier {
    /// Each secret's bytes, used whole as the HMAC key (Stripe keys with the full `whsec_…`
    /// string, prefix included).
    secrets: Vec<Vec<u8>>,
    tolerance_secs: u64,
}

impl WebhookVerifier {
    /// `secrets`: one or more signing secrets; any of them may have signed a request (Stripe
    /// signs with both the old and the new secret while one is rolled).
    /// `tolerance_secs` must be positive; the configuration layer refuses 0.
    pub fn new(secrets: Vec<String>, tolerance_secs: u64) -> Self {
        Self {
            secrets: secrets.into_iter().map(String::into_bytes).collect(),
            tolerance_secs,
        }
    }

    /// Verify a webhook request.
    ///
    /// `header` is the raw `Stripe-Signature` value if the request had one, `body` the exact
    /// request bytes, `now` the current unix time in seconds. Returns the verified timestamp.
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<i64, SignatureError> {
        let header = header.ok_or(SignatureError::MissingHeader)?;
        let parsed = parse_header(header)?;

        // Only a timestamp *older* than the tolerance is refused, as Stripe's own libraries do
        // (stripe-node `src/Webhooks.ts`: `timestampAge > tolerance`; stripe-go
        // `webhook/client.go`: `time.Since(t) > tolerance`; docs.stripe.com/webhooks, "Prevent
        // replay attacks"). A future timestamp means this host's clock is behind Stripe's;
        // refusing it would drop every delivery until NTP is fixed, so it is accepted and the
        // caller reports the skew (see [`ahead_of_clock`]). Checked before any HMAC work so
        // replays are cheap to reject and report the timestamp problem even when the
        // signature would not match either. i128 cannot overflow on any pair of i64.
        if i128::from(now) - i128::from(parsed.timestamp) > i128::from(self.tolerance_secs) {
            return Err(SignatureError::TimestampOutOfTolerance);
        }

        // Fold every comparison into one `Choice` instead of returning at the first match, so
        // the time taken does not depend on which secret or which `v1` entry matched.
        let mut matched = Choice::from(0);
        for secret in &self.secrets {
            let expected = compute_signature(secret, parsed.timestamp, body);
            for candidate in &parsed.v1 {
                matched |= expected.as_slice().ct_eq(candidate.as_slice());
            }
        }

        if bool::from(matched) {
            Ok(parsed.timestamp)
        } else {
            Err(SignatureError::NoMatchingSignature)
        }
    }
}

impl fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the number of secrets: the values must never reach a log line.
        f.debug_struct("WebhookVerifier")
            .field("secret_count", &self.secrets.len())
            .field("tolerance_secs", &self.tolerance_secs)
            .finish()
    }
}

/// How far ahead of `now` a verified signature timestamp may be before it is reported as clock
/// skew: deliveries take a moment, and clocks a few seconds apart are normal.
pub const CLOCK_SKEW_NOTICE_SECS: u64 = 60;

/// Seconds by which a verified signature `timestamp` is ahead of this host's clock (`now`), when
/// that is more than [`CLOCK_SKEW_NOTICE_SECS`]: Stripe signs at send time, so this host's clock
/// is at least that far behind Stripe's. `None` for a timestamp at, before or just after `now`.
pub fn ahead_of_clock(timestamp: i64, now: i64) -> Option<u64> {
    let ahead = u64::try_from(i128::from(timestamp) - i128::from(now)).ok()?;
    (ahead > CLOCK_SKEW_NOTICE_SECS).then_some(ahead)
}

/// Why a webhook request failed verification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    #[error("malformed Stripe-Signature header")]
    MalformedHeader,
    #[error("signature timestamp older than the tolerance")]
    TimestampOutOfTolerance,
    #[error("no signature matches the payload")]
    NoMatchingSignature,
}

impl SignatureError {
    /// Every kind, so each can be counted from zero.
    pub const ALL: [Self; 4] = [
        Self::MissingHeader,
        Self::MalformedHeader,
        Self::TimestampOutOfTolerance,
        Self::NoMatchingSignature,
    ];

    /// A stable snake_case name: the `reason` label of
    /// `billing_portal_webhook_signature_failures_total`, and the same word as the API's error
    /// code for it (a unit test in `http::error` holds the two together).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingHeader => "missing_signature",
            Self::MalformedHeader => "malformed_signature",
            Self::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
            Self::NoMatchingSignature => "signature_mismatch",
        }
    }
}

/// The parts of a `Stripe-Signature` header this service uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedHeader {
    pub timestamp: i64,
    /// Every `v1` signature, hex-decoded. Entries that were not valid hex are left out: they
    /// could never match, and dropping them keeps the comparison loop simple.
    pub v1: Vec<Vec<u8>>,
}

/// Parse a `Stripe-Signature` header value.
///
/// Items are comma separated `key=value` pairs, whitespace around them is ignored. Exactly one
/// `t` holding an integer and at least one `v1` key are required, otherwise the header is
/// malformed. `v0` (Stripe's test-mode legacy scheme) and unknown keys are ignored so that new
/// schemes Stripe adds do not break verification. Pure, and total on any input.
pub fn parse_header(header: &str) -> Result<ParsedHeader, SignatureError> {
    let mut timestamp = None;
    let mut saw_v1 = false;
    let mut v1 = Vec::new();

    for item in header.split(',') {
        let Some((key, value)) = item.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "t" => {
                // Two timestamps would leave it ambiguous which one was signed.
                if timestamp.is_some() {
                    return Err(SignatureError::MalformedHeader);
                }
                let t = value
                    .parse::<i64>()
                    .map_err(|_| SignatureError::MalformedHeader)?;
                timestamp = Some(t);
            }
            "v1" => {
                // A `v1` key that is not hex still counts as "a v1 was sent" (so the request
                // fails as a mismatch, as Stripe's own libraries do), but it cannot match.
                saw_v1 = true;
                if let Ok(bytes) = hex::decode(value) {
                    v1.push(bytes);
                }
            }
            _ => {}
        }
    }

    match timestamp {
        Some(timestamp) if saw_v1 => Ok(ParsedHeader { timestamp, v1 }),
        _ => Err(SignatureError::MalformedHeader),
    }
}

/// Produce a header value `t={timestamp},v1={hex}` signing `body` with `secret`.
///
/// Used by the service's local Stripe emulator and by tests that need to send signed webhooks.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let signature = compute_signature(secret.as_bytes(), timestamp, body);
    format!("t={timestamp},v1={}", hex::encode(signature))
}

/// HMAC-SHA256 over `"{timestamp}.{body}"` keyed with the whole secret.
///
/// The timestamp is written in its canonical decimal form, as Stripe's official libraries do.
/// The payload is fed to the MAC in pieces so the body is never copied.
fn compute_signature(secret: &[u8], timestamp: i64, body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const ROLLED_SECRET: &str = "whsec_rolled_secret";
    const TIMESTAMP: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1"}"#;
    const TOLERANCE: u64 = 300;

    // printf '%s' '1700000000.{"id":"evt_1"}' | openssl dgst -sha256 -hmac 'whsec_test_secret'
    const SIG_TEST_SECRET: &str =
        "248a374f50f943a28b0f6ab50faf9a7e7e29b710fa26df9fb1618b9bf8ea9c9a";

    // printf '%s' '1700000000.{"id":"evt_1"}' | openssl dgst -sha256 -hmac 'whsec_rolled_secret'
    const SIG_ROLLED_SECRET: &str =
        "645a64f30cee9e42e215ad0eb1b303b4155d551d7860d64dcb7e6bacb538af6b";

    fn verifier(secrets: &[&str]) -> WebhookVerifier {
        WebhookVerifier::new(secrets.iter().map(|s| s.to_string()).collect(), TOLERANCE)
    }

    fn header_with(signature: &str) -> String {
        format!("t={TIMESTAMP},v1={signature}")
    }

    #[test]
    fn a_valid_signature_is_accepted_and_returns_its_timestamp() {
        let header = header_with(SIG_TEST_SECRET);

        let result = verifier(&[SECRET]).verify(Some(&header), BODY, TIMESTAMP + 10);

        assert_eq!(result, Ok(TIMESTAMP));
    }

    #[test]
    fn a_real_stripe_style_header_with_v0_and_spaces_is_accepted() {
        let header = format!(
            " t={TIMESTAMP} , v1={SIG_TEST_SECRET} , v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39 "
        );

        let result = verifier(&[SECRET]).verify(Some(&header), BODY, TIMESTAMP);

        assert_eq!(result, Ok(TIMESTAMP));
    }

    #[test]
    fn a_tampered_body_is_rejected() {
        let header = header_with(SIG_TEST_SECRET);

        let result = verifier(&[SECRET]).verify(Some(&header), br#"{"id":"evt_2"}"#, TIMESTAMP);

        assert_eq!(result, Err(SignatureError::NoMatchingSignature));
    }

    #[test]
    fn a_signature_made_with_another_secret_is_rejected() {
        let header = header_with(SIG_TEST_SECRET);

        let result = verifier(&["whsec_other_secret"]).verify(Some(&header), BODY, TIMESTAMP);

        assert_eq!(result, Err(SignatureError::NoMatchingSignature));
    }

    #[test]
    fn a_signature_made_with_the_second_configured_secret_is_accepted() {
        let header = header_with(SIG_ROLLED_SECRET);

        let result = verifier(&[SECRET, ROLLED_SECRET]).verify(Some(&header), BODY, TIMESTAMP);

        assert_eq!(result, Ok(TIMESTAMP));
    }

    #[test]
    fn two_v1_entries_with_only_one_valid_are_accepted() {
        let header = format!("t={TIMESTAMP},v1={SIG_ROLLED_SECRET},v1={SIG_TEST_SECRET}");

        let result = verifier(&[SECRET]).verify(Some(&header), BODY, TIMESTAMP);

        assert_eq!(result, Ok(TIMESTAMP));
    }

    #[test]
    fn a_timestamp_exactly_at_the_tolerance_edge_is_accepted() {
        let header = header_with(SIG_TEST_SECRET);

        let result = verifier(&[SECRET]).verify(Some(&header), BODY, TIMESTAMP + 300);

        assert_eq!(result, Ok(TIMESTAMP));
    }

    #[test]
    fn a_timestamp_older_than_the_tolerance_is_rejected() {
        let header = header_with(SIG_TEST_SECRET);

        let result = verifier(&[SECRET]).verify(Some(&header), BODY, TIMESTAMP + 301);

        assert_eq!(result, Err(SignatureError::TimestampOutOfTolerance));
    }

    #[test]
    fn a_future_timestamp_beyond_the_tolerance_is_accepted_as_stripes_libraries_do() {
        let header = header_with(SIG_TEST_SECRET);
        let v = verifier(&[SECRET]);

        assert_eq!(
            v.verify(Some(&header), BODY, TIMESTAMP - 301),
            Ok(TIMESTAMP)
        );
        assert_eq!(
            v.verify(Some(&header), BODY, TIMESTAMP - 86_400),
            Ok(TIMESTAMP)
        );
    }

    #[test]
    fn a_future_timestamp_still_needs_a_matching_signature() {
        let header = header_with(SIG_ROLLED_SECRET);

        let result = verifier(&[SECRET]).verify(Some(&header), BODY, TIMESTAMP - 3600);

        assert_eq!(result, Err(SignatureError::NoMatchingSignature));
    }

    #[test]
    fn only_a_timestamp_more_than_a_minute_ahead_counts_as_clock_skew() {
        assert_eq!(ahead_of_clock(TIMESTAMP, TIMESTAMP), None);
        assert_eq!(ahead_of_clock(TIMESTAMP - 300, TIMESTAMP), None);
        assert_eq!(ahead_of_clock(TIMESTAMP + 60, TIMESTAMP), None);
        assert_eq!(ahead_of_clock(TIMESTAMP + 61, TIMESTAMP), Some(61));
        assert_eq!(ahead_of_clock(i64::MAX, i64::MIN), Some(u64::MAX));
        assert_eq!(ahead_of_clock(i64::MIN, i64::MAX), None);
    }

    #[test]
    fn an_expired_timestamp_is_reported_even_when_the_signature_is_also_wrong() {
        let header = header_with(SIG_ROLLED_SECRET);

        let result = verifier(&[SECRET]).verify(Some(&header), b"other", TIMESTAMP + 10_000);

        assert_eq!(result, Err(SignatureError::TimestampOutOfTolerance));
    }

    #[test]
    fn extreme_timestamps_are_judged_without_overflow() {
        let v = verifier(&[SECRET]);
        let oldest = format!("t={},v1={SIG_TEST_SECRET}", i64::MIN);
        let newest = format!("t={},v1={SIG_TEST_SECRET}", i64::MAX);

        assert_eq!(
            v.verify(Some(&oldest), BODY, i64::MAX),
            Err(SignatureError::TimestampOutOfTolerance)
        );
        // Far in the future is not refused for its age, only for its signature.
        assert_eq!(
            v.verify(Some(&newest), BODY, i64::MIN),
            Err(SignatureError::NoMatchingSignature)
        );
        assert_eq!(
            v.verify(Some("t=99999999999999999999,v1=00"), BODY, 0),
            Err(SignatureError::MalformedHeader)
        );
    }

    #[test]
    fn a_header_without_a_timestamp_is_malformed() {
        let header = format!("v1={SIG_TEST_SECRET}");

        let result = verifier(&[SECRET]).verify(Some(&header), BODY, TIMESTAMP);

        assert_eq!(result, Err(SignatureError::MalformedHeader));
    }

    #[test]
    fn garbage_headers_are_malformed() {
        let v = verifier(&[SECRET]);
        for garbage in [
            "hello",
            "",
            ",,,",
            "t=abc,v1=zz",
            "t=,v1=00",
            "t=1.5,v1=00",
            "===",
            "t=1,t=1,v1=00",
        ] {
            assert_eq!(
                v.verify(Some(garbage), BODY, TIMESTAMP),
                Err(SignatureError::MalformedHeader),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn a_v0_only_header_is_malformed_because_it_has_no_v1() {
        let header =
            "t=1700000000,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39";

        assert_eq!(parse_header(header), Err(SignatureError::MalformedHeader));
        assert_eq!(
            verifier(&[SECRET]).verify(Some(header), BODY, TIMESTAMP),
            Err(SignatureError::MalformedHeader)
        );
    }

    #[test]
    fn a_v1_that_is_not_hex_is_skipped_and_cannot_match() {
        let parsed = parse_header(&format!("t=5,v1=zz,v1={SIG_TEST_SECRET}")).unwrap();
        assert_eq!(parsed.timestamp, 5);
        assert_eq!(parsed.v1, vec![hex::decode(SIG_TEST_SECRET).unwrap()]);

        let result = verifier(&[SECRET]).verify(Some("t=1700000000,v1=zz"), BODY, TIMESTAMP);
        assert_eq!(result, Err(SignatureError::NoMatchingSignature));
    }

    #[test]
    fn a_missing_header_is_reported_as_missing() {
        let result = verifier(&[SECRET]).verify(None, BODY, TIMESTAMP);

        assert_eq!(result, Err(SignatureError::MissingHeader));
    }

    #[test]
    fn sign_agrees_with_an_openssl_vector() {
        // Vector: SIG_TEST_SECRET above (computed with openssl, not with `sign`).
        let header = sign(SECRET, TIMESTAMP, BODY);

        assert_eq!(header, header_with(SIG_TEST_SECRET));
    }

    #[test]
    fn every_kind_of_error_is_listed_once_with_its_own_reason() {
        // Exhaustive on purpose: a new kind does not compile here until it is placed in `ALL`.
        let position = |error: &SignatureError| match error {
            SignatureError::MissingHeader => 0,
            SignatureError::MalformedHeader => 1,
            SignatureError::TimestampOutOfTolerance => 2,
            SignatureError::NoMatchingSignature => 3,
        };
        let mut reasons: Vec<&str> = SignatureError::ALL.iter().map(|e| e.reason()).collect();
        reasons.sort();
        reasons.dedup();

        for (i, error) in SignatureError::ALL.iter().enumerate() {
            assert_eq!(position(error), i, "{error:?}");
        }
        assert_eq!(reasons.len(), SignatureError::ALL.len());
    }

    #[test]
    fn debug_output_never_contains_a_secret() {
        let v = verifier(&[SECRET, ROLLED_SECRET]);

        let printed = format!("{v:?}");

        assert!(!printed.contains("whsec"), "{printed}");
        assert!(!printed.contains("test_secret"), "{printed}");
        assert!(printed.contains("secret_count: 2"), "{printed}");
    }
}
