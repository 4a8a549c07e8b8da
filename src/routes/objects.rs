//! `/v1/objects/{backend}/{key}`: the local store's data plane. Devices PUT, GET and
//! HEAD here with the signed URLs valet issued; the signature, not a token, authorizes.

use actix_web::body::SizedStream;
use actix_web::http::header::{self, ContentRange, ContentRangeSpec, TryIntoHeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use bytes::Bytes;
use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;
use valet_backends::local::{DataPlaneError, DownloadGrant, LocalBackend, OpenObject};

use super::byte_ranges::{Selection, Validators};
use super::docs::problem_responses;
use crate::problem::{ApiError, ErrorCode};
use crate::service::FileService;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/objects/{backend}/{key:.+}")
            .route(web::put().to(put_object))
            .route(web::get().to(get_object))
            .route(web::head().to(head_object)),
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
        DataPlaneError::AlreadyStored => ApiError::new(
            ErrorCode::Conflict,
            "an object was stored with this URL already and is not replaced",
        ),
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
    PutObjectProblems: InvalidRequest => "`Content-Length` is not a number, or the upload \
            was interrupted; nothing stored",
        Forbidden => "tampered, foreign or expired URL, or the file was deleted, rejected \
            or expired: the URL no longer accepts uploads",
        Conflict => "an object was stored with this URL already (it is never replaced)",
        SizeMismatch | ChecksumMismatch => "nothing stored",
        Unavailable => "the store failed, or the transfer took longer than \
            `server.transfer_timeout_secs`"
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
    // A signature cannot be revoked; the file's status can say the URL is spent.
    service.admit_upload(&backend, &key).await?;
    local
        .receive(&grant, declared, body)
        .await
        .map_err(data_plane_error)?;
    // The file may have ended while the body was arriving.
    service.discard_if_ended(&backend, &key).await?;
    Ok(HttpResponse::Ok().finish())
}

problem_responses!(
    /// The problems `GET /v1/objects/{backend}/{key}` answers with.
    GetObjectProblems: Forbidden => "tampered or expired URL", NotFound => "the object is gone",
        RangeNotSatisfiable => "the range starts at or past the end of the object, is a \
            suffix of 0 bytes, or more than one range was asked for (one range per request); \
            `Content-Range: bytes */<size>` gives the object's length",
        Unavailable => "the store failed, or the transfer took longer than \
            `server.transfer_timeout_secs`"
);

