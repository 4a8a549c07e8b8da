//! The HTTP edge: HTTPS with certificate reload, mutual TLS for tenant services,
//! request ids in problem documents, bounded in-flight work and deadlines.

use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::helpers::{assert_problem, body_of, spawn_app, spawn_app_with, TestApp};

/// A certificate authority made for one test.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate for `names`; returns (certificate PEM, key PEM).
    fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    fn root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.pem.as_bytes()).expect("root")
    }
}

fn write_server_certificate(dir: &Path, ca: &TestCa) {
    let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]);
    std::fs::write(dir.join("server.pem"), cert).expect("write cert");
    std::fs::write(dir.join("server.key"), key).expect("write key");
}

/// A client trusting only `ca`, optionally presenting a client certificate.
fn tls_client(ca: &TestCa, identity: Option<(String, String)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca.root())
        .timeout(Duration::from_secs(10));
    if let Some((cert, key)) = identity {
        let pem = format!("{cert}\n{key}");
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
    }
    builder.build().expect("client")
}

async fn spawn_https(ca: &TestCa, client_ca: Option<&TestCa>) -> (TestApp, tempfile::TempDir) {
    let certs = tempfile::tempdir().expect("temp dir");
    write_server_certificate(certs.path(), ca);
    if let Some(client_ca) = client_ca {
        std::fs::write(certs.path().join("clients.pem"), &client_ca.pem).expect("write CA");
    }
    let dir = certs.path().to_owned();
    let has_client_ca = client_ca.is_some();
    let mut app = spawn_app_with(move |s| {
        s.server.tls_cert = Some(dir.join("server.pem"));
        s.server.tls_key = Some(dir.join("server.key"));
        s.server.tls_reload_interval_secs = 1;
        if has_client_ca {
            s.server.tls_client_ca = Some(dir.join("clients.pem"));
        }
    })
    .await;
    app.client = tls_client(ca, None);
    (app, certs)
}

#[actix_web::test]
async fn the_whole_device_flow_works_over_https() {
    let ca = TestCa::new("valet test CA");
    let (app, _certs) = spawn_https(&ca, None).await;
    assert!(app.address.starts_with("https://"), "{}", app.address);
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(4096);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    assert!(
        created["upload"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "signed URLs point at the HTTPS address: {created}"
    );
    let file = app.upload(&token, &bytes, json!({})).await;
    let id = file["id"].as_str().expect("id");
    assert_eq!(app.fetch(&token, id).await, bytes);

    // What the HTTP parser refuses is a problem document over TLS too (on a new
    // connection: only a connection's first answer is rewritten).
    let mut request = tls_client(&ca, None).get(app.url("/healthz"));
    for n in 0..100 {
        request = request.header(format!("x-h{n}"), "v");
    }
    assert_problem(request.send().await.unwrap(), 431, "headers_too_large").await;

    // Plain HTTP on the HTTPS port gets nowhere.
    let plain = app.address.replace("https://", "http://");
    let answer = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        answer.map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP must not be served on the TLS listener"
    );
}

#[actix_web::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let old_ca = TestCa::new("old CA");
    let (app, certs) = spawn_https(&old_ca, None).await;
    let new_ca = TestCa::new("new CA");
    let trusts_new = tls_client(&new_ca, None);
    let healthz = app.url("/healthz");
    assert!(
        trusts_new.get(&healthz).send().await.is_err(),
        "the old certificate is not signed by the new CA"
    );

    write_server_certificate(certs.path(), &new_ca);
    let mut served_new = false;
    for _ in 0..crate::helpers::attempts(50) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // New connections each time (the client pools connections).
        if tls_client(&new_ca, None).get(&healthz).send().await.is_ok() {
            served_new = true;
            break;
        }
    }
    assert!(served_new, "the renewed certificate was never served");

    // A broken renewal keeps the last good certificate.
    std::fs::write(certs.path().join("server.pem"), "not a certificate").expect("write");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let response = tls_client(&new_ca, None)
        .get(&healthz)
        .send()
        .await
        .expect("still served");
    assert_eq!(response.status().as_u16(), 200);
}

