//! Extra copies of the service as separate processes (the built binary) on the test's database
//! and fake Stripe, for scale-out, crash and shutdown tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::app::{
    admin_url, free_port, TestApp, APP_BASE_URL, JWT_SECRET, STRIPE_KEY, WEBHOOK_SECRET,
};

/// A copy of the service as its own process, killed when dropped.
pub struct Instance {
    pub base: String,
    child: Child,
    /// Where its log (stderr) goes, when started with [`Instance::start_logging`].
    log: Option<PathBuf>,
}

impl Instance {
    pub async fn start(app: &TestApp) -> Self {
        Self::start_on(app, free_port()).await
    }

    pub async fn start_on(app: &TestApp, port: u16) -> Self {
        Self::launch(app, port, &[], None, None).await
    }

    /// An instance with extra variables (`RUST_LOG` among them, to log) whose log
    /// [`Instance::log`] reads back.
    pub async fn start_logging(app: &TestApp, vars: &[(&str, &str)]) -> Self {
        let log = std::env::temp_dir().join(format!(
            "billing-portal-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        Self::launch(app, free_port(), vars, Some(log), None).await
    }

    /// Like [`Instance::start_logging`] (with `RUST_LOG=info`), without a Stripe key: the
    /// instance runs the emulator, whose test clock moves its billing clock
    /// ([`advance_billing_clock`](super::emulator::advance_billing_clock)).
    #[cfg(feature = "emulator")]
    pub async fn start_emulated_logging(app: &TestApp) -> Self {
        // An empty value counts as unset.
        let vars = [
            ("STRIPE_SECRET_KEY", ""),
            ("STRIPE_API_BASE", ""),
            ("RUST_LOG", "info"),
        ];
        Self::start_logging(app, &vars).await
    }

    /// The service as `cargo run` starts it: no Stripe key (the emulator, whose state lives in
    /// the test's database) and `APP_BASE_URL` its own origin, on `port`, so the demo's cookie
    /// and the portal's links stay on it. Started again on the same database (and port), it is
    /// a restart. Logs at `info` ([`Instance::log`]).
    #[cfg(feature = "emulator")]
    pub async fn start_emulated_on(app: &TestApp, port: u16) -> Self {
        let log = std::env::temp_dir().join(format!(
            "billing-portal-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let origin = format!("http://127.0.0.1:{port}");
        let vars = [
            ("STRIPE_SECRET_KEY", ""),
            ("STRIPE_API_BASE", ""),
            ("APP_BASE_URL", origin.as_str()),
            ("RUST_LOG", "info"),
        ];
        Self::launch(app, port, &vars, Some(log), None).await
    }

    /// Like [`Instance::start_logging`], started with this soft limit on open files.
    pub async fn start_logging_with_fd_limit(app: &TestApp, soft_limit: u64) -> Self {
        let log = std::env::temp_dir().join(format!(
            "billing-portal-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let vars = [("RUST_LOG", "info")];
        Self::launch(app, free_port(), &vars, Some(log), Some(soft_limit)).await
    }

    /// Everything the instance has logged so far.
    pub fn log(&self) -> String {
        let path = self.log.as_ref().expect("started with start_logging");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    async fn launch(
        app: &TestApp,
        port: u16,
        vars: &[(&str, &str)],
        log: Option<PathBuf>,
        soft_fd_limit: Option<u64>,
    ) -> Self {
        let stderr = match &log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        };
        let binary = env!("CARGO_BIN_EXE_billing-portal");
        let mut command = match soft_fd_limit {
            // The shell lowers its soft limit, then becomes the service.
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", r#"ulimit -Sn "$1" && exec "$0""#, binary])
                    .arg(limit.to_string());
                sh
            }
            None => Command::new(binary),
        };
        let mut child = command
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
            // As in `spawn_app`: no healing task unless the test asks for one.
            .env("STRIPE_CATCHUP_INTERVAL_SECS", "0")
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if let Ok(r) = app.client.get(format!("{base}/readyz")).send().await {
                if r.status() == 200 {
                    return Self { base, child, log };
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
        if let Some(log) = &self.log {
            let _ = std::fs::remove_file(log);
        }
    }
}
