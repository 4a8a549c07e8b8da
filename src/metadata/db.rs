//! Database connections: one code base for Postgres and SQLite, chosen by URL.

use std::time::Duration;

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
    type Connection = DbConnection;
    type Error = ConnectionError;

    fn connect(&self) -> Result<DbConnection, ConnectionError> {
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

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), ConnectionError> {
        diesel::sql_query("SELECT 1")
            .execute(conn)
            .map(|_| ())
            .map_err(ConnectionError::CouldntSetupConfiguration)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        use diesel::r2d2::R2D2Connection;
        match conn {
            DbConnection::Postgresql(c) => c.is_broken(),
            DbConnection::Sqlite(c) => c.is_broken(),
        }
    }
}

fn builder(size: u32, timeout: Duration) -> r2d2::Builder<ConnectionManager> {
    r2d2::Pool::builder()
        .max_size(size)
        .connection_timeout(timeout)
        // Catches connections the server dropped (restart, pg_terminate_backend)
        // before a request gets one.
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
