//! The writer task: broker to socket. It is the only writer of the socket.
//!
//! Failure location ⑤ lives here: `recv` on the outbox returns `None` when the broker
//! no longer holds this connection's sender (it deregistered us, or the broker itself
//! is gone). The writer then sends Close 1011 and ends; ending cancels `writer_done`,
//! which stops the reader, and the reader then deregisters (a no-op if the broker
//! already forgot us).
//!
//! It writes each batch of pre-built frames from its outbox with one vectored write,
//! forwards the control frames tungstenite produces on the read side (Pong replies,
//! the reply to a client's Close), pings every `ping_interval`, bounds every socket
//! write by `write_timeout` (a stalled peer cannot hold this task and its buffers
//! forever), and sends the Close the reader asks for: among others 1008 when the
//! broker disconnects a slow consumer and 1001 at shutdown, both of which the reader
//! watches for it (see [`Signals`]).

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::frame::{self, Frame};
use super::reader::deadline_after;
use super::{CLOSE_LINGER, Stop, WRITE_BATCH};

/// What can tell the writer to stop. Only the reader does: the broker's slow-consumer
/// kick and the server's shutdown reach the writer through the reader's `Stop`, so
/// that waking the writer for a message polls one oneshot, not two cancellation
/// tokens (registering with a token and leaving it again on every wake-up: perf
/// put the server's own share of its CPU at 26 % with the tokens here and 23 %
/// without, at 1,000 messages per second to 1,000 members).
pub(crate) struct Signals {
    /// From the reader: which Close to send. A dropped sender (the reader is gone
    /// without a word, which only a panic can cause) also stops the writer.
    pub stop_rx: oneshot::Receiver<Stop>,
    /// The connection's `kick` token, never awaited here: it only tells, when the
    /// broker closes the outbox before the reader's `Stop` arrives, that this is a
    /// slow-consumer disconnect (1008) and not location ⑤ (1011).
    pub kick: CancellationToken,
    /// Cancels the reader's `writer_done` token when the writer returns or unwinds.
    pub _done: DropGuard,
}

/// What every writer shares, behind one `Arc` so that each writer task holds 8
/// bytes of it. It holds no broker sender on purpose: a writer stuck in a write
/// (for at most `write_timeout`) must not keep the broker alive past shutdown.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The server's shutdown token, only to name the Close owed after a `kick`.
    pub shutdown: CancellationToken,
    /// Ping the peer this often.
    pub ping_interval: Duration,
    /// End the connection when a socket write does not complete in this time.
    pub write_timeout: Duration,
    /// `--write-buffer-size`: batches up to this many bytes are coalesced into one
    /// buffer per write.
    pub write_buffer: usize,
}

