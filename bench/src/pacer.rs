//! A precise clock for fixed-schedule publishers.
//!
//! tokio's timer wheel has 1 ms granularity and rounds deadlines up, so a publisher
//! sleeping with `tokio::time::sleep_until` sent each message up to about 1 ms after
//! its scheduled time. Latency is measured from the scheduled time (so coordinated
//! omission is not hidden), which put that millisecond of the load generator's own
//! delay into every server's figures: a ~1.2 ms p50 floor that hid the servers'
//! real latency.
//!
//! The pacer is one thread that sleeps to the earliest pending deadline with no timer
//! slack and then wakes the publisher's task through a oneshot. (A `timerfd` in the
//! runtime would save the thread, but tokio's `AsyncFd` constructors are `unsafe`, and
//! the workspace forbids `unsafe`.) A wake-up is a few microseconds late, not up to a
//! millisecond.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::num::NonZeroU64;
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;

/// A handle to the pacer thread; the thread ends when the handle is dropped.
pub struct Pacer {
    requests: mpsc::Sender<Request>,
}

struct Request {
    at: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

// Ordered by deadline, earliest first out of the max-heap; `seq` keeps equal
// deadlines in request order.
impl Ord for Request {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}
impl PartialOrd for Request {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Request {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Request {}

impl Pacer {
    pub fn start() -> std::io::Result<Self> {
        let (requests, incoming) = mpsc::channel();
        std::thread::Builder::new().name("pacer".into()).spawn(move || run(&incoming))?;
        Ok(Self { requests })
    }

    /// Sleeps until `at`, returning at once if it has passed (or the pacer is gone).
    pub async fn sleep_until(&self, at: Instant) {
        if at <= Instant::now() {
            return;
        }
        let (wake, woken) = oneshot::channel();
        if self.requests.send(Request { at, seq: 0, wake }).is_ok() {
            let _ = woken.await;
        }
    }
}

fn run(incoming: &mpsc::Receiver<Request>) {
    // Without this the kernel may fire a sleep up to 50 µs late (the default slack).
    let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1));
    let mut pending = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        while pending.peek().is_some_and(|r: &Request| r.at <= now) {
            if let Some(due) = pending.pop() {
                let _ = due.wake.send(());
            }
        }
        let next = match pending.peek() {
            Some(first) => incoming.recv_timeout(first.at.saturating_duration_since(now)),
            None => incoming.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(mut request) => {
                seq = seq.wrapping_add(1);
                request.seq = seq;
                pending.push(request);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Every handle is gone; dropping the rest wakes their (dropped) waiters.
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}
