//! The emulator's hosted Customer Portal at `/stripe-emulator/p/session/{id}`:
//! the brief's portal features, server-rendered with plain forms. View the
//! subscription and billing cycle, switch plan, cancel (at period end or now,
//! with optional feedback), renew, update the payment method (test card
//! 4242 4242 4242 4242), update the billing address, view and download
//! invoices ([`pdf`]), and "Return to app". Like Stripe's portal, a session
//! lapses after five minutes (of the virtual clock) without a visit: every
//! page view and action extends it, so it stays valid while it is used. An
//! expired or unknown session, or an unknown invoice, is a page in the
//! portal's style with "Return to app" (the session's return URL, else the
//! app's billing page), never a bare error. A deep link (`flow_data`) opens on
//! its task and returns to the app when done. For the demo, a "Test clock"
//! control advances the account's clock by 15 days or a month, to reach a
//! renewal, a failed payment or the end of a retry window without waiting.
//!
//! This module owns the handlers and their routes; [`pages`] renders.
//! [`checkout`] is the hosted Checkout page, in the same style.

mod checkout;
mod pages;
mod pdf;

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;

use super::account::{Emulator, StoreError};
use super::model::*;
use pages::date;

/// The app's billing page: where a page without a session (an unknown link, an
/// unknown invoice) sends the user back to.
pub(crate) struct AppPage(pub(crate) String);

/// The portal's routes and the invoice PDFs, under `/stripe-emulator`.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/p/session/{id}", web::get().to(home))
        .route("/p/session/{id}/plan", web::get().to(plan_form))
        .route("/p/session/{id}/plan", web::post().to(plan_submit))
        .route("/p/session/{id}/cancel", web::get().to(cancel_form))
        .route("/p/session/{id}/cancel", web::post().to(cancel_submit))
        .route("/p/session/{id}/renew", web::post().to(renew_submit))
        .route("/p/session/{id}/advance", web::post().to(advance_submit))
        .route(
            "/p/session/{id}/payment-method",
            web::get().to(payment_method_form),
        )
        .route(
            "/p/session/{id}/payment-method",
            web::post().to(payment_method_submit),
        )
        .route("/p/session/{id}/address", web::get().to(address_form))
        .route("/p/session/{id}/address", web::post().to(address_submit))
        .route("/invoices/{id}/pdf", web::get().to(invoice_pdf))
        .configure(checkout::configure);
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_string()))
        .finish()
}

fn encoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Why a portal page has no live session, answered as the page that says so.
#[derive(Debug)]
struct NoSession {
    status: u16,
    title: &'static str,
    message: String,
    /// "Return to app".
    back: String,
}

/// The page when the emulator cannot reach its account in Postgres.
fn unavailable(e: &StoreError, back: &str) -> HttpResponse {
    log::warn!("emulator portal: {e}");
    pages::message(
        503,
        "The emulator is unavailable",
        &unavailable_reason(e),
        back,
    )
}

fn unavailable_reason(e: &StoreError) -> String {
    match e {
        StoreError::Unavailable(_) => {
            "Its database did not answer. Try again in a moment.".to_string()
        }
        StoreError::Unreadable(_) => e.to_string(),
    }
}

impl std::fmt::Display for NoSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.title)
    }
}

impl ResponseError for NoSession {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::NOT_FOUND)
    }

    fn error_response(&self) -> HttpResponse {
        pages::message(self.status, self.title, &self.message, &self.back)
    }
}

/// The live portal session a page's path names (`/p/session/{id}/…`): every
/// session page takes it, so an unknown or expired one is handled once, and
/// every visit counts as use.
struct Live(PortalSession);

impl FromRequest for Live {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let emu = req.app_data::<web::Data<Arc<Emulator>>>().cloned();
        let app = req.app_data::<web::Data<AppPage>>().cloned();
        let id = req.match_info().get("id").unwrap_or_default().to_string();
        Box::pin(async move {
            let (Some(emu), Some(app)) = (emu, app) else {
                return Err(actix_web::error::ErrorInternalServerError(
                    "the emulator is not registered",
                ));
            };
            session(&emu, &id, &app.0)
                .await
                .map(Live)
                .map_err(Into::into)
        })
    }
}

