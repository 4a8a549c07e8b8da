//! Sending the parts of an upload in parts: each part is hashed, its URL asked
//! for in batches just ahead of need (so none expires during a long upload), and
//! its bytes streamed from the input, `parallel` parts at a time.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use futures_util::{stream, StreamExt, TryStreamExt};
use serde_json::{json, Value};

use super::part_body::{hash_range, part_stream};
use super::progress::PartsProgress;
use super::{failure, ApiClient};

/// Most part URLs one request may ask for.
const MAX_PARTS_PER_REQUEST: usize = 100;
/// A URL expiring sooner than this is signed again before use.
const EXPIRY_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// Attempts at sending one part (a failed attempt is retried with a fresh URL).
const ATTEMPTS: u32 = 3;

/// How a file is cut into parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    /// The file's length.
    pub size: u64,
    /// Length of every part but the last.
    pub part_size: u64,
    /// Number of parts.
    pub part_count: u64,
}

impl Plan {
    /// The plan of a file of `size` bytes in parts of `part_size`; `None` when the
    /// server's numbers do not describe such a file.
    pub(super) fn new(size: u64, part_size: u64, part_count: u64) -> Option<Self> {
        (part_size > 0 && size.div_ceil(part_size) == part_count).then_some(Self {
            size,
            part_size,
            part_count,
        })
    }

    /// Where part `number` (from 1) starts.
    pub(super) fn offset(&self, number: u64) -> u64 {
        (number - 1) * self.part_size
    }

    /// Length of part `number`.
    pub(super) fn len(&self, number: u64) -> u64 {
        self.part_size
            .min(self.size.saturating_sub(self.offset(number)))
    }
}

/// A part with its hash and signed request.
struct Job {
    number: u64,
    sha256: [u8; 32],
    signed: Value,
}

/// Where a part was sent, or why not.
enum PutError {
    /// Worth another attempt with a fresh URL (network, storage busy, URL expired).
    Transient(anyhow::Error),
    /// Not worth another attempt.
    Fatal(anyhow::Error),
}

