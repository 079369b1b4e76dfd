//! A Stripe stand-in across a modelled network, for `scripts/bench --only portal_rtt`.
//!
//! The answers are `examples/fake_stripe.rs`'s (`examples/support/stripe_answers.rs`); what this
//! adds is the cost of the network between the service and Stripe, so that how the service uses
//! its connections shows in its latency. On loopback nothing costs a round trip, so each one is
//! added here as a sleep of `--rtt-ms`:
//!
//! - a new TCP connection: one round trip (SYN, SYN-ACK) before the client can send anything;
//! - with `--tls-ca-out`, the TLS 1.3 handshake: one more (ClientHello out, the server's flight
//!   back; the client's Finished travels with its first request). TLS 1.3 only, so it is one;
//!   a TLS 1.2 handshake would cost two;
//! - every HTTP request and its response: one round trip.
//!
//! So the first request on a new connection answers after 2 round trips over plain HTTP and 3
//! over TLS, and every later request on a kept-alive connection (HTTP/1.1) after 1. The sleeps
//! are per connection: concurrent connections wait side by side, as on a real network. Each
//! wakes up to ~2 ms late (tokio's 1 ms timer ticks and epoll's millisecond timeout both round
//! up), so at `--rtt-ms 40` a round trip measures ~41.5 ms: the benchmark measures that floor. The
//! kernel completes the TCP handshake on loopback at once, so the connection's round trip is
//! slept before the server reads anything; the client sees the same total, one round trip
//! before its first answer (or, over TLS, before its handshake completes).
//!
//! With `--tls-ca-out PATH` it serves HTTPS with a certificate for `127.0.0.1` and `localhost`,
//! made at start and signed by a CA also made at start, whose certificate it writes to PATH as
//! PEM: the service trusts it with `STRIPE_CA_FILE=PATH`. Without, plain HTTP.
//!
//! `--control-port` serves, over plain HTTP and with no delay, `GET /_stats` (any path does):
//! `{"connections":…,"tls_handshakes":…,"requests":…,"open":…}`, the TCP connections accepted on
//! the Stripe port since start, the TLS handshakes completed, the requests answered and the
//! connections open now. The benchmark reads it before and after a run: the difference in
//! `connections` is the number of new Stripe connections the service opened.
//!
//! ```sh
//! cargo run --release --example stripe_rtt -- --port 12112 --control-port 12113 --rtt-ms 40 \
//!     --tls-ca-out /tmp/stripe-rtt-ca.pem
//! curl --cacert /tmp/stripe-rtt-ca.pem https://127.0.0.1:12112/v1/billing_portal/sessions \
//!     -d customer=cus_1 -d return_url=https://example.com/
//! curl http://127.0.0.1:12113/_stats
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

#[path = "support/stripe_answers.rs"]
mod answers;

#[derive(Parser)]
#[command(about = "A Stripe stand-in with a modelled round-trip time (see the source's docs)")]
struct Args {
    /// Port of the Stripe API on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// The added round-trip time, in milliseconds: one for a new TCP connection, one for its
    /// TLS handshake, one for each request and its response.
    #[arg(long, default_value_t = 40)]
    rtt_ms: u64,
    /// Serve HTTPS (TLS 1.3), and write the certificate of the CA that signed the server's
    /// certificate here, as PEM (for the service's STRIPE_CA_FILE).
    #[arg(long, value_name = "PATH")]
    tls_ca_out: Option<PathBuf>,
    /// Port on 127.0.0.1 of the counters (`GET /_stats`, plain HTTP, never delayed).
    #[arg(long)]
    control_port: Option<u16>,
}

/// Counters since start, for `GET /_stats`.
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
static TLS_HANDSHAKES: AtomicU64 = AtomicU64::new(0);
static REQUESTS: AtomicU64 = AtomicU64::new(0);
static OPEN: AtomicU64 = AtomicU64::new(0);
static CUSTOMERS: AtomicU64 = AtomicU64::new(0);

/// A request head larger than this is refused (Stripe's requests here are a few hundred bytes).
const MAX_HEAD: usize = 64 * 1024;
/// The largest request body accepted.
const MAX_BODY: usize = 1024 * 1024;

fn main() -> io::Result<()> {
    let args = Args::parse();
    let rtt = Duration::from_millis(args.rtt_ms);
    let tls = match &args.tls_ca_out {
        Some(path) => Some(tls_acceptor(path)?),
        None => None,
    };
    // One thread, as fake_stripe has one worker: the benchmark shares two cores between the
    // load, Postgres, the service and this. The sleeps are timers, not threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        if let Some(port) = args.control_port {
            let control = TcpListener::bind(("127.0.0.1", port)).await?;
            tokio::spawn(serve_control(control));
            eprintln!("stripe_rtt: counters on http://127.0.0.1:{port}/_stats");
        }
        eprintln!(
            "stripe_rtt listening on {scheme}://127.0.0.1:{} (round trip {} ms{})",
            args.port,
            args.rtt_ms,
            match &args.tls_ca_out {
                Some(path) => format!(", TLS 1.3, CA certificate in {}", path.display()),
                None => String::new(),
            }
        );
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: the benchmark would see the refusals.
                Err(e) => {
                    eprintln!("stripe_rtt: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            CONNECTIONS.fetch_add(1, Ordering::Relaxed);
            // Answers go out in one write each (head and body together); no Nagle wait between.
            let _ = tcp.set_nodelay(true);
            tokio::spawn(connection(tcp, tls.clone(), rtt));
        }
    })
}

