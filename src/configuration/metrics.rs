//! `[metrics]`: what `/metrics` exposes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Metrics settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Label `valet_file_operations_total` with the device too: one series per device
    /// and operation, which a large fleet turns into millions. Off: per tenant only.
    pub per_device: bool,
}
