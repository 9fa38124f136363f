//! One WebSocket connection: a reader task and a writer task around one socket.
//!
//! ```text
//!  socket ──► reader ──(broker inbox, bounded)──► broker ──(outbox, bounded)──► writer ──► socket
//!             ▲ │  └──────────── stop_tx (oneshot: "send this Close and end") ────────► │
//!             │ ◄──────────────── the writer's JoinHandle (completes when it ends) ─────┘
//!             └── kick (token: the broker's slow-consumer disconnect, or shutdown)
//! ```
//!
//! This module holds the connection's lifecycle ([`open`], then `Connection::run`:
//! register, read, deregister); each task and each shared piece has a file of its
//! own: [`reader`] (location ①), [`writer`] (location ⑤), [`write`](mod@write) (the socket
//! writes), [`read_side`] (what tungstenite reads from), [`frame`] (server frames),
//! [`close`] (Close reasons, and the reader's word to the writer), [`settings`]
//! (what every connection reads, and the reader's clock the writer watches), and
//! [`soon`] (an operation that nearly always completes at once).
//!
//! The two tasks stop each other by signalling, never by `abort()`, so the writer can
//! always send its Close frame: the reader tells the writer which Close to send
//! through a oneshot; the writer's task handle, which the reader watches, completes
//! when the writer ends for any reason (a panic included), which makes the reader
//! wind down. Whoever else ends a connection tells the reader, through `kick`, a
//! child of the server's shutdown token: the broker cancels it for a slow consumer
//! (1008), the server's shutdown cancels every one (1001). The writer waits on
//! nothing else than the oneshot, so waking it for a message stays cheap.
//!
//! # Task size
//!
//! A connection's two tasks live as long as the connection, and what their futures
//! hold is most of what an idle connection costs: tokio allocates a task in 128-byte
//! steps, so one byte too many costs every idle connection 128 (BENCHMARKS.md, "Idle
//! memory", has the figures; the size test in `server::accept` guards the steps).
//! Hence the shapes found throughout this module:
//! - Task bodies are plain functions returning an `async move` block, not `async fn`s:
//!   an `async fn` stores its arguments twice (as arguments and as the moved locals).
//! - Set-up is synchronous ([`open`]), so its temporaries never enter a task.
//! - Rare waits (a full broker inbox, a socket that cannot take a write at once, the
//!   close linger) are boxed, so the task holds a pointer, not their state; common
//!   operations return a [`soon::Soon`], done at once or the boxed rest.
//! - Whatever a wait polls is gathered in one struct borrowed whole, and values the
//!   next step needs are copied in rather than borrowed piecemeal.

pub(crate) mod close;
pub(crate) mod frame;
pub(crate) mod read_side;
pub(crate) mod reader;
pub(crate) mod settings;
pub(crate) mod soon;
pub(crate) mod transport;
pub(crate) mod write;
pub(crate) mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinHandle};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::Instrument;

use self::close::{Reason, Stop, StopTx, WriterEnd};
use self::frame::Frame;
use self::settings::{Session, Settings, Terms};
use self::soon::to_broker;
use self::transport::Transport;
use crate::broker::{Command, ConnId, Delivery, Op};
use crate::metrics::Metrics;

/// After our Close frame is sent, how long the reader keeps reading for the peer's
/// Close reply before dropping the socket. Waiting for the reply lets the peer read
/// our Close before the TCP connection goes away; a peer that never replies costs at
/// most this long.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// The reader reads the socket, and the writer takes its outbox, before polling
/// their other signals while input keeps coming, so that a wake-up for a message
/// polls nothing else. At most this many frames (reader) or batches (writer) in a
/// row are taken that way; then the signals (the writer's end, `kick`, the stop,
/// the timer, control frames) are polled first, so a busy socket or outbox cannot
/// starve them.
pub(crate) const SIGNALS_AT_LEAST_EVERY: u8 = 16;

/// What every connection's reader side shares with the server, behind one `Arc`.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The sending end of the broker's inbox; the broker task holds the receiver.
    pub broker_tx: mpsc::Sender<Command>,
    /// Capacity of each connection's outbox.
    pub outbox_capacity: usize,
    /// What every connection reads; each writer holds it too.
    pub settings: Arc<Settings>,
    /// Counts closes by code.
    pub metrics: Arc<Metrics>,
}

