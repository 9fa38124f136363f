//! Writes to the socket's write half, which the writer task alone owns.
//!
//! Every write first tries without waiting ([`try_write`]), which is enough whenever
//! the socket buffer has room: no future, no timer, no clock read. Over TLS, what the
//! TLS layer still holds is then pushed into the socket the same way (a flush). Only what does not
//! fit waits, boxed (see [`Soon`]) and bounded by `--write-timeout`, so a stalled peer
//! cannot hold the writer and its buffers forever. A write that fails or times out
//! gives `false`: the connection is then beyond saving and the writer ends without a
//! Close.

use std::io::{self, IoSlice};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::frame::Frame;
use super::soon::Soon;
use super::transport::SocketWrite;

/// Writes `bytes`: first without waiting, then, for whatever did not fit, waiting up
/// to `limit`. The bytes are borrowed (a constant, the batch's one frame) or owned (a
/// control frame, a coalesced batch); owned bytes move into the rest of the write
/// when it must wait, so the writer's task holds no copy of them.
pub(crate) fn write_bytes<'a, W: SocketWrite>(
    socket: &'a mut W,
    bytes: impl Bytes + 'a,
    limit: Duration,
) -> Soon<'a> {
    let written = match try_write(socket, bytes.bytes()) {
        Some(n) => n,
        None => return Soon::Done(false),
    };
    if written >= bytes.bytes().len() {
        return match try_flush(socket) {
            Some(true) => Soon::Done(true),
            Some(false) => Soon::Waiting(Box::pin(bounded(limit, socket.flush()))),
            None => Soon::Done(false),
        };
    }
    Soon::Waiting(Box::pin(async move {
        let rest = bytes.bytes().get(written..).unwrap_or_default();
        bounded(limit, async move {
            socket.write_all(rest).await?;
            socket.flush().await
        })
        .await
    }))
}

/// What [`write_bytes`] writes: borrowed bytes, a shared frame, or a buffer of its own.
pub(crate) trait Bytes: Send {
    fn bytes(&self) -> &[u8];
}

impl Bytes for &[u8] {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl Bytes for Frame {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl Bytes for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// Writes every frame of `frames` with as few syscalls as the socket allows: one for
/// the whole batch when the socket buffer has room.
///
/// A batch up to `coalesce_limit` bytes (`--write-buffer-size`) is copied into one
/// buffer and written with a plain `write`: the kernel copies one contiguous buffer
/// faster than many small iovecs (BENCHMARKS.md, "What each change bought"). The
/// buffer lives only for the write, so idle connections keep nothing. Larger batches
/// go out with vectored writes, uncopied, and a batch of one frame from its shared
/// bytes as they are.
pub(crate) fn write_frames<'a, W: SocketWrite>(
    socket: &'a mut W,
    frames: &'a [Frame],
    coalesce_limit: usize,
    limit: Duration,
) -> Soon<'a> {
    if let [only] = frames {
        return write_bytes(socket, only.as_slice(), limit);
    }
    let total = frames.iter().fold(0usize, |sum, f| sum.saturating_add(f.len()));
    if total > coalesce_limit {
        return Soon::Waiting(Box::pin(bounded(limit, write_vectored_all(socket, frames))));
    }
    let mut buffer = Vec::with_capacity(total);
    for f in frames {
        buffer.extend_from_slice(f);
    }
    write_bytes(socket, buffer, limit)
}

/// Writes what the socket takes without waiting: how many bytes, or `None` when
/// the write failed.
fn try_write<W: SocketWrite>(socket: &mut W, bytes: &[u8]) -> Option<usize> {
    match socket.try_write_now(bytes) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::debug!(error = %e, "write failed; writer ends");
            None
        }
    }
}

/// Pushes what is held above the socket into it without waiting: whether nothing is
/// left held, or `None` when that failed.
fn try_flush<W: SocketWrite>(socket: &mut W) -> Option<bool> {
    match socket.try_flush_now() {
        Ok(flushed) => Some(flushed),
        Err(e) => {
            tracing::debug!(error = %e, "write failed; writer ends");
            None
        }
    }
}

/// Runs a socket write with a deadline; `false` when it failed or timed out.
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

