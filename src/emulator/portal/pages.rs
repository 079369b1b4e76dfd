//! The hosted portal's pages: one askama template per page under
//! `src/emulator/templates/` (checked at compile time; every value is
//! HTML-escaped by the template engine), and the view of the account each
//! one shows. Handlers in [`super`] decide which page; this module only
//! renders.

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;
use askama::Template;

use crate::emulator::account::Emulator;
use crate::emulator::model::*;

pub(super) fn money(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

pub(super) fn date(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%B %-d, %Y").to_string())
        .unwrap_or_default()
}

/// A page of the portal, behind the test-mode banner and "Return to app".
pub(super) fn portal_page(template: &impl Template) -> HttpResponse {
    match template.render() {
        Ok(html) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::REFERRER_POLICY, "no-referrer"))
            .body(html),
        Err(e) => {
            log::error!("emulator: a portal page failed to render: {e}");
            HttpResponse::InternalServerError().finish()
        }
    }
}

#[derive(Template)]
#[template(path = "message.html", config = "src/emulator/askama.toml")]
struct Message<'a> {
    title: &'a str,
    message: &'a str,
    return_url: &'a str,
}

/// A page that only says something, in the portal's style, with "Return to app"
/// (`return_url`): a missing or expired session, an unknown object. Never a dead end.
pub(super) fn message(status: u16, title: &str, message: &str, return_url: &str) -> HttpResponse {
    let html = Message {
        title,
        message,
        return_url,
    }
    .render()
    .unwrap_or_else(|_| message.to_string());
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or_default())
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(html)
}

/// One subscription as the home page shows it.
struct SubscriptionView {
    id: String,
    name: &'static str,
    amount: String,
    start: String,
    end: String,
    cycle: String,
    cancel_scheduled: bool,
}

struct InvoiceView {
    date: String,
    description: String,
    amount: String,
    status: &'static str,
    pdf_url: String,
}

#[derive(Template)]
#[template(path = "home.html", config = "src/emulator/askama.toml")]
struct Home<'a> {
    title: &'a str,
    return_url: &'a str,
    url: &'a str,
    notice: Option<&'a str>,
    error: Option<&'a str>,
    subscriptions: Vec<SubscriptionView>,
    card: Option<String>,
    email: &'a str,
    address: String,
    invoices: Vec<InvoiceView>,
    clock_date: String,
}

fn subscription_view(sub: &Subscription) -> SubscriptionView {
    let price = Emulator::price(&sub.price).expect("subscriptions only hold seeded prices");
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
    SubscriptionView {
        id: sub.id.clone(),
        name: price.product_name,
        amount: money(price.unit_amount),
        start: date(sub.current_period_start),
        end: date(sub.current_period_end),
        cycle,
        cancel_scheduled: sub.cancel_at.is_some(),
    }
}

fn invoice_view(invoice: &Invoice, base_url: &str) -> InvoiceView {
    InvoiceView {
        date: date(invoice.created),
        description: invoice.description.clone(),
        amount: money(invoice.amount),
        status: match invoice.status {
            "paid" => "Paid",
            "open" => "Open",
            "draft" => "Draft",
            "void" => "Void",
            _ => "Uncollectible",
        },
        pdf_url: format!("{base_url}/invoices/{}/pdf", invoice.id),
    }
}

/// What the portal's home page needs besides the account.
pub(super) struct HomeContext<'a> {
    pub(crate) session: &'a PortalSession,
    /// The session's pages: `{base}/p/session/{id}`.
    pub(crate) url: &'a str,
    pub(crate) base_url: &'a str,
    pub(crate) notice: Option<&'a str>,
    pub(crate) error: Option<&'a str>,
    pub(crate) now: i64,
}

/// The portal's home: the customer's live subscriptions, payment method,
/// billing information, invoices and the test clock control.
pub(super) fn home(context: HomeContext<'_>, state: &State, customer: &Customer) -> HttpResponse {
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
    portal_page(&Home {
        title: "Billing",
        return_url: &context.session.return_url,
        url: context.url,
        notice: context.notice,
        error: context.error,
        subscriptions: state
            .subscriptions
            .values()
            .filter(|s| s.customer == customer.id && !s.has_ended())
            .map(subscription_view)
            .collect(),
        card: customer.card.as_ref().map(|c| {
            format!(
                "Visa ending in {} · expires {:02}/{}",
                c.last4, c.exp_month, c.exp_year
            )
        }),
        email: customer.email.as_deref().unwrap_or(""),
        address: address.join(", "),
        invoices: state
            .invoices
            .iter()
            .rev()
            .filter(|i| i.customer == customer.id)
            .map(|i| invoice_view(i, context.base_url))
            .collect(),
        clock_date: date(context.now),
    })
}

