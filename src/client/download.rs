//! `valet download`: the bytes go to `<output>.part` while in flight (beside it,
//! `<output>.valet-download` records which file and which ETag they are of), an
//! interrupted download is resumed with `Range`, and the file appears at
//! `<output>` only once its length and SHA-256 match the declaration.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use super::{failure, hash_prefix, progress, ApiClient};

/// Attempts at one download (a resumed attempt that cannot be used starts over).
const ATTEMPTS: usize = 3;

/// What the partial download beside the output is of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartialDownload {
    file_id: String,
    sha256: String,
    size: u64,
    /// The store's validator from the first answer, sent as `If-Range`.
    etag: Option<String>,
}

/// What the file declared: what the download must produce.
struct Expected<'a> {
    id: &'a str,
    size: u64,
    sha256: &'a str,
}

/// How one attempt ended.
enum Attempt {
    /// `<output>.part` holds the file.
    Complete,
    /// The bytes do not match (the message says how).
    Mismatch(String),
    /// The partial bytes cannot be continued: start over.
    Restart(&'static str),
}

/// `output` with `suffix` appended to its file name.
fn beside(output: &Path, suffix: &str) -> anyhow::Result<PathBuf> {
    let mut name = output
        .file_name()
        .map(OsStr::to_os_string)
        .context("the output path has no file name")?;
    name.push(suffix);
    Ok(output.with_file_name(name))
}

impl ApiClient {
    /// Downloads file `id` to `output`, checking its length and SHA-256 before the
    /// file appears at `output`; continues what an interrupted run left.
    pub async fn download(&self, id: &str, output: &Path) -> anyhow::Result<Value> {
        let file = self.get_file(id).await?;
        self.download_signed(&file, id, &format!("/v1/files/{id}/download"), output)
            .await?;
        Ok(file)
    }

    /// Downloads the file `declared` describes (its `size` and `sha256`; `id`
    /// names it in the partial download's record) through the signed request
    /// `sign_path` answers, as [`Self::download`] does.
    pub(super) async fn download_signed(
        &self,
        declared: &Value,
        id: &str,
        sign_path: &str,
        output: &Path,
    ) -> anyhow::Result<()> {
        let size = declared["size"].as_u64().context("no size in the answer")?;
        let sha256 = declared["sha256"]
            .as_str()
            .context("no sha256 in the answer")?
            .to_ascii_lowercase();
        let expected = Expected {
            id,
            size,
            sha256: &sha256,
        };
        let signed = self
            .api(self.http.get(self.url(sign_path)?), "sign download")
            .await?;
        let part = beside(output, ".part")?;
        let record = beside(output, ".valet-download")?;
        let mut resumable = self.resumable(&part, &record, &expected).await;
        for _ in 0..ATTEMPTS {
            let offset = resumable.as_ref().map_or(0, |(len, _)| *len);
            let etag = resumable.and_then(|(_, etag)| etag);
            match self
                .attempt(&signed, &part, &record, &expected, offset, etag)
                .await?
            {
                Attempt::Complete => {
                    tokio::fs::rename(&part, output).await.with_context(|| {
                        format!("cannot rename {} to {}", part.display(), output.display())
                    })?;
                    let _ = tokio::fs::remove_file(&record).await;
                    return Ok(());
                }
                Attempt::Restart(why) => eprintln!("{why}: starting the download over"),
                Attempt::Mismatch(why) if offset > 0 => {
                    eprintln!("{why}: the resumed download does not match; starting over")
                }
                Attempt::Mismatch(why) => {
                    let _ = tokio::fs::remove_file(&part).await;
                    let _ = tokio::fs::remove_file(&record).await;
                    bail!(why);
                }
            }
            resumable = None;
        }
        bail!("the download did not succeed in {ATTEMPTS} attempts")
    }

    /// The length of a partial download of this file left at `part`, and its ETag,
    /// if it can be continued.
    async fn resumable(
        &self,
        part: &Path,
        record: &Path,
        expected: &Expected<'_>,
    ) -> Option<(u64, Option<String>)> {
        let len = tokio::fs::metadata(part).await.ok()?.len();
        let recorded: Option<PartialDownload> = tokio::fs::read(record)
            .await
            .ok()
            .and_then(|text| serde_json::from_slice(&text).ok());
        if let Some(r) = &recorded {
            if r.file_id != expected.id || r.sha256 != expected.sha256 || r.size != expected.size {
                eprintln!("{} is of another file: starting over", part.display());
                return None;
            }
        }
        if len == 0 || len > expected.size {
            return None;
        }
        eprintln!("resuming the download at {len} of {} bytes", expected.size);
        Some((len, recorded.and_then(|r| r.etag)))
    }

