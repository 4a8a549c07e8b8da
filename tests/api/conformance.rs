//! What every storage backend must do, whatever holds the bytes. Each behaviour is a
//! function taking a ready [`TestApp`]; `on_every_backend!` at the bottom runs every
//! behaviour on every backend as a test of its own, `conformance::<backend>::<name>`.
//! Uploads and downloads go to the signed URLs with a real HTTP client, exactly as
//! returned.

use serde_json::{json, Value};
use valet::storage::Storage;
use valet_backends::ObjectKey;

use crate::helpers::stores::on_every_backend;
use crate::helpers::{assert_problem, body_of, sha256_hex, with_header, TestApp};

/// Create, PUT exactly what valet signed, complete, read back and delete: the File
/// at each step, the bytes, and the object in the store until the delete.
async fn full_lifecycle(app: &TestApp) {
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(10_000);

    let created = app
        .create_ok(
            &token,
            &bytes,
            json!({"name": "logs/2026-11-23.tar", "content_type": "application/x-tar",
                   "metadata": {"boot": "17"}}),
        )
        .await;
    let file = &created["file"];
    let id = file["id"].as_str().expect("id").to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&id).expect("uuid").get_version_num(),
        7
    );
    assert_eq!(file["tenant_id"], "acme");
    assert_eq!(file["device_id"], "dev-42");
    assert_eq!(file["name"], "logs/2026-11-23.tar");
    assert_eq!(file["size"], 10_000);
    assert_eq!(file["sha256"], sha256_hex(&bytes));
    assert_eq!(file["content_type"], "application/x-tar");
    assert_eq!(file["status"], "pending");
    assert_eq!(file["backend"], app.settings.default_backend.as_str());
    assert_eq!(file["metadata"], json!({"boot": "17"}));
    assert!(file["uploaded_at"].is_null());
    assert!(file["created_at"]
        .as_str()
        .expect("created_at")
        .ends_with('Z'));
    let upload = &created["upload"];
    assert_eq!(upload["method"], "PUT");
    assert_eq!(upload["headers"]["content-length"], "10000");
    assert!(upload["expires_at"].is_string());
    let url = upload["url"].as_str().expect("url");
    assert!(!url.contains("logs") && !url.contains("acme") && !url.contains("dev-42"));

    let put = app.send_signed(upload, bytes.clone()).await;
    assert!(
        put.status().is_success(),
        "PUT: {} {:?}",
        put.status(),
        put.text().await
    );

    let completed: Value = app.complete(&token, &id).await.json().await.expect("file");
    assert_eq!(completed["status"], "uploaded");
    assert!(completed["uploaded_at"].is_string());
    let fetched: Value = app.get_file(&token, &id).await.json().await.expect("file");
    assert_eq!(fetched, completed);
    let key = object_key(app, &id).await;
    assert!(
        store_holds(app, &key).await,
        "the store has no object {key}"
    );

    let signed: Value = app
        .download(&token, &id)
        .await
        .json()
        .await
        .expect("signed");
    assert_eq!(signed["method"], "GET");
    let response = app.send_signed(&signed, Vec::new()).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-tar");
    assert_eq!(response.bytes().await.expect("bytes").to_vec(), bytes);

    assert_eq!(app.delete(&token, &id).await.status().as_u16(), 204);
    let after: Value = app.get_file(&token, &id).await.json().await.expect("file");
    assert_eq!(after["status"], "deleted");
    assert_problem(app.download(&token, &id).await, 409, "not_uploaded").await;
    assert!(
        !store_holds(app, &key).await,
        "the deleted object is still stored"
    );
    // The old download URL no longer finds anything.
    let again = app.send_signed(&signed, Vec::new()).await;
    assert_eq!(again.status().as_u16(), 404);

    // Deleting again is a no-op.
    assert_eq!(app.delete(&token, &id).await.status().as_u16(), 204);

    let events = app.events_for(&id).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["io.valet.file.uploaded", "io.valet.file.deleted"]);
}

