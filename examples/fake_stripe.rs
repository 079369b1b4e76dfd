//! A zero-latency fake Stripe for `scripts/bench`.
//!
//! `POST /v1/customers` answers a fresh customer (`cus_bench_1`, `cus_bench_2`, …) and
//! `POST /v1/billing_portal/sessions` a portal session for the `customer` form field, both in
//! the JSON shapes async-stripe parses (the same as `tests/api/fake_stripe.rs`). Everything else
//! is a Stripe-shaped 404. The answers are static strings around a counter or the echoed field
//! (`examples/support/stripe_answers.rs`, shared with `examples/stripe_rtt.rs`): the benchmark
//! subtracts this server's own latency from the service's, so it must be as cheap as possible
//! and never the bottleneck.
//!
//! ```sh
//! cargo run --release --example fake_stripe -- 12111        # port (or FAKE_STRIPE_PORT)
//! cargo run --release --example fake_stripe -- 12111 2      # and workers (default 1)
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::header::ContentType;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer};

#[path = "support/stripe_answers.rs"]
mod answers;

static CUSTOMERS: AtomicU64 = AtomicU64::new(0);

fn json(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(ContentType::json())
        .body(body)
}

async fn create_customer(body: web::Bytes) -> HttpResponse {
    let n = CUSTOMERS.fetch_add(1, Ordering::Relaxed) + 1;
    json(StatusCode::OK, answers::customer(n, &body))
}

async fn create_portal_session(body: web::Bytes) -> HttpResponse {
    json(StatusCode::OK, answers::portal_session(&body))
}

async fn not_found() -> HttpResponse {
    json(StatusCode::NOT_FOUND, answers::NOT_FOUND.to_string())
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
