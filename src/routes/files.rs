//! `/v1/files`: the device- and service-facing API.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use valet_backends::SignedRequest;

use super::docs::problem_responses;
use super::extract::{CallerThen, FileIdParam, JsonBody};
use crate::domain::{Completed, File, ListedFile};
use crate::problem::ApiError;
use crate::service::{CreateUpload, FileService, ListRequest, NamedRoot, Upload};

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
    .service(web::resource("/v1/files/{id}/download").route(web::get().to(download_file)))
    .service(
        web::resource("/v1/files/{id}/parts")
            .route(web::post().to(super::parts::sign_parts))
            .route(web::get().to(super::parts::list_parts)),
    );
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

/// How to send a new file's bytes: `mode` says which.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum UploadBody {
    /// One PUT of the whole file, sent exactly as given.
    Single(SignedRequestBody),
    /// Parts: ask for their URLs with `POST /v1/files/{id}/parts`.
    Multipart(MultipartBody),
}

/// An upload in parts.
#[derive(Debug, Serialize, ToSchema)]
pub struct MultipartBody {
    /// Length of every part but the last.
    pub part_size: u64,
    /// Number of parts.
    pub part_count: u64,
    /// The upload's deadline (RFC 3339, UTC): after it the upload is aborted and
    /// the file expires. Each part URL has its own, shorter, expiry.
    pub expires_at: DateTime<Utc>,
}

impl From<Upload> for UploadBody {
    fn from(upload: Upload) -> Self {
        match upload {
            Upload::Single(request) => UploadBody::Single(request.into()),
            Upload::Multipart {
                part_size,
                part_count,
                expires_at,
            } => UploadBody::Multipart(MultipartBody {
                part_size,
                part_count,
                expires_at,
            }),
        }
    }
}

/// Answer to `POST /v1/files`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUpload {
    /// The pending file.
    pub file: File,
    /// The upload to perform.
    pub upload: UploadBody,
}

/// Answer 202 to `POST /v1/files/{id}/complete`: accepted, being verified.
#[derive(Debug, Serialize, ToSchema)]
pub struct Verifying {
    /// The file, `verifying` until the check off the request path ends.
    pub file: File,
}

/// Answer to `GET /v1/files`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileList {
    /// Files, newest first.
    #[schema(value_type = Vec<File>)]
    pub files: Vec<ListedFile>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Options of `GET /v1/files/{id}/download`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadParams {
    /// Answer 307 with the signed URL in `Location` instead of a JSON body.
    pub redirect: Option<bool>,
}

problem_responses!(
    /// The problems `POST /v1/files` answers with.
    CreateFileProblems: InvalidRequest => "a missing, unknown or invalid field; `device_id` \
            with `shared=true`; a service token naming no root; a part size the storage \
            backend cannot take; a root other than the `batch_id`'s",
        NotFound => "`batch_id` names no batch, or another root's or tenant's batch",
        Conflict => "the `batch_id`'s batch is not open, or holds 10,000 files already",
        Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse writing there, \
            whatever the body holds; a device naming another root",
        QuotaExceeded => "the file would exceed a quota of the tenant's policy (`limit` \
            names it)",
        PayloadTooLarge => "the body is over `server.json_limit_bytes`, or `size` over \
            `uploads.max_upload_bytes` or the tenant's `max_upload_bytes`",
        UnsupportedMediaType => "the body is not `application/json`, or `content_type` is \
            not among the tenant's `allowed_content_types`",
        RateLimited => "the tenant or device is over its request rate",
        Unavailable
);

/// Create an upload: records a pending file and returns the signed PUT.
///
/// The caller is authenticated, then authorized to write in the root the body
/// names, before the rest of the body is judged.
#[utoipa::path(
    post, path = "/v1/files", tag = "files",
    request_body = CreateUpload,
    responses(
        (status = 201, description = "Upload created", body = CreatedUpload,
            headers(("Location" = String, description = "`/v1/files/{id}` of the new file")),
            links(
                ("GetFile" = (operation_id = "get_file",
                    parameters(("id" = "$response.body#/file/id")))),
                ("CompleteFile" = (operation_id = "complete_file",
                    parameters(("id" = "$response.body#/file/id")))),
                ("DownloadFile" = (operation_id = "download_file",
                    parameters(("id" = "$response.body#/file/id")))),
                ("SignParts" = (operation_id = "sign_parts",
                    parameters(("id" = "$response.body#/file/id")))),
                ("ListParts" = (operation_id = "list_parts",
                    parameters(("id" = "$response.body#/file/id")))),
                ("DeleteFile" = (operation_id = "delete_file",
                    parameters(("id" = "$response.body#/file/id")))),
            )),
        CreateFileProblems,
    ),
    security(("bearer" = []))
)]
pub async fn create_file(
    CallerThen(who, body): CallerThen<JsonBody>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let named = body
        .value()
        .filter(|value| value.is_object())
        .and_then(|value| NamedRoot::deserialize(value).ok());
    service.authorize_upload(&who, named)?;
    let request: CreateUpload = body.parse()?;
    let (file, upload) = service.create(&who, request).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/files/{}", file.id)))
        .json(CreatedUpload {
            file,
            upload: upload.into(),
        }))
}

problem_responses!(
    /// The problems `GET /v1/files/{id}` answers with.
    GetFileProblems: Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse reading this file",
        NotFound => "no such file, another root's file, or an id that is not a UUID",
        Unavailable
);

