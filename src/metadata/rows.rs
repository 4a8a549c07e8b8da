//! Conversions between the domain's `File` and its table row.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::pg::{Pg, PgValue};
use diesel::prelude::*;
use diesel::sql_types::Timestamp;
use diesel::sqlite::{Sqlite, SqliteValue};

use super::schema::{files, outbox};
use crate::domain::{
    DeviceId, File, FileId, FileStatus, ListedFile, ObjectKey, PartPlan, Replica, Sha256, TenantId,
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

/// The columns a page of files shows (see [`ListedFile`]): a listing reads no
/// object keys, deadlines or part plans, nor the tenant it asked for.
#[derive(Queryable, Selectable)]
#[diesel(table_name = files)]
pub(super) struct ListedRow {
    pub id: String,
    pub device_id: Option<String>,
    pub name: String,
    pub size: i64,
    pub sha256: String,
    pub content_type: String,
    pub metadata: String,
    pub status: String,
    pub backend: String,
    pub created_at: RowTimestamp,
    pub uploaded_at: Option<RowTimestamp>,
    pub batch_id: Option<String>,
    pub replicas: Option<String>,
}

/// A timestamp column as a page decodes it. On SQLite, where timestamps are text,
/// the format valet writes is parsed with items prepared once (diesel's own
/// decoding parses its format strings for every value, which showed in profiles of
/// pages); anything else is left to diesel.
#[derive(Debug, Clone, Copy, FromSqlRow)]
pub(super) struct RowTimestamp(pub NaiveDateTime);

impl FromSql<Timestamp, Pg> for RowTimestamp {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        <NaiveDateTime as FromSql<Timestamp, Pg>>::from_sql(value).map(Self)
    }
}

impl FromSql<Timestamp, Sqlite> for RowTimestamp {
    fn from_sql(mut value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        if let Some(at) = parse_written_timestamp(value.read_text()) {
            return Ok(Self(at));
        }
        <NaiveDateTime as FromSql<Timestamp, Sqlite>>::from_sql(value).map(Self)
    }
}

/// The format diesel writes SQLite timestamps in (`%F %T%.f`), as parser items
/// built once.
fn written_timestamp_items() -> &'static [Item<'static>] {
    static ITEMS: OnceLock<Vec<Item<'static>>> = OnceLock::new();
    ITEMS.get_or_init(|| StrftimeItems::new("%F %T%.f").collect())
}

/// `text` in the format diesel writes SQLite timestamps in, or `None`.
fn parse_written_timestamp(text: &str) -> Option<NaiveDateTime> {
    let mut parsed = Parsed::new();
    chrono::format::parse(&mut parsed, text, written_timestamp_items().iter()).ok()?;
    parsed.to_naive_datetime_with_offset(0).ok()
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
        let tenant = match TenantId::parse(self.tenant_id) {
            Ok(tenant) => tenant,
            Err(_) => {
                return Err(CorruptRow {
                    id: self.id,
                    what: "tenant_id".into(),
                })
            }
        };
        let shown = ListedRow {
            id: self.id,
            device_id: self.device_id,
            name: self.name,
            size: self.size,
            sha256: self.sha256,
            content_type: self.content_type,
            metadata: self.metadata,
            status: self.status,
            backend: self.backend,
            created_at: RowTimestamp(self.created_at),
            uploaded_at: self.uploaded_at.map(RowTimestamp),
            batch_id: self.batch_id,
            replicas: self.replicas,
        }
        .into_listed(tenant)?;
        let bad = |what: &str| CorruptRow {
            id: shown.id.to_string(),
            what: what.to_owned(),
        };
        let object_key = ObjectKey::parse(&self.object_key).map_err(|_| bad("object_key"))?;
        let parts = match (self.part_size, self.multipart_upload_id) {
            (None, None) => None,
            (Some(size), Some(upload)) => Some(PartPlan {
                part_size: u64::try_from(size).map_err(|_| bad("part_size"))?,
                upload_id: UploadId::new(upload),
            }),
            _ => return Err(bad("part_size without multipart_upload_id")),
        };
        Ok(File::from_listed(
            shown,
            object_key,
            utc(self.upload_expires_at),
            parts,
        ))
    }
}

impl ListedRow {
    /// The listed file, of `tenant` (the one the page was asked for).
    pub fn into_listed(self, tenant: TenantId) -> Result<ListedFile, CorruptRow> {
        let id = self.id.parse::<FileId>().map_err(|_| CorruptRow {
            id: self.id.clone(),
            what: "id".into(),
        })?;
        // The id is only formatted when something is wrong (rows come by the hundred).
        let bad = |what: &str| CorruptRow {
            id: id.to_string(),
            what: what.to_owned(),
        };
        Ok(ListedFile {
            id,
            tenant_id: tenant,
            device_id: self
                .device_id
                .map(DeviceId::parse)
                .transpose()
                .map_err(|_| bad("device_id"))?,
            name: self.name,
            size: u64::try_from(self.size).map_err(|_| bad("size"))?,
            sha256: Sha256::parse_hex(&self.sha256).map_err(|_| bad("sha256"))?,
            content_type: self.content_type,
            status: self
                .status
                .parse::<FileStatus>()
                .map_err(|_| bad("status"))?,
            backend: self.backend,
            metadata: decode_metadata(&self.metadata).map_err(|_| bad("metadata"))?,
            created_at: utc(self.created_at.0),
            uploaded_at: self.uploaded_at.map(|t| utc(t.0)),
            batch_id: self
                .batch_id
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|_| bad("batch_id"))?,
            replicas: decode_replicas(self.replicas.as_deref()).map_err(|_| bad("replicas"))?,
        })
    }
}

/// A row's metadata column (files and batches).
pub(super) fn decode_metadata(json: &str) -> serde_json::Result<BTreeMap<String, String>> {
    match json {
        // Most rows carry none: skip the parser.
        "{}" => Ok(BTreeMap::new()),
        json => serde_json::from_str(json),
    }
}

/// A row's replicas column (see [`encode_replicas`]).
fn decode_replicas(json: Option<&str>) -> serde_json::Result<Vec<Replica>> {
    match json {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_str(json),
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

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    #[test]
    fn written_timestamps_parse_as_diesel_wrote_them() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        for micros in [0, 120_000, 123_456, 999_999] {
            let at = day.and_hms_micro_opt(9, 5, 3, micros).unwrap();
            // What diesel's SQLite `ToSql` for `NaiveDateTime` writes.
            let text = at.format("%F %T%.f").to_string();
            assert_eq!(parse_written_timestamp(&text), Some(at), "{text}");
        }
        assert_eq!(
            parse_written_timestamp("2026-12-07 09:05:03"),
            day.and_hms_opt(9, 5, 3)
        );
    }

    #[test]
    fn other_timestamp_forms_are_left_to_diesel() {
        for other in [
            "2026-12-07T09:05:03Z",
            "2461381.5",
            "",
            "2026-12-07",
            "garbage",
        ] {
            assert_eq!(parse_written_timestamp(other), None, "{other}");
        }
    }
}
