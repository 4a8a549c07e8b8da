//! AWS S3 and every S3-compatible store (MinIO: an `endpoint` and path-style URLs).
//!
//! Signed requests are presigned SigV4 URLs made with rusty-s3, which binds the
//! exact `content-length`, `x-amz-checksum-sha256` and `content-type` of an upload
//! (OpenDAL's presign cannot bind length or checksum), plus `If-None-Match: *` so an
//! object is never overwritten: the store itself refuses any other body. The few
//! operations valet performs itself (stat, read, delete, the start-up probe) go
//! through OpenDAL.

mod multipart;

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use opendal::{ErrorKind, Operator};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::operator::{hash_object, probe_operator, read_object, start_write};
use crate::{
    disposition, BackendError, Capabilities, Container, DownloadSpec, HttpEndpoint,
    MultipartLimits, ObjectKey, ObjectStat, ObjectStream, ObjectWriter, ProbeMode, Secret, Sha256,
    SignedRequest, UploadSpec, WriteSpec,
};

/// `[backends.<name>]` with `kind = "s3"`: AWS S3 or an S3-compatible store
/// (MinIO: `endpoint` and `path_style = true`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Bucket holding the objects.
    pub bucket: String,
    /// Region the bucket is in (the signing scope; MinIO accepts any).
    #[serde(default = "default_region")]
    pub region: String,
    /// Where valet reaches the store (default `https://s3.<region>.amazonaws.com`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub endpoint: Option<HttpEndpoint>,
    /// Where devices reach the store, when not at `endpoint`; signed URLs use it.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub public_endpoint: Option<HttpEndpoint>,
    /// Path-style URLs (`endpoint/bucket/key`) instead of virtual-host style.
    #[serde(default)]
    pub path_style: bool,
    /// Access key id; absent: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key.
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// Session token of temporary credentials.
    #[serde(default)]
    pub session_token: Option<Secret>,
    /// Use the SHA-256 S3 stored with the object (bound at upload) instead of reading it.
    #[serde(default = "yes")]
    pub trust_storage_checksum: bool,
    /// Bind the declared SHA-256 into signed uploads (`x-amz-checksum-sha256`); turn
    /// off for stores that refuse the header (then completion reads the object).
    #[serde(default = "yes")]
    pub bind_checksum: bool,
    /// Start-up probe: `write` (write, stat, delete an object) or `read-only` (list).
    #[serde(default)]
    pub probe: ProbeMode,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn yes() -> bool {
    true
}

impl S3Config {
    /// Checks the settings can work, before anything connects.
    pub fn validate(&self) -> Result<(), BackendError> {
        if self.bucket.is_empty() {
            return Err(BackendError::Config("bucket must not be empty".into()));
        }
        if self.trust_storage_checksum && !self.bind_checksum {
            return Err(BackendError::Config(
                "trust_storage_checksum needs bind_checksum: without the bound header the \
                 store never checked the SHA-256 it would report"
                    .into(),
            ));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(BackendError::Config(
                "access_key_id and secret_access_key go together".into(),
            ));
        }
        Ok(())
    }
}

/// S3's bounds on multipart uploads (every part but the last at least 5 MiB).
pub const MULTIPART_LIMITS: MultipartLimits = MultipartLimits {
    min_part_size: 5 * 1024 * 1024,
    max_part_size: 5 * 1024 * 1024 * 1024,
    max_parts: 10_000,
};

/// An S3 bucket.
pub struct S3Backend {
    signer_bucket: Bucket,
    internal_bucket: Bucket,
    credentials: Credentials,
    operator: Operator,
    http: reqwest::Client,
    config: S3Config,
}

