//! Jobs: their records, their log, the claims and renewals workers hold on them,
//! and the guarded changes of state that record their events (and, for a job
//! that succeeds, the file's new replica or backend) in the same transaction.
//!
//! Every change of a running job is guarded by `lease_owner = <worker>` and a
//! running state, so a worker whose lease ran out and was taken over by another
//! instance changes nothing: it learns it lost the job and stops.

use actix::{Handler, Message};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use diesel::prelude::*;

use super::db::DbConnection;
use super::rows::{encode_replicas, utc, FileRow};
use super::schema::{files, job_log, jobs};
use super::{append_outbox, now_micros, MetadataStore, OutboxOrder, StoreError};
use crate::domain::{
    DeviceId, File, FileId, FileStatus, Job, JobGroupId, JobId, JobKind, JobState, ObjectKey,
    TenantId,
};
use crate::events::{file_moved_event, job_event};
use crate::telemetry::metrics;

/// Records a new job for one file, unless the file already has an unfinished job.
#[derive(Message)]
#[rtype(result = "Result<NewJob, StoreError>")]
pub struct CreateJob(pub Job);

/// What [`CreateJob`] did.
#[derive(Debug, Clone)]
pub enum NewJob {
    /// Recorded.
    Created(Job),
    /// The file already has this unfinished job; nothing was recorded.
    Busy(JobId),
}

/// Which files one selector turns into jobs.
#[derive(Debug, Clone, Default)]
pub struct FileSelector {
    /// Only files on this backend.
    pub backend: Option<String>,
    /// Only files of this device.
    pub device: Option<DeviceId>,
    /// Only files created before this.
    pub created_before: Option<DateTime<Utc>>,
}

/// Records one job per uploaded file of `tenant` matching `selector`, not already
/// on `target` and without an unfinished job, all under `group`.
#[derive(Message)]
#[rtype(result = "Result<NewGroup, StoreError>")]
pub struct CreateJobGroup {
    /// Tenant whose files are selected.
    pub tenant: TenantId,
    /// Which files.
    pub selector: FileSelector,
    /// Copy or move.
    pub kind: JobKind,
    /// Backend the objects go to.
    pub target: String,
    /// The group's id.
    pub group: JobGroupId,
    /// Most files the group may hold.
    pub max_files: i64,
}

/// What [`CreateJobGroup`] did.
#[derive(Debug, Clone)]
pub enum NewGroup {
    /// Recorded, one job per selected file (possibly none).
    Created(Vec<Job>),
    /// More than `max_files` files match; nothing was recorded.
    TooMany,
}

/// Look a job up by id.
#[derive(Message)]
#[rtype(result = "Result<Option<Job>, StoreError>")]
pub struct GetJob(pub JobId);

/// One page of a tenant's jobs, newest first.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<Job>, StoreError>")]
pub struct ListJobs {
    /// Tenant whose jobs are listed.
    pub tenant: TenantId,
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this group.
    pub group: Option<JobGroupId>,
    /// Only jobs with ids below this one (the keyset cursor).
    pub before: Option<JobId>,
    /// Page size.
    pub limit: i64,
}

/// A job's log, oldest line first.
#[derive(Message)]
#[rtype(result = "Result<Vec<(DateTime<Utc>, String)>, StoreError>")]
pub struct GetJobLog(pub JobId);

/// Adds a line to a job's log.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct AppendJobLog {
    /// The job.
    pub id: JobId,
    /// What happened.
    pub line: String,
}

/// Cancels a job: one still waiting ends at once (event recorded); a running one
/// is flagged, and its worker stops and cleans up.
#[derive(Message)]
#[rtype(result = "Result<Cancel, StoreError>")]
pub struct CancelJob(pub JobId);

/// What [`CancelJob`] did.
#[derive(Debug, Clone)]
pub enum Cancel {
    /// The job was waiting and is now `cancelled`.
    Cancelled(Job),
    /// The job is running; its worker was asked to stop.
    Requested(Job),
    /// It was already cancelled.
    Unchanged(Job),
    /// It already succeeded or failed.
    Finished(Job),
    /// No such job.
    NotFound,
}

/// Claims up to `limit` jobs for `owner`: waiting jobs whose backoff is over, and
/// running jobs whose worker's lease ran out. Each claim starts an attempt.
#[derive(Message)]
#[rtype(result = "Result<Vec<Job>, StoreError>")]
pub struct ClaimJobs {
    /// The claiming worker (instance).
    pub owner: String,
    /// Batch size.
    pub limit: i64,
    /// How long the claim lasts unless renewed.
    pub lease: Duration,
}

