//! valet's configuration: one TOML file plus `VALET_*` environment overrides.
//!
//! Every option has a default, so no file at all gives the embedded default: SQLite
//! and the local object store under `./valet-data`, trusting a development key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Environment variables with the `VALET_` prefix that are not configuration options.
const NON_CONFIG_ENV: &[&str] = &["config", "token", "api_url"];

/// Upper bound on any signed URL's lifetime (the S3 limit).
pub const MAX_URL_TTL_SECS: u64 = 7 * 24 * 3600;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Directory for the embedded default's database, objects and generated keys.
    pub data_dir: PathBuf,
    /// HTTP server.
    pub server: ServerSettings,
    /// Metadata database.
    pub database: DatabaseSettings,
    /// File metadata cache (Redis, or in-process when no URL is set).
    pub cache: CacheSettings,
    /// Token verification.
    pub auth: AuthSettings,
    /// Limits and signed-URL lifetimes.
    pub uploads: UploadSettings,
    /// Named storage backends.
    pub backends: BTreeMap<String, BackendSettings>,
    /// Backend used for tenants without their own routing.
    pub default_backend: String,
    /// Per-tenant settings, keyed by tenant id.
    pub tenants: BTreeMap<String, TenantSettings>,
    /// Event envelope settings.
    pub events: EventSettings,
    /// Logging.
    pub log: LogSettings,
    /// Background reconciliation of unfinished uploads, retention and purging.
    pub reconciler: ReconcilerSettings,
    /// Storage event notifications accepted, keyed by backend name.
    pub storage_events: BTreeMap<String, StorageEventSettings>,
    /// The message broker events are published to.
    pub amqp: AmqpSettings,
}

/// RabbitMQ (AMQP 0-9-1) publishing of file events.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpSettings {
    /// `amqp://` or `amqps://` URL of the broker; absent = events stay in the outbox.
    pub url: Option<String>,
    /// Topic exchange events are published to.
    pub exchange: String,
    /// Declare the exchange (durable topic) at connection; off for locked-down brokers.
    pub declare: bool,
    /// Connection name shown by the broker (default `valet@<hostname>`).
    pub connection_name: Option<String>,
    /// Heartbeat interval in seconds (0 = the broker's choice).
    pub heartbeat_secs: u16,
    /// Seconds to wait for the broker to confirm a message before reconnecting.
    pub publish_timeout_secs: u64,
    /// Outbox rows claimed per round.
    pub batch_size: i64,
    /// Seconds between outbox polls when nothing wakes the relay.
    pub poll_interval_secs: u64,
    /// Seconds a claim keeps other instances off rows being published.
    pub claim_lease_secs: u64,
    /// Longest wait between reconnection attempts, in seconds.
    pub max_backoff_secs: u64,
    /// Hours published rows are kept in the outbox (0 = keep).
    pub retention_hours: u64,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            url: None,
            exchange: "valet.events".into(),
            declare: true,
            connection_name: None,
            heartbeat_secs: 30,
            publish_timeout_secs: 10,
            batch_size: 100,
            poll_interval_secs: 5,
            claim_lease_secs: 60,
            max_backoff_secs: 30,
            retention_hours: 168,
        }
    }
}

/// Storage event notifications from one backend (`POST /v1/storage-events/<backend>`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageEventSettings {
    /// Shared secret the store sends as `Authorization: Bearer <secret>` (at least 16 bytes).
    pub secret: Secret,
}

/// Background reconciliation settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcilerSettings {
    /// Run the reconciler in this instance.
    pub enabled: bool,
    /// Seconds between passes.
    pub interval_secs: u64,
    /// Seconds after an upload URL expires before its file is reconciled.
    pub grace_secs: u64,
    /// Files claimed per pass.
    pub batch_size: i64,
    /// Seconds a claim keeps other instances off a file (and before a failed file is retried).
    pub lease_secs: u64,
    /// Days after which rejected, expired and deleted records are purged (0 = keep).
    pub purge_after_days: u32,
}

impl Default for ReconcilerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 60,
            grace_secs: 300,
            batch_size: 100,
            lease_secs: 300,
            purge_after_days: 30,
        }
    }
}

