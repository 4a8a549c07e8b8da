//! `/v1/files`: the device- and service-facing API.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use valet_backends::SignedRequest;

use super::caller;
use crate::domain::{File, FileId};
use crate::problem::{ApiError, ErrorCode};
use crate::service::{CreateUpload, FileService, ListRequest};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/files")
            .route(web::post().to(create_file))
            .route(web::get().to(list_files)),
    )
    .service(
        web::resource("/v1/files/{id}")
            .route(web::get().to(get_file))
            .route(web::delete().to(delete_file)),
    )
    .service(web::resource("/v1/files/{id}/complete").route(web::post().to(complete_file)))
    .service(web::resource("/v1/files/{id}/download").route(web::get().to(download_file)));
}

/// Body of `POST /v1/files`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFileBody {
    /// 1–1024 bytes of UTF-8 without control characters (metadata only).
    pub name: String,
    /// Exact length in bytes, 1 to `uploads.max_upload_bytes`.
    pub size: u64,
    /// SHA-256 of the content, 64 hex characters.
    pub sha256: String,
    /// Media type (default `application/octet-stream`).
    pub content_type: Option<String>,
    /// String metadata, at most 8 KiB in all.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Upload into this device's root (service tokens only).
    pub device_id: Option<String>,
    /// Upload into the tenant's shared root (service tokens only).
    pub shared: Option<bool>,
}

/// A request to send to storage exactly as given.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedRequestBody {
    /// HTTP method.
    #[schema(example = "PUT")]
    pub method: String,
    /// Absolute URL, signature included.
    pub url: String,
    /// Headers to send verbatim.
    pub headers: BTreeMap<String, String>,
    /// When the URL stops working (RFC 3339, UTC).
    pub expires_at: DateTime<Utc>,
}

impl From<SignedRequest> for SignedRequestBody {
    fn from(r: SignedRequest) -> Self {
        Self {
            method: r.method,
            url: r.url,
            headers: r.headers,
            expires_at: r.expires_at,
        }
    }
}

/// Answer to `POST /v1/files`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUpload {
    /// The pending file.
    pub file: File,
    /// The upload to perform.
    pub upload: SignedRequestBody,
}

/// Answer to `GET /v1/files`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileList {
    /// Files, newest first.
    pub files: Vec<File>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /v1/files`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this device's root (a device may name only itself).
    pub device_id: Option<String>,
    /// Only the tenant's shared root.
    pub shared: Option<bool>,
    /// Only files with this status (default: all but deleted).
    pub status: Option<String>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
}

/// Options of `GET /v1/files/{id}/download`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadParams {
    /// Answer 307 with the signed URL in `Location` instead of a JSON body.
    pub redirect: Option<bool>,
}

fn file_id(raw: &str) -> Result<FileId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::new(ErrorCode::NotFound, "no such file (file ids are UUIDs)"))
}

/// Create an upload: records a pending file and returns the signed PUT.
#[utoipa::path(
    post, path = "/v1/files", tag = "files",
    request_body = CreateFileBody,
    responses(
        (status = 201, description = "Upload created", body = CreatedUpload),
        (status = 400, description = "invalid_request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthenticated", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "payload_too_large", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "unsupported_media_type", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_file(
    req: HttpRequest,
    body: web::Json<CreateFileBody>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let who = caller(&req, &service).await?;
    let body = body.into_inner();
    let (file, upload) = service
        .create(
            &who,
            CreateUpload {
                name: body.name,
                size: body.size,
                sha256: body.sha256,
                content_type: body.content_type,
                metadata: body.metadata,
                device_id: body.device_id,
                shared: body.shared,
            },
        )
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/files/{}", file.id)))
        .json(CreatedUpload {
            file,
            upload: upload.into(),
        }))
}

/// A file's metadata.
#[utoipa::path(
    get, path = "/v1/files/{id}", tag = "files",
    params(("id" = String, Path, description = "File id (UUID)")),
    responses(
        (status = 200, description = "The file", body = File),
        (status = 401, description = "unauthenticated", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_file(
    req: HttpRequest,
    id: web::Path<String>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let id = file_id(&id)?;
    let who = caller(&req, &service).await?;
    Ok(HttpResponse::Ok().json(service.get(&who, id).await?))
}

/// Verify the stored object and mark the file uploaded (idempotent).
#[utoipa::path(
    post, path = "/v1/files/{id}/complete", tag = "files",
    params(("id" = String, Path, description = "File id (UUID)")),
    responses(
        (status = 200, description = "The uploaded file", body = File),
        (status = 401, description = "unauthenticated", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "upload_missing or conflict", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "size_mismatch or checksum_mismatch (file rejected, object deleted)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn complete_file(
    req: HttpRequest,
    id: web::Path<String>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let id = file_id(&id)?;
    let who = caller(&req, &service).await?;
    Ok(HttpResponse::Ok().json(service.complete(&who, id).await?))
}

/// Sign a download of an uploaded file.
#[utoipa::path(
    get, path = "/v1/files/{id}/download", tag = "files",
    params(("id" = String, Path, description = "File id (UUID)"), DownloadParams),
    responses(
        (status = 200, description = "The download to perform", body = SignedRequestBody),
        (status = 307, description = "Redirect to the signed URL (with redirect=true)"),
        (status = 401, description = "unauthenticated", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "not_uploaded", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn download_file(
    req: HttpRequest,
    id: web::Path<String>,
    params: web::Query<DownloadParams>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let id = file_id(&id)?;
    let who = caller(&req, &service).await?;
    let signed = service.download(&who, id).await?;
    if params.redirect.unwrap_or(false) {
        return Ok(HttpResponse::TemporaryRedirect()
            .insert_header((header::LOCATION, signed.url))
            .finish());
    }
    Ok(HttpResponse::Ok().json(SignedRequestBody::from(signed)))
}

/// List files, newest first, with keyset pagination.
#[utoipa::path(
    get, path = "/v1/files", tag = "files",
    params(ListParams),
    responses(
        (status = 200, description = "One page of files", body = FileList),
        (status = 400, description = "invalid_request", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthenticated", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found (another device's root)", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_files(
    req: HttpRequest,
    params: web::Query<ListParams>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let who = caller(&req, &service).await?;
    let params = params.into_inner();
    let page = service
        .list(
            &who,
            ListRequest {
                device_id: params.device_id,
                shared: params.shared,
                status: params.status,
                limit: params.limit,
                cursor: params.cursor,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(FileList {
        files: page.files,
        next_cursor: page.next_cursor,
    }))
}

/// Delete a file: the object is removed and the file marked deleted (idempotent).
#[utoipa::path(
    delete, path = "/v1/files/{id}", tag = "files",
    params(("id" = String, Path, description = "File id (UUID)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "unauthenticated", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_file(
    req: HttpRequest,
    id: web::Path<String>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let id = file_id(&id)?;
    let who = caller(&req, &service).await?;
    service.delete(&who, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
