//! The local store on a temporary directory: signing, receiving, verifying, streaming.

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

fn write_spec(body: &[u8]) -> WriteSpec {
    WriteSpec {
        size: body.len() as u64,
        sha256: Sha256::digest(body),
        content_type: "application/octet-stream".into(),
        chunk_size: 1024 * 1024,
    }
}

/// Bytes that differ from position to position, so a reordered chunk is noticed.
fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Writes `body` in chunks of uneven sizes (1 byte up to a little over 1 MiB).
async fn write_unevenly(writer: &mut Box<dyn ObjectWriter>, body: &[u8]) {
    let sizes = [1, 4096, 1024 * 1024 + 7, 333_333, 65_536];
    let mut rest = body;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).min(rest.len()));
        writer.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        rest = tail;
    }
}

async fn read_all(store: &LocalBackend, key: &ObjectKey) -> Vec<u8> {
    use futures_util::TryStreamExt;
    let chunks: Vec<Bytes> = store.read(key).await.unwrap().try_collect().await.unwrap();
    chunks.concat()
}

fn incoming_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir.join(INCOMING_DIR))
        .unwrap()
        .next()
        .is_none()
}

#[tokio::test]
async fn a_streamed_write_reads_back_and_reports_its_size_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = backend(dir.path());
    let key = ObjectKey::parse("t/copy/f").unwrap();
    let body = patterned(3 * 1024 * 1024 + 12_345);
    let mut writer = store.write(&key, &write_spec(&body)).await.unwrap();
    write_unevenly(&mut writer, &body).await;
    // Nothing is visible before the write is finished.
    assert!(store.stat(&key).await.unwrap().is_none());
    writer.finish().await.unwrap();

    assert_eq!(read_all(&store, &key).await, body);
    let stat = store.stat(&key).await.unwrap().unwrap();
    assert_eq!(stat.size, body.len() as u64);
    assert_eq!(stat.sha256, Some(Sha256::digest(&body)));
    assert!(incoming_is_empty(dir.path()));
}

#[tokio::test]
async fn a_write_of_other_bytes_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = backend(dir.path());
    let key = ObjectKey::parse("t/copy/f").unwrap();
    let body = patterned(100_000);
    let mut corrupted = body.clone();
    corrupted[50_000] ^= 1;
    let short = &body[..99_999];
    for wrong in [&corrupted[..], short] {
        let mut writer = store.write(&key, &write_spec(&body)).await.unwrap();
        write_unevenly(&mut writer, wrong).await;
        assert!(matches!(
            writer.finish().await,
            Err(BackendError::Refused(_))
        ));
        assert!(store.stat(&key).await.unwrap().is_none());
        assert!(incoming_is_empty(dir.path()));
    }

    // A write past the declared size is refused at once.
    let mut writer = store.write(&key, &write_spec(&body)).await.unwrap();
    write_unevenly(&mut writer, &body).await;
    assert!(matches!(
        writer.write(Bytes::from_static(b"x")).await,
        Err(BackendError::Refused(_))
    ));
    writer.abort().await.unwrap();
    assert!(store.stat(&key).await.unwrap().is_none());
    assert!(incoming_is_empty(dir.path()));
}

#[tokio::test]
async fn an_aborted_or_dropped_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = backend(dir.path());
    let key = ObjectKey::parse("t/copy/f").unwrap();
    let body = patterned(10_000);
    let mut writer = store.write(&key, &write_spec(&body)).await.unwrap();
    write_unevenly(&mut writer, &body).await;
    writer.abort().await.unwrap();
    assert!(store.stat(&key).await.unwrap().is_none());
    assert!(incoming_is_empty(dir.path()));

    let mut writer = store.write(&key, &write_spec(&body)).await.unwrap();
    write_unevenly(&mut writer, &body).await;
    drop(writer);
    // The temporary file is removed on the blocking pool: wait for it.
    for _ in 0..100 {
        if incoming_is_empty(dir.path()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(incoming_is_empty(dir.path()));
    assert!(store.stat(&key).await.unwrap().is_none());
}

#[tokio::test]
async fn a_streamed_write_replaces_an_existing_object() {
    let dir = tempfile::tempdir().unwrap();
    let store = backend(dir.path());
    let key = ObjectKey::parse("t/copy/f").unwrap();
    for body in [patterned(5000), b"shorter and different".to_vec()] {
        let mut writer = store.write(&key, &write_spec(&body)).await.unwrap();
        write_unevenly(&mut writer, &body).await;
        writer.finish().await.unwrap();
        assert_eq!(read_all(&store, &key).await, body);
        let stat = store.stat(&key).await.unwrap().unwrap();
        assert_eq!(stat.size, body.len() as u64);
        assert_eq!(stat.sha256, Some(Sha256::digest(&body)));
    }
}

#[tokio::test]
async fn reading_a_missing_object_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = backend(dir.path());
    let missing = ObjectKey::parse("t/copy/missing").unwrap();
    assert!(matches!(
        store.read(&missing).await,
        Err(BackendError::NotFound(key)) if key == "t/copy/missing"
    ));
    // A key that is only a prefix of stored keys names no object either.
    let body = b"abc";
    let mut writer = store.write(&missing, &write_spec(body)).await.unwrap();
    writer.write(Bytes::from_static(body)).await.unwrap();
    writer.finish().await.unwrap();
    assert!(matches!(
        store.read(&ObjectKey::parse("t/copy").unwrap()).await,
        Err(BackendError::NotFound(_))
    ));
}
