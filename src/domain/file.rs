use std::collections::BTreeMap;

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use regex::Regex;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Object, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use super::text::{char_len, find_in, pattern_without, string_schema, CONTROL, HIDDEN_FORMAT};
use super::{BatchId, DeviceId, FileId, ObjectKey, PartPlan, Replica, Root, Sha256, TenantId};

/// A file as valet records it and the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct File {
    /// UUIDv7 assigned at creation.
    #[schema(value_type = String, format = Uuid)]
    pub id: FileId,
    /// Owning tenant.
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// Owning device; `null` for the tenant's shared root.
    #[schema(value_type = Option<String>)]
    pub device_id: Option<DeviceId>,
    /// Name given at creation (metadata only; never part of a storage key).
    pub name: String,
    /// Exact length in bytes.
    pub size: u64,
    /// SHA-256 of the content, 64 lowercase hex characters.
    #[schema(schema_with = sha256_schema)]
    pub sha256: Sha256,
    /// Media type.
    pub content_type: String,
    /// Lifecycle state.
    pub status: FileStatus,
    /// Name of the storage backend holding the object.
    pub backend: String,
    /// Caller-supplied string metadata.
    pub metadata: BTreeMap<String, String>,
    /// When the upload was created (RFC 3339, UTC).
    #[serde(serialize_with = "super::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    /// When the upload was verified; `null` until then.
    #[serde(serialize_with = "super::rfc3339::serialize_option")]
    pub uploaded_at: Option<DateTime<Utc>>,
    /// Verified copies of the object on other backends (made by `copy` jobs).
    pub replicas: Vec<Replica>,
    /// The batch the file was created in; `null` for a file outside any batch.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub batch_id: Option<BatchId>,
    /// Where the object lives in its backend.
    #[serde(skip)]
    pub object_key: ObjectKey,
    /// When the upload URL stops working (for a multipart upload: its deadline).
    #[serde(skip)]
    pub upload_expires_at: DateTime<Utc>,
    /// The parts of a multipart upload; `None` for a single PUT.
    #[serde(skip)]
    pub parts: Option<PartPlan>,
}

impl File {
    /// The root the file lives in.
    pub fn root(&self) -> Root {
        match &self.device_id {
            Some(d) => Root::Device(d.clone()),
            None => Root::Shared,
        }
    }
}

/// A file as a listing shows it: every field [`File`] answers with, none of where
/// and how its object is written, so a page reads only the columns it shows.
/// Serialized exactly as `File` is (same fields, same order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListedFile {
    /// See [`File::id`].
    pub id: FileId,
    /// See [`File::tenant_id`].
    pub tenant_id: TenantId,
    /// See [`File::device_id`].
    pub device_id: Option<DeviceId>,
    /// See [`File::name`].
    pub name: String,
    /// See [`File::size`].
    pub size: u64,
    /// See [`File::sha256`].
    pub sha256: Sha256,
    /// See [`File::content_type`].
    pub content_type: String,
    /// See [`File::status`].
    pub status: FileStatus,
    /// See [`File::backend`].
    pub backend: String,
    /// See [`File::metadata`].
    pub metadata: BTreeMap<String, String>,
    /// See [`File::created_at`].
    #[serde(serialize_with = "super::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    /// See [`File::uploaded_at`].
    #[serde(serialize_with = "super::rfc3339::serialize_option")]
    pub uploaded_at: Option<DateTime<Utc>>,
    /// See [`File::replicas`].
    pub replicas: Vec<Replica>,
    /// See [`File::batch_id`].
    pub batch_id: Option<BatchId>,
}

impl File {
    /// The file a listing shows, with where and how its object is written.
    pub fn from_listed(
        listed: ListedFile,
        object_key: ObjectKey,
        upload_expires_at: DateTime<Utc>,
        parts: Option<PartPlan>,
    ) -> Self {
        let ListedFile {
            id,
            tenant_id,
            device_id,
            name,
            size,
            sha256,
            content_type,
            status,
            backend,
            metadata,
            created_at,
            uploaded_at,
            replicas,
            batch_id,
        } = listed;
        Self {
            id,
            tenant_id,
            device_id,
            name,
            size,
            sha256,
            content_type,
            status,
            backend,
            metadata,
            created_at,
            uploaded_at,
            replicas,
            batch_id,
            object_key,
            upload_expires_at,
            parts,
        }
    }
}

