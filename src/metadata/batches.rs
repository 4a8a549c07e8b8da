//! Batches: their records, and the guarded changes of state that record their
//! events in the same transaction. Every change first updates the `batches` row
//! (guarded by `state = 'open'`), so concurrent writers serialize on that row and
//! exactly one of them changes it.

use actix::{Handler, Message};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use super::db::DbConnection;
use super::rows::{decode_metadata, parse_root, utc, FileRow};
use super::schema::{batches, files};
use super::{append_outbox, now_micros, MetadataStore, OutboxOrder, StoreError};
use crate::domain::{Batch, BatchId, BatchState, File, FileId, FileStatus, Root, TenantId};
use crate::events::{batch_event, file_event, BatchEventKind, EventKind};
use crate::telemetry::metrics;

/// Records a new open batch.
#[derive(Message)]
#[rtype(result = "Result<Batch, StoreError>")]
pub struct CreateBatch(pub Batch);

/// Look a batch up by id, with its files.
#[derive(Message)]
#[rtype(result = "Result<Option<Batch>, StoreError>")]
pub struct GetBatch(pub BatchId);

/// A batch (without its files) and how many live files it holds, for a file
/// about to join it.
#[derive(Message)]
#[rtype(result = "Result<Option<(Batch, i64)>, StoreError>")]
pub struct GetBatchForJoin(pub BatchId);

/// One page of a tenant's batches, newest first, without their files.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<Batch>, StoreError>")]
pub struct ListBatches {
    /// Tenant whose batches are listed.
    pub tenant: TenantId,
    /// Only this root (all roots of the tenant when `None`).
    pub root: Option<Root>,
    /// Only this state.
    pub state: Option<BatchState>,
    /// Only batches with ids below this one (the keyset cursor).
    pub before: Option<BatchId>,
    /// Page size.
    pub limit: i64,
}

/// `open` → `committed`, recording the batch event and its files' `uploaded` events.
#[derive(Message)]
#[rtype(result = "Result<BatchChange, StoreError>")]
pub struct CommitBatch(pub BatchId);

/// `open` → `abandoned`; with `expired`, recording `io.valet.batch.expired`. The
/// caller then deletes the files (the batch it returns lists them).
#[derive(Message)]
#[rtype(result = "Result<BatchChange, StoreError>")]
pub struct AbandonBatch {
    /// The batch.
    pub id: BatchId,
    /// Abandoned by the reconciler because it expired.
    pub expired: bool,
}

/// Open batches whose `expires_at` is before `now`, and abandoned batches that
/// still hold live files (an abandon interrupted before it deleted them all), up
/// to `limit`.
#[derive(Message)]
#[rtype(result = "Result<Vec<BatchId>, StoreError>")]
pub struct DueBatches {
    /// Batches that expired before this.
    pub now: DateTime<Utc>,
    /// Batch size.
    pub limit: i64,
}

/// Result of a guarded change of a batch.
#[derive(Debug, Clone)]
pub enum BatchChange {
    /// This call changed it (and recorded the events).
    Changed(Batch),
    /// It already was in the target state; nothing was recorded.
    Unchanged(Batch),
    /// It is in a state the change does not start from.
    Conflict(Batch),
    /// Some files are not uploaded (their ids); nothing was changed.
    Incomplete(Vec<FileId>),
    /// No such batch.
    NotFound,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = batches)]
struct BatchRow {
    id: String,
    tenant_id: String,
    device_id: Option<String>,
    created_by: String,
    name: Option<String>,
    metadata: String,
    state: String,
    created_at: NaiveDateTime,
    expires_at: NaiveDateTime,
    committed_at: Option<NaiveDateTime>,
    updated_at: NaiveDateTime,
}

impl BatchRow {
    fn from_batch(batch: &Batch) -> Self {
        Self {
            id: batch.id.to_string(),
            tenant_id: batch.tenant_id.to_string(),
            device_id: batch.device_id.as_ref().map(|d| d.to_string()),
            created_by: batch.created_by.clone(),
            name: batch.name.clone(),
            metadata: serde_json::to_string(&batch.metadata).unwrap_or_else(|_| "{}".into()),
            state: batch.state.as_str().into(),
            created_at: batch.created_at.naive_utc(),
            expires_at: batch.expires_at.naive_utc(),
            committed_at: batch.committed_at.map(|t| t.naive_utc()),
            updated_at: batch.created_at.naive_utc(),
        }
    }

