//! wss:// (`--tls-cert`, `--tls-key`): rustls through tokio-rustls, TLS 1.2 and 1.3,
//! ALPN `http/1.1`, ring's cryptography.
//!
//! The certificate in force sits behind a resolver that rustls asks on every new
//! handshake, so a reload swaps it for new handshakes while established connections
//! carry on with theirs. A certificate that does not load (missing, unparsable, a key
//! that does not match, already expired) is refused as a whole: at start that is exit
//! status 2, on reload the old certificate stays in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use x509_cert::der::Decode;

/// Why a certificate and key could not be used. Names the files, never a key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert and --tls-key go together: give both, or neither")]
    OnlyOne,
    #[error("--tls-cert {}: {why}", path.display())]
    Cert { path: PathBuf, why: String },
    #[error("--tls-key {}: {why}", path.display())]
    Key { path: PathBuf, why: String },
    #[error("--tls-key {} does not match the certificate in --tls-cert {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("--tls-cert {}: expired at {not_after} (Unix time)", path.display())]
    Expired { path: PathBuf, not_after: u64 },
    #[error("cannot set up TLS: {0}")]
    Config(String),
}

/// A certificate chain and its key, loaded and checked.
#[derive(Debug)]
pub struct Loaded {
    certified: Arc<CertifiedKey>,
    /// When the leaf certificate expires, in seconds since the Unix epoch.
    pub not_after: u64,
}

/// Reads and checks a certificate chain (PEM) and its private key (PEM: PKCS#8, RSA or
/// EC), at time `now`.
pub fn load(cert: &Path, key: &Path, now: SystemTime) -> Result<Loaded, TlsError> {
    let cert_error = |why: String| TlsError::Cert { path: cert.to_path_buf(), why };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(format!("cannot read it: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else { return Err(cert_error("no certificate in it".to_owned())) };
    let parsed =
        x509_cert::Certificate::from_der(leaf).map_err(|e| cert_error(format!("unparsable: {e}")))?;
    let not_after = parsed.tbs_certificate().validity().not_after.to_unix_duration().as_secs();
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Key { path: key.to_path_buf(), why: format!("no usable private key: {e}") })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, private, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            TlsError::Mismatch { cert: cert.to_path_buf(), key: key.to_path_buf() }
        }
        other => TlsError::Key { path: key.to_path_buf(), why: other.to_string() },
    })?;
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if not_after <= now {
        return Err(TlsError::Expired { path: cert.to_path_buf(), not_after });
    }
    Ok(Loaded { certified: Arc::new(certified), not_after })
}

/// The certificate in force, which rustls asks for on every handshake.
#[derive(Debug)]
pub struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock only means a writer panicked while swapping; the value in
        // it is whole either way (a swap is one pointer store).
        Some(Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner)))
    }
}

impl Resolver {
    /// Puts `loaded` in force for every new handshake.
    pub fn replace(&self, loaded: &Loaded) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&loaded.certified);
    }
}

/// What serves TLS: the acceptor for new connections and the resolver it asks.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub resolver: Arc<Resolver>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// A TLS 1.2 and 1.3 server with `loaded` in force.
    pub fn new(loaded: &Loaded) -> Result<Self, TlsError> {
        let resolver = Arc::new(Resolver { current: RwLock::new(Arc::clone(&loaded.certified)) });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { acceptor: TlsAcceptor::from(Arc::new(config)), resolver })
    }
}