/// Sets up one upgraded connection and returns the future that runs it to its end:
/// the writer is started here as its own task, and the returned future registers
/// the connection with the broker, runs the reader, then deregisters it.
///
/// Synchronous on purpose (see "Task size").
pub(crate) fn open<T: Transport>(
    ws: WebSocketStream<T>,
    ws_config: WebSocketConfig,
    id: ConnId,
    (room, terms, delivery): (Arc<str>, Terms, Delivery),
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Option<impl Future<Output = ()> + Send + use<T>> {
    // The connection's span, when debug logging is on (see `server::accept`).
    let span = tracing::Span::current();
    span.record("room", tracing::field::display(&room));
    // Split the socket: the writer owns the write half; tungstenite reads the other,
    // and hands its control replies to the writer (see `read_side`).
    let (read_half, write_half) = ws.into_inner().split();
    let (control_tx, control_rx) = futures_channel::mpsc::channel(read_side::CONTROL_CAPACITY);
    // Wrapping a raw socket completes at once; `None` cannot happen, and dropping
    // the connection is the safe answer if it ever did.
    let Some(ws_rx) = WebSocketStream::from_raw_socket(
        read_side::ReadSide::new(read_half, control_tx),
        Role::Server,
        Some(ws_config),
    )
    .now_or_never() else {
        tracing::debug!("protocol layer not ready; connection dropped");
        return None;
    };
    // The outbox: the broker holds `outbox_tx` (registered by `run`), the writer
    // holds `outbox_rx`. It closes when the broker deregisters this connection.
    let (outbox_tx, outbox_rx) = mpsc::channel(shared.outbox_capacity);
    // Reader to writer: which Close to send before ending. The reader's end sends
    // one even if the reader ends without a word (e.g. it panicked): 1011.
    let (stop_tx, stop_rx) = oneshot::channel();
    // To the reader: cancelled by the broker to disconnect a slow consumer
    // (`--slow-consumer disconnect`: Close 1008), or with its parent at shutdown
    // (1001). The reader then tells the writer which Close to send.
    let kick = shared.settings.shutdown.child_token();

    // When the peer was last heard from (stored by the reader, read by the writer,
    // whose one timer serves the pings, the idle deadline and the token's expiry), and
    // what it was admitted with.
    let session = Arc::new(Session::new(&shared.settings, terms));

    let signals = writer::Signals { stop_rx, kick: kick.clone(), session: Arc::clone(&session) };
    let writer = writer::run(write_half, outbox_rx, control_rx, signals, Arc::clone(&shared.settings));
    // In the connection's span only when there is one: a span is part of the
    // writer's task state (see "Task size").
    let writer_task =
        if span.is_disabled() { tokio::spawn(writer) } else { tokio::spawn(writer.instrument(span)) };
    tracing::debug!(conn = id.0, room = %room, %peer, "connection open");
    let connection = Connection::<T> {
        reader: reader::Reader { id, room, shared: Arc::clone(shared), kick, session },
        ws_rx: Some(ws_rx),
        registration: Some(Box::new(Registration { outbox_tx, delivery })),
        stop_tx: StopTx::new(stop_tx),
        writer_task,
    };
    Some(connection.run())
}

/// What a connection hands the broker when it registers.
struct Registration {
    /// The sending end of its outbox.
    outbox_tx: mpsc::Sender<Frame>,
    /// Plain, or sequenced (`wsbroker.v1`) and where to resume.
    delivery: Delivery,
}

/// A connection after [`open`]: what its reader side holds for its whole life.
///
/// `run` uses the fields in place and takes the `Option`s rather than moving them
/// into locals: a moved-out copy would be stored in the task beside the original.
/// The peer's address is kept only in the tracing span, and the registration is
/// built when it is sent, not kept.
struct Connection<T: Transport> {
    /// Who this connection is and what it is told by; the reader borrows it whole.
    reader: reader::Reader,
    ws_rx: Option<WebSocketStream<read_side::ReadSide<T::Read>>>,
    /// What the registration, sent first, hands the broker. Boxed, so that the task
    /// holds a pointer, and only until the registration is sent.
    registration: Option<Box<Registration>>,
    stop_tx: StopTx,
    /// Completes when the writer ends, for any reason: the reader watches it (writer
    /// to reader: "I have ended"), and the connection learns from it which Close the
    /// writer sent. A task handle rather than a oneshot of its own: it is there
    /// anyway, and polling it costs an atomic load, with no lock and no registering
    /// anew for every message.
    writer_task: JoinHandle<WriterEnd>,
}

impl<T: Transport> Connection<T> {
    /// Registers with the broker, runs the reader, deregisters, and counts the close.
    /// A plain function returning an `async move` block (see "Task size").
    #[expect(clippy::manual_async_fn, reason = "an async fn would store self twice")]
    fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            let joined = match self.registration.take() {
                Some(registration) => {
                    let me = &self.reader;
                    let (id, room, kick) = (me.id, Arc::clone(&me.room), me.kick.clone());
                    let Registration { outbox_tx, delivery } = *registration;
                    let join = Command::Op(Op::Join { id, room, outbox_tx, kick, delivery });
                    to_broker(&me.shared.broker_tx, join).await
                }
                None => false,
            };
            let ws_rx = if joined { self.ws_rx.as_mut() } else { None };
            // Destructured at once: only what is used after the wait below is then
            // held across it (see "Task size").
            let reader::ReaderEnd { peer_close, writer_end: seen } = match ws_rx {
                Some(ws_rx) => self.reader.run(ws_rx, &mut self.stop_tx, &mut self.writer_task).await,
                None => {
                    // Location ①: the broker is gone before we could even register.
                    tracing::debug!("broker gone before registration");
                    self.stop_tx.send(Stop::Close(Reason::BrokerUnavailable));
                    reader::ReaderEnd { peer_close: None, writer_end: None }
                }
            };
            // The protocol layer goes first: dropping it closes the control channel,
            // which a writer forwarding the last control frames waits for. A stop
            // the reader left unsent goes with it: a writer still waiting for a word
            // then ends (with 1011, as if the reader had died).
            drop(self.ws_rx.take());
            self.stop_tx.abandon();

            let writer_end = wind_down(&self.reader, &mut self.writer_task, seen).await;
            // The close handshake's code: ours if we sent a Close, else the peer's.
            let close_code = writer_end.close_sent.or(peer_close).map(u16::from);
            self.reader.shared.metrics.closed(close_code);
            // The peer's address is in the span.
            tracing::debug!(conn = self.reader.id.0, room = %self.reader.room, close_code, "connection closed");
        }
    }
}

