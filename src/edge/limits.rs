//! Bounded work: at most `max_in_flight` requests at once (beyond it an immediate
//! 503 with `Retry-After`, never an unbounded queue) and a deadline per request.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error, ResponseError};
use tokio::sync::Semaphore;

use crate::problem::{ApiError, ErrorCode};

/// Paths that stay outside the limits: probes and scrapes must answer under load.
const UNLIMITED: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// The request limits shared by every worker.
#[derive(Debug, Clone)]
pub struct Limits {
    in_flight: Arc<Semaphore>,
    request_timeout: Duration,
    transfer_timeout: Duration,
}

impl Limits {
    /// Limits with the given bounds.
    pub fn new(
        max_in_flight: usize,
        request_timeout: Duration,
        transfer_timeout: Duration,
    ) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            request_timeout,
            transfer_timeout,
        }
    }
}

/// Applies [`Limits`] (from app data) to every request but the operations probes.
pub async fn enforce_limits(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(limits) = req.app_data::<web::Data<Limits>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if UNLIMITED.contains(&req.path()) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let Ok(_permit) = limits.in_flight.clone().try_acquire_owned() else {
        crate::telemetry::metrics::record_overload();
        let response = ApiError::new(
            ErrorCode::Unavailable,
            "valet is at its limit of requests in flight; retry shortly",
        )
        .error_response();
        return Ok(req.into_response(response));
    };
    // Object transfers through the local store move whole files: they get longer.
    let deadline = if req.path().starts_with("/v1/objects/") {
        limits.transfer_timeout
    } else {
        limits.request_timeout
    };
    // A timed-out request has been consumed by the handler: the error travels up as
    // an `Err` and actix-web renders it as the problem document.
    match tokio::time::timeout(deadline, next.call(req)).await {
        Ok(response) => Ok(response?.map_into_boxed_body()),
        Err(_) => Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("the request took longer than {}s", deadline.as_secs()),
        )
        .into()),
    }
}