struct PlanOption {
    id: &'static str,
    name: &'static str,
    amount: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "plan.html", config = "src/emulator/askama.toml")]
struct Plan<'a> {
    title: &'a str,
    return_url: &'a str,
    url: &'a str,
    error: Option<&'a str>,
    subscription: &'a str,
    plans: Vec<PlanOption>,
}

/// "Update plan": the seeded plans, the current one checked.
pub(super) fn plan(
    session: &PortalSession,
    url: &str,
    error: Option<&str>,
    subscription: &str,
    current_price: &str,
) -> HttpResponse {
    portal_page(&Plan {
        title: "Update plan",
        return_url: &session.return_url,
        url,
        error,
        subscription,
        plans: Emulator::prices()
            .iter()
            .map(|p| PlanOption {
                id: p.id,
                name: p.product_name,
                amount: money(p.unit_amount),
                current: p.id == current_price,
            })
            .collect(),
    })
}

#[derive(Template)]
#[template(path = "cancel.html", config = "src/emulator/askama.toml")]
struct Cancel<'a> {
    title: &'a str,
    return_url: &'a str,
    url: &'a str,
    error: Option<&'a str>,
    subscription: &'a str,
    period_end: String,
}

/// "Cancel your plan": at the period end or now, with optional feedback.
pub(super) fn cancel(
    session: &PortalSession,
    url: &str,
    error: Option<&str>,
    subscription: &str,
    period_end: i64,
) -> HttpResponse {
    portal_page(&Cancel {
        title: "Cancel plan",
        return_url: &session.return_url,
        url,
        error,
        subscription,
        period_end: date(period_end),
    })
}

#[derive(Template)]
#[template(path = "payment_method.html", config = "src/emulator/askama.toml")]
struct PaymentMethod<'a> {
    title: &'a str,
    return_url: &'a str,
    url: &'a str,
    error: Option<&'a str>,
}

/// "Update payment method": the card form, with the test cards named.
pub(super) fn payment_method(
    session: &PortalSession,
    url: &str,
    error: Option<&str>,
) -> HttpResponse {
    portal_page(&PaymentMethod {
        title: "Update payment method",
        return_url: &session.return_url,
        url,
        error,
    })
}

struct Field<'a> {
    id: &'static str,
    label: &'static str,
    autocomplete: &'static str,
    value: &'a str,
}

#[derive(Template)]
#[template(path = "address.html", config = "src/emulator/askama.toml")]
struct AddressPage<'a> {
    title: &'a str,
    return_url: &'a str,
    url: &'a str,
    error: Option<&'a str>,
    fields: Vec<Field<'a>>,
}

/// "Billing information": name and address, filled in with what is stored.
pub(super) fn address(
    session: &PortalSession,
    url: &str,
    error: Option<&str>,
    name: &str,
    a: &Address,
) -> HttpResponse {
    let value = |v: &'_ Option<String>| v.as_deref().unwrap_or("").to_string();
    let (line1, postal_code, city, country) = (
        value(&a.line1),
        value(&a.postal_code),
        value(&a.city),
        value(&a.country),
    );
    let field = |id, label, autocomplete, value| Field {
        id,
        label,
        autocomplete,
        value,
    };
    portal_page(&AddressPage {
        title: "Billing information",
        return_url: &session.return_url,
        url,
        error,
        fields: vec![
            field("name", "Name", "name", name),
            field("line1", "Address", "address-line1", &line1),
            field("postal_code", "Postal code", "postal-code", &postal_code),
            field("city", "City", "address-level2", &city),
            field("country", "Country", "country", &country),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_engine_escapes_what_the_customer_typed() {
        let html = Message {
            title: "<script>alert(1)</script>",
            message: "Tom & \"Jerry\" 'quoted'",
            return_url: "http://app.test/?a=1&b=\"2\"",
        }
        .render()
        .unwrap();

        // askama writes numeric character references (`&#60;` for `<`).
        assert!(
            html.contains("<h1>&#60;script&#62;alert(1)&#60;/script&#62;</h1>"),
            "{html}"
        );
        assert!(
            html.contains("<title>&#60;script&#62;alert(1)&#60;/script&#62; ·"),
            "{html}"
        );
        assert!(
            html.contains("Tom &#38; &#34;Jerry&#34; &#39;quoted&#39;"),
            "{html}"
        );
        assert!(html.contains("a=1&#38;b=&#34;2&#34;"), "{html}");
    }

    #[test]
    fn the_portal_stylesheet_is_in_every_page() {
        let html = Message {
            title: "t",
            message: "m",
            return_url: "/",
        }
        .render()
        .unwrap();
        assert!(html.contains(".banner {"), "{html}");
    }
}
