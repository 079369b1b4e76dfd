//! Catch-up from Stripe's Events API: the events a webhook delivery never
//! brought (an outage, a deploy, a rotated secret, an endpoint Stripe
//! disabled) are listed and applied through the very path a delivery takes
//! ([`super::webhook::receive`]), so an event already stored is a no-op and
//! overlap costs nothing.
//!
//! A run lists the types this service handles ([`HANDLED_TYPES`]), newest
//! first, every page, created since the last completed run's start minus
//! [`SAFETY_MARGIN`] (the first time: the newest event stored, minus the
//! margin), and never further back than Stripe keeps them ([`REACH`], 30
//! days) nor than the event ids are kept (`EVENT_RETENTION_DAYS`). Only a run that listed every page moves that starting point, so a
//! failed run is retried from the same point: Stripe lists newest first, so
//! the events it did not reach are the oldest. Where a malformed event (one the webhook endpoint
//! would answer 400) is skipped and counted, an event that fails to apply
//! stops the run: it is retried next time rather than passed over.
//!
//! Then the customers whose entitlements are still owed a read (a delivery's
//! read that failed) have them read ([`entitlements::heal`]).
//!
//! [`super::healing`] runs it at start-up and every
//! `STRIPE_CATCHUP_INTERVAL_SECS` under one advisory lock, so N instances
//! do the work once; the `catchup` command runs it once.

use chrono::{DateTime, Utc};

use super::sync::{self, Outcome};
use super::webhook;
use super::{entitlements, Billing};
use crate::db::{self, events};
use crate::metrics::Source;
use crate::stripe::client::StripeFailure;
use crate::stripe::events::{parse_event, EventKind, HANDLED_TYPES};

/// How far before the last run's start a run begins: events become listable
/// a little after their `created` second, and this host's clock may differ
/// from Stripe's. Re-listing ten minutes of events costs a page or two.
pub const SAFETY_MARGIN: chrono::Duration = chrono::Duration::minutes(10);

/// How far back Stripe's Events API reaches (docs.stripe.com/api/events/list).
/// A run reaches back no further than the event ids are kept
/// (`EVENT_RETENTION_DAYS`, see [`Billing::catchup_reach`]): an event older
/// than that could be applied a second time.
pub const REACH: chrono::Duration = chrono::Duration::days(30);

/// Where a run starts.
#[derive(Debug, Clone, Copy)]
pub enum Since {
    /// Where the last completed run left off, else at the newest event
    /// stored, minus the margin; else as far back as Stripe lists.
    Auto,
    /// From this instant (the `catchup --since` command).
    At(DateTime<Utc>),
}

#[derive(Debug, Default)]
pub struct Report {
    /// The `created` instant listed from.
    pub since: Option<DateTime<Utc>>,
    pub listed: usize,
    /// Events that changed stored state.
    pub applied: usize,
    /// Already stored (delivered, or listed by an earlier run), older than
    /// the stored state, or of a kind that changes nothing.
    pub unchanged: usize,
    /// Events that could not be read (malformed), skipped.
    pub skipped: usize,
    /// Customers whose entitlements were owed a read and were read
    /// ([`entitlements::heal`]).
    pub entitlements_read: usize,
}

/// What the caller shows as the run goes.
pub enum Progress<'a> {
    /// Listing starts at `since`; `clamped` when asked for more than Stripe keeps.
    Start { since: DateTime<Utc>, clamped: bool },
    Event {
        id: &'a str,
        type_: &'a str,
        outcome: Outcome,
    },
    Skipped {
        id: Option<&'a str>,
        reason: &'a str,
    },
}