    fn into_batch(self, files: Option<Vec<File>>) -> Result<Batch, StoreError> {
        let id = self.id.clone();
        let bad = |what: &str| StoreError::Internal(format!("corrupt batch row {id}: {what}"));
        let (tenant_id, device_id) = parse_root(self.tenant_id, self.device_id).map_err(bad)?;
        Ok(Batch {
            id: self.id.parse().map_err(|_| bad("id"))?,
            tenant_id,
            device_id,
            name: self.name,
            metadata: decode_metadata(&self.metadata).map_err(|_| bad("metadata"))?,
            state: self.state.parse().map_err(|_| bad("state"))?,
            created_at: utc(self.created_at),
            expires_at: utc(self.expires_at),
            committed_at: self.committed_at.map(utc),
            files,
            created_by: self.created_by,
        })
    }
}

fn load_row(conn: &mut DbConnection, id: &str) -> Result<Option<BatchRow>, StoreError> {
    Ok(batches::table
        .filter(batches::id.eq(id))
        .select(BatchRow::as_select())
        .first(conn)
        .optional()?)
}

/// The batch's live (not deleted) files, oldest first.
fn load_files(conn: &mut DbConnection, id: &str) -> Result<Vec<File>, StoreError> {
    let rows: Vec<FileRow> = files::table
        .filter(files::batch_id.eq(id))
        .filter(files::status.ne(FileStatus::Deleted.as_str()))
        .order(files::id.asc())
        .select(FileRow::as_select())
        .load(conn)?;
    rows.into_iter()
        .map(|r| r.into_file().map_err(StoreError::from))
        .collect()
}

fn load(conn: &mut DbConnection, id: &str) -> Result<Option<Batch>, StoreError> {
    match load_row(conn, id)? {
        None => Ok(None),
        Some(row) => {
            let files = load_files(conn, id)?;
            Ok(Some(row.into_batch(Some(files))?))
        }
    }
}

/// Whether the file events of a batch's files may be recorded: only once the
/// batch is committed (read inside the caller's transaction).
pub(super) fn announces(conn: &mut DbConnection, batch_id: &str) -> Result<bool, StoreError> {
    let state: Option<String> = batches::table
        .filter(batches::id.eq(batch_id))
        .select(batches::state)
        .first(conn)
        .optional()?;
    // A file whose batch row is gone was never announced: its batch was purged.
    Ok(state.as_deref() == Some(BatchState::Committed.as_str()))
}

/// Why a commit's transaction was rolled back.
enum Abort {
    Incomplete(Vec<FileId>),
    Store(StoreError),
}

impl From<diesel::result::Error> for Abort {
    fn from(e: diesel::result::Error) -> Self {
        Abort::Store(e.into())
    }
}

impl From<StoreError> for Abort {
    fn from(e: StoreError) -> Self {
        Abort::Store(e)
    }
}

impl MetadataStore {
    fn record_batch_event(
        &self,
        conn: &mut DbConnection,
        kind: BatchEventKind,
        batch: &Batch,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let event = batch_event(kind, batch, &self.events, at)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        // The batch id keys the relay's ordering of the batch's own events.
        append_outbox(
            conn,
            &event,
            OutboxOrder::key(batch.id),
            &batch.tenant_id,
            batch.device_id.as_ref(),
            at,
        )
    }

    /// Moves an open batch to `to`, then (same transaction) runs `then` on it.
    fn change_batch(
        &self,
        id: BatchId,
        to: BatchState,
        then: impl Fn(&mut DbConnection, &Batch, DateTime<Utc>) -> Result<(), Abort>,
    ) -> Result<BatchChange, StoreError> {
        let mut conn = self.conn()?;
        let id = id.to_string();
        let result = conn.transaction::<_, Abort, _>(|conn| {
            let now = now_micros();
            let committed_at = (to == BatchState::Committed).then_some(now.naive_utc());
            // The guarded UPDATE comes first: it takes the row lock, so a concurrent
            // change waits here and then finds the batch no longer open.
            let changed = diesel::update(
                batches::table
                    .filter(batches::id.eq(&id))
                    .filter(batches::state.eq(BatchState::Open.as_str())),
            )
            .set((
                batches::state.eq(to.as_str()),
                batches::committed_at.eq(committed_at),
                batches::updated_at.eq(now.naive_utc()),
            ))
            .execute(conn)?;
            let Some(batch) = load(conn, &id)? else {
                return Ok(BatchChange::NotFound);
            };
            if changed == 0 {
                return Ok(if batch.state == to {
                    BatchChange::Unchanged(batch)
                } else {
                    BatchChange::Conflict(batch)
                });
            }
            then(conn, &batch, now)?;
            Ok(BatchChange::Changed(batch))
        });
        match result {
            Ok(change) => {
                if let BatchChange::Changed(batch) = &change {
                    metrics::record_batch(to.as_str(), batch.tenant_id.as_str());
                }
                Ok(change)
            }
            Err(Abort::Incomplete(ids)) => Ok(BatchChange::Incomplete(ids)),
            Err(Abort::Store(e)) => Err(e),
        }
    }
}

