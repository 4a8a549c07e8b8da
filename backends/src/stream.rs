//! Streaming reads and writes of whole objects with bounded memory, for copying an
//! object from one store to another: a read is a stream of chunks, a write is an
//! [`ObjectWriter`] that commits only content of the declared size and SHA-256.

use async_trait::async_trait;
use bytes::Bytes;
use sha2::Digest;

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

/// Chunks larger than this are hashed on the blocking pool: hashing runs at a few
/// hundred MB/s, so a bigger chunk would hold an async worker for milliseconds.
const HASH_INLINE_MAX: usize = 1024 * 1024;

/// Counts and hashes the bytes passing through a writer and compares them with its spec.
pub(crate) struct ContentCheck {
    expected_size: u64,
    expected_sha256: Sha256,
    received: u64,
    /// `None` only while a chunk is being hashed on the blocking pool.
    hasher: Option<sha2::Sha256>,
}

impl ContentCheck {
    /// A check of content against `spec`.
    pub(crate) fn new(spec: &WriteSpec) -> Self {
        Self {
            expected_size: spec.size,
            expected_sha256: spec.sha256,
            received: 0,
            hasher: Some(sha2::Sha256::new()),
        }
    }

    /// Counts and hashes `chunk`; refuses it when it takes the content past the declared
    /// size (no point in sending bytes that can never be committed).
    pub(crate) async fn update(&mut self, chunk: &Bytes) -> Result<(), BackendError> {
        let received = self.received + chunk.len() as u64;
        if received > self.expected_size {
            return Err(BackendError::Refused(format!(
                "expected {} bytes, received at least {received}",
                self.expected_size
            )));
        }
        let mut hasher = self.hasher.take().ok_or_else(|| {
            BackendError::Unavailable(
                "the content was checked already or its hashing failed".to_owned(),
            )
        })?;
        if chunk.len() > HASH_INLINE_MAX {
            let chunk = chunk.clone();
            hasher = tokio::task::spawn_blocking(move || {
                hasher.update(&chunk);
                hasher
            })
            .await
            .map_err(|e| BackendError::Unavailable(format!("hashing stopped: {e}")))?;
        } else {
            hasher.update(chunk);
        }
        self.hasher = Some(hasher);
        self.received = received;
        Ok(())
    }

    /// Succeeds only when the content had exactly the declared size and SHA-256; done
    /// once, at the end of the content.
    pub(crate) fn verify(&mut self) -> Result<(), BackendError> {
        if self.received != self.expected_size {
            return Err(BackendError::Refused(format!(
                "expected {} bytes, received {}",
                self.expected_size, self.received
            )));
        }
        let hasher = self.hasher.take().ok_or_else(|| {
            BackendError::Unavailable(
                "the content was checked already or its hashing failed".to_owned(),
            )
        })?;
        let actual = Sha256::from_bytes(hasher.finalize().into());
        if actual != self.expected_sha256 {
            return Err(BackendError::Refused(format!(
                "the content's SHA-256 is {actual}, not the declared {}",
                self.expected_sha256
            )));
        }
        Ok(())
    }
}
