//! The wire to Stripe: the one HTTP client every Stripe call goes through
//! (create-portal, customer creation, refresh, refetch, `sync`, catch-up,
//! the drift check, price reads). It owns the connection pool, TLS, the
//! outbound proxy, the headers every request carries, and Stripe's retry
//! rules; [`super::client`] builds the requests (async-stripe's request
//! types) and reads the answers.
//!
//! - **Connections are kept alive** and reused (HTTP/1.1 keep-alive, reqwest's
//!   pool): a warm service opens the portal with one round trip to Stripe,
//!   where async-stripe's own client (`pool_max_idle_per_host(0)`) opened a
//!   new TCP and TLS connection for every call.
//! - **TLS from rustls** with the webpki roots, plus the certificates of
//!   `STRIPE_CA_FILE` (a TLS-inspecting proxy, a local stand-in).
//! - **`HTTPS_PROXY`** (with `NO_PROXY`) is honoured for Stripe's `https://` API.
//! - **Retries as Stripe's libraries do** (stripe-node `RequestSender`,
//!   stripe-go `shouldRetry`, docs.stripe.com/error-low-level): only requests
//!   that are reads or carry an `Idempotency-Key` (every POST sent here
//!   carries one); `Stripe-Should-Retry: false` stops, `true` retries, absent
//!   it retries connection failures, 409, 429 and 5xx; exponential backoff
//!   from 0.5 s, at most 5 s, with jitter (half to all of it), never shorter
//!   than a `Retry-After` of up to 60 s; and never past the call's time budget
//!   ([`Patience`]). An answer replayed from Stripe's idempotency store
//!   (`Idempotent-Replayed: true`) is final: the same key would only replay it.
//! - **Every Stripe error is logged once** with Stripe's request id.

use std::path::Path;
use std::time::{Duration, Instant};

use ::stripe::IdempotencyKey;
use log::warn;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use secrecy::{ExposeSecret, SecretString};
use stripe_client_core::{RequestBuilder, StripeMethod};

/// The `Stripe-Version` every request is sent with: the version async-stripe's
/// request types are generated for (a unit test holds them together), and the
/// version the README tells operators to give their webhook endpoint.
pub const API_VERSION: &str = "2026-09-30.endive";

/// The first wait between attempts, and the longest (stripe-node:
/// `INITIAL_NETWORK_RETRY_DELAY_SEC = 0.5`, `MAX_NETWORK_RETRY_DELAY_SEC = 5`).
const INITIAL_RETRY_DELAY: Duration = Duration::from_millis(500);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// The longest `Retry-After` waited for (stripe-node: `MAX_RETRY_AFTER_WAIT =
/// 60`); after a longer one the call is not retried.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// What a background read may spend on one request, retries included.
const BACKGROUND_BUDGET: Duration = Duration::from_secs(30);

/// How long a call may take, retries included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Patience {
    /// Someone waits on the answer (a click; a webhook delivery, which Stripe
    /// counts as failed when answered slowly): the whole call, retries
    /// included, within `STRIPE_TIMEOUT_SECS`.
    Waiting,
    /// Work nobody waits on (`sync`, catch-up, the drift check, price reads):
    /// each attempt within `STRIPE_TIMEOUT_SECS`, all of them within 30 s.
    Background,
}

