//! Large files through the API, on every backend: a multipart upload declared with
//! `POST /v1/files`, part URLs asked for in batches, parts sent out of order and in
//! parallel with a real HTTP client, the stored parts listed to resume, completion
//! refused while parts are missing, then accepted (202, `verifying`) and verified
//! off the request path into exactly one `uploaded` event; assembled bytes that
//! do not hash to the declared SHA-256 end `rejected`; deleting aborts.

use futures_util::{stream, StreamExt};
use serde_json::{json, Value};
use valet::storage::Storage;
use valet_backends::{ObjectKey, UploadId};

use crate::helpers::stores::on_every_backend;
use crate::helpers::{assert_problem, body_of, sha256_hex, TestApp};

/// S3's smallest part but the last.
pub(crate) const PART: usize = 5 * 1024 * 1024;

impl TestApp {
    pub(crate) async fn ask_parts(&self, token: &str, id: &str, parts: Value) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/files/{id}/parts")))
            .bearer_auth(token)
            .json(&json!({ "parts": parts }))
            .send()
            .await
            .expect("parts request")
    }

    /// Declares `bytes` in parts of [`PART`] with `sha256` as the whole file's digest;
    /// returns the file id.
    pub(crate) async fn create_multipart(&self, token: &str, bytes: &[u8], sha256: &str) -> String {
        let created = self.create(token, multipart_file(bytes, sha256)).await;
        assert_eq!(created.status().as_u16(), 201);
        let created: Value = created.json().await.expect("created");
        created["file"]["id"].as_str().expect("id").to_owned()
    }

    pub(crate) async fn held_parts(&self, token: &str, id: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/v1/files/{id}/parts")))
            .bearer_auth(token)
            .send()
            .await
            .expect("parts listing")
    }

    /// Signs and sends the given parts of `bytes` (1-based numbers), all at once.
    pub(crate) async fn send_parts(&self, token: &str, id: &str, bytes: &[u8], numbers: &[usize]) {
        let chunks: Vec<&[u8]> = bytes.chunks(PART).collect();
        let asked: Vec<Value> = numbers
            .iter()
            .map(|n| json!({"number": n, "sha256": sha256_hex(chunks[n - 1])}))
            .collect();
        let response = self.ask_parts(token, id, json!(asked)).await;
        assert_eq!(response.status().as_u16(), 200);
        let signed: Value = response.json().await.expect("signed parts");
        let signed = signed["parts"].as_array().expect("parts").clone();
        assert_eq!(signed.len(), numbers.len());
        // In parallel, a few at a time, as a device on a real link would.
        let sent: Vec<reqwest::Response> = stream::iter(signed.iter().map(|part| {
            let n = part["number"].as_u64().expect("number") as usize;
            self.send_signed(part, chunks[n - 1].to_vec())
        }))
        .buffer_unordered(8)
        .collect()
        .await;
        for response in sent {
            assert!(response.status().is_success(), "{}", response.status());
        }
    }
}

pub(crate) fn multipart_file(bytes: &[u8], sha256: &str) -> Value {
    json!({"name": "dump.bin", "size": bytes.len(), "sha256": sha256, "part_size": PART})
}

