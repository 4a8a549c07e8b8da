//! The `Signer` actor: asks a file's backend for a signed request, on its own
//! threads (signing is HMAC or signature work).

use actix::{Actor, Handler, Message, SyncContext};
use valet_backends::{DownloadSpec, SignedRequest, UploadSpec};

use crate::storage::Backends;

/// Signs requests with the configured backends.
pub struct Signer {
    backends: Backends,
}

impl Signer {
    /// A signer over `backends`.
    pub fn new(backends: Backends) -> Self {
        Self { backends }
    }
}

impl Actor for Signer {
    type Context = SyncContext<Self>;
}

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

/// Sign an upload with backend `backend`.
#[derive(Message)]
#[rtype(result = "Result<SignedRequest, SignError>")]
pub struct SignUpload {
    /// Backend name.
    pub backend: String,
    /// What may be uploaded.
    pub spec: UploadSpec,
}

/// Sign a download with backend `backend`.
#[derive(Message)]
#[rtype(result = "Result<SignedRequest, SignError>")]
pub struct SignDownload {
    /// Backend name.
    pub backend: String,
    /// What may be downloaded.
    pub spec: DownloadSpec,
}

impl Handler<SignUpload> for Signer {
    type Result = Result<SignedRequest, SignError>;
    fn handle(&mut self, msg: SignUpload, _: &mut Self::Context) -> Self::Result {
        let backend = self
            .backends
            .get(&msg.backend)
            .ok_or_else(|| SignError::UnknownBackend(msg.backend.clone()))?;
        Ok(backend.sign_upload(&msg.spec)?)
    }
}

impl Handler<SignDownload> for Signer {
    type Result = Result<SignedRequest, SignError>;
    fn handle(&mut self, msg: SignDownload, _: &mut Self::Context) -> Self::Result {
        let backend = self
            .backends
            .get(&msg.backend)
            .ok_or_else(|| SignError::UnknownBackend(msg.backend.clone()))?;
        Ok(backend.sign_download(&msg.spec)?)
    }
}
