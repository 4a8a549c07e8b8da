//! The file API beyond any one store: events, paged listings and the shared root.
//! The lifecycle on each store is in the conformance suite.

use serde_json::{json, Value};

use crate::helpers::{assert_problem, body_of, sha256_hex, spawn_app};

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
    // A page exactly as long as what is left has no cursor; one row shorter has.
    let whole: Value = app.list(&token, "limit=5").await.json().await.unwrap();
    assert_eq!(whole["files"].as_array().unwrap().len(), 5);
    assert!(whole["next_cursor"].is_null(), "{whole}");
    let short: Value = app.list(&token, "limit=4").await.json().await.unwrap();
    assert_eq!(short["files"].as_array().unwrap().len(), 4);
    assert!(short["next_cursor"].is_string(), "{short}");

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
async fn a_listed_file_reads_exactly_as_get_shows_it() {
    // Pages have their own JSON encoder: it must write what a single read writes,
    // escapes and non-ASCII text included.
    let app = spawn_app().await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(33);
    let created = app
        .create_ok(
            &token,
            &bytes,
            json!({
                "name": "q\"uo\\te/é ✓ 😀 </script>",
                "content_type": "text/plain; charset=\"utf-8\"",
                "metadata": {"k\"1": "v\\ é\u{2028}", "emoji": "😀", "empty": ""},
            }),
        )
        .await;
    assert_eq!(
        app.send_signed(&created["upload"], bytes).await.status(),
        200
    );
    let id = created["file"]["id"].as_str().unwrap();
    app.complete(&token, id).await;
    let single = app.get_file(&token, id).await.text().await.unwrap();
    let page = app.list(&token, "").await;
    assert_eq!(
        page.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let page: Value = page.json().await.unwrap();
    let listed = page["files"][0].clone();
    assert_eq!(listed, serde_json::from_str::<Value>(&single).unwrap());
    assert_eq!(listed["metadata"]["k\"1"], "v\\ é\u{2028}");
    assert_eq!(listed["status"], "uploaded");
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
