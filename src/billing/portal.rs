//! Portal sessions for a signed-in user: their one Stripe customer
//! ([`super::customers`]), then a Customer Portal session for exactly that
//! customer, optionally opened on one task ([`FlowKind`]).

use log::warn;

use super::customers::{self, Contact, Member};
use super::summary::{current_subscription, ends_at};
use super::{Billing, Error};
use crate::db::subscriptions::Subscription;
use crate::db::{self, accounts, subscriptions};
use crate::ids::email_problem;
use crate::stripe::client::{FlowKind, Locale, PortalFlow, StripeFailure};
use crate::stripe::status::SubscriptionStatus;

#[derive(Debug, Default)]
pub(crate) struct PortalOptions {
    pub(crate) locale: Option<Locale>,
    pub(crate) flow: Option<FlowKind>,
}

/// Returns the portal URL for `user`, creating their Stripe customer first if
/// they have none, or replacing it once if Stripe says it no longer exists.
pub(crate) async fn open(
    billing: &Billing,
    user: Member<'_>,
    options: PortalOptions,
) -> Result<String, Error> {
    let stripe = billing.stripe()?;
    // An email Stripe would refuse (`email_invalid`) is never stored nor
    // sent: the row is only read, and without a customer to open the portal
    // for, the click is refused before any Stripe call.
    let refused = user.email.and_then(email_problem);
    let (id, known) = (user.id.clone(), user.known().to_owned());
    let needs_subscription = options.flow.is_some_and(FlowKind::needs_subscription);
    // One round trip: the user's row, and their subscriptions when the flow
    // acts on one.
    let (row, subs) = db::run(&billing.pool, move |conn| {
        let row = match refused {
            None => Some(accounts::upsert(conn, &id, known.borrow())?),
            Some(_) => accounts::find(conn, &id)?,
        };
        let subs = match needs_subscription {
            true => subscriptions::of_user(conn, &id)?,
            false => Vec::new(),
        };
        Ok((row, subs))
    })
    .await?;
    // `row` is only missing when the email was refused (and not upserted).
    let row = match (row, refused) {
        (Some(row), None) => row,
        (Some(row), Some(_)) if row.stripe_customer_id.is_some() => row,
        (_, problem) => return Err(Error::InvalidEmail(problem.unwrap_or_default())),
    };
    let flow = options
        .flow
        .map(|kind| resolve_flow(kind, &subs, billing))
        .transpose()?;
    let (locale, flow) = (options.locale.as_ref(), flow.as_ref());
    let contact = Contact::of(&row, &user);
    let return_url = &billing.portal_return_url;

    let customer = match row.stripe_customer_id.clone() {
        Some(customer) => customer,
        None => customers::create(billing, &row.id, contact, None).await?,
    };
    let session = stripe
        .create_portal_session(&customer, return_url, locale, flow)
        .await;
    let session = match session {
        Err(StripeFailure::NoSuchCustomer) => {
            warn!(
                "Stripe no longer knows customer {customer} of account {}; creating a new one",
                row.id
            );
            let customer = customers::create(billing, &row.id, contact, Some(&customer)).await?;
            stripe
                .create_portal_session(&customer, return_url, locale, flow)
                .await?
        }
        other => other?,
    };
    billing.metrics.portal_sessions.inc();
    Ok(session)
}

/// The flow's subscription is the user's current one, and it must be one the
/// flow can act on; otherwise an error that says why, before any Stripe call.
fn resolve_flow(
    kind: FlowKind,
    subs: &[Subscription],
    billing: &Billing,
) -> Result<PortalFlow, Error> {
    if !kind.needs_subscription() {
        return Ok(PortalFlow {
            kind,
            subscription: None,
        });
    }
    let live = current_subscription(subs, billing.rule, billing.clock.now())
        .filter(|s| !SubscriptionStatus::parse(&s.status).is_terminal())
        .ok_or(Error::NoSubscription)?;
    // Classic billing mode sets `cancel_at_period_end`; flexible mode (the
    // default since API 2025-09-30) sets only `cancel_at`.
    if kind == FlowKind::SubscriptionCancel && ends_at(live).is_some() {
        return Err(Error::AlreadyCanceling);
    }
    Ok(PortalFlow {
        kind,
        subscription: Some(live.id.clone()),
    })
}
