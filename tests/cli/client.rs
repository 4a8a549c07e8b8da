//! The client commands (`upload`, `download`, `events list`, `health`) against a
//! running server, or none.

use std::fs;

use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{
    free_port, mint_device_token, random_bytes, read_key_file, run_err, run_ok, sha256_hex, upload,
    valet, Server,
};

#[test]
fn client_help_never_shows_the_token_from_the_environment() {
    let dir = TempDir::new().expect("temp dir");
    for command in ["upload", "download"] {
        let out = run_ok(
            valet(dir.path())
                .args([command, "--help"])
                .env("VALET_TOKEN", "tok-very-secret-value"),
        );
        assert!(out.stdout.contains("--token"), "{}", out.stdout);
        assert!(
            !out.all().contains("tok-very-secret-value"),
            "{}",
            out.all()
        );
    }
}

#[test]
fn upload_reports_an_unreachable_server() {
    let dir = TempDir::new().expect("temp dir");
    fs::write(dir.path().join("f.bin"), b"hello").expect("write");
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = run_err(valet(dir.path()).args(["upload", "f.bin", "--url", &url, "--token", "t"]));
    assert!(out.stderr.contains("cannot reach valet"), "{}", out.stderr);
}

#[test]
fn upload_download_and_events_end_to_end_without_leaking_secrets() {
    let dir = TempDir::new().expect("temp dir");
    // Every level of every crate: no log line at any level may carry a secret.
    let mut server = Server::start(dir.path(), &[("RUST_LOG", "trace")]);
    let dev_key = read_key_file(&dir.path().join("valet-data/dev-root-key.toml"));

    let token = mint_device_token(dir.path(), "acme", "dev-42");

    let content = random_bytes(5 * 1024 * 1024);
    let sha256 = sha256_hex(&content);
    fs::write(dir.path().join("payload.bin"), &content).expect("write payload");

    let (file, upload_out) = upload(dir.path(), &server, &token, "payload.bin");
    assert_eq!(file["status"], "uploaded", "{file:#}");
    assert_eq!(file["sha256"], sha256.as_str(), "{file:#}");
    assert_eq!(file["size"], content.len(), "{file:#}");
    assert_eq!(file["name"], "payload.bin", "{file:#}");
    assert_eq!(file["tenant_id"], "acme", "{file:#}");
    assert_eq!(file["device_id"], "dev-42", "{file:#}");
    assert!(
        !upload_out.all().contains(&token),
        "upload printed the token"
    );
    let id = file["id"].as_str().expect("file id").to_owned();

    // Download with the client settings taken from the environment this time.
    let download_out = run_ok(
        valet(dir.path())
            .args(["download", &id, "-o", "out.bin"])
            .env("VALET_API_URL", server.url())
            .env("VALET_TOKEN", &token),
    );
    let downloaded = fs::read(dir.path().join("out.bin")).expect("downloaded file");
    assert!(
        downloaded == content,
        "downloaded bytes differ from the upload"
    );
    assert!(
        download_out.stderr.contains(&sha256),
        "{}",
        download_out.stderr
    );
    assert!(
        !download_out.all().contains(&token),
        "download printed the token"
    );
    assert!(
        !dir.path().join("out.part").exists(),
        "the partial file is renamed away"
    );

    // An unknown id: an error, and no output file.
    let out = run_err(
        valet(dir.path())
            .args([
                "download",
                "01890a5d-ac96-774b-bcce-b302099a8057",
                "-o",
                "none.bin",
            ])
            .env("VALET_API_URL", server.url())
            .env("VALET_TOKEN", &token),
    );
    assert!(out.stderr.contains("404"), "{}", out.stderr);
    assert!(!dir.path().join("none.bin").exists());

    // The outbox holds the upload event (no broker: it stays unpublished), read
    // while the server is still running.
    let events = run_ok(valet(dir.path()).args(["events", "list"]));
    let entries: Vec<Value> = events
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect();
    let uploaded: Vec<&Value> = entries
        .iter()
        .filter(|e| e["event_type"] == "io.valet.file.uploaded" && e["file_id"] == id.as_str())
        .collect();
    assert_eq!(uploaded.len(), 1, "events:\n{}", events.stdout);
    let entry = uploaded[0];
    assert_eq!(entry["tenant_id"], "acme");
    assert_eq!(entry["device_id"], "dev-42");
    assert!(entry["published_at"].is_null(), "{entry}");
    // The CloudEvent, shown either embedded or as a JSON string.
    let payload: Value = match &entry["payload"] {
        Value::String(s) => serde_json::from_str(s).expect("payload is JSON"),
        other => other.clone(),
    };
    assert_eq!(payload["type"], "io.valet.file.uploaded");
    assert_eq!(payload["data"]["id"], id.as_str());
    assert_eq!(payload["data"]["sha256"], sha256.as_str());

    let all = run_ok(valet(dir.path()).args(["events", "list", "--all", "--limit", "1"]));
    assert_eq!(all.stdout.lines().count(), 1, "{}", all.stdout);

    // Nothing secret in the server's output.
    server.stop();
    let logs = server.logs();
    assert!(
        logs.contains("request completed") && logs.contains("/v1/files"),
        "the requests were logged (otherwise the checks below prove nothing):\n{logs}"
    );
    assert!(logs.contains("TRACE"), "trace logging was on");
    assert!(!logs.contains(&token), "the server logged the token");
    assert!(
        !logs.contains(&dev_key.private_hex),
        "the server logged the private key"
    );
    assert!(
        !logs.contains("ed25519-private"),
        "the server logged the private key"
    );
}

/// Staging a download never touches a sibling file such as `report.part`.
#[test]
fn download_leaves_unrelated_files_alone() {
    let dir = TempDir::new().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let token = mint_device_token(dir.path(), "acme", "dev-42");
    fs::write(dir.path().join("report.pdf"), b"new report").expect("write");
    let (file, _) = upload(dir.path(), &server, &token, "report.pdf");
    let id = file["id"].as_str().expect("id").to_owned();

    fs::create_dir(dir.path().join("out")).expect("mkdir");
    fs::write(dir.path().join("out/report.part"), b"part one of my novel").expect("write");
    run_ok(valet(dir.path()).args([
        "download",
        &id,
        "-o",
        "out/report.pdf",
        "--url",
        &server.url(),
        "--token",
        &token,
    ]));
    assert_eq!(
        fs::read(dir.path().join("out/report.part")).ok(),
        Some(b"part one of my novel".to_vec())
    );
}

#[test]
fn health_reports_a_live_server_and_fails_for_a_dead_one() {
    let dir = TempDir::new().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let out = run_ok(valet(dir.path()).args(["health", "--url", &server.url()]));
    assert!(out.stdout.contains("ok"), "{}", out.all());
    run_ok(valet(dir.path()).args(["health", "--ready", "--url", &server.url()]));

    let closed = format!("http://127.0.0.1:{}", free_port());
    let out = run_err(valet(dir.path()).args(["health", "--url", &closed]));
    assert!(out.stderr.contains("cannot reach"), "{}", out.all());
}
