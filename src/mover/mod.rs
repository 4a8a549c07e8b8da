//! The `Mover` actor: works copy and move jobs, streaming each object from its
//! source backend to its target.
//!
//! Every `jobs.poll_interval_ms` it claims jobs (up to `jobs.concurrency` at once
//! per instance) with a lease, like the outbox relay and the reconciler: on
//! PostgreSQL `FOR UPDATE SKIP LOCKED`, so several instances never claim one job.
//! A running copy renews its lease about once a second, records its progress and
//! learns whether a cancel was asked for; a job whose instance died is claimed
//! again once its lease runs out and copied again from the start (the target is
//! only written when a copy is complete and verified, so a half-written target is
//! never visible). The bytes stream with bounded memory, and their SHA-256 is
//! computed on the way and compared with the file's declared hash before the job
//! succeeds. The mover runs on its own arbiter (thread), so hashing never holds
//! up the HTTP workers.
//!
//! It also removes the source objects of moves once their grace period is over.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use actix::{Actor, ActorFutureExt, Arbiter, AsyncContext, Context, WrapFuture};
use actix_web::web;
use chrono::Utc;
use futures_util::StreamExt;
use valet_backends::{ObjectWriter, WriteSpec};

use crate::domain::{File, FileStatus, Job, JobId, JobKind, JobState};
use crate::metadata::{
    AppendJobLog, Attempt, ClaimJobs, ClaimMovedSources, CountJobs, EndAttempt, Ended, GetFile,
    MovedSourceSettled, PurgeJobs, RenewJob, Renewal, StoreError,
};
use crate::service::FileService;
use crate::storage::StorageError;
use crate::telemetry::metrics;

/// How often a running copy renews its lease and looks for a cancel, at most.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often the job gauges are refreshed and moved sources swept.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(2);
/// How often finished jobs past `jobs.keep_finished_days` are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);
/// Moved sources removed per sweep.
const SWEEP_BATCH: i64 = 100;

/// Claims and works jobs.
pub struct Mover {
    service: web::Data<FileService>,
    owner: String,
    running: HashSet<JobId>,
    claiming: bool,
    housekeeping: Option<Instant>,
    purged: Option<Instant>,
}

impl Mover {
    /// Starts a mover on its own arbiter.
    pub fn start(service: web::Data<FileService>) {
        let owner = worker_name();
        Mover::start_in_arbiter(&Arbiter::new().handle(), move |_| Mover {
            service,
            owner,
            running: HashSet::new(),
            claiming: false,
            housekeeping: None,
            purged: None,
        });
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let jobs = &self.service.settings().jobs;
        let free = (jobs.concurrency as usize).saturating_sub(self.running.len());
        if !self.claiming && free > 0 {
            self.claiming = true;
            let claim = ClaimJobs {
                owner: self.owner.clone(),
                limit: free as i64,
                lease: jobs.lease(),
            };
            let store = self.service.store.clone();
            ctx.spawn(async move { store.send(claim).await }.into_actor(self).map(
                |claimed, act, ctx| {
                    act.claiming = false;
                    match claimed {
                        Ok(Ok(jobs)) => jobs.into_iter().for_each(|job| act.run(job, ctx)),
                        Ok(Err(e)) => tracing::warn!(error = %e, "cannot claim jobs"),
                        Err(e) => tracing::warn!(error = %e, "cannot claim jobs"),
                    }
                },
            ));
        }
        if self
            .housekeeping
            .is_none_or(|last| last.elapsed() >= HOUSEKEEPING_EVERY)
        {
            self.housekeeping = Some(Instant::now());
            let purge = self.purged.is_none_or(|last| last.elapsed() >= PURGE_EVERY);
            if purge {
                self.purged = Some(Instant::now());
            }
            let service = self.service.clone();
            ctx.spawn(async move { housekeeping(&service, purge).await }.into_actor(self));
        }
    }

    fn run(&mut self, job: Job, ctx: &mut Context<Self>) {
        let id = job.id;
        self.running.insert(id);
        let worker = Worker {
            service: self.service.clone(),
            owner: self.owner.clone(),
        };
        ctx.spawn(
            async move { worker.work(job).await }
                .into_actor(self)
                .map(move |_, act, _| {
                    act.running.remove(&id);
                }),
        );
    }
}

impl Actor for Mover {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let interval = self.service.settings().jobs.poll_interval();
        self.tick(ctx);
        ctx.run_interval(interval, |act, ctx| act.tick(ctx));
    }
}

