//! [`build`]: the one function that turns [`Settings`] into the use cases'
//! shared context ([`Billing`]): the database prepared (created, migrated),
//! the pool, the Stripe client, the paid rule and the clock. The server, every
//! command-line command and every test build it here, so none wires it by hand.

use std::sync::Arc;

use anyhow::Context as _;
use log::info;
use secrecy::{ExposeSecret, SecretString};

use crate::billing::reference::ReferenceKey;
use crate::billing::{Billing, PaidRule};
use crate::clock::Clock;
use crate::config::Settings;
use crate::db::{self, accounts};
use crate::metrics::Metrics;
use crate::stripe::budget::ReadBudget;
use crate::stripe::client::{StripeGateway, StripeMode};
use crate::stripe::transport::TransportOptions;

/// Which Stripe the context talks to.
pub enum StripeTarget {
    /// `STRIPE_SECRET_KEY` (and `STRIPE_API_BASE` when set); none when unset.
    Configured,
    /// Another Stripe API (the local emulator): its key and base URL.
    Other {
        key: SecretString,
        api_base: Option<String>,
    },
}

/// Prepares the database and builds the context. Blocking work runs on the
/// blocking thread pool.
pub async fn build(
    settings: &Settings,
    stripe: StripeTarget,
    clock: Clock,
) -> anyhow::Result<Billing> {
    let rule = PaidRule::new(
        settings.billing_past_due_grace_days,
        settings.billing_collection_paused_is_paid,
    );
    let db_settings = settings.database.clone();
    let start = clock.now();
    let (pool, locks) = actix_web::web::block(move || {
        db::prepare_database(&db_settings)?;
        let pool = db::build_pool(&db_settings)?;
        let locks = db::build_lock_pool(&db_settings)?;
        // The paid rule may have changed since the flags were stored.
        let changed = accounts::recompute_all_paid(&mut **pool.get()?, &rule.at(start))
            .context("Failed to recompute paid flags")?;
        if changed > 0 {
            info!("paid rule changed: recomputed {changed} users' paid flag");
        }
        Ok::<_, anyhow::Error>((pool, locks))
    })
    .await
    .context("database preparation did not finish")??;

    let metrics = Arc::new(Metrics::new());
    let gateway = |key: &SecretString, base: Option<&str>| {
        let stripe = &settings.stripe;
        let options = TransportOptions {
            api_base: base.map(str::to_owned),
            timeout: stripe.timeout,
            max_retries: stripe.max_network_retries,
            https_proxy: stripe.https_proxy.clone(),
            no_proxy: stripe.no_proxy.clone(),
            ca_file: stripe.ca_file.clone(),
        };
        StripeGateway::new(
            key,
            &options,
            stripe.portal_configuration.clone(),
            metrics.clone(),
        )
    };
    let stripe = match (&settings.stripe.secret_key, stripe) {
        (Some(key), _) => Some(gateway(key, settings.stripe.api_base.as_deref())?),
        (None, StripeTarget::Other { key, api_base }) => Some(gateway(&key, api_base.as_deref())?),
        (None, StripeTarget::Configured) => None,
    };
    Ok(Billing {
        pool,
        locks,
        creations: Default::default(),
        checkouts: Default::default(),
        stripe,
        rule,
        clock,
        metrics,
        webhook_health: Default::default(),
        portal_return_url: settings.portal_return_url(),
        checkout_return_url: settings.checkout_return_url(),
        checkout_cancel_url: settings.billing_page_url(),
        offer: Arc::new(crate::billing::checkout::Offer::new(
            settings.offered_plans(),
        )),
        lock_timeout_ms: settings.stripe.timeout.as_millis() * 2 + 5_000,
        webhook_refetch: settings.stripe.webhook_refetch,
        future_tolerance_secs: i64::try_from(settings.stripe.webhook_tolerance_secs)
            .unwrap_or(i64::MAX),
        // Without a key the emulator (test mode) stands in for Stripe.
        stripe_mode: settings
            .stripe
            .secret_key
            .as_ref()
            .map_or(StripeMode::Test, |key| {
                StripeMode::of_key(key.expose_secret())
            }),
        read_budget: Arc::new(ReadBudget::per_second(settings.stripe.read_budget_per_sec)),
        catchup_reach: crate::billing::catchup::REACH.min(chrono::Duration::days(i64::from(
            settings.event_retention_days,
        ))),
        plan_reads: Default::default(),
        entitlement_reads: Default::default(),
        // The server starts its own (startup.rs); commands have none.
        status_cache: None,
        client_reference: ReferenceKey::from_secrets(
            settings.client_reference_secret.as_ref(),
            &settings.auth_jwt_secret,
        ),
    })
}
