//! The Stripe API as this service uses it: create a customer, create a
//! Customer Portal session, read subscriptions, customers, events and prices
//! back. Requests are built with async-stripe's request types and sent
//! through the one transport ([`super::transport`]: connections, retries,
//! idempotency keys); Stripe's error answers become [`StripeFailure`], a small
//! set the handlers can act on ("No such customer" is recoverable; a key of
//! the wrong test/live mode, a key Stripe refuses and "portal not configured"
//! need a configuration fix; the rest is a 502/503 with a clear code).
//!
//! Answers are taken as untyped JSON, and subscriptions and prices are mapped
//! with the webhook's lenient [`parse_subscription`] and [`parse_price`], so
//! one mapping serves webhooks, refetch and `sync`, whatever API version
//! shaped the answer.
//!
//! Reads `STRIPE_PORTAL_CONFIGURATION`; the transport reads the key, base URL,
//! timeout, retries, CA file and proxy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::stripe::{ApiErrors, ApiErrorsCode, ApiErrorsType, IdempotencyKey, StripeRequest as _};
use miniserde::json::Value as Json;
use secrecy::SecretString;
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
use stripe_client_core::RequestBuilder;
use stripe_core::customer::{CreateCustomer, RetrieveCustomer};
use stripe_core::event::ListEvent;
use stripe_types::RangeQueryTs;

pub(crate) use super::transport::Patience;
use super::transport::{Answer, Transport, TransportOptions, WireError};
use crate::billing::customers::Contact;
use crate::ids::{AccountId, AccountKind, CustomerId, SubscriptionId};
use crate::metrics::Metrics;
use crate::stripe::events::{parse_price, parse_subscription, PriceObject, SubscriptionObject};

/// What went wrong talking to Stripe, in the terms the service acts on.
/// Cloned when clicks waiting for the same customer share one answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StripeFailure {
    /// The customer id we hold no longer exists in Stripe (deleted in the
    /// dashboard, or a test-mode reset).
    #[error("no such customer")]
    NoSuchCustomer,
    /// `STRIPE_SECRET_KEY` is of the other mode than the data: Stripe says "a
    /// similar object exists in live mode, but a test mode key was used" (or
    /// the reverse). A configuration error, never a deleted customer: treating
    /// it as one would replace every user's customer.
    #[error(
        "STRIPE_SECRET_KEY is a {}-mode key but the object exists in {data_mode} mode",
        data_mode.other()
    )]
    KeyModeMismatch { data_mode: StripeMode },
    /// The portal cannot open as asked: nothing saved in the Dashboard, an
    /// unknown `STRIPE_PORTAL_CONFIGURATION`, or a flow whose feature is off.
    #[error("customer portal not configured: {0}")]
    PortalNotConfigured(PortalProblem),
    /// Stripe refused the key itself (401), or a restricted key lacks a
    /// permission (403). Stripe's message is not kept: it quotes part of the key.
    #[error(
        "Stripe refused STRIPE_SECRET_KEY ({status} {kind}): set STRIPE_SECRET_KEY to a current \
         secret key (Dashboard > Developers > API keys), or give the restricted key the \
         permission this call needs"
    )]
    AuthenticationFailed { status: u16, kind: String },
    /// Stripe refused the email the token carries (`email_invalid`).
    #[error("Stripe refused the email: {0}")]
    InvalidEmail(String),
    #[error("rate limited by Stripe")]
    RateLimited { retry_after: Option<Duration> },
    #[error("Stripe did not answer within the client timeout")]
    Timeout,
    #[error("cannot reach Stripe: {0}")]
    Unreachable(String),
    /// Not in the message: Stripe's `message`, which can quote the request's
    /// parameters (an email).
    #[error("Stripe answered {status} {kind}/{code} (request log: {request_log})")]
    Api {
        status: u16,
        kind: String,
        code: String,
        message: String,
        /// Stripe's dashboard link for this request; it names the request id.
        request_log: String,
        /// `Retry-After`, when Stripe gave one.
        retry_after: Option<Duration>,
        /// Whether Stripe saved this answer under the request's
        /// `Idempotency-Key` ([`StripeFailure::saved_by_stripe`]).
        saved: bool,
    },
    #[error("unexpected answer from Stripe: {0}")]
    InvalidResponse(String),
}

/// Why the portal cannot open: each says what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortalProblem {
    /// No default configuration saved in the Dashboard.
    NotSaved,
    /// `STRIPE_PORTAL_CONFIGURATION` names a configuration Stripe does not
    /// have (in this mode).
    UnknownConfiguration,
    /// The flow asked for needs a feature the configuration has off; Stripe's
    /// message names it.
    FeatureDisabled(String),
}

impl std::fmt::Display for PortalProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotSaved => f.write_str("no portal configuration saved in the Dashboard"),
            Self::UnknownConfiguration => {
                f.write_str("STRIPE_PORTAL_CONFIGURATION names no configuration of this account")
            }
            Self::FeatureDisabled(message) => f.write_str(message),
        }
    }
}

/// Stripe's two modes; keys and objects belong to one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeMode {
    Test,
    Live,
}

impl StripeMode {
    /// The mode of a secret or restricted key: `sk_live_…` and `rk_live_…`
    /// are live, every other key (`sk_test_…`, `rk_test_…`, the emulator's)
    /// test. An unrecognised key counts as test, so it can never make a live
    /// event act.
    pub fn of_key(key: &str) -> Self {
        if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
            Self::Live
        } else {
            Self::Test
        }
    }

    /// The mode of an event's `livemode`.
    pub fn of_livemode(livemode: bool) -> Self {
        if livemode {
            Self::Live
        } else {
            Self::Test
        }
    }

    pub(crate) fn other(self) -> Self {
        match self {
            Self::Test => Self::Live,
            Self::Live => Self::Test,
        }
    }

    /// The mode the data is in, when `message` is Stripe's answer to a key of
    /// the other mode: "No such customer: 'cus_X'; a similar object exists in
    /// live mode, but a test mode key was used to make this request."
    /// (docs.stripe.com/keys#test-live-modes: objects of one mode are not
    /// visible to the other mode's keys).
    fn of_mismatch(message: &str) -> Option<Self> {
        if message.contains("similar object exists in live mode") {
            Some(Self::Live)
        } else if message.contains("similar object exists in test mode") {
            Some(Self::Test)
        } else {
            None
        }
    }
}

