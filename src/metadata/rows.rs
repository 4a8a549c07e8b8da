//! Conversions between the domain's `File` and its table row.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use super::schema::{files, outbox};
use crate::domain::{
    DeviceId, File, FileId, FileStatus, ObjectKey, PartPlan, Replica, Sha256, TenantId,
};
use valet_backends::UploadId;

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = files)]
pub(super) struct FileRow {
    pub id: String,
    pub tenant_id: String,
    pub device_id: Option<String>,
    pub name: String,
    pub size: i64,
    pub sha256: String,
    pub content_type: String,
    pub metadata: String,
    pub status: String,
    pub backend: String,
    pub object_key: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub uploaded_at: Option<NaiveDateTime>,
    pub upload_expires_at: NaiveDateTime,
    pub part_size: Option<i64>,
    pub multipart_upload_id: Option<String>,
    pub batch_id: Option<String>,
    pub replicas: Option<String>,
}

#[derive(Insertable)]
#[diesel(table_name = outbox)]
pub(super) struct NewOutboxRow<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub file_id: String,
    pub tenant_id: &'a str,
    pub device_id: Option<&'a str>,
    pub payload: &'a str,
    pub created_at: NaiveDateTime,
    pub attempts: i32,
    pub after_key: Option<String>,
}

/// One outbox entry, as `valet events list` shows it.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, serde::Serialize)]
#[diesel(table_name = outbox)]
pub struct OutboxEntry {
    /// Position in the outbox.
    pub seq: i64,
    /// CloudEvents id.
    pub event_id: String,
    /// CloudEvents type.
    pub event_type: String,
    /// File the event is about.
    pub file_id: String,
    /// Tenant of the file.
    pub tenant_id: String,
    /// Device of the file (`None` for shared).
    pub device_id: Option<String>,
    /// The CloudEvent JSON.
    pub payload: String,
    /// When it was recorded.
    pub created_at: NaiveDateTime,
    /// When the broker confirmed it (`None` while waiting).
    pub published_at: Option<NaiveDateTime>,
    /// Publish attempts so far.
    pub attempts: i32,
    /// Last publish error.
    pub last_error: Option<String>,
}

/// A row that does not decode: the database holds something valet did not write.
#[derive(Debug, thiserror::Error)]
#[error("corrupt file row {id}: {what}")]
pub struct CorruptRow {
    id: String,
    what: String,
}

impl FileRow {
    pub fn from_file(file: &File) -> Self {
        Self {
            id: file.id.to_string(),
            tenant_id: file.tenant_id.to_string(),
            device_id: file.device_id.as_ref().map(|d| d.to_string()),
            name: file.name.clone(),
            // Sizes are validated against max_upload_bytes, far below i64::MAX.
            size: i64::try_from(file.size).unwrap_or(i64::MAX),
            sha256: file.sha256.to_hex(),
            content_type: file.content_type.clone(),
            metadata: serde_json::to_string(&file.metadata).unwrap_or_else(|_| "{}".into()),
            status: file.status.as_str().into(),
            backend: file.backend.clone(),
            object_key: file.object_key.to_string(),
            created_at: file.created_at.naive_utc(),
            updated_at: file.created_at.naive_utc(),
            uploaded_at: file.uploaded_at.map(|t| t.naive_utc()),
            upload_expires_at: file.upload_expires_at.naive_utc(),
            part_size: file
                .parts
                .as_ref()
                .map(|p| i64::try_from(p.part_size).unwrap_or(i64::MAX)),
            multipart_upload_id: file.parts.as_ref().map(|p| p.upload_id.as_str().to_owned()),
            batch_id: file.batch_id.map(|b| b.to_string()),
            replicas: encode_replicas(&file.replicas),
        }
    }

    pub fn into_file(self) -> Result<File, CorruptRow> {
        let id = self.id.parse::<FileId>().map_err(|_| CorruptRow {
            id: self.id.clone(),
            what: "id".into(),
        })?;
        // The id is only formatted when something is wrong (rows come by the hundred).
        let bad = |what: &str| CorruptRow {
            id: id.to_string(),
            what: what.to_owned(),
        };
        let (tenant_id, device_id) = parse_root(self.tenant_id, self.device_id).map_err(bad)?;
        Ok(File {
            id,
            tenant_id,
            device_id,
            name: self.name,
            size: u64::try_from(self.size).map_err(|_| bad("size"))?,
            sha256: Sha256::parse_hex(&self.sha256).map_err(|_| bad("sha256"))?,
            content_type: self.content_type,
            status: self
                .status
                .parse::<FileStatus>()
                .map_err(|_| bad("status"))?,
            backend: self.backend,
            metadata: match self.metadata.as_str() {
                // Most files carry none: skip the parser.
                "{}" => BTreeMap::new(),
                json => serde_json::from_str::<BTreeMap<String, String>>(json)
                    .map_err(|_| bad("metadata"))?,
            },
            created_at: utc(self.created_at),
            uploaded_at: self.uploaded_at.map(utc),
            batch_id: self
                .batch_id
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|_| bad("batch_id"))?,
            replicas: match &self.replicas {
                None => Vec::new(),
                Some(json) => serde_json::from_str(json).map_err(|_| bad("replicas"))?,
            },
            object_key: ObjectKey::parse(&self.object_key).map_err(|_| bad("object_key"))?,
            upload_expires_at: utc(self.upload_expires_at),
            parts: match (self.part_size, self.multipart_upload_id) {
                (None, None) => None,
                (Some(size), Some(upload)) => Some(PartPlan {
                    part_size: u64::try_from(size).map_err(|_| bad("part_size"))?,
                    upload_id: UploadId::new(upload),
                }),
                _ => return Err(bad("part_size without multipart_upload_id")),
            },
        })
    }
}

/// The stored form of a file's replicas: `NULL` when there are none.
pub(super) fn encode_replicas(replicas: &[Replica]) -> Option<String> {
    if replicas.is_empty() {
        return None;
    }
    serde_json::to_string(replicas).ok()
}

/// A row's root columns: its tenant and its device (none for the shared root).
/// The error names the column that does not decode.
pub(super) fn parse_root(
    tenant: String,
    device: Option<String>,
) -> Result<(TenantId, Option<DeviceId>), &'static str> {
    let tenant = TenantId::parse(tenant).map_err(|_| "tenant_id")?;
    let device = device
        .map(DeviceId::parse)
        .transpose()
        .map_err(|_| "device_id")?;
    Ok((tenant, device))
}

pub(super) fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    DateTime::from_naive_utc_and_offset(t, Utc)
}
