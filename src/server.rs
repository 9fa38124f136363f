//! The accept loop: binds, admits and upgrades connections, supervises the broker,
//! shuts down.
//!
//! [`Server::run`] owns the listener, the broker task and a `JoinSet` of connection
//! tasks. It ends in one of two ways:
//! - the shutdown future fires: stop accepting, cancel the shutdown token (each
//!   reader has its writer send Close 1001), wait at most `shutdown_timeout` for
//!   connections, then let the broker return (location ②, all senders gone) and
//!   return `Ok`;
//! - the broker task ends while the server still runs: stop accepting. The broker's
//!   room state died with it, so every writer's outbox closes and each connection is
//!   closed with 1011 (location ⑤); return [`Error::BrokerStopped`].
//!
//! Admission, before any WebSocket state exists: at most `--max-connections` admitted
//! sockets (beyond: HTTP 503), the handshake within `--handshake-timeout`, the path
//! within `--max-room-length` (beyond: HTTP 414), the Origin in `--allowed-origin`
//! when given (otherwise: HTTP 403). tungstenite itself rejects a request header
//! larger than 64 KiB.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::{JoinError, JoinSet};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, BrokerStats, Command, ConnId, Hook, Op};
use crate::config::Config;
use crate::connection;
use crate::error::{BrokerStop, Error};
use crate::metrics::{Metrics, RejectReason};

/// After an `accept` error (typically EMFILE: out of file descriptors), wait this long
/// before accepting again, so the loop does not spin while connections close and
/// free descriptors.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// How many over-limit connections may be in the middle of receiving their HTTP 503
/// at once. Beyond this the socket is closed without a response: under a connection
/// flood, answering politely must not itself become unbounded work.
const MAX_PENDING_REJECTIONS: usize = 64;

/// A bound server, ready to [`run`](Self::run).
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    config: Config,
    /// The broker's inbox. The accept loop holds `broker_tx` and clones it into each
    /// connection; the broker task holds `broker_rx` once running.
    broker_tx: mpsc::Sender<Command>,
    broker_rx: mpsc::Receiver<Command>,
    /// One permit per admitted connection, held until the connection ends.
    admission: Arc<Semaphore>,
    /// The `--metrics-listen` listener, bound with the main one.
    metrics_listener: Option<TcpListener>,
    metrics: Arc<Metrics>,
}

/// A cheap handle for observing (and, in tests, injecting faults into) a server.
///
/// It holds only a weak reference to the broker's inbox, so it never keeps the broker
/// alive: once the server has shut down, every call answers `None` / `false`.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    broker_tx: mpsc::WeakSender<Command>,
    admission: Arc<Semaphore>,
    max_connections: usize,
    broker_capacity: usize,
    metrics: Arc<Metrics>,
}

