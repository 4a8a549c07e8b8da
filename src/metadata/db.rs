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
}

impl ConnectionManager {
    /// A manager for `sqlite://PATH` or `postgres://…`.
    pub fn new(url: &str) -> anyhow::Result<Self> {
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
        Ok(Self { target })
    }

    /// Whether this is the SQLite backend.
    pub fn is_sqlite(&self) -> bool {
        matches!(self.target, Target::Sqlite(_))
    }
}

impl r2d2::ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = ConnectionError;

    fn connect(&self) -> Result<DbConnection, ConnectionError> {
        match &self.target {
            Target::Postgres(url) => PgConnection::establish(url).map(DbConnection::Postgresql),
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

    fn has_broken(&self, _conn: &mut DbConnection) -> bool {
        false
    }
}

/// Builds a pool; fails when the database cannot be reached within `timeout`.
pub fn connect(url: &str, size: u32, timeout: Duration) -> anyhow::Result<DbPool> {
    let manager = ConnectionManager::new(url)?;
    r2d2::Pool::builder()
        .max_size(size)
        .connection_timeout(timeout)
        .test_on_check_out(true)
        .build(manager)
        .context("cannot connect to the database")
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
