//! Fuzzes `parse_header` and `WebhookVerifier::verify` from `src/stripe/signature.rs`.
//!
//! Input format (plain text, so the seed corpus stays readable):
//!
//! ```text
//! <Stripe-Signature header value>
//! <offset of `now` from the header's `t`, decimal i64; optional, anything unparsable = 0>
//! <request body: every remaining byte>
//! ```
//!
//! A header line that is not UTF-8 is passed as `""`, as the webhook route does.
//!
//! Properties checked:
//! - `parse_header` and `verify` never panic, on any input.
//! - `verify(None, ..)` is `MissingHeader`; a header `parse_header` refuses is `MalformedHeader`.
//! - If `verify` returns `Ok(t)` then `now - t <= tolerance` and `t` is the header's `t`: only
//!   timestamps older than the tolerance are refused; a future one is accepted, as Stripe's
//!   libraries (stripe-node `src/Webhooks.ts`, stripe-go `webhook/client.go`) do.
//! - Since random bytes never carry a valid HMAC, the `Ok` path is exercised by also signing
//!   the fuzzed body with the project's own `sign` (at the fuzzed header's `t`, or `now`) and
//!   verifying that header, alone and combined with the fuzzed one: alone it must be accepted
//!   exactly when `now - t <= tolerance` and rejected as out of tolerance otherwise.
#![no_main]

use billing_portal::stripe::signature::{parse_header, sign, SignatureError, WebhookVerifier};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const SECRET: &str = "whsec_fuzz_secret_0123456789abcdef";
const ROLLED_SECRET: &str = "whsec_fuzz_rolled_secret";
const TOLERANCE: u64 = 300;

/// Whether `t` is not older than the tolerance at `now` (i128: no overflow on any i64 pair).
fn fresh_enough(t: i64, now: i64) -> bool {
    i128::from(now) - i128::from(t) <= i128::from(TOLERANCE)
}

fn verifier() -> &'static WebhookVerifier {
    static VERIFIER: OnceLock<WebhookVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        WebhookVerifier::new(vec![SECRET.to_owned(), ROLLED_SECRET.to_owned()], TOLERANCE)
    })
}

/// Split off everything up to the first `\n` (exclusive); the rest follows it.
fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Check the invariants of one `verify` call against what `parse_header` says of the header.
fn check_verify(header: &str, body: &[u8], now: i64) -> Result<i64, SignatureError> {
    let parsed = parse_header(header);
    let result = verifier().verify(Some(header), body, now);
    match (&parsed, &result) {
        (Err(e), _) => {
            assert_eq!(*e, SignatureError::MalformedHeader, "parse_header error");
            assert_eq!(result, Err(SignatureError::MalformedHeader), "{header:?}");
        }
        (Ok(p), Ok(t)) => {
            assert_eq!(
                *t, p.timestamp,
                "verify returned another timestamp than the header's"
            );
            assert!(
                fresh_enough(*t, now),
                "accepted t={t} at now={now}, older than the {TOLERANCE}s tolerance"
            );
            assert!(
                !p.v1.is_empty(),
                "accepted a header with no decodable v1: {header:?}"
            );
        }
        (Ok(p), Err(e)) => {
            let in_window = fresh_enough(p.timestamp, now);
            let expected = if in_window {
                SignatureError::NoMatchingSignature
            } else {
                SignatureError::TimestampOutOfTolerance
            };
            assert_eq!(*e, expected, "{header:?} at now={now}");
        }
    }
    result
}

fuzz_target!(|data: &[u8]| {
    // parse_header on the whole input, newlines included: it must be total.
    if let Ok(s) = std::str::from_utf8(data) {
        if parse_header(s).is_ok() {
            assert!(
                s.contains("v1"),
                "a header without any v1 key parsed: {s:?}"
            );
        }
    }

    let (header_line, rest) = split_line(data);
    let (offset_line, body) = split_line(rest);
    // The route turns a non-UTF-8 header value into "".
    let header = std::str::from_utf8(header_line).unwrap_or("");
    let offset = std::str::from_utf8(offset_line)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let header_t = parse_header(header).ok().map(|p| p.timestamp);
    let now = header_t.unwrap_or(0).wrapping_add(offset);

    assert_eq!(
        verifier().verify(None, body, now),
        Err(SignatureError::MissingHeader)
    );

    // The fuzzed header as sent.
    check_verify(header, body, now).ok();

    // A genuinely signed header for the same body, so the accepting path is reached too.
    let t = header_t.unwrap_or(now);
    for secret in [SECRET, ROLLED_SECRET] {
        let signed = sign(secret, t, body);
        let expected = if fresh_enough(t, now) {
            Ok(t)
        } else {
            Err(SignatureError::TimestampOutOfTolerance)
        };
        assert_eq!(
            check_verify(&signed, body, now),
            expected,
            "{signed:?} now={now}"
        );
    }
    let signed = sign(SECRET, t, body);

    // The signed `v1` next to the fuzzed items: whatever the fuzzed part holds (extra `t`s, other
    // schemes, junk), an `Ok` must still respect the window; the invariants are in check_verify.
    let v1 = &signed[signed.find(",v1=").expect("sign writes a v1") + 1..];
    check_verify(&format!("{header},{v1}"), body, now).ok();
    check_verify(&format!("{v1},{header}"), body, now).ok();

    // A signature by an unknown secret never verifies.
    let foreign = sign("whsec_not_configured", t, body);
    assert_ne!(verifier().verify(Some(&foreign), body, now), Ok(t));
});
