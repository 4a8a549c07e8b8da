//! The Redis cache: `{prefix}file:{id}` → JSON of the full record and the cache
//! generation it was written under, with the TTL; `{prefix}generation` → the current
//! generation. Entries of another generation are misses, and an instance whose
//! write-through did not land raises the generation before it uses Redis again (see
//! [`generation`]).
//!
//! One multiplexed connection, held by a [`ConnectionManager`] that is created on
//! first use (so construction never touches the network and needs no runtime) and
//! reconnects by itself after I/O errors. Every call is bounded by `timeout`; past
//! it the caller reads the database. When calls keep failing (Redis gone silent,
//! a connection that will never succeed) the manager is dropped and re-created, at
//! most once per [`RECREATE_MIN_INTERVAL`]. After an outage (a timeout or no
//! connection) calls skip Redis until a background probe gets an answer (see
//! [`Breaker`]); while a lost write waits for its generation bump, the probe is that
//! bump, sent every few milliseconds.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ErrorKind, RedisError, Script};
use async_trait::async_trait;

use super::breaker::Breaker;
use super::generation::{self, LostWrites, Scripts};
use super::{codec, record, FileCache};
use crate::domain::{File, FileId};

/// Consecutive outage failures after which the connection manager is replaced.
const RECREATE_AFTER_FAILURES: u32 = 3;
/// A connection manager younger than this is never replaced.
const RECREATE_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Least time a (re)connection attempt is given, whatever the per-call timeout.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Least time between two warnings about answers Redis refused or entries that
/// could not be decoded (each is also counted).
const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// A [`FileCache`] in Redis, shared by every replica.
pub struct RedisCache {
    client: Client,
    config: ConnectionManagerConfig,
    endpoint: String,
    prefix: String,
    generation_key: String,
    scripts: Scripts,
    lost_writes: Arc<LostWrites>,
    ttl_secs: u64,
    timeout: Duration,
    slot: Arc<Mutex<Option<Slot>>>,
    /// Connection managers created so far; the current one's number is in its slot.
    managers_created: AtomicU64,
    consecutive_failures: AtomicU32,
    down: Arc<AtomicBool>,
    breaker: Arc<Breaker>,
    born: Instant,
    /// Milliseconds after `born` of the last rate-limited warning, plus one (0 = never).
    last_warning: AtomicU64,
}

struct Slot {
    manager: ConnectionManager,
    serial: u64,
    created: Instant,
}

/// Why a call did not succeed.
enum Failure {
    /// No answer within the timeout.
    Timeout(Duration),
    /// No connection, a dropped connection, a refused handshake…: Redis is unusable.
    Unavailable(RedisError),
    /// Redis answered with an error (out of memory, read-only replica, …).
    Refused(RedisError),
    /// An entry that could not be encoded, or a stored value that is not a cached file.
    Codec(String),
    /// Not tried: Redis is down and the breaker is open.
    Skipped,
}

impl Failure {
    fn from_redis(e: RedisError) -> Self {
        match e.kind() {
            ErrorKind::Server(_) | ErrorKind::Extension => Failure::Refused(e),
            _ => Failure::Unavailable(e),
        }
    }

    fn is_outage(&self) -> bool {
        matches!(self, Failure::Timeout(_) | Failure::Unavailable(_))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout(t) => write!(f, "no answer within {} ms", t.as_millis()),
            Failure::Unavailable(e) | Failure::Refused(e) => write!(f, "{e}"),
            Failure::Codec(e) => write!(f, "bad cache entry: {e}"),
            Failure::Skipped => f.write_str("skipped while Redis is down"),
        }
    }
}

