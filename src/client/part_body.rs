//! Reading a part of the input: its SHA-256 (before its URL is signed), and its
//! bytes as a streaming request body that never completes unless they hash to
//! what was declared.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

/// Chunk size of reads.
const CHUNK: usize = 256 * 1024;

/// The SHA-256 of `len` bytes of `path` from `offset` (read off the runtime).
pub(super) async fn hash_range(path: &Path, offset: u64, len: u64) -> anyhow::Result<[u8; 32]> {
    let path: PathBuf = path.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<[u8; 32]> {
        let mut file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.seek(SeekFrom::Start(offset))?;
        let mut file = file.take(len);
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut read = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            read += n as u64;
        }
        if read != len {
            anyhow::bail!("{} is shorter than when it was hashed", path.display());
        }
        Ok(hasher.finalize().into())
    })
    .await
    .context("hashing a part stopped")?
}

/// What a part body's stream carries between polls.
struct BodyState {
    reader: ReaderStream<tokio::io::Take<tokio::fs::File>>,
    hasher: sha2::Sha256,
    /// The last chunk read, held back until the next one (or the end) is seen.
    held: Option<Bytes>,
    seen: u64,
    len: u64,
    sha256: [u8; 32],
    done: bool,
}

/// `len` bytes of `path` from `offset` as a stream of chunks. The last chunk is
/// only yielded once every byte has been read and hashed to `sha256`: bytes that
/// changed since they were hashed end the stream with an error instead, so the
/// request is never completed with them.
pub(super) async fn part_stream(
    path: &Path,
    offset: u64,
    len: u64,
    sha256: [u8; 32],
) -> anyhow::Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static> {
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.seek(SeekFrom::Start(offset))
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    let state = BodyState {
        reader: ReaderStream::with_capacity(file.take(len), CHUNK),
        hasher: sha2::Sha256::new(),
        held: None,
        seen: 0,
        len,
        sha256,
        done: false,
    };
    Ok(stream::unfold(state, next_chunk))
}

async fn next_chunk(mut s: BodyState) -> Option<(std::io::Result<Bytes>, BodyState)> {
    if s.done {
        return None;
    }
    loop {
        match s.reader.next().await {
            Some(Ok(chunk)) => {
                s.hasher.update(&chunk);
                s.seen += chunk.len() as u64;
                if let Some(previous) = s.held.replace(chunk) {
                    return Some((Ok(previous), s));
                }
            }
            Some(Err(e)) => {
                s.done = true;
                return Some((Err(e), s));
            }
            None => {
                s.done = true;
                let digest: [u8; 32] = std::mem::take(&mut s.hasher).finalize().into();
                if s.seen != s.len || digest != s.sha256 {
                    let changed = std::io::Error::other(
                        "the input changed since this part was hashed: not sending it",
                    );
                    return Some((Err(changed), s));
                }
                let last = s.held.take()?;
                return Some((Ok(last), s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(
        path: &Path,
        offset: u64,
        len: u64,
        sha256: [u8; 32],
    ) -> std::io::Result<Vec<u8>> {
        let mut body = Box::pin(part_stream(path, offset, len, sha256).await.expect("open"));
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[test]
    fn a_part_is_sent_only_as_it_was_hashed() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let path = dir.path().join("input");
        let bytes: Vec<u8> = (0..(3 * CHUNK as u32 + 17)).map(|i| i as u8).collect();
        std::fs::write(&path, &bytes).expect("write");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (offset, len) = (10u64, 2 * CHUNK as u64 + 5);
            let sha = hash_range(&path, offset, len).await.expect("hash");
            let range = &bytes[offset as usize..(offset + len) as usize];
            assert_eq!(sha, <[u8; 32]>::from(sha2::Sha256::digest(range)));
            assert_eq!(
                collect(&path, offset, len, sha).await.ok(),
                Some(range.to_vec())
            );
            // Different bytes than hashed: an error before the last chunk.
            assert!(collect(&path, offset + 1, len, sha).await.is_err());
            // Shorter than declared.
            let end = bytes.len() as u64 - 4;
            let sha_end = hash_range(&path, end, 4).await.expect("hash");
            assert!(collect(&path, end, 8, sha_end).await.is_err());
            assert!(hash_range(&path, end, 8).await.is_err());
        });
    }
}
