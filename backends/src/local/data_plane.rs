//! The local store's data plane: checking signed PUT and GET requests and serving
//! them. A body is counted and hashed while it is received and moved into place
//! only when it matches what was signed.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use super::signature::{DownloadClaims, UploadClaims};
use super::{LocalBackend, INCOMING_DIR};
use crate::{ObjectKey, Sha256, UploadId};

/// Why a request to the local data plane was refused.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// The signature is missing, malformed, tampered with or for something else.
    #[error("the signature does not match this request")]
    BadSignature,
    /// The signature was valid but has expired.
    #[error("the signed URL has expired")]
    Expired,
    /// The body length differs from the signed length.
    #[error("expected {expected} bytes, received {received}")]
    SizeMismatch {
        /// Signed length.
        expected: u64,
        /// Length received (so far, when the body was too long).
        received: u64,
    },
    /// The body's SHA-256 differs from the signed digest.
    #[error("the body's SHA-256 does not match the signed digest")]
    ChecksumMismatch,
    /// The client stopped sending or the connection failed.
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    /// The object does not exist.
    #[error("no such object")]
    NotFound,
    /// An object was stored with this URL already; it is never replaced.
    #[error("an object is stored under this key already")]
    AlreadyStored,
    /// The store itself failed.
    #[error(transparent)]
    Storage(#[from] std::io::Error),
}

/// A verified permission to store one object.
#[derive(Debug, Clone)]
pub struct UploadGrant {
    key: ObjectKey,
    size: u64,
    sha256: Sha256,
    /// The upload and number, when the body is one part of a multipart upload.
    part: Option<(UploadId, u32)>,
}

/// A verified permission to read one object.
#[derive(Debug, Clone)]
pub struct DownloadGrant {
    key: ObjectKey,
    /// Content type to answer with.
    pub content_type: String,
    /// File name to offer in Content-Disposition.
    pub filename: String,
}

/// An object opened for reading.
pub struct OpenObject {
    /// The file, positioned at the start.
    pub file: tokio::fs::File,
    /// Its length in bytes.
    pub size: u64,
    /// The SHA-256 recorded at upload (absent only for an object placed by other means).
    pub sha256: Option<Sha256>,
    /// When the file was last written, where the file system records it.
    pub modified: Option<SystemTime>,
}

impl LocalBackend {
    /// Checks a PUT's key and query string against its signature.
    pub fn verify_upload(
        &self,
        key: &str,
        query: &str,
        now: DateTime<Utc>,
    ) -> Result<UploadGrant, DataPlaneError> {
        let key = ObjectKey::parse(key).map_err(|_| DataPlaneError::BadSignature)?;
        let params = QueryParams::parse(query);
        let expires: i64 = params.number("expires")?;
        let size: u64 = params.number("size")?;
        let sha256_hex = params.get("sha256")?;
        let part = match (params.optional("upload")?, params.optional("part")?) {
            (None, None) => None,
            (Some(upload), Some(number)) => Some((
                upload,
                number
                    .parse::<u32>()
                    .map_err(|_| DataPlaneError::BadSignature)?,
            )),
            _ => return Err(DataPlaneError::BadSignature),
        };
        let claims = UploadClaims {
            backend: &self.name,
            key: key.as_str(),
            expires,
            size,
            sha256_hex,
            part,
        };
        if !self.signer.verify_upload(&claims, params.get("signature")?) {
            return Err(DataPlaneError::BadSignature);
        }
        if now.timestamp() > expires {
            return Err(DataPlaneError::Expired);
        }
        let sha256 = Sha256::parse_hex(sha256_hex).map_err(|_| DataPlaneError::BadSignature)?;
        let part = part.map(|(upload, number)| (UploadId::new(upload), number));
        Ok(UploadGrant {
            key,
            size,
            sha256,
            part,
        })
    }

    /// Checks a GET's key and query string against its signature.
    pub fn verify_download(
        &self,
        key: &str,
        query: &str,
        now: DateTime<Utc>,
    ) -> Result<DownloadGrant, DataPlaneError> {
        let key = ObjectKey::parse(key).map_err(|_| DataPlaneError::BadSignature)?;
        let params = QueryParams::parse(query);
        let expires: i64 = params.number("expires")?;
        let content_type = params.get("content_type")?;
        let filename = params.get("filename")?;
        let claims = DownloadClaims {
            backend: &self.name,
            key: key.as_str(),
            expires,
            content_type,
            filename,
        };
        if !self
            .signer
            .verify_download(&claims, params.get("signature")?)
        {
            return Err(DataPlaneError::BadSignature);
        }
        if now.timestamp() > expires {
            return Err(DataPlaneError::Expired);
        }
        Ok(DownloadGrant {
            key,
            content_type: content_type.to_owned(),
            filename: filename.to_owned(),
        })
    }