impl Server {
    /// Validates the configuration and binds the listening socket. Fails with
    /// [`Error::Config`] or [`Error::Bind`] (address in use, not permitted).
    pub async fn bind(config: Config) -> Result<Self, Error> {
        // Validation bounds every value that reaches a panicking constructor below
        // (`mpsc::channel`, `Semaphore::new`) or later (`interval_at`, tungstenite).
        config.validate()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind { addr: config.listen, source })?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?),
            None => None,
        };
        let (broker_tx, broker_rx) = mpsc::channel(config.broker_capacity);
        let admission = Arc::new(Semaphore::new(config.max_connections));
        let metrics = Arc::new(Metrics::new(config.redis_url.is_some()));
        Ok(Self { listener, config, broker_tx, broker_rx, admission, metrics_listener, metrics })
    }

    /// The metrics endpoint's address, when `--metrics-listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle for stats and test hooks.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            broker_tx: self.broker_tx.downgrade(),
            admission: Arc::clone(&self.admission),
            max_connections: self.config.max_connections,
            broker_capacity: self.config.broker_capacity,
            metrics: Arc::clone(&self.metrics),
        }
    }

    /// Serves until `shutdown` completes (then returns `Ok`) or the broker task ends
    /// on its own (then returns [`Error::BrokerStopped`]).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let handle = self.handle();
        let Self { listener, config, broker_tx, broker_rx, admission, metrics_listener, metrics } = self;
        let settings = broker::Settings { echo: !config.no_echo, slow_consumer: config.slow_consumer };
        metrics.set_broker_running(true);
        // With --redis-url, the bridge to other nodes: the broker holds its queues'
        // senders, the bridge a weak sender of the broker's inbox (never keeping it
        // alive). It ends when the broker does, or when `run` returns.
        let bridge_stop = CancellationToken::new();
        let _stop_bridge = bridge_stop.clone().drop_guard();
        let bridge = spawn_bridge(&config, &metrics, broker_tx.downgrade(), bridge_stop.clone());
        let mut broker = tokio::spawn(broker::run(broker_rx, settings, Arc::clone(&metrics), bridge));
        // The metrics endpoint runs until `run` returns, so /healthz can report 503
        // while the server drains after a broker failure or during shutdown.
        let metrics_stop = CancellationToken::new();
        let _stop_metrics = metrics_stop.clone().drop_guard();
        let metrics_task = metrics_listener.map(|l| {
            tokio::spawn(crate::metrics::serve(l, Arc::clone(&metrics), handle, metrics_stop.clone()))
        });
        let shutdown_token = CancellationToken::new();
        let admit = Arc::new(Admit::from_config(&config));
        let ctx = Arc::new(connection::Context {
            broker_tx,
            outbox_capacity: config.outbox_capacity,
            writer: Arc::new(connection::writer::Shared::from_config(&config, shutdown_token.clone())),
            metrics: Arc::clone(&metrics),
        });
        let rejections = Arc::new(Semaphore::new(MAX_PENDING_REJECTIONS));
        let mut connections = JoinSet::new();
        let mut next_id: u64 = 0;
        tokio::pin!(shutdown);
        metrics.set_accepting(true);
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
                    Ok((stream, peer)) => match Arc::clone(&admission).try_acquire_owned() {
                        Ok(permit) => {
                            next_id = next_id.wrapping_add(1);
                            let id = ConnId(next_id);
                            let task = serve(stream, peer, id, Arc::clone(&ctx), Arc::clone(&admit), permit);
                            // The connection's span (the room is recorded once known) is
                            // 40 bytes of task state for the connection's life, so the
                            // task carries it only when debug logging would use it.
                            let span =
                                tracing::debug_span!("conn", id = id.0, peer = %peer, room = tracing::field::Empty);
                            if span.is_disabled() {
                                connections.spawn(task);
                            } else {
                                connections.spawn(tracing::Instrument::instrument(task, span));
                            }
                        }
                        Err(_) => {
                            metrics.rejected(Rejection::Limit.reason());
                            match Arc::clone(&rejections).try_acquire_owned() {
                                Ok(slot) => {
                                    tracing::info!(%peer, "connection limit reached; rejecting with 503");
                                    connections.spawn(reject(stream, peer, Arc::clone(&admit), slot));
                                }
                                Err(_) => tracing::info!(%peer, "connection limit reached; closing at once"),
                            }
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; backing off");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                },
            }
        };
        drop(listener);
        metrics.set_accepting(false);
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
                        tracing::error!(cause = %broker_stop(Err(e)), "broker failed during shutdown");
                    }
                    Err(_) => {
                        tracing::warn!("broker did not finish in time");
                        broker.abort();
                    }
                }
                metrics.set_broker_running(false);
                stop_metrics(metrics_stop, metrics_task).await;
                tracing::info!("shutdown complete");
                Ok(())
            }
            Some(cause) => {
                metrics.set_broker_running(false);
                tracing::error!(%cause, "broker task stopped; closing every connection with 1011");
                // The broker's state is gone, so every outbox has closed and each
                // writer is sending 1011 (location ⑤). Wait for them as for shutdown.
                drain(&mut connections, config.shutdown_timeout).await;
                stop_metrics(metrics_stop, metrics_task).await;
                Err(Error::BrokerStopped(cause))
            }
        }
    }
}

