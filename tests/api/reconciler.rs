//! The reconciler settles uploads whose devices never called `complete`, applies
//! retention and purges old records. Upload URLs here live one second and the
//! reconciler runs every second with no grace period.

use serde_json::{json, Value};
use valet::configuration::{Settings, TenantSettings};

use crate::helpers::{body_of, spawn_app_on_postgres, spawn_app_with, TestApp};

fn fast_reconciler(s: &mut Settings) {
    s.uploads.upload_url_ttl_secs = 1;
    s.reconciler.interval_secs = 1;
    s.reconciler.grace_secs = 0;
}

fn events_for(outbox: &[valet::metadata::OutboxEntry], id: &str) -> Vec<String> {
    outbox
        .iter()
        .filter(|e| e.file_id == id)
        .map(|e| e.event_type.clone())
        .collect()
}

fn status_is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |file| file["status"] == status
}

#[actix_web::test]
async fn an_upload_never_completed_is_completed_by_the_reconciler() {
    let broker = crate::amqp::Broker::new().await;
    let uploads = broker.bind("file.uploaded.#").await;
    let app = spawn_app_with(|s| {
        fast_reconciler(s);
        broker.configure(s, crate::amqp::BROKER);
    })
    .await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(2048);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let put = app.send_signed(&created["upload"], bytes.clone()).await;
    assert_eq!(put.status().as_u16(), 200);
    let id = created["file"]["id"].as_str().expect("id");

    let file = app.wait_for_file(&token, id, status_is("uploaded")).await;
    assert!(file["uploaded_at"].is_string(), "{file}");
    assert_eq!(
        events_for(&app.outbox().await, id),
        ["io.valet.file.uploaded"]
    );
    assert_eq!(app.fetch(&token, id).await, bytes);
    // Subscribers hear of it as of any upload.
    let received = uploads.wait_for(1).await;
    assert_eq!(received[0].body["data"]["id"], id);
    // A late complete from the device changes nothing.
    assert_eq!(app.complete(&token, id).await.status().as_u16(), 200);
    assert_eq!(events_for(&app.outbox().await, id).len(), 1);
}

