//! Extra copies of the service as separate processes (the built binary) on the test's database
//! and fake Stripe, for scale-out, crash and shutdown tests.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::app::{
    admin_url, free_port, TestApp, APP_BASE_URL, JWT_SECRET, STRIPE_KEY, WEBHOOK_SECRET,
};

/// A copy of the service as its own process, killed when dropped.
pub struct Instance {
    pub base: String,
    child: Child,
}

impl Instance {
    pub async fn start(app: &TestApp) -> Self {
        Self::start_on(app, free_port()).await
    }

    pub async fn start_on(app: &TestApp, port: u16) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_billing-portal"))
            .env("APP_ENV", "test")
            .env("DATABASE_URL", format!("{}/{}", admin_url(), app.db_name))
            .env("DATABASE_POOL_SIZE", "8")
            .env("PORT", port.to_string())
            .env("APP_BASE_URL", APP_BASE_URL)
            .env("STRIPE_SECRET_KEY", STRIPE_KEY)
            .env("STRIPE_API_BASE", app.stripe.uri())
            .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("AUTH_JWT_SECRET", JWT_SECRET)
            .env("RUST_LOG", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if let Ok(r) = app.client.get(format!("{base}/readyz")).send().await {
                if r.status() == 200 {
                    return Self { base, child };
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("instance on {port} did not become ready");
    }
}

impl Instance {
    /// SIGTERM: the graceful shutdown path.
    pub fn terminate(&self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    /// The exit status, once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// SIGKILL: no graceful shutdown, in-flight requests just die.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}
