//! `valet send`, `valet inbox` and `valet receive` against a running server: a
//! device sends an uploaded file, the recipient lists it, receives identical bytes
//! and accepts it; a refusal is reported with its code.

use std::fs;

use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{mint_device_token, random_bytes, run_err, run_ok, upload, valet, Server};

/// `PUT /v1/devices/{device}/inbox` (the CLI has no command for it).
fn set_inbox(server: &Server, token: &str, device: &str, accept_from: Value) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let status = runtime.block_on(async {
        reqwest::Client::new()
            .put(format!("{}/v1/devices/{device}/inbox", server.url()))
            .bearer_auth(token)
            .json(&serde_json::json!({ "accept_from": accept_from }))
            .send()
            .await
            .expect("put inbox")
            .status()
    });
    assert_eq!(status.as_u16(), 200);
}

#[test]
fn send_inbox_and_receive_end_to_end() {
    let dir = TempDir::new().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let sender = mint_device_token(dir.path(), "acme", "dev-7");
    let recipient = mint_device_token(dir.path(), "acme", "dev-9");
    let content = random_bytes(300_000);
    fs::write(dir.path().join("payload.bin"), &content).expect("write payload");
    let (file, _) = upload(dir.path(), &server, &sender, "payload.bin");
    let file_id = file["id"].as_str().expect("file id");
    let url = server.url();

    // Refused while dev-9 accepts nobody.
    let refused = run_err(valet(dir.path()).args([
        "send", file_id, "--to", "dev-9", "--url", &url, "--token", &sender,
    ]));
    assert!(
        refused.stderr.contains("transfer_refused"),
        "{}",
        refused.all()
    );

    set_inbox(&server, &recipient, "dev-9", serde_json::json!(["dev-7"]));
    let sent = run_ok(valet(dir.path()).args([
        "send",
        file_id,
        "--to",
        "dev-9",
        "--expires-in",
        "3600",
        "--url",
        &url,
        "--token",
        &sender,
    ]));
    let transfer: Value = serde_json::from_str(&sent.stdout)
        .unwrap_or_else(|e| panic!("send printed no JSON ({e}):\n{}", sent.all()));
    let id = transfer["id"].as_str().expect("transfer id");
    assert_eq!(transfer["state"], "offered");

    let inbox = run_ok(valet(dir.path()).args(["inbox", "--url", &url, "--token", &recipient]));
    let listed: Vec<Value> = inbox
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one transfer a line"))
        .collect();
    assert_eq!(listed.len(), 1, "{}", inbox.all());
    assert_eq!(listed[0]["id"], id);

    let received = run_ok(
        valet(dir.path())
            .args(["receive", id, "-o", "copy.bin"])
            .env("VALET_API_URL", &url)
            .env("VALET_TOKEN", &recipient),
    );
    assert!(
        fs::read(dir.path().join("copy.bin")).expect("received file") == content,
        "received bytes differ"
    );
    assert!(received.stderr.contains("received"), "{}", received.all());
    assert!(
        !received.all().contains(&recipient),
        "the token was printed"
    );

    // Accepted: no longer offered, now received.
    let offered = run_ok(valet(dir.path()).args([
        "inbox", "--state", "offered", "--url", &url, "--token", &recipient,
    ]));
    assert!(offered.stdout.trim().is_empty(), "{}", offered.all());
    let accepted = run_ok(valet(dir.path()).args([
        "inbox", "--state", "received", "--url", &url, "--token", &recipient,
    ]));
    assert_eq!(accepted.stdout.lines().count(), 1, "{}", accepted.all());
}