/// Why the write loop ended: with a Close frame to send, or with nothing to send.
type Ending = Option<(CloseCode, &'static str)>;

/// Writes outbox frames and control frames to the socket until told to stop, the
/// outbox closes, or the socket fails or stalls. Returns the code of the Close frame
/// it sent, if any.
///
/// Its clocks and coalescing limit come from `ctx`.
pub(crate) async fn run(
    mut socket: OwnedWriteHalf,
    mut outbox_rx: mpsc::Receiver<Frame>,
    mut control_rx: futures_channel::mpsc::Receiver<Frame>,
    signals: Signals,
    ctx: Arc<Shared>,
) -> Option<CloseCode> {
    let Signals { mut stop_rx, kick, _done } = signals;
    // Empty until the first message: `recv_many` reserves on first use, so an idle
    // connection holds no batch buffer (measured: 2 KiB per idle connection).
    let mut batch = Vec::new();
    // One timer, because every connection has one and its size counts: the next
    // ping until a stop arrives, then the end of the grace period of the ending that
    // stop asked for (only one stop is ever received; no pings during that second).
    // A sleep reset after each ping rather than a tokio `Interval`, which boxes its
    // sleep.
    let timer = tokio::time::sleep_until(deadline_after(ctx.ping_interval));
    tokio::pin!(timer);
    let mut stop_received = false;
    // Set by `Stop::CloseAfterDrain`: the Close to send once the outbox is drained
    // (or when the grace period ends, whichever comes first).
    let mut drain: Ending = None;
    // Set by `Stop::PeerGone`: forward tungstenite's last control frames (the reply
    // to the client's Close) until the reader is done (or the grace period ends),
    // then end.
    let mut peer_gone = false;
    // Until tungstenite's side (the reader) is gone.
    let mut control_open = true;

    let close: Ending = loop {
        tokio::select! {
            biased;
            stop = &mut stop_rx, if !stop_received => {
                stop_received = true;
                match stop {
                    Ok(Stop::Close(code, reason)) => break Some((code, reason)),
                    Ok(Stop::CloseAfterDrain(code, reason)) => {
                        drain = Some((code, reason));
                        timer.as_mut().reset(deadline_after(CLOSE_LINGER));
                    }
                    Ok(Stop::PeerGone) if !control_open => break None,
                    Ok(Stop::PeerGone) => {
                        peer_gone = true;
                        timer.as_mut().reset(deadline_after(CLOSE_LINGER));
                    }
                    Err(_) => break Some((CloseCode::Error, "internal error")),
                }
            }
            () = &mut timer => {
                if drain.is_some() || peer_gone {
                    // The grace period is over. Drain: send the Close now. Peer
                    // gone: end without one.
                    break drain;
                }
                if !write_bytes(&mut socket, &frame::ping(), ctx.write_timeout).await {
                    break None;
                }
                timer.as_mut().reset(deadline_after(ctx.ping_interval));
            }
            control = control_rx.next(), if control_open => match control {
                Some(frames) => {
                    if !write_bytes(&mut socket, &frames, ctx.write_timeout).await {
                        break None;
                    }
                }
                // The reader's protocol layer is gone: nothing more will come from it.
                None => {
                    control_open = false;
                    if peer_gone {
                        break None;
                    }
                }
            },
            n = outbox_rx.recv_many(&mut batch, WRITE_BATCH), if !peer_gone => {
                if n == 0 {
                    // The broker dropped our outbox sender: after a drain that is the
                    // reader's Close; after a kick, the Close the reader is about to
                    // ask for; otherwise location ⑤.
                    break Some(match drain {
                        Some(close) => close,
                        None if kick.is_cancelled() => super::kick_close(&ctx.shutdown),
                        None => {
                            tracing::debug!("outbox closed by the broker; closing with 1011");
                            (CloseCode::Error, "deregistered by the broker")
                        }
                    });
                }
                let written =
                    write_frames(&mut socket, &batch, ctx.write_buffer, ctx.write_timeout).await;
                batch.clear();
                if !written {
                    break None;
                }
            }
        }
    };
    let (code, reason) = close?;
    if write_bytes(&mut socket, &frame::close(code, reason), ctx.write_timeout).await {
        Some(code)
    } else {
        tracing::debug!("could not send Close {code}");
        None
    }
}

/// Writes `bytes`: first without waiting, which is enough whenever the socket
/// buffer has room (no future, no timer, no clock read), then, for whatever did not
/// fit, waiting up to `limit`. `false` when the write failed or timed out, after
/// which the connection is beyond saving and the writer ends without a Close.
///
/// The waiting part is boxed: it is the uncommon case, and inline its state (a
/// timer and the write) would size every connection's writer task.
async fn write_bytes(socket: &mut OwnedWriteHalf, bytes: &[u8], limit: Duration) -> bool {
    let written = match socket.try_write(bytes) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => {
            tracing::debug!(error = %e, "write failed; writer ends");
            return false;
        }
    };
    match bytes.get(written..) {
        Some(rest) if !rest.is_empty() => Box::pin(bounded(limit, socket.write_all(rest))).await,
        _ => true,
    }
}

/// Runs a socket write with a deadline; `false` when it failed or timed out, after
/// which the connection is beyond saving and the writer ends without a Close.
async fn bounded(limit: Duration, write: impl Future<Output = io::Result<()>>) -> bool {
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

/// Writes every frame of `frames` with as few syscalls as the socket allows: one
/// for the whole batch when the socket buffer has room.
///
/// A batch up to `coalesce_limit` bytes (`--write-buffer-size`) is copied into one
/// buffer and written with a plain `write`: the kernel copies one contiguous buffer
/// faster than many small iovecs (profiled: 14% of fan-out CPU in `_copy_from_iter`
/// with one iovec per frame). The buffer lives only for the write, so idle
/// connections keep nothing. Larger batches go out with vectored writes, uncopied.
/// `false` when the write failed or did not complete within `limit`.
async fn write_frames(
    socket: &mut OwnedWriteHalf,
    frames: &[Frame],
    coalesce_limit: usize,
    limit: Duration,
) -> bool {
    let total = frames.iter().fold(0usize, |sum, f| sum.saturating_add(f.len()));
    if total <= coalesce_limit {
        let mut buffer = Vec::with_capacity(total);
        for f in frames {
            buffer.extend_from_slice(f);
        }
        return write_bytes(socket, &buffer, limit).await;
    }
    Box::pin(bounded(limit, write_vectored_all(socket, frames))).await
}

/// Writes `frames` with vectored writes, for batches too large to copy.
async fn write_vectored_all(socket: &mut OwnedWriteHalf, frames: &[Frame]) -> io::Result<()> {
    // Position: the frame being written and how much of it is already out.
    let (mut index, mut offset) = (0usize, 0usize);
    while index < frames.len() {
        let slices: Vec<IoSlice<'_>> = frames
            .get(index..)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, f)| IoSlice::new(if i == 0 { f.get(offset..).unwrap_or_default() } else { f }))
            .collect();
        let mut written = socket.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        // Advance past what the kernel took, without trusting it to be in range.
        while written > 0 {
            let Some(current) = frames.get(index) else { break };
            let left = current.len().saturating_sub(offset);
            if written >= left {
                written = written.saturating_sub(left);
                index = index.saturating_add(1);
                offset = 0;
            } else {
                offset = offset.saturating_add(written);
                written = 0;
            }
        }
        // Skip empty frames (none are built, but never loop on them).
        while frames.get(index).is_some_and(|f| f.len() <= offset) {
            index = index.saturating_add(1);
            offset = 0;
        }
    }
    Ok(())
}
