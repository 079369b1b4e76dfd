//! The edge of the service, before and around the handlers (issue 15): what the access log
//! keeps of a request, how long a body may take, who may read `/metrics`, and the JSON bodies
//! of the errors answered before routing.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// Polls `instance`'s log until a line contains `needle`, at most 20 s.
async fn log_line_with(instance: &Instance, needle: &str) -> String {
    let started = Instant::now();
    loop {
        if let Some(line) = instance.log().lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no log line with {needle}:\n{}",
            instance.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// --- item 14: the access log never carries a query string.

#[actix_rt::test]
async fn the_access_log_keeps_method_and_path_but_never_the_query_string() {
    let app = spawn_app().await;
    let instance = Instance::start_logging(&app, &[("RUST_LOG", "info")]).await;

    let response = app
        .client
        .get(format!(
            "{}/billing/status?token=secret-token-in-the-url&x=1",
            instance.base
        ))
        .header("x-request-id", "query-in-the-log")
        .send()
        .await
        .unwrap();
    let plain = app
        .client
        .get(format!("{}/healthz", instance.base))
        .header("x-request-id", "no-query-in-the-log")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 401);
    assert_eq!(plain.status(), 200);
    let line = log_line_with(&instance, "query-in-the-log").await;
    assert!(
        line.contains(r#""GET /billing/status?… HTTP/1.1" 401"#),
        "{line}"
    );
    let plain = log_line_with(&instance, "no-query-in-the-log").await;
    assert!(plain.contains(r#""GET /healthz HTTP/1.1" 200"#), "{plain}");
    assert!(
        !instance.log().contains("secret-token-in-the-url"),
        "{}",
        instance.log()
    );
}

// --- item 2: a request body has a bounded time to arrive.

/// A webhook head announcing 100 bytes of body.
const WEBHOOK_HEAD: &[u8] = b"POST /webhooks/stripe HTTP/1.1\r\nHost: localhost\r\n\
    Content-Type: application/json\r\nStripe-Signature: t=1,v1=00\r\nContent-Length: 100\r\n\r\n";

async fn app_with_body_timeout() -> TestApp {
    spawn_app_with(|vars| {
        vars.insert("HTTP_BODY_TIMEOUT_SECS".into(), "1".into());
    })
    .await
}

fn assert_timed_out(responses: &[RawResponse]) {
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0].status, 408, "{responses:?}");
    assert_eq!(responses[0].json()["error"], "request_timeout");
    assert_eq!(responses[0].header("connection"), Some("close"));
}

#[actix_rt::test]
async fn a_body_that_never_arrives_is_answered_408_within_the_body_timeout_and_closed() {
    let app = app_with_body_timeout().await;
    let mut stream = app.connect().await;
    stream.write_all(WEBHOOK_HEAD).await.unwrap();
    stream.write_all(b"{").await.unwrap();

    // read_to_close: the service must close the connection, within RAW_BOUND.
    let responses = parse_responses(&read_to_close(&mut stream).await);

    assert_timed_out(&responses);
    assert_eq!(app.count("stripe_events"), 0);
}

#[actix_rt::test]
async fn a_body_that_trickles_in_is_cut_off_at_the_body_timeout() {
    let app = app_with_body_timeout().await;
    let stream = app.connect().await;
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(WEBHOOK_HEAD).await.unwrap();
    // One byte every 50 ms would take 5 s for the 100 announced; the timeout is 1 s.
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    let mut received = Vec::new();
    tokio::time::timeout(
        RAW_BOUND,
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut received),
    )
    .await
    .expect("the service did not close the connection")
    .ok();
    trickle.abort();

    assert_timed_out(&parse_responses(&received));
}

#[actix_rt::test]
async fn a_body_sent_in_time_is_read_as_usual() {
    let app = app_with_body_timeout().await;

    let response = app.post_webhook(b"{}", Some("t=1,v1=00")).await;

    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_ne!(body["error"], "request_timeout");
}

#[actix_rt::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let cap = 2 * workers;
    let app = spawn_app_with(|vars| {
        vars.insert("HTTP_MAX_CONNECTIONS".into(), cap.to_string());
        vars.insert("HTTP_HEAD_TIMEOUT_SECS".into(), "120".into());
    })
    .await;
    // Idle connections that have sent nothing hold every slot.
    let mut idle = Vec::new();
    for _ in 0..cap {
        idle.push(app.connect().await);
    }
    let waiting = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/healthz");
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    // Whatever the machine's load, an answer now would mean the cap let it in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a connection over the cap was served"
    );

    drop(idle);
    let answered = tokio::time::timeout(RAW_BOUND, waiting)
        .await
        .expect("the waiting request was never served");

    assert_eq!(answered.unwrap().unwrap(), 200);
}