impl ApiClient {
    /// Sends parts `numbers` of file `id` from `path`: hashed, signed in batches
    /// and sent `parallel` at a time; `progress` counts each part sent.
    pub(super) async fn send_parts(
        &self,
        id: &str,
        path: &Path,
        plan: Plan,
        numbers: &[u64],
        parallel: usize,
        progress: &mut PartsProgress,
    ) -> anyhow::Result<()> {
        let parallel = parallel.max(1);
        let batch = (parallel * 2).min(MAX_PARTS_PER_REQUEST);
        // Bounded: the next batch is signed only once this one is nearly sent.
        let (tx, rx) = tokio::sync::mpsc::channel::<Job>(parallel);
        let producer = async move {
            for chunk in numbers.chunks(batch) {
                let hashed: Vec<(u64, [u8; 32])> = stream::iter(chunk.iter().copied())
                    .map(|n| async move {
                        let sha = hash_range(path, plan.offset(n), plan.len(n)).await?;
                        anyhow::Ok((n, sha))
                    })
                    .buffered(parallel)
                    .try_collect()
                    .await?;
                for job in self.sign_parts(id, &hashed).await? {
                    if tx.send(job).await.is_err() {
                        return Ok(());
                    }
                }
            }
            anyhow::Ok(())
        };
        let consumer = async {
            let jobs = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|j| (j, rx)) });
            let mut sent = std::pin::pin!(jobs
                .map(|job| self.put_part(id, path, plan, job))
                .buffer_unordered(parallel));
            while let Some(result) = sent.next().await {
                let number = result?;
                if self.verbose {
                    eprintln!("sent part {number} ({} bytes)", plan.len(number));
                }
                progress.sent(plan.len(number));
            }
            anyhow::Ok(())
        };
        tokio::try_join!(producer, consumer)?;
        Ok(())
    }

    /// Signs URLs for `parts` (number and SHA-256), in the order given.
    async fn sign_parts(&self, id: &str, parts: &[(u64, [u8; 32])]) -> anyhow::Result<Vec<Job>> {
        let mut jobs = Vec::with_capacity(parts.len());
        for chunk in parts.chunks(MAX_PARTS_PER_REQUEST) {
            let asked: Vec<Value> = chunk
                .iter()
                .map(|(n, sha)| json!({"number": n, "sha256": hex::encode(sha)}))
                .collect();
            let answer = self
                .api(
                    self.http
                        .post(self.url(&format!("/v1/files/{id}/parts"))?)
                        .json(&json!({ "parts": asked })),
                    "sign parts",
                )
                .await?;
            let signed = answer["parts"]
                .as_array()
                .context("no parts in the answer")?;
            for (number, sha256) in chunk {
                let signed = signed
                    .iter()
                    .find(|p| p["number"].as_u64() == Some(*number))
                    .with_context(|| format!("part {number} was not signed"))?;
                jobs.push(Job {
                    number: *number,
                    sha256: *sha256,
                    signed: signed.clone(),
                });
            }
        }
        Ok(jobs)
    }

    /// Sends one part, retrying a transient failure with a fresh URL; returns its
    /// number.
    async fn put_part(&self, id: &str, path: &Path, plan: Plan, job: Job) -> anyhow::Result<u64> {
        let Job {
            number,
            sha256,
            mut signed,
        } = job;
        let mut attempt = 1;
        loop {
            if expires_soon(&signed) {
                signed = self.resign(id, number, sha256).await?;
            }
            match self.put_once(path, plan, number, sha256, &signed).await {
                Ok(()) => return Ok(number),
                Err(PutError::Transient(e)) if attempt < ATTEMPTS => {
                    eprintln!("part {number}: {e:#}; retrying");
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                    signed = self.resign(id, number, sha256).await?;
                    attempt += 1;
                }
                Err(PutError::Transient(e) | PutError::Fatal(e)) => {
                    return Err(e.context(format!("part {number} could not be sent")))
                }
            }
        }
    }

    async fn resign(&self, id: &str, number: u64, sha256: [u8; 32]) -> anyhow::Result<Value> {
        let mut jobs = self.sign_parts(id, &[(number, sha256)]).await?;
        let job = jobs.pop().context("no part in the answer")?;
        Ok(job.signed)
    }

    async fn put_once(
        &self,
        path: &Path,
        plan: Plan,
        number: u64,
        sha256: [u8; 32],
        signed: &Value,
    ) -> Result<(), PutError> {
        let len = plan.len(number);
        let body = part_stream(path, plan.offset(number), len, sha256)
            .await
            .map_err(PutError::Fatal)?;
        let mut request = self.signed(signed).map_err(PutError::Fatal)?;
        let has_length = signed["headers"]
            .as_object()
            .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("content-length")));
        if !has_length {
            request = request.header(reqwest::header::CONTENT_LENGTH, len);
        }
        let response = request
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .map_err(|e| {
                PutError::Transient(anyhow::Error::new(e).context("cannot reach storage"))
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let error = failure("upload of a part", response).await;
        let transient = status.is_server_error()
            || status == reqwest::StatusCode::FORBIDDEN
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        Err(if transient {
            PutError::Transient(error)
        } else {
            PutError::Fatal(error)
        })
    }
}

/// Whether a signed request expires within [`EXPIRY_MARGIN`].
fn expires_soon(signed: &Value) -> bool {
    signed["expires_at"]
        .as_str()
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .is_some_and(|at| at.to_utc() - chrono::Utc::now() < EXPIRY_MARGIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_file() {
        let plan = Plan::new(12, 5, 3).expect("plan");
        assert_eq!((1..=3).map(|n| plan.len(n)).collect::<Vec<_>>(), [5, 5, 2]);
        assert_eq!(plan.offset(3), 10);
        assert_eq!(Plan::new(12, 5, 2), None);
        assert_eq!(Plan::new(12, 0, 0), None);
    }

    #[test]
    fn urls_about_to_expire_are_signed_again() {
        let soon = chrono::Utc::now() + chrono::TimeDelta::seconds(5);
        let later = chrono::Utc::now() + chrono::TimeDelta::seconds(600);
        assert!(expires_soon(&json!({ "expires_at": soon.to_rfc3339() })));
        assert!(!expires_soon(&json!({ "expires_at": later.to_rfc3339() })));
        assert!(!expires_soon(&json!({})));
    }
}
