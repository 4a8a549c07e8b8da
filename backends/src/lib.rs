//! Storage backends for valet.
//!
//! Everything that knows a store's wire format lives in this crate: signing the
//! requests devices send straight to storage, and the few operations valet itself
//! performs on objects (stat, hash, streaming read and write, delete, probe). The
//! service only sees the [`Backend`] trait.

pub mod azblob;
mod capabilities;
mod digest;
pub mod disposition;
mod endpoint;
mod error;
mod key;
pub mod local;
mod multipart;
mod operator;
pub mod s3;
mod secret;
mod stream;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use capabilities::{Capabilities, Container, MultipartLimits};
pub use digest::{Sha256, Sha256ParseError};
pub use disposition::attachment as content_disposition;
pub use endpoint::HttpEndpoint;
pub use error::BackendError;
pub use key::{ObjectKey, ObjectKeyError};
pub use multipart::{Multipart, PartSpec, PartToAssemble, StoredPart, UploadId};
pub use operator::ProbeMode;
pub use secret::Secret;
pub use stream::{ObjectStream, ObjectWriter, WriteSpec};

/// What a device is allowed to upload with one signed request.
#[derive(Debug, Clone)]
pub struct UploadSpec {
    /// Where the object goes.
    pub key: ObjectKey,
    /// Exact length in bytes the store must receive.
    pub size: u64,
    /// SHA-256 the body must have.
    pub sha256: Sha256,
    /// Content type the device sends.
    pub content_type: String,
    /// When the signature stops working.
    pub expires_at: DateTime<Utc>,
}

/// What a holder is allowed to download with one signed request.
#[derive(Debug, Clone)]
pub struct DownloadSpec {
    /// The object to read.
    pub key: ObjectKey,
    /// File name offered to the client (Content-Disposition).
    pub file_name: String,
    /// Content type the response carries.
    pub content_type: String,
    /// When the signature stops working.
    pub expires_at: DateTime<Utc>,
}

/// A request the holder sends to storage exactly as given.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SignedRequest {
    /// HTTP method.
    pub method: String,
    /// Absolute URL, signature included.
    pub url: String,
    /// Headers that must be sent verbatim (some are covered by the signature).
    pub headers: BTreeMap<String, String>,
    /// When the signature stops working.
    pub expires_at: DateTime<Utc>,
}

/// What a store reports about a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStat {
    /// Length in bytes.
    pub size: u64,
    /// SHA-256 of the content when the store knows it.
    pub sha256: Option<Sha256>,
}

/// One configured object store.
#[async_trait]
pub trait Backend: Multipart + Send + Sync + 'static {
    /// Kind of store (`local`, `s3`, `azblob`), used in records and events.
    fn kind(&self) -> &'static str;

    /// What this store can do.
    fn capabilities(&self) -> Capabilities;

    /// Bucket (S3) or container (Azure) holding the objects; `None` for the local store.
    fn container(&self) -> Option<Container<'_>> {
        None
    }

    /// valet's own data plane, for the stores it serves itself.
    fn data_plane(&self) -> Option<&local::LocalBackend> {
        None
    }

    /// Signs a PUT that stores exactly the described object.
    fn sign_upload(&self, spec: &UploadSpec) -> Result<SignedRequest, BackendError>;

    /// Signs a GET for an object.
    fn sign_download(&self, spec: &DownloadSpec) -> Result<SignedRequest, BackendError>;

    /// Size (and hash, where known) of an object; `None` when it does not exist.
    async fn stat(&self, key: &ObjectKey) -> Result<Option<ObjectStat>, BackendError>;

    /// Reads the whole object and returns its SHA-256.
    async fn sha256(&self, key: &ObjectKey) -> Result<Sha256, BackendError>;

    /// Streams an object's bytes; an absent object is [`BackendError::NotFound`].
    async fn read(&self, key: &ObjectKey) -> Result<ObjectStream, BackendError>;

    /// Starts writing the object `key` as described by `spec`.
    async fn write(
        &self,
        key: &ObjectKey,
        spec: &WriteSpec,
    ) -> Result<Box<dyn ObjectWriter>, BackendError>;

    /// Removes an object; removing an absent object succeeds.
    async fn delete(&self, key: &ObjectKey) -> Result<(), BackendError>;

    /// Checks that the store is reachable and usable.
    async fn probe(&self) -> Result<(), BackendError>;
}

/// HTTPS for the cloud backends uses rustls with the ring provider (no OpenSSL, no
/// C crypto build); installed once per process.
fn install_crypto_provider() {
    // Fails only when a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
