//! The binary's signals: SIGINT and SIGTERM stop the server (the first starts the
//! drain, if any; a second ends it at once), SIGHUP reloads.

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::ServerHandle;

/// SIGINT and SIGTERM, listened for from creation on, so that none sent between two
/// waits is missed. A signal whose handler cannot be installed is logged and never
/// arrives (rather than stopping the server at once).
#[derive(Debug)]
pub struct StopSignals {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
}

impl StopSignals {
    pub fn new() -> Self {
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for {name}");
                None
            }
        };
        Self {
            interrupt: listen(SignalKind::interrupt(), "SIGINT"),
            terminate: listen(SignalKind::terminate(), "SIGTERM"),
        }
    }

    /// Completes at the next SIGINT or SIGTERM.
    pub async fn next(&mut self) {
        async fn recv(s: Option<&mut Signal>) {
            // A stream that has ended (the runtime is going away) never fires again.
            let fired = match s {
                Some(s) => s.recv().await.is_some(),
                None => false,
            };
            if !fired {
                std::future::pending::<()>().await;
            }
        }
        tokio::select! {
            () = recv(self.interrupt.as_mut()) => tracing::info!("SIGINT received"),
            () = recv(self.terminate.as_mut()) => tracing::info!("SIGTERM received"),
        }
    }
}

impl Default for StopSignals {
    fn default() -> Self {
        Self::new()
    }
}

/// The server's stop: completes at the first SIGINT or SIGTERM, and leaves a task
/// that ends a drain at the second (see [`ServerHandle::end_drain`]).
pub async fn stop(server: ServerHandle) {
    let mut signals = StopSignals::new();
    signals.next().await;
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!("second stop signal: closing the remaining connections now");
        server.end_drain();
    });
}

/// Reloads the server's reloadable configuration on every SIGHUP, for as long as it
/// runs (see [`ServerHandle::reload`]).
pub async fn reload_on_hangup(server: ServerHandle) {
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload is not available");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP received; reloading");
        server.reload();
    }
}
