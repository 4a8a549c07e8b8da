//! Completing an upload: the stored object is checked against the declaration, by
//! `complete`, by storage events and by the reconciler alike.

use futures_util::stream;

use super::*;
use crate::domain::{Completed, Completion};
use crate::metadata::{ClaimVerifying, ExtendLease, MarkVerifying};

/// Files one verifier pass claims.
const VERIFY_BATCH: i64 = 16;
/// Files verified at once: each streams a whole object through SHA-256.
const VERIFY_CONCURRENCY: usize = 2;

/// What a storage event did to the file it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageEventOutcome {
    /// The pending file was verified and is now `uploaded`.
    Completed(FileId),
    /// The file is `verifying`: checked off the request path.
    Verifying(FileId),
    /// The file was already `uploaded` (a duplicate delivery, or `complete` won).
    AlreadyUploaded(FileId),
    /// The stored object did not match: `rejected`, object deleted.
    Rejected(FileId),
    /// The store does not show the object yet: the file stays pending.
    NotYetVisible(FileId),
    /// The file had ended (`rejected`, `expired`, `deleted`) and no object is there.
    Finished(FileId),
    /// The file had ended, yet an object was stored under its key (with an upload
    /// URL still valid): the object was removed.
    OrphanRemoved(FileId),
    /// Not an object valet issued.
    Unknown,
}

impl StorageEventOutcome {
    /// Label for responses and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            StorageEventOutcome::Completed(_) => "completed",
            StorageEventOutcome::Verifying(_) => "verifying",
            StorageEventOutcome::AlreadyUploaded(_) => "already_uploaded",
            StorageEventOutcome::Rejected(_) => "rejected",
            StorageEventOutcome::NotYetVisible(_) => "not_yet_visible",
            StorageEventOutcome::Finished(_) => "finished",
            StorageEventOutcome::OrphanRemoved(_) => "orphan_removed",
            StorageEventOutcome::Unknown => "unknown",
        }
    }

    /// The file concerned, if valet knows it.
    pub fn file_id(&self) -> Option<FileId> {
        match *self {
            StorageEventOutcome::Completed(id)
            | StorageEventOutcome::Verifying(id)
            | StorageEventOutcome::AlreadyUploaded(id)
            | StorageEventOutcome::Rejected(id)
            | StorageEventOutcome::NotYetVisible(id)
            | StorageEventOutcome::Finished(id)
            | StorageEventOutcome::OrphanRemoved(id) => Some(id),
            StorageEventOutcome::Unknown => None,
        }
    }
}

