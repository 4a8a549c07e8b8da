//! Completing an upload: the stored object is checked against the declaration, by
//! `complete`, by storage events and by the reconciler alike.

use super::*;
use crate::domain::Completion;

/// What a storage event did to the file it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageEventOutcome {
    /// The pending file was verified and is now `uploaded`.
    Completed(FileId),
    /// The file was already `uploaded` (a duplicate delivery, or `complete` won).
    AlreadyUploaded(FileId),
    /// The stored object did not match: `rejected`, object deleted.
    Rejected(FileId),
    /// The store does not show the object yet: the file stays pending.
    NotYetVisible(FileId),
    /// The file had ended (`rejected`, `expired`, `deleted`): nothing to do.
    Finished(FileId),
    /// Not an object valet issued.
    Unknown,
}

impl StorageEventOutcome {
    /// Label for responses and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            StorageEventOutcome::Completed(_) => "completed",
            StorageEventOutcome::AlreadyUploaded(_) => "already_uploaded",
            StorageEventOutcome::Rejected(_) => "rejected",
            StorageEventOutcome::NotYetVisible(_) => "not_yet_visible",
            StorageEventOutcome::Finished(_) => "finished",
            StorageEventOutcome::Unknown => "unknown",
        }
    }

    /// The file concerned, if valet knows it.
    pub fn file_id(&self) -> Option<FileId> {
        match *self {
            StorageEventOutcome::Completed(id)
            | StorageEventOutcome::AlreadyUploaded(id)
            | StorageEventOutcome::Rejected(id)
            | StorageEventOutcome::NotYetVisible(id)
            | StorageEventOutcome::Finished(id) => Some(id),
            StorageEventOutcome::Unknown => None,
        }
    }
}

impl FileService {
    /// Verifies the stored object and marks the file uploaded (idempotent).
    pub async fn complete(&self, who: &Authenticated, id: FileId) -> Result<File, ApiError> {
        let result = match self.visible_file(who, id, Operation::Write).await {
            Ok(file) => self
                .verify_and_complete(file)
                .await
                .and_then(crate::problem::completion_answer),
            Err(e) => Err(e),
        };
        self.settle(who, result)
    }

    /// The one completion path: stat the object, compare size and SHA-256, then
    /// `uploaded` (with its event) or `rejected` (object deleted). An error means
    /// the check could not be made (storage or database unavailable).
    pub async fn verify_and_complete(&self, file: File) -> Result<Completion, ApiError> {
        match file.status {
            FileStatus::Uploaded => return Ok(Completion::Uploaded(Box::new(file))),
            FileStatus::Pending => {}
            other => return Ok(Completion::Finished(other)),
        }
        let Some(stat) = self.storage.stat(&file.backend, &file.object_key).await? else {
            return Ok(Completion::Missing);
        };
        let mismatch = if stat.size != file.size {
            Some(Completion::SizeMismatch {
                stored: stat.size,
                declared: file.size,
            })
        } else {
            let stored = match stat.sha256 {
                Some(digest) => digest,
                None => self.storage.sha256(&file.backend, &file.object_key).await?,
            };
            (stored != file.sha256).then_some(Completion::ChecksumMismatch)
        };
        if let Some(mismatch) = mismatch {
            self.reject(&file).await?;
            return Ok(mismatch);
        }
        match self.transition(MarkUploaded(file.id)).await? {
            Transition::Changed(file) => {
                self.notifier.do_send(OutboxAppended);
                metrics::record_file_operation("complete", file.tenant_id.as_str(), device(&file));
                tracing::info!(file_id = %file.id, tenant = %file.tenant_id, "file uploaded");
                Ok(Completion::Uploaded(Box::new(file)))
            }
            Transition::Unchanged(file) => Ok(Completion::Uploaded(Box::new(file))),
            Transition::Conflict(file) => Ok(Completion::Finished(file.status)),
            Transition::NotFound => Err(ApiError::file_not_found()),
        }
    }

    /// Acts on a storage event reporting `object` created in `backend`: a pending
    /// file of valet's goes through [`Self::verify_and_complete`], as if its device
    /// had called `complete`. Objects valet did not issue are `Unknown`.
    pub async fn object_created(
        &self,
        backend: &str,
        object: &CreatedObject,
    ) -> Result<StorageEventOutcome, ApiError> {
        if !self.storage.names().any(|name| name == backend) {
            return Ok(StorageEventOutcome::Unknown);
        }
        if self
            .storage
            .container(backend)
            .is_some_and(|c| c.name != object.bucket)
        {
            return Ok(StorageEventOutcome::Unknown);
        }
        // Keys valet issues end with the file id.
        let Ok(key) = valet_backends::ObjectKey::parse(&object.key) else {
            return Ok(StorageEventOutcome::Unknown);
        };
        let Some(Ok(id)) = key.as_str().rsplit('/').next().map(str::parse::<FileId>) else {
            return Ok(StorageEventOutcome::Unknown);
        };
        let Some(file) = self.load(id).await? else {
            return Ok(StorageEventOutcome::Unknown);
        };
        if file.backend != backend || file.object_key != key {
            return Ok(StorageEventOutcome::Unknown);
        }
        match file.status {
            FileStatus::Uploaded => return Ok(StorageEventOutcome::AlreadyUploaded(file.id)),
            FileStatus::Pending => {}
            _ => return Ok(StorageEventOutcome::Finished(file.id)),
        }
        let id = file.id;
        Ok(match self.verify_and_complete(file).await? {
            Completion::Uploaded(_) => StorageEventOutcome::Completed(id),
            Completion::Missing => StorageEventOutcome::NotYetVisible(id),
            Completion::SizeMismatch { .. } | Completion::ChecksumMismatch => {
                StorageEventOutcome::Rejected(id)
            }
            Completion::Finished(_) => StorageEventOutcome::Finished(id),
        })
    }

    async fn reject(&self, file: &File) -> Result<(), ApiError> {
        let transition = self.transition(MarkRejected(file.id)).await?;
        if let Transition::Changed(_) = transition {
            self.notifier.do_send(OutboxAppended);
            metrics::record_file_operation("reject", file.tenant_id.as_str(), device(file));
            tracing::warn!(file_id = %file.id, "stored object does not match its declaration: rejected");
        }
        self.delete_object(file).await;
        Ok(())
    }
}
