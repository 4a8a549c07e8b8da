//! The one door to object storage: every backend call valet makes (signing, stat,
//! hash, delete, probe, the local data plane) goes through [`Storage`], by backend
//! name. It is a plain value, not an actor: signing is microseconds of HMAC and the
//! rest is async I/O, so a mailbox would only add a hop.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;

use crate::configuration::{BackendSettings, Settings};
use crate::private_file::create_private_file;
use valet_backends::azblob::AzblobBackend;
use valet_backends::local::LocalBackend;
use valet_backends::s3::S3Backend;
use valet_backends::{
    Backend, BackendError, Capabilities, Container, DownloadSpec, ObjectKey, ObjectStat,
    ObjectStream, ObjectWriter, PartSpec, PartToAssemble, Sha256, SignedRequest, StoredPart,
    UploadId, UploadSpec, WriteSpec,
};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The file names a backend that is no longer configured.
    #[error("storage backend {0:?} is not configured")]
    UnknownBackend(String),
    /// The backend failed.
    #[error("storage backend {backend}: {error}")]
    Backend {
        /// The backend's name.
        backend: String,
        /// What went wrong.
        error: BackendError,
    },
}

/// Every configured backend, by name.
#[derive(Clone)]
pub struct Storage {
    backends: Arc<BTreeMap<String, Arc<dyn Backend>>>,
}

impl Storage {
    /// Builds every backend in `settings`; `public_url` is where valet is reachable.
    pub fn from_settings(settings: &Settings, public_url: &url::Url) -> anyhow::Result<Self> {
        let mut backends: BTreeMap<String, Arc<dyn Backend>> = BTreeMap::new();
        for (name, configured) in &settings.backends {
            let backend = build(name, configured, settings, public_url)
                .with_context(|| format!("storage backend {name:?}"))?;
            backends.insert(name.clone(), backend);
        }
        Ok(Self {
            backends: Arc::new(backends),
        })
    }

    fn backend(&self, name: &str) -> Result<&Arc<dyn Backend>, StorageError> {
        self.backends
            .get(name)
            .ok_or_else(|| StorageError::UnknownBackend(name.to_owned()))
    }

