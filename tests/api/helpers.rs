//! What the API tests share: a spawned valet ([`TestApp`]) with its HTTP calls, test
//! databases and caches, and (in [`stores`]) the object stores to run on.

pub mod key_server;
pub mod stores;

use std::time::Duration;

use actix::SyncArbiter;
use serde_json::{json, Value};
use sha2::Digest;
use tempfile::TempDir;
use valet::auth::{token, RootKey};
use valet::configuration::{Settings, TrustedKey};
use valet::domain::{DeviceId, Principal, ServiceName, TenantId};
use valet::metadata::{db, ListOutbox, MetadataStore, OutboxEntry, Schema};
use valet::startup::Application;

/// Admin URL of a Postgres server (e.g. `postgres://postgres@127.0.0.1:5432/postgres`)
/// on which tests create and drop their own databases. `scripts/test.sh` sets it.
pub const POSTGRES_ENV: &str = "TEST_POSTGRES_URL";
/// `postgres` runs the whole suite on Postgres instead of the embedded SQLite;
/// `scripts/test.sh` runs it both ways.
pub const DATABASE_ENV: &str = "TEST_DATABASE";

/// The Redis the cache tests use.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

pub use crate::patience::{attempts, patience};

/// A plain connection to the test Redis, failing with how to start one.
pub async fn redis_admin() -> redis::aio::MultiplexedConnection {
    let hint = "these tests need a Redis on 127.0.0.1:6379; start one with: \
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no \
        (scripts/test.sh does)";
    redis::Client::open(REDIS_URL)
        .expect("redis URL")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{hint}: {e}"))
}

/// Settings for a Redis cache of one test (its own key prefix).
pub fn with_redis_cache(settings: &mut Settings) {
    settings.cache.url = Some(REDIS_URL.into());
    settings.cache.key_prefix = format!("valet-test-{}:", uuid::Uuid::new_v4().simple());
}

/// The Postgres admin URL; a test needing Postgres fails without it.
pub fn postgres_admin_url() -> String {
    std::env::var(POSTGRES_ENV).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_ENV} is not set: run scripts/test.sh (it starts PostgreSQL), or set it \
             to an admin URL such as postgres://postgres@127.0.0.1:5432/postgres"
        )
    })
}

/// A running valet and what a test needs to talk to it.
pub struct TestApp {
    pub address: String,
    /// Name of the test's own Postgres database, when it has one.
    pub database_name: Option<String>,
    pub client: reqwest::Client,
    pub data_dir: TempDir,
    pub root_key: RootKey,
    pub settings: Settings,
    _database: Option<PostgresDatabase>,
}

/// A database created for one test and dropped after it.
struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl PostgresDatabase {
    fn create(admin_url: &str) -> (Self, String) {
        use diesel::{Connection, PgConnection, RunQueryDsl};
        let name = format!("valet_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::establish(admin_url).unwrap_or_else(|e| {
            panic!("{POSTGRES_ENV}={admin_url}: cannot connect ({e}); start Postgres or unset it")
        });
        diesel::sql_query(format!(r#"CREATE DATABASE "{name}""#))
            .execute(&mut admin)
            .expect("create test database");
        let mut url = url::Url::parse(admin_url).expect("admin URL");
        url.set_path(&name);
        // The test server is local: no TLS. libpq then never touches OpenSSL, whose
        // exit-time cleanup could otherwise race a valet thread still reconnecting
        // to a dropped test database when the test process exits.
        if !url.query_pairs().any(|(key, _)| key == "sslmode") {
            url.query_pairs_mut().append_pair("sslmode", "disable");
        }
        (
            Self {
                admin_url: admin_url.to_owned(),
                name,
            },
            url.to_string(),
        )
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        use diesel::{Connection, PgConnection, RunQueryDsl};
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            let _ = diesel::sql_query(format!(
                r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
                self.name
            ))
            .execute(&mut admin);
        }
    }
}

/// Spawns valet on the embedded default (SQLite, local store) in a fresh directory,
/// or on a fresh Postgres database when `TEST_DATABASE=postgres`.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with settings adjusted by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let postgres = std::env::var(DATABASE_ENV).is_ok_and(|v| v == "postgres");
    spawn(postgres, configure).await
}

/// Spawns valet on a fresh Postgres database, whatever `TEST_DATABASE` says.
pub async fn spawn_app_on_postgres(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(true, configure).await
}

