//! The cloud backends beyond the conformance suite, against real servers (s3s-fs for
//! S3, Azurite for Azure Blob; see `helpers::stores`): how each binds a signed URL to
//! one request, public endpoints, routing tenants between backends, and refusing an
//! unusable backend at start-up. Every test here runs in turn (see `run_in_turn`).

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use valet::configuration::{
    BackendSettings, Secret, Settings, StorageEventSettings, TenantSettings,
};

use crate::helpers::stores::{azure_container, local_backend, run_in_turn, s3_bucket, use_backend};
use crate::helpers::{assert_problem, body_of, sha256_hex, spawn_app_with, with_header};

fn sha256_b64(bytes: &[u8]) -> String {
    let digest = hex::decode(sha256_hex(bytes)).expect("hex");
    base64::engine::general_purpose::STANDARD.encode(digest)
}

#[test]
fn s3_refuses_any_other_body_and_expired_or_reused_urls() {
    run_in_turn(async {
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
    });
}

/// When a presigned S3 URL stops working: `X-Amz-Date` plus `X-Amz-Expires` seconds.
fn sigv4_expiry(url: &str) -> chrono::DateTime<chrono::Utc> {
    let url = url::Url::parse(url).expect("url");
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    let date = chrono::NaiveDateTime::parse_from_str(&query["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
        .expect("X-Amz-Date")
        .and_utc();
    let seconds: i64 = query["X-Amz-Expires"].parse().expect("X-Amz-Expires");
    date + chrono::Duration::seconds(seconds)
}

#[test]
fn s3_urls_expire_exactly_when_valet_says() {
    run_in_turn(async {
        let (_, backend) = s3_bucket().await;
        let app = spawn_app_with(|s| use_backend(s, "s3", backend)).await;
        let token = app.device_token("acme", "dev-42");
        let bytes = body_of(100);
        let created = app.create_ok(&token, &bytes, json!({})).await;
        let upload = &created["upload"];
        let said: chrono::DateTime<chrono::Utc> = upload["expires_at"]
            .as_str()
            .expect("expires_at")
            .parse()
            .expect("time");
        assert_eq!(sigv4_expiry(upload["url"].as_str().expect("url")), said);
        let put = app.send_signed(upload, bytes).await;
        assert!(put.status().is_success());
        let id = created["file"]["id"].as_str().expect("id");
        assert_eq!(app.complete(&token, id).await.status().as_u16(), 200);
        let download: Value = app
            .download(&token, id)
            .await
            .json()
            .await
            .expect("download");
        let said: chrono::DateTime<chrono::Utc> = download["expires_at"]
            .as_str()
            .expect("expires_at")
            .parse()
            .expect("time");
        assert_eq!(sigv4_expiry(download["url"].as_str().expect("url")), said);
    });
}

#[test]
fn s3_stores_that_refuse_the_checksum_header_are_verified_at_completion() {
    run_in_turn(async {
        let (_, mut backend) = s3_bucket().await;
        let BackendSettings::S3(config) = &mut backend else {
            unreachable!()
        };
        config.bind_checksum = false;
        config.trust_storage_checksum = false;
        let app = spawn_app_with(|s| use_backend(s, "s3", backend)).await;
        let token = app.device_token("acme", "dev-42");
        let bytes = body_of(300);
        let created = app.create_ok(&token, &bytes, json!({})).await;
        let headers = created["upload"]["headers"].as_object().expect("headers");
        assert!(
            !headers.contains_key("x-amz-checksum-sha256"),
            "{headers:?}"
        );
        // Other bytes of the same length reach the store, and completion catches them.
        let mut other = bytes.clone();
        other[0] ^= 1;
        let put = app.send_signed(&created["upload"], other).await;
        assert!(put.status().is_success(), "{}", put.status());
        let id = created["file"]["id"].as_str().expect("id");
        assert_problem(app.complete(&token, id).await, 422, "checksum_mismatch").await;
        // The right bytes, in parts too, become uploaded.
        let file = app.upload(&token, &bytes, json!({})).await;
        assert_eq!(file["status"], "uploaded");
        let large = body_of(5 * 1024 * 1024 + 10);
        let digest = sha256_hex(&large);
        let id = app.create_multipart(&token, &large, &digest).await;
        app.send_parts(&token, &id, &large, &[1, 2]).await;
        let accepted = app.complete(&token, &id).await.status().as_u16();
        assert!([200, 202].contains(&accepted), "{accepted}");
        let done = app
            .wait_for_file(&token, &id, |f| f["status"] != "verifying")
            .await;
        assert_eq!(done["status"], "uploaded");
    });
}

#[test]
fn s3_urls_are_signed_for_the_public_endpoint() {
    run_in_turn(async {
        let (_, mut backend) = s3_bucket().await;
        let BackendSettings::S3(config) = &mut backend else {
            unreachable!()
        };
        // Devices reach the store as "localhost"; valet reaches it as 127.0.0.1.
        let public = config
            .endpoint
            .as_ref()
            .expect("endpoint")
            .as_str()
            .replace("127.0.0.1", "localhost");
        config.public_endpoint = Some(public.parse().expect("public endpoint"));
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
    });
}

#[test]
fn azure_sas_grants_exactly_one_operation_on_one_blob() {
    run_in_turn(async {
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
    });
}

#[test]
fn tenants_are_routed_by_configuration_and_old_files_survive_a_routing_change() {
    run_in_turn(async {
        let (_, s3) = s3_bucket().await;
        let (_, azure) = azure_container().await;
        let app = spawn_app_with(|s| {
            s.backends.insert("local".into(), local_backend());
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
    });
}

#[test]
fn start_up_refuses_an_unusable_backend_naming_it() {
    run_in_turn(async {
        let (_, mut backend) = s3_bucket().await;
        let BackendSettings::S3(config) = &mut backend else {
            unreachable!()
        };
        config.endpoint = Some("http://127.0.0.1:9".parse().expect("endpoint"));
        let mut settings = Settings::default();
        let dir = tempfile::tempdir().expect("dir");
        settings.data_dir = dir.path().to_path_buf();
        settings.server.bind = "127.0.0.1:0".into();
        settings.backends.insert("local".into(), local_backend());
        settings.backends.insert("archive".into(), backend);
        let settings = settings.finish().expect("valid settings");
        let error = match valet::startup::Application::build(settings).await {
            Ok(_) => panic!("valet started with an unreachable backend"),
            Err(e) => format!("{e:#}"),
        };
        assert!(error.contains("\"archive\""), "{error}");
    });
}

#[test]
fn s3_storage_events_check_the_bucket() {
    run_in_turn(async {
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
    });
}