/// Renews `owner`'s lease on a running job, records its progress and, when
/// given, its new state.
#[derive(Message)]
#[rtype(result = "Result<Renewal, StoreError>")]
pub struct RenewJob {
    /// The job.
    pub id: JobId,
    /// The worker holding it.
    pub owner: String,
    /// Bytes written so far.
    pub bytes_done: u64,
    /// `copying` or `verifying`, when the job enters it.
    pub state: Option<JobState>,
    /// New lease length from now.
    pub lease: Duration,
}

/// What a worker learns when it renews its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Still its job; `cancel_requested` says whether to stop.
    Held {
        /// A cancel was asked for.
        cancel_requested: bool,
    },
    /// Another worker took it over (the lease ran out), or it ended: stop, touch nothing.
    Lost,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// The target holds a verified copy: record it (and, for a move, switch the
    /// file's backend; its source object goes after `source_grace`).
    Succeeded {
        /// How long the source of a move is kept.
        source_grace: Duration,
    },
    /// The attempt failed; with `retry_at`, the job waits until then for another.
    Failed {
        /// Why.
        error: String,
        /// When to try again; `None`: the job fails for good.
        retry_at: Option<DateTime<Utc>>,
    },
    /// Stopped on request; the target was cleaned.
    Cancelled,
}

/// Ends `owner`'s attempt at a job as `attempt` says.
#[derive(Message)]
#[rtype(result = "Result<Ended, StoreError>")]
pub struct EndAttempt {
    /// The job.
    pub id: JobId,
    /// The worker holding it.
    pub owner: String,
    /// How the attempt ended.
    pub attempt: Attempt,
}

/// What [`EndAttempt`] recorded.
#[derive(Debug, Clone)]
pub enum Ended {
    /// Recorded; `file` is the file as changed by a success (for the cache).
    Recorded {
        /// The job as it now is.
        job: Job,
        /// The file, when a success changed it.
        file: Option<Box<File>>,
    },
    /// The file was deleted (or moved away) during the copy: the job failed and
    /// the copy on the target must be removed.
    FileGone(Job),
    /// A cancel was asked for before the success was recorded: the worker cleans
    /// the target and ends the attempt as cancelled.
    CancelRequested,
    /// The worker no longer holds the job; nothing was recorded.
    Lost,
}

/// Source objects of moves whose grace period is over, up to `limit`, claimed for
/// `lease` (so two instances do not sweep the same one).
#[derive(Message)]
#[rtype(result = "Result<Vec<SourceToDelete>, StoreError>")]
pub struct ClaimMovedSources {
    /// Batch size.
    pub limit: i64,
    /// How long the claim lasts.
    pub lease: Duration,
}

/// The source object a succeeded move left behind.
#[derive(Debug, Clone)]
pub struct SourceToDelete {
    /// The move.
    pub job: JobId,
    /// The file moved.
    pub file: FileId,
    /// Backend holding the source object.
    pub backend: String,
    /// Its key.
    pub key: ObjectKey,
    /// The source is live again (the file was moved back, or copied there): keep it.
    pub in_use: bool,
}

/// The source object of move `0` is gone (or was kept because it is in use).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct MovedSourceSettled(pub JobId);

/// How many unfinished jobs are in each (kind, state).
#[derive(Message)]
#[rtype(result = "Result<Vec<(JobKind, JobState, i64)>, StoreError>")]
pub struct CountJobs;

/// Deletes up to `limit` jobs (and their logs) that ended before `cutoff` and
/// have no source object left to remove; returns how many went.
#[derive(Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct PurgeJobs {
    /// Jobs that ended before this go.
    pub cutoff: DateTime<Utc>,
    /// Batch size.
    pub limit: i64,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = jobs)]
struct JobRow {
    id: String,
    tenant_id: String,
    group_id: Option<String>,
    kind: String,
    file_id: String,
    source_backend: String,
    target_backend: String,
    object_key: String,
    state: String,
    bytes_total: i64,
    bytes_done: i64,
    attempts: i32,
    error: Option<String>,
    cancel_requested: bool,
    lease_owner: Option<String>,
    lease_until: Option<NaiveDateTime>,
    run_after: NaiveDateTime,
    source_delete_after: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
}

impl JobRow {
    fn from_job(job: &Job) -> Self {
        Self {
            id: job.id.to_string(),
            tenant_id: job.tenant_id.to_string(),
            group_id: job.group_id.map(|g| g.to_string()),
            kind: job.kind.as_str().into(),
            file_id: job.file_id.to_string(),
            source_backend: job.source_backend.clone(),
            target_backend: job.target_backend.clone(),
            object_key: job.object_key.to_string(),
            state: job.state.as_str().into(),
            bytes_total: i64::try_from(job.bytes_total).unwrap_or(i64::MAX),
            bytes_done: i64::try_from(job.bytes_done).unwrap_or(i64::MAX),
            attempts: i32::try_from(job.attempts).unwrap_or(i32::MAX),
            error: job.error.clone(),
            cancel_requested: job.cancel_requested,
            lease_owner: None,
            lease_until: None,
            run_after: job.created_at.naive_utc(),
            source_delete_after: None,
            created_at: job.created_at.naive_utc(),
            updated_at: job.updated_at.naive_utc(),
        }
    }

