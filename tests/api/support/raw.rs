//! Raw HTTP/1 over TCP, for what a well-behaved client never sends: withheld or trickled
//! bodies, malformed or oversized heads, pipelined requests. Every read is bounded.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::app::TestApp;

/// The outer bound on any raw exchange: far beyond every timeout the tests configure.
pub const RAW_BOUND: Duration = Duration::from_secs(30);

/// One response as read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, after checking it is announced as JSON of exactly its length.
    pub fn json(&self) -> serde_json::Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        assert_eq!(
            self.header("content-length"),
            Some(self.body.len().to_string().as_str()),
            "{self:?}"
        );
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

impl TestApp {
    /// A new connection to the service.
    pub async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.address.trim_start_matches("http://"))
            .await
            .unwrap()
    }
}

/// Reads until the peer closes the connection; panics past [`RAW_BOUND`].
pub async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(RAW_BOUND, stream.read_to_end(&mut received))
        .await
        .expect("the service did not close the connection")
        .ok();
    received
}

/// Reads one whole response (it must carry a `content-length`), leaving the connection open.
pub async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut received = Vec::new();
    let read = async {
        loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
                let length: usize = head
                    .split("\r\n")
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .expect("a content-length");
                if received.len() >= end + 4 + length {
                    return;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before a whole response");
            received.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(RAW_BOUND, read)
        .await
        .expect("no whole response");
    parse_responses(&received).remove(0)
}

/// Sends `bytes` on a new connection and reads every response until the service closes it.
pub async fn exchange(app: &TestApp, bytes: &[u8]) -> Vec<RawResponse> {
    let mut stream = app.connect().await;
    stream.write_all(bytes).await.unwrap();
    parse_responses(&read_to_close(&mut stream).await)
}

/// Splits what was read into responses (each with a `content-length`, or the last one).
pub fn parse_responses(mut wire: &[u8]) -> Vec<RawResponse> {
    let mut responses = Vec::new();
    while !wire.is_empty() {
        let end = wire
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(wire)));
        let head = String::from_utf8_lossy(&wire[..end]).to_string();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {head:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let rest = &wire[end + 4..];
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(rest.len(), |(_, v)| {
                v.parse::<usize>().unwrap().min(rest.len())
            });
        responses.push(RawResponse {
            status,
            headers,
            body: rest[..length].to_vec(),
        });
        wire = &rest[length..];
    }
    responses
}
