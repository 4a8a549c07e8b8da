//! The file cache against a real Redis on 127.0.0.1:6379 (and the in-process cache).
//!
//! Every Redis test uses its own random key prefix and deletes its keys. Tests that
//! disturb the whole server (killing connections, stalling it) take the write side
//! of `SERVER`; the others take the read side, so they never overlap.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use redis::aio::MultiplexedConnection;
use tokio::sync::RwLock;
use tokio::time::timeout;

use valet::cache::{from_settings, FileCache, MemoryCache};

// Not every test crate that includes it uses every method.
#[allow(dead_code)]
#[path = "support/cuttable_proxy.rs"]
mod cuttable_proxy;
use cuttable_proxy::CuttableProxy;
use valet::configuration::CacheSettings;
use valet::domain::{object_key, DeviceId, File, FileId, FileStatus, Root, Sha256, TenantId};

const REDIS: &str = "redis://127.0.0.1:6379";
/// A database index only `get_after_flushdb_misses` uses.
const DEDICATED_DB: u8 = 13;
/// Bound on every awaited cache call: a call that takes this long is hanging.
const HANG_GUARD: Duration = Duration::from_secs(5);

static SERVER: RwLock<()> = RwLock::const_new(());

/// A plain connection for inspecting and disturbing the server; fails the test
/// with instructions when no Redis is listening.
async fn admin_on(db: u8) -> MultiplexedConnection {
    let url = format!("{REDIS}/{db}");
    let client = redis::Client::open(url.as_str()).expect("valid url");
    let connected = timeout(
        Duration::from_secs(3),
        client.get_multiplexed_async_connection(),
    )
    .await;
    match connected {
        Ok(Ok(mut conn)) => {
            let pong: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
            assert_eq!(
                pong.as_deref().ok(),
                Some("PONG"),
                "Redis at {url} does not answer PING"
            );
            conn
        }
        Ok(Err(e)) => panic!("{}", no_redis(&e.to_string())),
        Err(_) => panic!("{}", no_redis("connection timed out")),
    }
}

async fn admin() -> MultiplexedConnection {
    admin_on(0).await
}

fn no_redis(why: &str) -> String {
    format!(
        "these tests need a Redis on 127.0.0.1:6379 ({why}); start one with:\n  \
         redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no"
    )
}

fn random_prefix() -> String {
    format!("valet-test:{}:", uuid::Uuid::new_v4().simple())
}

fn redis_settings(prefix: &str, timeout_ms: u64) -> CacheSettings {
    CacheSettings {
        url: Some(REDIS.to_owned()),
        key_prefix: prefix.to_owned(),
        timeout_ms,
        ..CacheSettings::default()
    }
}

fn redis_cache(prefix: &str, timeout_ms: u64) -> Arc<dyn FileCache> {
    let cache = from_settings(&redis_settings(prefix, timeout_ms)).expect("cache");
    assert_eq!(cache.kind(), "redis");
    cache
}

fn sample_file() -> File {
    let tenant = TenantId::parse("acme").expect("tenant");
    let device = DeviceId::parse("dev-42").expect("device");
    let id = FileId::new();
    let now = Utc::now();
    File {
        object_key: object_key(&tenant, &Root::Device(device.clone()), &id),
        id,
        tenant_id: tenant,
        device_id: Some(device),
        name: "firmware é.bin".into(),
        size: 1 << 40,
        sha256: Sha256::digest(b"payload"),
        content_type: "application/octet-stream".into(),
        status: FileStatus::Pending,
        backend: "local".into(),
        metadata: BTreeMap::from([
            ("build".to_string(), "2024.1".to_string()),
            ("note".to_string(), "quotes \" and \\ survive".to_string()),
        ]),
        created_at: now,
        uploaded_at: None,
        replicas: Vec::new(),
        batch_id: None,
        upload_expires_at: now + TimeDelta::minutes(15),
        parts: None,
    }
}

