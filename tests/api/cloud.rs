//! The cloud backends against real servers: s3s-fs for S3 and Azurite for Azure Blob
//! (`scripts/test.sh` starts both and exports their addresses). Each test uses its
//! own bucket or container; uploads and downloads go to the signed URLs with a real
//! HTTP client, exactly as returned.

use std::time::Duration;

use base64::Engine;
use chrono::{SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde_json::{json, Value};
use valet::configuration::{
    BackendSettings, ProbeMode, Secret, Settings, StorageEventSettings, TenantSettings,
};
use valet_backends::azblob::AzblobConfig;
use valet_backends::local::LocalConfig;
use valet_backends::s3::S3Config;

use crate::helpers::{assert_problem, body_of, sha256_hex, spawn_app_with, TestApp};

const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn env_or_hint(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run scripts/test.sh, which starts s3s-fs and Azurite and exports \
             TEST_S3_ENDPOINT, TEST_S3_ACCESS_KEY, TEST_S3_SECRET_KEY and TEST_AZURITE_ENDPOINT"
        )
    })
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    )
}

/// A fresh bucket on the test S3 server.
async fn s3_bucket() -> (String, BackendSettings) {
    let endpoint = env_or_hint("TEST_S3_ENDPOINT");
    let (key, secret) = (
        env_or_hint("TEST_S3_ACCESS_KEY"),
        env_or_hint("TEST_S3_SECRET_KEY"),
    );
    let name = unique("valet");
    let bucket = Bucket::new(
        url::Url::parse(&endpoint).expect("endpoint"),
        UrlStyle::Path,
        name.clone(),
        "us-east-1",
    )
    .expect("bucket");
    let credentials = Credentials::new(&key, &secret);
    let url = bucket
        .create_bucket(&credentials)
        .sign(Duration::from_secs(60));
    let created = reqwest::Client::new()
        .put(url)
        .send()
        .await
        .expect("create bucket");
    assert!(
        created.status().is_success(),
        "create bucket: {}",
        created.status()
    );
    let settings = BackendSettings::S3(S3Config {
        bucket: name.clone(),
        region: "us-east-1".into(),
        endpoint: Some(endpoint),
        public_endpoint: None,
        path_style: true,
        access_key_id: Some(key),
        secret_access_key: Some(Secret::new(secret)),
        session_token: None,
        trust_storage_checksum: true,
        probe: ProbeMode::Write,
    });
    (name, settings)
}

