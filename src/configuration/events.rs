//! `[events]`: the CloudEvents envelope of published file events.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Event envelope settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    /// CloudEvents `source` (default `valet://<hostname>`).
    pub source: Option<String>,
}
