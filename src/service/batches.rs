//! Batches: a delivery of many files announced as one. Files created into an open
//! batch are uploaded and completed as usual, but no event reports them and only
//! the batch's opener lists them; the commit records, in one transaction, the
//! batch's event and then every file's `uploaded` event. Abandoning (or expiry)
//! deletes the files through the files' own deletion path.

use super::*;
use crate::domain::{
    principal_key, Batch, BatchCursor, BatchId, BatchState, DEFAULT_BATCH_TTL_SECS,
    MAX_BATCH_FILES, MAX_BATCH_TTL_SECS,
};
use crate::metadata::{
    AbandonBatch, BatchChange, CommitBatch, CreateBatch, DueBatches, GetBatch, GetBatchForJoin,
    ListBatches,
};

/// Body of `POST /v1/batches`.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateBatchBody)]
pub struct CreateBatchRequest {
    /// A name for the batch (metadata only).
    pub name: Option<FileName>,
    /// String metadata.
    pub metadata: Option<FileMetadata>,
    /// Lifetime of the open batch in seconds, 1 to 604800 (7 days); default 86400
    /// (1 day). An open batch past it is abandoned by the reconciler.
    #[schema(minimum = 1, maximum = 604800)]
    #[serde(default, deserialize_with = "crate::domain::optional_whole_number")]
    pub expires_in_secs: Option<u64>,
    /// The batch's files go to this device's root (service tokens only; not with `shared`).
    pub device_id: Option<DeviceId>,
    /// The batch's files go to the tenant's shared root (service tokens only).
    pub shared: Option<bool>,
}

/// Filters of `GET /v1/batches`, parsed from the query string.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchListRequest {
    /// Only this device's root (a device may name only itself; not with `shared=true`).
    pub device_id: Option<DeviceId>,
    /// Only the tenant's shared root.
    pub shared: Option<bool>,
    /// Only batches in this state.
    pub state: Option<BatchState>,
    /// Page size, 1–1000 (default 100).
    #[param(schema_with = super::query::page_size_schema)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page, as returned (any other text: 400).
    pub cursor: Option<String>,
}

/// One page of batches.
#[derive(Debug, Clone)]
pub struct BatchPage {
    /// Batches, newest first (without their files).
    pub batches: Vec<Batch>,
    /// Cursor for the next page, if there is one.
    pub next_cursor: Option<String>,
}

fn batch_not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such batch")
}

impl FileService {
    /// Opens a batch in the caller's root (a service names it as for files).
    pub async fn create_batch(
        &self,
        who: &Authenticated,
        request: CreateBatchRequest,
    ) -> Result<Batch, ApiError> {
        let result = self.open_batch(who, request).await;
        self.settle(who, result)
    }

    async fn open_batch(
        &self,
        who: &Authenticated,
        request: CreateBatchRequest,
    ) -> Result<Batch, ApiError> {
        let identity = &who.identity;
        let root = self.writable_root(who, request.device_id, request.shared)?;
        let ttl = request.expires_in_secs.unwrap_or(DEFAULT_BATCH_TTL_SECS);
        if !(1..=MAX_BATCH_TTL_SECS).contains(&ttl) {
            return Err(ApiError::invalid(format!(
                "expires_in_secs must be between 1 and {MAX_BATCH_TTL_SECS}"
            )));
        }
        let now = now_micros();
        let batch = Batch {
            id: BatchId::new(),
            tenant_id: identity.tenant.clone(),
            device_id: root.device().cloned(),
            name: request.name.map(|n| n.as_str().to_owned()),
            metadata: request.metadata.unwrap_or_default().into_inner(),
            state: BatchState::Open,
            created_at: now,
            expires_at: now + Duration::seconds(ttl as i64),
            committed_at: None,
            files: Some(Vec::new()),
            created_by: principal_key(&identity.principal),
        };
        self.ask(CreateBatch(batch)).await
    }

