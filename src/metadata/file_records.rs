//! File records: reading one, listing a page, and the guarded status changes
//! that record their event in the same transaction.

use actix::{Handler, Message};
use diesel::connection::DefaultLoadingMode;
use diesel::dsl::{exists, not};
use diesel::prelude::*;

use super::batches;
use super::db::DbConnection;
use super::rows::{FileRow, ListedRow};
use super::schema::{batches as batches_table, files};
use super::transfers;
use super::usage;
use super::{now_micros, MetadataStore, StoreError};
use crate::domain::{
    BatchState, File, FileId, FileStatus, ListedFile, Root, TenantId, TransferState,
};
use crate::events::EventKind;

/// Result of a guarded status change.
#[derive(Debug, Clone)]
pub enum Transition {
    /// This call changed the status (and recorded the event).
    Changed(File),
    /// The file already had the target status; nothing was recorded.
    Unchanged(File),
    /// The file is in a status the change does not start from.
    Conflict(File),
    /// No such file.
    NotFound,
}

/// Look a file up by id.
#[derive(Message)]
#[rtype(result = "Result<Option<File>, StoreError>")]
pub struct GetFile(pub FileId);

/// One page of a tenant's files, newest first.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<ListedFile>, StoreError>")]
pub struct ListFiles {
    /// Tenant whose files are listed.
    pub tenant: TenantId,
    /// Only this root (all roots of the tenant when `None`).
    pub root: Option<Root>,
    /// Only this status (all but deleted when `None`).
    pub status: Option<FileStatus>,
    /// Only files with ids below this one (the keyset cursor).
    pub before: Option<FileId>,
    /// Page size.
    pub limit: i64,
    /// The caller (`device:<id>` or `service:<name>`): files of open batches are
    /// listed only to the principal that opened the batch.
    pub viewer: String,
}

/// `pending` → `verifying` (no event: nothing is decided yet).
#[derive(Message)]
#[rtype(result = "Result<Transition, StoreError>")]
pub struct MarkVerifying(pub FileId);

/// `pending` or `verifying` → `uploaded`, recording `io.valet.file.uploaded`.
#[derive(Message)]
#[rtype(result = "Result<Transition, StoreError>")]
pub struct MarkUploaded(pub FileId);

/// `pending` or `verifying` → `rejected`, recording `io.valet.file.rejected`.
#[derive(Message)]
#[rtype(result = "Result<Transition, StoreError>")]
pub struct MarkRejected(pub FileId);

/// Any live status → `deleted`; `io.valet.file.deleted` when it had been uploaded.
#[derive(Message)]
#[rtype(result = "Result<Transition, StoreError>")]
pub struct MarkDeleted(pub FileId);

/// Reads one file record inside whatever transaction `conn` is in.
pub(super) fn load(conn: &mut DbConnection, id: &str) -> Result<Option<File>, StoreError> {
    Ok(load_in_batch(conn, id)?.map(|(file, _)| file))
}

/// Reads one file record and the batch it belongs to, if any.
fn load_in_batch(
    conn: &mut DbConnection,
    id: &str,
) -> Result<Option<(File, Option<String>)>, StoreError> {
    // `get_result`, not `first`: the id is the key, and on SQLite a LIMIT parameter
    // makes every execution prepare the statement again.
    let row = files::table
        .filter(files::id.eq(id))
        .select(FileRow::as_select())
        .get_result(conn)
        .optional()?;
    match row {
        None => Ok(None),
        Some(row) => {
            let file = row.into_file()?;
            let batch = file.batch_id.map(|b| b.to_string());
            Ok(Some((file, batch)))
        }
    }
}

