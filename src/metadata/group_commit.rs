//! Group commit for new file records: inserts that arrive while a commit is in
//! flight are written together in the next transaction, so a burst of uploads
//! costs one commit (one WAL flush) instead of one each. Every caller is answered
//! only after the transaction holding its row has committed, and gets its own
//! result: when a group fails for a reason other than an outage, its rows are
//! retried one by one so one bad row cannot fail its neighbours.

use std::collections::{BTreeSet, HashSet};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};

use diesel::prelude::*;
use tokio::sync::oneshot;

use super::db::{DbConnection, DbPool};
use super::rows::FileRow;
use super::schema::{batches, files};
use super::usage::{self, QuotaLimits};
use super::{connection, retrying, Schema, StoreError};
use crate::domain::{BatchId, BatchState, File};
use crate::telemetry::metrics;

/// Most rows one transaction takes (well under both databases' bind-parameter limits).
const MAX_GROUP: usize = 256;

/// Most writer threads (each keeps a shard of every usage counter it touches).
const MAX_WRITERS: usize = 16;

struct Job {
    file: File,
    limits: QuotaLimits,
    reply: oneshot::Sender<Result<File, InsertError>>,
}

/// Why a new record was not inserted.
#[derive(Debug, Clone)]
pub enum InsertError {
    /// The batch it was to join is no longer open (checked in the inserting
    /// transaction, so a concurrent commit either sees the file or refuses it).
    BatchClosed,
    /// Anything else.
    Store(StoreError),
}

impl From<StoreError> for InsertError {
    fn from(e: StoreError) -> Self {
        InsertError::Store(e)
    }
}

/// Why one job of a group was refused while its neighbours were inserted.
enum Refusal {
    Quota(usage::QuotaLimit),
    BatchClosed,
}

/// The writer threads' queue of new records; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    queue: Sender<Job>,
}

impl GroupCommit {
    /// Starts `writers` threads inserting through `pool`. They stop when the last
    /// handle is dropped.
    pub fn start(pool: DbPool, schema: Arc<Schema>, writers: usize) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel();
        let jobs = Arc::new(Mutex::new(jobs));
        for n in 0..writers.clamp(1, MAX_WRITERS) {
            let (pool, schema, jobs) = (pool.clone(), schema.clone(), jobs.clone());
            // Each writer counts its reservations in its own counter shard.
            let shard = i16::try_from(n).unwrap_or(i16::MAX);
            std::thread::Builder::new()
                .name(format!("valet-writer-{n}"))
                .spawn(move || write_groups(&pool, &schema, shard, &jobs))?;
        }
        Ok(Self { queue })
    }

    /// Records a new pending file (joining its batch, if it names one), reserving
    /// its room within `limits`; answers once its row is committed (or with the
    /// quota it would break).
    pub async fn insert(&self, file: File, limits: QuotaLimits) -> Result<File, InsertError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job {
                file,
                limits,
                reply,
            })
            .map_err(|_| StoreError::Unavailable("the metadata writers have stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the metadata writer stopped".into()))?
    }
}

/// One writer: takes what is queued (waiting only for the first), commits it, answers.
fn write_groups(pool: &DbPool, schema: &Schema, shard: i16, jobs: &Mutex<Receiver<Job>>) {
    loop {
        let group = {
            let jobs = jobs.lock().unwrap_or_else(PoisonError::into_inner);
            let Ok(first) = jobs.recv() else { return };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            group
        };
        commit(pool, schema, shard, group);
    }
}

fn commit(pool: &DbPool, schema: &Schema, shard: i16, group: Vec<Job>) {
    metrics::record_group_commit(group.len());
    // Retried once when the server had dropped the connection (a failover): were
    // the lost commit to have landed after all, the rows' ids refuse a second
    // insert, so nothing is recorded twice.
    let result = retrying(pool, schema, |c| {
        c.transaction(|c| insert_group(c, shard, &group))
    });
    match result {
        Ok(outcomes) => answer(group, outcomes),
        Err(e) if group.len() == 1 || matches!(e, StoreError::Unavailable(_)) => {
            answer_all(group, &e)
        }
        // Something in the group was refused: each row alone, each caller its answer.
        Err(_) => {
            let mut conn = match connection(pool, schema) {
                Ok(conn) => conn,
                Err(e) => return answer_all(group, &e),
            };
            for job in group {
                let result =
                    conn.transaction(|c| insert_group(c, shard, std::slice::from_ref(&job)));
                match result {
                    Ok(outcomes) => answer(vec![job], outcomes),
                    Err(e) => answer_all(vec![job], &e),
                }
            }
        }
    }
}

