//! The library's error type: what can end [`crate::Server::bind`] or [`crate::Server::run`].
//!
//! Per-connection errors never appear here: they end at their connection (logged once).

use std::io;
use std::net::SocketAddr;

/// Why the server could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid (only reachable with a hand-built `Config`; the
    /// command line is validated before the server is built).
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The listening socket could not be bound (address in use, permission, ...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the configuration.
        addr: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// An `--auth-key` file cannot be used.
    #[error(transparent)]
    AuthKey(#[from] crate::auth::keys::KeyError),
    /// The broker task ended while the server was running. Every connection was
    /// closed with 1011; the process should exit non-zero so a supervisor restarts it.
    #[error("the broker task stopped: {0}")]
    BrokerStopped(BrokerStop),
}

/// How the broker task ended while it was still needed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerStop {
    /// Failure location ②: its inbox was closed and drained, so `recv` returned `None`.
    #[error("its inbox closed (recv returned None)")]
    InboxClosed,
    /// The task panicked; the message is the panic payload when it was a string.
    #[error("it panicked: {0}")]
    Panicked(String),
    /// The task was cancelled by the runtime (only happens while the runtime shuts down).
    #[error("it was cancelled")]
    Cancelled,
}