    /// The batch a new file of `root` joins, checked: 404 for an unknown or
    /// foreign batch, 400 for another root's, 409 when it is not open or full.
    pub(super) async fn joinable_batch(
        &self,
        who: &Authenticated,
        id: BatchId,
        root: &Root,
    ) -> Result<(), ApiError> {
        let identity = &who.identity;
        let (batch, count) = self
            .ask(GetBatchForJoin(id))
            .await?
            .ok_or_else(batch_not_found)?;
        if identity.may(Operation::Write, &batch.tenant_id, &batch.root()) != Decision::Allow {
            return Err(batch_not_found());
        }
        if &batch.root() != root {
            return Err(ApiError::invalid(
                "the file's root must be its batch's root (device_id / shared)",
            ));
        }
        if batch.state != BatchState::Open {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("the batch is {}, not open", batch.state),
            ));
        }
        if count >= MAX_BATCH_FILES {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("the batch already holds {MAX_BATCH_FILES} files, the most it may"),
            ));
        }
        Ok(())
    }

    /// Loads a batch the caller may `operation`; others' batches are "not found".
    async fn visible_batch(
        &self,
        who: &Authenticated,
        id: BatchId,
        operation: Operation,
    ) -> Result<Batch, ApiError> {
        let batch = self.ask(GetBatch(id)).await?.ok_or_else(batch_not_found)?;
        let root = batch.root();
        let decision = who.identity.may(operation, &batch.tenant_id, &root);
        self.authorize(
            who,
            operation,
            &root.resource(&batch.tenant_id),
            decision,
            None,
            batch_not_found,
        )?;
        Ok(batch)
    }

    /// A batch with its files.
    pub async fn get_batch(&self, who: &Authenticated, id: BatchId) -> Result<Batch, ApiError> {
        let result = self.visible_batch(who, id, Operation::Read).await;
        self.settle(who, result)
    }

    /// One page of the batches the caller may list.
    pub async fn list_batches(
        &self,
        who: &Authenticated,
        request: BatchListRequest,
    ) -> Result<BatchPage, ApiError> {
        let result = self.batch_page(who, request).await;
        self.settle(who, result)
    }

    async fn batch_page(
        &self,
        who: &Authenticated,
        request: BatchListRequest,
    ) -> Result<BatchPage, ApiError> {
        let identity = &who.identity;
        let limit = page_limit(request.limit)?;
        let before = page_cursor(request.cursor.as_deref(), |text| {
            BatchCursor::decode(text).map(|c| c.0)
        })?;
        let root = self.listing_root(who, request.device_id, request.shared)?;
        let mut batches = self
            .ask(ListBatches {
                tenant: identity.tenant.clone(),
                root,
                state: request.state,
                before,
                limit: limit + 1,
            })
            .await?;
        let next_cursor = cut_page(&mut batches, limit, |b| BatchCursor(b.id).encode());
        Ok(BatchPage {
            batches,
            next_cursor,
        })
    }

    /// Commits an open batch (idempotent): every file must be uploaded.
    pub async fn commit_batch(&self, who: &Authenticated, id: BatchId) -> Result<Batch, ApiError> {
        let result = self.commit_visible(who, id).await;
        self.settle(who, result)
    }

    async fn commit_visible(&self, who: &Authenticated, id: BatchId) -> Result<Batch, ApiError> {
        self.visible_batch(who, id, Operation::Write).await?;
        match self.ask(CommitBatch(id)).await? {
            BatchChange::Changed(batch) => {
                self.notifier.do_send(OutboxAppended);
                Ok(batch)
            }
            BatchChange::Unchanged(batch) => Ok(batch),
            BatchChange::Conflict(batch) => Err(ApiError::new(
                ErrorCode::Conflict,
                format!("the batch is {} and cannot be committed", batch.state),
            )),
            BatchChange::Incomplete(ids) => Err(ApiError::new(
                ErrorCode::BatchIncomplete,
                format!("{} files of the batch are not uploaded", ids.len()),
            )
            .with_member(
                "files",
                serde_json::json!(ids.iter().map(|id| id.to_string()).collect::<Vec<_>>()),
            )),
            BatchChange::NotFound => Err(batch_not_found()),
        }
    }

    /// Abandons an open batch, deleting its files (idempotent; a committed batch: 409).
    pub async fn abandon_batch(&self, who: &Authenticated, id: BatchId) -> Result<Batch, ApiError> {
        let result = match self.visible_batch(who, id, Operation::Delete).await {
            Ok(_) => self.end_batch(id, false).await,
            Err(e) => Err(e),
        };
        self.settle(who, result)
    }

    /// `open` → `abandoned` (with `io.valet.batch.expired` when `expired`), then its
    /// files deleted through [`Self::remove`]: never announced, so no file event.
    async fn end_batch(&self, id: BatchId, expired: bool) -> Result<Batch, ApiError> {
        let batch = match self.ask(AbandonBatch { id, expired }).await? {
            BatchChange::Changed(batch) => {
                if expired {
                    self.notifier.do_send(OutboxAppended);
                }
                batch
            }
            // Again: deletes what an interrupted first attempt left behind.
            BatchChange::Unchanged(batch) => batch,
            BatchChange::Conflict(batch) => {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("the batch is {} and cannot be abandoned", batch.state),
                ))
            }
            BatchChange::Incomplete(_) | BatchChange::NotFound => return Err(batch_not_found()),
        };
        let files = batch.files.clone().unwrap_or_default();
        let results: Vec<Result<(), ApiError>> = futures_util::stream::iter(&files)
            .map(|file| self.remove(file))
            .buffer_unordered(STORAGE_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, ApiError>>()?;
        Ok(Batch {
            files: Some(Vec::new()),
            ..batch
        })
    }

    /// Abandons the open batches past their `expires_at` (the reconciler's path),
    /// each with an `io.valet.batch.expired` event, and finishes abandons that were
    /// interrupted before all their files were deleted; returns how many batches.
    pub async fn expire_batches(&self, batch_size: i64) -> Result<usize, ApiError> {
        let due = self
            .ask(DueBatches {
                now: now_micros(),
                limit: batch_size,
            })
            .await?;
        let mut expired = 0;
        for id in due {
            match self.end_batch(id, true).await {
                Ok(_) => expired += 1,
                // Another instance got there first, or a commit did.
                Err(e) if e.code() == ErrorCode::Conflict => {}
                Err(e) => return Err(e),
            }
        }
        Ok(expired)
    }
}
