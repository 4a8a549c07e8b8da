//! The file workflows (create, complete, download, list, delete), composed from the
//! actors. HTTP handlers and any other entry point (CLI, storage events) go through
//! here, so every path applies the same checks and transitions.

use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;

use actix::{Addr, MailboxError};
use base64::Engine;
use chrono::Duration;
use valet_backends::{DownloadSpec, SignedRequest, UploadSpec};

use crate::auth::{AuthError, Authenticated, Authenticator, Request};
use crate::cache::FileCache;
use crate::configuration::Settings;
use crate::domain::{
    object_key, ContentType, Decision, DeviceId, File, FileId, FileMetadata, FileName, FileStatus,
    Identity, Operation, Principal, Root, Sha256,
};
use crate::metadata::{
    now_micros, ExpireMany, GetFile, GroupCommit, ListFiles, MarkDeleted, MarkRejected,
    MarkUploaded, MetadataStore, Ping, StoreError, Transition,
};
use crate::notifier::{BrokerStatus, Notifier, OutboxAppended};
use crate::problem::{ApiError, ErrorCode};
use crate::storage::{Backends, SignError};
use crate::storage_events::CreatedObject;
use crate::telemetry::metrics;

/// Largest page of a listing.
pub const MAX_LIST_LIMIT: i64 = 1000;
/// Page size when none is asked for.
pub const DEFAULT_LIST_LIMIT: i64 = 100;

/// Storage calls a background job keeps in flight at once (stat, delete).
pub const STORAGE_CONCURRENCY: usize = 16;

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

/// Handles to everything the workflows need; cheap to clone.
#[derive(Clone)]
pub struct FileService {
    auth: Authenticator,
    store: Addr<MetadataStore>,
    writes: GroupCommit,
    notifier: Addr<Notifier>,
    cache: Arc<dyn FileCache>,
    backends: Backends,
    settings: Arc<Settings>,
}

/// A request to create an upload, as received (validated by [`FileService::create`]).
#[derive(Debug, Clone)]
pub struct CreateUpload {
    /// Display name.
    pub name: String,
    /// Exact length in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// Media type.
    pub content_type: Option<String>,
    /// Caller metadata.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Another device's root (services only).
    pub device_id: Option<String>,
    /// The tenant's shared root (services only).
    pub shared: Option<bool>,
}

/// Filters for a listing, as received.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// Only this device's root.
    pub device_id: Option<String>,
    /// Only the shared root.
    pub shared: Option<bool>,
    /// Only this status.
    pub status: Option<String>,
    /// Page size.
    pub limit: Option<i64>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
}

/// One page of files.
#[derive(Debug, Clone)]
pub struct Page {
    /// Files, newest first.
    pub files: Vec<File>,
    /// Cursor for the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// State of one dependency, for `/readyz`.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked (`database`, `cache`, `storage:<name>`).
    pub name: String,
    /// `None` when healthy, else why not.
    pub error: Option<String>,
    /// Whether valet cannot serve without it (the cache is optional: the
    /// database answers when it is down).
    pub required: bool,
}

fn mailbox(e: MailboxError) -> ApiError {
    ApiError::unavailable(format!("internal worker unavailable: {e}"))
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(cause) => {
            ApiError::unavailable(format!("database unavailable: {cause}"))
        }
        StoreError::Internal(cause) => ApiError::internal(cause),
    }
}

fn sign_error(e: SignError) -> ApiError {
    ApiError::internal(e)
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated(d) => ApiError::new(ErrorCode::Unauthenticated, d),
            AuthError::Forbidden(d) => ApiError::new(ErrorCode::Forbidden, d),
            AuthError::Busy(d) => ApiError::unavailable(d),
        }
    }
}

fn encode_cursor(id: &FileId) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{id}"))
}

fn decode_cursor(cursor: &str) -> Result<FileId, ApiError> {
    let bad = || ApiError::invalid("cursor is not a cursor returned by this API");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix("v1:")
        .and_then(|id| id.parse().ok())
        .ok_or_else(bad)
}

impl FileService {
    /// Wires the service to its actors.
    pub fn new(
        auth: Authenticator,
        store: Addr<MetadataStore>,
        writes: GroupCommit,
        notifier: Addr<Notifier>,
        cache: Arc<dyn FileCache>,
        backends: Backends,
        settings: Arc<Settings>,
    ) -> Self {
        Self {
            auth,
            store,
            writes,
            notifier,
            cache,
            backends,
            settings,
        }
    }