impl RedisCache {
    /// A cache at `url` (`redis://…` or `rediss://…`) whose keys start with `prefix`,
    /// entries living `ttl` (whole seconds, at least one) and calls bounded by `timeout`.
    ///
    /// Does not connect: the first call does, and later calls reconnect as needed.
    pub fn new(url: &str, prefix: &str, ttl: Duration, timeout: Duration) -> anyhow::Result<Self> {
        let endpoint = redact(url);
        let client = Client::open(url).map_err(|e| {
            anyhow::anyhow!(
                "cache.url {endpoint} is not a usable Redis URL (redis:// or rediss://): {:?}",
                e.kind()
            )
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(MIN_CONNECT_TIMEOUT)))
            // Every call is bounded by `timeout` here; the manager need not time out.
            .set_response_timeout(None)
            // Fail a connection attempt fast; the next call starts another one.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(1));
        Ok(Self {
            client,
            config,
            endpoint,
            prefix: prefix.to_owned(),
            generation_key: generation::key(prefix),
            scripts: Scripts::default(),
            lost_writes: Arc::default(),
            ttl_secs: ttl.as_secs().max(1),
            timeout,
            slot: Arc::default(),
            managers_created: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            down: Arc::new(AtomicBool::new(false)),
            breaker: Arc::default(),
            born: Instant::now(),
            last_warning: AtomicU64::new(0),
        })
    }

