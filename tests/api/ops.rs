//! Health, readiness, metrics and the API description.

use serde_json::{json, Value};

use crate::helpers::{body_of, spawn_app, spawn_app_with};

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
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
