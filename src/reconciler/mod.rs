//! The `Reconciler` actor: brings unfinished uploads to a final state when devices
//! never call `complete`, applies per-tenant retention and purges old records.
//!
//! Each pass claims overdue pending files (upload URL expired plus a grace period)
//! with a lease, so several instances on one PostgreSQL database never work the same
//! file at once, and runs the very completion path `complete` uses:
//! present and valid → `uploaded`; present but wrong → `rejected` (object deleted);
//! absent → `expired`. A file whose storage cannot be reached keeps its lease until
//! it runs out, and is tried again on a later pass.
//!
//! It also expires transfers past their `expires_at`, and sweeps tombstones: a file deleted or rejected while its upload URL was
//! still valid has its key checked once that URL has expired (plus the grace
//! period), and any object put there meanwhile is removed (see `service::orphans`).

use std::collections::{HashMap, HashSet};

use actix::{Actor, ActorFutureExt, AsyncContext, Context, WrapFuture};
use actix_web::web;
use chrono::Utc;
use futures_util::{stream, StreamExt};

use crate::domain::{Completion, File, FileId, TenantId};
use crate::metadata::{
    ClaimOverdue, MetadataStore, PendingBacklog, PurgeFinished, RetentionDue, StoreError,
};
use crate::problem::ApiError;
use crate::service::{FileService, STORAGE_CONCURRENCY};
use crate::telemetry::metrics;

/// What a pass did to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The object was there and valid: `uploaded`.
    Completed,
    /// The object did not match its declaration: `rejected`, object deleted.
    Rejected,
    /// No object: `expired`.
    Expired,
    /// Someone else finished it first (a late `complete`, another instance).
    Skipped,
    /// Storage or database unavailable: tried again after the lease.
    Failed,
}

impl Outcome {
    /// Metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Rejected => "rejected",
            Outcome::Expired => "expired",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
        }
    }
}

/// Runs reconciliation passes on an interval.
pub struct Reconciler {
    service: web::Data<FileService>,
    running: bool,
}

impl Reconciler {
    /// A reconciler working through `service`.
    pub fn new(service: web::Data<FileService>) -> Self {
        Self {
            service,
            running: false,
        }
    }
}

impl Actor for Reconciler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let interval = self.service.settings().reconciler.interval();
        ctx.run_interval(interval, |act, ctx| {
            // A slow pass (a large backlog, slow storage) is not overlapped by the next.
            if act.running {
                return;
            }
            act.running = true;
            let service = act.service.clone();
            ctx.spawn(
                async move { run_pass(&service).await }
                    .into_actor(act)
                    .map(|_, act, _| act.running = false),
            );
        });
    }
}

/// One full pass: files awaiting verification, overdue uploads, tombstones,
/// retention, purge, backlog metrics.
pub async fn run_pass(service: &FileService) {
    // Files completed while no verifier ran (a restart, a failed attempt).
    while service.verify_claimed(None).await > 0 {}
    reconcile_overdue(service).await;
    expire_transfers(service).await;
    expire_batches(service).await;
    sweep_tombstones(service).await;
    apply_retention(service).await;
    purge(service).await;
    if let Some((count, oldest)) = ask(service, PendingBacklog, "measure the pending backlog").await
    {
        let age = oldest.map_or(0.0, |t| (Utc::now() - t).num_milliseconds() as f64 / 1e3);
        metrics::set_pending_backlog(count, age.max(0.0));
    }
}

/// Ends the transfers past their `expires_at` (their downloads already answer
/// 404): state `expired`, one `io.valet.transfer.expired` event per recipient.
pub async fn expire_transfers(service: &FileService) -> usize {
    let result = service
        .expire_transfers(service.settings().reconciler.batch_size)
        .await;
    count_expired(result, "transfers")
}

/// Abandons the open batches past their `expires_at`: their files and objects are
/// deleted, and one `io.valet.batch.expired` event is recorded per batch.
pub async fn expire_batches(service: &FileService) -> usize {
    let result = service
        .expire_batches(service.settings().reconciler.batch_size)
        .await;
    count_expired(result, "batches")
}

