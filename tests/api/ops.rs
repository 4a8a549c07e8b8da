//! Health, readiness, metrics and the API description.

use serde_json::{json, Value};

use crate::helpers::{body_of, sha256_hex, spawn_app, spawn_app_with, TestApp};

#[actix_web::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert!(health.headers().contains_key("x-request-id"));
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready,
        json!({"status": "ready", "checks": {"database": "ok", "cache:memory": "ok", "storage:local": "ok"}})
    );
}

#[actix_web::test]
async fn readiness_names_a_broken_backend() {
    let app = spawn_app().await;
    // Replace the store's directory with a file: nothing can be written there.
    let objects = app.data_dir.path().join("objects");
    std::fs::remove_dir_all(&objects).unwrap();
    std::fs::write(&objects, b"not a directory").unwrap();
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "unavailable");
    assert_eq!(problem["checks"]["database"], "ok");
    assert_ne!(problem["checks"]["storage:local"], "ok");
}

#[actix_web::test]
async fn readiness_answers_within_its_deadline_when_a_dependency_is_silent() {
    // A "Redis" that accepts connections and never answers, as a partition does.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    let app = crate::helpers::spawn_app_with(|s| {
        s.cache.url = Some(format!("redis://{address}"));
        s.cache.timeout_ms = 60_000;
        s.server.readiness_check_timeout_ms = 300;
    })
    .await;
    let response = app
        .client
        .get(app.url("/readyz"))
        .timeout(std::time::Duration::from_secs(20))
        .send()
        .await
        .expect("readiness answered");
    // The cache is optional: valet is ready, and says the cache did not answer.
    assert_eq!(response.status().as_u16(), 200);
    let ready: Value = response.json().await.unwrap();
    assert_eq!(
        ready["checks"]["cache:redis"], "no answer within 300 ms",
        "{ready}"
    );
    assert_eq!(ready["checks"]["database"], "ok");
    drop(silent);
}

#[actix_web::test]
async fn request_ids_are_echoed() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-abc-123");
}