/// The live session, now used, or why there is none. `app_page` is where an
/// unknown session's page leads back to.
async fn session(
    emu: &Arc<Emulator>,
    id: &str,
    app_page: &str,
) -> Result<PortalSession, NoSession> {
    let found = emu
        .with_state(|emu, state| {
            let now = emu.now(state);
            let Some(session) = state.sessions.get_mut(id) else {
                return Err(NoSession {
                    status: 404,
                    title: "Session not found",
                    message: "This portal link is not valid. Return to the app and open the \
                              portal again."
                        .into(),
                    back: app_page.to_string(),
                });
            };
            if now - session.last_used > PORTAL_SESSION_TTL_SECS {
                return Err(NoSession {
                    status: 410,
                    title: "This session has expired",
                    message: "Portal sessions end after five minutes without a visit. Return \
                              to the app and open the portal again."
                        .into(),
                    back: session.return_url.clone(),
                });
            }
            // Sliding expiry, as at Stripe: five minutes from the last visit.
            session.last_used = now;
            Ok(session.clone())
        })
        .await
        .map_err(|e| {
            log::warn!("emulator portal: {e}");
            NoSession {
                status: 503,
                title: "The emulator is unavailable",
                message: unavailable_reason(&e),
                back: app_page.to_string(),
            }
        })?;
    found
}

/// The session's pages: `{base}/p/session/{id}`.
fn base(emu: &Emulator, id: &str) -> String {
    format!("{}/p/session/{id}", emu.base_url)
}

/// After an action: a deep link returns to the app; otherwise back home.
fn done(emu: &Emulator, session: &PortalSession, notice: &str) -> HttpResponse {
    if session.flow.is_some() {
        return see_other(&session.return_url);
    }
    see_other(&format!(
        "{}?notice={}",
        base(emu, &session.id),
        encoded(notice)
    ))
}

#[derive(Deserialize)]
pub(super) struct Notice {
    notice: Option<String>,
    error: Option<String>,
}

async fn home(
    Live(session): Live,
    q: web::Query<Notice>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let url = base(&emu, &session.id);
    match &session.flow {
        Some((FlowKind::PaymentMethodUpdate, _)) => {
            return see_other(&format!("{url}/payment-method"))
        }
        Some((FlowKind::SubscriptionCancel, Some(sub))) => {
            return see_other(&format!("{url}/cancel?subscription={sub}"))
        }
        Some((FlowKind::SubscriptionUpdate, Some(sub))) => {
            return see_other(&format!("{url}/plan?subscription={sub}"))
        }
        _ => {}
    }
    let page = emu.read(|state| {
        let Some(customer) = state.customers.get(&session.customer) else {
            return pages::message(
                404,
                "Customer not found",
                "This customer no longer exists.",
                &session.return_url,
            );
        };
        let context = pages::HomeContext {
            session: &session,
            url: &url,
            base_url: &emu.base_url,
            notice: q.notice.as_deref(),
            error: q.error.as_deref(),
            now: emu.clock.unix(),
        };
        pages::home(context, state, customer)
    });
    page.await
        .unwrap_or_else(|e| unavailable(&e, &session.return_url))
}

#[derive(Deserialize)]
pub(super) struct SubscriptionQuery {
    subscription: String,
    error: Option<String>,
}

/// The session customer's subscription `id`, read with `f`; `None` when it
/// is not theirs.
async fn their_subscription<T>(
    emu: &Emulator,
    session: &PortalSession,
    id: &str,
    f: impl FnOnce(&Subscription) -> T,
) -> Result<Option<T>, StoreError> {
    emu.read(|state| {
        state
            .subscriptions
            .get(id)
            .filter(|s| s.customer == session.customer)
            .map(f)
    })
    .await
}

fn no_such_subscription(session: &PortalSession) -> HttpResponse {
    pages::message(
        404,
        "Subscription not found",
        "No such subscription.",
        &session.return_url,
    )
}