impl std::fmt::Display for StripeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Test => "test",
            Self::Live => "live",
        })
    }
}

impl StripeFailure {
    /// What Stripe's error answer means for the service
    /// (docs.stripe.com/error-codes, docs.stripe.com/error-handling).
    fn of_answer(answer: &Answer) -> Self {
        let status = answer.status;
        let Some(api) = api_errors(&answer.body) else {
            return if status == 429 {
                StripeFailure::RateLimited {
                    retry_after: answer.retry_after,
                }
            } else {
                StripeFailure::Api {
                    status,
                    kind: "unknown".into(),
                    code: String::new(),
                    message: "the answer is not a Stripe error object".into(),
                    request_log: answer.request_id.clone().unwrap_or_else(|| "none".into()),
                    retry_after: answer.retry_after,
                    // Not Stripe's (a proxy's 502, say): Stripe may still be
                    // running the request.
                    saved: false,
                }
            };
        };
        let message = api.message.clone().unwrap_or_default();
        let code = api.code.as_ref().map(|c| c.as_str().to_string());
        // Before the missing-customer rule: the same answer also starts with
        // "No such customer".
        if let Some(data_mode) = StripeMode::of_mismatch(&message) {
            return StripeFailure::KeyModeMismatch { data_mode };
        }
        // 401: the key is invalid, expired or revoked; 403: a restricted key
        // without the permission (docs.stripe.com/error-codes, "HTTP status code
        // summary"). Types outside async-stripe's enum arrive as `Unknown`.
        if status == 401
            || matches!(
                api.type_.as_str(),
                "authentication_error" | "permission_error"
            )
            || (status == 403 && message.contains("permission"))
        {
            return StripeFailure::AuthenticationFailed {
                status,
                kind: api.type_.as_str().to_string(),
            };
        }
        if matches!(api.code, Some(ApiErrorsCode::EmailInvalid)) {
            return StripeFailure::InvalidEmail(message);
        }
        let param = api.param.as_deref().unwrap_or_default();
        let missing = matches!(api.code, Some(ApiErrorsCode::ResourceMissing));
        if (missing && param == "customer") || message.starts_with("No such customer") {
            return StripeFailure::NoSuchCustomer;
        }
        if message.contains("default configuration has not been created")
            || message.contains("customer portal settings")
        {
            return StripeFailure::PortalNotConfigured(PortalProblem::NotSaved);
        }
        if (missing && param == "configuration") || message.starts_with("No such configuration") {
            return StripeFailure::PortalNotConfigured(PortalProblem::UnknownConfiguration);
        }
        // "This subscription cannot be updated because the subscription
        // update feature in the portal configuration is disabled."
        if api.type_ == ApiErrorsType::InvalidRequestError
            && (param.starts_with("flow_data") || message.contains("portal configuration"))
            && (message.contains("disabled") || message.contains("not enabled"))
        {
            return StripeFailure::PortalNotConfigured(PortalProblem::FeatureDisabled(message));
        }
        if status == 429 {
            return StripeFailure::RateLimited {
                retry_after: answer.retry_after,
            };
        }
        StripeFailure::Api {
            status,
            kind: api.type_.as_str().to_string(),
            code: code.unwrap_or_default(),
            message,
            request_log: api
                .request_log_url
                .clone()
                .or_else(|| answer.request_id.clone())
                .unwrap_or_else(|| "none".into()),
            retry_after: answer.retry_after,
            // Stripe saves a 500 of a request that began executing and
            // replays it for 24 hours (docs.stripe.com/api/idempotent_requests,
            // docs.stripe.com/error-low-level: "specifically 500s"); a 502,
            // 503 or 504 is not saved. After an attempt without an answer the
            // earlier request may still be running, unless this answer is the
            // replay of how it ended.
            saved: status == 500
                && api.type_ == ApiErrorsType::ApiError
                && (answer.replayed || !answer.after_uncertain),
        }
    }

    fn of_wire(error: WireError) -> Self {
        match error {
            WireError::Timeout => StripeFailure::Timeout,
            WireError::Connection(reason) => StripeFailure::Unreachable(reason),
        }
    }

    /// Whether Stripe saved this failure under the request's
    /// `Idempotency-Key` and replays it for 24 hours, so the next attempt
    /// needs another key; and whether it is sure nothing else with that key
    /// is still running at Stripe.
    pub(crate) fn saved_by_stripe(&self) -> bool {
        matches!(self, Self::Api { saved: true, .. })
    }
}

/// The `error` object of Stripe's error answer.
fn api_errors(body: &[u8]) -> Option<ApiErrors> {
    let text = std::str::from_utf8(body).ok()?;
    let Json::Object(mut wrapper) = miniserde::json::from_str::<Json>(text).ok()? else {
        return None;
    };
    let error = wrapper.remove("error")?;
    miniserde::json::from_str(&miniserde::json::to_string(&error)).ok()
}

/// The Stripe client, built once at start-up and shared by every worker.
#[derive(Clone)]
pub struct StripeGateway {
    transport: Transport,
    portal_configuration: Option<String>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for StripeGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeGateway").finish_non_exhaustive()
    }
}

