//! `POST /v1/storage-events/{backend}`: object-created notifications from storage
//! (MinIO webhooks, S3 via SNS or EventBridge, Azure Event Grid) complete pending
//! uploads whose devices never called `complete`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::bearer;
use super::docs::problem_responses;
use crate::problem::{ApiError, ErrorCode};
use crate::service::FileService;
use crate::storage_events::{self, Document, DocumentError, StorageEvent};
use crate::telemetry::metrics;

/// Event Grid batches reach 1 MB; S3 and MinIO documents are far smaller.
const BODY_LIMIT: usize = 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/storage-events/{backend}")
            .app_data(web::PayloadConfig::new(BODY_LIMIT))
            .route(web::post().to(storage_events))
            .route(web::method(actix_web::http::Method::OPTIONS).to(webhook_handshake)),
    );
}

/// The result for one entry of the posted document.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventResult {
    /// Position of the entry in the document.
    pub index: usize,
    /// `completed`, `verifying`, `already_uploaded`, `rejected`, `not_yet_visible`,
    /// `finished`, `orphan_removed` (the file had ended; the object put under its
    /// key was removed), `unknown` (not an object valet issued), `ignored` (not a
    /// creation) or `malformed`.
    pub outcome: String,
    /// The file concerned, when valet knows the object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    /// Why a malformed entry was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Answer to a posted document.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsProcessed {
    /// One result per entry, in order.
    pub results: Vec<EventResult>,
}

/// Azure Event Grid's validation answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationResponse {
    /// The code Event Grid sent.
    #[serde(rename = "validationResponse")]
    pub validation_response: String,
}

problem_responses!(
    /// The problems `POST /v1/storage-events/{backend}` answers with.
    StorageEventsProblems: InvalidRequest => "not a storage event document",
        Unauthenticated => "missing or wrong secret",
        NotFound => "storage events are not enabled for this backend",
        PayloadTooLarge => "the body is over 256 KiB",
        Unavailable => "storage or database down; the store should deliver again"
);

/// Accept storage event notifications for one backend.
#[utoipa::path(
    post, path = "/v1/storage-events/{backend}", tag = "storage events",
    params(("backend" = String, Path, description = "Configured backend name")),
    request_body(content = Object, description = "S3/MinIO event notification, SNS notification, EventBridge event, or Azure Event Grid events"),
    responses(
        (status = 200, description = "Every entry processed (see each result), or Event Grid's validation answer", body = EventsProcessed),
        StorageEventsProblems,
    ),
    security(("bearer" = []))
)]
pub async fn storage_events(
    req: HttpRequest,
    backend: web::Path<String>,
    body: web::Bytes,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let backend = backend.into_inner();
    let Some(settings) = service.settings().storage_events.get(&backend) else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "storage events are not enabled for this backend",
        ));
    };
    let document: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the body is not JSON: {e}")))?;
    let parsed = storage_events::parse(&document).map_err(|e| match e {
        DocumentError::Unrecognised(_) | DocumentError::SnsSubscriptionConfirmation => {
            ApiError::invalid(e.to_string())
        }
    });
    // Event Grid's handshake only echoes a code back, and may arrive without the
    // delivery headers: it is answered unauthenticated. Nothing else is.
    if let Ok(Document::ValidationHandshake(code)) = &parsed {
        tracing::info!(%backend, "answered an Event Grid subscription validation");
        return Ok(HttpResponse::Ok().json(ValidationResponse {
            validation_response: code.clone(),
        }));
    }
    let secret = settings.secret.expose().as_bytes();
    let authenticated =
        bearer(&req).is_some_and(|token| bool::from(token.as_bytes().ct_eq(secret)));
    if !authenticated {
        metrics::record_storage_event(&backend, "unauthenticated");
        return Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "storage events need Authorization: Bearer <the backend's storage event secret>",
        ));
    }
    let Document::Events(events) = parsed? else {
        return Err(ApiError::invalid("unexpected document"));
    };
    let mut results = Vec::with_capacity(events.len());
    for (index, event) in events.into_iter().enumerate() {
        let result = match event {
            StorageEvent::Created(object) => {
                let outcome = service.object_created(&backend, &object).await?;
                EventResult {
                    index,
                    outcome: outcome.as_str().into(),
                    file_id: outcome.file_id().map(|id| id.to_string()),
                    detail: None,
                }
            }
            StorageEvent::Other(kind) => EventResult {
                index,
                outcome: "ignored".into(),
                file_id: None,
                detail: Some(format!("{kind} is not an object creation")),
            },
            StorageEvent::Malformed(why) => EventResult {
                index,
                outcome: "malformed".into(),
                file_id: None,
                detail: Some(why),
            },
        };
        metrics::record_storage_event(&backend, &result.outcome);
        results.push(result);
    }
    Ok(HttpResponse::Ok().json(EventsProcessed { results }))
}

/// The CloudEvents webhook validation handshake (Event Grid's CloudEvents schema).
pub async fn webhook_handshake(req: HttpRequest) -> HttpResponse {
    let origin = req
        .headers()
        .get("webhook-request-origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*")
        .to_owned();
    HttpResponse::Ok()
        .insert_header(("webhook-allowed-origin", origin))
        .insert_header((header::ALLOW, "POST, OPTIONS"))
        .finish()
}
