//! Signals: on SIGTERM or SIGINT, `valet serve` finishes the requests in flight,
//! then exits cleanly; on SIGHUP it reloads the tenant policy.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{mint_device_token, random_bytes, sha256_hex, Server};

/// Sends one HTTP/1.1 request and returns the status and body.
fn http_call(port: u16, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn sigterm_finishes_the_requests_in_flight_then_exits() {
    stops_gracefully_on("TERM");
}

#[test]
fn sigint_finishes_the_requests_in_flight_then_exits() {
    stops_gracefully_on("INT");
}

fn stops_gracefully_on(signal: &str) {
    let dir = TempDir::new().expect("temp dir");
    let mut server = Server::start(dir.path(), &[("VALET_SERVER__SHUTDOWN_TIMEOUT_SECS", "20")]);
    let token = mint_device_token(dir.path(), "acme", "dev-42");
    let bytes = random_bytes(64 * 1024);
    let sha = sha256_hex(&bytes);

    // Eight uploads are in flight: headers and half the body sent.
    let mut in_flight = Vec::new();
    for i in 0..8 {
        let request = format!(
            r#"{{"name":"part-{i}.bin","size":{},"sha256":"{sha}"}}"#,
            bytes.len()
        );
        let (status, created) = http_call(server.port, "POST", "/v1/files", &token, &request);
        assert_eq!(status, 201, "{created}");
        let created: Value = serde_json::from_str(&created).expect("created JSON");
        let url = url::Url::parse(created["upload"]["url"].as_str().expect("url")).expect("url");
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(
            stream,
            "PUT {} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\
             Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
            &url[url::Position::BeforePath..],
            bytes.len()
        )
        .expect("write head");
        stream
            .write_all(&bytes[..bytes.len() / 2])
            .expect("write half");
        in_flight.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));

    server.send_signal(signal);
    std::thread::sleep(Duration::from_millis(500));

    // Every accepted request still completes.
    for mut stream in in_flight {
        stream
            .write_all(&bytes[bytes.len() / 2..])
            .expect("write rest");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).expect("read");
        let response = String::from_utf8_lossy(&response);
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "an accepted upload failed during shutdown: {response}\n{}",
            server.logs()
        );
    }

    // Then the process exits on its own, cleanly.
    let child = server.child.as_mut().expect("running");
    let deadline = Instant::now() + crate::patience::patience(Duration::from_secs(25));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "valet did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    server.child = None;
    assert!(status.success(), "exit status {status}\n{}", server.logs());
    assert!(
        fs::read_dir(dir.path().join("valet-data/objects"))
            .map(|d| d.count() > 0)
            .unwrap_or(false),
        "the uploads were stored"
    );
}

#[test]
fn sighup_reloads_the_tenant_policy() {
    let dir = TempDir::new().expect("temp dir");
    fs::write(
        dir.path().join("valet.toml"),
        "[policy.default]\nmax_files = 1\n",
    )
    .expect("config");
    let server = Server::start(dir.path(), &[("VALET_CONFIG", "valet.toml")]);
    let token = mint_device_token(dir.path(), "acme", "dev-42");
    let create = |n: usize| {
        let bytes = random_bytes(100 + n);
        let request = format!(
            r#"{{"name":"f-{n}.bin","size":{},"sha256":"{}"}}"#,
            bytes.len(),
            sha256_hex(&bytes)
        );
        http_call(server.port, "POST", "/v1/files", &token, &request)
    };
    assert_eq!(create(0).0, 201);
    let (status, refused) = create(1);
    assert_eq!(status, 403, "{refused}");
    assert!(refused.contains("\"limit\":\"max_files\""), "{refused}");

    fs::write(
        dir.path().join("valet.toml"),
        "[policy.default]\nmax_files = 3\n",
    )
    .expect("config");
    server.send_signal("HUP");
    let deadline = Instant::now() + crate::patience::patience(Duration::from_secs(10));
    while !server.logs().contains("tenant policy reloaded") {
        assert!(Instant::now() < deadline, "no reload:\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(create(2).0, 201);
    assert_eq!(create(3).0, 201);
    assert_eq!(create(4).0, 403);
}
