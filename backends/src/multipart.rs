//! Uploads in parts: the types every backend's multipart operations share.
//!
//! A multipart upload is started by valet (`Backend::start_multipart`), each part is
//! sent by the device to its own signed URL (`Backend::sign_part`), the store is asked
//! which parts it holds (`Backend::list_parts`, for resuming), and valet assembles
//! (`Backend::complete_multipart`) or abandons (`Backend::abort_multipart`) it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{BackendError, ObjectKey, Sha256, SignedRequest};

/// Uploads in parts, which every backend supports (see `Capabilities::multipart`
/// for each store's bounds).
#[async_trait]
pub trait Multipart {
    /// Starts an upload of `key` in parts.
    async fn start_multipart(
        &self,
        key: &ObjectKey,
        content_type: &str,
    ) -> Result<UploadId, BackendError>;

    /// Signs a PUT of one part, binding its length (and SHA-256 where the store can).
    fn sign_part(&self, spec: &PartSpec) -> Result<SignedRequest, BackendError>;

    /// The parts the store holds for an upload, by ascending number.
    async fn list_parts(
        &self,
        key: &ObjectKey,
        upload: &UploadId,
    ) -> Result<Vec<StoredPart>, BackendError>;

    /// Assembles `parts`, in order, into the object.
    async fn complete_multipart(
        &self,
        key: &ObjectKey,
        upload: &UploadId,
        parts: &[PartToAssemble],
    ) -> Result<(), BackendError>;

    /// Abandons an upload and the parts it holds.
    async fn abort_multipart(&self, key: &ObjectKey, upload: &UploadId)
        -> Result<(), BackendError>;
}

/// The store's handle on one multipart upload (S3's `UploadId`; for stores without
/// one, an id valet generates).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadId(String);

impl UploadId {
    /// Wraps an id the store (or valet) issued.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// A fresh random id, for stores that do not issue their own.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a device is allowed to send as one part.
#[derive(Debug, Clone)]
pub struct PartSpec {
    /// The object being assembled.
    pub key: ObjectKey,
    /// The upload the part belongs to.
    pub upload: UploadId,
    /// Part number, from 1.
    pub number: u32,
    /// Exact length of the part.
    pub size: u64,
    /// SHA-256 of the part, bound into the signature where the store can enforce it.
    pub sha256: Sha256,
    /// When the signature stops working.
    pub expires_at: DateTime<Utc>,
}

/// A part the store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPart {
    /// Part number, from 1.
    pub number: u32,
    /// Length as the store reports it.
    pub size: u64,
    /// The store's tag for the part (S3 needs it back at completion).
    pub etag: Option<String>,
}

/// A part to assemble, as valet declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartToAssemble {
    /// Part number, from 1.
    pub number: u32,
    /// The SHA-256 declared when its URL was signed.
    pub sha256: Sha256,
}
