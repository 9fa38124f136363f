//! The reader task: socket to broker.
//!
//! Failure location ① lives here: the send to the broker's inbox.
//! - `Err`: the broker's receiver is gone, so the broker is no longer working. The
//!   reader tells the writer (oneshot) to send Close 1011 and end, then winds down.
//! - Full inbox: `try_send` finds no room, and `send().await` then waits until the
//!   broker catches up. While it waits
//!   nothing reads this socket, so the kernel's receive buffer fills and TCP flow
//!   control stops the client: the server holds at most one message per reader.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use futures_util::StreamExt as _;
use tokio::io::AsyncRead;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use super::close::{Reason, Stop, StopTx, WriterEnd};
use super::read_side::ReadSide;
use super::settings::Session;
use super::{CLOSE_LINGER, SIGNALS_AT_LEAST_EVERY, Shared};
use crate::broker::{Command, ConnId, Op, Origin};

/// What a reader needs besides its socket and its stop sender, owned by the
/// connection's task for its whole life and borrowed by [`Reader::run`] as one
/// reference.
pub(crate) struct Reader {
    pub id: ConnId,
    pub room: Arc<str>,
    /// The broker's inbox and the connections' settings (the server's shutdown
    /// token among them).
    pub shared: Arc<Shared>,
    /// Cancelled by the broker to disconnect this connection as a slow consumer, and
    /// with the server's shutdown token, its parent, when the server shuts down.
    pub kick: CancellationToken,
    /// When the peer was last heard from (touched for every frame read; the writer
    /// keeps the idle deadline), and whether it may publish.
    pub session: Arc<Session>,
}

/// How the reader ended.
pub(crate) struct ReaderEnd {
    /// The code of the peer's Close frame, if it sent one (1005, "no status", for a
    /// Close without a code).
    pub peer_close: Option<CloseCode>,
    /// How the writer ended, if the reader saw it end (its handle is then not to be
    /// awaited again).
    pub writer_end: Option<WriterEnd>,
}

/// What woke the reader.
enum Wake {
    /// The writer ended.
    WriterEnded(WriterEnd),
    /// `kick` was cancelled: a slow-consumer disconnect, or shutdown.
    Kicked,
    /// The close linger is over.
    LingerOver,
    /// A frame, or the end of the stream (`None`).
    Frame {
        item: Option<Result<Message, WsError>>,
        /// Taken before the signals were polled (see `SIGNALS_AT_LEAST_EVERY`).
        before_signals: bool,
    },
}