    /// One request: the rest of the file from `offset` (all of it from 0),
    /// written to `part` and checked.
    async fn attempt(
        &self,
        signed: &Value,
        part: &Path,
        record: &Path,
        expected: &Expected<'_>,
        offset: u64,
        etag: Option<String>,
    ) -> anyhow::Result<Attempt> {
        let bar = progress::bar(expected.size, "downloading");
        if offset == expected.size {
            let mut hasher = sha2::Sha256::new();
            hash_prefix(part, offset, &mut hasher, &bar).await?;
            bar.finish_and_clear();
            return Ok(check(expected, offset, &hex::encode(hasher.finalize())));
        }
        let mut request = self.signed(signed)?;
        if offset > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
            if let Some(etag) = &etag {
                request = request.header(reqwest::header::IF_RANGE, etag);
            }
        }
        let response = request
            .send()
            .await
            .context("download: cannot reach storage")?;
        let status = response.status();
        let mut hasher = sha2::Sha256::new();
        let mut out = if offset > 0 && status == StatusCode::PARTIAL_CONTENT {
            if content_range_start(&response) != Some((offset, expected.size)) {
                return Ok(Attempt::Restart("storage answered another range"));
            }
            hash_prefix(part, offset, &mut hasher, &bar).await?;
            tokio::fs::OpenOptions::new().append(true).open(part).await
        } else if status == StatusCode::OK {
            if offset > 0 {
                eprintln!("storage sent the whole file: starting over");
            }
            let validator = response
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            self.record(record, expected, validator).await?;
            tokio::fs::File::create(part).await
        } else if status == StatusCode::RANGE_NOT_SATISFIABLE {
            return Ok(Attempt::Restart("storage cannot serve the rest"));
        } else {
            return Err(failure("download", response).await);
        }
        .with_context(|| format!("cannot write {}", part.display()))?;

        let mut received = if status == StatusCode::OK { 0 } else { offset };
        bar.set_position(received);
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    out.flush().await?;
                    return Err(anyhow::Error::new(e).context(format!(
                        "download interrupted after {received} of {} bytes (kept in {}: run the command again to resume)",
                        expected.size,
                        part.display()
                    )));
                }
            };
            received += chunk.len() as u64;
            if received > expected.size {
                break;
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .with_context(|| format!("cannot write {}", part.display()))?;
            bar.inc(chunk.len() as u64);
        }
        out.flush().await?;
        out.sync_all().await?;
        drop(out);
        bar.finish_and_clear();
        Ok(check(expected, received, &hex::encode(hasher.finalize())))
    }

    /// Records which file `<output>.part` is of.
    async fn record(
        &self,
        record: &Path,
        expected: &Expected<'_>,
        etag: Option<String>,
    ) -> anyhow::Result<()> {
        let partial = PartialDownload {
            file_id: expected.id.to_owned(),
            sha256: expected.sha256.to_owned(),
            size: expected.size,
            etag,
        };
        tokio::fs::write(record, serde_json::to_vec(&partial)?)
            .await
            .with_context(|| format!("cannot write {}", record.display()))
    }
}

/// Whether `received` bytes hashing to `actual` are the expected file.
fn check(expected: &Expected<'_>, received: u64, actual: &str) -> Attempt {
    if received == expected.size && actual == expected.sha256 {
        return Attempt::Complete;
    }
    Attempt::Mismatch(format!(
        "downloaded {received} bytes with sha256 {actual}; expected {} bytes with {}",
        expected.size, expected.sha256
    ))
}

/// First byte and complete length of a 206 answer's `Content-Range`.
fn content_range_start(response: &reqwest::Response) -> Option<(u64, u64)> {
    let value = response
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    parse_content_range(value)
}

/// `bytes first-last/complete` → `(first, complete)`.
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let (range, complete) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (first, _) = range.split_once('-')?;
    Some((first.trim().parse().ok()?, complete.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_are_read() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, 200)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn partial_files_sit_beside_the_output() {
        assert_eq!(
            beside(Path::new("out/report.pdf"), ".part").expect("path"),
            Path::new("out/report.pdf.part")
        );
        assert!(beside(Path::new("/"), ".part").is_err());
    }
}