/// Starts the Redis bridge when `--redis-url` is set; returns the broker's end.
#[cfg(feature = "redis")]
fn spawn_bridge(
    config: &Config,
    metrics: &Metrics,
    broker_tx: mpsc::WeakSender<Command>,
    stop: CancellationToken,
) -> Option<crate::cluster::BridgeTx> {
    let (url, redis_metrics) = (config.redis_url.clone()?, Arc::clone(metrics.redis()?));
    let (bridge_tx, bridge_rx) = crate::cluster::queues(Arc::clone(&redis_metrics));
    let settings = crate::cluster::RedisSettings {
        url,
        prefix: config.redis_prefix.clone(),
        sharded: config.redis_sharded,
    };
    tokio::spawn(crate::cluster::redis_bridge::run(settings, bridge_rx, broker_tx, redis_metrics, stop));
    Some(bridge_tx)
}

/// Without the `redis` feature, `Config::validate` rejects `--redis-url`.
#[cfg(not(feature = "redis"))]
fn spawn_bridge(
    _: &Config,
    _: &Metrics,
    _: mpsc::WeakSender<Command>,
    _: CancellationToken,
) -> Option<crate::cluster::BridgeTx> {
    None
}

/// Stops the metrics endpoint and waits for it (it stops at once when cancelled).
async fn stop_metrics(stop: CancellationToken, task: Option<tokio::task::JoinHandle<()>>) {
    stop.cancel();
    if let Some(task) = task {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "metrics endpoint task failed");
        }
    }
}

