//! Operations endpoints: liveness, readiness and metrics.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use http_api_problem::HttpApiProblem;
use serde::Serialize;
use utoipa::ToSchema;

use super::docs::problem_responses;
use crate::metadata::Ping;
use crate::notifier::BrokerStatus;
use crate::service::FileService;
use crate::telemetry::metrics;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Resources, not bare routes: another method answers 405 with `Allow`, not 404.
    cfg.service(web::resource("/healthz").route(web::get().to(healthz)))
        .service(web::resource("/readyz").route(web::get().to(readyz)))
        .service(web::resource("/metrics").route(web::get().to(render_metrics)));
}

/// Liveness and readiness answers.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
    /// Each dependency checked, with `ok` or the error.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, String>,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
        checks: BTreeMap::new(),
    })
}

problem_responses!(
    /// The problem `GET /readyz` answers with.
    ReadinessProblems: Unavailable => "a dependency is down; `checks` names it"
);

/// The database and every storage backend answer.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        ReadinessProblems,
    ))]
pub async fn readyz(service: web::Data<FileService>) -> HttpResponse {
    let checks = readiness(&service).await;
    let failing: Vec<String> = checks
        .iter()
        .filter(|c| c.required && c.error.is_some())
        .map(|c| c.name.clone())
        .collect();
    let report: BTreeMap<String, String> = checks
        .into_iter()
        .map(|c| (c.name, c.error.unwrap_or_else(|| "ok".into())))
        .collect();
    if failing.is_empty() {
        return HttpResponse::Ok().json(Health {
            status: "ready".into(),
            checks: report,
        });
    }
    HttpApiProblem::new(http_api_problem::StatusCode::SERVICE_UNAVAILABLE)
        .type_url("urn:valet:problem:unavailable")
        .title("Service Unavailable")
        .detail(format!("unavailable: {}", failing.join(", ")))
        .value("code", &"unavailable")
        .value("checks", &report)
        .to_actix_response()
}

/// State of one dependency, for `/readyz`.
#[derive(Debug, Clone)]
struct Check {
    /// What was checked (`database`, `cache`, `storage:<name>`).
    name: String,
    /// `None` when healthy, else why not.
    error: Option<String>,
    /// Whether valet cannot serve without it (the cache is optional: the
    /// database answers when it is down).
    required: bool,
}

/// Checks the database, the broker, the cache and every storage backend.
async fn readiness(service: &FileService) -> Vec<Check> {
    let mut checks = Vec::new();
    let database = match service.store.send(Ping).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    checks.push(Check {
        name: "database".into(),
        error: database,
        required: true,
    });
    // Events wait in the outbox while the broker is away: reported, not required.
    if let Ok(Some(broker)) = service.notifier.send(BrokerStatus).await {
        checks.push(Check {
            name: "broker".into(),
            error: broker.err(),
            required: false,
        });
    }
    checks.push(Check {
        name: format!("cache:{}", service.cache.kind()),
        error: service.cache.ping().await.err(),
        required: false,
    });
    for name in service.storage.names() {
        checks.push(Check {
            name: format!("storage:{name}"),
            error: service
                .storage
                .probe(name)
                .await
                .err()
                .map(|e| e.to_string()),
            required: true,
        });
    }
    checks
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn render_metrics() -> HttpResponse {
    match metrics::handle() {
        Some(handle) => {
            handle.run_upkeep();
            HttpResponse::Ok()
                .content_type("text/plain; version=0.0.4")
                .body(handle.render())
        }
        None => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(""),
    }
}
