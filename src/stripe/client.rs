//! The Stripe API as this service uses it: create a customer, create a
//! Customer Portal session. Wraps async-stripe's client and turns its errors
//! into [`StripeFailure`], a small set the handlers can act on ("No such
//! customer" is recoverable, "portal not configured" needs a dashboard fix,
//! the rest is a 502/503 with a clear code).
//!
//! Reads `STRIPE_SECRET_KEY`, `STRIPE_API_BASE`, `STRIPE_TIMEOUT_SECS` and
//! `STRIPE_PORTAL_CONFIGURATION`.

use std::collections::HashMap;
use std::time::Duration;

use ::stripe::{
    ApiErrorsCode, Client, ClientBuilder, RequestStrategy, StripeError, StripeRequest as _,
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use stripe_billing::billing_portal_session::{
    CreateBillingPortalSession, CreateBillingPortalSessionFlowData,
    CreateBillingPortalSessionFlowDataAfterCompletion,
    CreateBillingPortalSessionFlowDataAfterCompletionRedirect,
    CreateBillingPortalSessionFlowDataAfterCompletionType,
    CreateBillingPortalSessionFlowDataSubscriptionCancel,
    CreateBillingPortalSessionFlowDataSubscriptionUpdate, CreateBillingPortalSessionFlowDataType,
};
use stripe_billing::subscription::{
    ListSubscription, ListSubscriptionStatus, RetrieveSubscription,
};
use stripe_billing::BillingPortalSessionLocale;
use stripe_core::customer::CreateCustomer;

use crate::billing::status::SubscriptionStatus;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::stripe::events::SubscriptionObject;
use std::sync::Arc;

/// What went wrong talking to Stripe, in the terms the service acts on.
#[derive(Debug, thiserror::Error)]
pub enum StripeFailure {
    /// The customer id we hold no longer exists in Stripe (deleted in the
    /// dashboard, or a test-mode reset).
    #[error("no such customer")]
    NoSuchCustomer,
    /// No default portal configuration saved in the Stripe dashboard.
    #[error("customer portal not configured: {0}")]
    PortalNotConfigured(String),
    #[error("rate limited by Stripe")]
    RateLimited,
    #[error("Stripe did not answer within the client timeout")]
    Timeout,
    #[error("cannot reach Stripe: {0}")]
    Unreachable(String),
    #[error("Stripe answered {status} {kind}/{code}: {message} (request log: {request_log})")]
    Api {
        status: u16,
        kind: String,
        code: String,
        message: String,
        /// Stripe's dashboard link for this request; it names the request id.
        request_log: String,
    },
    #[error("unexpected answer from Stripe: {0}")]
    InvalidResponse(String),
}

impl From<StripeError> for StripeFailure {
    fn from(err: StripeError) -> Self {
        match err {
            StripeError::Stripe(api, status) => {
                let message = api.message.clone().unwrap_or_default();
                let code = api.code.as_ref().map(|c| c.as_str().to_string());
                let missing_customer = matches!(api.code, Some(ApiErrorsCode::ResourceMissing))
                    && (api.param.as_deref() == Some("customer")
                        || message.starts_with("No such customer"));
                if missing_customer || message.starts_with("No such customer") {
                    StripeFailure::NoSuchCustomer
                } else if message.contains("default configuration has not been created")
                    || message.contains("customer portal settings")
                {
                    StripeFailure::PortalNotConfigured(message)
                } else if status == 429 {
                    StripeFailure::RateLimited
                } else {
                    StripeFailure::Api {
                        status,
                        kind: api.type_.as_str().to_string(),
                        code: code.unwrap_or_default(),
                        message,
                        request_log: api.request_log_url.clone().unwrap_or_else(|| "none".into()),
                    }
                }
            }
            StripeError::Timeout => StripeFailure::Timeout,
            StripeError::ClientError(msg) => StripeFailure::Unreachable(msg),
            StripeError::JSONDeserialize(msg) | StripeError::ConfigError(msg) => {
                StripeFailure::InvalidResponse(msg)
            }
        }
    }
}

impl From<StripeFailure> for ApiError {
    fn from(failure: StripeFailure) -> Self {
        let err = match &failure {
            StripeFailure::PortalNotConfigured(_) => ApiError::bad_gateway(
                "portal_not_configured",
                "The Stripe Customer Portal is not configured for this account: open the Stripe \
                 Dashboard, Settings > Billing > Customer portal, and save the settings (in the \
                 same test or live mode as STRIPE_SECRET_KEY), or set STRIPE_PORTAL_CONFIGURATION.",
            ),
            StripeFailure::RateLimited => ApiError::service_unavailable(
                "stripe_rate_limited",
                "Stripe is rate limiting requests, please retry in a few seconds",
            ),
            StripeFailure::Timeout => ApiError::bad_gateway(
                "stripe_timeout",
                "Stripe did not answer in time, please retry",
            ),
            StripeFailure::Unreachable(_) => ApiError::bad_gateway(
                "stripe_unreachable",
                "Stripe cannot be reached right now, please retry",
            ),
            StripeFailure::NoSuchCustomer
            | StripeFailure::Api { .. }
            | StripeFailure::InvalidResponse(_) => ApiError::bad_gateway(
                "stripe_error",
                "Stripe could not process the request, please retry",
            ),
        };
        err.with_cause(failure)
    }
}

/// The Stripe client, built once at start-up and shared by every worker.
#[derive(Clone)]
pub struct StripeGateway {
    client: Client,
    portal_configuration: Option<String>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for StripeGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeGateway").finish_non_exhaustive()
    }
}