/// The download URL serves exactly the uploaded bytes, named for a browser: the
/// name made safe in `filename` and kept whole in `filename*`.
async fn download_serves_the_exact_bytes_with_content_disposition(app: &TestApp) {
    let token = app.device_token("acme", "dev-42");
    let cases = [
        (
            "naïve report.bin",
            "attachment; filename=\"na_ve report.bin\"; filename*=UTF-8''na%C3%AFve%20report.bin",
        ),
        (
            "logs/2026-11-23.tar",
            "attachment; filename=\"logs_2026-11-23.tar\"; filename*=UTF-8''logs%2F2026-11-23.tar",
        ),
    ];
    for (name, disposition) in cases {
        let bytes = body_of(70_000);
        let file = app
            .upload(
                &token,
                &bytes,
                json!({"name": name, "content_type": "application/x-test"}),
            )
            .await;
        let id = file["id"].as_str().expect("id");
        let signed: Value = app.download(&token, id).await.json().await.expect("signed");
        let got = app.send_signed(&signed, Vec::new()).await;
        assert_eq!(got.status().as_u16(), 200, "{name}");
        assert_eq!(
            got.headers()["content-type"],
            "application/x-test",
            "{name}"
        );
        assert_eq!(got.headers()["content-disposition"], disposition, "{name}");
        assert_eq!(got.bytes().await.expect("bytes").to_vec(), bytes, "{name}");
    }
}

/// The download URL answers `Range` with 206 and exactly those bytes, as a resumed
/// download needs. Only the two forms every store accepts are asked for: Azure Blob
/// has no suffix ranges (`bytes=-n`).
async fn download_honours_a_byte_range(app: &TestApp) {
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(70_000);
    let file = app.upload(&token, &bytes, json!({})).await;
    let signed: Value = app
        .download(&token, file["id"].as_str().expect("id"))
        .await
        .json()
        .await
        .expect("signed");
    for (range, first, last) in [
        ("bytes=1000-1999", 1000, 1999),
        ("bytes=69000-", 69_000, 69_999),
    ] {
        let got = app
            .send_signed(&with_header(&signed, "range", range), Vec::new())
            .await;
        assert_eq!(got.status().as_u16(), 206, "{range}");
        assert_eq!(
            got.headers()["content-range"].to_str().expect("header"),
            format!("bytes {first}-{last}/70000"),
            "{range}"
        );
        let body = got.bytes().await.expect("bytes");
        assert!(body[..] == bytes[first..=last], "{range}: wrong bytes");
    }
}

async fn download_can_redirect(app: &TestApp) {
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(333);
    let file = app.upload(&token, &bytes, json!({})).await;
    let response = app
        .client
        .get(app.url(&format!(
            "/v1/files/{}/download?redirect=true",
            file["id"].as_str().expect("id")
        )))
        .bearer_auth(&token)
        .send()
        .await
        .expect("download");
    assert_eq!(response.status().as_u16(), 307);
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let body = app
        .client
        .get(location)
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(body.to_vec(), bytes);
}

async fn other_bytes_of_the_same_length_are_refused_or_rejected(app: &TestApp) {
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(600);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let mut other = bytes.clone();
    other[0] ^= 0xff;
    let put = app.send_signed(&created["upload"], other).await;
    assert_refused_or_rejected(app, &token, &created, put, "checksum_mismatch").await;
}

async fn a_shorter_or_longer_body_is_refused_or_rejected(app: &TestApp) {
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(600);
    let shorter = bytes[..599].to_vec();
    let longer = [bytes.as_slice(), &[0]].concat();
    for body in [shorter, longer] {
        let created = app.create_ok(&token, &bytes, json!({})).await;
        let upload = with_header(
            &created["upload"],
            "content-length",
            &body.len().to_string(),
        );
        let put = app.send_signed(&upload, body).await;
        assert_refused_or_rejected(app, &token, &created, put, "size_mismatch").await;
    }
}

async fn completing_before_the_upload_is_upload_missing(app: &TestApp) {
    let token = app.device_token("acme", "dev-42");
    let created = app.create_ok(&token, &body_of(10), json!({})).await;
    let id = created["file"]["id"].as_str().expect("id");
    assert_problem(app.complete(&token, id).await, 409, "upload_missing").await;
    assert_problem(app.download(&token, id).await, 409, "not_uploaded").await;
    let file: Value = app.get_file(&token, id).await.json().await.expect("file");
    assert_eq!(file["status"], "pending");
}

async fn completing_twice_returns_the_same_file_and_one_event(app: &TestApp) {
    let token = app.device_token("acme", "dev-42");
    let file = app.upload(&token, &body_of(100), json!({})).await;
    let id = file["id"].as_str().expect("id");
    let again: Value = app.complete(&token, id).await.json().await.expect("file");
    assert_eq!(again, file);
    assert_eq!(app.events_for(id).await.len(), 1);
}