async fn plan_form(
    Live(session): Live,
    q: web::Query<SubscriptionQuery>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let current = their_subscription(&emu, &session, &q.subscription, |s| s.price.clone()).await;
    let current = match current {
        Ok(Some(current)) => current,
        Ok(None) => return no_such_subscription(&session),
        Err(e) => return unavailable(&e, &session.return_url),
    };
    pages::plan(
        &session,
        &base(&emu, &session.id),
        q.error.as_deref(),
        &q.subscription,
        &current,
    )
}

#[derive(Deserialize)]
pub(super) struct PlanForm {
    subscription: String,
    price: String,
}

/// Runs a portal action for the session's customer: the subscription must be
/// theirs. Done, it answers as [`done`] does with `notice`; a failure goes
/// back to `back` with the message.
async fn act(
    emu: &Arc<Emulator>,
    session: &PortalSession,
    subscription: Option<&str>,
    back: String,
    notice: &str,
    action: impl FnOnce(&Emulator, &mut State) -> Result<(), StripeApiError>,
) -> HttpResponse {
    let result = emu.with_state(|emu, state| {
        if let Some(sub) = subscription {
            if state
                .subscriptions
                .get(sub)
                .is_none_or(|s| s.customer != session.customer)
            {
                return Err(StripeApiError::missing("subscription", sub, "subscription"));
            }
        }
        action(emu, state)
    });
    match result.await {
        Err(e) => unavailable(&e, &session.return_url),
        Ok(Ok(())) => done(emu, session, notice),
        Ok(Err(e)) => {
            let sep = if back.contains('?') { '&' } else { '?' };
            see_other(&format!("{back}{sep}error={}", encoded(&e.message)))
        }
    }
}

async fn plan_submit(
    Live(session): Live,
    f: web::Form<PlanForm>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let back = format!(
        "{}/plan?subscription={}",
        base(&emu, &session.id),
        f.subscription
    );
    act(
        &emu,
        &session,
        Some(&f.subscription),
        back,
        "Your plan was updated.",
        |emu, state| {
            let change = SubscriptionChange {
                price: Some(f.price.clone()),
                ..Default::default()
            };
            emu.update_subscription(state, &f.subscription, change)
                .map(|_| ())
        },
    )
    .await
}

async fn cancel_form(
    Live(session): Live,
    q: web::Query<SubscriptionQuery>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let end = their_subscription(&emu, &session, &q.subscription, |s| s.current_period_end).await;
    let end = match end {
        Ok(Some(end)) => end,
        Ok(None) => return no_such_subscription(&session),
        Err(e) => return unavailable(&e, &session.return_url),
    };
    pages::cancel(
        &session,
        &base(&emu, &session.id),
        q.error.as_deref(),
        &q.subscription,
        end,
    )
}

#[derive(Deserialize)]
pub(super) struct CancelForm {
    subscription: String,
    when: String,
    feedback: Option<String>,
    comment: Option<String>,
}

async fn cancel_submit(
    Live(session): Live,
    f: web::Form<CancelForm>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let back = format!(
        "{}/cancel?subscription={}",
        base(&emu, &session.id),
        f.subscription
    );
    let feedback = f.feedback.clone().filter(|v| !v.is_empty());
    let comment = f.comment.clone().filter(|v| !v.trim().is_empty());
    let now_ = f.when == "now";
    let notice = if now_ {
        "Your plan was canceled."
    } else {
        "Your plan will end at the close of the billing period."
    };
    act(
        &emu,
        &session,
        Some(&f.subscription),
        back,
        notice,
        |emu, state| {
            if now_ {
                emu.cancel_now(state, &f.subscription, feedback, comment)
                    .map(|_| ())
            } else {
                emu.schedule_cancel(state, &f.subscription, feedback)
                    .map(|_| ())
            }
        },
    )
    .await
}

#[derive(Deserialize)]
pub(super) struct RenewForm {
    subscription: String,
}

