//! The local store's data plane: signed PUT/GET, served by valet itself.

use chrono::{Duration, Utc};
use serde_json::{json, Value};
use valet_backends::local::LocalBackend;
use valet_backends::{Backend, ObjectKey, Sha256, UploadSpec};

use crate::helpers::{assert_problem, body_of, spawn_app, TestApp};

/// The object key inside a signed URL.
fn key_of(upload: &Value) -> String {
    let url = url::Url::parse(upload["url"].as_str().unwrap()).unwrap();
    url.path()
        .trim_start_matches("/v1/objects/local/")
        .to_owned()
}

fn with_url(signed: &Value, url: String) -> Value {
    let mut copy = signed.clone();
    copy["url"] = json!(url);
    copy
}

fn without_content_length(signed: &Value) -> Value {
    let mut copy = signed.clone();
    copy["headers"]
        .as_object_mut()
        .unwrap()
        .remove("content-length");
    copy
}

async fn assert_nothing_stored(app: &TestApp, token: &str, id: &str) {
    assert!(
        app.stored_objects().is_empty(),
        "{:?}",
        app.stored_objects()
    );
    assert_problem(app.complete(token, id).await, 409, "upload_missing").await;
}

#[actix_web::test]
async fn a_short_long_or_corrupted_body_is_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(1000);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let id = created["file"]["id"].as_str().unwrap();
    let upload = without_content_length(&created["upload"]);

    let short = app.send_signed(&upload, bytes[..999].to_vec()).await;
    assert_problem(short, 422, "size_mismatch").await;
    assert_nothing_stored(&app, &token, id).await;

    let mut long = bytes.clone();
    long.push(0);
    assert_problem(app.send_signed(&upload, long).await, 422, "size_mismatch").await;
    assert_nothing_stored(&app, &token, id).await;

    let mut flipped = bytes.clone();
    flipped[500] ^= 0x01;
    assert_problem(
        app.send_signed(&upload, flipped).await,
        422,
        "checksum_mismatch",
    )
    .await;
    assert_nothing_stored(&app, &token, id).await;

    // A body streamed without a length is counted as it arrives.
    let mut chunked_long = bytes.clone();
    chunked_long.extend_from_slice(&[1, 2, 3]);
    let stream = futures_util::stream::iter(
        chunked_long
            .chunks(100)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let response = app
        .client
        .put(upload["url"].as_str().unwrap())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "size_mismatch").await;
    assert_nothing_stored(&app, &token, id).await;

    // The right bytes still go through afterwards.
    assert_eq!(
        app.send_signed(&created["upload"], bytes).await.status(),
        200
    );
    assert_eq!(app.complete(&token, id).await.status(), 200);
}

#[actix_web::test]
async fn tampered_urls_are_forbidden() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(100);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let upload = &created["upload"];
    let url = upload["url"].as_str().unwrap().to_owned();
    let other = app.create_ok(&token, &body_of(100), json!({})).await;
    let other_key = key_of(&other["upload"]);

    let tampered = [
        url.replace("size=100", "size=101"),
        url.replace(&key_of(upload), &other_key),
        url.replace("signature=", "signature=00"),
        url.replace("/local/", "/elsewhere/"),
        url.split('?').next().unwrap().to_owned(),
        format!("{url}&size=100"),
    ];
    for bad in tampered {
        let response = app
            .send_signed(&with_url(upload, bad.clone()), bytes.clone())
            .await;
        assert_eq!(response.status().as_u16(), 403, "{bad}");
        assert_problem(response, 403, "forbidden").await;
    }
    // A download URL is not an upload URL.
    let file = app.upload(&token, &body_of(7), json!({})).await;
    let signed: Value = app
        .download(&token, file["id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let mut as_put = signed.clone();
    as_put["method"] = json!("PUT");
    assert_problem(app.send_signed(&as_put, body_of(7)).await, 403, "forbidden").await;
    let get_tampered = with_url(
        &signed,
        signed["url"]
            .as_str()
            .unwrap()
            .replace("filename=", "filename=x"),
    );
    assert_problem(
        app.send_signed(&get_tampered, Vec::new()).await,
        403,
        "forbidden",
    )
    .await;
    assert!(!app
        .stored_objects()
        .iter()
        .any(|p| p.to_string_lossy().contains(&other_key)));
}

#[actix_web::test]
async fn expired_urls_are_forbidden() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(100);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    // Sign the same upload with the server's secret but an expiry in the past.
    let secret = std::fs::read_to_string(app.settings.local_secret_path()).unwrap();
    let backend = LocalBackend::new(
        "local",
        app.data_dir.path().join("objects"),
        hex::decode(secret.trim()).unwrap(),
        url::Url::parse(&app.address).unwrap(),
    )
    .unwrap();
    let spec = UploadSpec {
        key: ObjectKey::parse(&key_of(&created["upload"])).unwrap(),
        size: 100,
        sha256: Sha256::digest(&bytes),
        content_type: "application/octet-stream".into(),
        expires_at: Utc::now() - Duration::seconds(5),
    };
    let expired = serde_json::to_value(backend.sign_upload(&spec).unwrap()).unwrap();
    let problem = assert_problem(app.send_signed(&expired, bytes).await, 403, "forbidden").await;
    assert!(problem["detail"].as_str().unwrap().contains("expired"));
    assert!(app.stored_objects().is_empty());
}

/// Puts bytes straight into the store, as a misbehaving store or an operator might.
fn plant(app: &TestApp, upload: &Value, bytes: &[u8]) {
    let path = app.data_dir.path().join("objects").join(key_of(upload));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[actix_web::test]
async fn completion_rejects_a_stored_object_that_does_not_match() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(64);

    let created = app.create_ok(&token, &bytes, json!({})).await;
    let id = created["file"]["id"].as_str().unwrap();
    plant(&app, &created["upload"], &bytes[..60]);
    assert_problem(app.complete(&token, id).await, 422, "size_mismatch").await;
    let file: Value = app.get_file(&token, id).await.json().await.unwrap();
    assert_eq!(file["status"], "rejected");
    assert!(app.stored_objects().is_empty(), "the object is deleted");
    assert_problem(app.complete(&token, id).await, 409, "conflict").await;
    let events = app.events_for(id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "io.valet.file.rejected");

    let created = app.create_ok(&token, &bytes, json!({})).await;
    let id = created["file"]["id"].as_str().unwrap();
    let mut corrupted = bytes.clone();
    corrupted[0] ^= 0xff;
    plant(&app, &created["upload"], &corrupted);
    assert_problem(app.complete(&token, id).await, 422, "checksum_mismatch").await;
    let file: Value = app.get_file(&token, id).await.json().await.unwrap();
    assert_eq!(file["status"], "rejected");
    assert!(app.stored_objects().is_empty());
    assert_problem(app.download(&token, id).await, 409, "not_uploaded").await;
}

#[actix_web::test]
async fn the_download_url_of_a_deleted_file_is_not_found() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let file = app.upload(&token, &body_of(100), json!({})).await;
    let id = file["id"].as_str().unwrap();
    let signed: Value = app.download(&token, id).await.json().await.unwrap();
    assert_eq!(app.delete(&token, id).await.status().as_u16(), 204);
    assert!(
        app.stored_objects().is_empty(),
        "{:?}",
        app.stored_objects()
    );
    assert_problem(app.send_signed(&signed, Vec::new()).await, 404, "not_found").await;
}