#[actix_web::test]
async fn with_a_client_ca_services_need_a_client_certificate_and_devices_do_not() {
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let (app, _certs) = spawn_https(&ca, Some(&clients)).await;
    let body = json!({"name": "a.bin", "size": 3, "sha256": hex::encode([0u8; 32])});
    let service = app.service_token("acme", "fleet-manager");
    let create_shared = |client: &reqwest::Client| {
        client
            .post(app.url("/v1/files"))
            .bearer_auth(&service)
            .json(&json!({"name": "a.bin", "size": 3, "sha256": hex::encode([0u8; 32]), "shared": true}))
            .send()
    };

    let response = create_shared(&app.client).await.expect("request");
    assert_problem(response, 403, "client_certificate_required").await;

    let with_cert = tls_client(&ca, Some(clients.issue(&["fleet-manager"])));
    let response = create_shared(&with_cert).await.expect("request");
    assert_eq!(response.status().as_u16(), 201);

    // A certificate from another CA is refused by the TLS handshake itself.
    let stranger = TestCa::new("stranger CA");
    let forged = tls_client(&ca, Some(stranger.issue(&["fleet-manager"])));
    let refused = create_shared(&forged).await;
    assert!(
        refused.map(|r| r.status().as_u16() != 201).unwrap_or(true),
        "an unverified client certificate must not authenticate a service"
    );

    // Devices authenticate with their token alone.
    let device = app.device_token("acme", "dev-42");
    assert_eq!(app.create(&device, body).await.status().as_u16(), 201);
}

#[actix_web::test]
async fn problem_documents_carry_the_request_id() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/v1/files"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.headers()["x-request-id"].to_str().expect("header"),
        "trace-abc-123"
    );
    let problem = assert_problem(response, 401, "unauthenticated").await;
    assert_eq!(problem["request_id"], "trace-abc-123");

    // Framework-produced errors too, with a generated id matching the header.
    let response = app
        .client
        .patch(app.url("/v1/files"))
        .send()
        .await
        .expect("request");
    let header = response.headers()["x-request-id"]
        .to_str()
        .expect("header")
        .to_owned();
    let problem = assert_problem(response, 405, "method_not_allowed").await;
    assert_eq!(problem["request_id"], header.as_str());
}

/// Starts a local-store PUT that sends its headers and part of the body, then
/// stalls; returns the open connection (dropping it ends the request).
async fn stalled_upload(app: &TestApp) -> tokio::net::TcpStream {
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(1000);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let url = url::Url::parse(created["upload"]["url"].as_str().expect("url")).expect("url");
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", url.port().expect("port")))
        .await
        .expect("connect");
    let path = &url[url::Position::BeforePath..];
    let head = format!(
        "PUT {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 1000\r\n\
         content-type: application/octet-stream\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(&bytes[..10]).await.expect("write");
    stream.flush().await.expect("flush");
    // Let the server accept it and start the handler.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream
}

#[actix_web::test]
async fn beyond_the_in_flight_limit_valet_answers_503_at_once() {
    let app = spawn_app_with(|s| s.server.max_in_flight = 1).await;
    let stalled = stalled_upload(&app).await;

    let token = app.device_token("acme", "dev-42");
    let response = app
        .client
        .get(app.url("/v1/files"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.headers()["retry-after"].to_str().expect("header"),
        "1"
    );
    assert_problem(response, 503, "unavailable").await;

    // Probes and scrapes still answer.
    let health = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("ok");
    assert_eq!(health.status().as_u16(), 200);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("ok");
    assert!(metrics
        .text()
        .await
        .expect("text")
        .contains("valet_http_overloaded_total"));

    drop(stalled);
    let mut served = false;
    for _ in 0..crate::helpers::attempts(50) {
        let response = app
            .client
            .get(app.url("/v1/files"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        if response.status().as_u16() == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the slot is given back when the request ends");
}

#[actix_web::test]
async fn a_transfer_past_its_deadline_is_cut_off_with_503() {
    let app = spawn_app_with(|s| s.server.transfer_timeout_secs = 1).await;
    let mut stalled = stalled_upload(&app).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1024];
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 10s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // The cut-off upload's temporary file is removed as its handler unwinds, which
    // a busy machine may do a moment after the answer went out.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !app.stored_objects().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        app.stored_objects().is_empty(),
        "{:?}",
        app.stored_objects()
    );
}