    fn into_job(self) -> Result<Job, StoreError> {
        let id = self.id.clone();
        let bad = |what: &str| StoreError::Internal(format!("corrupt job row {id}: {what}"));
        Ok(Job {
            id: self.id.parse().map_err(|_| bad("id"))?,
            group_id: self
                .group_id
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|_| bad("group_id"))?,
            tenant_id: TenantId::parse(&self.tenant_id).map_err(|_| bad("tenant_id"))?,
            kind: self.kind.parse().map_err(|_| bad("kind"))?,
            file_id: self.file_id.parse().map_err(|_| bad("file_id"))?,
            source_backend: self.source_backend,
            target_backend: self.target_backend,
            state: self.state.parse().map_err(|_| bad("state"))?,
            bytes_total: u64::try_from(self.bytes_total).map_err(|_| bad("bytes_total"))?,
            bytes_done: u64::try_from(self.bytes_done).map_err(|_| bad("bytes_done"))?,
            attempts: u32::try_from(self.attempts).map_err(|_| bad("attempts"))?,
            cancel_requested: self.cancel_requested,
            created_at: utc(self.created_at),
            updated_at: utc(self.updated_at),
            error: self.error,
            object_key: ObjectKey::parse(&self.object_key).map_err(|_| bad("object_key"))?,
        })
    }
}

/// States in which a worker holds a job.
const RUNNING: [&str; 3] = [
    JobState::Scheduled.as_str(),
    JobState::Copying.as_str(),
    JobState::Verifying.as_str(),
];

/// States a job still leaves.
const UNFINISHED: [&str; 4] = [
    JobState::Created.as_str(),
    JobState::Scheduled.as_str(),
    JobState::Copying.as_str(),
    JobState::Verifying.as_str(),
];

fn load(conn: &mut DbConnection, id: &str) -> Result<Option<Job>, StoreError> {
    jobs::table
        .filter(jobs::id.eq(id))
        .select(JobRow::as_select())
        .first(conn)
        .optional()?
        .map(JobRow::into_job)
        .transpose()
}

fn append_log(
    conn: &mut DbConnection,
    id: &str,
    at: DateTime<Utc>,
    line: &str,
) -> Result<(), StoreError> {
    diesel::insert_into(job_log::table)
        .values((
            job_log::job_id.eq(id),
            job_log::at.eq(at.naive_utc()),
            job_log::line.eq(line),
        ))
        .execute(conn)?;
    Ok(())
}

/// Serializes the creation of a tenant's jobs, so that no two requests (single
/// or selector, on any instance) give one file two unfinished jobs: on PostgreSQL
/// a transaction-scoped advisory lock per tenant (the selection that follows is a
/// new statement, so it sees what the previous holder committed); on SQLite the
/// transaction's first statement is a write, which takes the database's write lock
/// at once (waiting for it) instead of failing to upgrade a read later.
fn lock_job_creation(conn: &mut DbConnection, tenant: &TenantId) -> Result<(), StoreError> {
    use diesel::sql_types::Text;
    match conn {
        DbConnection::Postgresql(pg) => {
            diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind::<Text, _>(format!("valet.jobs/{tenant}"))
                .execute(pg)?;
        }
        DbConnection::Sqlite(_) => write_first(conn)?,
    }
    Ok(())
}

/// On SQLite, makes the transaction a writer from its first statement: one that
/// reads and then writes fails at once (SQLITE_BUSY, "database is locked") when
/// another connection wrote in between, while a first write waits its turn.
fn write_first(conn: &mut DbConnection) -> Result<(), StoreError> {
    if let DbConnection::Sqlite(sqlite) = conn {
        diesel::sql_query("UPDATE jobs SET state = state WHERE 0").execute(sqlite)?;
    }
    Ok(())
}

/// The unfinished job of a file, if it has one.
fn unfinished_job_of(conn: &mut DbConnection, file: &str) -> Result<Option<String>, StoreError> {
    Ok(jobs::table
        .filter(jobs::file_id.eq(file))
        .filter(jobs::state.eq_any(UNFINISHED))
        .select(jobs::id)
        .first(conn)
        .optional()?)
}