/// `<host>/<random>`: names this instance's worker in leases and job logs.
fn worker_name() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}/{}", &suffix[..8])
}

/// Why an attempt stopped early.
enum Stop {
    /// Something failed; another attempt may succeed.
    Failed(String),
    /// Failed in a way no retry fixes.
    Fatal(String),
    /// A cancel was asked for.
    Cancelled,
    /// Another worker holds the job now: touch nothing.
    Lost,
}

impl From<StorageError> for Stop {
    fn from(e: StorageError) -> Self {
        Stop::Failed(e.to_string())
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Failed(e.to_string())
    }
}

/// One attempt at one job.
struct Worker {
    service: web::Data<FileService>,
    owner: String,
}

impl Worker {
    async fn work(&self, job: Job) {
        let outcome = self.attempt(&job).await;
        let jobs = &self.service.settings().jobs;
        let attempt = match outcome {
            Ok(file) => {
                // The cache shows the file as the success will record it before
                // the job can be seen succeeded: whoever waits for the job and then
                // reads the file sees the change (the copy on the target is
                // committed already, so a URL signed for it works). If the success
                // is not recorded after all, `end` drops the entry.
                let mut file = file;
                job.apply_success(&mut file);
                self.service.cache.put(&file).await;
                Attempt::Succeeded {
                    source_grace: chrono::Duration::seconds(
                        jobs.source_grace_secs
                            .unwrap_or(self.service.settings().uploads.download_url_ttl_secs)
                            as i64,
                    ),
                }
            }
            Err(Stop::Lost) => {
                tracing::warn!(job_id = %job.id, "lost the job's lease to another worker");
                return;
            }
            Err(Stop::Cancelled) => {
                self.clean_target(&job).await;
                Attempt::Cancelled
            }
            Err(Stop::Failed(error)) if job.attempts < jobs.max_attempts => {
                tracing::warn!(job_id = %job.id, attempt = job.attempts, %error, "job attempt failed; will retry");
                Attempt::Failed {
                    error,
                    retry_at: Some(Utc::now() + jobs.retry_delay(job.attempts)),
                }
            }
            Err(Stop::Failed(error) | Stop::Fatal(error)) => {
                tracing::error!(job_id = %job.id, %error, "job failed");
                self.clean_target(&job).await;
                Attempt::Failed {
                    error,
                    retry_at: None,
                }
            }
        };
        self.end(&job, attempt).await;
    }

    /// Records how the attempt ended, cleaning the target when the success
    /// cannot be recorded.
    async fn end(&self, job: &Job, attempt: Attempt) {
        let shown_in_advance = matches!(attempt, Attempt::Succeeded { .. });
        let message = EndAttempt {
            id: job.id,
            owner: self.owner.clone(),
            attempt,
        };
        let recorded = self.service.store.send(message).await;
        let happened = matches!(recorded, Ok(Ok(Ended::Recorded { file: Some(_), .. })));
        if shown_in_advance && !happened {
            // The success shown in advance (see `work`) did not happen.
            self.service.cache.remove(&job.file_id).await;
        }
        match recorded {
            Ok(Ok(Ended::Recorded { file, .. })) => {
                if let Some(file) = file {
                    self.service.cache.put(&file).await;
                }
            }
            Ok(Ok(Ended::FileGone(_))) => self.clean_target(job).await,
            Ok(Ok(Ended::CancelRequested)) => {
                self.clean_target(job).await;
                Box::pin(self.end(job, Attempt::Cancelled)).await;
            }
            Ok(Ok(Ended::Lost)) => {
                tracing::warn!(job_id = %job.id, "lost the job's lease before it ended");
            }
            // The lease runs out and another attempt starts over.
            Ok(Err(e)) => {
                tracing::error!(job_id = %job.id, error = %e, "cannot record the end of a job attempt")
            }
            Err(e) => {
                tracing::error!(job_id = %job.id, error = %e, "cannot record the end of a job attempt")
            }
        }
    }

