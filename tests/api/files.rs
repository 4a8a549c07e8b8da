//! The device flow and the file lifecycle.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, body_of, sha256_hex, spawn_app};

#[actix_web::test]
async fn a_device_uploads_lists_downloads_and_deletes_a_file() {
    let app = spawn_app().await;
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
    let id = file["id"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    assert_eq!(file["tenant_id"], "acme");
    assert_eq!(file["device_id"], "dev-42");
    assert_eq!(file["name"], "logs/2026-11-23.tar");
    assert_eq!(file["size"], 10_000);
    assert_eq!(file["sha256"], sha256_hex(&bytes));
    assert_eq!(file["content_type"], "application/x-tar");
    assert_eq!(file["status"], "pending");
    assert_eq!(file["backend"], "local");
    assert_eq!(file["metadata"], json!({"boot": "17"}));
    assert!(file["uploaded_at"].is_null());
    assert!(file["created_at"].as_str().unwrap().ends_with('Z'));
    let upload = &created["upload"];
    assert_eq!(upload["method"], "PUT");
    assert_eq!(upload["headers"]["content-length"], "10000");
    assert!(upload["expires_at"].is_string());
    let url = upload["url"].as_str().unwrap();
    assert!(!url.contains("logs") && !url.contains("acme") && !url.contains("dev-42"));

    let put = app.send_signed(upload, bytes.clone()).await;
    assert_eq!(put.status().as_u16(), 200);

    let completed: Value = app.complete(&token, &id).await.json().await.unwrap();
    assert_eq!(completed["status"], "uploaded");
    assert!(completed["uploaded_at"].is_string());

    let fetched: Value = app.get_file(&token, &id).await.json().await.unwrap();
    assert_eq!(fetched, completed);

    let listed: Value = app.list(&token, "").await.json().await.unwrap();
    assert_eq!(listed["files"], json!([completed]));
    assert!(listed["next_cursor"].is_null());

    let signed: Value = app.download(&token, &id).await.json().await.unwrap();
    assert_eq!(signed["method"], "GET");
    let response = app.send_signed(&signed, Vec::new()).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-tar");
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    assert!(
        disposition.contains("filename*=UTF-8''logs%2F2026"),
        "{disposition}"
    );
    assert!(
        disposition.contains(r#"filename="logs_2026-11-23.tar""#),
        "{disposition}"
    );
    assert_eq!(response.bytes().await.unwrap().to_vec(), bytes);

    let deleted = app.delete(&token, &id).await;
    assert_eq!(deleted.status().as_u16(), 204);
    let after: Value = app.get_file(&token, &id).await.json().await.unwrap();
    assert_eq!(after["status"], "deleted");
    let listed: Value = app.list(&token, "").await.json().await.unwrap();
    assert_eq!(listed["files"], json!([]));
    assert_problem(app.download(&token, &id).await, 409, "not_uploaded").await;
    assert!(
        app.stored_objects().is_empty(),
        "{:?}",
        app.stored_objects()
    );
    // The old download URL no longer finds anything.
    assert_problem(app.send_signed(&signed, Vec::new()).await, 404, "not_found").await;

    // Deleting again is a no-op.
    assert_eq!(app.delete(&token, &id).await.status().as_u16(), 204);

    let events = app.events_for(&id).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["io.valet.file.uploaded", "io.valet.file.deleted"]);
}

#[actix_web::test]
async fn events_are_cloudevents_with_stable_ids() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let file = app.upload(&token, &body_of(64), json!({})).await;
    let id = file["id"].as_str().unwrap();
    let events = app.events_for(id).await;
    assert_eq!(events.len(), 1);
    let event: Value = serde_json::from_str(&events[0].payload).unwrap();
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "io.valet.file.uploaded");
    assert_eq!(event["id"], events[0].event_id.as_str());
    assert_eq!(event["subject"], format!("acme/dev-42/{id}"));
    assert_eq!(event["datacontenttype"], "application/json");
    assert!(event["source"].as_str().unwrap().starts_with("valet://"));
    assert!(event["time"].is_string());
    // The File as the API returns it, plus where it is stored.
    let mut data = event["data"].clone();
    let key = data
        .as_object_mut()
        .and_then(|d| d.remove("key"))
        .expect("data.key");
    assert!(key.as_str().is_some_and(|k| k.ends_with(id)), "{key}");
    assert_eq!(data, file);
    assert!(events[0].published_at.is_none());
}