async fn renew_submit(
    Live(session): Live,
    f: web::Form<RenewForm>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    act(
        &emu,
        &session,
        Some(&f.subscription),
        base(&emu, &session.id),
        "Your plan was renewed.",
        |emu, state| {
            let change = SubscriptionChange {
                cancel_at: Some(None),
                ..Default::default()
            };
            emu.update_subscription(state, &f.subscription, change)
                .map(|_| ())
        },
    )
    .await
}

#[derive(Deserialize)]
pub(super) struct ErrorQuery {
    error: Option<String>,
}

async fn payment_method_form(
    Live(session): Live,
    q: web::Query<ErrorQuery>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    pages::payment_method(&session, &base(&emu, &session.id), q.error.as_deref())
}

#[derive(Deserialize)]
pub(super) struct CardForm {
    number: String,
    exp: String,
    // Card data is never stored or logged; the CVC is only required.
    #[allow(dead_code)]
    cvc: String,
}

async fn payment_method_submit(
    Live(session): Live,
    f: web::Form<CardForm>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let (month, year) = match f.exp.split_once('/') {
        Some((m, y)) => (
            m.trim().parse::<u32>().unwrap_or(0),
            y.trim()
                .parse::<u32>()
                .map(|y| if y < 100 { 2000 + y } else { y })
                .unwrap_or(0),
        ),
        None => (0, 0),
    };
    let back = format!("{}/payment-method", base(&emu, &session.id));
    let customer = session.customer.clone();
    act(
        &emu,
        &session,
        None,
        back,
        "Your payment method was updated.",
        |emu, state| emu.set_card(state, &customer, &f.number, month, year),
    )
    .await
}

async fn address_form(
    Live(session): Live,
    q: web::Query<ErrorQuery>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let known = emu.read(|state| {
        let c = state.customers.get(&session.customer);
        (
            c.and_then(|c| c.name.clone()).unwrap_or_default(),
            c.map(|c| c.address.clone()).unwrap_or_default(),
        )
    });
    let (name, address) = match known.await {
        Ok(known) => known,
        Err(e) => return unavailable(&e, &session.return_url),
    };
    pages::address(
        &session,
        &base(&emu, &session.id),
        q.error.as_deref(),
        &name,
        &address,
    )
}

#[derive(Deserialize)]
pub(super) struct AddressForm {
    name: Option<String>,
    line1: Option<String>,
    postal_code: Option<String>,
    city: Option<String>,
    country: Option<String>,
}

async fn address_submit(
    Live(session): Live,
    f: web::Form<AddressForm>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let clean = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
    let address = Address {
        line1: clean(&f.line1),
        city: clean(&f.city),
        postal_code: clean(&f.postal_code),
        country: clean(&f.country),
    };
    let back = format!("{}/address", base(&emu, &session.id));
    let customer = session.customer.clone();
    act(
        &emu,
        &session,
        None,
        back,
        "Your billing information was updated.",
        |emu, state| emu.set_address(state, &customer, clean(&f.name), address),
    )
    .await
}

#[derive(Deserialize)]
pub(super) struct AdvanceForm {
    by: String,
}

/// The demo's test clock control: advances the account's clock by 15 days or
/// one calendar month, running whatever falls due, and comes back.
async fn advance_submit(
    Live(session): Live,
    f: web::Form<AdvanceForm>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let step: fn(i64) -> i64 = match f.by.as_str() {
        "15d" => |now| now + 15 * DAY,
        "1m" => add_month,
        _ => {
            return see_other(&format!(
                "{}?error=Unknown+advance",
                base(&emu, &session.id)
            ))
        }
    };
    let advanced = emu.with_state(|emu, state| {
        // From the clock as the operation found it: another instance may
        // have moved it.
        let to = step(emu.clock.unix());
        emu.advance_clock(state, "clock_emulator", to)?;
        // The session is the demo user's window on the account, not an
        // object of the account: it lives five minutes of the demo user's
        // time, so the jump is a use like any other, not an idle month.
        if let Some(s) = state.sessions.get_mut(&session.id) {
            s.last_used = to;
        }
        Ok::<_, StripeApiError>(to)
    });
    match advanced.await {
        Err(e) => unavailable(&e, &session.return_url),
        Ok(Ok(to)) => done(
            &emu,
            &session,
            &format!("The test clock now reads {}.", date(to)),
        ),
        Ok(Err(e)) => see_other(&format!(
            "{}?error={}",
            base(&emu, &session.id),
            encoded(&e.message)
        )),
    }
}

