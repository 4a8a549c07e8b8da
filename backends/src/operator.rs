//! What the cloud backends do through OpenDAL: read an object to hash it, and the
//! start-up probe.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{BackendError, ObjectKey, Sha256};

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
