//! The writer task: broker to socket.
//!
//! Failure location ⑤ lives here: `recv` on the outbox returns `None` when the broker
//! no longer holds this connection's sender (it deregistered us, or the broker itself
//! is gone). The writer then sends Close 1011 and ends; ending cancels `writer_done`,
//! which stops the reader, and the reader then deregisters (a no-op if the broker
//! already forgot us).
//!
//! The writer also pings every `ping_interval`, bounds every socket write by
//! `write_timeout` (a stalled peer cannot hold this task and its buffers forever),
//! and closes with 1008 when the broker disconnects it as a slow consumer.

use std::time::Duration;

use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::reader::deadline_after;
use super::{CLOSE_LINGER, Stop, WRITE_BATCH, close_frame};

type WsSink = SplitSink<WebSocketStream<TcpStream>, Message>;

/// What can tell the writer to stop.
pub(crate) struct Signals {
    /// From the reader: which Close to send. A dropped sender (the reader is gone
    /// without a word, which only a panic can cause) also stops the writer.
    pub stop_rx: oneshot::Receiver<Stop>,
    /// The server is shutting down: send Close 1001.
    pub shutdown: CancellationToken,
    /// The broker disconnected this slow consumer: send Close 1008.
    pub kick: CancellationToken,
    /// Cancels the reader's `writer_done` token when the writer returns or unwinds.
    pub _done: DropGuard,
}

/// The writer's clocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub ping_interval: Duration,
    pub write_timeout: Duration,
}

/// Why the write loop ended: with a Close frame to send, or with nothing to send.
type Ending = Option<(CloseCode, &'static str)>;

/// Writes outbox messages to the socket until told to stop, the outbox closes, or the
/// socket fails or stalls. Returns the code of the Close frame it sent, if any.
pub(crate) async fn run(
    mut ws_tx: WsSink,
    mut outbox_rx: mpsc::Receiver<Message>,
    signals: Signals,
    timing: Timing,
) -> Option<CloseCode> {
    let Signals { mut stop_rx, shutdown, kick, _done } = signals;
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    // The interval is validated to be non-zero (interval_at panics on zero).
    let mut ping = tokio::time::interval_at(deadline_after(timing.ping_interval), timing.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stop_received = false;
    // Set by `Stop::CloseAfterDrain`: the Close to send once the outbox is drained,
    // and the latest time to send it anyway.
    let mut drain: Option<((CloseCode, &'static str), Instant)> = None;

    let close: Ending = loop {
        tokio::select! {
            biased;
            stop = &mut stop_rx, if !stop_received => {
                stop_received = true;
                match stop {
                    Ok(Stop::Close(code, reason)) => break Some((code, reason)),
                    Ok(Stop::CloseAfterDrain(code, reason)) => {
                        drain = Some(((code, reason), deadline_after(CLOSE_LINGER)));
                    }
                    Ok(Stop::PeerGone) => break None,
                    Err(_) => break Some((CloseCode::Error, "internal error")),
                }
            }
            () = kick.cancelled() => {
                tracing::debug!("disconnected as a slow consumer; closing with 1008");
                break Some((CloseCode::Policy, "slow consumer"));
            }
            () = shutdown.cancelled() => break Some((CloseCode::Away, "server shutting down")),
            () = sleep_until_drain(drain) => break drain.map(|(close, _)| close),
            _ = ping.tick() => {
                let ping_frame = Message::Ping(Bytes::new());
                if !bounded(timing.write_timeout, send_flush(&mut ws_tx, ping_frame)).await {
                    break None;
                }
            }
            n = outbox_rx.recv_many(&mut batch, WRITE_BATCH) => {
                if n == 0 {
                    // The broker dropped our outbox sender: after a drain that is the
                    // reader's Close; otherwise location ⑤.
                    break Some(match drain {
                        Some((close, _)) => close,
                        None => {
                            tracing::debug!("outbox closed by the broker; closing with 1011");
                            (CloseCode::Error, "deregistered by the broker")
                        }
                    });
                }
                if !bounded(timing.write_timeout, write_batch(&mut ws_tx, &mut batch)).await {
                    break None;
                }
            }
        }
    };
    let (code, reason) = close?;
    let frame = Message::Close(Some(close_frame(code, reason)));
    if bounded(timing.write_timeout, send_flush(&mut ws_tx, frame)).await {
        Some(code)
    } else {
        tracing::debug!("could not send Close {code}");
        None
    }
}

/// Runs a socket write with a deadline; `false` when it failed or timed out, after
/// which the connection is beyond saving and the writer ends without a Close.
async fn bounded(
    limit: Duration,
    write: impl Future<Output = Result<(), tokio_tungstenite::tungstenite::Error>>,
) -> bool {
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "write failed; writer ends");
            false
        }
        Err(_) => {
            tracing::debug!("write timed out (peer stalled); writer ends");
            false
        }
    }
}

async fn send_flush(
    ws_tx: &mut WsSink,
    message: Message,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    ws_tx.send(message).await
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

/// Sleeps until the drain deadline, or forever when not draining.
async fn sleep_until_drain(drain: Option<((CloseCode, &'static str), Instant)>) {
    match drain {
        Some((_, deadline)) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
