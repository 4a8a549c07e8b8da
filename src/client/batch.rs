//! `valet upload --batch DIR`: every regular file of a directory uploaded into a
//! new batch, which is committed once all are uploaded (so consumers hear of the
//! delivery as one), or abandoned when one fails.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};

use super::resume::{self, SUFFIX};
use super::{ApiClient, UploadOptions};

impl ApiClient {
    /// Uploads the regular files of `dir` (by name order; state files of
    /// interrupted uploads left out) into a new batch and commits it. `options`
    /// name the root; its name and metadata are the batch's. Returns the batch.
    pub async fn upload_batch(&self, dir: &Path, options: UploadOptions) -> anyhow::Result<Value> {
        let files = regular_files(dir).await?;
        let mut body = json!({});
        if let Some(name) = &options.name {
            body["name"] = json!(name);
        }
        if !options.metadata.is_empty() {
            body["metadata"] = json!(options.metadata);
        }
        if let Some(d) = &options.device_id {
            body["device_id"] = json!(d);
        }
        if options.shared {
            body["shared"] = json!(true);
        }
        let batch = self
            .api(
                self.http.post(self.url("/v1/batches")?).json(&body),
                "create batch",
            )
            .await?;
        let id = batch["id"]
            .as_str()
            .context("no batch id in the answer")?
            .to_owned();
        match self.fill_batch(&id, &files, &options).await {
            Ok(()) => {
                self.api(
                    self.http
                        .post(self.url(&format!("/v1/batches/{id}/commit"))?),
                    "commit batch",
                )
                .await
            }
            Err(e) => {
                // Nothing of a failed delivery should linger: its files go with it.
                let abandon = self.url(&format!("/v1/batches/{id}"))?;
                if let Err(cleanup) = self.api(self.http.delete(abandon), "abandon batch").await {
                    eprintln!("batch {id} could not be abandoned (it expires): {cleanup:#}");
                }
                Err(e.context(format!("batch {id} abandoned")))
            }
        }
    }

    async fn fill_batch(
        &self,
        id: &str,
        files: &[PathBuf],
        options: &UploadOptions,
    ) -> anyhow::Result<()> {
        for path in files {
            let input = resume::Input::of(path).await?;
            let state_path = resume::state_path(path)?;
            let file_options = UploadOptions {
                name: None,
                metadata: Default::default(),
                batch_id: Some(id.to_owned()),
                ..options.clone()
            };
            self.upload_new(path, &state_path, &input, file_options)
                .await
                .with_context(|| format!("uploading {}", path.display()))?;
            eprintln!("{} uploaded into batch {id}", path.display());
        }
        Ok(())
    }
}

/// The regular files directly in `dir`, by name.
async fn regular_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .with_context(|| format!("cannot read directory {}", dir.display()))?;
    let mut files = Vec::new();
    while let Some(entry) = entries.next_entry().await? {
        let kind = entry.file_type().await?;
        let path = entry.path();
        let is_state = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(SUFFIX));
        if kind.is_file() && !is_state {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