#[actix_web::test]
async fn an_upload_never_sent_expires() {
    let app = spawn_app_with(fast_reconciler).await;
    let token = app.device_token("acme", "dev-42");
    let created = app.create_ok(&token, &body_of(10), json!({})).await;
    let id = created["file"]["id"].as_str().expect("id");

    app.wait_for_file(&token, id, status_is("expired")).await;
    assert_eq!(
        events_for(&app.outbox().await, id),
        ["io.valet.file.expired"]
    );
    let event: Value = serde_json::from_str(&app.outbox().await[0].payload).expect("event JSON");
    assert_eq!(event["type"], "io.valet.file.expired");
    assert_eq!(event["data"]["status"], "expired");
    // Expired files are listed when asked for, and can be deleted.
    let listed: Value = app
        .client
        .get(app.url("/v1/files?status=expired"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("page");
    assert_eq!(listed["files"][0]["id"], id);
    let deleted = app
        .client
        .delete(app.url(&format!("/v1/files/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status().as_u16(), 204);
}

/// Puts `bytes` straight into the local store under the file's key, as a store
/// that accepted a corrupted body would hold it.
fn corrupt_object(app: &TestApp, created: &Value, bytes: &[u8]) {
    let url = url::Url::parse(created["upload"]["url"].as_str().expect("url")).expect("url");
    let key = url.path().trim_start_matches("/v1/objects/local/");
    let path = app.data_dir.path().join("objects").join(key);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
    std::fs::write(path, bytes).expect("write object");
}

#[actix_web::test]
async fn a_corrupted_upload_is_rejected_and_its_object_removed() {
    let app = spawn_app_with(fast_reconciler).await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(512);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let id = created["file"]["id"].as_str().expect("id");
    let mut corrupted = bytes.clone();
    corrupted[100] ^= 0xff;
    corrupt_object(&app, &created, &corrupted);

    app.wait_for_file(&token, id, status_is("rejected")).await;
    assert!(
        app.stored_objects().is_empty(),
        "{:?}",
        app.stored_objects()
    );
    assert_eq!(
        events_for(&app.outbox().await, id),
        ["io.valet.file.rejected"]
    );
}

#[actix_web::test]
async fn two_instances_reconciling_one_database_settle_each_file_once() {
    // Instances that share files share a cache (Redis), as deployed: with a cache of
    // its own, this instance would answer from it after the other settled a file.
    let app = spawn_app_on_postgres(|s| {
        fast_reconciler(s);
        crate::helpers::with_redis_cache(s);
    })
    .await;
    let _second = app.spawn_another_instance().await;
    let token = app.device_token("acme", "dev-42");
    let mut ids = Vec::new();
    for i in 0..30 {
        let bytes = body_of(100 + i);
        let created = app.create_ok(&token, &bytes, json!({})).await;
        if i % 2 == 0 {
            let put = app.send_signed(&created["upload"], bytes).await;
            assert_eq!(put.status().as_u16(), 200);
        }
        ids.push(created["file"]["id"].as_str().expect("id").to_owned());
    }
    for (i, id) in ids.iter().enumerate() {
        let expected = if i % 2 == 0 { "uploaded" } else { "expired" };
        app.wait_for_file(&token, id, status_is(expected)).await;
    }
    let outbox = app.outbox().await;
    for id in &ids {
        assert_eq!(events_for(&outbox, id).len(), 1, "{id}: {outbox:?}");
    }
    assert_eq!(outbox.len(), ids.len());
}

#[actix_web::test]
async fn retention_deletes_old_uploads_and_old_records_are_purged() {
    let app = spawn_app_with(|s| {
        s.reconciler.interval_secs = 1;
        s.tenants.insert(
            "acme".into(),
            TenantSettings {
                retention_days: Some(7),
                ..TenantSettings::default()
            },
        );
    })
    .await;
    let token = app.device_token("acme", "dev-42");
    let other = app.device_token("globex", "dev-1");
    let kept = app.upload(&token, &body_of(10), json!({})).await;
    let old = app.upload(&token, &body_of(11), json!({})).await;
    let untouched = app.upload(&other, &body_of(12), json!({})).await;
    let old_id = old["id"].as_str().expect("id");
    app.execute_sql(format!(
        "UPDATE files SET uploaded_at = '2020-01-01 00:00:00' WHERE id IN ('{old_id}', '{}')",
        untouched["id"].as_str().expect("id")
    ))
    .await;

    app.wait_for_file(&token, old_id, status_is("deleted"))
        .await;
    assert_eq!(
        events_for(&app.outbox().await, old_id),
        ["io.valet.file.uploaded", "io.valet.file.deleted"]
    );
    let kept = app.get_file(&token, kept["id"].as_str().expect("id")).await;
    assert_eq!(
        kept.json::<Value>().await.expect("file")["status"],
        "uploaded"
    );
    // Retention is per tenant: globex has none.
    let untouched = app
        .get_file(&other, untouched["id"].as_str().expect("id"))
        .await;
    assert_eq!(
        untouched.json::<Value>().await.expect("file")["status"],
        "uploaded"
    );

    // Deleted long ago (and its key swept): purged (default 30 days).
    app.execute_sql(format!(
        "UPDATE files SET updated_at = '2020-01-01 00:00:00', sweep_after = NULL WHERE id = '{old_id}'"
    ))
    .await;
    let mut gone = false;
    for _ in 0..crate::helpers::attempts(50) {
        if app.get_file(&token, old_id).await.status().as_u16() == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(gone, "the old deleted record was never purged");
}

#[actix_web::test]
async fn a_multipart_upload_past_its_deadline_expires_and_is_aborted() {
    use crate::parts::PART;
    let app = spawn_app_with(|s| {
        fast_reconciler(s);
        s.uploads.multipart_ttl_secs = 5;
    })
    .await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(PART + 1);
    let digest = crate::helpers::sha256_hex(&bytes);
    let id = &app.create_multipart(&token, &bytes, &digest).await;
    app.send_parts(&token, id, &bytes, &[1]).await;
    assert!(!app.stored_objects().is_empty());
    app.wait_for_file(&token, id, status_is("expired")).await;
    assert_eq!(
        events_for(&app.outbox().await, id),
        ["io.valet.file.expired"]
    );
    // The part files went with the upload.
    assert_eq!(app.stored_objects(), Vec::<std::path::PathBuf>::new());
}

#[actix_web::test]
async fn two_instances_verify_each_multipart_file_once() {
    use crate::parts::PART;
    // Instances that share files share a cache (Redis), as deployed.
    let app = spawn_app_on_postgres(|s| {
        fast_reconciler(s);
        crate::helpers::with_redis_cache(s);
    })
    .await;
    let second = app.spawn_another_instance().await;
    let token = app.device_token("acme", "dev-42");
    let mut ids = Vec::new();
    for i in 0..4 {
        let bytes = body_of(PART + 100 + i);
        let digest = crate::helpers::sha256_hex(&bytes);
        let id = app.create_multipart(&token, &bytes, &digest).await;
        app.send_parts(&token, &id, &bytes, &[1, 2]).await;
        ids.push(id);
    }
    // Both instances are asked to complete every file at once; both reconcilers run.
    let completions = ids.iter().flat_map(|id| {
        [app.address.clone(), second.clone()].map(|base| {
            app.client
                .post(format!("{base}/v1/files/{id}/complete"))
                .bearer_auth(&token)
                .send()
        })
    });
    for answer in futures_util::future::join_all(completions).await {
        let status = answer.expect("complete").status().as_u16();
        assert!([200, 202].contains(&status), "{status}");
    }
    for id in &ids {
        app.wait_for_file(&token, id, status_is("uploaded")).await;
    }
    let outbox = app.outbox().await;
    for id in &ids {
        assert_eq!(events_for(&outbox, id), ["io.valet.file.uploaded"], "{id}");
    }
}
