//! The `MetadataStore` actor: file records and the event outbox, in Postgres or
//! SQLite through diesel, on a pool of dedicated threads (diesel is blocking).

pub mod db;
mod group_commit;
mod outbox;
mod reconcile;
mod rows;
mod schema;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::{Actor, Handler, Message, SyncContext};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;

use crate::domain::{File, FileId, FileStatus, Root, TenantId};
use crate::events::{file_event, EventContext, EventKind};
use crate::telemetry::metrics;
use db::{DbConnection, DbPool};
pub use group_commit::GroupCommit;
pub use outbox::{ClaimOutbox, MarkPublished, OutboxBacklog, PrunePublished, PublishFailed};
pub use reconcile::{ClaimOverdue, ExpireMany, PendingBacklog, PurgeFinished, RetentionDue};
pub use rows::OutboxEntry;
use rows::{FileRow, NewOutboxRow};
use schema::files;

/// Owns the database pool; run it in a `SyncArbiter` with one thread per connection.
pub struct MetadataStore {
    pool: DbPool,
    events: Arc<EventContext>,
    schema: Arc<Schema>,
}

/// Whether the schema is known to be current. Shared by the store's threads so
/// that migrations pending at start (database down) run once it is reachable.
pub struct Schema {
    ready: AtomicBool,
    migrate: bool,
    lock: Mutex<()>,
}

impl Schema {
    /// `migrate`: apply pending migrations on first contact; otherwise trust the
    /// schema as it is (`valet migrate` is run separately).
    pub fn new(migrate: bool) -> Arc<Self> {
        Arc::new(Self {
            ready: AtomicBool::new(!migrate),
            migrate,
            lock: Mutex::new(()),
        })
    }

    fn ensure(&self, conn: &mut DbConnection) -> Result<(), StoreError> {
        if self.ready.load(Ordering::Acquire) || !self.migrate {
            return Ok(());
        }
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        for version in db::run_migrations(conn)
            .map_err(|e| StoreError::Unavailable(format!("database schema not ready: {e}")))?
        {
            tracing::info!(%version, "applied migration");
        }
        self.ready.store(true, Ordering::Release);
        Ok(())
    }
}

impl MetadataStore {
    /// A store over `pool`; events it records carry `event_source`.
    pub fn new(pool: DbPool, event_source: String, schema: Arc<Schema>) -> Self {
        Self::with_events(
            pool,
            Arc::new(EventContext {
                source: event_source,
                ..EventContext::default()
            }),
            schema,
        )
    }

    /// A store whose events also say where each backend stores objects.
    pub fn with_events(pool: DbPool, events: Arc<EventContext>, schema: Arc<Schema>) -> Self {
        Self {
            pool,
            events,
            schema,
        }
    }

    fn conn(&self) -> Result<PooledConnection, StoreError> {
        connection(&self.pool, &self.schema)
    }
}

type PooledConnection = r2d2::PooledConnection<db::ConnectionManager>;

/// A connection from `pool`, with the schema brought up to date on first contact.
fn connection(pool: &DbPool, schema: &Schema) -> Result<PooledConnection, StoreError> {
    let started = Instant::now();
    let result = pool.get();
    metrics::record_pool(pool.state(), pool.max_size(), started.elapsed());
    let mut conn =
        result.map_err(|e| StoreError::Unavailable(format!("no database connection: {e}")))?;
    schema.ensure(&mut conn)?;
    Ok(conn)
}

impl Actor for MetadataStore {
    type Context = SyncContext<Self>;
}

/// Why a metadata operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached: 503.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: 500.
    #[error("{0}")]
    Internal(String),
}

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        use diesel::result::DatabaseErrorKind as Kind;
        match &e {
            DieselError::DatabaseError(Kind::ClosedConnection | Kind::UnableToSendCommand, _)
            | DieselError::BrokenTransactionManager => StoreError::Unavailable(e.to_string()),
            // The server going away mid-statement, or a statement over its time
            // budget, is an outage to retry, not a bug.
            DieselError::DatabaseError(_, info)
                if [
                    "terminating connection",
                    "server closed the connection",
                    "statement timeout",
                    "connection to server",
                ]
                .iter()
                .any(|m| info.message().contains(m)) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

impl From<rows::CorruptRow> for StoreError {
    fn from(e: rows::CorruptRow) -> Self {
        StoreError::Internal(e.to_string())
    }
}

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
#[rtype(result = "Result<Vec<File>, StoreError>")]
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
}

/// `pending` → `uploaded`, recording `io.valet.file.uploaded`.
#[derive(Message)]
#[rtype(result = "Result<Transition, StoreError>")]
pub struct MarkUploaded(pub FileId);

/// `pending` → `rejected`, recording `io.valet.file.rejected`.
#[derive(Message)]
#[rtype(result = "Result<Transition, StoreError>")]
pub struct MarkRejected(pub FileId);

