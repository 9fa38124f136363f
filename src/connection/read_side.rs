//! The split socket: tungstenite reads, the writer alone writes.
//!
//! After the handshake the TCP stream is split into halves. The writer owns the write
//! half and puts frames on the wire itself (batches of pre-built frames, one vectored
//! write each). The reader runs tungstenite over [`ReadSide`]: reads go to the read
//! half; the few bytes tungstenite writes (Pong replies, the reply to a client's
//! Close) are handed to the writer through a small bounded channel, so there is one
//! writer of the socket and frames never interleave.
//!
//! Reads from the socket go through one scratch buffer per runtime thread, as
//! uWebSockets does: tungstenite is given a small read window (`--read-buffer-size`)
//! and the bytes it does not take yet are kept per connection only until it does.
//! A connection with nothing in flight, which is most of them, holds no read buffer
//! of its own beyond tungstenite's window, while one socket read still takes up to
//! [`SCRATCH_LEN`] bytes.
//!
//! Every reply is kept (no coalescing into "the latest Pong", though RFC 6455 would
//! allow it): Autobahn case 2.10 expects one Pong per Ping.
//!
//! Bytes a non-compliant client sent after its handshake request but before our
//! response (RFC 6455 forbids it) are not carried over the split.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use futures_channel::mpsc;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame::Frame;

/// Control frames handed to the writer and not yet written (the channel holds one
/// more per sender, and there is one sender). When the writer cannot keep up (its
/// peer does not read), the channel fills and tungstenite's writes wait; tungstenite
/// keeps reading meanwhile and queues later replies in its own write buffer, which
/// it then hands over in one write: see [`MAX_PENDING`].
///
/// The channel is `futures-channel`'s rather than tokio's, unlike the broker's
/// inbox and the outboxes: it is rarely used, and tokio's allocates a block of 32
/// slots and a cache-padded channel up front, for every connection, and needs a
/// boxed future for polling a send; this one allocates a few hundred bytes less
/// (BENCHMARKS.md, "Idle memory") and its sender can be polled directly.
pub(crate) const CONTROL_CAPACITY: usize = 7;

/// The most bytes taken in one write from tungstenite. A Close or Pong frame is at
/// most 127 bytes; tungstenite writes more at once only after its writes had to
/// wait, which means a peer that keeps sending pings without reading the pongs.
/// Such a peer is cut off here (its connection ends, as with any I/O error) rather
/// than buffered: tests/hostile.rs floods pings without reading.
const MAX_PENDING: usize = 1024;

/// Size of each thread's scratch read buffer: the most one socket read takes, and
/// so also the most a connection holds in [`ReadSide::unread`]. 16 KiB holds a few
/// hundred small messages per read; larger reads were no faster (bench/NOTES.md).
pub(crate) const SCRATCH_LEN: usize = 16 << 10;

thread_local! {
    /// Where socket reads land before tungstenite takes them. Only borrowed inside
    /// one synchronous `poll_read`, never across an await.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

/// What tungstenite reads from and "writes" to, over the socket's read half `R`.
pub(crate) struct ReadSide<R> {
    read: R,
    /// Bytes read from the socket that tungstenite has not taken yet; unallocated
    /// whenever it has taken them all.
    unread: BytesMut,
    /// To the writer: complete control frames from tungstenite.
    control_tx: mpsc::Sender<Frame>,
    /// Bytes written by tungstenite since its last flush.
    pending: Vec<u8>,
}

impl<R> ReadSide<R> {
    pub(crate) fn new(read: R, control_tx: mpsc::Sender<Frame>) -> Self {
        Self { read, unread: BytesMut::new(), control_tx, pending: Vec::new() }
    }

    /// Hands the pending bytes to the writer, waiting for room in the channel.
    fn poll_hand_over(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_empty() {
            return Poll::Ready(Ok(()));
        }
        match self.control_tx.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "writer gone"))),
            Poll::Ready(Ok(())) => {
                let frames = Arc::new(std::mem::take(&mut self.pending));
                match self.control_tx.start_send(frames) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(_) => Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "writer gone"))),
                }
            }
        }
    }
}

impl<R> Drop for ReadSide<R> {
    fn drop(&mut self) {
        // Last chance for a reply written but not yet handed over.
        if !self.pending.is_empty()
            && self.control_tx.try_send(Arc::new(std::mem::take(&mut self.pending))).is_err()
        {
            tracing::debug!("writer gone or busy; final control frame dropped");
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ReadSide<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(this.unread.get(..n).unwrap_or_default());
            this.unread.advance(n);
            if this.unread.is_empty() {
                // Give the allocation back: an idle connection keeps none.
                this.unread = BytesMut::new();
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= SCRATCH_LEN {
            return Pin::new(&mut this.read).poll_read(cx, buf);
        }
        SCRATCH.with(|scratch| {
            // Only this function borrows it, and never re-entrantly; if that ever
            // changed, reading straight into tungstenite's window is still correct.
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                return Pin::new(&mut this.read).poll_read(cx, buf);
            };
            let mut into = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.read).poll_read(cx, &mut into) {
                Poll::Ready(Ok(())) => {
                    let read = into.filled();
                    let n = read.len().min(buf.remaining());
                    buf.put_slice(read.get(..n).unwrap_or_default());
                    if let Some(rest) = read.get(n..).filter(|rest| !rest.is_empty()) {
                        this.unread.extend_from_slice(rest);
                    }
                    Poll::Ready(Ok(()))
                }
                other => other,
            }
        })
    }
}

impl<R: Unpin> AsyncWrite for ReadSide<R> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // Hand over what is already pending first: holding more than one batch would
        // let a ping flood grow this buffer.
        ready!(self.poll_hand_over(cx))?;
        if buf.len() > MAX_PENDING {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "control replies backed up: the peer sends pings but does not read the pongs",
            )));
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