impl StripeGateway {
    pub(crate) fn new(
        secret_key: &SecretString,
        options: &TransportOptions,
        portal_configuration: Option<String>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            transport: Transport::new(secret_key, options)?,
            portal_configuration,
            metrics,
        })
    }

    /// Sends one request through the transport, counts it by outcome and
    /// times it, and reads a success as `T`.
    async fn call<T: miniserde::Deserialize>(
        &self,
        operation: &str,
        request: RequestBuilder,
        key: Option<IdempotencyKey>,
        patience: Patience,
    ) -> Result<T, StripeFailure> {
        let started = std::time::Instant::now();
        let result = match self.transport.send(request, key, patience).await {
            Ok(answer) if answer.is_success() => std::str::from_utf8(&answer.body)
                .map_err(|_| StripeFailure::InvalidResponse("the answer is not UTF-8".into()))
                .and_then(|text| {
                    miniserde::json::from_str(text).map_err(|_| {
                        StripeFailure::InvalidResponse(format!(
                            "the answer to {operation} is not the object expected"
                        ))
                    })
                }),
            Ok(answer) => Err(StripeFailure::of_answer(&answer)),
            Err(wire) => Err(StripeFailure::of_wire(wire)),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(StripeFailure::Timeout) => "timeout",
            Err(StripeFailure::Unreachable(_)) => "unreachable",
            Err(StripeFailure::RateLimited { .. }) => "rate_limited",
            Err(StripeFailure::Api { status, .. }) if *status >= 500 => "server_error",
            Err(_) => "client_error",
        };
        self.metrics
            .stripe_call(operation, outcome, started.elapsed());
        result
    }

    /// Creates the customer for `user_id`. The idempotency key is derived from
    /// every parameter sent, the customer being replaced (if any) and the
    /// user's creation `attempt`: the retries of one attempt, and a click
    /// after an answer that never came, send the same key, so Stripe hands
    /// back the customer it may have created instead of a second one; a new
    /// attempt after a failure Stripe saved (a 5xx, replayed for 24 hours)
    /// sends another, so one Stripe error cannot lock a user out for a day.
    /// A replacement for a deleted customer, or another email, gets a new key
    /// rather than Stripe's `idempotency_error`.
    pub(crate) async fn create_customer(
        &self,
        account: &AccountId,
        contact: Contact<'_>,
        replacing: Option<&CustomerId>,
        attempt: i32,
    ) -> Result<CustomerId, StripeFailure> {
        let request = customer_request(account, contact);
        let key = IdempotencyKey::new(idempotency_key_for(&request, replacing, attempt))
            .map_err(|e| StripeFailure::InvalidResponse(e.to_string()))?;
        let customer: Json = self
            .call(
                "create_customer",
                request.build(),
                Some(key),
                Patience::Waiting,
            )
            .await?;
        match &customer {
            Json::Object(object) => match object.get("id") {
                Some(Json::String(id)) if !id.is_empty() => Ok(CustomerId::from(id.clone())),
                _ => Err(StripeFailure::InvalidResponse(
                    "the customer Stripe created has no id".into(),
                )),
            },
            _ => Err(StripeFailure::InvalidResponse(
                "a customer is not a JSON object".into(),
            )),
        }
    }

    /// Creates a portal session for `customer_id` and returns its URL. With a
    /// `flow`, the portal opens straight on that task and, once it is done,
    /// redirects to `return_url`. A new click is a new session: the transport
    /// gives the POST a fresh idempotency key, kept for its retries.
    pub(crate) async fn create_portal_session(
        &self,
        customer_id: &CustomerId,
        return_url: &str,
        locale: Option<&Locale>,
        flow: Option<&PortalFlow>,
    ) -> Result<String, StripeFailure> {
        let mut request = CreateBillingPortalSession::new()
            .customer(customer_id.as_str())
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
        let session: Json = self
            .call(
                "create_portal_session",
                request.build(),
                None,
                Patience::Waiting,
            )
            .await?;
        match &session {
            Json::Object(object) => match object.get("url") {
                Some(Json::String(url)) if !url.is_empty() => Ok(url.clone()),
                _ => Err(StripeFailure::InvalidResponse(
                    "the portal session has no url".into(),
                )),
            },
            _ => Err(StripeFailure::InvalidResponse(
                "a portal session is not a JSON object".into(),
            )),
        }
    }
}

impl StripeGateway {
    /// Sends `request` and answers its body as untyped JSON: async-stripe's
    /// typed models reject shapes of other API versions, and `miniserde`'s
    /// `Value` accepts every JSON.
    async fn json(
        &self,
        operation: &str,
        request: &impl ::stripe::StripeRequest,
        patience: Patience,
    ) -> Result<Json, StripeFailure> {
        self.call(operation, request.build(), None, patience).await
    }

    /// The subscription as Stripe holds it now, in the same shape the webhook
    /// parser produces, through the same lenient parser. Someone waits on it
    /// (a click, a webhook delivery).
    pub(crate) async fn retrieve_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<SubscriptionObject, StripeFailure> {
        self.retrieve_subscription_with(id, Patience::Waiting).await
    }

    /// [`Self::retrieve_subscription`] for a background read, which can wait
    /// longer for its retries.
    pub(crate) async fn retrieve_subscription_patiently(
        &self,
        id: &SubscriptionId,
    ) -> Result<SubscriptionObject, StripeFailure> {
        self.retrieve_subscription_with(id, Patience::Background)
            .await
    }

    async fn retrieve_subscription_with(
        &self,
        id: &SubscriptionId,
        patience: Patience,
    ) -> Result<SubscriptionObject, StripeFailure> {
        let body = self
            .json(
                "retrieve_subscription",
                &RetrieveSubscription::new(id.as_str()),
                patience,
            )
            .await?;
        subscription_from(&body)
    }

    /// One page (up to 100, newest first) of the events of `types` created at
    /// or after `since` (unix seconds), after the event `after`: `GET
    /// /v1/events`, which reaches back 30 days (docs.stripe.com/api/events/list).
    /// Each event is handed over as the JSON text Stripe sent, for the same
    /// parser a webhook delivery goes through. A background read.
    pub(crate) async fn list_events(
        &self,
        types: &[&str],
        since: i64,
        after: Option<&str>,
    ) -> Result<EventsPage, StripeFailure> {
        let mut request = ListEvent::new()
            .types(types.iter().map(|t| t.to_string()).collect::<Vec<_>>())
            .created(RangeQueryTs::gte(since))
            .limit(100);
        if let Some(after) = after {
            request = request.starting_after(after);
        }
        let page = self
            .json("list_events", &request, Patience::Background)
            .await?;
        let (data, has_more) = list_page(page)?;
        // The cursor of the next page: without it there is no next page to ask for.
        let last_id = match data.last() {
            None => None,
            Some(Json::Object(event)) => match event.get("id") {
                Some(Json::String(id)) if !id.is_empty() => Some(id.clone()),
                _ => {
                    return Err(StripeFailure::InvalidResponse(
                        "the last event of a page has no id to continue from".into(),
                    ))
                }
            },
            Some(_) => {
                return Err(StripeFailure::InvalidResponse(
                    "an event in a list page is not a JSON object".into(),
                ))
            }
        };
        Ok(EventsPage {
            events: data.iter().map(miniserde::json::to_string).collect(),
            has_more: has_more && last_id.is_some(),
            last_id,
        })
    }

