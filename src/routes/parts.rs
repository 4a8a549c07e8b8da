//! `/v1/files/{id}/parts`: URLs for the parts of a large file, and what the store
//! already holds of them (to resume).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{Array, ArrayBuilder};
use utoipa::openapi::Ref;
use utoipa::ToSchema;

use super::docs::problem_responses;
use super::extract::{CallerThen, FileIdParam, JsonBody};
use crate::problem::ApiError;
use crate::service::{FileService, PartRequest, SignedPart, MAX_PARTS_PER_REQUEST};

/// Body of `POST /v1/files/{id}/parts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartsRequest {
    /// The parts to sign (1 to 100, each number once), each with the SHA-256 of its
    /// bytes.
    #[schema(schema_with = parts_schema)]
    pub parts: Vec<PartRequest>,
}

/// The schema of `parts`: 1 to [`MAX_PARTS_PER_REQUEST`] part requests.
fn parts_schema() -> Array {
    ArrayBuilder::new()
        .items(Ref::from_schema_name(PartRequest::name()))
        .min_items(Some(1))
        .max_items(Some(MAX_PARTS_PER_REQUEST))
        .build()
}

/// Answer to `POST /v1/files/{id}/parts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedParts {
    /// One request per part asked for, to send exactly as given.
    pub parts: Vec<SignedPart>,
}

problem_responses!(
    /// The problems `POST /v1/files/{id}/parts` answers with.
    SignPartsProblems: InvalidRequest => "a missing, unknown or invalid field; no parts, \
            more than 100, or one asked for twice",
        InvalidPart => "a part number below 1 or above `part_count`",
        Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse writing to this \
            file, whatever the body holds",
        NotFound,
        Conflict => "the file is not pending, or not uploaded in parts",
        PayloadTooLarge => "the body is over `server.json_limit_bytes`",
        UnsupportedMediaType => "the body is not `application/json`",
        Unavailable
);

/// Sign PUT URLs for parts of a file uploaded in parts.
#[utoipa::path(
    post, path = "/v1/files/{id}/parts", tag = "files",
    params(("id" = String, Path, description = "File id (UUID)")),
    request_body = PartsRequest,
    responses(
        (status = 200, description = "The part uploads to perform. Each binds the part's exact length, and its SHA-256 where the store can enforce it (local, S3); Azure verifies a part's bytes only when the client sends `Content-MD5`, and every store's whole file is verified at completion", body = SignedParts),
        SignPartsProblems,
    ),
    security(("bearer" = []))
)]
pub async fn sign_parts(
    CallerThen(who, (FileIdParam(id), body)): CallerThen<(FileIdParam, JsonBody)>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let requested = body.parse::<PartsRequest>().map(|body| body.parts);
    let parts = service.sign_parts(&who, id, requested).await?;
    Ok(HttpResponse::Ok().json(SignedParts { parts }))
}

problem_responses!(
    /// The problems `GET /v1/files/{id}/parts` answers with.
    ListPartsProblems: Unauthenticated, Forbidden | ClientCertificateRequired, NotFound,
        Conflict => "the file is not pending, or not uploaded in parts", Unavailable
);

/// The parts the store already holds, to resume an interrupted upload.
#[utoipa::path(
    get, path = "/v1/files/{id}/parts", tag = "files",
    params(("id" = String, Path, description = "File id (UUID)")),
    responses(
        (status = 200, description = "Stored parts (`size` as the store reports it, `sha256` as declared when the part's URL was signed), the part size and count", body = crate::service::PartsReport),
        ListPartsProblems,
    ),
    security(("bearer" = []))
)]
pub async fn list_parts(
    CallerThen(who, FileIdParam(id)): CallerThen<FileIdParam>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(service.stored_parts(&who, id).await?))
}
