//! How an attempt to complete an upload ended, before anything is said over HTTP:
//! `complete` answers with it, storage events and the reconciler act on it.

use super::{File, FileStatus};

/// The outcome of checking a pending file's stored object.
#[derive(Debug, Clone)]
pub enum Completion {
    /// This check made the file `uploaded` (and recorded its event).
    Uploaded(Box<File>),
    /// The file was already `uploaded`, by an earlier or concurrent check.
    AlreadyUploaded(Box<File>),
    /// The file is `verifying`: valet assembles and checks it off the request path.
    Verifying(Box<File>),
    /// Parts of a multipart upload are not stored yet (their numbers); it stays `pending`.
    PartsMissing(Vec<u64>),
    /// A stored part has the wrong length for its position, or the store refused
    /// to assemble the parts declared: the file is `rejected`.
    PartMismatch(String),
    /// No object is stored for the file yet; it stays `pending`.
    Missing,
    /// The stored object has another length than declared: the file is `rejected`.
    SizeMismatch {
        /// Bytes stored.
        stored: u64,
        /// Bytes declared.
        declared: u64,
    },
    /// The stored object has another SHA-256 than declared: the file is `rejected`.
    ChecksumMismatch,
    /// The file had already ended (`rejected`, `expired`, `deleted`).
    Finished(FileStatus),
}

/// A completion the API answers with a file: 200 when uploaded, 202 while verifying.
#[derive(Debug, Clone)]
pub enum Completed {
    /// Verified and `uploaded`.
    Uploaded(File),
    /// Accepted; `verifying` until the check off the request path ends.
    Verifying(File),
}

impl Completion {
    /// A short name of the outcome, for logs.
    pub fn label(&self) -> &'static str {
        match self {
            Completion::Uploaded(_) => "uploaded",
            Completion::AlreadyUploaded(_) => "already_uploaded",
            Completion::Verifying(_) => "verifying",
            Completion::Missing => "missing",
            Completion::PartsMissing(_) => "parts_missing",
            Completion::PartMismatch(_) => "part_mismatch",
            Completion::SizeMismatch { .. } => "size_mismatch",
            Completion::ChecksumMismatch => "checksum_mismatch",
            Completion::Finished(_) => "finished",
        }
    }
}