    /// The price `id` with its product expanded, `GET /v1/prices/{id}?expand[]=product`
    /// (docs.stripe.com/api/prices/retrieve; a `plan` id of older API versions
    /// answers too, plans being prices), through the webhook's lenient parser.
    /// A background read.
    pub(crate) async fn retrieve_price(&self, id: &str) -> Result<PriceObject, StripeFailure> {
        let body = self
            .json(
                "retrieve_price",
                &RetrievePriceWithProduct(id),
                Patience::Background,
            )
            .await?;
        parse_price(miniserde::json::to_string(&body).as_bytes())
            .map_err(|e| StripeFailure::InvalidResponse(e.to_string()))
    }

    /// Whether Stripe has deleted `customer`: `GET /v1/customers/{id}` answers
    /// 200 `{"id":…,"deleted":true}` for a deleted customer
    /// (docs.stripe.com/api/customers/retrieve), and "No such customer" for
    /// one it never knew or has purged.
    pub(crate) async fn customer_is_deleted(
        &self,
        customer: &CustomerId,
        patience: Patience,
    ) -> Result<bool, StripeFailure> {
        let request = RetrieveCustomer::new(customer.as_str());
        match self.json("retrieve_customer", &request, patience).await {
            Ok(Json::Object(body)) => Ok(matches!(body.get("deleted"), Some(Json::Bool(true)))),
            Ok(_) => Err(StripeFailure::InvalidResponse(
                "a customer is not a JSON object".into(),
            )),
            Err(StripeFailure::NoSuchCustomer) => Ok(true),
            Err(other) => Err(other),
        }
    }

    /// Every subscription of `customer`, all statuses, every page, each
    /// mapped by the lenient parser, each page retried within `patience`.
    pub(crate) async fn list_subscriptions(
        &self,
        customer: &CustomerId,
        patience: Patience,
    ) -> Result<Vec<SubscriptionObject>, StripeFailure> {
        let mut all = Vec::new();
        let mut after: Option<SubscriptionId> = None;
        loop {
            let mut request = ListSubscription::new()
                .customer(customer.as_str())
                .status(ListSubscriptionStatus::All)
                .limit(100);
            if let Some(after) = &after {
                request = request.starting_after(after.as_str());
            }
            let page = self.json("list_subscriptions", &request, patience).await?;
            let (data, has_more) = list_page(page)?;
            for item in &data {
                all.push(subscription_from(item)?);
            }
            after = all.last().map(|s| s.id.clone());
            if !has_more || data.is_empty() {
                return Ok(all);
            }
        }
    }
}

/// One of a customer's active entitlements
/// (docs.stripe.com/api/entitlements/active-entitlement/object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActiveEntitlement {
    pub(crate) id: String,
    /// The feature's `lookup_key`: what the app gates on.
    pub(crate) lookup_key: String,
}

impl StripeGateway {
    /// Every active entitlement of `customer`: `GET
    /// /v1/entitlements/active_entitlements?customer=…&limit=100`, following
    /// `has_more` and `starting_after` over every page
    /// (docs.stripe.com/api/entitlements/active-entitlement/list), each page
    /// retried within `patience`. Never the first ten an
    /// `entitlements.active_entitlement_summary.updated` event carries.
    pub(crate) async fn list_active_entitlements(
        &self,
        customer: &CustomerId,
        patience: Patience,
    ) -> Result<Vec<ActiveEntitlement>, StripeFailure> {
        let mut all: Vec<ActiveEntitlement> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let query = {
                // Not held across the await: the serializer is not `Send`.
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                query
                    .append_pair("customer", customer.as_str())
                    .append_pair("limit", "100");
                if let Some(after) = &after {
                    query.append_pair("starting_after", after);
                }
                query.finish()
            };
            let mut request = RequestBuilder::new(
                stripe_client_core::StripeMethod::Get,
                "/entitlements/active_entitlements",
            );
            request.query = Some(query);
            let page: Json = self
                .call("list_active_entitlements", request, None, patience)
                .await?;
            let (data, has_more) = list_page(page)?;
            for item in &data {
                all.push(active_entitlement_from(item)?);
            }
            let last = all.last().map(|e| e.id.clone());
            if !has_more || data.is_empty() {
                return Ok(all);
            }
            if last == after {
                // A page that ends where the one before did would be asked
                // for again and again.
                return Err(StripeFailure::InvalidResponse(
                    "a page of active entitlements did not move past the one before".into(),
                ));
            }
            after = last;
        }
    }
}

/// One active entitlement; `feature` may be an id or expanded, and is not read.
fn active_entitlement_from(object: &Json) -> Result<ActiveEntitlement, StripeFailure> {
    let Json::Object(object) = object else {
        return Err(StripeFailure::InvalidResponse(
            "an active entitlement is not a JSON object".into(),
        ));
    };
    let text = |name: &str| match object.get(name) {
        Some(Json::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    match (text("id"), text("lookup_key")) {
        (Some(id), Some(lookup_key)) => Ok(ActiveEntitlement { id, lookup_key }),
        _ => Err(StripeFailure::InvalidResponse(
            "an active entitlement has no id or no lookup_key".into(),
        )),
    }
}

/// What `create_checkout_session` sends: a subscription-mode Checkout Session
/// of one price for the user's customer (docs.stripe.com/api/checkout/sessions/create).
#[derive(Debug, Clone)]
pub(crate) struct CheckoutRequest<'a> {
    pub(crate) customer: &'a CustomerId,
    pub(crate) price_id: &'a str,
    pub(crate) account: &'a AccountId,
    /// Where Stripe sends the buyer after paying, carrying `{CHECKOUT_SESSION_ID}`.
    pub(crate) success_url: &'a str,
    pub(crate) cancel_url: &'a str,
}

impl CheckoutRequest<'_> {
    /// The form body.
    pub(crate) fn form(&self) -> String {
        let (key, id) = metadata_of(self.account);
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("mode", "subscription"),
                ("customer", self.customer.as_str()),
                ("line_items[0][price]", self.price_id),
                ("line_items[0][quantity]", "1"),
                // Set server side with the secret key: `billing::sync` trusts
                // the metadata (a buyer cannot set metadata), so the bare
                // account key (`org:<id>` or the user id) is enough as the
                // reference.
                ("client_reference_id", self.account.as_str()),
                (&format!("metadata[{key}]"), id),
                (&format!("subscription_data[metadata][{key}]"), id),
                ("success_url", self.success_url),
                ("cancel_url", self.cancel_url),
            ])
            .finish()
    }
}

