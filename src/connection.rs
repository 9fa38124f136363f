//! One WebSocket connection: a reader task and a writer task around one socket.
//!
//! ```text
//!  socket ──► reader ──(broker inbox, bounded)──► broker ──(outbox, bounded)──► writer ──► socket
//!             ▲ │  └──────────── stop_tx (oneshot: "send this Close and end") ────────► │
//!             │ ◄──────────────── the writer's JoinHandle (completes when it ends) ─────┘
//!             └── kick (token: the broker's slow-consumer disconnect, or shutdown)
//! ```
//!
//! The two tasks stop each other by signalling, never by `abort()`, so the writer can
//! always send its Close frame: the reader tells the writer which Close to send
//! through a oneshot; the writer's task handle, which the reader watches, completes
//! when the writer ends for any reason (a panic included), which makes the reader
//! wind down.
//! Whoever else ends a connection tells the reader, through `kick`, a child of the
//! server's shutdown token: the broker cancels it for a slow consumer (1008), the
//! server's shutdown cancels every one (1001). The writer waits on nothing else than
//! the oneshot, so waking it for a message stays cheap (see `writer::Signals`).

pub(crate) mod frame;
pub(crate) mod reader;
pub(crate) mod socket;
pub(crate) mod writer;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinHandle};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::frame::Frame;
use crate::broker::{Command, ConnId, Op};
use crate::metrics::Metrics;

/// After our Close frame is sent, how long the reader keeps reading for the peer's
/// Close reply before dropping the socket. Waiting for the reply lets the peer read
/// our Close before the TCP connection goes away; a peer that never replies costs at
/// most this long.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How many outbox frames the writer takes at once and writes with one syscall.
/// Larger batches mean fewer syscalls per delivery under load: 256 measured 24%
/// more fan-out deliveries per CPU-second than 64 (alternating runs). It stays well
/// under `writev`'s limit of 1024 iovecs, bounds how long the writer goes without
/// looking at its stop signals, and costs an 8 KiB batch buffer (256 `Frame`s) on a
/// connection once it has received a burst; an idle connection has none.
pub(crate) const WRITE_BATCH: usize = 256;

/// The reader reads the socket, and the writer takes its outbox, before polling
/// their other signals while input keeps coming, so that a wake-up for a message
/// polls nothing else. At most this many frames (reader) or batches (writer) in a
/// row are taken that way; then the signals (the writer's end, `kick`, the stop,
/// the timer, control frames) are polled first, so a busy socket or outbox cannot
/// starve them.
pub(crate) const SIGNALS_AT_LEAST_EVERY: u8 = 16;

/// The Close owed to a connection whose `kick` token was cancelled: 1001 when the
/// server is shutting down (which cancels every `kick`), else 1008 for a slow
/// consumer the broker disconnected.
pub(crate) fn kick_close(shutdown: &CancellationToken) -> Reason {
    if shutdown.is_cancelled() {
        Reason::ShuttingDown
    } else {
        tracing::debug!("disconnected as a slow consumer; closing with 1008");
        Reason::SlowConsumer
    }
}

/// Why the server closes a connection: the code and the reason text of its Close
/// frame. One byte rather than a code and a string, because the writer keeps it
/// while it decides how to end, in a task that lives as long as the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// 1001: nothing arrived for `--idle-timeout`.
    IdleTimeout,
    /// 1001: the server is shutting down.
    ShuttingDown,
    /// 1008: disconnected as a slow consumer (`--slow-consumer disconnect`).
    SlowConsumer,
    /// 1011: location ①, the broker is gone.
    BrokerUnavailable,
    /// 1011: location ⑤, the broker no longer tracks this connection.
    Deregistered,
    /// 1011: the reader ended without a word (only a panic can do that).
    InternalError,
    /// 1009: a message or frame over the size limits.
    TooBig,
    /// 1007: a text message that is not UTF-8.
    InvalidUtf8,
    /// 1002: any other protocol violation.
    ProtocolError,
}

impl Reason {
    /// The Close frame's status code.
    pub(crate) fn code(self) -> CloseCode {
        match self {
            Self::IdleTimeout | Self::ShuttingDown => CloseCode::Away,
            Self::SlowConsumer => CloseCode::Policy,
            Self::BrokerUnavailable | Self::Deregistered | Self::InternalError => CloseCode::Error,
            Self::TooBig => CloseCode::Size,
            Self::InvalidUtf8 => CloseCode::Invalid,
            Self::ProtocolError => CloseCode::Protocol,
        }
    }

    /// The Close frame's reason text.
    pub(crate) fn text(self) -> &'static str {
        match self {
            Self::IdleTimeout => "idle timeout",
            Self::ShuttingDown => "server shutting down",
            Self::SlowConsumer => "slow consumer",
            Self::BrokerUnavailable => "broker unavailable",
            Self::Deregistered => "deregistered by the broker",
            Self::InternalError => "internal error",
            Self::TooBig => "message too big",
            Self::InvalidUtf8 => "invalid UTF-8",
            Self::ProtocolError => "protocol error",
        }
    }
}