/// How the transport is set up (from [`crate::config::StripeSettings`]).
#[derive(Debug, Clone, Default)]
pub struct TransportOptions {
    /// `STRIPE_API_BASE`, or Stripe's API.
    pub api_base: Option<String>,
    /// `STRIPE_TIMEOUT_SECS`: one attempt's limit, and a waiting call's.
    pub timeout: Duration,
    /// `STRIPE_MAX_NETWORK_RETRIES`: retries after the first attempt.
    pub max_retries: u32,
    /// `HTTPS_PROXY` (and `NO_PROXY`): the proxy `https://` requests go through.
    pub https_proxy: Option<SecretString>,
    pub no_proxy: Option<String>,
    /// `STRIPE_CA_FILE`: PEM certificates trusted besides the webpki roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// One Stripe API the whole process shares: cloning shares the pool.
#[derive(Clone)]
pub(crate) struct Transport {
    http: reqwest::Client,
    /// `…/v1`, without a trailing slash (request paths start with one).
    base: String,
    timeout: Duration,
    max_retries: u32,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Stripe's answer to one request that reached it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    /// `Request-Id`: what Stripe support and the Dashboard's logs find it by.
    pub(crate) request_id: Option<String>,
    /// `Stripe-Should-Retry`, when Stripe said.
    pub(crate) should_retry: Option<bool>,
    /// `Retry-After`, in whole seconds (the only form Stripe sends).
    pub(crate) retry_after: Option<Duration>,
    /// `Idempotent-Replayed: true`: the saved answer of an earlier request
    /// with the same key.
    pub(crate) replayed: bool,
    /// Whether an earlier attempt of the same call got no answer, or a 409:
    /// a request with this key may then still be running at Stripe, so this
    /// answer does not say how the call ended there.
    pub(crate) after_uncertain: bool,
}

impl Answer {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A request that got no answer.
#[derive(Debug)]
pub(crate) enum WireError {
    /// No answer within the attempt's time.
    Timeout,
    /// No connection, or it broke before the answer was read.
    Connection(String),
}

impl Transport {
    pub(crate) fn new(
        secret_key: &SecretString,
        options: &TransportOptions,
    ) -> anyhow::Result<Self> {
        let base = options
            .api_base
            .as_deref()
            .unwrap_or("https://api.stripe.com")
            .trim_end_matches('/');
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", secret_key.expose_secret()))
            .map_err(|_| anyhow::anyhow!("STRIPE_SECRET_KEY holds characters a header cannot"))?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert("stripe-version", HeaderValue::from_static(API_VERSION));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!(
                "billing-portal/",
                env!("CARGO_PKG_VERSION"),
                " (async-stripe request types)"
            )),
        );
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .use_rustls_tls()
            .http1_only()
            .connect_timeout(options.timeout)
            // Stripe closes idle connections after about a minute; a pooled
            // connection is dropped a little before, not found dead on use.
            .pool_idle_timeout(Duration::from_secs(50))
            .tcp_nodelay(true)
            // Only `HTTPS_PROXY`, read once as a setting: the environment is
            // not consulted again behind the configuration's back.
            .no_proxy();
        if let Some(proxy) = &options.https_proxy {
            let mut proxy = reqwest::Proxy::https(proxy.expose_secret())
                .map_err(|e| anyhow::anyhow!("HTTPS_PROXY is not a proxy URL: {e}"))?;
            if let Some(no_proxy) = &options.no_proxy {
                proxy = proxy.no_proxy(reqwest::NoProxy::from_string(no_proxy));
            }
            builder = builder.proxy(proxy);
        }
        if let Some(path) = &options.ca_file {
            for certificate in ca_certificates(path)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|e| anyhow::anyhow!("the Stripe HTTP client cannot be built: {e}"))?;
        Ok(Self {
            http,
            base: format!("{base}/v1"),
            timeout: options.timeout,
            max_retries: options.max_retries,
        })
    }