/// One accepted connection: its handshake round trips, then requests until the client closes.
async fn connection<S>(tcp: S, tls: Option<TlsAcceptor>, rtt: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    OPEN.fetch_add(1, Ordering::Relaxed);
    // The TCP handshake.
    tokio::time::sleep(rtt).await;
    let outcome = match tls {
        None => serve(tcp, rtt, Route::Stripe).await,
        Some(acceptor) => {
            // The TLS 1.3 handshake: the ClientHello waits in the socket for one round trip,
            // then the server's flight goes out; `accept` returns on the client's Finished.
            tokio::time::sleep(rtt).await;
            match acceptor.accept(tcp).await {
                Ok(stream) => {
                    TLS_HANDSHAKES.fetch_add(1, Ordering::Relaxed);
                    serve(stream, rtt, Route::Stripe).await
                }
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = outcome {
        // A client that hangs up mid-request is normal under a load generator's stop; the rest
        // (a TLS alert: the client does not trust the CA) says why a run failed.
        if !matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        ) {
            eprintln!("stripe_rtt: connection failed: {e}");
        }
    }
    OPEN.fetch_sub(1, Ordering::Relaxed);
}

async fn serve_control(listener: TcpListener) {
    loop {
        if let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let _ = serve(tcp, Duration::ZERO, Route::Control).await;
            });
        }
    }
}

#[derive(Clone, Copy)]
enum Route {
    Stripe,
    Control,
}

/// HTTP/1.1 on `stream`: each request read whole (`Content-Length` bodies, as Stripe clients
/// send form bodies), then `delay`, then its answer in one write; kept alive unless the client
/// asks to close (or speaks HTTP/1.0 without keep-alive).
async fn serve<S>(mut stream: S, delay: Duration, route: Route) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    let mut chunk = [0u8; 8 * 1024];
    loop {
        // The head.
        let head = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => break Head::of(&request, len),
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                Ok(httparse::Status::Partial) | Err(_) => {
                    return reply(&mut stream, 400, "{}", true).await;
                }
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(()); // closed between requests (or mid-head)
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = match head {
            Ok(head) => head,
            Err(status) => return reply(&mut stream, status, "{}", true).await,
        };
        // The body.
        let end = head.len + head.content_length;
        while buf.len() < end {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let (status, body) = match route {
            Route::Control => (200, stats()),
            Route::Stripe => answer(&head.method, &head.path, &buf[head.len..end]),
        };
        buf.drain(..end);
        // The request's way there and the answer's way back.
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Route::Stripe = route {
            REQUESTS.fetch_add(1, Ordering::Relaxed);
        }
        reply(&mut stream, status, &body, head.close).await?;
        if head.close {
            return Ok(());
        }
    }
}

/// What the server needs of a request head.
struct Head {
    method: String,
    path: String,
    /// Bytes of the head, up to and including the blank line.
    len: usize,
    content_length: usize,
    /// Whether the connection closes after the answer.
    close: bool,
}

impl Head {
    /// The head, or the status that refuses it.
    fn of(request: &httparse::Request<'_, '_>, len: usize) -> Result<Self, u16> {
        let mut content_length = 0;
        let http10 = request.version == Some(0);
        let mut close = http10;
        for header in request.headers.iter() {
            let value = std::str::from_utf8(header.value).map_err(|_| 400u16)?;
            if header.name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().map_err(|_| 400u16)?;
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(411); // Length Required: no chunked bodies here
            } else if header.name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case("keep-alive") && http10 {
                        close = false;
                    }
                }
            }
        }
        if content_length > MAX_BODY {
            return Err(413);
        }
        Ok(Head {
            method: request.method.unwrap_or("").to_string(),
            path: request.path.unwrap_or("").to_string(),
            len,
            content_length,
            close,
        })
    }
}

fn answer(method: &str, path: &str, body: &[u8]) -> (u16, String) {
    // async-stripe sends no query on these POSTs; anything after `?` is ignored anyway.
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("POST", "/v1/customers") => {
            let n = CUSTOMERS.fetch_add(1, Ordering::Relaxed) + 1;
            (200, answers::customer(n, body))
        }
        ("POST", "/v1/billing_portal/sessions") => (200, answers::portal_session(body)),
        _ => (404, answers::NOT_FOUND.to_string()),
    }
}

fn stats() -> String {
    format!(
        r#"{{"connections":{},"tls_handshakes":{},"requests":{},"open":{}}}"#,
        CONNECTIONS.load(Ordering::Relaxed),
        TLS_HANDSHAKES.load(Ordering::Relaxed),
        REQUESTS.load(Ordering::Relaxed),
        OPEN.load(Ordering::Relaxed),
    )
}

