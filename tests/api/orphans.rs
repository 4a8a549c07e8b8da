//! Nothing comes back from the dead: an upload URL still valid after its file was
//! deleted (or an object put twice with one URL) never leaves bytes in the store.
//! The local store refuses such PUTs outright; S3 and Azure cannot revoke a signed
//! URL, so the reconciler sweeps the key once the URL has expired. Upload URLs here
//! live three seconds and the reconciler runs every second with no grace period.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use valet::configuration::Settings;
use valet::storage::Storage;
use valet_backends::ObjectKey;

use crate::helpers::stores::on_every_backend;
use crate::helpers::{assert_problem, body_of, object_key_of, patience, TestApp};

fn fast_sweep(s: &mut Settings) {
    s.uploads.upload_url_ttl_secs = 3;
    s.reconciler.interval_secs = 1;
    s.reconciler.grace_secs = 0;
}

fn is_local(app: &TestApp) -> bool {
    app.settings.default_backend == "local"
}

/// Whether the store itself (not valet) holds an object at `key`.
async fn store_holds(app: &TestApp, key: &ObjectKey) -> bool {
    let public_url = url::Url::parse(&app.address).expect("address");
    let storage = Storage::from_settings(&app.settings, &public_url).expect("backends");
    storage
        .stat(&app.settings.default_backend, key)
        .await
        .expect("stat")
        .is_some()
}

/// Waits until the store holds nothing at `key` (the sweep runs once the upload
/// URL has expired).
async fn wait_until_gone(app: &TestApp, key: &ObjectKey) {
    let deadline = Instant::now() + patience(Duration::from_secs(20));
    while store_holds(app, key).await {
        assert!(
            Instant::now() < deadline,
            "the object at {key} was never removed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A pending file deleted before its PUT: the PUT is refused (local) or its object
/// is swept once the URL has expired (S3, Azure).
async fn a_put_after_the_file_was_deleted_leaves_nothing(app: &TestApp) {
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(4096);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let id = created["file"]["id"].as_str().expect("id");
    let key = object_key_of(&created["file"]);
    assert_eq!(app.delete(&token, id).await.status().as_u16(), 204);

    let put = app.send_signed(&created["upload"], bytes).await;
    if is_local(app) {
        assert_problem(put, 403, "forbidden").await;
        assert!(!store_holds(app, &key).await);
    } else {
        // A signed URL cannot be revoked: the store takes the bytes...
        assert!(put.status().is_success(), "PUT: {}", put.status());
        assert!(store_holds(app, &key).await);
    }
    // ...and the sweep removes them.
    wait_until_gone(app, &key).await;
    let file: Value = app.get_file(&token, id).await.json().await.expect("file");
    assert_eq!(file["status"], "deleted", "a deleted file stays deleted");
}

/// An uploaded file, deleted, then its upload URL replayed: nothing stays stored and
/// the download URL handed out before the delete serves nothing.
async fn replaying_the_upload_url_of_a_deleted_file_leaves_nothing(app: &TestApp) {
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(4096);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let id = created["file"]["id"].as_str().expect("id");
    let key = object_key_of(&created["file"]);
    let put = app.send_signed(&created["upload"], bytes.clone()).await;
    assert!(put.status().is_success(), "PUT: {}", put.status());
    assert_eq!(app.complete(&token, id).await.status().as_u16(), 200);
    let download: Value = app
        .download(&token, id)
        .await
        .json()
        .await
        .expect("download JSON");
    assert_eq!(app.delete(&token, id).await.status().as_u16(), 204);
    assert!(
        !store_holds(app, &key).await,
        "the delete removed the object"
    );

    let replay = app.send_signed(&created["upload"], bytes).await;
    if is_local(app) {
        assert_problem(replay, 403, "forbidden").await;
    } else {
        assert!(replay.status().is_success(), "PUT: {}", replay.status());
    }
    wait_until_gone(app, &key).await;
    let served = app
        .client
        .get(download["url"].as_str().expect("download url"))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        served.status().as_u16(),
        404,
        "the old download URL serves nothing"
    );
}

/// A second PUT with the URL of a file already stored is refused, whatever it carries
/// (every store: `If-None-Match: *` on S3 and Azure, valet's own check locally).
async fn a_second_put_with_one_url_is_refused(app: &TestApp) {
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(4096);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let first = app.send_signed(&created["upload"], bytes.clone()).await;
    assert!(first.status().is_success(), "PUT: {}", first.status());
    let second = app.send_signed(&created["upload"], bytes.clone()).await;
    if is_local(app) {
        assert_problem(second, 409, "conflict").await;
    } else {
        assert!(
            second.status().is_client_error(),
            "second PUT: {}",
            second.status()
        );
    }
    // The first object is intact and completes.
    let id = created["file"]["id"].as_str().expect("id");
    assert_eq!(app.complete(&token, id).await.status().as_u16(), 200);
    assert_eq!(app.fetch(&token, id).await, bytes);
    // Once uploaded, the local data plane says why before reading a byte.
    if is_local(app) {
        let third = app.send_signed(&created["upload"], bytes).await;
        assert_problem(third, 409, "conflict").await;
    }
}

on_every_backend!(with fast_sweep:
    a_put_after_the_file_was_deleted_leaves_nothing,
    replaying_the_upload_url_of_a_deleted_file_leaves_nothing,
    a_second_put_with_one_url_is_refused,
);
