//! `/v1/devices/{device}/inbox`: whom a device accepts transferred files from.

use actix_web::{web, HttpResponse};

use super::docs::problem_responses;
use super::extract::{CallerThen, DeviceParam, JsonBody};
use crate::domain::{Inbox, Operation};
use crate::problem::ApiError;
use crate::service::{FileService, InboxRequest};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/devices/{device}/inbox")
            .route(web::get().to(get_inbox))
            .route(web::put().to(put_inbox)),
    );
}

problem_responses!(
    /// The problems `GET /v1/devices/{device}/inbox` answers with.
    GetInboxProblems: Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse reading there",
        NotFound => "another device's inbox, or a path segment that is no device id",
        RateLimited, Unavailable
);

/// A device's inbox: whom it accepts files from.
///
/// The device itself or a service of its tenant may read it.
#[utoipa::path(
    get, path = "/v1/devices/{device}/inbox", tag = "transfers",
    params(("device" = String, Path, description = "Device id")),
    responses(
        (status = 200, description = "The inbox", body = Inbox),
        GetInboxProblems,
    ),
    security(("bearer" = []))
)]
pub async fn get_inbox(
    CallerThen(who, DeviceParam(device)): CallerThen<DeviceParam>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    service.authorize_inbox(&who, &device, Operation::Read)?;
    Ok(HttpResponse::Ok().json(service.inbox(&who, device).await?))
}

problem_responses!(
    /// The problems `PUT /v1/devices/{device}/inbox` answers with.
    PutInboxProblems: InvalidRequest => "`accept_from` missing, neither \"*\" nor a list of \
            device ids, or listing more than 1000; an unknown field",
        Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse writing there, \
            whatever the body holds",
        NotFound => "another device's inbox, or a path segment that is no device id",
        PayloadTooLarge, UnsupportedMediaType, RateLimited, Unavailable
);

/// Set whom a device accepts files from.
///
/// `"*"`: any device of the tenant; a list: those devices; `[]` (the default):
/// none. Services of the tenant may always send. The device itself or a service
/// of its tenant may set it; the caller is authorized before the body is judged.
#[utoipa::path(
    put, path = "/v1/devices/{device}/inbox", tag = "transfers",
    params(("device" = String, Path, description = "Device id")),
    request_body = InboxRequest,
    responses(
        (status = 200, description = "The inbox as set", body = Inbox),
        PutInboxProblems,
    ),
    security(("bearer" = []))
)]
pub async fn put_inbox(
    CallerThen(who, (DeviceParam(device), body)): CallerThen<(DeviceParam, JsonBody)>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    service.authorize_inbox(&who, &device, Operation::Write)?;
    let request: InboxRequest = body.parse()?;
    Ok(HttpResponse::Ok().json(service.set_inbox(&who, device, request).await?))
}