    fn failed(name: &str) -> impl FnOnce(BackendError) -> StorageError + '_ {
        move |error| StorageError::Backend {
            backend: name.to_owned(),
            error,
        }
    }

    /// The names of every configured backend.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.backends.keys().map(String::as_str)
    }

    /// What backend `name` can do.
    pub fn capabilities(&self, name: &str) -> Result<Capabilities, StorageError> {
        Ok(self.backend(name)?.capabilities())
    }

    /// Kind of backend `name` (`local`, `s3`, `azblob`).
    pub fn kind(&self, name: &str) -> Result<&'static str, StorageError> {
        Ok(self.backend(name)?.kind())
    }

    /// The bucket or container of backend `name`, when it has one.
    pub fn container(&self, name: &str) -> Option<Container<'_>> {
        self.backends.get(name).and_then(|b| b.container())
    }

    /// Signs an upload with backend `name` (microseconds of HMAC: done inline).
    pub fn sign_upload(
        &self,
        name: &str,
        spec: &UploadSpec,
    ) -> Result<SignedRequest, StorageError> {
        self.backend(name)?
            .sign_upload(spec)
            .map_err(Self::failed(name))
    }

    /// Signs a download with backend `name`.
    pub fn sign_download(
        &self,
        name: &str,
        spec: &DownloadSpec,
    ) -> Result<SignedRequest, StorageError> {
        self.backend(name)?
            .sign_download(spec)
            .map_err(Self::failed(name))
    }

    /// Size (and SHA-256, where the store reports it) of an object; `None` if absent.
    pub async fn stat(
        &self,
        name: &str,
        key: &ObjectKey,
    ) -> Result<Option<ObjectStat>, StorageError> {
        self.backend(name)?
            .stat(key)
            .await
            .map_err(Self::failed(name))
    }

    /// Reads a whole object to hash it.
    pub async fn sha256(&self, name: &str, key: &ObjectKey) -> Result<Sha256, StorageError> {
        self.backend(name)?
            .sha256(key)
            .await
            .map_err(Self::failed(name))
    }

    /// Streams an object of backend `name`.
    pub async fn read(&self, name: &str, key: &ObjectKey) -> Result<ObjectStream, StorageError> {
        self.backend(name)?
            .read(key)
            .await
            .map_err(Self::failed(name))
    }

    /// Starts writing an object to backend `name`.
    pub async fn write(
        &self,
        name: &str,
        key: &ObjectKey,
        spec: &WriteSpec,
    ) -> Result<Box<dyn ObjectWriter>, StorageError> {
        self.backend(name)?
            .write(key, spec)
            .await
            .map_err(Self::failed(name))
    }

    /// Removes an object; an absent object is already removed.
    pub async fn delete(&self, name: &str, key: &ObjectKey) -> Result<(), StorageError> {
        self.backend(name)?
            .delete(key)
            .await
            .map_err(Self::failed(name))
    }

    /// Checks backend `name` is reachable and usable.
    pub async fn probe(&self, name: &str) -> Result<(), StorageError> {
        self.backend(name)?
            .probe()
            .await
            .map_err(Self::failed(name))
    }

    /// Checks every backend can store and remove an object; names the one that cannot.
    pub async fn probe_all(&self) -> anyhow::Result<()> {
        for name in self.names() {
            self.probe(name)
                .await
                .with_context(|| format!("storage backend {name:?} is not usable"))?;
        }
        Ok(())
    }

    /// Starts an upload in parts of `key` on backend `name`.
    pub async fn start_multipart(
        &self,
        name: &str,
        key: &ObjectKey,
        content_type: &str,
    ) -> Result<UploadId, StorageError> {
        self.backend(name)?
            .start_multipart(key, content_type)
            .await
            .map_err(Self::failed(name))
    }

    /// Signs the PUT of one part (microseconds: done inline).
    pub fn sign_part(&self, name: &str, spec: &PartSpec) -> Result<SignedRequest, StorageError> {
        self.backend(name)?
            .sign_part(spec)
            .map_err(Self::failed(name))
    }

    /// The parts backend `name` holds for an upload, by ascending number.
    pub async fn list_parts(
        &self,
        name: &str,
        key: &ObjectKey,
        upload: &UploadId,
    ) -> Result<Vec<StoredPart>, StorageError> {
        self.backend(name)?
            .list_parts(key, upload)
            .await
            .map_err(Self::failed(name))
    }

    /// Assembles `parts`, in order, into the object `key`.
    pub async fn complete_multipart(
        &self,
        name: &str,
        key: &ObjectKey,
        upload: &UploadId,
        parts: &[PartToAssemble],
    ) -> Result<(), StorageError> {
        self.backend(name)?
            .complete_multipart(key, upload, parts)
            .await
            .map_err(Self::failed(name))
    }

    /// Abandons an upload in parts and whatever it holds.
    pub async fn abort_multipart(
        &self,
        name: &str,
        key: &ObjectKey,
        upload: &UploadId,
    ) -> Result<(), StorageError> {
        self.backend(name)?
            .abort_multipart(key, upload)
            .await
            .map_err(Self::failed(name))
    }

    /// The data plane of backend `name`, when valet serves its signed requests itself.
    pub fn data_plane(&self, name: &str) -> Option<&LocalBackend> {
        self.backends.get(name).and_then(|b| b.data_plane())
    }
}

/// Builds the backend configured as `name`.
fn build(
    name: &str,
    configured: &BackendSettings,
    settings: &Settings,
    public_url: &url::Url,
) -> anyhow::Result<Arc<dyn Backend>> {
    Ok(match configured {
        BackendSettings::Local(config) => {
            let root = settings.local_root(config);
            let secret = match &config.secret {
                Some(s) => s.expose().as_bytes().to_vec(),
                None => load_or_create_secret(&settings.local_secret_path())?,
            };
            Arc::new(LocalBackend::new(name, root, secret, public_url.clone())?)
        }
        BackendSettings::S3(config) => Arc::new(S3Backend::new(config.clone())?),
        BackendSettings::Azblob(config) => Arc::new(AzblobBackend::new(config.clone())?),
    })
}

/// Reads the generated local signing secret, creating it (32 random bytes, owner-only)
/// on first start.
fn load_or_create_secret(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return hex::decode(text.trim())
            .with_context(|| format!("{} is not a hex secret", path.display()));
    }
    let secret: [u8; 32] = rand::random();
    create_private_file(path, hex::encode(secret).as_bytes())?;
    Ok(secret.to_vec())
}