#[actix_web::test]
async fn completing_twice_returns_the_same_file_and_one_event() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let file = app.upload(&token, &body_of(100), json!({})).await;
    let id = file["id"].as_str().unwrap();
    let again: Value = app.complete(&token, id).await.json().await.unwrap();
    assert_eq!(again, file);
    assert_eq!(app.events_for(id).await.len(), 1);
}

#[actix_web::test]
async fn concurrent_completes_make_one_transition_and_one_event() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(4096);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let id = created["file"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.send_signed(&created["upload"], bytes).await.status(),
        200
    );

    let answers = futures_util::future::join_all((0..20).map(|_| app.complete(&token, &id))).await;
    let mut uploaded_at = Vec::new();
    for answer in answers {
        assert_eq!(answer.status().as_u16(), 200);
        let file: Value = answer.json().await.unwrap();
        assert_eq!(file["status"], "uploaded");
        uploaded_at.push(file["uploaded_at"].clone());
    }
    uploaded_at.dedup();
    assert_eq!(uploaded_at.len(), 1, "one transition: {uploaded_at:?}");
    let events = app.events_for(&id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "io.valet.file.uploaded");
}

#[actix_web::test]
async fn completing_before_the_upload_is_upload_missing() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let created = app.create_ok(&token, &body_of(10), json!({})).await;
    let id = created["file"]["id"].as_str().unwrap();
    assert_problem(app.complete(&token, id).await, 409, "upload_missing").await;
    assert_problem(app.download(&token, id).await, 409, "not_uploaded").await;
    let file: Value = app.get_file(&token, id).await.json().await.unwrap();
    assert_eq!(file["status"], "pending");
}

#[actix_web::test]
async fn download_can_redirect() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(333);
    let file = app.upload(&token, &bytes, json!({})).await;
    let response = app
        .client
        .get(app.url(&format!(
            "/v1/files/{}/download?redirect=true",
            file["id"].as_str().unwrap()
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 307);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body = app
        .client
        .get(location)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.to_vec(), bytes);
}

#[actix_web::test]
async fn listing_pages_newest_first_with_a_cursor() {
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let mut ids = Vec::new();
    for i in 0..5 {
        let created = app.create_ok(&token, &body_of(10 + i), json!({})).await;
        ids.push(created["file"]["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    loop {
        let page: Value = app.list(&token, &query).await.json().await.unwrap();
        for f in page["files"].as_array().unwrap() {
            seen.push(f["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    let pending: Value = app
        .list(&token, "status=pending&limit=1000")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(pending["files"].as_array().unwrap().len(), 5);
    let uploaded: Value = app
        .list(&token, "status=uploaded")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(uploaded["files"], json!([]));
}

#[actix_web::test]
async fn a_service_writes_device_and_shared_roots_and_devices_read_shared() {
    let app = spawn_app().await;
    let service = app.service_token("acme", "fleet-manager");
    let device = app.device_token("acme", "dev-42");

    let update = body_of(2048);
    let shared = app
        .upload(
            &service,
            &update,
            json!({"shared": true, "name": "update.bin"}),
        )
        .await;
    assert!(shared["device_id"].is_null());
    let for_device = app
        .upload(&service, &body_of(99), json!({"device_id": "dev-42"}))
        .await;
    assert_eq!(for_device["device_id"], "dev-42");

    // The device reads the shared file and its own, and lists both roots.
    let shared_id = shared["id"].as_str().unwrap();
    assert_eq!(app.fetch(&device, shared_id).await, update);
    let own: Value = app.list(&device, "").await.json().await.unwrap();
    assert_eq!(own["files"], json!([for_device]));
    let listed: Value = app.list(&device, "shared=true").await.json().await.unwrap();
    assert_eq!(listed["files"], json!([shared]));

    // …but may not change the shared root.
    assert_problem(app.delete(&device, shared_id).await, 403, "forbidden").await;
    let attempt = app
        .create(
            &device,
            json!({"name": "x", "size": 1, "sha256": sha256_hex(b"x"), "shared": true}),
        )
        .await;
    assert_problem(attempt, 403, "forbidden").await;

    // The service sees the whole tenant, or one root.
    let all: Value = app.list(&service, "").await.json().await.unwrap();
    assert_eq!(all["files"].as_array().unwrap().len(), 2);
    let one: Value = app
        .list(&service, "device_id=dev-42")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["files"], json!([for_device]));
    assert_eq!(app.delete(&service, shared_id).await.status().as_u16(), 204);
}
