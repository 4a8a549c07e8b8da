//! `[uploads]`: upload size limit and signed-URL lifetimes.

use anyhow::bail;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::at_least_one;

/// Upper bound on any signed URL's lifetime (the S3 limit).
pub const MAX_URL_TTL_SECS: u64 = 7 * 24 * 3600;

/// Upload limits and URL lifetimes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct UploadSettings {
    /// Largest file a device may declare, in bytes.
    pub max_upload_bytes: u64,
    /// Lifetime of upload URLs, in seconds.
    pub upload_url_ttl_secs: u64,
    /// Lifetime of download URLs, in seconds.
    pub download_url_ttl_secs: u64,
}

impl Default for UploadSettings {
    fn default() -> Self {
        Self {
            max_upload_bytes: 5 * 1024 * 1024 * 1024,
            upload_url_ttl_secs: 15 * 60,
            download_url_ttl_secs: 15 * 60,
        }
    }
}

impl UploadSettings {
    /// Checks the section.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        for (what, ttl) in [
            ("uploads.upload_url_ttl_secs", self.upload_url_ttl_secs),
            ("uploads.download_url_ttl_secs", self.download_url_ttl_secs),
        ] {
            if ttl == 0 || ttl > MAX_URL_TTL_SECS {
                bail!("{what} must be between 1 and {MAX_URL_TTL_SECS} seconds");
            }
        }
        at_least_one(&[("uploads.max_upload_bytes", self.max_upload_bytes)])
    }
}
