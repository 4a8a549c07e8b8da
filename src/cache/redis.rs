//! The Redis cache: `{prefix}file:{id}` → JSON of the full record, `SET … EX ttl`.
//!
//! One multiplexed connection, held by a [`ConnectionManager`] that is created on
//! first use (so construction never touches the network and needs no runtime) and
//! reconnects by itself after I/O errors. Every call is bounded by `timeout`; past
//! it the caller reads the database. When calls keep failing (Redis gone silent,
//! a connection that will never succeed) the manager is dropped and re-created, at
//! most once per [`RECREATE_MIN_INTERVAL`]. After an outage (a timeout or no
//! connection) calls skip Redis until a background probe gets an answer (see
//! [`Breaker`]).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ErrorKind, RedisError};
use async_trait::async_trait;

use super::breaker::Breaker;
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
    ttl_secs: u64,
    timeout: Duration,
    slot: Mutex<Option<Slot>>,
    generation: AtomicU64,
    consecutive_failures: AtomicU32,
    down: Arc<AtomicBool>,
    breaker: Arc<Breaker>,
    born: Instant,
    /// Milliseconds after `born` of the last rate-limited warning, plus one (0 = never).
    last_warning: AtomicU64,
}

struct Slot {
    manager: ConnectionManager,
    generation: u64,
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
            ttl_secs: ttl.as_secs().max(1),
            timeout,
            slot: Mutex::new(None),
            generation: AtomicU64::new(0),
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
            return Ok((s.manager.clone(), s.generation));
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
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *slot = Some(Slot {
            manager: manager.clone(),
            generation,
            created: Instant::now(),
        });
        Ok((manager, generation))
    }

    /// Drops the manager of `generation` if it is still current and old enough, so
    /// that the next call starts from a fresh connection.
    fn recreate(&self, generation: u64) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let stale = slot.as_ref().is_some_and(|s| {
            s.generation == generation && s.created.elapsed() >= RECREATE_MIN_INTERVAL
        });
        if stale {
            *slot = None;
            self.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::debug!(endpoint = %self.endpoint, "replacing the Redis cache connection");
        }
    }

    /// Runs one command unless the breaker is open (Redis down: skipped at once).
    async fn run<T, F, Fut>(&self, operation: &'static str, command: F) -> Result<T, Failure>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        if self.breaker.is_open() {
            record::skipped(operation);
            return Err(Failure::Skipped);
        }
        self.attempt(operation, command).await
    }

    /// Runs one command with the manager, bounded by the timeout, recording the outcome.
    async fn attempt<T, F, Fut>(&self, operation: &'static str, command: F) -> Result<T, Failure>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let started = Instant::now();
        let (manager, generation) = match self.manager() {
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
            Err(failure) => self.failed(operation, Some(generation), failure),
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

    fn failed(&self, operation: &'static str, generation: Option<u64>, failure: &Failure) {
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
        if let Some(generation) = generation {
            if failures >= RECREATE_AFTER_FAILURES {
                self.recreate(generation);
            }
        }
        self.open_breaker();
    }

    /// Skips Redis until a PING on a fresh connection is answered within the timeout.
    fn open_breaker(&self) {
        let client = self.client.clone();
        let timeout = self.timeout.max(MIN_CONNECT_TIMEOUT);
        let probe = move || {
            let client = client.clone();
            async move {
                let ping = async {
                    let mut conn = client.get_multiplexed_async_connection().await?;
                    ::redis::cmd("PING").query_async::<String>(&mut conn).await
                };
                matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
            }
        };
        let down = Arc::clone(&self.down);
        let endpoint = self.endpoint.clone();
        self.breaker.trip(probe, move || {
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
    /// `SET key json EX ttl`, with `NX` when `only_if_absent`; whether Redis answered.
    async fn set(&self, operation: &'static str, file: &File, only_if_absent: bool) -> bool {
        let json = match codec::encode(file) {
            Ok(json) => json,
            Err(e) => {
                self.failed(operation, None, &Failure::Codec(e));
                return false;
            }
        };
        let key = self.key(&file.id);
        let ttl = self.ttl_secs;
        self.run(operation, |mut conn| async move {
            let mut cmd = ::redis::cmd("SET");
            cmd.arg(&key).arg(json).arg("EX").arg(ttl);
            if only_if_absent {
                cmd.arg("NX");
            }
            // `NX` answers nil when the key exists: not an error.
            cmd.query_async::<Option<String>>(&mut conn).await
        })
        .await
        .is_ok()
    }
}

#[async_trait]
impl FileCache for RedisCache {
    async fn get(&self, id: &FileId) -> Option<File> {
        let key = self.key(id);
        let value = self
            .run("get", |mut conn| async move {
                ::redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Option<Vec<u8>>>(&mut conn)
                    .await
            })
            .await
            .ok()?;
        let Some(bytes) = value else {
            record::miss();
            return None;
        };
        match codec::decode(&bytes) {
            Ok(file) if file.id == *id => {
                record::hit();
                Some(file)
            }
            Ok(_) => {
                self.failed("get", None, &Failure::Codec("entry of another file".into()));
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
        // try once more (a dropped connection is re-made in between), then forget
        // the entry so readers go to the database.
        if !self.set("put", file, false).await && !self.set("put", file, false).await {
            self.remove(&file.id).await;
        }
    }

    async fn fill(&self, file: &File) {
        let _ = self.set("fill", file, true).await;
    }

    async fn remove(&self, id: &FileId) {
        let key = self.key(id);
        let _ = self
            .run("remove", |mut conn| async move {
                ::redis::cmd("DEL")
                    .arg(&key)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
    }

    async fn ping(&self) -> Result<(), String> {
        // Readiness asks Redis itself, breaker or not.
        self.attempt("ping", |mut conn| async move {
            ::redis::cmd("PING").query_async::<()>(&mut conn).await
        })
        .await
        .map_err(|failure| format!("redis cache at {}: {failure}", self.endpoint))
    }

    fn kind(&self) -> &'static str {
        "redis"
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