/// How many `what` (transfers, batches) a pass expired, logged; a failure is
/// logged and counts none (the next pass tries again).
fn count_expired(result: Result<usize, ApiError>, what: &str) -> usize {
    match result {
        Ok(expired) => {
            if expired > 0 {
                tracing::info!(expired, "expired {what}");
            }
            expired
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot expire {what} now; retrying later");
            0
        }
    }
}

/// Sends `message` to the metadata store; failures are logged (the pass goes on
/// with what it can, and the next pass tries again).
async fn ask<M, R>(service: &FileService, message: M, what: &str) -> Option<R>
where
    M: actix::Message<Result = Result<R, StoreError>> + Send + 'static,
    R: Send + 'static,
    MetadataStore: actix::Handler<M>,
{
    match service.store().send(message).await {
        Ok(Ok(result)) => Some(result),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "reconciler cannot {what}");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "metadata store unreachable");
            None
        }
    }
}

/// Claims and settles overdue pending files, batch after batch.
pub async fn reconcile_overdue(service: &FileService) -> Vec<(File, Outcome)> {
    let settings = &service.settings().reconciler;
    let mut settled = Vec::new();
    loop {
        let cutoff = Utc::now() - chrono::Duration::seconds(settings.grace_secs as i64);
        let claim = ClaimOverdue {
            cutoff,
            lease: chrono::Duration::seconds(settings.lease_secs as i64),
            limit: settings.batch_size,
        };
        let Some(batch) = ask(service, claim, "claim overdue uploads").await else {
            break;
        };
        let full = batch.len() as i64 >= settings.batch_size;
        settled.extend(settle_batch(service, batch).await);
        // Claimed files leave the candidate set (status changed or lease held), so
        // the loop ends; a short batch means nothing else is due.
        if !full {
            break;
        }
    }
    settled
}

/// Settles a claimed batch: storage is checked for many files at once, and the
/// files with no object (the bulk of a backlog) expire together in one transaction.
async fn settle_batch(service: &FileService, batch: Vec<File>) -> Vec<(File, Outcome)> {
    let checked: Vec<(File, Option<Outcome>)> = stream::iter(batch)
        .map(|file| async move {
            let outcome = settle_present(service, &file).await;
            (file, outcome)
        })
        .buffer_unordered(STORAGE_CONCURRENCY)
        .collect()
        .await;
    let (missing, mut settled): (Vec<_>, Vec<_>) = checked
        .into_iter()
        .partition(|(_, outcome)| outcome.is_none());
    let missing: Vec<File> = missing.into_iter().map(|(file, _)| file).collect();
    if !missing.is_empty() {
        match service.expire_many(missing.clone()).await {
            Ok(expired) => {
                let expired: HashSet<FileId> = expired.iter().map(|f| f.id).collect();
                for file in missing {
                    let outcome = if expired.contains(&file.id) {
                        Outcome::Expired
                    } else {
                        Outcome::Skipped
                    };
                    settled.push((file, Some(outcome)));
                }
            }
            Err(e) => {
                tracing::warn!(files = missing.len(), error = %e, "cannot expire files now; retrying later");
                settled.extend(missing.into_iter().map(|f| (f, Some(Outcome::Failed))));
            }
        }
    }
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    let settled: Vec<(File, Outcome)> = settled
        .into_iter()
        .map(|(file, outcome)| (file, outcome.unwrap_or(Outcome::Failed)))
        .collect();
    for (file, outcome) in &settled {
        metrics::record_reconciled(outcome.as_str());
        *counts.entry(outcome.as_str()).or_default() += 1;
        tracing::debug!(file_id = %file.id, tenant = %file.tenant_id, outcome = outcome.as_str(), "reconciled an unfinished upload");
    }
    tracing::info!(
        files = settled.len(),
        completed = counts.get("completed").copied().unwrap_or(0),
        rejected = counts.get("rejected").copied().unwrap_or(0),
        expired = counts.get("expired").copied().unwrap_or(0),
        skipped = counts.get("skipped").copied().unwrap_or(0),
        failed = counts.get("failed").copied().unwrap_or(0),
        "reconciled unfinished uploads"
    );
    settled
}

