//! Server-side jobs: copying and moving a file between configured backends, one file
//! or a tenant-wide group at a time, with cancellation, retries, several instances
//! sharing the work, and the events a job's end announces.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::Digest;
use valet::configuration::{BackendSettings, Settings};
use valet_backends::local::LocalConfig;

use crate::amqp::{Broker, BROKER};
use crate::helpers::stores::{
    azure_container, local_backend, run_in_turn, s3_bucket, s3_object, use_backend,
};
use crate::helpers::{
    assert_problem, body_of, files_under, object_key_of, patience, spawn_app_on_postgres,
    spawn_app_with, with_redis_cache, TestApp,
};

/// Name of the second local backend, whose objects live under [`second_root`].
const SECOND: &str = "local2";

/// States a job never leaves.
const FINISHED: [&str; 3] = ["succeeded", "failed", "cancelled"];

/// Job settings that keep tests short: quick polling, retries and source removal.
fn quick_jobs(s: &mut Settings) {
    s.jobs.poll_interval_ms = 100;
    s.jobs.retry_backoff_secs = 1;
    s.jobs.source_grace_secs = Some(1);
}

/// Where the second local backend keeps its objects, under the test's data directory.
fn second_root_in(data_dir: &Path) -> PathBuf {
    data_dir.join("second-store")
}

fn second_root(app: &TestApp) -> PathBuf {
    second_root_in(app.data_dir.path())
}

/// Two local backends with different roots: `local` (the default) and `local2`.
fn two_local_stores(s: &mut Settings) {
    quick_jobs(s);
    s.backends.insert(
        SECOND.into(),
        BackendSettings::Local(LocalConfig {
            root: Some(second_root_in(&s.data_dir)),
            secret: None,
        }),
    );
    use_backend(s, "local", local_backend());
}

/// A valet with two local backends (see [`two_local_stores`]), then `configure`.
async fn spawn_on_two_local_stores(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(|s| {
        two_local_stores(s);
        configure(s);
    })
    .await
}

