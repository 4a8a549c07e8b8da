//! The file-metadata cache: a write-through cache of [`File`] records in front of the
//! metadata database.
//!
//! The database is the source of truth. A cache call never fails from the caller's
//! point of view: a miss, a timeout, a refused connection or an undecodable entry all
//! look like a miss on [`FileCache::get`], and writes that do not land are dropped.
//! Failures are counted in `valet_cache_errors_total{operation}`; an outage is logged
//! once when it begins and once when it ends.
//!
//! Two implementations: [`RedisCache`] (shared by every replica, when `cache.url` is
//! set) and [`MemoryCache`] (bounded, in-process).
//!
//! A write that does not land must not leave a stale record for the other replicas.
//! Redis entries therefore carry the cache *generation* they were written under, and
//! a replica whose put or remove was lost raises the generation before it uses Redis
//! again, turning every older entry into a miss for everyone (see the `generation`
//! module); it also reports the lost write through the database, and every replica
//! that sees the report raises the generation too ([`invalidations`]), so the others
//! stop reading the old record while the one that lost it is still cut off.
//! The in-process cache needs none of this: only its own replica writes to it.

mod breaker;
mod codec;
mod generation;
pub mod invalidations;
mod memory;
mod redis;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use metrics::{counter, histogram};

use crate::configuration::CacheSettings;
use crate::domain::{File, FileId};

pub use self::memory::MemoryCache;
pub use self::redis::RedisCache;

/// A cache of file records keyed by id. Every method is infallible for the caller.
#[async_trait]
pub trait FileCache: Send + Sync {
    /// The cached record, or `None` on a miss or on any error (read the database).
    async fn get(&self, id: &FileId) -> Option<File>;

    /// Stores (or replaces) a record. Best effort: errors are counted, not returned.
    async fn put(&self, file: &File);

    /// Stores a record only if none is cached: for filling a miss with what the
    /// database returned, so that a newer record written through meanwhile (by
    /// [`put`](Self::put)) is not replaced by this older read. Best effort.
    async fn fill(&self, file: &File);

    /// Forgets a record. Best effort: errors are counted, not returned.
    async fn remove(&self, id: &FileId);

    /// Whether the cache answers (for readiness reports); the in-process cache always does.
    async fn ping(&self) -> Result<(), String>;

    /// `"redis"` or `"memory"`.
    fn kind(&self) -> &'static str;

    /// Whether other instances read what this one writes (then lost writes must be
    /// reported to them, see [`invalidations`]).
    fn is_shared(&self) -> bool {
        false
    }

    /// Write-throughs this instance could not deliver so far (only ever grows).
    fn lost_writes(&self) -> u64 {
        0
    }

    /// Another instance could not deliver a write-through: entries cached so far
    /// may be stale.
    fn invalidate(&self) {}
}

/// The cache `settings` ask for: Redis when `url` is set, otherwise in-process.
///
/// Never contacts Redis: valet starts while Redis is down and uses it once it is up.
/// Fails only on settings that can never work (an unparseable URL, a zero TTL or
/// timeout).
pub fn from_settings(settings: &CacheSettings) -> anyhow::Result<Arc<dyn FileCache>> {
    if settings.ttl_secs == 0 {
        anyhow::bail!("cache.ttl_secs must be at least 1");
    }
    let url = settings
        .url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty());
    match url {
        Some(url) => {
            if settings.timeout_ms == 0 {
                anyhow::bail!("cache.timeout_ms must be at least 1");
            }
            let cache = RedisCache::new(
                url,
                &settings.key_prefix,
                settings.ttl(),
                settings.timeout(),
            )?;
            tracing::info!(endpoint = %cache.endpoint(), "file cache: redis");
            Ok(Arc::new(cache))
        }
        None => {
            tracing::info!(
                capacity = settings.memory_capacity,
                "file cache: in-process"
            );
            Ok(Arc::new(MemoryCache::new(
                settings.memory_capacity,
                settings.ttl(),
            )))
        }
    }
}

/// Metrics shared by both implementations.
mod record {
    use super::*;

    pub(super) fn hit() {
        counter!("valet_cache_hits_total").increment(1);
    }

    pub(super) fn miss() {
        counter!("valet_cache_misses_total").increment(1);
    }

    pub(super) fn skipped(operation: &'static str) {
        counter!("valet_cache_skipped_total", "operation" => operation).increment(1);
    }

    pub(super) fn error(operation: &'static str) {
        counter!("valet_cache_errors_total", "operation" => operation).increment(1);
    }

    pub(super) fn generation_bump() {
        counter!("valet_cache_generation_bumps_total").increment(1);
    }

    pub(super) fn duration(operation: &'static str, started: Instant) {
        histogram!("valet_cache_duration_seconds", "operation" => operation)
            .record(started.elapsed().as_secs_f64());
    }
}
