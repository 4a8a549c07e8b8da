//! `[reconciler]`: background reconciliation of unfinished uploads, retention and
//! purging.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::at_least_one;

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

impl ReconcilerSettings {
    /// Checks the section.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        at_least_one(&[
            ("reconciler.interval_secs", self.interval_secs),
            ("reconciler.lease_secs", self.lease_secs),
            (
                "reconciler.batch_size",
                u64::try_from(self.batch_size).unwrap_or(0),
            ),
        ])
    }

    /// `interval_secs` as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }
}
