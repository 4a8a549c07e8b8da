//! Transfers between devices of a tenant: a device's inbox (whom it accepts files
//! from), and a transfer offering one uploaded file to recipients until it expires
//! or is revoked.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use super::{sha256_schema, DeviceId, FileId, ServiceName, Sha256, TenantId};

/// Most devices one allow list names.
pub const MAX_ACCEPT_FROM: usize = 1000;
/// Most recipients of one transfer.
pub const MAX_RECIPIENTS: usize = 100;
/// How long a transfer lives when the sender does not say.
pub const DEFAULT_TRANSFER_TTL_SECS: u64 = 7 * 24 * 3600;
/// Longest lifetime a sender may ask for.
pub const MAX_TRANSFER_TTL_SECS: u64 = 30 * 24 * 3600;

super::ids::time_ordered_id!(
    /// A transfer's id: a UUIDv7, so ids sort by creation time.
    TransferId,
    "a transfer"
);

/// The state of a transfer, and of each of its recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TransferState {
    /// Offered; the recipient has not accepted it yet (for a transfer: some
    /// recipient has not).
    Offered,
    /// Accepted by the recipient (for a transfer: by every recipient).
    Received,
    /// Revoked by its sender or a service, or its file was deleted.
    Revoked,
    /// Past its `expires_at`.
    Expired,
}

impl TransferState {
    /// Whether the file can still be downloaded through the transfer.
    pub const fn is_live(&self) -> bool {
        matches!(self, TransferState::Offered | TransferState::Received)
    }
}

super::stored_names::stored_names!(TransferState, "transfer state" {
    Offered => "offered",
    Received => "received",
    Revoked => "revoked",
    Expired => "expired",
});

/// Whom a device accepts files from: `"*"` (any device of its tenant) or a list
/// of device ids (empty: nobody). Services may always send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptFrom {
    /// Any device of the tenant.
    Anyone,
    /// These devices only.
    Devices(Vec<DeviceId>),
}

impl Default for AcceptFrom {
    /// A device accepts nothing until it says otherwise.
    fn default() -> Self {
        AcceptFrom::Devices(Vec::new())
    }
}

impl AcceptFrom {
    /// Whether `sender` (a device of the same tenant) may send here.
    pub fn accepts(&self, sender: &DeviceId) -> bool {
        match self {
            AcceptFrom::Anyone => true,
            AcceptFrom::Devices(devices) => devices.contains(sender),
        }
    }
}

impl Serialize for AcceptFrom {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AcceptFrom::Anyone => s.serialize_str("*"),
            AcceptFrom::Devices(devices) => devices.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for AcceptFrom {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Star(String),
            Devices(Vec<String>),
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("accept_from must be \"*\" or an array of device ids")
        })?;
        match raw {
            Raw::Star(s) if s == "*" => Ok(AcceptFrom::Anyone),
            Raw::Star(_) => Err(serde::de::Error::custom(
                "accept_from must be \"*\" or an array of device ids",
            )),
            Raw::Devices(ids) => {
                if ids.len() > MAX_ACCEPT_FROM {
                    return Err(serde::de::Error::custom(format!(
                        "accept_from names at most {MAX_ACCEPT_FROM} devices"
                    )));
                }
                let mut devices = ids
                    .iter()
                    .map(|id| DeviceId::parse(id).map_err(serde::de::Error::custom))
                    .collect::<Result<Vec<_>, _>>()?;
                devices.sort();
                devices.dedup();
                Ok(AcceptFrom::Devices(devices))
            }
        }
    }
}

impl PartialSchema for AcceptFrom {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["*"]))
                    .description(Some("Any device of the tenant")),
            )
            .item(
                ArrayBuilder::new()
                    .items(DeviceId::schema())
                    .max_items(Some(MAX_ACCEPT_FROM))
                    .description(Some("These devices only (empty: nobody)")),
            )
            .description(Some(
                "Whom the device accepts files from: \"*\" or a list of device ids. \
                 Services of the tenant may always send.",
            ))
            .into()
    }
}

impl ToSchema for AcceptFrom {}

/// A device's inbox settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Inbox {
    /// The device.
    pub device_id: DeviceId,
    /// Whom it accepts files from.
    pub accept_from: AcceptFrom,
}

/// One recipient of a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Recipient {
    /// The receiving device.
    pub device_id: DeviceId,
    /// Its state: `offered` until it accepts, then `received`; a transfer revoked
    /// or expired before it accepted leaves it `revoked` or `expired`.
    pub state: TransferState,
}

/// What a recipient learns of the transferred file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TransferredFile {
    /// Name given at upload.
    pub name: String,
    /// Exact length in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    #[schema(schema_with = sha256_schema)]
    pub sha256: Sha256,
    /// Media type.
    pub content_type: String,
}

/// A transfer of one file to one or more devices of the same tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Transfer {
    /// UUIDv7 assigned at creation: the transfer id carried by all its events.
    #[schema(value_type = String, format = Uuid)]
    pub id: TransferId,
    /// Tenant of the file and of every party.
    #[serde(skip)]
    pub tenant_id: TenantId,
    /// The transferred file.
    #[schema(value_type = String, format = Uuid)]
    pub file_id: FileId,
    /// The sending device; `null` when a tenant service sent it.
    #[schema(value_type = Option<String>)]
    pub from: Option<DeviceId>,
    /// The sending service, when a service sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub from_service: Option<ServiceName>,
    /// Every recipient with its own state.
    pub recipients: Vec<Recipient>,
    /// `offered` until every recipient accepted (`received`); `revoked` or
    /// `expired` once it ended.
    pub state: TransferState,
    /// When it was created (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
    /// When downloads through it stop (RFC 3339, UTC).
    pub expires_at: DateTime<Utc>,
    /// The file's name, size, digest and type.
    pub file: TransferredFile,
}

impl Transfer {
    /// The recipient entry of `device`, if it is one.
    pub fn recipient(&self, device: &DeviceId) -> Option<&Recipient> {
        self.recipients.iter().find(|r| &r.device_id == device)
    }

    /// Whether the file can be downloaded through it at `now`.
    pub fn is_live_at(&self, now: DateTime<Utc>) -> bool {
        self.state.is_live() && self.expires_at > now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_from_reads_star_lists_and_nothing_else() {
        let any: AcceptFrom = serde_json::from_str("\"*\"").unwrap();
        assert_eq!(any, AcceptFrom::Anyone);
        assert!(any.accepts(&DeviceId::parse("x").unwrap()));
        let some: AcceptFrom = serde_json::from_str(r#"["dev-9","dev-7","dev-9"]"#).unwrap();
        assert!(some.accepts(&DeviceId::parse("dev-7").unwrap()));
        assert!(!some.accepts(&DeviceId::parse("dev-8").unwrap()));
        assert_eq!(
            serde_json::to_string(&some).unwrap(),
            r#"["dev-7","dev-9"]"#
        );
        let none: AcceptFrom = serde_json::from_str("[]").unwrap();
        assert_eq!(none, AcceptFrom::default());
        for bad in ["\"all\"", "[\"a/b\"]", "3", "null", "{}"] {
            assert!(serde_json::from_str::<AcceptFrom>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn states_round_trip() {
        for state in [
            TransferState::Offered,
            TransferState::Received,
            TransferState::Revoked,
            TransferState::Expired,
        ] {
            assert_eq!(state.as_str().parse::<TransferState>(), Ok(state));
        }
        assert!(TransferState::Received.is_live());
        assert!(!TransferState::Revoked.is_live());
    }
}
