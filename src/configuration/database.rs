//! `[database]`: the metadata database and its connection pool.

use std::time::Duration;

use anyhow::bail;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::at_least_one;

/// Metadata database settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or `postgres://…`; default `sqlite://<data_dir>/valet.db`.
    pub url: Option<String>,
    /// Connections in the pool (and metadata worker threads).
    pub pool_size: u32,
    /// Seconds to wait for a connection before answering 503.
    pub connect_timeout_secs: u64,
    /// Longest a single statement may run, in milliseconds (Postgres only).
    pub statement_timeout_ms: u64,
    /// Apply pending migrations at start.
    pub run_migrations: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            pool_size: 8,
            connect_timeout_secs: 5,
            statement_timeout_ms: 5_000,
            run_migrations: true,
        }
    }
}

impl DatabaseSettings {
    /// Checks the section. Only a configured URL is checked: the default one is
    /// always `sqlite://`.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        at_least_one(&[("database.pool_size", u64::from(self.pool_size))])?;
        let Some(url) = &self.url else {
            return Ok(());
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Never echo the URL: it may hold a password.
            if url::Url::parse(url).is_err() {
                bail!("database.url is not a valid postgres:// URL");
            }
        } else if !url.starts_with("sqlite://") {
            bail!("database.url must start with sqlite:// or postgres://");
        }
        Ok(())
    }

    /// `connect_timeout_secs` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
}
