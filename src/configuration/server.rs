//! `[server]`: the HTTP listener, TLS, forwarding proxies and request limits.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use url::Url;

use super::at_least_one;

/// The address listened on when none is configured.
const DEFAULT_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

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
    /// Milliseconds each dependency check of `/readyz` may take before it is
    /// reported as timed out.
    pub readiness_check_timeout_ms: u64,
    /// Longest an object transfer through the local store may take, in seconds.
    pub transfer_timeout_secs: u64,
    /// Seconds a graceful shutdown (SIGTERM) waits for in-flight requests.
    pub shutdown_timeout_secs: u64,
    // The text fields above stay what is written (and what `config check` prints);
    // their parsed values are kept here, filled by `Settings::finish`.
    #[serde(skip)]
    #[schemars(skip)]
    pub(super) parsed: Parsed,
}

/// `bind`, `public_url` and `trusted_proxies` as parsed by [`ServerSettings::validate`].
#[derive(Debug, Clone)]
pub(super) struct Parsed {
    bind: SocketAddr,
    public_url: Option<Url>,
    trusted_proxies: Vec<IpNet>,
}

impl Default for Parsed {
    fn default() -> Self {
        Self {
            bind: DEFAULT_BIND,
            public_url: None,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: DEFAULT_BIND.to_string(),
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
            readiness_check_timeout_ms: 2000,
            transfer_timeout_secs: 3600,
            shutdown_timeout_secs: 30,
            parsed: Parsed::default(),
        }
    }
}

impl ServerSettings {
    /// Checks the section and parses its addresses, URL and networks.
    pub(super) fn validate(&self) -> anyhow::Result<Parsed> {
        let bind: SocketAddr = self
            .bind
            .parse()
            .with_context(|| format!("server.bind {:?} is not an address:port", self.bind))?;
        let public_url = self
            .public_url
            .as_deref()
            .map(parse_public_url)
            .transpose()?;
        if bind.ip().is_unspecified() && public_url.is_none() {
            // Signed URLs would point at 0.0.0.0, which no device can reach.
            bail!(
                "server.bind {} listens on every interface: set server.public_url to the URL devices reach valet at",
                self.bind
            );
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                bail!("server.tls_cert and server.tls_key must be set together")
            }
            (None, None) if self.tls_client_ca.is_some() => {
                bail!("server.tls_client_ca needs server.tls_cert and server.tls_key")
            }
            _ => {}
        }
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .map(|net| parse_network(net))
            .collect::<anyhow::Result<_>>()?;
        at_least_one(&[
            ("server.max_in_flight", self.max_in_flight as u64),
            ("server.request_timeout_secs", self.request_timeout_secs),
            (
                "server.request_head_timeout_secs",
                self.request_head_timeout_secs,
            ),
            ("server.transfer_timeout_secs", self.transfer_timeout_secs),
            (
                "server.readiness_check_timeout_ms",
                self.readiness_check_timeout_ms,
            ),
        ])?;
        if let Some(workers) = self.workers {
            if !(1..=512).contains(&workers) {
                bail!("server.workers must be between 1 and 512");
            }
        }
        Ok(Parsed {
            bind,
            public_url,
            trusted_proxies,
        })
    }

    /// The socket address to listen on.
    pub fn bind_addr(&self) -> SocketAddr {
        self.parsed.bind
    }

    /// The configured base URL devices reach valet at; absent, `startup` derives it
    /// from the address actually bound.
    pub fn public_url(&self) -> Option<&Url> {
        self.parsed.public_url.as_ref()
    }

    /// The networks whose forwarding headers are trusted.
    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.parsed.trusted_proxies
    }

    /// `request_timeout_secs` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// `readiness_check_timeout_ms` as a duration.
    pub fn readiness_check_timeout(&self) -> Duration {
        Duration::from_millis(self.readiness_check_timeout_ms)
    }

    /// `request_head_timeout_secs` as a duration.
    pub fn request_head_timeout(&self) -> Duration {
        Duration::from_secs(self.request_head_timeout_secs)
    }

    /// `transfer_timeout_secs` as a duration.
    pub fn transfer_timeout(&self) -> Duration {
        Duration::from_secs(self.transfer_timeout_secs)
    }

    /// `shutdown_timeout_secs` as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// `tls_reload_interval_secs` as a duration.
    pub fn tls_reload_interval(&self) -> Duration {
        Duration::from_secs(self.tls_reload_interval_secs)
    }
}

fn parse_public_url(raw: &str) -> anyhow::Result<Url> {
    let url = Url::parse(raw).with_context(|| format!("server.public_url {raw:?} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("server.public_url must be http or https");
    }
    Ok(url)
}

/// A CIDR network, or a bare address standing for itself alone.
fn parse_network(raw: &str) -> anyhow::Result<IpNet> {
    raw.parse::<IpNet>()
        .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
        .with_context(|| {
            format!("server.trusted_proxies: {raw:?} is not an address or CIDR network")
        })
}