/// Writes `frames` with vectored writes, resuming inside a frame after a partial
/// write, for batches too large to copy; then flushes.
async fn write_vectored_all<W: SocketWrite>(socket: &mut W, frames: &[Frame]) -> io::Result<()> {
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
    socket.flush().await
}

#[cfg(test)]
#[expect(clippy::arithmetic_side_effects, reason = "test code: sizes of a test's own buffers")]
mod tests {
    use std::sync::Arc;

    use tokio::io::AsyncReadExt;
    use tokio::net::tcp::OwnedWriteHalf;
    use tokio::net::{TcpListener, TcpSocket, TcpStream};

    use super::*;

    /// A connected pair: the server side's write half, and a client whose receive
    /// buffer is small, so that large writes fill the socket and must wait.
    async fn pair() -> (OwnedWriteHalf, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpSocket::new_v4().unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        let (client, accepted) =
            tokio::join!(client.connect(listener.local_addr().unwrap()), listener.accept());
        let (_, write_half) = accepted.unwrap().0.into_split();
        (write_half, client.unwrap())
    }

    /// Distinct bytes, so that a byte out of place shows.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// Reads exactly `len` bytes, slowly enough (small reads) that the writer waits.
    async fn read_exactly(client: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut got = vec![0u8; len];
        let mut at = 0;
        while at < len {
            let end = (at + 1500).min(len);
            let n = client.read(&mut got[at..end]).await.unwrap();
            assert!(n > 0, "the socket closed after {at} of {len} bytes");
            at += n;
        }
        got
    }

    #[tokio::test]
    async fn a_write_larger_than_the_socket_buffer_finishes_after_waiting() {
        let (mut socket, mut client) = pair().await;
        let data = pattern(8 << 20, 1);
        let write = write_bytes(&mut socket, data.clone(), Duration::from_secs(10));
        assert!(matches!(write, Soon::Waiting(_)), "8 MiB cannot fit in the socket buffer at once");
        let (ok, got) = tokio::join!(write, read_exactly(&mut client, data.len()));
        assert!(ok);
        assert!(got == data, "the bytes arrived out of order or altered");
    }

    #[tokio::test]
    async fn a_small_batch_is_coalesced_and_written_at_once() {
        let (mut socket, mut client) = pair().await;
        let frames: Vec<Frame> = (0..10).map(|i| Arc::new(pattern(100, i))).collect();
        let write = write_frames(&mut socket, &frames, 16 << 10, Duration::from_secs(10));
        assert!(matches!(write, Soon::Done(true)), "1,000 bytes fit in an empty socket buffer");
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        assert_eq!(read_exactly(&mut client, expected.len()).await, expected);
    }

    /// Frames of odd sizes (empty ones among them) past the coalescing limit go out
    /// with vectored writes; the socket takes them in pieces that end inside frames,
    /// and every byte still arrives once, in order.
    #[tokio::test]
    async fn vectored_writes_resume_inside_a_frame_after_a_partial_write() {
        let (mut socket, mut client) = pair().await;
        let frames: Vec<Frame> = (0..600u32)
            .map(|i| {
                Arc::new(if i % 7 == 3 {
                    Vec::new()
                } else {
                    pattern(1 + (i as usize * 7919) % 40_000, i as u8)
                })
            })
            .collect();
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        assert!(expected.len() > 8 << 20, "more than the socket buffers hold, so writes are partial");
        let write = write_frames(&mut socket, &frames, 16 << 10, Duration::from_secs(10));
        let (ok, got) = tokio::join!(write, read_exactly(&mut client, expected.len()));
        assert!(ok);
        assert!(got == expected, "the bytes arrived out of order, twice or not at all");
    }

    #[tokio::test]
    async fn a_write_the_peer_never_reads_times_out() {
        let (mut socket, _client) = pair().await;
        let frames: Vec<Frame> = (0..64).map(|i| Arc::new(pattern(256 << 10, i))).collect();
        let write = write_frames(&mut socket, &frames, 16 << 10, Duration::from_millis(200));
        assert!(!write.await, "a write that cannot finish within its limit reports failure");
    }
}
