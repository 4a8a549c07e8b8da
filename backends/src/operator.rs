//! What the cloud backends do through OpenDAL: read an object to hash it, stream an
//! object out and in, and the start-up probe.

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use opendal::ErrorKind;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::stream::ContentCheck;
use crate::{BackendError, ObjectKey, ObjectStream, ObjectWriter, Sha256, WriteSpec};

/// How a backend is checked at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeMode {
    /// Write, stat and delete a small object.
    #[default]
    Write,
    /// List only (for credentials that may not write outside uploads).
    ReadOnly,
}

/// Reads an object through OpenDAL and hashes it as it streams.
pub(crate) async fn hash_object(
    operator: &opendal::Operator,
    key: &ObjectKey,
) -> Result<Sha256, BackendError> {
    use futures_util::TryStreamExt;
    use sha2::Digest;
    let unavailable = |e: opendal::Error| BackendError::Unavailable(format!("read {key}: {e}"));
    let reader = operator.reader(key.as_str()).await.map_err(unavailable)?;
    let mut stream = reader.into_bytes_stream(..).await.map_err(unavailable)?;
    let mut hasher = sha2::Sha256::new();
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| BackendError::Unavailable(format!("read {key}: {e}")))?
    {
        hasher.update(&chunk);
    }
    Ok(Sha256::from_bytes(hasher.finalize().into()))
}

/// Checks a store works: writes, stats and deletes a small object; with
/// [`ProbeMode::ReadOnly`], only lists the first entry (credentials and reachability).
pub(crate) async fn probe_operator(
    operator: &opendal::Operator,
    mode: ProbeMode,
) -> Result<(), BackendError> {
    let failed = |what: &str, e: opendal::Error| BackendError::Unavailable(format!("{what}: {e}"));
    if mode == ProbeMode::ReadOnly {
        operator
            .list_with("/")
            .limit(1)
            .await
            .map_err(|e| failed("list", e))?;
        return Ok(());
    }
    let key = format!(".valet-probe/{}", uuid::Uuid::new_v4());
    operator
        .write(&key, b"valet probe".to_vec())
        .await
        .map_err(|e| failed("write", e))?;
    let stat = operator.stat(&key).await.map_err(|e| failed("stat", e))?;
    operator
        .delete(&key)
        .await
        .map_err(|e| failed("delete", e))?;
    if stat.content_length() != 11 {
        return Err(BackendError::Unavailable(format!(
            "the probe object reads back as {} bytes, not 11",
            stat.content_length()
        )));
    }
    Ok(())
}

/// Streams an object through OpenDAL; an absent object is [`BackendError::NotFound`].
pub(crate) async fn read_object(
    operator: &opendal::Operator,
    key: &ObjectKey,
) -> Result<ObjectStream, BackendError> {
    let failed = |e: opendal::Error| match e.kind() {
        ErrorKind::NotFound => BackendError::NotFound(key.to_string()),
        _ => BackendError::Unavailable(format!("read {key}: {e}")),
    };
    let reader = operator.reader(key.as_str()).await.map_err(failed)?;
    let mut stream = reader.into_bytes_stream(..).await.map_err(failed)?;
    let owned_key = key.to_string();
    let stream_failed = move |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => BackendError::NotFound(owned_key.clone()),
        _ => BackendError::Unavailable(format!("read {owned_key}: {e}")),
    };
    // The request is sent when the first chunk is polled: take it now, so an absent
    // object is an error of the read itself rather than of its stream.
    let first = stream.try_next().await.map_err(&stream_failed)?;
    let rest = stream.map_err(stream_failed);
    Ok(futures_util::stream::iter(first.map(Ok))
        .chain(rest)
        .boxed())
}

/// Parts a cloud write keeps in flight: two let one part upload while the next fills,
/// so a writer holds about two chunks.
const PARTS_IN_FLIGHT: usize = 2;

