//! `/v1/objects/{backend}/{key}`: the local store's data plane. Devices PUT and GET
//! here with the signed URLs valet issued; the signature, not a token, authorizes.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use tokio_util::io::ReaderStream;
use valet_backends::local::{DataPlaneError, LocalBackend};

use super::docs::problem_responses;
use crate::problem::{ApiError, ErrorCode};
use crate::service::FileService;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/objects/{backend}/{key:.+}")
            .route(web::put().to(put_object))
            .route(web::get().to(get_object)),
    );
}

fn data_plane_error(e: DataPlaneError) -> ApiError {
    match e {
        DataPlaneError::BadSignature => ApiError::new(
            ErrorCode::Forbidden,
            "the signature does not match this request",
        ),
        DataPlaneError::Expired => {
            ApiError::new(ErrorCode::Forbidden, "the signed URL has expired")
        }
        e @ DataPlaneError::SizeMismatch { .. } => {
            ApiError::new(ErrorCode::SizeMismatch, format!("{e}; nothing was stored"))
        }
        DataPlaneError::ChecksumMismatch => ApiError::new(
            ErrorCode::ChecksumMismatch,
            "the body's SHA-256 does not match the signed digest; nothing was stored",
        ),
        DataPlaneError::Interrupted(cause) => ApiError::invalid(format!(
            "the upload was interrupted ({cause}); nothing was stored"
        )),
        DataPlaneError::NotFound => ApiError::new(ErrorCode::NotFound, "no such object"),
        DataPlaneError::Storage(e) => ApiError::unavailable(format!("local storage: {e}")),
    }
}

fn local_backend<'a>(service: &'a FileService, name: &str) -> Result<&'a LocalBackend, ApiError> {
    // An unknown backend answers like a bad signature: nothing to learn from probing.
    service.storage().data_plane(name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Forbidden,
            "the signature does not match this request",
        )
    })
}

problem_responses!(
    /// The problems `PUT /v1/objects/{backend}/{key}` answers with.
    PutObjectProblems: Forbidden => "tampered, foreign or expired URL",
        SizeMismatch | ChecksumMismatch => "nothing stored"
);

/// Upload bytes with a signed URL from `POST /v1/files` (local backend only).
#[utoipa::path(
    put, path = "/v1/objects/{backend}/{key}", tag = "local storage",
    params(
        ("backend" = String, Path, description = "Local backend name"),
        ("key" = String, Path, description = "Object key (from the signed URL)"),
        ("expires" = i64, Query, description = "Expiry, Unix seconds (signed)"),
        ("size" = u64, Query, description = "Exact body length (signed)"),
        ("sha256" = String, Query, description = "Body SHA-256, hex (signed)"),
        ("signature" = String, Query, description = "HMAC-SHA256 signature"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Stored: the body had exactly the signed length and digest"),
        PutObjectProblems,
    )
)]
pub async fn put_object(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Payload,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let (backend, key) = path.into_inner();
    let local = local_backend(&service, &backend)?;
    let grant = local
        .verify_upload(&key, req.query_string(), Utc::now())
        .map_err(data_plane_error)?;
    let declared = match req.headers().get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| ApiError::invalid("Content-Length is not a number"))?,
        ),
    };
    local
        .receive(&grant, declared, body)
        .await
        .map_err(data_plane_error)?;
    Ok(HttpResponse::Ok().finish())
}

problem_responses!(
    /// The problems `GET /v1/objects/{backend}/{key}` answers with.
    GetObjectProblems: Forbidden => "tampered or expired URL", NotFound => "the object is gone"
);

/// Download bytes with a signed URL from `GET /v1/files/{id}/download` (local backend only).
#[utoipa::path(
    get, path = "/v1/objects/{backend}/{key}", tag = "local storage",
    params(
        ("backend" = String, Path, description = "Local backend name"),
        ("key" = String, Path, description = "Object key (from the signed URL)"),
        ("expires" = i64, Query, description = "Expiry, Unix seconds (signed)"),
        ("content_type" = String, Query, description = "Response Content-Type (signed)"),
        ("filename" = String, Query, description = "Content-Disposition file name (signed)"),
        ("signature" = String, Query, description = "HMAC-SHA256 signature"),
    ),
    responses(
        (status = 200, description = "The object", content_type = "application/octet-stream"),
        GetObjectProblems,
    )
)]
pub async fn get_object(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let (backend, key) = path.into_inner();
    let local = local_backend(&service, &backend)?;
    let grant = local
        .verify_download(&key, req.query_string(), Utc::now())
        .map_err(data_plane_error)?;
    let object = local.open(&grant).await.map_err(data_plane_error)?;
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::CONTENT_TYPE, grant.content_type.clone()))
        .insert_header((
            header::CONTENT_DISPOSITION,
            valet_backends::content_disposition(&grant.filename),
        ));
    response.no_chunking(object.size);
    Ok(response.streaming(ReaderStream::new(object.file)))
}
