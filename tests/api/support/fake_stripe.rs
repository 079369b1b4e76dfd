//! The fake Stripe's answers, in the exact shapes async-stripe parses (taken
//! from Stripe's `fixtures3.json`): customers get fresh ids per creation, portal
//! sessions put the customer in their URL so a test sees whose session it is.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::app::form;

pub const PORTAL_URL_BASE: &str = "https://billing.stripe.test/p/session/";

pub fn customer_json(id: &str, email: Option<&str>) -> Value {
    json!({
        "id": id, "object": "customer", "address": null, "balance": 0,
        "created": 1_700_000_000, "currency": null, "default_source": null,
        "delinquent": false, "description": null, "discount": null, "email": email,
        "invoice_prefix": "7FE1103", "invoice_settings": {"custom_fields": null,
        "default_payment_method": null, "footer": null, "rendering_options": null},
        "livemode": false, "metadata": {}, "name": null, "next_invoice_sequence": 1,
        "phone": null, "preferred_locales": [], "shipping": null, "tax_exempt": "none",
        "test_clock": null, "customer_account": null
    })
}

pub fn portal_session_json(customer: &str, return_url: Option<&str>) -> Value {
    json!({
        "id": "bps_1Pgc7HB7WZ01zgkWNs8s9Auh", "object": "billing_portal.session",
        "configuration": "bpc_1Pgc7HB7WZ01zgkWxH2EPWRX", "created": 1_700_000_000,
        "customer": customer, "flow": null, "livemode": false, "locale": null,
        "on_behalf_of": null, "return_url": return_url,
        "url": format!("{PORTAL_URL_BASE}{customer}"), "customer_account": null
    })
}

pub fn stripe_error(
    status: u16,
    kind: &str,
    code: Option<&str>,
    message: &str,
) -> ResponseTemplate {
    let mut error = json!({"type": kind, "message": message});
    if let Some(code) = code {
        error["code"] = json!(code);
        error["param"] = json!("customer");
    }
    ResponseTemplate::new(status).set_body_json(json!({ "error": error }))
}

/// Answers `POST /v1/customers` with `cus_fake_1`, `cus_fake_2`, …
#[derive(Clone, Default)]
pub struct CustomerFactory(Arc<AtomicUsize>);

impl Respond for CustomerFactory {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        let fields = form(request);
        ResponseTemplate::new(200).set_body_json(customer_json(
            &format!("cus_fake_{n}"),
            fields.get("email").map(String::as_str),
        ))
    }
}

/// Answers `POST /v1/billing_portal/sessions` for whatever customer was asked.
pub struct PortalSessions;

impl Respond for PortalSessions {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let fields = form(request);
        let customer = fields.get("customer").cloned().unwrap_or_default();
        ResponseTemplate::new(200).set_body_json(portal_session_json(
            &customer,
            fields.get("return_url").map(String::as_str),
        ))
    }
}

/// The happy path: customers are created, portal sessions are granted.
pub async fn mount_working_stripe(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(CustomerFactory::default())
        .mount(server)
        .await;
    mount_portal_sessions(server).await;
}

pub async fn mount_portal_sessions(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .respond_with(PortalSessions)
        .mount(server)
        .await;
}

/// Portal sessions whose URL is a page this fake serves on loopback, so a
/// real browser can land on it: `{fake}/portal/{customer}`.
pub async fn mount_loopback_portal(server: &MockServer, delay: std::time::Duration) {
    struct LoopbackSessions(String, std::time::Duration);
    impl Respond for LoopbackSessions {
        fn respond(&self, request: &Request) -> ResponseTemplate {
            let fields = form(request);
            let customer = fields.get("customer").cloned().unwrap_or_default();
            let mut session =
                portal_session_json(&customer, fields.get("return_url").map(String::as_str));
            session["url"] = json!(format!("{}/portal/{customer}", self.0));
            ResponseTemplate::new(200)
                .set_body_json(session)
                .set_delay(self.1)
        }
    }
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(CustomerFactory::default())
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .respond_with(LoopbackSessions(server.uri(), delay))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(wiremock::matchers::path_regex("^/portal/"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/html")
                .set_body_string(
                    "<!doctype html><title>Fake portal</title><h1>Fake Stripe portal</h1>",
                ),
        )
        .mount(server)
        .await;
}