/// Download bytes with a signed URL from `GET /v1/files/{id}/download` (local backend
/// only), whole or one byte range.
///
/// A `Range` header (`bytes=first-last`, `bytes=first-` or `bytes=-suffix`) is answered
/// with 206 and just those bytes, so an interrupted download resumes with
/// `Range: bytes=<bytes received>-`; adding `If-Range: <ETag>` makes sure the
/// remainder comes from the same object (else the whole object comes, with 200).
/// A `Range` asking for more than one range is refused with 416 (ask for one at a
/// time); one that is not valid is ignored: the whole object, 200.
#[utoipa::path(
    get, path = "/v1/objects/{backend}/{key}", tag = "local storage",
    params(
        ("backend" = String, Path, description = "Local backend name"),
        ("key" = String, Path, description = "Object key (from the signed URL)"),
        ("expires" = i64, Query, description = "Expiry, Unix seconds (signed)"),
        ("content_type" = String, Query, description = "Response Content-Type (signed)"),
        ("filename" = String, Query, description = "Content-Disposition file name (signed)"),
        ("signature" = String, Query, description = "HMAC-SHA256 signature"),
        ("Range" = Option<String>, Header, description = "One byte range: `bytes=first-last`, \
            `bytes=first-` or `bytes=-suffix_length`. More than one range, or an invalid \
            value, is ignored (200, the whole object)"),
        ("If-Range" = Option<String>, Header, description = "The ETag (or Last-Modified) \
            of the object the range continues: the range is served only if it still \
            matches, else the whole object (200)"),
    ),
    responses(
        (status = 200, description = "The whole object", content_type = "application/octet-stream",
            headers(
                ("Content-Type" = String, description = "The signed content type"),
                ("Content-Disposition" = String, description = "`attachment` with the signed file name"),
                ("Content-Length" = u64, description = "The object's length"),
                ("Accept-Ranges" = String, description = "`bytes`"),
                ("ETag" = String, description = "`\"<SHA-256 hex>\"`, a strong validator"),
                ("Last-Modified" = String, description = "When the object was stored"),
            )),
        (status = 206, description = "The requested range of the object", content_type = "application/octet-stream",
            headers(
                ("Content-Range" = String, description = "`bytes first-last/size`"),
                ("Content-Length" = u64, description = "The range's length"),
                ("ETag" = String, description = "As for 200"),
                ("Last-Modified" = String, description = "As for 200"),
            )),
        GetObjectProblems,
    )
)]
pub async fn get_object(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let (grant, mut object) = open_signed(&req, path, &service).await?;
    let validators = Validators::new(object.sha256.as_ref(), object.modified);
    let size = object.size;
    match Selection::of_request(req.headers(), size, &validators) {
        Selection::Whole => Ok(object_headers(StatusCode::OK, &grant, &validators)
            .body(SizedStream::new(size, ReaderStream::new(object.file)))),
        Selection::Part { first, last } => {
            let length = last - first + 1;
            object
                .file
                .seek(std::io::SeekFrom::Start(first))
                .await
                .map_err(|e| data_plane_error(e.into()))?;
            let mut response = object_headers(StatusCode::PARTIAL_CONTENT, &grant, &validators);
            response.insert_header(ContentRange(ContentRangeSpec::Bytes {
                range: Some((first, last)),
                instance_length: Some(size),
            }));
            Ok(response.body(SizedStream::new(
                length,
                ReaderStream::new(object.file.take(length)),
            )))
        }
        refused @ (Selection::Unsatisfiable | Selection::MultipleRanges) => {
            let detail = if refused == Selection::MultipleRanges {
                "one byte range per request is served; ask for the ranges one by one".to_owned()
            } else {
                format!("the range selects no byte of this {size}-byte object")
            };
            let mut response =
                ApiError::new(ErrorCode::RangeNotSatisfiable, detail).error_response();
            let content_range = ContentRange(ContentRangeSpec::Bytes {
                range: None,
                instance_length: Some(size),
            });
            if let Ok(value) = content_range.try_into_value() {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            Ok(response)
        }
    }
}

problem_responses!(
    /// The problems `HEAD /v1/objects/{backend}/{key}` answers with (headers only).
    HeadObjectProblems: Forbidden => "tampered or expired URL", NotFound => "the object is gone",
        Unavailable => "the store failed"
);

/// The headers of a download of the object with a signed URL from
/// `GET /v1/files/{id}/download`, without its bytes (local backend only).
///
/// The signed download URL authorizes HEAD as well as GET. `Range` is ignored.
#[utoipa::path(
    head, path = "/v1/objects/{backend}/{key}", tag = "local storage",
    params(
        ("backend" = String, Path, description = "Local backend name"),
        ("key" = String, Path, description = "Object key (from the signed URL)"),
        ("expires" = i64, Query, description = "Expiry, Unix seconds (signed)"),
        ("content_type" = String, Query, description = "Response Content-Type (signed)"),
        ("filename" = String, Query, description = "Content-Disposition file name (signed)"),
        ("signature" = String, Query, description = "HMAC-SHA256 signature"),
    ),
    responses(
        (status = 200, description = "The headers a GET of the whole object answers with, no body",
            headers(
                ("Content-Type" = String, description = "The signed content type"),
                ("Content-Disposition" = String, description = "`attachment` with the signed file name"),
                ("Content-Length" = u64, description = "The object's length"),
                ("Accept-Ranges" = String, description = "`bytes`"),
                ("ETag" = String, description = "`\"<SHA-256 hex>\"`, a strong validator"),
                ("Last-Modified" = String, description = "When the object was stored"),
            )),
        HeadObjectProblems,
    )
)]
pub async fn head_object(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let (grant, object) = open_signed(&req, path, &service).await?;
    let validators = Validators::new(object.sha256.as_ref(), object.modified);
    // The declared length becomes Content-Length; the body itself is empty, so
    // nothing is read from the file.
    let no_bytes = futures_util::stream::empty::<Result<Bytes, std::io::Error>>();
    Ok(object_headers(StatusCode::OK, &grant, &validators)
        .body(SizedStream::new(object.size, no_bytes)))
}

/// Verifies a download URL (for GET or HEAD) and opens its object.
async fn open_signed(
    req: &HttpRequest,
    path: web::Path<(String, String)>,
    service: &FileService,
) -> Result<(DownloadGrant, OpenObject), ApiError> {
    let (backend, key) = path.into_inner();
    let local = local_backend(service, &backend)?;
    let grant = local
        .verify_download(&key, req.query_string(), Utc::now())
        .map_err(data_plane_error)?;
    let object = local.open(&grant).await.map_err(data_plane_error)?;
    Ok((grant, object))
}

/// The headers every answer with the object (or part of it) carries.
fn object_headers(
    status: StatusCode,
    grant: &DownloadGrant,
    validators: &Validators,
) -> HttpResponseBuilder {
    let mut response = HttpResponse::build(status);
    response
        .insert_header((header::CONTENT_TYPE, grant.content_type.clone()))
        .insert_header((
            header::CONTENT_DISPOSITION,
            valet_backends::content_disposition(&grant.filename),
        ))
        .insert_header((header::ACCEPT_RANGES, "bytes"));
    if let Some(etag) = &validators.etag {
        response.insert_header(header::ETag(etag.clone()));
    }
    if let Some(last_modified) = validators.last_modified {
        response.insert_header(header::LastModified(last_modified));
    }
    response
}