    /// Sends `request`, retried by Stripe's rules within `patience`'s budget,
    /// and answers Stripe's last answer, success or not (the caller reads the
    /// error), or why none came. A POST without `key` gets a fresh one, kept
    /// for its retries, so every POST can be retried safely.
    pub(crate) async fn send(
        &self,
        request: RequestBuilder,
        key: Option<IdempotencyKey>,
        patience: Patience,
    ) -> Result<Answer, WireError> {
        let started = Instant::now();
        let budget = match patience {
            Patience::Waiting => self.timeout,
            Patience::Background => BACKGROUND_BUDGET.max(self.timeout),
        };
        let key = match (request.method, key) {
            (StripeMethod::Post, None) => Some(fresh_key()),
            (_, key) => key,
        };
        let retryable = matches!(request.method, StripeMethod::Get) || key.is_some();
        let what = describe(&request);
        // An attempt is only started with time to be answered in.
        let least_attempt = self.timeout.min(Duration::from_secs(1));
        let mut retries = 0;
        let mut uncertain = false;
        loop {
            let remaining = budget.saturating_sub(started.elapsed());
            let mut outcome = self
                .attempt(&request, key.as_ref(), self.timeout.min(remaining))
                .await;
            if let Ok(answer) = &mut outcome {
                answer.after_uncertain = uncertain;
                if answer.is_success() {
                    return outcome;
                }
            }
            uncertain |= match &outcome {
                Err(_) => true,
                Ok(answer) => answer.status == 409,
            };
            let wait = retry_after(&outcome, retries, self.max_retries, retryable)
                .filter(|wait| started.elapsed() + *wait + least_attempt <= budget);
            match wait {
                Some(wait) => {
                    retries += 1;
                    log::info!(
                        "Stripe {what}: {}; retry {retries} of {} in {} ms",
                        summary(&outcome),
                        self.max_retries,
                        wait.as_millis()
                    );
                    actix_web::rt::time::sleep(wait).await;
                }
                None => {
                    warn!(
                        "Stripe {what} failed after {} attempt(s): {}",
                        retries + 1,
                        summary(&outcome)
                    );
                    return outcome;
                }
            }
        }
    }

    async fn attempt(
        &self,
        request: &RequestBuilder,
        key: Option<&IdempotencyKey>,
        timeout: Duration,
    ) -> Result<Answer, WireError> {
        let mut url = format!("{}{}", self.base, request.path);
        if let Some(query) = &request.query {
            url.push('?');
            url.push_str(query);
        }
        let method = match request.method {
            StripeMethod::Get => reqwest::Method::GET,
            StripeMethod::Post => reqwest::Method::POST,
            StripeMethod::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self.http.request(method, url).timeout(timeout);
        if let Some(key) = key {
            builder = builder.header("idempotency-key", key.as_str());
        }
        if let Some(body) = &request.body {
            builder = builder
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body.clone());
        }
        let response = builder.send().await.map_err(wire_error)?;
        let headers = response.headers();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .map(str::to_owned)
        };
        let status = response.status().as_u16();
        let request_id = header("request-id");
        let should_retry = header("stripe-should-retry").and_then(|v| match v.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        });
        let retry_after = header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let replayed = header("idempotent-replayed").as_deref() == Some("true");
        let body = response.bytes().await.map_err(wire_error)?.to_vec();
        Ok(Answer {
            status,
            body,
            request_id,
            should_retry,
            retry_after,
            replayed,
            after_uncertain: false,
        })
    }
}

/// How long to wait before retrying after `outcome`, or `None` when Stripe's
/// rules say not to retry (the time budget is the caller's to apply).
/// `retries` is how many retries were already made.
fn retry_after(
    outcome: &Result<Answer, WireError>,
    retries: u32,
    max_retries: u32,
    retryable: bool,
) -> Option<Duration> {
    if !retryable || retries >= max_retries {
        return None;
    }
    let asked = match outcome {
        Err(_) => None,
        Ok(answer) => {
            if answer.replayed {
                return None;
            }
            let retry = match answer.should_retry {
                Some(says) => says,
                None => matches!(answer.status, 409 | 429 | 500..=599),
            };
            if !retry {
                return None;
            }
            // A longer wait than stripe-node would make is not made at all:
            // the caller answers with Stripe's `Retry-After` instead.
            if answer
                .retry_after
                .is_some_and(|asked| asked > MAX_RETRY_AFTER)
            {
                return None;
            }
            answer.retry_after
        }
    };
    Some(backoff(retries + 1, asked, fastrand::f64()))
}