/// Waits for every connection task, at most `timeout`; aborts whatever is left.
async fn drain(connections: &mut JoinSet<()>, timeout: Duration) {
    let all = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(timeout, all).await.is_err() {
        tracing::warn!(remaining = connections.len(), "connections did not close in time; aborting them");
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

/// The admission rules applied to each handshake request.
#[derive(Debug)]
struct Admit {
    max_room_length: usize,
    /// Lower-cased allowed origins; empty means every origin is allowed.
    allowed_origins: Vec<String>,
    handshake_timeout: Duration,
    ws_config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
}

impl Admit {
    fn from_config(config: &Config) -> Self {
        Self {
            max_room_length: usize::from(config.max_room_length),
            allowed_origins: config.allowed_origins.iter().map(|o| normalize_origin(o)).collect(),
            handshake_timeout: config.handshake_timeout,
            ws_config: config.websocket_config(),
        }
    }

    /// Decides on one handshake request: the room name, or why it is rejected.
    fn check(&self, request: &Request) -> Result<Arc<str>, Rejection> {
        // The room is the path; the query string is ignored.
        let path = request.uri().path();
        if path.len() > self.max_room_length {
            return Err(Rejection::RoomTooLong);
        }
        if !self.allowed_origins.is_empty() {
            // Browsers always send Origin on WebSocket handshakes, and cross-site
            // hijacking needs a browser; a request without Origin comes from a
            // non-browser client, which could forge any Origin anyway.
            if let Some(origin) = request.headers().get("origin") {
                let origin = origin.to_str().map(normalize_origin).unwrap_or_default();
                if !self.allowed_origins.contains(&origin) {
                    return Err(Rejection::Origin);
                }
            }
        }
        Ok(Arc::from(path))
    }
}

/// Origins compare case-insensitively and without a trailing slash.
fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Why a handshake was refused before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejection {
    /// `--max-connections` reached: HTTP 503.
    Limit,
    /// Origin not in `--allowed-origin`: HTTP 403.
    Origin,
    /// Path longer than `--max-room-length`: HTTP 414.
    RoomTooLong,
}

impl Rejection {
    /// The `wsbroker_handshake_rejections_total` label.
    fn reason(self) -> RejectReason {
        match self {
            Self::Limit => RejectReason::Limit,
            Self::Origin => RejectReason::Origin,
            Self::RoomTooLong => RejectReason::BadRequest,
        }
    }

    /// The HTTP answer, with a one-line plain-text body.
    fn response(self) -> ErrorResponse {
        let (status, body) = match self {
            Self::Limit => (StatusCode::SERVICE_UNAVAILABLE, "connection limit reached"),
            Self::Origin => (StatusCode::FORBIDDEN, "origin not allowed"),
            Self::RoomTooLong => (StatusCode::URI_TOO_LONG, "room name too long"),
        };
        let mut response = ErrorResponse::new(Some(body.to_owned()));
        *response.status_mut() = status;
        response
    }
}

/// Upgrades one admitted TCP connection and runs it. Handshake failures end here,
/// logged at debug (rejections by rule at info): a client that cannot or may not
/// speak WebSocket affects nobody else. `permit` is held for the connection's life.
///
/// A plain function returning an `async move` block, with the handshake and the
/// connection's setup boxed apart: the task lives as long as the connection, and
/// whatever its state holds is paid for by every idle connection. An `async fn`
/// would store its arguments twice, and the handshake's inputs (the TCP stream, the
/// peer address, the room being decided, the server's shared state) would stay in
/// the task after the handshake. Measured with `-Zprint-type-sizes`: the task's
/// future is 664 bytes, which its 768-byte cell just holds (tokio allocates tasks in
/// 128-byte steps, with 104 bytes of its own per task).
fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    id: ConnId,
    ctx: Arc<connection::Context>,
    admit: Arc<Admit>,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send {
    // The handshake and the connection's setup, boxed, with everything only they
    // use: the task keeps none of it once the connection runs.
    let setup = Box::pin(async move {
        let (ws, room, peer) = handshake(stream, peer, Arc::clone(&admit), Arc::clone(&ctx.metrics)).await?;
        connection::open(ws, admit.ws_config, id, room, peer, &ctx)
    });
    async move {
        // Captured by the block and so held for the connection's life; no binding,
        // which would store a second copy in the task.
        let _ = &permit;
        // Awaited in place (an `if let` would store the future twice in this task).
        futures_util::future::OptionFuture::from(setup.await).await;
    }
}

/// The WebSocket handshake of an admitted connection, within the handshake timeout:
/// the upgraded stream, its room and the peer's address, or `None` when it was
/// refused or failed (counted and logged here).
async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    admit: Arc<Admit>,
    metrics: Arc<Metrics>,
) -> Option<(WebSocketStream<TcpStream>, Arc<str>, SocketAddr)> {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
    let mut room: Option<Arc<str>> = None;
    let mut refused: Option<Rejection> = None;
    #[expect(clippy::result_large_err, reason = "the Err type is fixed by tungstenite's Callback trait")]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        match admit.check(request) {
            Ok(name) => {
                room = Some(name);
                Ok(response)
            }
            Err(rejection) => {
                refused = Some(rejection);
                Err(rejection.response())
            }
        }
    };
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(admit.ws_config));
    let ws = match tokio::time::timeout(admit.handshake_timeout, upgrade).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            // Refused by a rule, or not a valid upgrade at all.
            let reason = refused.map_or(RejectReason::BadRequest, Rejection::reason);
            metrics.rejected(reason);
            tracing::info!(%peer, reason = ?reason, error = %e, "handshake rejected");
            return None;
        }
        Err(_) => {
            metrics.rejected(RejectReason::Timeout);
            tracing::info!(%peer, reason = ?RejectReason::Timeout, "handshake rejected");
            return None;
        }
    };
    let Some(room) = room else {
        // The handshake succeeded only if the callback accepted, which sets `room`;
        // dropping the connection is the safe answer if that ever changes.
        tracing::debug!(%peer, "handshake completed without a room");
        return None;
    };
    Some((ws, room, peer))
}

