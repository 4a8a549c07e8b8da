//! `valet upload`: hash the input, create the file, send the bytes as the server
//! says (one PUT, or parts), complete, and wait for verification. An interrupted
//! upload in parts is continued from its state file.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{stream, StreamExt, TryStreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::multipart::Plan;
use super::part_body::hash_range;
use super::progress::{self, mib, PartsProgress};
use super::resume::{self, Input, Mismatch, ResumeState};
use super::{failure, hash_file, ApiClient, UploadOptions};

/// Rounds of "complete, send what is missing" before giving up.
const COMPLETE_ROUNDS: usize = 3;
/// Longest pause between two looks at a verifying file.
const POLL_MAX: Duration = Duration::from_secs(2);

impl ApiClient {
    /// Asks valet to complete file `id` (the answer is the caller's to read).
    async fn complete(&self, id: &str) -> anyhow::Result<reqwest::Response> {
        let url = self.url(&format!("/v1/files/{id}/complete"))?;
        self.send(self.http.post(url), "complete").await
    }

    /// Uploads `path`: continues the interrupted upload in parts its state file
    /// describes when the input is unchanged, else starts a new one. Returns the
    /// uploaded file.
    pub async fn upload(&self, path: &Path, options: UploadOptions) -> anyhow::Result<Value> {
        let input = Input::of(path).await?;
        let state_path = resume::state_path(path)?;
        if let Some(state) = resume::load(&state_path).await {
            match state.check(&self.base, &input) {
                Ok(()) => {
                    if let Some(file) = self
                        .resume(path, &state_path, &state, &input, &options)
                        .await?
                    {
                        return Ok(file);
                    }
                }
                Err(Mismatch::OtherServer) => eprintln!(
                    "{} records an upload to {}; starting a new upload",
                    state_path.display(),
                    state.server
                ),
                Err(Mismatch::InputChanged) => eprintln!(
                    "{} changed since upload {} was interrupted; starting a new upload",
                    path.display(),
                    state.file_id
                ),
            }
        }
        self.upload_new(path, &state_path, &input, options).await
    }

    /// Starts a new upload of `path` (whatever state file it has).
    pub(super) async fn upload_new(
        &self,
        path: &Path,
        state_path: &Path,
        input: &Input,
        options: UploadOptions,
    ) -> anyhow::Result<Value> {
        let sha256 = hash_file(path, input.size).await?;
        if Input::of(path).await? != *input {
            bail!("{} changed while it was being hashed", path.display());
        }
        let name = match options.name {
            Some(name) => name,
            None => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .context("the path has no file name: pass --name")?,
        };
        let mut body = json!({"name": name, "size": input.size, "sha256": sha256});
        if let Some(ct) = options.content_type {
            body["content_type"] = json!(ct);
        }
        if !options.metadata.is_empty() {
            body["metadata"] = json!(options.metadata);
        }
        if let Some(d) = options.device_id {
            body["device_id"] = json!(d);
        }
        if options.shared {
            body["shared"] = json!(true);
        }
        if let Some(part_size) = options.part_size {
            body["part_size"] = json!(part_size);
        }
        if let Some(batch) = &options.batch_id {
            body["batch_id"] = json!(batch);
        }
        let created = self
            .api(
                self.http.post(self.url("/v1/files")?).json(&body),
                "create upload",
            )
            .await?;
        let id = created["file"]["id"]
            .as_str()
            .context("no file id in the answer")?;
        let upload = &created["upload"];
        match upload["mode"].as_str().unwrap_or("single") {
            "single" => self.upload_single(path, input.size, id, upload).await,
            "multipart" => {
                let plan = Plan::new(
                    input.size,
                    upload["part_size"].as_u64().context("no part_size")?,
                    upload["part_count"].as_u64().context("no part_count")?,
                )
                .context("the server's parts do not fit the file")?;
                match ResumeState::new(&self.base, id, input, &sha256, plan.part_size) {
                    Some(state) => resume::save(state_path, &state).await?,
                    None => eprintln!(
                        "{} has no modification time: this upload cannot be resumed",
                        path.display()
                    ),
                }
                eprintln!(
                    "uploading {} in {} part{} of {}",
                    mib(input.size),
                    plan.part_count,
                    if plan.part_count == 1 { "" } else { "s" },
                    mib(plan.part_size)
                );
                let mut progress = PartsProgress::new(plan.part_count, plan.size);
                let numbers: Vec<u64> = (1..=plan.part_count).collect();
                self.send_parts(id, path, plan, &numbers, options.parallel, &mut progress)
                    .await?;
                self.complete_parts(id, path, plan, state_path, options.parallel)
                    .await
            }
            other => bail!("unknown upload mode {other:?}"),
        }
    }