/// `token` with one more block of Datalog `code` (checks narrowing what it may do).
fn attenuate(app: &TestApp, token: &str, code: &str) -> String {
    let biscuit =
        biscuit_auth::Biscuit::from_base64(token, app.root_key.keypair.public()).expect("token");
    let block = biscuit_auth::builder::BlockBuilder::new()
        .code(code)
        .expect("block");
    biscuit
        .append(block)
        .expect("attenuated")
        .to_base64()
        .expect("base64")
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

fn state_of(job: &Value) -> &str {
    job["state"].as_str().expect("job state")
}

/// The CloudEvent an outbox entry holds.
fn payload_of(entry: &valet::metadata::OutboxEntry) -> Value {
    serde_json::from_str(&entry.payload).expect("CloudEvent JSON")
}

/// Outbox events of type `kind` whose `data.id` is `id`.
async fn events_about(app: &TestApp, kind: &str, id: &str) -> Vec<Value> {
    app.outbox()
        .await
        .iter()
        .filter(|e| e.event_type == kind)
        .map(payload_of)
        .filter(|event| event["data"]["id"] == id)
        .collect()
}

/// Checks a job as the API answers it right after its creation.
fn assert_new_job(job: &Value, kind: &str, file: &Value, source: &str, target: &str) {
    let id = uuid::Uuid::parse_str(job["id"].as_str().expect("job id")).expect("uuid");
    assert_eq!(id.get_version_num(), 7, "a UUIDv7: {job}");
    assert_eq!(job["kind"], kind, "{job}");
    assert_eq!(job["file_id"], file["id"], "{job}");
    assert_eq!(job["tenant_id"], file["tenant_id"], "{job}");
    assert_eq!(job["source_backend"], source, "{job}");
    assert_eq!(job["target_backend"], target, "{job}");
    assert_eq!(job["bytes_total"], file["size"], "{job}");
    assert!(job["bytes_done"].is_u64(), "{job}");
    assert!(job["attempts"].is_u64(), "{job}");
    assert_eq!(job["cancel_requested"], false, "{job}");
    assert!(
        job.get("group_id").is_some(),
        "group_id is always present: {job}"
    );
    for stamp in ["created_at", "updated_at"] {
        let text = job[stamp]
            .as_str()
            .unwrap_or_else(|| panic!("{stamp}: {job}"));
        chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{stamp}: {e}"));
    }
    assert!(
        ["created", "scheduled", "copying", "verifying", "succeeded"].contains(&state_of(job)),
        "{job}"
    );
}

/// Checks a job that ended well on its first attempt.
fn assert_succeeded(job: &Value) {
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["bytes_done"], job["bytes_total"], "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(job["cancel_requested"], false, "{job}");
    assert!(
        job.get("error").is_none_or(Value::is_null),
        "no failed attempt, no error: {job}"
    );
}

impl TestApp {
    async fn post_job(&self, token: &str, body: Value) -> reqwest::Response {
        self.call(reqwest::Method::POST, "/v1/jobs", token, Some(body))
            .await
    }

    /// Starts a `kind` job for one file; asserts 202 and returns the job.
    async fn start_job(&self, token: &str, kind: &str, file_id: &str, target: &str) -> Value {
        let response = self
            .post_job(
                token,
                json!({"kind": kind, "file_id": file_id, "target_backend": target}),
            )
            .await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("job JSON");
        assert_eq!(status, 202, "{body}");
        assert!(body["job"].is_object(), "{body}");
        body["job"].clone()
    }

    async fn get_job(&self, token: &str, id: &str) -> reqwest::Response {
        self.call(reqwest::Method::GET, &format!("/v1/jobs/{id}"), token, None)
            .await
    }

    /// The job as `token` sees it; asserts 200.
    async fn job_of(&self, token: &str, id: &str) -> Value {
        let response = self.get_job(token, id).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("job JSON");
        assert_eq!(status, 200, "{body}");
        body["job"].clone()
    }

    async fn list_jobs(&self, token: &str, query: &str) -> reqwest::Response {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/jobs?{query}"),
            token,
            None,
        )
        .await
    }

    /// Every job `query` lists, following the cursor; asserts each page is 200.
    async fn all_jobs(&self, token: &str, query: &str) -> Vec<Value> {
        let mut jobs = Vec::new();
        let mut page_query = query.to_owned();
        loop {
            let response = self.list_jobs(token, &page_query).await;
            let status = response.status().as_u16();
            let page: Value = response.json().await.expect("page JSON");
            assert_eq!(status, 200, "{page}");
            jobs.extend(page["jobs"].as_array().expect("jobs").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(cursor) => page_query = format!("{query}&cursor={cursor}"),
                None => {
                    assert!(page["next_cursor"].is_null(), "{page}");
                    return jobs;
                }
            }
        }
    }

    async fn cancel_job(&self, token: &str, id: &str) -> reqwest::Response {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/jobs/{id}/cancel"),
            token,
            None,
        )
        .await
    }

    async fn job_log(&self, token: &str, id: &str) -> reqwest::Response {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/jobs/{id}/log"),
            token,
            None,
        )
        .await
    }

    /// The job's log lines; asserts 200, plain UTF-8 text, and that each line starts
    /// with an RFC 3339 timestamp and a space.
    async fn job_log_lines(&self, token: &str, id: &str) -> Vec<String> {
        let response = self.job_log(token, id).await;
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            content_type.replace(' ', "").to_lowercase(),
            "text/plain;charset=utf-8"
        );
        let text = response.text().await.expect("log text");
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        for line in &lines {
            let (stamp, rest) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("no timestamp then space: {line:?}"));
            chrono::DateTime::parse_from_rfc3339(stamp)
                .unwrap_or_else(|e| panic!("{line:?} starts with no RFC 3339 time: {e}"));
            assert!(!rest.trim().is_empty(), "{line:?}");
        }
        lines
    }

    /// Polls the job until `done` holds for it (at most `base` stretched by
    /// [`patience`]); returns it.
    async fn wait_for_job(
        &self,
        token: &str,
        id: &str,
        base: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + patience(base);
        loop {
            let job = self.job_of(token, id).await;
            if done(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "the job never reached the expected state: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the job until it has ended; returns it.
    async fn wait_until_finished(&self, token: &str, id: &str) -> Value {
        self.wait_for_job(token, id, Duration::from_secs(30), |job| {
            FINISHED.contains(&state_of(job))
        })
        .await
    }

    /// The file as `token` sees it; asserts 200.
    async fn file_of(&self, token: &str, id: &str) -> Value {
        let response = self.get_file(token, id).await;
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.expect("file JSON")
    }
}

/// Polls `condition` until it holds, for at most `base` stretched by [`patience`].
async fn eventually(what: &str, base: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + patience(base);
    while !condition().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Moves (or copies) a file with one job and waits for its success; returns the job.
async fn run_job(app: &TestApp, token: &str, kind: &str, file: &Value, target: &str) -> Value {
    let id = id_of(file);
    let current = app.file_of(token, &id).await;
    let source = current["backend"].as_str().expect("backend").to_owned();
    let job = app.start_job(token, kind, &id, target).await;
    assert_new_job(&job, kind, &current, &source, target);
    assert!(job["group_id"].is_null(), "{job}");
    let done = app.wait_until_finished(token, &id_of(&job)).await;
    assert_succeeded(&done);
    assert_eq!(done["id"], job["id"]);
    assert_eq!(done["created_at"], job["created_at"]);
    done
}

#[test]
fn files_move_from_local_to_s3_to_azure_and_back_and_copies_become_replicas() {
    run_in_turn(async {
        let (bucket, s3) = s3_bucket().await;
        let (_, azure) = azure_container().await;
        let app = spawn_app_with(|s| {
            quick_jobs(s);
            s.backends.insert("s3".into(), s3);
            s.backends.insert("azure".into(), azure);
            use_backend(s, "local", local_backend());
        })
        .await;
        let device = app.device_token("acme", "dev-1");
        let service = app.service_token("acme", "fleet");
        let bytes = body_of(300 * 1024 + 7);
        let file = app.upload(&device, &bytes, json!({})).await;
        let id = id_of(&file);
        assert_eq!(file["backend"], "local");
        assert_eq!(file["replicas"], json!([]), "{file}");
        let key = object_key_of(&file);
        let on_local = app.data_dir.path().join("objects").join(key.as_str());
        assert!(on_local.is_file(), "{}", on_local.display());

        // local → s3: the file follows, and the local object goes after the grace.
        let job = run_job(&app, &service, "move", &file, "s3").await;
        assert_eq!(job["kind"], "move");
        let moved = app.file_of(&device, &id).await;
        assert_eq!(moved["backend"], "s3", "{moved}");
        assert_eq!(moved["status"], "uploaded");
        assert_eq!(moved["sha256"], file["sha256"]);
        assert_eq!(app.fetch(&device, &id).await, bytes);
        // The object goes first, then its checksum file: wait for both.
        eventually(
            "the local source object and its checksum file are deleted",
            Duration::from_secs(15),
            async || {
                !on_local.exists()
                    && app
                        .stored_objects()
                        .iter()
                        .all(|p| !p.to_string_lossy().contains(&id))
            },
        )
        .await;
        assert_eq!(
            s3_object(&bucket, key.as_str()).await.as_deref(),
            Some(&bytes[..])
        );

        // s3 → azure.
        run_job(&app, &service, "move", &file, "azure").await;
        assert_eq!(app.file_of(&device, &id).await["backend"], "azure");
        assert_eq!(app.fetch(&device, &id).await, bytes);
        eventually(
            "the S3 source object is deleted",
            Duration::from_secs(15),
            async || s3_object(&bucket, key.as_str()).await.is_none(),
        )
        .await;

        // azure → local.
        run_job(&app, &service, "move", &file, "local").await;
        assert_eq!(app.file_of(&device, &id).await["backend"], "local");
        assert_eq!(app.fetch(&device, &id).await, bytes);
        assert_eq!(std::fs::read(&on_local).expect("local object"), bytes);

        // A copy to s3 leaves the file where it is and records the replica.
        let copy = run_job(&app, &service, "copy", &file, "s3").await;
        assert_eq!(copy["kind"], "copy");
        let copied = app.file_of(&device, &id).await;
        assert_eq!(copied["backend"], "local", "{copied}");
        assert_eq!(
            copied["replicas"],
            json!([{"backend": "s3", "key": key.as_str()}]),
            "{copied}"
        );
        assert_eq!(
            s3_object(&bucket, key.as_str()).await.as_deref(),
            Some(&bytes[..]),
            "the replica holds the same bytes"
        );
        // The source of a copy stays (past the grace a move would wait).
        tokio::time::sleep(patience(Duration::from_secs(2))).await;
        assert!(on_local.is_file(), "a copy keeps its source");
        assert_eq!(app.fetch(&device, &id).await, bytes);

        // Each job's log tells its story.
        let log = app.job_log_lines(&service, &id_of(&copy)).await;
        assert!(log.iter().any(|l| l.contains("claim")), "{log:#?}");
        assert!(log.iter().any(|l| l.contains("succe")), "{log:#?}");

        let metrics = app.metrics_text().await;
        for (name, labels) in [
            ("valet_jobs_total", ["kind=\"move\"", "state=\"succeeded\""]),
            ("valet_jobs_total", ["kind=\"copy\"", "state=\"succeeded\""]),
            ("valet_job_bytes_copied_total", ["kind=\"move\"", ""]),
        ] {
            assert!(
                metrics
                    .lines()
                    .any(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label))),
                "{name} {labels:?}: {metrics}"
            );
        }
        assert!(
            metrics.contains("valet_job_copy_duration_seconds"),
            "{metrics}"
        );
    });
}

#[test]
fn downloads_during_a_move_never_fail() {
    run_in_turn(async {
        let (bucket, s3) = s3_bucket().await;
        let app = spawn_app_with(|s| {
            quick_jobs(s);
            // Longer than one read takes: a URL handed out just before the switch
            // still finds its object.
            s.jobs.source_grace_secs = Some(3);
            // S3's smallest part: the 8 MiB file is written in two parts.
            s.jobs.chunk_size_bytes = 5 * 1024 * 1024;
            s.backends.insert("s3".into(), s3);
            use_backend(s, "local", local_backend());
        })
        .await;
        let device = app.device_token("acme", "dev-1");
        let service = app.service_token("acme", "fleet");
        let bytes = body_of(8 * 1024 * 1024 + 5);
        let file = app.upload(&device, &bytes, json!({})).await;
        let id = id_of(&file);
        let on_local = app
            .data_dir
            .path()
            .join("objects")
            .join(object_key_of(&file).as_str());

        let reads = Cell::new(0u32);
        let stop = Cell::new(false);
        let served_from = std::cell::RefCell::new(BTreeSet::new());
        let reader = async {
            while !stop.get() {
                let response = app.download(&device, &id).await;
                let status = response.status().as_u16();
                let signed: Value = response.json().await.expect("download JSON");
                assert_eq!(status, 200, "read {}: {signed}", reads.get());
                let url = signed["url"].as_str().expect("url").to_owned();
                served_from
                    .borrow_mut()
                    .insert(if url.contains(&bucket) { "s3" } else { "local" });
                let fetched = app.send_signed(&signed, Vec::new()).await;
                let status = fetched.status().as_u16();
                let body = fetched.bytes().await.expect("bytes");
                assert_eq!(status, 200, "read {} of {url}", reads.get());
                assert!(
                    body[..] == bytes[..],
                    "read {} of {url}: other bytes",
                    reads.get()
                );
                reads.set(reads.get() + 1);
            }
        };
        let mover = async {
            eventually(
                "reads before the move",
                Duration::from_secs(20),
                async || reads.get() >= 2,
            )
            .await;
            let job = app.start_job(&service, "move", &id, "s3").await;
            let done = app.wait_until_finished(&service, &id_of(&job)).await;
            assert_succeeded(&done);
            eventually(
                "the source object is deleted",
                Duration::from_secs(20),
                async || !on_local.exists(),
            )
            .await;
            let after = reads.get();
            eventually(
                "reads after the source is gone",
                Duration::from_secs(20),
                async || reads.get() >= after + 3,
            )
            .await;
            stop.set(true);
        };
        futures_util::future::join(reader, mover).await;
        assert_eq!(
            served_from.into_inner(),
            BTreeSet::from(["local", "s3"]),
            "reads were served by both stores"
        );
        assert_eq!(app.file_of(&device, &id).await["backend"], "s3");
    });
}

/// The byte at `offset` of the large test file (the pattern of [`body_of`]).
fn large_byte(offset: usize) -> u8 {
    (offset * 31 + offset / 7) as u8
}

fn large_chunk(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(large_byte).collect()
}

/// Uploads a `size`-byte file generated and sent chunk by chunk, so the test never
/// holds it whole; returns the uploaded File.
async fn upload_streamed(app: &TestApp, token: &str, size: usize) -> Value {
    const CHUNK: usize = 1024 * 1024;
    let mut digest = sha2::Sha256::new();
    for offset in (0..size).step_by(CHUNK) {
        digest.update(large_chunk(offset, CHUNK.min(size - offset)));
    }
    let sha256 = hex::encode(digest.finalize());
    let response = app
        .create(
            token,
            json!({"name": "large.bin", "size": size, "sha256": sha256}),
        )
        .await;
    let status = response.status().as_u16();
    let created: Value = response.json().await.expect("created JSON");
    assert_eq!(status, 201, "{created}");
    let signed = &created["upload"];
    assert_eq!(signed["method"], "PUT", "a single PUT: {created}");
    let chunks = (0..size)
        .step_by(CHUNK)
        .map(move |offset| Ok::<_, std::io::Error>(large_chunk(offset, CHUNK.min(size - offset))));
    let mut request = app
        .client
        .put(signed["url"].as_str().expect("url"))
        .timeout(patience(Duration::from_secs(300)));
    for (name, value) in signed["headers"].as_object().expect("headers") {
        request = request.header(name, value.as_str().expect("header value"));
    }
    let put = request
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("PUT");
    assert!(put.status().is_success(), "{:?}", put.text().await);
    let id = created["file"]["id"].as_str().expect("id");
    let completed = app.complete(token, id).await.status().as_u16();
    assert!([200, 202].contains(&completed), "{completed}");
    app.wait_for_file(token, id, |f| f["status"] != "verifying")
        .await
}

#[actix_web::test]
async fn cancelling_a_running_copy_stops_it_and_leaves_nothing_on_the_target() {
    let app = spawn_on_two_local_stores(|s| {
        // One job at a time: a second job waits, not yet running.
        s.jobs.concurrency = 1;
        s.jobs.chunk_size_bytes = 5 * 1024 * 1024;
        s.uploads.multipart_threshold_bytes = 256 * 1024 * 1024;
    })
    .await;
    let device = app.device_token("acme", "dev-1");
    let service = app.service_token("acme", "fleet");
    let size = 200 * 1024 * 1024;
    let file = upload_streamed(&app, &device, size).await;
    assert_eq!(file["status"], "uploaded", "{file}");
    let file_id = id_of(&file);

    // A second job waits behind the first: one job runs at a time, oldest first.
    let small = app.upload(&device, &body_of(1000), json!({})).await;
    let big = app.start_job(&service, "copy", &file_id, SECOND).await;
    assert_new_job(&big, "copy", &file, "local", SECOND);
    let big_id = id_of(&big);
    let queued = app
        .start_job(&service, "copy", &id_of(&small), SECOND)
        .await;
    let queued_id = id_of(&queued);
    // Cancel the moment the copy runs (a local copy is quick).
    let deadline = Instant::now() + patience(Duration::from_secs(30));
    let running = loop {
        let job = app.job_of(&service, &big_id).await;
        if !["created", "scheduled"].contains(&state_of(&job)) {
            break job;
        }
        assert!(Instant::now() < deadline, "never started: {job}");
    };
    assert_eq!(running["state"], "copying", "{running}");
    let response = app.cancel_job(&service, &big_id).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("cancel JSON");
    assert_eq!(status, 202, "{body}");
    let asked = &body["job"];
    assert_eq!(asked["id"], big_id.as_str());
    assert!(
        asked["cancel_requested"] == true || asked["state"] == "cancelled",
        "{asked}"
    );
    assert!(
        ["copying", "verifying", "cancelled"].contains(&state_of(asked)),
        "{asked}"
    );

    // The queued job is cancelled at once.
    let response = app.cancel_job(&service, &queued_id).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("cancel JSON");
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["job"]["state"], "cancelled", "not yet running: {body}");
    let again = app.cancel_job(&service, &queued_id).await;
    let status = again.status().as_u16();
    let body: Value = again.json().await.expect("cancel JSON");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["job"]["state"], "cancelled", "{body}");

    let cancelled = app
        .wait_for_job(&service, &big_id, Duration::from_secs(10), |job| {
            FINISHED.contains(&state_of(job))
        })
        .await;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["cancel_requested"], true, "{cancelled}");
    assert!(
        cancelled["bytes_done"].as_u64().expect("bytes_done") <= size as u64,
        "{cancelled}"
    );
    let log = app.job_log_lines(&service, &big_id).await;
    assert!(
        log.iter().any(|l| l.to_lowercase().contains("cancel")),
        "{log:#?}"
    );
    let again = app.cancel_job(&service, &big_id).await;
    assert_eq!(again.status().as_u16(), 200);

    // Nothing stays on the target: no object, no partial or temporary file.
    eventually(
        "the target holds no file",
        Duration::from_secs(10),
        async || files_under(&second_root(&app)).is_empty(),
    )
    .await;
    // The queued job never ran either: still nothing after a while.
    tokio::time::sleep(patience(Duration::from_millis(500))).await;
    assert_eq!(files_under(&second_root(&app)), Vec::<PathBuf>::new());
    assert_eq!(app.job_of(&service, &queued_id).await["state"], "cancelled");

    let unchanged = app.file_of(&device, &file_id).await;
    assert_eq!(unchanged["backend"], "local", "{unchanged}");
    assert_eq!(unchanged["replicas"], json!([]), "{unchanged}");
    for id in [&big_id, &queued_id] {
        let events = events_about(&app, "io.valet.job.cancelled", id).await;
        assert_eq!(events.len(), 1, "{id}: {events:#?}");
        assert_eq!(events[0]["data"]["state"], "cancelled");
    }
}

