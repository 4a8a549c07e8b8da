//! `/openapi.json` (generated from the handlers and types) and the `/docs` page.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

use super::{batches, files, health, inboxes, jobs, objects, parts, storage_events, transfers};
use crate::problem::{ErrorCode, Problem};
use crate::service::CreateUpload;

/// The OpenAPI description of valet's HTTP API.
#[derive(OpenApi)]
#[openapi(
    info(title = "valet", description = "Multi-tenant valet-key files service for device fleets. \
        Errors are RFC 9457 application/problem+json with a stable `code`."),
    paths(
        files::create_file, files::list_files, files::get_file, files::complete_file,
        files::download_file, files::delete_file, parts::sign_parts, parts::list_parts,
        super::usage::get_usage,
        transfers::create_transfer, transfers::list_transfers, transfers::get_transfer,
        transfers::download_transfer, transfers::accept_transfer, transfers::revoke_transfer,
        inboxes::get_inbox, inboxes::put_inbox,
        batches::create_batch, batches::list_batches, batches::get_batch,
        batches::commit_batch, batches::abandon_batch,
        jobs::create_job, jobs::list_jobs, jobs::get_job, jobs::job_log, jobs::cancel_job,
        objects::put_object, objects::get_object, objects::head_object,
        storage_events::storage_events,
        health::healthz, health::readyz, health::render_metrics,
    ),
    components(schemas(
        crate::domain::File, crate::domain::FileStatus,
        crate::service::CreateUpload, files::CreatedUpload, files::UploadBody, files::MultipartBody,
        crate::service::UsagePage, crate::service::UsageReport, crate::service::DeviceUsage,
        files::SignedRequestBody, files::FileList, files::Verifying, parts::PartsRequest, parts::SignedParts,
        crate::service::PartRequest, crate::service::SignedPart, crate::service::PartsReport,
        crate::service::HeldPart,
        health::Health, crate::problem::Problem, crate::problem::ErrorCode,
        storage_events::EventsProcessed, storage_events::EventResult,
        storage_events::ValidationResponse,
        crate::domain::Transfer, crate::domain::TransferState, crate::domain::Recipient,
        crate::domain::TransferredFile, crate::domain::Inbox, crate::domain::AcceptFrom,
        crate::service::SendRequest, crate::service::InboxRequest, crate::service::Direction,
        transfers::CreatedTransfer, transfers::TransferList,
        crate::domain::Batch, crate::domain::BatchState, crate::service::CreateBatchRequest,
        batches::BatchList,
        crate::domain::Job, crate::domain::JobKind, crate::domain::JobState,
        crate::domain::Replica, crate::service::CreateJobRequest,
        crate::service::SelectorRequest, jobs::JobBody, jobs::JobGroup, jobs::JobList,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "files", description = "Uploads, downloads and file metadata"),
        (name = "transfers", description = "Files offered by one device (or a service) to other devices of the tenant, and each device's inbox allow list"),
        (name = "batches", description = "Many files delivered as one: uploaded into an open batch, announced together when it is committed"),
        (name = "jobs", description = "Copies and moves of files' objects between backends, run in the background (service tokens)"),
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

/// Declares a type listing the problem documents a route answers with, for its
/// `#[utoipa::path(responses(...))]`: one `application/problem+json` response per
/// status, described by its codes. Codes joined by `|` share the note after `=>`.
///
/// ```text
/// problem_responses!(
///     /// The problems of `POST /v1/files/{id}/complete`.
///     CompleteFileProblems: NotFound, SizeMismatch | ChecksumMismatch => "object deleted"
/// );
/// ```
macro_rules! problem_responses {
    (@note) => { None };
    (@note $note:literal) => { Some($note) };
    ($(#[$doc:meta])* $name:ident: $($($code:ident)|+ $(=> $note:literal)?),+ $(,)?) => {
        $(#[$doc])*
        struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::Response>,
            > {
                $crate::routes::docs::problem_responses_by_status(&[$(
                    $crate::routes::docs::ProblemCodes {
                        codes: &[$($crate::problem::ErrorCode::$code),+],
                        note: $crate::routes::docs::problem_responses!(@note $($note)?),
                    }
                ),+])
            }
        }
    };
}
pub(crate) use problem_responses;

/// Error codes documented together, with what they mean on this route.
pub(crate) struct ProblemCodes {
    /// The codes.
    pub codes: &'static [ErrorCode],
    /// Appended to their description, when the code alone does not say enough.
    pub note: Option<&'static str>,
}

/// One problem response per status among `entries`, described as its codes joined
/// by "or", then the notes.
pub(crate) fn problem_responses_by_status(
    entries: &[ProblemCodes],
) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, (Vec<&str>, Vec<&str>)> = BTreeMap::new();
    for entry in entries {
        for code in entry.codes {
            let (codes, notes) = by_status.entry(code.status().as_u16()).or_default();
            codes.push(code.as_str());
            if let Some(note) = entry.note.filter(|note| !notes.contains(note)) {
                notes.push(note);
            }
        }
    }
    by_status
        .into_iter()
        .map(|(status, (codes, notes))| {
            let mut description = codes.join(" or ");
            if !notes.is_empty() {
                description = format!("{description}: {}", notes.join("; "));
            }
            let problem = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(Problem::name())))
                .build();
            let mut response = ResponseBuilder::new()
                .description(description)
                .content("application/problem+json", problem);
            if let Some((name, header)) = problem_header(status) {
                response = response.header(name, header);
            }
            (status.to_string(), RefOr::T(response.build()))
        })
        .collect()
}