/// HTTP server settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port.
    pub bind: String,
    /// Base URL devices use to reach valet (signed URLs of the local backend point here).
    pub public_url: Option<String>,
    /// Number of HTTP worker threads (default: one per core).
    pub workers: Option<usize>,
    /// Largest JSON request body accepted, in bytes.
    pub json_limit_bytes: usize,
    /// PEM certificate chain to serve HTTPS with (plain HTTP when absent).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: clients presenting a certificate it signed are verified;
    /// requests with service tokens must then present one (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// Seconds between checks of the certificate files for changes (0 = only on SIGHUP).
    pub tls_reload_interval_secs: u64,
    /// Networks whose `X-Forwarded-For`/`-Proto` headers are believed (CIDR list).
    pub trusted_proxies: Vec<String>,
    /// Requests handled at once; beyond it valet answers 503 with `Retry-After`.
    pub max_in_flight: usize,
    /// Longest an API request may take, in seconds (503 `unavailable` after).
    pub request_timeout_secs: u64,
    /// Seconds a new connection has to send its first request head.
    pub request_head_timeout_secs: u64,
    /// Longest an object transfer through the local store may take, in seconds.
    pub transfer_timeout_secs: u64,
    /// Seconds a graceful shutdown (SIGTERM) waits for in-flight requests.
    pub shutdown_timeout_secs: u64,
}

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

/// Token verification settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Generate (on first start) and trust a development root key in `data_dir`.
    pub dev_key: bool,
    /// Root public keys tokens may be signed with, selected by the token's root key id.
    pub trusted_keys: Vec<TrustedKey>,
    /// Threads verifying tokens (signature checks are CPU work).
    pub validator_threads: usize,
    /// Verified tokens remembered, so each distinct token's signature is checked
    /// once (0: verify on every request). A token's checks still run per request.
    pub token_cache_capacity: u64,
    /// Longest a verified token is remembered, in seconds.
    pub token_cache_ttl_secs: u64,
}

/// One trusted root public key.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    /// Key id carried by tokens as `root_key_id`.
    pub id: u32,
    /// Public key as printed by `valet keys generate` (`ed25519/<hex>`).
    pub public_key: String,
}

/// Upload limits and URL lifetimes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UploadSettings {
    /// Largest file a device may declare, in bytes.
    pub max_upload_bytes: u64,
    /// Lifetime of upload URLs, in seconds.
    pub upload_url_ttl_secs: u64,
    /// Lifetime of download URLs, in seconds.
    pub download_url_ttl_secs: u64,
}

/// One named storage backend.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendSettings {
    /// valet's own store on the local file system.
    Local {
        /// Directory holding the objects (default `<data_dir>/objects`).
        root: Option<PathBuf>,
        /// URL signing secret, at least 32 bytes (default: generated into
        /// `<data_dir>/local-signing.key` on first start).
        secret: Option<Secret>,
    },
    /// AWS S3 or an S3-compatible store (MinIO: `endpoint` and `path_style = true`).
    S3 {
        /// Bucket holding the objects.
        bucket: String,
        /// Region the bucket is in (the signing scope; MinIO accepts any).
        #[serde(default = "default_region")]
        region: String,
        /// Where valet reaches the store (default `https://s3.<region>.amazonaws.com`).
        #[serde(default)]
        endpoint: Option<String>,
        /// Where devices reach the store, when not at `endpoint`; signed URLs use it.
        #[serde(default)]
        public_endpoint: Option<String>,
        /// Path-style URLs (`endpoint/bucket/key`) instead of virtual-host style.
        #[serde(default)]
        path_style: bool,
        /// Access key id; absent: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`.
        #[serde(default)]
        access_key_id: Option<String>,
        /// Secret access key.
        #[serde(default)]
        secret_access_key: Option<Secret>,
        /// Session token of temporary credentials.
        #[serde(default)]
        session_token: Option<Secret>,
        /// Use the SHA-256 S3 stored with the object (bound at upload) instead of reading it.
        #[serde(default = "yes")]
        trust_storage_checksum: bool,
        /// Start-up probe: `write` (write, stat, delete an object) or `read-only` (list).
        #[serde(default)]
        probe: ProbeMode,
    },
    /// Azure Blob Storage (or Azurite).
    Azblob {
        /// Storage account name.
        account: String,
        /// Container holding the objects.
        container: String,
        /// Account endpoint (default `https://<account>.blob.core.windows.net`).
        #[serde(default)]
        endpoint: Option<String>,
        /// Where devices reach the store, when not at `endpoint`; SAS URLs use it.
        #[serde(default)]
        public_endpoint: Option<String>,
        /// Account key (base64), used to sign service SAS.
        account_key: Secret,
        /// Start-up probe: `write` or `read-only`.
        #[serde(default)]
        probe: ProbeMode,
    },
}

