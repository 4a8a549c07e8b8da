//! `[auth]`: which root keys biscuit tokens may be signed with (in the file, or a key
//! set fetched by URL), which JWT issuers are trusted, and how verification runs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::bail;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::jwt::JwtIssuerSettings;
use super::{at_least_one, url_with_scheme};

/// Token verification settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Generate (on first start) and trust a development root key in `data_dir`.
    pub dev_key: bool,
    /// Root public keys tokens may be signed with, selected by the token's root key id.
    pub trusted_keys: Vec<TrustedKey>,
    /// URL of a JSON document of further root public keys, fetched at start and
    /// refreshed, so keys are rotated without a restart.
    pub key_set_url: Option<String>,
    /// Shortest time between two fetches of `key_set_url`, in seconds (scheduled or
    /// prompted by an unknown key id).
    pub key_set_min_refresh_secs: u64,
    /// Longest time between two fetches of `key_set_url`, in seconds.
    pub key_set_max_refresh_secs: u64,
    /// Trusted JWT issuers, by a name of your choosing.
    pub jwt: BTreeMap<String, JwtIssuerSettings>,
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

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            dev_key: true,
            trusted_keys: Vec::new(),
            key_set_url: None,
            key_set_min_refresh_secs: 60,
            key_set_max_refresh_secs: 3600,
            jwt: BTreeMap::new(),
            validator_threads: 2,
            token_cache_capacity: 10_000,
            token_cache_ttl_secs: 600,
        }
    }
}

impl AuthSettings {
    /// Checks the section.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        at_least_one(&[
            ("auth.validator_threads", self.validator_threads as u64),
            ("auth.token_cache_ttl_secs", self.token_cache_ttl_secs),
            (
                "auth.key_set_min_refresh_secs",
                self.key_set_min_refresh_secs,
            ),
        ])?;
        if self.key_set_max_refresh_secs < self.key_set_min_refresh_secs {
            bail!("auth.key_set_max_refresh_secs must be at least auth.key_set_min_refresh_secs");
        }
        if let Some(url) = &self.key_set_url {
            if url_with_scheme(url, &["https", "http"]).is_none() {
                bail!("auth.key_set_url {url:?} is not an http(s) URL");
            }
        }
        if !self.dev_key
            && self.trusted_keys.is_empty()
            && self.key_set_url.is_none()
            && self.jwt.is_empty()
        {
            bail!(
                "auth.dev_key is off and auth.trusted_keys, auth.key_set_url and auth.jwt \
                 are empty: no token could ever be accepted"
            );
        }
        let mut issuers = BTreeSet::new();
        for (name, issuer) in &self.jwt {
            issuer.validate(name)?;
            if !issuers.insert(issuer.issuer.as_str()) {
                bail!(
                    "auth.jwt.{name}.issuer {:?} is configured twice",
                    issuer.issuer
                );
            }
        }
        Ok(())
    }

    /// `key_set_min_refresh_secs` as a duration.
    pub fn key_set_min_refresh(&self) -> Duration {
        Duration::from_secs(self.key_set_min_refresh_secs)
    }

    /// `key_set_max_refresh_secs` as a duration.
    pub fn key_set_max_refresh(&self) -> Duration {
        Duration::from_secs(self.key_set_max_refresh_secs)
    }

    /// `token_cache_ttl_secs` as a duration.
    pub fn token_cache_ttl(&self) -> Duration {
        Duration::from_secs(self.token_cache_ttl_secs)
    }
}
