//! Streaming reads and writes of the S3 and Azure backends against the test servers
//! (s3s-fs and Azurite): objects larger than one part go up as a multipart upload
//! or block list and are committed only when their size and SHA-256 match.

use bytes::Bytes;
use futures_util::TryStreamExt;
use valet::configuration::BackendSettings;
use valet_backends::azblob::AzblobBackend;
use valet_backends::s3::S3Backend;
use valet_backends::{Backend, BackendError, ObjectKey, ObjectWriter, Sha256, WriteSpec};

use crate::helpers::body_of;
use crate::helpers::stores::{azure_container, run_in_turn, s3_bucket};

const MIB: usize = 1024 * 1024;
/// The smallest part S3 accepts: an object of several parts needs a multipart upload.
const PART_SIZE: usize = 5 * MIB;

fn backend_of(settings: BackendSettings) -> Box<dyn Backend> {
    match settings {
        BackendSettings::S3(config) => Box::new(S3Backend::new(config).expect("S3 backend")),
        BackendSettings::Azblob(config) => {
            Box::new(AzblobBackend::new(config).expect("Azure backend"))
        }
        BackendSettings::Local(_) => panic!("the local store is tested in valet-backends"),
    }
}

fn spec_for(body: &[u8]) -> WriteSpec {
    WriteSpec {
        size: body.len() as u64,
        sha256: Sha256::digest(body),
        content_type: "application/x-test".into(),
        chunk_size: PART_SIZE,
    }
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::parse(&format!("streaming/{name}")).expect("key")
}

/// Writes `body` in chunks of a size that never lines up with the parts.
async fn write_in_odd_chunks(writer: &mut Box<dyn ObjectWriter>, body: &[u8]) {
    for chunk in body.chunks(MIB + 4321) {
        writer
            .write(Bytes::copy_from_slice(chunk))
            .await
            .expect("write a chunk");
    }
}

async fn round_trip_of_several_parts(store: &dyn Backend) {
    let key = key("large");
    let body = body_of(20 * MIB);
    let mut writer = store.write(&key, &spec_for(&body)).await.expect("writer");
    write_in_odd_chunks(&mut writer, &body).await;
    assert!(
        store.stat(&key).await.expect("stat").is_none(),
        "visible before the write was finished"
    );
    writer.finish().await.expect("finish");

    let stat = store.stat(&key).await.expect("stat").expect("stored");
    assert_eq!(stat.size, body.len() as u64);
    let chunks: Vec<Bytes> = store
        .read(&key)
        .await
        .expect("read")
        .try_collect()
        .await
        .expect("read the stream");
    assert!(chunks.concat() == body, "the object reads back differently");
}

async fn other_bytes_are_refused_and_nothing_is_stored(store: &dyn Backend) {
    let key = key("refused");
    let body = body_of(12 * MIB);
    let mut wrong = body.clone();
    wrong[7 * MIB] ^= 0xff;
    let mut writer = store.write(&key, &spec_for(&body)).await.expect("writer");
    write_in_odd_chunks(&mut writer, &wrong).await;
    match writer.finish().await {
        Err(BackendError::Refused(_)) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(store.stat(&key).await.expect("stat").is_none());
    assert!(matches!(
        store.read(&key).await,
        Err(BackendError::NotFound(_))
    ));
}

async fn an_aborted_write_leaves_nothing(store: &dyn Backend) {
    let key = key("aborted");
    let body = body_of(12 * MIB);
    let mut writer = store.write(&key, &spec_for(&body)).await.expect("writer");
    // More than two parts: some were sent before the abort.
    write_in_odd_chunks(&mut writer, &body[..11 * MIB]).await;
    writer.abort().await.expect("abort");
    assert!(store.stat(&key).await.expect("stat").is_none());
}

async fn reading_a_missing_object_is_not_found(store: &dyn Backend) {
    match store.read(&key("missing")).await {
        Err(BackendError::NotFound(name)) => assert_eq!(name, "streaming/missing"),
        Err(other) => panic!("expected NotFound, got {other:?}"),
        Ok(_) => panic!("expected NotFound, got a stream"),
    }
}

/// One test per behaviour on S3 and one on Azure, each on a fresh bucket or container.
macro_rules! on_cloud_backends {
    ($($behaviour:ident),+ $(,)?) => {
        mod s3 {
            $(
                #[test]
                fn $behaviour() {
                    super::run_in_turn(async {
                        let store = super::backend_of(super::s3_bucket().await.1);
                        super::$behaviour(store.as_ref()).await;
                    });
                }
            )+
        }
        mod azblob {
            $(
                #[test]
                fn $behaviour() {
                    super::run_in_turn(async {
                        let store = super::backend_of(super::azure_container().await.1);
                        super::$behaviour(store.as_ref()).await;
                    });
                }
            )+
        }
    };
}

on_cloud_backends!(
    round_trip_of_several_parts,
    other_bytes_are_refused_and_nothing_is_stored,
    an_aborted_write_leaves_nothing,
    reading_a_missing_object_is_not_found,
);
