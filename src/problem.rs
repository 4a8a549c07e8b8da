//! API errors as RFC 9457 `application/problem+json`, each with a stable `code`.

use std::fmt;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use http_api_problem::HttpApiProblem;
use serde::Serialize;
use utoipa::ToSchema;

/// The stable, machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 401: no valid, unexpired token from a trusted key.
    Unauthenticated,
    /// 403: the caller may see the target but not do this.
    Forbidden,
    /// 403: a tenant service called without a verified client certificate (mutual TLS).
    ClientCertificateRequired,
    /// 404: no such file (or not visible to the caller), or no such route.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 400: the request is malformed or a field is invalid.
    InvalidRequest,
    /// 409: the file is not in a state that allows this (e.g. completing a rejected file).
    Conflict,
    /// 413: the body (or declared file size) is too large.
    PayloadTooLarge,
    /// 415: the request body is not JSON.
    UnsupportedMediaType,
    /// 408: the request head did not arrive in time (`server.request_head_timeout_secs`).
    RequestTimeout,
    /// 431: the request line and headers are too large.
    HeadersTooLarge,
    /// 409: completion was asked for but no object was stored.
    UploadMissing,
    /// 409: a download was asked for a file that is not uploaded.
    NotUploaded,
    /// 422: the stored object's length differs from the declared size.
    SizeMismatch,
    /// 422: the stored object's SHA-256 differs from the declared digest.
    ChecksumMismatch,
    /// 400: a parts request names a part number below 1 or above the part count.
    InvalidPart,
    /// 409: completion was asked for with parts missing (`missing_parts` lists them).
    UploadIncomplete,
    /// 409: a batch was committed with files not uploaded (`files` lists them).
    BatchIncomplete,
    /// 422: a stored part has the wrong length for its position, or other bytes
    /// than declared; the file is `rejected`.
    PartMismatch,
    /// 416: the requested byte range lies outside the object.
    RangeNotSatisfiable,
    /// 403: a new file would exceed a quota (`limit` names it: `max_bytes`,
    /// `max_files`, `device_max_bytes` or `device_max_files`).
    QuotaExceeded,
    /// 403: a recipient of a transfer does not accept files from the sender
    /// (`refused` lists them); nothing was created.
    TransferRefused,
    /// 429: the tenant or device made too many requests; `Retry-After` says when to
    /// try again.
    RateLimited,
    /// 503: a dependency (database, storage) is unavailable; retry later.
    Unavailable,
    /// 500: a bug; the log has details under the request id.
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden
            | ErrorCode::ClientCertificateRequired
            | ErrorCode::QuotaExceeded
            | ErrorCode::TransferRefused => StatusCode::FORBIDDEN,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Conflict
            | ErrorCode::UploadMissing
            | ErrorCode::NotUploaded
            | ErrorCode::UploadIncomplete
            | ErrorCode::BatchIncomplete => StatusCode::CONFLICT,
            ErrorCode::InvalidPart => StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::SizeMismatch | ErrorCode::ChecksumMismatch | ErrorCode::PartMismatch => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ErrorCode::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code as it appears in responses.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::ClientCertificateRequired => "client_certificate_required",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::UploadMissing => "upload_missing",
            ErrorCode::NotUploaded => "not_uploaded",
            ErrorCode::SizeMismatch => "size_mismatch",
            ErrorCode::ChecksumMismatch => "checksum_mismatch",
            ErrorCode::InvalidPart => "invalid_part",
            ErrorCode::UploadIncomplete => "upload_incomplete",
            ErrorCode::BatchIncomplete => "batch_incomplete",
            ErrorCode::PartMismatch => "part_mismatch",
            ErrorCode::RangeNotSatisfiable => "range_not_satisfiable",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::TransferRefused => "transfer_refused",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The code answering a bare HTTP status (for errors raised by the framework).
    pub fn for_status(status: StatusCode) -> Self {
        match status.as_u16() {
            401 => ErrorCode::Unauthenticated,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            408 => ErrorCode::RequestTimeout,
            409 => ErrorCode::Conflict,
            413 => ErrorCode::PayloadTooLarge,
            415 => ErrorCode::UnsupportedMediaType,
            416 => ErrorCode::RangeNotSatisfiable,
            431 => ErrorCode::HeadersTooLarge,
            503 => ErrorCode::Unavailable,
            s if s >= 500 => ErrorCode::Internal,
            _ => ErrorCode::InvalidRequest,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The problem document, as documented in the OpenAPI description.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// `urn:valet:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem kind.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Id of the request (as in `X-Request-Id` and the logs).
    pub request_id: Option<String>,
}

/// An error answered to an API client.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: ErrorCode,
    detail: String,
    /// Extension members of the problem document (RFC 9457 §3.2).
    members: Vec<(&'static str, serde_json::Value)>,
    /// Seconds for `Retry-After`, when not the default of the code.
    retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with `code` and a human-readable `detail`.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            members: Vec::new(),
            retry_after_secs: None,
        }
    }

    /// Answers with `Retry-After: secs`.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// Its code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// Adds an extension member to the problem document.
    pub fn with_member(mut self, name: &'static str, value: serde_json::Value) -> Self {
        self.members.push((name, value));
        self
    }

    /// The problem document, serialized.
    pub fn problem_json(&self) -> Vec<u8> {
        self.problem().json_bytes()
    }

    fn problem(&self) -> HttpApiProblem {
        let status = self.code.status();
        let problem_status = http_api_problem::StatusCode::from_u16(status.as_u16())
            .unwrap_or(http_api_problem::StatusCode::INTERNAL_SERVER_ERROR);
        let problem = HttpApiProblem::new(problem_status)
            .type_url(format!("urn:valet:problem:{}", self.code))
            .title(status.canonical_reason().unwrap_or("Error"))
            .detail(self.detail.clone())
            .value("code", &self.code.as_str());
        self.members.iter().fold(problem, |problem, (name, value)| {
            problem.value(*name, value)
        })
    }

    /// 400 `invalid_request`.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, detail)
    }

    /// 404 `not_found` for a file.
    pub fn file_not_found() -> Self {
        Self::new(ErrorCode::NotFound, "no such file")
    }

    /// 500 `internal`; the cause is logged, not shown.
    pub fn internal(cause: impl fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "an internal error occurred")
    }

    /// 503 `unavailable`; the cause is logged and named.
    pub fn unavailable(cause: impl fmt::Display) -> Self {
        tracing::warn!(error = %cause, "dependency unavailable");
        Self::new(ErrorCode::Unavailable, cause.to_string())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = self.problem().to_actix_response();
        let headers = response.headers_mut();
        match self.code {
            ErrorCode::Unauthenticated => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"valet\""),
                );
            }
            ErrorCode::Unavailable | ErrorCode::RateLimited => {
                let secs = self.retry_after_secs.unwrap_or(1);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            _ => {}
        }
        response
    }
}

