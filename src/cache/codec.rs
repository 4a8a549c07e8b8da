//! The cached form of a [`File`]: every field, including those the API form skips
//! (`object_key`, `upload_expires_at`), so a cached record is the database record,
//! plus the cache generation it was written under.
//!
//! A stored entry is one JSON object: `{"generation":N,` followed by the record's
//! fields. Valet encodes the fields ([`encode_fields`]); the Redis script that writes
//! the entry puts the generation in front, read from Redis in the same step (see
//! `super::generation`), so no writer ever stamps a generation it only believes
//! current. Entries without a generation (written before generations existed) decode
//! with none, and are never current.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    DeviceId, File, FileId, FileStatus, ObjectKey, PartPlan, Replica, Sha256, TenantId,
};
use valet_backends::UploadId;

#[derive(Serialize, Deserialize)]
struct CachedFile {
    /// Written by the storing script, never by [`encode_fields`].
    #[serde(default, skip_serializing)]
    generation: Option<u64>,
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
    // Absent from entries cached before jobs existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    replicas: Vec<Replica>,
    // Absent from entries of files outside any batch, and from those cached before batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batch_id: Option<String>,
}

impl From<&File> for CachedFile {
    fn from(f: &File) -> Self {
        Self {
            generation: None,
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
            replicas: f.replicas.clone(),
            batch_id: f.batch_id.map(|b| b.to_string()),
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
            replicas: c.replicas,
            batch_id: c
                .batch_id
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| format!("batch_id: {e}"))?,
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

/// A decoded cache entry.
#[derive(Debug, PartialEq)]
pub(super) struct Entry {
    /// The cache generation the entry was written under; `None` for entries
    /// written before generations existed.
    pub(super) generation: Option<u64>,
    pub(super) file: File,
}

/// The JSON fields stored for `file`: its JSON object without the opening brace,
/// for the storing script to complete as `{"generation":N,` + fields.
pub(super) fn encode_fields(file: &File) -> Result<String, String> {
    let json = serde_json::to_string(&CachedFile::from(file)).map_err(|e| e.to_string())?;
    match json.strip_prefix('{') {
        // A record always has fields, so what follows is `"id":…}`.
        Some(fields) if fields.starts_with('"') => Ok(fields.to_owned()),
        _ => Err("a cached file encodes as a JSON object with fields".to_owned()),
    }
}

/// The entry stored as `bytes`; the error names what is wrong, never the content.
pub(super) fn decode(bytes: &[u8]) -> Result<Entry, String> {
    let cached: CachedFile = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "not a cached file ({:?} at column {})",
            e.classify(),
            e.column()
        )
    })?;
    Ok(Entry {
        generation: cached.generation,
        file: File::try_from(cached)?,
    })
}

/// The value of the generation key (`None`: no key, generation 0).
pub(super) fn decode_generation(bytes: Option<&[u8]>) -> Result<u64, String> {
    let Some(bytes) = bytes else { return Ok(0) };
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| "the generation key does not hold a counter".to_owned())
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
            replicas: Vec::new(),
            batch_id: None,
            upload_expires_at: Utc::now(),
            parts: Some(PartPlan {
                part_size: 5 * 1024 * 1024,
                upload_id: UploadId::new("upload-1"),
            }),
        }
    }

    /// What the storing script writes for `fields` under `generation`.
    fn stored(generation: u64, fields: &str) -> String {
        format!("{{\"generation\":{generation},{fields}")
    }

    #[test]
    fn round_trips_every_field_with_its_generation() {
        let f = file();
        let fields = encode_fields(&f).unwrap();
        let entry = decode(stored(7, &fields).as_bytes()).unwrap();
        assert_eq!(entry.generation, Some(7));
        assert_eq!(entry.file, f);
        let entry = decode(stored(u64::MAX, &fields).as_bytes()).unwrap();
        assert_eq!(entry.generation, Some(u64::MAX));
    }

    #[test]
    fn fields_never_carry_a_generation_of_their_own() {
        let fields = encode_fields(&file()).unwrap();
        assert!(fields.starts_with("\"id\":"), "{fields}");
        assert!(!fields.contains("generation"), "{fields}");
        // So the stored form is one valid JSON object.
        let value: serde_json::Value = serde_json::from_str(&stored(3, &fields)).unwrap();
        assert_eq!(value["generation"], 3);
        assert_eq!(value["status"], "uploaded");
    }

    #[test]
    fn entries_from_before_generations_have_none() {
        let f = file();
        let legacy = format!("{{{}", encode_fields(&f).unwrap());
        let entry = decode(legacy.as_bytes()).unwrap();
        assert_eq!(entry.generation, None);
        assert_eq!(entry.file, f);
    }

    #[test]
    fn refuses_a_generation_that_is_not_a_counter() {
        let fields = encode_fields(&file()).unwrap();
        for bad in ["-1", "\"1\"", "1.5", "null"] {
            let value = format!("{{\"generation\":{bad},{fields}");
            let decoded = decode(value.as_bytes());
            if bad == "null" {
                // null is "no generation": never current either.
                assert_eq!(decoded.map(|e| e.generation), Ok(None));
            } else {
                assert!(decoded.is_err(), "{bad}");
            }
        }
    }

    #[test]
    fn reads_the_generation_key() {
        assert_eq!(decode_generation(None), Ok(0));
        assert_eq!(decode_generation(Some(b"42")), Ok(42));
        for bad in [&b""[..], b"secret", b"-1", b"1.0", b"\xff"] {
            let err = decode_generation(Some(bad)).unwrap_err();
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn refuses_invalid_entries_without_echoing_them() {
        let err = decode(b"{\"secret\": 1").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
        let mut value = serde_json::to_value(CachedFile::from(&file())).unwrap();
        value["generation"] = 1.into();
        value["object_key"] = "../x".into();
        assert!(decode(value.to_string().as_bytes()).is_err());
    }
}
