//! Uploads in parts on the local store: each upload is a directory of part files
//! under `.incoming/multipart/<upload id>/`, filled by the data plane (every part
//! checked against its signed length and SHA-256 on the way in) and concatenated
//! into the object at completion, hashing the whole file as it is written.

use std::io::Write;
use std::path::PathBuf;

use async_trait::async_trait;
use sha2::Digest;

use super::data_plane::DataPlaneError;
use super::{seconds_precision, LocalBackend, INCOMING_DIR};
use crate::{
    BackendError, Multipart, ObjectKey, PartSpec, PartToAssemble, Sha256, SignedRequest,
    StoredPart, UploadId,
};

/// Directory under [`INCOMING_DIR`] holding the multipart uploads.
const MULTIPART_DIR: &str = "multipart";
/// Suffix of a received part file.
const PART_SUFFIX: &str = ".part";

impl LocalBackend {
    /// The directory of one upload; ids are ones valet generated (hex), which keeps
    /// the path under the root whatever a caller passes.
    fn upload_dir(&self, upload: &UploadId) -> Result<PathBuf, DataPlaneError> {
        let id = upload.as_str();
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DataPlaneError::NotFound);
        }
        Ok(self.root.join(INCOMING_DIR).join(MULTIPART_DIR).join(id))
    }

    /// Where part `number` of `upload` is kept once received.
    pub(super) fn part_path(
        &self,
        upload: &UploadId,
        number: u32,
    ) -> Result<PathBuf, DataPlaneError> {
        Ok(self
            .upload_dir(upload)?
            .join(format!("{number:05}{PART_SUFFIX}")))
    }

    fn existing_upload_dir(&self, upload: &UploadId) -> Result<PathBuf, BackendError> {
        let dir = self
            .upload_dir(upload)
            .map_err(|_| no_such_upload(upload))?;
        if !dir.is_dir() {
            return Err(no_such_upload(upload));
        }
        Ok(dir)
    }
}

#[async_trait]
impl Multipart for LocalBackend {
    async fn start_multipart(
        &self,
        _key: &ObjectKey,
        _content_type: &str,
    ) -> Result<UploadId, BackendError> {
        let upload = UploadId::random();
        let dir = self
            .upload_dir(&upload)
            .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        tokio::fs::create_dir_all(&dir).await?;
        Ok(upload)
    }

    fn sign_part(&self, spec: &PartSpec) -> Result<SignedRequest, BackendError> {
        let url = self.put_url(
            &spec.key,
            spec.expires_at,
            spec.size,
            &spec.sha256,
            Some((&spec.upload, spec.number)),
        )?;
        Ok(SignedRequest {
            method: "PUT".into(),
            url: url.into(),
            headers: [("content-length".to_owned(), spec.size.to_string())].into(),
            expires_at: seconds_precision(spec.expires_at),
        })
    }

    async fn list_parts(
        &self,
        _key: &ObjectKey,
        upload: &UploadId,
    ) -> Result<Vec<StoredPart>, BackendError> {
        let dir = self.existing_upload_dir(upload)?;
        let mut entries = tokio::fs::read_dir(&dir).await?;
        let mut parts = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|n| n.strip_suffix(PART_SUFFIX))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let size = entry.metadata().await?.len();
            parts.push(StoredPart {
                number,
                size,
                etag: None,
            });
        }
        parts.sort_by_key(|p| p.number);
        Ok(parts)
    }

    async fn complete_multipart(
        &self,
        key: &ObjectKey,
        upload: &UploadId,
        parts: &[PartToAssemble],
    ) -> Result<(), BackendError> {
        let dir = self.existing_upload_dir(upload)?;
        let mut sources = Vec::with_capacity(parts.len());
        for part in parts {
            let path = dir.join(format!("{:05}{PART_SUFFIX}", part.number));
            if !tokio::fs::try_exists(&path).await? {
                return Err(BackendError::Refused(format!(
                    "part {} is missing",
                    part.number
                )));
            }
            sources.push(path);
        }
        let assembled = self
            .root
            .join(INCOMING_DIR)
            .join(format!("{}.assembling", upload.as_str()));
        let target = self.object_path(key);
        let digest_path = self.digest_path(key);
        // Copying gigabytes is blocking work: one blocking-pool task writes the
        // object and hashes it on the way, so the digest costs no second read.
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let result = write_concatenation(&sources, &assembled, &target, &digest_path);
            if result.is_err() {
                let _ = std::fs::remove_file(&assembled);
            }
            result
        })
        .await
        .map_err(|e| BackendError::Unavailable(format!("assembling stopped: {e}")))??;
        tokio::fs::remove_dir_all(&dir).await?;
        Ok(())
    }

    async fn abort_multipart(
        &self,
        _key: &ObjectKey,
        upload: &UploadId,
    ) -> Result<(), BackendError> {
        let Ok(dir) = self.upload_dir(upload) else {
            return Ok(());
        };
        match tokio::fs::remove_dir_all(dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn no_such_upload(upload: &UploadId) -> BackendError {
    BackendError::Refused(format!(
        "multipart upload {} does not exist",
        upload.as_str()
    ))
}

/// Writes `sources` one after the other into `assembled`, then moves the digest and
/// the object into place (digest first: an object never exists without its digest).
fn write_concatenation(
    sources: &[PathBuf],
    assembled: &std::path::Path,
    target: &std::path::Path,
    digest_path: &std::path::Path,
) -> std::io::Result<()> {
    let mut out = HashingWriter {
        file: std::fs::File::create(assembled)?,
        hasher: sha2::Sha256::new(),
    };
    for source in sources {
        std::io::copy(&mut std::fs::File::open(source)?, &mut out)?;
    }
    out.file.sync_all()?;
    let digest = Sha256::from_bytes(out.hasher.finalize().into());
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let digest_tmp = assembled.with_extension("digest");
    std::fs::write(&digest_tmp, digest.to_hex())?;
    std::fs::rename(&digest_tmp, digest_path)?;
    std::fs::rename(assembled, target)
}

/// A file writer that hashes what passes through it.
struct HashingWriter {
    file: std::fs::File,
    hasher: sha2::Sha256,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}