    /// The URL without password or query, fit for logs.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn key(&self, id: &FileId) -> String {
        format!("{}file:{id}", self.prefix)
    }

    /// The current connection manager, created if there is none.
    fn manager(&self) -> Result<(ConnectionManager, u64), RedisError> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = slot.as_ref() {
            return Ok((s.manager.clone(), s.serial));
        }
        // The manager spawns its connection tasks on the current Tokio runtime.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RedisError::from((
                ErrorKind::Client,
                "the Redis cache is used outside a Tokio runtime",
            )));
        }
        let manager =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())?;
        let serial = self.managers_created.fetch_add(1, Ordering::Relaxed) + 1;
        *slot = Some(Slot {
            manager: manager.clone(),
            serial,
            created: Instant::now(),
        });
        Ok((manager, serial))
    }

    /// Drops the manager numbered `serial` if it is still current and old enough, so
    /// that the next call starts from a fresh connection.
    fn recreate(&self, serial: u64) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let stale = slot
            .as_ref()
            .is_some_and(|s| s.serial == serial && s.created.elapsed() >= RECREATE_MIN_INTERVAL);
        if stale {
            *slot = None;
            self.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::debug!(endpoint = %self.endpoint, "replacing the Redis cache connection");
        }
    }

    /// Runs one command unless the breaker is open (Redis down: skipped at once) or
    /// a lost write could not be covered by a generation bump yet (skipped too).
    async fn run<T, F, Fut>(&self, operation: &'static str, command: F) -> Result<T, Failure>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        if self.breaker.is_open() || self.bump_after_lost_writes().await.is_err() {
            record::skipped(operation);
            return Err(Failure::Skipped);
        }
        self.attempt(operation, command).await
    }

    /// Raises the generation if a write-through was lost since the last bump, so
    /// that no instance reads what the lost write left behind. Until that succeeds,
    /// this instance must not use Redis.
    async fn bump_after_lost_writes(&self) -> Result<(), Failure> {
        let key = &self.generation_key;
        self.lost_writes
            .cover(|| {
                self.attempt("bump", |mut conn| async move {
                    generation::bump(key).query_async::<u64>(&mut conn).await
                })
            })
            .await
    }

    /// Runs one command with the manager, bounded by the timeout, recording the outcome.
    async fn attempt<T, F, Fut>(&self, operation: &'static str, command: F) -> Result<T, Failure>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let started = Instant::now();
        let (manager, serial) = match self.manager() {
            Ok(m) => m,
            Err(e) => {
                let failure = Failure::Unavailable(e);
                self.failed(operation, None, &failure);
                record::duration(operation, started);
                return Err(failure);
            }
        };
        let outcome = match tokio::time::timeout(self.timeout, command(manager)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Failure::from_redis(e)),
            Err(_) => Err(Failure::Timeout(self.timeout)),
        };
        record::duration(operation, started);
        match &outcome {
            Ok(_) => self.succeeded(),
            Err(failure) => self.failed(operation, Some(serial), failure),
        }
        outcome
    }

    fn succeeded(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::AcqRel) {
            tracing::info!(endpoint = %self.endpoint, "cache available again");
        }
    }

    fn failed(&self, operation: &'static str, serial: Option<u64>, failure: &Failure) {
        record::error(operation);
        if !failure.is_outage() {
            // Redis is there; it refused a command or holds a bad entry.
            self.warn_rate_limited(operation, failure);
            return;
        }
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                endpoint = %self.endpoint,
                operation,
                error = %failure,
                "cache unavailable, serving from the database"
            );
        } else {
            tracing::debug!(operation, error = %failure, "cache call failed");
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(serial) = serial {
            if failures >= RECREATE_AFTER_FAILURES {
                self.recreate(serial);
            }
        }
        self.open_breaker();
    }

    /// Skips Redis until a probe on a fresh connection is answered within the
    /// timeout: a PING, or, while a lost write is not covered, the generation bump
    /// (urgently: other instances may read a stale entry until it lands).
    fn open_breaker(&self) {
        let client = self.client.clone();
        let timeout = self.timeout.max(MIN_CONNECT_TIMEOUT);
        let lost_writes = Arc::clone(&self.lost_writes);
        let key = self.generation_key.clone();
        let probe = move || {
            let (client, lost_writes, key) =
                (client.clone(), Arc::clone(&lost_writes), key.clone());
            async move {
                let answer = async {
                    let mut conn = client.get_multiplexed_async_connection().await?;
                    // Asked once connected: a bump may have landed meanwhile.
                    if lost_writes.uncovered().is_some() {
                        let conn = &mut conn;
                        lost_writes
                            .cover(|| async move {
                                generation::bump(&key).query_async::<u64>(conn).await
                            })
                            .await
                    } else {
                        ::redis::cmd("PING").query_async::<()>(&mut conn).await
                    }
                };
                matches!(tokio::time::timeout(timeout, answer).await, Ok(Ok(())))
            }
        };
        let lost_writes = Arc::clone(&self.lost_writes);
        let urgent = move || lost_writes.uncovered().is_some();
        let down = Arc::clone(&self.down);
        let endpoint = self.endpoint.clone();
        let slot = Arc::clone(&self.slot);
        self.breaker.trip(probe, urgent, move || {
            // The probe connected; the manager may still be backing off from the
            // outage: calls start from a fresh one.
            slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            if down.swap(false, Ordering::AcqRel) {
                tracing::info!(%endpoint, "cache available again");
            }
        });
    }

    fn warn_rate_limited(&self, operation: &'static str, failure: &Failure) {
        let now = u64::try_from(self.born.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last_warning.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_INTERVAL.as_millis() as u64;
        if due
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                endpoint = %self.endpoint,
                operation,
                error = %failure,
                "cache call failed (counted in valet_cache_errors_total; warned at most once a minute)"
            );
        } else {
            tracing::debug!(operation, error = %failure, "cache call failed");
        }
    }
}

impl RedisCache {
    /// Stores `file` with `script` (put or fill), stamped with the current
    /// generation by the script itself.
    async fn store(
        &self,
        operation: &'static str,
        file: &File,
        script: &Script,
    ) -> Result<(), Failure> {
        let fields = codec::encode_fields(file).map_err(|e| {
            let failure = Failure::Codec(e);
            self.failed(operation, None, &failure);
            failure
        })?;
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&self.generation_key)
            .key(self.key(&file.id))
            .arg(fields)
            .arg(self.ttl_secs);
        self.run(operation, |mut conn| async move {
            invocation.invoke_async::<i64>(&mut conn).await
        })
        .await
        .map(drop)
    }
}