impl StripeGateway {
    pub fn new(
        secret_key: &SecretString,
        api_base: Option<&str>,
        timeout: Duration,
        portal_configuration: Option<String>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let mut builder = ClientBuilder::new(secret_key.expose_secret())
            .timeout(timeout)
            .app_info(
                "billing-portal",
                Some(env!("CARGO_PKG_VERSION").to_string()),
                None,
            );
        if let Some(base) = api_base {
            // async-stripe appends `v1/...` to the base verbatim.
            let base = if base.ends_with('/') {
                base.to_string()
            } else {
                format!("{base}/")
            };
            builder = builder.url(base);
        }
        let client = builder
            .build()
            .map_err(|e| anyhow::anyhow!("invalid Stripe client configuration: {e}"))?;
        Ok(Self {
            client,
            portal_configuration,
            metrics,
        })
    }

    /// Runs one Stripe call, counting it by outcome and timing it.
    async fn timed<T>(
        &self,
        operation: &str,
        call: impl std::future::Future<Output = Result<T, StripeError>>,
    ) -> Result<T, StripeFailure> {
        let started = std::time::Instant::now();
        let result = call.await.map_err(StripeFailure::from);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(StripeFailure::Timeout) => "timeout",
            Err(StripeFailure::Unreachable(_)) => "unreachable",
            Err(StripeFailure::RateLimited) => "rate_limited",
            Err(StripeFailure::Api { status, .. }) if *status >= 500 => "server_error",
            Err(_) => "client_error",
        };
        self.metrics
            .stripe_call(operation, outcome, started.elapsed());
        result
    }

    /// Creates the customer for `user_id`. The idempotency key is derived from
    /// the user id and the customer being replaced (if any), so a retry after a
    /// lost answer or a failed commit returns the same customer instead of a
    /// second one, while a replacement for a deleted customer gets a new key.
    pub async fn create_customer(
        &self,
        user_id: &str,
        email: Option<&str>,
        replacing: Option<&str>,
    ) -> Result<String, StripeFailure> {
        let mut request = CreateCustomer::new().metadata(HashMap::from([(
            "user_id".to_string(),
            user_id.to_string(),
        )]));
        if let Some(email) = email {
            request = request.email(email);
        }
        let key = ::stripe::IdempotencyKey::new(customer_idempotency_key(user_id, replacing))
            .map_err(|e| StripeFailure::InvalidResponse(e.to_string()))?;
        let customer = self
            .timed(
                "create_customer",
                request
                    .customize()
                    .request_strategy(RequestStrategy::Idempotent(key))
                    .send(&self.client),
            )
            .await?;
        Ok(customer.id.to_string())
    }

    /// Creates a portal session for `customer_id` and returns its URL. With a
    /// `flow`, the portal opens straight on that task and, once it is done,
    /// redirects to `return_url`.
    pub async fn create_portal_session(
        &self,
        customer_id: &str,
        return_url: &str,
        locale: Option<&Locale>,
        flow: Option<&PortalFlow>,
    ) -> Result<String, StripeFailure> {
        let mut request = CreateBillingPortalSession::new()
            .customer(customer_id)
            .return_url(return_url);
        if let Some(flow) = flow {
            request = request.flow_data(flow.to_flow_data(return_url));
        }
        if let Some(configuration) = &self.portal_configuration {
            request = request.configuration(configuration);
        }
        if let Some(locale) = locale {
            request = request.locale(locale.0.clone());
        }
        let session = self
            .timed("create_portal_session", request.send(&self.client))
            .await?;
        Ok(session.url)
    }
}