/// A Checkout Session as read back: whose customer it is, its state, its
/// hosted page and its subscription (expanded when Stripe expanded it, else
/// only its id).
#[derive(Debug)]
pub(crate) struct CheckoutSession {
    pub(crate) id: String,
    pub(crate) customer: Option<CustomerId>,
    /// `open`, `complete` or `expired` (docs.stripe.com/api/checkout/sessions/object#checkout_session_object-status).
    pub(crate) status: String,
    /// The hosted page; Stripe answers `null` once the session is not open.
    pub(crate) url: Option<String>,
    pub(crate) subscription: Option<SessionSubscription>,
}

#[derive(Debug)]
pub(crate) enum SessionSubscription {
    Expanded(Box<SubscriptionObject>),
    Id(SubscriptionId),
}

/// A price as `BILLING_PLANS` names it, resolved: the price, its product
/// expanded (`active` says whether Stripe still sells it).
#[derive(Debug)]
pub(crate) struct OfferedPrice {
    pub(crate) price: PriceObject,
}

impl StripeGateway {
    /// Creates the Checkout Session. A new click is a new request: the
    /// transport gives it a fresh idempotency key, kept for its retries;
    /// double clicks are one session because the caller hands back the
    /// session it recorded ([`crate::billing::checkout`]).
    pub(crate) async fn create_checkout_session(
        &self,
        request: &CheckoutRequest<'_>,
    ) -> Result<CheckoutSession, StripeFailure> {
        let mut builder =
            RequestBuilder::new(stripe_client_core::StripeMethod::Post, "/checkout/sessions");
        builder.body = Some(request.form());
        let body: Json = self
            .call("create_checkout_session", builder, None, Patience::Waiting)
            .await?;
        let session = checkout_session_from(body)?;
        if session.url.is_none() {
            return Err(StripeFailure::InvalidResponse(
                "the checkout session has no url".into(),
            ));
        }
        Ok(session)
    }

    /// `GET /v1/checkout/sessions/{id}?expand[]=subscription`
    /// (docs.stripe.com/api/checkout/sessions/retrieve). Someone waits on it.
    pub(crate) async fn retrieve_checkout_session(
        &self,
        id: &str,
    ) -> Result<CheckoutSession, StripeFailure> {
        let mut builder = RequestBuilder::new(
            stripe_client_core::StripeMethod::Get,
            format!("/checkout/sessions/{}", path_segment(id)),
        );
        builder.query = Some(expand_subscription());
        let body: Json = self
            .call(
                "retrieve_checkout_session",
                builder,
                None,
                Patience::Waiting,
            )
            .await?;
        checkout_session_from(body)
    }

    /// `POST /v1/checkout/sessions/{id}/expire`
    /// (docs.stripe.com/api/checkout/sessions/expire): an open session can no
    /// longer be paid. Stripe refuses a session that is not open (400): the
    /// caller reads it back to learn whether it was paid.
    pub(crate) async fn expire_checkout_session(
        &self,
        id: &str,
    ) -> Result<CheckoutSession, StripeFailure> {
        let mut builder = RequestBuilder::new(
            stripe_client_core::StripeMethod::Post,
            format!("/checkout/sessions/{}/expire", path_segment(id)),
        );
        builder.body = Some(expand_subscription());
        let body: Json = self
            .call("expire_checkout_session", builder, None, Patience::Waiting)
            .await?;
        checkout_session_from(body)
    }

    /// What a `BILLING_PLANS` entry names: a price id (`price_…`, or an older
    /// `plan_…`) is retrieved; anything else, or such an id Stripe does not
    /// have, is a lookup key
    /// (`GET /v1/prices?lookup_keys[]=…&expand[]=data.product`,
    /// docs.stripe.com/api/prices/list). `Ok(None)`: Stripe has no such price.
    /// A background read.
    pub(crate) async fn resolve_offered_price(
        &self,
        entry: &str,
    ) -> Result<Option<OfferedPrice>, StripeFailure> {
        let looks_like_an_id = entry.starts_with("price_") || entry.starts_with("plan_");
        let by_id = match looks_like_an_id {
            false => None,
            true => match self
                .json(
                    "retrieve_price",
                    &RetrievePriceWithProduct(entry),
                    Patience::Background,
                )
                .await
            {
                Ok(body) => Some(body),
                // "No such price" (docs.stripe.com/error-codes#resource-missing):
                // it may be a lookup key that starts like an id (`price_pro`).
                // Any other answer says nothing of the price, and is retried.
                Err(StripeFailure::Api {
                    status: 404, code, ..
                }) if code == "resource_missing" => None,
                Err(other) => return Err(other),
            },
        };
        let body = match by_id {
            Some(body) => body,
            None => {
                let mut builder =
                    RequestBuilder::new(stripe_client_core::StripeMethod::Get, "/prices");
                builder.query = Some(
                    url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("lookup_keys[]", entry)
                        .append_pair("expand[]", "data.product")
                        .finish(),
                );
                let page: Json = self
                    .call("list_prices", builder, None, Patience::Background)
                    .await?;
                match list_page(page)?.0.into_iter().next() {
                    Some(price) => price,
                    None => return Ok(None),
                }
            }
        };
        let price = parse_price(miniserde::json::to_string(&body).as_bytes())
            .map_err(|e| StripeFailure::InvalidResponse(e.to_string()))?;
        Ok(Some(OfferedPrice { price }))
    }
}

/// `GET /v1/prices/{id}?expand[]=product`: async-stripe has the request in a
/// crate of its own (`async-stripe-product`) that this one read does not
/// justify; its request builder makes the same request.
struct RetrievePriceWithProduct<'a>(&'a str);

impl ::stripe::StripeRequest for RetrievePriceWithProduct<'_> {
    type Output = Json;

    fn build(&self) -> stripe_client_core::RequestBuilder {
        #[derive(serde::Serialize)]
        struct Expand<'e> {
            expand: &'e [&'e str],
        }
        // The id goes into the path: Stripe's ids are URL-safe, and anything
        // else is escaped rather than allowed to reach another endpoint.
        let id: String = url::form_urlencoded::byte_serialize(self.0.as_bytes()).collect();
        stripe_client_core::RequestBuilder::new(
            stripe_client_core::StripeMethod::Get,
            format!("/prices/{id}"),
        )
        .query(&Expand {
            expand: &["product"],
        })
    }
}