async fn spawn(postgres: bool, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let root_key = RootKey::generate(Some(1));
    let database = if postgres {
        let admin_url = postgres_admin_url();
        Some(
            actix_web::web::block(move || PostgresDatabase::create(&admin_url))
                .await
                .expect("block"),
        )
    } else {
        None
    };
    let mut settings = Settings {
        data_dir: data_dir.path().to_path_buf(),
        ..Settings::default()
    };
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = Some(2);
    settings.database.pool_size = 4;
    settings.auth.dev_key = false;
    settings.auth.trusted_keys = vec![TrustedKey {
        id: root_key.id,
        public_key: root_key.public_key(),
    }];
    if let Some((_, url)) = &database {
        settings.database.url = Some(url.clone());
    }
    configure(&mut settings);
    let settings = settings.finish().expect("valid test settings");
    let app = Application::build(settings.clone())
        .await
        .expect("valet starts");
    let scheme = if settings.tls_enabled() {
        "https"
    } else {
        "http"
    };
    let address = format!("{scheme}://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    TestApp {
        address,
        database_name: database.as_ref().map(|(db, _)| db.name.clone()),
        client,
        data_dir,
        root_key,
        settings,
        _database: database.map(|(db, _)| db),
    }
}

/// The object key valet derives for a file (a `File` as the API returns it).
pub fn object_key_of(file: &Value) -> valet_backends::ObjectKey {
    let tenant = valet::domain::TenantId::parse(file["tenant_id"].as_str().expect("tenant"))
        .expect("tenant id");
    let root = match file["device_id"].as_str() {
        Some(device) => {
            valet::domain::Root::Device(valet::domain::DeviceId::parse(device).expect("device"))
        }
        None => valet::domain::Root::Shared,
    };
    let id = file["id"].as_str().expect("id").parse().expect("file id");
    valet::domain::object_key(&tenant, &root, &id)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Deterministic, non-repeating-looking bytes.
pub fn body_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
}

/// A copy of a signed request with header `name` set to `value`.
pub fn with_header(signed: &Value, name: &str, value: &str) -> Value {
    let mut copy = signed.clone();
    copy["headers"][name] = json!(value);
    copy
}

/// Asserts a problem+json answer with `status` and `code`; returns the document.
pub async fn assert_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status for {code}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/problem+json"),
        "content type {content_type:?}"
    );
    let problem: Value = response.json().await.expect("problem body");
    assert_eq!(problem["code"], code, "{problem}");
    assert_eq!(problem["status"], status, "{problem}");
    assert!(problem["type"].as_str().is_some_and(|t| t.ends_with(code)));
    assert!(problem["title"].is_string() && problem["detail"].is_string());
    problem
}

impl TestApp {
    /// Starts a second valet sharing this one's database, cache and object store
    /// (as N instances behind a load balancer do); returns its address.
    pub async fn spawn_another_instance(&self) -> String {
        self.spawn_another_instance_with(|_| {}).await
    }

    /// Like [`spawn_another_instance`](Self::spawn_another_instance), with this one's
    /// settings adjusted by `configure` (e.g. another way to the same Redis).
    pub async fn spawn_another_instance_with(
        &self,
        configure: impl FnOnce(&mut Settings),
    ) -> String {
        let mut settings = self.settings.clone();
        configure(&mut settings);
        let app = Application::build(settings)
            .await
            .expect("second instance starts");
        let address = format!("http://127.0.0.1:{}", app.port());
        actix_web::rt::spawn(app.run_until_stopped());
        address
    }