/// A new job writes over whatever a finished move left on its target: that
/// object is live again, so no sweep may delete it.
fn keep_moved_source(conn: &mut DbConnection, file: &str, target: &str) -> Result<(), StoreError> {
    diesel::update(
        jobs::table
            .filter(jobs::file_id.eq(file))
            .filter(jobs::source_backend.eq(target))
            .filter(jobs::source_delete_after.is_not_null()),
    )
    .set(jobs::source_delete_after.eq(None::<NaiveDateTime>))
    .execute(conn)?;
    Ok(())
}

fn insert_job(conn: &mut DbConnection, job: &Job) -> Result<(), StoreError> {
    diesel::insert_into(jobs::table)
        .values(JobRow::from_job(job))
        .execute(conn)?;
    keep_moved_source(conn, &job.file_id.to_string(), &job.target_backend)?;
    append_log(
        conn,
        &job.id.to_string(),
        job.created_at,
        &format!(
            "created: {} of file {} ({} bytes) from {} to {}",
            job.kind, job.file_id, job.bytes_total, job.source_backend, job.target_backend
        ),
    )
}

/// The job a file would get: `kind` of its object to `target`, created now.
pub fn job_for(
    file: &File,
    kind: JobKind,
    target: &str,
    group: Option<JobGroupId>,
    now: DateTime<Utc>,
) -> Job {
    Job {
        id: JobId::new(),
        group_id: group,
        tenant_id: file.tenant_id.clone(),
        kind,
        file_id: file.id,
        source_backend: file.backend.clone(),
        target_backend: target.to_owned(),
        state: JobState::Created,
        bytes_total: file.size,
        bytes_done: 0,
        attempts: 0,
        cancel_requested: false,
        created_at: now,
        updated_at: now,
        error: None,
        object_key: file.object_key.clone(),
    }
}

fn load_file(conn: &mut DbConnection, id: &str) -> Result<Option<File>, StoreError> {
    files::table
        .filter(files::id.eq(id))
        .select(FileRow::as_select())
        .first(conn)
        .optional()?
        .map(|row| row.into_file().map_err(StoreError::from))
        .transpose()
}

impl MetadataStore {
    /// Records the event of a job that reached a final state; the job id keys
    /// the relay's ordering of the job's own events.
    fn record_job_event(
        &self,
        conn: &mut DbConnection,
        job: &Job,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let event =
            job_event(job, &self.events, at).map_err(|e| StoreError::Internal(e.to_string()))?;
        append_outbox(
            conn,
            &event,
            OutboxOrder::key(job.id),
            &job.tenant_id,
            None,
            at,
        )
    }