impl FileService {
    /// Verifies the stored object and marks the file uploaded (idempotent); a file
    /// checked off the request path answers `Verifying` until that check ends.
    pub async fn complete(&self, who: &Authenticated, id: FileId) -> Result<Completed, ApiError> {
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
    /// `uploaded` (with its event) or `rejected` (object deleted). Files uploaded
    /// in parts, and large files whose store reports no SHA-256, become
    /// `verifying` instead: assembling and hashing them is the verifier's work
    /// ([`Self::finish_verifying`]), never a request's. An error means the check
    /// could not be made (storage or database unavailable).
    pub async fn verify_and_complete(&self, file: File) -> Result<Completion, ApiError> {
        match file.status {
            FileStatus::Uploaded => return Ok(Completion::AlreadyUploaded(Box::new(file))),
            FileStatus::Verifying => return Ok(Completion::Verifying(Box::new(file))),
            FileStatus::Pending => {}
            other => return Ok(Completion::Finished(other)),
        }
        if file.parts.is_some() {
            return self.accept_parts(file).await;
        }
        let Some(stat) = self.storage.stat(&file.backend, &file.object_key).await? else {
            return Ok(Completion::Missing);
        };
        if stat.size != file.size {
            return self.size_mismatch(&file, stat.size).await;
        }
        if stat.sha256.is_none() && file.size > self.settings.uploads.multipart_threshold_bytes {
            return self.start_verifying(file).await;
        }
        self.check_digest(file, stat.sha256).await
    }

    /// The verifier's step for a `verifying` file: assemble its parts (once), then
    /// check the whole object's size and SHA-256, streaming it through the hash.
    pub async fn finish_verifying(&self, file: File) -> Result<Completion, ApiError> {
        match file.status {
            FileStatus::Verifying => {}
            FileStatus::Uploaded => return Ok(Completion::AlreadyUploaded(Box::new(file))),
            other => return Ok(Completion::Finished(other)),
        }
        let mut stat = self.storage.stat(&file.backend, &file.object_key).await?;
        if stat.is_none() && file.parts.is_some() {
            if let Some(refused) = self.assemble_parts(&file).await? {
                return Ok(refused);
            }
            stat = self.storage.stat(&file.backend, &file.object_key).await?;
        }
        let Some(stat) = stat else {
            self.reject(&file).await?;
            return Ok(Completion::PartMismatch(
                "the store holds no object for the completed upload".into(),
            ));
        };
        if stat.size != file.size {
            return self.size_mismatch(&file, stat.size).await;
        }
        self.check_digest(file, stat.sha256).await
    }

    /// Compares the stored SHA-256 (reported by the store, or read) with the
    /// declared one and ends the file accordingly.
    async fn check_digest(
        &self,
        file: File,
        reported: Option<valet_backends::Sha256>,
    ) -> Result<Completion, ApiError> {
        let stored = match reported {
            Some(digest) => digest,
            None => self.storage.sha256(&file.backend, &file.object_key).await?,
        };
        if stored != file.sha256 {
            self.reject(&file).await?;
            return Ok(Completion::ChecksumMismatch);
        }
        match self.transition(MarkUploaded(file.id)).await? {
            Transition::Changed(file) => {
                self.notifier.do_send(OutboxAppended);
                self.record_operation("complete", &file);
                tracing::info!(file_id = %file.id, tenant = %file.tenant_id, "file uploaded");
                Ok(Completion::Uploaded(Box::new(file)))
            }
            Transition::Unchanged(file) => Ok(Completion::AlreadyUploaded(Box::new(file))),
            Transition::Conflict(file) => Ok(Completion::Finished(file.status)),
            Transition::NotFound => Err(ApiError::file_not_found()),
        }
    }

    async fn size_mismatch(&self, file: &File, stored: u64) -> Result<Completion, ApiError> {
        self.reject(file).await?;
        Ok(Completion::SizeMismatch {
            stored,
            declared: file.size,
        })
    }

    /// `pending` → `verifying`, and the verifier is started on the file at once.
    pub(super) async fn start_verifying(&self, file: File) -> Result<Completion, ApiError> {
        match self.transition(MarkVerifying(file.id)).await? {
            Transition::Changed(file) | Transition::Unchanged(file) => {
                tracing::info!(file_id = %file.id, "file completed; verifying it");
                let service = self.clone();
                let id = file.id;
                actix_web::rt::spawn(async move {
                    service.verify_claimed(Some(id)).await;
                });
                Ok(Completion::Verifying(Box::new(file)))
            }
            Transition::Conflict(file) => Box::pin(self.verify_and_complete(file)).await,
            Transition::NotFound => Err(ApiError::file_not_found()),
        }
    }

    /// Claims `verifying` files (only `only`, when given) and finishes each; returns
    /// how many were claimed. Each file is worked by one instance at a time.
    pub async fn verify_claimed(&self, only: Option<FileId>) -> usize {
        let lease = Duration::seconds(self.settings.reconciler.lease_secs as i64);
        let claim = ClaimVerifying {
            only,
            lease,
            limit: VERIFY_BATCH,
        };
        let files = match self.ask(claim).await {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim files to verify now; retrying later");
                return 0;
            }
        };
        let claimed = files.len();
        stream::iter(files)
            .for_each_concurrent(VERIFY_CONCURRENCY, |file| async move {
                let id = file.id;
                // A verification longer than the lease (gigabytes on slow storage)
                // keeps its claim: the lease is extended at half its length.
                let keep_claim = async {
                    let every = (lease / 2).to_std().unwrap_or(std::time::Duration::from_secs(1));
                    loop {
                        tokio::time::sleep(every).await;
                        if let Err(e) = self.ask(ExtendLease { file: id, lease }).await {
                            tracing::warn!(file_id = %id, error = %e, "cannot extend a verification's lease");
                        }
                    }
                };
                let verified = tokio::select! {
                    verified = self.finish_verifying(file) => verified,
                    never = keep_claim => never,
                };
                match verified {
                    Ok(completion) => {
                        tracing::debug!(file_id = %id, outcome = ?completion.label(), "verified a file");
                    }
                    Err(e) => {
                        tracing::warn!(file_id = %id, error = %e, "cannot verify a file now; retrying after its lease");
                    }
                }
            })
            .await;
        claimed
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
        let Some(file) = self.file_of_object(backend, &object.key).await? else {
            return Ok(StorageEventOutcome::Unknown);
        };
        match file.status {
            FileStatus::Uploaded => return Ok(StorageEventOutcome::AlreadyUploaded(file.id)),
            // valet's own assembly of the parts; the verifier is at work.
            FileStatus::Verifying => return Ok(StorageEventOutcome::Verifying(file.id)),
            // Parts create no object: an event cannot mean this upload is done.
            FileStatus::Pending if file.parts.is_some() => {
                return Ok(StorageEventOutcome::NotYetVisible(file.id))
            }
            FileStatus::Pending => {}
            // Put after its file ended, with an upload URL that could not be revoked.
            FileStatus::Deleted | FileStatus::Expired | FileStatus::Rejected => {
                return Ok(if self.remove_orphan(&file).await? {
                    StorageEventOutcome::OrphanRemoved(file.id)
                } else {
                    StorageEventOutcome::Finished(file.id)
                });
            }
        }
        let id = file.id;
        Ok(match self.verify_and_complete(file).await? {
            Completion::Uploaded(_) => StorageEventOutcome::Completed(id),
            Completion::AlreadyUploaded(_) => StorageEventOutcome::AlreadyUploaded(id),
            Completion::Verifying(_) => StorageEventOutcome::Verifying(id),
            Completion::Missing | Completion::PartsMissing(_) => {
                StorageEventOutcome::NotYetVisible(id)
            }
            Completion::SizeMismatch { .. }
            | Completion::ChecksumMismatch
            | Completion::PartMismatch(_) => StorageEventOutcome::Rejected(id),
            Completion::Finished(_) => StorageEventOutcome::Finished(id),
        })
    }

    pub(super) async fn reject(&self, file: &File) -> Result<(), ApiError> {
        let transition = self.transition(MarkRejected(file.id)).await?;
        if let Transition::Changed(_) = transition {
            self.notifier.do_send(OutboxAppended);
            self.record_operation("reject", file);
            tracing::warn!(file_id = %file.id, "stored object does not match its declaration: rejected");
        }
        self.delete_object(file).await;
        self.abort_parts(file).await;
        Ok(())
    }
}
