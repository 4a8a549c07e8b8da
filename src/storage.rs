//! The configured storage backends, by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;

use crate::private_file::create_private_file;
use valet_backends::azblob::{AzblobBackend, AzblobConfig};
use valet_backends::local::LocalBackend;
use valet_backends::s3::{S3Backend, S3Config};
use valet_backends::{Backend, DownloadSpec, SignedRequest, UploadSpec};

use crate::configuration::{BackendSettings, ProbeMode, Settings};

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The file names a backend that is no longer configured.
    #[error("storage backend {0:?} is not configured")]
    UnknownBackend(String),
    /// The backend could not sign.
    #[error(transparent)]
    Backend(#[from] valet_backends::BackendError),
}

/// Every configured backend, plus direct access to local ones for the data plane.
#[derive(Clone)]
pub struct Backends {
    all: Arc<BTreeMap<String, Arc<dyn Backend>>>,
    local: Arc<BTreeMap<String, Arc<LocalBackend>>>,
}

impl Backends {
    /// Builds every backend in `settings`; `public_url` is where valet is reachable.
    pub fn from_settings(settings: &Settings, public_url: &url::Url) -> anyhow::Result<Self> {
        let mut all: BTreeMap<String, Arc<dyn Backend>> = BTreeMap::new();
        let mut local = BTreeMap::new();
        for (name, backend) in &settings.backends {
            match backend {
                BackendSettings::Local { root, secret } => {
                    let root = root
                        .clone()
                        .unwrap_or_else(|| settings.data_dir.join("objects"));
                    let secret = match secret {
                        Some(s) => s.expose().as_bytes().to_vec(),
                        None => load_or_create_secret(&settings.local_secret_path())?,
                    };
                    let backend = Arc::new(
                        LocalBackend::new(name.clone(), root, secret, public_url.clone())
                            .with_context(|| format!("backend {name}"))?,
                    );
                    local.insert(name.clone(), backend.clone());
                    all.insert(name.clone(), backend);
                }
                BackendSettings::S3 {
                    bucket,
                    region,
                    endpoint,
                    public_endpoint,
                    path_style,
                    access_key_id,
                    secret_access_key,
                    session_token,
                    trust_storage_checksum,
                    probe,
                } => {
                    let backend = S3Backend::new(S3Config {
                        bucket: bucket.clone(),
                        region: region.clone(),
                        endpoint: endpoint.clone(),
                        public_endpoint: public_endpoint.clone(),
                        path_style: *path_style,
                        access_key_id: access_key_id.clone(),
                        secret_access_key: secret_access_key
                            .as_ref()
                            .map(|s| s.expose().to_owned()),
                        session_token: session_token.as_ref().map(|s| s.expose().to_owned()),
                        trust_storage_checksum: *trust_storage_checksum,
                        read_only_probe: *probe == ProbeMode::ReadOnly,
                    })
                    .with_context(|| format!("storage backend {name:?}"))?;
                    all.insert(name.clone(), Arc::new(backend));
                }
                BackendSettings::Azblob {
                    account,
                    container,
                    endpoint,
                    public_endpoint,
                    account_key,
                    probe,
                } => {
                    let backend = AzblobBackend::new(AzblobConfig {
                        account: account.clone(),
                        container: container.clone(),
                        endpoint: endpoint.clone(),
                        public_endpoint: public_endpoint.clone(),
                        account_key: account_key.expose().to_owned(),
                        read_only_probe: *probe == ProbeMode::ReadOnly,
                    })
                    .with_context(|| format!("storage backend {name:?}"))?;
                    all.insert(name.clone(), Arc::new(backend));
                }
            }
        }
        Ok(Self {
            all: Arc::new(all),
            local: Arc::new(local),
        })
    }

    /// A backend by name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Backend>> {
        self.all.get(name)
    }

    /// Signs an upload with backend `name` (microseconds of HMAC: done inline).
    pub fn sign_upload(&self, name: &str, spec: &UploadSpec) -> Result<SignedRequest, SignError> {
        let backend = self
            .get(name)
            .ok_or_else(|| SignError::UnknownBackend(name.to_owned()))?;
        Ok(backend.sign_upload(spec)?)
    }

    /// Signs a download with backend `name`.
    pub fn sign_download(
        &self,
        name: &str,
        spec: &DownloadSpec,
    ) -> Result<SignedRequest, SignError> {
        let backend = self
            .get(name)
            .ok_or_else(|| SignError::UnknownBackend(name.to_owned()))?;
        Ok(backend.sign_download(spec)?)
    }

    /// A local backend by name (for the data-plane routes).
    pub fn local(&self, name: &str) -> Option<&Arc<LocalBackend>> {
        self.local.get(name)
    }

    /// All backends with their names.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<dyn Backend>)> {
        self.all.iter()
    }

    /// Checks every backend can store and remove an object; names the one that cannot.
    pub async fn probe_all(&self) -> anyhow::Result<()> {
        for (name, backend) in self.iter() {
            backend
                .probe()
                .await
                .with_context(|| format!("storage backend {name:?} is not usable"))?;
        }
        Ok(())
    }
}

/// Reads the generated local signing secret, creating it (32 random bytes, owner-only)
/// on first start.
fn load_or_create_secret(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return hex::decode(text.trim())
            .with_context(|| format!("{} is not a hex secret", path.display()));
    }
    let secret: [u8; 32] = rand::random();
    create_private_file(path, hex::encode(secret).as_bytes())?;
    Ok(secret.to_vec())
}