/// What the reader asks the writer to do before ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The peer closed (its Close frame is answered by the protocol layer) or
    /// vanished: there is nothing left for the writer to send.
    PeerGone,
    /// Send this Close frame now, then end.
    Close(Reason),
    /// First deliver what the broker already queued for this connection (until the
    /// broker, handling the reader's deregistration, closes the outbox), then send
    /// this Close frame. Used for protocol errors, so that messages the client sent
    /// before its bad frame are still echoed to it, in order (RFC 6455 strictness).
    CloseAfterDrain(Reason),
}

/// Everything a connection needs from the server.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    /// The sending end of the broker's inbox.
    pub broker_tx: mpsc::Sender<Command>,
    /// Capacity of this connection's outbox.
    pub outbox_capacity: usize,
    /// What every writer shares.
    pub writer: Arc<writer::Shared>,
    /// Counts closes by code.
    pub metrics: Arc<Metrics>,
}

/// Sets up one upgraded connection and returns the future that runs it to its end:
/// the writer is started here as its own task, and the returned future registers
/// the connection with the broker, runs the reader, then deregisters it.
///
/// Synchronous on purpose: the upgraded stream and the setup's temporaries then
/// never become part of the connection's task, which lives as long as the
/// connection (task state is most of what an idle connection costs).
pub(crate) fn open(
    ws: WebSocketStream<TcpStream>,
    ws_config: WebSocketConfig,
    id: ConnId,
    room: Arc<str>,
    peer: SocketAddr,
    ctx: &Arc<Context>,
) -> Option<impl Future<Output = ()> + Send + use<>> {
    // The connection's span, when debug logging is on (see `server::run`).
    let span = tracing::Span::current();
    span.record("room", tracing::field::display(&room));
    // Split the socket: the writer owns the write half; tungstenite reads the other,
    // and hands its control replies to the writer (see `socket`).
    let (read_half, write_half) = ws.into_inner().into_split();
    let (control_tx, control_rx) = futures_channel::mpsc::channel(socket::CONTROL_CAPACITY);
    // Wrapping a raw socket completes at once; `None` cannot happen, and dropping
    // the connection is the safe answer if it ever did.
    let Some(ws_rx) = WebSocketStream::from_raw_socket(
        socket::ReadSide::new(read_half, control_tx),
        Role::Server,
        Some(ws_config),
    )
    .now_or_never() else {
        tracing::debug!("protocol layer not ready; connection dropped");
        return None;
    };
    // The outbox: the broker holds `outbox_tx` (registered by `run`), the writer
    // holds `outbox_rx`. It closes when the broker deregisters this connection.
    let (outbox_tx, outbox_rx) = mpsc::channel(ctx.outbox_capacity);
    // Reader to writer: which Close to send before ending. Dropping the sender (the
    // reader ended without a word, e.g. it panicked) also stops the writer.
    let (stop_tx, stop_rx) = oneshot::channel();
    // To the reader: cancelled by the broker to disconnect a slow consumer
    // (`--slow-consumer disconnect`: Close 1008), or with its parent at shutdown
    // (1001). The reader then tells the writer which Close to send.
    let kick = ctx.writer.shutdown.child_token();

    // When the peer was last heard from: stored by the reader, read by the writer,
    // whose one timer serves both the pings and the idle deadline.
    let heard = Arc::new(writer::Heard::now(&ctx.writer));

    let signals = writer::Signals { stop_rx, kick: kick.clone(), heard: Arc::clone(&heard) };
    let writer_task = writer::run(write_half, outbox_rx, control_rx, signals, Arc::clone(&ctx.writer));
    // In the connection's span only when there is one: a span is 40 bytes of the
    // writer's task state, which would otherwise cost a 128-byte step of its task.
    let writer = if span.is_disabled() {
        tokio::spawn(writer_task)
    } else {
        tokio::spawn(writer_task.instrument(span))
    };
    tracing::debug!(conn = id.0, room = %room, %peer, "connection open");
    let connection = Connection {
        reader: reader::Reader { id, room, ctx: Arc::clone(ctx), kick, heard },
        ws_rx: Some(ws_rx),
        outbox_tx: Some(outbox_tx),
        stop_tx: Some(stop_tx),
        writer,
    };
    Some(connection.run())
}

/// Deregisters the connection, then learns which Close the writer sent: from the
/// reader, if it saw the writer end, or else by waiting for the writer's handle (a
/// completed handle must not be polled again). One future for both waits, so that
/// what the connection holds across them is stored once in its task.
async fn wind_down(reader: &reader::Reader, writer: &mut JoinHandle<Sent>, seen: Option<Sent>) -> Sent {
    // Unknown ids are a no-op in the broker, so this is safe even when the broker
    // already dropped us (location ⑤); if the broker itself is gone (location ①)
    // there is nothing left to deregister from.
    let leave = Command::Op(Op::Leave { id: reader.id, room: Arc::clone(&reader.room) });
    if !to_broker(&reader.ctx.broker_tx, leave).await {
        tracing::debug!("broker gone; nothing to deregister from");
    }
    match seen {
        Some(sent) => sent,
        None => writer_sent(writer.await),
    }
}