fn shared_file() -> File {
    let mut f = sample_file();
    f.device_id = None;
    f.object_key = object_key(&f.tenant_id, &Root::Shared, &f.id);
    f.uploaded_at = Some(Utc::now());
    f.status = FileStatus::Uploaded;
    f
}

async fn keys(conn: &mut MultiplexedConnection, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .expect("SCAN");
        found.extend(batch);
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

/// Deletes every key under `prefix`.
async fn clean(conn: &mut MultiplexedConnection, prefix: &str) {
    let found = keys(conn, prefix).await;
    if !found.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&found)
            .query_async(conn)
            .await
            .expect("DEL");
    }
}

async fn get(cache: &dyn FileCache, id: &FileId) -> Option<File> {
    timeout(HANG_GUARD, cache.get(id)).await.expect("get hung")
}

async fn put(cache: &dyn FileCache, file: &File) {
    timeout(HANG_GUARD, cache.put(file))
        .await
        .expect("put hung")
}

async fn remove(cache: &dyn FileCache, id: &FileId) {
    timeout(HANG_GUARD, cache.remove(id))
        .await
        .expect("remove hung")
}

/// Puts `file` and reads it back until that round-trips, up to `attempts` times.
async fn round_trips_eventually(cache: &dyn FileCache, file: &File, attempts: u32) -> bool {
    for _ in 0..attempts {
        put(cache, file).await;
        if get(cache, &file.id).await.as_ref() == Some(file) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Log lines written while the returned guard lives (on this thread).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (captured, guard)
}

#[tokio::test]
async fn redis_round_trips_every_field() {
    let _server = SERVER.read().await;
    let mut conn = admin().await;
    let prefix = random_prefix();
    let cache = redis_cache(&prefix, 1000);

    timeout(HANG_GUARD, cache.ping())
        .await
        .expect("ping hung")
        .expect("ping");
    let files = [sample_file(), shared_file()];
    for f in &files {
        assert_eq!(get(&*cache, &f.id).await, None, "nothing cached yet");
        put(&*cache, f).await;
    }
    for f in &files {
        let cached = get(&*cache, &f.id).await.expect("cached file");
        assert_eq!(&cached, f);
        // The API form skips these two; the cached form must not.
        assert_eq!(cached.object_key, f.object_key);
        assert_eq!(cached.upload_expires_at, f.upload_expires_at);
    }
    let mut stored = keys(&mut conn, &prefix).await;
    stored.sort();
    let mut expected: Vec<String> = files
        .iter()
        .map(|f| format!("{prefix}file:{}", f.id))
        .collect();
    expected.sort();
    assert_eq!(stored, expected);

    clean(&mut conn, &prefix).await;
}

#[tokio::test]
async fn redis_put_overwrites_on_status_change() {
    let _server = SERVER.read().await;
    let mut conn = admin().await;
    let prefix = random_prefix();
    let cache = redis_cache(&prefix, 1000);

    let mut f = sample_file();
    put(&*cache, &f).await;
    assert_eq!(
        get(&*cache, &f.id).await.map(|c| c.status),
        Some(FileStatus::Pending)
    );

    f.status = FileStatus::Uploaded;
    f.uploaded_at = Some(Utc::now());
    put(&*cache, &f).await;
    assert_eq!(get(&*cache, &f.id).await.as_ref(), Some(&f));

    f.status = FileStatus::Deleted;
    put(&*cache, &f).await;
    assert_eq!(
        get(&*cache, &f.id).await.map(|c| c.status),
        Some(FileStatus::Deleted)
    );

    clean(&mut conn, &prefix).await;
}

#[tokio::test]
async fn redis_fill_never_replaces_a_cached_record() {
    let _server = SERVER.read().await;
    let mut conn = admin().await;
    let prefix = random_prefix();
    let cache = redis_cache(&prefix, 1000);

    let older = sample_file();
    let mut newer = older.clone();
    newer.status = FileStatus::Uploaded;
    newer.uploaded_at = Some(Utc::now());

    // A miss is filled, with the TTL.
    cache.fill(&older).await;
    assert_eq!(get(&*cache, &older.id).await.as_ref(), Some(&older));
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{prefix}file:{}", older.id))
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert!(ttl > 0, "TTL is {ttl}");
    // A write-through wins over a later fill with an older read.
    put(&*cache, &newer).await;
    timeout(HANG_GUARD, cache.fill(&older))
        .await
        .expect("fill hung");
    assert_eq!(get(&*cache, &older.id).await.as_ref(), Some(&newer));

    clean(&mut conn, &prefix).await;
}

#[tokio::test]
async fn redis_remove_forgets() {
    let _server = SERVER.read().await;
    let mut conn = admin().await;
    let prefix = random_prefix();
    let cache = redis_cache(&prefix, 1000);

    let (a, b) = (sample_file(), sample_file());
    put(&*cache, &a).await;
    put(&*cache, &b).await;
    remove(&*cache, &a.id).await;
    assert_eq!(get(&*cache, &a.id).await, None);
    assert_eq!(
        get(&*cache, &b.id).await.as_ref(),
        Some(&b),
        "only a was removed"
    );
    remove(&*cache, &a.id).await; // removing an absent entry is fine
    remove(&*cache, &b.id).await;
    assert!(keys(&mut conn, &prefix).await.is_empty());

    clean(&mut conn, &prefix).await;
}

#[tokio::test]
async fn redis_entries_carry_the_ttl() {
    let _server = SERVER.read().await;
    let mut conn = admin().await;
    let prefix = random_prefix();
    let settings = CacheSettings {
        ttl_secs: 120,
        ..redis_settings(&prefix, 1000)
    };
    let cache = from_settings(&settings).expect("cache");

    let f = sample_file();
    put(&*cache, &f).await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{prefix}file:{}", f.id))
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert!((1..=120).contains(&ttl), "TTL is {ttl}");

    clean(&mut conn, &prefix).await;
}

#[tokio::test]
async fn redis_entries_expire() {
    let _server = SERVER.read().await;
    let mut conn = admin().await;
    let prefix = random_prefix();
    let settings = CacheSettings {
        ttl_secs: 1,
        ..redis_settings(&prefix, 1000)
    };
    let cache = from_settings(&settings).expect("cache");

    let f = sample_file();
    put(&*cache, &f).await;
    assert!(get(&*cache, &f.id).await.is_some());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get(&*cache, &f.id).await, None, "expired after its TTL");

    clean(&mut conn, &prefix).await;
}