    /// The configured backends.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Whether tenant services must authenticate their connection with a client certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.settings.server.tls_client_ca.is_some()
    }

    /// Verifies a bearer token (each distinct token's signature once).
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Authenticated, ApiError> {
        let token = token.ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "an Authorization: Bearer <token> header is required",
            )
        })?;
        Ok(self.auth.authenticate(token).await?)
    }

    /// `error`, unless the caller's token has expired by now: then 401, whatever
    /// else went wrong. A request's token checks (expiry included) run once, where
    /// the request is authorized; answers decided before that point come here.
    pub fn unless_expired(&self, who: &Authenticated, error: ApiError) -> ApiError {
        if error.code() == ErrorCode::Unauthenticated {
            return error;
        }
        self.auth.expired(who).map_or(error, ApiError::from)
    }

    /// `result`, with its error passed through [`Self::unless_expired`].
    fn settle<T>(&self, who: &Authenticated, result: Result<T, ApiError>) -> Result<T, ApiError> {
        result.map_err(|e| self.unless_expired(who, e))
    }

    /// Applies the role rules, then the token's own checks, to one operation.
    fn authorize(
        &self,
        who: &Authenticated,
        operation: Operation,
        resource: &str,
        decision: Decision,
        file: Option<FileId>,
        hidden: impl FnOnce() -> ApiError,
    ) -> Result<(), ApiError> {
        match decision {
            Decision::Hidden => return Err(hidden()),
            Decision::Forbidden => {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    format!(
                        "{} may not {} here",
                        principal_kind(&who.identity),
                        operation.as_str()
                    ),
                ))
            }
            Decision::Allow => {}
        }
        let request = Request {
            operation,
            resource,
            file,
        };
        Ok(self.auth.authorize(who, &request)?)
    }

    /// A file from the cache, else from the database (then cached).
    async fn load(&self, id: FileId) -> Result<Option<File>, ApiError> {
        if let Some(file) = self.cache.get(&id).await {
            return Ok(Some(file));
        }
        let file = self
            .store
            .send(GetFile(id))
            .await
            .map_err(mailbox)?
            .map_err(store_error)?;
        if let Some(file) = &file {
            // Only fills a missing entry: a concurrent status change written
            // meanwhile must not be overwritten by this older read.
            self.cache.fill(file).await;
        }
        Ok(file)
    }

    /// Runs a status change and writes its outcome through to the cache.
    async fn transition<M>(&self, message: M) -> Result<Transition, ApiError>
    where
        M: actix::Message<Result = Result<Transition, StoreError>> + Send + 'static,
        MetadataStore: actix::Handler<M>,
    {
        let transition = self
            .store
            .send(message)
            .await
            .map_err(mailbox)?
            .map_err(store_error)?;
        if let Transition::Changed(file)
        | Transition::Unchanged(file)
        | Transition::Conflict(file) = &transition
        {
            self.cache.put(file).await;
        }
        Ok(transition)
    }

    /// Loads a file the caller may `operation`; others' files are "not found".
    async fn visible_file(
        &self,
        who: &Authenticated,
        id: FileId,
        operation: Operation,
    ) -> Result<File, ApiError> {
        let file = self.load(id).await?.ok_or_else(ApiError::file_not_found)?;
        let root = file.root();
        let decision = who.identity.may(operation, &file.tenant_id, &root);
        self.authorize(
            who,
            operation,
            &root.resource(&file.tenant_id),
            decision,
            Some(file.id),
            ApiError::file_not_found,
        )?;
        Ok(file)
    }

    /// Records a pending file and signs its upload.
    pub async fn create(
        &self,
        who: &Authenticated,
        request: CreateUpload,
    ) -> Result<(File, SignedRequest), ApiError> {
        let result = self.create_upload(who, request).await;
        self.settle(who, result)
    }

    async fn create_upload(
        &self,
        who: &Authenticated,
        request: CreateUpload,
    ) -> Result<(File, SignedRequest), ApiError> {
        let identity = &who.identity;
        let root = target_root(identity, request.device_id.as_deref(), request.shared)?;
        let name = FileName::parse(&request.name).map_err(ApiError::invalid)?;
        if request.size == 0 {
            return Err(ApiError::invalid("size must be at least 1 byte"));
        }
        let max = self.settings.uploads.max_upload_bytes;
        if request.size > max {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("size {} exceeds the limit of {max} bytes", request.size),
            ));
        }
        let sha256 =
            Sha256::parse_hex(&request.sha256).map_err(|e| ApiError::invalid(e.to_string()))?;
        let content_type = match &request.content_type {
            Some(ct) => ContentType::parse(ct).map_err(ApiError::invalid)?,
            None => ContentType::default(),
        };
        let metadata =
            FileMetadata::parse(request.metadata.unwrap_or_default()).map_err(ApiError::invalid)?;

        let decision = identity.may(Operation::Write, &identity.tenant, &root);
        self.authorize(
            who,
            Operation::Write,
            &root.resource(&identity.tenant),
            decision,
            None,
            || ApiError::new(ErrorCode::NotFound, "no such device root"),
        )?;

        let id = FileId::new();
        let now = now_micros();
        let ttl = Duration::seconds(self.settings.uploads.upload_url_ttl_secs as i64);
        let backend = self
            .settings
            .backend_for_tenant(identity.tenant.as_str())
            .to_owned();
        let file = File {
            id,
            object_key: object_key(&identity.tenant, &root, &id),
            tenant_id: identity.tenant.clone(),
            device_id: root.device().cloned(),
            name: name.as_str().to_owned(),
            size: request.size,
            sha256,
            content_type: content_type.as_str().to_owned(),
            status: FileStatus::Pending,
            backend: backend.clone(),
            metadata: metadata.into_inner(),
            created_at: now,
            uploaded_at: None,
            upload_expires_at: now + ttl,
        };
        // Sign before recording, so a signing failure leaves no record behind.
        let upload = self
            .backends
            .sign_upload(
                &backend,
                &UploadSpec {
                    key: file.object_key.clone(),
                    size: file.size,
                    sha256: file.sha256,
                    content_type: file.content_type.clone(),
                    expires_at: file.upload_expires_at,
                },
            )
            .map_err(sign_error)?;
        let file = self.writes.insert(file).await.map_err(store_error)?;
        self.cache.put(&file).await;
        metrics::record_file_operation("create", file.tenant_id.as_str(), device(&file));
        Ok((file, upload))
    }

    /// A file's metadata.
    pub async fn get(&self, who: &Authenticated, id: FileId) -> Result<File, ApiError> {
        let result = self.visible_file(who, id, Operation::Read).await;
        self.settle(who, result)
    }

    /// Verifies the stored object and marks the file uploaded (idempotent).
    pub async fn complete(&self, who: &Authenticated, id: FileId) -> Result<File, ApiError> {
        let result = match self.visible_file(who, id, Operation::Write).await {
            Ok(file) => self.verify_and_complete(file).await,
            Err(e) => Err(e),
        };
        self.settle(who, result)
    }

    /// The one completion path: stat the object, compare size and SHA-256, then
    /// `uploaded` (with its event) or `rejected` (object deleted).
    pub async fn verify_and_complete(&self, file: File) -> Result<File, ApiError> {
        match file.status {
            FileStatus::Uploaded => return Ok(file),
            FileStatus::Pending => {}
            other => {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("the file is {other} and cannot be completed"),
                ))
            }
        }
        let backend = self.backend_of(&file)?;
        let stat = backend
            .stat(&file.object_key)
            .await
            .map_err(|e| ApiError::unavailable(format!("storage backend {}: {e}", file.backend)))?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UploadMissing,
                    "no object has been uploaded for this file yet",
                )
            })?;
        let mismatch = if stat.size != file.size {
            Some(ApiError::new(
                ErrorCode::SizeMismatch,
                format!(
                    "the stored object is {} bytes; {} were declared",
                    stat.size, file.size
                ),
            ))
        } else {
            let stored = match stat.sha256 {
                Some(digest) => digest,
                None => backend.sha256(&file.object_key).await.map_err(|e| {
                    ApiError::unavailable(format!("storage backend {}: {e}", file.backend))
                })?,
            };
            (stored != file.sha256).then(|| {
                ApiError::new(
                    ErrorCode::ChecksumMismatch,
                    "the stored object's SHA-256 differs from the declared one",
                )
            })
        };
        if let Some(mismatch) = mismatch {
            self.reject(&file).await?;
            return Err(mismatch);
        }
        match self.transition(MarkUploaded(file.id)).await? {
            Transition::Changed(file) => {
                self.notifier.do_send(OutboxAppended);
                metrics::record_file_operation("complete", file.tenant_id.as_str(), device(&file));
                tracing::info!(file_id = %file.id, tenant = %file.tenant_id, "file uploaded");
                Ok(file)
            }
            Transition::Unchanged(file) => Ok(file),
            Transition::Conflict(file) => Err(ApiError::new(
                ErrorCode::Conflict,
                format!("the file is {} and cannot be completed", file.status),
            )),
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
        let Some(store) = self.backends.get(backend) else {
            return Ok(StorageEventOutcome::Unknown);
        };
        if store.container().is_some_and(|c| c != object.bucket) {
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
        match self.verify_and_complete(file).await {
            Ok(_) => Ok(StorageEventOutcome::Completed(id)),
            Err(e) => match e.code() {
                ErrorCode::UploadMissing => Ok(StorageEventOutcome::NotYetVisible(id)),
                ErrorCode::SizeMismatch | ErrorCode::ChecksumMismatch => {
                    Ok(StorageEventOutcome::Rejected(id))
                }
                ErrorCode::Conflict => Ok(StorageEventOutcome::Finished(id)),
                _ => Err(e),
            },
        }
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

    async fn delete_object(&self, file: &File) {
        let Ok(backend) = self.backend_of(file) else {
            return;
        };
        if let Err(e) = backend.delete(&file.object_key).await {
            // The record already says the object is gone; the orphan is harmless
            // and is logged so an operator can remove it.
            tracing::error!(file_id = %file.id, backend = %file.backend, error = %e, "could not delete object");
        }
    }

    fn backend_of(&self, file: &File) -> Result<&Arc<dyn valet_backends::Backend>, ApiError> {
        self.backends.get(&file.backend).ok_or_else(|| {
            ApiError::internal(format!(
                "file {} is stored in backend {:?}, which is no longer configured",
                file.id, file.backend
            ))
        })
    }

    /// Signs a download of an uploaded file.
    pub async fn download(
        &self,
        who: &Authenticated,
        id: FileId,
    ) -> Result<SignedRequest, ApiError> {
        let result = self.sign_download(who, id).await;
        self.settle(who, result)
    }

    async fn sign_download(
        &self,
        who: &Authenticated,
        id: FileId,
    ) -> Result<SignedRequest, ApiError> {
        let file = self.visible_file(who, id, Operation::Read).await?;
        if file.status != FileStatus::Uploaded {
            return Err(ApiError::new(
                ErrorCode::NotUploaded,
                format!("the file is {}, not uploaded", file.status),
            ));
        }
        let ttl = Duration::seconds(self.settings.uploads.download_url_ttl_secs as i64);
        let request = self
            .backends
            .sign_download(
                &file.backend,
                &DownloadSpec {
                    key: file.object_key.clone(),
                    file_name: file.name.clone(),
                    content_type: file.content_type.clone(),
                    expires_at: now_micros() + ttl,
                },
            )
            .map_err(sign_error)?;
        metrics::record_file_operation("download", file.tenant_id.as_str(), device(&file));
        Ok(request)
    }

    /// One page of the files the caller may list.
    pub async fn list(&self, who: &Authenticated, request: ListRequest) -> Result<Page, ApiError> {
        let result = self.list_page(who, request).await;
        self.settle(who, result)
    }

    async fn list_page(&self, who: &Authenticated, request: ListRequest) -> Result<Page, ApiError> {
        let identity = &who.identity;
        let limit = request.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(format!(
                "limit must be between 1 and {MAX_LIST_LIMIT}"
            )));
        }
        let status = request
            .status
            .as_deref()
            .map(|s| s.parse::<FileStatus>())
            .transpose()
            .map_err(ApiError::invalid)?;
        let before = request.cursor.as_deref().map(decode_cursor).transpose()?;
        let root = match (
            request.device_id.as_deref(),
            request.shared.unwrap_or(false),
        ) {
            (Some(_), true) => {
                return Err(ApiError::invalid(
                    "give either device_id or shared=true, not both",
                ))
            }
            (Some(d), false) => Some(Root::Device(
                DeviceId::parse(d).map_err(|e| ApiError::invalid(e.to_string()))?,
            )),
            (None, true) => Some(Root::Shared),
            (None, false) => identity.own_root(),
        };
        let (resource, decision) = match &root {
            Some(root) => (
                root.resource(&identity.tenant),
                identity.may(Operation::List, &identity.tenant, root),
            ),
            // Only services list a whole tenant (devices always have a root here).
            None => (identity.tenant.to_string(), Decision::Allow),
        };
        self.authorize(who, Operation::List, &resource, decision, None, || {
            ApiError::new(ErrorCode::NotFound, "no such device root")
        })?;
        let mut files = self
            .store
            .send(ListFiles {
                tenant: identity.tenant.clone(),
                root,
                status,
                before,
                limit: limit + 1,
            })
            .await
            .map_err(mailbox)?
            .map_err(store_error)?;
        let next_cursor = if files.len() as i64 > limit {
            files.truncate(limit as usize);
            files.last().map(|f| encode_cursor(&f.id))
        } else {
            None
        };
        Ok(Page { files, next_cursor })
    }

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
                metrics::record_file_operation("delete", file.tenant_id.as_str(), device(file));
                self.delete_object(file).await;
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
        let expired = self
            .store
            .send(ExpireMany(ids))
            .await
            .map_err(mailbox)?
            .map_err(store_error)?;
        if expired.is_empty() {
            return Ok(expired);
        }
        self.notifier.do_send(OutboxAppended);
        futures_util::stream::iter(&expired)
            .for_each_concurrent(STORAGE_CONCURRENCY, |file| async move {
                self.cache.put(file).await;
                metrics::record_file_operation("expire", file.tenant_id.as_str(), device(file));
                // A device may still PUT with a URL issued moments before expiry.
                self.delete_object(file).await;
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

    /// The metadata store (for background jobs).
    pub fn store(&self) -> &Addr<MetadataStore> {
        &self.store
    }

    /// The running configuration.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Checks the database and every storage backend.
    pub async fn readiness(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        let database = match self.store.send(Ping).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        checks.push(Check {
            name: "database".into(),
            error: database,
            required: true,
        });
        // Events wait in the outbox while the broker is away: reported, not required.
        if let Ok(Some(broker)) = self.notifier.send(BrokerStatus).await {
            checks.push(Check {
                name: "broker".into(),
                error: broker.err(),
                required: false,
            });
        }
        checks.push(Check {
            name: format!("cache:{}", self.cache.kind()),
            error: self.cache.ping().await.err(),
            required: false,
        });
        for (name, backend) in self.backends.iter() {
            checks.push(Check {
                name: format!("storage:{name}"),
                error: backend.probe().await.err().map(|e| e.to_string()),
                required: true,
            });
        }
        checks
    }
}

fn device(file: &File) -> Option<&str> {
    file.device_id.as_ref().map(|d| d.as_str())
}

fn principal_kind(identity: &Identity) -> &'static str {
    match identity.principal {
        Principal::Device(_) => "a device",
        Principal::Service(_) => "a service",
    }
}

