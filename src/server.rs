//! The accept loop: binds, upgrades connections, supervises the broker, shuts down.
//!
//! [`Server::run`] owns the listener, the broker task and a `JoinSet` of connection
//! tasks. It ends in one of two ways:
//! - the shutdown future fires: stop accepting, cancel the shutdown token (writers
//!   send Close 1001), wait at most `shutdown_timeout` for connections, then let the
//!   broker return (location ②, all senders gone) and return `Ok`;
//! - the broker task ends while the server still runs: stop accepting. The broker's
//!   room state died with it, so every writer's outbox closes and each connection is
//!   closed with 1011 (location ⑤); return [`Error::BrokerStopped`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinSet};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_util::sync::CancellationToken;

use crate::broker::{self, BrokerStats, Command, ConnId, Hook, Op};
use crate::config::Config;
use crate::connection;
use crate::error::{BrokerStop, Error};

/// After an `accept` error (typically EMFILE: out of file descriptors), wait this long
/// before accepting again, so the loop does not spin while connections close and
/// free descriptors.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// A bound server, ready to [`run`](Self::run).
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    config: Config,
    /// The broker's inbox. The accept loop holds `broker_tx` and clones it into each
    /// connection; the broker task holds `broker_rx` once running.
    broker_tx: mpsc::Sender<Command>,
    broker_rx: mpsc::Receiver<Command>,
}

/// A cheap handle for observing (and, in tests, injecting faults into) a server.
///
/// It holds only a weak reference to the broker's inbox, so it never keeps the broker
/// alive: once the server has shut down, every call answers `None` / `false`.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    broker_tx: mpsc::WeakSender<Command>,
}

impl Server {
    /// Binds the listening socket. Fails with [`Error::Bind`] when the address is in
    /// use or not permitted.
    pub async fn bind(config: Config) -> Result<Self, Error> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        // `broker_capacity` is validated to be within 1..=MAX_CAPACITY, so `channel`
        // cannot panic; the clamp keeps that true for a hand-built Config too.
        let (broker_tx, broker_rx) =
            mpsc::channel(config.broker_capacity.clamp(1, crate::config::MAX_CAPACITY));
        Ok(Self {
            listener,
            config,
            broker_tx,
            broker_rx,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle for stats and test hooks.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            broker_tx: self.broker_tx.downgrade(),
        }
    }

    /// Serves until `shutdown` completes (then returns `Ok`) or the broker task ends
    /// on its own (then returns [`Error::BrokerStopped`]).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Self {
            listener,
            config,
            broker_tx,
            broker_rx,
        } = self;
        let settings = broker::Settings {
            echo: !config.no_echo,
        };
        let mut broker = tokio::spawn(broker::run(broker_rx, settings));
        let shutdown_token = CancellationToken::new();
        let ctx = connection::Context {
            broker_tx,
            outbox_capacity: config.outbox_capacity.clamp(1, crate::config::MAX_CAPACITY),
            shutdown: shutdown_token.clone(),
        };
        let mut connections = JoinSet::new();
        let mut next_id: u64 = 0;
        tokio::pin!(shutdown);
        match listener.local_addr() {
            Ok(addr) => tracing::info!(listen = %addr, "wsbroker listening"),
            Err(e) => tracing::info!(listen = %config.listen, error = %e, "wsbroker listening"),
        }

        let broker_ended = loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break None,
                result = &mut broker => break Some(broker_stop(result)),
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(e) = joined {
                        if e.is_panic() {
                            tracing::error!("a connection task panicked");
                        }
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        next_id = next_id.wrapping_add(1);
                        let id = ConnId(next_id);
                        connections.spawn(serve(stream, peer, id, ctx.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; backing off");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                },
            }
        };
        drop(listener);
        // Only connections hold broker senders from here on, so the broker returns
        // (location ②) once they have all ended.
        drop(ctx);

        match broker_ended {
            None => {
                tracing::info!(connections = connections.len(), "shutting down");
                shutdown_token.cancel();
                drain(&mut connections, config.shutdown_timeout).await;
                match tokio::time::timeout(config.shutdown_timeout, &mut broker).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(cause = %broker_stop(Err(e)), "broker failed during shutdown")
                    }
                    Err(_) => {
                        tracing::warn!("broker did not finish in time");
                        broker.abort();
                    }
                }
                tracing::info!("shutdown complete");
                Ok(())
            }
            Some(cause) => {
                // The broker's state is gone, so every outbox has closed and each
                // writer is sending 1011 (location ⑤). Wait for them as for shutdown.
                drain(&mut connections, config.shutdown_timeout).await;
                Err(Error::BrokerStopped(cause))
            }
        }
    }
}

/// Waits for every connection task, at most `timeout`; aborts whatever is left.
async fn drain(connections: &mut JoinSet<()>, timeout: Duration) {
    let all = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(timeout, all).await.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "connections did not close in time; aborting them"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Classifies how the broker task ended.
fn broker_stop(result: Result<(), JoinError>) -> BrokerStop {
    match result {
        Ok(()) => BrokerStop::InboxClosed,
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            BrokerStop::Panicked(msg)
        }
        Err(_) => BrokerStop::Cancelled,
    }
}

/// Upgrades one TCP connection and runs it. Handshake failures end here, logged at
/// debug: a client that cannot speak WebSocket affects nobody else.
async fn serve(stream: TcpStream, peer: SocketAddr, id: ConnId, ctx: connection::Context) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
    let mut room: Option<Arc<str>> = None;
    #[expect(
        clippy::result_large_err,
        reason = "the Err type is fixed by tungstenite's Callback trait"
    )]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        // The room is the path; the query string is ignored.
        room = Some(Arc::from(request.uri().path()));
        Ok(response)
    };
    let ws = match tokio_tungstenite::accept_hdr_async(stream, callback).await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "handshake failed");
            return;
        }
    };
    let Some(room) = room else {
        // The handshake succeeded only if the callback ran, so this is unreachable in
        // practice; dropping the connection is the safe answer if it ever is not.
        tracing::debug!(%peer, "handshake completed without a request path");
        return;
    };
    connection::run(ws, id, room, peer, ctx).await;
}

impl ServerHandle {
    /// A snapshot of the broker's rooms and counters, or `None` when the broker is gone.
    pub async fn stats(&self) -> Option<BrokerStats> {
        let broker_tx = self.broker_tx.upgrade()?;
        let (reply_tx, reply_rx) = oneshot::channel();
        broker_tx
            .send(Command::Op(Op::Stats { reply_tx }))
            .await
            .ok()?;
        drop(broker_tx);
        reply_rx.await.ok()
    }

    /// Test fault injection; returns whether the broker accepted the hook.
    #[doc(hidden)]
    pub async fn inject(&self, hook: Hook) -> bool {
        let Some(broker_tx) = self.broker_tx.upgrade() else {
            return false;
        };
        broker_tx.send(Command::Hook(hook)).await.is_ok()
    }
}
