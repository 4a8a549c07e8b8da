//! Ending files: delete (by a caller or by retention), batched expiry, purging.

use super::*;

impl FileService {
    /// Marks a file deleted and removes its object (idempotent).
    pub async fn delete(&self, who: &Authenticated, id: FileId) -> Result<(), ApiError> {
        let result = match self.visible_file(who, id, Operation::Delete).await {
            Ok(file) => self.remove(&file).await,
            Err(e) => Err(e),
        };
        self.settle(who, result)
    }

    /// Marks a file deleted and removes its object, with no permission check (for
    /// callers that already have one, and for retention). Idempotent.
    pub async fn remove(&self, file: &File) -> Result<(), ApiError> {
        if file.status == FileStatus::Deleted {
            return Ok(());
        }
        let transition = self.transition(MarkDeleted(file.id)).await?;
        match transition {
            Transition::Changed(_) => {
                self.notifier.do_send(OutboxAppended);
                self.record_operation("delete", file);
                self.delete_object(file).await;
                self.abort_parts(file).await;
                Ok(())
            }
            Transition::Unchanged(_) => Ok(()),
            Transition::Conflict(f) => Err(ApiError::new(
                ErrorCode::Conflict,
                format!("the file is {} and cannot be deleted", f.status),
            )),
            Transition::NotFound => Err(ApiError::file_not_found()),
        }
    }

    /// `pending` → `expired` for many overdue files at once (the reconciler's path):
    /// one transaction, one outbox row per file; returns the files that changed.
    pub async fn expire_many(&self, files: Vec<File>) -> Result<Vec<File>, ApiError> {
        let ids = files.iter().map(|f| f.id).collect();
        let expired = self.ask(ExpireMany(ids)).await?;
        if expired.is_empty() {
            return Ok(expired);
        }
        self.notifier.do_send(OutboxAppended);
        futures_util::stream::iter(&expired)
            .for_each_concurrent(STORAGE_CONCURRENCY, |file| async move {
                self.cache.put(file).await;
                self.record_operation("expire", file);
                // A device may still PUT with a URL issued moments before expiry.
                self.delete_object(file).await;
                self.abort_parts(file).await;
            })
            .await;
        Ok(expired)
    }

    /// Drops purged records from the cache.
    pub async fn forget(&self, ids: &[FileId]) {
        for id in ids {
            self.cache.remove(id).await;
        }
    }
}
