//! Reload without a restart (SIGHUP in the binary, [`crate::ServerHandle::reload`]
//! in the library): rereads the TLS certificate and key and the `--auth-key` files.
//! New handshakes use what was reread; established connections are never touched. A
//! file that is missing or does not load (an unparsable, mismatched or expired
//! certificate among them) leaves everything in force as it was, logs one error line
//! and counts `wsbroker_reload_failures_total`.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::auth::keys::{self, KeySet};
use crate::metrics::Metrics;
use crate::tls;

/// What can be reloaded, and where the new values go.
#[derive(Debug)]
pub struct Reloader {
    /// With `--auth-key`: the key files, and the sending end of the keys in force
    /// (every handshake's verifier reads the other).
    pub(crate) auth: Option<(Vec<PathBuf>, watch::Sender<Arc<KeySet>>)>,
    /// With `--tls-cert`: the certificate and key files, and the resolver every TLS
    /// handshake asks for the certificate in force.
    pub(crate) tls: Option<(PathBuf, PathBuf, Arc<tls::Resolver>)>,
    pub(crate) metrics: Arc<Metrics>,
}

/// Why a reload left the old values in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

impl Reloader {
    /// Rereads everything reloadable. All of it takes effect, or none of it.
    pub fn reload(&self) -> Result<(), ReloadError> {
        crate::systemd::reloading();
        let result = self.try_reload();
        crate::systemd::reloaded(result.is_ok());
        match &result {
            Ok(()) => tracing::info!("reloaded"),
            Err(e) => {
                self.metrics.reload_failed();
                tracing::error!(error = %e, "reload failed; the previous configuration stays in force");
            }
        }
        result
    }

    /// Loads everything first, then puts it all in force.
    fn try_reload(&self) -> Result<(), ReloadError> {
        let keys = self.auth.as_ref().map(|(paths, _)| keys::load(paths)).transpose()?;
        let certificate = self
            .tls
            .as_ref()
            .map(|(cert, key, _)| tls::load(cert, key, std::time::SystemTime::now()))
            .transpose()?;
        if let (Some((_, keys_tx)), Some(keys)) = (&self.auth, keys) {
            keys_tx.send_replace(Arc::new(keys));
        }
        if let (Some((_, _, resolver)), Some(certificate)) = (&self.tls, certificate) {
            resolver.replace(&certificate);
            self.metrics.set_tls_not_after(certificate.not_after);
        }
        Ok(())
    }
}
