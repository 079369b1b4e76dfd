//! The edge of the service, before and around the handlers (issue 15): the JSON bodies of the
//! errors answered before routing.

use crate::support::*;

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
