//! HTTPS: a rustls server configuration whose certificate is reloaded, without a
//! restart, on SIGHUP or when the certificate files change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context};
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use crate::configuration::ServerSettings;

/// Marker stored in a connection's extensions when the client presented a
/// certificate that the configured client CA verified.
#[derive(Debug, Clone, Copy)]
pub struct VerifiedClientCertificate;

/// The serving certificate, swapped atomically on reload.
#[derive(Debug)]
pub struct CertificateStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    loaded_from: ArcSwap<(Option<SystemTime>, Option<SystemTime>)>,
}

impl CertificateStore {
    /// Loads the certificate chain and key; fails with the file and the cause.
    pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Arc<Self>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = read_certified_key(cert_path, key_path, &provider)?;
        Ok(Arc::new(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: ArcSwap::from_pointee(key),
            loaded_from: ArcSwap::from_pointee(modified(cert_path, key_path)),
        }))
    }

    /// Reads the files again; on failure the previous certificate stays in use.
    /// Blocking file I/O: the watcher runs it on the blocking pool.
    pub fn reload(&self) -> anyhow::Result<()> {
        let stamp = modified(&self.cert_path, &self.key_path);
        let key = read_certified_key(&self.cert_path, &self.key_path, &self.provider)?;
        self.current.store(Arc::new(key));
        self.loaded_from.store(Arc::new(stamp));
        Ok(())
    }

    /// Reloads when either file's modification time changed since the last load.
    fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let stamp = modified(&self.cert_path, &self.key_path);
        if **self.loaded_from.load() == stamp {
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    /// Runs `reload` on the blocking pool: it stats and reads files, which would
    /// stall every connection served by this executor thread meanwhile. A reload
    /// that panicked or was cancelled is a failed reload, not a stopped watcher.
    async fn off_the_executor(
        self: &Arc<Self>,
        reload: fn(&Self) -> anyhow::Result<bool>,
    ) -> anyhow::Result<bool> {
        let store = Arc::clone(self);
        actix_web::rt::task::spawn_blocking(move || reload(&store))
            .await
            .unwrap_or_else(|e| Err(anyhow!("the reload task did not finish: {e}")))
    }

    /// Reloads on SIGHUP and, when `interval` is non-zero, when the files change.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let store = self.clone();
        actix_web::rt::spawn(async move {
            let mut hangups = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            ) {
                Ok(signal) => Some(signal),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGHUP; certificate reload on file change only");
                    None
                }
            };
            let mut ticker = (!interval.is_zero()).then(|| tokio::time::interval(interval));
            // A broken file is retried every interval: its error is logged once, and
            // the recovery once, not every tick.
            let mut failing: Option<String> = None;
            loop {
                let on_signal = async {
                    match hangups.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let on_tick = async {
                    match ticker.as_mut() {
                        Some(t) => t.tick().await,
                        None => std::future::pending().await,
                    }
                };
                let reload: fn(&Self) -> anyhow::Result<bool> = tokio::select! {
                    _ = on_signal => |store| store.reload().map(|()| true),
                    _ = on_tick => Self::reload_if_changed,
                };
                let result = store.off_the_executor(reload).await;
                match result {
                    Ok(true) => {
                        if failing.take().is_some() {
                            tracing::info!(cert = %store.cert_path.display(), "TLS certificate files usable again");
                        }
                        tracing::info!(cert = %store.cert_path.display(), "TLS certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        let error = format!("{e:#}");
                        if is_new_failure(&mut failing, &error) {
                            tracing::error!(
                                cert = %store.cert_path.display(),
                                error = %error,
                                "TLS certificate reload failed; still serving the previous certificate (logged again only if the failure changes)"
                            );
                        }
                    }
                }
            }
        });
    }
}

/// Whether `error` differs from the failure last reported (which it becomes).
fn is_new_failure(failing: &mut Option<String>, error: &str) -> bool {
    if failing.as_deref() == Some(error) {
        return false;
    }
    *failing = Some(error.to_owned());
    true
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The rustls configuration for `settings` (which must have `tls_cert`/`tls_key`).
pub fn server_config(
    settings: &ServerSettings,
    certificates: Arc<CertificateStore>,
) -> anyhow::Result<ServerConfig> {
    let provider = certificates.provider.clone();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &settings.tls_client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(ca_path)? {
                roots.add(cert).with_context(|| {
                    format!("{}: not a usable CA certificate", ca_path.display())
                })?;
            }
            // Devices authenticate with tokens alone: a client certificate is optional
            // at the TLS layer and required only where valet asks for it.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .context("server.tls_client_ca")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn modified(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let time = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (time(cert), time(key))
}

fn read_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in the file", path.display());
    }
    Ok(certs)
}

fn read_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain = read_certificates(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("{}: no PEM private key", key_path.display()))?;
    let key = CertifiedKey::from_der(chain, key, provider).with_context(|| {
        format!(
            "{} and {} do not form a usable certificate and key",
            cert_path.display(),
            key_path.display()
        )
    })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::is_new_failure;

    #[test]
    fn a_failure_is_reported_once_until_it_changes() {
        let mut failing = None;
        assert!(is_new_failure(&mut failing, "not a PEM file"));
        assert!(!is_new_failure(&mut failing, "not a PEM file"));
        assert!(is_new_failure(&mut failing, "no private key"));
        failing = None; // recovered
        assert!(is_new_failure(&mut failing, "no private key"));
    }
}
