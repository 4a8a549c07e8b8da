//! Lost write-throughs, reported through the database so that every instance stops
//! trusting the shared cache at once, even while the instance that lost the write
//! cannot reach Redis: each instance counts its lost writes in the database, reads
//! the count every [`POLL_INTERVAL`], and when it changed, invalidates its cache
//! (it raises the cache generation before its next use of Redis).

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;

use super::FileCache;
use crate::metadata::{CacheInvalidations, MetadataStore, RequestCacheInvalidation};

/// How often the count of requested invalidations is read (one indexed row).
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Reports `cache`'s lost writes to `store` and invalidates `cache` when another
/// instance reported some, for as long as the current actix system runs.
pub fn spawn(cache: Arc<dyn FileCache>, store: Addr<MetadataStore>) {
    actix_web::rt::spawn(async move {
        let mut reported = 0;
        let mut seen = None;
        // The first read comes at once, not after a poll interval: it is the
        // baseline, and a report made before it would go unnoticed.
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            let lost = cache.lost_writes();
            if lost > reported {
                match store.send(RequestCacheInvalidation).await {
                    Ok(Ok(())) => reported = lost,
                    Ok(Err(e)) => tracing::debug!(error = %e, "lost write not reported yet"),
                    Err(_) => return,
                }
            }
            match store.send(CacheInvalidations).await {
                Ok(Ok(requested)) => {
                    if seen.is_some_and(|seen| seen != requested) {
                        cache.invalidate();
                    }
                    seen = Some(requested);
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "cache invalidations not read"),
                // The store is gone: valet is stopping.
                Err(_) => return,
            }
        }
    });
}
