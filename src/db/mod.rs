//! Postgres: creating the database when missing, embedded migrations, the r2d2
//! pool behind a first-come-first-served admission gate, and [`run`], the one
//! way handlers reach a connection (on actix's blocking thread pool, never on
//! an async worker).
//!
//! Reads `DATABASE_URL`, `DATABASE_POOL_SIZE`, `DATABASE_CONNECT_TIMEOUT_SECS`
//! and `DATABASE_STATEMENT_TIMEOUT_MS`. Query functions live in the submodules;
//! they take `&mut PgConnection` and return `QueryResult<T>`.

pub mod events;
pub mod schema;
pub mod subscriptions;
pub mod users;

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
#[derive(Clone)]
pub struct PgPool {
    pool: Pool<PgManager>,
    gate: Arc<Semaphore>,
    wait: Duration,
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
pub async fn run<T, F>(pool: &PgPool, f: F) -> Result<T, DbError>
where
    F: Fn(&mut PgConnection) -> Result<T, DieselError> + Send + 'static,
    T: Send + 'static,
{
    let admission = pool.admit().await?;
    let pool = pool.clone();
    web::block(move || {
        pool.on_live_connection(&admission, &f)
            .map(|(_conn, value)| value)
    })
    .await
    .map_err(|e| DbError::Unavailable(format!("blocking pool failed: {e}")))?
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
/// row lock while calling Stripe. The connection moves between the async task
/// and the blocking pool; it never blocks an async worker.
///
/// Dropped without [`OpenTransaction::commit`] (an error, a cancelled request),
/// the connection goes back to the pool with its transaction open, r2d2 sees
/// it as broken and closes it, and Postgres rolls the transaction back.
pub(crate) struct OpenTransaction {
    conn: Option<PgPooled>,
    // Declared after `conn`, so dropped after it: the place is given back
    // only once the connection is back in the pool. (If the request is
    // cancelled while `run` has the connection on the blocking pool, the
    // place goes back a little early; r2d2's own wait covers that overlap.)
    _admission: Admission,
}

impl OpenTransaction {
    pub(crate) async fn begin(pool: &PgPool) -> Result<Self, DbError> {
        let admission = pool.admit().await?;
        let pool = pool.clone();
        let (conn, admission) = web::block(move || {
            // Lost while idle, nothing began: the next connection is tried.
            pool.on_live_connection(&admission, AnsiTransactionManager::begin_transaction)
                .map(|(conn, ())| (conn, admission))
        })
        .await
        .map_err(|e| DbError::Unavailable(format!("blocking pool failed: {e}")))??;
        Ok(Self {
            conn: Some(conn),
            _admission: admission,
        })
    }

    /// Runs `f` inside the open transaction.
    pub async fn run<T, F>(&mut self, f: F) -> Result<T, DbError>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, DieselError> + Send + 'static,
        T: Send + 'static,
    {
        let mut conn = self
            .conn
            .take()
            .ok_or_else(|| DbError::Unavailable("transaction already finished".into()))?;
        let (conn, result) = web::block(move || {
            let result = conn.run(f);
            (conn, result)
        })
        .await
        .map_err(|e| DbError::Unavailable(format!("blocking pool failed: {e}")))?;
        self.conn = Some(conn);
        Ok(result?)
    }

    pub(crate) async fn commit(mut self) -> Result<(), DbError> {
        self.run(AnsiTransactionManager::commit_transaction).await
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

pub fn build_pool(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let manager = PgManager {
        url: settings.url.expose_secret().to_string(),
    };
    let pool = Pool::builder()
        .max_size(settings.pool_size)
        // PgConn notices lost connections itself: no ping per checkout.
        .test_on_check_out(false)
        .min_idle(Some(settings.pool_size.min(2)))
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
        gate: Arc::new(Semaphore::new(settings.pool_size as usize)),
        wait: settings.connect_timeout,
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
    let url = with_connect_timeout(settings.url.expose_secret(), settings.connect_timeout);
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

fn connect_creating_if_missing(settings: &DatabaseSettings) -> anyhow::Result<PgConnection> {
    let url = with_connect_timeout(settings.url.expose_secret(), settings.connect_timeout);
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

/// libpq waits for the OS's TCP timeout by default; bound it so an unreachable
/// server is reported promptly.
fn with_connect_timeout(url: &str, timeout: Duration) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.query_pairs().any(|(k, _)| k == "connect_timeout") => {
            parsed
                .query_pairs_mut()
                .append_pair("connect_timeout", &timeout.as_secs().max(1).to_string());
            parsed.into()
        }
        _ => url.to_string(),
    }
}

/// Readiness: can a pooled connection run a query right now?
pub async fn ping(pool: &PgPool) -> Result<(), DbError> {
    run(pool, |conn| {
        diesel::sql_query("SELECT 1").execute(conn).map(|_| ())
    })
    .await
}
