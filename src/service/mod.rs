//! The file workflows, composed from the actors: one file per workflow —
//! `create` (declare a file, sign its upload), `complete` (verify the stored object:
//! `complete`, storage events, the reconciler), `query` (get, download, list),
//! `remove` (delete, retention, expiry), `orphans` (objects stored after their file
//! ended), `transfers` (inboxes and transfers between devices), `batches` (files
//! announced together when their batch is committed). HTTP handlers and every
//! other entry point (CLI, storage events, reconciler) go through here, so every
//! path applies the same checks and transitions.

mod batches;
mod complete;
mod create;
mod jobs;
mod orphans;
mod parts;
mod query;
mod remove;
mod transfers;
mod usage;

pub use batches::{BatchListRequest, CreateBatchRequest};
pub use create::{CreateUpload, NamedRoot, Upload};
pub use jobs::{Cancelled, CreateJobRequest, CreatedJobs, JobListRequest, SelectorRequest};
pub use parts::{HeldPart, PartRequest, PartsReport, SignedPart, MAX_PARTS_PER_REQUEST};
pub use query::ListRequest;
pub use transfers::{Direction, InboxRequest, SendRequest, TransferListRequest};
pub use usage::{DeviceUsage, UsagePage, UsageReport, UsageRequest};

use futures_util::StreamExt;
use std::sync::Arc;

use actix::Addr;
use chrono::Duration;
use valet_backends::{DownloadSpec, SignedRequest, UploadSpec};

use crate::auth::{Authenticated, Authenticator, Request};
use crate::cache::FileCache;
use crate::configuration::Settings;
use crate::domain::{
    object_key, ContentType, Decision, DeviceId, File, FileId, FileMetadata, FileName, FileStatus,
    Identity, Operation, Principal, Root, Sha256,
};
use crate::metadata::{
    now_micros, ExpireMany, GetFile, GroupCommit, ListFiles, MarkDeleted, MarkRejected,
    MarkUploaded, MetadataStore, StoreError, Transition,
};
use crate::notifier::{Notifier, OutboxAppended};
use crate::policy::TenantPolicies;
use crate::problem::{ApiError, ErrorCode};
use crate::storage::Storage;
use crate::storage_events::CreatedObject;
use crate::telemetry::metrics;

/// Largest page of a listing.
pub const MAX_LIST_LIMIT: i64 = 1000;
/// Page size when none is asked for.
pub const DEFAULT_LIST_LIMIT: i64 = 100;

/// A page size asked for (`limit`), checked: [`DEFAULT_LIST_LIMIT`] when absent.
fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {MAX_LIST_LIMIT}"
        )));
    }
    Ok(limit)
}

/// The position a listing's `cursor` names, read by `decode`: `None` without a
/// cursor, 400 for text this API did not return.
fn page_cursor<T>(
    cursor: Option<&str>,
    decode: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    cursor
        .map(|text| {
            decode(text)
                .ok_or_else(|| ApiError::invalid("cursor is not a cursor returned by this API"))
        })
        .transpose()
}

/// Cuts a listing fetched with one row more than `limit` to `limit` rows; the
/// cursor of its last row (by `cursor`) when there is a next page.
fn cut_page<T>(rows: &mut Vec<T>, limit: i64, cursor: impl FnOnce(&T) -> String) -> Option<String> {
    if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(cursor)
    } else {
        None
    }
}

/// Storage calls a background job keeps in flight at once (stat, delete).
pub const STORAGE_CONCURRENCY: usize = 16;

/// Handles to everything the workflows need; cheap to clone. Built once, by
/// `startup`, from the actors and backends it starts.
#[derive(Clone)]
pub struct FileService {
    /// Token verification and per-request checks.
    pub(crate) auth: Authenticator,
    /// File records and the outbox.
    pub(crate) store: Addr<MetadataStore>,
    /// New file records, group-committed.
    pub(crate) writes: GroupCommit,
    /// Told when the outbox grew.
    pub(crate) notifier: Addr<Notifier>,
    /// Write-through cache of file records.
    pub(crate) cache: Arc<dyn FileCache>,
    /// The storage backends by name: the one door to storage.
    pub(crate) storage: Storage,
    /// The running configuration.
    pub(crate) settings: Arc<Settings>,
    /// Tenant policy in force (quotas, limits, rate limits; reloaded on SIGHUP).
    pub(crate) policies: Arc<TenantPolicies>,
}

impl FileService {
    /// The configured storage backends.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Whether tenant services must authenticate their connection with a client certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.settings.server.tls_client_ca.is_some()
    }

    /// Verifies a bearer token (each distinct token's signature once) and takes the
    /// request from its tenant's and device's rate limits.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Authenticated, ApiError> {
        let token = token.ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "an Authorization: Bearer <token> header is required",
            )
        })?;
        let who = self.auth.authenticate(token).await?;
        self.policies.admit(&who.identity)?;
        Ok(who)
    }

    /// 401 when the caller's token has expired by now.
    pub fn expired(&self, who: &Authenticated) -> Option<ApiError> {
        self.auth.expired(who).map(ApiError::from)
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
        let file = self.ask(GetFile(id)).await?;
        if let Some(file) = &file {
            // Only fills a missing entry: a concurrent status change written
            // meanwhile must not be overwritten by this older read.
            self.cache.fill(file).await;
        }
        Ok(file)
    }

    /// Asks the metadata store; a lost worker or a database failure becomes its
    /// problem answer.
    async fn ask<M, R>(&self, message: M) -> Result<R, ApiError>
    where
        M: actix::Message<Result = Result<R, StoreError>> + Send + 'static,
        R: Send + 'static,
        MetadataStore: actix::Handler<M>,
    {
        Ok(self.store.send(message).await??)
    }

    /// Runs a status change and writes its outcome through to the cache.
    async fn transition<M>(&self, message: M) -> Result<Transition, ApiError>
    where
        M: actix::Message<Result = Result<Transition, StoreError>> + Send + 'static,
        MetadataStore: actix::Handler<M>,
    {
        let transition = self.ask(message).await?;
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

    async fn delete_object(&self, file: &File) {
        let copies = std::iter::once(file.backend.as_str())
            .chain(file.replicas.iter().map(|r| r.backend.as_str()));
        for backend in copies {
            if let Err(e) = self.storage.delete(backend, &file.object_key).await {
                // The record already says the object is gone; the orphan is harmless
                // and is logged so an operator can remove it.
                tracing::error!(file_id = %file.id, error = %e, "could not delete object");
            }
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
}

impl FileService {
    /// Counts one operation on `file`, per tenant (and per device when
    /// `metrics.per_device` asks for it).
    fn record_operation(&self, operation: &'static str, file: &File) {
        let device = if self.settings.metrics.per_device {
            Some(file.device_id.as_ref().map_or("shared", |d| d.as_str()))
        } else {
            None
        };
        metrics::record_file_operation(operation, file.tenant_id.as_str(), device);
    }
}

/// 409 `not_uploaded`: downloading or sending `file` needs it uploaded.
fn not_uploaded(file: &File) -> ApiError {
    ApiError::new(
        ErrorCode::NotUploaded,
        format!("the file is {}, not uploaded", file.status),
    )
}

fn principal_kind(identity: &Identity) -> &'static str {
    match identity.principal {
        Principal::Device(_) => "a device",
        Principal::Service(_) => "a service",
    }
}