impl StripeGateway {
    /// The subscription as Stripe holds it now, in the same shape the webhook
    /// parser produces, so both go through one code path.
    pub async fn retrieve_subscription(
        &self,
        id: &str,
    ) -> Result<SubscriptionObject, StripeFailure> {
        let sub = self
            .timed(
                "retrieve_subscription",
                RetrieveSubscription::new(id).send(&self.client),
            )
            .await?;
        Ok(subscription_object(&sub))
    }
}

impl StripeGateway {
    /// Every subscription of `customer`, all statuses, every page. Rate
    /// limits, 5xx answers, timeouts and connection failures are retried with
    /// doubling backoff.
    pub async fn list_subscriptions(
        &self,
        customer: &str,
    ) -> Result<Vec<SubscriptionObject>, StripeFailure> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut request = ListSubscription::new()
                .customer(customer)
                .status(ListSubscriptionStatus::All)
                .limit(100);
            if let Some(after) = &after {
                request = request.starting_after(after.as_str());
            }
            let page =
                with_retries(|| self.timed("list_subscriptions", request.send(&self.client)))
                    .await?;
            all.extend(page.data.iter().map(subscription_object));
            after = page.data.last().map(|s| s.id.to_string());
            if !page.has_more || after.is_none() {
                return Ok(all);
            }
        }
    }
}

/// Retries what is worth retrying (429, 5xx, timeouts, connection failures)
/// up to five attempts, waiting 250 ms, 500 ms, 1 s, 2 s in between.
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, StripeFailure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StripeFailure>>,
{
    let mut wait = Duration::from_millis(250);
    for attempt in 1.. {
        match call().await {
            Err(failure) if attempt < 5 && failure.is_transient() => {
                log::warn!("Stripe call failed ({failure}); retry {attempt} in {wait:?}");
                tokio_sleep(wait).await;
                wait *= 2;
            }
            other => return other,
        }
    }
    unreachable!("the loop returns by the fifth attempt")
}

async fn tokio_sleep(duration: Duration) {
    actix_web::rt::time::sleep(duration).await
}

