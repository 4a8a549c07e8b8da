//! How an attempt to complete an upload ended, before anything is said over HTTP:
//! `complete` answers with it, storage events and the reconciler act on it.

use super::{File, FileStatus};

/// The outcome of checking a pending file's stored object.
#[derive(Debug, Clone)]
pub enum Completion {
    /// The file is `uploaded`: now, or it already was.
    Uploaded(Box<File>),
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