    /// Sends `method path` with `token` and, when given, a JSON `body`.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn mint(&self, tenant: &str, principal: Principal, ttl: Duration) -> String {
        token::mint(
            &self.root_key,
            &TenantId::parse(tenant).expect("tenant"),
            &principal,
            ttl,
        )
        .expect("mint")
    }

    pub fn device_token(&self, tenant: &str, device: &str) -> String {
        self.mint(
            tenant,
            Principal::Device(DeviceId::parse(device).expect("device")),
            Duration::from_secs(3600),
        )
    }

    pub fn service_token(&self, tenant: &str, service: &str) -> String {
        self.mint(
            tenant,
            Principal::Service(ServiceName::parse(service).expect("service")),
            Duration::from_secs(3600),
        )
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics request")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn create(&self, token: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/files"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("create request")
    }

    /// Creates an upload for `bytes` (extra fields merged into the body); asserts 201.
    pub async fn create_ok(&self, token: &str, bytes: &[u8], extra: Value) -> Value {
        let mut body = json!({
            "name": "firmware.bin",
            "size": bytes.len(),
            "sha256": sha256_hex(bytes),
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                body.insert(k.clone(), v.clone());
            }
        }
        let response = self.create(token, body).await;
        assert_eq!(response.status().as_u16(), 201);
        response.json().await.expect("created body")
    }

    /// Sends exactly the method, URL and headers valet returned, with `body`.
    pub async fn send_signed(&self, signed: &Value, body: Vec<u8>) -> reqwest::Response {
        let method =
            reqwest::Method::from_bytes(signed["method"].as_str().expect("method").as_bytes())
                .expect("method");
        let mut request = self
            .client
            .request(method, signed["url"].as_str().expect("url"));
        for (name, value) in signed["headers"].as_object().expect("headers") {
            request = request.header(name, value.as_str().expect("header value"));
        }
        request.body(body).send().await.expect("signed request")
    }

    pub async fn complete(&self, token: &str, id: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/files/{id}/complete")))
            .bearer_auth(token)
            .send()
            .await
            .expect("complete request")
    }

    pub async fn get_file(&self, token: &str, id: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/files/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("get request")
    }

    pub async fn download(&self, token: &str, id: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/files/{id}/download")))
            .bearer_auth(token)
            .send()
            .await
            .expect("download request")
    }

    pub async fn delete(&self, token: &str, id: &str) -> reqwest::Response {
        self.client
            .delete(self.url(&format!("/v1/files/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("delete request")
    }

    pub async fn list(&self, token: &str, query: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/files?{query}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("list request")
    }

    /// Asserts that, to `token`, file `id` does not exist: get, complete, download and
    /// delete all answer 404.
    pub async fn assert_not_found_for(&self, token: &str, id: &str) {
        assert_problem(self.get_file(token, id).await, 404, "not_found").await;
        assert_problem(self.complete(token, id).await, 404, "not_found").await;
        assert_problem(self.download(token, id).await, 404, "not_found").await;
        assert_problem(self.delete(token, id).await, 404, "not_found").await;
    }

    /// Create, PUT and complete; returns the uploaded File.
    pub async fn upload(&self, token: &str, bytes: &[u8], extra: Value) -> Value {
        let created = self.create_ok(token, bytes, extra).await;
        let put = self.send_signed(&created["upload"], bytes.to_vec()).await;
        // 200 from S3 and the local store, 201 from Azure.
        assert!(put.status().is_success(), "{:?}", put.text().await);
        let id = created["file"]["id"].as_str().expect("id");
        let completed = self.complete(token, id).await;
        assert_eq!(completed.status().as_u16(), 200);
        completed.json().await.expect("file")
    }

    /// Downloads through a fresh signed URL and returns the bytes.
    pub async fn fetch(&self, token: &str, id: &str) -> Vec<u8> {
        let signed: Value = self.download(token, id).await.json().await.expect("signed");
        let response = self.send_signed(&signed, Vec::new()).await;
        assert_eq!(response.status().as_u16(), 200);
        response.bytes().await.expect("bytes").to_vec()
    }

    /// Every outbox entry, oldest first.
    pub async fn outbox(&self) -> Vec<OutboxEntry> {
        let url = self.settings.database_url();
        let pool = actix_web::web::block(move || db::connect(&url, 1, Duration::from_secs(5)))
            .await
            .expect("block")
            .expect("pool");
        let store = SyncArbiter::start(1, move || {
            MetadataStore::new(pool.clone(), "test".into(), Schema::new(false))
        });
        store
            .send(ListOutbox {
                include_published: true,
                limit: 10_000,
            })
            .await
            .expect("mailbox")
            .expect("outbox")
    }

    /// Outbox entries about one file.
    pub async fn events_for(&self, id: &str) -> Vec<OutboxEntry> {
        self.outbox()
            .await
            .into_iter()
            .filter(|e| e.file_id == id)
            .collect()
    }

    /// Runs one SQL statement on the test's database (to age records, say).
    pub async fn execute_sql(&self, sql: String) {
        let url = self.settings.database_url();
        actix_web::web::block(move || {
            use diesel::RunQueryDsl;
            let pool = db::connect(&url, 1, Duration::from_secs(5)).expect("pool");
            let mut conn = pool.get().expect("connection");
            diesel::sql_query(sql)
                .execute(&mut **conn)
                .expect("SQL statement");
        })
        .await
        .expect("block");
    }

    /// Polls the file until `done` holds for it (at most 20 s, see [`patience`]);
    /// returns it.
    pub async fn wait_for_file(
        &self,
        token: &str,
        id: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        let deadline = std::time::Instant::now() + patience(Duration::from_secs(20));
        while std::time::Instant::now() < deadline {
            let response = self.get_file(token, id).await;
            last = response.json().await.expect("file JSON");
            if done(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the file never reached the expected state: {last}");
    }

    /// Every file under the local store's root, the receiving area included.
    pub fn stored_objects(&self) -> Vec<std::path::PathBuf> {
        files_under(&self.data_dir.path().join("objects"))
    }
}

/// Every regular file under `dir`, at any depth (none when `dir` does not exist).
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out
}