/// A file's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    /// Upload URL issued; bytes not yet verified.
    Pending,
    /// Completed by its device; valet is assembling and checking the stored bytes.
    Verifying,
    /// Stored and verified.
    Uploaded,
    /// Stored bytes did not match the declaration; the object was deleted.
    Rejected,
    /// Deleted by a caller (or by retention).
    Deleted,
    /// Never uploaded: the upload URL expired with no object stored.
    Expired,
}

super::stored_names::stored_names!(FileStatus, "file status" {
    Pending => "pending",
    Verifying => "verifying",
    Uploaded => "uploaded",
    Rejected => "rejected",
    Deleted => "deleted",
    Expired => "expired",
});

/// Longest file name, in characters.
pub const MAX_NAME_CHARS: usize = 1024;
/// Longest media type, in characters (all ASCII).
pub const MAX_CONTENT_TYPE_CHARS: usize = 255;
/// Longest metadata key, in characters.
pub const MAX_METADATA_KEY_CHARS: usize = 128;
/// Largest total size of metadata keys and values, in bytes of UTF-8.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// A file name: 1–1024 characters, none of them a control character, a bidirectional
/// control or an invisible format character.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct FileName(String);

impl TryFrom<String> for FileName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl FileName {
    /// Validates a name.
    pub fn parse(s: &str) -> Result<Self, String> {
        if !(1..=MAX_NAME_CHARS).contains(&char_len(s)) {
            return Err(format!("name must be 1 to {MAX_NAME_CHARS} characters"));
        }
        if find_in(s, &[CONTROL]).is_some() {
            return Err("name must not contain control characters".into());
        }
        if let Some(c) = find_in(s, &[HIDDEN_FORMAT]) {
            return Err(format!(
                "name must not contain invisible formatting or bidirectional control \
                 characters (found U+{:04X})",
                u32::from(c)
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialSchema for FileName {
    fn schema() -> RefOr<Schema> {
        string_schema(
            1,
            MAX_NAME_CHARS,
            &[CONTROL, HIDDEN_FORMAT],
            "A file name (metadata only; never part of a storage key): 1 to 1024 \
             characters, without control characters, bidirectional controls or invisible \
             format characters.",
        )
        .into()
    }
}

impl ToSchema for FileName {}

/// A media type as RFC 9110 writes it: `type/subtype`, then `; name=value`
/// parameters (a value is a token or a quoted string), all ASCII.
const MEDIA_TYPE: &str =
    r"^(?:TOKEN)/(?:TOKEN)(?:[\x09\x20]*;[\x09\x20]*(?:TOKEN)=(?:(?:TOKEN)|QUOTED))*$";

/// RFC 9110 `tchar`: letters, digits and ``!#$%&'*+-.^_`|~``.
const TOKEN: &str = r"[\x21\x23-\x27\x2A\x2B\x2D\x2E\x30-\x39\x41-\x5A\x5E-\x7A\x7C\x7E]+";

/// RFC 9110 `quoted-string`, without obsolete non-ASCII text.
const QUOTED: &str = r#""(?:[\x09\x20\x21\x23-\x5B\x5D-\x7E]|\\[\x09\x20-\x7E])*""#;

/// The media type grammar as one regular expression (the OpenAPI pattern, and the check).
fn media_type_pattern() -> &'static str {
    static PATTERN: OnceLock<String> = OnceLock::new();
    PATTERN.get_or_init(|| MEDIA_TYPE.replace("TOKEN", TOKEN).replace("QUOTED", QUOTED))
}

fn media_type_regex() -> &'static Regex {
    static REGEX: OnceLock<Regex> = OnceLock::new();
    REGEX.get_or_init(|| match Regex::new(media_type_pattern()) {
        Ok(regex) => regex,
        // A constant pattern, checked by the tests.
        Err(e) => unreachable!("the media type pattern is valid: {e}"),
    })
}

/// A media type such as `image/png` or `text/plain; charset=utf-8`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ContentType(String);

impl TryFrom<String> for ContentType {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl ContentType {
    /// Validates a media type (RFC 9110 `type/subtype` with optional parameters, at
    /// most 255 characters).
    pub fn parse(s: &str) -> Result<Self, String> {
        if char_len(s) > MAX_CONTENT_TYPE_CHARS || !media_type_regex().is_match(s) {
            return Err(format!(
                "content_type {s:?} is not a media type (type/subtype, optionally \
                 followed by ; name=value parameters, at most {MAX_CONTENT_TYPE_CHARS} characters)"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The media type.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ContentType {
    fn default() -> Self {
        Self("application/octet-stream".into())
    }
}

impl PartialSchema for ContentType {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(3))
            .max_length(Some(MAX_CONTENT_TYPE_CHARS))
            .pattern(Some(media_type_pattern()))
            .description(Some(
                "A media type (RFC 9110): `type/subtype`, optionally followed by \
                 `; name=value` parameters; at most 255 characters.",
            ))
            .examples(["text/plain; charset=utf-8"])
            .into()
    }
}

impl ToSchema for ContentType {}

/// Caller metadata: string keys and values, at most 8 KiB in all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "BTreeMap<String, String>")]
pub struct FileMetadata(BTreeMap<String, String>);

impl TryFrom<BTreeMap<String, String>> for FileMetadata {
    type Error = String;
    fn try_from(map: BTreeMap<String, String>) -> Result<Self, String> {
        Self::parse(map)
    }
}

impl FileMetadata {
    /// Validates a metadata map.
    pub fn parse(map: BTreeMap<String, String>) -> Result<Self, String> {
        let mut total = 0;
        for (k, v) in &map {
            if !(1..=MAX_METADATA_KEY_CHARS).contains(&char_len(k))
                || find_in(k, &[CONTROL]).is_some()
            {
                return Err(format!(
                    "metadata key {k:?} must be 1 to {MAX_METADATA_KEY_CHARS} characters \
                     without control characters"
                ));
            }
            if find_in(v, &[CONTROL]).is_some() {
                return Err(format!(
                    "metadata value of {k:?} contains control characters"
                ));
            }
            total += k.len() + v.len();
        }
        if total > MAX_METADATA_BYTES {
            return Err(format!(
                "metadata is {total} bytes; at most {MAX_METADATA_BYTES} are allowed"
            ));
        }
        Ok(Self(map))
    }

    /// The map.
    pub fn into_inner(self) -> BTreeMap<String, String> {
        self.0
    }
}

impl PartialSchema for FileMetadata {
    fn schema() -> RefOr<Schema> {
        let value = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern_without(&[CONTROL])));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property_names(Some(string_schema(
                1,
                MAX_METADATA_KEY_CHARS,
                &[CONTROL],
                "1 to 128 characters without control characters",
            )))
            .additional_properties(Some(value))
            .description(Some(
                "String metadata: keys of 1 to 128 characters, keys and values without \
                 control characters, at most 8 KiB (8192 bytes of UTF-8) of keys and \
                 values in all.",
            ))
            .into()
    }
}

impl ToSchema for FileMetadata {}

/// The schema of a SHA-256 a client declares: 64 hexadecimal characters, either
/// case, as [`Sha256::parse_hex`] reads them.
pub fn declared_sha256_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(64))
        .max_length(Some(64))
        .pattern(Some("^[0-9a-fA-F]{64}$"))
        .description(Some("SHA-256, 64 hexadecimal characters"))
        .examples(["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"])
        .build()
}

/// The schema of a SHA-256 valet answers with: 64 lowercase hexadecimal characters.
pub fn sha256_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[0-9a-f]{64}$"))
        .description(Some("SHA-256, 64 lowercase hexadecimal characters"))
        .examples(["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"])
        .build()
}

/// The object key of a file: `{tenant-key}/{root-key}/{file-id}`, where the first two
/// are digests, so nothing in a bucket listing names a tenant, device or file.
pub fn object_key(tenant: &TenantId, root: &Root, id: &FileId) -> ObjectKey {
    let tenant_key = &Sha256::digest(format!("tenant\0{tenant}").as_bytes()).to_hex()[..32];
    let root_key = match root {
        Root::Device(d) => Sha256::digest(format!("device\0{tenant}\0{d}").as_bytes()),
        Root::Shared => Sha256::digest(format!("shared\0{tenant}").as_bytes()),
    };
    let key = format!("{tenant_key}/{}/{id}", &root_key.to_hex()[..32]);
    match ObjectKey::parse(&key) {
        Ok(key) => key,
        // Hex digests and a hyphenated UUID are always valid key segments.
        Err(_) => unreachable!("object key {key} is made of valid segments"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_file_serializes_as_the_file_does() {
        let tenant = TenantId::parse("acme").unwrap();
        let device = DeviceId::parse("dev-1").unwrap();
        let id = FileId::new();
        let key = object_key(&tenant, &Root::Device(device.clone()), &id);
        let created_at = Utc::now();
        let listed = ListedFile {
            id,
            tenant_id: tenant,
            device_id: Some(device),
            name: "a \"quoted\" \u{2028} name.bin".into(),
            size: u64::MAX,
            sha256: Sha256::digest(b"x"),
            content_type: "application/octet-stream".into(),
            status: FileStatus::Uploaded,
            backend: "local".into(),
            metadata: BTreeMap::from([("k".into(), "v".into())]),
            created_at,
            uploaded_at: Some(created_at),
            replicas: vec![Replica {
                backend: "s3".into(),
                key: "k/1".into(),
            }],
            batch_id: Some(BatchId::new()),
        };
        let file = File::from_listed(listed.clone(), key, created_at, None);
        assert_eq!(
            serde_json::to_string(&listed).unwrap(),
            serde_json::to_string(&file).unwrap()
        );
        assert_eq!(
            sonic_rs::to_string(&listed).unwrap(),
            sonic_rs::to_string(&file).unwrap()
        );
    }

    #[test]
    fn names_refuse_controls_and_extremes() {
        assert!(
            FileName::parse("../../etc/passwd").is_ok(),
            "names are metadata only"
        );
        assert!(FileName::parse("").is_err());
        assert!(FileName::parse("a\u{0}b").is_err());
        assert!(FileName::parse(&"a".repeat(1025)).is_err());
        assert!(
            FileName::parse(&"é".repeat(1024)).is_ok(),
            "characters, not bytes"
        );
    }

    #[test]
    fn names_refuse_bidirectional_controls_and_invisible_formatting() {
        for hidden in [
            "report\u{202E}fdp.exe",
            "a\u{2066}b",
            "a\u{200B}b",
            "\u{FEFF}a",
            "a\u{200F}",
        ] {
            assert!(FileName::parse(hidden).is_err(), "{hidden:?}");
        }
        // Emoji sequences keep their joiners and tags.
        assert!(FileName::parse("family \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}.jpg").is_ok());
        assert!(FileName::parse(
            "\u{1F3F4}\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}.png"
        )
        .is_ok());
    }

    #[test]
    fn content_types_must_be_media_types() {
        assert!(ContentType::parse("image/png").is_ok());
        assert!(ContentType::parse("text/plain; charset=utf-8").is_ok());
        assert!(ContentType::parse("multipart/form-data; boundary=\"a b\"").is_ok());
        assert!(ContentType::parse("a/b;c=d").is_ok());
        for bad in [
            "nonsense",
            "not a type",
            "a/b;",
            "a/b; c",
            "a/b\n",
            "é/b",
            "a/b c",
        ] {
            assert!(ContentType::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ContentType::parse(&format!("a/{}", "b".repeat(253))).is_ok());
        assert!(ContentType::parse(&format!("a/{}", "b".repeat(254))).is_err());
    }

    #[test]
    fn metadata_is_bounded() {
        let mut m = BTreeMap::new();
        m.insert("k".to_string(), "v".repeat(MAX_METADATA_BYTES));
        assert!(FileMetadata::parse(m).is_err());
    }

    #[test]
    fn object_keys_are_opaque() {
        let t = TenantId::parse("acme").unwrap();
        let id = FileId::new();
        let key = object_key(&t, &Root::Device(DeviceId::parse("dev-42").unwrap()), &id);
        assert!(!key.as_str().contains("acme") && !key.as_str().contains("dev-42"));
        assert!(key.as_str().ends_with(&id.to_string()));
        assert_ne!(key, object_key(&t, &Root::Shared, &id));
    }
}