/// Writes one answer, head and body in a single write.
async fn reply<S>(stream: &mut S, status: u16, body: &str, close: bool) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        411 => "Length Required",
        413 => "Payload Too Large",
        _ => "Error",
    };
    let n = REQUESTS.load(Ordering::Relaxed);
    let message = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Request-Id: req_rtt_{n}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" },
    );
    stream.write_all(message.as_bytes()).await?;
    // tokio-rustls encrypts on write but sends on flush.
    stream.flush().await?;
    if close {
        stream.shutdown().await?;
    }
    Ok(())
}

/// A server certificate for 127.0.0.1 and localhost signed by a fresh CA, whose certificate is
/// written to `ca_out` as PEM; TLS 1.3 only, HTTP/1.1 by ALPN.
fn tls_acceptor(ca_out: &Path) -> io::Result<TlsAcceptor> {
    let error = |e: rcgen::Error| io::Error::other(format!("certificate: {e}"));
    let ca_key = rcgen::KeyPair::generate().map_err(error)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(error)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "stripe_rtt test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(error)?;

    let key = rcgen::KeyPair::generate().map_err(error)?;
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .map_err(error)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "stripe_rtt");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).map_err(error)?;

    std::fs::write(ca_out, pem("CERTIFICATE", ca.der()))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(io::Error::other)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// RFC 7468 text encoding (what `--cacert` and STRIPE_CA_FILE read).
fn pem(label: &str, der: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    //! On a paused clock (tokio's test-util): time moves only when every task waits on a timer,
    //! so the elapsed time is exactly the round trips the stand-in slept, whatever the machine.

    use super::*;
    use tokio::io::DuplexStream;
    use tokio::time::Instant;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    use tokio_rustls::TlsConnector;

    const RTT: Duration = Duration::from_millis(40);

    fn paused_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime")
    }

    /// A client's end of a new in-memory connection, the stand-in serving the other end.
    fn connect(tls: Option<TlsAcceptor>) -> DuplexStream {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(connection(server, tls, RTT));
        client
    }

    /// Sends one portal-session POST and reads its answer; returns its status and body.
    async fn portal_session<S: AsyncRead + AsyncWrite + Unpin>(
        stream: &mut S,
        customer: &str,
    ) -> (u16, String) {
        let body = format!("customer={customer}&return_url=https%3A%2F%2Fexample.com%2F");
        let request = format!(
            "POST /v1/billing_portal/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("sent");
        stream.flush().await.expect("flushed");
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed before a whole answer: {answer:?}");
            answer.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = response.parse(&answer).expect("HTTP") {
                let length: usize = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                    .expect("Content-Length");
                if answer.len() >= len + length {
                    let body = String::from_utf8(answer[len..len + length].to_vec()).unwrap();
                    return (response.code.expect("status"), body);
                }
            }
        }
    }

    #[test]
    fn over_http_a_new_connection_answers_after_two_round_trips_and_a_kept_alive_one_after_one() {
        paused_runtime().block_on(async {
            let started = Instant::now();
            let mut client = connect(None);
            let (status, body) = portal_session(&mut client, "cus_1").await;
            assert_eq!(status, 200);
            assert!(body.contains(r#""customer":"cus_1""#), "{body}");
            assert_eq!(started.elapsed(), 2 * RTT);

            let again = Instant::now();
            let (status, body) = portal_session(&mut client, "cus_2").await;
            assert_eq!(status, 200);
            assert!(body.contains(r#""customer":"cus_2""#), "{body}");
            assert_eq!(again.elapsed(), RTT);
        });
    }

    #[test]
    fn over_tls_a_new_connection_costs_one_round_trip_more_for_a_client_that_trusts_the_written_ca()
    {
        let dir = std::env::temp_dir().join(format!("stripe_rtt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.pem");
        let acceptor = tls_acceptor(&ca_file).expect("a certificate");
        // What a service given STRIPE_CA_FILE does: parse the PEM, trust it, verify the server
        // as 127.0.0.1 (the certificate's IP address SAN), with rustls and ring.
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&ca_file).expect("a PEM certificate"))
            .expect("a CA certificate");
        std::fs::remove_dir_all(&dir).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = TlsConnector::from(Arc::new(config));
        let server_name = ServerName::try_from("127.0.0.1").unwrap();

        paused_runtime().block_on(async {
            let started = Instant::now();
            let mut client = connector
                .connect(server_name, connect(Some(acceptor)))
                .await
                .expect("the handshake: the client trusts the written CA");
            let version = client.get_ref().1.protocol_version();
            assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_3));
            let (status, _) = portal_session(&mut client, "cus_1").await;
            assert_eq!(status, 200);
            assert_eq!(started.elapsed(), 3 * RTT);

            let again = Instant::now();
            let (status, _) = portal_session(&mut client, "cus_2").await;
            assert_eq!(status, 200);
            assert_eq!(again.elapsed(), RTT);
        });
    }
}