/// One page of `GET /v1/events`.
#[derive(Debug)]
pub(crate) struct EventsPage {
    /// Each event's JSON, newest first.
    pub(crate) events: Vec<String>,
    /// Whether Stripe has older events beyond this page.
    pub(crate) has_more: bool,
    /// The id to continue after.
    pub(crate) last_id: Option<String>,
}

/// An id as one path segment: Stripe's ids are URL-safe, and anything else is
/// escaped rather than allowed to reach another endpoint.
fn path_segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

/// `expand[]=subscription`, as a query or a form body.
fn expand_subscription() -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("expand[]", "subscription")
        .finish()
}

/// A Checkout Session object, its subscription through the lenient parser.
fn checkout_session_from(body: Json) -> Result<CheckoutSession, StripeFailure> {
    let Json::Object(object) = body else {
        return Err(StripeFailure::InvalidResponse(
            "a checkout session is not a JSON object".into(),
        ));
    };
    let text = |name: &str| match object.get(name) {
        Some(Json::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let id = text("id")
        .ok_or_else(|| StripeFailure::InvalidResponse("a checkout session has no id".into()))?;
    let customer = match object.get("customer") {
        Some(Json::String(id)) if !id.is_empty() => Some(CustomerId::from(id.clone())),
        Some(Json::Object(customer)) => match customer.get("id") {
            Some(Json::String(id)) if !id.is_empty() => Some(CustomerId::from(id.clone())),
            _ => None,
        },
        _ => None,
    };
    let subscription = match object.get("subscription") {
        Some(Json::String(id)) if !id.is_empty() => {
            Some(SessionSubscription::Id(SubscriptionId::from(id.clone())))
        }
        Some(sub @ Json::Object(_)) => Some(SessionSubscription::Expanded(Box::new(
            subscription_from(sub)?,
        ))),
        _ => None,
    };
    Ok(CheckoutSession {
        id,
        customer,
        status: text("status").unwrap_or_default(),
        url: text("url"),
        subscription,
    })
}

/// A list page's `data` and `has_more` (docs.stripe.com/api/pagination). Only
/// `data` is required; a missing or non-boolean `has_more` reads as the last
/// page, so a stand-in that leaves it out cannot make the loop run forever.
fn list_page(page: Json) -> Result<(Vec<Json>, bool), StripeFailure> {
    let Json::Object(mut page) = page else {
        return Err(StripeFailure::InvalidResponse(
            "a list page is not a JSON object".into(),
        ));
    };
    let has_more = matches!(page.get("has_more"), Some(Json::Bool(true)));
    match page.remove("data") {
        Some(Json::Array(data)) => Ok((data.into_iter().collect(), has_more)),
        _ => Err(StripeFailure::InvalidResponse(
            "a list page has no `data` array".into(),
        )),
    }
}

/// One subscription object, through the webhook's lenient parser.
fn subscription_from(object: &Json) -> Result<SubscriptionObject, StripeFailure> {
    parse_subscription(miniserde::json::to_string(object).as_bytes())
        .map_err(|e| StripeFailure::InvalidResponse(e.to_string()))
}

/// The customer creation request: what `create_customer` sends, and what
/// its idempotency key is derived from.
fn customer_request(account: &AccountId, contact: Contact<'_>) -> CreateCustomer {
    let (key, id) = metadata_of(account);
    let mut request =
        CreateCustomer::new().metadata(HashMap::from([(key.to_string(), id.to_string())]));
    if let Some(email) = contact.email {
        request = request.email(email);
    }
    if let Some(name) = contact.name {
        request = request.name(name);
    }
    request
}

/// The metadata entry that names the account on its customer, checkout and
/// subscriptions: `org_id` = the organisation id, or `user_id` = the user id
/// (what webhooks link a customer by when no account holds it yet).
pub(crate) fn metadata_of(account: &AccountId) -> (&'static str, &str) {
    match account.kind() {
        AccountKind::User => ("user_id", account.app_id()),
        AccountKind::Organization => ("org_id", account.app_id()),
    }
}

/// `customer-<sha256>-<attempt>`, the hash over the replaced customer
/// (length-prefixed, or its absence) and the exact form body sent, so every
/// parameter the request carries is covered, now and when one is added:
/// Stripe answers `idempotency_error` for 24 h when a key is reused with
/// other parameters (docs.stripe.com/api/idempotent_requests). At most 85
/// ASCII characters, within Stripe's 255, whatever the user id or email.
fn idempotency_key_for(
    request: &CreateCustomer,
    replacing: Option<&CustomerId>,
    attempt: i32,
) -> String {
    let mut hasher = Sha256::new();
    match replacing {
        Some(old) => {
            hasher.update([1]);
            hasher.update((old.as_str().len() as u64).to_be_bytes());
            hasher.update(old.as_str().as_bytes());
        }
        None => hasher.update([0]),
    }
    hasher.update(request.build().body.unwrap_or_default().as_bytes());
    format!("customer-{}-{attempt}", hex::encode(hasher.finalize()))
}

/// A portal deep link, as Stripe names it in `flow_data[type]`: the one type
/// the request body parses into, the OpenAPI document describes, the use case
/// checks and the Stripe request (or the emulator) carries.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[schema(as = PortalFlowName)]
pub(crate) enum FlowKind {
    PaymentMethodUpdate,
    SubscriptionCancel,
    SubscriptionUpdate,
}

impl FlowKind {
    pub(crate) const ALL: [FlowKind; 3] = [
        FlowKind::PaymentMethodUpdate,
        FlowKind::SubscriptionCancel,
        FlowKind::SubscriptionUpdate,
    ];

    /// Stripe's name, the same the request body and the schema use.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::PaymentMethodUpdate => "payment_method_update",
            Self::SubscriptionCancel => "subscription_cancel",
            Self::SubscriptionUpdate => "subscription_update",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "`{s}` is not a portal flow; use one of {}",
                    names.join(", ")
                )
            })
    }

    /// Whether the flow acts on a subscription (Stripe requires its id).
    pub(crate) fn needs_subscription(self) -> bool {
        !matches!(self, Self::PaymentMethodUpdate)
    }
}

