//! Azure Blob Storage (and Azurite).
//!
//! Signed requests carry a blob-scoped service SAS made here (see [`sas`]): uploads
//! may only create and write that one blob (`cw`), downloads only read it (`r`, with
//! `rscd` so browsers save the file under its name). Azure cannot bind a length or a
//! SHA-256 into a SAS, so completion verifies them: size from a stat and SHA-256 by
//! reading the blob. The operations valet performs itself go through OpenDAL (its
//! own presign cannot set permissions or expiry).

mod blocks;
pub mod sas;

use async_trait::async_trait;
use base64::Engine;
use chrono::{Duration, Utc};
use opendal::{ErrorKind, Operator};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::operator::{hash_object, probe_operator, read_object, start_write};
use crate::{
    disposition, BackendError, Capabilities, Container, DownloadSpec, HttpEndpoint,
    MultipartLimits, ObjectKey, ObjectStat, ObjectStream, ObjectWriter, ProbeMode, Secret, Sha256,
    SignedRequest, UploadSpec, WriteSpec,
};
use sas::{BlobSas, SasKey};

/// `[backends.<name>]` with `kind = "azblob"`: Azure Blob Storage (or Azurite).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AzblobConfig {
    /// Storage account name.
    pub account: String,
    /// Container holding the objects.
    pub container: String,
    /// Account endpoint (default `https://<account>.blob.core.windows.net`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub endpoint: Option<HttpEndpoint>,
    /// Where devices reach the store, when not at `endpoint`; SAS URLs use it.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub public_endpoint: Option<HttpEndpoint>,
    /// Account key (base64), used to sign service SAS.
    pub account_key: Secret,
    /// Start-up probe: `write` or `read-only`.
    #[serde(default)]
    pub probe: ProbeMode,
}

impl AzblobConfig {
    /// Checks the settings can work, before anything connects.
    pub fn validate(&self) -> Result<(), BackendError> {
        if self.account.is_empty() || self.container.is_empty() {
            return Err(BackendError::Config(
                "account and container must not be empty".into(),
            ));
        }
        self.decoded_key().map(|_| ())
    }

    fn decoded_key(&self) -> Result<Vec<u8>, BackendError> {
        base64::engine::general_purpose::STANDARD
            .decode(self.account_key.expose().trim())
            .map_err(|_| BackendError::Config("account_key is not base64".into()))
    }
}

/// Azure's bounds on block blobs: 50,000 blocks of up to 4000 MiB. Blocks have no
/// minimum size; valet asks for at least 1 MiB so a part is worth a request.
pub const MULTIPART_LIMITS: MultipartLimits = MultipartLimits {
    min_part_size: 1024 * 1024,
    max_part_size: 4000 * 1024 * 1024,
    max_parts: 50_000,
};

/// A container of an Azure storage account.
pub struct AzblobBackend {
    config: AzblobConfig,
    public_endpoint: url::Url,
    internal_endpoint: url::Url,
    key: SasKey,
    operator: Operator,
    http: reqwest::Client,
}

