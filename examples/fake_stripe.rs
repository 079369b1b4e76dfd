//! A zero-latency fake Stripe for `scripts/bench`.
//!
//! `POST /v1/customers` answers a fresh customer (`cus_bench_1`, `cus_bench_2`, …) and
//! `POST /v1/billing_portal/sessions` a portal session for the `customer` form field, both in
//! the JSON shapes async-stripe parses (the same as `tests/api/fake_stripe.rs`). Everything else
//! is a Stripe-shaped 404. The answers are static strings around a counter or the echoed field:
//! the benchmark subtracts this server's own latency from the service's, so it must be as cheap
//! as possible and never the bottleneck.
//!
//! ```sh
//! cargo run --release --example fake_stripe -- 12111        # port (or FAKE_STRIPE_PORT)
//! cargo run --release --example fake_stripe -- 12111 2      # and workers (default 1)
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::header::ContentType;
use actix_web::{web, App, HttpResponse, HttpServer};

static CUSTOMERS: AtomicU64 = AtomicU64::new(0);

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

fn json(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(body)
}

async fn create_customer(body: web::Bytes) -> HttpResponse {
    let n = CUSTOMERS.fetch_add(1, Ordering::Relaxed) + 1;
    let email = json_string(form_field(&body, "email").as_deref());
    json(format!(
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
    ))
}

async fn create_portal_session(body: web::Bytes) -> HttpResponse {
    let customer = form_field(&body, "customer").unwrap_or_default();
    let return_url = json_string(form_field(&body, "return_url").as_deref());
    // The URL carries the customer verbatim like Stripe's does; ids are [A-Za-z0-9_], but
    // escape anyway so an odd form value cannot break the JSON.
    let url = json_string(Some(&format!(
        "https://billing.stripe.test/p/session/{customer}"
    )));
    let customer = json_string(Some(&customer));
    json(format!(
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
    ))
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type(ContentType::json())
        .body(r#"{"error":{"type":"invalid_request_error","message":"Unrecognized request URL (fake_stripe)."}}"#)
}

fn arg_or_env(index: usize, var: &str) -> Option<String> {
    std::env::args()
        .nth(index)
        .or_else(|| std::env::var(var).ok())
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = match arg_or_env(1, "FAKE_STRIPE_PORT").map(|p| p.parse()) {
        Some(Ok(port)) => port,
        _ => {
            eprintln!(
                "usage: fake_stripe <port> [workers]  (or FAKE_STRIPE_PORT, FAKE_STRIPE_WORKERS)"
            );
            std::process::exit(2);
        }
    };
    // One worker: the benchmark shares two cores between wrk, Postgres, the service and this.
    let workers: usize = arg_or_env(2, "FAKE_STRIPE_WORKERS")
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    let server = HttpServer::new(|| {
        App::new()
            .route("/v1/customers", web::post().to(create_customer))
            .route(
                "/v1/billing_portal/sessions",
                web::post().to(create_portal_session),
            )
            .default_service(web::to(not_found))
    })
    .workers(workers)
    .bind(("127.0.0.1", port))?;
    eprintln!("fake_stripe listening on http://127.0.0.1:{port} ({workers} worker(s))");
    server.run().await
}
