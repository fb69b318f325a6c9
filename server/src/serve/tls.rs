//! TLS on the HTTP listener: the certificate and key from PEM files, handed
//! to every new connection by a resolver whose pair can be swapped while the
//! server runs. [`spawn_reloader`] swaps it on SIGHUP and when the files
//! change (polled), so an ACME client's renewal needs no restart; a bad new
//! pair is logged and the old one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// Why a certificate/key pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no PEM private key")]
    NoKey { path: String },
    #[error("the certificate and key cannot be used: {0}")]
    Invalid(String),
}

/// Where the PEM files are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificate the listener presents; swapped on reload.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// What the files looked like when last read, to notice a change.
    stamp: RwLock<Option<Stamp>>,
}

type Stamp = [(Option<SystemTime>, u64); 2];

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

impl CertStore {
    /// Read and check the pair; an error here stops the server from starting.
    pub fn open(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let stamp = stamp(&files);
        let key = load(&files, &provider)?;
        Ok(Arc::new(Self { files, provider, current: RwLock::new(Arc::new(key)), stamp: RwLock::new(stamp) }))
    }

    /// A TLS acceptor (HTTP/1.1 only: WebSocket upgrades need it) that asks
    /// this store for the certificate on every handshake.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Re-read the files if they changed since the last read (or always,
    /// with `force`). `Ok(true)` when a new pair is now served.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let now = stamp(&self.files);
        {
            let mut last = self.stamp.write().unwrap_or_else(|p| p.into_inner());
            if !force && *last == now {
                return Ok(false);
            }
            // Remember it even if loading fails, so a bad pair is reported
            // once per change rather than on every poll.
            *last = now;
        }
        let key = load(&self.files, &self.provider)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        Ok(true)
    }
}

/// Reload `store` on SIGHUP and whenever the files change (checked every
/// `interval`), for as long as the store is used elsewhere.
pub fn spawn_reloader(store: &Arc<CertStore>, interval: Duration) {
    let weak = Arc::downgrade(store);
    // Registered before returning, so a SIGHUP right after start is handled
    // (an unhandled one would end the process).
    let mut hangup = hangup_signal();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = recv_hangup(&mut hangup) => true,
            };
            let Some(store) = weak.upgrade() else { return };
            let files = store.files.clone();
            // File reads block; keep them off the runtime's worker threads.
            let result = tokio::task::spawn_blocking(move || store.reload(forced)).await;
            match result {
                Ok(Ok(true)) => tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "TLS certificate not reloaded; still serving the previous one"),
                Err(e) => tracing::warn!(error = %e, "TLS reload task failed"),
            }
        }
    });
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the certificate is reloaded by polling only");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

/// The next SIGHUP; never resolves where there is none.
#[cfg(unix)]
async fn recv_hangup(signal: &mut Hangup) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv_hangup(_: &mut Hangup) -> Option<()> {
    std::future::pending().await
}

fn stamp(files: &TlsFiles) -> Option<Stamp> {
    let one = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.modified().ok(), m.len()));
    Some([one(&files.cert)?, one(&files.key)?])
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.display().to_string(), source })
}

/// The chain and key of `files`, checked to belong together.
fn load(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: files.cert.display().to_string() });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey { path: files.key.display().to_string() })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Invalid(e.to_string()))
}