/// Any live status → `deleted`; `io.valet.file.deleted` when it had been uploaded.
#[derive(Message)]
#[rtype(result = "Result<Transition, StoreError>")]
pub struct MarkDeleted(pub FileId);

/// Outbox entries, oldest first.
#[derive(Message)]
#[rtype(result = "Result<Vec<OutboxEntry>, StoreError>")]
pub struct ListOutbox {
    /// Include entries already published.
    pub include_published: bool,
    /// At most this many.
    pub limit: i64,
}

/// Check the database answers.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Ping;

fn load(conn: &mut DbConnection, id: &str) -> Result<Option<File>, StoreError> {
    let row = files::table
        .filter(files::id.eq(id))
        .select(FileRow::as_select())
        .first(conn)
        .optional()?;
    Ok(row.map(FileRow::into_file).transpose()?)
}

impl MetadataStore {
    fn record_event(
        &self,
        conn: &mut DbConnection,
        kind: EventKind,
        file: &File,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let event = file_event(kind, file, &self.events, at)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        diesel::insert_into(schema::outbox::table)
            .values(NewOutboxRow {
                event_id: &event.id,
                event_type: &event.event_type,
                file_id: file.id.to_string(),
                tenant_id: file.tenant_id.as_str(),
                device_id: file.device_id.as_ref().map(|d| d.as_str()),
                payload: &event.payload,
                created_at: at.naive_utc(),
                attempts: 0,
            })
            .execute(conn)?;
        Ok(())
    }

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
        let mut conn = self.conn()?;
        let id = id.to_string();
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
                        ))
                        .execute(conn)?
                };
                if changed == 1 {
                    let file = load(conn, &id)?.ok_or_else(|| {
                        StoreError::Internal(format!("file {id} vanished inside a transaction"))
                    })?;
                    if let Some(kind) = event(previous) {
                        self.record_event(conn, kind, &file, now)?;
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
    }
}

/// Now, at the precision every supported database stores.
pub fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    let micros = now.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(now)
}

impl Handler<GetFile> for MetadataStore {
    type Result = Result<Option<File>, StoreError>;
    fn handle(&mut self, msg: GetFile, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        load(&mut conn, &msg.0.to_string())
    }
}

impl Handler<ListFiles> for MetadataStore {
    type Result = Result<Vec<File>, StoreError>;
    fn handle(&mut self, msg: ListFiles, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        // Built once per backend and loaded through the concrete connection: rows
        // then decode without the multi-backend indirection, which a page of a
        // hundred rows otherwise pays on every column.
        macro_rules! page_query {
            () => {{
                let mut query = files::table
                    .filter(files::tenant_id.eq(msg.tenant.as_str()))
                    .select(FileRow::as_select())
                    .order(files::id.desc())
                    .limit(msg.limit)
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
                query
            }};
        }
        let rows: Vec<FileRow> = match &mut *conn {
            DbConnection::Postgresql(pg) => page_query!().load(pg)?,
            DbConnection::Sqlite(sqlite) => page_query!().load(sqlite)?,
        };
        rows.into_iter()
            .map(|r| r.into_file().map_err(StoreError::from))
            .collect()
    }
}

impl Handler<MarkUploaded> for MetadataStore {
    type Result = Result<Transition, StoreError>;
    fn handle(&mut self, msg: MarkUploaded, _: &mut Self::Context) -> Self::Result {
        self.transition(msg.0, &[FileStatus::Pending], FileStatus::Uploaded, |_| {
            Some(EventKind::Uploaded)
        })
    }
}

impl Handler<MarkRejected> for MetadataStore {
    type Result = Result<Transition, StoreError>;
    fn handle(&mut self, msg: MarkRejected, _: &mut Self::Context) -> Self::Result {
        self.transition(msg.0, &[FileStatus::Pending], FileStatus::Rejected, |_| {
            Some(EventKind::Rejected)
        })
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
                FileStatus::Rejected,
                FileStatus::Expired,
            ],
            FileStatus::Deleted,
            // Only an uploaded file was ever announced, so only its deletion is news.
            |previous| (previous == FileStatus::Uploaded).then_some(EventKind::Deleted),
        )
    }
}

impl Handler<ListOutbox> for MetadataStore {
    type Result = Result<Vec<OutboxEntry>, StoreError>;
    fn handle(&mut self, msg: ListOutbox, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let mut query = schema::outbox::table
            .select(OutboxEntry::as_select())
            .order(schema::outbox::seq.asc())
            .limit(msg.limit)
            .into_boxed();
        if !msg.include_published {
            query = query.filter(schema::outbox::published_at.is_null());
        }
        Ok(query.load(&mut conn)?)
    }
}

impl MetadataStore {
    /// Connects (applying pending migrations) and runs a trivial query.
    pub fn check(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::sql_query("SELECT 1").execute(&mut conn)?;
        Ok(())
    }
}

impl Handler<Ping> for MetadataStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, _: Ping, _: &mut Self::Context) -> Self::Result {
        self.check()
    }
}