#[actix_web::test]
async fn metrics_count_requests_and_file_operations() {
    let app = spawn_app_with(|s| s.metrics.per_device = true).await;
    let token = app.device_token("metrics-tenant", "dev-m");
    app.upload(&token, &body_of(10), json!({})).await;
    // Per tenant only unless asked for (a series per device is costly).
    let plain = spawn_app().await;
    let other = plain.device_token("metrics-plain", "dev-p");
    plain.upload(&other, &body_of(10), json!({})).await;
    let text = app.metrics_text().await;
    assert!(text.contains("valet_http_requests_total"), "{text}");
    assert!(
        text.contains("valet_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/v1/files/{id}/complete""#),
        "{text}"
    );
    assert!(
        text.contains(r#"valet_file_operations_total{operation="complete",tenant="metrics-tenant",device="dev-m"} 1"#),
        "{text}"
    );
    assert!(text.contains("valet_outbox_depth"), "{text}");
    assert!(
        text.contains(
            r#"valet_file_operations_total{operation="complete",tenant="metrics-plain"} 1"#
        ),
        "{text}"
    );
}

#[actix_web::test]
async fn the_api_is_described() {
    let app = spawn_app().await;
    let spec: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/files",
        "/v1/files/{id}",
        "/v1/files/{id}/complete",
        "/v1/files/{id}/download",
        "/healthz",
        "/readyz",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} missing");
    }
    for schema in [
        "File",
        "CreateFileBody",
        "CreatedUpload",
        "FileList",
        "Problem",
        "ErrorCode",
    ] {
        assert!(
            spec["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
    // The local store's downloads: HEAD, Range and the answers to it.
    let object = &spec["paths"]["/v1/objects/{backend}/{key}"];
    assert!(object["head"]["responses"]["200"].is_object(), "{object}");
    let get = &object["get"];
    for status in ["200", "206", "403", "404", "416"] {
        assert!(get["responses"][status].is_object(), "GET {status} missing");
    }
    let headers: Vec<&str> = get["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "header")
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(headers, ["Range", "If-Range"]);
    let docs = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status().as_u16(), 200);
    assert!(docs.text().await.unwrap().contains("swagger"));
}

async fn served_description(app: &TestApp) -> Value {
    app.client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[actix_web::test]
async fn the_description_states_what_the_server_enforces() {
    let app = spawn_app_with(|s| s.uploads.max_upload_bytes = 4096).await;
    let spec = served_description(&app).await;
    let schemas = &spec["components"]["schemas"];
    let body = &schemas["CreateFileBody"]["properties"];
    assert_eq!(body["size"]["minimum"], 1);
    assert_eq!(body["size"]["maximum"], 4096, "the configured limit");
    assert_eq!(body["sha256"]["pattern"], "^[0-9a-fA-F]{64}$");
    assert_eq!(body["part_size"]["minimum"], 1);
    assert_eq!(schemas["FileName"]["minLength"], 1);
    assert_eq!(schemas["FileName"]["maxLength"], 1024);
    assert_eq!(schemas["DeviceId"]["maxLength"], 128);
    assert_eq!(schemas["ContentType"]["maxLength"], 255);
    assert_eq!(schemas["FileMetadata"]["propertyNames"]["maxLength"], 128);
    let parts = &schemas["PartsRequest"]["properties"]["parts"];
    assert_eq!(
        (&parts["minItems"], &parts["maxItems"]),
        (&json!(1), &json!(100))
    );
    assert_eq!(schemas["PartRequest"]["properties"]["number"]["minimum"], 1);
    let limit = spec["paths"]["/v1/files"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(
        (&limit["schema"]["minimum"], &limit["schema"]["maximum"]),
        (&json!(1), &json!(1000))
    );

    // Every answer an operation gives is documented, with its headers.
    for (path, method, statuses) in [
        (
            "/v1/files",
            "post",
            &[
                "201", "400", "401", "403", "404", "409", "413", "415", "429", "503",
            ][..],
        ),
        (
            "/v1/batches",
            "post",
            &[
                "201", "400", "401", "403", "404", "413", "415", "429", "503",
            ],
        ),
        (
            "/v1/batches",
            "get",
            &["200", "400", "401", "403", "404", "429", "503"],
        ),
        (
            "/v1/batches/{id}",
            "get",
            &["200", "401", "403", "404", "429", "503"],
        ),
        (
            "/v1/batches/{id}",
            "delete",
            &["200", "401", "403", "404", "409", "429", "503"],
        ),
        (
            "/v1/batches/{id}/commit",
            "post",
            &["200", "401", "403", "404", "409", "429", "503"],
        ),
        (
            "/v1/files",
            "get",
            &["200", "400", "401", "403", "404", "503"],
        ),
        (
            "/v1/files/{id}",
            "get",
            &["200", "401", "403", "404", "503"],
        ),
        (
            "/v1/files/{id}",
            "delete",
            &["204", "401", "403", "404", "503"],
        ),
        (
            "/v1/files/{id}/complete",
            "post",
            &["200", "202", "401", "403", "404", "409", "422", "503"],
        ),
        (
            "/v1/files/{id}/download",
            "get",
            &["200", "307", "400", "401", "403", "404", "409", "503"],
        ),
        (
            "/v1/files/{id}/parts",
            "post",
            &[
                "200", "400", "401", "403", "404", "409", "413", "415", "503",
            ],
        ),
        (
            "/v1/files/{id}/parts",
            "get",
            &["200", "401", "403", "404", "409", "503"],
        ),
        (
            "/v1/objects/{backend}/{key}",
            "put",
            &["200", "400", "403", "409", "422", "503"],
        ),
        (
            "/v1/storage-events/{backend}",
            "post",
            &["200", "400", "401", "404", "413", "503"],
        ),
    ] {
        let responses = &spec["paths"][path][method]["responses"];
        let documented: Vec<&str> = responses
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path}: no responses"))
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(documented, statuses, "{method} {path}");
        if let Some(unauthenticated) = responses.get("401") {
            assert!(unauthenticated["headers"]["WWW-Authenticate"].is_object());
        }
        assert!(
            responses["503"]["headers"]["Retry-After"].is_object(),
            "{method} {path}"
        );
        for (status, response) in responses.as_object().unwrap() {
            if status.starts_with('4') || status.starts_with('5') {
                let problem = &response["content"]["application/problem+json"]["schema"];
                assert_eq!(
                    problem["$ref"], "#/components/schemas/Problem",
                    "{method} {path} {status}"
                );
            }
        }
    }
    // Links name their operations as OpenAPI spells it.
    let links = &spec["paths"]["/v1/files"]["post"]["responses"]["201"]["links"];
    assert_eq!(links["GetFile"]["operationId"], "get_file");
    assert_eq!(
        links["GetFile"]["parameters"]["id"],
        "$response.body#/file/id"
    );
}

/// Whether a create with `field` set to `value` is accepted (201) or refused (400).
async fn created_with(app: &TestApp, token: &str, field: &str, value: &str) -> bool {
    let mut body = json!({"name": "a.bin", "size": 3, "sha256": sha256_hex(b"abc")});
    body[field] = json!(value);
    let status = app.create(token, body).await.status().as_u16();
    assert!(
        status == 201 || status == 400,
        "{field} {value:?}: {status}"
    );
    status == 201
}

#[actix_web::test]
async fn what_the_description_allows_is_what_the_server_accepts() {
    let app = spawn_app().await;
    let spec = served_description(&app).await;
    let schema = |name: &str| {
        jsonschema::validator_for(&spec["components"]["schemas"][name]).expect("a valid schema")
    };
    let device = app.device_token("acme", "dev-42");
    let service = app.service_token("acme", "fleet");
    let long = |c: &str, n: usize| c.repeat(n);
    let cases: [(&str, &str, Vec<String>); 3] = [
        (
            "FileName",
            "name",
            [
                "a",
                "",
                "a\nb",
                "tab\there",
                "a\u{7f}",
                "x\u{85}y",
                "report\u{202E}fdp.exe",
                "\u{FEFF}a",
                "a\u{2069}",
                "ok\u{2070}",
                "\u{1F468}\u{200D}\u{1F469}",
                "../etc/passwd",
            ]
            .map(String::from)
            .into_iter()
            .chain([long("\u{e9}", 1024), long("\u{e9}", 1025), long("a", 1024)])
            .collect(),
        ),
        (
            "ContentType",
            "content_type",
            [
                "text/plain",
                "text/plain; charset=utf-8",
                "a/b;c=\"x y\"",
                "a/b\t;\tc=d",
                "a/b; c=\"\\\"\"",
                "a/b;",
                "a/b c",
                "\u{e9}/b",
                "text",
                "",
                "a/b; c=\"\u{e9}\"",
                "a/b\n",
                "*/*",
            ]
            .map(String::from)
            .into_iter()
            .chain([
                format!("a/{}", long("b", 253)),
                format!("a/{}", long("b", 254)),
            ])
            .collect(),
        ),
        (
            "DeviceId",
            "device_id",
            ["dev-42", "", "a/b", "x y", "a\u{9f}", "\u{e9}t\u{e9}"]
                .map(String::from)
                .into_iter()
                .chain([long("\u{e9}", 128), long("\u{e9}", 129)])
                .collect(),
        ),
    ];
    for (component, field, samples) in cases {
        let validator = schema(component);
        let token = if field == "device_id" {
            &service
        } else {
            &device
        };
        for sample in samples {
            assert_eq!(
                validator.is_valid(&json!(sample)),
                created_with(&app, token, field, &sample).await,
                "{component} {sample:?}: the description and the server disagree"
            );
        }
    }
}