/// The task the portal opens on, with the subscription it acts on when the
/// flow needs one: always the user's own, from Postgres, never one named by
/// the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortalFlow {
    pub(crate) kind: FlowKind,
    pub(crate) subscription: Option<SubscriptionId>,
}

impl PortalFlow {
    fn to_flow_data(&self, return_url: &str) -> CreateBillingPortalSessionFlowData {
        let subscription = self.subscription.as_ref().map(SubscriptionId::as_str);
        let mut data = CreateBillingPortalSessionFlowData::new(match self.kind {
            FlowKind::PaymentMethodUpdate => {
                CreateBillingPortalSessionFlowDataType::PaymentMethodUpdate
            }
            FlowKind::SubscriptionCancel => {
                CreateBillingPortalSessionFlowDataType::SubscriptionCancel
            }
            FlowKind::SubscriptionUpdate => {
                CreateBillingPortalSessionFlowDataType::SubscriptionUpdate
            }
        });
        match (self.kind, subscription) {
            (FlowKind::SubscriptionCancel, Some(id)) => {
                data.subscription_cancel = Some(
                    CreateBillingPortalSessionFlowDataSubscriptionCancel::new(id),
                )
            }
            (FlowKind::SubscriptionUpdate, Some(id)) => {
                data.subscription_update = Some(
                    CreateBillingPortalSessionFlowDataSubscriptionUpdate::new(id),
                )
            }
            _ => {}
        }
        let mut after = CreateBillingPortalSessionFlowDataAfterCompletion::new(
            CreateBillingPortalSessionFlowDataAfterCompletionType::Redirect,
        );
        after.redirect =
            Some(CreateBillingPortalSessionFlowDataAfterCompletionRedirect::new(return_url));
        data.after_completion = Some(after);
        data
    }
}

/// The locales the Stripe Customer Portal supports; the OpenAPI document
/// lists the same (a test checks async-stripe knows each one).
pub(crate) const PORTAL_LOCALES: &[&str] = &[
    "auto", "bg", "cs", "da", "de", "el", "en", "en-AU", "en-CA", "en-GB", "en-IE", "en-IN",
    "en-NZ", "en-SG", "es", "es-419", "et", "fi", "fil", "fr", "fr-CA", "hr", "hu", "id", "it",
    "ja", "ko", "lt", "lv", "ms", "mt", "nb", "nl", "pl", "pt", "pt-BR", "ro", "ru", "sk", "sl",
    "sv", "th", "tr", "vi", "zh", "zh-HK", "zh-TW",
];

/// A portal locale Stripe knows (`fr`, `pt-BR`, `auto`…).
#[derive(Debug, Clone)]
pub(crate) struct Locale(BillingPortalSessionLocale);

impl Locale {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
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

    fn account(id: &str) -> AccountId {
        AccountId::parse(id).unwrap()
    }

    /// The idempotency key `create_customer` sends for these parameters.
    fn customer_idempotency_key(
        user: &str,
        email: Option<&str>,
        replacing: Option<&str>,
    ) -> String {
        let (user, replacing) = (account(user), replacing.map(CustomerId::from));
        let contact = Contact { email, name: None };
        idempotency_key_for(&customer_request(&user, contact), replacing.as_ref(), 0)
    }

    #[test]
    fn a_new_attempt_after_a_saved_failure_gets_another_key() {
        let request = customer_request(&account("u1"), Contact::default());
        assert_ne!(
            idempotency_key_for(&request, None, 0),
            idempotency_key_for(&request, None, 1)
        );
        assert_eq!(
            idempotency_key_for(&request, None, 1),
            idempotency_key_for(&request, None, 1)
        );
    }

    #[test]
    fn the_customer_idempotency_key_is_stable_for_the_same_parameters() {
        assert_eq!(
            customer_idempotency_key("u1", Some("a@example.test"), None),
            customer_idempotency_key("u1", Some("a@example.test"), None)
        );
        assert_ne!(
            customer_idempotency_key("u1", None, None),
            customer_idempotency_key("u2", None, None)
        );
    }

    #[test]
    fn a_changed_email_gets_another_idempotency_key() {
        let first = customer_idempotency_key("u1", Some("a@example.test"), None);

        assert_ne!(
            first,
            customer_idempotency_key("u1", Some("b@example.test"), None)
        );
        assert_ne!(first, customer_idempotency_key("u1", None, None));
    }

    #[test]
    fn a_replacement_customer_gets_a_new_idempotency_key() {
        assert_ne!(
            customer_idempotency_key("u1", None, None),
            customer_idempotency_key("u1", None, Some("cus_old"))
        );
        assert_ne!(
            customer_idempotency_key("u1", None, Some("cus_old")),
            customer_idempotency_key("u1", None, Some("cus_older"))
        );
    }

    #[test]
    fn the_idempotency_key_covers_the_email_and_metadata_actually_sent() {
        let contact = Contact {
            email: Some("a@example.test"),
            name: None,
        };
        let body = customer_request(&account("u1"), contact)
            .build()
            .body
            .unwrap_or_default();

        // The key hashes this body, so whatever it carries is covered; a
        // user's body is the one sent before organisations, so the keys of
        // creations in flight across the upgrade still match.
        assert_eq!(body, "email=a@example.test&metadata[user_id]=u1");
    }

    #[test]
    fn an_organisations_customer_carries_its_org_id_and_name_and_no_user_id() {
        let contact = Contact {
            email: None,
            name: Some("Acme Inc."),
        };
        let body = customer_request(&account("org:acme"), contact)
            .build()
            .body
            .unwrap_or_default();

        assert_eq!(body, "metadata[org_id]=acme&name=Acme+Inc.");
    }

    #[test]
    fn the_idempotency_key_fits_stripes_limit_for_any_user_id_and_email() {
        let long = "é".repeat(255);
        let user = account(&long);
        let replacing = CustomerId::from(long.clone());
        let contact = Contact {
            email: Some(&long),
            name: Some(&long),
        };
        let key = idempotency_key_for(
            &customer_request(&user, contact),
            Some(&replacing),
            i32::MAX,
        );
        assert!(key.len() <= 255 && key.is_ascii(), "{key}");
        assert!(IdempotencyKey::new(&key).is_ok());
    }

