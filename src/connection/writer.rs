//! The writer task: broker to socket. It is the only writer of the socket.
//!
//! Failure location ⑤ lives here: `recv` on the outbox returns `None` when the broker
//! no longer holds this connection's sender (it deregistered us, or the broker itself
//! is gone). The writer then sends Close 1011 and ends; its task's handle, which
//! the reader watches, then completes, which stops the reader, and the reader then
//! deregisters (a no-op if the broker already forgot us).
//!
//! It writes each batch of pre-built frames from its outbox with one vectored write,
//! forwards the control frames tungstenite produces on the read side (Pong replies,
//! the reply to a client's Close), pings every `ping_interval`, closes with 1001 once
//! nothing has been heard from the peer for `idle_timeout` (the reader notes every
//! frame in [`Heard`]), bounds every socket write by `write_timeout` (a stalled peer
//! cannot hold this task and its buffers forever), and sends the Close the reader
//! asks for: among others 1008 when the broker disconnects a slow consumer and 1001
//! at shutdown, both of which the reader watches for it (see [`Signals`]).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use super::frame::{self, Frame};
use super::{CLOSE_LINGER, Reason, SIGNALS_AT_LEAST_EVERY, Stop, WRITE_BATCH};
use crate::config::Config;

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
    /// When the reader last heard from the peer; the writer closes the connection
    /// with 1001 once that is `idle_timeout` ago.
    pub heard: Arc<Heard>,
}

/// What every writer shares, behind one `Arc` so that each writer task holds 8
/// bytes of it. It holds no broker sender on purpose: a writer stuck in a write
/// (for at most `write_timeout`) must not keep the broker alive past shutdown.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Cancelled when the server shuts down. Every connection's `kick` is a child of
    /// it; the writer reads it only to name the Close owed after a `kick`.
    pub shutdown: CancellationToken,
    /// The zero of every connection's [`Heard`] clock.
    pub epoch: Instant,
    /// Ping the peer this often.
    pub ping_interval: Duration,
    /// Close a connection from which nothing (no frame at all) arrives for this long.
    pub idle_timeout: Duration,
    /// End the connection when a socket write does not complete in this time.
    pub write_timeout: Duration,
    /// `--write-buffer-size`: batches up to this many bytes are coalesced into one
    /// buffer per write.
    pub write_buffer: usize,
}

impl Shared {
    /// The writers' settings from the server's configuration.
    pub(crate) fn from_config(config: &Config, shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            epoch: Instant::now(),
            ping_interval: config.ping_interval,
            idle_timeout: config.idle_timeout,
            write_timeout: config.write_timeout,
            write_buffer: config.write_buffer_size,
        }
    }
}

/// When a connection's peer was last heard from, in milliseconds since
/// [`Shared::epoch`]. The reader stores the time of every frame it reads (one
/// relaxed store); the writer, whose one timer serves both the pings and the idle
/// deadline, reads it when that timer fires. Kept here rather than as a timer in the
/// reader, whose 112-byte `Sleep` would be part of every connection's task state.
#[derive(Debug)]
pub(crate) struct Heard(AtomicU64);

impl Heard {
    /// Heard from just now.
    pub(crate) fn now(ctx: &Shared) -> Self {
        Self(AtomicU64::new(millis_since(ctx.epoch)))
    }

    /// Records that the peer was heard from just now.
    pub(crate) fn touch(&self, ctx: &Shared) {
        self.0.store(millis_since(ctx.epoch), Ordering::Relaxed);
    }

    /// When the connection is idle unless the peer is heard from again. Every
    /// duration here is validated to at most a day, so this cannot overflow in
    /// practice; if it ever did, "now" (act at once) is the safe answer.
    fn idle_at(&self, ctx: &Shared) -> Instant {
        let heard = Duration::from_millis(self.0.load(Ordering::Relaxed));
        ctx.epoch
            .checked_add(heard)
            .and_then(|t| t.checked_add(ctx.idle_timeout))
            .unwrap_or_else(Instant::now)
    }
}

/// `now + after`. Every duration here is validated to at most a day, so this cannot
/// overflow in practice; if it ever did, "now" (act at once) is the safe answer.
fn deadline_after(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after).unwrap_or(now)
}

