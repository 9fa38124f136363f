//! The server: binds, accepts connections, supervises the broker, shuts down.
//!
//! [`Server::run`] owns the listener, the broker task and a `JoinSet` of connection
//! tasks, and runs until one of two things ends it:
//! - the shutdown future fires: the server stops accepting and cancels the shutdown
//!   token (each reader has its writer send Close 1001), or, with
//!   `--drain-duration`, first drains ([`drain`](mod@drain): Close 1012 to the connections
//!   spread over the window);
//! - the broker task ends while the server still runs: the server stops accepting;
//!   the broker's room state died with it, so every writer's outbox has closed and
//!   each connection is closing with 1011 (location ⑤).
//!
//! Either way it then waits at most `shutdown_timeout` for the connections, and, on
//! shutdown, for the broker to return (location ②: all senders gone). It returns
//! `Ok` after a shutdown and [`Error::BrokerStopped`] after a broker failure.
//!
//! Its parts, each in a file of its own: [`admission`] (the rules a handshake must
//! pass, and the answers to those that fail), [`handshake`] (one admitted connection
//! from TCP stream to its end), [`drain`](mod@drain) (the lame-duck drain's schedule), and
//! [`handle`] (a handle for observing a running server). What stays here, a little
//! over the project's usual 400 lines, is the server's own state and its life:
//! built once (binding, keys, certificates), then run (accepting, supervising the
//! broker, the two endings), read together.

pub(crate) mod admission;
mod drain;
pub(crate) mod handle;
pub(crate) mod handshake;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use self::admission::{Admit, Rejection};
pub use self::handle::ServerHandle;
use crate::auth::{Verifier, keys};
use crate::broker::{self, Command, ConnId};
use crate::config::Config;
use crate::connection::{self, settings::Settings};
use crate::endpoint::publish::PublishApi;
use crate::error::{BrokerStop, Error};
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::tls::{self, Tls};

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
    /// With `--auth-key`: what checks tokens (handshakes, the publish API).
    verifier: Option<Verifier>,
    /// What a reload rereads.
    reloader: Arc<Reloader>,
    /// With `--tls-cert`: what serves wss://.
    tls: Option<Tls>,
    /// Cancelled by [`ServerHandle::end_drain`].
    end_drain: CancellationToken,
}

/// Why the accept loop stopped.
enum Ending {
    /// The shutdown future fired.
    Shutdown,
    /// The broker task ended while the server still ran.
    BrokerStopped(BrokerStop),
}

