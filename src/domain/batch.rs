//! Batches: files uploaded into a batch stay unannounced (no events, hidden from
//! other callers' listings) until the batch is committed, when one batch event and
//! then every file's `uploaded` event are recorded together.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{DeviceId, File, Principal, Root, TenantId};

/// Most files one batch holds (creating one more answers 409 `conflict`).
pub const MAX_BATCH_FILES: i64 = 10_000;
/// How long an open batch lives when its creator does not say.
pub const DEFAULT_BATCH_TTL_SECS: u64 = 24 * 3600;
/// Longest lifetime a creator may ask for.
pub const MAX_BATCH_TTL_SECS: u64 = 7 * 24 * 3600;

super::ids::time_ordered_id!(
    /// A batch's id: a UUIDv7, so ids sort by creation time.
    BatchId,
    "a batch"
);

/// The state of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchState {
    /// Taking files; nothing about them is announced yet.
    Open,
    /// Committed: its files are visible and their events recorded.
    Committed,
    /// Abandoned by a caller, or expired while open: its files were deleted.
    Abandoned,
}

super::stored_names::stored_names!(BatchState, "batch state" {
    Open => "open",
    Committed => "committed",
    Abandoned => "abandoned",
});

/// A batch as valet records it and the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Batch {
    /// UUIDv7 assigned at creation.
    #[schema(value_type = String, format = Uuid)]
    pub id: BatchId,
    /// Owning tenant.
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// The device root the batch's files live in; `null` for the tenant's shared root.
    #[schema(value_type = Option<String>)]
    pub device_id: Option<DeviceId>,
    /// Name given at creation.
    pub name: Option<String>,
    /// Caller-supplied string metadata.
    pub metadata: BTreeMap<String, String>,
    /// Lifecycle state.
    pub state: BatchState,
    /// When the batch was created (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// When an open batch is abandoned by the reconciler.
    pub expires_at: DateTime<Utc>,
    /// When it was committed; `null` until then.
    pub committed_at: Option<DateTime<Utc>>,
    /// Its files, oldest first (deleted ones left out); absent in listings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<File>>,
    /// Who opened it: `device:<id>` or `service:<name>`.
    #[serde(skip)]
    pub created_by: String,
}

impl Batch {
    /// The root the batch's files live in.
    pub fn root(&self) -> Root {
        match &self.device_id {
            Some(d) => Root::Device(d.clone()),
            None => Root::Shared,
        }
    }
}

/// How a principal is written in `created_by`.
pub fn principal_key(principal: &Principal) -> String {
    match principal {
        Principal::Device(d) => format!("device:{d}"),
        Principal::Service(s) => format!("service:{s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for state in [
            BatchState::Open,
            BatchState::Committed,
            BatchState::Abandoned,
        ] {
            assert_eq!(state.as_str().parse::<BatchState>(), Ok(state));
        }
        assert!("expired".parse::<BatchState>().is_err());
    }
}