/// Whole milliseconds from `epoch` to now (saturating, never panicking).
fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(Instant::now().saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

/// Why the write loop ended: with a Close frame to send, or with nothing to send.
type Ending = Option<Reason>;

/// What woke the writer, in order of precedence.
enum Event {
    /// The reader's instruction; `None` if the reader dropped its sender.
    Stop(Option<Stop>),
    /// The ping timer, or the end of the grace period.
    Timer,
    /// Control frames from the protocol layer; `None` once the reader is gone.
    Control(Option<Frame>),
    /// This many frames were moved from the outbox into the batch; 0 when it closed.
    Outbox(usize),
}

/// Writes outbox frames and control frames to the socket until told to stop, the
/// outbox closes, or the socket fails or stalls. Returns the code of the Close frame
/// it sent, if any.
///
/// Its clocks and coalescing limit come from `ctx`.
///
/// A plain function returning an `async move` block, like `Connection::run`: an
/// `async fn` stores its arguments twice in the writer's task, which lives as long
/// as the connection. For the same reason the writes below are plain functions
/// returning a small [`Written`], not inline `async` state, and what the writer
/// waits on is one struct ([`Waits`]) built before the block. The task is 384
/// bytes (`-Zprint-type-sizes`; tokio allocates tasks in 128-byte steps).
pub(crate) fn run(
    mut socket: OwnedWriteHalf,
    outbox_rx: mpsc::Receiver<Frame>,
    control_rx: futures_channel::mpsc::Receiver<Frame>,
    signals: Signals,
    ctx: Arc<Shared>,
) -> impl Future<Output = Option<CloseCode>> + Send {
    // Built here, outside the block, so that the block holds it once (see `Waits`).
    let mut waits = Waits {
        outbox_rx,
        control_rx,
        signals,
        // Empty until the first message: `recv_many` reserves on first use, so an
        // idle connection holds no batch buffer (measured: 2 KiB per idle connection).
        batch: Vec::new(),
        stop_received: false,
        peer_gone: false,
        control_open: true,
        outbox_rounds: 0,
    };
    async move {
        // The loop's state in a block of its own: none of it (the timer least of all)
        // is then held while the final Close is written.
        let close: Ending = {
            // One timer, because every connection has one and its size counts: the next
            // ping or the idle deadline, whichever is sooner, until a stop arrives; then
            // the end of the grace period of the ending that stop asked for (only one stop
            // is ever received; no pings during that second). A sleep reset as needed
            // rather than a tokio `Interval`, which boxes its sleep.
            let mut next_ping = deadline_after(ctx.ping_interval);
            let timer = tokio::time::sleep_until(next_ping.min(waits.signals.heard.idle_at(&ctx)));
            tokio::pin!(timer);
            // Set by `Stop::CloseAfterDrain`: the Close to send once the outbox is drained
            // (or when the grace period ends, whichever comes first).
            let mut drain: Ending = None;

            loop {
                // What to write, decided in a block of its own: the event is then gone
                // before the write waits, and all writes share one wait (task state).
                let write = {
                    // The poll borrows `waits` and the timer whole: 16 bytes of task
                    // state while waiting, where a closure over each of their parts
                    // took 72.
                    let event = {
                        let (waits, mut timer) = (&mut waits, timer.as_mut());
                        std::future::poll_fn(move |cx| waits.poll_event(cx, timer.as_mut())).await
                    };
                    match event {
                        Event::Stop(stop) => match stop {
                            Some(Stop::Close(reason)) => break Some(reason),
                            Some(Stop::CloseAfterDrain(reason)) => {
                                drain = Some(reason);
                                timer.as_mut().reset(deadline_after(CLOSE_LINGER));
                                continue;
                            }
                            Some(Stop::PeerGone) if !waits.control_open => break None,
                            Some(Stop::PeerGone) => {
                                waits.peer_gone = true;
                                timer.as_mut().reset(deadline_after(CLOSE_LINGER));
                                continue;
                            }
                            // The reader is gone without a word.
                            None => break Some(Reason::InternalError),
                        },
                        Event::Timer => {
                            if drain.is_some() || waits.peer_gone {
                                // The grace period is over. Drain: send the Close now.
                                // Peer gone: end without one.
                                break drain;
                            }
                            let (now, idle_at) = (Instant::now(), waits.signals.heard.idle_at(&ctx));
                            if now >= idle_at {
                                tracing::debug!("idle timeout; closing with 1001");
                                break Some(Reason::IdleTimeout);
                            }
                            let ping_due = now >= next_ping;
                            if ping_due {
                                next_ping = deadline_after(ctx.ping_interval);
                            }
                            timer.as_mut().reset(next_ping.min(idle_at));
                            if !ping_due {
                                continue;
                            }
                            write_bytes(&mut socket, frame::PING_FRAME.as_slice(), ctx.write_timeout)
                        }
                        Event::Control(Some(frames)) => write_bytes(&mut socket, frames, ctx.write_timeout),
                        // The reader's protocol layer is gone: nothing more will come
                        // from it.
                        Event::Control(None) => {
                            waits.control_open = false;
                            if waits.peer_gone {
                                break None;
                            }
                            continue;
                        }
                        Event::Outbox(0) => {
                            // The broker dropped our outbox sender: after a drain that
                            // is the reader's Close; after a kick, the Close the reader
                            // is about to ask for; otherwise location ⑤.
                            break Some(match drain {
                                Some(close) => close,
                                None if waits.signals.kick.is_cancelled() => super::kick_close(&ctx.shutdown),
                                None => {
                                    tracing::debug!("outbox closed by the broker; closing with 1011");
                                    Reason::Deregistered
                                }
                            });
                        }
                        Event::Outbox(_) => {
                            write_frames(&mut socket, &waits.batch, ctx.write_buffer, ctx.write_timeout)
                        }
                    }
                };
                let written = write.await;
                waits.batch.clear();
                if !written {
                    break None;
                }
            }
        };
        let reason = close?;
        if write_bytes(&mut socket, frame::close(reason.code(), reason.text()), ctx.write_timeout).await {
            Some(reason.code())
        } else {
            tracing::debug!("could not send Close {}", reason.code());
            None
        }
    }
}

/// What the writer waits on, and the state of that wait: one struct built before the
/// writer's `async` block, so that the block stores it once and the poll borrows it
/// with one reference.
struct Waits {
    outbox_rx: mpsc::Receiver<Frame>,
    control_rx: futures_channel::mpsc::Receiver<Frame>,
    signals: Signals,
    /// The frames taken from the outbox in one round, written as one batch.
    batch: Vec<Frame>,
    /// The reader's stop has arrived (its oneshot must not be polled again).
    stop_received: bool,
    /// Set by `Stop::PeerGone`: forward tungstenite's last control frames (the reply
    /// to the client's Close) until the reader is done (or the grace period ends),
    /// then end; the outbox is no longer read.
    peer_gone: bool,
    /// Until tungstenite's side (the reader) is gone.
    control_open: bool,
    /// Rounds in a row that found outbox frames without polling the signals.
    outbox_rounds: u8,
}

impl Waits {
    /// The next thing for the writer to do, in order of precedence.
    fn poll_event(&mut self, cx: &mut std::task::Context<'_>, mut timer: Pin<&mut Sleep>) -> Poll<Event> {
        // While frames keep coming, the outbox is polled first, so that a wake-up
        // for a message does not poll the stop oneshot, the timer and the control
        // channel as well: they registered with this task when the outbox last ran
        // dry, and any of them that fires since wakes the task again. Every
        // `SIGNALS_AT_LEAST_EVERY` rounds (and whenever the outbox is empty) they are
        // polled first, in their order of precedence, so a busy outbox cannot starve
        // a stop, a ping or a pong.
        //
        // A closed outbox (0 frames) is not taken here: the signals decide first what
        // its closing means (after the reader's stop it is the reader's own leave,
        // not location ⑤).
        let mut outbox_pending = false;
        if self.outbox_rounds < SIGNALS_AT_LEAST_EVERY && !self.peer_gone {
            // Control frames still go before outbox frames (a look, without
            // registering): the Pong for a Ping read before a message was complete
            // must reach the client before that message (Autobahn cases 5.6 and 5.19).
            if self.control_open {
                if let Ok(frames) = self.control_rx.try_recv() {
                    return Poll::Ready(Event::Control(Some(frames)));
                }
            }
            match self.outbox_rx.poll_recv_many(cx, &mut self.batch, WRITE_BATCH) {
                Poll::Ready(0) => {}
                Poll::Ready(n) => {
                    self.outbox_rounds = self.outbox_rounds.saturating_add(1);
                    return Poll::Ready(Event::Outbox(n));
                }
                Poll::Pending => outbox_pending = true,
            }
        }
        self.outbox_rounds = 0;
        // Polled only until it has completed: a tokio oneshot panics if polled again
        // after that.
        if !self.stop_received {
            if let Poll::Ready(stop) = Pin::new(&mut self.signals.stop_rx).poll(cx) {
                self.stop_received = true;
                return Poll::Ready(Event::Stop(stop.ok()));
            }
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Event::Timer);
        }
        if self.control_open {
            if let Poll::Ready(frames) = self.control_rx.poll_next_unpin(cx) {
                return Poll::Ready(Event::Control(frames));
            }
        }
        if !self.peer_gone && !outbox_pending {
            if let Poll::Ready(n) = self.outbox_rx.poll_recv_many(cx, &mut self.batch, WRITE_BATCH) {
                return Poll::Ready(Event::Outbox(n));
            }
        }
        Poll::Pending
    }
}