    /// Records a success: the replica (copy) or the switch of backend (move), the
    /// events, the job's final state. `None` when the file is no longer there to change.
    fn record_success(
        &self,
        conn: &mut DbConnection,
        job: &Job,
        source_grace: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<File>, StoreError> {
        let file_id = job.file_id.to_string();
        let Some(mut file) = load_file(conn, &file_id)? else {
            return Ok(None);
        };
        if file.status != FileStatus::Uploaded || file.backend != job.source_backend {
            return Ok(None);
        }
        job.apply_success(&mut file);
        let source_delete_after =
            (job.kind == JobKind::Move).then(|| (now + source_grace).naive_utc());
        let changed = diesel::update(
            files::table
                .filter(files::id.eq(&file_id))
                .filter(files::status.eq(FileStatus::Uploaded.as_str()))
                .filter(files::backend.eq(&job.source_backend)),
        )
        .set((
            files::backend.eq(&file.backend),
            files::replicas.eq(encode_replicas(&file.replicas)),
            files::updated_at.eq(now.naive_utc()),
        ))
        .execute(conn)?;
        if changed == 0 {
            return Ok(None);
        }
        if job.kind == JobKind::Move {
            let event = file_moved_event(&file, &job.source_backend, job.id, &self.events, now)
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            append_outbox(
                conn,
                &event,
                OutboxOrder::key(&file_id),
                &file.tenant_id,
                file.device_id.as_ref(),
                now,
            )?;
        }
        diesel::update(jobs::table.filter(jobs::id.eq(job.id.to_string())))
            .set(jobs::source_delete_after.eq(source_delete_after))
            .execute(conn)?;
        Ok(Some(file))
    }

    /// Moves a running job held by `owner` to `state` (final, or `created` to
    /// wait for a retry at `run_after`), with `error`; `None` if not held.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        conn: &mut DbConnection,
        id: &str,
        owner: &str,
        state: JobState,
        error: Option<&str>,
        run_after: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<Job>, StoreError> {
        let mut update = diesel::update(
            jobs::table
                .filter(jobs::id.eq(id))
                .filter(jobs::lease_owner.eq(owner))
                .filter(jobs::state.eq_any(RUNNING)),
        )
        .into_boxed();
        if state == JobState::Succeeded {
            update = update.filter(jobs::cancel_requested.eq(false));
        }
        let changed = update
            .set((
                jobs::state.eq(state.as_str()),
                jobs::error.eq(error),
                jobs::lease_owner.eq(None::<String>),
                jobs::lease_until.eq(None::<NaiveDateTime>),
                jobs::run_after.eq(run_after.unwrap_or(now).naive_utc()),
                jobs::updated_at.eq(now.naive_utc()),
            ))
            .execute(conn)?;
        if changed == 0 {
            return Ok(None);
        }
        load(conn, id)
    }
}

impl Handler<CreateJob> for MetadataStore {
    type Result = Result<NewJob, StoreError>;
    fn handle(&mut self, msg: CreateJob, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let job = msg.0;
        let created = conn.transaction::<_, StoreError, _>(|conn| {
            lock_job_creation(conn, &job.tenant_id)?;
            if let Some(busy) = unfinished_job_of(conn, &job.file_id.to_string())? {
                let busy = busy
                    .parse()
                    .map_err(|_| StoreError::Internal(format!("corrupt job id {busy}")))?;
                return Ok(NewJob::Busy(busy));
            }
            insert_job(conn, &job)?;
            Ok(NewJob::Created(job))
        })?;
        if let NewJob::Created(job) = &created {
            metrics::record_job(job.kind.as_str(), JobState::Created.as_str());
        }
        Ok(created)
    }
}

impl Handler<CreateJobGroup> for MetadataStore {
    type Result = Result<NewGroup, StoreError>;
    fn handle(&mut self, msg: CreateJobGroup, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let result = conn.transaction::<_, StoreError, _>(|conn| {
            lock_job_creation(conn, &msg.tenant)?;
            let busy = jobs::table
                .filter(jobs::state.eq_any(UNFINISHED))
                .select(jobs::file_id);
            let mut query = files::table
                .filter(files::tenant_id.eq(msg.tenant.as_str()))
                .filter(files::status.eq(FileStatus::Uploaded.as_str()))
                .filter(files::backend.ne(&msg.target))
                .filter(files::id.ne_all(busy))
                .order(files::id.asc())
                .limit(msg.max_files + 1)
                .select(FileRow::as_select())
                .into_boxed();
            if let Some(backend) = &msg.selector.backend {
                query = query.filter(files::backend.eq(backend));
            }
            if let Some(device) = &msg.selector.device {
                query = query.filter(files::device_id.eq(device.as_str()));
            }
            if let Some(before) = msg.selector.created_before {
                query = query.filter(files::created_at.lt(before.naive_utc()));
            }
            let rows: Vec<FileRow> = query.load(conn)?;
            if rows.len() as i64 > msg.max_files {
                return Ok(NewGroup::TooMany);
            }
            let now = now_micros();
            let mut created = Vec::with_capacity(rows.len());
            for row in rows {
                let file = row.into_file()?;
                let job = job_for(&file, msg.kind, &msg.target, Some(msg.group), now);
                insert_job(conn, &job)?;
                created.push(job);
            }
            Ok(NewGroup::Created(created))
        })?;
        if let NewGroup::Created(jobs) = &result {
            for job in jobs {
                metrics::record_job(job.kind.as_str(), JobState::Created.as_str());
            }
        }
        Ok(result)
    }
}

impl Handler<GetJob> for MetadataStore {
    type Result = Result<Option<Job>, StoreError>;
    fn handle(&mut self, msg: GetJob, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        load(&mut conn, &msg.0.to_string())
    }
}

impl Handler<ListJobs> for MetadataStore {
    type Result = Result<Vec<Job>, StoreError>;
    fn handle(&mut self, msg: ListJobs, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let mut query = jobs::table
            .filter(jobs::tenant_id.eq(msg.tenant.as_str()))
            .select(JobRow::as_select())
            .order(jobs::id.desc())
            .limit(msg.limit)
            .into_boxed();
        if let Some(state) = msg.state {
            query = query.filter(jobs::state.eq(state.as_str()));
        }
        if let Some(group) = msg.group {
            query = query.filter(jobs::group_id.eq(group.to_string()));
        }
        if let Some(before) = msg.before {
            query = query.filter(jobs::id.lt(before.to_string()));
        }
        let rows: Vec<JobRow> = query.load(&mut *conn)?;
        rows.into_iter().map(JobRow::into_job).collect()
    }
}

impl Handler<GetJobLog> for MetadataStore {
    type Result = Result<Vec<(DateTime<Utc>, String)>, StoreError>;
    fn handle(&mut self, msg: GetJobLog, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let lines: Vec<(NaiveDateTime, String)> = job_log::table
            .filter(job_log::job_id.eq(msg.0.to_string()))
            .order(job_log::id.asc())
            .select((job_log::at, job_log::line))
            .load(&mut *conn)?;
        Ok(lines
            .into_iter()
            .map(|(at, line)| (utc(at), line))
            .collect())
    }
}

impl Handler<AppendJobLog> for MetadataStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, msg: AppendJobLog, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        append_log(&mut conn, &msg.id.to_string(), now_micros(), &msg.line)
    }
}