#[tokio::test]
async fn redis_get_after_keys_deleted_misses() {
    let _server = SERVER.read().await;
    let mut conn = admin().await;
    let prefix = random_prefix();
    let cache = redis_cache(&prefix, 1000);

    let files: Vec<File> = (0..5).map(|_| sample_file()).collect();
    for f in &files {
        put(&*cache, f).await;
    }
    assert_eq!(keys(&mut conn, &prefix).await.len(), files.len());
    // What a flush does to this test's keys, without disturbing the other tests.
    clean(&mut conn, &prefix).await;
    for f in &files {
        assert_eq!(get(&*cache, &f.id).await, None);
    }
    // And the cache fills again.
    put(&*cache, &files[0]).await;
    assert_eq!(get(&*cache, &files[0].id).await.as_ref(), Some(&files[0]));

    clean(&mut conn, &prefix).await;
}

#[tokio::test]
async fn redis_get_after_flushdb_misses() {
    let _server = SERVER.read().await;
    let mut conn = admin_on(DEDICATED_DB).await;
    let prefix = random_prefix();
    let settings = CacheSettings {
        url: Some(format!("{REDIS}/{DEDICATED_DB}")),
        ..redis_settings(&prefix, 1000)
    };
    let cache = from_settings(&settings).expect("cache");

    let f = sample_file();
    put(&*cache, &f).await;
    assert_eq!(
        keys(&mut conn, &prefix).await.len(),
        1,
        "written to db {DEDICATED_DB}"
    );
    // A real flush, of a database no other test uses (FLUSHALL would hit them all).
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut conn)
        .await
        .expect("FLUSHDB");
    assert_eq!(get(&*cache, &f.id).await, None);
    put(&*cache, &f).await;
    assert_eq!(get(&*cache, &f.id).await.as_ref(), Some(&f));

    clean(&mut conn, &prefix).await;
}