/// Why a run stopped before listing everything.
#[derive(Debug, thiserror::Error)]
pub enum CatchupError {
    #[error("listing events from Stripe failed: {0}")]
    Stripe(#[from] StripeFailure),
    #[error("applying event {id} failed (retried on the next run): {source}")]
    Apply { id: String, source: super::Error },
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Billing(#[from] super::Error),
}

/// Lists and applies the events since `since`. The caller holds the healing
/// lock ([`super::healing::HealingLock`]).
pub async fn run(
    billing: &Billing,
    since: Since,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<Report, CatchupError> {
    let stripe = billing.stripe()?;
    let started = billing.clock.now();
    let oldest = started - billing.catchup_reach;
    // Claimed by the first run of any kind, so a `--since` run cannot carry
    // the newest stored event past the ones an automatic run would list.
    let claimed = db::run(&billing.pool, move |conn| {
        if let Some(since) = events::catchup_since(conn)? {
            return Ok(since);
        }
        // The first run: from the newest event stored, minus the margin.
        let first = events::newest_created(conn)?.map_or(oldest, |t| t - SAFETY_MARGIN);
        events::claim_catchup_since(conn, first.max(oldest))
    })
    .await?;
    let wanted = match since {
        Since::At(at) => at,
        Since::Auto => claimed,
    }
    // Never from the future, whatever a clock that ran ahead once recorded.
    .min(started - SAFETY_MARGIN);
    let since = wanted.max(oldest);
    progress(Progress::Start {
        since,
        clamped: wanted < oldest,
    });
    let mut report = Report {
        since: Some(since),
        ..Report::default()
    };
    let mut after: Option<String> = None;
    // The newest `created` listed, on Stripe's clock.
    let mut newest: Option<i64> = None;
    loop {
        billing.read_budget.take().await;
        let page = billing.read_budget.noted(
            stripe
                .list_events(&HANDLED_TYPES, since.timestamp(), after.as_deref())
                .await,
        )?;
        for raw in &page.events {
            report.listed += 1;
            if let Some(created) = apply(billing, raw, &mut report, &mut progress).await? {
                newest = newest.max(Some(created));
            }
        }
        match page.last_id {
            Some(last) if page.has_more => after = Some(last),
            _ => break,
        }
    }
    // The next run starts a margin before the newest event listed, by
    // Stripe's clock (never after this run began, by this host's): a host
    // clock that runs ahead cannot make it skip events. Nothing listed, it
    // starts where this one did.
    let next = newest
        .and_then(sync::timestamp)
        .map_or(since, |t| t.min(started) - SAFETY_MARGIN);
    let applied = report.applied;
    db::run(&billing.pool, move |conn| {
        // From `wanted`, not the clamped `since`: what Stripe no longer lists
        // cannot be listed by any later run either.
        events::complete_catchup(conn, wanted, next, Utc::now(), applied)
    })
    .await?;
    // The entitlements a delivery (or one of the events above) asked for and
    // no read has brought yet: Stripe failed, or a process stopped first.
    match entitlements::heal(billing).await {
        Ok(healed) => {
            report.entitlements_read = healed.read;
            if healed.read > 0 || healed.failed > 0 {
                log::info!(
                    "catch-up: entitlements of {} customers read again, {} failed (tried next run)",
                    healed.read,
                    healed.failed
                );
            }
        }
        Err(e) => log::warn!("catch-up: reading owed entitlements failed (next run): {e}"),
    }
    Ok(report)
}

/// Applies one listed event as a delivery of it would be applied; its
/// `created`, unless it was skipped.
async fn apply(
    billing: &Billing,
    raw: &str,
    report: &mut Report,
    progress: &mut impl FnMut(Progress<'_>),
) -> Result<Option<i64>, CatchupError> {
    let event = match parse_event(raw.as_bytes()) {
        Ok(event) if sync::timestamp(event.created).is_some() => event,
        parsed => {
            // What the webhook endpoint refuses with 400: it can never apply.
            let reason = match parsed {
                Err(e) => e.to_string(),
                Ok(_) => "event `created` is not a valid time".to_string(),
            };
            let id = listed_id(raw);
            log::warn!(
                "catch-up: skipped event {}: {reason}",
                id.as_deref().unwrap_or("(no id)")
            );
            report.skipped += 1;
            progress(Progress::Skipped {
                id: id.as_deref(),
                reason: &reason,
            });
            return Ok(None);
        }
    };
    let created = event.created;
    let (id, type_) = (event.id.to_string(), event.type_.clone());
    if billing.webhook_refetch && matches!(event.kind, EventKind::Subscription(..)) {
        // `STRIPE_WEBHOOK_REFETCH` re-reads the subscription: a budgeted read
        // here, where a backlog could otherwise spend the account's rate; an
        // event already stored reads nothing, and spends nothing.
        let stored = event.id.clone();
        if !db::run(&billing.pool, move |conn| events::exists(conn, &stored)).await? {
            billing.read_budget.take().await;
        }
    }
    let outcome = webhook::receive(billing, event)
        .await
        .map_err(|source| CatchupError::Apply {
            id: id.clone(),
            source,
        })?;
    if outcome == Outcome::Applied {
        report.applied += 1;
        billing.metrics.healing.applied(Source::Catchup);
        log::info!("catch-up: applied {id} {type_}, which no delivery brought");
    } else {
        report.unchanged += 1;
    }
    progress(Progress::Event {
        id: &id,
        type_: &type_,
        outcome,
    });
    Ok(Some(created))
}

/// The `id` of an event that did not parse, if it has a readable one.
fn listed_id(raw: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(raw).ok()?;
    value
        .get("id")?
        .as_str()
        .map(|id| id.chars().take(100).collect())
}
