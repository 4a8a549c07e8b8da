//! Streaming reads and writes of the local store. A write goes to a temporary file
//! under the incoming directory, counted and hashed on the way, and is renamed into
//! place only when it matches its spec.

use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

use super::data_plane::PartFile;
use super::{LocalBackend, INCOMING_DIR};
use crate::stream::ContentCheck;
use crate::{BackendError, ObjectKey, ObjectStream, ObjectWriter, Sha256, WriteSpec};

/// Size of the chunks a read yields: large enough for few system calls, small enough
/// to hash inline.
const READ_CHUNK: usize = 1024 * 1024;

impl LocalBackend {
    /// Opens an object as a stream of chunks.
    pub(super) async fn read_object(&self, key: &ObjectKey) -> Result<ObjectStream, BackendError> {
        let not_found = || BackendError::NotFound(key.to_string());
        let file = match tokio::fs::File::open(self.object_path(key)).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        // A key that is a prefix of other keys names a directory, not an object.
        if !file.metadata().await?.is_file() {
            return Err(not_found());
        }
        Ok(
            tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK)
                .map_err(BackendError::Io)
                .boxed(),
        )
    }

    /// Starts a write to a new temporary file.
    pub(super) async fn start_write(
        &self,
        key: &ObjectKey,
        spec: &WriteSpec,
    ) -> Result<Box<dyn ObjectWriter>, BackendError> {
        let incoming = self.root.join(INCOMING_DIR);
        tokio::fs::create_dir_all(&incoming).await?;
        let temp = PartFile::new(incoming.join(format!("{}.write", uuid::Uuid::new_v4())));
        let file = tokio::fs::File::create(temp.path()).await?;
        Ok(Box::new(LocalWriter {
            temp,
            file,
            check: ContentCheck::new(spec),
            sha256: spec.sha256,
            object_path: self.object_path(key),
            digest_path: self.digest_path(key),
        }))
    }
}

/// A write in progress; dropping it unfinished removes its temporary file.
struct LocalWriter {
    temp: PartFile,
    file: tokio::fs::File,
    check: ContentCheck,
    sha256: Sha256,
    object_path: PathBuf,
    digest_path: PathBuf,
}

impl LocalWriter {
    /// Removes the temporary file now (not later from Drop), so nothing is left by the
    /// time the caller sees the answer.
    async fn discard(temp: PartFile, file: tokio::fs::File) -> Result<(), BackendError> {
        drop(file);
        let removed = tokio::fs::remove_file(temp.path()).await;
        temp.disarm();
        match removed {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl ObjectWriter for LocalWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BackendError> {
        self.check.update(&chunk).await?;
        self.file.write_all(&chunk).await?;
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), BackendError> {
        let Self {
            temp,
            mut file,
            mut check,
            sha256,
            object_path,
            digest_path,
        } = *self;
        if let Err(refused) = check.verify() {
            Self::discard(temp, file).await?;
            return Err(refused);
        }
        // On any error below, dropping `temp` removes the temporary file.
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        if let Some(parent) = object_path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        // As the data plane does: the digest goes first, so an object file never
        // exists without its digest.
        let digest_temp = PartFile::new(temp.path().with_extension("digest"));
        tokio::fs::write(digest_temp.path(), sha256.to_hex()).await?;
        tokio::fs::rename(digest_temp.path(), &digest_path).await?;
        digest_temp.disarm();
        // A rename replaces whatever is under the key: a copy may overwrite an
        // earlier, unfinished copy.
        tokio::fs::rename(temp.path(), &object_path).await?;
        temp.disarm();
        Ok(())
    }

    async fn abort(self: Box<Self>) -> Result<(), BackendError> {
        let Self { temp, file, .. } = *self;
        Self::discard(temp, file).await
    }
}