impl Handler<CancelJob> for MetadataStore {
    type Result = Result<Cancel, StoreError>;
    fn handle(&mut self, msg: CancelJob, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let id = msg.0.to_string();
        let cancel = conn.transaction::<_, StoreError, _>(|conn| {
            let now = now_micros();
            // A waiting job ends here; the guard keeps a worker's claim racing
            // this from both running and cancelling it.
            let ended = diesel::update(
                jobs::table
                    .filter(jobs::id.eq(&id))
                    .filter(jobs::state.eq(JobState::Created.as_str())),
            )
            .set((
                jobs::state.eq(JobState::Cancelled.as_str()),
                jobs::cancel_requested.eq(true),
                jobs::updated_at.eq(now.naive_utc()),
            ))
            .execute(conn)?;
            if ended > 0 {
                let Some(job) = load(conn, &id)? else {
                    return Ok(Cancel::NotFound);
                };
                append_log(conn, &id, now, "cancelled before it ran")?;
                self.record_job_event(conn, &job, now)?;
                return Ok(Cancel::Cancelled(job));
            }
            let flagged = diesel::update(
                jobs::table
                    .filter(jobs::id.eq(&id))
                    .filter(jobs::state.eq_any(RUNNING))
                    .filter(jobs::cancel_requested.eq(false)),
            )
            .set((
                jobs::cancel_requested.eq(true),
                jobs::updated_at.eq(now.naive_utc()),
            ))
            .execute(conn)?;
            if flagged > 0 {
                append_log(conn, &id, now, "cancel requested")?;
            }
            Ok(match load(conn, &id)? {
                None => Cancel::NotFound,
                Some(job) if job.state.is_running() => Cancel::Requested(job),
                Some(job) if job.state == JobState::Cancelled => Cancel::Unchanged(job),
                Some(job) => Cancel::Finished(job),
            })
        })?;
        if let Cancel::Cancelled(job) = &cancel {
            metrics::record_job(job.kind.as_str(), JobState::Cancelled.as_str());
        }
        Ok(cancel)
    }
}

impl Handler<ClaimJobs> for MetadataStore {
    type Result = Result<Vec<Job>, StoreError>;
    fn handle(&mut self, msg: ClaimJobs, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let conn: &mut DbConnection = &mut conn;
        let claimed = conn.transaction::<_, StoreError, _>(|conn| {
            write_first(conn)?;
            let now = now_micros();
            let claimable = jobs::table
                .filter(
                    jobs::state
                        .eq(JobState::Created.as_str())
                        .and(jobs::run_after.le(now.naive_utc()))
                        .or(jobs::state
                            .eq_any(RUNNING)
                            .and(jobs::lease_until.lt(now.naive_utc()))),
                )
                .order(jobs::run_after.asc())
                .limit(msg.limit)
                .select((jobs::id, jobs::lease_owner));
            // On Postgres the chosen rows are locked and rows another instance is
            // claiming are skipped, so concurrent workers get disjoint jobs.
            let chosen: Vec<(String, Option<String>)> = match conn {
                DbConnection::Postgresql(pg) => claimable.for_update().skip_locked().load(pg)?,
                DbConnection::Sqlite(sqlite) => claimable.load(sqlite)?,
            };
            let until = (now + msg.lease).naive_utc();
            let mut claimed = Vec::with_capacity(chosen.len());
            for (id, previous) in chosen {
                diesel::update(jobs::table.filter(jobs::id.eq(&id)))
                    .set((
                        jobs::state.eq(JobState::Scheduled.as_str()),
                        jobs::lease_owner.eq(&msg.owner),
                        jobs::lease_until.eq(until),
                        jobs::attempts.eq(jobs::attempts + 1),
                        jobs::bytes_done.eq(0),
                        jobs::updated_at.eq(now.naive_utc()),
                    ))
                    .execute(conn)?;
                let Some(job) = load(conn, &id)? else {
                    continue;
                };
                let line = match previous {
                    Some(lost) => format!(
                        "the lease of {lost} ran out; claimed by {} (attempt {})",
                        msg.owner, job.attempts
                    ),
                    None => format!("claimed by {} (attempt {})", msg.owner, job.attempts),
                };
                append_log(conn, &id, now, &line)?;
                claimed.push(job);
            }
            Ok(claimed)
        })?;
        for job in &claimed {
            metrics::record_job(job.kind.as_str(), JobState::Scheduled.as_str());
        }
        Ok(claimed)
    }
}

