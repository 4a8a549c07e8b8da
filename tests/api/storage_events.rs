//! `POST /v1/storage-events/{backend}`: real event documents, in the formats MinIO,
//! S3 (SNS, EventBridge) and Azure Event Grid post, complete pending uploads.

use serde_json::{json, Value};
use valet::configuration::{Secret, Settings, StorageEventSettings};

use crate::helpers::{assert_problem, body_of, spawn_app_with, TestApp};

const SECRET: &str = "storage-events-test-secret";

fn with_storage_events(s: &mut Settings) {
    s.storage_events.insert(
        "local".into(),
        StorageEventSettings {
            secret: Secret::new(SECRET),
        },
    );
}

/// A fixture with its placeholders filled for the object of `created`.
fn fixture(name: &str, created: &Value, size: usize) -> String {
    let path = format!(
        "{}/tests/fixtures/storage-events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let url = url::Url::parse(created["upload"]["url"].as_str().expect("url")).expect("url");
    let key = url
        .path()
        .trim_start_matches("/v1/objects/local/")
        .to_owned();
    text.replace("{{BUCKET}}", "valet-objects")
        .replace("{{KEY_ENCODED}}", &key.replace('/', "%2F"))
        .replace("{{KEY}}", &key)
        .replace("{{SIZE}}", &size.to_string())
}

async fn post(app: &TestApp, secret: Option<&str>, body: String) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/v1/storage-events/local"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(secret) = secret {
        request = request.bearer_auth(secret);
    }
    request.send().await.expect("storage event request")
}

async fn outcomes(response: reqwest::Response) -> Vec<String> {
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("results");
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["outcome"].as_str().expect("outcome").to_owned())
        .collect()
}

/// A file whose bytes were PUT but whose device never called complete.
async fn stored_not_completed(app: &TestApp, token: &str, bytes: &[u8]) -> Value {
    let created = app.create_ok(token, bytes, json!({})).await;
    let put = app.send_signed(&created["upload"], bytes.to_vec()).await;
    assert_eq!(put.status().as_u16(), 200);
    created
}

async fn status_of(app: &TestApp, token: &str, created: &Value) -> String {
    let id = created["file"]["id"].as_str().expect("id");
    let file: Value = app.get_file(token, id).await.json().await.expect("file");
    file["status"].as_str().expect("status").to_owned()
}

async fn events_for(app: &TestApp, created: &Value) -> usize {
    let id = created["file"]["id"].as_str().expect("id");
    app.outbox()
        .await
        .iter()
        .filter(|e| e.file_id == id)
        .count()
}

#[actix_web::test]
async fn every_supported_envelope_completes_a_pending_upload_once() {
    let app = spawn_app_with(with_storage_events).await;
    let token = app.device_token("acme", "dev-42");
    for name in [
        "minio-put.json",
        "s3-sns-notification.json",
        "s3-eventbridge.json",
        "eventgrid-blob-created.json",
    ] {
        let bytes = body_of(300);
        let created = stored_not_completed(&app, &token, &bytes).await;
        let document = fixture(name, &created, bytes.len());
        assert_eq!(
            outcomes(post(&app, Some(SECRET), document.clone()).await).await,
            ["completed"],
            "{name}"
        );
        assert_eq!(
            status_of(&app, &token, &created).await,
            "uploaded",
            "{name}"
        );
        // A duplicate delivery changes nothing.
        assert_eq!(
            outcomes(post(&app, Some(SECRET), document).await).await,
            ["already_uploaded"],
            "{name}"
        );
        assert_eq!(events_for(&app, &created).await, 1, "{name}");
    }
}

#[actix_web::test]
async fn a_wrong_or_missing_secret_is_refused_and_nothing_is_processed() {
    let app = spawn_app_with(with_storage_events).await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(64);
    let created = stored_not_completed(&app, &token, &bytes).await;
    let document = fixture("minio-put.json", &created, bytes.len());
    for secret in [None, Some("storage-events-test-secreT"), Some("")] {
        let response = post(&app, secret, document.clone()).await;
        assert_problem(response, 401, "unauthenticated").await;
    }
    assert_eq!(status_of(&app, &token, &created).await, "pending");
}

#[actix_web::test]
async fn malformed_documents_are_refused_with_400() {
    let app = spawn_app_with(with_storage_events).await;
    for body in [
        "{not json".to_owned(),
        json!({"hello": "world"}).to_string(),
        json!({"Records": "nope"}).to_string(),
        json!({"Type": "SubscriptionConfirmation", "SubscribeURL": "https://example.com"})
            .to_string(),
    ] {
        let response = post(&app, Some(SECRET), body.clone()).await;
        assert_problem(response, 400, "invalid_request").await;
    }
}

#[actix_web::test]
async fn a_batch_processes_good_records_and_reports_the_rest() {
    let app = spawn_app_with(with_storage_events).await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(128);
    let created = stored_not_completed(&app, &token, &bytes).await;
    let mut document: Value =
        serde_json::from_str(&fixture("minio-put.json", &created, bytes.len())).expect("json");
    let good = document["Records"][0].clone();
    let mut unknown = good.clone();
    unknown["s3"]["object"]["key"] =
        json!("somebody%2Felse%2F01a2066f-315a-76cf-9ee6-c4831d846806");
    let mut removed = good.clone();
    removed["eventName"] = json!("s3:ObjectRemoved:Delete");
    let broken = json!({"eventName": "s3:ObjectCreated:Put", "s3": {}});
    document["Records"] = json!([broken, good, unknown, removed]);

    let response = post(&app, Some(SECRET), document.to_string()).await;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("results");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results[0]["outcome"], "malformed");
    assert!(results[0]["detail"].is_string());
    assert_eq!(results[1]["outcome"], "completed");
    assert_eq!(results[1]["file_id"], created["file"]["id"]);
    assert_eq!(results[2]["outcome"], "unknown");
    assert_eq!(results[3]["outcome"], "ignored");
    assert_eq!(status_of(&app, &token, &created).await, "uploaded");
}

