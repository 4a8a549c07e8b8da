//! Operations endpoints: liveness, readiness and metrics.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use futures_util::future::LocalBoxFuture;
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
    /// What was checked (`database`, `cache`, `storage:<name>`, `key_set`,
    /// `jwks:<issuer>`).
    name: String,
    /// `None` when healthy, else why not.
    error: Option<String>,
    /// Whether valet cannot serve without it (the cache is optional: the
    /// database answers when it is down).
    required: bool,
}

/// Checks the database, the broker, the cache and every storage backend, at once,
/// each within `server.readiness_check_timeout_ms`: a dependency that does not
/// answer (a partition drops packets) is reported as timed out, never waited for.
/// Published key sets are reported as their last fetch went.
async fn readiness(service: &FileService) -> Vec<Check> {
    let deadline = service.settings.server.readiness_check_timeout();
    let database = async {
        match service.store.send(Ping).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    };
    let mut pending: Vec<LocalBoxFuture<'_, Check>> = vec![
        Box::pin(within(deadline, "database".into(), true, database)),
        Box::pin(within(
            deadline,
            format!("cache:{}", service.cache.kind()),
            false,
            service.cache.ping(),
        )),
    ];
    for name in service.storage.names() {
        let probe = async move { service.storage.probe(name).await.map_err(|e| e.to_string()) };
        pending.push(Box::pin(within(
            deadline,
            format!("storage:{name}"),
            true,
            probe,
        )));
    }
    let mut checks = futures_util::future::join_all(pending).await;
    // Published keys: a source that cannot be fetched is reported, never required —
    // the keys held from before, and every other source, still verify tokens.
    for (name, status) in service.auth.key_fetch_status() {
        checks.push(Check {
            name,
            error: status.err(),
            required: false,
        });
    }
    // Events wait in the outbox while the broker is away: reported, not required.
    if let Ok(Ok(Some(broker))) =
        tokio::time::timeout(deadline, service.notifier.send(BrokerStatus)).await
    {
        checks.push(Check {
            name: "broker".into(),
            error: broker.err(),
            required: false,
        });
    }
    checks
}

/// Runs one dependency check (`Err(why)` when unusable) within `deadline`.
async fn within(
    deadline: std::time::Duration,
    name: String,
    required: bool,
    check: impl std::future::Future<Output = Result<(), String>>,
) -> Check {
    let error = match tokio::time::timeout(deadline, check).await {
        Ok(result) => result.err(),
        Err(_) => Some(format!("no answer within {} ms", deadline.as_millis())),
    };
    Check {
        name,
        error,
        required,
    }
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
