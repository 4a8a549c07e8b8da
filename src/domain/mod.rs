//! The types valet's logic works with, parsed and validated at the edge.

mod access;
mod batch;
mod completion;
mod cursor;
mod file;
mod ids;
mod job;
mod parts;
mod rfc3339;
mod stored_names;
mod text;
mod transfer;
mod whole;

pub use access::{Decision, Identity, Operation, Principal, Root};
pub use batch::{
    principal_key, Batch, BatchId, BatchState, DEFAULT_BATCH_TTL_SECS, MAX_BATCH_FILES,
    MAX_BATCH_TTL_SECS,
};
pub use completion::{Completed, Completion};
pub use cursor::{BatchCursor, Cursor, JobCursor, TransferCursor};
pub use file::{
    declared_sha256_schema, object_key, sha256_schema, ContentType, File, FileMetadata, FileName,
    FileStatus, ListedFile, MAX_METADATA_BYTES,
};
pub use ids::{DeviceId, FileId, IdError, ServiceName, TenantId};
pub use job::{Job, JobGroupId, JobId, JobKind, JobState, Replica};
pub use parts::{choose_part_size, PartPlan, PartSizeError};
pub use transfer::{
    AcceptFrom, Inbox, Recipient, Transfer, TransferId, TransferState, TransferredFile,
    DEFAULT_TRANSFER_TTL_SECS, MAX_ACCEPT_FROM, MAX_RECIPIENTS, MAX_TRANSFER_TTL_SECS,
};
pub use valet_backends::{ObjectKey, Sha256};
pub use whole::{optional_whole_number, whole_number};