/// How a backend is checked at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeMode {
    /// Write, stat and delete a small object.
    #[default]
    Write,
    /// List only (for credentials that may not write outside uploads).
    ReadOnly,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn yes() -> bool {
    true
}

/// Per-tenant settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    /// Backend new files of this tenant go to.
    pub backend: Option<String>,
    /// Days after upload when this tenant's files are deleted (object and record).
    pub retention_days: Option<u32>,
}

/// Event envelope settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    /// CloudEvents `source` (default `valet://<hostname>`).
    pub source: Option<String>,
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Filter directive (`info`, `valet=debug,actix_web=info`, …); `RUST_LOG` wins.
    pub level: String,
    /// `pretty` or `json`.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// A configured secret: never printed, never logged.
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./valet-data"),
            server: ServerSettings::default(),
            database: DatabaseSettings::default(),
            cache: CacheSettings::default(),
            auth: AuthSettings::default(),
            uploads: UploadSettings::default(),
            backends: BTreeMap::new(),
            default_backend: "local".into(),
            tenants: BTreeMap::new(),
            events: EventSettings::default(),
            log: LogSettings::default(),
            reconciler: ReconcilerSettings::default(),
            storage_events: BTreeMap::new(),
            amqp: AmqpSettings::default(),
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            public_url: None,
            workers: None,
            json_limit_bytes: 64 * 1024,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_reload_interval_secs: 30,
            trusted_proxies: Vec::new(),
            max_in_flight: 1024,
            request_timeout_secs: 30,
            request_head_timeout_secs: 30,
            transfer_timeout_secs: 3600,
            shutdown_timeout_secs: 30,
        }
    }
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

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            dev_key: true,
            trusted_keys: Vec::new(),
            validator_threads: 2,
            token_cache_capacity: 10_000,
            token_cache_ttl_secs: 600,
        }
    }
}

impl Default for UploadSettings {
    fn default() -> Self {
        Self {
            max_upload_bytes: 5 * 1024 * 1024 * 1024,
            upload_url_ttl_secs: 15 * 60,
            download_url_ttl_secs: 15 * 60,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Pretty,
        }
    }
}

