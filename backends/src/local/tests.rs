//! The local store on a temporary directory: signing, receiving, verifying.

use super::*;
use bytes::Bytes;
use chrono::Duration;
use futures_util::Stream;
use std::path::Path;

fn backend(dir: &Path) -> LocalBackend {
    LocalBackend::new(
        "local",
        dir,
        vec![7u8; 32],
        Url::parse("http://127.0.0.1:8080").unwrap(),
    )
    .unwrap()
}

fn spec(body: &[u8], expires_in: i64) -> UploadSpec {
    UploadSpec {
        key: ObjectKey::parse("t/d/f").unwrap(),
        size: body.len() as u64,
        sha256: Sha256::digest(body),
        content_type: "application/octet-stream".into(),
        expires_at: Utc::now() + Duration::seconds(expires_in),
    }
}

fn query_of(signed: &SignedRequest) -> String {
    Url::parse(&signed.url).unwrap().query().unwrap().to_owned()
}

fn chunks(body: &[u8]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    futures_util::stream::iter(
        body.chunks(3)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    )
}

#[tokio::test]
async fn a_signed_upload_is_stored_with_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = backend(dir.path());
    let body = b"hello, valet";
    let signed = store.sign_upload(&spec(body, 60)).unwrap();
    assert_eq!(signed.headers["content-length"], body.len().to_string());
    assert!(signed
        .url
        .starts_with("http://127.0.0.1:8080/v1/objects/local/t/d/f?"));
    let grant = store
        .verify_upload("t/d/f", &query_of(&signed), Utc::now())
        .unwrap();
    store.receive(&grant, None, chunks(body)).await.unwrap();
    let key = ObjectKey::parse("t/d/f").unwrap();
    let stat = store.stat(&key).await.unwrap().unwrap();
    assert_eq!(stat.size, body.len() as u64);
    assert_eq!(stat.sha256, Some(Sha256::digest(body)));
    assert_eq!(store.sha256(&key).await.unwrap(), Sha256::digest(body));
    store.delete(&key).await.unwrap();
    assert!(store.stat(&key).await.unwrap().is_none());
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn an_opened_object_carries_its_recorded_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = backend(dir.path());
    let body = b"resumable bytes";
    let upload = store.sign_upload(&spec(body, 60)).unwrap();
    let grant = store
        .verify_upload("t/d/f", &query_of(&upload), Utc::now())
        .unwrap();
    store.receive(&grant, None, chunks(body)).await.unwrap();
    let download = store
        .sign_download(&DownloadSpec {
            key: ObjectKey::parse("t/d/f").unwrap(),
            file_name: "f.bin".into(),
            content_type: "application/x-test".into(),
            expires_at: Utc::now() + Duration::seconds(60),
        })
        .unwrap();
    let grant = store
        .verify_download("t/d/f", &query_of(&download), Utc::now())
        .unwrap();
    let object = store.open(&grant).await.unwrap();
    assert_eq!(object.size, body.len() as u64);
    assert_eq!(object.sha256, Some(Sha256::digest(body)));
    assert!(object.modified.is_some());

    // An object placed without its digest still opens, with none.
    std::fs::remove_file(dir.path().join("t/d/f.sha256")).unwrap();
    assert_eq!(store.open(&grant).await.unwrap().sha256, None);
    store
        .delete(&ObjectKey::parse("t/d/f").unwrap())
        .await
        .unwrap();
    assert!(matches!(
        store.open(&grant).await,
        Err(DataPlaneError::NotFound)
    ));
}

#[tokio::test]
async fn mismatched_bodies_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = backend(dir.path());
    let body = b"0123456789";
    let signed = store.sign_upload(&spec(body, 60)).unwrap();
    let grant = store
        .verify_upload("t/d/f", &query_of(&signed), Utc::now())
        .unwrap();
    for bad in [&b"012345678"[..], b"0123456789X", b"0123456788"] {
        let result = store.receive(&grant, None, chunks(bad)).await;
        assert!(result.is_err(), "{bad:?} accepted");
    }
    assert!(matches!(
        store.receive(&grant, Some(11), chunks(body)).await,
        Err(DataPlaneError::SizeMismatch { .. })
    ));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join(INCOMING_DIR))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty());
    assert!(store
        .stat(&ObjectKey::parse("t/d/f").unwrap())
        .await
        .unwrap()
        .is_none());
}

#[test]
fn expired_and_tampered_signatures_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = backend(dir.path());
    let signed = store.sign_upload(&spec(b"abc", 60)).unwrap();
    let query = query_of(&signed);
    let later = Utc::now() + Duration::seconds(120);
    assert!(matches!(
        store.verify_upload("t/d/f", &query, later),
        Err(DataPlaneError::Expired)
    ));
    assert!(matches!(
        store.verify_upload("t/d/g", &query, Utc::now()),
        Err(DataPlaneError::BadSignature)
    ));
    assert!(matches!(
        store.verify_upload("t/../f", &query, Utc::now()),
        Err(DataPlaneError::BadSignature)
    ));
    let tampered = query.replace("size=3", "size=4");
    assert!(matches!(
        store.verify_upload("t/d/f", &tampered, Utc::now()),
        Err(DataPlaneError::BadSignature)
    ));
    // A download signature does not authorize an upload.
    let download = store
        .sign_download(&DownloadSpec {
            key: ObjectKey::parse("t/d/f").unwrap(),
            file_name: "a".into(),
            content_type: "text/plain".into(),
            expires_at: Utc::now() + Duration::seconds(60),
        })
        .unwrap();
    assert!(store
        .verify_upload("t/d/f", &query_of(&download), Utc::now())
        .is_err());
    assert!(store
        .verify_download("t/d/f", &query_of(&download), Utc::now())
        .is_ok());
}

#[test]
fn short_secrets_are_refused() {
    let result = LocalBackend::new("l", "/tmp", vec![1; 16], Url::parse("http://x").unwrap());
    assert!(result.is_err());
}
