//! `valet jobs …` against a running server with two local backends: a tenant's
//! files moved and copied with `--wait`, the jobs listed, shown, logged and
//! refused cancellation once finished; a token of another tenant refused; jobs
//! cancelled while `--wait` follows them; and a move interrupted by killing the
//! server mid-copy that ends exactly once after a restart.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{random_bytes, run_err, run_ok, sha256_hex, upload, valet, Output, Server};

/// Two local backends; new files go to `local`.
const TWO_BACKENDS: &str = r#"
default_backend = "local"

[backends.local]
kind = "local"

[backends.local2]
kind = "local"
root = "objects2"
"#;

/// Writes `valet.toml` in `dir`: `top` (top-level keys), the two backends, then
/// `extra` (tables).
fn write_config(dir: &Path, top: &str, extra: &str) {
    fs::write(
        dir.join("valet.toml"),
        format!("{top}{TWO_BACKENDS}{extra}"),
    )
    .expect("write config");
}

fn mint_service_token(dir: &Path, tenant: &str, service: &str) -> String {
    let out = run_ok(valet(dir).env("VALET_CONFIG", "valet.toml").args([
        "token",
        "mint",
        "--tenant",
        tenant,
        "--service",
        service,
    ]));
    out.stdout.trim().to_owned()
}

/// `GET path` with `token`: the status and the JSON body (`Null` when not JSON).
fn api_get(server: &Server, token: &str, path: &str) -> (u16, Value) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", server.url()))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        let body = response.text().await.expect("body");
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    })
}

/// `valet jobs <args…>` against `server` with `token`.
fn jobs_command(dir: &Path, server: &Server, token: &str, args: &[&str]) -> assert_cmd::Command {
    let mut cmd = valet(dir);
    cmd.env("VALET_API_URL", server.url())
        .env("VALET_TOKEN", token)
        .env("VALET_CONFIG", "valet.toml")
        .arg("jobs")
        .args(args);
    cmd
}

/// The word after `label` on the line of `out` that starts with it.
fn value_after(out: &Output, label: &str) -> String {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("no {label:?} line:\n{}", out.all()))
}

/// The outbox's events (published or not) of `event_type`.
fn outbox_events(dir: &Path, event_type: &str) -> Vec<Value> {
    let out = run_ok(
        valet(dir)
            .env("VALET_CONFIG", "valet.toml")
            .args(["events", "list", "--all", "--limit", "100000"]),
    );
    out.stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("one JSON entry a line"))
        .filter(|e| e["event_type"] == event_type)
        .collect()
}

/// Asserts every outbox entry's event is valid by `schema`.
fn assert_valid(schema: &str, entries: &[Value]) {
    let schema: Value = serde_json::from_str(schema).expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    for entry in entries {
        let errors: Vec<String> = validator
            .iter_errors(&entry["payload"])
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:#?}\n{:#}", entry["payload"]);
    }
}

/// Whether `line` starts with an RFC 3339 timestamp followed by a space.
fn starts_with_timestamp(line: &str) -> bool {
    line.split_once(' ')
        .is_some_and(|(stamp, _)| chrono::DateTime::parse_from_rfc3339(stamp).is_ok())
}

