//! `/v1/transfers`: offering an uploaded file to other devices of the tenant.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::docs::problem_responses;
use super::extract::{CallerThen, JsonBody, TransferIdParam};
use super::files::{download_answer, DownloadParams, SignedRequestBody};
use crate::domain::{FileId, Transfer};
use crate::problem::ApiError;
use crate::service::{FileService, SendRequest, TransferListRequest};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/transfers")
            .route(web::post().to(create_transfer))
            .route(web::get().to(list_transfers)),
    )
    .service(
        web::resource("/v1/transfers/{id}")
            .route(web::get().to(get_transfer))
            .route(web::delete().to(revoke_transfer)),
    )
    .service(web::resource("/v1/transfers/{id}/download").route(web::get().to(download_transfer)))
    .service(web::resource("/v1/transfers/{id}/accept").route(web::post().to(accept_transfer)));
}

/// Answer to `POST /v1/transfers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTransfer {
    /// The new transfer, `offered` to every recipient.
    pub transfer: Transfer,
}

/// Answer to `GET /v1/transfers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransferList {
    /// Transfers, newest first.
    pub transfers: Vec<Transfer>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The file a body names, read loosely so the caller is authorized for it
/// before the rest of the body is judged.
#[derive(Deserialize)]
struct NamedFile {
    file_id: FileId,
}

problem_responses!(
    /// The problems `POST /v1/transfers` answers with.
    CreateTransferProblems: InvalidRequest => "a missing, unknown or invalid field; `to` \
            empty, over 100 devices or naming the sender; `expires_in_secs` out of range",
        Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse reading the \
            file; a device sending a file of the shared root",
        TransferRefused => "some recipients do not accept files from the sending device \
            (`refused` lists them); nothing was created",
        NotFound => "no such file, or another device's or tenant's file",
        NotUploaded => "the file is not uploaded",
        PayloadTooLarge, UnsupportedMediaType, RateLimited, Unavailable
);

/// Offer an uploaded file to devices of the tenant.
///
/// The file's owner device or a service of its tenant may send it. Every
/// recipient must accept files from the sending device (its inbox's
/// `accept_from`); services may always send. Each recipient is told by an
/// `io.valet.transfer.offered` event.
#[utoipa::path(
    post, path = "/v1/transfers", tag = "transfers",
    request_body = SendRequest,
    responses(
        (status = 201, description = "Transfer created", body = CreatedTransfer,
            headers(("Location" = String, description = "`/v1/transfers/{id}` of the new transfer")),
            links(
                ("GetTransfer" = (operation_id = "get_transfer",
                    parameters(("id" = "$response.body#/transfer/id")))),
                ("DownloadTransfer" = (operation_id = "download_transfer",
                    parameters(("id" = "$response.body#/transfer/id")))),
                ("AcceptTransfer" = (operation_id = "accept_transfer",
                    parameters(("id" = "$response.body#/transfer/id")))),
                ("RevokeTransfer" = (operation_id = "revoke_transfer",
                    parameters(("id" = "$response.body#/transfer/id")))),
            )),
        CreateTransferProblems,
    ),
    security(("bearer" = []))
)]
pub async fn create_transfer(
    CallerThen(who, body): CallerThen<JsonBody>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let named = body
        .value()
        .filter(|value| value.is_object())
        .and_then(|value| NamedFile::deserialize(value).ok());
    let authorized = match named {
        Some(named) => Some(service.sendable_file(&who, named.file_id).await?),
        None => None,
    };
    let request: SendRequest = body.parse()?;
    // A body that parses names its file as the loose read did: authorized above.
    let file = match authorized {
        Some(file) => file,
        None => service.sendable_file(&who, request.file_id).await?,
    };
    let transfer = service.send(&who, file, request).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/transfers/{}", transfer.id)))
        .json(CreatedTransfer { transfer }))
}

problem_responses!(
    /// The problems `GET /v1/transfers` answers with.
    ListTransfersProblems: InvalidRequest => "an invalid parameter, a cursor this API did \
            not return, or `direction=in` from a service",
        Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse listing",
        RateLimited, Unavailable
);

/// List transfers, newest first, with keyset pagination.
///
/// A device lists those offered to it (`direction=in`, the default) or those it
/// sent (`direction=out`); a service lists every transfer of its tenant.
#[utoipa::path(
    get, path = "/v1/transfers", tag = "transfers",
    params(TransferListRequest),
    responses(
        (status = 200, description = "One page of transfers", body = TransferList),
        ListTransfersProblems,
    ),
    security(("bearer" = []))
)]
pub async fn list_transfers(
    CallerThen(who, params): CallerThen<web::Query<TransferListRequest>>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let page = service.list_transfers(&who, params.into_inner()).await?;
    Ok(HttpResponse::Ok().json(TransferList {
        transfers: page.transfers,
        next_cursor: page.next_cursor,
    }))
}