impl Reader {
    /// Reads client messages and forwards data messages to the broker until the
    /// connection ends. `stop_tx` is consumed when the reader decides how the writer
    /// should end. `writer_task` is the writer task's handle: it completes when the
    /// writer ends, for any reason, and is polled only until then (a `JoinHandle`
    /// panics when polled again after it completed): not once the close linger,
    /// which its completing starts, has started.
    ///
    /// A plain function returning an `async move` block (see "Task size" in the
    /// connection module).
    #[expect(clippy::manual_async_fn, reason = "an async fn would store its arguments twice")]
    pub(crate) fn run<'a, R: AsyncRead + Unpin + Send + 'static>(
        &'a self,
        ws_rx: &'a mut WebSocketStream<ReadSide<R>>,
        stop_tx: &'a mut StopTx,
        writer_task: &'a mut JoinHandle<WriterEnd>,
    ) -> impl Future<Output = ReaderEnd> + Send + 'a {
        async move {
            let mut peer_close = None;
            // What the writer's handle gave, once it completed (it is not polled again).
            let mut writer_end: Option<WriterEnd> = None;
            // The end of the close linger, made when the writer ends: from then on we
            // only wait (briefly) for the peer to finish the close handshake. Boxed,
            // because inline its state would be part of every connection's task for
            // the connection's whole life. (The idle deadline is the writer's.)
            let mut linger: Option<Pin<Box<Sleep>>> = None;

            // Frames taken in a row before the signals were polled.
            let mut reads: u8 = 0;

            loop {
                // In a block of its own, so that nothing in it (the poll's result,
                // the frame) is held in the task's state across the wait below.
                let publish = {
                    // Registered with the token only if it is polled, so only when
                    // the socket has nothing to read.
                    let kicked = self.kick.cancelled();
                    tokio::pin!(kicked);
                    // What the poll reads, copied in rather than borrowed: the poll's
                    // captures are task state while it waits.
                    let (signals_first, closing, stopped) =
                        (reads >= SIGNALS_AT_LEAST_EVERY, linger.is_some(), stop_tx.is_sent());
                    let (rx, writer_done, mut kicked, mut linger_end) =
                        (&mut *ws_rx, &mut *writer_task, kicked, linger.as_mut());
                    let wake = std::future::poll_fn(move |cx| {
                        // The socket first, so that a frame that is already there is
                        // taken without polling the signals (they registered with
                        // this task when the socket last ran dry, and wake it if they
                        // fire). Every `SIGNALS_AT_LEAST_EVERY` frames, and whenever
                        // the socket has nothing, the signals are polled first, in
                        // their order of precedence, so a client that never stops
                        // sending is still kicked and still learns that its writer
                        // has ended.
                        if !signals_first && let Poll::Ready(item) = rx.poll_next_unpin(cx) {
                            return Poll::Ready(Wake::Frame { item, before_signals: true });
                        }
                        if !closing && let Poll::Ready(joined) = Pin::new(&mut *writer_done).poll(cx) {
                            return Poll::Ready(Wake::WriterEnded(super::writer_end(joined)));
                        }
                        if !closing && !stopped && kicked.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Wake::Kicked);
                        }
                        if let Some(end) = linger_end.as_mut()
                            && end.as_mut().poll(cx).is_ready()
                        {
                            return Poll::Ready(Wake::LingerOver);
                        }
                        if signals_first && let Poll::Ready(item) = rx.poll_next_unpin(cx) {
                            return Poll::Ready(Wake::Frame { item, before_signals: false });
                        }
                        Poll::Pending
                    });
                    let item = match wake.await {
                        Wake::WriterEnded(end) => {
                            writer_end = Some(end);
                            linger = Some(Box::pin(tokio::time::sleep(CLOSE_LINGER)));
                            continue;
                        }
                        Wake::Kicked => {
                            stop_tx.send(self.kicked());
                            continue;
                        }
                        Wake::LingerOver => {
                            tracing::debug!("peer did not finish the close handshake in time");
                            break;
                        }
                        Wake::Frame { item, before_signals } => {
                            reads = if before_signals { reads.saturating_add(1) } else { 0 };
                            item
                        }
                    };
                    // Any frame, pongs included, keeps the connection from idling out.
                    self.session.touch(&self.shared.settings);
                    // Decided synchronously, so that no message is held in the task's
                    // state across the wait below.
                    match item {
                        Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                            if linger.is_some() || stop_tx.is_sent() {
                                // Closing: data after our Close is read only to reach the
                                // peer's Close reply, and is not forwarded.
                                continue;
                            }
                            if !self.session.may_publish() {
                                // Its token covers joining this room, not publishing to
                                // it: nothing is delivered, and the connection ends.
                                tracing::debug!("publish not permitted; closing with 1008");
                                stop_tx.send(Stop::Close(Reason::PublishNotPermitted));
                                continue;
                            }
                            // Framed once here; every recipient's writer sends these same
                            // bytes.
                            let Some(frame) = super::frame::data(&message) else { continue };
                            Command::Op(Op::Publish {
                                origin: Origin::Member(self.id),
                                room: Arc::clone(&self.room),
                                frame,
                            })
                        }
                        // Pings are answered and Close frames replied to by the protocol
                        // layer on the next read; pongs need nothing. Keep reading so
                        // those flush.
                        Some(Ok(Message::Close(frame))) => {
                            peer_close = Some(frame.map_or(CloseCode::Status, |f| f.code));
                            stop_tx.send(Stop::PeerGone);
                            continue;
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                        Some(Err(e)) => {
                            match close_reason_for(&e) {
                                Some(reason) => {
                                    let code = reason.code();
                                    tracing::debug!(error = %e, "protocol violation; closing with {code}");
                                    stop_tx.send(Stop::CloseAfterDrain(reason));
                                }
                                None => {
                                    tracing::debug!(error = %e, "connection lost");
                                    stop_tx.send(Stop::PeerGone);
                                }
                            }
                            break;
                        }
                        None => {
                            // The stream ended: close handshake complete, or EOF.
                            stop_tx.send(Stop::PeerGone);
                            break;
                        }
                    }
                };
                let Some(publish) = self.try_forward(publish, stop_tx) else { continue };
                // Location ①, full: wait for room. Boxed because it is rare, and
                // inline its state would size every connection's task for its whole
                // life.
                if let Some(end) = Box::pin(self.wait_for_room(publish, stop_tx, writer_task)).await {
                    writer_end = Some(end);
                    linger = Some(Box::pin(tokio::time::sleep(CLOSE_LINGER)));
                }
            }
            ReaderEnd { peer_close, writer_end }
        }
    }

    /// Location ①: hands `publish` to the broker if its inbox has room. Returns it
    /// when the inbox is full; `None` when it was sent or the broker is gone.
    fn try_forward(&self, publish: Command, stop_tx: &mut StopTx) -> Option<Command> {
        match self.shared.broker_tx.try_send(publish) {
            Ok(()) => None,
            Err(TrySendError::Closed(_)) => {
                broker_gone(stop_tx);
                None
            }
            Err(TrySendError::Full(publish)) => Some(publish),
        }
    }

    /// Location ①, full: waits until the broker's inbox has room for `publish`,
    /// which stops this socket being read meanwhile. Gives the message up when the
    /// connection is closing; returns how the writer ended if that is why. Entered
    /// only before the close linger, so the writer's handle has not completed yet.
    async fn wait_for_room(
        &self,
        publish: Command,
        stop_tx: &mut StopTx,
        writer_task: &mut JoinHandle<WriterEnd>,
    ) -> Option<WriterEnd> {
        tokio::select! {
            biased;
            sent = self.shared.broker_tx.send(publish) => {
                if sent.is_err() {
                    broker_gone(stop_tx);
                }
                None
            }
            joined = writer_task => Some(super::writer_end(joined)),
            () = self.kick.cancelled() => {
                stop_tx.send(self.kicked());
                None
            }
        }
    }
}

impl Reader {
    /// The stop owed once `kick` is cancelled.
    fn kicked(&self) -> Stop {
        Stop::Close(Reason::for_kick(&self.shared.settings))
    }
}

/// Location ①, `Err`: the broker is gone. Close with 1011.
fn broker_gone(stop_tx: &mut StopTx) {
    tracing::warn!("broker inbox closed; closing connection with 1011");
    stop_tx.send(Stop::Close(Reason::BrokerUnavailable));
}

/// The Close owed to a peer whose input made tungstenite fail, per RFC 6455
/// section 7.4.1; `None` when the connection itself is gone (nothing to send to).
pub(crate) fn close_reason_for(e: &WsError) -> Option<Reason> {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match e {
        WsError::Capacity(_) => Some(Reason::TooBig),
        WsError::Utf8(_) => Some(Reason::InvalidUtf8),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some(Reason::ProtocolError),
        _ => None,
    }
}