#[test]
fn move_a_tenant_list_show_log_cancel_and_copy_one_file() {
    let dir = TempDir::new().expect("temp dir");
    let dir = dir.path();
    write_config(dir, "", "[jobs]\npoll_interval_ms = 100\n");
    let server = Server::start(dir, &[("VALET_CONFIG", "valet.toml")]);
    let service = mint_service_token(dir, "acme", "ops");
    let device = mint_device_token_with_config(dir, "acme", "dev-1");

    let mut files = Vec::new();
    for (i, size) in [1_000usize, 70_000, 300_001].into_iter().enumerate() {
        let name = format!("f{i}.bin");
        let bytes = random_bytes(size);
        fs::write(dir.join(&name), &bytes).expect("write");
        let (file, _) = upload(dir, &server, &device, &name);
        assert_eq!(file["backend"], "local", "{file}");
        files.push((file["id"].as_str().expect("id").to_owned(), bytes));
    }

    // A device token may not touch jobs.
    let out = run_err(&mut jobs_command(dir, &server, &device, &["list"]));
    assert!(out.stderr.contains("forbidden"), "{}", out.all());

    // A token of another tenant than the one named is refused, and nothing is created.
    let out = run_err(&mut jobs_command(
        dir,
        &server,
        &service,
        &["move", "--tenant", "other", "--to", "local2"],
    ));
    assert!(
        out.stderr.contains("\"acme\"") && out.stderr.contains("\"other\""),
        "{}",
        out.all()
    );
    let listed = run_ok(&mut jobs_command(dir, &server, &service, &["list"]));
    assert!(listed.stdout.trim().is_empty(), "{}", listed.all());

    // An unknown backend: the problem's detail and code.
    let out = run_err(&mut jobs_command(
        dir,
        &server,
        &service,
        &["move", "--tenant", "acme", "--to", "nowhere"],
    ));
    assert!(out.stderr.contains("invalid_request"), "{}", out.all());

    // Move the whole tenant and wait.
    let moved = run_ok(&mut jobs_command(
        dir,
        &server,
        &service,
        &[
            "move",
            "--tenant",
            "acme",
            "--to",
            "local2",
            "--wait",
            "--poll-interval",
            "0.2",
        ],
    ));
    let group_id = value_after(&moved, "group ");
    assert!(moved.stdout.contains("3 move jobs"), "{}", moved.all());
    assert!(moved.stdout.contains("3 succeeded"), "{}", moved.all());
    assert!(
        moved.stderr.contains("succeeded"),
        "progress: {}",
        moved.all()
    );

    for (id, bytes) in &files {
        let (status, file) = api_get(&server, &service, &format!("/v1/files/{id}"));
        assert_eq!(status, 200, "{file}");
        assert_eq!(file["backend"], "local2", "{file}");
        let output = format!("{id}.copy");
        run_ok(
            valet(dir)
                .args(["download", id, "-o", &output])
                .env("VALET_API_URL", server.url())
                .env("VALET_TOKEN", &device),
        );
        assert!(
            fs::read(dir.join(&output)).expect("downloaded") == *bytes,
            "the moved file's bytes differ"
        );
    }

    // Nothing left to move: an empty group.
    let again = run_ok(&mut jobs_command(
        dir,
        &server,
        &service,
        &["move", "--tenant", "acme", "--to", "local2", "--wait"],
    ));
    assert!(again.stdout.contains("0 move jobs"), "{}", again.all());

    // List: one line per job, all pages.
    let listed = run_ok(&mut jobs_command(
        dir,
        &server,
        &service,
        &["list", "--group-id", &group_id],
    ));
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", listed.all());
    for (id, bytes) in &files {
        let line = lines
            .iter()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("no job for {id}:\n{}", listed.stdout));
        assert!(line.contains(" move "), "{line}");
        assert!(line.contains("local → local2"), "{line}");
        assert!(line.contains(" succeeded "), "{line}");
        let size = bytes.len();
        assert!(line.contains(&format!(" {size}/{size} ")), "{line}");
        assert!(line.contains("attempts=1"), "{line}");
    }
    let failed = run_ok(&mut jobs_command(
        dir,
        &server,
        &service,
        &["list", "--state", "failed"],
    ));
    assert!(failed.stdout.trim().is_empty(), "{}", failed.all());
    let job_id = lines[0].split(' ').next().expect("job id").to_owned();

    // Show: the Job as JSON.
    let shown = run_ok(&mut jobs_command(
        dir,
        &server,
        &service,
        &["show", &job_id],
    ));
    let job: Value = serde_json::from_str(&shown.stdout)
        .unwrap_or_else(|e| panic!("show printed no JSON ({e}):\n{}", shown.all()));
    assert_eq!(job["id"], job_id.as_str());
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["tenant_id"], "acme");
    assert_eq!(job["group_id"], group_id.as_str());
    assert_eq!(job["kind"], "move");

    // Log: every line starts with an RFC 3339 timestamp.
    let log = run_ok(&mut jobs_command(dir, &server, &service, &["log", &job_id]));
    assert!(log.stdout.lines().count() >= 2, "{}", log.all());
    for line in log.stdout.lines() {
        assert!(starts_with_timestamp(line), "{line:?} in\n{}", log.stdout);
    }

    // Cancel a finished job: the 409 problem, a failure.
    let out = run_err(&mut jobs_command(
        dir,
        &server,
        &service,
        &["cancel", &job_id],
    ));
    assert!(
        out.stderr.contains("409") && out.stderr.contains("(conflict)"),
        "{}",
        out.all()
    );

    // An unknown job: 404.
    let out = run_err(&mut jobs_command(
        dir,
        &server,
        &service,
        &["show", "01890a5d-ac96-774b-bcce-b302099a8057"],
    ));
    assert!(out.stderr.contains("not_found"), "{}", out.all());

    // The events: one success and one file.moved per job, each valid by its schema.
    let succeeded = outbox_events(dir, "io.valet.job.succeeded");
    assert_eq!(succeeded.len(), 3);
    assert_valid(valet::events::JOB_EVENT_SCHEMA, &succeeded);
    let moved = outbox_events(dir, "io.valet.file.moved");
    assert_eq!(moved.len(), 3);
    assert_valid(valet::events::FILE_EVENT_SCHEMA, &moved);
    for event in &moved {
        let data = &event["payload"]["data"];
        assert_eq!(data["from_backend"], "local", "{event}");
        assert_eq!(data["to_backend"], "local2", "{event}");
        assert_eq!(data["backend"], "local2", "{event}");
    }
    assert_valid(
        valet::events::FILE_EVENT_SCHEMA,
        &outbox_events(dir, "io.valet.file.uploaded"),
    );

    // One file: copy it back to local as a replica; it stays on local2.
    let (file_id, bytes) = &files[0];
    let copied = run_ok(&mut jobs_command(
        dir,
        &server,
        &service,
        &["copy", "--file", file_id, "--to", "local", "--wait"],
    ));
    assert!(copied.stdout.contains("1 succeeded"), "{}", copied.all());
    let (_, file) = api_get(&server, &service, &format!("/v1/files/{file_id}"));
    assert_eq!(file["backend"], "local2", "{file}");
    let replicas = file["replicas"].as_array().expect("replicas");
    assert!(replicas.iter().any(|r| r["backend"] == "local"), "{file}");
    assert_eq!(file["sha256"], sha256_hex(bytes).as_str());

    // Moving a file to where it already is: 409 conflict.
    let out = run_err(&mut jobs_command(
        dir,
        &server,
        &service,
        &["move", "--file", file_id, "--to", "local2"],
    ));
    assert!(out.stderr.contains("(conflict)"), "{}", out.all());
}