impl Settings {
    /// Reads the file (if any) and the environment, fills defaults and validates.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(
            Env::prefixed("VALET_")
                .filter(|key| {
                    !NON_CONFIG_ENV
                        .iter()
                        .any(|name| key.as_str().eq_ignore_ascii_case(name))
                })
                .split("__"),
        );
        let settings: Settings = figment.extract().context("invalid configuration")?;
        settings.finish()
    }

    /// Fills derived defaults and validates; used by [`Settings::load`] and by tests
    /// that build settings in code.
    pub fn finish(mut self) -> anyhow::Result<Self> {
        if self.backends.is_empty() {
            self.backends.insert(
                "local".into(),
                BackendSettings::Local {
                    root: None,
                    secret: None,
                },
            );
        }
        self.validate()?;
        Ok(self)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let bind = self.bind_addr()?;
        self.public_url()?;
        if bind.ip().is_unspecified() && self.server.public_url.is_none() {
            // Signed URLs would point at 0.0.0.0, which no device can reach.
            bail!(
                "server.bind {} listens on every interface: set server.public_url to the URL devices reach valet at",
                self.server.bind
            );
        }
        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                bail!("server.tls_cert and server.tls_key must be set together")
            }
            (None, None) if self.server.tls_client_ca.is_some() => {
                bail!("server.tls_client_ca needs server.tls_cert and server.tls_key")
            }
            _ => {}
        }
        self.trusted_proxies()?;
        for (what, value) in [
            ("server.max_in_flight", self.server.max_in_flight as u64),
            (
                "server.request_timeout_secs",
                self.server.request_timeout_secs,
            ),
            (
                "server.request_head_timeout_secs",
                self.server.request_head_timeout_secs,
            ),
            (
                "server.transfer_timeout_secs",
                self.server.transfer_timeout_secs,
            ),
        ] {
            if value == 0 {
                bail!("{what} must be at least 1");
            }
        }
        for (what, value) in [
            ("reconciler.interval_secs", self.reconciler.interval_secs),
            ("reconciler.lease_secs", self.reconciler.lease_secs),
            (
                "reconciler.batch_size",
                self.reconciler.batch_size.max(0) as u64,
            ),
        ] {
            if value == 0 {
                bail!("{what} must be at least 1");
            }
        }
        if let Some(url) = &self.amqp.url {
            let ok = url::Url::parse(url)
                .map(|u| matches!(u.scheme(), "amqp" | "amqps"))
                .unwrap_or(false);
            if !ok {
                // Never echo the URL: it may hold a password.
                bail!("amqp.url must be an amqp:// or amqps:// URL");
            }
        }
        if self.amqp.exchange.is_empty() || self.amqp.exchange.len() > 255 {
            bail!("amqp.exchange must be 1 to 255 bytes");
        }
        for (what, value) in [
            ("amqp.publish_timeout_secs", self.amqp.publish_timeout_secs),
            ("amqp.batch_size", self.amqp.batch_size.max(0) as u64),
            ("amqp.poll_interval_secs", self.amqp.poll_interval_secs),
            ("amqp.claim_lease_secs", self.amqp.claim_lease_secs),
            ("amqp.max_backoff_secs", self.amqp.max_backoff_secs),
        ] {
            if value == 0 {
                bail!("{what} must be at least 1");
            }
        }
        for (backend, events) in &self.storage_events {
            if !self.backends.contains_key(backend) {
                bail!(
                    "storage_events.{backend}: no such backend (configured: {})",
                    self.backend_names()
                );
            }
            if events.secret.expose().len() < 16 {
                bail!("storage_events.{backend}.secret must be at least 16 bytes");
            }
        }
        for (tenant, t) in &self.tenants {
            if t.retention_days == Some(0) {
                bail!("tenants.{tenant}.retention_days must be at least 1 (leave it out to keep files)");
            }
        }
        if let Some(workers) = self.server.workers {
            if !(1..=512).contains(&workers) {
                bail!("server.workers must be between 1 and 512");
            }
        }
        if !self.backends.contains_key(&self.default_backend) {
            bail!(
                "default_backend {:?} is not a configured backend (configured: {})",
                self.default_backend,
                self.backend_names()
            );
        }
        for (tenant, t) in &self.tenants {
            if let Some(backend) = &t.backend {
                if !self.backends.contains_key(backend) {
                    bail!(
                        "tenants.{tenant}.backend {backend:?} is not a configured backend (configured: {})",
                        self.backend_names()
                    );
                }
            }
        }
        for (name, backend) in &self.backends {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                bail!("backend name {name:?} must be letters, digits, '-' or '_'");
            }
            match backend {
                BackendSettings::Local { secret, .. } => {
                    if secret.as_ref().is_some_and(|s| s.expose().len() < 32) {
                        bail!("backends.{name}.secret must be at least 32 bytes");
                    }
                }
                BackendSettings::S3 {
                    bucket,
                    endpoint,
                    public_endpoint,
                    access_key_id,
                    secret_access_key,
                    ..
                } => {
                    if bucket.is_empty() {
                        bail!("backends.{name}.bucket must not be empty");
                    }
                    check_http_url(name, "endpoint", endpoint)?;
                    check_http_url(name, "public_endpoint", public_endpoint)?;
                    if access_key_id.is_some() != secret_access_key.is_some() {
                        bail!("backends.{name}: access_key_id and secret_access_key go together");
                    }
                }
                BackendSettings::Azblob {
                    account,
                    container,
                    endpoint,
                    public_endpoint,
                    account_key,
                    ..
                } => {
                    if account.is_empty() || container.is_empty() {
                        bail!("backends.{name}: account and container must not be empty");
                    }
                    check_http_url(name, "endpoint", endpoint)?;
                    check_http_url(name, "public_endpoint", public_endpoint)?;
                    use base64::Engine;
                    if base64::engine::general_purpose::STANDARD
                        .decode(account_key.expose().trim())
                        .is_err()
                    {
                        bail!("backends.{name}.account_key is not base64");
                    }
                }
            }
        }
        for (what, ttl) in [
            (
                "uploads.upload_url_ttl_secs",
                self.uploads.upload_url_ttl_secs,
            ),
            (
                "uploads.download_url_ttl_secs",
                self.uploads.download_url_ttl_secs,
            ),
        ] {
            if ttl == 0 || ttl > MAX_URL_TTL_SECS {
                bail!("{what} must be between 1 and {MAX_URL_TTL_SECS} seconds");
            }
        }
        if self.uploads.max_upload_bytes == 0 {
            bail!("uploads.max_upload_bytes must be at least 1");
        }
        if let Some(url) = &self.cache.url {
            let ok = url::Url::parse(url)
                .map(|u| matches!(u.scheme(), "redis" | "rediss"))
                .unwrap_or(false);
            if !ok {
                bail!("cache.url must be a redis:// or rediss:// URL");
            }
        }
        if self.cache.timeout_ms == 0 || self.cache.ttl_secs == 0 {
            bail!("cache.timeout_ms and cache.ttl_secs must be at least 1");
        }
        if self.database.pool_size == 0 {
            bail!("database.pool_size must be at least 1");
        }
        if self.auth.validator_threads == 0 {
            bail!("auth.validator_threads must be at least 1");
        }
        if self.auth.token_cache_ttl_secs == 0 {
            bail!("auth.token_cache_ttl_secs must be at least 1");
        }
        if !self.auth.dev_key && self.auth.trusted_keys.is_empty() {
            bail!("auth.dev_key is off and auth.trusted_keys is empty: no token could ever be accepted");
        }
        let url = self.database_url();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Never echo the URL: it may hold a password.
            if url::Url::parse(&url).is_err() {
                bail!("database.url is not a valid postgres:// URL");
            }
        } else if !url.starts_with("sqlite://") {
            bail!("database.url must start with sqlite:// or postgres://");
        }
        Ok(())
    }

    fn backend_names(&self) -> String {
        self.backends.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// The socket address to listen on.
    pub fn bind_addr(&self) -> anyhow::Result<SocketAddr> {
        self.server
            .bind
            .parse()
            .with_context(|| format!("server.bind {:?} is not an address:port", self.server.bind))
    }

    /// JSON Schema of the configuration (checked against the README's reference).
    pub fn json_schema() -> serde_json::Value {
        serde_json::Value::from(schemars::schema_for!(Settings))
    }

    /// The networks whose forwarding headers are trusted.
    pub fn trusted_proxies(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        self.server
            .trusted_proxies
            .iter()
            .map(|net| {
                net.parse::<ipnet::IpNet>()
                    .or_else(|_| net.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .with_context(|| {
                        format!("server.trusted_proxies: {net:?} is not an address or CIDR network")
                    })
            })
            .collect()
    }

    /// Whether valet serves HTTPS itself.
    pub fn tls_enabled(&self) -> bool {
        self.server.tls_cert.is_some()
    }

    /// Base URL devices reach valet at (for a port-0 bind, see `startup`).
    pub fn public_url(&self) -> anyhow::Result<url::Url> {
        let scheme = if self.tls_enabled() { "https" } else { "http" };
        let raw = match &self.server.public_url {
            Some(url) => url.clone(),
            None => format!("{scheme}://{}", self.server.bind),
        };
        let url = url::Url::parse(&raw)
            .with_context(|| format!("server.public_url {raw:?} is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("server.public_url must be http or https");
        }
        Ok(url)
    }

    /// The AMQP connection name, defaulting to `valet@<hostname>`.
    pub fn amqp_connection_name(&self) -> String {
        self.amqp.connection_name.clone().unwrap_or_else(|| {
            let host = hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "unknown".into());
            format!("valet@{host}")
        })
    }

    /// The database URL, defaulting to SQLite in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("valet.db").display()),
        }
    }

    /// Where the development root key pair is kept.
    pub fn dev_key_path(&self) -> PathBuf {
        self.data_dir.join("dev-root-key.toml")
    }

    /// Where a generated local-backend signing secret is kept.
    pub fn local_secret_path(&self) -> PathBuf {
        self.data_dir.join("local-signing.key")
    }

    /// CloudEvents `source` attribute.
    pub fn event_source(&self) -> String {
        match &self.events.source {
            Some(source) => source.clone(),
            None => {
                let host = hostname::get()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .unwrap_or_else(|| "localhost".into());
                format!("valet://{host}")
            }
        }
    }

    /// The backend new files of `tenant` go to.
    pub fn backend_for_tenant(&self, tenant: &str) -> &str {
        self.tenants
            .get(tenant)
            .and_then(|t| t.backend.as_deref())
            .unwrap_or(&self.default_backend)
    }

    /// The effective configuration as TOML, secrets and passwords redacted.
    pub fn to_redacted_toml(&self) -> anyhow::Result<String> {
        let mut copy = self.clone();
        copy.database.url = Some(redact_url_password(&self.database_url()));
        copy.cache.url = self.cache.url.as_deref().map(redact_url_password);
        copy.amqp.url = self.amqp.url.as_deref().map(redact_url_password);
        Ok(toml::to_string_pretty(&copy)?)
    }
}

