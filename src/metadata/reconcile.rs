//! What the reconciler asks of the metadata: overdue pending files (claimed with a
//! lease so one instance works a file at a time), expiry, tombstones to sweep,
//! retention and purging.

use actix::{Handler, Message};
use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;

use super::db::DbConnection;
use super::rows::FileRow;
use super::schema::files;
use super::{now_micros, MetadataStore, StoreError};
use crate::domain::{File, FileId, FileStatus, TenantId};
use crate::events::EventKind;

/// Claims up to `limit` pending files whose upload URL expired before `cutoff`
/// and that no instance holds a lease on; the lease lasts `lease`.
#[derive(Message)]
#[rtype(result = "Result<Vec<File>, StoreError>")]
pub struct ClaimOverdue {
    /// Upload URLs that expired before this are overdue.
    pub cutoff: DateTime<Utc>,
    /// How long the claim keeps other instances away (and when a failed file is retried).
    pub lease: Duration,
    /// Batch size.
    pub limit: i64,
}

/// `pending` → `expired` for many files in one transaction, recording
/// `io.valet.file.expired` for each file that changed; returns those files (a file
/// finished meanwhile by someone else is left alone and not returned).
#[derive(Message)]
#[rtype(result = "Result<Vec<File>, StoreError>")]
pub struct ExpireMany(pub Vec<FileId>);

/// Claims up to `limit` ended files whose key is due to be swept (their last upload
/// URL stopped working before `cutoff`); the claim holds for `lease`.
#[derive(Message)]
#[rtype(result = "Result<Vec<File>, StoreError>")]
pub struct ClaimTombstones {
    /// Keys whose upload URL expired before this are due.
    pub cutoff: DateTime<Utc>,
    /// How long the claim keeps other instances away (and when a failure is retried).
    pub lease: Duration,
    /// Batch size.
    pub limit: i64,
}

/// Records that the keys of these files were swept: nothing is left to check.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct TombstonesSwept(pub Vec<FileId>);

/// Uploaded files of `tenant` uploaded before `cutoff` (retention).
#[derive(Message)]
#[rtype(result = "Result<Vec<File>, StoreError>")]
pub struct RetentionDue {
    /// Tenant whose retention applies.
    pub tenant: TenantId,
    /// Files uploaded before this are due.
    pub cutoff: DateTime<Utc>,
    /// Batch size.
    pub limit: i64,
}

/// Deletes up to `limit` records that ended (`rejected`, `expired`, `deleted`)
/// before `cutoff` and have no key left to sweep; returns the ids that went.
#[derive(Message)]
#[rtype(result = "Result<Vec<FileId>, StoreError>")]
pub struct PurgeFinished {
    /// Records last changed before this go.
    pub cutoff: DateTime<Utc>,
    /// Batch size.
    pub limit: i64,
}

/// Pending files and the creation time of the oldest.
#[derive(Message)]
#[rtype(result = "Result<(i64, Option<DateTime<Utc>>), StoreError>")]
pub struct PendingBacklog;

/// Statuses a file never leaves.
const FINISHED: [&str; 3] = [
    FileStatus::Rejected.as_str(),
    FileStatus::Expired.as_str(),
    FileStatus::Deleted.as_str(),
];

impl Handler<ClaimOverdue> for MetadataStore {
    type Result = Result<Vec<File>, StoreError>;
    fn handle(&mut self, msg: ClaimOverdue, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let now = now_micros().naive_utc();
        let until = now + msg.lease;
        let overdue = files::table
            .select(files::id)
            .filter(files::status.eq(FileStatus::Pending.as_str()))
            .filter(files::upload_expires_at.lt(msg.cutoff.naive_utc()))
            .filter(
                files::reconcile_after
                    .is_null()
                    .or(files::reconcile_after.lt(now)),
            )
            .order(files::upload_expires_at.asc())
            .limit(msg.limit);
        // On Postgres the chosen rows are locked and rows another instance is
        // claiming are skipped, so concurrent reconcilers get disjoint batches.
        // SQLite serves one instance (documented), whose reconciler claims one
        // batch at a time.
        let conn: &mut DbConnection = &mut conn;
        let rows: Vec<FileRow> = conn.transaction(|conn| {
            let ids: Vec<String> = match conn {
                DbConnection::Postgresql(pg) => overdue.for_update().skip_locked().load(pg)?,
                DbConnection::Sqlite(sqlite) => overdue.load(sqlite)?,
            };
            lease(conn, &ids, until)
        })?;
        rows.into_iter()
            .map(|r| r.into_file().map_err(StoreError::from))
            .collect()
    }
}

/// Sets the lease of the claimed files `ids` to `until` and reads them back
/// (inside the claiming transaction).
pub(super) fn lease(
    conn: &mut DbConnection,
    ids: &[String],
    until: chrono::NaiveDateTime,
) -> QueryResult<Vec<FileRow>> {
    diesel::update(files::table.filter(files::id.eq_any(ids)))
        .set(files::reconcile_after.eq(until))
        .execute(conn)?;
    files::table
        .select(FileRow::as_select())
        .filter(files::id.eq_any(ids))
        .load(conn)
}

