//! The cached form of a [`File`]: every field, including those the API form skips
//! (`object_key`, `upload_expires_at`), so a cached record is the database record.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{DeviceId, File, FileId, FileStatus, ObjectKey, PartPlan, Sha256, TenantId};
use valet_backends::UploadId;

#[derive(Serialize, Deserialize)]
struct CachedFile {
    id: String,
    tenant_id: String,
    device_id: Option<String>,
    name: String,
    size: u64,
    sha256: String,
    content_type: String,
    status: FileStatus,
    backend: String,
    metadata: BTreeMap<String, String>,
    created_at: DateTime<Utc>,
    uploaded_at: Option<DateTime<Utc>>,
    object_key: String,
    upload_expires_at: DateTime<Utc>,
    // Absent from entries cached before uploads in parts existed.
    #[serde(default)]
    part_size: Option<u64>,
    #[serde(default)]
    multipart_upload_id: Option<String>,
}

impl From<&File> for CachedFile {
    fn from(f: &File) -> Self {
        Self {
            id: f.id.to_string(),
            tenant_id: f.tenant_id.as_str().to_owned(),
            device_id: f.device_id.as_ref().map(|d| d.as_str().to_owned()),
            name: f.name.clone(),
            size: f.size,
            sha256: f.sha256.to_hex(),
            content_type: f.content_type.clone(),
            status: f.status,
            backend: f.backend.clone(),
            metadata: f.metadata.clone(),
            created_at: f.created_at,
            uploaded_at: f.uploaded_at,
            object_key: f.object_key.as_str().to_owned(),
            upload_expires_at: f.upload_expires_at,
            part_size: f.parts.as_ref().map(|p| p.part_size),
            multipart_upload_id: f.parts.as_ref().map(|p| p.upload_id.as_str().to_owned()),
        }
    }
}

impl TryFrom<CachedFile> for File {
    type Error = String;

    fn try_from(c: CachedFile) -> Result<Self, Self::Error> {
        Ok(File {
            id: c.id.parse::<FileId>().map_err(|e| format!("id: {e}"))?,
            tenant_id: TenantId::parse(&c.tenant_id).map_err(|e| format!("tenant_id: {e}"))?,
            device_id: c
                .device_id
                .as_deref()
                .map(DeviceId::parse)
                .transpose()
                .map_err(|e| format!("device_id: {e}"))?,
            name: c.name,
            size: c.size,
            sha256: Sha256::parse_hex(&c.sha256).map_err(|e| format!("sha256: {e}"))?,
            content_type: c.content_type,
            status: c.status,
            backend: c.backend,
            metadata: c.metadata,
            created_at: c.created_at,
            uploaded_at: c.uploaded_at,
            object_key: ObjectKey::parse(&c.object_key).map_err(|e| format!("object_key: {e}"))?,
            upload_expires_at: c.upload_expires_at,
            parts: match (c.part_size, c.multipart_upload_id) {
                (Some(part_size), Some(upload)) => Some(PartPlan {
                    part_size,
                    upload_id: UploadId::new(upload),
                }),
                _ => None,
            },
        })
    }
}

/// The JSON stored for `file`.
pub(super) fn encode(file: &File) -> Result<String, String> {
    serde_json::to_string(&CachedFile::from(file)).map_err(|e| e.to_string())
}

/// The file stored as `bytes`; the error names what is wrong, never the content.
pub(super) fn decode(bytes: &[u8]) -> Result<File, String> {
    let cached: CachedFile = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "not a cached file ({:?} at column {})",
            e.classify(),
            e.column()
        )
    })?;
    File::try_from(cached)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{object_key, Root};

    fn file() -> File {
        let tenant = TenantId::parse("acme").unwrap();
        let device = DeviceId::parse("dev-1").unwrap();
        let id = FileId::new();
        File {
            object_key: object_key(&tenant, &Root::Device(device.clone()), &id),
            id,
            tenant_id: tenant,
            device_id: Some(device),
            name: "a.bin".into(),
            size: u64::MAX,
            sha256: Sha256::digest(b"x"),
            content_type: "application/octet-stream".into(),
            status: FileStatus::Uploaded,
            backend: "local".into(),
            metadata: BTreeMap::from([("k".into(), "v".into())]),
            created_at: Utc::now(),
            uploaded_at: Some(Utc::now()),
            upload_expires_at: Utc::now(),
            parts: Some(PartPlan {
                part_size: 5 * 1024 * 1024,
                upload_id: UploadId::new("upload-1"),
            }),
        }
    }

    #[test]
    fn round_trips_every_field() {
        let f = file();
        let json = encode(&f).unwrap();
        assert_eq!(decode(json.as_bytes()).unwrap(), f);
    }

    #[test]
    fn refuses_invalid_entries_without_echoing_them() {
        let err = decode(b"{\"secret\": 1").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
        let mut value = serde_json::to_value(CachedFile::from(&file())).unwrap();
        value["object_key"] = "../x".into();
        assert!(decode(value.to_string().as_bytes()).is_err());
    }
}
