//! Uploads in parts on every backend, through valet's storage door against the real
//! stores: parts sent out of order and in parallel to their signed URLs with a real
//! HTTP client, listed for resuming, assembled into exactly the whole file, a part
//! with other bytes refused where the store binds part hashes, and an abort leaving
//! nothing behind.

use chrono::{Duration, Utc};
use futures_util::future::join_all;
use serde_json::Value;
use valet::storage::Storage;
use valet_backends::{ObjectKey, PartSpec, PartToAssemble, Sha256, UploadId};

use crate::helpers::stores::on_every_backend;
use crate::helpers::{body_of, object_key_of, TestApp};

/// S3's smallest part but the last, which every backend accepts.
const PART_SIZE: usize = 5 * 1024 * 1024;

struct Upload<'a> {
    app: &'a TestApp,
    storage: Storage,
    backend: String,
    key: ObjectKey,
    id: UploadId,
}

impl<'a> Upload<'a> {
    async fn start(app: &'a TestApp) -> Upload<'a> {
        let public_url = url::Url::parse(&app.address).expect("address");
        let storage = Storage::from_settings(&app.settings, &public_url).expect("storage");
        let backend = app.settings.default_backend.clone();
        // The key of a pending file: valet's local data plane accepts uploads only
        // for those.
        let token = app.device_token("acme", "dev-1");
        let created = app
            .create_ok(&token, &body_of(1), serde_json::json!({}))
            .await;
        let key = object_key_of(&created["file"]);
        let id = storage
            .start_multipart(&backend, &key, "application/octet-stream")
            .await
            .expect("start");
        Upload {
            app,
            storage,
            backend,
            key,
            id,
        }
    }

    fn signed(&self, number: u32, declared: &[u8]) -> Value {
        self.signed_for(number, declared, Duration::minutes(5))
    }

    fn signed_for(&self, number: u32, declared: &[u8], lifetime: Duration) -> Value {
        let signed = self
            .storage
            .sign_part(
                &self.backend,
                &PartSpec {
                    key: self.key.clone(),
                    upload: self.id.clone(),
                    number,
                    size: declared.len() as u64,
                    sha256: Sha256::digest(declared),
                    expires_at: Utc::now() + lifetime,
                },
            )
            .expect("sign part");
        serde_json::to_value(signed).expect("signed request")
    }

    /// Sends `body` to the URL signed for part `number` declared as `declared`.
    async fn put(&self, number: u32, declared: &[u8], body: &[u8]) -> u16 {
        let signed = self.signed(number, declared);
        self.app
            .send_signed(&signed, body.to_vec())
            .await
            .status()
            .as_u16()
    }

    async fn stored_numbers(&self) -> Vec<(u32, u64)> {
        self.storage
            .list_parts(&self.backend, &self.key, &self.id)
            .await
            .expect("list parts")
            .into_iter()
            .map(|p| (p.number, p.size))
            .collect()
    }
}

async fn parts_are_assembled_into_the_whole_file(app: &TestApp) {
    let whole = body_of(2 * PART_SIZE + 1234);
    let parts: Vec<&[u8]> = whole.chunks(PART_SIZE).collect();
    let upload = Upload::start(app).await;
    assert!(upload.stored_numbers().await.is_empty());
    // Out of order and all at once.
    let sent = join_all([3u32, 1, 2].map(|n| {
        let part = parts[n as usize - 1];
        let upload = &upload;
        async move { upload.put(n, part, part).await }
    }))
    .await;
    assert!(sent.iter().all(|s| (200..300).contains(s)), "{sent:?}");
    let sizes: Vec<(u32, u64)> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u32 + 1, p.len() as u64))
        .collect();
    assert_eq!(upload.stored_numbers().await, sizes);
    let to_assemble: Vec<PartToAssemble> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| PartToAssemble {
            number: i as u32 + 1,
            sha256: Sha256::digest(p),
        })
        .collect();
    upload
        .storage
        .complete_multipart(&upload.backend, &upload.key, &upload.id, &to_assemble)
        .await
        .expect("complete");
    let stat = upload
        .storage
        .stat(&upload.backend, &upload.key)
        .await
        .expect("stat")
        .expect("the object exists");
    assert_eq!(stat.size, whole.len() as u64);
    let digest = upload
        .storage
        .sha256(&upload.backend, &upload.key)
        .await
        .expect("hash");
    assert_eq!(digest, Sha256::digest(&whole));
}

