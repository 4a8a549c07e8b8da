//! Objects that must not outlive their file. A signed S3 or Azure upload URL cannot
//! be revoked: a file deleted (or rejected) before that URL expires can get an
//! object put under its key afterwards. So:
//! - the local data plane admits a PUT only for a `pending` file ([`admit_upload`]);
//! - a storage event for an ended file's key removes the object at once;
//! - the reconciler sweeps each such key once the URL has expired (plus the grace
//!   period) and removes what it finds ([`sweep_tombstones`]).
//!
//! Every object removed this way is counted in `valet_orphans_removed_total`.
//!
//! [`admit_upload`]: FileService::admit_upload
//! [`sweep_tombstones`]: FileService::sweep_tombstones

use super::*;
use crate::metadata::{ClaimTombstones, TombstonesSwept};
use valet_backends::ObjectKey;

impl FileService {
    /// The file whose object `key` on `backend` is, if valet issued it.
    pub(super) async fn file_of_object(
        &self,
        backend: &str,
        key: &str,
    ) -> Result<Option<File>, ApiError> {
        // Keys valet issues end with the file id.
        let Ok(key) = ObjectKey::parse(key) else {
            return Ok(None);
        };
        let Some(Ok(id)) = key.as_str().rsplit('/').next().map(str::parse::<FileId>) else {
            return Ok(None);
        };
        let Some(file) = self.load(id).await? else {
            return Ok(None);
        };
        Ok((file.backend == backend && file.object_key == key).then_some(file))
    }

    /// Whether the local data plane may store an upload (whole or a part) under
    /// `key`: only while its file is `pending`. The URL's signature was checked
    /// already; this is what a signature cannot know.
    pub async fn admit_upload(&self, backend: &str, key: &str) -> Result<(), ApiError> {
        let refused = |detail: String| Err(ApiError::new(ErrorCode::Forbidden, detail));
        let Some(file) = self.file_of_object(backend, key).await? else {
            return refused("this URL no longer accepts uploads: its file is gone".into());
        };
        match file.status {
            FileStatus::Pending => Ok(()),
            FileStatus::Verifying | FileStatus::Uploaded => Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "the file is {}: its object was stored already and is not replaced",
                    file.status
                ),
            )),
            FileStatus::Deleted | FileStatus::Expired | FileStatus::Rejected => refused(format!(
                "this URL no longer accepts uploads: the file is {}",
                file.status
            )),
        }
    }

    /// After the local data plane stored an object under `key`: if its file ended
    /// meanwhile (deleted while the body was arriving), the object is removed and
    /// the upload refused as [`Self::admit_upload`] would have.
    pub async fn discard_if_ended(&self, backend: &str, key: &str) -> Result<(), ApiError> {
        let Some(file) = self.file_of_object(backend, key).await? else {
            return Ok(());
        };
        if matches!(
            file.status,
            FileStatus::Deleted | FileStatus::Expired | FileStatus::Rejected
        ) {
            self.remove_orphan(&file).await?;
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "the file was {} while the upload arrived; nothing is kept",
                    file.status
                ),
            ));
        }
        Ok(())
    }

    /// Removes the object (and any upload in parts) under an ended file's key;
    /// true when there was an object.
    pub(super) async fn remove_orphan(&self, file: &File) -> Result<bool, ApiError> {
        let present = self
            .storage
            .stat(&file.backend, &file.object_key)
            .await
            .map_err(ApiError::from)?
            .is_some();
        if present {
            self.storage
                .delete(&file.backend, &file.object_key)
                .await
                .map_err(ApiError::from)?;
            metrics::record_orphan_removed(&file.backend);
            tracing::warn!(
                file_id = %file.id,
                tenant = %file.tenant_id,
                status = %file.status,
                "removed an object stored after its file had ended"
            );
        }
        self.abort_parts(file).await;
        Ok(present)
    }

    /// One batch of the tombstone sweep: claims ended files whose upload URL
    /// expired more than `reconciler.grace_secs` ago, removes any object under
    /// their keys and marks them swept. Returns (files swept, objects removed);
    /// a file whose store cannot be reached keeps its claim until the lease ends
    /// and is swept on a later pass.
    pub async fn sweep_tombstones(&self) -> Result<(usize, usize), ApiError> {
        let settings = &self.settings.reconciler;
        let claim = ClaimTombstones {
            cutoff: now_micros() - Duration::seconds(settings.grace_secs as i64),
            lease: Duration::seconds(settings.lease_secs as i64),
            limit: settings.batch_size,
        };
        let files = self.ask(claim).await?;
        let results: Vec<(FileId, Result<bool, ApiError>)> = futures_util::stream::iter(&files)
            .map(|file| async move { (file.id, self.remove_orphan(file).await) })
            .buffer_unordered(STORAGE_CONCURRENCY)
            .collect()
            .await;
        let mut swept = Vec::with_capacity(results.len());
        let mut removed = 0;
        for (id, result) in results {
            match result {
                Ok(present) => {
                    swept.push(id);
                    removed += usize::from(present);
                }
                Err(e) => {
                    tracing::warn!(file_id = %id, error = %e, "cannot sweep a key now; retrying later")
                }
            }
        }
        let count = swept.len();
        self.ask(TombstonesSwept(swept)).await?;
        Ok((count, removed))
    }
}