problem_responses!(
    /// The problems `GET /v1/transfers/{id}` answers with.
    GetTransferProblems: Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse reading",
        NotFound => "no such transfer, one the caller is no party to, or an id that is not \
            a UUID",
        RateLimited, Unavailable
);

/// A transfer: to its sender, its recipients and the tenant's services.
#[utoipa::path(
    get, path = "/v1/transfers/{id}", tag = "transfers",
    params(("id" = String, Path, description = "Transfer id (UUID)")),
    responses(
        (status = 200, description = "The transfer", body = Transfer),
        GetTransferProblems,
    ),
    security(("bearer" = []))
)]
pub async fn get_transfer(
    CallerThen(who, TransferIdParam(id)): CallerThen<TransferIdParam>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(service.transfer(&who, id).await?))
}

problem_responses!(
    /// The problems `GET /v1/transfers/{id}/download` answers with.
    DownloadTransferProblems: InvalidRequest => "`redirect` is not `true` or `false`",
        Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse reading",
        NotFound => "no such transfer, one the caller is no party to, or one that is revoked \
            or expired",
        NotUploaded, RateLimited, Unavailable
);

/// Sign a download of a transfer's file.
///
/// The same signed request `GET /v1/files/{id}/download` returns (resumable with
/// `Range`), while the transfer is neither revoked nor expired. A URL handed out
/// before a revocation keeps working until its own `expires_at`
/// (`uploads.download_url_ttl_secs`).
#[utoipa::path(
    get, path = "/v1/transfers/{id}/download", tag = "transfers",
    params(("id" = String, Path, description = "Transfer id (UUID)"), DownloadParams),
    responses(
        (status = 200, description = "The download to perform", body = SignedRequestBody),
        (status = 307, description = "Redirect to the signed URL (with redirect=true)",
            headers(("Location" = String, description = "The signed URL"))),
        DownloadTransferProblems,
    ),
    security(("bearer" = []))
)]
pub async fn download_transfer(
    CallerThen(who, (TransferIdParam(id), params)): CallerThen<(
        TransferIdParam,
        web::Query<DownloadParams>,
    )>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let signed = service.download_transfer(&who, id).await?;
    Ok(download_answer(signed, &params))
}

problem_responses!(
    /// The problems `POST /v1/transfers/{id}/accept` answers with.
    AcceptTransferProblems: Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse it; the caller \
            is the sender or a service, not a recipient",
        NotFound => "no such transfer, or one the caller is no party to",
        Conflict => "the transfer is revoked or expired",
        RateLimited, Unavailable
);

/// Accept a transfer: the calling recipient's state becomes `received` (idempotent).
#[utoipa::path(
    post, path = "/v1/transfers/{id}/accept", tag = "transfers",
    params(("id" = String, Path, description = "Transfer id (UUID)")),
    responses(
        (status = 200, description = "The transfer after the change", body = Transfer),
        AcceptTransferProblems,
    ),
    security(("bearer" = []))
)]
pub async fn accept_transfer(
    CallerThen(who, TransferIdParam(id)): CallerThen<TransferIdParam>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(service.accept(&who, id).await?))
}

problem_responses!(
    /// The problems `DELETE /v1/transfers/{id}` answers with.
    RevokeTransferProblems: Unauthenticated,
        Forbidden | ClientCertificateRequired => "the token's checks refuse it; the caller \
            is a recipient, not the sender",
        NotFound => "no such transfer, or one the caller is no party to",
        Conflict => "the transfer has expired",
        RateLimited, Unavailable
);

/// Revoke a transfer (its sender or a service; idempotent).
///
/// Later downloads answer 404. A download URL already handed out keeps working
/// until its own `expires_at`: signed URLs cannot be recalled.
#[utoipa::path(
    delete, path = "/v1/transfers/{id}", tag = "transfers",
    params(("id" = String, Path, description = "Transfer id (UUID)")),
    responses(
        (status = 204, description = "Revoked"),
        RevokeTransferProblems,
    ),
    security(("bearer" = []))
)]
pub async fn revoke_transfer(
    CallerThen(who, TransferIdParam(id)): CallerThen<TransferIdParam>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    service.revoke(&who, id).await?;
    Ok(HttpResponse::NoContent().finish())
}