impl S3Backend {
    /// Builds the backend; fails when the configuration cannot work.
    pub fn new(config: S3Config) -> Result<Self, BackendError> {
        crate::install_crypto_provider();
        config.validate()?;
        let credentials = match (&config.access_key_id, &config.secret_access_key) {
            (Some(key), Some(secret)) => match &config.session_token {
                Some(token) => Credentials::new_with_token(key, secret.expose(), token.expose()),
                None => Credentials::new(key, secret.expose()),
            },
            (None, None) => Credentials::from_env().ok_or_else(|| {
                BackendError::Config(
                    "no credentials: set access_key_id and secret_access_key, or \
                     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                        .into(),
                )
            })?,
            _ => {
                return Err(BackendError::Config(
                    "access_key_id and secret_access_key go together".into(),
                ))
            }
        };
        let endpoint = config.endpoint.as_ref().map_or_else(
            || format!("https://s3.{}.amazonaws.com", config.region),
            HttpEndpoint::to_string,
        );
        let public = config
            .public_endpoint
            .as_ref()
            .map_or_else(|| endpoint.clone(), HttpEndpoint::to_string);
        let style = if config.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket_at = |url: &str, what: &str| -> Result<Bucket, BackendError> {
            let url = url::Url::parse(url)
                .map_err(|e| BackendError::Config(format!("{what} {url:?}: {e}")))?;
            Bucket::new(url, style, config.bucket.clone(), config.region.clone())
                .map_err(|e| BackendError::Config(format!("{what}: {e}")))
        };
        let signer_bucket = bucket_at(&public, "public_endpoint")?;
        let internal_bucket = bucket_at(&endpoint, "endpoint")?;
        let mut builder = opendal::services::S3::default()
            .bucket(&config.bucket)
            .region(&config.region)
            .endpoint(&endpoint)
            .access_key_id(credentials.key())
            .secret_access_key(credentials.secret());
        if let Some(token) = credentials.token() {
            builder = builder.session_token(token);
        }
        if !config.path_style {
            builder = builder.enable_virtual_host_style();
        }
        let operator = Operator::new(builder)
            .map_err(|e| BackendError::Config(e.to_string()))?
            .finish();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| BackendError::Config(e.to_string()))?;
        Ok(Self {
            signer_bucket,
            internal_bucket,
            credentials,
            operator,
            http,
            config,
        })
    }

    /// The SHA-256 S3 stored with the object (uploads bind it), asked for with a
    /// signed HEAD in checksum mode; `None` if the store does not report one.
    async fn reported_sha256(&self, key: &ObjectKey) -> Result<Option<Sha256>, BackendError> {
        let mut head = self
            .internal_bucket
            .head_object(Some(&self.credentials), key.as_str());
        head.headers_mut().insert("x-amz-checksum-mode", "ENABLED");
        let url = head.sign(Duration::from_secs(60));
        let response = self
            .http
            .head(url)
            .header("x-amz-checksum-mode", "ENABLED")
            .send()
            .await
            .map_err(|e| BackendError::Unavailable(format!("HEAD {}: {e}", key)))?;
        if !response.status().is_success() {
            return Ok(None);
        }
        // A multipart object's checksum is composite (a hash of the parts' hashes,
        // "…-N"), not the SHA-256 of its bytes: then valet must read the object.
        let composite = response
            .headers()
            .get("x-amz-checksum-type")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"COMPOSITE"));
        let Some(value) = response
            .headers()
            .get("x-amz-checksum-sha256")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !composite && !v.contains('-'))
        else {
            return Ok(None);
        };
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        Ok(bytes.map(Sha256::from_bytes))
    }
}

/// Presigns a PUT binding `headers`, which the holder must send verbatim.
fn presigned_put<'a>(
    mut action: impl S3Action<'a>,
    headers: &[(&'a str, &'a str)],
    expires_at: chrono::DateTime<Utc>,
) -> Result<SignedRequest, BackendError> {
    for (name, value) in headers {
        action.headers_mut().insert(*name, *value);
    }
    let (url, expires_at) = presign(&action, expires_at)?;
    Ok(SignedRequest {
        method: "PUT".into(),
        url: url.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        expires_at,
    })
}