impl Handler<ExpireMany> for MetadataStore {
    type Result = Result<Vec<File>, StoreError>;
    fn handle(&mut self, msg: ExpireMany, _: &mut Self::Context) -> Self::Result {
        if msg.0.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = msg.0.iter().map(FileId::to_string).collect();
        let mut conn = self.conn()?;
        conn.transaction::<_, StoreError, _>(|conn| {
            let now = now_micros();
            // One statement for the batch; the status guard makes it race safely
            // with a late `complete` or another instance, as a single transition does.
            let expire = diesel::update(
                files::table
                    .filter(files::id.eq_any(&ids))
                    .filter(files::status.eq(FileStatus::Pending.as_str())),
            )
            .set((
                files::status.eq(FileStatus::Expired.as_str()),
                files::updated_at.eq(now.naive_utc()),
            ));
            // RETURNING needs the concrete backend.
            let rows: Vec<FileRow> = match &mut *conn {
                DbConnection::Postgresql(pg) => {
                    expire.returning(FileRow::as_returning()).get_results(pg)?
                }
                DbConnection::Sqlite(sqlite) => expire
                    .returning(FileRow::as_returning())
                    .get_results(sqlite)?,
            };
            let mut expired = Vec::with_capacity(rows.len());
            for row in rows {
                let file = row.into_file()?;
                let batch = file.batch_id.map(|b| b.to_string());
                // A file of a batch not yet committed was never announced, so
                // neither is its expiry; only files in a batch pay this read.
                let announced = match &batch {
                    None => true,
                    Some(batch) => super::batches::announces(conn, batch)?,
                };
                if announced {
                    self.record_event(conn, EventKind::Expired, &file, now)?;
                }
                super::usage::on_transition(conn, &file, FileStatus::Pending, FileStatus::Expired)?;
                expired.push(file);
            }
            Ok(expired)
        })
    }
}

impl Handler<ClaimTombstones> for MetadataStore {
    type Result = Result<Vec<File>, StoreError>;
    fn handle(&mut self, msg: ClaimTombstones, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let until = now_micros().naive_utc() + msg.lease;
        let due = files::table
            .select(files::id)
            .filter(files::status.eq_any(FINISHED))
            .filter(files::sweep_after.lt(msg.cutoff.naive_utc()))
            .order(files::sweep_after.asc())
            .limit(msg.limit);
        let conn: &mut DbConnection = &mut conn;
        let rows: Vec<FileRow> = conn.transaction(|conn| {
            // As for overdue files: disjoint batches for concurrent instances.
            let ids: Vec<String> = match conn {
                DbConnection::Postgresql(pg) => due.for_update().skip_locked().load(pg)?,
                DbConnection::Sqlite(sqlite) => due.load(sqlite)?,
            };
            // The lease is the due time moved on: a failed sweep is retried after it.
            diesel::update(files::table.filter(files::id.eq_any(&ids)))
                .set(files::sweep_after.eq(until))
                .execute(conn)?;
            files::table
                .select(FileRow::as_select())
                .filter(files::id.eq_any(&ids))
                .load(conn)
        })?;
        rows.into_iter()
            .map(|r| r.into_file().map_err(StoreError::from))
            .collect()
    }
}

impl Handler<TombstonesSwept> for MetadataStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, msg: TombstonesSwept, _: &mut Self::Context) -> Self::Result {
        if msg.0.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = msg.0.iter().map(FileId::to_string).collect();
        let mut conn = self.conn()?;
        diesel::update(files::table.filter(files::id.eq_any(&ids)))
            .set(files::sweep_after.eq(None::<chrono::NaiveDateTime>))
            .execute(&mut *conn)?;
        Ok(())
    }
}

impl Handler<RetentionDue> for MetadataStore {
    type Result = Result<Vec<File>, StoreError>;
    fn handle(&mut self, msg: RetentionDue, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let rows: Vec<FileRow> = files::table
            .select(FileRow::as_select())
            .filter(files::tenant_id.eq(msg.tenant.as_str()))
            .filter(files::status.eq(FileStatus::Uploaded.as_str()))
            .filter(files::uploaded_at.lt(msg.cutoff.naive_utc()))
            .order(files::uploaded_at.asc())
            .limit(msg.limit)
            .load(&mut *conn)?;
        rows.into_iter()
            .map(|r| r.into_file().map_err(StoreError::from))
            .collect()
    }
}

impl Handler<PurgeFinished> for MetadataStore {
    type Result = Result<Vec<FileId>, StoreError>;
    fn handle(&mut self, msg: PurgeFinished, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        conn.transaction(|conn| {
            let due: Vec<String> = files::table
                .select(files::id)
                .filter(files::status.eq_any(FINISHED))
                .filter(files::updated_at.lt(msg.cutoff.naive_utc()))
                // A tombstone is kept until its key was swept.
                .filter(files::sweep_after.is_null())
                .limit(msg.limit)
                .load(conn)?;
            diesel::delete(files::table.filter(files::id.eq_any(&due))).execute(conn)?;
            Ok(due.iter().filter_map(|id| id.parse().ok()).collect())
        })
    }
}

impl Handler<PendingBacklog> for MetadataStore {
    type Result = Result<(i64, Option<DateTime<Utc>>), StoreError>;
    fn handle(&mut self, _: PendingBacklog, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let pending = files::table.filter(files::status.eq(FileStatus::Pending.as_str()));
        let count: i64 = pending.count().get_result(&mut *conn)?;
        let oldest: Option<chrono::NaiveDateTime> = pending
            .select(diesel::dsl::min(files::created_at))
            .first(&mut *conn)?;
        Ok((count, oldest.map(|t| t.and_utc())))
    }
}
