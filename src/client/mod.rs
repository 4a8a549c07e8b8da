//! A client of the v1 API, used by `valet upload`, `valet download`, `valet send`,
//! `valet inbox`, `valet receive` (devices) and `valet jobs` (operators).
//!
//! - [`upload`]: hash, create, then one PUT or parts, complete, wait for verification;
//! - [`multipart`]: parts hashed, signed in batches and sent in parallel;
//! - [`resume`]: the state file that lets an interrupted upload continue;
//! - [`download`]: a download into `<output>.part`, resumed with `Range`;
//! - [`progress`]: what the user sees on stderr;
//! - [`transfers`]: sending files to other devices, listing and receiving them;
//! - [`jobs`]: copying and moving files between backends, and following the jobs.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;
use sha2::Digest;
use tokio::io::AsyncReadExt;

mod batch;
mod download;
pub mod jobs;
mod multipart;
mod part_body;
mod progress;
mod resume;
mod transfers;
mod upload;

/// Talks to one valet with one token.
pub struct ApiClient {
    base: url::Url,
    token: String,
    http: reqwest::Client,
    verbose: bool,
}

/// What `valet upload` records besides the bytes, and how it sends them.
#[derive(Debug, Clone)]
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
    /// Ask for an upload in parts of this many bytes.
    pub part_size: Option<u64>,
    /// Parts sent at once (at least 1).
    pub parallel: usize,
    /// Create the file in this open batch.
    pub batch_id: Option<String>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            name: None,
            content_type: None,
            metadata: BTreeMap::new(),
            device_id: None,
            shared: false,
            part_size: None,
            parallel: 4,
            batch_id: None,
        }
    }
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
            verbose: false,
        })
    }

    /// Reports each part sent and each resume decision on stderr.
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    fn url(&self, path: &str) -> anyhow::Result<url::Url> {
        Ok(self.base.join(path)?)
    }

    /// Sends an API request with the token; any answer is returned.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<reqwest::Response> {
        request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("{what}: cannot reach valet"))
    }

    /// Sends an API request with the token; a success answer's JSON body.
    async fn api(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let response = self.send(request, what).await?;
        if !response.status().is_success() {
            return Err(failure(what, response).await);
        }
        response
            .json()
            .await
            .with_context(|| format!("{what}: the answer is not JSON"))
    }

    /// Every item of the listing at `path` (the `field` array of each page),
    /// following `next_cursor` to the last page; `filters` go in every page's query.
    async fn all_pages(
        &self,
        path: &str,
        filters: &[(&str, &str)],
        field: &str,
        what: &str,
    ) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = self.url(path)?;
            {
                let mut query = url.query_pairs_mut();
                query.extend_pairs(filters);
                if let Some(cursor) = &cursor {
                    query.append_pair("cursor", cursor);
                }
            }
            let page = self.api(self.http.get(url), what).await?;
            items.extend(
                page[field]
                    .as_array()
                    .with_context(|| format!("no {field} in the answer"))?
                    .iter()
                    .cloned(),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(items),
            }
        }
    }

    /// `GET /v1/files/{id}`.
    async fn get_file(&self, id: &str) -> anyhow::Result<Value> {
        self.api(
            self.http.get(self.url(&format!("/v1/files/{id}"))?),
            "get file",
        )
        .await
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
}

/// Feeds the first `len` bytes of `path` to `hasher`, advancing `bar`.
async fn hash_prefix(
    path: &Path,
    len: u64,
    hasher: &mut sha2::Sha256,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut file = file.take(len);
    let mut buf = vec![0u8; 1024 * 1024];
    let mut read = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        read += n as u64;
        bar.inc(n as u64);
    }
    if read != len {
        anyhow::bail!(
            "{} is {read} bytes, not {len}: it changed while being read",
            path.display()
        );
    }
    Ok(())
}

/// The SHA-256 (hex) of the `size` bytes of `path`, with a progress bar.
async fn hash_file(path: &Path, size: u64) -> anyhow::Result<String> {
    let bar = progress::bar(size, "hashing");
    let mut hasher = sha2::Sha256::new();
    hash_prefix(path, size, &mut hasher, &bar).await?;
    bar.finish_and_clear();
    Ok(hex::encode(hasher.finalize()))
}