/// Deregisters the connection, then learns how the writer ended: from the reader, if
/// it saw the writer end, or else by waiting for the writer's handle (a completed
/// handle must not be polled again). One future for both waits, so that what the
/// connection holds across them is stored once in its task.
async fn wind_down(
    reader: &reader::Reader,
    writer_task: &mut JoinHandle<WriterEnd>,
    seen: Option<WriterEnd>,
) -> WriterEnd {
    // Unknown ids are a no-op in the broker, so this is safe even when the broker
    // already dropped us (location ⑤); if the broker itself is gone (location ①)
    // there is nothing left to deregister from.
    let leave = Command::Op(Op::Leave { id: reader.id, room: Arc::clone(&reader.room) });
    if !to_broker(&reader.shared.broker_tx, leave).await {
        tracing::debug!("broker gone; nothing to deregister from");
    }
    match seen {
        Some(end) => end,
        None => writer_end(writer_task.await),
    }
}

/// How the writer ended, from its task's handle: as it said, or without a Close if it
/// panicked or was cancelled (logged here; the connection ends either way).
fn writer_end(joined: Result<WriterEnd, JoinError>) -> WriterEnd {
    match joined {
        Ok(end) => end,
        Err(e) if e.is_panic() => {
            tracing::error!("writer task panicked");
            WriterEnd { close_sent: None }
        }
        Err(_) => {
            tracing::debug!("writer task cancelled");
            WriterEnd { close_sent: None }
        }
    }
}
