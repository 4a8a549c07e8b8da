//! Batches: files uploaded into an open batch stay unannounced and unlisted to
//! others until the commit, which records the batch's event and then each file's.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::amqp::{Broker, BROKER};
use crate::helpers::{
    assert_problem, body_of, patience, spawn_app, spawn_app_on_postgres, spawn_app_with, TestApp,
};

impl TestApp {
    async fn create_batch(&self, token: &str, body: Value) -> reqwest::Response {
        self.call(reqwest::Method::POST, "/v1/batches", token, Some(body))
            .await
    }

    async fn create_batch_ok(&self, token: &str, body: Value) -> Value {
        let response = self.create_batch(token, body).await;
        assert_eq!(response.status().as_u16(), 201);
        response.json().await.expect("batch")
    }

    async fn get_batch(&self, token: &str, id: &str) -> reqwest::Response {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/batches/{id}"),
            token,
            None,
        )
        .await
    }

    async fn commit_batch(&self, token: &str, id: &str) -> reqwest::Response {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/batches/{id}/commit"),
            token,
            None,
        )
        .await
    }

    async fn abandon_batch(&self, token: &str, id: &str) -> reqwest::Response {
        self.call(
            reqwest::Method::DELETE,
            &format!("/v1/batches/{id}"),
            token,
            None,
        )
        .await
    }

    async fn list_batches(&self, token: &str, query: &str) -> reqwest::Response {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/batches?{query}"),
            token,
            None,
        )
        .await
    }

    /// Ids of the files `token` lists with `query`.
    async fn listed(&self, token: &str, query: &str) -> BTreeSet<String> {
        let response = self.list(token, query).await;
        assert_eq!(response.status().as_u16(), 200);
        let page: Value = response.json().await.expect("page");
        page["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| f["id"].as_str().expect("id").to_owned())
            .collect()
    }
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

#[actix_web::test]
async fn a_committed_batch_announces_itself_then_its_files_in_order() {
    let broker = Broker::new().await;
    let everything = broker.bind("#").await;
    let app = spawn_app_with(|s| broker.configure(s, BROKER)).await;
    let device = app.device_token("acme", "dev-1");
    let batch = app
        .create_batch_ok(
            &device,
            json!({"name": "night run", "metadata": {"site": "north"}}),
        )
        .await;
    assert_eq!(batch["state"], "open");
    assert_eq!(batch["files"], json!([]));
    assert_eq!(batch["device_id"], "dev-1");
    assert_eq!(batch["name"], "night run");
    assert_eq!(batch["metadata"]["site"], "north");
    assert!(batch["committed_at"].is_null());
    let batch_id = id_of(&batch);

    let mut files = Vec::new();
    for n in 0..20 {
        let file = app
            .upload(&device, &body_of(100 + n), json!({"batch_id": batch_id}))
            .await;
        assert_eq!(file["status"], "uploaded");
        files.push(id_of(&file));
    }
    // Uploaded and completed, yet nothing announced.
    tokio::time::sleep(patience(Duration::from_millis(700))).await;
    assert!(
        everything.received().is_empty(),
        "{:?}",
        everything.received()
    );
    assert!(app.outbox().await.is_empty());

    let response = app.commit_batch(&device, &batch_id).await;
    assert_eq!(response.status().as_u16(), 200);
    let committed: Value = response.json().await.expect("batch");
    assert_eq!(committed["state"], "committed");
    assert!(committed["committed_at"].is_string());
    let listed: Vec<String> = committed["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(listed, files, "the batch lists its files, oldest first");
    assert!(committed["files"]
        .as_array()
        .expect("files")
        .iter()
        .all(|f| f["status"] == "uploaded" && f["sha256"].is_string()));

    let messages = everything.wait_for(21).await;
    assert_eq!(messages.len(), 21, "{messages:?}");
    let first = &messages[0];
    assert_eq!(first.routing_key, "batch.committed.acme.dev-1");
    assert_eq!(first.kind, "io.valet.batch.committed");
    assert_eq!(first.body["batchid"], batch_id.as_str());
    assert_eq!(first.body["subject"], format!("acme/dev-1/{batch_id}"));
    assert_eq!(first.body["data"]["id"], batch_id.as_str());
    assert_eq!(first.body["data"]["state"], "committed");
    assert_eq!(
        first.body["data"]["files"].as_array().expect("files").len(),
        20
    );
    let schema: Value =
        serde_json::from_str(valet::events::BATCH_EVENT_SCHEMA).expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    let errors: Vec<String> = validator
        .iter_errors(&first.body)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{}", first.body);
    let served = app
        .client
        .get(app.url("/schemas/batch-event.json"))
        .send()
        .await
        .expect("schema");
    assert_eq!(served.json::<Value>().await.expect("json"), schema);

    let file_events: Vec<String> = messages[1..]
        .iter()
        .map(|m| {
            assert_eq!(m.routing_key, "file.uploaded.acme.dev-1");
            assert_eq!(m.kind, "io.valet.file.uploaded");
            assert_eq!(m.body["data"]["status"], "uploaded");
            assert!(
                m.body["data"]["key"].is_string(),
                "as a lone upload's event"
            );
            m.body["data"]["id"].as_str().expect("file id").to_owned()
        })
        .collect();
    assert_eq!(
        file_events, files,
        "one event per file, in the batch's order"
    );

    // Committing again changes nothing and announces nothing.
    let again = app.commit_batch(&device, &batch_id).await;
    assert_eq!(again.status().as_u16(), 200);
    let again: Value = again.json().await.expect("batch");
    assert_eq!(again["state"], "committed");
    assert_eq!(again["committed_at"], committed["committed_at"]);
    tokio::time::sleep(patience(Duration::from_millis(700))).await;
    assert_eq!(everything.received().len(), 21, "nothing more");
    assert_eq!(app.outbox().await.len(), 21);

    // A later delete of a committed file is news, as for any uploaded file.
    assert_eq!(app.delete(&device, &files[0]).await.status().as_u16(), 204);
    let deleted = everything.wait_for(22).await;
    assert_eq!(deleted[21].routing_key, "file.deleted.acme.dev-1");

    let metrics = app.metrics_text().await;
    for state in ["open", "committed"] {
        assert!(
            metrics.lines().any(|l| l.starts_with("valet_batches_total")
                && l.contains(&format!("state=\"{state}\""))
                && l.contains("tenant=\"acme\"")),
            "{metrics}"
        );
    }
}

#[actix_web::test]
async fn open_batch_files_are_listed_only_to_their_opener_until_the_commit() {
    let app = spawn_app().await;
    let device = app.device_token("acme", "dev-1");
    let service = app.service_token("acme", "fleet");
    let other_service = app.service_token("acme", "billing");
    let loose = id_of(&app.upload(&device, &body_of(10), json!({})).await);
    let batch = id_of(&app.create_batch_ok(&device, json!({})).await);
    let in_batch = id_of(
        &app.upload(&device, &body_of(20), json!({"batch_id": batch}))
            .await,
    );
    let pending = app
        .create_ok(&device, &body_of(30), json!({"batch_id": batch}))
        .await;
    let pending = id_of(&pending["file"]);

    let mine = app.listed(&device, "").await;
    assert!(mine.contains(&loose) && mine.contains(&in_batch) && mine.contains(&pending));
    for token in [&service, &other_service] {
        for query in ["", "device_id=dev-1", "status=uploaded"] {
            let theirs = app.listed(token, query).await;
            assert!(theirs.contains(&loose), "{query}");
            assert!(!theirs.contains(&in_batch), "{query}: {theirs:?}");
            assert!(!theirs.contains(&pending), "{query}");
        }
    }
    // A service's own open batch is likewise its own until committed.
    let shared_batch = id_of(&app.create_batch_ok(&service, json!({"shared": true})).await);
    let shared_file = id_of(
        &app.upload(
            &service,
            &body_of(40),
            json!({"shared": true, "batch_id": shared_batch}),
        )
        .await,
    );
    assert!(app
        .listed(&service, "shared=true")
        .await
        .contains(&shared_file));
    assert!(!app
        .listed(&other_service, "shared=true")
        .await
        .contains(&shared_file));
    assert!(!app
        .listed(&device, "shared=true")
        .await
        .contains(&shared_file));

    assert_eq!(app.delete(&device, &pending).await.status().as_u16(), 204);
    assert_eq!(
        app.commit_batch(&device, &batch).await.status().as_u16(),
        200
    );
    assert_eq!(
        app.commit_batch(&service, &shared_batch)
            .await
            .status()
            .as_u16(),
        200
    );
    for token in [&service, &other_service] {
        let theirs = app.listed(token, "").await;
        assert!(theirs.contains(&in_batch) && theirs.contains(&shared_file));
        assert!(!theirs.contains(&pending), "deleted");
    }
    assert!(app
        .listed(&device, "shared=true")
        .await
        .contains(&shared_file));
}

#[actix_web::test]
async fn a_commit_with_files_not_uploaded_names_them_and_changes_nothing() {
    let app = spawn_app().await;
    let device = app.device_token("acme", "dev-1");
    let batch = id_of(&app.create_batch_ok(&device, json!({})).await);
    let done = id_of(
        &app.upload(&device, &body_of(20), json!({"batch_id": batch}))
            .await,
    );
    let bytes = body_of(30);
    let created = app
        .create_ok(&device, &bytes, json!({"batch_id": batch}))
        .await;
    let missing = id_of(&created["file"]);

    let problem = assert_problem(
        app.commit_batch(&device, &batch).await,
        409,
        "batch_incomplete",
    )
    .await;
    assert_eq!(problem["files"], json!([missing]));
    let still: Value = app
        .get_batch(&device, &batch)
        .await
        .json()
        .await
        .expect("batch");
    assert_eq!(still["state"], "open");
    assert!(still["committed_at"].is_null());
    assert!(app.outbox().await.is_empty());

    let put = app.send_signed(&created["upload"], bytes).await;
    assert!(put.status().is_success());
    assert_eq!(app.complete(&device, &missing).await.status().as_u16(), 200);
    assert!(app.outbox().await.is_empty(), "still open: no event");
    let response = app.commit_batch(&device, &batch).await;
    assert_eq!(response.status().as_u16(), 200);
    let outbox = app.outbox().await;
    let kinds: Vec<(&str, &str)> = outbox
        .iter()
        .map(|e| (e.event_type.as_str(), e.file_id.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("io.valet.batch.committed", batch.as_str()),
            ("io.valet.file.uploaded", done.as_str()),
            ("io.valet.file.uploaded", missing.as_str()),
        ]
    );
}

#[actix_web::test]
async fn abandoning_a_batch_deletes_its_files_and_objects_without_events() {
    let app = spawn_app().await;
    let device = app.device_token("acme", "dev-1");
    let batch = id_of(&app.create_batch_ok(&device, json!({})).await);
    let mut signed = Vec::new();
    let mut files = Vec::new();
    for n in 0..3 {
        let file = app
            .upload(&device, &body_of(50 + n), json!({"batch_id": batch}))
            .await;
        let id = id_of(&file);
        let download: Value = app
            .download(&device, &id)
            .await
            .json()
            .await
            .expect("signed");
        assert_eq!(
            app.send_signed(&download, Vec::new())
                .await
                .status()
                .as_u16(),
            200
        );
        signed.push(download);
        files.push(id);
    }
    assert!(!app.stored_objects().is_empty());

    let response = app.abandon_batch(&device, &batch).await;
    assert_eq!(response.status().as_u16(), 200);
    let abandoned: Value = response.json().await.expect("batch");
    assert_eq!(abandoned["state"], "abandoned");
    assert_eq!(abandoned["files"], json!([]));
    for (id, download) in files.iter().zip(&signed) {
        let file: Value = app.get_file(&device, id).await.json().await.expect("file");
        assert_eq!(file["status"], "deleted");
        assert_eq!(
            app.send_signed(download, Vec::new())
                .await
                .status()
                .as_u16(),
            404,
            "the object is gone"
        );
    }
    assert!(
        app.stored_objects().is_empty(),
        "{:?}",
        app.stored_objects()
    );
    assert!(app.outbox().await.is_empty(), "never announced: no events");

    // Idempotent; and an abandoned batch takes nothing more.
    assert_eq!(
        app.abandon_batch(&device, &batch).await.status().as_u16(),
        200
    );
    assert_problem(app.commit_batch(&device, &batch).await, 409, "conflict").await;
    let response = app
        .create(
            &device,
            json!({"name": "late", "size": 5, "sha256": "0".repeat(64), "batch_id": batch}),
        )
        .await;
    assert_problem(response, 409, "conflict").await;
    let listed: Value = app
        .list_batches(&device, "state=abandoned")
        .await
        .json()
        .await
        .expect("page");
    assert_eq!(listed["batches"][0]["id"], batch.as_str());
    assert!(listed["batches"][0].get("files").is_none());

    // A committed batch cannot be abandoned.
    let kept = id_of(&app.create_batch_ok(&device, json!({})).await);
    assert_eq!(
        app.commit_batch(&device, &kept).await.status().as_u16(),
        200
    );
    assert_problem(app.abandon_batch(&device, &kept).await, 409, "conflict").await;
}

#[actix_web::test]
async fn the_reconciler_expires_open_batches_and_deletes_their_objects() {
    let broker = Broker::new().await;
    let batches = broker.bind("batch.#").await;
    let files = broker.bind("file.#").await;
    let app = spawn_app_with(|s| {
        broker.configure(s, BROKER);
        s.reconciler.interval_secs = 1;
        s.reconciler.grace_secs = 0;
        s.uploads.upload_url_ttl_secs = 2;
    })
    .await;
    let device = app.device_token("acme", "dev-1");
    let batch = id_of(
        &app.create_batch_ok(&device, json!({"expires_in_secs": 1}))
            .await,
    );
    let kept = id_of(&app.create_batch_ok(&device, json!({})).await);
    // Never uploaded: it expires while its batch is open, unannounced.
    let never = app
        .create_ok(&device, &body_of(32), json!({"batch_id": kept}))
        .await;
    let never = id_of(&never["file"]);
    let file = id_of(
        &app.upload(&device, &body_of(64), json!({"batch_id": batch}))
            .await,
    );
    let download: Value = app
        .download(&device, &file)
        .await
        .json()
        .await
        .expect("signed");

    let published = batches.wait_for(1).await;
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0].routing_key, "batch.expired.acme.dev-1");
    assert_eq!(published[0].kind, "io.valet.batch.expired");
    assert_eq!(published[0].body["batchid"], batch.as_str());
    assert_eq!(published[0].body["data"]["state"], "abandoned");
    assert_eq!(published[0].body["data"]["files"][0]["id"], file.as_str());

    let deadline = std::time::Instant::now() + patience(Duration::from_secs(20));
    loop {
        let got: Value = app
            .get_file(&device, &file)
            .await
            .json()
            .await
            .expect("file");
        if got["status"] == "deleted" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{got}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        app.send_signed(&download, Vec::new())
            .await
            .status()
            .as_u16(),
        404
    );
    assert!(app.stored_objects().is_empty());
    let got: Value = app
        .get_batch(&device, &batch)
        .await
        .json()
        .await
        .expect("batch");
    assert_eq!(got["state"], "abandoned");
    let open: Value = app
        .get_batch(&device, &kept)
        .await
        .json()
        .await
        .expect("batch");
    assert_eq!(open["state"], "open", "not yet due");
    app.wait_for_file(&device, &never, |f| f["status"] == "expired")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(files.received().is_empty(), "{:?}", files.received());
    assert_eq!(batches.received().len(), 1);
}

