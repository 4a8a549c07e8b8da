//! A device-side client of the v1 API, used by `valet upload` and `valet download`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Files smaller than this get no progress bar.
const PROGRESS_THRESHOLD: u64 = 4 * 1024 * 1024;

/// Talks to one valet with one token.
pub struct ApiClient {
    base: url::Url,
    token: String,
    http: reqwest::Client,
}

/// What `valet upload` records besides the bytes.
#[derive(Debug, Default)]
pub struct UploadOptions {
    /// Name (default: the file's name).
    pub name: Option<String>,
    /// Media type.
    pub content_type: Option<String>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Target device (service tokens).
    pub device_id: Option<String>,
    /// Target the shared root (service tokens).
    pub shared: bool,
}

fn progress(len: u64, what: &str) -> ProgressBar {
    if len < PROGRESS_THRESHOLD {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// Reads an error answer into a readable message.
async fn failure(what: &str, response: reqwest::Response) -> anyhow::Error {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| {
            Some(format!(
                "{} ({})",
                v.get("detail")?.as_str()?,
                v.get("code")?.as_str()?
            ))
        })
        .unwrap_or(body);
    anyhow::anyhow!("{what} failed: {status}: {detail}")
}

impl ApiClient {
    /// A client for the API at `base`.
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        let base = url::Url::parse(base).with_context(|| format!("{base:?} is not a URL"))?;
        Ok(Self {
            base,
            token: token.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        })
    }

    fn url(&self, path: &str) -> anyhow::Result<url::Url> {
        Ok(self.base.join(path)?)
    }

    async fn api(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("{what}: cannot reach valet"))?;
        if !response.status().is_success() {
            return Err(failure(what, response).await);
        }
        Ok(response.json().await?)
    }

    /// A request exactly as valet signed it: method, URL and headers.
    fn signed(&self, signed: &Value) -> anyhow::Result<reqwest::RequestBuilder> {
        let method = signed["method"]
            .as_str()
            .context("no method in the answer")?;
        let url = signed["url"].as_str().context("no URL in the answer")?;
        let mut request = self
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes())?, url);
        if let Some(headers) = signed["headers"].as_object() {
            for (name, value) in headers {
                if let Some(value) = value.as_str() {
                    request = request.header(name, value);
                }
            }
        }
        Ok(request)
    }

    /// Hashes `path`, creates the upload, PUTs the bytes and completes it.
    pub async fn upload(&self, path: &Path, options: UploadOptions) -> anyhow::Result<Value> {
        let size = tokio::fs::metadata(path)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        let sha256 = hash_file(path, size).await?;
        let name = match options.name {
            Some(name) => name,
            None => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .context("the path has no file name: pass --name")?,
        };
        let mut body = json!({"name": name, "size": size, "sha256": sha256});
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

        let request = self.signed(upload)?;
        let bar = progress(size, "uploading");
        let file = tokio::fs::File::open(path).await?;
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
        self.api(
            self.http
                .post(self.url(&format!("/v1/files/{id}/complete"))?),
            "complete",
        )
        .await
    }

    /// Downloads file `id` to `output`, checking its length and SHA-256 before the
    /// file appears at `output`.
    pub async fn download(&self, id: &str, output: &Path) -> anyhow::Result<Value> {
        let file = self
            .api(
                self.http.get(self.url(&format!("/v1/files/{id}"))?),
                "get file",
            )
            .await?;
        let expected_size = file["size"].as_u64().context("no size in the answer")?;
        let expected_sha = file["sha256"]
            .as_str()
            .context("no sha256 in the answer")?
            .to_owned();
        let signed = self
            .api(
                self.http
                    .get(self.url(&format!("/v1/files/{id}/download"))?),
                "sign download",
            )
            .await?;
        let request = self.signed(&signed)?;
        let response = request
            .send()
            .await
            .context("download: cannot reach storage")?;
        if !response.status().is_success() {
            return Err(failure("download", response).await);
        }
        // A unique hidden name beside the target, so nothing the user has is touched.
        let file_name = output
            .file_name()
            .context("the output path has no file name")?
            .to_string_lossy()
            .into_owned();
        let part = output.with_file_name(format!(".{file_name}.{}.part", uuid::Uuid::new_v4()));
        let mut out = tokio::fs::File::create(&part)
            .await
            .with_context(|| format!("cannot create {}", part.display()))?;
        let bar = progress(expected_size, "downloading");
        let mut hasher = sha2::Sha256::new();
        let mut received = 0u64;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            received += chunk.len() as u64;
            hasher.update(&chunk);
            out.write_all(&chunk).await?;
            bar.inc(chunk.len() as u64);
        }
        out.flush().await?;
        drop(out);
        bar.finish_and_clear();
        let actual = hex::encode(hasher.finalize());
        if received != expected_size || actual != expected_sha {
            let _ = tokio::fs::remove_file(&part).await;
            bail!(
                "downloaded {received} bytes with sha256 {actual}; expected {expected_size} bytes with {expected_sha}"
            );
        }
        tokio::fs::rename(&part, output).await?;
        Ok(file)
    }
}

async fn hash_file(path: &Path, size: u64) -> anyhow::Result<String> {
    let bar = progress(size, "hashing");
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(hex::encode(hasher.finalize()))
}