/// Answers an over-limit connection's handshake with HTTP 503, within the handshake
/// timeout. `_slot` bounds how many of these run at once.
async fn reject(stream: TcpStream, peer: SocketAddr, admit: Arc<Admit>, _slot: OwnedSemaphorePermit) {
    #[expect(clippy::result_large_err, reason = "the Err type is fixed by tungstenite's Callback trait")]
    let callback =
        |_: &Request, _: Response| -> Result<Response, ErrorResponse> { Err(Rejection::Limit.response()) };
    let handshake = tokio_tungstenite::accept_hdr_async(stream, callback);
    // The callback always refuses, so the handshake never succeeds; its error (the
    // 503 sent, or the peer gone, or the timeout) needs nothing more.
    if let Ok(Ok(_)) = tokio::time::timeout(admit.handshake_timeout, handshake).await {
        tracing::debug!(%peer, "over-limit handshake unexpectedly accepted; dropped");
    }
}

impl ServerHandle {
    /// A snapshot of the broker's rooms and counters, or `None` when the broker is gone.
    pub async fn stats(&self) -> Option<BrokerStats> {
        let broker_tx = self.broker_tx.upgrade()?;
        let (reply_tx, reply_rx) = oneshot::channel();
        broker_tx.send(Command::Op(Op::Stats { reply_tx })).await.ok()?;
        drop(broker_tx);
        reply_rx.await.ok()
    }

    /// Admitted connections, including those still in their handshake.
    pub fn open_connections(&self) -> usize {
        self.max_connections.saturating_sub(self.admission.available_permits())
    }

    /// Commands waiting in the broker's inbox (0 once the broker is gone).
    pub fn inbox_depth(&self) -> usize {
        self.broker_tx.upgrade().map_or(0, |tx| self.broker_capacity.saturating_sub(tx.capacity()))
    }

    /// Whether the broker runs and the server accepts connections (what /healthz says).
    pub fn healthy(&self) -> bool {
        self.metrics.healthy()
    }

    /// Configured for Redis but not connected to it (local delivery only).
    pub fn degraded(&self) -> bool {
        self.metrics.degraded()
    }

    /// The metrics, rendered as the `/metrics` endpoint would.
    pub fn render_metrics(&self) -> String {
        crate::metrics::render(&self.metrics, self)
    }

    /// Test fault injection; returns whether the broker accepted the hook.
    #[doc(hidden)]
    pub async fn inject(&self, hook: Hook) -> bool {
        let Some(broker_tx) = self.broker_tx.upgrade() else { return false };
        broker_tx.send(Command::Hook(hook)).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// Every idle connection pays for its two tasks' state, and tokio allocates a task
    /// in 128-byte steps with 104 bytes of its own: this guards the steps measured in
    /// BENCHMARKS.md ("Idle memory"), 768 bytes for the connection's task (its future
    /// at most 664) and 384 for the writer's (at most 280). A change that grows either
    /// past its step costs every idle connection 128 bytes, and fails here first.
    #[tokio::test]
    async fn a_connection_s_tasks_stay_within_their_measured_size() {
        let config = Config::try_parse_from(["wsbroker", "--listen", "127.0.0.1:0"]).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (_client, (stream, peer)) = (client.unwrap(), accepted.unwrap());
        let (broker_tx, _broker_rx) = mpsc::channel(1);
        let shared = Arc::new(connection::writer::Shared::from_config(&config, CancellationToken::new()));
        let ctx = Arc::new(connection::Context {
            broker_tx,
            outbox_capacity: config.outbox_capacity,
            writer: Arc::clone(&shared),
            metrics: Arc::new(Metrics::new(false)),
        });
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let connection_task =
            serve(stream, peer, ConnId(1), ctx, Arc::new(Admit::from_config(&config)), permit);
        let size = std::mem::size_of_val(&connection_task);
        println!("connection task future: {size} bytes");
        assert!(size <= 664, "the connection task's future grew to {size} bytes (at most 664)");

        let writer_size = connection::writer::future_size_for_tests(shared).await;
        println!("writer task future: {writer_size} bytes");
        assert!(writer_size <= 280, "the writer task's future grew to {writer_size} bytes (at most 280)");
    }
}