async fn a_part_with_other_bytes_is_refused_where_the_store_binds_hashes(app: &TestApp) {
    let upload = Upload::start(app).await;
    let declared = body_of(PART_SIZE);
    let mut other = declared.clone();
    other[17] ^= 1;
    let binds = upload
        .storage
        .capabilities(&upload.backend)
        .expect("capabilities")
        .binds_sha256;
    let status = upload.put(1, &declared, &other).await;
    if binds {
        assert!((400..500).contains(&status), "other bytes stored: {status}");
        assert!(upload.stored_numbers().await.is_empty());
    } else {
        // Azure cannot refuse them; completion's whole-file check catches them.
        assert!((200..300).contains(&status), "{status}");
    }
}

async fn replayed_and_expired_part_urls_are_refused_where_the_store_binds_them(app: &TestApp) {
    let upload = Upload::start(app).await;
    let part = body_of(PART_SIZE);
    let signed = upload.signed(1, &part);
    let sent = app.send_signed(&signed, part.clone()).await;
    assert!(sent.status().is_success(), "{}", sent.status());
    let mut other = part.clone();
    other[0] ^= 1;
    let replayed = refusal_of(app, &signed, other).await;
    let binds = upload
        .storage
        .capabilities(&upload.backend)
        .expect("capabilities")
        .binds_sha256;
    if binds {
        assert!(
            replayed.is_none_or(|status| (400..500).contains(&status)),
            "a replay with other bytes was stored: {replayed:?}"
        );
    }
    // Every store refuses a part URL past its expiry.
    let short = upload.signed_for(2, &part, Duration::seconds(1));
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let late = refusal_of(app, &short, part.clone()).await;
    assert!(
        late.is_none_or(|status| (400..500).contains(&status)),
        "an expired part URL was accepted: {late:?}"
    );
    assert_eq!(upload.stored_numbers().await, [(1, PART_SIZE as u64)]);
}

/// The status a store answers `signed` with; `None` when it refused by closing the
/// connection before taking the whole body (S3 servers may).
async fn refusal_of(app: &TestApp, signed: &Value, body: Vec<u8>) -> Option<u16> {
    let mut request = app
        .client
        .put(signed["url"].as_str().expect("url"))
        .body(body);
    for (name, value) in signed["headers"].as_object().expect("headers") {
        request = request.header(name, value.as_str().expect("header value"));
    }
    request.send().await.ok().map(|r| r.status().as_u16())
}

async fn an_abort_leaves_nothing_behind(app: &TestApp) {
    let upload = Upload::start(app).await;
    let part = body_of(1024);
    assert!((200..300).contains(&upload.put(1, &part, &part).await));
    upload
        .storage
        .abort_multipart(&upload.backend, &upload.key, &upload.id)
        .await
        .expect("abort");
    let object = upload
        .storage
        .stat(&upload.backend, &upload.key)
        .await
        .expect("stat");
    assert!(object.is_none());
    let kind = upload.storage.kind(&upload.backend).expect("kind");
    if kind != "azblob" {
        // Azure keeps uncommitted blocks until it discards them itself.
        let listed = upload
            .storage
            .list_parts(&upload.backend, &upload.key, &upload.id)
            .await;
        assert!(listed.map_or(true, |parts| parts.is_empty()));
    }
}

on_every_backend!(
    parts_are_assembled_into_the_whole_file,
    a_part_with_other_bytes_is_refused_where_the_store_binds_hashes,
    replayed_and_expired_part_urls_are_refused_where_the_store_binds_them,
    an_abort_leaves_nothing_behind,
);
