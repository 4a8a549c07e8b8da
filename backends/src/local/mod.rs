//! valet's own object store: objects are files under a root directory, and valet
//! itself serves the signed PUT and GET requests (see [`LocalBackend::receive`] and
//! [`LocalBackend::open`]).

mod data_plane;
mod multipart;
mod signature;
mod stream;

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::{
    Backend, BackendError, Capabilities, DownloadSpec, ObjectKey, ObjectStat, ObjectStream,
    ObjectWriter, Secret, Sha256, SignedRequest, UploadId, UploadSpec, WriteSpec,
};
pub use data_plane::{DataPlaneError, DownloadGrant, OpenObject, UploadGrant};
use signature::{DownloadClaims, UploadClaims, UrlSigner};

/// `[backends.<name>]` with `kind = "local"`: valet's own store on the local file system.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Directory holding the objects (default `<data_dir>/objects`).
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// URL signing secret, at least 32 bytes (default: generated into
    /// `<data_dir>/local-signing.key` on first start).
    #[serde(default)]
    pub secret: Option<Secret>,
}

/// The shortest signing secret accepted.
const MIN_SECRET_BYTES: usize = 32;

impl LocalConfig {
    /// Checks the settings can work, before anything is opened.
    pub fn validate(&self) -> Result<(), BackendError> {
        if self
            .secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < MIN_SECRET_BYTES)
        {
            return Err(BackendError::Config(format!(
                "secret must be at least {MIN_SECRET_BYTES} bytes"
            )));
        }
        Ok(())
    }
}

/// Directory under the root where uploads are received before they are verified.
const INCOMING_DIR: &str = ".incoming";
/// Suffix of the file beside each object that records its SHA-256.
const DIGEST_SUFFIX: &str = ".sha256";

/// Objects on the local file system, served by valet's own data plane.
pub struct LocalBackend {
    name: String,
    root: PathBuf,
    signer: UrlSigner,
    public_url: Url,
}

