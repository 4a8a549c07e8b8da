//! HTTP routes: the v1 API, the local store's data plane, and operations endpoints.

mod batches;
mod byte_ranges;
mod docs;
mod extract;
mod files;
mod health;
mod inboxes;
mod jobs;
mod objects;
mod parts;
mod storage_events;
mod transfers;
mod usage;

pub use docs::served as api_description;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage, HttpRequest, HttpResponse, ResponseError};

use crate::auth::Authenticated;
use crate::domain::Principal;
use crate::edge::VerifiedClientCertificate;
use crate::problem::{ApiError, ErrorCode};
use crate::service::FileService;
use crate::telemetry::RequestId;

/// Registers every route and the extractor error handlers.
pub fn configure(
    cfg: &mut web::ServiceConfig,
    json_limit: usize,
    api_description: serde_json::Value,
) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(json_limit)
            .error_handler(json_error),
    )
    .app_data(web::QueryConfig::default().error_handler(query_error))
    .app_data(web::PathConfig::default().error_handler(path_error))
    .configure(files::configure)
    .configure(transfers::configure)
    .configure(batches::configure)
    .configure(jobs::configure)
    .configure(inboxes::configure)
    .configure(usage::configure)
    .configure(objects::configure)
    .configure(storage_events::configure)
    .configure(health::configure)
    .configure(|cfg| docs::configure(cfg, api_description))
    .default_service(web::to(not_found));
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(ErrorCode::NotFound, "no such route"))
}

fn json_error(err: JsonPayloadError, _: &HttpRequest) -> Error {
    let api = match &err {
        JsonPayloadError::ContentType => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the request body must be application/json",
        ),
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
        }
        JsonPayloadError::Deserialize(e) => {
            ApiError::invalid(format!("the request body is not valid: {e}"))
        }
        other => ApiError::invalid(format!("the request body could not be read: {other}")),
    };
    api.into()
}

fn query_error(err: QueryPayloadError, _: &HttpRequest) -> Error {
    ApiError::invalid(format!("invalid query string: {err}")).into()
}

fn path_error(_: PathError, _: &HttpRequest) -> Error {
    ApiError::new(ErrorCode::NotFound, "no such route").into()
}

/// Gives every error the same shape: error responses produced by the framework
/// itself (405, 404 from guards, …) become problem documents, and every problem
/// document carries the request's id, so a report can be matched with the logs.
pub async fn problem_for_bare_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let response = next.call(req).await?;
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return Ok(response.map_into_boxed_body());
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    let (req, response) = response.into_parts();
    let response = if is_problem {
        response.map_into_boxed_body()
    } else {
        let code = ErrorCode::for_status(status);
        let detail = status.canonical_reason().unwrap_or("error").to_lowercase();
        let mut problem = ApiError::new(code, detail).error_response();
        if let Some(allow) = response.headers().get(header::ALLOW) {
            problem.headers_mut().insert(header::ALLOW, allow.clone());
        }
        problem
    };
    let request_id = req.extensions().get::<RequestId>().map(|id| id.0.clone());
    let (head, body) = response.into_parts();
    let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
    let mut document: serde_json::Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| serde_json::json!({}));
    if let (Some(id), Some(fields)) = (request_id, document.as_object_mut()) {
        fields.insert("request_id".into(), id.into());
    }
    let body = serde_json::to_vec(&document).unwrap_or_else(|_| bytes.to_vec());
    let mut problem = head.set_body(BoxBody::new(body));
    problem.headers_mut().remove(header::CONTENT_LENGTH);
    Ok(ServiceResponse::new(req, problem))
}

/// The verified caller of `req`. With a client CA configured, tenant services
/// must also have presented a client certificate it verified (mutual TLS).
pub(crate) async fn caller(
    req: &HttpRequest,
    service: &FileService,
) -> Result<Authenticated, ApiError> {
    let who = service.authenticate(bearer(req)).await?;
    let is_service = matches!(who.identity.principal, Principal::Service(_));
    if is_service
        && service.requires_client_certificates()
        && req.conn_data::<VerifiedClientCertificate>().is_none()
    {
        let refusal = ApiError::new(
            ErrorCode::ClientCertificateRequired,
            "service tokens are accepted only over mutual TLS: present a client certificate",
        );
        return Err(service.unless_expired(&who, refusal));
    }
    Ok(who)
}

/// The token from `Authorization: Bearer <token>`.
pub(crate) fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