impl StripeFailure {
    /// Whether trying again later can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::RateLimited | Self::Timeout | Self::Unreachable(_) => true,
            Self::Api { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

fn subscription_object(sub: &stripe_billing::Subscription) -> SubscriptionObject {
    let first = sub.items.data.first();
    SubscriptionObject {
        id: sub.id.to_string(),
        customer_id: sub.customer.id().to_string(),
        status: SubscriptionStatus::parse(sub.status.as_str()),
        price_id: first.map(|item| item.price.id.to_string()),
        product_id: first.map(|item| item.price.product.id().to_string()),
        current_period_end: sub.items.data.iter().map(|i| i.current_period_end).max(),
        cancel_at_period_end: sub.cancel_at_period_end,
        cancel_at: sub.cancel_at,
        pause_collection: None,
        metadata_user_id: sub
            .metadata
            .get("user_id")
            .filter(|u| !u.is_empty())
            .cloned(),
    }
}

/// `customer-<sha256(user id, replaced customer)>`: stable for one user and one
/// generation of customer, at most 73 ASCII characters whatever the user id.
pub fn customer_idempotency_key(user_id: &str, replacing: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(user_id.as_bytes());
    hasher.update([0]);
    hasher.update(replacing.unwrap_or("").as_bytes());
    format!("customer-{}", hex::encode(hasher.finalize()))
}

/// A portal deep link: the task the portal opens on. The subscription is
/// always the user's own, from Postgres, never one named by the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortalFlow {
    PaymentMethodUpdate,
    SubscriptionCancel { subscription: String },
    SubscriptionUpdate { subscription: String },
}

impl PortalFlow {
    fn to_flow_data(&self, return_url: &str) -> CreateBillingPortalSessionFlowData {
        let (kind, cancel, update) = match self {
            Self::PaymentMethodUpdate => (
                CreateBillingPortalSessionFlowDataType::PaymentMethodUpdate,
                None,
                None,
            ),
            Self::SubscriptionCancel { subscription } => (
                CreateBillingPortalSessionFlowDataType::SubscriptionCancel,
                Some(CreateBillingPortalSessionFlowDataSubscriptionCancel::new(
                    subscription,
                )),
                None,
            ),
            Self::SubscriptionUpdate { subscription } => (
                CreateBillingPortalSessionFlowDataType::SubscriptionUpdate,
                None,
                Some(CreateBillingPortalSessionFlowDataSubscriptionUpdate::new(
                    subscription,
                )),
            ),
        };
        let mut after = CreateBillingPortalSessionFlowDataAfterCompletion::new(
            CreateBillingPortalSessionFlowDataAfterCompletionType::Redirect,
        );
        after.redirect =
            Some(CreateBillingPortalSessionFlowDataAfterCompletionRedirect::new(return_url));
        let mut data = CreateBillingPortalSessionFlowData::new(kind);
        data.after_completion = Some(after);
        data.subscription_cancel = cancel;
        data.subscription_update = update;
        data
    }
}

/// The locales the Stripe Customer Portal supports; the OpenAPI document
/// lists the same (a test checks async-stripe knows each one).
pub const PORTAL_LOCALES: &[&str] = &[
    "auto", "bg", "cs", "da", "de", "el", "en", "en-AU", "en-CA", "en-GB", "en-IE", "en-IN",
    "en-NZ", "en-SG", "es", "es-419", "et", "fi", "fil", "fr", "fr-CA", "hr", "hu", "id", "it",
    "ja", "ko", "lt", "lv", "ms", "mt", "nb", "nl", "pl", "pt", "pt-BR", "ro", "ru", "sk", "sl",
    "sv", "th", "tr", "vi", "zh", "zh-HK", "zh-TW",
];

/// A portal locale Stripe knows (`fr`, `pt-BR`, `auto`…).
#[derive(Debug, Clone)]
pub struct Locale(BillingPortalSessionLocale);

impl Locale {
    pub fn parse(s: &str) -> Result<Self, String> {
        if !PORTAL_LOCALES.contains(&s) {
            return Err(format!(
                "`{s}` is not a locale the Stripe Customer Portal supports (e.g. `fr`, `de`, `pt-BR`, `auto`)"
            ));
        }
        Ok(Self(s.parse().unwrap_or_else(|e| match e {})))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_customer_idempotency_key_is_stable_per_user() {
        assert_eq!(
            customer_idempotency_key("u1", None),
            customer_idempotency_key("u1", None)
        );
        assert_ne!(
            customer_idempotency_key("u1", None),
            customer_idempotency_key("u2", None)
        );
    }

    #[test]
    fn a_replacement_customer_gets_a_new_idempotency_key() {
        assert_ne!(
            customer_idempotency_key("u1", None),
            customer_idempotency_key("u1", Some("cus_old"))
        );
    }

    #[test]
    fn the_idempotency_key_fits_stripes_limit_for_any_user_id() {
        let key = customer_idempotency_key(&"é".repeat(255), None);
        assert!(key.len() <= 255 && key.is_ascii());
    }

    #[test]
    fn async_stripe_knows_every_locale_we_accept() {
        for locale in PORTAL_LOCALES {
            let parsed: BillingPortalSessionLocale = locale.parse().unwrap_or_else(|e| match e {});
            assert!(
                !matches!(parsed, BillingPortalSessionLocale::Unknown(_)),
                "{locale}"
            );
        }
    }

    #[test]
    fn known_locales_parse_and_unknown_ones_are_refused() {
        assert!(Locale::parse("fr").is_ok());
        assert!(Locale::parse("pt-BR").is_ok());
        assert!(Locale::parse("xx-nope").is_err());
    }
}