/// stripe-node's `_getSleepTimeInMS`: `0.5 s × 2^(n−1)`, at most 5 s, times a
/// jitter in [0.5, 1), never under 0.5 s, and never under a `Retry-After` of
/// at most 60 s. `random` is in [0, 1).
fn backoff(retry: u32, retry_after: Option<Duration>, random: f64) -> Duration {
    let exponential = INITIAL_RETRY_DELAY
        .saturating_mul(1 << retry.saturating_sub(1).min(16))
        .min(MAX_RETRY_DELAY);
    let wait = exponential
        .mul_f64(0.5 * (1.0 + random.clamp(0.0, 1.0)))
        .max(INITIAL_RETRY_DELAY);
    match retry_after {
        Some(asked) if asked <= MAX_RETRY_AFTER => wait.max(asked),
        _ => wait,
    }
}

/// A fresh key for a POST the caller gave none: a v4 UUID, as stripe-node's
/// `_defaultIdempotencyKey` and stripe-go send.
fn fresh_key() -> IdempotencyKey {
    IdempotencyKey::new(uuid::Uuid::new_v4().to_string()).expect("a UUID is a valid key")
}

fn wire_error(e: reqwest::Error) -> WireError {
    if e.is_timeout() {
        WireError::Timeout
    } else {
        // reqwest's chain names the cause (refused, reset, TLS); never the key.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message = format!("{message}: {cause}");
            source = cause.source();
        }
        WireError::Connection(message)
    }
}

/// `POST /v1/customers`, for the log.
fn describe(request: &RequestBuilder) -> String {
    let method = match request.method {
        StripeMethod::Get => "GET",
        StripeMethod::Post => "POST",
        StripeMethod::Delete => "DELETE",
    };
    format!("{method} /v1{}", request.path)
}

/// One line on what an attempt got: the status, Stripe's error type and code,
/// and the request id.
fn summary(outcome: &Result<Answer, WireError>) -> String {
    match outcome {
        Err(WireError::Timeout) => "no answer in time".into(),
        Err(WireError::Connection(e)) => format!("no connection ({e})"),
        Ok(answer) => {
            let (kind, code) = error_kind_and_code(&answer.body);
            format!(
                "{} {kind}{}{} (request {})",
                answer.status,
                code.map(|c| format!("/{c}")).unwrap_or_default(),
                if answer.replayed { ", replayed" } else { "" },
                answer.request_id.as_deref().unwrap_or("id not given"),
            )
        }
    }
}

/// `error.type` and `error.code` of an error body, for the log (its message
/// may quote the request's parameters, so it stays out).
fn error_kind_and_code(body: &[u8]) -> (String, Option<String>) {
    use miniserde::json::Value;
    let parsed: Option<Value> = std::str::from_utf8(body)
        .ok()
        .and_then(|text| miniserde::json::from_str(text).ok());
    let error = match parsed {
        Some(Value::Object(mut body)) => match body.remove("error") {
            Some(Value::Object(error)) => error,
            _ => return ("(not a Stripe error)".into(), None),
        },
        _ => return ("(not a Stripe error)".into(), None),
    };
    let text = |name: &str| match error.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    (text("type").unwrap_or_else(|| "error".into()), text("code"))
}

