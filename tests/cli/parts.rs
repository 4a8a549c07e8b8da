//! `valet upload` in parts and resumed, `valet download` resumed: against a
//! server whose multipart threshold is 6 MiB (parts of 5 MiB, S3's smallest),
//! with transfers interrupted by killing the client part of the way through
//! (behind a slow proxy, so there is a "part of the way").

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{mint_device_token, random_bytes, run_ok, valet, Output, Server};
use crate::proxy::SlowProxy;

const MIB: usize = 1024 * 1024;
const PART: usize = 5 * MIB;
/// Each direction of each connection through the slow proxy.
const SLOW: u64 = 10 * MIB as u64;

fn multipart_env() -> Vec<(&'static str, String)> {
    vec![
        (
            "VALET_UPLOADS__MULTIPART_THRESHOLD_BYTES",
            (6 * MIB).to_string(),
        ),
        ("VALET_UPLOADS__DEFAULT_PART_SIZE_BYTES", PART.to_string()),
    ]
}

/// A server with the small threshold; behind a slow proxy when one is given.
fn start(dir: &Path, proxy: Option<&SlowProxy>) -> Server {
    let mut env = multipart_env();
    if let Some(proxy) = proxy {
        env.push(("VALET_SERVER__PUBLIC_URL", proxy.url()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start(dir, &env);
    if let Some(proxy) = proxy {
        proxy.forward_to(server.port);
    }
    server
}

fn upload(dir: &Path, url: &str, token: &str, file: &str, extra: &[&str]) -> (Value, Output) {
    let out = run_ok(
        valet(dir)
            .args(["upload", file, "--url", url, "--token", token])
            .args(extra),
    );
    let json: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("upload printed no JSON ({e}):\n{}", out.all()));
    (json, out)
}

fn download(dir: &Path, url: &str, token: &str, id: &str, output: &str) -> Output {
    run_ok(valet(dir).args(["download", id, "-o", output, "--url", url, "--token", token]))
}

/// `valet <args>` running in the background, its stderr lines sent to a channel.
fn spawn(dir: &Path, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_valet"))
        .args(args)
        .current_dir(dir)
        .env_remove("VALET_TOKEN")
        .env_remove("VALET_API_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn valet");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits up to 30 s for `done`, checked on every stderr line and every 50 ms.
fn wait_for(child: &mut Child, lines: &mpsc::Receiver<String>, mut done: impl FnMut(&str) -> bool) {
    let deadline = Instant::now() + crate::patience::patience(Duration::from_secs(30));
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                let stop = done(&line);
                seen.push(line);
                if stop {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if done("") {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.try_wait().expect("poll valet");
    panic!(
        "the client did not get there (exit {status:?}):\n{}",
        seen.join("\n")
    );
}

fn kill(mut child: Child) {
    child.kill().expect("kill valet");
    child.wait().expect("reap valet");
}

/// `GET path` on the API with `token`: status and JSON body.
fn api_get(server: &Server, token: &str, path: &str) -> (u16, Value) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", server.url()))
            .bearer_auth(token)
            .send()
            .await
            .expect("API request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

fn state_of(path: &Path) -> Value {
    let text = fs::read(path).expect("the state file exists");
    serde_json::from_slice(&text).expect("the state file is JSON")
}

/// Successful part PUTs the server logged for `id`.
fn part_puts(server: &Server, id: &str) -> usize {
    server
        .logs()
        .lines()
        .filter(|l| l.contains("method=PUT") && l.contains("status=200") && l.contains(id))
        .count()
}

#[test]
fn a_large_file_goes_up_in_parts_and_comes_back_identical() {
    let dir = TempDir::new().expect("temp dir");
    let server = start(dir.path(), None);
    let token = mint_device_token(dir.path(), "acme", "dev-42");

    let content = random_bytes(2 * PART + 4321);
    fs::write(dir.path().join("dump.bin"), &content).expect("write");
    let (file, out) = upload(dir.path(), &server.url(), &token, "dump.bin", &[]);
    assert_eq!(file["status"], "uploaded", "{file:#}");
    assert_eq!(file["size"], content.len(), "{file:#}");
    assert!(
        out.stderr.contains("in 3 parts of 5.0 MiB"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("parts 3/3, 10.0 MiB of 10.0 MiB"),
        "{}",
        out.stderr
    );
    assert!(!dir.path().join("dump.bin.valet-upload").exists());
    let id = file["id"].as_str().expect("id");
    assert_eq!(part_puts(&server, id), 3);

    let out = download(dir.path(), &server.url(), &token, id, "copy.bin");
    assert!(fs::read(dir.path().join("copy.bin")).expect("copy") == content);
    assert!(out.stderr.contains("downloaded dump.bin"), "{}", out.stderr);

    // --part-size makes even a small file go in parts; a small file without it
    // is one PUT, as ever.
    fs::write(dir.path().join("small.bin"), b"small").expect("write");
    let (file, out) = upload(
        dir.path(),
        &server.url(),
        &token,
        "small.bin",
        &["--part-size", &PART.to_string()],
    );
    assert_eq!(file["status"], "uploaded", "{file:#}");
    assert!(
        out.stderr.contains("in 1 part of 5.0 MiB"),
        "{}",
        out.stderr
    );
    let (file, out) = upload(dir.path(), &server.url(), &token, "small.bin", &[]);
    assert_eq!(file["status"], "uploaded", "{file:#}");
    assert!(!out.stderr.contains("part"), "{}", out.stderr);
}

#[test]
fn an_interrupted_upload_resumes_sending_only_the_missing_parts() {
    let dir = TempDir::new().expect("temp dir");
    let proxy = SlowProxy::start(SLOW);
    let server = start(dir.path(), Some(&proxy));
    let token = mint_device_token(dir.path(), "acme", "dev-42");
    let content = random_bytes(12 * PART);
    fs::write(dir.path().join("big.bin"), &content).expect("write");

    let url = proxy.url();
    let args = [
        "upload",
        "big.bin",
        "--parallel",
        "2",
        "--url",
        &url,
        "--token",
        &token,
    ];
    let (mut child, lines) = spawn(dir.path(), &args);
    wait_for(&mut child, &lines, |line| {
        line.strip_prefix("parts ")
            .and_then(|l| l.split('/').next())
            .and_then(|done| done.parse::<u32>().ok())
            .is_some_and(|done| done >= 5)
    });
    kill(child);
    // Let the server finish storing what had arrived whole.
    std::thread::sleep(Duration::from_millis(500));

    let state_path = dir.path().join("big.bin.valet-upload");
    let state = state_of(&state_path);
    assert_eq!(state["size"], content.len(), "{state:#}");
    assert_eq!(state["part_size"], PART, "{state:#}");
    assert_eq!(state["sha256"], crate::helpers::sha256_hex(&content));
    let id = state["file_id"].as_str().expect("file id").to_owned();
    let (status, held) = api_get(&server, &token, &format!("/v1/files/{id}/parts"));
    assert_eq!(status, 200, "{held}");
    let held: Vec<u64> = held["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .map(|p| p["number"].as_u64().expect("number"))
        .collect();
    assert!(held.len() >= 5 && held.len() < 12, "held {held:?}");
    let missing: Vec<u64> = (1..=12).filter(|n| !held.contains(n)).collect();

    proxy.full_speed();
    let puts_before = part_puts(&server, &id);
    let (file, out) = upload(
        dir.path(),
        &url,
        &token,
        "big.bin",
        &["--parallel", "2", "-v"],
    );
    assert_eq!(file["id"], id.as_str(), "the same upload continued");
    assert_eq!(file["status"], "uploaded", "{file:#}");
    let resumed = format!(
        "resuming upload {id}: {} of 12 parts already stored",
        held.len()
    );
    assert!(out.stderr.contains(&resumed), "{}", out.stderr);
    let mut sent: Vec<u64> = out
        .stderr
        .lines()
        .filter_map(|l| {
            l.strip_prefix("sent part ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    sent.sort_unstable();
    assert_eq!(sent, missing, "{}", out.stderr);
    assert_eq!(part_puts(&server, &id) - puts_before, missing.len());
    assert!(!state_path.exists(), "the state file is removed at the end");

    download(dir.path(), &url, &token, &id, "copy.bin");
    assert!(fs::read(dir.path().join("copy.bin")).expect("copy") == content);
}

#[test]
fn a_changed_input_is_not_resumed_into_the_old_upload() {
    let dir = TempDir::new().expect("temp dir");
    let proxy = SlowProxy::start(SLOW);
    let server = start(dir.path(), Some(&proxy));
    let token = mint_device_token(dir.path(), "acme", "dev-42");
    let mut content = random_bytes(3 * PART);
    fs::write(dir.path().join("log.bin"), &content).expect("write");

    let url = proxy.url();
    let state_path = dir.path().join("log.bin.valet-upload");
    let args = ["upload", "log.bin", "--url", &url, "--token", &token];
    let (mut child, lines) = spawn(dir.path(), &args);
    wait_for(&mut child, &lines, |_| state_path.exists());
    kill(child);
    let old_id = state_of(&state_path)["file_id"]
        .as_str()
        .expect("file id")
        .to_owned();

    // Same length, other bytes (and a new modification time).
    content[..7].copy_from_slice(b"changed");
    fs::write(dir.path().join("log.bin"), &content).expect("rewrite");
    proxy.full_speed();
    let (file, out) = upload(dir.path(), &url, &token, "log.bin", &[]);
    assert_ne!(file["id"], old_id.as_str(), "a new upload: {}", out.stderr);
    assert_eq!(file["status"], "uploaded", "{file:#}");
    assert!(
        out.stderr.contains("changed since upload"),
        "{}",
        out.stderr
    );
    assert!(!state_path.exists());
    let (_, old) = api_get(&server, &token, &format!("/v1/files/{old_id}"));
    assert_eq!(old["status"], "pending", "the old upload is left to expire");

    let id = file["id"].as_str().expect("id");
    download(dir.path(), &url, &token, id, "copy.bin");
    assert!(fs::read(dir.path().join("copy.bin")).expect("copy") == content);
}

#[test]
fn an_interrupted_download_resumes_into_identical_bytes() {
    let dir = TempDir::new().expect("temp dir");
    let proxy = SlowProxy::start(SLOW);
    let server = start(dir.path(), Some(&proxy));
    let token = mint_device_token(dir.path(), "acme", "dev-42");
    let content = random_bytes(4 * PART);
    fs::write(dir.path().join("fw.bin"), &content).expect("write");
    proxy.full_speed();
    let url = proxy.url();
    let (file, _) = upload(dir.path(), &url, &token, "fw.bin", &[]);
    let id = file["id"].as_str().expect("id").to_owned();

    // A partial file left by hand: the rest is asked for with Range.
    fs::write(dir.path().join("a.bin.part"), &content[..3 * MIB + 7]).expect("write");
    let out = download(dir.path(), &url, &token, &id, "a.bin");
    let resumed = format!(
        "resuming the download at {} of {}",
        3 * MIB + 7,
        content.len()
    );
    assert!(out.stderr.contains(&resumed), "{}", out.stderr);
    assert!(fs::read(dir.path().join("a.bin")).expect("a.bin") == content);
    assert!(!dir.path().join("a.bin.part").exists());
    assert!(server.logs().contains("status=206"), "a range was served");

    // Partial bytes of something else: detected by the hash, then started over.
    fs::write(dir.path().join("b.bin.part"), random_bytes(MIB)).expect("write");
    let out = download(dir.path(), &url, &token, &id, "b.bin");
    assert!(out.stderr.contains("starting over"), "{}", out.stderr);
    assert!(fs::read(dir.path().join("b.bin")).expect("b.bin") == content);

    // Killed part of the way through, then run again.
    let part = dir.path().join("c.bin.part");
    let args = [
        "download", &id, "-o", "c.bin", "--url", &url, "--token", &token,
    ];
    proxy.slow_down();
    let (mut child, lines) = spawn(dir.path(), &args);
    wait_for(&mut child, &lines, |_| {
        fs::metadata(&part).is_ok_and(|m| m.len() >= 5 * MIB as u64)
    });
    kill(child);
    let kept = fs::metadata(&part)
        .expect("the partial download is kept")
        .len();
    assert!(kept < content.len() as u64, "{kept}");
    assert!(!dir.path().join("c.bin").exists());
    proxy.full_speed();
    let out = download(dir.path(), &url, &token, &id, "c.bin");
    assert!(
        out.stderr.contains("resuming the download at"),
        "{}",
        out.stderr
    );
    assert!(fs::read(dir.path().join("c.bin")).expect("c.bin") == content);
    assert!(!part.exists());
    assert!(!dir.path().join("c.bin.valet-download").exists());
}
