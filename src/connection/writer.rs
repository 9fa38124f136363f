//! The writer task: broker to socket. It is the only writer of the socket.
//!
//! Failure location ⑤ lives here: `recv` on the outbox returns `None` when the broker
//! no longer holds this connection's sender (it deregistered us, or the broker itself
//! is gone). The writer then sends Close 1011 and ends; its task's handle, which the
//! reader watches, then completes, which stops the reader, and the connection then
//! deregisters (a no-op if the broker already forgot us).
//!
//! Its loop waits for one [`Event`] at a time and answers it with at most one write
//! (see `write` for how the socket is written): a batch of pre-built frames from the
//! outbox, a control frame tungstenite produced on the read side (Pong replies, the
//! reply to a client's Close), a Ping every `ping_interval`, and finally the Close the
//! reader asks for (among others 1008 when the broker disconnects a slow consumer,
//! and 1001 at shutdown, both of which the reader watches for it: see [`Signals`]).
//! It closes with 1001 once nothing has been heard from the peer for `idle_timeout`
//! (the reader notes every frame in its [`Session`]), and with 4001 once the
//! connection's token has expired.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream as _, StreamExt as _};

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::close::{Reason, Stop, WriterEnd};
use super::frame::{self, Frame};
use super::settings::{Session, Settings};
use super::transport::SocketWrite;
use super::write::{write_bytes, write_frames};
use super::{CLOSE_LINGER, SIGNALS_AT_LEAST_EVERY};

/// How many outbox frames the writer takes at once and writes with one syscall.
/// Larger batches mean fewer syscalls per delivery under load (BENCHMARKS.md, "What
/// each change bought"). It stays well under `writev`'s limit of 1024 iovecs, bounds
/// how long the writer goes without looking at its stop signals, and costs an 8 KiB
/// batch buffer (256 `Frame`s) on a connection once it has received a burst; an idle
/// connection has none.
pub(crate) const WRITE_BATCH: usize = 256;

/// What can tell the writer to stop. Only the reader does: the broker's slow-consumer
/// kick and the server's shutdown reach the writer through the reader's [`Stop`], so
/// that waking the writer for a message polls one oneshot, not two cancellation
/// tokens (registering with a token and leaving it again on every wake-up).
pub(crate) struct Signals {
    /// From the reader: which Close to send. The reader's end sends one however
    /// the reader ends ([`StopTx`](super::close::StopTx)); a sender dropped without
    /// one is still read as the reader's death (1011) when the oneshot is polled.
    pub stop_rx: oneshot::Receiver<Stop>,
    /// The connection's `kick` token, never awaited here: it only tells, when the
    /// broker closes the outbox before the reader's `Stop` arrives, that this is a
    /// slow-consumer disconnect (1008) and not location ⑤ (1011).
    pub kick: CancellationToken,
    /// When the reader last heard from the peer (the writer closes the connection
    /// with 1001 once that is `idle_timeout` ago), and when its token expires (4001).
    pub session: Arc<Session>,
}

/// `now + after`. Every duration here is validated to at most a day, so this cannot
/// overflow in practice; if it ever did, "now" (act at once) is the safe answer.
fn deadline_after(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after).unwrap_or(now)
}

