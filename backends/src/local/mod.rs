//! valet's own object store: objects are files under a root directory, and valet
//! itself serves the signed PUT and GET requests (see [`LocalBackend::receive`] and
//! [`LocalBackend::open`]).

mod signature;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use futures_util::{Stream, StreamExt};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

use crate::{
    Backend, BackendError, DownloadSpec, ObjectKey, ObjectStat, Sha256, SignedRequest, UploadSpec,
};
use signature::{DownloadClaims, UploadClaims, UrlSigner};

/// Directory under the root where uploads are received before they are verified.
const INCOMING_DIR: &str = ".incoming";
/// Suffix of the file beside each object that records its SHA-256.
const DIGEST_SUFFIX: &str = ".sha256";

/// Objects on the local file system, served by valet's own data plane.
pub struct LocalBackend {
    name: String,
    root: PathBuf,
    signer: UrlSigner,
    public_url: Url,
}

/// Why a request to the local data plane was refused.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// The signature is missing, malformed, tampered with or for something else.
    #[error("the signature does not match this request")]
    BadSignature,
    /// The signature was valid but has expired.
    #[error("the signed URL has expired")]
    Expired,
    /// The body length differs from the signed length.
    #[error("expected {expected} bytes, received {received}")]
    SizeMismatch {
        /// Signed length.
        expected: u64,
        /// Length received (so far, when the body was too long).
        received: u64,
    },
    /// The body's SHA-256 differs from the signed digest.
    #[error("the body's SHA-256 does not match the signed digest")]
    ChecksumMismatch,
    /// The client stopped sending or the connection failed.
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    /// The object does not exist.
    #[error("no such object")]
    NotFound,
    /// The store itself failed.
    #[error(transparent)]
    Storage(#[from] std::io::Error),
}

/// A verified permission to store one object.
#[derive(Debug, Clone)]
pub struct UploadGrant {
    key: ObjectKey,
    size: u64,
    sha256: Sha256,
}

/// A verified permission to read one object.
#[derive(Debug, Clone)]
pub struct DownloadGrant {
    key: ObjectKey,
    /// Content type to answer with.
    pub content_type: String,
    /// File name to offer in Content-Disposition.
    pub filename: String,
}

/// An object opened for reading.
pub struct OpenObject {
    /// The file, positioned at the start.
    pub file: tokio::fs::File,
    /// Its length in bytes.
    pub size: u64,
}

impl LocalBackend {
    /// A store named `name` under `root`, signing with `secret`, whose data plane is
    /// reachable at `public_url` (valet's own base URL).
    pub fn new(
        name: impl Into<String>,
        root: impl Into<PathBuf>,
        secret: Vec<u8>,
        public_url: Url,
    ) -> Result<Self, BackendError> {
        if secret.len() < 32 {
            return Err(BackendError::Config(
                "the local signing secret must be at least 32 bytes".into(),
            ));
        }
        if public_url.cannot_be_a_base() {
            return Err(BackendError::Config(format!(
                "public URL {public_url} cannot be a base URL"
            )));
        }
        Ok(Self {
            name: name.into(),
            root: root.into(),
            signer: UrlSigner::new(secret),
            public_url,
        })
    }

    fn object_path(&self, key: &ObjectKey) -> PathBuf {
        // ObjectKey segments are never empty, `.` or `..`, so this stays under root.
        self.root.join(key.as_str())
    }

