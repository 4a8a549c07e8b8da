//! `[storage_events.<backend>]`: object-store notifications valet accepts.

use anyhow::bail;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Secret;

/// Storage event notifications from one backend (`POST /v1/storage-events/<backend>`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageEventSettings {
    /// Shared secret the store sends as `Authorization: Bearer <secret>` (at least 16 bytes).
    pub secret: Secret,
}

impl StorageEventSettings {
    /// Checks the entry of `backend` (that the backend exists is checked by `Settings`).
    pub(super) fn validate(&self, backend: &str) -> anyhow::Result<()> {
        if self.secret.expose().len() < 16 {
            bail!("storage_events.{backend}.secret must be at least 16 bytes");
        }
        Ok(())
    }
}
