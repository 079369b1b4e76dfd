//! The bounded availability test of issue 15: no client, signed in or not, can grow the
//! service's memory or `/metrics`, or hold its connections, without bound. Real server on
//! loopback, bounded loops, generous outer bounds.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::support::*;

/// Resident memory of this process (the server runs in it), in kB.
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// The number of series `/metrics` holds.
async fn series(app: &TestApp) -> usize {
    app.get_text("/metrics")
        .await
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count()
}

/// `count` requests, 16 at a time, each with its own made-up method.
async fn made_up_methods(app: &TestApp, count: usize) {
    let paths = ["/healthz", "/billing/status", "/webhooks/stripe", "/nope"];
    let mut pending = futures::stream::FuturesUnordered::new();
    for i in 0..count {
        let method = format!("M{}", uuid::Uuid::new_v4().simple()).to_ascii_uppercase();
        let request = app
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(paths[i % paths.len()]),
            )
            .timeout(Duration::from_secs(30))
            .send();
        pending.push(request);
        if pending.len() >= 16 {
            let answer = futures::StreamExt::next(&mut pending).await.unwrap();
            assert!(answer.unwrap().status().is_client_error());
        }
    }
    while let Some(answer) = futures::StreamExt::next(&mut pending).await {
        assert!(answer.unwrap().status().is_client_error());
    }
}

#[actix_rt::test]
async fn made_up_methods_and_withheld_bodies_leave_memory_metrics_and_healthz_unharmed() {
    let app = spawn_app_with(|vars| {
        vars.insert("HTTP_BODY_TIMEOUT_SECS".into(), "2".into());
    })
    .await;

    // 2,000 requests with made-up methods: after a warm-up that creates every series they
    // can touch, neither the series nor the memory grow.
    made_up_methods(&app, 200).await;
    series(&app).await;
    let series_before = series(&app).await;
    let rss_before = rss_kb();
    made_up_methods(&app, 2_000).await;
    let series_after = series(&app).await;
    let rss_growth_kb = rss_kb().saturating_sub(rss_before);
    assert_eq!(series_after, series_before, "/metrics grew");
    assert!(
        rss_growth_kb < 20 * 1024,
        "RSS grew by {rss_growth_kb} kB over 2,000 requests"
    );

    // 300 connections that send a webhook's headers and withhold its body.
    let head = b"POST /webhooks/stripe HTTP/1.1\r\nHost: localhost\r\n\
        Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut stream = app.connect().await;
        stream.write_all(head).await.unwrap();
        slow.push(tokio::spawn(async move {
            parse_responses(&read_to_close(&mut stream).await)
        }));
    }
    // /healthz answers while they are open (each check bounded; at least ten of them).
    let mut checks = 0;
    while checks < 10 || !slow.iter().all(|t| t.is_finished()) {
        let health = app
            .client
            .get(app.url("/healthz"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("/healthz did not answer while slow bodies were pending");
        assert_eq!(health.status(), 200);
        checks += 1;
        assert!(
            started.elapsed() < RAW_BOUND,
            "slow-body connections still open after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for connection in slow {
        let responses = connection.await.unwrap();
        assert_eq!(responses.len(), 1, "{responses:?}");
        assert_eq!(responses[0].status, 408);
        assert_eq!(responses[0].json()["error"], "request_timeout");
    }
    eprintln!(
        "RSS growth over 2,000 made-up methods: {rss_growth_kb} kB; 300 slow bodies closed \
         after {:?}",
        started.elapsed()
    );
}
