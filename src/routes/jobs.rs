//! `/v1/jobs`: copies and moves of files' objects between backends, run in the
//! background (service tokens only).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::docs::problem_responses;
use super::extract::{CallerThen, JobIdParam, JsonBody};
use crate::domain::Job;
use crate::problem::ApiError;
use crate::service::{Cancelled, CreateJobRequest, CreatedJobs, FileService, JobListRequest};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/jobs")
            .route(web::post().to(create_job))
            .route(web::get().to(list_jobs)),
    )
    .service(web::resource("/v1/jobs/{id}").route(web::get().to(get_job)))
    .service(web::resource("/v1/jobs/{id}/log").route(web::get().to(job_log)))
    .service(web::resource("/v1/jobs/{id}/cancel").route(web::post().to(cancel_job)));
}

/// One job.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobBody {
    /// The job.
    pub job: Job,
}

/// The jobs of one selector.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobGroup {
    /// Groups the jobs: `GET /v1/jobs?group_id=` follows them.
    #[schema(value_type = String, format = Uuid)]
    pub group_id: String,
    /// One job per selected file.
    pub jobs: Vec<Job>,
}

/// Answer to `GET /v1/jobs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    /// Jobs, newest first.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

problem_responses!(
    /// The problems `POST /v1/jobs` answers with.
    CreateJobProblems: InvalidRequest => "an unknown or invalid field; both or neither of \
            `file_id` and `selector`; a backend that is not configured; a selector matching \
            more than `jobs.max_group_files` files",
        Unauthenticated,
        Forbidden | ClientCertificateRequired => "a device token; the token's checks refuse \
            writing to the tenant",
        NotFound => "no such file, or another tenant's",
        NotUploaded => "the file is not uploaded",
        Conflict => "the file is already on the target backend, or has an unfinished job",
        PayloadTooLarge, UnsupportedMediaType, RateLimited, Unavailable
);

/// Copy or move a file's object (or every object a selector picks) to another
/// backend.
///
/// `copy` puts a verified copy on the target and lists it in the file's
/// `replicas`; `move` does the same, then switches the file's `backend` in one
/// transaction; the source object is removed `jobs.source_grace_secs` later. With
/// `selector`, every uploaded file of the tenant that matches it (and is not on
/// the target already, nor has an unfinished job) gets a job, all under one `group_id`.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs",
    request_body = CreateJobRequest,
    responses(
        (status = 202, description = "Job created (`{\"job\"}`) for a `file_id`, or jobs \
            created (`{\"group_id\", \"jobs\"}`) for a `selector`", body = JobBody,
            headers(("Location" = String, description = "`/v1/jobs/{id}` of a single job"))),
        CreateJobProblems,
    ),
    security(("bearer" = []))
)]
pub async fn create_job(
    CallerThen(who, body): CallerThen<JsonBody>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let request: CreateJobRequest = body.parse()?;
    Ok(match service.create_jobs(&who, request).await? {
        CreatedJobs::One(job) => HttpResponse::Accepted()
            .insert_header((header::LOCATION, format!("/v1/jobs/{}", job.id)))
            .json(JobBody { job }),
        CreatedJobs::Group { group_id, jobs } => HttpResponse::Accepted().json(JobGroup {
            group_id: group_id.to_string(),
            jobs,
        }),
    })
}

problem_responses!(
    /// The problems `GET /v1/jobs` answers with.
    ListJobsProblems: InvalidRequest => "an invalid parameter, or a cursor this API did not return",
        Unauthenticated,
        Forbidden | ClientCertificateRequired => "a device token; the token's checks refuse \
            listing the tenant",
        RateLimited, Unavailable
);

/// List the tenant's jobs, newest first, with keyset pagination.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs",
    params(JobListRequest),
    responses(
        (status = 200, description = "One page of jobs", body = JobList),
        ListJobsProblems,
    ),
    security(("bearer" = []))
)]
pub async fn list_jobs(
    CallerThen(who, params): CallerThen<web::Query<JobListRequest>>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let page = service.list_jobs(&who, params.into_inner()).await?;
    Ok(HttpResponse::Ok().json(JobList {
        jobs: page.jobs,
        next_cursor: page.next_cursor,
    }))
}

problem_responses!(
    /// The problems `GET /v1/jobs/{id}` and `GET /v1/jobs/{id}/log` answer with.
    GetJobProblems: Unauthenticated,
        Forbidden | ClientCertificateRequired => "a device token; the token's checks refuse \
            reading the tenant",
        NotFound => "no such job, another tenant's job, or an id that is not a UUID",
        RateLimited, Unavailable
);

/// A job: its state and progress.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id (UUID)")),
    responses(
        (status = 200, description = "The job", body = JobBody),
        GetJobProblems,
    ),
    security(("bearer" = []))
)]
pub async fn get_job(
    CallerThen(who, JobIdParam(id)): CallerThen<JobIdParam>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let job = service.get_job(&who, id).await?;
    Ok(HttpResponse::Ok().json(JobBody { job }))
}

/// A job's log: one line per step (claims, bytes copied, retries, errors), each
/// starting with an RFC 3339 timestamp.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/log", tag = "jobs",
    params(("id" = String, Path, description = "Job id (UUID)")),
    responses(
        (status = 200, description = "The log", content_type = "text/plain; charset=utf-8",
            body = String),
        GetJobProblems,
    ),
    security(("bearer" = []))
)]
pub async fn job_log(
    CallerThen(who, JobIdParam(id)): CallerThen<JobIdParam>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let text = service.job_log(&who, id).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(text))
}

problem_responses!(
    /// The problems `POST /v1/jobs/{id}/cancel` answers with.
    CancelJobProblems: Unauthenticated,
        Forbidden | ClientCertificateRequired => "a device token; the token's checks refuse \
            writing to the tenant",
        NotFound => "no such job, another tenant's job, or an id that is not a UUID",
        Conflict => "the job already succeeded or failed",
        RateLimited, Unavailable
);

/// Cancel a job. One still waiting is `cancelled` at once; a running copy stops
/// within seconds (`cancel_requested` is `true` meanwhile), and whatever it wrote
/// to the target is removed.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "Job id (UUID)")),
    responses(
        (status = 202, description = "Cancelled, or asked to stop", body = JobBody),
        (status = 200, description = "It was already cancelled", body = JobBody),
        CancelJobProblems,
    ),
    security(("bearer" = []))
)]
pub async fn cancel_job(
    CallerThen(who, JobIdParam(id)): CallerThen<JobIdParam>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let (status, job) = match service.cancel_job(&who, id).await? {
        Cancelled::Accepted(job) => (StatusCode::ACCEPTED, job),
        Cancelled::Already(job) => (StatusCode::OK, job),
    };
    Ok(HttpResponse::build(status).json(JobBody { job }))
}