    /// What `of_answer` makes of Stripe's error answer with this status and body.
    fn failure(status: u16, error: &str) -> StripeFailure {
        StripeFailure::of_answer(&Answer {
            status,
            body: format!(r#"{{"error":{error}}}"#).into_bytes(),
            request_id: Some("req_1".into()),
            should_retry: None,
            retry_after: None,
            replayed: false,
            after_uncertain: false,
        })
    }

    #[test]
    fn a_key_of_the_wrong_mode_is_not_a_deleted_customer() {
        let mismatch = |message: &str| {
            failure(
                404,
                &format!(
                    r#"{{"type":"invalid_request_error","code":"resource_missing","param":"customer","message":"{message}"}}"#
                ),
            )
        };

        assert!(matches!(
            mismatch("No such customer: 'cus_1'; a similar object exists in live mode, but a test mode key was used to make this request."),
            StripeFailure::KeyModeMismatch { data_mode: StripeMode::Live }
        ));
        assert!(matches!(
            mismatch("No such customer: 'cus_1'; a similar object exists in test mode, but a live mode key was used to make this request."),
            StripeFailure::KeyModeMismatch { data_mode: StripeMode::Test }
        ));
        assert!(matches!(
            mismatch("No such customer: 'cus_1'"),
            StripeFailure::NoSuchCustomer
        ));
    }

    #[test]
    fn a_refused_key_is_an_authentication_failure_that_keeps_none_of_stripes_message() {
        let refused = failure(
            401,
            r#"{"type":"invalid_request_error","message":"Invalid API Key provided: sk_test_****1234"}"#,
        );
        assert!(matches!(
            refused,
            StripeFailure::AuthenticationFailed { status: 401, .. }
        ));
        assert!(!refused.to_string().contains("1234"), "{refused}");
        let restricted = failure(
            403,
            r#"{"type":"invalid_request_error","message":"The provided key 'rk_test_***' does not have the required permissions for this endpoint"}"#,
        );
        assert!(matches!(
            restricted,
            StripeFailure::AuthenticationFailed { status: 403, .. }
        ));
    }

    #[test]
    fn portal_configuration_problems_say_which_one() {
        assert!(matches!(
            failure(
                400,
                r#"{"type":"invalid_request_error","message":"You can't create a portal session in test mode until you save your customer portal settings in test mode at https://dashboard.stripe.com/test/settings/billing/portal."}"#
            ),
            StripeFailure::PortalNotConfigured(PortalProblem::NotSaved)
        ));
        assert!(matches!(
            failure(
                400,
                r#"{"type":"invalid_request_error","code":"resource_missing","param":"configuration","message":"No such configuration: 'bpc_123'"}"#
            ),
            StripeFailure::PortalNotConfigured(PortalProblem::UnknownConfiguration)
        ));
        assert!(matches!(
            failure(
                400,
                r#"{"type":"invalid_request_error","param":"flow_data[type]","message":"This subscription cannot be updated because the subscription update feature in the portal configuration is disabled."}"#
            ),
            StripeFailure::PortalNotConfigured(PortalProblem::FeatureDisabled(_))
        ));
    }

    #[test]
    fn an_email_stripe_refuses_is_an_invalid_email() {
        assert!(matches!(
            failure(
                400,
                r#"{"type":"invalid_request_error","code":"email_invalid","param":"email","message":"Invalid email address: a@b"}"#
            ),
            StripeFailure::InvalidEmail(_)
        ));
    }

    #[test]
    fn a_500_after_an_attempt_without_an_answer_is_not_known_to_be_saved() {
        let answer = |replayed| Answer {
            status: 500,
            body: br#"{"error":{"type":"api_error","message":"An unknown error occurred"}}"#
                .to_vec(),
            request_id: None,
            should_retry: None,
            retry_after: None,
            replayed,
            after_uncertain: true,
        };
        assert!(!StripeFailure::of_answer(&answer(false)).saved_by_stripe());
        assert!(StripeFailure::of_answer(&answer(true)).saved_by_stripe());
    }

    #[test]
    fn only_a_stripe_500_is_saved_not_a_502_or_a_proxys_answer() {
        for status in [502, 503, 504] {
            assert!(
                !failure(status, r#"{"type":"api_error","message":"x"}"#).saved_by_stripe(),
                "{status}"
            );
        }
        let proxy = StripeFailure::of_answer(&Answer {
            status: 500,
            body: b"<html>proxy error</html>".to_vec(),
            request_id: None,
            should_retry: None,
            retry_after: None,
            replayed: false,
            after_uncertain: false,
        });
        assert!(!proxy.saved_by_stripe());
    }

    #[test]
    fn a_stripe_error_message_never_reaches_the_failures_display() {
        let failure = failure(
            402,
            r#"{"type":"card_error","code":"card_declined","message":"ada@example.com was declined"}"#,
        );
        assert!(
            !failure.to_string().contains("ada@example.com"),
            "{failure}"
        );
    }

    #[test]
    fn a_server_error_is_saved_by_stripe_and_a_rate_limit_is_not() {
        assert!(failure(
            500,
            r#"{"type":"api_error","message":"An unknown error occurred"}"#
        )
        .saved_by_stripe());
        assert!(!failure(
            429,
            r#"{"type":"invalid_request_error","code":"rate_limit","message":"Too many requests"}"#
        )
        .saved_by_stripe());
        assert!(!StripeFailure::Timeout.saved_by_stripe());
    }

    #[test]
    fn live_keys_are_live_and_every_other_key_is_test() {
        for (key, mode) in [
            ("sk_live_abc", StripeMode::Live),
            ("rk_live_abc", StripeMode::Live),
            ("sk_test_abc", StripeMode::Test),
            ("rk_test_abc", StripeMode::Test),
            ("pk_live_abc", StripeMode::Test),
            ("sk_emulator", StripeMode::Test),
            ("", StripeMode::Test),
        ] {
            assert_eq!(StripeMode::of_key(key), mode, "{key}");
        }
    }

    #[test]
    fn a_list_page_without_has_more_is_the_last_and_one_without_data_is_refused() {
        let page = |text: &str| list_page(miniserde::json::from_str(text).unwrap());

        let (data, more) = page(r#"{"data":[{"id":"sub_1"}]}"#).unwrap();
        assert_eq!((data.len(), more), (1, false));
        let (_, more) = page(r#"{"data":[],"has_more":"yes"}"#).unwrap();
        assert!(!more);
        assert!(page(r#"{"has_more":true}"#).is_err());
        assert!(page("[]").is_err());
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
