//! Prometheus metrics for `GET /metrics`: requests by route and status,
//! webhook events by type and outcome, signature failures by reason, the age
//! of the last verified delivery, deliveries signed
//! ahead of this host's clock (clock skew), portal sessions
//! created, Stripe API calls by operation and outcome with a latency
//! histogram, the database pool in use, same-second ties settled by a
//! re-read, grace periods ended by the sweep, and how the service heals
//! itself ([`HealingMetrics`]: events applied by delivery or catch-up, the
//! catch-up's runs, the drift check's re-reads), and the status cache's reads,
//! size, evictions and listening connection. One registry per
//! [`Application`](crate::startup::Application), so tests never share one;
//! counters are per instance, and Prometheus sums instances.

use std::time::Duration;

use actix_web::http::{Method, StatusCode};

use crate::stripe::events::HANDLED_TYPES;
use crate::stripe::signature::SignatureError;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub(crate) http_requests: IntCounterVec,
    pub(crate) webhook_events: IntCounterVec,
    signature_failures: IntCounterVec,
    /// No labels: a vec only so that it can be absent until the first verified delivery.
    last_verified_age: GaugeVec,
    pub(crate) webhook_clock_skew: IntCounter,
    pub(crate) portal_sessions: IntCounter,
    pub(crate) checkout_sessions: IntCounter,
    pub(crate) checkouts_applied: IntCounter,
    pub(crate) stripe_calls: IntCounterVec,
    pub(crate) stripe_latency: HistogramVec,
    pub(crate) db_pool: IntGaugeVec,
    pub(crate) tie_refetches: IntCounter,
    pub(crate) grace_expirations: IntCounter,
    pub(crate) healing: HealingMetrics,
    status_cache: StatusCacheMetrics,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let registry = Registry::new_custom(Some("billing_portal".into()), None)
            .expect("a valid metric prefix");
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route pattern and status",
            ),
            &["method", "route", "status"],
        )
        .unwrap();
        let webhook_events = IntCounterVec::new(
            Opts::new(
                "webhook_events_total",
                "Webhook deliveries by event type and outcome \
                 (applied, duplicate, stale, ignored, wrong_mode, rejected)",
            ),
            &["type", "outcome"],
        )
        .unwrap();
        let signature_failures = IntCounterVec::new(
            Opts::new(
                "webhook_signature_failures_total",
                "Webhook deliveries refused for their Stripe-Signature, by reason \
                 (missing_signature, malformed_signature, timestamp_out_of_tolerance, \
                 signature_mismatch: it matches no secret in STRIPE_WEBHOOK_SECRET)",
            ),
            &["reason"],
        )
        .unwrap();
        // Every reason from zero: the counter had no label before, and a series that appears
        // only at its first failure hides that failure from rate() and increase().
        for error in SignatureError::ALL {
            signature_failures.with_label_values(&[error.reason()]);
        }
        let last_verified_age = GaugeVec::new(
            Opts::new(
                "webhook_last_verified_delivery_age_seconds",
                "Seconds since this instance last received a webhook delivery whose signature \
                 verified, by the billing clock at scrape time; absent until one has since it \
                 started",
            ),
            &[],
        )
        .unwrap();
        let webhook_clock_skew = IntCounter::new(
            "webhook_clock_skew_total",
            "Verified webhook deliveries signed more than 60 s ahead of this host's clock \
             (accepted; this host's clock is behind Stripe's, check NTP)",
        )
        .unwrap();
        let portal_sessions = IntCounter::new(
            "portal_sessions_created_total",
            "Customer Portal sessions created",
        )
        .unwrap();
        let checkout_sessions = IntCounter::new(
            "checkout_sessions_created_total",
            "Checkout Sessions created (POST /billing/create-checkout; a double click's replay counts too)",
        )
        .unwrap();
        let checkouts_applied = IntCounter::new(
            "checkouts_applied_on_return_total",
            "Checkout Sessions whose subscription was read from Stripe and stored when the buyer \
             came back to the page",
        )
        .unwrap();
        let stripe_calls = IntCounterVec::new(
            Opts::new(
                "stripe_api_calls_total",
                "Stripe API calls by operation and outcome",
            ),
            &["operation", "outcome"],
        )
        .unwrap();
        let stripe_latency = HistogramVec::new(
            HistogramOpts::new(
                "stripe_api_call_duration_seconds",
                "Stripe API call latency",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["operation"],
        )
        .unwrap();
        let db_pool = IntGaugeVec::new(
            Opts::new("db_pool_connections", "Database pool connections by state"),
            &["state"],
        )
        .unwrap();
        let tie_refetches = IntCounter::new(
            "webhook_tie_refetches_total",
            "Same-second events that could not be ordered and were settled by re-reading the \
             subscription from Stripe",
        )
        .unwrap();
        let grace_expirations = IntCounter::new(
            "past_due_grace_expirations_total",
            "Users whose paid flag the periodic sweep turned off because a past-due grace ended",
        )
        .unwrap();
        for collector in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(webhook_events.clone()),
            Box::new(signature_failures.clone()),
            Box::new(last_verified_age.clone()),
            Box::new(webhook_clock_skew.clone()),
            Box::new(portal_sessions.clone()),
            Box::new(checkout_sessions.clone()),
            Box::new(checkouts_applied.clone()),
            Box::new(stripe_calls.clone()),
            Box::new(stripe_latency.clone()),
            Box::new(db_pool.clone()),
            Box::new(tie_refetches.clone()),
            Box::new(grace_expirations.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        let healing = HealingMetrics::register(&registry);
        let status_cache = StatusCacheMetrics::register(&registry);
        Self {
            registry,
            http_requests,
            webhook_events,
            signature_failures,
            last_verified_age,
            webhook_clock_skew,
            portal_sessions,
            checkout_sessions,
            checkouts_applied,
            stripe_calls,
            stripe_latency,
            db_pool,
            tie_refetches,
            grace_expirations,
            healing,
            status_cache,
        }
    }

    /// One status read by the cache (`billing::status_cache`): `hit`,
    /// `miss` or `bypass` (not listening, or not caught up: read from Postgres).
    pub(crate) fn status_cache_read(&self, outcome: CacheRead) {
        let m = &self.status_cache;
        match outcome {
            CacheRead::Hit => &m.hits,
            CacheRead::Miss => &m.misses,
            CacheRead::Bypass => &m.bypasses,
        }
        .inc();
    }

    pub(crate) fn status_cache_entries(&self, entries: usize) {
        self.status_cache
            .entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    pub(crate) fn status_cache_evicted(&self) {
        self.status_cache.evictions.inc();
    }

    pub(crate) fn status_cache_listening(&self, listening: bool) {
        self.status_cache.listening.set(i64::from(listening));
    }

    pub(crate) fn stripe_call(&self, operation: &str, outcome: &str, elapsed: Duration) {
        self.stripe_calls
            .with_label_values(&[operation, outcome])
            .inc();
        self.stripe_latency
            .with_label_values(&[operation])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one answered request. Every label value comes from a closed
    /// set (known methods, route patterns, status codes): a made-up method
    /// would otherwise create a series that is never freed.
    pub(crate) fn http_request(&self, method: &Method, route: &str, status: StatusCode) {
        let method = match *method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::HEAD => "HEAD",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        self.http_requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
    }

    /// Counts one webhook delivery by event type and outcome. Types this
    /// service does not act on are counted as `other`: the type is the
    /// sender's text, so it must not become a label value. A delivery
    /// refused before its type was known is counted as `unverified` or
    /// `not_an_event`.
    pub(crate) fn webhook_event(&self, type_: &str, outcome: &str) {
        let known =
            HANDLED_TYPES.contains(&type_) || ["unverified", "not_an_event"].contains(&type_);
        let type_ = if known { type_ } else { "other" };
        self.webhook_events
            .with_label_values(&[type_, outcome])
            .inc();
    }

    /// Counts one delivery refused for its signature, under the error's fixed reason.
    pub(crate) fn signature_failure(&self, error: &SignatureError) {
        self.signature_failures
            .with_label_values(&[error.reason()])
            .inc();
    }

    /// Sets the age of the last verified delivery, at scrape time; `None` (none yet) leaves the
    /// gauge absent.
    pub(crate) fn last_verified_age(&self, seconds: Option<f64>) {
        if let Some(seconds) = seconds {
            self.last_verified_age
                .with_label_values(&[] as &[&str])
                .set(seconds);
        }
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// How the status cache served one read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CacheRead {
    Hit,
    Miss,
    Bypass,
}

/// The status cache (`billing::status_cache`); the counters resolved once,
/// so a hit costs no label lookup.
struct StatusCacheMetrics {
    hits: IntCounter,
    misses: IntCounter,
    bypasses: IntCounter,
    entries: IntGauge,
    evictions: IntCounter,
    listening: IntGauge,
}

impl StatusCacheMetrics {
    fn register(registry: &Registry) -> Self {
        let reads = IntCounterVec::new(
            Opts::new(
                "status_cache_reads_total",
                "GET /billing/status (and refresh) answers by how the status cache served them: \
                 hit (from memory), miss (read from Postgres, and kept unless it changed \
                 meanwhile), bypass (read from Postgres: the cache is not listening or not \
                 caught up)",
            ),
            &["outcome"],
        )
        .unwrap();
        let entries = IntGauge::new(
            "status_cache_entries",
            "Accounts whose status answer this instance keeps in memory (at most STATUS_CACHE_ENTRIES)",
        )
        .unwrap();
        let evictions = IntCounter::new(
            "status_cache_evictions_total",
            "Status answers dropped to stay within STATUS_CACHE_ENTRIES (least recently read first)",
        )
        .unwrap();
        let listening = IntGauge::new(
            "status_cache_listening",
            "1 while the status cache's Postgres connection listens for changes, else 0 \
             (then every status is read from Postgres)",
        )
        .unwrap();
        for collector in [
            Box::new(reads.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(entries.clone()),
            Box::new(evictions.clone()),
            Box::new(listening.clone()),
        ] {
            registry.register(collector).expect("unique");
        }
        Self {
            hits: reads.with_label_values(&["hit"]),
            misses: reads.with_label_values(&["miss"]),
            bypasses: reads.with_label_values(&["bypass"]),
            entries,
            evictions,
            listening,
        }
    }
}

/// How the service heals itself when webhooks fail (`billing::healing`):
/// events applied by delivery and by catch-up, catch-up runs and when the
/// last one finished, and the drift check's re-reads.
pub(crate) struct HealingMetrics {
    events_applied: IntCounterVec,
    catchup_runs: IntCounterVec,
    catchup_last_run: IntGauge,
    catchup_last_success: IntGauge,
    catchup_last_succeeded: IntGauge,
    drift_rereads: IntCounterVec,
}

/// Where an applied event came from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    Delivery,
    Catchup,
}

/// How a catch-up run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunOutcome {
    Ok,
    Failed,
    /// Another instance held the catch-up lock and did the work.
    Skipped,
}

impl HealingMetrics {
    fn register(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str, label: &str, values: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), &[label]).unwrap();
            for value in values {
                vec.with_label_values(&[value]);
            }
            registry.register(Box::new(vec.clone())).expect("unique");
            vec
        };
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).unwrap();
            registry.register(Box::new(gauge.clone())).expect("unique");
            gauge
        };
        Self {
            events_applied: counter(
                "events_applied_total",
                "Stripe events that changed stored state, by where they came from: a webhook \
                 delivery or the catch-up from the Events API",
                "source",
                &["delivery", "catchup"],
            ),
            catchup_runs: counter(
                "catchup_runs_total",
                "Catch-up runs by outcome (skipped: another instance held the lock)",
                "outcome",
                &["ok", "failed", "skipped"],
            ),
            catchup_last_run: gauge(
                "catchup_last_run_timestamp_seconds",
                "When this instance's last catch-up run ended, ok or failed (unix time; 0: none yet)",
            ),
            catchup_last_success: gauge(
                "catchup_last_success_timestamp_seconds",
                "When this instance's last successful catch-up ended (unix time; 0: none yet)",
            ),
            catchup_last_succeeded: gauge(
                "catchup_last_run_succeeded",
                "1 if this instance's last catch-up run listed and applied everything, 0 if it \
                 failed or none has run",
            ),
            drift_rereads: counter(
                "drift_rereads_total",
                "Paid subscriptions re-read because their period ended over an hour ago with no \
                 event, by outcome (repaired: Stripe had moved on; unchanged; failed)",
                "outcome",
                &["repaired", "unchanged", "failed"],
            ),
        }
    }

    pub(crate) fn applied(&self, source: Source) {
        let source = match source {
            Source::Delivery => "delivery",
            Source::Catchup => "catchup",
        };
        self.events_applied.with_label_values(&[source]).inc();
    }

    pub(crate) fn catchup_run(&self, outcome: RunOutcome) {
        let label = match outcome {
            RunOutcome::Ok => "ok",
            RunOutcome::Failed => "failed",
            RunOutcome::Skipped => "skipped",
        };
        self.catchup_runs.with_label_values(&[label]).inc();
        if outcome == RunOutcome::Skipped {
            return;
        }
        // Wall time, not the billing clock: alerts compare it with Prometheus's `time()`.
        let now = chrono::Utc::now().timestamp();
        self.catchup_last_run.set(now);
        self.catchup_last_succeeded
            .set(i64::from(outcome == RunOutcome::Ok));
        if outcome == RunOutcome::Ok {
            self.catchup_last_success.set(now);
        }
    }

    pub(crate) fn drift_reread(&self, outcome: &'static str) {
        self.drift_rereads.with_label_values(&[outcome]).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
