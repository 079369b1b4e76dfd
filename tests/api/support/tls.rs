//! Stripe over TLS, as the service meets it in production: a TLS terminator
//! on loopback in front of a plain-HTTP fake (wiremock), with a certificate
//! for `localhost` signed by a certificate authority made for the test (the
//! service trusts it through `STRIPE_CA_FILE`). It counts the TCP connections
//! it accepts: what "one connection reused" is measured by. And a tiny
//! `HTTPS_PROXY`: an HTTP CONNECT proxy that records the tunnels it opens.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{copy_bidirectional, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A TLS front for a plain-HTTP fake Stripe; [`TlsStripe::front`] points it
/// at the fake and the service at it.
pub struct TlsStripe {
    /// `https://localhost:<port>`: what `STRIPE_API_BASE` is set to.
    pub base: String,
    /// The PEM of the authority that signed its certificate: `STRIPE_CA_FILE`.
    pub ca_file: PathBuf,
    pub port: u16,
    /// The fake's `host:port`, set by [`TlsStripe::front`].
    target: Arc<Mutex<String>>,
    accepted: Arc<AtomicUsize>,
    acceptor: JoinHandle<()>,
}

impl TlsStripe {
    /// In a `spawn_app_with` customisation: goes in front of the fake Stripe
    /// the variables name, and has the service call it over TLS, trusting
    /// its authority.
    pub fn front(&self, vars: &mut std::collections::HashMap<String, String>) {
        let fake = vars["STRIPE_API_BASE"].clone();
        *self.target.lock().unwrap() = fake.trim_start_matches("http://").to_string();
        vars.insert("STRIPE_API_BASE".into(), self.base.clone());
        vars.insert(
            "STRIPE_CA_FILE".into(),
            self.ca_file.to_string_lossy().into_owned(),
        );
    }

    pub async fn start() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();

        let ca_file = std::env::temp_dir().join(format!("stripe-ca-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
                )
                .unwrap();
        let tls = TlsAcceptor::from(Arc::new(config));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let target: Arc<Mutex<String>> = Arc::default();
        let acceptor = tokio::spawn({
            let (accepted, target) = (accepted.clone(), target.clone());
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (tls, target) = (tls.clone(), target.lock().unwrap().clone());
                    tokio::spawn(async move {
                        let Ok(mut inbound) = tls.accept(inbound).await else {
                            return;
                        };
                        let Ok(mut outbound) = TcpStream::connect(&target).await else {
                            return;
                        };
                        let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                    });
                }
            }
        });
        Self {
            base: format!("https://localhost:{port}"),
            ca_file,
            port,
            target,
            accepted,
            acceptor,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TlsStripe {
    fn drop(&mut self) {
        self.acceptor.abort();
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

/// An HTTP CONNECT proxy on loopback: what `HTTPS_PROXY` points at.
pub struct ConnectProxy {
    pub url: String,
    tunnels: Arc<Mutex<Vec<String>>>,
    acceptor: JoinHandle<()>,
}

impl ConnectProxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tunnels: Arc<Mutex<Vec<String>>> = Arc::default();
        let acceptor = tokio::spawn({
            let tunnels = tunnels.clone();
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    tokio::spawn(tunnel(inbound, tunnels.clone()));
                }
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            tunnels,
            acceptor,
        }
    }

    /// The `host:port` of every tunnel opened, in order.
    pub fn tunnels(&self) -> Vec<String> {
        self.tunnels.lock().unwrap().clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// Reads `CONNECT host:port HTTP/1.1` and its headers, answers 200, then
/// pipes both ways; anything else gets 405.
async fn tunnel(mut inbound: TcpStream, tunnels: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 || inbound.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        let _ = inbound
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    let target = target.to_string();
    let Ok(mut outbound) = TcpStream::connect(&target).await else {
        let _ = inbound
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    tunnels.lock().unwrap().push(target);
    if inbound
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
}
