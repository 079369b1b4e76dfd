//! The answers of the benchmark's fake Stripes (`examples/fake_stripe.rs`, zero latency, and
//! `examples/stripe_rtt.rs`, across a modelled network): a fresh customer for
//! `POST /v1/customers` and a portal session for the `customer` form field of
//! `POST /v1/billing_portal/sessions`, in the JSON shapes async-stripe parses (the same as
//! `tests/api/fake_stripe.rs`), and Stripe's 404 for anything else. Static strings around a
//! counter or the echoed fields: the benchmark subtracts the fake's own latency from the
//! service's, so answering must cost next to nothing.
//!
//! Included by each example with `#[path]`: Cargo builds `examples/*.rs` (and
//! `examples/*/main.rs`) as examples, so this file is not one.

/// The first value of `name` in an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A JSON string literal (escaped), or `null`.
fn json_string(value: Option<&str>) -> String {
    value.map_or_else(
        || "null".to_string(),
        |v| serde_json::to_string(v).expect("a string always serializes"),
    )
}

/// The customer `cus_bench_<n>` created from the form `body` (its `email`).
pub fn customer(n: u64, body: &[u8]) -> String {
    let email = json_string(form_field(body, "email").as_deref());
    format!(
        concat!(
            r#"{{"id":"cus_bench_{n}","object":"customer","address":null,"balance":0,"#,
            r#""created":1700000000,"currency":null,"default_source":null,"delinquent":false,"#,
            r#""description":null,"discount":null,"email":{email},"invoice_prefix":"7FE1103","#,
            r#""invoice_settings":{{"custom_fields":null,"default_payment_method":null,"#,
            r#""footer":null,"rendering_options":null}},"livemode":false,"metadata":{{}},"#,
            r#""name":null,"next_invoice_sequence":1,"phone":null,"preferred_locales":[],"#,
            r#""shipping":null,"tax_exempt":"none","test_clock":null,"customer_account":null}}"#
        ),
        n = n,
        email = email,
    )
}

/// A portal session for the `customer` and `return_url` of the form `body`.
pub fn portal_session(body: &[u8]) -> String {
    let customer = form_field(body, "customer").unwrap_or_default();
    let return_url = json_string(form_field(body, "return_url").as_deref());
    // The URL carries the customer verbatim like Stripe's does; ids are [A-Za-z0-9_], but
    // escape anyway so an odd form value cannot break the JSON.
    let url = json_string(Some(&format!(
        "https://billing.stripe.test/p/session/{customer}"
    )));
    let customer = json_string(Some(&customer));
    format!(
        concat!(
            r#"{{"id":"bps_1Pgc7HB7WZ01zgkWNs8s9Auh","object":"billing_portal.session","#,
            r#""configuration":"bpc_1Pgc7HB7WZ01zgkWxH2EPWRX","created":1700000000,"#,
            r#""customer":{customer},"flow":null,"livemode":false,"locale":null,"#,
            r#""on_behalf_of":null,"return_url":{return_url},"url":{url},"#,
            r#""customer_account":null}}"#
        ),
        customer = customer,
        return_url = return_url,
        url = url,
    )
}

/// Stripe's answer to a path it does not have (status 404).
pub const NOT_FOUND: &str = r#"{"error":{"type":"invalid_request_error","message":"Unrecognized request URL (fake_stripe)."}}"#;
