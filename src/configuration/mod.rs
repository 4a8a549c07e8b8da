//! valet's configuration: one TOML file plus `VALET_*` environment overrides.
//!
//! This module holds the root [`Settings`]: loading, derived defaults, the checks
//! that span sections and the helpers built on several of them. Each section
//! (`[server]`, `[database]`, `[backends.<name>]`, …) lives in its own module with
//! its defaults and its own validation. Every option has a default, so no file at
//! all gives the embedded default: SQLite and the local object store under
//! `./valet-data`, trusting a development key.

mod amqp;
mod auth;
mod backends;
mod cache;
mod database;
mod events;
mod jobs;
mod jwt;
mod logging;
mod metrics;
mod policy;
mod reconciler;
mod server;
mod storage_events;
mod tenants;
mod uploads;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use amqp::AmqpSettings;
pub use auth::{AuthSettings, TrustedKey};
pub use backends::BackendSettings;
pub use cache::CacheSettings;
pub use database::DatabaseSettings;
pub use events::EventSettings;
pub use jobs::JobsSettings;
pub use jwt::{
    Audience, ClaimNames, JwtIssuerSettings, DEFAULT_JWT_ALGORITHMS, SUPPORTED_JWT_ALGORITHMS,
};
pub use logging::{LogFormat, LogSettings};
pub use metrics::MetricsSettings;
pub use policy::{PolicySettings, TenantPolicy};
pub use reconciler::ReconcilerSettings;
pub use server::ServerSettings;
pub use storage_events::StorageEventSettings;
pub use tenants::TenantSettings;
pub use uploads::{UploadSettings, MAX_URL_TTL_SECS};
use valet_backends::local::LocalConfig;
pub use valet_backends::{ProbeMode, Secret};

