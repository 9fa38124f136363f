//! The writer task: broker to socket.
//!
//! Failure location ⑤ lives here: `recv` on the outbox returns `None` when the broker
//! no longer holds this connection's sender (it deregistered us, or the broker itself
//! is gone). The writer then sends Close 1011 and ends; ending cancels `writer_done`,
//! which stops the reader, and the reader then deregisters (a no-op if the broker
//! already forgot us).

use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Stop, WRITE_BATCH, close_frame};

type WsSink = SplitSink<WebSocketStream<TcpStream>, Message>;

/// Writes outbox messages to the socket until told to stop, the outbox closes, or the
/// socket fails. `_done` cancels the reader's `writer_done` token when this returns
/// (or unwinds).
pub(crate) async fn run(
    mut ws_tx: WsSink,
    mut outbox_rx: mpsc::Receiver<Message>,
    mut stop_rx: oneshot::Receiver<Stop>,
    shutdown: CancellationToken,
    _done: DropGuard,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let close = loop {
        tokio::select! {
            biased;
            stop = &mut stop_rx => break match stop {
                Ok(Stop::Close(code, reason)) => Some((code, reason)),
                Ok(Stop::PeerGone) => None,
                // The reader ended without a word (it can only have panicked).
                Err(_) => Some((CloseCode::Error, "internal error")),
            },
            () = shutdown.cancelled() => break Some((CloseCode::Away, "server shutting down")),
            n = outbox_rx.recv_many(&mut batch, WRITE_BATCH) => {
                if n == 0 {
                    // Location ⑤: the broker dropped our outbox sender.
                    tracing::debug!("outbox closed by the broker; closing with 1011");
                    break Some((CloseCode::Error, "deregistered by the broker"));
                }
                if let Err(e) = write_batch(&mut ws_tx, &mut batch).await {
                    tracing::debug!(error = %e, "write failed; writer ends");
                    break None;
                }
            }
        }
    };
    if let Some((code, reason)) = close {
        if let Err(e) = ws_tx
            .send(Message::Close(Some(close_frame(code, reason))))
            .await
        {
            tracing::debug!(error = %e, "could not send Close");
        }
    }
}

/// Feeds every message of `batch` to the socket and flushes once, so a burst of
/// messages costs one write syscall instead of one per message.
async fn write_batch(
    ws_tx: &mut WsSink,
    batch: &mut Vec<Message>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    for message in batch.drain(..) {
        ws_tx.feed(message).await?;
    }
    ws_tx.flush().await
}