impl Handler<RenewJob> for MetadataStore {
    type Result = Result<Renewal, StoreError>;
    fn handle(&mut self, msg: RenewJob, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let now = now_micros();
        let id = msg.id.to_string();
        let held = jobs::table
            .filter(jobs::id.eq(&id))
            .filter(jobs::lease_owner.eq(&msg.owner))
            .filter(jobs::state.eq_any(RUNNING));
        let until = (now + msg.lease).naive_utc();
        let done = i64::try_from(msg.bytes_done).unwrap_or(i64::MAX);
        let changed = match msg.state {
            Some(state) => diesel::update(held)
                .set((
                    jobs::state.eq(state.as_str()),
                    jobs::bytes_done.eq(done),
                    jobs::lease_until.eq(until),
                    jobs::updated_at.eq(now.naive_utc()),
                ))
                .execute(&mut *conn)?,
            None => diesel::update(held)
                .set((
                    jobs::bytes_done.eq(done),
                    jobs::lease_until.eq(until),
                    jobs::updated_at.eq(now.naive_utc()),
                ))
                .execute(&mut *conn)?,
        };
        if changed == 0 {
            return Ok(Renewal::Lost);
        }
        let (kind, cancel_requested): (String, bool) = jobs::table
            .filter(jobs::id.eq(&id))
            .select((jobs::kind, jobs::cancel_requested))
            .first(&mut *conn)?;
        if let (Some(state), Ok(kind)) = (msg.state, kind.parse::<JobKind>()) {
            metrics::record_job(kind.as_str(), state.as_str());
        }
        Ok(Renewal::Held { cancel_requested })
    }
}

impl Handler<EndAttempt> for MetadataStore {
    type Result = Result<Ended, StoreError>;
    fn handle(&mut self, msg: EndAttempt, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let id = msg.id.to_string();
        let ended = conn.transaction::<_, StoreError, _>(|conn| {
            let now = now_micros();
            let owner = msg.owner.as_str();
            match &msg.attempt {
                Attempt::Succeeded { source_grace } => {
                    let Some(job) =
                        self.settle(conn, &id, owner, JobState::Succeeded, None, None, now)?
                    else {
                        let held = load(conn, &id)?
                            .is_some_and(|job| job.state.is_running() && job.cancel_requested);
                        return Ok(if held {
                            Ended::CancelRequested
                        } else {
                            Ended::Lost
                        });
                    };
                    match self.record_success(conn, &job, *source_grace, now)? {
                        Some(file) => {
                            diesel::update(jobs::table.filter(jobs::id.eq(&id)))
                                .set(jobs::bytes_done.eq(jobs::bytes_total))
                                .execute(conn)?;
                            let job = load(conn, &id)?.unwrap_or(job);
                            let line = match job.kind {
                                JobKind::Copy => format!(
                                    "succeeded: {} is now a replica of the file",
                                    job.target_backend
                                ),
                                JobKind::Move => format!(
                                    "succeeded: the file is now on {}; its source object on {} \
                                     is removed after the grace period",
                                    job.target_backend, job.source_backend
                                ),
                            };
                            append_log(conn, &id, now, &line)?;
                            self.record_job_event(conn, &job, now)?;
                            Ok(Ended::Recorded {
                                job,
                                file: Some(Box::new(file)),
                            })
                        }
                        None => {
                            let error = "the file was deleted or changed backend during the copy";
                            diesel::update(jobs::table.filter(jobs::id.eq(&id)))
                                .set((
                                    jobs::state.eq(JobState::Failed.as_str()),
                                    jobs::error.eq(error),
                                ))
                                .execute(conn)?;
                            append_log(conn, &id, now, &format!("failed: {error}"))?;
                            let job = load(conn, &id)?.unwrap_or(job);
                            self.record_job_event(conn, &job, now)?;
                            Ok(Ended::FileGone(job))
                        }
                    }
                }
                Attempt::Failed { error, retry_at } => {
                    let (state, line) = match retry_at {
                        Some(at) => (
                            JobState::Created,
                            format!(
                                "attempt failed: {error}; retrying at {}",
                                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                            ),
                        ),
                        None => (JobState::Failed, format!("failed: {error}")),
                    };
                    let Some(job) =
                        self.settle(conn, &id, owner, state, Some(error), *retry_at, now)?
                    else {
                        return Ok(Ended::Lost);
                    };
                    append_log(conn, &id, now, &line)?;
                    if state.is_final() {
                        self.record_job_event(conn, &job, now)?;
                    }
                    Ok(Ended::Recorded { job, file: None })
                }
                Attempt::Cancelled => {
                    let Some(job) =
                        self.settle(conn, &id, owner, JobState::Cancelled, None, None, now)?
                    else {
                        return Ok(Ended::Lost);
                    };
                    append_log(
                        conn,
                        &id,
                        now,
                        "cancelled: the copy stopped and the target was cleaned",
                    )?;
                    self.record_job_event(conn, &job, now)?;
                    Ok(Ended::Recorded { job, file: None })
                }
            }
        })?;
        match &ended {
            Ended::Recorded { job, .. } | Ended::FileGone(job) => {
                metrics::record_job(job.kind.as_str(), job.state.as_str());
            }
            Ended::CancelRequested | Ended::Lost => {}
        }
        Ok(ended)
    }
}