async fn concurrent_completes_make_one_transition_and_one_event(app: &TestApp) {
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(4096);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let id = created["file"]["id"].as_str().expect("id").to_owned();
    let put = app.send_signed(&created["upload"], bytes).await;
    assert!(put.status().is_success(), "PUT: {}", put.status());

    let answers = futures_util::future::join_all((0..20).map(|_| app.complete(&token, &id))).await;
    let mut uploaded_at = Vec::new();
    for answer in answers {
        assert_eq!(answer.status().as_u16(), 200);
        let file: Value = answer.json().await.expect("file");
        assert_eq!(file["status"], "uploaded");
        uploaded_at.push(file["uploaded_at"].clone());
    }
    uploaded_at.dedup();
    assert_eq!(uploaded_at.len(), 1, "one transition: {uploaded_at:?}");
    let events = app.events_for(&id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "io.valet.file.uploaded");
}

/// The listing shows an uploaded file exactly as `get` does, and not once deleted.
async fn listing_shows_the_file(app: &TestApp) {
    let token = app.device_token("acme", "dev-42");
    let file = app.upload(&token, &body_of(300), json!({})).await;
    let listed: Value = app.list(&token, "").await.json().await.expect("listing");
    assert_eq!(listed["files"], json!([file]));
    assert!(listed["next_cursor"].is_null());
    let uploaded: Value = app
        .list(&token, "status=uploaded")
        .await
        .json()
        .await
        .expect("listing");
    assert_eq!(uploaded["files"], json!([file]));

    let id = file["id"].as_str().expect("id");
    assert_eq!(app.delete(&token, id).await.status().as_u16(), 204);
    let listed: Value = app.list(&token, "").await.json().await.expect("listing");
    assert_eq!(listed["files"], json!([]));
}

/// Another tenant finds nothing: not the file, not in its listing, and cannot
/// delete it.
async fn another_tenant_gets_not_found(app: &TestApp) {
    let owner = app.device_token("acme", "dev-42");
    let bytes = body_of(500);
    let file = app.upload(&owner, &bytes, json!({})).await;
    let id = file["id"].as_str().expect("id");

    let stranger = app.service_token("globex", "fleet");
    app.assert_not_found_for(&stranger, id).await;
    let theirs: Value = app.list(&stranger, "").await.json().await.expect("listing");
    assert_eq!(theirs["files"], json!([]));
    // Still there for its owner, bytes and all.
    assert_eq!(app.fetch(&owner, id).await, bytes);
}

/// A body other than the one signed for is either refused by the store, and then
/// there is nothing to complete, or (where the store cannot check it) accepted and
/// rejected at completion with `code`: the file `rejected`, the object deleted.
async fn assert_refused_or_rejected(
    app: &TestApp,
    token: &str,
    created: &Value,
    put: reqwest::Response,
    code: &str,
) {
    let id = created["file"]["id"].as_str().expect("id");
    let put_status = put.status().as_u16();
    if put.status().is_success() {
        assert_problem(app.complete(token, id).await, 422, code).await;
        let file: Value = app.get_file(token, id).await.json().await.expect("file");
        assert_eq!(file["status"], "rejected");
        let key = object_key(app, id).await;
        assert!(!store_holds(app, &key).await, "the rejected object is kept");
        assert_problem(app.download(token, id).await, 409, "not_uploaded").await;
    } else {
        assert!((400..500).contains(&put_status), "PUT: {put_status}");
        assert_problem(app.complete(token, id).await, 409, "upload_missing").await;
        let file: Value = app.get_file(token, id).await.json().await.expect("file");
        assert_eq!(file["status"], "pending");
    }
}

/// Where the store keeps a file's bytes, as the first event about the file says.
async fn object_key(app: &TestApp, id: &str) -> String {
    let events = app.events_for(id).await;
    let first = events.first().expect("an event about the file");
    let event: Value = serde_json::from_str(&first.payload).expect("event JSON");
    event["data"]["key"].as_str().expect("data.key").to_owned()
}

/// Whether the app's default backend holds an object at `key`, asked of the store
/// itself rather than of valet.
async fn store_holds(app: &TestApp, key: &str) -> bool {
    let public_url = url::Url::parse(&app.address).expect("address");
    let storage = Storage::from_settings(&app.settings, &public_url).expect("backends");
    let key = ObjectKey::parse(key).expect("object key");
    storage
        .stat(&app.settings.default_backend, &key)
        .await
        .expect("stat")
        .is_some()
}

on_every_backend!(
    full_lifecycle,
    download_serves_the_exact_bytes_with_content_disposition,
    download_honours_a_byte_range,
    download_can_redirect,
    other_bytes_of_the_same_length_are_refused_or_rejected,
    a_shorter_or_longer_body_is_refused_or_rejected,
    completing_before_the_upload_is_upload_missing,
    completing_twice_returns_the_same_file_and_one_event,
    concurrent_completes_make_one_transition_and_one_event,
    listing_shows_the_file,
    another_tenant_gets_not_found,
);
