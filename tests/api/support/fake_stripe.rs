//! The fake Stripe's answers, in the exact shapes async-stripe parses (taken
//! from Stripe's `fixtures3.json`): customers get fresh ids per creation (a
//! repeated `Idempotency-Key` gets the first one again, as at Stripe), portal
//! sessions put the customer in their URL so a test sees whose session it is;
//! and [`GatedStripe`], a door in front of it that holds chosen requests until
//! the test lets them through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::matchers::{method, path, query_param};
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

/// Answers `POST /v1/customers` with `cus_fake_1`, `cus_fake_2`, … and, like
/// Stripe (docs.stripe.com/api/idempotent_requests), answers a repeated
/// `Idempotency-Key` with the customer it first created, or 400
/// `idempotency_error` when the parameters differ. (Stripe's 409 for a
/// concurrent request with the same key has no counterpart here: this fake
/// answers at once.)
#[derive(Clone, Default)]
pub struct CustomerFactory {
    created: Arc<AtomicUsize>,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
}

/// What an Idempotency-Key was first used with: the body sent, the customer made.
type Reply = (Vec<u8>, Value);

impl Respond for CustomerFactory {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let key = super::app::header(request, "idempotency-key").map(str::to_owned);
        let mut replies = self.replies.lock().unwrap();
        if let Some((body, customer)) = key.as_ref().and_then(|k| replies.get(k)) {
            if *body != request.body {
                return stripe_error(
                    400,
                    "idempotency_error",
                    None,
                    "Keys for idempotent requests can only be used with the same parameters \
                     they were first used with.",
                );
            }
            return ResponseTemplate::new(200)
                .insert_header("idempotent-replayed", "true")
                .set_body_json(customer.clone());
        }
        let n = self.created.fetch_add(1, Ordering::SeqCst) + 1;
        let fields = form(request);
        let customer = customer_json(
            &format!("cus_fake_{n}"),
            fields.get("email").map(String::as_str),
        );
        if let Some(key) = key {
            replies.insert(key, (request.body.clone(), customer.clone()));
        }
        ResponseTemplate::new(200).set_body_json(customer)
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

/// `customer` has no active entitlements
/// (`GET /v1/entitlements/active_entitlements`, an empty list).
pub async fn mount_no_entitlements(server: &MockServer, customer: &str) {
    Mock::given(method("GET"))
        .and(path("/v1/entitlements/active_entitlements"))
        .and(query_param("customer", customer))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "data": [], "has_more": false,
            "url": "/v1/entitlements/active_entitlements"
        })))
        .mount(server)
        .await;
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

/// A door in front of the fake Stripe: a request one of its [`Gate`]s holds
/// waits until the test opens that gate, and every request then goes on to
/// the fake unchanged, so its answers and its record of requests stay the
/// ones the test mounted. A slow Stripe, timed by the test instead of a sleep.
pub struct GatedStripe {
    pub uri: String,
    door: Arc<Door>,
}

struct Door {
    upstream: std::sync::OnceLock<String>,
    gates: Mutex<Vec<Arc<Gate>>>,
    client: reqwest::Client,
}

type Holds = dyn Fn(&str, &HashMap<String, String>) -> bool + Send + Sync;

/// Holds the requests its predicate (path, form fields) matches until opened.
pub struct Gate {
    holds: Box<Holds>,
    open: tokio::sync::watch::Sender<bool>,
    arrived: tokio::sync::watch::Sender<usize>,
}

impl GatedStripe {
    pub async fn start() -> Self {
        let door = Arc::new(Door {
            upstream: std::sync::OnceLock::new(),
            gates: Default::default(),
            client: reqwest::Client::new(),
        });
        let data = actix_web::web::Data::from(door.clone());
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(data.clone())
                .default_service(actix_web::web::to(pass_through))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let uri = format!("http://{}", server.addrs()[0]);
        tokio::spawn(server.run());
        Self { uri, door }
    }

    /// Puts the door between the service and the fake Stripe `vars` name
    /// (for `spawn_app_with`).
    pub fn route(&self, vars: &mut HashMap<String, String>) {
        let fake = vars.insert("STRIPE_API_BASE".into(), self.uri.clone());
        let _ = self
            .door
            .upstream
            .set(fake.expect("spawn_app sets STRIPE_API_BASE"));
    }

    /// A closed gate for the requests `holds` matches (path, form fields).
    pub fn gate(
        &self,
        holds: impl Fn(&str, &HashMap<String, String>) -> bool + Send + Sync + 'static,
    ) -> Arc<Gate> {
        let gate = Arc::new(Gate {
            holds: Box::new(holds),
            open: tokio::sync::watch::Sender::new(false),
            arrived: tokio::sync::watch::Sender::new(0),
        });
        self.door.gates.lock().unwrap().push(gate.clone());
        gate
    }
}

impl Gate {
    /// Waits until `n` requests have reached this gate (30 s at most).
    pub async fn arrived(&self, n: usize) {
        let mut arrived = self.arrived.subscribe();
        let reached = arrived.wait_for(|count| *count >= n);
        if tokio::time::timeout(std::time::Duration::from_secs(30), reached)
            .await
            .is_err()
        {
            panic!(
                "{n} requests never reached the gate ({} did)",
                *arrived.borrow()
            );
        }
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

async fn pass_through(
    request: actix_web::HttpRequest,
    body: actix_web::web::Bytes,
    door: actix_web::web::Data<Door>,
) -> actix_web::HttpResponse {
    let fields: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let gate = door
        .gates
        .lock()
        .unwrap()
        .iter()
        .find(|gate| (gate.holds)(request.path(), &fields))
        .cloned();
    if let Some(gate) = gate {
        let mut open = gate.open.subscribe();
        gate.arrived.send_modify(|count| *count += 1);
        let _ = open.wait_for(|open| *open).await;
    }
    let upstream = door.upstream.get().expect("GatedStripe::route was called");
    let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes()).unwrap();
    let mut forwarded = door
        .client
        .request(method, format!("{upstream}{}", request.uri()))
        .body(body.to_vec());
    for (name, value) in request.headers() {
        if !matches!(name.as_str(), "host" | "content-length") {
            forwarded = forwarded.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = forwarded.send().await.unwrap();
    let status = actix_web::http::StatusCode::from_u16(answer.status().as_u16()).unwrap();
    // Every header Stripe's answer carries (`Stripe-Should-Retry`,
    // `Retry-After`, `Idempotent-Replayed`, `Request-Id`…): the service acts on
    // them, so the gate must not lose them.
    let mut response = actix_web::HttpResponse::build(status);
    for (name, value) in answer.headers() {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "date"
        ) {
            response.insert_header((name.as_str(), value.as_bytes()));
        }
    }
    response.body(answer.bytes().await.unwrap())
}