/// A write started by [`write_bytes`] or [`write_frames`]: finished at once (the
/// common case: the socket buffer had room), or still waiting for the socket, in
/// which case the rest of the write is boxed. Awaiting it gives `false` when the
/// write failed or timed out, after which the connection is beyond saving and the
/// writer ends without a Close.
type Written<'a> = super::Soon<'a>;

/// Writes `bytes`: first without waiting, which is enough whenever the socket
/// buffer has room (no future, no timer, no clock read), then, for whatever did not
/// fit, waiting up to `limit`. The bytes are borrowed (a constant, the batch's one
/// frame) or owned (a control frame, a coalesced batch); owned bytes move into the
/// rest of the write when it must wait, so the writer's task holds no copy of them.
fn write_bytes<'a>(socket: &'a mut OwnedWriteHalf, bytes: impl Bytes + 'a, limit: Duration) -> Written<'a> {
    let written = match try_write(socket, bytes.bytes()) {
        Some(n) => n,
        None => return Written::Done(false),
    };
    if written >= bytes.bytes().len() {
        return Written::Done(true);
    }
    Written::Waiting(Box::pin(async move {
        let rest = bytes.bytes().get(written..).unwrap_or_default();
        bounded(limit, socket.write_all(rest)).await
    }))
}

/// What [`write_bytes`] writes: borrowed bytes, a shared frame, or a buffer of its own.
trait Bytes: Send {
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

/// Writes what the socket takes without waiting: how many bytes, or `None` when
/// the write failed.
fn try_write(socket: &OwnedWriteHalf, bytes: &[u8]) -> Option<usize> {
    match socket.try_write(bytes) {
        Ok(n) => Some(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(0),
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

/// Writes every frame of `frames` with as few syscalls as the socket allows: one
/// for the whole batch when the socket buffer has room.
///
/// A batch up to `coalesce_limit` bytes (`--write-buffer-size`) is copied into one
/// buffer and written with a plain `write`: the kernel copies one contiguous buffer
/// faster than many small iovecs (profiled: 14% of fan-out CPU in `_copy_from_iter`
/// with one iovec per frame). The buffer lives only for the write, so idle
/// connections keep nothing. Larger batches go out with vectored writes, uncopied.
fn write_frames<'a>(
    socket: &'a mut OwnedWriteHalf,
    frames: &'a [Frame],
    coalesce_limit: usize,
    limit: Duration,
) -> Written<'a> {
    // One frame (the usual batch when messages arrive slower than they are written):
    // its shared bytes go out as they are, with no copy and no buffer to allocate.
    if let [only] = frames {
        return write_bytes(socket, only.as_slice(), limit);
    }
    let total = frames.iter().fold(0usize, |sum, f| sum.saturating_add(f.len()));
    if total > coalesce_limit {
        return Written::Waiting(Box::pin(bounded(limit, write_vectored_all(socket, frames))));
    }
    let mut buffer = Vec::with_capacity(total);
    for f in frames {
        buffer.extend_from_slice(f);
    }
    write_bytes(socket, buffer, limit)
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

/// The size of a writer task's future, built on a loopback socket and never polled
/// (for the size guard in `server`'s tests).
#[cfg(test)]
pub(crate) async fn future_size_for_tests(ctx: Arc<Shared>) -> usize {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_peer, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    let (_read_half, write_half) = accepted.unwrap().0.into_split();
    let (_outbox_tx, outbox_rx) = mpsc::channel(1);
    let (_control_tx, control_rx) = futures_channel::mpsc::channel(1);
    let (_stop_tx, stop_rx) = oneshot::channel();
    let heard = Arc::new(Heard::now(&ctx));
    let signals = Signals { stop_rx, kick: CancellationToken::new(), heard };
    let writer = run(write_half, outbox_rx, control_rx, signals, ctx);
    std::mem::size_of_val(&writer)
}

#[cfg(test)]
#[expect(
    clippy::arithmetic_side_effects,
    reason = "test code: byte counts and offsets in a test's own small buffer"
)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// While frames keep coming the writer takes them before its other signals, but a
    /// busy outbox must not starve the reader's stop. Here the outbox is refilled to
    /// capacity while every write waits for a slow peer, and the Close asked for must
    /// still arrive (after at most `SIGNALS_AT_LEAST_EVERY` rounds) while frames keep
    /// coming. One thread, so the order of events is the same on every run.
    #[tokio::test(flavor = "current_thread")]
    async fn a_busy_outbox_does_not_starve_the_stop() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = tokio::net::TcpSocket::new_v4().unwrap();
        peer.set_recv_buffer_size(4096).unwrap();
        let (peer, accepted) = tokio::join!(peer.connect(listener.local_addr().unwrap()), listener.accept());
        let (mut peer, (server_side, _)) = (peer.unwrap(), accepted.unwrap());
        let (_read_half, write_half) = server_side.into_split();

        // Room for 256 batches: refilled whenever the writer waits for the socket, it
        // holds more than the socket buffers (at most 4 MiB by default) can take
        // without a wait, so it is never empty when the writer looks.
        let (outbox_tx, outbox_rx) = mpsc::channel(WRITE_BATCH * 256);
        let (_control_tx, control_rx) = futures_channel::mpsc::channel(4);
        let (stop_tx, stop_rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            shutdown: CancellationToken::new(),
            epoch: Instant::now(),
            ping_interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(10),
            write_buffer: 16 << 10,
        });
        let heard = Arc::new(Heard::now(&shared));
        let signals = Signals { stop_rx, kick: CancellationToken::new(), heard };
        let writer = tokio::spawn(run(write_half, outbox_rx, control_rx, signals, shared));
        // Keeps the outbox full: it refills while the writer waits for the socket.
        let data: Frame = Arc::new(vec![0x82, 64].into_iter().chain([7u8; 64]).collect());
        let producer = tokio::spawn(async move { while outbox_tx.send(Arc::clone(&data)).await.is_ok() {} });

