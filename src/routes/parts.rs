//! `/v1/files/{id}/parts`: URLs for the parts of a large file, and what the store
//! already holds of them (to resume).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::docs::problem_responses;
use super::extract::{Caller, FileIdParam, JsonObject};
use crate::problem::ApiError;
use crate::service::{FileService, PartRequest, SignedPart};

/// Body of `POST /v1/files/{id}/parts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartsRequest {
    /// The parts to sign (1 to 100), each with the SHA-256 of its bytes.
    pub parts: Vec<PartRequest>,
}

/// Answer to `POST /v1/files/{id}/parts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedParts {
    /// One request per part asked for, to send exactly as given.
    pub parts: Vec<SignedPart>,
}

problem_responses!(
    /// The problems `POST /v1/files/{id}/parts` answers with.
    SignPartsProblems: InvalidRequest, InvalidPart => "a part number below 1 or above `part_count`",
        Unauthenticated, Forbidden, NotFound,
        Conflict => "the file is not pending, or not uploaded in parts", Unavailable
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
    Caller(who): Caller,
    FileIdParam(id): FileIdParam,
    body: web::Json<JsonObject<PartsRequest>>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let parts = service
        .sign_parts(&who, id, body.into_inner().0.parts)
        .await?;
    Ok(HttpResponse::Ok().json(SignedParts { parts }))
}

problem_responses!(
    /// The problems `GET /v1/files/{id}/parts` answers with.
    ListPartsProblems: Unauthenticated, Forbidden, NotFound,
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
    Caller(who): Caller,
    FileIdParam(id): FileIdParam,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(service.stored_parts(&who, id).await?))
}