#[actix_rt::test]
async fn start_up_raises_the_soft_file_descriptor_limit_and_says_so() {
    let app = spawn_app().await;
    let hard = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap().1;
    assert!(
        hard > 512,
        "this test needs a hard limit above 512, not {hard}"
    );

    let instance = Instance::start_logging_with_fd_limit(&app, 512).await;

    let line = log_line_with(&instance, "file descriptors").await;
    let raised: u64 = line
        .split_once("soft limit raised from 512 to ")
        .and_then(|(_, to)| to.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(raised > 512 && raised <= hard, "{line}");
}

// --- item 18: who may read /metrics.

#[actix_rt::test]
async fn metrics_need_the_metrics_token_when_one_is_set() {
    let app = spawn_app_with(|vars| {
        vars.insert("METRICS_TOKEN".into(), "metrics-token-0123456789".into());
    })
    .await;
    let get = |token: Option<&'static str>| {
        let mut request = app.client.get(app.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    let without = get(None).await.unwrap();
    let wrong = get(Some("metrics-token-0123456788")).await.unwrap();
    let right = get(Some("metrics-token-0123456789")).await.unwrap();

    assert_eq!(without.status(), 401);
    let body: serde_json::Value = without.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated");
    assert_eq!(wrong.status(), 401);
    assert_eq!(right.status(), 200);
    assert!(right.text().await.unwrap().contains("billing_portal_"));
}

fn production(vars: &mut std::collections::HashMap<String, String>) {
    vars.insert("APP_ENV".into(), "production".into());
}

#[actix_rt::test]
async fn in_production_metrics_are_not_served_on_the_main_port_without_a_token() {
    let app = spawn_app_with(production).await;

    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    let openapi = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();

    assert_eq!(metrics.status(), 404);
    let body: serde_json::Value = metrics.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    assert_eq!(openapi.status(), 200, "the API description stays public");
}

#[actix_rt::test]
async fn metrics_addr_serves_metrics_on_their_own_loopback_listener_only() {
    let port = free_port();
    let app = spawn_app_with(|vars| {
        production(vars);
        vars.insert("METRICS_ADDR".into(), format!("127.0.0.1:{port}"));
    })
    .await;

    let main = app.client.get(app.url("/metrics")).send().await.unwrap();
    let separate = app
        .client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    let other = app
        .client
        .get(format!("http://127.0.0.1:{port}/billing/status"))
        .send()
        .await
        .unwrap();

    assert_eq!(main.status(), 404);
    assert_eq!(separate.status(), 200);
    assert!(separate.text().await.unwrap().contains("billing_portal_"));
    assert_eq!(
        other.status(),
        404,
        "the metrics listener serves nothing else"
    );
}

// --- item 19: errors answered before routing are JSON too.

#[actix_rt::test]
async fn a_malformed_request_head_is_answered_400_json() {
    let app = spawn_app().await;

    let responses = exchange(&app, b"GET /healthz HTTP/1.1\r\nHost localhost\r\n\r\n").await;

    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0].status, 400);
    assert_eq!(responses[0].json()["error"], "bad_request");
}

#[actix_rt::test]
async fn a_request_head_over_the_limit_is_answered_431_json() {
    let app = spawn_app().await;
    // actix-http's limit is 128 KiB. Exactly that much, so the service reads every byte
    // sent and closes cleanly (unread bytes would make the close a reset).
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    head.resize(128 * 1024, b'a');

    let responses = exchange(&app, &head).await;

    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0].status, 431);
    assert_eq!(responses[0].json()["error"], "headers_too_large");
}

#[actix_rt::test]
async fn a_request_head_that_never_completes_is_answered_408_json() {
    let app = spawn_app_with(|vars| {
        vars.insert("HTTP_HEAD_TIMEOUT_SECS".into(), "1".into());
    })
    .await;

    let responses = exchange(&app, b"GET /healthz HTTP/1.1\r\nHost: local").await;

    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0].status, 408);
    assert_eq!(responses[0].json()["error"], "request_timeout");
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