/// Presigns `action` to stop working at `expires_at` or at most a second before,
/// and returns the exact moment: SigV4 counts whole seconds (`X-Amz-Expires`) from
/// the signing time (`X-Amz-Date`, whole seconds), so both are fixed here rather
/// than left to the clock at signing.
fn presign<'a>(
    action: &impl S3Action<'a>,
    expires_at: chrono::DateTime<Utc>,
) -> Result<(url::Url, chrono::DateTime<Utc>), BackendError> {
    let signed_at = Utc::now().timestamp();
    let seconds = (expires_at.timestamp() - signed_at).max(1);
    let time = jiff::Timestamp::from_second(signed_at)
        .map_err(|e| BackendError::Config(format!("signing time: {e}")))?;
    let url = action.sign_with_time(Duration::from_secs(seconds as u64), &time);
    let until = chrono::DateTime::from_timestamp(signed_at + seconds, 0).unwrap_or(expires_at);
    Ok((url, until))
}

fn unavailable(what: &str, e: opendal::Error) -> BackendError {
    BackendError::Unavailable(format!("{what}: {e}"))
}

#[async_trait]
impl crate::Backend for S3Backend {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            binds_size: true,
            binds_sha256: self.config.bind_checksum,
            reports_sha256: self.config.trust_storage_checksum,
            serves_data_plane: false,
            multipart: Some(MULTIPART_LIMITS),
        }
    }

    fn container(&self) -> Option<Container<'_>> {
        Some(Container {
            field: "bucket",
            name: &self.config.bucket,
        })
    }

    fn sign_upload(&self, spec: &UploadSpec) -> Result<SignedRequest, BackendError> {
        let put = self
            .signer_bucket
            .put_object(Some(&self.credentials), spec.key.as_str());
        let length = spec.size.to_string();
        let checksum = spec.sha256.to_base64();
        let mut headers = vec![
            ("content-length", length.as_str()),
            ("content-type", spec.content_type.as_str()),
            ("if-none-match", "*"),
        ];
        if self.config.bind_checksum {
            headers.push(("x-amz-checksum-sha256", checksum.as_str()));
        }
        presigned_put(put, &headers, spec.expires_at)
    }

    fn sign_download(&self, spec: &DownloadSpec) -> Result<SignedRequest, BackendError> {
        let mut get = self
            .signer_bucket
            .get_object(Some(&self.credentials), spec.key.as_str());
        let disposition = disposition::attachment(&spec.file_name);
        get.query_mut()
            .insert("response-content-disposition", disposition);
        get.query_mut()
            .insert("response-content-type", spec.content_type.clone());
        let (url, expires_at) = presign(&get, spec.expires_at)?;
        Ok(SignedRequest {
            method: "GET".into(),
            url: url.to_string(),
            headers: Default::default(),
            expires_at,
        })
    }

    async fn stat(&self, key: &ObjectKey) -> Result<Option<ObjectStat>, BackendError> {
        let metadata = match self.operator.stat(key.as_str()).await {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unavailable("stat", e)),
        };
        let sha256 = if self.config.trust_storage_checksum {
            self.reported_sha256(key).await?
        } else {
            None
        };
        Ok(Some(ObjectStat {
            size: metadata.content_length(),
            sha256,
        }))
    }

    async fn sha256(&self, key: &ObjectKey) -> Result<Sha256, BackendError> {
        hash_object(&self.operator, key).await
    }

    async fn read(&self, key: &ObjectKey) -> Result<ObjectStream, BackendError> {
        read_object(&self.operator, key).await
    }

    async fn write(
        &self,
        key: &ObjectKey,
        spec: &WriteSpec,
    ) -> Result<Box<dyn ObjectWriter>, BackendError> {
        start_write(&self.operator, key, spec).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        self.operator
            .delete(key.as_str())
            .await
            .map_err(|e| unavailable("delete", e))
    }

    async fn probe(&self) -> Result<(), BackendError> {
        probe_operator(&self.operator, self.config.probe).await
    }
}
