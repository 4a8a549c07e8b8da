//! Every rejection path answers problem+json with its stable code.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, body_of, sha256_hex, spawn_app, spawn_app_with};

fn valid_body() -> serde_json::Value {
    json!({"name": "a.bin", "size": 3, "sha256": sha256_hex(b"abc")})
}

#[actix_web::test]
async fn requests_without_a_usable_token_are_unauthenticated() {
    let app = spawn_app().await;
    let no_token = app.client.get(app.url("/v1/files")).send().await.unwrap();
    assert!(no_token.headers().contains_key("www-authenticate"));
    assert_problem(no_token, 401, "unauthenticated").await;
    for header in ["Bearer not-a-token", "Basic dXNlcjpwYXNz", "Bearer "] {
        let response = app
            .client
            .get(app.url("/v1/files"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_problem(response, 401, "unauthenticated").await;
    }
}

#[actix_web::test]
async fn malformed_bodies_are_4xx_problems() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let post = |body: Vec<u8>, content_type: &'static str| {
        app.client
            .post(app.url("/v1/files"))
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_problem(
        post(b"{not json".to_vec(), "application/json")
            .await
            .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert_problem(
        post(valid_body().to_string().into_bytes(), "text/plain")
            .await
            .unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    let huge =
        json!({"name": "a", "size": 1, "sha256": sha256_hex(b"a"), "pad": "x".repeat(70_000)});
    assert_problem(
        post(huge.to_string().into_bytes(), "application/json")
            .await
            .unwrap(),
        413,
        "payload_too_large",
    )
    .await;
    let mut unknown = valid_body();
    unknown["colour"] = json!("red");
    assert_problem(app.create(&token, unknown).await, 400, "invalid_request").await;
    assert_problem(
        app.create(&token, json!({"name": "a"})).await,
        400,
        "invalid_request",
    )
    .await;
    // The fields in order, as an array: only an object is a create body.
    let as_array = json!(["a.bin", 3, sha256_hex(b"abc"), null, null, null, null]);
    assert_problem(app.create(&token, as_array).await, 400, "invalid_request").await;
    assert_problem(
        app.create(
            &token,
            json!({"name": "a", "size": -1, "sha256": sha256_hex(b"")}),
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
}

#[actix_web::test]
async fn invalid_fields_are_invalid_requests() {
    let app = spawn_app_with(|s| s.uploads.max_upload_bytes = 1024).await;
    let token = app.device_token("acme", "dev-42");
    let with = |field: &str, value: serde_json::Value| {
        let mut body = valid_body();
        body[field] = value;
        body
    };
    let cases = [
        with("name", json!("")),
        with("name", json!("bad\nname")),
        with("name", json!("nul\u{0}")),
        with("name", json!("a".repeat(1025))),
        with("name", json!("\u{e9}".repeat(1025))),
        // Shown as "reportexe.pdf": bidirectional controls and invisible formatting.
        with("name", json!("report\u{202E}fdp.exe")),
        with("name", json!("a\u{2066}b\u{2069}")),
        with("name", json!("zero\u{200B}width")),
        with("size", json!(0)),
        with("sha256", json!("abc")),
        with("sha256", json!("z".repeat(64))),
        with("content_type", json!("not a type")),
        with("content_type", json!("text/plain;")),
        with("content_type", json!("text/pl\u{e9}in")),
        with("metadata", json!({"k": "v".repeat(9000)})),
        with("metadata", json!({"": "v"})),
    ];
    for body in cases {
        let response = app.create(&token, body.clone()).await;
        assert_eq!(response.status().as_u16(), 400, "{body}");
        assert_problem(response, 400, "invalid_request").await;
    }
    assert_problem(
        app.create(&token, with("size", json!(1025))).await,
        413,
        "payload_too_large",
    )
    .await;
    // Lengths count characters, as the OpenAPI description's maxLength does.
    assert_eq!(
        app.create(&token, with("name", json!("\u{e9}".repeat(1024))))
            .await
            .status()
            .as_u16(),
        201
    );
    // Emoji sequences keep their zero-width joiners.
    assert_eq!(
        app.create(
            &token,
            with("name", json!("\u{1F468}\u{200D}\u{1F469}.jpg"))
        )
        .await
        .status()
        .as_u16(),
        201
    );
    // The limit itself is accepted.
    assert_eq!(
        app.create(&token, with("size", json!(1024)))
            .await
            .status()
            .as_u16(),
        201
    );
}

#[actix_web::test]
async fn names_are_metadata_and_never_reach_storage_paths() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(5);
    let file = app
        .upload(&token, &bytes, json!({"name": "../../../../etc/passwd"}))
        .await;
    assert_eq!(file["name"], "../../../../etc/passwd");
    for path in app.stored_objects() {
        assert!(
            path.starts_with(app.data_dir.path().join("objects")),
            "{path:?}"
        );
        assert!(!path.to_string_lossy().contains("passwd"));
    }
    assert_eq!(app.fetch(&token, file["id"].as_str().unwrap()).await, bytes);
}

#[actix_web::test]
async fn roots_must_be_named_correctly() {
    let app = spawn_app().await;
    let device = app.device_token("acme", "dev-42");
    let service = app.service_token("acme", "fleet");
    let mut other_device = valid_body();
    other_device["device_id"] = json!("dev-7");
    assert_problem(
        app.create(&device, other_device.clone()).await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.create(&service, valid_body()).await,
        400,
        "invalid_request",
    )
    .await;
    let mut both = other_device.clone();
    both["shared"] = json!(true);
    assert_problem(app.create(&service, both).await, 400, "invalid_request").await;
    let mut bad_device = valid_body();
    bad_device["device_id"] = json!("a/b");
    assert_problem(
        app.create(&service, bad_device).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(
        app.create(&service, other_device).await.status().as_u16(),
        201
    );
}

#[actix_web::test]
async fn unknown_files_and_bad_queries() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_problem(app.get_file(&token, &unknown).await, 404, "not_found").await;
    assert_problem(app.complete(&token, &unknown).await, 404, "not_found").await;
    assert_problem(app.download(&token, &unknown).await, 404, "not_found").await;
    assert_problem(app.delete(&token, &unknown).await, 404, "not_found").await;
    assert_problem(app.get_file(&token, "not-a-uuid").await, 404, "not_found").await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=garbage",
        "status=lost",
        "device_id=dev-42&shared=true",
    ] {
        let response = app.list(&token, query).await;
        assert_eq!(response.status().as_u16(), 400, "{query}");
        assert_problem(response, 400, "invalid_request").await;
    }
}

#[actix_web::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/v2/nothing")).send().await.unwrap();
    assert_problem(response, 404, "not_found").await;
    let response = app.client.patch(app.url("/v1/files")).send().await.unwrap();
    assert!(response.headers().contains_key("allow"));
    assert_problem(response, 405, "method_not_allowed").await;
    // The operational routes too: another method is 405 with Allow, not 404.
    for path in ["/healthz", "/readyz", "/metrics", "/docs"] {
        let response = app.client.post(app.url(path)).send().await.unwrap();
        assert_eq!(response.headers()["allow"], "GET", "{path}");
        assert_problem(response, 405, "method_not_allowed").await;
    }
}

#[actix_web::test]
async fn callers_are_authenticated_before_anything_else_is_read() {
    let app = spawn_app().await;
    // No token, or one valet cannot verify (checked off the worker, so it used to
    // lose the race to a malformed id or query): who is asking comes first.
    for authorization in [None, Some("Bearer not-a-token")] {
        let with_auth = |request: reqwest::RequestBuilder| match authorization {
            Some(value) => request.header("authorization", value),
            None => request,
        };
        for path in [
            "/v1/files/not-a-uuid",
            "/v1/files/not-a-uuid/download",
            "/v1/files/not-a-uuid/parts",
            "/v1/files?limit=x",
            "/v1/files?cursor=garbage",
            "/v1/files/01a206b0-d69e-70cc-a904-2e8cbbeb8417/download?redirect=null",
        ] {
            let response = with_auth(app.client.get(app.url(path)))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 401, "{path} {authorization:?}");
            assert_problem(response, 401, "unauthenticated").await;
        }
        for path in ["/v1/files", "/v1/files/not-a-uuid/parts"] {
            let response = with_auth(app.client.post(app.url(path)))
                .header("content-type", "application/json")
                .body("{not json")
                .send()
                .await
                .unwrap();
            assert_problem(response, 401, "unauthenticated").await;
        }
        let response = with_auth(app.client.delete(app.url("/v1/files/not-a-uuid")))
            .send()
            .await
            .unwrap();
        assert_problem(response, 401, "unauthenticated").await;
    }
}

#[actix_web::test]
async fn paths_that_are_not_utf_8_are_problems() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    for path in ["/v1/files/%FF%FE", "/v1/%C0%AF", "/%FF"] {
        let response = app
            .client
            .get(app.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_problem(response, 404, "not_found").await;
    }
    // Without a token, the file routes still ask who is calling first.
    let response = app
        .client
        .get(app.url("/v1/files/%FF"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "unauthenticated").await;
}

#[actix_web::test]
async fn integers_may_carry_a_zero_fraction() {
    // JSON Schema, and so the OpenAPI description, counts 3.0 as the integer 3.
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let mut body = valid_body();
    body["size"] = json!(3.0);
    let created = app.create(&token, body.clone()).await;
    assert_eq!(created.status().as_u16(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!(created["file"]["size"], 3);
    body["size"] = json!(3.5);
    assert_problem(app.create(&token, body).await, 400, "invalid_request").await;
}

/// Sends `request` as raw bytes and reads the whole answer (valet closes after it):
/// the status, the `Content-Type` and the body.
async fn raw_exchange(app: &crate::helpers::TestApp, request: &[u8]) -> (u16, String, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = reqwest::Url::parse(&app.url("/")).expect("url");
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", url.port().expect("port")))
        .await
        .expect("connect");
    // The server may answer and close before reading everything we send.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    let problem = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, content_type, problem)
}

#[actix_web::test]
async fn requests_the_http_parser_refuses_are_problems() {
    let app = spawn_app().await;
    // More headers than the parser takes (sent whole, so the answer is not lost to a
    // reset of a half-read connection).
    let headers: String = (0..100).map(|n| format!("X-H{n}: v\r\n")).collect();
    let big_header = format!("GET /healthz HTTP/1.1\r\nHost: v\r\n{headers}\r\n");
    let cases: [(&[u8], u16, &str); 5] = [
        (b"GARBAGE\r\n\r\n", 400, "invalid_request"),
        (
            b"GET /healthz HTTP/1.1\r\nHost: v\r\nContent-Length: abc\r\n\r\n",
            400,
            "invalid_request",
        ),
        (
            b"POST /v1/files HTTP/1.1\r\nHost: v\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "invalid_request",
        ),
        (
            b"GET /healthz HTTP/9.9\r\nHost: v\r\n\r\n",
            400,
            "invalid_request",
        ),
        (big_header.as_bytes(), 431, "headers_too_large"),
    ];
    for (request, status, code) in cases {
        let shown = String::from_utf8_lossy(&request[..request.len().min(60)]).into_owned();
        let (answered, content_type, problem) = raw_exchange(&app, request).await;
        assert_eq!(answered, status, "{shown:?}");
        assert_eq!(content_type, "application/problem+json", "{shown:?}");
        assert_eq!(problem["status"], status, "{shown:?}");
        assert_eq!(problem["code"], code, "{shown:?}");
        assert_eq!(problem["type"], format!("urn:valet:problem:{code}"));
    }
    // A well-formed request on the same server is answered as before.
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[actix_web::test]
async fn a_request_head_that_never_arrives_is_a_408_problem() {
    let app = spawn_app_with(|s| s.server.request_head_timeout_secs = 1).await;
    let (status, content_type, problem) = raw_exchange(&app, b"GET /healthz HTTP/1.1\r\n").await;
    assert_eq!(status, 408);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["code"], "request_timeout");
}

#[actix_web::test]
async fn a_file_holding_the_parsers_own_answer_downloads_unchanged() {
    // The rewrite of the parser's answers must never touch a body.
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let bytes = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let file = app.upload(&token, bytes, json!({})).await;
    let id = file["id"].as_str().expect("id");
    for _ in 0..5 {
        assert_eq!(app.fetch(&token, id).await, bytes);
    }
}