#[actix_rt::test]
async fn a_later_request_head_that_trickles_in_on_a_kept_alive_connection_is_answered_408_json() {
    let app = spawn_app_with(|vars| {
        vars.insert("HTTP_HEAD_TIMEOUT_SECS".into(), "1".into());
    })
    .await;
    // actix-http times only a connection's first head: this one, one byte every 50 ms, would
    // take 2 s and could go on for ever.
    let rest = trickle_after_a_first_answer(
        &app,
        HEALTHZ,
        |read| read.ends_with(br#"{"status":"ok"}"#),
        HEALTHZ,
    )
    .await
    .expect("the service did not close the connection");

    let responses = parse_responses(&rest);
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0].status, 408);
    assert_eq!(responses[0].json()["error"], "request_timeout");
}

#[actix_rt::test]
async fn idle_keep_alive_time_does_not_count_against_the_next_head() {
    let app = spawn_app_with(|vars| {
        vars.insert("HTTP_HEAD_TIMEOUT_SECS".into(), "1".into());
    })
    .await;
    let mut stream = app.connect().await;
    stream.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);

    // Longer than the head timeout, well within keep-alive (5 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(HEALTHZ).await.unwrap();

    assert_eq!(read_response(&mut stream).await.status, 200);
}

#[actix_rt::test]
async fn a_malformed_request_pipelined_after_good_ones_is_answered_400_json_after_them() {
    let app = spawn_app().await;
    let good = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

    let responses = exchange(
        &app,
        format!("{good}{good}GET /nope HTTP/1.1\r\nHost localhost\r\n\r\n").as_bytes(),
    )
    .await;

    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 400], "{responses:?}");
    assert_eq!(responses[0].json()["status"], "ok");
    assert_eq!(responses[2].json()["error"], "bad_request");
}

/// Sends `first` on a new connection and reads until `answered` says its answer has come;
/// then sends `next` one byte every 50 ms and holds the connection open. What the service
/// sends until it closes the connection, or `Err` if it has not closed it within [`RAW_BOUND`].
async fn trickle_after_a_first_answer(
    app: &TestApp,
    first: &[u8],
    answered: impl Fn(&[u8]) -> bool,
    next: &'static [u8],
) -> Result<Vec<u8>, tokio::time::error::Elapsed> {
    let (mut reader, mut writer) = app.connect().await.into_split();
    writer.write_all(first).await.unwrap();
    let mut received = Vec::new();
    while !answered(&received) {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(RAW_BOUND, reader.read(&mut chunk))
            .await
            .expect("no first answer")
            .unwrap();
        assert!(n > 0, "closed before the first answer");
        received.extend_from_slice(&chunk[..n]);
    }
    let trickle = tokio::spawn(async move {
        for byte in next {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Then silence, with the connection held open.
        std::future::pending::<()>().await;
    });
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(RAW_BOUND, reader.read_to_end(&mut rest)).await;
    trickle.abort();
    closed.map(|_| rest)
}

/// Review of the first bound: it counted heads by their blank lines and answers by parsing
/// what went out, so a HEAD answer (no body to follow), a blank line before the next request
/// (which HTTP/1 lets a client send) or a body holding a blank line switched it off for the
/// rest of the connection. Each opener, then a head one byte every 50 ms.
#[actix_rt::test]
async fn no_earlier_request_switches_off_the_bound_on_a_later_head() {
    let app = spawn_app_with(|vars| {
        vars.insert("HTTP_HEAD_TIMEOUT_SECS".into(), "1".into());
    })
    .await;
    let body_with_blank_lines = b"POST /webhooks/stripe HTTP/1.1\r\nHost: localhost\r\n\
        content-type: application/json\r\ncontent-length: 8\r\n\r\n{\n\n}\r\n\r\n";
    let openers: [(&str, &[u8], &[u8]); 3] = [
        (
            "a HEAD request",
            b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
            HEALTHZ,
        ),
        (
            "a blank line before the next request",
            HEALTHZ,
            b"\r\nGET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ),
        ("a body holding blank lines", body_with_blank_lines, HEALTHZ),
    ];
    for (opener, first, next) in openers {
        // Up to the end of the first answer's head: a HEAD answer has no body to wait for.
        let head_read = |read: &[u8]| read.windows(4).any(|w| w == b"\r\n\r\n");

        let closed = trickle_after_a_first_answer(&app, first, head_read, next).await;

        assert!(
            closed.is_ok(),
            "after {opener}: the connection was never closed"
        );
        let rest = closed.unwrap_or_default();
        let text = String::from_utf8_lossy(&rest);
        assert!(
            text.contains("408") && text.contains("request_timeout"),
            "after {opener}: {text}"
        );
    }
}
