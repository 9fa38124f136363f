//! What a connection's reader and writer share: the server-wide [`Settings`] both
//! read, and each connection's [`Heard`] clock, written by the reader and read by
//! the writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The settings every connection reads, behind one `Arc` so that each writer task
/// holds 8 bytes of them (see "Task size" in the connection module).
///
/// It holds no broker sender on purpose: a writer stuck in a write (for at most
/// `write_timeout`) must not keep the broker alive past shutdown.
#[derive(Debug)]
pub(crate) struct Settings {
    /// Cancelled when the server shuts down. Every connection's `kick` is a child of
    /// it; the connection reads it only to name the Close owed after a `kick`.
    pub shutdown: CancellationToken,
    /// The zero of every connection's [`Heard`] clock.
    pub clock_zero: Instant,
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

impl Settings {
    /// The connections' settings from the server's configuration.
    pub(crate) fn from_config(config: &Config, shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            clock_zero: Instant::now(),
            ping_interval: config.ping_interval,
            idle_timeout: config.idle_timeout,
            write_timeout: config.write_timeout,
            write_buffer: config.write_buffer_size,
        }
    }
}

/// When a connection's peer was last heard from, in milliseconds since
/// [`Settings::clock_zero`]. The reader stores the time of every frame it reads
/// (one relaxed store); the writer, whose one timer serves both the pings and the
/// idle deadline, reads it when that timer fires. A shared timestamp rather than a
/// timer in the reader, whose `Sleep` would be part of every connection's task.
#[derive(Debug)]
pub(crate) struct Heard(AtomicU64);

impl Heard {
    /// Heard from just now.
    pub(crate) fn now(settings: &Settings) -> Self {
        Self(AtomicU64::new(millis_since(settings.clock_zero)))
    }

    /// Records that the peer was heard from just now.
    pub(crate) fn touch(&self, settings: &Settings) {
        self.0.store(millis_since(settings.clock_zero), Ordering::Relaxed);
    }

    /// When the connection is idle unless the peer is heard from again. Every
    /// duration here is validated to at most a day, so this cannot overflow in
    /// practice; if it ever did, "now" (act at once) is the safe answer.
    pub(crate) fn idle_at(&self, settings: &Settings) -> Instant {
        let heard = Duration::from_millis(self.0.load(Ordering::Relaxed));
        settings
            .clock_zero
            .checked_add(heard)
            .and_then(|t| t.checked_add(settings.idle_timeout))
            .unwrap_or_else(Instant::now)
    }
}

/// Whole milliseconds from `zero` to now (saturating, never panicking).
fn millis_since(zero: Instant) -> u64 {
    u64::try_from(Instant::now().saturating_duration_since(zero).as_millis()).unwrap_or(u64::MAX)
}