#[actix_web::test]
async fn an_event_before_the_object_is_visible_leaves_the_file_pending_for_the_reconciler() {
    let app = spawn_app_with(|s| {
        with_storage_events(s);
        s.uploads.upload_url_ttl_secs = 2;
        s.reconciler.interval_secs = 1;
        s.reconciler.grace_secs = 0;
    })
    .await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(256);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let document = fixture("minio-put.json", &created, bytes.len());
    assert_eq!(
        outcomes(post(&app, Some(SECRET), document).await).await,
        ["not_yet_visible"]
    );
    assert_eq!(status_of(&app, &token, &created).await, "pending");

    // The object shows up; the reconciler finishes the file.
    let put = app.send_signed(&created["upload"], bytes).await;
    assert_eq!(put.status().as_u16(), 200);
    let id = created["file"]["id"].as_str().expect("id");
    app.wait_for_file(&token, id, |f| f["status"] == "uploaded")
        .await;
    assert_eq!(events_for(&app, &created).await, 1);
}

#[actix_web::test]
async fn complete_racing_the_storage_event_makes_one_transition() {
    let app = spawn_app_with(with_storage_events).await;
    let token = app.device_token("acme", "dev-42");
    for _ in 0..5 {
        let bytes = body_of(1000);
        let created = stored_not_completed(&app, &token, &bytes).await;
        let id = created["file"]["id"].as_str().expect("id");
        let document = fixture("minio-put.json", &created, bytes.len());
        let (completed, event) =
            tokio::join!(app.complete(&token, id), post(&app, Some(SECRET), document));
        assert_eq!(completed.status().as_u16(), 200);
        let outcome = outcomes(event).await;
        assert!(
            outcome == ["completed"] || outcome == ["already_uploaded"],
            "{outcome:?}"
        );
        assert_eq!(events_for(&app, &created).await, 1);
    }
}

#[actix_web::test]
async fn concurrent_deliveries_of_one_event_report_one_completion() {
    let app = spawn_app_with(with_storage_events).await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(1000);
    let created = stored_not_completed(&app, &token, &bytes).await;
    let document = fixture("minio-put.json", &created, bytes.len());
    let deliveries =
        futures_util::future::join_all((0..4).map(|_| post(&app, Some(SECRET), document.clone())))
            .await;
    let mut reported = Vec::new();
    for delivery in deliveries {
        reported.extend(outcomes(delivery).await);
    }
    reported.sort();
    assert_eq!(
        reported,
        [
            "already_uploaded",
            "already_uploaded",
            "already_uploaded",
            "completed"
        ]
    );
    assert_eq!(events_for(&app, &created).await, 1);
}

#[actix_web::test]
async fn event_grid_validation_is_answered_and_unconfigured_backends_are_not_found() {
    let app = spawn_app_with(with_storage_events).await;
    let path = format!(
        "{}/tests/fixtures/storage-events/eventgrid-subscription-validation.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let handshake = std::fs::read_to_string(path).expect("fixture");
    let response = post(&app, None, handshake).await;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["validationResponse"],
        "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    );

    // The CloudEvents webhook handshake.
    let response = app
        .client
        .request(
            reqwest::Method::OPTIONS,
            app.url("/v1/storage-events/local"),
        )
        .header("webhook-request-origin", "eventgrid.azure.net")
        .send()
        .await
        .expect("options");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["webhook-allowed-origin"],
        "eventgrid.azure.net"
    );

    let plain = crate::helpers::spawn_app().await;
    let response = plain
        .client
        .post(plain.url("/v1/storage-events/local"))
        .bearer_auth(SECRET)
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_problem(response, 404, "not_found").await;
}

#[actix_web::test]
async fn an_object_stored_after_its_file_was_deleted_is_removed_at_once() {
    let app = spawn_app_with(with_storage_events).await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(300);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let id = created["file"]["id"].as_str().expect("id");
    assert_eq!(app.delete(&token, id).await.status().as_u16(), 204);
    // What a store that cannot revoke the upload URL does with a replayed PUT.
    let url = url::Url::parse(created["upload"]["url"].as_str().expect("url")).expect("url");
    let key = url.path().trim_start_matches("/v1/objects/local/");
    let path = app.data_dir.path().join("objects").join(key);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, &bytes).expect("plant the object");

    let document = fixture("minio-put.json", &created, bytes.len());
    assert_eq!(
        outcomes(post(&app, Some(SECRET), document.clone()).await).await,
        ["orphan_removed"]
    );
    assert!(!path.exists(), "the object was removed");
    assert_eq!(status_of(&app, &token, &created).await, "deleted");
    // A second delivery finds nothing left to remove.
    assert_eq!(
        outcomes(post(&app, Some(SECRET), document).await).await,
        ["finished"]
    );
}