impl MetadataStore {
    /// Moves a file from one of `from` to `to` in one transaction, recording `event`
    /// when the change happened. The `WHERE status IN (…)` guard makes concurrent
    /// callers race in the database: exactly one of them changes the row.
    fn transition(
        &self,
        id: FileId,
        from: &[FileStatus],
        to: FileStatus,
        event: impl Fn(FileStatus) -> Option<EventKind>,
    ) -> Result<Transition, StoreError> {
        let id = id.to_string();
        let mut revoked = Vec::new();
        let transition = self.retrying(|conn| {
            conn.transaction::<_, StoreError, _>(|conn| {
                // Read the current status after taking the row's write lock (the UPDATE
                // comes first), so the event matches the status actually left.
                let now = now_micros();
                for &previous in from {
                    let uploaded_at = if to == FileStatus::Uploaded {
                        Some(now.naive_utc())
                    } else {
                        None
                    };
                    let target = files::table
                        .filter(files::id.eq(&id))
                        .filter(files::status.eq(previous.as_str()));
                    let changed = if to == FileStatus::Uploaded {
                        diesel::update(target)
                            .set((
                                files::status.eq(to.as_str()),
                                files::updated_at.eq(now.naive_utc()),
                                files::uploaded_at.eq(uploaded_at),
                            ))
                            .execute(conn)?
                    } else {
                        diesel::update(target)
                            .set((
                                files::status.eq(to.as_str()),
                                files::updated_at.eq(now.naive_utc()),
                                // A new status starts without a lease (a `verifying`
                                // file is claimed by the verifier at once).
                                files::reconcile_after.eq(None::<chrono::NaiveDateTime>),
                            ))
                            .execute(conn)?
                    };
                    if changed == 1 {
                        if matches!(to, FileStatus::Deleted | FileStatus::Rejected) {
                            // Its upload URL may still be used: the key is swept once
                            // that URL has expired (see `ClaimTombstones`).
                            diesel::update(
                                files::table
                                    .filter(files::id.eq(&id))
                                    .filter(files::upload_expires_at.gt(now.naive_utc())),
                            )
                            .set(files::sweep_after.eq(files::upload_expires_at.nullable()))
                            .execute(conn)?;
                        }
                        let (file, batch) = load_in_batch(conn, &id)?.ok_or_else(|| {
                            StoreError::Internal(format!("file {id} vanished inside a transaction"))
                        })?;
                        // A file of a batch not (yet) committed was never announced:
                        // its events are the batch's commit to record. Only files in a
                        // batch pay this read.
                        let announced = match &batch {
                            None => true,
                            Some(batch) => batches::announces(conn, batch)?,
                        };
                        if let Some(kind) = event(previous).filter(|_| announced) {
                            self.record_event(conn, kind, &file, now)?;
                        }
                        usage::on_transition(conn, &file, previous, to)?;
                        if to == FileStatus::Deleted {
                            // A deleted file can no longer be offered: its transfers end
                            // with it, their events in the same transaction.
                            revoked = transfers::revoke_for_file(conn, &self.events, &id, now)?;
                        }
                        return Ok(Transition::Changed(file));
                    }
                }
                Ok(match load(conn, &id)? {
                    None => Transition::NotFound,
                    Some(file) if file.status == to => Transition::Unchanged(file),
                    Some(file) => Transition::Conflict(file),
                })
            })
        })?;
        transfers::count_reached(&revoked, TransferState::Revoked);
        Ok(transition)
    }
}

impl Handler<GetFile> for MetadataStore {
    type Result = Result<Option<File>, StoreError>;
    fn handle(&mut self, msg: GetFile, _: &mut Self::Context) -> Self::Result {
        let id = msg.0.to_string();
        self.retrying(|conn| load(conn, &id))
    }
}

impl Handler<ListFiles> for MetadataStore {
    type Result = Result<Vec<ListedFile>, StoreError>;
    fn handle(&mut self, msg: ListFiles, _: &mut Self::Context) -> Self::Result {
        self.retrying(|conn| list_page(conn, &msg))
    }
}

