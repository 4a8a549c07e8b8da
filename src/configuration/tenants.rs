//! `[tenants.<id>]`: per-tenant backend routing and retention.

use anyhow::bail;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Per-tenant settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    /// Backend new files of this tenant go to.
    pub backend: Option<String>,
    /// Days after upload when this tenant's files are deleted (object and record).
    pub retention_days: Option<u32>,
}

impl TenantSettings {
    /// Checks the entry of `tenant` (that its backend exists is checked by `Settings`).
    pub(super) fn validate(&self, tenant: &str) -> anyhow::Result<()> {
        if self.retention_days == Some(0) {
            bail!(
                "tenants.{tenant}.retention_days must be at least 1 (leave it out to keep files)"
            );
        }
        Ok(())
    }
}