/// Reserves the group's room and inserts the rows that fit (and whose batch, if
/// any, is open), in one transaction; per job, `None` when inserted or why not.
fn insert_group(
    conn: &mut DbConnection,
    shard: i16,
    group: &[Job],
) -> Result<Vec<Option<Refusal>>, StoreError> {
    let closed = closed_batches(conn, group)?;
    let joins = |job: &Job| job.file.batch_id.is_none_or(|b| !closed.contains(&b));
    let admitted: Vec<&Job> = group.iter().filter(|job| joins(job)).collect();
    let files: Vec<(&File, QuotaLimits)> = admitted.iter().map(|j| (&j.file, j.limits)).collect();
    let reservation = usage::reserve(conn, &files)?;
    let rows: Vec<FileRow> = admitted
        .iter()
        .zip(&reservation.outcomes)
        .filter(|(_, outcome)| outcome.is_ok())
        .map(|(job, _)| FileRow::from_file(&job.file))
        .collect();
    if !rows.is_empty() {
        insert_rows(conn, rows)?;
        reservation.record(conn, shard)?;
    }
    let mut reserved = reservation.outcomes.into_iter();
    let mut outcomes = Vec::with_capacity(group.len());
    for job in group {
        if !joins(job) {
            outcomes.push(Some(Refusal::BatchClosed));
            continue;
        }
        match reserved.next() {
            Some(Ok(())) => outcomes.push(None),
            Some(Err(limit)) => outcomes.push(Some(Refusal::Quota(limit))),
            None => {
                return Err(StoreError::Internal(
                    "the reservation answered fewer files than it was given".into(),
                ))
            }
        }
    }
    Ok(outcomes)
}

/// The batches named by the group that are not open. On PostgreSQL their rows are
/// share-locked until the group commits, so a commit of one of them (which
/// updates the row first) waits for the new file and then sees it, or goes first
/// and the file is refused; SQLite runs one writer at a time.
fn closed_batches(conn: &mut DbConnection, group: &[Job]) -> Result<HashSet<BatchId>, StoreError> {
    let named: Vec<String> = group
        .iter()
        .filter_map(|job| job.file.batch_id.map(|b| b.to_string()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if named.is_empty() {
        return Ok(HashSet::new());
    }
    let query = batches::table
        .filter(batches::id.eq_any(&named))
        .select((batches::id, batches::state));
    let found: Vec<(String, String)> = match conn {
        DbConnection::Postgresql(c) => query.for_share().load(c)?,
        DbConnection::Sqlite(c) => query.load(c)?,
    };
    let open: HashSet<&str> = found
        .iter()
        .filter(|(_, state)| state == BatchState::Open.as_str())
        .map(|(id, _)| id.as_str())
        .collect();
    Ok(named
        .iter()
        .filter(|id| !open.contains(id.as_str()))
        .filter_map(|id| id.parse().ok())
        .collect())
}

fn answer(group: Vec<Job>, outcomes: Vec<Option<Refusal>>) {
    for (job, refused) in group.into_iter().zip(outcomes) {
        let result = match refused {
            None => Ok(job.file),
            Some(Refusal::Quota(limit)) => Err(StoreError::QuotaExceeded(limit).into()),
            Some(Refusal::BatchClosed) => Err(InsertError::BatchClosed),
        };
        let _ = job.reply.send(result);
    }
}

fn answer_all(group: Vec<Job>, error: &StoreError) {
    for job in group {
        let _ = job.reply.send(Err(InsertError::Store(error.clone())));
    }
}

/// One multi-row `INSERT` (the multi-connection cannot batch: each backend does).
fn insert_rows(conn: &mut DbConnection, rows: Vec<FileRow>) -> Result<(), StoreError> {
    let insert = diesel::insert_into(files::table).values(rows);
    match conn {
        DbConnection::Postgresql(c) => insert.execute(c)?,
        DbConnection::Sqlite(c) => insert.execute(c)?,
    };
    Ok(())
}
