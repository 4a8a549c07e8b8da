//! The outermost middleware: request ids, one log line per request, HTTP metrics.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Instrument;

use super::metrics;
use crate::edge::{client_address, TrustedProxies};

/// The header carrying the request id in both directions.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being served.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn acceptable_request_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_owned())
}

/// Tags the request with an id (the caller's `X-Request-Id` or a new one), logs it
/// and records its metrics. Logs the path only: query strings of signed URLs carry
/// credentials.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let request_id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(acceptable_request_id)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = req.method().to_string();
    let client = match req.app_data::<actix_web::web::Data<TrustedProxies>>() {
        Some(trusted) => client_address(&req, trusted),
        None => client_address(&req, &TrustedProxies::default()),
    };
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %method,
        path = %req.path(),
        client_ip = %client.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        scheme = %client.scheme,
    );
    let start = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            // The request was consumed (e.g. cut off by its deadline): record what
            // the client will see.
            let status = error.as_response_error().status_code().as_u16();
            metrics::record_request(&method, "unmatched", status, elapsed);
            span.in_scope(|| {
                tracing::warn!(status, error = %error, latency_ms = elapsed.as_secs_f64() * 1000.0, "request failed")
            });
            return Err(error);
        }
    };
    let status = response.status().as_u16();
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    metrics::record_request(&method, &route, status, elapsed);
    span.in_scope(|| {
        tracing::info!(
            status,
            route = %route,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request completed"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    Ok(response)
}