#[tokio::test]
async fn redis_ignores_entries_it_cannot_decode() {
    let _server = SERVER.read().await;
    let mut conn = admin().await;
    let prefix = random_prefix();
    let cache = redis_cache(&prefix, 1000);

    let f = sample_file();
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}file:{}", f.id))
        .arg("{\"not\": \"a file\"}")
        .query_async(&mut conn)
        .await
        .expect("SET");
    assert_eq!(get(&*cache, &f.id).await, None, "garbage reads as a miss");
    put(&*cache, &f).await;
    assert_eq!(
        get(&*cache, &f.id).await.as_ref(),
        Some(&f),
        "and is overwritten"
    );

    clean(&mut conn, &prefix).await;
}

/// The raw entry of `id` under `prefix`, as JSON.
async fn raw_entry(
    conn: &mut MultiplexedConnection,
    prefix: &str,
    id: &FileId,
) -> Option<serde_json::Value> {
    let raw: Option<String> = redis::cmd("GET")
        .arg(format!("{prefix}file:{id}"))
        .query_async(conn)
        .await
        .expect("GET");
    raw.map(|r| serde_json::from_str(&r).expect("entries are JSON"))
}

/// The generation key under `prefix`, if it was ever raised.
async fn generation(conn: &mut MultiplexedConnection, prefix: &str) -> Option<u64> {
    redis::cmd("GET")
        .arg(format!("{prefix}generation"))
        .query_async(conn)
        .await
        .expect("GET generation")
}

async fn bump(conn: &mut MultiplexedConnection, prefix: &str) {
    let _: u64 = redis::cmd("INCR")
        .arg(format!("{prefix}generation"))
        .query_async(conn)
        .await
        .expect("INCR");
}

fn uploaded(mut f: File) -> File {
    f.status = FileStatus::Uploaded;
    f.uploaded_at = Some(Utc::now());
    f
}

#[tokio::test]
async fn redis_entries_of_another_generation_are_misses() {
    let _server = SERVER.read().await;
    let mut conn = admin().await;
    let prefix = random_prefix();
    let cache = redis_cache(&prefix, 1000);

    let (f, g) = (sample_file(), sample_file());
    put(&*cache, &f).await;
    cache.fill(&g).await;
    // Stamped by Redis with the current generation: 0 while there is no key.
    assert_eq!(generation(&mut conn, &prefix).await, None);
    for id in [&f.id, &g.id] {
        let entry = raw_entry(&mut conn, &prefix, id).await.expect("stored");
        assert_eq!(entry["generation"], 0, "{entry}");
    }
    assert_eq!(get(&*cache, &f.id).await.as_ref(), Some(&f));

    // A bump turns every entry into a miss…
    bump(&mut conn, &prefix).await;
    assert_eq!(get(&*cache, &f.id).await, None);
    assert_eq!(get(&*cache, &g.id).await, None);
    // …and a fill replaces an entry of an older generation…
    let newer = uploaded(f.clone());
    cache.fill(&newer).await;
    assert_eq!(get(&*cache, &f.id).await.as_ref(), Some(&newer));
    assert_eq!(
        raw_entry(&mut conn, &prefix, &f.id).await.expect("stored")["generation"],
        1
    );
    // …but never one of the current generation.
    cache.fill(&f).await;
    assert_eq!(get(&*cache, &f.id).await.as_ref(), Some(&newer));
    // A put always replaces, stamped with the current generation.
    bump(&mut conn, &prefix).await;
    put(&*cache, &g).await;
    assert_eq!(
        raw_entry(&mut conn, &prefix, &g.id).await.expect("stored")["generation"],
        2
    );
    assert_eq!(get(&*cache, &g.id).await.as_ref(), Some(&g));

    clean(&mut conn, &prefix).await;
}

