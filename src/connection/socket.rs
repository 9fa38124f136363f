//! The split socket: tungstenite reads, the writer alone writes.
//!
//! After the handshake the TCP stream is split into halves. The writer owns the write
//! half and puts frames on the wire itself (batches of pre-built frames, one vectored
//! write each). The reader runs tungstenite over [`ReadSide`]: reads go to the read
//! half; the few bytes tungstenite writes (Pong replies, the reply to a client's
//! Close) are handed to the writer through a small bounded channel, so there is one
//! writer of the socket and frames never interleave.
//!
//! Every reply is kept (no coalescing into "the latest Pong", though RFC 6455 would
//! allow it): Autobahn case 2.10 expects one Pong per Ping.
//!
//! Bytes a non-compliant client sent after its handshake request but before our
//! response (RFC 6455 forbids it) are not carried over the split.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio_util::sync::PollSender;

use super::frame::Frame;

/// Control frames tungstenite may queue for the writer at once. tungstenite itself
/// keeps at most one pending control reply; when this channel is full its flush
/// waits, so a client flooding pings is slowed by TCP, not buffered without bound.
pub(crate) const CONTROL_CAPACITY: usize = 8;

/// Largest amount of control bytes held before they are handed to the writer: a
/// Close or Pong frame is at most 127 bytes; anything more is a logic error, refused.
const MAX_PENDING: usize = 1024;

/// What tungstenite reads from and "writes" to.
pub(crate) struct ReadSide {
    read: OwnedReadHalf,
    /// To the writer: complete control frames from tungstenite.
    control_tx: PollSender<Frame>,
    /// Bytes written by tungstenite since its last flush.
    pending: Vec<u8>,
}

impl ReadSide {
    pub(crate) fn new(read: OwnedReadHalf, control_tx: tokio::sync::mpsc::Sender<Frame>) -> Self {
        Self { read, control_tx: PollSender::new(control_tx), pending: Vec::new() }
    }

    /// Hands the pending bytes to the writer, waiting for room in the channel.
    fn poll_hand_over(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_empty() {
            return Poll::Ready(Ok(()));
        }
        match self.control_tx.poll_reserve(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "writer gone"))),
            Poll::Ready(Ok(())) => {
                let frames = Arc::new(std::mem::take(&mut self.pending));
                match self.control_tx.send_item(frames) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(_) => Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "writer gone"))),
                }
            }
        }
    }
}

impl Drop for ReadSide {
    fn drop(&mut self) {
        // Last chance for a reply written but not yet handed over.
        if !self.pending.is_empty() {
            if let Some(tx) = self.control_tx.get_ref() {
                if tx.try_send(Arc::new(std::mem::take(&mut self.pending))).is_err() {
                    tracing::debug!("writer gone or busy; final control frame dropped");
                }
            }
        }
    }
}

impl AsyncRead for ReadSide {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadSide {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // Hand over what is already pending first: holding more than one batch would
        // let a ping flood grow this buffer.
        if !self.pending.is_empty() {
            match self.poll_hand_over(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if buf.len() > MAX_PENDING {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidInput, "not a control frame")));
        }
        self.pending.extend_from_slice(buf);
        // Hand over at once: tungstenite does not always flush (its last write before
        // reporting a finished close handshake is never flushed). It writes its whole
        // buffer in one call, so each hand-over is whole frames. If the channel is
        // full the bytes wait here for the next write, flush or drop.
        if let Poll::Ready(Err(e)) = self.poll_hand_over(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_hand_over(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The writer owns the write half and its shutdown.
        Poll::Ready(Ok(()))
    }
}