impl Handler<ClaimMovedSources> for MetadataStore {
    type Result = Result<Vec<SourceToDelete>, StoreError>;
    fn handle(&mut self, msg: ClaimMovedSources, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        let conn: &mut DbConnection = &mut conn;
        conn.transaction::<_, StoreError, _>(|conn| {
            write_first(conn)?;
            let now = now_micros();
            let due = jobs::table
                .filter(jobs::source_delete_after.lt(now.naive_utc()))
                .order(jobs::source_delete_after.asc())
                .limit(msg.limit)
                .select((
                    jobs::id,
                    jobs::file_id,
                    jobs::source_backend,
                    jobs::object_key,
                ));
            let rows: Vec<(String, String, String, String)> = match conn {
                DbConnection::Postgresql(pg) => due.for_update().skip_locked().load(pg)?,
                DbConnection::Sqlite(sqlite) => due.load(sqlite)?,
            };
            let until = (now + msg.lease).naive_utc();
            let mut sources = Vec::with_capacity(rows.len());
            for (id, file_id, backend, key) in rows {
                diesel::update(jobs::table.filter(jobs::id.eq(&id)))
                    .set(jobs::source_delete_after.eq(until))
                    .execute(conn)?;
                let in_use = match load_file(conn, &file_id)? {
                    Some(file) if file.status != FileStatus::Deleted => {
                        file.backend == backend
                            || file.replicas.iter().any(|r| r.backend == backend)
                    }
                    _ => false,
                };
                let bad =
                    |what: &str| StoreError::Internal(format!("corrupt job row {id}: {what}"));
                sources.push(SourceToDelete {
                    job: id.parse().map_err(|_| bad("id"))?,
                    file: file_id.parse().map_err(|_| bad("file_id"))?,
                    backend,
                    key: ObjectKey::parse(&key).map_err(|_| bad("object_key"))?,
                    in_use,
                });
            }
            Ok(sources)
        })
    }
}

impl Handler<MovedSourceSettled> for MetadataStore {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, msg: MovedSourceSettled, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        diesel::update(jobs::table.filter(jobs::id.eq(msg.0.to_string())))
            .set(jobs::source_delete_after.eq(None::<NaiveDateTime>))
            .execute(&mut *conn)?;
        Ok(())
    }
}

impl Handler<CountJobs> for MetadataStore {
    type Result = Result<Vec<(JobKind, JobState, i64)>, StoreError>;
    fn handle(&mut self, _: CountJobs, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.conn()?;
        // Unfinished jobs only: the partial indexes keep this cheap however many
        // finished jobs are kept.
        let counts: Vec<(String, String, i64)> = jobs::table
            .filter(jobs::state.eq_any(UNFINISHED))
            .group_by((jobs::kind, jobs::state))
            .select((jobs::kind, jobs::state, diesel::dsl::count_star()))
            .load(&mut *conn)?;
        Ok(counts
            .into_iter()
            .filter_map(|(kind, state, n)| Some((kind.parse().ok()?, state.parse().ok()?, n)))
            .collect())
    }
}

impl Handler<PurgeJobs> for MetadataStore {
    type Result = Result<usize, StoreError>;
    fn handle(&mut self, msg: PurgeJobs, _: &mut Self::Context) -> Self::Result {
        const FINISHED: [&str; 3] = [
            JobState::Succeeded.as_str(),
            JobState::Failed.as_str(),
            JobState::Cancelled.as_str(),
        ];
        let mut conn = self.conn()?;
        conn.transaction::<_, StoreError, _>(|conn| {
            write_first(conn)?;
            let ids: Vec<String> = jobs::table
                .filter(jobs::state.eq_any(FINISHED))
                .filter(jobs::updated_at.lt(msg.cutoff.naive_utc()))
                .filter(jobs::source_delete_after.is_null())
                .limit(msg.limit)
                .select(jobs::id)
                .load(conn)?;
            if ids.is_empty() {
                return Ok(0);
            }
            diesel::delete(job_log::table.filter(job_log::job_id.eq_any(&ids))).execute(conn)?;
            Ok(diesel::delete(jobs::table.filter(jobs::id.eq_any(&ids))).execute(conn)?)
        })
    }
}