/// Starts writing an object through OpenDAL: in parts of `spec.chunk_size` (an S3
/// multipart upload or Azure block list once it exceeds one chunk), committed only by
/// [`ObjectWriter::finish`]. OpenDAL raises a chunk size below the store's smallest
/// part (5 MiB on S3) to that size.
pub(crate) async fn start_write(
    operator: &opendal::Operator,
    key: &ObjectKey,
    spec: &WriteSpec,
) -> Result<Box<dyn ObjectWriter>, BackendError> {
    if spec.chunk_size == 0 {
        return Err(BackendError::Refused(format!(
            "write {key}: the chunk size must be at least one byte"
        )));
    }
    let writer = operator
        .writer_with(key.as_str())
        .chunk(spec.chunk_size)
        .concurrent(PARTS_IN_FLIGHT)
        .content_type(&spec.content_type)
        .await
        .map_err(|e| BackendError::Unavailable(format!("write {key}: {e}")))?;
    Ok(Box::new(OperatorWriter {
        key: key.clone(),
        writer: Some(writer),
        check: ContentCheck::new(spec),
    }))
}

/// A write through OpenDAL; dropping it unfinished aborts the upload in the background.
struct OperatorWriter {
    key: ObjectKey,
    /// `None` once finished or aborted.
    writer: Option<opendal::Writer>,
    check: ContentCheck,
}

impl OperatorWriter {
    fn failed(&self, what: &str) -> impl Fn(opendal::Error) -> BackendError + '_ {
        let key = &self.key;
        let what = what.to_owned();
        move |e| BackendError::Unavailable(format!("{what} {key}: {e}"))
    }

    fn writer(&mut self) -> Result<&mut opendal::Writer, BackendError> {
        self.writer
            .as_mut()
            .ok_or_else(|| BackendError::Unavailable(format!("write {}: writer closed", self.key)))
    }
}

#[async_trait]
impl ObjectWriter for OperatorWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BackendError> {
        self.check.update(&chunk).await?;
        let key = self.key.clone();
        self.writer()?
            .write(chunk)
            .await
            .map_err(|e| BackendError::Unavailable(format!("write {key}: {e}")))
    }

    async fn finish(mut self: Box<Self>) -> Result<(), BackendError> {
        let mut writer = self.writer.take().ok_or_else(|| {
            BackendError::Unavailable(format!("write {}: writer closed", self.key))
        })?;
        // Checked before `close`, which is what makes the object visible.
        if let Err(refused) = self.check.verify() {
            // Nothing is committed without `close`; a failed abort only leaves parts
            // for the store to expire, so the answer stays the refusal.
            if let Err(e) = writer.abort().await {
                tracing::warn!(key = %self.key, error = %e, "could not abort a refused write");
            }
            return Err(refused);
        }
        if let Err(e) = writer.close().await {
            // A failed commit leaves the upload open: abort it so its parts go too.
            if let Err(abort) = writer.abort().await {
                tracing::warn!(key = %self.key, error = %abort, "could not abort a failed write");
            }
            return Err(self.failed("commit")(e));
        }
        Ok(())
    }

    async fn abort(mut self: Box<Self>) -> Result<(), BackendError> {
        // Only this write's uncommitted data goes: an object already under the key
        // (a replica, a copy another worker committed) is not this writer's to remove.
        if let Some(mut writer) = self.writer.take() {
            writer.abort().await.map_err(self.failed("abort"))?;
        }
        Ok(())
    }
}

impl Drop for OperatorWriter {
    fn drop(&mut self) {
        if let Some(mut writer) = self.writer.take() {
            // An unfinished multipart upload keeps its parts (and their cost) until
            // aborted; abort it when there is a runtime to do so.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let key = self.key.clone();
                handle.spawn(async move {
                    if let Err(e) = writer.abort().await {
                        tracing::warn!(%key, error = %e, "could not abort a dropped write");
                    }
                });
            }
        }
    }
}