    /// Receives an upload body. The bytes go to a temporary file while being counted
    /// and hashed; only a body of exactly the signed length and digest is moved into
    /// place, so a short, long, corrupted or interrupted upload leaves nothing behind.
    pub async fn receive<S, E>(
        &self,
        grant: &UploadGrant,
        declared_length: Option<u64>,
        mut body: S,
    ) -> Result<(), DataPlaneError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        if let Some(declared) = declared_length {
            if declared != grant.size {
                return Err(DataPlaneError::SizeMismatch {
                    expected: grant.size,
                    received: declared,
                });
            }
        }
        // Refused before the body is read; the link below settles a race.
        if grant.part.is_none() && tokio::fs::try_exists(self.object_path(&grant.key)).await? {
            return Err(DataPlaneError::AlreadyStored);
        }
        let incoming = self.root.join(INCOMING_DIR);
        tokio::fs::create_dir_all(&incoming).await?;
        let part = PartFile::new(incoming.join(format!("{}.part", uuid::Uuid::new_v4())));
        let written = Self::write_checked(grant, part.path(), &mut body).await;
        if let Err(e) = written {
            // Remove it now (not later from Drop) so a refused upload leaves nothing behind
            // by the time the client sees the answer.
            let _ = tokio::fs::remove_file(part.path()).await;
            part.disarm();
            return Err(e);
        }

        if let Some((upload, number)) = &grant.part {
            // A part goes beside the others of its upload; its digest was checked on
            // the way in and is kept by valet, so no digest file.
            let target = self.part_path(upload, *number)?;
            match tokio::fs::rename(part.path(), &target).await {
                Ok(()) => {}
                // The upload was completed or aborted meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let _ = tokio::fs::remove_file(part.path()).await;
                    part.disarm();
                    return Err(DataPlaneError::NotFound);
                }
                Err(e) => return Err(e.into()),
            }
            part.disarm();
            return Ok(());
        }
        let target = self.object_path(&grant.key);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        // The digest goes first: an object file never exists without its digest.
        // (Every URL for a key signs the same digest, so a losing racer rewrites
        // the same value.)
        let digest_part = PartFile::new(part.path().with_extension("digest"));
        tokio::fs::write(digest_part.path(), grant.sha256.to_hex()).await?;
        tokio::fs::rename(digest_part.path(), self.digest_path(&grant.key)).await?;
        digest_part.disarm();
        // A link, unlike a rename, never replaces: of two PUTs racing with one URL
        // the first to finish is stored and the other is refused.
        let linked = tokio::fs::hard_link(part.path(), &target).await;
        let _ = tokio::fs::remove_file(part.path()).await;
        part.disarm();
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(DataPlaneError::AlreadyStored)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Streams the body into `path`, counting and hashing; fails on any mismatch.
    async fn write_checked<S, E>(
        grant: &UploadGrant,
        path: &Path,
        body: &mut S,
    ) -> Result<(), DataPlaneError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let mut file = tokio::fs::File::create(path).await?;
        let mut hasher = sha2::Sha256::new();
        let mut received: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| DataPlaneError::Interrupted(e.to_string()))?;
            received += chunk.len() as u64;
            if received > grant.size {
                return Err(DataPlaneError::SizeMismatch {
                    expected: grant.size,
                    received,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        if received != grant.size {
            return Err(DataPlaneError::SizeMismatch {
                expected: grant.size,
                received,
            });
        }
        if Sha256::from_bytes(hasher.finalize().into()) != grant.sha256 {
            return Err(DataPlaneError::ChecksumMismatch);
        }
        file.sync_all().await?;
        Ok(())
    }

    /// Opens a stored object for a verified download (or a HEAD with the same URL).
    pub async fn open(&self, grant: &DownloadGrant) -> Result<OpenObject, DataPlaneError> {
        let path = self.object_path(&grant.key);
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DataPlaneError::NotFound)
            }
            Err(e) => return Err(e.into()),
        };
        let metadata = file.metadata().await?;
        // A download is signed only once the stored bytes matched the declared digest,
        // and a retried PUT to the key is bound to that same digest: the bytes under a
        // downloadable key never change, so the digest read here describes the file
        // opened above even if a write to the key races with this read.
        let sha256 = self.recorded_digest(&grant.key).await?;
        Ok(OpenObject {
            file,
            size: metadata.len(),
            sha256,
            modified: metadata.modified().ok(),
        })
    }
}

/// Query parameters of a signed URL; any missing or repeated one is a bad signature.
struct QueryParams<'a>(Vec<(std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>);

impl<'a> QueryParams<'a> {
    fn parse(query: &'a str) -> Self {
        Self(url::form_urlencoded::parse(query.as_bytes()).collect())
    }

    fn get(&self, name: &str) -> Result<&str, DataPlaneError> {
        let mut values = self.0.iter().filter(|(k, _)| k == name);
        match (values.next(), values.next()) {
            (Some((_, v)), None) => Ok(v),
            _ => Err(DataPlaneError::BadSignature),
        }
    }

    fn optional(&self, name: &str) -> Result<Option<&str>, DataPlaneError> {
        match self.0.iter().filter(|(k, _)| k == name).count() {
            0 => Ok(None),
            _ => self.get(name).map(Some),
        }
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<T, DataPlaneError> {
        self.get(name)?
            .parse()
            .map_err(|_| DataPlaneError::BadSignature)
    }
}

/// A temporary file removed when dropped unless it was moved into place.
pub(super) struct PartFile {
    path: Option<PathBuf>,
}

impl PartFile {
    pub(super) fn new(path: PathBuf) -> Self {
        Self { path: Some(path) }
    }

    pub(super) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    pub(super) fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // Unlinking is quick but still a blocking call: hand it to the blocking pool
            // when there is one (there always is inside valet).
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn_blocking(move || {
                        let _ = std::fs::remove_file(path);
                    });
                }
                Err(_) => {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}