impl Server {
    /// Validates the configuration and binds the listening socket. Fails with
    /// [`Error::Config`] or [`Error::Bind`] (address in use, not permitted).
    pub async fn bind(config: Config) -> Result<Self, Error> {
        // Validation bounds every value that reaches a panicking constructor below
        // (`mpsc::channel`, `Semaphore::new`) or later (timers, tungstenite).
        config.validate()?;
        // The key and certificate files are read before any port is taken: a bad
        // file then fails the start without ever having listened.
        let metrics = Arc::new(Metrics::new(config.redis_url.is_some()));
        let (verifier, auth) = if config.auth_keys.is_empty() {
            (None, None)
        } else {
            let (keys_tx, keys_rx) = watch::channel(Arc::new(keys::load(&config.auth_keys)?));
            let verifier = Verifier::new(
                keys_rx,
                config.auth_issuer.clone(),
                config.auth_audience.clone(),
                config.auth_leeway,
            );
            (Some(verifier), Some((config.auth_keys.clone(), keys_tx)))
        };
        let (tls, tls_files) = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let loaded = tls::load(cert, key, std::time::SystemTime::now())?;
                let tls = Tls::new(&loaded)?;
                metrics.set_tls_not_after(loaded.not_after);
                let files = (cert.clone(), key.clone(), Arc::clone(&tls.resolver));
                (Some(tls), Some(files))
            }
            _ => (None, None),
        };
        let reloader = Arc::new(Reloader { auth, tls: tls_files, metrics: Arc::clone(&metrics) });
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind { addr: config.listen, source })?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?),
            None => None,
        };
        let (broker_tx, broker_rx) = mpsc::channel(config.broker_capacity);
        let admission = Arc::new(Semaphore::new(config.max_connections));
        Ok(Self {
            listener,
            config,
            broker_tx,
            broker_rx,
            admission,
            metrics_listener,
            metrics,
            verifier,
            reloader,
            tls,
            end_drain: CancellationToken::new(),
        })
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
            reloader: Arc::clone(&self.reloader),
            end_drain: self.end_drain.clone(),
        }
    }

    /// Serves until `shutdown` completes (then returns `Ok`) or the broker task ends
    /// on its own (then returns [`Error::BrokerStopped`]).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let handle = self.handle();
        let Self {
            listener,
            config,
            broker_tx,
            broker_rx,
            admission,
            metrics_listener,
            metrics,
            verifier,
            reloader: _,
            tls,
            end_drain: _,
        } = self;

        // The broker, and with --redis-url the bridge to other nodes: the broker holds
        // the bridge's queues, the bridge a weak sender of the broker's inbox (never
        // keeping it alive). The bridge ends when the broker does, or when `run`
        // returns.
        let history = broker::HistoryLimits {
            size: config.history_size,
            ttl: config.history_ttl,
            memory: config.history_memory,
        };
        let settings =
            broker::Settings { echo: !config.no_echo, slow_consumer: config.slow_consumer, history };
        metrics.set_broker_running(true);
        let bridge_stop = CancellationToken::new();
        let _stop_bridge = bridge_stop.clone().drop_guard();
        let bridge = spawn_bridge(&config, &metrics, broker_tx.downgrade(), bridge_stop.clone());
        let mut broker = tokio::spawn(broker::run(broker_rx, settings, Arc::clone(&metrics), bridge));

        // The metrics endpoint runs until `run` returns, so /healthz can report 503
        // while the server drains after a broker failure or during shutdown.
        let metrics_stop = CancellationToken::new();
        let _stop_metrics = metrics_stop.clone().drop_guard();
        let api = Arc::new(PublishApi {
            verifier: verifier.clone(),
            max_message_size: config.max_message_size,
            max_room_length: usize::from(config.max_room_length),
        });
        let metrics_task = metrics_listener.map(|l| {
            let handle = handle.clone();
            tokio::spawn(crate::endpoint::serve(l, Arc::clone(&metrics), handle, api, metrics_stop.clone()))
        });

        let shutdown_token = CancellationToken::new();
        let settings = Arc::new(Settings::from_config(&config, shutdown_token.clone()));
        let mut acceptor = Acceptor {
            shared: Arc::new(connection::Shared {
                broker_tx,
                outbox_capacity: config.outbox_capacity,
                settings: Arc::clone(&settings),
                metrics: Arc::clone(&metrics),
            }),
            admit: Arc::new(Admit::from_config(&config, verifier)),
            admission,
            rejections: Arc::new(Semaphore::new(MAX_PENDING_REJECTIONS)),
            next_id: 0,
            tls,
        };
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        metrics.set_accepting(true);
        match listener.local_addr() {
            Ok(addr) => tracing::info!(listen = %addr, "wsbroker listening"),
            Err(e) => tracing::info!(listen = %config.listen, error = %e, "wsbroker listening"),
        }
        crate::systemd::ready();

        let ending = loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break Ending::Shutdown,
                result = &mut broker => break Ending::BrokerStopped(broker_stop(result)),
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
                    if joined.is_err_and(|e| e.is_panic()) {
                        tracing::error!("a connection task panicked");
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => acceptor.accept(stream, peer, &mut connections),
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; backing off");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                },
            }
        };

        // Stop accepting. From here on only connections hold broker senders, so the
        // broker returns (location ②) once they have all ended.
        drop(listener);
        drop(acceptor);
        metrics.set_accepting(false);
        match &ending {
            Ending::Shutdown if !config.drain_duration.is_zero() => {
                // Lame duck: /healthz is 503 from here on (no longer accepting), and
                // every connection the server closes from now on is told 1012.
                crate::systemd::stopping("draining");
                metrics.set_draining();
                settings.draining.store(true, std::sync::atomic::Ordering::Release);
                drain::run(&handle, config.drain_duration).await;
                tracing::info!(connections = connections.len(), "drain over; shutting down");
                shutdown_token.cancel();
            }
            Ending::Shutdown => {
                crate::systemd::stopping("shutting down");
                tracing::info!(connections = connections.len(), "shutting down");
                shutdown_token.cancel();
            }
            Ending::BrokerStopped(cause) => {
                metrics.set_broker_running(false);
                tracing::error!(%cause, "broker task stopped; closing every connection with 1011");
            }
        }
        drain(&mut connections, config.shutdown_timeout).await;
        if let Ending::Shutdown = ending {
            match tokio::time::timeout(config.shutdown_timeout, &mut broker).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(cause = %broker_stop(Err(e)), "broker failed during shutdown"),
                Err(_) => {
                    tracing::warn!("broker did not finish in time");
                    broker.abort();
                }
            }
            metrics.set_broker_running(false);
        }
        stop_metrics(metrics_stop, metrics_task).await;
        match ending {
            Ending::Shutdown => {
                tracing::info!("shutdown complete");
                Ok(())
            }
            Ending::BrokerStopped(cause) => Err(Error::BrokerStopped(cause)),
        }
    }
}