/// The certificates of a PEM file, refused when it holds none.
pub(crate) fn ca_certificates(path: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("STRIPE_CA_FILE {} cannot be read: {e}", path.display()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        anyhow::anyhow!(
            "STRIPE_CA_FILE {} is not PEM certificates: {e}",
            path.display()
        )
    })?;
    if certificates.is_empty() {
        anyhow::bail!(
            "STRIPE_CA_FILE {} holds no certificate (`-----BEGIN CERTIFICATE-----`)",
            path.display()
        );
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, should_retry: Option<bool>) -> Result<Answer, WireError> {
        Ok(Answer {
            status,
            body: Vec::new(),
            request_id: None,
            should_retry,
            retry_after: None,
            replayed: false,
            after_uncertain: false,
        })
    }

    fn retried(outcome: &Result<Answer, WireError>) -> bool {
        retry_after(outcome, 0, 2, true).is_some()
    }

    #[test]
    fn the_stripe_version_sent_is_the_one_async_stripe_is_generated_for() {
        assert_eq!(API_VERSION, stripe_client_core::VERSION.as_str());
    }

    #[test]
    fn stripe_should_retry_false_on_a_500_is_not_retried() {
        assert!(!retried(&answer(500, Some(false))));
        assert!(retried(&answer(500, None)));
    }

    #[test]
    fn stripe_should_retry_true_is_retried_whatever_the_status() {
        assert!(retried(&answer(409, Some(true))));
        assert!(retried(&answer(400, Some(true))));
    }

    #[test]
    fn without_the_header_connection_failures_409_429_and_5xx_are_retried_and_nothing_else() {
        for status in [409, 429, 500, 502, 503, 504] {
            assert!(retried(&answer(status, None)), "{status}");
        }
        for status in [400, 401, 402, 403, 404, 424] {
            assert!(!retried(&answer(status, None)), "{status}");
        }
        assert!(retried(&Err(WireError::Timeout)));
        assert!(retried(&Err(WireError::Connection("reset".into()))));
    }

    #[test]
    fn a_post_without_an_idempotency_key_is_never_retried() {
        assert!(retry_after(&answer(503, Some(true)), 0, 2, false).is_none());
        assert!(retry_after(&Err(WireError::Timeout), 0, 2, false).is_none());
    }

    #[test]
    fn a_replayed_answer_is_final() {
        let mut replay = answer(500, None).unwrap();
        replay.replayed = true;
        assert!(!retried(&Ok(replay)));
    }

    #[test]
    fn retries_stop_at_the_configured_number() {
        assert!(retry_after(&answer(500, None), 1, 2, true).is_some());
        assert!(retry_after(&answer(500, None), 2, 2, true).is_none());
        assert!(retry_after(&answer(500, None), 0, 0, true).is_none());
    }

    #[test]
    fn backoff_doubles_from_half_a_second_to_five_with_jitter_between_half_and_all() {
        assert_eq!(backoff(1, None, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(2, None, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(2, None, 0.999_999).as_millis(), 999);
        assert_eq!(backoff(3, None, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(4, None, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(5, None, 0.0), Duration::from_millis(2500));
        assert_eq!(backoff(30, None, 0.5), Duration::from_millis(3750));
    }

    #[test]
    fn a_retry_after_longer_than_a_minute_is_not_waited_for() {
        let mut answer = answer(429, None).unwrap();
        answer.retry_after = Some(Duration::from_secs(61));
        assert!(!retried(&Ok(answer)));
    }

    #[test]
    fn retry_after_is_honoured_up_to_a_minute() {
        let after = |secs| backoff(1, Some(Duration::from_secs(secs)), 0.0);
        assert_eq!(after(3), Duration::from_secs(3));
        assert_eq!(after(60), Duration::from_secs(60));
        assert_eq!(after(61), Duration::from_millis(500));
    }

    #[test]
    fn the_log_summary_names_the_request_id_and_never_the_message() {
        let outcome = Ok(Answer {
            status: 402,
            body: br#"{"error":{"type":"card_error","code":"card_declined","message":"ada@example.com"}}"#.to_vec(),
            request_id: Some("req_123".into()),
            should_retry: None,
            retry_after: None,
            replayed: false,
            after_uncertain: false,
        });
        let line = summary(&outcome);
        assert_eq!(line, "402 card_error/card_declined (request req_123)");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_naming_the_setting() {
        let dir = std::env::temp_dir().join(format!("ca-{}", uuid::Uuid::new_v4()));
        std::fs::write(&dir, "not a certificate").unwrap();
        let err = ca_certificates(&dir).unwrap_err().to_string();
        std::fs::remove_file(&dir).ok();
        assert!(err.contains("STRIPE_CA_FILE"), "{err}");
        let missing = ca_certificates(Path::new("/nonexistent/ca.pem"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("cannot be read"), "{missing}");
    }
}
