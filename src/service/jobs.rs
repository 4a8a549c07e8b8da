//! Jobs: a tenant's services ask for a file's object (or every object a selector
//! picks) to be copied or moved to another backend; the `Mover` does the work in
//! the background. Only services manage jobs, and only their own tenant's.

use super::*;
use crate::domain::{Job, JobCursor, JobGroupId, JobId, JobKind, JobState, TenantId};
use crate::metadata::{
    job_for, Cancel, CancelJob, CreateJob, CreateJobGroup, FileSelector, GetJob, GetJobLog,
    ListJobs, NewGroup, NewJob,
};

/// Which files a selector job covers: every uploaded file of the tenant matching
/// all the given filters.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = JobSelector)]
pub struct SelectorRequest {
    /// Only files on this backend.
    pub backend: Option<String>,
    /// Only files of this device.
    pub device_id: Option<DeviceId>,
    /// Only files created before this time (RFC 3339).
    pub created_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// Body of `POST /v1/jobs`: `file_id` or `selector`, not both.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateJobBody)]
pub struct CreateJobRequest {
    /// Copy (adds a replica) or move (changes the file's backend).
    pub kind: JobKind,
    /// The one file to copy or move.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub file_id: Option<FileId>,
    /// Many files at once: one job per file, under one `group_id`.
    pub selector: Option<SelectorRequest>,
    /// Name of the configured backend the object goes to.
    pub target_backend: String,
}

/// What `POST /v1/jobs` created.
#[derive(Debug, Clone)]
pub enum CreatedJobs {
    /// The one job of a `file_id` request.
    One(Job),
    /// The jobs of a selector request.
    Group {
        /// Their group.
        group_id: JobGroupId,
        /// One per selected file.
        jobs: Vec<Job>,
    },
}

/// Filters of `GET /v1/jobs`, parsed from the query string.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListRequest {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only the jobs of this group.
    #[param(value_type = Option<String>, format = Uuid)]
    pub group_id: Option<JobGroupId>,
    /// Page size, 1–1000 (default 100).
    #[param(schema_with = super::query::page_size_schema)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page, as returned (any other text: 400).
    pub cursor: Option<String>,
}

/// One page of jobs.
#[derive(Debug, Clone)]
pub struct JobPage {
    /// Jobs, newest first.
    pub jobs: Vec<Job>,
    /// Cursor for the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// What `POST /v1/jobs/{id}/cancel` did.
#[derive(Debug, Clone)]
pub enum Cancelled {
    /// Cancelled now, or asked to stop: 202.
    Accepted(Job),
    /// It was already cancelled: 200.
    Already(Job),
}

fn job_not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such job")
}