/// One page of files (see [`ListFiles`]).
fn list_page(conn: &mut DbConnection, msg: &ListFiles) -> Result<Vec<ListedFile>, StoreError> {
    {
        // Built once per backend and loaded through the concrete connection: rows
        // then decode without the multi-backend indirection, which a page of a
        // hundred rows otherwise pays on every column.
        macro_rules! page_query {
            () => {{
                let mut query = files::table
                    .filter(files::tenant_id.eq(msg.tenant.as_str()))
                    .select(ListedRow::as_select())
                    .order(files::id.desc())
                    .into_boxed();
                match &msg.root {
                    Some(Root::Device(d)) => query = query.filter(files::device_id.eq(d.as_str())),
                    Some(Root::Shared) => query = query.filter(files::device_id.is_null()),
                    None => {}
                }
                query = match msg.status {
                    Some(status) => query.filter(files::status.eq(status.as_str())),
                    None => query.filter(files::status.ne(FileStatus::Deleted.as_str())),
                };
                if let Some(before) = msg.before {
                    query = query.filter(files::id.lt(before.to_string()));
                }
                // Files of an open batch are the opener's alone until the commit
                // (an abandoned batch's are being deleted); a file outside any
                // batch stops at `batch_id IS NULL`. Written in the query DSL, not
                // as SQL text, so the statement is prepared once per connection.
                let hidden = batches_table::table
                    .filter(batches_table::id.nullable().eq(files::batch_id))
                    .filter(
                        batches_table::state.eq(BatchState::Abandoned.as_str()).or(
                            batches_table::state
                                .eq(BatchState::Open.as_str())
                                .and(batches_table::created_by.ne(msg.viewer.as_str())),
                        ),
                    );
                query.filter(files::batch_id.is_null().or(not(exists(hidden))))
            }};
        }
        let rows: Vec<ListedRow> = match conn {
            DbConnection::Postgresql(pg) => page_query!().limit(msg.limit).load(pg)?,
            // SQLite plans with the value of a bound LIMIT, so it prepares the
            // statement again every time the parameter is bound (a sixth of a page's
            // CPU). Rows are stepped one at a time, so stopping after the page's last
            // row reads no more than LIMIT would; the plan is the same either way.
            DbConnection::Sqlite(sqlite) => page_query!()
                .load_iter::<ListedRow, DefaultLoadingMode>(sqlite)?
                .take(usize::try_from(msg.limit).unwrap_or(0))
                .collect::<QueryResult<_>>()?,
        };
        rows.into_iter()
            .map(|r| r.into_listed(msg.tenant.clone()).map_err(StoreError::from))
            .collect()
    }
}

impl Handler<MarkVerifying> for MetadataStore {
    type Result = Result<Transition, StoreError>;
    fn handle(&mut self, msg: MarkVerifying, _: &mut Self::Context) -> Self::Result {
        self.transition(msg.0, &[FileStatus::Pending], FileStatus::Verifying, |_| {
            None
        })
    }
}

impl Handler<MarkUploaded> for MetadataStore {
    type Result = Result<Transition, StoreError>;
    fn handle(&mut self, msg: MarkUploaded, _: &mut Self::Context) -> Self::Result {
        self.transition(
            msg.0,
            &[FileStatus::Pending, FileStatus::Verifying],
            FileStatus::Uploaded,
            |_| Some(EventKind::Uploaded),
        )
    }
}

impl Handler<MarkRejected> for MetadataStore {
    type Result = Result<Transition, StoreError>;
    fn handle(&mut self, msg: MarkRejected, _: &mut Self::Context) -> Self::Result {
        self.transition(
            msg.0,
            &[FileStatus::Pending, FileStatus::Verifying],
            FileStatus::Rejected,
            |_| Some(EventKind::Rejected),
        )
    }
}

impl Handler<MarkDeleted> for MetadataStore {
    type Result = Result<Transition, StoreError>;
    fn handle(&mut self, msg: MarkDeleted, _: &mut Self::Context) -> Self::Result {
        self.transition(
            msg.0,
            &[
                FileStatus::Uploaded,
                FileStatus::Pending,
                FileStatus::Verifying,
                FileStatus::Rejected,
                FileStatus::Expired,
            ],
            FileStatus::Deleted,
            // Only an uploaded file was ever announced, so only its deletion is news.
            |previous| (previous == FileStatus::Uploaded).then_some(EventKind::Deleted),
        )
    }
}
