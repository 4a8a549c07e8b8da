//! `valet upload --batch DIR`: a directory delivered as one committed batch.

use std::fs;

use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{mint_device_token, random_bytes, run_err, run_ok, sha256_hex, valet, Server};

#[test]
fn upload_batch_delivers_a_directory_as_one_committed_batch() {
    let dir = TempDir::new().expect("temp dir");
    let server = Server::start(dir.path(), &[]);
    let token = mint_device_token(dir.path(), "acme", "dev-42");
    let drop = dir.path().join("drop");
    fs::create_dir(&drop).expect("mkdir");
    fs::create_dir(drop.join("nested")).expect("mkdir");
    fs::write(drop.join("nested/skipped.bin"), b"not a direct file").expect("write");
    let mut hashes = Vec::new();
    for name in ["a.bin", "b.bin", "c.bin"] {
        let bytes = random_bytes(1000 + name.len());
        hashes.push(sha256_hex(&bytes));
        fs::write(drop.join(name), &bytes).expect("write");
    }

    let out = run_ok(valet(dir.path()).args([
        "upload",
        "--batch",
        "drop",
        "--name",
        "nightly",
        "--metadata",
        "site=north",
        "--url",
        &server.url(),
        "--token",
        &token,
    ]));
    let batch: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("upload --batch printed no JSON ({e}):\n{}", out.all()));
    assert_eq!(batch["state"], "committed", "{batch:#}");
    assert_eq!(batch["name"], "nightly");
    assert_eq!(batch["metadata"]["site"], "north");
    let files = batch["files"].as_array().expect("files");
    let names: Vec<&str> = files
        .iter()
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["a.bin", "b.bin", "c.bin"]);
    let sums: Vec<&str> = files
        .iter()
        .map(|f| f["sha256"].as_str().expect("sha256"))
        .collect();
    assert_eq!(sums, hashes);
    assert!(files.iter().all(|f| f["status"] == "uploaded"));

    // The outbox: the batch's event, then one per file.
    let events = run_ok(valet(dir.path()).args(["events", "list"]));
    let kinds: Vec<String> = events
        .stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON line");
            v["event_type"].as_str().expect("type").to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "io.valet.batch.committed",
            "io.valet.file.uploaded",
            "io.valet.file.uploaded",
            "io.valet.file.uploaded"
        ],
        "{}",
        events.stdout
    );

    // Not a directory: refused before anything is created.
    fs::write(dir.path().join("single.bin"), b"x").expect("write");
    let out = run_err(valet(dir.path()).args([
        "upload",
        "--batch",
        "single.bin",
        "--url",
        &server.url(),
        "--token",
        &token,
    ]));
    assert!(
        out.stderr.contains("cannot read directory"),
        "{}",
        out.stderr
    );
}
