//! The emulator's hosted Customer Portal at `/stripe-emulator/p/session/{id}`:
//! the brief's portal features, server-rendered with plain forms. View the
//! subscription and billing cycle, switch plan, cancel (at period end or now,
//! with optional feedback), renew, update the payment method (test card
//! 4242 4242 4242 4242), update the billing address, view and download
//! invoices, and "Return to app". Sessions expire after five minutes of the
//! virtual clock; a deep link (`flow_data`) opens on its task and returns to
//! the app when done. For the demo, a "Test clock" control advances the
//! account's clock by 15 days or a month, to reach a renewal, a failed
//! payment or the end of a retry window without waiting.

// Helpers return the finished error page as `Err(HttpResponse)`; boxing it
// would buy nothing on this development-only path.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::*;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn money(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

fn date(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%B %-d, %Y").to_string())
        .unwrap_or_default()
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;\
background:#f6f9fc;color:#1a1f36}main{max-width:640px;margin:0 auto;padding:24px 16px}\
.banner{background:#ffe8b3;color:#5c3b00;padding:8px 16px;font-size:14px;text-align:center}\
section{background:#fff;border:1px solid #e3e8ee;border-radius:8px;padding:20px;margin:16px 0}\
h1{font-size:22px}h2{font-size:17px;margin-top:0}a{color:#4434d4}\
button,.button{background:#635bff;color:#fff;border:0;border-radius:6px;padding:10px 16px;\
font-size:15px;cursor:pointer;text-decoration:none;display:inline-block}\
button.secondary{background:#fff;color:#1a1f36;border:1px solid #687385}\
button:focus-visible,a:focus-visible,input:focus-visible,select:focus-visible{outline:3px solid #533afd;outline-offset:2px}\
label{display:block;margin:10px 0 4px}input,select,textarea{font-size:15px;padding:8px;width:100%;\
box-sizing:border-box;border:1px solid #687385;border-radius:6px}\
input[type=radio]{width:auto;margin:0 8px 0 0}fieldset label{display:flex;align-items:center}\
.muted{color:#4f566b}.error{color:#a41c4e;font-weight:600}.notice{color:#0e6245;font-weight:600}\
table{width:100%;border-collapse:collapse}td{padding:6px 0;border-bottom:1px solid #e3e8ee}\
.row{display:flex;gap:8px;flex-wrap:wrap;align-items:center}";

fn layout(session: &PortalSession, title: &str, body: &str) -> HttpResponse {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title} · Billing portal (emulated)</title><style>{STYLE}</style></head><body>\
         <div class=\"banner\" role=\"note\">Test mode: local Stripe emulator. No real payment is made.</div>\
         <main><p><a id=\"return-to-app\" href=\"{ret}\">← Return to app</a></p>{body}</main></body></html>",
        title = esc(title),
        ret = esc(&session.return_url),
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(html)
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_string()))
        .finish()
}

fn plain_page(status: u16, title: &str, message: &str, link: Option<&str>) -> HttpResponse {
    let link = link
        .map(|l| format!("<p><a href=\"{}\">Return to app</a></p>", esc(l)))
        .unwrap_or_default();
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default())
        .content_type("text/html; charset=utf-8")
        .body(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
             <style>{STYLE}</style></head><body><main><section><h1>{t}</h1><p>{m}</p>{link}</section>\
             </main></body></html>",
            t = esc(title),
            m = esc(message)
        ))
}

/// The live session, or the page that explains why there is none.
fn session(emu: &Emulator, id: &str) -> Result<PortalSession, HttpResponse> {
    let state = emu.lock();
    let session = state.sessions.get(id).cloned().ok_or_else(|| {
        plain_page(
            404,
            "Session not found",
            "This portal link is not valid.",
            None,
        )
    })?;
    if emu.clock.unix() - session.created > PORTAL_SESSION_TTL_SECS {
        return Err(plain_page(
            410,
            "This session has expired",
            "Portal sessions last five minutes. Go back to the app and open the portal again.",
            Some(&session.return_url),
        ));
    }
    Ok(session)
}

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
        url::form_urlencoded::byte_serialize(notice.as_bytes()).collect::<String>()
    ))
}

#[derive(Deserialize)]
pub struct Notice {
    notice: Option<String>,
    error: Option<String>,
}

pub async fn home(
    path: web::Path<String>,
    q: web::Query<Notice>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let id = path.into_inner();
    let session = match session(&emu, &id) {
        Ok(s) => s,
        Err(page) => return page,
    };
    let url = base(&emu, &id);
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
    let state = emu.lock();
    let Some(customer) = state.customers.get(&session.customer) else {
        return plain_page(
            404,
            "Customer not found",
            "This customer no longer exists.",
            Some(&session.return_url),
        );
    };
    let mut body = String::from("<h1>Billing</h1>");
    if let Some(n) = &q.notice {
        body += &format!("<p class=\"notice\" role=\"status\">{}</p>", esc(n));
    }
    if let Some(e) = &q.error {
        body += &format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    body += "<section aria-labelledby=\"subs\"><h2 id=\"subs\">Current plan</h2>";
    let subs: Vec<&Subscription> = state
        .subscriptions
        .values()
        .filter(|s| s.customer == customer.id && !s.has_ended())
        .collect();
    if subs.is_empty() {
        body += "<p class=\"muted\">No active subscription.</p>";
    }
    for sub in subs {
        let price = Emulator::price(&sub.price).expect("seeded price");
        let cycle = match (sub.cancel_at, sub.status.as_str()) {
            (Some(at), _) => format!("Cancels on {}", date(at)),
            (None, "past_due") => "Your last payment failed; we will retry it".into(),
            (None, "unpaid") => "Unpaid: update your payment method".into(),
            (None, "incomplete") => "Awaiting the first payment".into(),
            (None, _) => format!("Renews on {}", date(sub.current_period_end)),
        };
        let cycle = match &sub.pause_collection {
            Some(p) => format!(
                "{cycle}. Payment collection is paused{}",
                p.resumes_at
                    .map(|r| format!(" until {}", date(r)))
                    .unwrap_or_default()
            ),
            None => cycle,
        };
        body += &format!(
            "<p><strong>{name}</strong> · {amount} per month</p><p class=\"muted\">Billing cycle: \
             {start} – {end}. {cycle}.</p><div class=\"row\">\
             <a class=\"button\" id=\"update-plan\" href=\"{url}/plan?subscription={id}\">Update plan</a>",
            name = price.product_name,
            amount = money(price.unit_amount),
            start = date(sub.current_period_start),
            end = date(sub.current_period_end),
            id = sub.id,
        );
        if sub.cancel_at.is_some() {
            body += &format!(
                "<form method=\"post\" action=\"{url}/renew\"><input type=\"hidden\" name=\"subscription\" \
                 value=\"{}\"><button id=\"renew\" type=\"submit\">Renew plan</button></form>",
                sub.id
            );
        } else {
            body += &format!(
                "<a class=\"button\" id=\"cancel-plan\" href=\"{url}/cancel?subscription={}\">Cancel plan</a>",
                sub.id
            );
        }
        body += "</div>";
    }
    body += "</section><section aria-labelledby=\"pm\"><h2 id=\"pm\">Payment method</h2>";
    body += &match &customer.card {
        Some(c) => format!(
            "<p>Visa ending in {} · expires {:02}/{}</p>",
            c.last4, c.exp_month, c.exp_year
        ),
        None => "<p class=\"muted\">No payment method on file.</p>".into(),
    };
    body += &format!(
        "<a class=\"button\" id=\"update-payment-method\" href=\"{url}/payment-method\">Update payment method</a></section>"
    );
    let a = &customer.address;
    let address: Vec<&str> = [
        &customer.name,
        &a.line1,
        &a.postal_code,
        &a.city,
        &a.country,
    ]
    .into_iter()
    .filter_map(|v| v.as_deref())
    .collect();
    body += &format!(
        "<section aria-labelledby=\"bi\"><h2 id=\"bi\">Billing information</h2><p>{}</p><p>{}</p>\
         <a class=\"button\" id=\"update-address\" href=\"{url}/address\">Update information</a></section>",
        esc(customer.email.as_deref().unwrap_or("")),
        if address.is_empty() { "<span class=\"muted\">No billing address.</span>".to_string() } else { esc(&address.join(", ")) },
    );
    body += "<section aria-labelledby=\"ih\"><h2 id=\"ih\">Invoice history</h2><table>";
    let invoices: Vec<&Invoice> = state
        .invoices
        .iter()
        .rev()
        .filter(|i| i.customer == customer.id)
        .collect();
    if invoices.is_empty() {
        body += "<tr><td class=\"muted\">No invoices yet.</td></tr>";
    }
    for i in invoices {
        let status = match i.status {
            "paid" => "Paid",
            "open" => "Open",
            "draft" => "Draft",
            "void" => "Void",
            _ => "Uncollectible",
        };
        body += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{status}</td><td><a href=\"{}/invoices/{}/pdf\" \
             download>Download</a></td></tr>",
            date(i.created),
            esc(&i.description),
            money(i.amount),
            emu.base_url,
            i.id
        );
    }
    body += "</table></section>";
    body += &format!(
        "<section aria-labelledby=\"tc\"><h2 id=\"tc\">Test clock</h2><p class=\"muted\">Emulated \
         time: {}. Advance it to reach a renewal, a failed payment or the end of the retry window.</p>\
         <form method=\"post\" action=\"{url}/advance\" class=\"row\">\
         <button id=\"advance-15-days\" class=\"secondary\" type=\"submit\" name=\"by\" value=\"15d\">Advance 15 days</button>\
         <button id=\"advance-1-month\" class=\"secondary\" type=\"submit\" name=\"by\" value=\"1m\">Advance 1 month</button>\
         </form></section>",
        date(emu.clock.unix()),
    );
    drop(state);
    layout(&session, "Billing", &body)
}

#[derive(Deserialize)]
pub struct SubscriptionQuery {
    subscription: String,
    error: Option<String>,
}

fn error_line(error: &Option<String>) -> String {
    error
        .as_ref()
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default()
}

pub async fn plan_form(
    path: web::Path<String>,
    q: web::Query<SubscriptionQuery>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let session = match session(&emu, &path) {
        Ok(s) => s,
        Err(page) => return page,
    };
    let current = emu
        .lock()
        .subscriptions
        .get(&q.subscription)
        .filter(|s| s.customer == session.customer)
        .map(|s| s.price.clone());
    let Some(current) = current else {
        return plain_page(
            404,
            "Subscription not found",
            "No such subscription.",
            Some(&session.return_url),
        );
    };
    let options: String = Emulator::prices()
        .iter()
        .map(|p| {
            format!(
                "<label><input type=\"radio\" name=\"price\" value=\"{id}\" {checked}> {name} · {amount} per month{cur}</label>",
                id = p.id,
                checked = if p.id == current { "checked" } else { "" },
                name = p.product_name,
                amount = money(p.unit_amount),
                cur = if p.id == current { " (current)" } else { "" },
            )
        })
        .collect();
    let body = format!(
        "<h1>Update plan</h1>{err}<section><form method=\"post\" action=\"{url}/plan\">\
         <input type=\"hidden\" name=\"subscription\" value=\"{sub}\"><fieldset><legend>Choose a plan</legend>\
         {options}</fieldset><p><button id=\"confirm-plan\" type=\"submit\">Confirm</button></p></form></section>",
        err = error_line(&q.error),
        url = base(&emu, &session.id),
        sub = esc(&q.subscription),
    );
    layout(&session, "Update plan", &body)
}

#[derive(Deserialize)]
pub struct PlanForm {
    subscription: String,
    price: String,
}

/// Runs a portal action for the session's customer: the subscription must be
/// theirs. Failures go back to `back` with the message.
fn act(
    emu: &Arc<Emulator>,
    session: &PortalSession,
    subscription: Option<&str>,
    back: String,
    action: impl FnOnce(&Emulator, &mut State) -> Result<(), StripeApiError>,
) -> Result<(), HttpResponse> {
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
    result.map_err(|e| {
        let sep = if back.contains('?') { '&' } else { '?' };
        see_other(&format!(
            "{back}{sep}error={}",
            url::form_urlencoded::byte_serialize(e.message.as_bytes()).collect::<String>()
        ))
    })
}

pub async fn plan_submit(
    path: web::Path<String>,
    f: web::Form<PlanForm>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let session = match session(&emu, &path) {
        Ok(s) => s,
        Err(page) => return page,
    };
    let back = format!(
        "{}/plan?subscription={}",
        base(&emu, &session.id),
        f.subscription
    );
    match act(&emu, &session, Some(&f.subscription), back, |emu, state| {
        let change = SubscriptionChange {
            price: Some(f.price.clone()),
            ..Default::default()
        };
        emu.update_subscription(state, &f.subscription, change)
            .map(|_| ())
    }) {
        Ok(()) => done(&emu, &session, "Your plan was updated."),
        Err(page) => page,
    }
}

pub async fn cancel_form(
    path: web::Path<String>,
    q: web::Query<SubscriptionQuery>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let session = match session(&emu, &path) {
        Ok(s) => s,
        Err(page) => return page,
    };
    let end = emu
        .lock()
        .subscriptions
        .get(&q.subscription)
        .filter(|s| s.customer == session.customer)
        .map(|s| s.current_period_end);
    let Some(end) = end else {
        return plain_page(
            404,
            "Subscription not found",
            "No such subscription.",
            Some(&session.return_url),
        );
    };
    let body = format!(
        "<h1>Cancel your plan</h1>{err}<section><form method=\"post\" action=\"{url}/cancel\">\
         <input type=\"hidden\" name=\"subscription\" value=\"{sub}\"><fieldset><legend>When</legend>\
         <label><input type=\"radio\" name=\"when\" value=\"period_end\" checked> At the end of the billing \
         period ({end}): keep access until then</label>\
         <label><input id=\"cancel-now\" type=\"radio\" name=\"when\" value=\"now\"> Immediately</label></fieldset>\
         <label for=\"feedback\">Why are you canceling? (optional)</label><select id=\"feedback\" name=\"feedback\">\
         <option value=\"\">Prefer not to say</option><option value=\"too_expensive\">It's too expensive</option>\
         <option value=\"missing_features\">Some features are missing</option>\
         <option value=\"switched_service\">I'm switching to a different service</option>\
         <option value=\"unused\">I don't use the service enough</option><option value=\"other\">Other reason</option>\
         </select><label for=\"comment\">Anything else? (optional)</label>\
         <textarea id=\"comment\" name=\"comment\" rows=\"2\"></textarea>\
         <p class=\"row\"><button id=\"confirm-cancel\" type=\"submit\">Cancel plan</button></p></form></section>",
        err = error_line(&q.error),
        url = base(&emu, &session.id),
        sub = esc(&q.subscription),
        end = date(end),
    );
    layout(&session, "Cancel plan", &body)
}

#[derive(Deserialize)]
pub struct CancelForm {
    subscription: String,
    when: String,
    feedback: Option<String>,
    comment: Option<String>,
}

pub async fn cancel_submit(
    path: web::Path<String>,
    f: web::Form<CancelForm>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let session = match session(&emu, &path) {
        Ok(s) => s,
        Err(page) => return page,
    };
    let back = format!(
        "{}/cancel?subscription={}",
        base(&emu, &session.id),
        f.subscription
    );
    let feedback = f.feedback.clone().filter(|v| !v.is_empty());
    let comment = f.comment.clone().filter(|v| !v.trim().is_empty());
    let now_ = f.when == "now";
    match act(&emu, &session, Some(&f.subscription), back, |emu, state| {
        if now_ {
            emu.cancel_now(state, &f.subscription, feedback, comment)
                .map(|_| ())
        } else {
            emu.schedule_cancel(state, &f.subscription, feedback)
                .map(|_| ())
        }
    }) {
        Ok(()) => done(
            &emu,
            &session,
            if now_ {
                "Your plan was canceled."
            } else {
                "Your plan will end at the close of the billing period."
            },
        ),
        Err(page) => page,
    }
}

#[derive(Deserialize)]
pub struct RenewForm {
    subscription: String,
}

pub async fn renew_submit(
    path: web::Path<String>,
    f: web::Form<RenewForm>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let session = match session(&emu, &path) {
        Ok(s) => s,
        Err(page) => return page,
    };
    match act(
        &emu,
        &session,
        Some(&f.subscription),
        base(&emu, &session.id),
        |emu, state| {
            let change = SubscriptionChange {
                cancel_at: Some(None),
                ..Default::default()
            };
            emu.update_subscription(state, &f.subscription, change)
                .map(|_| ())
        },
    ) {
        Ok(()) => done(&emu, &session, "Your plan was renewed."),
        Err(page) => page,
    }
}

#[derive(Deserialize)]
pub struct ErrorQuery {
    error: Option<String>,
}

pub async fn payment_method_form(
    path: web::Path<String>,
    q: web::Query<ErrorQuery>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let session = match session(&emu, &path) {
        Ok(s) => s,
        Err(page) => return page,
    };
    let body = format!(
        "<h1>Update payment method</h1>{err}<section><form method=\"post\" action=\"{url}/payment-method\">\
         <label for=\"number\">Card number</label><input id=\"number\" name=\"number\" inputmode=\"numeric\" \
         autocomplete=\"cc-number\" placeholder=\"4242 4242 4242 4242\" required>\
         <div class=\"row\"><div><label for=\"exp\">Expiry (MM/YY)</label><input id=\"exp\" name=\"exp\" \
         placeholder=\"12/34\" autocomplete=\"cc-exp\" required></div><div><label for=\"cvc\">CVC</label>\
         <input id=\"cvc\" name=\"cvc\" inputmode=\"numeric\" autocomplete=\"cc-csc\" placeholder=\"123\" required></div></div>\
         <p class=\"muted\">Test mode: use 4242 4242 4242 4242 with any future date and any CVC \
         (4000 0000 0000 0341 is accepted but its charges fail; 4000 0000 0000 0002 is declined).</p><p><button id=\"save-card\" type=\"submit\">Save card</button></p>\
         </form></section>",
        err = error_line(&q.error),
        url = base(&emu, &session.id),
    );
    layout(&session, "Update payment method", &body)
}

#[derive(Deserialize)]
pub struct CardForm {
    number: String,
    exp: String,
    // Card data is never stored or logged; the CVC is only required.
    #[allow(dead_code)]
    cvc: String,
}

pub async fn payment_method_submit(
    path: web::Path<String>,
    f: web::Form<CardForm>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let session = match session(&emu, &path) {
        Ok(s) => s,
        Err(page) => return page,
    };
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
    match act(&emu, &session, None, back, |emu, state| {
        emu.set_card(state, &customer, &f.number, month, year)
    }) {
        Ok(()) => done(&emu, &session, "Your payment method was updated."),
        Err(page) => page,
    }
}

pub async fn address_form(
    path: web::Path<String>,
    q: web::Query<ErrorQuery>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let session = match session(&emu, &path) {
        Ok(s) => s,
        Err(page) => return page,
    };
    let (name, a) = {
        let state = emu.lock();
        let c = state.customers.get(&session.customer);
        (
            c.and_then(|c| c.name.clone()).unwrap_or_default(),
            c.map(|c| c.address.clone()).unwrap_or_default(),
        )
    };
    let field = |id: &str, label: &str, value: &Option<String>, auto: &str| {
        format!(
            "<label for=\"{id}\">{label}</label><input id=\"{id}\" name=\"{id}\" autocomplete=\"{auto}\" value=\"{}\">",
            esc(value.as_deref().unwrap_or(""))
        )
    };
    let body = format!(
        "<h1>Billing information</h1>{err}<section><form method=\"post\" action=\"{url}/address\">{}{}{}{}{}\
         <p><button id=\"save-address\" type=\"submit\">Save</button></p></form></section>",
        field("name", "Name", &Some(name), "name"),
        field("line1", "Address", &a.line1, "address-line1"),
        field("postal_code", "Postal code", &a.postal_code, "postal-code"),
        field("city", "City", &a.city, "address-level2"),
        field("country", "Country", &a.country, "country"),
        err = error_line(&q.error),
        url = base(&emu, &session.id),
    );
    layout(&session, "Billing information", &body)
}

#[derive(Deserialize)]
pub struct AddressForm {
    name: Option<String>,
    line1: Option<String>,
    postal_code: Option<String>,
    city: Option<String>,
    country: Option<String>,
}

pub async fn address_submit(
    path: web::Path<String>,
    f: web::Form<AddressForm>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let session = match session(&emu, &path) {
        Ok(s) => s,
        Err(page) => return page,
    };
    let clean = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
    let address = Address {
        line1: clean(&f.line1),
        city: clean(&f.city),
        postal_code: clean(&f.postal_code),
        country: clean(&f.country),
    };
    let back = format!("{}/address", base(&emu, &session.id));
    let customer = session.customer.clone();
    match act(&emu, &session, None, back, |emu, state| {
        emu.set_address(state, &customer, clean(&f.name), address)
    }) {
        Ok(()) => done(&emu, &session, "Your billing information was updated."),
        Err(page) => page,
    }
}

#[derive(Deserialize)]
pub struct AdvanceForm {
    by: String,
}

/// The demo's test clock control: advances the account's clock by 15 days or
/// one calendar month, running whatever falls due, and comes back.
pub async fn advance_submit(
    path: web::Path<String>,
    f: web::Form<AdvanceForm>,
    emu: web::Data<Arc<Emulator>>,
) -> HttpResponse {
    let session = match session(&emu, &path) {
        Ok(s) => s,
        Err(page) => return page,
    };
    let now = emu.clock.unix();
    let to = match f.by.as_str() {
        "15d" => now + 15 * DAY,
        "1m" => add_month(now),
        _ => {
            return see_other(&format!(
                "{}?error=Unknown+advance",
                base(&emu, &session.id)
            ))
        }
    };
    let advanced = emu.with_state(|emu, state| {
        emu.advance_clock(state, "clock_emulator", to)?;
        // The session is the demo user's window on the account, not an
        // object of the account: it lives five minutes of the demo user's
        // time, so the jump does not expire it.
        if let Some(s) = state.sessions.get_mut(&session.id) {
            s.created = to;
        }
        Ok::<_, StripeApiError>(())
    });
    match advanced {
        Ok(()) => done(
            &emu,
            &session,
            &format!("The test clock now reads {}.", date(to)),
        ),
        Err(e) => see_other(&format!(
            "{}?error={}",
            base(&emu, &session.id),
            url::form_urlencoded::byte_serialize(e.message.as_bytes()).collect::<String>()
        )),
    }
}

/// `GET /stripe-emulator/invoices/{id}/pdf`: a small but real PDF.
pub async fn invoice_pdf(path: web::Path<String>, emu: web::Data<Arc<Emulator>>) -> HttpResponse {
    let invoice = emu.lock().invoices.iter().find(|i| i.id == *path).cloned();
    let Some(i) = invoice else {
        return plain_page(404, "Invoice not found", "No such invoice.", None);
    };
    let lines = [
        format!("Invoice {}", i.number),
        format!("Date: {}", date(i.created)),
        format!("Customer: {}", i.customer),
        i.description.clone(),
        format!(
            "Amount: {} ({})",
            money(i.amount),
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
        .body(pdf(&lines))
}

/// A one-page PDF with the given lines in Helvetica.
fn pdf(lines: &[String]) -> Vec<u8> {
    let text: String = lines
        .iter()
        .enumerate()
        .map(|(n, l)| {
            let safe = l
                .replace('\\', "\\\\")
                .replace('(', "\\(")
                .replace(')', "\\)");
            format!(
                "BT /F1 {} Tf 72 {} Td ({safe}) Tj ET\n",
                if n == 0 { 20 } else { 12 },
                740 - 28 * n as i32
            )
        })
        .collect();
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_string(),
        format!("<< /Length {} >>\nstream\n{text}endstream", text.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (n, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{object}\nendobj\n", n + 1).as_bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for offset in offsets {
        out.extend(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// The emulator's routes, mounted at `/stripe-emulator`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/stripe-emulator")
            .route("/v1/{path:.*}", web::route().to(super::api::handle))
            .route("/p/session/{id}", web::get().to(home))
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
            .route("/invoices/{id}/pdf", web::get().to(invoice_pdf)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emulator_with_session(age_secs: i64) -> (Arc<Emulator>, String) {
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
                flow: None,
                configuration: "bpc_x".into(),
                locale: None,
            };
            let id = session.id.clone();
            state.outbox.clear();
            state.sessions.insert(id.clone(), session);
            id
        });
        (emu, id)
    }

    #[test]
    fn a_portal_session_lasts_five_minutes() {
        let (emu, fresh) = emulator_with_session(PORTAL_SESSION_TTL_SECS - 5);
        assert!(session(&emu, &fresh).is_ok());
        let (emu, old) = emulator_with_session(PORTAL_SESSION_TTL_SECS + 1);
        let page = session(&emu, &old).unwrap_err();
        assert_eq!(page.status().as_u16(), 410);
    }

    #[test]
    fn the_invoice_pdf_is_a_well_formed_pdf() {
        let bytes = pdf(&[
            "Invoice EMU-0001".into(),
            "Amount paid: $29.00 (pro)".into(),
        ]);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("%PDF-1.4") && text.trim_end().ends_with("%%EOF"));
        // The xref table points at each object's exact byte offset.
        let xref = text.find("xref").unwrap();
        let offsets: Vec<usize> = text[xref..]
            .lines()
            .skip(3)
            .take(5)
            .map(|l| l[..10].parse().unwrap())
            .collect();
        for (n, offset) in offsets.iter().enumerate() {
            assert!(text[*offset..].starts_with(&format!("{} 0 obj", n + 1)));
        }
        assert!(text.contains("\\(pro\\)"), "parentheses are escaped");
    }
}