// How internal failures reach HTTP: every conversion lives here, so the mapping from
// errors to statuses and codes is read in one place.

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::unavailable(format!("internal worker unavailable: {e}"))
    }
}

impl From<crate::metadata::StoreError> for ApiError {
    fn from(e: crate::metadata::StoreError) -> Self {
        use crate::metadata::StoreError;
        match e {
            StoreError::Unavailable(cause) => {
                ApiError::unavailable(format!("database unavailable: {cause}"))
            }
            StoreError::Internal(cause) => ApiError::internal(cause),
            StoreError::QuotaExceeded(limit) => ApiError::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "this file would exceed the {} quota (pending files count)",
                    limit.as_str()
                ),
            )
            .with_member("limit", serde_json::Value::from(limit.as_str())),
        }
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        use crate::storage::StorageError;
        match e {
            // A record naming a backend that was removed from the configuration.
            e @ StorageError::UnknownBackend(_) => ApiError::internal(e),
            e @ StorageError::Backend {
                error: valet_backends::BackendError::Config(_),
                ..
            } => ApiError::internal(e),
            e @ StorageError::Backend { .. } => ApiError::unavailable(e),
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError;
        match e {
            AuthError::Unauthenticated(d) => ApiError::new(ErrorCode::Unauthenticated, d),
            AuthError::Forbidden(d) => ApiError::new(ErrorCode::Forbidden, d),
            AuthError::Busy(d) => ApiError::unavailable(d),
        }
    }
}

/// `complete`'s answer: the file once uploaded, else the problem saying why not.
pub fn completion_answer(
    completion: crate::domain::Completion,
) -> Result<crate::domain::Completed, ApiError> {
    use crate::domain::{Completed, Completion};
    match completion {
        Completion::Uploaded(file) | Completion::AlreadyUploaded(file) => {
            Ok(Completed::Uploaded(*file))
        }
        Completion::Verifying(file) => Ok(Completed::Verifying(*file)),
        Completion::Missing => Err(ApiError::new(
            ErrorCode::UploadMissing,
            "no object has been uploaded for this file yet",
        )),
        Completion::PartsMissing(missing) => Err(ApiError::new(
            ErrorCode::UploadIncomplete,
            format!("{} parts have not been uploaded yet", missing.len()),
        )
        .with_member("missing_parts", serde_json::json!(missing))),
        Completion::SizeMismatch { stored, declared } => Err(ApiError::new(
            ErrorCode::SizeMismatch,
            format!("the stored object is {stored} bytes; {declared} were declared"),
        )),
        Completion::ChecksumMismatch => Err(ApiError::new(
            ErrorCode::ChecksumMismatch,
            "the stored object's SHA-256 differs from the declared one",
        )),
        Completion::PartMismatch(detail) => Err(ApiError::new(ErrorCode::PartMismatch, detail)),
        Completion::Finished(status) => Err(ApiError::new(
            ErrorCode::Conflict,
            format!("the file is {status} and cannot be completed"),
        )),
    }
}