#[actix_web::test]
async fn a_target_refusing_writes_fails_the_job_after_its_retries() {
    let app = spawn_on_two_local_stores(|s| s.jobs.max_attempts = 3).await;
    let device = app.device_token("acme", "dev-1");
    let service = app.service_token("acme", "fleet");
    let bytes = body_of(40 * 1024);
    let file = app.upload(&device, &bytes, json!({})).await;
    let id = id_of(&file);
    // The target's directory for this tenant is a regular file: every write of the
    // tenant's objects fails there, while the store itself stays healthy (its
    // readiness probe writes elsewhere under the root).
    let key = object_key_of(&file);
    let tenant_dir = key.as_str().split('/').next().expect("tenant segment");
    let root = second_root(&app);
    std::fs::create_dir_all(&root).expect("second root");
    std::fs::write(root.join(tenant_dir), b"in the way").expect("blocking file");

    let job = app.start_job(&service, "copy", &id, SECOND).await;
    let job_id = id_of(&job);
    let mut seen: Vec<(String, u64, Option<String>)> = Vec::new();
    let deadline = Instant::now() + patience(Duration::from_secs(40));
    let last = loop {
        let current = app.job_of(&service, &job_id).await;
        let observed = (
            state_of(&current).to_owned(),
            current["attempts"].as_u64().expect("attempts"),
            current["error"].as_str().map(str::to_owned),
        );
        if seen.last() != Some(&observed) {
            seen.push(observed);
        }
        let ready = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(ready.status().as_u16(), 200, "{:?}", ready.text().await);
        if FINISHED.contains(&state_of(&current)) {
            break current;
        }
        assert!(Instant::now() < deadline, "never ended: {seen:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(last["state"], "failed", "{last}\n{seen:#?}");
    assert_eq!(last["attempts"], 3, "{last}");
    assert!(
        last["error"].as_str().is_some_and(|e| !e.trim().is_empty()),
        "{last}"
    );
    let attempts: Vec<u64> = seen.iter().map(|(_, n, _)| *n).collect();
    assert!(
        attempts.windows(2).all(|w| w[0] <= w[1]),
        "attempts only grow: {seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|(state, n, error)| state == "created" && *n >= 1 && error.is_some()),
        "a job waiting for its retry is created again, with attempts and error: {seen:#?}"
    );
    let log = app.job_log_lines(&service, &job_id).await;
    let errors = log
        .iter()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("error") || l.contains("fail")
        })
        .count();
    assert!(errors >= 3, "an error line per attempt: {log:#?}");

    // The file is untouched.
    let unchanged = app.file_of(&device, &id).await;
    assert_eq!(unchanged["backend"], "local");
    assert_eq!(unchanged["replicas"], json!([]));
    assert_eq!(app.fetch(&device, &id).await, bytes);
    let failed = events_about(&app, "io.valet.job.failed", &job_id).await;
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["data"]["state"], "failed");
    assert_problem(app.cancel_job(&service, &job_id).await, 409, "conflict").await;
    let metrics = app.metrics_text().await;
    assert!(
        metrics.lines().any(|l| l.starts_with("valet_jobs_total")
            && l.contains("kind=\"copy\"")
            && l.contains("state=\"failed\"")),
        "{metrics}"
    );
}