    fn digest_path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(format!("{}{DIGEST_SUFFIX}", key.as_str()))
    }

    fn object_url(&self, key: &ObjectKey) -> Result<Url, BackendError> {
        let mut url = self.public_url.clone();
        {
            let mut segments = url.path_segments_mut().map_err(|_| {
                BackendError::Config(format!("public URL {} cannot be a base", self.public_url))
            })?;
            segments
                .pop_if_empty()
                .extend(["v1", "objects", &self.name]);
            segments.extend(key.as_str().split('/'));
        }
        Ok(url)
    }

    /// Checks a PUT's key and query string against its signature.
    pub fn verify_upload(
        &self,
        key: &str,
        query: &str,
        now: DateTime<Utc>,
    ) -> Result<UploadGrant, DataPlaneError> {
        let key = ObjectKey::parse(key).map_err(|_| DataPlaneError::BadSignature)?;
        let params = QueryParams::parse(query);
        let expires: i64 = params.number("expires")?;
        let size: u64 = params.number("size")?;
        let sha256_hex = params.get("sha256")?;
        let claims = UploadClaims {
            backend: &self.name,
            key: key.as_str(),
            expires,
            size,
            sha256_hex,
        };
        if !self.signer.verify_upload(&claims, params.get("signature")?) {
            return Err(DataPlaneError::BadSignature);
        }
        if now.timestamp() > expires {
            return Err(DataPlaneError::Expired);
        }
        let sha256 = Sha256::parse_hex(sha256_hex).map_err(|_| DataPlaneError::BadSignature)?;
        Ok(UploadGrant { key, size, sha256 })
    }

    /// Checks a GET's key and query string against its signature.
    pub fn verify_download(
        &self,
        key: &str,
        query: &str,
        now: DateTime<Utc>,
    ) -> Result<DownloadGrant, DataPlaneError> {
        let key = ObjectKey::parse(key).map_err(|_| DataPlaneError::BadSignature)?;
        let params = QueryParams::parse(query);
        let expires: i64 = params.number("expires")?;
        let content_type = params.get("content_type")?;
        let filename = params.get("filename")?;
        let claims = DownloadClaims {
            backend: &self.name,
            key: key.as_str(),
            expires,
            content_type,
            filename,
        };
        if !self
            .signer
            .verify_download(&claims, params.get("signature")?)
        {
            return Err(DataPlaneError::BadSignature);
        }
        if now.timestamp() > expires {
            return Err(DataPlaneError::Expired);
        }
        Ok(DownloadGrant {
            key,
            content_type: content_type.to_owned(),
            filename: filename.to_owned(),
        })
    }

    /// Receives an upload body. The bytes go to a temporary file while being counted
    /// and hashed; only a body of exactly the signed length and digest is moved into
    /// place, so a short, long, corrupted or interrupted upload leaves nothing behind.
    pub async fn receive<S, E>(
        &self,
        grant: &UploadGrant,
        declared_length: Option<u64>,
        mut body: S,
    ) -> Result<(), DataPlaneError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        if let Some(declared) = declared_length {
            if declared != grant.size {
                return Err(DataPlaneError::SizeMismatch {
                    expected: grant.size,
                    received: declared,
                });
            }
        }
        let incoming = self.root.join(INCOMING_DIR);
        tokio::fs::create_dir_all(&incoming).await?;
        let part = PartFile::new(incoming.join(format!("{}.part", uuid::Uuid::new_v4())));
        let written = Self::write_checked(grant, part.path(), &mut body).await;
        if let Err(e) = written {
            // Remove it now (not later from Drop) so a refused upload leaves nothing behind
            // by the time the client sees the answer.
            let _ = tokio::fs::remove_file(part.path()).await;
            part.disarm();
            return Err(e);
        }

        let target = self.object_path(&grant.key);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        // The digest goes first: an object file never exists without its digest.
        let digest_part = PartFile::new(part.path().with_extension("digest"));
        tokio::fs::write(digest_part.path(), grant.sha256.to_hex()).await?;
        tokio::fs::rename(digest_part.path(), self.digest_path(&grant.key)).await?;
        digest_part.disarm();
        tokio::fs::rename(part.path(), &target).await?;
        part.disarm();
        Ok(())
    }

    /// Streams the body into `path`, counting and hashing; fails on any mismatch.
    async fn write_checked<S, E>(
        grant: &UploadGrant,
        path: &Path,
        body: &mut S,
    ) -> Result<(), DataPlaneError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let mut file = tokio::fs::File::create(path).await?;
        let mut hasher = sha2::Sha256::new();
        let mut received: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| DataPlaneError::Interrupted(e.to_string()))?;
            received += chunk.len() as u64;
            if received > grant.size {
                return Err(DataPlaneError::SizeMismatch {
                    expected: grant.size,
                    received,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        if received != grant.size {
            return Err(DataPlaneError::SizeMismatch {
                expected: grant.size,
                received,
            });
        }
        if Sha256::from_bytes(hasher.finalize().into()) != grant.sha256 {
            return Err(DataPlaneError::ChecksumMismatch);
        }
        file.sync_all().await?;
        Ok(())
    }

    /// Opens a stored object for a verified download.
    pub async fn open(&self, grant: &DownloadGrant) -> Result<OpenObject, DataPlaneError> {
        let path = self.object_path(&grant.key);
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DataPlaneError::NotFound)
            }
            Err(e) => return Err(e.into()),
        };
        let size = file.metadata().await?.len();
        Ok(OpenObject { file, size })
    }

    fn expires_param(expires_at: DateTime<Utc>) -> i64 {
        expires_at.timestamp()
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn sign_upload(&self, spec: &UploadSpec) -> Result<SignedRequest, BackendError> {
        let expires = Self::expires_param(spec.expires_at);
        let sha256_hex = spec.sha256.to_hex();
        let signature = self.signer.sign_upload(&UploadClaims {
            backend: &self.name,
            key: spec.key.as_str(),
            expires,
            size: spec.size,
            sha256_hex: &sha256_hex,
        });
        let mut url = self.object_url(&spec.key)?;
        url.query_pairs_mut()
            .append_pair("expires", &expires.to_string())
            .append_pair("size", &spec.size.to_string())
            .append_pair("sha256", &sha256_hex)
            .append_pair("signature", &signature);
        let headers = BTreeMap::from([
            ("content-length".to_owned(), spec.size.to_string()),
            ("content-type".to_owned(), spec.content_type.clone()),
        ]);
        Ok(SignedRequest {
            method: "PUT".into(),
            url: url.into(),
            headers,
            expires_at: seconds_precision(spec.expires_at),
        })
    }

    fn sign_download(&self, spec: &DownloadSpec) -> Result<SignedRequest, BackendError> {
        let expires = Self::expires_param(spec.expires_at);
        let signature = self.signer.sign_download(&DownloadClaims {
            backend: &self.name,
            key: spec.key.as_str(),
            expires,
            content_type: &spec.content_type,
            filename: &spec.file_name,
        });
        let mut url = self.object_url(&spec.key)?;
        url.query_pairs_mut()
            .append_pair("expires", &expires.to_string())
            .append_pair("content_type", &spec.content_type)
            .append_pair("filename", &spec.file_name)
            .append_pair("signature", &signature);
        Ok(SignedRequest {
            method: "GET".into(),
            url: url.into(),
            headers: BTreeMap::new(),
            expires_at: seconds_precision(spec.expires_at),
        })
    }

    async fn stat(&self, key: &ObjectKey) -> Result<Option<ObjectStat>, BackendError> {
        let size = match tokio::fs::metadata(self.object_path(key)).await {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let sha256 = match tokio::fs::read_to_string(self.digest_path(key)).await {
            Ok(hex) => Sha256::parse_hex(hex.trim()).ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        Ok(Some(ObjectStat { size, sha256 }))
    }

    async fn sha256(&self, key: &ObjectKey) -> Result<Sha256, BackendError> {
        let path = self.object_path(key);
        // Hashing a large object is CPU work: keep it off the async workers.
        let mut file = tokio::fs::File::open(path).await?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            let chunk = buf[..n].to_vec();
            hasher = tokio::task::spawn_blocking(move || {
                hasher.update(&chunk);
                hasher
            })
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        }
        Ok(Sha256::from_bytes(hasher.finalize().into()))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        for path in [self.object_path(key), self.digest_path(key)] {
            match tokio::fs::remove_file(path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn probe(&self) -> Result<(), BackendError> {
        let incoming = self.root.join(INCOMING_DIR);
        tokio::fs::create_dir_all(&incoming).await?;
        let probe = incoming.join(format!("probe-{}", uuid::Uuid::new_v4()));
        tokio::fs::write(&probe, b"probe").await?;
        let read = tokio::fs::read(&probe).await;
        tokio::fs::remove_file(&probe).await?;
        if read? != b"probe" {
            return Err(BackendError::Unavailable(format!(
                "{} does not read back what was written",
                self.root.display()
            )));
        }
        Ok(())
    }
}

/// Signed URLs carry whole seconds; report the expiry they really have.
fn seconds_precision(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_opt(t.timestamp(), 0).single().unwrap_or(t)
}

/// Query parameters of a signed URL; any missing or repeated one is a bad signature.
struct QueryParams<'a>(Vec<(std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>);

impl<'a> QueryParams<'a> {
    fn parse(query: &'a str) -> Self {
        Self(url::form_urlencoded::parse(query.as_bytes()).collect())
    }

    fn get(&self, name: &str) -> Result<&str, DataPlaneError> {
        let mut values = self.0.iter().filter(|(k, _)| k == name);
        match (values.next(), values.next()) {
            (Some((_, v)), None) => Ok(v),
            _ => Err(DataPlaneError::BadSignature),
        }
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<T, DataPlaneError> {
        self.get(name)?
            .parse()
            .map_err(|_| DataPlaneError::BadSignature)
    }
}

/// A temporary file removed when dropped unless it was moved into place.
struct PartFile {
    path: Option<PathBuf>,
}

impl PartFile {
    fn new(path: PathBuf) -> Self {
        Self { path: Some(path) }
    }

    fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // Unlinking is quick but still a blocking call: hand it to the blocking pool
            // when there is one (there always is inside valet).
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn_blocking(move || {
                        let _ = std::fs::remove_file(path);
                    });
                }
                Err(_) => {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn backend(dir: &Path) -> LocalBackend {
        LocalBackend::new(
            "local",
            dir,
            vec![7u8; 32],
            Url::parse("http://127.0.0.1:8080").unwrap(),
        )
        .unwrap()
    }

    fn spec(body: &[u8], expires_in: i64) -> UploadSpec {
        UploadSpec {
            key: ObjectKey::parse("t/d/f").unwrap(),
            size: body.len() as u64,
            sha256: Sha256::digest(body),
            content_type: "application/octet-stream".into(),
            expires_at: Utc::now() + Duration::seconds(expires_in),
        }
    }

    fn query_of(signed: &SignedRequest) -> String {
        Url::parse(&signed.url).unwrap().query().unwrap().to_owned()
    }

    fn chunks(body: &[u8]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        futures_util::stream::iter(
            body.chunks(3)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn a_signed_upload_is_stored_with_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = backend(dir.path());
        let body = b"hello, valet";
        let signed = store.sign_upload(&spec(body, 60)).unwrap();
        assert_eq!(signed.headers["content-length"], body.len().to_string());
        assert!(signed
            .url
            .starts_with("http://127.0.0.1:8080/v1/objects/local/t/d/f?"));
        let grant = store
            .verify_upload("t/d/f", &query_of(&signed), Utc::now())
            .unwrap();
        store.receive(&grant, None, chunks(body)).await.unwrap();
        let key = ObjectKey::parse("t/d/f").unwrap();
        let stat = store.stat(&key).await.unwrap().unwrap();
        assert_eq!(stat.size, body.len() as u64);
        assert_eq!(stat.sha256, Some(Sha256::digest(body)));
        assert_eq!(store.sha256(&key).await.unwrap(), Sha256::digest(body));
        store.delete(&key).await.unwrap();
        assert!(store.stat(&key).await.unwrap().is_none());
        store.delete(&key).await.unwrap();
    }

    #[tokio::test]
    async fn mismatched_bodies_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = backend(dir.path());
        let body = b"0123456789";
        let signed = store.sign_upload(&spec(body, 60)).unwrap();
        let grant = store
            .verify_upload("t/d/f", &query_of(&signed), Utc::now())
            .unwrap();
        for bad in [&b"012345678"[..], b"0123456789X", b"0123456788"] {
            let result = store.receive(&grant, None, chunks(bad)).await;
            assert!(result.is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            store.receive(&grant, Some(11), chunks(body)).await,
            Err(DataPlaneError::SizeMismatch { .. })
        ));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join(INCOMING_DIR))
            .unwrap()
            .collect();
        assert!(leftovers.is_empty());
        assert!(store
            .stat(&ObjectKey::parse("t/d/f").unwrap())
            .await
            .unwrap()
            .is_none());
    }

    #[test]
    fn expired_and_tampered_signatures_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = backend(dir.path());
        let signed = store.sign_upload(&spec(b"abc", 60)).unwrap();
        let query = query_of(&signed);
        let later = Utc::now() + Duration::seconds(120);
        assert!(matches!(
            store.verify_upload("t/d/f", &query, later),
            Err(DataPlaneError::Expired)
        ));
        assert!(matches!(
            store.verify_upload("t/d/g", &query, Utc::now()),
            Err(DataPlaneError::BadSignature)
        ));
        assert!(matches!(
            store.verify_upload("t/../f", &query, Utc::now()),
            Err(DataPlaneError::BadSignature)
        ));
        let tampered = query.replace("size=3", "size=4");
        assert!(matches!(
            store.verify_upload("t/d/f", &tampered, Utc::now()),
            Err(DataPlaneError::BadSignature)
        ));
        // A download signature does not authorize an upload.
        let download = store
            .sign_download(&DownloadSpec {
                key: ObjectKey::parse("t/d/f").unwrap(),
                file_name: "a".into(),
                content_type: "text/plain".into(),
                expires_at: Utc::now() + Duration::seconds(60),
            })
            .unwrap();
        assert!(store
            .verify_upload("t/d/f", &query_of(&download), Utc::now())
            .is_err());
        assert!(store
            .verify_download("t/d/f", &query_of(&download), Utc::now())
            .is_ok());
    }

    #[test]
    fn short_secrets_are_refused() {
        let result = LocalBackend::new("l", "/tmp", vec![1; 16], Url::parse("http://x").unwrap());
        assert!(result.is_err());
    }
}