impl LocalBackend {
    /// A store named `name` under `root`, signing with `secret`, whose data plane is
    /// reachable at `public_url` (valet's own base URL).
    pub fn new(
        name: impl Into<String>,
        root: impl Into<PathBuf>,
        secret: Vec<u8>,
        public_url: Url,
    ) -> Result<Self, BackendError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(BackendError::Config(format!(
                "the local signing secret must be at least {MIN_SECRET_BYTES} bytes"
            )));
        }
        if public_url.cannot_be_a_base() {
            return Err(BackendError::Config(format!(
                "public URL {public_url} cannot be a base URL"
            )));
        }
        Ok(Self {
            name: name.into(),
            root: root.into(),
            signer: UrlSigner::new(secret),
            public_url,
        })
    }

    fn object_path(&self, key: &ObjectKey) -> PathBuf {
        // ObjectKey segments are never empty, `.` or `..`, so this stays under root.
        self.root.join(key.as_str())
    }

    fn digest_path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(format!("{}{DIGEST_SUFFIX}", key.as_str()))
    }

    /// The SHA-256 recorded beside the object at upload, if there is one.
    async fn recorded_digest(&self, key: &ObjectKey) -> std::io::Result<Option<Sha256>> {
        match tokio::fs::read_to_string(self.digest_path(key)).await {
            Ok(hex) => Ok(Sha256::parse_hex(hex.trim()).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn object_url(&self, key: &ObjectKey) -> Result<Url, BackendError> {
        let mut url = self.public_url.clone();
        {
            let mut segments = url.path_segments_mut().map_err(|_| {
                BackendError::Config(format!("public URL {} cannot be a base", self.public_url))
            })?;
            segments
                .pop_if_empty()
                .extend(["v1", "objects", &self.name]);
            segments.extend(key.as_str().split('/'));
        }
        Ok(url)
    }

    /// A signed PUT URL for `size` bytes hashing to `sha256`: the whole object, or
    /// part `number` of `upload`.
    fn put_url(
        &self,
        key: &ObjectKey,
        expires_at: DateTime<Utc>,
        size: u64,
        sha256: &Sha256,
        part: Option<(&UploadId, u32)>,
    ) -> Result<Url, BackendError> {
        let expires = Self::expires_param(expires_at);
        let sha256_hex = sha256.to_hex();
        let signature = self.signer.sign_upload(&UploadClaims {
            backend: &self.name,
            key: key.as_str(),
            expires,
            size,
            sha256_hex: &sha256_hex,
            part: part.map(|(upload, number)| (upload.as_str(), number)),
        });
        let mut url = self.object_url(key)?;
        {
            let mut query = url.query_pairs_mut();
            if let Some((upload, number)) = part {
                query
                    .append_pair("upload", upload.as_str())
                    .append_pair("part", &number.to_string());
            }
            query
                .append_pair("expires", &expires.to_string())
                .append_pair("size", &size.to_string())
                .append_pair("sha256", &sha256_hex)
                .append_pair("signature", &signature);
        }
        Ok(url)
    }

    fn expires_param(expires_at: DateTime<Utc>) -> i64 {
        expires_at.timestamp()
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            binds_size: true,
            binds_sha256: true,
            reports_sha256: true,
            serves_data_plane: true,
            multipart: Some(crate::s3::MULTIPART_LIMITS),
        }
    }

    fn data_plane(&self) -> Option<&LocalBackend> {
        Some(self)
    }

    fn sign_upload(&self, spec: &UploadSpec) -> Result<SignedRequest, BackendError> {
        let url = self.put_url(&spec.key, spec.expires_at, spec.size, &spec.sha256, None)?;
        let headers = BTreeMap::from([
            ("content-length".to_owned(), spec.size.to_string()),
            ("content-type".to_owned(), spec.content_type.clone()),
        ]);
        Ok(SignedRequest {
            method: "PUT".into(),
            url: url.into(),
            headers,
            expires_at: seconds_precision(spec.expires_at),
        })
    }

    fn sign_download(&self, spec: &DownloadSpec) -> Result<SignedRequest, BackendError> {
        let expires = Self::expires_param(spec.expires_at);
        let signature = self.signer.sign_download(&DownloadClaims {
            backend: &self.name,
            key: spec.key.as_str(),
            expires,
            content_type: &spec.content_type,
            filename: &spec.file_name,
        });
        let mut url = self.object_url(&spec.key)?;
        url.query_pairs_mut()
            .append_pair("expires", &expires.to_string())
            .append_pair("content_type", &spec.content_type)
            .append_pair("filename", &spec.file_name)
            .append_pair("signature", &signature);
        Ok(SignedRequest {
            method: "GET".into(),
            url: url.into(),
            headers: BTreeMap::new(),
            expires_at: seconds_precision(spec.expires_at),
        })
    }

    async fn stat(&self, key: &ObjectKey) -> Result<Option<ObjectStat>, BackendError> {
        let size = match tokio::fs::metadata(self.object_path(key)).await {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let sha256 = self.recorded_digest(key).await?;
        Ok(Some(ObjectStat { size, sha256 }))
    }

    async fn sha256(&self, key: &ObjectKey) -> Result<Sha256, BackendError> {
        let path = self.object_path(key);
        // Reading and hashing a large object is blocking work: one blocking-pool
        // task streams the file through the hasher, with no copy per chunk.
        let digest = tokio::task::spawn_blocking(move || -> std::io::Result<Sha256> {
            use sha2::Digest;
            let mut file = std::fs::File::open(path)?;
            let mut hasher = sha2::Sha256::new();
            std::io::copy(&mut file, &mut hasher)?;
            Ok(Sha256::from_bytes(hasher.finalize().into()))
        })
        .await
        .map_err(|e| BackendError::Unavailable(format!("hashing stopped: {e}")))??;
        Ok(digest)
    }

    async fn read(&self, key: &ObjectKey) -> Result<ObjectStream, BackendError> {
        self.read_object(key).await
    }

    async fn write(
        &self,
        key: &ObjectKey,
        spec: &WriteSpec,
    ) -> Result<Box<dyn ObjectWriter>, BackendError> {
        self.start_write(key, spec).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        for path in [self.object_path(key), self.digest_path(key)] {
            match tokio::fs::remove_file(path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn probe(&self) -> Result<(), BackendError> {
        let incoming = self.root.join(INCOMING_DIR);
        tokio::fs::create_dir_all(&incoming).await?;
        let probe = incoming.join(format!("probe-{}", uuid::Uuid::new_v4()));
        tokio::fs::write(&probe, b"probe").await?;
        let read = tokio::fs::read(&probe).await;
        tokio::fs::remove_file(&probe).await?;
        if read? != b"probe" {
            return Err(BackendError::Unavailable(format!(
                "{} does not read back what was written",
                self.root.display()
            )));
        }
        Ok(())
    }
}

/// Signed URLs carry whole seconds; report the expiry they really have.
fn seconds_precision(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_opt(t.timestamp(), 0).single().unwrap_or(t)
}

#[cfg(test)]
mod tests;