    /// One PUT of the whole file, then completion.
    async fn upload_single(
        &self,
        path: &Path,
        size: u64,
        id: &str,
        upload: &Value,
    ) -> anyhow::Result<Value> {
        let request = self.signed(upload)?;
        let bar = progress::bar(size, "uploading");
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot open {}", path.display()))?;
        let bar_in_stream = bar.clone();
        let stream = tokio_util::io::ReaderStream::new(file).inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                bar_in_stream.inc(chunk.len() as u64);
            }
        });
        let response = request
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .context("upload: cannot reach storage")?;
        bar.finish_and_clear();
        if !response.status().is_success() {
            return Err(failure("upload", response).await);
        }
        let response = self.complete(id).await?;
        match response.status() {
            StatusCode::ACCEPTED => self.wait_verified(id, None).await,
            status if status.is_success() => Ok(response.json().await?),
            _ => Err(failure("complete", response).await),
        }
    }

    /// Continues the upload `state` describes: `Some(file)` once it has ended
    /// uploaded, `None` when it cannot be continued (a new one is then started).
    async fn resume(
        &self,
        path: &Path,
        state_path: &Path,
        state: &ResumeState,
        input: &Input,
        options: &UploadOptions,
    ) -> anyhow::Result<Option<Value>> {
        let id = state.file_id.as_str();
        let response = self
            .send(
                self.http.get(self.url(&format!("/v1/files/{id}/parts"))?),
                "list stored parts",
            )
            .await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                eprintln!("upload {id} is unknown to valet; starting a new upload");
                resume::remove(state_path).await;
                return Ok(None);
            }
            // No longer pending: it was completed, or it ended.
            StatusCode::CONFLICT => {
                let file = self.get_file(id).await?;
                let status = file["status"].as_str().unwrap_or_default();
                if status == "uploaded" || status == "verifying" {
                    eprintln!("upload {id} was already completed");
                    return self.wait_verified(id, Some(state_path)).await.map(Some);
                }
                eprintln!("upload {id} is {status}; starting a new upload");
                resume::remove(state_path).await;
                return Ok(None);
            }
            _ => return Err(failure("list stored parts", response).await),
        }
        let report: Value = response
            .json()
            .await
            .context("list stored parts: the answer is not JSON")?;
        let plan = report["part_size"]
            .as_u64()
            .zip(report["part_count"].as_u64())
            .and_then(|(part_size, count)| Plan::new(input.size, part_size, count))
            .filter(|plan| plan.part_size == state.part_size);
        let Some(plan) = plan else {
            eprintln!("upload {id} is cut differently than recorded; starting a new upload");
            resume::remove(state_path).await;
            return Ok(None);
        };
        let kept = self
            .kept_parts(path, plan, &report, options.parallel)
            .await?;
        let mut progress = PartsProgress::new(plan.part_count, plan.size);
        for &number in &kept {
            progress.held(plan.len(number));
        }
        eprintln!(
            "resuming upload {id}: {} of {} parts already stored",
            kept.len(),
            plan.part_count
        );
        progress.print();
        let missing: Vec<u64> = (1..=plan.part_count)
            .filter(|n| !kept.contains(n))
            .collect();
        self.send_parts(id, path, plan, &missing, options.parallel, &mut progress)
            .await?;
        self.complete_parts(id, path, plan, state_path, options.parallel)
            .await
            .map(Some)
    }

    /// The stored parts that need not be sent again: the length their position
    /// requires, and a declared SHA-256 equal to the input's part now.
    async fn kept_parts(
        &self,
        path: &Path,
        plan: Plan,
        report: &Value,
        parallel: usize,
    ) -> anyhow::Result<BTreeSet<u64>> {
        let candidates: Vec<(u64, String)> = report["parts"]
            .as_array()
            .context("no parts in the answer")?
            .iter()
            .filter_map(|p| {
                let number = p["number"].as_u64()?;
                let sha256 = p["sha256"].as_str()?;
                let fits = (1..=plan.part_count).contains(&number)
                    && p["size"].as_u64() == Some(plan.len(number));
                fits.then(|| (number, sha256.to_ascii_lowercase()))
            })
            .collect();
        let kept: Vec<Option<u64>> = stream::iter(candidates)
            .map(|(number, declared)| async move {
                let local = hash_range(path, plan.offset(number), plan.len(number)).await?;
                anyhow::Ok((hex::encode(local) == declared).then_some(number))
            })
            .buffered(parallel.max(1))
            .try_collect()
            .await?;
        let kept: BTreeSet<u64> = kept.into_iter().flatten().collect();
        if self.verbose {
            eprintln!("stored parts kept: {kept:?}");
        }
        Ok(kept)
    }

    /// Completes an upload in parts, sending any part the store reports missing,
    /// and waits for its verification.
    async fn complete_parts(
        &self,
        id: &str,
        path: &Path,
        plan: Plan,
        state_path: &Path,
        parallel: usize,
    ) -> anyhow::Result<Value> {
        for _ in 0..COMPLETE_ROUNDS {
            let response = self.complete(id).await?;
            let status = response.status();
            if status == StatusCode::OK {
                let file = response
                    .json()
                    .await
                    .context("complete: the answer is not JSON")?;
                resume::remove(state_path).await;
                return Ok(file);
            }
            if status == StatusCode::ACCEPTED {
                return self.wait_verified(id, Some(state_path)).await;
            }
            if status != StatusCode::CONFLICT {
                if status == StatusCode::UNPROCESSABLE_ENTITY {
                    resume::remove(state_path).await;
                }
                return Err(failure("complete", response).await);
            }
            let problem: Value = response.json().await.unwrap_or_default();
            if problem["code"] != "upload_incomplete" {
                resume::remove(state_path).await;
                bail!(
                    "complete failed: 409: {}",
                    problem["detail"].as_str().unwrap_or("conflict")
                );
            }
            let missing: Vec<u64> = problem["missing_parts"]
                .as_array()
                .context("no missing_parts in the answer")?
                .iter()
                .filter_map(Value::as_u64)
                .filter(|n| (1..=plan.part_count).contains(n))
                .collect();
            eprintln!("the store is missing {} parts; sending them", missing.len());
            let mut progress = PartsProgress::new(missing.len() as u64, plan.size);
            self.send_parts(id, path, plan, &missing, parallel, &mut progress)
                .await?;
        }
        bail!("complete failed: parts are still missing after {COMPLETE_ROUNDS} rounds")
    }

    /// Waits until file `id` is no longer `verifying`: the file once uploaded, an
    /// error otherwise. The state file, if any, is removed once the upload ended.
    async fn wait_verified(&self, id: &str, state_path: Option<&Path>) -> anyhow::Result<Value> {
        let mut pause = Duration::from_millis(100);
        let mut announced = false;
        loop {
            let file = self.get_file(id).await?;
            let status = file["status"].as_str().unwrap_or_default();
            match status {
                "verifying" => {
                    if !announced {
                        eprintln!("valet is verifying the upload");
                        announced = true;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(POLL_MAX);
                }
                "pending" => bail!("file {id} is still pending after completion"),
                _ => {
                    if let Some(state_path) = state_path {
                        resume::remove(state_path).await;
                    }
                    if status == "uploaded" {
                        return Ok(file);
                    }
                    if status == "rejected" {
                        bail!("valet rejected the upload: the stored bytes do not match the declared size and SHA-256");
                    }
                    bail!("the upload ended {status}");
                }
            }
        }
    }
}