/// Completes or rejects a file whose object is there; `None` when there is no
/// object (the file is to expire).
async fn settle_present(service: &FileService, file: &File) -> Option<Outcome> {
    match service.verify_and_complete(file.clone()).await {
        // Completed by its device (verifying) or now: either way it is not overdue.
        Ok(Completion::Uploaded(_) | Completion::Verifying(_)) => Some(Outcome::Completed),
        // Completed meanwhile by its device or a storage event.
        Ok(Completion::AlreadyUploaded(_)) => Some(Outcome::Skipped),
        Ok(
            Completion::SizeMismatch { .. }
            | Completion::ChecksumMismatch
            | Completion::PartMismatch(_),
        ) => Some(Outcome::Rejected),
        // Missing parts past the upload's deadline: it expires (and is aborted).
        Ok(Completion::Missing | Completion::PartsMissing(_)) => None,
        Ok(Completion::Finished(_)) => Some(Outcome::Skipped),
        Err(e) => {
            tracing::warn!(file_id = %file.id, error = %e, "cannot reconcile a file now; retrying later");
            Some(Outcome::Failed)
        }
    }
}

/// Sweeps the keys of files that ended while their upload URL was valid, batch
/// after batch; returns the number of objects removed.
pub async fn sweep_tombstones(service: &FileService) -> usize {
    let batch = service.settings().reconciler.batch_size;
    let mut removed = 0;
    loop {
        match service.sweep_tombstones().await {
            Ok((swept, found)) => {
                removed += found;
                if swept > 0 {
                    tracing::info!(
                        keys = swept,
                        objects_removed = found,
                        "swept the keys of ended files"
                    );
                }
                // Swept or failed, claimed files leave the candidate set: a short
                // batch means nothing else is due.
                if (swept as i64) < batch {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reconciler cannot sweep tombstones now");
                break;
            }
        }
    }
    removed
}

/// Deletes uploaded files older than their tenant's `retention_days`.
pub async fn apply_retention(service: &FileService) -> usize {
    let settings = service.settings();
    let batch = settings.reconciler.batch_size;
    let mut deleted = 0;
    for (tenant, tenant_settings) in &settings.tenants {
        let Some(days) = tenant_settings.retention_days else {
            continue;
        };
        let Ok(tenant_id) = TenantId::parse(tenant) else {
            tracing::warn!(%tenant, "retention configured for an invalid tenant id");
            continue;
        };
        let cutoff = Utc::now() - chrono::Duration::days(i64::from(days));
        loop {
            let due = RetentionDue {
                tenant: tenant_id.clone(),
                cutoff,
                limit: batch,
            };
            let Some(files) = ask(service, due, "apply retention").await else {
                break;
            };
            let full = files.len() as i64 >= batch;
            for file in &files {
                match service.remove(file).await {
                    Ok(()) => {
                        deleted += 1;
                        metrics::record_reconciled("retention_deleted");
                    }
                    Err(e) => {
                        tracing::warn!(file_id = %file.id, error = %e, "retention could not delete a file");
                        return deleted;
                    }
                }
            }
            if !full {
                break;
            }
        }
    }
    deleted
}

/// Removes records that ended long ago.
pub async fn purge(service: &FileService) -> usize {
    let settings = &service.settings().reconciler;
    if settings.purge_after_days == 0 {
        return 0;
    }
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(settings.purge_after_days));
    let mut purged = 0;
    loop {
        let request = PurgeFinished {
            cutoff,
            limit: settings.batch_size,
        };
        let Some(ids) = ask(service, request, "purge finished records").await else {
            break;
        };
        service.forget(&ids).await;
        purged += ids.len();
        metrics::record_purged(ids.len());
        if (ids.len() as i64) < settings.batch_size {
            break;
        }
    }
    purged
}