/// `GET /stripe-emulator/invoices/{id}/pdf`: a small but real PDF.
async fn invoice_pdf(
    path: web::Path<String>,
    emu: web::Data<Arc<Emulator>>,
    app: web::Data<AppPage>,
) -> HttpResponse {
    let invoice = emu.read(|state| state.invoices.iter().find(|i| i.id == *path).cloned());
    let i = match invoice.await {
        Ok(Some(i)) => i,
        Ok(None) => return pages::message(404, "Invoice not found", "No such invoice.", &app.0),
        Err(e) => return unavailable(&e, &app.0),
    };
    let lines = [
        format!("Invoice {}", i.number),
        format!("Date: {}", date(i.created)),
        format!("Customer: {}", i.customer),
        i.description.clone(),
        format!(
            "Amount: {} ({})",
            pages::money(i.amount),
            if i.status == "paid" { "paid" } else { i.status }
        ),
        "Test mode - issued by the local Stripe emulator".to_string(),
    ];
    HttpResponse::Ok()
        .content_type("application/pdf")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"invoice-{}.pdf\"", i.number),
        ))
        .body(pdf::pdf(&lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn emulator_with_session(age_secs: i64) -> (Arc<Emulator>, String) {
        let emu = Emulator::new(
            "http://e.test".into(),
            "http://e.test/w".into(),
            "whsec_x".into(),
            crate::clock::Clock::system(),
        );
        let id = emu.with_state(|emu, state| {
            let customer = emu.create_customer(state, None, None, Default::default());
            let session = PortalSession {
                id: emu.new_id("bps"),
                customer: customer.id,
                return_url: "http://app.test/settings/billing".into(),
                created: emu.clock.unix() - age_secs,
                last_used: emu.clock.unix() - age_secs,
                flow: None,
                configuration: "bpc_x".into(),
                locale: None,
            };
            let id = session.id.clone();
            state.outbox.clear();
            state.sessions.insert(id.clone(), session);
            id
        });
        let id = id.await.unwrap();
        (emu, id)
    }

    const APP_PAGE: &str = "http://app.test/settings/billing";

    #[actix_rt::test]
    async fn a_portal_session_lasts_five_minutes_without_a_visit() {
        let (emu, fresh) = emulator_with_session(PORTAL_SESSION_TTL_SECS - 5).await;
        assert!(session(&emu, &fresh, APP_PAGE).await.is_ok());
        let (emu, old) = emulator_with_session(PORTAL_SESSION_TTL_SECS + 1).await;
        let page = session(&emu, &old, APP_PAGE)
            .await
            .unwrap_err()
            .error_response();
        assert_eq!(page.status().as_u16(), 410);
    }

    #[actix_rt::test]
    async fn each_visit_starts_the_five_minutes_again() {
        let (emu, id) = emulator_with_session(PORTAL_SESSION_TTL_SECS - 5).await;
        let before = emu.clock.unix();

        let visited = session(&emu, &id, APP_PAGE).await.unwrap();

        assert!(
            visited.last_used >= before,
            "{} < {before}",
            visited.last_used
        );
        let stored = emu
            .read(|state| state.sessions[&id].last_used)
            .await
            .unwrap();
        assert_eq!(stored, visited.last_used);
        // Ten seconds on it was created more than five minutes ago, but used
        // since: still live.
        emu.clock.advance(10);
        assert!(session(&emu, &id, APP_PAGE).await.is_ok());
    }

    #[actix_rt::test]
    async fn an_unknown_session_leads_back_to_the_apps_billing_page() {
        let (emu, _) = emulator_with_session(0).await;

        let missing = session(&emu, "bps_nope", APP_PAGE).await.unwrap_err();

        assert_eq!(missing.status, 404);
        assert_eq!(missing.back, APP_PAGE);
    }
}
