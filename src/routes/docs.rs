//! `/openapi.json` (generated from the handlers and types) and the `/docs` page.

use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::{files, health, objects, storage_events};

/// The OpenAPI description of valet's HTTP API.
#[derive(OpenApi)]
#[openapi(
    info(title = "valet", description = "Multi-tenant valet-key files service for device fleets. \
        Errors are RFC 9457 application/problem+json with a stable `code`."),
    paths(
        files::create_file, files::list_files, files::get_file, files::complete_file,
        files::download_file, files::delete_file,
        objects::put_object, objects::get_object,
        storage_events::storage_events,
        health::healthz, health::readyz, health::render_metrics,
    ),
    components(schemas(
        crate::domain::File, crate::domain::FileStatus,
        crate::service::CreateUpload, files::CreatedUpload, files::SignedRequestBody, files::FileList,
        health::Health, crate::problem::Problem, crate::problem::ErrorCode,
        storage_events::EventsProcessed, storage_events::EventResult,
        storage_events::ValidationResponse,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "files", description = "Uploads, downloads and file metadata"),
        (name = "local storage", description = "The local backend's data plane, authorized by URL signatures"),
        (name = "storage events", description = "Object-created notifications from storage, authenticated by a per-backend secret"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("biscuit".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/docs",
        web::get().to(|| async {
            HttpResponse::PermanentRedirect()
                .insert_header(("Location", "/docs/"))
                .finish()
        }),
    )
    .route(
        "/schemas/file-event.json",
        web::get().to(|| async {
            HttpResponse::Ok()
                .content_type("application/schema+json")
                .body(crate::events::FILE_EVENT_SCHEMA)
        }),
    )
    .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi()));
}