/// Environment variables with the `VALET_` prefix that are not configuration options.
const NON_CONFIG_ENV: &[&str] = &["config", "token", "api_url", "test_time_factor"];

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
    /// Background copies and moves of objects between backends.
    pub jobs: JobsSettings,
    /// Storage event notifications accepted, keyed by backend name.
    pub storage_events: BTreeMap<String, StorageEventSettings>,
    /// The message broker events are published to.
    pub amqp: AmqpSettings,
    /// Quotas, limits and rate limits per tenant and device (reloaded on SIGHUP).
    pub policy: PolicySettings,
    /// What `/metrics` exposes.
    pub metrics: MetricsSettings,
    /// The file this configuration was read from, if any (to reload the policy).
    #[serde(skip)]
    #[schemars(skip)]
    pub source_file: Option<PathBuf>,
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
            jobs: JobsSettings::default(),
            storage_events: BTreeMap::new(),
            amqp: AmqpSettings::default(),
            policy: PolicySettings::default(),
            metrics: MetricsSettings::default(),
            source_file: None,
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
        let mut settings: Settings = figment.extract().context("invalid configuration")?;
        settings.source_file = path.map(Path::to_path_buf);
        settings.finish()
    }

    /// Fills derived defaults, validates, and parses the values kept as text (the
    /// server's addresses); used by [`Settings::load`] and by tests that build
    /// settings in code, after their last change.
    pub fn finish(mut self) -> anyhow::Result<Self> {
        if self.backends.is_empty() {
            self.backends.insert(
                "local".into(),
                BackendSettings::Local(LocalConfig::default()),
            );
        }
        self.server.parsed = self.validate()?;
        Ok(self)
    }

    /// Checks every section, then the references between them; returns what the
    /// server section parsed on the way.
    fn validate(&self) -> anyhow::Result<server::Parsed> {
        let parsed = self.server.validate()?;
        self.reconciler.validate()?;
        self.jobs.validate()?;
        self.policy.validate()?;
        self.amqp.validate()?;
        for (backend, events) in &self.storage_events {
            if !self.backends.contains_key(backend) {
                bail!(
                    "storage_events.{backend}: no such backend (configured: {})",
                    self.backend_names()
                );
            }
            events.validate(backend)?;
        }
        for (tenant, t) in &self.tenants {
            t.validate(tenant)?;
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
            backend.validate(name)?;
        }
        self.uploads.validate()?;
        self.cache.validate()?;
        self.database.validate()?;
        self.auth.validate()?;
        Ok(parsed)
    }

    fn backend_names(&self) -> String {
        self.backends.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// JSON Schema of the configuration (checked against the README's reference).
    pub fn json_schema() -> serde_json::Value {
        serde_json::Value::from(schemars::schema_for!(Settings))
    }

    /// Whether valet serves HTTPS itself.
    pub fn tls_enabled(&self) -> bool {
        self.server.tls_cert.is_some()
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

    /// The base URL devices reach valet at when it listens on `bound`: the
    /// configured `server.public_url`, else the bound address (`https` with TLS).
    pub fn public_url_for(&self, bound: SocketAddr) -> anyhow::Result<url::Url> {
        if let Some(url) = self.server.public_url() {
            return Ok(url.clone());
        }
        let scheme = if self.tls_enabled() { "https" } else { "http" };
        Ok(url::Url::parse(&format!("{scheme}://{bound}"))?)
    }

    /// The local store's root directory: configured, or `objects` under `data_dir`.
    pub fn local_root(&self, config: &LocalConfig) -> PathBuf {
        config
            .root
            .clone()
            .unwrap_or_else(|| self.data_dir.join("objects"))
    }

    /// HTTP worker threads: configured, or one per CPU (actix's default).
    pub fn workers(&self) -> usize {
        self.server.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// The configuration as it will run: the defaults derived from the machine or
    /// from other settings written out (`server.public_url` unless the port is
    /// chosen at start, `server.workers`, each local store's `root`,
    /// `events.source`), so `valet config check` shows what valet will use.
    pub fn effective(&self) -> Settings {
        let mut copy = self.clone();
        let bind = self.server.bind_addr();
        if bind.port() != 0 {
            copy.server.public_url = self.public_url_for(bind).ok().map(String::from);
        }
        copy.server.workers = Some(self.workers());
        for backend in copy.backends.values_mut() {
            if let BackendSettings::Local(config) = backend {
                config.root = Some(self.local_root(config));
            }
        }
        copy.events.source = Some(self.event_source());
        copy.database.url = Some(self.database_url());
        copy
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

/// Fails with "`name` must be at least 1" for the first of `values` that is 0.
fn at_least_one(values: &[(&str, u64)]) -> anyhow::Result<()> {
    match values.iter().find(|(_, value)| *value == 0) {
        Some((name, _)) => bail!("{name} must be at least 1"),
        None => Ok(()),
    }
}

/// `raw` as a URL, if it parses and its scheme is one of `schemes`.
fn url_with_scheme(raw: &str, schemes: &[&str]) -> Option<url::Url> {
    url::Url::parse(raw)
        .ok()
        .filter(|url| schemes.contains(&url.scheme()))
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
        assert_eq!(s.server.bind_addr().to_string(), "127.0.0.1:8080");
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
    fn server_addresses_are_parsed_once_and_printed_as_written() {
        let mut s = Settings::default();
        s.server.bind = "[::1]:0".into();
        s.server.public_url = Some("https://files.example.com".into());
        s.server.trusted_proxies = vec!["10.0.0.1".into(), "192.168.0.0/16".into()];
        let s = s.finish().unwrap();
        assert_eq!(s.server.bind_addr(), "[::1]:0".parse().unwrap());
        assert_eq!(
            s.server.public_url().map(url::Url::as_str),
            Some("https://files.example.com/")
        );
        let proxies: Vec<String> = s
            .server
            .trusted_proxies()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(proxies, ["10.0.0.1/32", "192.168.0.0/16"]);
        let out = s.to_redacted_toml().unwrap();
        assert!(
            out.contains("public_url = \"https://files.example.com\"\n"),
            "{out}"
        );
        assert!(out.contains("\"10.0.0.1\","), "{out}");
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
            BackendSettings::Local(LocalConfig {
                root: None,
                secret: Some(Secret::new("x".repeat(40))),
            }),
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