/// A file's metadata.
#[utoipa::path(
    get, path = "/v1/files/{id}", tag = "files",
    params(("id" = String, Path, description = "File id (UUID)")),
    responses(
        (status = 200, description = "The file", body = File),
        GetFileProblems,
    ),
    security(("bearer" = []))
)]
pub async fn get_file(
    CallerThen(who, FileIdParam(id)): CallerThen<FileIdParam>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(service.get(&who, id).await?))
}

problem_responses!(
    /// The problems `POST /v1/files/{id}/complete` answers with.
    CompleteFileProblems: Unauthenticated, Forbidden | ClientCertificateRequired, NotFound,
        UploadMissing,
        UploadIncomplete => "parts are missing: `missing_parts` lists their numbers", Conflict,
        SizeMismatch | ChecksumMismatch | PartMismatch => "file rejected, object deleted",
        Unavailable
);

/// Verify the stored object and mark the file uploaded (idempotent).
#[utoipa::path(
    post, path = "/v1/files/{id}/complete", tag = "files",
    params(("id" = String, Path, description = "File id (UUID)")),
    responses(
        (status = 200, description = "The uploaded file", body = File),
        (status = 202, description = "Accepted: the file is `verifying` (uploads in parts, and large files the store keeps no SHA-256 for, are assembled and hashed off the request path); ask again or watch for the event", body = Verifying),
        CompleteFileProblems,
    ),
    security(("bearer" = []))
)]
pub async fn complete_file(
    CallerThen(who, FileIdParam(id)): CallerThen<FileIdParam>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    Ok(match service.complete(&who, id).await? {
        Completed::Uploaded(file) => HttpResponse::Ok().json(file),
        Completed::Verifying(file) => HttpResponse::Accepted().json(Verifying { file }),
    })
}

problem_responses!(
    /// The problems `GET /v1/files/{id}/download` answers with.
    DownloadFileProblems: InvalidRequest => "`redirect` is not `true` or `false`",
        Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse reading this file",
        NotFound, NotUploaded, Unavailable
);

/// Sign a download of an uploaded file.
///
/// Send the signed request as given. To resume an interrupted download, send it
/// again with a `Range: bytes=<bytes received>-` header: the store answers 206 with
/// the rest of the object. Range is a header of the request, never part of the
/// signed URL, so the same URL serves every attempt until it expires (a fresh one
/// can be asked for at any time). The local store, S3 and Azure Blob all honour
/// `bytes=first-` and `bytes=first-last`; the local store also `If-Range` with the
/// first answer's ETag.
#[utoipa::path(
    get, path = "/v1/files/{id}/download", tag = "files",
    params(("id" = String, Path, description = "File id (UUID)"), DownloadParams),
    responses(
        (status = 200, description = "The download to perform; resume it by sending a \
            `Range` header to the signed URL", body = SignedRequestBody),
        (status = 307, description = "Redirect to the signed URL (with redirect=true)",
            headers(("Location" = String, description = "The signed URL"))),
        DownloadFileProblems,
    ),
    security(("bearer" = []))
)]
pub async fn download_file(
    CallerThen(who, (FileIdParam(id), params)): CallerThen<(
        FileIdParam,
        web::Query<DownloadParams>,
    )>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let signed = service.download(&who, id).await?;
    Ok(download_answer(signed, &params))
}

/// The answer to a signed download: the request as JSON, or with `redirect=true`
/// a 307 to its URL.
pub fn download_answer(signed: SignedRequest, params: &DownloadParams) -> HttpResponse {
    if params.redirect.unwrap_or(false) {
        return HttpResponse::TemporaryRedirect()
            .insert_header((header::LOCATION, signed.url))
            .finish();
    }
    HttpResponse::Ok().json(SignedRequestBody::from(signed))
}

problem_responses!(
    /// The problems `GET /v1/files` answers with.
    ListFilesProblems: InvalidRequest => "an invalid parameter, a cursor this API did not \
            return, or `device_id` with `shared=true`",
        Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse listing there; \
            a device listing the shared root",
        NotFound => "another device's root",
        Unavailable
);

/// List files, newest first, with keyset pagination.
#[utoipa::path(
    get, path = "/v1/files", tag = "files",
    params(ListRequest),
    responses(
        (status = 200, description = "One page of files", body = FileList),
        ListFilesProblems,
    ),
    security(("bearer" = []))
)]
pub async fn list_files(
    CallerThen(who, params): CallerThen<web::Query<ListRequest>>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let page = service.list(&who, params.into_inner()).await?;
    let list = FileList {
        files: page.files,
        next_cursor: page.next_cursor,
    };
    // A page is mostly strings to escape: the SIMD encoder does that several
    // times faster than serde_json, for the same JSON.
    let body = sonic_rs::to_vec(&list).map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(body))
}

problem_responses!(
    /// The problems `DELETE /v1/files/{id}` answers with.
    DeleteFileProblems: Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse deleting this \
            file; a device deleting in the shared root",
        NotFound, Unavailable
);

/// Delete a file: the object is removed and the file marked deleted (idempotent).
#[utoipa::path(
    delete, path = "/v1/files/{id}", tag = "files",
    params(("id" = String, Path, description = "File id (UUID)")),
    responses(
        (status = 204, description = "Deleted"),
        DeleteFileProblems,
    ),
    security(("bearer" = []))
)]
pub async fn delete_file(
    CallerThen(who, FileIdParam(id)): CallerThen<FileIdParam>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    service.delete(&who, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