        // Reads slowly (1 KiB at a time, yielding between reads), so that once the
        // socket buffers are full every write waits; then asks for the Close.
        let mut stop_tx = Some(stop_tx);
        let (mut buf, mut chunk, mut read) = (Vec::new(), [0u8; 1024], 0usize);
        let close = async {
            loop {
                let n = peer.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the writer ended without a Close");
                buf.extend_from_slice(&chunk[..n]);
                read += n;
                if read > (16 << 20) {
                    if let Some(tx) = stop_tx.take() {
                        tx.send(Stop::Close(Reason::ShuttingDown)).unwrap();
                    }
                }
                // Whole frames (all short here) at the front of the buffer.
                let mut start = 0;
                while let (Some(&b0), Some(&b1)) = (buf.get(start), buf.get(start + 1)) {
                    let end = start + 2 + usize::from(b1 & 0x7f);
                    if buf.len() < end {
                        break;
                    }
                    if b0 & 0x0f == 0x8 {
                        return u16::from_be_bytes([buf[start + 2], buf[start + 3]]);
                    }
                    start = end;
                }
                buf.drain(..start);
                tokio::task::yield_now().await;
            }
        };
        let code = tokio::time::timeout(Duration::from_secs(10), close)
            .await
            .expect("the busy outbox starved the stop");
        assert_eq!(code, 1001);
        assert_eq!(writer.await.unwrap(), Some(CloseCode::Away));
        producer.abort();
    }
}
