//! `[cache]`: the file metadata cache, Redis or in-process.

use std::time::Duration;

use anyhow::bail;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::url_with_scheme;

/// File metadata cache settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// `redis://…` (or `rediss://…`); absent = a bounded in-process cache.
    pub url: Option<String>,
    /// Seconds a cached file lives.
    pub ttl_secs: u64,
    /// Prefix of every Redis key (several deployments can share a Redis).
    pub key_prefix: String,
    /// Bound on every cache call, in milliseconds; past it the database answers.
    pub timeout_ms: u64,
    /// Entries the in-process cache holds.
    pub memory_capacity: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            url: None,
            ttl_secs: 300,
            key_prefix: "valet:".into(),
            timeout_ms: 50,
            memory_capacity: 10_000,
        }
    }
}

impl CacheSettings {
    /// Checks the section.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.url {
            if url_with_scheme(url, &["redis", "rediss"]).is_none() {
                bail!("cache.url must be a redis:// or rediss:// URL");
            }
        }
        if self.timeout_ms == 0 || self.ttl_secs == 0 {
            bail!("cache.timeout_ms and cache.ttl_secs must be at least 1");
        }
        Ok(())
    }

    /// `ttl_secs` as a duration.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs)
    }

    /// `timeout_ms` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}
