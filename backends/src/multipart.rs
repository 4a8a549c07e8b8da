//! Uploads in parts: the types every backend's multipart operations share.
//!
//! A multipart upload is started by valet (`Backend::start_multipart`), each part is
//! sent by the device to its own signed URL (`Backend::sign_part`), the store is asked
//! which parts it holds (`Backend::list_parts`, for resuming), and valet assembles
//! (`Backend::complete_multipart`) or abandons (`Backend::abort_multipart`) it.

use chrono::{DateTime, Utc};

use crate::{ObjectKey, Sha256};

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
