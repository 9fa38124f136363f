//! Reload without a restart (SIGHUP in the binary, [`crate::ServerHandle::reload`]
//! in the library): rereads the `--auth-key` files. New handshakes use what was
//! reread; established connections are never touched. A file that is missing or
//! does not parse leaves everything in force as it was, logs one error line and
//! counts `wsbroker_reload_failures_total`.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::auth::keys::{self, KeySet};
use crate::metrics::Metrics;

/// What can be reloaded, and where the new values go.
#[derive(Debug)]
pub struct Reloader {
    /// With `--auth-key`: the key files, and the sending end of the keys in force
    /// (every handshake's verifier reads the other).
    pub(crate) auth: Option<(Vec<PathBuf>, watch::Sender<Arc<KeySet>>)>,
    pub(crate) metrics: Arc<Metrics>,
}

/// Why a reload left the old values in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
}

impl Reloader {
    /// Rereads everything reloadable. All of it takes effect, or none of it.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let result = self.try_reload();
        match &result {
            Ok(()) => tracing::info!("reloaded"),
            Err(e) => {
                self.metrics.reload_failed();
                tracing::error!(error = %e, "reload failed; the previous configuration stays in force");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<(), ReloadError> {
        if let Some((paths, keys_tx)) = &self.auth {
            let keys = keys::load(paths)?;
            keys_tx.send_replace(Arc::new(keys));
        }
        Ok(())
    }
}