/// What a writer task gives when it ends: the code of the Close frame it sent, if any.
pub(crate) type Sent = Option<CloseCode>;

/// What the writer's handle gave: the Close it sent, or none if it panicked or was
/// cancelled (logged here; the connection ends either way).
fn writer_sent(joined: Result<Sent, JoinError>) -> Sent {
    match joined {
        Ok(sent) => sent,
        Err(e) if e.is_panic() => {
            tracing::error!("writer task panicked");
            None
        }
        Err(_) => {
            tracing::debug!("writer task cancelled");
            None
        }
    }
}

/// An operation that nearly always completes at once: done, with its result, or the
/// boxed rest of it. A plain enum rather than an `async fn`, so that a task awaiting
/// it holds these 16 bytes instead of the whole state of the operation; and, unlike
/// `future::Ready`, polling it again after it completed cannot panic.
pub(crate) enum Soon<'a> {
    Done(bool),
    Waiting(Pin<Box<dyn Future<Output = bool> + Send + 'a>>),
}

impl Future for Soon<'_> {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<bool> {
        match self.get_mut() {
            Soon::Done(ok) => std::task::Poll::Ready(*ok),
            Soon::Waiting(rest) => rest.as_mut().poll(cx),
        }
    }
}

/// Sends `command` to the broker's inbox: at once when it has room, or else in a
/// boxed wait, whose state (tokio's `send` future is 248 bytes) would otherwise be
/// part of every connection's task for the connection's whole life. Resolves to
/// `false` when the broker is gone.
fn to_broker(tx: &mpsc::Sender<Command>, command: Command) -> Soon<'_> {
    match tx.try_send(command) {
        Ok(()) => Soon::Done(true),
        Err(TrySendError::Closed(_)) => Soon::Done(false),
        Err(TrySendError::Full(command)) => {
            Soon::Waiting(Box::pin(async move { tx.send(command).await.is_ok() }))
        }
    }
}

/// A connection after [`open`]: what its reader side holds for its whole life.
///
/// `run` uses the fields in place and takes the `Option`s rather than moving them
/// into locals: a moved-out copy would be stored in the task beside the original.
/// The peer's address is kept only in the tracing span, and the registration is
/// built when it is sent, not kept: every byte here is held for the connection's
/// whole life.
struct Connection {
    /// Who this connection is and what it is told by; the reader borrows it whole.
    reader: reader::Reader,
    ws_rx: Option<WebSocketStream<socket::ReadSide>>,
    /// Handed to the broker in the registration, sent first.
    outbox_tx: Option<mpsc::Sender<Frame>>,
    stop_tx: Option<oneshot::Sender<Stop>>,
    /// Completes when the writer ends, for any reason: the reader watches it (writer
    /// to reader: "I have ended"), and the connection learns from it which Close the
    /// writer sent. A task handle rather than a oneshot of its own: it is there
    /// anyway, and polling it costs an atomic load, with no lock and no registering
    /// anew for every message.
    writer: JoinHandle<Sent>,
}

impl Connection {
    /// A plain function returning an `async move` block rather than an `async fn`:
    /// an `async fn` taking `mut self` stores `self` twice in its state (measured
    /// with `-Zprint-type-sizes`: 1,696 bytes against 1,120).
    #[expect(clippy::manual_async_fn, reason = "an async fn would store self twice")]
    fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            let joined = match self.outbox_tx.take() {
                Some(outbox_tx) => {
                    let me = &self.reader;
                    let (id, room, kick) = (me.id, Arc::clone(&me.room), me.kick.clone());
                    let join = Command::Op(Op::Join { id, room, outbox_tx, kick });
                    to_broker(&me.ctx.broker_tx, join).await
                }
                None => false,
            };
            let ws_rx = if joined { self.ws_rx.as_mut() } else { None };
            let (peer_close, writer_seen) = match ws_rx {
                Some(ws_rx) => self.reader.run(ws_rx, &mut self.stop_tx, &mut self.writer).await,
                None => {
                    // Location ①: the broker is gone before we could even register.
                    tracing::debug!("broker gone before registration");
                    if self
                        .stop_tx
                        .take()
                        .is_some_and(|tx| tx.send(Stop::Close(Reason::BrokerUnavailable)).is_err())
                    {
                        tracing::debug!("writer already ended");
                    }
                    (None, None)
                }
            };
            // The protocol layer goes first: dropping it closes the control channel,
            // which a writer forwarding the last control frames waits for. The stop
            // sender goes with it, if the reader left it unused: a writer still
            // waiting for a word then ends (as it would if the reader had died).
            drop(self.ws_rx.take());
            drop(self.stop_tx.take());

            let sent_close = wind_down(&self.reader, &mut self.writer, writer_seen).await;
            // The close handshake's code: ours if we sent a Close, else the peer's.
            let close_code = sent_close.or(peer_close).map(u16::from);
            self.reader.ctx.metrics.closed(close_code);
            // The peer's address is in the span.
            tracing::debug!(conn = self.reader.id.0, room = %self.reader.room, close_code, "connection closed");
        }
    }
}
