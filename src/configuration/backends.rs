//! `[backends.<name>]`: the named object stores files are kept in. Each kind's
//! settings (fields, defaults, validation) live beside its backend, in the
//! backends crate; this module names them and checks the name.

use anyhow::bail;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use valet_backends::azblob::AzblobConfig;
use valet_backends::local::LocalConfig;
use valet_backends::s3::S3Config;

/// One named storage backend.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BackendSettings {
    /// valet's own store on the local file system.
    Local(LocalConfig),
    /// AWS S3 or an S3-compatible store (MinIO: `endpoint` and `path_style = true`).
    S3(S3Config),
    /// Azure Blob Storage (or Azurite).
    Azblob(AzblobConfig),
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
        let checked = match self {
            Self::Local(config) => config.validate(),
            Self::S3(config) => config.validate(),
            Self::Azblob(config) => config.validate(),
        };
        // The backends word their problems from the field on ("secret must be …").
        match checked {
            Ok(()) => Ok(()),
            Err(valet_backends::BackendError::Config(problem)) => {
                bail!("backends.{name}.{problem}")
            }
            Err(other) => bail!("backends.{name}: {other}"),
        }
    }
}
