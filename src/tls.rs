//! HTTPS with rustls: the certificate and key named by `server.tls_cert_file` and
//! `server.tls_key_file`, read again on SIGHUP so a renewed certificate is served
//! without a restart.
//!
//! The server asks [`CertificateFiles`] for the certificate on every handshake; it hands
//! out the pair it holds in an `ArcSwap`, so a reload swaps one pointer and handshakes
//! never wait on a lock. A reload that fails (a file missing, half written, a key that
//! does not match) leaves the pair in service untouched and logs an error: a bad deploy
//! of the files must not take HTTPS down.

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

/// Why a certificate could not be loaded or TLS set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    /// A file is not the PEM expected.
    #[error("{} holds no valid PEM {what}: {source}", path.display())]
    Pem { what: &'static str, path: PathBuf, source: pem::Error },
    /// The certificate file holds no certificate.
    #[error("{} holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)", .0.display())]
    NoCertificate(PathBuf),
    /// The key cannot be used, or is not the certificate's.
    #[error("the key {} does not go with the certificate {}: {source}", key.display(), cert.display())]
    Key { cert: PathBuf, key: PathBuf, source: rustls::Error },
    /// rustls refused the configuration.
    #[error("cannot set up TLS: {0}")]
    Config(#[from] rustls::Error),
    /// The SIGHUP handler could not be installed.
    #[error("cannot listen for SIGHUP (certificate reloads): {0}")]
    Signal(std::io::Error),
}

/// The certificate files and the pair loaded from them last.
#[derive(Debug)]
pub struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
}

impl CertificateFiles {
    /// Loads the pair; an error here stops start-up.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = read_pair(cert, key, &provider)?;
        Ok(Arc::new(CertificateFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: ArcSwap::from_pointee(pair),
        }))
    }

    /// Reads both files again and serves the new pair from the next handshake on; on
    /// an error the pair in service stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = read_pair(&self.cert, &self.key, &self.provider)?;
        self.current.store(Arc::new(pair));
        Ok(())
    }

    /// The server configuration: this resolver, TLS 1.2 and 1.3, no client
    /// certificates. actix-web adds the ALPN protocols (h2, http/1.1).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        Ok(rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>))
    }
}

impl ResolvesServerCert for CertificateFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read =
        |what, path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.into(), source });
    let pem_error = |what, path: &Path, source| TlsError::Pem { what, path: path.into(), source };
    let chain = CertificateDer::pem_slice_iter(&read("the TLS certificate", cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| pem_error("certificate", cert, source))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.into()));
    }
    let private = PrivateKeyDer::from_pem_slice(&read("the TLS key", key)?)
        .map_err(|source| pem_error("private key", key, source))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|source| TlsError::Key {
        cert: cert.into(),
        key: key.into(),
        source,
    })
}

/// Reloads the certificate on every SIGHUP. The handler is installed by
/// [`Reloader::new`], at start-up: SIGHUP's default action ends the process, so it must
/// be in place before the server announces itself. Without TLS it is never installed and
/// SIGHUP keeps its default.
pub struct Reloader {
    files: Arc<CertificateFiles>,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Reloader {
    /// Installs the SIGHUP handler (must run inside the tokio runtime).
    pub fn new(files: Arc<CertificateFiles>) -> Result<Self, TlsError> {
        #[cfg(unix)]
        let hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(TlsError::Signal)?;
        Ok(Reloader {
            files,
            #[cfg(unix)]
            hangup,
        })
    }

    /// Reloads on each SIGHUP until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = self.hangup() => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            match self.files.reload() {
                Ok(()) => tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded"),
                Err(error) => {
                    tracing::error!(%error, "cannot reload the TLS certificate; the previous one stays in service")
                }
            }
        }
    }

    #[cfg(unix)]
    async fn hangup(&mut self) {
        if self.hangup.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    #[cfg(not(unix))]
    async fn hangup(&mut self) {
        std::future::pending::<()>().await;
    }
}