fn check_http_url(backend: &str, what: &str, url: &Option<String>) -> anyhow::Result<()> {
    if let Some(url) = url {
        let ok = url::Url::parse(url)
            .map(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .unwrap_or(false);
        if !ok {
            bail!("backends.{backend}.{what} must be an http:// or https:// URL");
        }
    }
    Ok(())
}

/// Hides the passwords of a database URL: the userinfo password and libpq's
/// `password=` / `sslpassword=` query parameters. A URL that does not parse is
/// hidden whole, since where its password is cannot be known.
fn redact_url_password(raw: &str) -> String {
    const HIDDEN: &str = "REDACTED";
    let Ok(mut url) = url::Url::parse(raw) else {
        return "[unparseable URL hidden]".into();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some(HIDDEN));
    }
    let secret_param =
        |k: &str| k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword");
    if url.query_pairs().any(|(k, _)| secret_param(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret_param(&k) {
                    HIDDEN.into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_config_is_the_embedded_default() {
        let s = Settings::default().finish().unwrap();
        assert_eq!(s.database_url(), "sqlite://./valet-data/valet.db");
        assert_eq!(s.backend_for_tenant("acme"), "local");
        assert!(s.auth.dev_key);
    }

    #[test]
    // figment's Jail fixes the closure's error type.
    #[allow(clippy::result_large_err)]
    fn environment_overrides_the_file_and_client_variables_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("valet.toml", "[server]\nbind = \"127.0.0.1:1\"\n")?;
            jail.set_env("VALET_SERVER__BIND", "127.0.0.1:2");
            jail.set_env("VALET_CONFIG", "valet.toml");
            jail.set_env("VALET_TOKEN", "secret");
            jail.set_env("VALET_API_URL", "http://x");
            let s = Settings::load(Some(Path::new("valet.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.server.bind, "127.0.0.1:2");
            jail.set_env("VALET_SERVRE__BIND", "typo");
            assert!(Settings::load(None).is_err(), "unknown options are refused");
            Ok(())
        });
    }

    #[test]
    fn unknown_backend_is_refused() {
        let s = Settings {
            default_backend: "nope".into(),
            ..Settings::default()
        };
        assert!(s.finish().is_err());
    }

    #[test]
    fn passwords_and_secrets_are_redacted() {
        let mut s = Settings::default();
        s.database.url = Some("postgres://valet:hunter2@db/valet".into());
        s.backends.insert(
            "local".into(),
            BackendSettings::Local {
                root: None,
                secret: Some(Secret("x".repeat(40))),
            },
        );
        let out = s.finish().unwrap().to_redacted_toml().unwrap();
        assert!(!out.contains("hunter2"));
        assert!(
            redact_url_password("postgres://u@h/d?sslmode=require&password=p4ss")
                .ends_with("password=REDACTED")
        );
        assert!(!redact_url_password("postgres://u:p4ss@h:5x/d").contains("p4ss"));
        assert!(!out.contains(&"x".repeat(40)));
        assert!(out.contains("[redacted]"));
    }
}
