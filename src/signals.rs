//! The binary's signals: SIGINT and SIGTERM shut the server down, SIGHUP reloads.

use crate::ServerHandle;

/// Completes when the process receives SIGINT or SIGTERM. If a signal handler cannot
/// be installed, that signal is logged and ignored rather than shutting down at once.
pub async fn shutdown() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

/// Reloads the server's reloadable configuration on every SIGHUP, for as long as it
/// runs (see [`ServerHandle::reload`]).
pub async fn reload_on_hangup(server: ServerHandle) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
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
