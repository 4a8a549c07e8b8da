//! The in-process cache: bounded in entries, each living at most the TTL.
//!
//! Each replica has its own: a change made through one replica is not seen by the
//! others' caches until the entry expires. Use Redis when running several replicas.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::sync::Cache;

use super::{record, FileCache};
use crate::domain::{File, FileId};

/// A bounded in-process [`FileCache`].
#[derive(Clone)]
pub struct MemoryCache {
    entries: Cache<FileId, File>,
}

impl MemoryCache {
    /// A cache of at most `capacity` files, each kept at most `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Entries held, after pending evictions have been applied.
    pub fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

#[async_trait]
impl FileCache for MemoryCache {
    async fn get(&self, id: &FileId) -> Option<File> {
        let started = Instant::now();
        let found = self.entries.get(id);
        record::duration("get", started);
        match &found {
            Some(_) => record::hit(),
            None => record::miss(),
        }
        found
    }

    async fn put(&self, file: &File) {
        let started = Instant::now();
        self.entries.insert(file.id, file.clone());
        record::duration("put", started);
    }

    async fn fill(&self, file: &File) {
        let started = Instant::now();
        self.entries.entry(file.id).or_insert_with(|| file.clone());
        record::duration("fill", started);
    }

    async fn remove(&self, id: &FileId) {
        let started = Instant::now();
        self.entries.invalidate(id);
        record::duration("remove", started);
    }

    async fn ping(&self) -> Result<(), String> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
