//! Streaming reads and writes of whole objects with bounded memory, for copying an
//! object from one store to another: a read is a stream of chunks, a write is an
//! [`ObjectWriter`] that commits only content of the declared size and SHA-256.

use async_trait::async_trait;
use bytes::Bytes;

use crate::{BackendError, Sha256};

/// An object's bytes, in chunks.
pub type ObjectStream = futures_util::stream::BoxStream<'static, Result<Bytes, BackendError>>;

/// What a writer is about to store; the writer refuses to commit anything else.
#[derive(Debug, Clone)]
pub struct WriteSpec {
    /// Exact length in bytes.
    pub size: u64,
    /// SHA-256 the content must have.
    pub sha256: Sha256,
    /// Content type to store with the object.
    pub content_type: String,
    /// Size of each part of a multipart write (S3/Azure); bounds the memory a writer holds.
    pub chunk_size: usize,
}

/// Writes one object; nothing is visible under the key until `finish` succeeds.
#[async_trait]
pub trait ObjectWriter: Send {
    /// Appends bytes.
    async fn write(&mut self, chunk: Bytes) -> Result<(), BackendError>;
    /// Checks size and SHA-256 against the spec and commits the object (replacing any object
    /// under the key). On a mismatch: error `BackendError::Refused`, nothing committed, temp data removed.
    async fn finish(self: Box<Self>) -> Result<(), BackendError>;
    /// Discards everything written: temp files, uncommitted blocks, an unfinished multipart upload.
    async fn abort(self: Box<Self>) -> Result<(), BackendError>;
}