#[actix_web::test]
async fn two_instances_on_one_database_run_each_job_once() {
    let app = spawn_app_on_postgres(|s| {
        two_local_stores(s);
        s.jobs.concurrency = 2;
        // Several instances share a Redis cache (an in-process one is per instance).
        with_redis_cache(s);
    })
    .await;
    let second = app.spawn_another_instance().await;
    let device = app.device_token("acme", "dev-1");
    let service = app.service_token("acme", "fleet");
    let mut files = Vec::new();
    for n in 0..20 {
        let file = app
            .upload(&device, &body_of(64 * 1024 + n), json!({}))
            .await;
        // Each instance reads the file before its move: it is cached where it goes.
        for base in [&app.address, &second] {
            let response = app
                .client
                .get(format!("{base}/v1/files/{}", id_of(&file)))
                .bearer_auth(&device)
                .send()
                .await
                .expect("get file");
            assert_eq!(response.status().as_u16(), 200);
        }
        files.push(file);
    }
    let mut jobs = Vec::new();
    for (n, file) in files.iter().enumerate() {
        // Half the jobs are asked of each instance; either may run any of them.
        let base = if n % 2 == 0 { &app.address } else { &second };
        let response = app
            .client
            .post(format!("{base}/v1/jobs"))
            .bearer_auth(&service)
            .json(&json!({"kind": "move", "file_id": file["id"], "target_backend": SECOND}))
            .send()
            .await
            .expect("create job");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("job JSON");
        assert_eq!(status, 202, "{body}");
        jobs.push(id_of(&body["job"]));
    }
    for (job_id, file) in jobs.iter().zip(&files) {
        let done = app.wait_until_finished(&service, job_id).await;
        assert_succeeded(&done);
        let id = id_of(file);
        for base in [&app.address, &second] {
            let seen: Value = app
                .client
                .get(format!("{base}/v1/files/{id}"))
                .bearer_auth(&device)
                .send()
                .await
                .expect("get file")
                .json()
                .await
                .expect("file JSON");
            assert_eq!(seen["backend"], SECOND, "{base}: {seen}");
        }
        let on_target = second_root(&app).join(object_key_of(file).as_str());
        let size = file["size"].as_u64().expect("size") as usize;
        assert_eq!(
            std::fs::read(&on_target).expect("target object"),
            body_of(size)
        );
        let log = app.job_log_lines(&service, job_id).await;
        let claims = log.iter().filter(|l| l.contains("claimed")).count();
        assert_eq!(claims, 1, "claimed once: {log:#?}");
    }
    let outbox = app.outbox().await;
    let mut succeeded: BTreeMap<String, usize> = BTreeMap::new();
    let mut moved: BTreeMap<String, usize> = BTreeMap::new();
    for entry in &outbox {
        let event = payload_of(entry);
        let id = event["data"]["id"].as_str().unwrap_or_default().to_owned();
        match entry.event_type.as_str() {
            "io.valet.job.succeeded" => *succeeded.entry(id).or_default() += 1,
            "io.valet.file.moved" => *moved.entry(id).or_default() += 1,
            _ => {}
        }
    }
    let expected_jobs: BTreeMap<String, usize> = jobs.iter().map(|j| (j.clone(), 1)).collect();
    assert_eq!(succeeded, expected_jobs, "one succeeded event per job");
    let expected_files: BTreeMap<String, usize> = files.iter().map(|f| (id_of(f), 1)).collect();
    assert_eq!(moved, expected_files, "one moved event per file");
}