/// The root an upload goes to: a device's own, or (services only) the one named.
fn target_root(
    identity: &Identity,
    device_id: Option<&str>,
    shared: Option<bool>,
) -> Result<Root, ApiError> {
    let shared = shared.unwrap_or(false);
    if device_id.is_some() && shared {
        return Err(ApiError::invalid(
            "give either device_id or shared=true, not both",
        ));
    }
    match &identity.principal {
        Principal::Device(me) => match device_id {
            None if !shared => Ok(Root::Device(me.clone())),
            Some(d) if d == me.as_str() => Ok(Root::Device(me.clone())),
            _ => Err(ApiError::new(
                ErrorCode::Forbidden,
                "device_id and shared are for service tokens only",
            )),
        },
        Principal::Service(_) => match device_id {
            Some(d) => Ok(Root::Device(
                DeviceId::parse(d).map_err(|e| ApiError::invalid(e.to_string()))?,
            )),
            None if shared => Ok(Root::Shared),
            None => Err(ApiError::invalid(
                "a service token must name the target root: device_id or shared=true",
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = FileId::new();
        assert_eq!(decode_cursor(&encode_cursor(&id)).unwrap(), id);
        assert!(decode_cursor("nope").is_err());
        assert!(
            decode_cursor(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("v2:x"))
                .is_err()
        );
    }
}