/// How the write loop ended.
#[derive(Clone, Copy)]
enum Finish {
    /// Send this Close frame, then end.
    Close(Reason),
    /// End without a Close: the peer is gone, or the socket failed or stalled.
    Silently,
}

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
/// outbox closes, or the socket fails or stalls; then sends the Close owed, if any.
///
/// Shaped for its size (see "Task size" in the connection module): a plain function
/// returning an `async move` block; the writes are plain functions returning a
/// [`Soon`](super::soon::Soon); what it waits on is one struct ([`Waits`]) built
/// before the block.
pub(crate) fn run<W: SocketWrite>(
    mut socket: W,
    outbox_rx: mpsc::Receiver<Frame>,
    control_rx: futures_channel::mpsc::Receiver<Frame>,
    signals: Signals,
    settings: Arc<Settings>,
) -> impl Future<Output = WriterEnd> + Send {
    // Built here, outside the block, so that the block holds it once (see `Waits`).
    let mut waits = Waits::new(outbox_rx, control_rx, signals);
    async move {
        // The loop's state in a block of its own: none of it (the timer least of all)
        // is then held while the final Close is written.
        let finish = {
            // One timer, because every connection has one and its size counts: the next
            // ping, the idle deadline or the token's expiry, whichever is soonest, until
            // a stop arrives; then
            // the end of the grace period of the ending that stop asked for (only one stop
            // is ever received; no pings during that second). A sleep reset as needed
            // rather than a tokio `Interval`, which boxes its sleep.
            let mut next_ping = deadline_after(settings.ping_interval);
            let timer = tokio::time::sleep_until(waits.signals.session.deadline(&settings, next_ping));
            tokio::pin!(timer);
            // Set by `Stop::CloseAfterDrain`: the Close to send once the outbox is drained
            // (or when the grace period ends, whichever comes first).
            let mut close_after_drain: Option<Reason> = None;

            loop {
                // What to write, decided in a block of its own: the event is then gone
                // before the write waits, and all writes share one wait (task state).
                let write = {
                    // The poll borrows `waits` and the timer whole: two references of
                    // task state while waiting, not one for each of their parts.
                    let event = {
                        let (waits, mut timer) = (&mut waits, timer.as_mut());
                        std::future::poll_fn(move |cx| waits.poll_event(cx, timer.as_mut())).await
                    };
                    match event {
                        Event::Stop(stop) => match stop {
                            Some(Stop::Close(reason)) => break Finish::Close(reason),
                            Some(Stop::CloseAfterDrain(reason)) => {
                                close_after_drain = Some(reason);
                                waits.reset_timer(timer.as_mut(), deadline_after(CLOSE_LINGER));
                                continue;
                            }
                            Some(Stop::PeerGone) if !waits.control_open => break Finish::Silently,
                            Some(Stop::PeerGone) => {
                                waits.peer_gone = true;
                                waits.reset_timer(timer.as_mut(), deadline_after(CLOSE_LINGER));
                                continue;
                            }
                            // The reader is gone without a word.
                            None => break Finish::Close(Reason::InternalError),
                        },
                        Event::Timer => {
                            // The grace period is over. Drain: send the Close now. Peer
                            // gone: end without one.
                            if let Some(reason) = close_after_drain {
                                break Finish::Close(reason);
                            }
                            if waits.peer_gone {
                                break Finish::Silently;
                            }
                            let (now, session) = (Instant::now(), &waits.signals.session);
                            if session.expires_at(&settings).is_some_and(|at| now >= at) {
                                tracing::debug!("token expired; closing with 4001");
                                break Finish::Close(Reason::TokenExpired);
                            }
                            if now >= session.idle_at(&settings) {
                                tracing::debug!("idle timeout; closing with 1001");
                                break Finish::Close(Reason::IdleTimeout);
                            }
                            let ping_due = now >= next_ping;
                            if ping_due {
                                next_ping = deadline_after(settings.ping_interval);
                            }
                            let at = session.deadline(&settings, next_ping);
                            waits.reset_timer(timer.as_mut(), at);
                            if !ping_due {
                                continue;
                            }
                            write_bytes(&mut socket, frame::PING_FRAME.as_slice(), settings.write_timeout)
                        }
                        Event::Control(Some(frames)) => {
                            write_bytes(&mut socket, frames, settings.write_timeout)
                        }
                        // The reader's protocol layer is gone: nothing more will come
                        // from it.
                        Event::Control(None) => {
                            waits.control_open = false;
                            if waits.peer_gone {
                                break Finish::Silently;
                            }
                            continue;
                        }
                        Event::Outbox(0) => {
                            // The broker dropped our outbox sender: after a drain that
                            // is the reader's Close; after a kick, the Close the reader
                            // is about to ask for; otherwise location ⑤.
                            break Finish::Close(match close_after_drain {
                                Some(reason) => reason,
                                None if waits.signals.kick.is_cancelled() => Reason::for_kick(&settings),
                                None => {
                                    tracing::debug!("outbox closed by the broker; closing with 1011");
                                    Reason::Deregistered
                                }
                            });
                        }
                        Event::Outbox(_) => write_frames(
                            &mut socket,
                            &waits.batch,
                            settings.write_buffer,
                            settings.write_timeout,
                        ),
                    }
                };
                let written = write.await;
                waits.batch.clear();
                if !written {
                    break Finish::Silently;
                }
            }
        };
        let Finish::Close(reason) = finish else { return WriterEnd { close_sent: None } };
        let close = frame::close(reason.code(), reason.text());
        if write_bytes(&mut socket, close, settings.write_timeout).await {
            WriterEnd { close_sent: Some(reason.code()) }
        } else {
            tracing::debug!("could not send Close {}", reason.code());
            WriterEnd { close_sent: None }
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
    /// The stop oneshot holds this task's waker and no stop has been sent since: it
    /// need not be polled again until then (see [`Waits::stop_waiting`]).
    stop_registered: bool,
    /// Set by `Stop::PeerGone`: forward tungstenite's last control frames (the reply
    /// to the client's Close) until the reader is done (or the grace period ends),
    /// then end; the outbox is no longer read.
    peer_gone: bool,
    /// Until tungstenite's side (the reader) is gone.
    control_open: bool,
    /// The control channel holds this task's waker and nothing has been sent on it
    /// (or the channel closed) since: it need not be polled again until then (see
    /// [`Waits::control_waiting`]).
    control_registered: bool,
    /// Likewise for the timer: it holds this task's waker, and has neither fired
    /// nor been reset since (see [`Waits::reset_timer`]).
    timer_registered: bool,
    /// Rounds in a row that found outbox frames without polling the signals.
    outbox_rounds: u8,
}

impl Waits {
    fn new(
        outbox_rx: mpsc::Receiver<Frame>,
        control_rx: futures_channel::mpsc::Receiver<Frame>,
        signals: Signals,
    ) -> Self {
        Self {
            outbox_rx,
            control_rx,
            signals,
            // Empty until the first message: `recv_many` reserves on first use, so an
            // idle connection holds no batch buffer.
            batch: Vec::new(),
            stop_received: false,
            stop_registered: false,
            peer_gone: false,
            control_open: true,
            control_registered: false,
            timer_registered: false,
            outbox_rounds: 0,
        }
    }

    /// Whether the control channel holds a frame or has closed: one atomic load of
    /// the channel's state (its count of queued frames), where a `try_recv` on an
    /// empty channel walks its queue. The reader counts a frame in before it queues
    /// it and before it reads on, so a frame handed over before a message the
    /// writer then finds in its outbox is always seen here.
    ///
    /// While this is false, a waker registered by an earlier poll is still in place
    /// (the channel takes it only to wake the task for a send or its closing), so the
    /// channel is not polled again: about an eighth of wsbroker's own instructions
    /// per delivery where each wake-up carries one message (bench/NOTES.md).
    fn control_waiting(&self) -> bool {
        self.control_rx.size_hint() != (0, None)
    }

    /// Whether the reader's stop has been sent: one atomic load of the oneshot's
    /// state, where a poll also spends the task's budget and compares wakers. The
    /// reader's end always sends a stop, even when it is dropped unsent
    /// ([`StopTx`](super::close::StopTx)), so "nothing in it" means nothing sent yet;
    /// a waker registered by an earlier poll is still in place and is woken by the
    /// send.
    fn stop_waiting(&self) -> bool {
        !self.signals.stop_rx.is_empty()
    }

    /// Moves the timer's deadline. Its waker must then be registered anew: a timer
    /// that fired gave it up, and one moved earlier is registered again.
    fn reset_timer(&mut self, timer: Pin<&mut Sleep>, at: Instant) {
        timer.reset(at);
        self.timer_registered = false;
    }

    /// The next thing for the writer to do, in order of precedence.
    fn poll_event(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>) -> Poll<Event> {
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
            if self.control_open
                && self.control_waiting()
                && let Ok(frames) = self.control_rx.try_recv()
            {
                self.control_registered = false;
                return Poll::Ready(Event::Control(Some(frames)));
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
        // Polled only until it has completed (a tokio oneshot panics if polled again
        // after that), and only if it holds a stop or does not hold our waker yet.
        if !self.stop_received && (!self.stop_registered || self.stop_waiting()) {
            // As for the timer below: a poll with the budget spent does not register.
            let registers = tokio::task::coop::has_budget_remaining();
            if let Poll::Ready(stop) = Pin::new(&mut self.signals.stop_rx).poll(cx) {
                self.stop_received = true;
                return Poll::Ready(Event::Stop(stop.ok()));
            }
            self.stop_registered = registers;
        }
        // A timer that holds our waker and has not fired need not be polled: its
        // state says so with one load, where a poll also spends the task's budget.
        if !self.timer_registered || timer.is_elapsed() {
            // With the task's budget spent, a poll returns Pending without
            // registering (tokio's cooperative scheduling): then it is not counted.
            let registers = tokio::task::coop::has_budget_remaining();
            if timer.as_mut().poll(cx).is_ready() {
                self.timer_registered = false;
                return Poll::Ready(Event::Timer);
            }
            self.timer_registered = registers;
        }
        if self.control_open && (!self.control_registered || self.control_waiting()) {
            match self.control_rx.poll_next_unpin(cx) {
                Poll::Ready(frames) => {
                    self.control_registered = false;
                    return Poll::Ready(Event::Control(frames));
                }
                Poll::Pending => self.control_registered = true,
            }
        }
        if !self.peer_gone
            && !outbox_pending
            && let Poll::Ready(n) = self.outbox_rx.poll_recv_many(cx, &mut self.batch, WRITE_BATCH)
        {
            return Poll::Ready(Event::Outbox(n));
        }
        Poll::Pending
    }
}

/// The size of a writer task's future, built on a loopback socket and never polled
/// (for the size guard in `server`'s tests).
#[cfg(test)]
pub(crate) async fn future_size_for_tests(settings: Arc<Settings>) -> usize {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_peer, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    let (_read_half, write_half) = accepted.unwrap().0.into_split();
    let (_outbox_tx, outbox_rx) = mpsc::channel(1);
    let (_control_tx, control_rx) = futures_channel::mpsc::channel(1);
    let (_stop_tx, stop_rx) = oneshot::channel();
    let session = Arc::new(Session::new(&settings, crate::connection::settings::Terms::OPEN));
    let signals = Signals { stop_rx, kick: CancellationToken::new(), session };
    let writer = run(write_half, outbox_rx, control_rx, signals, settings);
    std::mem::size_of_val(&writer)
}

#[cfg(test)]
#[expect(
    clippy::arithmetic_side_effects,
    reason = "test code: byte counts and offsets in a test's own small buffer"
)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    use super::*;

    /// Settings under which nothing times out during a test: a ping a minute, two
    /// minutes' idle timeout, ten seconds per write.
    fn quiet_settings() -> Settings {
        Settings {
            shutdown: CancellationToken::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            clock_zero: Instant::now(),
            ping_interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(10),
            write_buffer: 16 << 10,
        }
    }

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
        let settings = Arc::new(quiet_settings());
        let session = Arc::new(Session::new(&settings, crate::connection::settings::Terms::OPEN));
        let signals = Signals { stop_rx, kick: CancellationToken::new(), session };
        let writer = tokio::spawn(run(write_half, outbox_rx, control_rx, signals, settings));
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
                if read > (16 << 20)
                    && let Some(tx) = stop_tx.take()
                {
                    tx.send(Stop::Close(Reason::ShuttingDown)).unwrap();
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
        assert_eq!(writer.await.unwrap(), WriterEnd { close_sent: Some(CloseCode::Away) });
        producer.abort();
    }

    /// A writer's waits on an outbox and a control channel that stay quiet, with
    /// `stop_rx` as the reader's oneshot, and a timer that does not fire during a
    /// test unless asked to.
    /// The senders come back with it, for the test to hold: a closed channel is not
    /// quiet.
    fn quiet_waits(stop_rx: oneshot::Receiver<Stop>) -> (Waits, impl Sized) {
        let (outbox_tx, outbox_rx) = mpsc::channel::<Frame>(1);
        let (control_tx, control_rx) = futures_channel::mpsc::channel(1);
        let settings = quiet_settings();
        let session = Arc::new(Session::new(&settings, crate::connection::settings::Terms::OPEN));
        let signals = Signals { stop_rx, kick: CancellationToken::new(), session };
        (Waits::new(outbox_rx, control_rx, signals), (outbox_tx, control_tx))
    }

    /// Spends the task's coop budget, then polls `waits` once: whether it was
    /// Pending.
    async fn poll_out_of_budget(waits: &mut Waits, mut timer: Pin<&mut Sleep>) -> bool {
        std::future::poll_fn(|cx| {
            while let Poll::Ready(progress) = tokio::task::coop::poll_proceed(cx) {
                progress.made_progress();
            }
            Poll::Ready(waits.poll_event(cx, timer.as_mut()).is_pending())
        })
        .await
    }

    /// Waits for the next event, failing the test after five seconds.
    async fn next_event(waits: &mut Waits, mut timer: Pin<&mut Sleep>) -> Event {
        tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| waits.poll_event(cx, timer.as_mut())),
        )
        .await
        .expect("the event was lost")
    }

    /// A timer polled once the task's budget is spent is not registered (tokio's
    /// cooperative scheduling returns Pending without touching it), so the writer
    /// must poll it again: counted as registered, it would never be heard from (no
    /// ping, no idle timeout). The first poll here spends the budget first.
    #[tokio::test(flavor = "current_thread")]
    async fn a_timer_polled_out_of_budget_still_fires() {
        let (_stop_tx, stop_rx) = oneshot::channel();
        let (mut waits, _open) = quiet_waits(stop_rx);
        let timer = tokio::time::sleep(Duration::from_millis(20));
        tokio::pin!(timer);
        assert!(poll_out_of_budget(&mut waits, timer.as_mut()).await, "nothing was due yet");
        let event = next_event(&mut waits, timer.as_mut()).await;
        assert!(matches!(event, Event::Timer), "the timer was lost");
    }

    /// A writer whose stop oneshot holds its waker looks at the oneshot's state only
    /// (see `Waits::stop_waiting`), which a sender dropped without a value does not
    /// change. The reader's end therefore sends a stop when dropped unsent: a writer
    /// already waiting still hears it, and closes with 1011.
    #[tokio::test(flavor = "current_thread")]
    async fn a_stop_dropped_unsent_still_reaches_a_waiting_writer() {
        let (stop_tx, stop_rx) = oneshot::channel();
        let stop_tx = crate::connection::close::StopTx::new(stop_tx);
        let (mut waits, _open) = quiet_waits(stop_rx);
        let timer = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(timer);
        let first =
            std::future::poll_fn(|cx| Poll::Ready(waits.poll_event(cx, timer.as_mut()).is_pending())).await;
        assert!(first && waits.stop_registered, "nothing was due yet, and the stop holds the waker");
        tokio::spawn(async move { drop(stop_tx) });
        let event = next_event(&mut waits, timer.as_mut()).await;
        assert!(matches!(event, Event::Stop(Some(Stop::Close(Reason::InternalError)))));
    }

    /// As for the timer: a stop oneshot polled once the task's budget is spent does
    /// not register, so it must not be counted as registered, or a stop sent later
    /// would wake nobody.
    #[tokio::test(flavor = "current_thread")]
    async fn a_stop_polled_out_of_budget_is_still_heard() {
        let (stop_tx, stop_rx) = oneshot::channel();
        let (mut waits, _open) = quiet_waits(stop_rx);
        let timer = tokio::time::sleep(Duration::from_secs(60));
        tokio::pin!(timer);
        let first = poll_out_of_budget(&mut waits, timer.as_mut()).await;
        assert!(first && !waits.stop_registered, "out of budget, nothing was polled");
        // Sent once the wait below has polled (and registered with) the oneshot.
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            stop_tx.send(Stop::Close(Reason::ShuttingDown)).unwrap();
        });
        let event = next_event(&mut waits, timer.as_mut()).await;
        assert!(matches!(event, Event::Stop(Some(Stop::Close(Reason::ShuttingDown)))));
    }
}