/// The header every problem answer with `status` carries (see `ApiError`).
fn problem_header(status: u16) -> Option<(&'static str, Header)> {
    let (name, description) = match status {
        401 => ("WWW-Authenticate", "`Bearer realm=\"valet\"`"),
        503 => ("Retry-After", "Seconds to wait before retrying: `1`"),
        _ => return None,
    };
    let header = HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build();
    Some((name, header))
}

/// The description as served: the generated one, plus what the configuration
/// decides (the largest declared file size).
pub fn served(max_upload_bytes: u64) -> serde_json::Result<serde_json::Value> {
    let mut document = serde_json::to_value(ApiDoc::openapi())?;
    let size = format!(
        "/components/schemas/{}/properties/size",
        CreateUpload::name()
    );
    if let Some(size) = document.pointer_mut(&size).and_then(|s| s.as_object_mut()) {
        size.insert("maximum".into(), max_upload_bytes.into());
    }
    if let Some(paths) = document.get_mut("paths") {
        camel_case_links(paths);
    }
    Ok(document)
}

/// utoipa 5 writes a link's fields as `operation_id`, `operation_ref` and
/// `request_body`; OpenAPI spells them `operationId`, `operationRef` and `requestBody`.
fn camel_case_links(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            if let Some(serde_json::Value::Object(links)) = fields.get_mut("links") {
                for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
                    for (snake, camel) in [
                        ("operation_id", "operationId"),
                        ("operation_ref", "operationRef"),
                        ("request_body", "requestBody"),
                    ] {
                        if let Some(v) = link.remove(snake) {
                            link.insert(camel.into(), v);
                        }
                    }
                }
            }
            fields.values_mut().for_each(camel_case_links);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(camel_case_links),
        _ => {}
    }
}

/// Serves `description` (see [`served`]) at `/openapi.json`, the page at `/docs/`,
/// and the event schemas.
pub fn configure(cfg: &mut web::ServiceConfig, description: serde_json::Value) {
    cfg.service(web::resource("/docs").route(web::get().to(|| async {
        HttpResponse::PermanentRedirect()
            .insert_header(("Location", "/docs/"))
            .finish()
    })))
    .service(event_schema("file-event", crate::events::FILE_EVENT_SCHEMA))
    .service(event_schema(
        "transfer-event",
        crate::events::TRANSFER_EVENT_SCHEMA,
    ))
    .service(event_schema(
        "batch-event",
        crate::events::BATCH_EVENT_SCHEMA,
    ))
    .service(event_schema("job-event", crate::events::JOB_EVENT_SCHEMA))
    .service(SwaggerUi::new("/docs/{_:.*}").external_url_unchecked("/openapi.json", description));
}

/// `GET /schemas/<name>.json`: one event schema.
fn event_schema(name: &str, schema: &'static str) -> actix_web::Resource {
    web::resource(format!("/schemas/{name}.json")).route(web::get().to(move || async move {
        HttpResponse::Ok()
            .content_type("application/schema+json")
            .body(schema)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_sharing_a_status_are_one_response_with_their_notes() {
        let responses = problem_responses_by_status(&[
            ProblemCodes {
                codes: &[ErrorCode::NotFound],
                note: None,
            },
            ProblemCodes {
                codes: &[ErrorCode::SizeMismatch, ErrorCode::ChecksumMismatch],
                note: Some("nothing stored"),
            },
        ]);
        let described: Vec<(&str, &str)> = responses
            .iter()
            .map(|(status, response)| match response {
                RefOr::T(response) => (status.as_str(), response.description.as_str()),
                RefOr::Ref(_) => panic!("{status}: a reference, not a response"),
            })
            .collect();
        assert_eq!(
            described,
            [
                ("404", "not_found"),
                ("422", "size_mismatch or checksum_mismatch: nothing stored"),
            ]
        );
        let RefOr::T(response) = &responses["422"] else {
            panic!("422: a reference, not a response");
        };
        let content = &response.content["application/problem+json"];
        assert!(matches!(
            &content.schema,
            Some(RefOr::Ref(r)) if r.ref_location == "#/components/schemas/Problem"
        ));
    }
}