#[actix_web::test]
async fn the_reconciler_finishes_an_abandon_that_was_interrupted() {
    let app = spawn_app_with(|s| {
        s.reconciler.interval_secs = 1;
    })
    .await;
    let device = app.device_token("acme", "dev-1");
    let batch = id_of(&app.create_batch_ok(&device, json!({})).await);
    let file = app
        .upload(&device, &body_of(64), json!({"batch_id": batch}))
        .await;
    assert_eq!(file["batch_id"], batch.as_str(), "{file}");
    let file = id_of(&file);
    // The batch became `abandoned`, then the instance stopped before deleting its files.
    app.execute_sql(format!(
        "UPDATE batches SET state = 'abandoned' WHERE id = '{batch}'"
    ))
    .await;
    app.wait_for_file(&device, &file, |f| f["status"] == "deleted")
        .await;
    assert!(app.stored_objects().is_empty());
    // A file outside any batch says so.
    let lone = app.upload(&device, &body_of(8), json!({})).await;
    assert_eq!(lone["batch_id"], Value::Null, "{lone}");
}

#[actix_web::test]
async fn with_two_relays_each_batch_still_arrives_before_its_files() {
    let broker = Broker::new().await;
    let everything = broker.bind("#").await;
    let app = spawn_app_on_postgres(|s| broker.configure(s, BROKER)).await;
    // A second instance on the same database relays too.
    app.spawn_another_instance().await;
    let device = app.device_token("acme", "dev-1");
    let mut batches = Vec::new();
    for b in 0..4 {
        let batch = id_of(&app.create_batch_ok(&device, json!({})).await);
        for n in 0..8 {
            app.upload(
                &device,
                &body_of(1000 * b + n + 1),
                json!({"batch_id": batch}),
            )
            .await;
        }
        batches.push(batch);
    }
    for batch in &batches {
        assert_eq!(
            app.commit_batch(&device, batch).await.status().as_u16(),
            200
        );
    }
    let messages = everything.wait_for(4 * 9).await;
    assert_eq!(messages.len(), 36, "{messages:?}");
    for batch in &batches {
        let announced = messages
            .iter()
            .position(|m| {
                m.kind == "io.valet.batch.committed" && m.body["batchid"] == batch.as_str()
            })
            .expect("the batch event");
        let files: Vec<&str> = messages[announced].body["data"]["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| f["id"].as_str().expect("id"))
            .collect();
        assert_eq!(files.len(), 8);
        for (at, message) in messages.iter().enumerate() {
            if message.kind == "io.valet.file.uploaded"
                && files.contains(&message.body["data"]["id"].as_str().expect("id"))
            {
                assert!(
                    at > announced,
                    "a file event of {batch} came before its batch's"
                );
            }
        }
    }
}

#[actix_web::test]
async fn two_instances_committing_one_batch_record_one_set_of_events() {
    let app = spawn_app_on_postgres(|_| {}).await;
    let second = app.spawn_another_instance().await;
    let device = app.device_token("acme", "dev-1");
    for round in 0..3 {
        let batch = id_of(&app.create_batch_ok(&device, json!({})).await);
        for n in 0..5 {
            app.upload(
                &device,
                &body_of(10 + n + round * 10),
                json!({"batch_id": batch}),
            )
            .await;
        }
        let path = format!("/v1/batches/{batch}/commit");
        let first = app.client.post(app.url(&path)).bearer_auth(&device).send();
        let other = app
            .client
            .post(format!("{second}{path}"))
            .bearer_auth(&device)
            .send();
        let (first, other) = tokio::join!(first, other);
        assert_eq!(first.expect("first").status().as_u16(), 200);
        assert_eq!(other.expect("other").status().as_u16(), 200);
        let outbox = app.outbox().await;
        let batch_events = outbox
            .iter()
            .filter(|e| e.event_type == "io.valet.batch.committed" && e.file_id == batch)
            .count();
        assert_eq!(batch_events, 1, "round {round}");
        assert_eq!(
            outbox
                .iter()
                .filter(|e| e.event_type == "io.valet.file.uploaded")
                .count(),
            5 * (round + 1),
            "round {round}"
        );
    }
}

#[actix_web::test]
async fn others_batches_are_not_found_and_every_refusal_says_why() {
    let app = spawn_app().await;
    let device = app.device_token("acme", "dev-1");
    let neighbour = app.device_token("acme", "dev-2");
    let service = app.service_token("acme", "fleet");
    let stranger = app.service_token("globex", "fleet");
    let batch = id_of(&app.create_batch_ok(&device, json!({})).await);
    let file_body = |extra: Value| {
        let mut body = json!({"name": "a", "size": 3, "sha256": "0".repeat(64)});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        body
    };

    for token in [&neighbour, &stranger] {
        assert_problem(app.get_batch(token, &batch).await, 404, "not_found").await;
        assert_problem(app.commit_batch(token, &batch).await, 404, "not_found").await;
        assert_problem(app.abandon_batch(token, &batch).await, 404, "not_found").await;
    }
    assert_problem(
        app.create(&neighbour, file_body(json!({"batch_id": batch})))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.create(
            &stranger,
            file_body(json!({"batch_id": batch, "device_id": "dev-1"})),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_problem(app.get_batch(&device, &unknown).await, 404, "not_found").await;
    assert_problem(app.get_batch(&device, "not-a-uuid").await, 404, "not_found").await;
    assert_problem(
        app.create(&device, file_body(json!({"batch_id": unknown})))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.create(&device, file_body(json!({"batch_id": "nope"})))
            .await,
        400,
        "invalid_request",
    )
    .await;
    // A service files into a device's batch only in that device's root.
    assert_problem(
        app.create(
            &service,
            file_body(json!({"batch_id": batch, "shared": true})),
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    assert_problem(
        app.create(
            &service,
            file_body(json!({"batch_id": batch, "device_id": "dev-2"})),
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    let response = app
        .create(
            &service,
            file_body(json!({"batch_id": batch, "device_id": "dev-1"})),
        )
        .await;
    assert_eq!(response.status().as_u16(), 201);
    // The service sees the device's batch (with the file it put there).
    let seen: Value = app
        .get_batch(&service, &batch)
        .await
        .json()
        .await
        .expect("batch");
    assert_eq!(seen["files"].as_array().expect("files").len(), 1);

    // Creation refusals.
    for (token, body, status, code) in [
        (
            &device,
            json!({"expires_in_secs": 0}),
            400,
            "invalid_request",
        ),
        (
            &device,
            json!({"expires_in_secs": 604801}),
            400,
            "invalid_request",
        ),
        (&device, json!({"colour": "blue"}), 400, "invalid_request"),
        (&device, json!({"name": ""}), 400, "invalid_request"),
        (&device, json!({"device_id": "dev-2"}), 403, "forbidden"),
        (&device, json!({"shared": true}), 403, "forbidden"),
        (&service, json!({}), 400, "invalid_request"),
        (
            &service,
            json!({"device_id": "dev-1", "shared": true}),
            400,
            "invalid_request",
        ),
    ] {
        assert_problem(app.create_batch(token, body).await, status, code).await;
    }
    let response = app
        .client
        .post(app.url("/v1/batches"))
        .json(&json!({}))
        .send()
        .await
        .expect("anonymous");
    assert_problem(response, 401, "unauthenticated").await;

    // Listing: a device its own root, a service the tenant; pages and filters.
    for _ in 0..2 {
        app.create_batch_ok(&device, json!({})).await;
    }
    app.create_batch_ok(&service, json!({"shared": true})).await;
    let page: Value = app
        .list_batches(&device, "limit=2")
        .await
        .json()
        .await
        .expect("page");
    assert_eq!(page["batches"].as_array().expect("batches").len(), 2);
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let rest: Value = app
        .list_batches(&device, &format!("limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .expect("page");
    assert_eq!(rest["batches"].as_array().expect("batches").len(), 1);
    assert!(rest["next_cursor"].is_null());
    let all: Value = app
        .list_batches(&service, "")
        .await
        .json()
        .await
        .expect("page");
    assert_eq!(all["batches"].as_array().expect("batches").len(), 4);
    assert_problem(
        app.list_batches(&device, "cursor=garbage").await,
        400,
        "invalid_request",
    )
    .await;
    assert_problem(
        app.list_batches(&device, "state=sideways").await,
        400,
        "invalid_request",
    )
    .await;
    assert_problem(
        app.list_batches(&neighbour, "device_id=dev-1").await,
        404,
        "not_found",
    )
    .await;
    let none: Value = app
        .list_batches(&stranger, "")
        .await
        .json()
        .await
        .expect("page");
    assert_eq!(none["batches"], json!([]), "nothing crosses a tenant");
}

#[actix_web::test]
async fn the_api_description_covers_every_batch_operation() {
    let app = spawn_app().await;
    let spec: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    let paths = &spec["paths"];
    for (path, method, statuses) in [
        ("/v1/batches", "post", &["201", "400", "401", "403"][..]),
        ("/v1/batches", "get", &["200", "400", "401", "404"][..]),
        ("/v1/batches/{id}", "get", &["200", "401", "404"][..]),
        (
            "/v1/batches/{id}",
            "delete",
            &["200", "401", "404", "409"][..],
        ),
        (
            "/v1/batches/{id}/commit",
            "post",
            &["200", "401", "404", "409"][..],
        ),
        ("/v1/files", "post", &["201", "400", "404", "409"][..]),
    ] {
        let operation = &paths[path][method];
        assert!(operation.is_object(), "{method} {path} missing");
        for status in statuses {
            assert!(
                operation["responses"][status].is_object(),
                "{method} {path}: {status} missing"
            );
        }
    }
    let conflict = paths["/v1/batches/{id}/commit"]["post"]["responses"]["409"]["description"]
        .as_str()
        .expect("409 description");
    assert!(conflict.contains("batch_incomplete"), "{conflict}");
    let schemas = &spec["components"]["schemas"];
    assert!(schemas["Batch"].is_object());
    assert!(schemas["CreateBatchBody"].is_object());
    assert!(schemas["CreateFileBody"]["properties"]["batch_id"].is_object());
}

#[actix_web::test]
async fn a_file_created_while_its_batch_is_committed_is_either_in_it_or_refused() {
    let app = spawn_app_on_postgres(|_| {}).await;
    let second = app.spawn_another_instance().await;
    let device = app.device_token("acme", "dev-1");
    for round in 0..6 {
        let batch = id_of(&app.create_batch_ok(&device, json!({})).await);
        app.upload(&device, &body_of(10 + round), json!({"batch_id": batch}))
            .await;
        let bytes = body_of(100 + round);
        let body = json!({
            "name": "late.bin",
            "size": bytes.len(),
            "sha256": crate::helpers::sha256_hex(&bytes),
            "batch_id": batch,
        });
        let commit = app
            .client
            .post(app.url(&format!("/v1/batches/{batch}/commit")))
            .bearer_auth(&device)
            .send();
        let create = app
            .client
            .post(format!("{second}/v1/files"))
            .bearer_auth(&device)
            .json(&body)
            .send();
        let (commit, create) = tokio::join!(commit, create);
        let (commit, create) = (commit.expect("commit"), create.expect("create"));
        match (commit.status().as_u16(), create.status().as_u16()) {
            // The commit went first: the late file is refused.
            (200, 409) => {
                assert_problem(create, 409, "conflict").await;
                let committed: Value = commit.json().await.expect("batch");
                assert_eq!(committed["files"].as_array().expect("files").len(), 1);
            }
            // The file went first: the commit sees it, not uploaded.
            (409, 201) => {
                let created: Value = create.json().await.expect("created");
                let problem = assert_problem(commit, 409, "batch_incomplete").await;
                assert_eq!(problem["files"], json!([created["file"]["id"]]));
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
}