/// An endpoint as a base URL (with a trailing slash, so joining keeps its path).
fn base_url(raw: &str) -> Result<url::Url, BackendError> {
    let mut url =
        url::Url::parse(raw).map_err(|e| BackendError::Config(format!("endpoint {raw:?}: {e}")))?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Signed requests may start this much before "now": clocks differ.
const CLOCK_SKEW_MINUTES: i64 = 5;

impl AzblobBackend {
    /// Builds the backend; fails when the configuration cannot work.
    pub fn new(config: AzblobConfig) -> Result<Self, BackendError> {
        crate::install_crypto_provider();
        config.validate()?;
        let key = config.decoded_key()?;
        let endpoint = config.endpoint.as_ref().map_or_else(
            || format!("https://{}.blob.core.windows.net", config.account),
            HttpEndpoint::to_string,
        );
        let public = config
            .public_endpoint
            .as_ref()
            .map_or_else(|| endpoint.clone(), HttpEndpoint::to_string);
        let public_endpoint = base_url(&public)?;
        let internal_endpoint = base_url(&endpoint)?;
        let builder = opendal::services::Azblob::default()
            .container(&config.container)
            .endpoint(&endpoint)
            .account_name(&config.account)
            .account_key(config.account_key.expose().trim());
        let operator = Operator::new(builder)
            .map_err(|e| BackendError::Config(e.to_string()))?
            .finish();
        Ok(Self {
            config,
            public_endpoint,
            internal_endpoint,
            key: SasKey(key),
            operator,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .map_err(|e| BackendError::Config(e.to_string()))?,
        })
    }

    fn blob_url(&self, key: &ObjectKey, sas: &BlobSas<'_>) -> Result<url::Url, BackendError> {
        self.blob_url_at(&self.public_endpoint, key, sas)
    }

    fn blob_url_at(
        &self,
        endpoint: &url::Url,
        key: &ObjectKey,
        sas: &BlobSas<'_>,
    ) -> Result<url::Url, BackendError> {
        let mut url = endpoint
            .join(&format!("{}/{}", self.config.container, key.as_str()))
            .map_err(|e| BackendError::Config(format!("blob URL: {e}")))?;
        url.query_pairs_mut().extend_pairs(sas.query(&self.key));
        Ok(url)
    }

    fn protocol(&self) -> &'static str {
        if self.public_endpoint.scheme() == "https" {
            "https"
        } else {
            "https,http"
        }
    }
}

#[async_trait]
impl crate::Backend for AzblobBackend {
    fn kind(&self) -> &'static str {
        "azblob"
    }

    fn capabilities(&self) -> Capabilities {
        // A SAS cannot bind a length or a digest, and Azure keeps no SHA-256.
        Capabilities {
            binds_size: false,
            binds_sha256: false,
            reports_sha256: false,
            serves_data_plane: false,
            multipart: Some(MULTIPART_LIMITS),
        }
    }

    fn container(&self) -> Option<Container<'_>> {
        Some(Container {
            field: "container",
            name: &self.config.container,
        })
    }

    fn sign_upload(&self, spec: &UploadSpec) -> Result<SignedRequest, BackendError> {
        let sas = BlobSas {
            account: &self.config.account,
            container: &self.config.container,
            blob: spec.key.as_str(),
            permissions: "cw",
            start: Utc::now() - Duration::minutes(CLOCK_SKEW_MINUTES),
            expiry: spec.expires_at,
            protocol: self.protocol(),
            content_disposition: None,
            content_type: None,
        };
        let url = self.blob_url(&spec.key, &sas)?;
        let headers = [
            ("content-length", spec.size.to_string()),
            ("content-type", spec.content_type.clone()),
            ("if-none-match", "*".to_owned()),
            ("x-ms-blob-type", "BlockBlob".to_owned()),
        ];
        Ok(SignedRequest {
            method: "PUT".into(),
            url: url.to_string(),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            expires_at: spec.expires_at,
        })
    }

    fn sign_download(&self, spec: &DownloadSpec) -> Result<SignedRequest, BackendError> {
        let disposition = disposition::attachment(&spec.file_name);
        let sas = BlobSas {
            account: &self.config.account,
            container: &self.config.container,
            blob: spec.key.as_str(),
            permissions: "r",
            start: Utc::now() - Duration::minutes(CLOCK_SKEW_MINUTES),
            expiry: spec.expires_at,
            protocol: self.protocol(),
            content_disposition: Some(&disposition),
            content_type: Some(&spec.content_type),
        };
        Ok(SignedRequest {
            method: "GET".into(),
            url: self.blob_url(&spec.key, &sas)?.to_string(),
            headers: Default::default(),
            expires_at: spec.expires_at,
        })
    }

    async fn stat(&self, key: &ObjectKey) -> Result<Option<ObjectStat>, BackendError> {
        match self.operator.stat(key.as_str()).await {
            // Azure reports no SHA-256: completion reads the blob to hash it.
            Ok(metadata) => Ok(Some(ObjectStat {
                size: metadata.content_length(),
                sha256: None,
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BackendError::Unavailable(format!("stat: {e}"))),
        }
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
            .map_err(|e| BackendError::Unavailable(format!("delete: {e}")))
    }

    async fn probe(&self) -> Result<(), BackendError> {
        probe_operator(&self.operator, self.config.probe).await
    }
}