/// An account SAS allowing container creation, per the REST reference.
fn account_sas_for_container_create() -> String {
    let start =
        (Utc::now() - chrono::Duration::minutes(5)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let expiry =
        (Utc::now() + chrono::Duration::minutes(5)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let version = "2022-11-02";
    let to_sign =
        format!("{AZURITE_ACCOUNT}\nc\nb\nc\n{start}\n{expiry}\n\nhttps,http\n{version}\n\n");
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .expect("key");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("hmac");
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", version)
        .append_pair("ss", "b")
        .append_pair("srt", "c")
        .append_pair("sp", "c")
        .append_pair("st", &start)
        .append_pair("se", &expiry)
        .append_pair("spr", "https,http")
        .append_pair("sig", &sig)
        .finish()
}

/// A fresh container on the test Azurite.
async fn azure_container() -> (String, BackendSettings) {
    let endpoint = env_or_hint("TEST_AZURITE_ENDPOINT");
    let name = unique("valet");
    let url = format!(
        "{endpoint}/{name}?restype=container&{}",
        account_sas_for_container_create()
    );
    let created = reqwest::Client::new()
        .put(url)
        .header("content-length", "0")
        .send()
        .await
        .expect("create container");
    assert!(
        created.status().is_success(),
        "create container: {} {:?}",
        created.status(),
        created.text().await
    );
    let settings = BackendSettings::Azblob(AzblobConfig {
        account: AZURITE_ACCOUNT.into(),
        container: name.clone(),
        endpoint: Some(endpoint),
        public_endpoint: None,
        account_key: Secret::new(AZURITE_KEY),
        probe: ProbeMode::Write,
    });
    (name, settings)
}

fn use_backend(s: &mut Settings, name: &str, backend: BackendSettings) {
    s.backends.insert(name.into(), backend);
    s.default_backend = name.into();
}

async fn full_flow(app: &TestApp) {
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(70_000);
    let created = app
        .create_ok(
            &token,
            &bytes,
            json!({"name": "naïve report.bin", "content_type": "application/x-test"}),
        )
        .await;
    let id = created["file"]["id"].as_str().expect("id");
    let put = app.send_signed(&created["upload"], bytes.clone()).await;
    assert!(
        put.status().is_success(),
        "PUT: {} {:?}",
        put.status(),
        put.text().await
    );
    let completed = app.complete(&token, id).await;
    assert_eq!(completed.status().as_u16(), 200);

    let signed: Value = app.download(&token, id).await.json().await.expect("signed");
    let got = app.send_signed(&signed, Vec::new()).await;
    assert_eq!(got.status().as_u16(), 200);
    let disposition = got.headers()["content-disposition"]
        .to_str()
        .expect("header")
        .to_owned();
    assert_eq!(
        disposition,
        "attachment; filename=\"na_ve report.bin\"; filename*=UTF-8''na%C3%AFve%20report.bin"
    );
    assert_eq!(got.bytes().await.expect("bytes").to_vec(), bytes);

    let deleted = app
        .client
        .delete(app.url(&format!("/v1/files/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status().as_u16(), 204);
    // The object is gone from the store.
    let again = app.send_signed(&signed, Vec::new()).await;
    assert_eq!(again.status().as_u16(), 404);
}

#[actix_web::test]
async fn local_full_flow() {
    let app = spawn_app_with(|_| {}).await;
    full_flow(&app).await;
}

#[actix_web::test]
async fn s3_full_flow() {
    let (_, backend) = s3_bucket().await;
    let app = spawn_app_with(|s| use_backend(s, "s3", backend)).await;
    full_flow(&app).await;
}

#[actix_web::test]
async fn azure_full_flow() {
    let (_, backend) = azure_container().await;
    let app = spawn_app_with(|s| use_backend(s, "azure", backend)).await;
    full_flow(&app).await;
}

fn sha256_b64(bytes: &[u8]) -> String {
    let digest = hex::decode(sha256_hex(bytes)).expect("hex");
    base64::engine::general_purpose::STANDARD.encode(digest)
}

fn with_header(signed: &Value, name: &str, value: &str) -> Value {
    let mut copy = signed.clone();
    copy["headers"][name] = json!(value);
    copy
}

#[actix_web::test]
async fn s3_refuses_any_other_body_and_expired_or_reused_urls() {
    let (_, backend) = s3_bucket().await;
    let app = spawn_app_with(|s| {
        use_backend(s, "s3", backend);
        // Long enough for the refusals below on a busy machine, short to wait out.
        s.uploads.upload_url_ttl_secs = 6;
    })
    .await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(1000);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let upload = &created["upload"];
    assert_eq!(
        upload["headers"]["x-amz-checksum-sha256"],
        sha256_b64(&bytes)
    );
    let id = created["file"]["id"].as_str().expect("id");

    let mut flipped = bytes.clone();
    flipped[10] ^= 1;
    let mut longer = bytes.clone();
    longer.push(0);
    let mut without_checksum = upload.clone();
    without_checksum["headers"]
        .as_object_mut()
        .expect("headers")
        .remove("x-amz-checksum-sha256");
    let mut tampered = upload.clone();
    tampered["url"] = json!(upload["url"]
        .as_str()
        .expect("url")
        .replace("X-Amz-Expires=", "X-Amz-Expires=9"));
    let refused = [
        (
            "same length, other bytes",
            app.send_signed(upload, flipped).await,
        ),
        (
            "shorter body",
            app.send_signed(
                &with_header(upload, "content-length", "999"),
                bytes[..999].to_vec(),
            )
            .await,
        ),
        (
            "longer body",
            app.send_signed(&with_header(upload, "content-length", "1001"), longer)
                .await,
        ),
        (
            "altered content type",
            app.send_signed(
                &with_header(upload, "content-type", "text/html"),
                bytes.clone(),
            )
            .await,
        ),
        (
            "altered checksum header",
            app.send_signed(
                &with_header(upload, "x-amz-checksum-sha256", &sha256_b64(b"other")),
                bytes.clone(),
            )
            .await,
        ),
        (
            "missing checksum header",
            app.send_signed(&without_checksum, bytes.clone()).await,
        ),
        (
            "tampered URL",
            app.send_signed(&tampered, bytes.clone()).await,
        ),
    ];
    for (what, response) in refused {
        let status = response.status().as_u16();
        assert!((400..500).contains(&status), "{what}: {status}");
    }
    assert_problem(app.complete(&token, id).await, 409, "upload_missing").await;

    let put = app.send_signed(upload, bytes.clone()).await;
    assert!(put.status().is_success(), "{}", put.status());
    // The URL cannot overwrite the object (If-None-Match: *).
    let again = app.send_signed(upload, bytes.clone()).await;
    assert!(
        !again.status().is_success(),
        "overwrite: {}",
        again.status()
    );
    assert_eq!(app.complete(&token, id).await.status().as_u16(), 200);

    // An expired URL is refused.
    let late = app.create_ok(&token, &bytes, json!({})).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let expired = app.send_signed(&late["upload"], bytes).await;
    assert_eq!(expired.status().as_u16(), 403);
}

#[actix_web::test]
async fn s3_urls_are_signed_for_the_public_endpoint() {
    let (_, backend) = s3_bucket().await;
    let BackendSettings::S3(mut config) = backend else {
        unreachable!()
    };
    // Devices reach the store as "localhost"; valet reaches it as 127.0.0.1.
    let public = config
        .endpoint
        .as_ref()
        .expect("endpoint")
        .replace("127.0.0.1", "localhost");
    config.public_endpoint = Some(public.clone());
    let backend = BackendSettings::S3(config);
    let app = spawn_app_with(|s| use_backend(s, "s3", backend)).await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(500);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let url = created["upload"]["url"].as_str().expect("url");
    assert!(url.starts_with(&public), "{url}");
    let put = app.send_signed(&created["upload"], bytes).await;
    assert!(put.status().is_success(), "{}", put.status());
    let id = created["file"]["id"].as_str().expect("id");
    assert_eq!(app.complete(&token, id).await.status().as_u16(), 200);
}

#[actix_web::test]
async fn azure_sas_grants_exactly_one_operation_on_one_blob() {
    let (_, backend) = azure_container().await;
    let app = spawn_app_with(|s| {
        use_backend(s, "azure", backend);
        s.uploads.upload_url_ttl_secs = 2;
    })
    .await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(800);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let upload = created["upload"].clone();
    assert_eq!(upload["headers"]["x-ms-blob-type"], "BlockBlob");
    let sp = url::Url::parse(upload["url"].as_str().expect("url"))
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "sp")
        .map(|(_, v)| v.into_owned());
    assert_eq!(sp.as_deref(), Some("cw"));

    // Tampered signature, another blob, reading with the upload SAS: 403.
    let url = upload["url"].as_str().expect("url").to_owned();
    let tampered = {
        let mut u = url::Url::parse(&url).expect("url");
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "sp" {
                    "rcw".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        u.to_string()
    };
    let other_blob = url.replacen(
        created["file"]["id"].as_str().expect("id"),
        "someone-else",
        1,
    );
    for (what, target) in [("tampered", tampered), ("other blob", other_blob)] {
        let mut signed = upload.clone();
        signed["url"] = json!(target);
        let response = app.send_signed(&signed, bytes.clone()).await;
        assert_eq!(response.status().as_u16(), 403, "{what}");
    }
    let put = app.send_signed(&upload, bytes.clone()).await;
    assert!(put.status().is_success(), "{}", put.status());
    let read_with_upload_sas = app.client.get(&url).send().await.expect("get");
    assert_eq!(read_with_upload_sas.status().as_u16(), 403);
    let delete_with_upload_sas = app.client.delete(&url).send().await.expect("delete");
    assert_eq!(delete_with_upload_sas.status().as_u16(), 403);

    let id = created["file"]["id"].as_str().expect("id");
    assert_eq!(app.complete(&token, id).await.status().as_u16(), 200);
    let signed: Value = app.download(&token, id).await.json().await.expect("signed");
    let write_with_download_sas = app
        .client
        .put(signed["url"].as_str().expect("url"))
        .header("x-ms-blob-type", "BlockBlob")
        .body(bytes.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(write_with_download_sas.status().as_u16(), 403);

    // An expired SAS is refused.
    let late = app.create_ok(&token, &bytes, json!({})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        app.send_signed(&late["upload"], bytes)
            .await
            .status()
            .as_u16(),
        403
    );
}

#[actix_web::test]
async fn azure_wrong_size_is_rejected_at_completion() {
    let (_, backend) = azure_container().await;
    let app = spawn_app_with(|s| use_backend(s, "azure", backend)).await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(600);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let shorter = with_header(&created["upload"], "content-length", "599");
    let put = app.send_signed(&shorter, bytes[..599].to_vec()).await;
    assert!(put.status().is_success(), "{}", put.status());
    let id = created["file"]["id"].as_str().expect("id");
    assert_problem(app.complete(&token, id).await, 422, "size_mismatch").await;
}

#[actix_web::test]
async fn azure_wrong_bytes_are_rejected_at_completion_and_deleted() {
    let (_, backend) = azure_container().await;
    let app = spawn_app_with(|s| use_backend(s, "azure", backend)).await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(600);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let mut wrong = bytes.clone();
    wrong[0] ^= 0xff;
    // Azure cannot bind the hash: the store accepts these bytes...
    let put = app.send_signed(&created["upload"], wrong).await;
    assert!(put.status().is_success(), "{}", put.status());
    let id = created["file"]["id"].as_str().expect("id");
    // ... and completion catches them.
    assert_problem(app.complete(&token, id).await, 422, "checksum_mismatch").await;
    let file: Value = app.get_file(&token, id).await.json().await.expect("file");
    assert_eq!(file["status"], "rejected");
    // The blob is gone from the container.
    let BackendSettings::Azblob(config) = app.settings.backends["azure"].clone() else {
        unreachable!()
    };
    let container = config.container.clone();
    let store = valet_backends::azblob::AzblobBackend::new(AzblobConfig {
        probe: ProbeMode::ReadOnly,
        ..config
    })
    .expect("backend");
    let url = url::Url::parse(created["upload"]["url"].as_str().expect("url")).expect("url");
    let key = url
        .path()
        .split(&format!("/{container}/"))
        .nth(1)
        .expect("key")
        .to_owned();
    use valet_backends::Backend;
    let stat = store
        .stat(&valet_backends::ObjectKey::parse(&key).expect("key"))
        .await
        .expect("stat");
    assert!(stat.is_none(), "the rejected blob is still there");
}

#[actix_web::test]
async fn tenants_are_routed_by_configuration_and_old_files_survive_a_routing_change() {
    let (_, s3) = s3_bucket().await;
    let (_, azure) = azure_container().await;
    let app = spawn_app_with(|s| {
        s.backends.insert(
            "local".into(),
            BackendSettings::Local(LocalConfig::default()),
        );
        s.backends.insert("s3".into(), s3.clone());
        s.backends.insert("azure".into(), azure.clone());
        s.tenants.insert(
            "acme".into(),
            TenantSettings {
                backend: Some("s3".into()),
                ..Default::default()
            },
        );
        s.tenants.insert(
            "globex".into(),
            TenantSettings {
                backend: Some("azure".into()),
                ..Default::default()
            },
        );
    })
    .await;
    let acme = app.device_token("acme", "d1");
    let globex = app.device_token("globex", "d1");
    let initech = app.device_token("initech", "d1");
    let a = app.upload(&acme, &body_of(100), json!({})).await;
    let g = app.upload(&globex, &body_of(101), json!({})).await;
    let i = app.upload(&initech, &body_of(102), json!({})).await;
    assert_eq!(a["backend"], "s3");
    assert_eq!(g["backend"], "azure");
    assert_eq!(i["backend"], "local");

    // Routing changes: acme now goes to azure. Its existing file stays on s3.
    let mut moved = app.settings.clone();
    moved.tenants.insert(
        "acme".into(),
        TenantSettings {
            backend: Some("azure".into()),
            ..Default::default()
        },
    );
    let application = valet::startup::Application::build(moved)
        .await
        .expect("starts");
    let second = format!("http://127.0.0.1:{}", application.port());
    actix_web::rt::spawn(application.run_until_stopped());
    let signed: Value = app
        .client
        .get(format!(
            "{second}/v1/files/{}/download",
            a["id"].as_str().expect("id")
        ))
        .bearer_auth(&acme)
        .send()
        .await
        .expect("download")
        .json()
        .await
        .expect("signed");
    let got = app.send_signed(&signed, Vec::new()).await;
    assert_eq!(got.bytes().await.expect("bytes").to_vec(), body_of(100));
    let created: Value = app
        .client
        .post(format!("{second}/v1/files"))
        .bearer_auth(&acme)
        .json(&json!({"name": "n", "size": 5, "sha256": sha256_hex(&body_of(5))}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("created");
    assert_eq!(created["file"]["backend"], "azure");
}

#[actix_web::test]
async fn start_up_refuses_an_unusable_backend_naming_it() {
    let (name, backend) = s3_bucket().await;
    let unreachable = match backend {
        BackendSettings::S3(config) => BackendSettings::S3(S3Config {
            bucket: name,
            endpoint: Some("http://127.0.0.1:9".into()),
            ..config
        }),
        other => other,
    };
    let mut settings = Settings::default();
    let dir = tempfile::tempdir().expect("dir");
    settings.data_dir = dir.path().to_path_buf();
    settings.server.bind = "127.0.0.1:0".into();
    settings.backends.insert(
        "local".into(),
        BackendSettings::Local(LocalConfig::default()),
    );
    settings.backends.insert("archive".into(), unreachable);
    let settings = settings.finish().expect("valid settings");
    let error = match valet::startup::Application::build(settings).await {
        Ok(_) => panic!("valet started with an unreachable backend"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("\"archive\""), "{error}");
}

#[actix_web::test]
async fn s3_storage_events_check_the_bucket() {
    let (bucket, backend) = s3_bucket().await;
    let app = spawn_app_with(|s| {
        use_backend(s, "s3", backend);
        s.storage_events.insert(
            "s3".into(),
            StorageEventSettings {
                secret: Secret::new("s3-events-secret-123"),
            },
        );
    })
    .await;
    let token = app.device_token("acme", "dev-42");
    let bytes = body_of(300);
    let created = app.create_ok(&token, &bytes, json!({})).await;
    let put = app.send_signed(&created["upload"], bytes.clone()).await;
    assert!(put.status().is_success());
    let url = url::Url::parse(created["upload"]["url"].as_str().expect("url")).expect("url");
    let key = url
        .path()
        .trim_start_matches(&format!("/{bucket}/"))
        .to_owned();
    let event = |bucket: &str| {
        json!({"Records": [{"eventName": "s3:ObjectCreated:Put",
            "s3": {"bucket": {"name": bucket}, "object": {"key": key.replace('/', "%2F"), "size": 300}}}]})
    };
    let post = |body: Value| {
        app.client
            .post(app.url("/v1/storage-events/s3"))
            .bearer_auth("s3-events-secret-123")
            .json(&body)
            .send()
    };
    let other: Value = post(event("another-bucket"))
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(other["results"][0]["outcome"], "unknown");
    let ours: Value = post(event(&bucket))
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(ours["results"][0]["outcome"], "completed");
}
