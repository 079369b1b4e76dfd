//! Postgres: creating the database when missing, embedded migrations, the r2d2
//! pools behind first-come-first-served admission gates, and [`run`], the one
//! way handlers reach a connection (on actix's blocking thread pool, never on
//! an async worker), within a deadline even when Postgres stops answering.
//!
//! Reads `DATABASE_URL`, `DATABASE_POOL_SIZE`, `DATABASE_LOCK_POOL_SIZE`,
//! `DATABASE_CONNECT_TIMEOUT_SECS` and `DATABASE_STATEMENT_TIMEOUT_MS`. Query
//! functions live in the submodules; they take `&mut PgConnection` and return
//! `QueryResult<T>`.

pub mod accounts;
pub mod catalogue;
pub mod entitlements;
pub mod events;
pub mod schema;
pub mod subscriptions;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web;
use anyhow::Context;
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::pg::PgConnection;
use diesel::r2d2::{CustomizeConnection, ManageConnection, Pool, PooledConnection, R2D2Connection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use secrecy::ExposeSecret;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::DatabaseSettings;

pub(crate) type PgPooled = PooledConnection<PgManager>;

/// The r2d2 pool plus a fair queue in front of it. Requests take a permit
/// (one per pooled connection) before they go to the blocking thread pool, so
/// when more requests want a connection than the pool holds they wait in
/// arrival order on the async side. Without the gate they would wait inside
/// r2d2, where a thread returning a connection can take it straight back
/// ahead of the waiters: under 64 connections' load that starved a few
/// requests for hundreds of milliseconds (`scripts/bench`, status p99), and
/// each waiter also held a blocking thread.
///
/// Every piece of work on a connection is also bounded on the async side: see
/// [`PgPool::finish_by`].
#[derive(Clone)]
pub struct PgPool {
    pool: Pool<PgManager>,
    gate: Arc<Semaphore>,
    /// What [`PgPool::connect_apart`] connects to (the pool's own URL, which
    /// may hold a password: never logged).
    url: Arc<str>,
    /// `DATABASE_CONNECT_TIMEOUT_SECS`: the longest wait for a connection.
    wait: Duration,
    /// `DATABASE_STATEMENT_TIMEOUT_MS`: what Postgres allows a statement.
    statement_timeout: Duration,
}

impl std::ops::Deref for PgPool {
    type Target = Pool<PgManager>;
    fn deref(&self) -> &Pool<PgManager> {
        &self.pool
    }
}

/// A place in the pool, held while a connection is in use.
struct Admission {
    _permit: OwnedSemaphorePermit,
    deadline: Instant,
}

impl PgPool {
    /// Waits for a place, in arrival order, until the connect timeout.
    async fn admit(&self) -> Result<Admission, DbError> {
        let deadline = Instant::now() + self.wait;
        let permit = tokio::time::timeout(self.wait, self.gate.clone().acquire_owned())
            .await
            .map_err(|_| {
                DbError::Unavailable(format!(
                    "all {} pooled connections stayed busy for {:?}",
                    self.pool.max_size(),
                    self.wait
                ))
            })?
            .map_err(|_| DbError::Unavailable("the pool is closed".into()))?;
        Ok(Admission {
            _permit: permit,
            deadline,
        })
    }

    /// A connection for an admitted request, within what is left of its
    /// wait (connections being re-established after a restart take time).
    fn checkout(&self, admission: &Admission) -> Result<PgPooled, DbError> {
        let left = admission.deadline.saturating_duration_since(Instant::now());
        self.pool
            .get_timeout(left.max(Duration::from_millis(1)))
            .map_err(|e| DbError::Unavailable(e.to_string()))
    }

    /// When work that began now must be given up: the connect timeout plus
    /// the statement timeout, the most a request may wait for the database.
    fn step_deadline(&self) -> Instant {
        Instant::now() + self.wait + self.statement_timeout
    }

    /// Runs blocking database work on the blocking thread pool and waits for
    /// it until `deadline`, then answers [`DbError::Unavailable`] whether or
    /// not Postgres ever answers. Postgres's `statement_timeout` cannot do
    /// that alone: a server that is stopped (SIGSTOP, a hung host) or cut off
    /// never sends the cancellation, and libpq waits on the socket for as
    /// long as the kernel keeps it (forever, while the peer's kernel still
    /// acknowledges).
    ///
    /// Work given up on keeps its blocking thread, its connection and its
    /// place in the pool (they travel with it), so the gate admits no more
    /// than the pool holds and at most that many threads are ever stuck.
    /// When Postgres answers again the work finishes, its result is dropped
    /// and the connection goes back to the pool (discarded if a transaction
    /// was left open, which Postgres then rolls back). A webhook answered 503
    /// this way may still commit; Stripe's redelivery is then a duplicate,
    /// answered 200. On a network partition, `tcp_user_timeout` and the
    /// keepalives in the connection string (see [`with_client_timeouts`])
    /// make the kernel give up on the socket; libpq then fails, and the
    /// connection is discarded as lost.
    async fn finish_by<T: Send + 'static>(
        &self,
        deadline: Instant,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, DbError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, web::block(work)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(DbError::Unavailable(format!("blocking pool failed: {e}"))),
            Err(_) => Err(DbError::Unavailable(format!(
                "Postgres did not answer within {:?} (connect timeout {:?} + statement timeout {:?})",
                left, self.wait, self.statement_timeout
            ))),
        }
    }

    /// A connection of its own, outside the pool and its gate, with the
    /// pool's session settings: for a session-level lock held for minutes
    /// (the healing task's), which must not take a place work needs.
    pub(crate) async fn connect_apart(&self) -> Result<PgConnection, DbError> {
        let (url, timeout) = (self.url.clone(), self.statement_timeout);
        let deadline = Instant::now() + self.wait + self.wait;
        self.finish_by(deadline, move || {
            let mut conn = PgConnection::establish(&url)
                .map_err(|e| DbError::Unavailable(format!("cannot connect to Postgres: {e}")))?;
            diesel::sql_query(format!("SET statement_timeout = {}", timeout.as_millis()))
                .execute(&mut conn)
                .map_err(|e| DbError::Unavailable(format!("cannot set up a connection: {e}")))?;
            Ok(conn)
        })
        .await?
    }

    /// Runs blocking work on a connection of its own ([`PgPool::connect_apart`]),
    /// bounded like a pooled step.
    pub(crate) async fn run_apart<T, F>(
        &self,
        mut conn: PgConnection,
        f: F,
    ) -> Result<(PgConnection, T), DbError>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, DieselError> + Send + 'static,
        T: Send + 'static,
    {
        let (conn, result) = self
            .finish_by(self.step_deadline(), move || {
                let result = f(&mut conn);
                (conn, result)
            })
            .await?;
        Ok((conn, result?))
    }

    /// Runs `f` on a pooled connection and hands back the connection with
    /// its result. A connection that died while idle (a database restart, a
    /// network cut) fails its first statement at once and is discarded; then
    /// `f` runs again on the next one, at most once per pooled connection
    /// plus one fresh. Blocking: call on the blocking thread pool.
    fn on_live_connection<T>(
        &self,
        admission: &Admission,
        f: impl Fn(&mut PgConnection) -> Result<T, DieselError>,
    ) -> Result<(PgPooled, T), DbError> {
        let mut attempts_left = self.max_size() + 1;
        loop {
            attempts_left -= 1;
            let mut conn = self.checkout(admission)?;
            match conn.run(&f) {
                Ok(value) => return Ok((conn, value)),
                Err(_) if conn.lost && attempts_left > 0 => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A pooled connection that remembers losing its server. Diesel's own
/// `is_broken` only sees transaction state, so without this the pool would
/// have to ping on every checkout (a round trip per request) to keep dead
/// connections out after a database restart.
pub struct PgConn {
    conn: PgConnection,
    lost: bool,
}

impl std::ops::Deref for PgConn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl PgConn {
    /// Runs `f`, marking the connection lost when the error says the server
    /// is gone, so the pool closes it instead of handing it out again.
    fn run<T>(
        &mut self,
        f: impl FnOnce(&mut PgConnection) -> Result<T, DieselError>,
    ) -> Result<T, DieselError> {
        let result = f(&mut self.conn);
        if let Err(DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        )) = &result
        {
            self.lost = true;
        }
        result
    }
}

pub struct PgManager {
    url: String,
}

impl ManageConnection for PgManager {
    type Connection = PgConn;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<PgConn, Self::Error> {
        PgConnection::establish(&self.url)
            .map(|conn| PgConn { conn, lost: false })
            .map_err(diesel::r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), Self::Error> {
        conn.conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.lost || std::thread::panicking() || conn.conn.is_broken()
    }
}

pub(crate) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// A database failure as handlers see it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had in time: Postgres down or the pool saturated.
    #[error("no database connection available: {0}")]
    Unavailable(String),
    #[error("database query failed: {0}")]
    Query(#[from] DieselError),
}

impl DbError {
    /// Whether the database is out of reach (down, saturated, timing out)
    /// rather than the query being wrong: worth a retry shortly.
    pub(crate) fn is_unavailable(&self) -> bool {
        match self {
            DbError::Unavailable(_) => true,
            DbError::Query(DieselError::DatabaseError(kind, info)) => {
                matches!(
                    kind,
                    DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand
                ) || info.message().contains("statement timeout")
                    || info.message().contains("lock timeout")
            }
            DbError::Query(DieselError::BrokenTransactionManager) => true,
            DbError::Query(_) => false,
        }
    }
}

/// Runs `f` with a pooled connection on the blocking thread pool, again on
/// the next connection when the first one turns out dead (see
/// `PgPool::on_live_connection`). That is safe because everything run here
/// may be repeated: webhook effects are deduplicated by the event id in the
/// same transaction, and the rest are reads and idempotent upserts.
///
/// Answers within the connect timeout plus the statement timeout, even when
/// Postgres stops answering (see `PgPool::finish_by`).
pub async fn run<T, F>(pool: &PgPool, f: F) -> Result<T, DbError>
where
    F: Fn(&mut PgConnection) -> Result<T, DieselError> + Send + 'static,
    T: Send + 'static,
{
    let admission = pool.admit().await?;
    let deadline = admission.deadline + pool.statement_timeout;
    let on = pool.clone();
    pool.finish_by(deadline, move || {
        on.on_live_connection(&admission, &f)
            .map(|(_conn, value)| value)
    })
    .await?
}

/// Runs `f` in one transaction on a pooled connection (blocking thread pool).
pub async fn transaction<T, F>(pool: &PgPool, f: F) -> Result<T, DbError>
where
    F: Fn(&mut PgConnection) -> Result<T, DieselError> + Send + 'static,
    T: Send + 'static,
{
    run(pool, move |conn| conn.transaction(&f)).await
}

/// A transaction that stays open across `.await`s, for work that must hold a
/// lock while calling Stripe (on the lock pool, see `context::build`). The
/// connection moves between the async task and the blocking pool; it never
/// blocks an async worker. Each step is bounded like [`run`].
///
/// Dropped without [`OpenTransaction::commit`] (an error, a cancelled request,
/// a step given up on), the connection goes back to the pool with its
/// transaction open, r2d2 sees it as broken and closes it, and Postgres rolls
/// the transaction back, releasing its locks.
pub(crate) struct OpenTransaction {
    pool: PgPool,
    /// `None` while a step has it, and for good once a step was given up on.
    held: Option<Held>,
}

/// A connection with its place in the pool: they travel together, so the
/// place is given back only once the connection is back in the pool.
struct Held {
    conn: PgPooled,
    // Declared after `conn`, so dropped after it.
    _admission: Admission,
}

impl OpenTransaction {
    pub(crate) async fn begin(pool: &PgPool) -> Result<Self, DbError> {
        Self::begin_with(pool, |_| Ok(())).await.map(|(tx, ())| tx)
    }

    /// Begins, then runs `f` inside the new transaction, in one trip to the
    /// blocking thread pool.
    pub(crate) async fn begin_with<T, F>(pool: &PgPool, f: F) -> Result<(Self, T), DbError>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, DieselError> + Send + 'static,
        T: Send + 'static,
    {
        let admission = pool.admit().await?;
        let deadline = admission.deadline + pool.statement_timeout;
        let on = pool.clone();
        let (held, result) = pool
            .finish_by(deadline, move || {
                // Lost while idle, nothing began: the next connection is tried.
                let (mut conn, ()) =
                    on.on_live_connection(&admission, AnsiTransactionManager::begin_transaction)?;
                let result = conn.run(f);
                let held = Held {
                    conn,
                    _admission: admission,
                };
                Ok::<_, DbError>((held, result))
            })
            .await??;
        // On an error the transaction is dropped here, rolled back.
        let tx = Self {
            pool: pool.clone(),
            held: Some(held),
        };
        Ok((tx, result?))
    }

    /// Runs `f` inside the open transaction.
    pub async fn run<T, F>(&mut self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, DieselError> + Send + 'static,
        T: Send + 'static,
    {
        let deadline = self.pool.step_deadline();
        self.step(deadline, f).await
    }

    /// Runs `f`, which waits for a lock, with `wait` instead of the pool's
    /// statement timeout (then the pool's again for the rest of the
    /// transaction): the lock's holder may be waiting on Stripe.
    pub async fn run_waiting<T, F>(&mut self, wait: Duration, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, DieselError> + Send + 'static,
        T: Send + 'static,
    {
        let deadline = Instant::now() + wait + self.pool.wait;
        let (waiting, usual) = (wait.as_millis(), self.pool.statement_timeout.as_millis());
        self.step(deadline, move |conn| {
            let set = |conn: &mut PgConnection, ms: u128| {
                diesel::sql_query(format!("SET LOCAL statement_timeout = {ms}"))
                    .execute(conn)
                    .map(|_| ())
            };
            set(conn, waiting)?;
            let value = f(conn)?;
            set(conn, usual)?;
            Ok(value)
        })
        .await
    }

    async fn step<T, F>(&mut self, deadline: Instant, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, DieselError> + Send + 'static,
        T: Send + 'static,
    {
        let mut held = self
            .held
            .take()
            .ok_or_else(|| DbError::Unavailable("transaction already finished".into()))?;
        let (held, result) = self
            .pool
            .finish_by(deadline, move || {
                let result = held.conn.run(f);
                (held, result)
            })
            .await?;
        self.held = Some(held);
        Ok(result?)
    }

    pub(crate) async fn commit(self) -> Result<(), DbError> {
        self.commit_with(|_| Ok(())).await
    }

    /// Runs `f`, then commits, in one trip to the blocking thread pool.
    pub(crate) async fn commit_with<T, F>(mut self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, DieselError> + Send + 'static,
        T: Send + 'static,
    {
        self.run(move |conn| {
            let value = f(conn)?;
            AnsiTransactionManager::commit_transaction(conn)?;
            Ok(value)
        })
        .await
    }

    pub(crate) async fn rollback(mut self) -> Result<(), DbError> {
        self.run(AnsiTransactionManager::rollback_transaction).await
    }
}

/// Sets the per-connection statement timeout, so a stuck query answers an
/// error instead of holding a pooled connection forever.
#[derive(Debug)]
struct SessionSettings {
    statement_timeout: Duration,
}

impl CustomizeConnection<PgConn, diesel::r2d2::Error> for SessionSettings {
    fn on_acquire(&self, conn: &mut PgConn) -> Result<(), diesel::r2d2::Error> {
        diesel::sql_query(format!(
            "SET statement_timeout = {}",
            self.statement_timeout.as_millis()
        ))
        .execute(&mut conn.conn)
        .map(|_| ())
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// `DATABASE_URL` with the client-side timeouts, every connection opens with.
/// First, initialises the OpenSSL that libpq uses for TLS to Postgres before libpq
/// does, so that OpenSSL registers no `atexit` clean-up. Without this, a process
/// that exits while an r2d2 thread is still opening a TLS connection (to keep
/// `min_idle`) crashed with SIGSEGV in libcrypto after its work was done: one
/// `prune` in 15 here, and the test binary at exit. `openssl_sys::init` asks
/// for `OPENSSL_INIT_NO_ATEXIT` (rust-openssl does this for the same reason);
/// the first initialisation decides, and the OS reclaims the memory anyway.
/// Done here because every connection (pooled or not) is opened with this URL.
fn connection_url(settings: &DatabaseSettings) -> String {
    openssl_sys::init();
    with_client_timeouts(
        settings.url.expose_secret(),
        settings.connect_timeout,
        settings.statement_timeout,
    )
}

/// Where the status cache's listener connects (`STATUS_CACHE_LISTEN_URL`,
/// else `DATABASE_URL`), with the same client timeouts as every connection:
/// a silent server breaks its heartbeat within them.
pub fn listen_url(settings: &DatabaseSettings) -> String {
    openssl_sys::init();
    with_client_timeouts(
        settings
            .listen_url
            .as_ref()
            .unwrap_or(&settings.url)
            .expose_secret(),
        settings.connect_timeout,
        settings.statement_timeout,
    )
}

/// The main pool: `DATABASE_POOL_SIZE` connections for every request.
pub fn build_pool(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    pool_of(settings, settings.pool_size, settings.pool_size.min(2))
}

/// The lock pool: `DATABASE_LOCK_POOL_SIZE` connections, opened when needed,
/// for work that holds a lock while it waits on Stripe (creating a user's
/// customer, re-reading a subscription). However slow Stripe is, at most
/// these are held, and the main pool never waits for Stripe.
pub fn build_lock_pool(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    pool_of(settings, settings.lock_pool_size, 0)
}

/// A pool of `size` connections, opened when needed, for a component with
/// work of its own on this database (the emulator's store).
#[cfg(feature = "emulator")]
pub(crate) fn build_small_pool(settings: &DatabaseSettings, size: u32) -> anyhow::Result<PgPool> {
    pool_of(settings, size, 0)
}

fn pool_of(settings: &DatabaseSettings, size: u32, min_idle: u32) -> anyhow::Result<PgPool> {
    let manager_url = connection_url(settings);
    let manager = PgManager {
        url: manager_url.clone(),
    };
    let pool = Pool::builder()
        .max_size(size)
        // PgConn notices lost connections itself: no ping per checkout.
        .test_on_check_out(false)
        .min_idle(Some(min_idle))
        .connection_timeout(settings.connect_timeout)
        .connection_customizer(Box::new(SessionSettings {
            statement_timeout: settings.statement_timeout,
        }))
        .build(manager)
        .with_context(|| {
            format!(
                "cannot open a connection pool to Postgres at {}",
                settings.display_target()
            )
        })?;
    Ok(PgPool {
        url: Arc::from(manager_url.as_str()),
        gate: Arc::new(Semaphore::new(size as usize)),
        wait: settings.connect_timeout,
        statement_timeout: settings.statement_timeout,
        pool,
    })
}

/// Connects to `DATABASE_URL`, creating the database first when the server
/// says it does not exist, then applies pending migrations. Blocking.
pub fn prepare_database(settings: &DatabaseSettings) -> anyhow::Result<()> {
    let mut conn = connect_creating_if_missing(settings)?;
    run_migrations(&mut conn)
}

/// One plain connection, for the command-line tools.
pub fn connect(settings: &DatabaseSettings) -> anyhow::Result<PgConnection> {
    let url = connection_url(settings);
    PgConnection::establish(&url).with_context(|| {
        format!(
            "cannot connect to Postgres at {}",
            settings.display_target()
        )
    })
}

pub fn run_migrations(conn: &mut PgConnection) -> anyhow::Result<()> {
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("Failed to run migrations")?;
    for migration in applied {
        log::info!("applied migration {migration}");
    }
    Ok(())
}

/// One plain connection, creating the database first when the server says it
/// does not exist (another instance may be creating it at the same time).
pub(crate) fn connect_creating_if_missing(
    settings: &DatabaseSettings,
) -> anyhow::Result<PgConnection> {
    let url = connection_url(settings);
    let target = settings.display_target();
    match PgConnection::establish(&url) {
        Ok(conn) => Ok(conn),
        Err(err) if err.to_string().contains("does not exist") => {
            let mut parsed = url::Url::parse(&url).context("DATABASE_URL is not a URL")?;
            let name = parsed.path().trim_start_matches('/').to_string();
            anyhow::ensure!(!name.is_empty(), "DATABASE_URL names no database");
            parsed.set_path("/postgres");
            let mut admin = PgConnection::establish(parsed.as_str()).with_context(|| {
                format!("cannot reach Postgres at {target} to create the database")
            })?;
            diesel::sql_query(format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")))
                .execute(&mut admin)
                .or_else(|e| match e {
                    // Another instance created it first.
                    DieselError::DatabaseError(DatabaseErrorKind::Unknown, ref info)
                        if info.message().contains("already exists") =>
                    {
                        Ok(0)
                    }
                    other => Err(other),
                })
                .with_context(|| format!("cannot create database {name}"))?;
            log::info!("created database {name}");
            PgConnection::establish(&url)
                .with_context(|| format!("cannot connect to Postgres at {target}"))
        }
        Err(err) => Err(anyhow::anyhow!(
            "cannot connect to Postgres at {target}: {}",
            err.to_string().trim()
        )),
    }
}

/// The libpq options that bound how long a connection waits on a server that
/// stopped answering, each added unless `DATABASE_URL` sets it already:
///
/// - `connect_timeout`: libpq waits for the OS's TCP timeout by default, so
///   an unreachable server would be reported minutes later;
/// - `tcp_user_timeout` (milliseconds): data sent and not acknowledged for
///   longer than a request may wait (connect + statement timeout) means a
///   network partition, and the kernel closes the socket;
/// - keepalives: a connection idle that long, sent nothing and waiting for an
///   answer, is probed every second, and closed after three unanswered probes.
///
/// Closed, the socket fails libpq's wait, and the thread and connection are
/// freed. None of this notices a server whose kernel still acknowledges (a
/// stopped process, a hung host): [`run`]'s deadline answers for those.
fn with_client_timeouts(url: &str, connect: Duration, statement: Duration) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_string();
    };
    let request_wait = connect + statement;
    let options = [
        ("connect_timeout", connect.as_secs().max(1).to_string()),
        ("tcp_user_timeout", request_wait.as_millis().to_string()),
        ("keepalives", "1".to_string()),
        ("keepalives_idle", request_wait.as_secs().max(1).to_string()),
        ("keepalives_interval", "1".to_string()),
        ("keepalives_count", "3".to_string()),
    ];
    let present: Vec<String> = parsed.query_pairs().map(|(k, _)| k.into_owned()).collect();
    for (key, value) in options {
        if !present.iter().any(|k| k == key) {
            parsed.query_pairs_mut().append_pair(key, &value);
        }
    }
    parsed.into()
}

/// Readiness: can a pooled connection run a query right now?
pub async fn ping(pool: &PgPool) -> Result<(), DbError> {
    run(pool, |conn| {
        diesel::sql_query("SELECT 1").execute(conn).map(|_| ())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options_of(url: &str) -> Vec<(String, String)> {
        url::Url::parse(url)
            .unwrap()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn connections_give_up_on_a_silent_server_within_the_database_timeouts() {
        let url = with_client_timeouts(
            "postgres://u:p@db:5432/billing",
            Duration::from_secs(2),
            Duration::from_millis(1500),
        );

        let options = options_of(&url);
        for (key, value) in [
            ("connect_timeout", "2"),
            ("tcp_user_timeout", "3500"),
            ("keepalives", "1"),
            ("keepalives_idle", "3"),
            ("keepalives_interval", "1"),
            ("keepalives_count", "3"),
        ] {
            assert!(
                options.contains(&(key.into(), value.into())),
                "{key} in {url}"
            );
        }
        assert!(url.starts_with("postgres://u:p@db:5432/billing?"), "{url}");
    }

    #[test]
    fn options_the_database_url_sets_itself_are_kept() {
        let url = with_client_timeouts(
            "postgres://db/billing?sslmode=require&connect_timeout=9&keepalives=0",
            Duration::from_secs(2),
            Duration::from_secs(5),
        );

        let options = options_of(&url);
        assert!(options.contains(&("sslmode".into(), "require".into())));
        assert!(options.contains(&("connect_timeout".into(), "9".into())));
        assert!(options.contains(&("keepalives".into(), "0".into())));
        assert_eq!(
            options
                .iter()
                .filter(|(k, _)| k == "connect_timeout")
                .count(),
            1
        );
        assert!(options.contains(&("tcp_user_timeout".into(), "7000".into())));
    }

    #[test]
    fn a_database_url_that_is_no_url_is_left_to_libpq() {
        let dsn = "host=db dbname=billing";
        assert_eq!(
            with_client_timeouts(dsn, Duration::from_secs(1), Duration::from_secs(1)),
            dsn
        );
    }
}