impl Handler<CreateBatch> for MetadataStore {
    type Result = Result<Batch, StoreError>;
    fn handle(&mut self, msg: CreateBatch, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        diesel::insert_into(batches::table)
            .values(BatchRow::from_batch(&msg.0))
            .execute(&mut *conn)?;
        metrics::record_batch(BatchState::Open.as_str(), msg.0.tenant_id.as_str());
        Ok(msg.0)
    }
}

impl Handler<GetBatch> for MetadataStore {
    type Result = Result<Option<Batch>, StoreError>;
    fn handle(&mut self, msg: GetBatch, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        load(&mut conn, &msg.0.to_string())
    }
}

impl Handler<GetBatchForJoin> for MetadataStore {
    type Result = Result<Option<(Batch, i64)>, StoreError>;
    fn handle(&mut self, msg: GetBatchForJoin, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let id = msg.0.to_string();
        let Some(row) = load_row(&mut conn, &id)? else {
            return Ok(None);
        };
        let count: i64 = files::table
            .filter(files::batch_id.eq(&id))
            .filter(files::status.ne(FileStatus::Deleted.as_str()))
            .count()
            .get_result(&mut *conn)?;
        Ok(Some((row.into_batch(None)?, count)))
    }
}

impl Handler<ListBatches> for MetadataStore {
    type Result = Result<Vec<Batch>, StoreError>;
    fn handle(&mut self, msg: ListBatches, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let mut query = batches::table
            .filter(batches::tenant_id.eq(msg.tenant.as_str()))
            .select(BatchRow::as_select())
            .order(batches::id.desc())
            .limit(msg.limit)
            .into_boxed();
        match &msg.root {
            Some(Root::Device(d)) => query = query.filter(batches::device_id.eq(d.as_str())),
            Some(Root::Shared) => query = query.filter(batches::device_id.is_null()),
            None => {}
        }
        if let Some(state) = msg.state {
            query = query.filter(batches::state.eq(state.as_str()));
        }
        if let Some(before) = msg.before {
            query = query.filter(batches::id.lt(before.to_string()));
        }
        let rows: Vec<BatchRow> = query.load(&mut *conn)?;
        rows.into_iter().map(|r| r.into_batch(None)).collect()
    }
}

impl Handler<CommitBatch> for MetadataStore {
    type Result = Result<BatchChange, StoreError>;
    fn handle(&mut self, msg: CommitBatch, _: &mut Self::Context) -> Self::Result {
        self.change_batch(msg.0, BatchState::Committed, |conn, batch, now| {
            let files = batch.files.as_deref().unwrap_or_default();
            let missing: Vec<FileId> = files
                .iter()
                .filter(|f| f.status != FileStatus::Uploaded)
                .map(|f| f.id)
                .collect();
            if !missing.is_empty() {
                return Err(Abort::Incomplete(missing));
            }
            // The batch first, then each file's event exactly as a lone upload
            // records it: consumers see the batch before any of its files.
            self.record_batch_event(conn, BatchEventKind::Committed, batch, now)?;
            for file in files {
                // Held back until the batch's event is published, whichever
                // instance relays them.
                let event = file_event(EventKind::Uploaded, file, &self.events, now)
                    .map_err(|e| StoreError::Internal(e.to_string()))?;
                let order = OutboxOrder::key(file.id).after(batch.id);
                append_outbox(
                    conn,
                    &event,
                    order,
                    &file.tenant_id,
                    file.device_id.as_ref(),
                    now,
                )?;
            }
            Ok(())
        })
    }
}

impl Handler<AbandonBatch> for MetadataStore {
    type Result = Result<BatchChange, StoreError>;
    fn handle(&mut self, msg: AbandonBatch, _: &mut Self::Context) -> Self::Result {
        self.change_batch(msg.id, BatchState::Abandoned, |conn, batch, now| {
            if msg.expired {
                self.record_batch_event(conn, BatchEventKind::Expired, batch, now)?;
            }
            Ok(())
        })
    }
}

impl Handler<DueBatches> for MetadataStore {
    type Result = Result<Vec<BatchId>, StoreError>;
    fn handle(&mut self, msg: DueBatches, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let live_files = files::table
            .filter(files::batch_id.eq(batches::id.nullable()))
            .filter(files::status.ne(FileStatus::Deleted.as_str()));
        let ids: Vec<String> = batches::table
            .filter(
                batches::state
                    .eq(BatchState::Open.as_str())
                    .and(batches::expires_at.lt(msg.now.naive_utc()))
                    .or(batches::state
                        .eq(BatchState::Abandoned.as_str())
                        .and(diesel::dsl::exists(live_files))),
            )
            .order(batches::expires_at.asc())
            .limit(msg.limit)
            .select(batches::id)
            .load(&mut *conn)?;
        Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
    }
}