    /// Copies and verifies; returns the file as it was before the copy.
    async fn attempt(&self, job: &Job) -> Result<File, Stop> {
        self.renew(job, 0, Some(JobState::Copying)).await?;
        let file = self.file(job).await?;
        self.log(
            job,
            format!(
                "copying {} bytes from {} to {}",
                job.bytes_total, job.source_backend, job.target_backend
            ),
        )
        .await;
        let started = Instant::now();
        let written = self.copy(job, &file).await?;
        let seconds = started.elapsed().as_secs_f64();
        metrics::record_job_copy(seconds, written as f64 / seconds.max(1e-6));
        self.log(
            job,
            format!("copied {written} bytes in {seconds:.1} s; SHA-256 matches the file's"),
        )
        .await;
        self.verify(job, &file).await?;
        Ok(file)
    }

    /// The file, if it can still be copied as the job says.
    async fn file(&self, job: &Job) -> Result<File, Stop> {
        let file = self
            .service
            .store
            .send(GetFile(job.file_id))
            .await
            .map_err(|e| Stop::Failed(e.to_string()))??;
        match file {
            Some(file) if file.status == FileStatus::Uploaded => {
                if file.backend != job.source_backend {
                    return Err(Stop::Fatal(format!(
                        "the file is now on {}, not {}",
                        file.backend, job.source_backend
                    )));
                }
                Ok(file)
            }
            Some(file) => Err(Stop::Fatal(format!("the file is {}", file.status))),
            None => Err(Stop::Fatal("the file no longer exists".into())),
        }
    }

    /// Streams the object to the target, hashing it on the way; the target is
    /// committed only when length and SHA-256 match the file's.
    async fn copy(&self, job: &Job, file: &File) -> Result<u64, Stop> {
        let storage = self.service.storage();
        let key = &job.object_key;
        let mut source = storage.read(&job.source_backend, key).await?;
        let spec = WriteSpec {
            size: file.size,
            sha256: file.sha256,
            content_type: file.content_type.clone(),
            chunk_size: usize::try_from(self.service.settings().jobs.chunk_size_bytes)
                .unwrap_or(usize::MAX),
        };
        let mut target = storage.write(&job.target_backend, key, &spec).await?;
        let mut written: u64 = 0;
        let mut renewed = Instant::now();
        let streamed: Result<(), Stop> = async {
            while let Some(chunk) = source.next().await {
                let chunk = chunk.map_err(|e| Stop::Failed(format!("reading the source: {e}")))?;
                written += chunk.len() as u64;
                if written > file.size {
                    return Err(Stop::Failed(format!(
                        "the source object is longer than the file's {} bytes",
                        file.size
                    )));
                }
                let len = chunk.len() as u64;
                target
                    .write(chunk)
                    .await
                    .map_err(|e| Stop::Failed(format!("writing to the target: {e}")))?;
                metrics::record_job_bytes(job.kind.as_str(), len);
                if renewed.elapsed() >= RENEW_EVERY {
                    renewed = Instant::now();
                    self.renew(job, written, None).await?;
                }
            }
            if written != file.size {
                return Err(Stop::Failed(format!(
                    "the source object has {written} bytes, the file {}",
                    file.size
                )));
            }
            Ok(())
        }
        .await;
        match streamed {
            Ok(()) => {}
            Err(stop) => {
                discard(target, job).await;
                return Err(stop);
            }
        }
        // The last word before the target is committed: a cancel asked for
        // meanwhile still leaves nothing behind.
        if let Err(stop) = self.renew(job, written, Some(JobState::Verifying)).await {
            discard(target, job).await;
            return Err(stop);
        }
        // The writer hashed every byte on the way and commits only content of the
        // file's length and SHA-256.
        target
            .finish()
            .await
            .map_err(|e| Stop::Failed(format!("committing the target: {e}")))?;
        Ok(written)
    }

    /// Checks what the target now holds.
    async fn verify(&self, job: &Job, file: &File) -> Result<(), Stop> {
        let stat = self
            .service
            .storage()
            .stat(&job.target_backend, &job.object_key)
            .await?;
        match stat {
            Some(stat)
                if stat.size == file.size && stat.sha256.is_none_or(|h| h == file.sha256) =>
            {
                Ok(())
            }
            Some(stat) => Err(Stop::Failed(format!(
                "the target holds {} bytes that do not match the file",
                stat.size
            ))),
            None => Err(Stop::Failed(
                "the target object is missing after the copy".into(),
            )),
        }
    }