async fn a_large_file_goes_up_in_parts_resumes_and_is_verified_once(app: &TestApp) {
    let token = app.device_token("acme", "dev-1");
    // 200 MiB in 40 parts of 5 MiB (S3's smallest), the last one short.
    let bytes = body_of(39 * PART + 4321);
    let created = app
        .create(&token, multipart_file(&bytes, &sha256_hex(&bytes)))
        .await;
    assert_eq!(created.status().as_u16(), 201);
    let created: Value = created.json().await.expect("created");
    let upload = &created["upload"];
    assert_eq!(upload["mode"], "multipart");
    assert_eq!(upload["part_size"], PART);
    assert_eq!(upload["part_count"], 40);
    assert!(upload["expires_at"].is_string());
    let id = created["file"]["id"].as_str().expect("id");

    // Half the parts, out of order; then the device "reboots" and lost its state.
    let odd: Vec<usize> = (1..=40).rev().filter(|n| n % 2 == 1).collect();
    let even: Vec<usize> = (1..=40).filter(|n| n % 2 == 0).collect();
    app.send_parts(&token, id, &bytes, &odd).await;
    // A device that lost its state asks what is stored and goes on from there.
    let held: Value = app.held_parts(&token, id).await.json().await.expect("held");
    assert_eq!(held["part_size"], PART);
    assert_eq!(held["part_count"], 40);
    let numbers: Vec<u64> = held["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .map(|p| p["number"].as_u64().expect("number"))
        .collect();
    assert_eq!(
        numbers,
        (1..=40).filter(|n| n % 2 == 1).collect::<Vec<u64>>()
    );
    assert_eq!(held["parts"][0]["size"], PART);
    assert_eq!(held["parts"][0]["sha256"], sha256_hex(&bytes[..PART]));

    let incomplete = assert_problem(app.complete(&token, id).await, 409, "upload_incomplete").await;
    assert_eq!(incomplete["missing_parts"], json!(even));

    app.send_parts(&token, id, &bytes, &even).await;
    let accepted = app.complete(&token, id).await;
    let status = accepted.status().as_u16();
    let file: Value = accepted.json().await.expect("file");
    assert!(
        status == 202 && file["file"]["status"] == "verifying" || status == 200,
        "{status} {file}"
    );
    let file = app
        .wait_for_file(&token, id, |f| f["status"] != "verifying")
        .await;
    assert_eq!(file["status"], "uploaded");
    let again = app.complete(&token, id).await;
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(app.fetch(&token, id).await, bytes);
    let uploaded = app
        .events_for(id)
        .await
        .into_iter()
        .filter(|e| e.event_type == "io.valet.file.uploaded")
        .count();
    assert_eq!(uploaded, 1);
    // The upload is finished: its parts can no longer change.
    assert_problem(app.held_parts(&token, id).await, 409, "conflict").await;
}

async fn assembled_bytes_with_another_sha256_are_rejected(app: &TestApp) {
    let token = app.device_token("acme", "dev-1");
    let bytes = body_of(PART + 10);
    let other = sha256_hex(b"something else entirely");
    let id = &app.create_multipart(&token, &bytes, &other).await;
    app.send_parts(&token, id, &bytes, &[1, 2]).await;
    let accepted = app.complete(&token, id).await;
    assert!([202, 422].contains(&accepted.status().as_u16()));
    let file = app
        .wait_for_file(&token, id, |f| f["status"] != "verifying")
        .await;
    assert_eq!(file["status"], "rejected");
    let events: Vec<String> = app
        .events_for(id)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(events, ["io.valet.file.rejected"]);
    assert_problem(app.download(&token, id).await, 409, "not_uploaded").await;
    let stored = storage_of(app)
        .stat(&app.settings.default_backend, &object_key(app, id).await)
        .await
        .expect("stat");
    assert!(stored.is_none(), "the rejected object is still stored");
}

async fn parts_requests_outside_the_upload_are_refused(app: &TestApp) {
    let token = app.device_token("acme", "dev-1");
    let bytes = body_of(2 * PART);
    let id = &app
        .create_multipart(&token, &bytes, &sha256_hex(&bytes))
        .await;
    let hash = sha256_hex(b"x");
    for number in [0, 3] {
        let response = app
            .ask_parts(&token, id, json!([{"number": number, "sha256": hash}]))
            .await;
        assert_problem(response, 400, "invalid_part").await;
    }
    let too_many: Vec<Value> = (1..=101)
        .map(|n| json!({"number": n, "sha256": hash}))
        .collect();
    assert_problem(
        app.ask_parts(&token, id, json!(too_many)).await,
        400,
        "invalid_request",
    )
    .await;
    assert_problem(
        app.ask_parts(&token, id, json!([])).await,
        400,
        "invalid_request",
    )
    .await;
    let twice = json!([{"number": 1, "sha256": hash}, {"number": 1, "sha256": hash}]);
    assert_problem(
        app.ask_parts(&token, id, twice).await,
        400,
        "invalid_request",
    )
    .await;
    let bad_hash = json!([{"number": 1, "sha256": "zz"}]);
    assert_problem(
        app.ask_parts(&token, id, bad_hash).await,
        400,
        "invalid_request",
    )
    .await;
    // Another device of the tenant does not see the file.
    let other = app.device_token("acme", "dev-2");
    assert_problem(
        app.ask_parts(&other, id, json!([{"number": 1, "sha256": hash}]))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(app.held_parts(&other, id).await, 404, "not_found").await;
    // A small file is one PUT: it has no parts.
    let small = app.create_ok(&token, b"small", json!({})).await;
    assert_eq!(small["upload"]["mode"], "single");
    let small_id = small["file"]["id"].as_str().expect("id");
    assert_problem(app.held_parts(&token, small_id).await, 409, "conflict").await;
    // A part size outside the store's bounds names the bound.
    let tiny = json!({"name": "a", "size": 3 * 1024 * 1024, "sha256": hash, "part_size": 1024});
    let refused = assert_problem(app.create(&token, tiny).await, 400, "invalid_request").await;
    assert!(
        refused["detail"]
            .as_str()
            .expect("detail")
            .contains("between"),
        "{refused}"
    );
}

async fn a_tampered_or_foreign_part_url_is_refused(app: &TestApp) {
    let token = app.device_token("acme", "dev-1");
    let bytes = body_of(PART + 7);
    let id = &app
        .create_multipart(&token, &bytes, &sha256_hex(&bytes))
        .await;
    let chunks: Vec<&[u8]> = bytes.chunks(PART).collect();
    let asked = json!([{"number": 2, "sha256": sha256_hex(chunks[1])}]);
    let signed: Value = app
        .ask_parts(&token, id, asked)
        .await
        .json()
        .await
        .expect("signed");
    let part = &signed["parts"][0];
    // One character of the signature changed: HMAC (local), SigV4 (S3) and the
    // SAS signature (Azure) all refuse it.
    let url = part["url"].as_str().expect("url");
    let mut tampered = part.clone();
    tampered["url"] = json!(url
        .replace("sig=", "sig=A")
        .replace("signature=", "signature=0")
        .replace("X-Amz-Signature=", "X-Amz-Signature=0"));
    let refused = app.send_signed(&tampered, chunks[1].to_vec()).await;
    assert!(
        [400, 403].contains(&refused.status().as_u16()),
        "a tampered part URL was accepted: {}",
        refused.status()
    );
    let held: Value = app.held_parts(&token, id).await.json().await.expect("held");
    assert_eq!(held["parts"], json!([]));
}

async fn deleting_a_pending_multipart_file_aborts_its_upload(app: &TestApp) {
    let token = app.device_token("acme", "dev-1");
    let bytes = body_of(PART + 1);
    let id = &app
        .create_multipart(&token, &bytes, &sha256_hex(&bytes))
        .await;
    app.send_parts(&token, id, &bytes, &[1]).await;
    assert_eq!(app.delete(&token, id).await.status().as_u16(), 204);
    let file: Value = app.get_file(&token, id).await.json().await.expect("file");
    assert_eq!(file["status"], "deleted");
    assert_problem(app.held_parts(&token, id).await, 409, "conflict").await;
    let upload_id = upload_id_of(app, id).await;
    let storage = storage_of(app);
    let key = object_key(app, id).await;
    let capabilities = storage
        .capabilities(&app.settings.default_backend)
        .expect("capabilities");
    let listed = storage
        .list_parts(&app.settings.default_backend, &key, &upload_id)
        .await;
    // Azure keeps uncommitted blocks until it discards them itself (a week).
    if capabilities.binds_sha256 {
        assert!(
            listed.map_or(true, |parts| parts.is_empty()),
            "parts left behind"
        );
    }
    assert!(storage
        .stat(&app.settings.default_backend, &key)
        .await
        .expect("stat")
        .is_none());
}

fn storage_of(app: &TestApp) -> Storage {
    let public_url = url::Url::parse(&app.address).expect("address");
    Storage::from_settings(&app.settings, &public_url).expect("storage")
}

/// The object key valet uses for a file: `{tenant}/{device}/{id}` in key form,
/// read from the database.
async fn object_key(app: &TestApp, id: &str) -> ObjectKey {
    ObjectKey::parse(&column_of(app, id, "object_key").await).expect("object key")
}

async fn upload_id_of(app: &TestApp, id: &str) -> UploadId {
    UploadId::new(column_of(app, id, "multipart_upload_id").await)
}

async fn column_of(app: &TestApp, id: &str, column: &str) -> String {
    use valet::metadata::db;
    let url = app.settings.database_url();
    let (id, column) = (id.to_owned(), column.to_owned());
    actix_web::web::block(move || {
        use diesel::prelude::*;
        #[derive(QueryableByName)]
        struct Value {
            #[diesel(sql_type = diesel::sql_types::Text)]
            value: String,
        }
        let pool = db::connect(&url, 1, std::time::Duration::from_secs(5)).expect("pool");
        let mut conn = pool.get().expect("connection");
        let row: Value = diesel::sql_query(format!(
            "SELECT {column} AS value FROM files WHERE id = '{id}'"
        ))
        .get_result(&mut **conn)
        .expect("row");
        row.value
    })
    .await
    .expect("block")
}

on_every_backend!(
    a_large_file_goes_up_in_parts_resumes_and_is_verified_once,
    assembled_bytes_with_another_sha256_are_rejected,
    parts_requests_outside_the_upload_are_refused,
    a_tampered_or_foreign_part_url_is_refused,
    deleting_a_pending_multipart_file_aborts_its_upload,
);