#[actix_web::test]
async fn a_tenant_wide_move_runs_as_a_group_listed_page_by_page() {
    let app = spawn_on_two_local_stores(|s| {
        s.jobs.max_group_files = 500;
        s.jobs.concurrency = 2;
    })
    .await;
    let service = app.service_token("acme", "fleet");
    let count = 500;
    let mut file_ids = BTreeSet::new();
    for round in 0..count / 25 {
        let uploads = (0..25).map(|n| {
            let app = &app;
            let token = app.device_token("acme", &format!("dev-{}", n % 5));
            async move {
                let file = app
                    .upload(&token, &body_of(100 + round * 25 + n), json!({}))
                    .await;
                id_of(&file)
            }
        });
        file_ids.extend(futures_util::future::join_all(uploads).await);
    }
    // Neither another tenant's file nor a file not uploaded is selected.
    let globex = app
        .upload(
            &app.device_token("globex", "dev-0"),
            &body_of(99),
            json!({}),
        )
        .await;
    let pending = app
        .create_ok(&app.device_token("acme", "dev-0"), &body_of(98), json!({}))
        .await;

    let response = app
        .post_job(
            &service,
            json!({"kind": "move", "selector": {"backend": "local"}, "target_backend": SECOND}),
        )
        .await;
    let status = response.status().as_u16();
    let created: Value = response.json().await.expect("group JSON");
    assert_eq!(status, 202, "{created}");
    let group_id = created["group_id"].as_str().expect("group_id").to_owned();
    uuid::Uuid::parse_str(&group_id).expect("group id is a UUID");
    let jobs = created["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), count);
    let selected: BTreeSet<String> = jobs
        .iter()
        .map(|j| {
            assert_eq!(j["group_id"], group_id.as_str(), "{j}");
            assert_eq!(j["kind"], "move");
            assert_eq!(j["source_backend"], "local");
            assert_eq!(j["target_backend"], SECOND);
            j["file_id"].as_str().expect("file_id").to_owned()
        })
        .collect();
    assert_eq!(selected, file_ids);
    assert!(!selected.contains(&id_of(&globex)));
    assert!(!selected.contains(&id_of(&pending["file"])));

    // Progress shows in the listing: counts by state, until every job succeeded.
    let query = format!("group_id={group_id}&limit=100");
    let mut rounds: Vec<BTreeMap<String, usize>> = Vec::new();
    let deadline = Instant::now() + patience(Duration::from_secs(240));
    loop {
        let listed = app.all_jobs(&service, &query).await;
        let ids: BTreeSet<String> = listed.iter().map(id_of).collect();
        assert_eq!(listed.len(), count, "every job listed");
        assert_eq!(ids.len(), count, "no job listed twice");
        let created: Vec<chrono::DateTime<chrono::FixedOffset>> = listed
            .iter()
            .map(|j| {
                chrono::DateTime::parse_from_rfc3339(j["created_at"].as_str().expect("created_at"))
                    .expect("RFC 3339")
            })
            .collect();
        assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first");
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for job in &listed {
            assert_eq!(job["group_id"], group_id.as_str());
            *counts.entry(state_of(job).to_owned()).or_default() += 1;
        }
        let done = counts.get("succeeded") == Some(&count);
        rounds.push(counts);
        if done {
            break;
        }
        assert!(
            !rounds.last().expect("round").contains_key("failed"),
            "{rounds:#?}"
        );
        assert!(Instant::now() < deadline, "{rounds:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let succeeded: Vec<usize> = rounds
        .iter()
        .map(|r| r.get("succeeded").copied().unwrap_or(0))
        .collect();
    assert!(succeeded.windows(2).all(|w| w[0] <= w[1]), "{rounds:#?}");
    assert!(
        succeeded.iter().any(|&n| 0 < n && n < count),
        "progress was visible part way: {rounds:#?}"
    );
    let by_state = app
        .all_jobs(
            &service,
            &format!("group_id={group_id}&state=succeeded&limit=100"),
        )
        .await;
    assert_eq!(by_state.len(), count);
    let none_left = app
        .all_jobs(
            &service,
            &format!("group_id={group_id}&state=created&limit=100"),
        )
        .await;
    assert_eq!(none_left, Vec::<Value>::new());
    let sample = file_ids.iter().next().expect("a file");
    assert_eq!(app.file_of(&service, sample).await["backend"], SECOND);

    // Selecting again finds nothing left to move: an empty group.
    let response = app
        .post_job(
            &service,
            json!({"kind": "move", "selector": {"backend": "local"}, "target_backend": SECOND}),
        )
        .await;
    let status = response.status().as_u16();
    let again: Value = response.json().await.expect("group JSON");
    assert_eq!(status, 202, "{again}");
    assert!(again["group_id"].is_string(), "{again}");
    assert_eq!(again["jobs"], json!([]), "{again}");
}

#[actix_web::test]
async fn jobs_are_for_services_of_their_own_tenant() {
    let app = spawn_on_two_local_stores(|_| {}).await;
    let device = app.device_token("acme", "dev-1");
    let service = app.service_token("acme", "fleet");
    let other_service = app.service_token("acme", "billing");
    let globex = app.service_token("globex", "fleet");
    let file = app.upload(&device, &body_of(2000), json!({})).await;
    let id = id_of(&file);
    let job = app.start_job(&service, "move", &id, SECOND).await;
    let job_id = id_of(&job);

    // Another tenant's service: the job does not exist.
    assert_problem(app.get_job(&globex, &job_id).await, 404, "not_found").await;
    assert_problem(app.cancel_job(&globex, &job_id).await, 404, "not_found").await;
    assert_problem(app.job_log(&globex, &job_id).await, 404, "not_found").await;
    let theirs = app.all_jobs(&globex, "limit=100").await;
    assert!(theirs.is_empty(), "{theirs:#?}");
    // Nor may it move the tenant's file.
    assert_problem(
        app.post_job(
            &globex,
            json!({"kind": "copy", "file_id": id, "target_backend": SECOND}),
        )
        .await,
        404,
        "not_found",
    )
    .await;

    // A device may use no job route.
    assert_problem(
        app.post_job(
            &device,
            json!({"kind": "copy", "file_id": id, "target_backend": SECOND}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(app.get_job(&device, &job_id).await, 403, "forbidden").await;
    assert_problem(app.list_jobs(&device, "").await, 403, "forbidden").await;
    assert_problem(app.cancel_job(&device, &job_id).await, 403, "forbidden").await;
    assert_problem(app.job_log(&device, &job_id).await, 403, "forbidden").await;

    // A service token narrowed to reading reads jobs, and starts or cancels none.
    let read_only = attenuate(&app, &service, r#"check if operation("read");"#);
    assert_eq!(
        app.get_job(&read_only, &job_id).await.status().as_u16(),
        200
    );
    assert_eq!(
        app.job_log(&read_only, &job_id).await.status().as_u16(),
        200
    );
    assert_problem(
        app.post_job(
            &read_only,
            json!({"kind": "copy", "file_id": id, "target_backend": SECOND}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(app.cancel_job(&read_only, &job_id).await, 403, "forbidden").await;
    // Narrowed to the tenant's shared root, it manages no tenant-wide jobs.
    let shared_only = attenuate(&app, &service, r#"check if resource("acme/shared");"#);
    assert_problem(
        app.post_job(
            &shared_only,
            json!({"kind": "copy", "selector": {}, "target_backend": SECOND}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;

    // Any service of the tenant sees the job.
    let done = app.wait_until_finished(&other_service, &job_id).await;
    assert_succeeded(&done);
    let listed = app.all_jobs(&other_service, "limit=100").await;
    assert_eq!(
        listed.iter().map(id_of).collect::<Vec<_>>(),
        [job_id.as_str()]
    );
    assert!(!app.job_log_lines(&other_service, &job_id).await.is_empty());
    assert_problem(app.cancel_job(&service, &job_id).await, 409, "conflict").await;
}

#[actix_web::test]
async fn job_requests_that_cannot_run_are_refused() {
    let app = spawn_on_two_local_stores(|s| s.jobs.max_group_files = 3).await;
    let device = app.device_token("acme", "dev-1");
    let service = app.service_token("acme", "fleet");
    let file = app.upload(&device, &body_of(3000), json!({})).await;
    let id = id_of(&file);
    let pending = app.create_ok(&device, &body_of(3001), json!({})).await;
    let pending_id = id_of(&pending["file"]);

    for (body, status, code) in [
        (
            json!({"kind": "move", "file_id": pending_id, "target_backend": SECOND}),
            409,
            "not_uploaded",
        ),
        (
            json!({"kind": "move", "file_id": id, "target_backend": "nowhere"}),
            400,
            "invalid_request",
        ),
        (
            json!({"kind": "copy", "file_id": id, "target_backend": "local"}),
            409,
            "conflict",
        ),
        (
            json!({"kind": "copy", "file_id": uuid::Uuid::now_v7(), "target_backend": SECOND}),
            404,
            "not_found",
        ),
    ] {
        assert_problem(app.post_job(&service, body).await, status, code).await;
    }
    for body in [
        json!({"kind": "teleport", "file_id": id, "target_backend": SECOND}),
        json!({"kind": "copy", "file_id": id}),
        json!({"kind": "copy", "file_id": "not-a-uuid", "target_backend": SECOND}),
        json!({"file_id": id, "target_backend": SECOND}),
        json!({"kind": "move", "selector": {"created_before": "yesterday"}, "target_backend": SECOND}),
        json!([]),
    ] {
        assert_problem(app.post_job(&service, body).await, 400, "invalid_request").await;
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    for id in [unknown.as_str(), "not-a-uuid"] {
        assert_problem(app.get_job(&service, id).await, 404, "not_found").await;
        assert_problem(app.cancel_job(&service, id).await, 404, "not_found").await;
        assert_problem(app.job_log(&service, id).await, 404, "not_found").await;
    }
    for query in [
        "state=sleeping",
        "group_id=not-a-uuid",
        "cursor=not-a-cursor",
        "limit=0",
        "limit=many",
    ] {
        assert_problem(app.list_jobs(&service, query).await, 400, "invalid_request").await;
    }

    // A file with an unfinished job (one retrying against a target that refuses
    // writes) gets no second job, alone or by a selector.
    let initech_device = app.device_token("initech", "dev-1");
    let initech = app.service_token("initech", "fleet");
    let busy = app.upload(&initech_device, &body_of(3200), json!({})).await;
    let tenant_dir = object_key_of(&busy)
        .as_str()
        .split('/')
        .next()
        .expect("tenant segment")
        .to_owned();
    let root = second_root(&app);
    std::fs::create_dir_all(&root).expect("second root");
    std::fs::write(root.join(tenant_dir), b"in the way").expect("blocking file");
    let unfinished = app.start_job(&initech, "copy", &id_of(&busy), SECOND).await;
    assert_problem(
        app.post_job(
            &initech,
            json!({"kind": "move", "file_id": busy["id"], "target_backend": SECOND}),
        )
        .await,
        409,
        "conflict",
    )
    .await;
    let response = app
        .post_job(
            &initech,
            json!({"kind": "move", "selector": {}, "target_backend": SECOND}),
        )
        .await;
    let status = response.status().as_u16();
    let group: Value = response.json().await.expect("group JSON");
    assert_eq!(status, 202, "{group}");
    assert_eq!(group["jobs"], json!([]), "{group}");
    let response = app.cancel_job(&initech, &id_of(&unfinished)).await;
    assert!(
        [200, 202].contains(&response.status().as_u16()),
        "{:?}",
        response.text().await
    );

    // A selector matching more files than a group may hold.
    for n in 0..3 {
        app.upload(
            &app.device_token("acme", "dev-2"),
            &body_of(3100 + n),
            json!({}),
        )
        .await;
    }
    assert_problem(
        app.post_job(
            &service,
            json!({"kind": "copy", "selector": {}, "target_backend": SECOND}),
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    // Narrowed to one device it fits, and selects only that device's uploaded files.
    let response = app
        .post_job(
            &service,
            json!({"kind": "copy", "selector": {"device_id": "dev-1"}, "target_backend": SECOND}),
        )
        .await;
    let status = response.status().as_u16();
    let group: Value = response.json().await.expect("group JSON");
    assert_eq!(status, 202, "{group}");
    let selected: Vec<&Value> = group["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| &j["file_id"])
        .collect();
    assert_eq!(selected, [&json!(id)], "{group}");
    // Nothing was created before the first upload.
    let response = app
        .post_job(
            &service,
            json!({"kind": "copy", "selector": {"created_before": "2020-01-01T00:00:00Z"}, "target_backend": SECOND}),
        )
        .await;
    let status = response.status().as_u16();
    let group: Value = response.json().await.expect("group JSON");
    assert_eq!(status, 202, "{group}");
    assert_eq!(group["jobs"], json!([]), "{group}");
    assert!(group["group_id"].is_string(), "{group}");
}

/// Asserts `event` validates against the JSON Schema valet serves at `path`.
async fn assert_valid_against(app: &TestApp, path: &str, event: &Value) {
    let schema: Value = app
        .client
        .get(app.url(path))
        .send()
        .await
        .expect("schema request")
        .json()
        .await
        .expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    let errors: Vec<String> = validator
        .iter_errors(event)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{path}: {errors:?}\n{event}");
}

#[actix_web::test]
async fn job_ends_and_moves_are_announced_with_their_routing_keys() {
    let broker = Broker::new().await;
    let job_events = broker.bind("job.#").await;
    let moves = broker.bind("file.moved.#").await;
    let app = spawn_on_two_local_stores(|s| {
        broker.configure(s, BROKER);
        s.jobs.max_attempts = 2;
    })
    .await;
    let device = app.device_token("acme", "dev-1");
    let service = app.service_token("acme", "fleet");
    let own = app.upload(&device, &body_of(500), json!({})).await;
    let shared = app
        .upload(&service, &body_of(501), json!({"shared": true}))
        .await;
    let own_job = run_job(&app, &service, "move", &own, SECOND).await;
    let shared_job = run_job(&app, &service, "move", &shared, SECOND).await;

    // Another tenant's copies cannot be written: one fails, one is cancelled while
    // it waits for its retry.
    let globex_device = app.device_token("globex", "dev-9");
    let globex = app.service_token("globex", "fleet");
    let doomed = app.upload(&globex_device, &body_of(502), json!({})).await;
    let dropped = app.upload(&globex_device, &body_of(503), json!({})).await;
    let tenant_dir = object_key_of(&doomed)
        .as_str()
        .split('/')
        .next()
        .expect("tenant segment")
        .to_owned();
    std::fs::write(second_root(&app).join(tenant_dir), b"in the way").expect("blocking file");
    let failed_job = app
        .start_job(&globex, "copy", &id_of(&doomed), SECOND)
        .await;
    let dropped_job = app
        .start_job(&globex, "copy", &id_of(&dropped), SECOND)
        .await;
    app.wait_for_job(
        &globex,
        &id_of(&dropped_job),
        Duration::from_secs(20),
        |job| job["state"] == "created" && job["attempts"] == 1,
    )
    .await;
    let response = app.cancel_job(&globex, &id_of(&dropped_job)).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("cancel JSON");
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["job"]["state"], "cancelled",
        "waiting for a retry: {body}"
    );
    let failed = app.wait_until_finished(&globex, &id_of(&failed_job)).await;
    assert_eq!(failed["state"], "failed", "{failed}");

    let received = job_events.wait_for(4).await;
    let expected = [
        (&own_job, "succeeded", "acme", &own),
        (&shared_job, "succeeded", "acme", &shared),
        (&failed_job, "failed", "globex", &doomed),
        (&dropped_job, "cancelled", "globex", &dropped),
    ];
    for (job, state, tenant, file) in expected {
        let message = received
            .iter()
            .find(|m| m.body["jobid"] == job["id"])
            .unwrap_or_else(|| panic!("no event with jobid {}: {received:#?}", job["id"]));
        let kind = format!("io.valet.job.{state}");
        assert_eq!(message.routing_key, format!("job.{state}.{tenant}"));
        assert_eq!(message.kind, kind);
        assert_eq!(message.content_type, "application/cloudevents+json");
        assert_eq!(message.body["type"], kind.as_str());
        assert_eq!(message.body["specversion"], "1.0");
        assert_eq!(message.body["id"], message.message_id.as_str());
        let data = &message.body["data"];
        assert_eq!(data["id"], job["id"], "{data}");
        assert_eq!(data["state"], state, "{data}");
        assert_eq!(data["tenant_id"], tenant, "{data}");
        assert_eq!(data["file_id"], file["id"], "{data}");
        assert_valid_against(&app, "/schemas/job-event.json", &message.body).await;
    }

    let received = moves.wait_for(2).await;
    for (file, routing_key, subject_root) in [
        (&own, "file.moved.acme.dev-1", "dev-1"),
        (&shared, "file.moved.acme.shared", "shared"),
    ] {
        let message = received
            .iter()
            .find(|m| m.body["data"]["id"] == file["id"])
            .unwrap_or_else(|| panic!("no moved event for {file}: {received:#?}"));
        assert_eq!(message.routing_key, routing_key);
        assert_eq!(message.kind, "io.valet.file.moved");
        assert_eq!(message.headers["tenant"].as_deref(), Some("acme"));
        assert_eq!(message.headers["event"].as_deref(), Some("moved"));
        assert_eq!(
            message.body["subject"],
            format!("acme/{subject_root}/{}", id_of(file))
        );
        let data = &message.body["data"];
        assert_eq!(data["from_backend"], "local", "{data}");
        assert_eq!(data["to_backend"], SECOND, "{data}");
        assert_eq!(data["backend"], SECOND, "{data}");
        assert_eq!(data["key"], object_key_of(file).as_str(), "{data}");
        assert_eq!(data["sha256"], file["sha256"]);
        assert_eq!(data["status"], "uploaded");
    }
    // Each once in the outbox, and nothing more published.
    for (file, job) in [(&own, &own_job), (&shared, &shared_job)] {
        let id = id_of(file);
        assert_eq!(
            events_about(&app, "io.valet.file.moved", &id).await.len(),
            1
        );
        assert_eq!(
            events_about(&app, "io.valet.job.succeeded", &id_of(job))
                .await
                .len(),
            1
        );
    }
    tokio::time::sleep(patience(Duration::from_millis(500))).await;
    assert_eq!(job_events.received().len(), 4);
    assert_eq!(moves.received().len(), 2);
    // A moved file's event is a file event: it validates against the file events' schema.
    for message in moves.received() {
        assert_valid_against(&app, "/schemas/file-event.json", &message.body).await;
    }
}

#[actix_web::test]
async fn moving_back_within_the_grace_keeps_the_object_the_file_is_on() {
    let app = spawn_on_two_local_stores(|s| s.jobs.source_grace_secs = Some(2)).await;
    let device = app.device_token("acme", "dev-1");
    let service = app.service_token("acme", "fleet");
    let bytes = body_of(70 * 1024);
    let file = app.upload(&device, &bytes, json!({})).await;
    let id = id_of(&file);
    let key = object_key_of(&file);
    let on_local = app.data_dir.path().join("objects").join(key.as_str());
    let on_second = second_root(&app).join(key.as_str());

    // There and straight back, before the first move's source is removed.
    run_job(&app, &service, "move", &file, SECOND).await;
    run_job(&app, &service, "move", &file, "local").await;
    assert_eq!(app.file_of(&device, &id).await["backend"], "local");
    // The second move's source goes after its grace, which ends after the first's.
    eventually(
        "the second store's copy is removed",
        Duration::from_secs(20),
        async || !on_second.exists(),
    )
    .await;
    assert!(on_local.is_file(), "the object the file is on was removed");
    assert_eq!(app.fetch(&device, &id).await, bytes);
}

#[actix_web::test]
async fn deleting_a_file_removes_its_replicas_too() {
    let app = spawn_on_two_local_stores(|_| {}).await;
    let device = app.device_token("acme", "dev-1");
    let service = app.service_token("acme", "fleet");
    let file = app.upload(&device, &body_of(5000), json!({})).await;
    let id = id_of(&file);
    run_job(&app, &service, "copy", &file, SECOND).await;
    // Copied there again, the replica is replaced, not listed twice.
    run_job(&app, &service, "copy", &file, SECOND).await;
    let replicated = app.file_of(&device, &id).await;
    assert_eq!(
        replicated["replicas"],
        json!([{"backend": SECOND, "key": object_key_of(&file).as_str()}]),
        "{replicated}"
    );
    let on_second = second_root(&app).join(object_key_of(&file).as_str());
    assert!(on_second.is_file());
    assert_eq!(app.delete(&device, &id).await.status().as_u16(), 204);
    // The object goes first, then its checksum file: wait for both.
    eventually(
        "the replica is removed with its file",
        Duration::from_secs(10),
        async || {
            !on_second.exists()
                && app
                    .stored_objects()
                    .iter()
                    .all(|p| !p.to_string_lossy().contains(&id))
        },
    )
    .await;
}

#[actix_web::test]
async fn download_urls_handed_out_before_a_move_work_until_they_expire() {
    let app = spawn_on_two_local_stores(|s| {
        // The source is kept as long as a download URL lives (the default grace).
        s.jobs.source_grace_secs = None;
        s.uploads.download_url_ttl_secs = 4;
    })
    .await;
    let device = app.device_token("acme", "dev-1");
    let service = app.service_token("acme", "fleet");
    let bytes = body_of(9000);
    let file = app.upload(&device, &bytes, json!({})).await;
    let id = id_of(&file);
    let before: Value = app
        .download(&device, &id)
        .await
        .json()
        .await
        .expect("signed");
    assert!(
        before["url"].as_str().expect("url").contains("/local/"),
        "{before}"
    );
    run_job(&app, &service, "move", &file, SECOND).await;

    let after: Value = app
        .download(&device, &id)
        .await
        .json()
        .await
        .expect("signed");
    assert!(
        after["url"]
            .as_str()
            .expect("url")
            .contains(&format!("/{SECOND}/")),
        "URLs asked after the move point at the target: {after}"
    );
    assert_eq!(app.fetch(&device, &id).await, bytes);
    let early = app.send_signed(&before, Vec::new()).await;
    assert_eq!(early.status().as_u16(), 200, "a URL from before the move");
    assert_eq!(early.bytes().await.expect("bytes"), bytes);
    let on_local = app
        .data_dir
        .path()
        .join("objects")
        .join(object_key_of(&file).as_str());
    eventually(
        "the source is removed once the URLs have expired",
        Duration::from_secs(20),
        async || !on_local.exists(),
    )
    .await;
    assert_eq!(app.fetch(&device, &id).await, bytes);
}

#[actix_web::test]
async fn concurrent_selectors_on_two_instances_give_each_file_one_job() {
    let app = spawn_app_on_postgres(|s| {
        two_local_stores(s);
        with_redis_cache(s);
    })
    .await;
    let second = app.spawn_another_instance().await;
    concurrent_selectors_give_each_file_one_job(&app, &second).await;
}

#[actix_web::test]
async fn concurrent_selectors_on_one_instance_give_each_file_one_job() {
    let app = spawn_on_two_local_stores(|_| {}).await;
    let address = app.address.clone();
    concurrent_selectors_give_each_file_one_job(&app, &address).await;
}

/// Asks `app` and the instance at `second` for the same tenant-wide move at once.
async fn concurrent_selectors_give_each_file_one_job(app: &TestApp, second: &str) {
    let service = app.service_token("acme", "fleet");
    let device = app.device_token("acme", "dev-1");
    let mut file_ids = BTreeSet::new();
    for round in 0..8 {
        let uploads = (0..25).map(|n| {
            let (app, device) = (&app, &device);
            async move {
                id_of(
                    &app.upload(device, &body_of(200 + round * 25 + n), json!({}))
                        .await,
                )
            }
        });
        file_ids.extend(futures_util::future::join_all(uploads).await);
    }
    // The same tenant-wide move asked of both instances at once.
    let body = json!({"kind": "move", "selector": {"backend": "local"}, "target_backend": SECOND});
    let ask = |base: String| {
        let (service, body) = (&service, &body);
        async move {
            let response = app
                .client
                .post(format!("{base}/v1/jobs"))
                .bearer_auth(service)
                .json(body)
                .send()
                .await
                .expect("create group");
            let status = response.status().as_u16();
            let group: Value = response.json().await.expect("group JSON");
            assert_eq!(status, 202, "{group}");
            group["jobs"].as_array().expect("jobs").clone()
        }
    };
    let (first, other) =
        futures_util::future::join(ask(app.address.clone()), ask(second.to_owned())).await;
    let mut jobs_per_file: BTreeMap<String, usize> = BTreeMap::new();
    for job in first.iter().chain(&other) {
        *jobs_per_file
            .entry(job["file_id"].as_str().expect("file_id").to_owned())
            .or_default() += 1;
    }
    // Every job runs to its end; then how many files got more than one.
    let mut ends: BTreeMap<String, usize> = BTreeMap::new();
    let mut an_error = None;
    for job in first.iter().chain(&other) {
        let done = app.wait_until_finished(&service, &id_of(job)).await;
        *ends.entry(state_of(&done).to_owned()).or_default() += 1;
        if done["error"].is_string() {
            an_error = Some(done["error"].clone());
        }
    }
    let twice = jobs_per_file.values().filter(|n| **n > 1).count();
    assert_eq!(
        (twice, first.len() + other.len()),
        (0, file_ids.len()),
        "files with two jobs, and jobs in all (groups of {} and {}); jobs ended {ends:?}, \
         e.g. with error {an_error:?}",
        first.len(),
        other.len()
    );
    assert_eq!(
        jobs_per_file.keys().cloned().collect::<BTreeSet<_>>(),
        file_ids
    );
    assert_eq!(
        ends,
        BTreeMap::from([("succeeded".to_owned(), file_ids.len())])
    );
    for id in &file_ids {
        assert_eq!(app.file_of(&service, id).await["backend"], SECOND);
    }
}

#[test]
fn a_file_larger_than_a_chunk_crosses_azure_and_s3_in_parts() {
    run_in_turn(async {
        let (bucket, s3) = s3_bucket().await;
        let (_, azure) = azure_container().await;
        let app = spawn_app_with(|s| {
            quick_jobs(s);
            s.jobs.chunk_size_bytes = 5 * 1024 * 1024;
            s.backends.insert("s3".into(), s3);
            s.backends.insert("azure".into(), azure);
            use_backend(s, "local", local_backend());
        })
        .await;
        let device = app.device_token("acme", "dev-1");
        let service = app.service_token("acme", "fleet");
        // Two whole chunks and a short third.
        let bytes = body_of(2 * 5 * 1024 * 1024 + 3);
        let file = app.upload(&device, &bytes, json!({})).await;
        let id = id_of(&file);
        for target in ["azure", "s3", "local"] {
            let job = run_job(&app, &service, "move", &file, target).await;
            assert_eq!(job["bytes_total"], bytes.len(), "{job}");
            assert_eq!(app.file_of(&device, &id).await["backend"], target);
            assert!(
                app.fetch(&device, &id).await == bytes,
                "{target}: other bytes"
            );
        }
        let key = object_key_of(&file);
        run_job(&app, &service, "copy", &file, "s3").await;
        assert!(
            s3_object(&bucket, key.as_str()).await.as_deref() == Some(&bytes[..]),
            "the S3 replica holds other bytes"
        );
    });
}

#[actix_web::test]
async fn selectors_are_served_while_jobs_run() {
    let app = spawn_on_two_local_stores(|s| s.jobs.concurrency = 2).await;
    let service = app.service_token("acme", "fleet");
    for device in ["dev-1", "dev-2"] {
        let token = app.device_token("acme", device);
        let uploads = (0..100).map(|n| {
            let token = &token;
            let app = &app;
            async move { app.upload(token, &body_of(300 + n), json!({})).await }
        });
        futures_util::future::join_all(uploads).await;
    }
    let moved = app
        .post_job(
            &service,
            json!({"kind": "move", "selector": {"device_id": "dev-1"}, "target_backend": SECOND}),
        )
        .await;
    assert_eq!(moved.status().as_u16(), 202);
    // While the workers claim, renew and end those jobs, more groups are asked for,
    // each selecting one new file.
    let third = app.device_token("acme", "dev-3");
    let mut refused = Vec::new();
    for n in 0..30 {
        app.upload(&third, &body_of(900 + n), json!({})).await;
        let response = app
            .post_job(
                &service,
                json!({"kind": "copy", "selector": {"device_id": "dev-3"}, "target_backend": SECOND}),
            )
            .await;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        if status != 202 {
            refused.push(format!("{status} {body}"));
        }
    }
    assert!(
        refused.is_empty(),
        "{} of 30 refused: {refused:#?}",
        refused.len()
    );
}

#[actix_web::test]
async fn finished_jobs_are_purged_after_keep_finished_days() {
    let app = spawn_on_two_local_stores(|_| {}).await;
    let device = app.device_token("acme", "dev-1");
    let service = app.service_token("acme", "fleet");
    let file = app.upload(&device, &body_of(64), json!({})).await;
    let job = run_job(&app, &service, "move", &file, SECOND).await;
    let id = id_of(&job);
    // A move is kept until its source object is gone.
    eventually(
        "the moved source is removed",
        Duration::from_secs(15),
        async || {
            app.job_log_lines(&service, &id)
                .await
                .iter()
                .any(|l| l.contains("was removed"))
        },
    )
    .await;
    app.execute_sql(format!(
        "UPDATE jobs SET updated_at = '2000-01-01 00:00:00' WHERE id = '{id}'"
    ))
    .await;
    // An instance purges when it starts, then every ten minutes.
    let other = app.spawn_another_instance().await;
    let client = reqwest::Client::new();
    eventually("the job is purged", Duration::from_secs(15), async || {
        let response = client
            .get(format!("{other}/v1/jobs/{id}"))
            .bearer_auth(&service)
            .send()
            .await
            .expect("get job");
        response.status().as_u16() == 404
    })
    .await;
    let log = client
        .get(format!("{other}/v1/jobs/{id}/log"))
        .bearer_auth(&service)
        .send()
        .await
        .expect("get log");
    assert_problem(log, 404, "not_found").await;
    // The file is untouched.
    assert_eq!(app.file_of(&device, &id_of(&file)).await["backend"], SECOND);
}
