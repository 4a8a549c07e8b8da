//! Group commit for new file records: inserts that arrive while a commit is in
//! flight are written together in the next transaction, so a burst of uploads
//! costs one commit (one WAL flush) instead of one each. Every caller is answered
//! only after the transaction holding its row has committed, and gets its own
//! result: when a group fails for a reason other than an outage, its rows are
//! retried one by one so one bad row cannot fail its neighbours.

use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};

use diesel::prelude::*;
use tokio::sync::oneshot;

use super::db::{DbConnection, DbPool};
use super::rows::FileRow;
use super::schema::files;
use super::{connection, Schema, StoreError};
use crate::domain::File;
use crate::telemetry::metrics;

/// Most rows one transaction takes (well under both databases' bind-parameter limits).
const MAX_GROUP: usize = 256;

struct Job {
    file: File,
    reply: oneshot::Sender<Result<File, StoreError>>,
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
        for n in 0..writers.max(1) {
            let (pool, schema, jobs) = (pool.clone(), schema.clone(), jobs.clone());
            std::thread::Builder::new()
                .name(format!("valet-writer-{n}"))
                .spawn(move || write_groups(&pool, &schema, &jobs))?;
        }
        Ok(Self { queue })
    }

    /// Records a new pending file; answers once its row is committed.
    pub async fn insert(&self, file: File) -> Result<File, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { file, reply })
            .map_err(|_| StoreError::Unavailable("the metadata writers have stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the metadata writer stopped".into()))?
    }
}

/// One writer: takes what is queued (waiting only for the first), commits it, answers.
fn write_groups(pool: &DbPool, schema: &Schema, jobs: &Mutex<Receiver<Job>>) {
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
        commit(pool, schema, group);
    }
}

fn commit(pool: &DbPool, schema: &Schema, group: Vec<Job>) {
    let mut conn = match connection(pool, schema) {
        Ok(conn) => conn,
        Err(e) => return answer_all(group, &e),
    };
    let rows: Vec<FileRow> = group.iter().map(|j| FileRow::from_file(&j.file)).collect();
    metrics::record_group_commit(rows.len());
    match conn.transaction(|c| insert_rows(c, rows)) {
        Ok(()) => {
            for job in group {
                let _ = job.reply.send(Ok(job.file));
            }
        }
        Err(e) if group.len() == 1 || matches!(e, StoreError::Unavailable(_)) => {
            answer_all(group, &e)
        }
        // Something in the group was refused: each row alone, each caller its answer.
        Err(_) => {
            for job in group {
                let row = FileRow::from_file(&job.file);
                let result = insert_rows(&mut conn, vec![row]).map(|()| job.file);
                let _ = job.reply.send(result);
            }
        }
    }
}

fn answer_all(group: Vec<Job>, error: &StoreError) {
    for job in group {
        let _ = job.reply.send(Err(error.clone()));
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