#[async_trait]
impl FileCache for RedisCache {
    async fn get(&self, id: &FileId) -> Option<File> {
        let key = self.key(id);
        let generation_key = &self.generation_key;
        // The current generation and the entry in one round trip.
        let (generation, value) = self
            .run("get", |mut conn| async move {
                ::redis::cmd("MGET")
                    .arg(generation_key)
                    .arg(&key)
                    .query_async::<(Option<Vec<u8>>, Option<Vec<u8>>)>(&mut conn)
                    .await
            })
            .await
            .ok()?;
        let Some(bytes) = value else {
            record::miss();
            return None;
        };
        let decoded = codec::decode_generation(generation.as_deref())
            .and_then(|current| Ok((current, codec::decode(&bytes)?)));
        match decoded {
            Ok((_, entry)) if entry.file.id != *id => {
                self.failed("get", None, &Failure::Codec("entry of another file".into()));
                record::miss();
                None
            }
            Ok((current, entry)) if entry.generation == Some(current) => {
                record::hit();
                Some(entry.file)
            }
            // Written before a lost write-through: possibly stale.
            Ok(_) => {
                record::miss();
                None
            }
            Err(e) => {
                self.failed("get", None, &Failure::Codec(e));
                record::miss();
                None
            }
        }
    }

    async fn put(&self, file: &File) {
        // A status change that misses the cache could leave an older copy there:
        // forget the entry so readers go to the database; if that fails too, the
        // remove counts a lost write, covered by a generation bump.
        if self.store("put", file, &self.scripts.put).await.is_err() {
            self.remove(&file.id).await;
        }
    }

    async fn fill(&self, file: &File) {
        // A failed fill leaves nothing stale behind: no lost write.
        let _ = self.store("fill", file, &self.scripts.fill).await;
    }

    async fn remove(&self, id: &FileId) {
        let key = self.key(id);
        let removed = self
            .run("remove", |mut conn| async move {
                ::redis::cmd("DEL")
                    .arg(&key)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
        if removed.is_err() {
            self.lost_writes.record();
        }
    }

    async fn ping(&self) -> Result<(), String> {
        // Readiness asks Redis itself, breaker or not; and it is not "ok" while a
        // lost write has not been covered by a generation bump (tried here too).
        self.attempt("ping", |mut conn| async move {
            ::redis::cmd("PING").query_async::<()>(&mut conn).await
        })
        .await
        .map_err(|failure| format!("redis cache at {}: {failure}", self.endpoint))?;
        self.bump_after_lost_writes().await.map_err(|failure| {
            format!(
                "redis cache at {}: a lost write-through waits for its generation bump: {failure}",
                self.endpoint
            )
        })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn lost_writes(&self) -> u64 {
        self.lost_writes.own()
    }

    fn invalidate(&self) {
        // The next call bumps first (or, while the breaker is open, its probe).
        self.lost_writes.record_reported();
    }
}

/// `url` without its password and query (which may carry credentials).
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(unparseable URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        let r = redact("rediss://user:s3cret@cache.example:6380/2?password=x");
        assert!(!r.contains("s3cret") && !r.contains("password"), "{r}");
        assert!(
            r.contains("user") && r.contains("cache.example:6380"),
            "{r}"
        );
        assert_eq!(redact("not a url :: s3cret"), "(unparseable URL)");
    }

    #[test]
    fn construction_needs_no_server_and_no_runtime() {
        for url in ["redis://127.0.0.1:1/0", "rediss://user:pw@127.0.0.1:1"] {
            let cache =
                RedisCache::new(url, "p:", Duration::from_secs(1), Duration::from_millis(5));
            assert!(cache.is_ok(), "{url}");
        }
        let err = RedisCache::new(
            "http://x",
            "p:",
            Duration::from_secs(1),
            Duration::from_millis(5),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("cache.url"), "{err}");
    }
}
