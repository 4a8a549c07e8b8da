//! The `MetadataStore` actor: file records and the event outbox, in Postgres or
//! SQLite through diesel, on a pool of dedicated threads (diesel is blocking).

mod batches;
mod cache_invalidations;
pub mod db;
mod file_records;
mod group_commit;
mod jobs;
mod outbox;
mod parts;
mod reconcile;
mod rows;
mod schema;
mod transfers;
mod usage;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::{Actor, Handler, Message, SyncContext};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;

use crate::domain::{DeviceId, File, TenantId};
use crate::events::{file_event, EventContext, EventKind, OutboxEvent};
use crate::telemetry::metrics;
pub use batches::{
    AbandonBatch, BatchChange, CommitBatch, CreateBatch, DueBatches, GetBatch, GetBatchForJoin,
    ListBatches,
};
pub use cache_invalidations::{CacheInvalidations, RequestCacheInvalidation};
use db::{DbConnection, DbPool};
pub use file_records::{
    GetFile, ListFiles, MarkDeleted, MarkRejected, MarkUploaded, MarkVerifying, Transition,
};
pub use group_commit::{GroupCommit, InsertError};
pub use jobs::{
    job_for, AppendJobLog, Attempt, Cancel, CancelJob, ClaimJobs, ClaimMovedSources, CountJobs,
    CreateJob, CreateJobGroup, EndAttempt, Ended, FileSelector, GetJob, GetJobLog, ListJobs,
    MovedSourceSettled, NewGroup, NewJob, PurgeJobs, RenewJob, Renewal, SourceToDelete,
};
pub use outbox::{
    ClaimOutbox, ListOutbox, MarkPublished, OutboxBacklog, PrunePublished, PublishFailed,
};
pub use parts::{ClaimVerifying, ExtendLease, GetPartHashes, RecordPartHashes};
pub use reconcile::{
    ClaimOverdue, ClaimTombstones, ExpireMany, PendingBacklog, PurgeFinished, RetentionDue,
    TombstonesSwept,
};
use rows::NewOutboxRow;
pub use rows::OutboxEntry;
pub use transfers::{
    AcceptTransfer, CreateTransfer, ExpireTransfers, GetInbox, GetTransfer, ListTransfers, Offer,
    RevokeTransfer, SetInbox, TransferChange, TransferSide,
};
pub use usage::{GetUsage, QuotaLimit, QuotaLimits, Usage};

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

    /// [`retrying`] on this store's pool.
    fn retrying<T>(
        &self,
        work: impl FnMut(&mut DbConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        retrying(&self.pool, &self.schema, work)
    }
}

/// Runs `work` on a connection from `pool`; when that connection turns out to have
/// been dropped by the server (a failover, a restart), runs it once more on a
/// probed one. Only for work that is safe to repeat: reads, the guarded status
/// changes (a repeat of one that did commit finds it done) and inserts of rows
/// with fixed ids (a repeat of one that did commit is refused).
fn retrying<T>(
    pool: &DbPool,
    schema: &Schema,
    mut work: impl FnMut(&mut DbConnection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let losses = db::connection_losses();
    match work(&mut *connection(pool, schema)?) {
        Err(StoreError::Unavailable(_)) if db::connection_losses() != losses => {
            work(&mut *connection(pool, schema)?)
        }
        result => result,
    }
}

/// A connection checked out of the pool: `&mut *conn` is the [`DbConnection`].
struct PooledConnection(r2d2::PooledConnection<db::ConnectionManager>);

impl std::ops::Deref for PooledConnection {
    type Target = DbConnection;
    fn deref(&self) -> &DbConnection {
        &self.0
    }
}

impl std::ops::DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut DbConnection {
        &mut self.0
    }
}

/// A connection from `pool`, with the schema brought up to date on first contact.
fn connection(pool: &DbPool, schema: &Schema) -> Result<PooledConnection, StoreError> {
    let started = Instant::now();
    let result = pool.get();
    metrics::record_pool(pool.state(), pool.max_size(), started.elapsed());
    let mut conn = PooledConnection(
        result.map_err(|e| StoreError::Unavailable(format!("no database connection: {e}")))?,
    );
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
    /// A new file would break this quota: 403 `quota_exceeded`.
    #[error("the {} quota would be exceeded", .0.as_str())]
    QuotaExceeded(QuotaLimit),
    /// Anything else: 500.
    #[error("{0}")]
    Internal(String),
}

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        use diesel::result::DatabaseErrorKind as Kind;
        // The server going away mid-statement is an outage to retry, not a bug;
        // the pool probes every connection it handed out before it.
        let lost = |e: &DieselError| {
            db::note_connection_lost();
            StoreError::Unavailable(e.to_string())
        };
        match &e {
            DieselError::DatabaseError(Kind::ClosedConnection | Kind::UnableToSendCommand, _) => {
                lost(&e)
            }
            DieselError::BrokenTransactionManager => StoreError::Unavailable(e.to_string()),
            DieselError::DatabaseError(_, info)
                if [
                    "terminating connection",
                    "server closed the connection",
                    "connection to server",
                ]
                .iter()
                .any(|m| info.message().contains(m)) =>
            {
                lost(&e)
            }
            // A statement over its time budget: an outage too.
            DieselError::DatabaseError(_, info) if info.message().contains("statement timeout") => {
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

/// Check the database answers.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Ping;

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
        append_outbox(
            conn,
            &event,
            OutboxOrder::key(file.id),
            &file.tenant_id,
            file.device_id.as_ref(),
            at,
        )
    }
}

/// Where an outbox row stands in the relay's order: after every unpublished row
/// recorded earlier under `key` and, with `after`, under that key too.
pub(super) struct OutboxOrder {
    key: String,
    after: Option<String>,
}

impl OutboxOrder {
    /// Ordered with the other events of `key` (a file, transfer's file, batch or job id).
    pub(super) fn key(key: impl ToString) -> Self {
        Self {
            key: key.to_string(),
            after: None,
        }
    }

    /// Also held back until the events recorded earlier under `after` are published.
    pub(super) fn after(self, after: impl ToString) -> Self {
        Self {
            after: Some(after.to_string()),
            ..self
        }
    }
}

/// Records `event` in the outbox (inside the caller's transaction).
pub(super) fn append_outbox(
    conn: &mut DbConnection,
    event: &OutboxEvent,
    order: OutboxOrder,
    tenant: &TenantId,
    device: Option<&DeviceId>,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    diesel::insert_into(schema::outbox::table)
        .values(NewOutboxRow {
            event_id: &event.id,
            event_type: &event.event_type,
            file_id: order.key,
            tenant_id: tenant.as_str(),
            device_id: device.map(|d| d.as_str()),
            payload: &event.payload,
            created_at: at.naive_utc(),
            attempts: 0,
            after_key: order.after,
        })
        .execute(conn)?;
    Ok(())
}

/// Now, at the precision every supported database stores.
pub fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    let micros = now.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(now)
}

impl MetadataStore {
    /// Connects (applying pending migrations) and runs a trivial query.
    pub fn check(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::sql_query("SELECT 1").execute(&mut *conn)?;
        Ok(())
    }
}

impl Handler<Ping> for MetadataStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, _: Ping, _: &mut Self::Context) -> Self::Result {
        self.check()
    }
}
