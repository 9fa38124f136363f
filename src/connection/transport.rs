//! The socket under a connection, plain TCP or TLS over TCP, and how it splits into
//! the read half tungstenite reads (through `read_side`) and the write half the writer
//! alone writes (through `write`).
//!
//! A plain socket splits into tokio's owned halves, which need no lock. A TLS stream
//! is one state machine for both directions, so its halves share it under a mutex,
//! held only for one poll at a time. (tokio's own `split` would do the same, but
//! panics if the lock was poisoned; here a poisoned lock, which only a panic inside
//! rustls could leave, is an I/O error that ends this connection alone.)

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::server::TlsStream;

/// A connection's socket, and its halves.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// What tungstenite reads.
    type Read: AsyncRead + Unpin + Send + 'static;
    /// What the writer writes.
    type Write: SocketWrite;
    fn split(self) -> (Self::Read, Self::Write);
}

/// The writer's half of a socket: writes that first try without waiting, which is
/// enough whenever the socket buffer has room.
pub(crate) trait SocketWrite: AsyncWrite + Unpin + Send + 'static {
    /// Writes what the socket takes now: how many bytes (0 if none), or the error.
    fn try_write_now(&mut self, bytes: &[u8]) -> io::Result<usize>;
    /// Pushes anything written but still held above the socket (TLS records) into
    /// it, without waiting: whether nothing is left held.
    fn try_flush_now(&mut self) -> io::Result<bool>;
}

impl Transport for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

impl SocketWrite for OwnedWriteHalf {
    fn try_write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self.try_write(bytes) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn try_flush_now(&mut self) -> io::Result<bool> {
        // A TCP socket holds nothing above the kernel.
        Ok(true)
    }
}

/// One half of a TLS stream, sharing it with the other.
pub(crate) struct TlsHalf(Arc<Mutex<TlsStream<TcpStream>>>);

impl Transport for TlsStream<TcpStream> {
    type Read = TlsHalf;
    type Write = TlsHalf;

    fn split(self) -> (TlsHalf, TlsHalf) {
        let shared = Arc::new(Mutex::new(self));
        (TlsHalf(Arc::clone(&shared)), TlsHalf(shared))
    }
}

impl TlsHalf {
    /// Polls the shared stream under its lock.
    fn poll_with<R>(
        &self,
        f: impl FnOnce(Pin<&mut TlsStream<TcpStream>>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match self.0.lock() {
            Ok(mut stream) => f(Pin::new(&mut *stream)),
            Err(PoisonError { .. }) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "TLS state lost: an earlier operation on this connection panicked",
            ))),
        }
    }

    /// Polls once with a waker that does nothing: the result if there is one now.
    fn now<R>(
        &self,
        f: impl FnOnce(Pin<&mut TlsStream<TcpStream>>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Option<io::Result<R>> {
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_with(|stream| f(stream, &mut cx)) {
            Poll::Ready(result) => Some(result),
            Poll::Pending => None,
        }
    }
}

impl AsyncRead for TlsHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.poll_with(|stream| stream.poll_read(cx, buf))
    }
}

impl AsyncWrite for TlsHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_with(|stream| stream.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_with(|stream| stream.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_with(|stream| stream.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_with(|stream| stream.poll_shutdown(cx))
    }
}

impl SocketWrite for TlsHalf {
    fn try_write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.now(|stream, cx| stream.poll_write(cx, bytes)).unwrap_or(Ok(0))
    }

    fn try_flush_now(&mut self) -> io::Result<bool> {
        self.now(|stream, cx| stream.poll_flush(cx)).map_or(Ok(false), |flushed| flushed.map(|()| true))
    }
}