/// What the accept loop hands each new connection.
struct Acceptor {
    /// The broker's inbox and the connections' settings.
    shared: Arc<connection::Shared>,
    admit: Arc<Admit>,
    /// One permit per admitted connection, held until the connection ends.
    admission: Arc<Semaphore>,
    /// One permit per over-limit connection being answered with 503.
    rejections: Arc<Semaphore>,
    /// The id of the last connection accepted.
    next_id: u64,
    /// With `--tls-cert`: every connection starts with a TLS handshake.
    tls: Option<Tls>,
}

impl Acceptor {
    /// Admits one accepted socket and spawns its task into `connections`, or, over
    /// the connection limit, spawns its 503 (or closes it at once when too many 503s
    /// are already under way).
    fn accept(&mut self, stream: TcpStream, peer: SocketAddr, connections: &mut JoinSet<()>) {
        let Ok(permit) = Arc::clone(&self.admission).try_acquire_owned() else {
            self.shared.metrics.rejected(Rejection::Limit.reason());
            match Arc::clone(&self.rejections).try_acquire_owned() {
                Ok(slot) => {
                    tracing::info!(%peer, "connection limit reached; rejecting with 503");
                    connections.spawn(admission::reject(stream, peer, Arc::clone(&self.admit), slot));
                }
                Err(_) => tracing::info!(%peer, "connection limit reached; closing at once"),
            }
            return;
        };
        self.next_id = self.next_id.wrapping_add(1);
        let id = ConnId(self.next_id);
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let (shared, admit) = (Arc::clone(&self.shared), Arc::clone(&self.admit));
        // The connection's span (the room is recorded once known) is part of its task
        // state, so the task carries it only when debug logging would use it (see
        // "Task size" in the connection module).
        let span = tracing::debug_span!(
            "conn",
            id = id.0,
            peer = %peer,
            room = tracing::field::Empty,
            user = tracing::field::Empty
        );
        match &self.tls {
            None => {
                let opening = std::future::ready(Ok(stream));
                spawn_in(connections, handshake::serve(opening, peer, id, shared, admit, permit), span);
            }
            Some(tls) => {
                let acceptor = tls.acceptor.clone();
                let opening = async move { acceptor.accept(stream).await };
                spawn_in(connections, handshake::serve(opening, peer, id, shared, admit, permit), span);
            }
        }
    }
}

/// Spawns a connection's task, in its span only when debug logging would use it.
fn spawn_in<F: Future<Output = ()> + Send + 'static>(
    connections: &mut JoinSet<()>,
    task: F,
    span: tracing::Span,
) {
    if span.is_disabled() {
        connections.spawn(task);
    } else {
        connections.spawn(tracing::Instrument::instrument(task, span));
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
    if let Some(task) = task
        && let Err(e) = task.await
    {
        tracing::error!(error = %e, "metrics endpoint task failed");
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