impl FileService {
    /// The caller, if it may manage jobs: a service, allowed by its token to act on
    /// the whole tenant.
    fn job_manager(&self, who: &Authenticated, operation: Operation) -> Result<(), ApiError> {
        if let Principal::Device(_) = who.identity.principal {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "only a service may manage jobs",
            ));
        }
        let tenant = who.identity.tenant.as_str();
        self.authorize(who, operation, tenant, Decision::Allow, None, job_not_found)
    }

    /// Refuses a backend name (given in body field `field`) that is not configured.
    fn configured_backend(&self, field: &str, name: &str) -> Result<(), ApiError> {
        if self.storage.names().any(|n| n == name) {
            Ok(())
        } else {
            Err(ApiError::invalid(format!(
                "{field} {name:?} is not a configured backend"
            )))
        }
    }

    /// Creates the job(s) a request asks for.
    pub async fn create_jobs(
        &self,
        who: &Authenticated,
        request: CreateJobRequest,
    ) -> Result<CreatedJobs, ApiError> {
        let result = self.new_jobs(who, request).await;
        self.settle(who, result)
    }

    async fn new_jobs(
        &self,
        who: &Authenticated,
        request: CreateJobRequest,
    ) -> Result<CreatedJobs, ApiError> {
        self.job_manager(who, Operation::Write)?;
        self.configured_backend("target_backend", &request.target_backend)?;
        match (request.file_id, request.selector) {
            (Some(file_id), None) => self
                .file_job(who, file_id, request.kind, &request.target_backend)
                .await
                .map(CreatedJobs::One),
            (None, Some(selector)) => {
                if let Some(backend) = &selector.backend {
                    self.configured_backend("selector.backend", backend)?;
                }
                let group_id = JobGroupId::new();
                let max = self.settings.jobs.max_group_files;
                let created = self
                    .ask(CreateJobGroup {
                        tenant: who.identity.tenant.clone(),
                        selector: FileSelector {
                            backend: selector.backend,
                            device: selector.device_id,
                            created_before: selector.created_before,
                        },
                        kind: request.kind,
                        target: request.target_backend,
                        group: group_id,
                        max_files: i64::from(max),
                    })
                    .await?;
                match created {
                    NewGroup::Created(jobs) => {
                        tracing::info!(%group_id, jobs = jobs.len(), "jobs created");
                        Ok(CreatedJobs::Group { group_id, jobs })
                    }
                    NewGroup::TooMany => Err(ApiError::invalid(format!(
                        "the selector matches more than {max} files (jobs.max_group_files); \
                         narrow it (device_id, backend, created_before)"
                    ))),
                }
            }
            _ => Err(ApiError::invalid(
                "give either file_id or selector, not both and not neither",
            )),
        }
    }

    async fn file_job(
        &self,
        who: &Authenticated,
        file_id: FileId,
        kind: JobKind,
        target: &str,
    ) -> Result<Job, ApiError> {
        // The record, not a cached copy: the job must start from the file's current backend.
        let file = self
            .ask(GetFile(file_id))
            .await?
            .filter(|f| f.tenant_id == who.identity.tenant && f.status != FileStatus::Deleted)
            .ok_or_else(ApiError::file_not_found)?;
        if file.status != FileStatus::Uploaded {
            return Err(ApiError::new(
                ErrorCode::NotUploaded,
                format!(
                    "the file is {}; only uploaded files can be copied or moved",
                    file.status
                ),
            ));
        }
        if file.backend == target {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("the file is already on {target}"),
            ));
        }
        match self
            .ask(CreateJob(job_for(&file, kind, target, None, now_micros())))
            .await?
        {
            NewJob::Created(job) => {
                tracing::info!(job_id = %job.id, file_id = %file.id, %kind, target, "job created");
                Ok(job)
            }
            NewJob::Busy(other) => Err(ApiError::new(
                ErrorCode::Conflict,
                format!("the file already has an unfinished job, {other}"),
            )),
        }
    }

    /// A job of the caller's tenant.
    async fn visible_job(
        &self,
        who: &Authenticated,
        id: JobId,
        operation: Operation,
    ) -> Result<Job, ApiError> {
        self.job_manager(who, operation)?;
        self.ask(GetJob(id))
            .await?
            .filter(|job| job.tenant_id == who.identity.tenant)
            .ok_or_else(job_not_found)
    }

    /// One job.
    pub async fn get_job(&self, who: &Authenticated, id: JobId) -> Result<Job, ApiError> {
        let result = self.visible_job(who, id, Operation::Read).await;
        self.settle(who, result)
    }

    /// A job's log as text: one line per step, each starting with its RFC 3339 time.
    pub async fn job_log(&self, who: &Authenticated, id: JobId) -> Result<String, ApiError> {
        let result = async {
            self.visible_job(who, id, Operation::Read).await?;
            let lines = self.ask(GetJobLog(id)).await?;
            Ok(render_log(&lines))
        }
        .await;
        self.settle(who, result)
    }

    /// One page of the tenant's jobs.
    pub async fn list_jobs(
        &self,
        who: &Authenticated,
        request: JobListRequest,
    ) -> Result<JobPage, ApiError> {
        let result = self.job_page(who, &who.identity.tenant, request).await;
        self.settle(who, result)
    }

    async fn job_page(
        &self,
        who: &Authenticated,
        tenant: &TenantId,
        request: JobListRequest,
    ) -> Result<JobPage, ApiError> {
        self.job_manager(who, Operation::List)?;
        let limit = page_limit(request.limit)?;
        let before = page_cursor(request.cursor.as_deref(), |text| {
            JobCursor::decode(text).map(|c| c.0)
        })?;
        let mut jobs = self
            .ask(ListJobs {
                tenant: tenant.clone(),
                state: request.state,
                group: request.group_id,
                before,
                limit: limit + 1,
            })
            .await?;
        let next_cursor = cut_page(&mut jobs, limit, |j| JobCursor(j.id).encode());
        Ok(JobPage { jobs, next_cursor })
    }

    /// Cancels a job: at once if it is waiting, within seconds if it is running.
    pub async fn cancel_job(&self, who: &Authenticated, id: JobId) -> Result<Cancelled, ApiError> {
        let result = async {
            self.visible_job(who, id, Operation::Write).await?;
            match self.ask(CancelJob(id)).await? {
                Cancel::Cancelled(job) | Cancel::Requested(job) => {
                    tracing::info!(job_id = %job.id, state = %job.state, "job cancel requested");
                    Ok(Cancelled::Accepted(job))
                }
                Cancel::Unchanged(job) => Ok(Cancelled::Already(job)),
                Cancel::Finished(job) => Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("the job already {}", job.state),
                )),
                Cancel::NotFound => Err(job_not_found()),
            }
        }
        .await;
        self.settle(who, result)
    }
}

/// The log as text: `<RFC 3339 time> <line>` per step.
fn render_log(lines: &[(chrono::DateTime<chrono::Utc>, String)]) -> String {
    let mut text = String::new();
    for (at, line) in lines {
        text.push_str(&at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        text.push(' ');
        // One step, one line: an error message spanning lines is kept on one.
        text.push_str(&line.replace(['\r', '\n'], " "));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_start_with_their_time_and_stay_one_line_each() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-07T08:00:00Z")
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap();
        let text = render_log(&[(at, "failed: a\nb".into()), (at, "claimed".into())]);
        assert_eq!(
            text,
            "2026-12-07T08:00:00.000000Z failed: a b\n2026-12-07T08:00:00.000000Z claimed\n"
        );
    }
}
