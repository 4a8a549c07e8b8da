//! `[auth]`: which root keys tokens may be signed with, and how verification runs.

use std::time::Duration;

use anyhow::bail;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::at_least_one;

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

impl AuthSettings {
    /// Checks the section.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        at_least_one(&[
            ("auth.validator_threads", self.validator_threads as u64),
            ("auth.token_cache_ttl_secs", self.token_cache_ttl_secs),
        ])?;
        if !self.dev_key && self.trusted_keys.is_empty() {
            bail!("auth.dev_key is off and auth.trusted_keys is empty: no token could ever be accepted");
        }
        Ok(())
    }

    /// `token_cache_ttl_secs` as a duration.
    pub fn token_cache_ttl(&self) -> Duration {
        Duration::from_secs(self.token_cache_ttl_secs)
    }
}
