//! `/v1/batches`: many files delivered, and announced, as one.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::docs::problem_responses;
use super::extract::{BatchIdParam, CallerThen, JsonBody};
use crate::domain::Batch;
use crate::problem::ApiError;
use crate::service::{BatchListRequest, CreateBatchRequest, FileService};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/batches")
            .route(web::post().to(create_batch))
            .route(web::get().to(list_batches)),
    )
    .service(
        web::resource("/v1/batches/{id}")
            .route(web::get().to(get_batch))
            .route(web::delete().to(abandon_batch)),
    )
    .service(web::resource("/v1/batches/{id}/commit").route(web::post().to(commit_batch)));
}

/// Answer to `GET /v1/batches`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchList {
    /// Batches, newest first (without `files`).
    pub batches: Vec<Batch>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

problem_responses!(
    /// The problems `POST /v1/batches` answers with.
    CreateBatchProblems: InvalidRequest => "an unknown or invalid field; `device_id` with \
            `shared=true`; a service token naming no root; `expires_in_secs` out of range",
        Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse writing there; \
            a device naming another root",
        NotFound => "another tenant's device root",
        PayloadTooLarge, UnsupportedMediaType, RateLimited, Unavailable
);

/// Open a batch: files created with its `batch_id` are announced together when
/// it is committed.
///
/// A device opens a batch in its own root; a service names the root as it does
/// when creating files (`device_id` or `shared=true`).
#[utoipa::path(
    post, path = "/v1/batches", tag = "batches",
    request_body = CreateBatchRequest,
    responses(
        (status = 201, description = "Batch opened", body = Batch,
            headers(("Location" = String, description = "`/v1/batches/{id}` of the new batch")),
            links(
                ("GetBatch" = (operation_id = "get_batch",
                    parameters(("id" = "$response.body#/id")))),
                ("CommitBatch" = (operation_id = "commit_batch",
                    parameters(("id" = "$response.body#/id")))),
                ("AbandonBatch" = (operation_id = "abandon_batch",
                    parameters(("id" = "$response.body#/id")))),
            )),
        CreateBatchProblems,
    ),
    security(("bearer" = []))
)]
pub async fn create_batch(
    CallerThen(who, body): CallerThen<JsonBody>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let request: CreateBatchRequest = body.parse()?;
    let batch = service.create_batch(&who, request).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/batches/{}", batch.id)))
        .json(batch))
}

problem_responses!(
    /// The problems `GET /v1/batches` answers with.
    ListBatchesProblems: InvalidRequest => "an invalid parameter, a cursor this API did not \
            return, or `device_id` with `shared=true`",
        Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse listing there",
        NotFound => "another device's root",
        RateLimited, Unavailable
);

/// List batches, newest first, with keyset pagination.
#[utoipa::path(
    get, path = "/v1/batches", tag = "batches",
    params(BatchListRequest),
    responses(
        (status = 200, description = "One page of batches", body = BatchList),
        ListBatchesProblems,
    ),
    security(("bearer" = []))
)]
pub async fn list_batches(
    CallerThen(who, params): CallerThen<web::Query<BatchListRequest>>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let page = service.list_batches(&who, params.into_inner()).await?;
    Ok(HttpResponse::Ok().json(BatchList {
        batches: page.batches,
        next_cursor: page.next_cursor,
    }))
}

problem_responses!(
    /// The problems `GET /v1/batches/{id}` answers with.
    GetBatchProblems: Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse reading there",
        NotFound => "no such batch, another root's or tenant's batch, or an id that is not a UUID",
        RateLimited, Unavailable
);

/// A batch with its files.
#[utoipa::path(
    get, path = "/v1/batches/{id}", tag = "batches",
    params(("id" = String, Path, description = "Batch id (UUID)")),
    responses(
        (status = 200, description = "The batch", body = Batch),
        GetBatchProblems,
    ),
    security(("bearer" = []))
)]
pub async fn get_batch(
    CallerThen(who, BatchIdParam(id)): CallerThen<BatchIdParam>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(service.get_batch(&who, id).await?))
}

problem_responses!(
    /// The problems `POST /v1/batches/{id}/commit` answers with.
    CommitBatchProblems: Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse writing there; \
            a device committing a batch of the shared root",
        NotFound => "no such batch, another root's or tenant's batch",
        BatchIncomplete => "some files are not uploaded: `files` lists their ids; nothing \
            was changed",
        Conflict => "the batch was abandoned",
        RateLimited, Unavailable
);

/// Commit a batch (idempotent): in one transaction it becomes `committed`, its
/// files visible, and the outbox gets `io.valet.batch.committed` followed by each
/// file's `io.valet.file.uploaded`.
#[utoipa::path(
    post, path = "/v1/batches/{id}/commit", tag = "batches",
    params(("id" = String, Path, description = "Batch id (UUID)")),
    responses(
        (status = 200, description = "The committed batch, with its files", body = Batch),
        CommitBatchProblems,
    ),
    security(("bearer" = []))
)]
pub async fn commit_batch(
    CallerThen(who, BatchIdParam(id)): CallerThen<BatchIdParam>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(service.commit_batch(&who, id).await?))
}

problem_responses!(
    /// The problems `DELETE /v1/batches/{id}` answers with.
    AbandonBatchProblems: Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse deleting there; \
            a device abandoning a batch of the shared root",
        NotFound => "no such batch, another root's or tenant's batch",
        Conflict => "the batch is committed",
        RateLimited, Unavailable
);

/// Abandon an open batch (idempotent): its files and their objects are deleted,
/// with no event (they were never announced).
#[utoipa::path(
    delete, path = "/v1/batches/{id}", tag = "batches",
    params(("id" = String, Path, description = "Batch id (UUID)")),
    responses(
        (status = 200, description = "The abandoned batch (its `files` now empty)", body = Batch),
        AbandonBatchProblems,
    ),
    security(("bearer" = []))
)]
pub async fn abandon_batch(
    CallerThen(who, BatchIdParam(id)): CallerThen<BatchIdParam>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(service.abandon_batch(&who, id).await?))
}