#[tokio::test]
async fn redis_entries_from_before_generations_are_misses_and_filled_again() {
    let _server = SERVER.read().await;
    let mut conn = admin().await;
    let prefix = random_prefix();
    let cache = redis_cache(&prefix, 1000);

    let f = sample_file();
    put(&*cache, &f).await;
    let mut legacy = raw_entry(&mut conn, &prefix, &f.id).await.expect("stored");
    legacy.as_object_mut().expect("object").remove("generation");
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}file:{}", f.id))
        .arg(legacy.to_string())
        .query_async(&mut conn)
        .await
        .expect("SET");
    assert_eq!(get(&*cache, &f.id).await, None);
    cache.fill(&f).await;
    assert_eq!(get(&*cache, &f.id).await.as_ref(), Some(&f));

    clean(&mut conn, &prefix).await;
}

/// Two caches on one key prefix, as two instances are: the first reaches Redis
/// through `proxy`, the second directly.
fn two_instances(prefix: &str, proxy: &CuttableProxy) -> (Arc<dyn FileCache>, Arc<dyn FileCache>) {
    let through_proxy = CacheSettings {
        url: Some(format!("redis://{}", proxy.address)),
        ..redis_settings(prefix, 200)
    };
    (
        from_settings(&through_proxy).expect("cache"),
        redis_cache(prefix, 1000),
    )
}

#[tokio::test]
async fn a_write_lost_in_an_outage_is_covered_by_a_bump_before_redis_is_used_again() {
    valet::telemetry::metrics::handle();
    let _server = SERVER.read().await;
    let mut conn = admin().await;
    let prefix = random_prefix();
    let proxy = CuttableProxy::start(REDIS.trim_start_matches("redis://")).await;
    let (cut_off, other) = two_instances(&prefix, &proxy);

    let pending = sample_file();
    put(&*other, &pending).await;
    assert_eq!(get(&*cut_off, &pending.id).await.as_ref(), Some(&pending));

    proxy.cut().await;
    let done = uploaded(pending.clone());
    put(&*cut_off, &done).await;
    // Redis itself never saw the change: the other instance reads the old record
    // while the outage lasts…
    assert_eq!(get(&*other, &pending.id).await.as_ref(), Some(&pending));
    let unready = timeout(HANG_GUARD, cut_off.ping())
        .await
        .expect("ping hung");
    assert!(unready.is_err(), "not ready while cut off");

    // …and never once the cut-off instance reaches Redis again: before anything
    // else, it raises the generation.
    proxy.restore().await;
    let mut ready = false;
    for _ in 0..100 {
        if timeout(HANG_GUARD, cut_off.ping())
            .await
            .expect("ping hung")
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "ready again once back (and the bump landed)");
    // (The background probe may have bumped it too.)
    assert!(generation(&mut conn, &prefix).await >= Some(1));
    assert_eq!(get(&*other, &pending.id).await, None);
    other.fill(&done).await;
    assert_eq!(get(&*other, &pending.id).await.as_ref(), Some(&done));
    let rendered = valet::telemetry::metrics::handle()
        .expect("recorder")
        .render();
    assert!(
        counter(&rendered, "valet_cache_generation_bumps_total") >= 1,
        "{rendered}"
    );

    clean(&mut conn, &prefix).await;
}

