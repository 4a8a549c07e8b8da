//! `[backends.<name>]`: the named object stores files are kept in.

use std::path::PathBuf;

use anyhow::bail;
use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{url_with_scheme, Secret};

/// One named storage backend.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendSettings {
    /// valet's own store on the local file system.
    Local {
        /// Directory holding the objects (default `<data_dir>/objects`).
        root: Option<PathBuf>,
        /// URL signing secret, at least 32 bytes (default: generated into
        /// `<data_dir>/local-signing.key` on first start).
        secret: Option<Secret>,
    },
    /// AWS S3 or an S3-compatible store (MinIO: `endpoint` and `path_style = true`).
    S3 {
        /// Bucket holding the objects.
        bucket: String,
        /// Region the bucket is in (the signing scope; MinIO accepts any).
        #[serde(default = "default_region")]
        region: String,
        /// Where valet reaches the store (default `https://s3.<region>.amazonaws.com`).
        #[serde(default)]
        endpoint: Option<String>,
        /// Where devices reach the store, when not at `endpoint`; signed URLs use it.
        #[serde(default)]
        public_endpoint: Option<String>,
        /// Path-style URLs (`endpoint/bucket/key`) instead of virtual-host style.
        #[serde(default)]
        path_style: bool,
        /// Access key id; absent: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`.
        #[serde(default)]
        access_key_id: Option<String>,
        /// Secret access key.
        #[serde(default)]
        secret_access_key: Option<Secret>,
        /// Session token of temporary credentials.
        #[serde(default)]
        session_token: Option<Secret>,
        /// Use the SHA-256 S3 stored with the object (bound at upload) instead of reading it.
        #[serde(default = "yes")]
        trust_storage_checksum: bool,
        /// Start-up probe: `write` (write, stat, delete an object) or `read-only` (list).
        #[serde(default)]
        probe: ProbeMode,
    },
    /// Azure Blob Storage (or Azurite).
    Azblob {
        /// Storage account name.
        account: String,
        /// Container holding the objects.
        container: String,
        /// Account endpoint (default `https://<account>.blob.core.windows.net`).
        #[serde(default)]
        endpoint: Option<String>,
        /// Where devices reach the store, when not at `endpoint`; SAS URLs use it.
        #[serde(default)]
        public_endpoint: Option<String>,
        /// Account key (base64), used to sign service SAS.
        account_key: Secret,
        /// Start-up probe: `write` or `read-only`.
        #[serde(default)]
        probe: ProbeMode,
    },
}

/// How a backend is checked at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeMode {
    /// Write, stat and delete a small object.
    #[default]
    Write,
    /// List only (for credentials that may not write outside uploads).
    ReadOnly,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn yes() -> bool {
    true
}

impl BackendSettings {
    /// Checks the backend configured as `name`, and the name itself.
    pub(super) fn validate(&self, name: &str) -> anyhow::Result<()> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!("backend name {name:?} must be letters, digits, '-' or '_'");
        }
        match self {
            Self::Local { secret, .. } => {
                if secret.as_ref().is_some_and(|s| s.expose().len() < 32) {
                    bail!("backends.{name}.secret must be at least 32 bytes");
                }
            }
            Self::S3 {
                bucket,
                endpoint,
                public_endpoint,
                access_key_id,
                secret_access_key,
                ..
            } => {
                if bucket.is_empty() {
                    bail!("backends.{name}.bucket must not be empty");
                }
                check_http_url(name, "endpoint", endpoint)?;
                check_http_url(name, "public_endpoint", public_endpoint)?;
                if access_key_id.is_some() != secret_access_key.is_some() {
                    bail!("backends.{name}: access_key_id and secret_access_key go together");
                }
            }
            Self::Azblob {
                account,
                container,
                endpoint,
                public_endpoint,
                account_key,
                ..
            } => {
                if account.is_empty() || container.is_empty() {
                    bail!("backends.{name}: account and container must not be empty");
                }
                check_http_url(name, "endpoint", endpoint)?;
                check_http_url(name, "public_endpoint", public_endpoint)?;
                if base64::engine::general_purpose::STANDARD
                    .decode(account_key.expose().trim())
                    .is_err()
                {
                    bail!("backends.{name}.account_key is not base64");
                }
            }
        }
        Ok(())
    }
}

fn check_http_url(backend: &str, what: &str, url: &Option<String>) -> anyhow::Result<()> {
    if let Some(url) = url {
        let ok = url_with_scheme(url, &["http", "https"]).is_some_and(|u| u.host_str().is_some());
        if !ok {
            bail!("backends.{backend}.{what} must be an http:// or https:// URL");
        }
    }
    Ok(())
}
