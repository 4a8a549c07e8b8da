//! Database connections: one code base for Postgres and SQLite, chosen by URL.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel::{Connection, ConnectionError, PgConnection, RunQueryDsl, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// A connection to either supported database.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    /// PostgreSQL (production).
    Postgresql(PgConnection),
    /// SQLite (the embedded default).
    Sqlite(SqliteConnection),
}

/// A pool of [`DbConnection`]s.
pub type DbPool = r2d2::Pool<ConnectionManager>;

/// A connection back in the pool this recently is handed out again without a
/// probe (pgx's rule): a busy pool does not pay a `SELECT 1` round trip per
/// checkout, an idle one still finds connections the server dropped.
const TRUST_RECENTLY_USED: Duration = Duration::from_secs(1);

/// How many times a statement found its PostgreSQL connection gone (process-wide):
/// every connection handed out before the latest loss is probed at its next
/// checkout, so one failover costs at most the statement that noticed it.
static CONNECTION_LOSSES: AtomicU64 = AtomicU64::new(0);

/// Records that a statement found its connection gone.
pub fn note_connection_lost() {
    CONNECTION_LOSSES.fetch_add(1, Ordering::AcqRel);
}

/// Connection losses so far (see [`note_connection_lost`]).
pub fn connection_losses() -> u64 {
    CONNECTION_LOSSES.load(Ordering::Acquire)
}

/// A pooled connection and what the pool knows of its health.
pub struct PooledDb {
    conn: DbConnection,
    /// When it was last given back to the pool (or opened).
    idle_since: Instant,
    /// [`connection_losses`] when it was last handed out.
    losses_seen: u64,
}

impl Deref for PooledDb {
    type Target = DbConnection;
    fn deref(&self) -> &DbConnection {
        &self.conn
    }
}

impl DerefMut for PooledDb {
    fn deref_mut(&mut self) -> &mut DbConnection {
        &mut self.conn
    }
}

/// Where the database is.
#[derive(Debug, Clone)]
enum Target {
    Postgres(String),
    Sqlite(String),
}

/// Opens connections of the right kind for a URL. (diesel's own multi-connection
/// `establish` tries each kind in turn and hides the real error; this does not.)
#[derive(Debug, Clone)]
pub struct ConnectionManager {
    target: Target,
    statement_timeout_ms: u64,
}

impl ConnectionManager {
    /// A manager for `sqlite://PATH` or `postgres://…`; on Postgres every
    /// statement is bounded by `statement_timeout_ms` (0 = no bound).
    pub fn new(url: &str, statement_timeout_ms: u64) -> anyhow::Result<Self> {
        let target = if let Some(path) = url.strip_prefix("sqlite://") {
            if let Some(parent) = std::path::Path::new(path).parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent).with_context(|| {
                        format!("cannot create the database directory {}", parent.display())
                    })?;
                }
            }
            Target::Sqlite(path.to_owned())
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Target::Postgres(url.to_owned())
        } else {
            anyhow::bail!("database URL must start with sqlite:// or postgres://");
        };
        Ok(Self {
            target,
            statement_timeout_ms,
        })
    }
}

impl r2d2::ManageConnection for ConnectionManager {
    type Connection = PooledDb;
    type Error = ConnectionError;

    fn connect(&self) -> Result<PooledDb, ConnectionError> {
        let losses_seen = connection_losses();
        Ok(PooledDb {
            conn: self.open()?,
            idle_since: Instant::now(),
            losses_seen,
        })
    }

    fn is_valid(&self, pooled: &mut PooledDb) -> Result<(), ConnectionError> {
        let losses = connection_losses();
        let trusted =
            pooled.losses_seen == losses && pooled.idle_since.elapsed() < TRUST_RECENTLY_USED;
        pooled.losses_seen = losses;
        match &mut pooled.conn {
            // A file has no server to drop it.
            DbConnection::Sqlite(_) => Ok(()),
            DbConnection::Postgresql(_) if trusted => Ok(()),
            DbConnection::Postgresql(conn) => diesel::sql_query("SELECT 1")
                .execute(conn)
                .map(|_| ())
                .map_err(ConnectionError::CouldntSetupConfiguration),
        }
    }

    fn has_broken(&self, pooled: &mut PooledDb) -> bool {
        use diesel::r2d2::R2D2Connection;
        pooled.idle_since = Instant::now();
        match &mut pooled.conn {
            DbConnection::Postgresql(c) => c.is_broken(),
            DbConnection::Sqlite(c) => c.is_broken(),
        }
    }
}

impl ConnectionManager {
    fn open(&self) -> Result<DbConnection, ConnectionError> {
        match &self.target {
            Target::Postgres(url) => {
                let mut conn = PgConnection::establish(url)?;
                conn.batch_execute(&format!(
                    "SET statement_timeout = {}; SET application_name = 'valet';",
                    self.statement_timeout_ms
                ))
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(DbConnection::Postgresql(conn))
            }
            Target::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(path)?;
                // busy_timeout first: switching to WAL itself needs the lock.
                conn.batch_execute(
                    "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                )
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }
}

fn builder(size: u32, timeout: Duration) -> r2d2::Builder<ConnectionManager> {
    r2d2::Pool::builder()
        .max_size(size)
        .connection_timeout(timeout)
        // Catches connections the server dropped (restart, pg_terminate_backend)
        // before a request gets one; see `TRUST_RECENTLY_USED` for when it probes.
        .test_on_check_out(true)
}

/// Builds a pool; fails when the database cannot be reached within `timeout`.
pub fn connect(url: &str, size: u32, timeout: Duration) -> anyhow::Result<DbPool> {
    builder(size, timeout)
        .build(ConnectionManager::new(url, 0)?)
        .context("cannot connect to the database")
}

/// Builds a pool without connecting: the server starts while the database is
/// down, and requests answer 503 until it is back.
pub fn pool(
    url: &str,
    size: u32,
    timeout: Duration,
    statement_timeout_ms: u64,
) -> anyhow::Result<DbPool> {
    Ok(builder(size, timeout)
        .min_idle(Some(0))
        .build_unchecked(ConnectionManager::new(url, statement_timeout_ms)?))
}

/// Applies pending migrations; returns the versions applied.
pub fn run_migrations(conn: &mut DbConnection) -> anyhow::Result<Vec<String>> {
    let applied = match conn {
        DbConnection::Postgresql(c) => c.run_pending_migrations(POSTGRES_MIGRATIONS),
        DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS),
    }
    .map_err(|e| anyhow::anyhow!("migration failed: {e}"))?;
    Ok(applied.iter().map(|v| v.to_string()).collect())
}

/// Reverts the most recent migration (for `valet migrate --revert` and tests).
pub fn revert_last_migration(conn: &mut DbConnection) -> anyhow::Result<String> {
    let reverted = match conn {
        DbConnection::Postgresql(c) => c.revert_last_migration(POSTGRES_MIGRATIONS),
        DbConnection::Sqlite(c) => c.revert_last_migration(SQLITE_MIGRATIONS),
    }
    .map_err(|e| anyhow::anyhow!("revert failed: {e}"))?;
    Ok(reverted.to_string())
}