#[tokio::test]
async fn failed_reads_and_fills_leave_nothing_stale_and_raise_no_generation() {
    let _server = SERVER.read().await;
    let mut conn = admin().await;
    let prefix = random_prefix();
    let proxy = CuttableProxy::start(REDIS.trim_start_matches("redis://")).await;
    let (cut_off, _) = two_instances(&prefix, &proxy);

    let f = sample_file();
    proxy.cut().await;
    assert_eq!(get(&*cut_off, &f.id).await, None);
    cut_off.fill(&f).await;
    proxy.restore().await;
    // Used again once back (filled, not put: a put skipped meanwhile is a lost write).
    let mut filled = false;
    for _ in 0..100 {
        cut_off.fill(&f).await;
        if get(&*cut_off, &f.id).await.as_ref() == Some(&f) {
            filled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(filled, "used once back");
    assert_eq!(generation(&mut conn, &prefix).await, None);

    clean(&mut conn, &prefix).await;
}

#[tokio::test]
async fn unreachable_redis_degrades_to_misses_and_logs_once() {
    valet::telemetry::metrics::handle();
    let (logs, _guard) = capture_logs();
    let settings = CacheSettings {
        url: Some("redis://:hunter2@127.0.0.1:1/0".into()),
        key_prefix: random_prefix(),
        timeout_ms: 50,
        ..CacheSettings::default()
    };
    // Construction does not need the server.
    let cache = from_settings(&settings).expect("cache");
    assert_eq!(cache.kind(), "redis");

    let f = sample_file();
    for _ in 0..10 {
        put(&*cache, &f).await;
        assert_eq!(get(&*cache, &f.id).await, None);
        remove(&*cache, &f.id).await;
    }
    let ping = timeout(HANG_GUARD, cache.ping()).await.expect("ping hung");
    let err = ping.expect_err("nothing listens on port 1");
    assert!(!err.contains("hunter2"), "{err}");

    let logs = logs.text();
    assert_eq!(
        logs.matches("cache unavailable, serving from the database")
            .count(),
        1,
        "one warning per outage, not per call:\n{logs}"
    );
    assert!(!logs.contains("hunter2"), "password logged:\n{logs}");

    let rendered = valet::telemetry::metrics::handle()
        .expect("recorder")
        .render();
    // The first failure opens the breaker: later calls skip Redis (counted apart);
    // readiness's ping always asks Redis.
    for op in ["get", "put", "remove", "ping"] {
        let counted = ["errors", "skipped"].iter().any(|what| {
            rendered.contains(&format!("valet_cache_{what}_total{{operation=\"{op}\"}}"))
        });
        assert!(counted, "failures of {op} counted:\n{rendered}");
    }
    assert!(
        rendered.contains("valet_cache_errors_total{operation=\"ping\"}"),
        "{rendered}"
    );
    assert!(
        rendered.contains("valet_cache_duration_seconds_bucket"),
        "{rendered}"
    );
}

/// A `redis-server` of this test's own, stopped when dropped.
struct OwnServer(std::process::Child);

impl OwnServer {
    async fn start(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}", no_redis(&format!("redis-server: {e}"))));
        let server = Self(child);
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
        for _ in 0..100 {
            if let Ok(Ok(mut conn)) = timeout(
                Duration::from_millis(200),
                client.get_multiplexed_async_connection(),
            )
            .await
            {
                if redis::cmd("PING")
                    .query_async::<()>(&mut conn)
                    .await
                    .is_ok()
                {
                    return server;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {port} did not come up");
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of a counter in the rendered metrics (0 when absent).
fn counter(rendered: &str, series: &str) -> u64 {
    rendered
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A Redis cache (200 ms timeout) on a free port where no Redis runs yet; the port,
/// for starting one there later.
fn cache_on_a_port_with_no_redis_yet() -> (u16, Arc<dyn FileCache>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let settings = CacheSettings {
        url: Some(format!("redis://127.0.0.1:{port}")),
        ..redis_settings(&random_prefix(), 200)
    };
    (
        port,
        from_settings(&settings).expect("cache while Redis is down"),
    )
}

#[tokio::test]
async fn during_an_outage_calls_skip_redis_until_it_answers_again() {
    let handle = valet::telemetry::metrics::handle().expect("recorder");
    let skipped = r#"valet_cache_skipped_total{operation="get"}"#;
    let (port, cache) = cache_on_a_port_with_no_redis_yet();
    let f = sample_file();
    let before = counter(&handle.render(), skipped);
    // The first call finds Redis down; the next ones do not try it at all, so a
    // request during an outage costs what the database costs.
    for _ in 0..20 {
        assert_eq!(get(&*cache, &f.id).await, None);
    }
    let after = counter(&handle.render(), skipped);
    assert!(
        after - before >= 19,
        "{} of 20 calls skipped Redis",
        after - before
    );
    // A background probe notices Redis is back; no request has to.
    let _server = OwnServer::start(port).await;
    assert!(
        round_trips_eventually(&*cache, &f, 100).await,
        "used once up"
    );
}

#[tokio::test]
async fn redis_that_starts_late_or_restarts_is_used_once_up() {
    let (logs, _guard) = capture_logs();
    let (port, cache) = cache_on_a_port_with_no_redis_yet();
    let f = sample_file();

    // Down at start: calls return, as misses.
    for _ in 0..5 {
        put(&*cache, &f).await;
        assert_eq!(get(&*cache, &f.id).await, None);
    }
    // Up: used without restarting valet.
    let server = OwnServer::start(port).await;
    assert!(
        round_trips_eventually(&*cache, &f, 100).await,
        "used once up"
    );
    // Gone again: misses, promptly.
    drop(server);
    assert_eq!(get(&*cache, &f.id).await, None);
    put(&*cache, &f).await;
    // Back (empty): used again.
    let _server = OwnServer::start(port).await;
    assert_eq!(
        get(&*cache, &f.id).await,
        None,
        "a restarted Redis is empty"
    );
    assert!(
        round_trips_eventually(&*cache, &f, 100).await,
        "used again once back"
    );

    let logs = logs.text();
    assert_eq!(
        logs.matches("cache unavailable, serving from the database")
            .count(),
        2,
        "{logs}"
    );
    assert_eq!(logs.matches("cache available again").count(), 2, "{logs}");
}

#[tokio::test]
async fn redis_recovers_after_its_connections_are_killed() {
    let _server = SERVER.write().await;
    let mut conn = admin().await;
    let prefix = random_prefix();
    let cache = redis_cache(&prefix, 500);

    let f = sample_file();
    put(&*cache, &f).await;
    assert_eq!(get(&*cache, &f.id).await.as_ref(), Some(&f));

    for round in 0..3 {
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .query_async(&mut conn)
            .await
            .expect("CLIENT KILL");
        assert!(
            killed >= 1,
            "the cache's connection was killed (round {round})"
        );
        // Whatever the first calls after the kill return, they return…
        let _ = get(&*cache, &f.id).await;
        // …and the cache reconnects by itself.
        let mut g = sample_file();
        g.status = FileStatus::Uploaded;
        assert!(
            round_trips_eventually(&*cache, &g, 30).await,
            "no round trip after CLIENT KILL (round {round})"
        );
    }

    clean(&mut conn, &prefix).await;
}

#[tokio::test]
async fn redis_stalled_server_times_out_then_recovers() {
    let _server = SERVER.write().await;
    let mut conn = admin().await;
    let prefix = random_prefix();
    let cache = redis_cache(&prefix, 100);
    let (logs, _guard) = capture_logs();

    let f = sample_file();
    put(&*cache, &f).await;
    assert_eq!(get(&*cache, &f.id).await.as_ref(), Some(&f));

    // DEBUG is disabled on stock Redis ≥ 7 (enable-debug-command no); CLIENT PAUSE ALL
    // stalls every client the same way.
    let debug_allowed = redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg(0)
        .query_async::<()>(&mut conn)
        .await
        .is_ok();
    let stall = if debug_allowed {
        let mut sleeper = admin().await;
        let task = tokio::spawn(async move {
            let _ = redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg(0.3)
                .query_async::<()>(&mut sleeper)
                .await;
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        Some(task)
    } else {
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(300)
            .arg("ALL")
            .query_async(&mut conn)
            .await
            .expect("CLIENT PAUSE");
        None
    };

    assert_eq!(
        get(&*cache, &f.id).await,
        None,
        "a get during the stall times out instead of waiting for the server"
    );

    if let Some(task) = stall {
        task.await.expect("DEBUG SLEEP task");
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut recovered = false;
    for _ in 0..30 {
        if get(&*cache, &f.id).await.as_ref() == Some(&f) {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the cache answers again after the stall");
    let g = sample_file();
    assert!(round_trips_eventually(&*cache, &g, 10).await);

    let logs = logs.text();
    assert_eq!(
        logs.matches("cache unavailable, serving from the database")
            .count(),
        1,
        "{logs}"
    );
    assert_eq!(logs.matches("cache available again").count(), 1, "{logs}");

    clean(&mut conn, &prefix).await;
}

#[tokio::test]
async fn memory_cache_round_trips_and_removes() {
    let settings = CacheSettings {
        url: None,
        ..CacheSettings::default()
    };
    let cache = from_settings(&settings).expect("cache");
    assert_eq!(cache.kind(), "memory");
    cache.ping().await.expect("always ready");

    let mut f = sample_file();
    assert_eq!(cache.get(&f.id).await, None);
    cache.put(&f).await;
    assert_eq!(cache.get(&f.id).await.as_ref(), Some(&f));
    f.status = FileStatus::Uploaded;
    cache.put(&f).await;
    assert_eq!(cache.get(&f.id).await.as_ref(), Some(&f));
    cache.remove(&f.id).await;
    assert_eq!(cache.get(&f.id).await, None);

    cache.fill(&f).await;
    assert_eq!(
        cache.get(&f.id).await.as_ref(),
        Some(&f),
        "a miss is filled"
    );
    let mut older = f.clone();
    older.status = FileStatus::Pending;
    cache.fill(&older).await;
    assert_eq!(
        cache.get(&f.id).await.as_ref(),
        Some(&f),
        "fill never replaces"
    );
}

#[tokio::test]
async fn memory_cache_is_bounded() {
    let cache = MemoryCache::new(10, Duration::from_secs(300));
    let files: Vec<File> = (0..200).map(|_| sample_file()).collect();
    for f in &files {
        cache.put(f).await;
    }
    assert!(cache.entry_count() <= 10, "{} entries", cache.entry_count());
    let mut held = 0;
    for f in &files {
        if cache.get(&f.id).await.is_some() {
            held += 1;
        }
    }
    assert!(held <= 10, "{held} files still cached");
}

#[tokio::test]
async fn memory_cache_entries_expire() {
    let cache = MemoryCache::new(100, Duration::from_millis(200));
    let f = sample_file();
    cache.put(&f).await;
    assert!(cache.get(&f.id).await.is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(cache.get(&f.id).await, None);
}

#[test]
fn settings_that_cannot_work_are_refused() {
    let zero_ttl = CacheSettings {
        ttl_secs: 0,
        ..CacheSettings::default()
    };
    assert!(from_settings(&zero_ttl).is_err());
    let bad_url = CacheSettings {
        url: Some("postgres://user:hunter2@db".into()),
        ..CacheSettings::default()
    };
    let err = from_settings(&bad_url).err().expect("refused").to_string();
    assert!(!err.contains("hunter2"), "{err}");
    let blank_url = CacheSettings {
        url: Some("  ".into()),
        ..CacheSettings::default()
    };
    assert_eq!(from_settings(&blank_url).expect("cache").kind(), "memory");
}
