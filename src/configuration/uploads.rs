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
    /// Files larger than this are uploaded in parts (a file of exactly this size is not).
    pub multipart_threshold_bytes: u64,
    /// Part size when the device asks for none (raised when the store's part count
    /// limit needs larger parts).
    pub default_part_size_bytes: u64,
    /// How long a multipart upload may take, in seconds; after it the reconciler
    /// aborts it and the file expires.
    pub multipart_ttl_secs: u64,
}

impl Default for UploadSettings {
    fn default() -> Self {
        Self {
            // S3's largest object.
            max_upload_bytes: 5 * 1024 * 1024 * 1024 * 1024,
            upload_url_ttl_secs: 15 * 60,
            download_url_ttl_secs: 15 * 60,
            multipart_threshold_bytes: 64 * 1024 * 1024,
            default_part_size_bytes: 16 * 1024 * 1024,
            multipart_ttl_secs: 24 * 60 * 60,
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
        // Sizes are stored as signed 64-bit integers: a larger limit could never be
        // recorded as declared.
        if self.max_upload_bytes > i64::MAX as u64 {
            bail!("uploads.max_upload_bytes must be at most {}", i64::MAX);
        }
        at_least_one(&[
            ("uploads.max_upload_bytes", self.max_upload_bytes),
            (
                "uploads.multipart_threshold_bytes",
                self.multipart_threshold_bytes,
            ),
            (
                "uploads.default_part_size_bytes",
                self.default_part_size_bytes,
            ),
            ("uploads.multipart_ttl_secs", self.multipart_ttl_secs),
        ])
    }
}
