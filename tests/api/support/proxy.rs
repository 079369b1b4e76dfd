//! A TCP proxy on loopback between the service and Postgres that a test can
//! cut (every open connection dropped, new ones refused) and restore, or
//! freeze (bytes accepted and held, nothing forwarded, nothing closed: what a
//! client sees of a SIGSTOPped server, whose kernel still acknowledges) and
//! thaw (the held bytes go on).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct TcpProxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    frozen: watch::Sender<bool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let frozen = watch::Sender::new(false);
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let acceptor = tokio::spawn({
            let (up, links, frozen) = (up.clone(), links.clone(), frozen.clone());
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let link = tokio::spawn(link(inbound, target, frozen.subscribe()));
                    links.lock().unwrap().push(link);
                }
            }
        });
        Self {
            port,
            up,
            frozen,
            links,
            acceptor,
        }
    }

    /// Postgres "goes away": open connections drop, new ones are refused.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Postgres stops answering but stays connected: whatever the service
    /// sends is accepted and held, new connections are accepted and get no
    /// answer, nothing is closed.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Everything held goes on to Postgres, and its answers come back.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.acceptor.abort();
    }
}

/// One proxied connection: Postgres is connected to only once thawed, like a
/// listen backlog, and each direction is pumped separately.
async fn link(inbound: TcpStream, target: &'static str, mut frozen: watch::Receiver<bool>) {
    thawed(&mut frozen).await;
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let ((from_client, to_client), (from_server, to_server)) =
        (inbound.into_split(), outbound.into_split());
    tokio::join!(
        pump(from_client, to_server, frozen.clone()),
        pump(from_server, to_client, frozen),
    );
}

/// Copies `from` to `to`, holding whatever was read while frozen until thawed.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        thawed(&mut frozen).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // A read that finished just as the proxy froze is held too.
        thawed(&mut frozen).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

async fn thawed(frozen: &mut watch::Receiver<bool>) {
    // Err only when the proxy is gone, and then its links are aborted anyway.
    let _ = frozen.wait_for(|frozen| !frozen).await;
}

/// Points the service's `DATABASE_URL` through `proxy`, with a short connect
/// timeout so a cut is noticed within a second.
pub fn route_database_through(
    vars: &mut std::collections::HashMap<String, String>,
    proxy: &TcpProxy,
) {
    let db = vars["DATABASE_URL"].replace(":5432/", &format!(":{}/", proxy.port));
    vars.insert("DATABASE_URL".into(), db);
    vars.insert("DATABASE_CONNECT_TIMEOUT_SECS".into(), "1".into());
}