    /// Renews the lease (and records progress and state); stops on a cancel or a lost lease.
    async fn renew(&self, job: &Job, bytes_done: u64, state: Option<JobState>) -> Result<(), Stop> {
        let renewal = self
            .service
            .store
            .send(RenewJob {
                id: job.id,
                owner: self.owner.clone(),
                bytes_done,
                state,
                lease: self.service.settings().jobs.lease(),
            })
            .await
            .map_err(|e| Stop::Failed(e.to_string()));
        match renewal {
            Ok(Ok(Renewal::Held {
                cancel_requested: false,
            })) => Ok(()),
            Ok(Ok(Renewal::Held {
                cancel_requested: true,
            })) => Err(Stop::Cancelled),
            Ok(Ok(Renewal::Lost)) => Err(Stop::Lost),
            // The database is out: keep copying; the lease covers a short outage.
            Ok(Err(e)) => {
                tracing::warn!(job_id = %job.id, error = %e, "cannot renew the job's lease");
                Ok(())
            }
            Err(stop) => Err(stop),
        }
    }

    async fn log(&self, job: &Job, line: String) {
        let message = AppendJobLog { id: job.id, line };
        if let Ok(Err(e)) | Err(e) = self
            .service
            .store
            .send(message)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
        {
            tracing::warn!(job_id = %job.id, error = %e, "cannot write the job log");
        }
    }

    /// Removes what an earlier attempt may have committed on the target, unless
    /// the object there is live (the file's backend, or a replica it keeps).
    async fn clean_target(&self, job: &Job) {
        let live = match self.service.store.send(GetFile(job.file_id)).await {
            Ok(Ok(Some(file))) => {
                file.status != FileStatus::Deleted
                    && (file.backend == job.target_backend
                        || file
                            .replicas
                            .iter()
                            .any(|r| r.backend == job.target_backend))
            }
            Ok(Ok(None)) => false,
            // Unknown: leave the object rather than risk a live one.
            _ => true,
        };
        if live {
            return;
        }
        if let Err(e) = self
            .service
            .storage()
            .delete(&job.target_backend, &job.object_key)
            .await
        {
            tracing::error!(job_id = %job.id, error = %e, "cannot remove a job's target object");
        }
    }
}

/// Drops an unfinished target write, leaving nothing of it behind.
async fn discard(target: Box<dyn ObjectWriter>, job: &Job) {
    if let Err(e) = target.abort().await {
        tracing::warn!(job_id = %job.id, error = %e, "cannot discard an unfinished copy");
    }
}

/// Refreshes the job gauges, removes moved sources whose grace is over and, with
/// `purge`, deletes finished jobs kept long enough.
async fn housekeeping(service: &FileService, purge: bool) {
    let keep_days = service.settings().jobs.keep_finished_days;
    if purge && keep_days > 0 {
        let cutoff = Utc::now() - chrono::Duration::days(i64::from(keep_days));
        match service
            .store
            .send(PurgeJobs {
                cutoff,
                limit: 1000,
            })
            .await
        {
            Ok(Ok(0)) => {}
            Ok(Ok(purged)) => tracing::info!(purged, "purged finished jobs"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot purge finished jobs"),
            Err(e) => tracing::warn!(error = %e, "cannot purge finished jobs"),
        }
    }
    if let Ok(Ok(counts)) = service.store.send(CountJobs).await {
        for kind in [JobKind::Copy, JobKind::Move] {
            for state in JobState::ALL.into_iter().filter(|s| !s.is_final()) {
                let count = counts
                    .iter()
                    .find(|(k, s, _)| *k == kind && *s == state)
                    .map_or(0, |(_, _, n)| *n);
                metrics::set_jobs(kind.as_str(), state.as_str(), count);
            }
        }
    }
    let claim = ClaimMovedSources {
        limit: SWEEP_BATCH,
        lease: service.settings().jobs.lease(),
    };
    let sources = match service.store.send(claim).await {
        Ok(Ok(sources)) => sources,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot look for moved sources to remove");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for moved sources to remove");
            return;
        }
    };
    for source in sources {
        let line = if source.in_use {
            format!(
                "the source object on {} is in use again; kept",
                source.backend
            )
        } else {
            if let Err(e) = service.storage().delete(&source.backend, &source.key).await {
                // Claimed with a lease: tried again once it runs out.
                tracing::warn!(job_id = %source.job, error = %e, "cannot remove a moved source");
                continue;
            }
            format!("the source object on {} was removed", source.backend)
        };
        let _ = service.store.send(MovedSourceSettled(source.job)).await;
        let _ = service
            .store
            .send(AppendJobLog {
                id: source.job,
                line,
            })
            .await;
    }
}
