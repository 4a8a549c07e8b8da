//! `GET /v1/usage`: what the caller's tenant and devices hold against their quotas.

use actix_web::{web, HttpResponse};

use super::docs::problem_responses;
use super::extract::CallerThen;
use crate::problem::ApiError;
use crate::service::{FileService, UsagePage, UsageRequest};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/usage").route(web::get().to(get_usage)));
}

problem_responses!(
    /// The problems `GET /v1/usage` answers with.
    UsageProblems: InvalidRequest, Unauthenticated, Forbidden => "the token's checks refuse reading",
        RateLimited => "too many requests"
);

/// Usage and quotas: the tenant's totals and its device roots'. Used counts uploaded
/// files, reserved counts pending ones; limits are `null` when unlimited. A service
/// token sees every device of its tenant (paginated by device id), a device token
/// only itself.
#[utoipa::path(
    get, path = "/v1/usage", tag = "usage",
    params(UsageRequest),
    responses(
        (status = 200, description = "Usage of the tenant and its devices", body = UsagePage),
        UsageProblems,
    ),
    security(("bearer" = []))
)]
pub async fn get_usage(
    CallerThen(who, params): CallerThen<web::Query<UsageRequest>>,
    service: web::Data<FileService>,
) -> Result<HttpResponse, ApiError> {
    let page = service.usage(&who, params.into_inner()).await?;
    Ok(HttpResponse::Ok().json(page))
}