#[test]
fn cancelled_jobs_make_wait_fail() {
    let dir = TempDir::new().expect("temp dir");
    let dir = dir.path();
    // No instance works jobs: they stay `created` until cancelled.
    write_config(dir, "", "[jobs]\nenabled = false\n");
    let server = Server::start(dir, &[("VALET_CONFIG", "valet.toml")]);
    let service = mint_service_token(dir, "acme", "ops");
    let device = mint_device_token_with_config(dir, "acme", "dev-1");
    for name in ["a.bin", "b.bin"] {
        fs::write(dir.join(name), random_bytes(2_000)).expect("write");
        upload(dir, &server, &device, name);
    }

    let mut waiting = std::process::Command::new(env!("CARGO_BIN_EXE_valet"));
    // A clean environment, as `valet()` gives its commands.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("VALET_") || key == "RUST_LOG" {
            waiting.env_remove(key);
        }
    }
    let mut waiting = waiting
        .current_dir(dir)
        .env("VALET_API_URL", server.url())
        .env("VALET_TOKEN", &service)
        .args([
            "jobs",
            "copy",
            "--tenant",
            "acme",
            "--to",
            "local2",
            "--wait",
            "--poll-interval",
            "0.1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn valet jobs copy --wait");

    // Cancel both once they are listed; a second cancel is no error.
    let deadline = Instant::now() + crate::patience::patience(Duration::from_secs(30));
    let ids = loop {
        let listed = run_ok(&mut jobs_command(dir, &server, &service, &["list"]));
        let ids: Vec<String> = listed
            .stdout
            .lines()
            .map(|l| l.split(' ').next().expect("id").to_owned())
            .collect();
        if ids.len() == 2 {
            break ids;
        }
        assert!(Instant::now() < deadline, "{}", listed.all());
        std::thread::sleep(Duration::from_millis(50));
    };
    for id in &ids {
        let out = run_ok(&mut jobs_command(dir, &server, &service, &["cancel", id]));
        assert!(out.stdout.contains(" cancelled "), "{}", out.all());
        run_ok(&mut jobs_command(dir, &server, &service, &["cancel", id]));
    }

    let deadline = Instant::now() + crate::patience::patience(Duration::from_secs(30));
    while waiting.try_wait().expect("poll").is_none() {
        if Instant::now() > deadline {
            let _ = waiting.kill();
            panic!("`valet jobs copy --wait` did not end once its jobs were cancelled");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = waiting.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("2 copy jobs"), "{stdout}{stderr}");
    assert!(stdout.contains("2 cancelled"), "{stdout}{stderr}");
    assert!(stderr.contains("2 of 2 jobs did not succeed"), "{stderr}");
    assert_eq!(
        outbox_events(dir, "io.valet.job.cancelled").len(),
        2,
        "one event per cancelled job"
    );
}

/// Polls `GET /v1/jobs/{id}` until `done` accepts the job; the job then.
fn wait_for_job(
    server: &Server,
    token: &str,
    id: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + crate::patience::patience(timeout);
    loop {
        let (status, answer) = api_get(server, token, &format!("/v1/jobs/{id}"));
        assert_eq!(status, 200, "{answer}");
        if done(&answer["job"]) {
            return answer["job"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "job {id} stuck: {answer}\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `job` is in a final state.
fn is_final(job: &Value) -> bool {
    ["succeeded", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or(""))
}

#[test]
fn a_move_interrupted_by_a_crash_ends_exactly_once_after_a_restart() {
    let dir = TempDir::new().expect("temp dir");
    let dir = dir.path();
    // The data directory is not `valet-data`, which the helper may clean between
    // attempts to start; `root = "objects2"` is relative to the working directory.
    write_config(
        dir,
        "data_dir = \"state\"\n",
        "[jobs]\nchunk_size_bytes = 5242880\nlease_secs = 2\npoll_interval_ms = 100\n\
         retry_backoff_secs = 1\n",
    );
    let env = [("VALET_CONFIG", "valet.toml")];
    let mut server = Server::start(dir, &env);
    let service = mint_service_token(dir, "acme", "ops");
    let device = mint_device_token_with_config(dir, "acme", "dev-1");
    let bytes = random_bytes(64 * 1024 * 1024);
    fs::write(dir.join("big.bin"), &bytes).expect("write");

    // A local copy of 64 MiB takes a fraction of a second: a round whose kill
    // came too late (the copy was over) is tried again with a new file.
    for round in 1..=5 {
        let (file, _) = upload(dir, &server, &device, "big.bin");
        let file_id = file["id"].as_str().expect("id").to_owned();
        let created = run_ok(&mut jobs_command(
            dir,
            &server,
            &service,
            &["move", "--file", &file_id, "--to", "local2"],
        ));
        let job_id = value_after(&created, "job ");

        let running = wait_for_job(&server, &service, &job_id, Duration::from_secs(30), |job| {
            job["state"] != "created" && job["state"] != "scheduled"
        });
        if running["state"] != "copying" {
            eprintln!("round {round}: the copy was over before the kill: {running}");
            continue;
        }
        // SIGKILL, at once (no `kill` process in between).
        server.stop();
        let first_logs = server.logs();

        server = Server::start(dir, &env);
        let job = wait_for_job(
            &server,
            &service,
            &job_id,
            Duration::from_secs(60),
            is_final,
        );
        assert_eq!(
            job["state"],
            "succeeded",
            "{job}\nfirst instance:\n{first_logs}\nsecond:\n{}",
            server.logs()
        );
        assert_eq!(job["bytes_done"], bytes.len());
        if job["attempts"] == 1 {
            eprintln!("round {round}: the copy ended between the look and the kill");
            continue;
        }

        let log = run_ok(&mut jobs_command(dir, &server, &service, &["log", &job_id]));
        assert!(
            log.stdout.matches("claimed").count() >= 2,
            "two claims expected:\n{}",
            log.stdout
        );
        for line in log.stdout.lines() {
            assert!(starts_with_timestamp(line), "{line:?}");
        }

        // Exactly once: one success, one file.moved.
        let of_job = |event_type: &str| -> Vec<Value> {
            outbox_events(dir, event_type)
                .into_iter()
                .filter(|e| e["payload"]["jobid"] == job_id.as_str())
                .collect()
        };
        let succeeded = of_job("io.valet.job.succeeded");
        assert_eq!(succeeded.len(), 1, "{succeeded:#?}");
        assert_eq!(succeeded[0]["payload"]["data"]["id"], job_id.as_str());
        assert_valid(valet::events::JOB_EVENT_SCHEMA, &succeeded);
        assert_eq!(of_job("io.valet.file.moved").len(), 1);
        assert!(of_job("io.valet.job.failed").is_empty());

        let (_, file) = api_get(&server, &service, &format!("/v1/files/{file_id}"));
        assert_eq!(file["backend"], "local2", "{file}");
        run_ok(
            valet(dir)
                .args(["download", &file_id, "-o", "big.copy"])
                .env("VALET_API_URL", server.url())
                .env("VALET_TOKEN", &device),
        );
        assert!(
            fs::read(dir.join("big.copy")).expect("downloaded") == bytes,
            "the moved file's bytes differ"
        );
        return;
    }
    panic!("no round killed the server while the copy ran");
}

/// A device token minted with the test's configuration (its data directory).
fn mint_device_token_with_config(dir: &Path, tenant: &str, device: &str) -> String {
    let out = run_ok(
        valet(dir)
            .env("VALET_CONFIG", "valet.toml")
            .args(["token", "mint", "--tenant", tenant, "--device", device]),
    );
    out.stdout.trim().to_owned()
}
