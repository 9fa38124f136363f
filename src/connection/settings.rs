//! What a connection's reader and writer share: the server-wide [`Settings`] both
//! read, and each connection's [`Session`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Set when a lame-duck drain begins (`--drain-duration`): from then on every
    /// connection the server closes is told 1012, service restart.
    pub draining: AtomicBool,
    /// The zero of every connection's [`Session`] clock.
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
            draining: AtomicBool::new(false),
            clock_zero: Instant::now(),
            ping_interval: config.ping_interval,
            idle_timeout: config.idle_timeout,
            write_timeout: config.write_timeout,
            write_buffer: config.write_buffer_size,
        }
    }
}

/// One connection's state that its reader and writer share: when the peer was last
/// heard from, when its token stops being valid, and whether it may publish.
///
/// The reader stores the time of every frame it reads (one relaxed store); the
/// writer, whose one timer serves the pings, the idle deadline and the token's
/// expiry, reads it when that timer fires. A shared timestamp rather than a timer in
/// the reader, whose `Sleep` would be part of every connection's task. Two words in
/// one `Arc`, which jemalloc keeps in a 32-byte slot (see "Task size" in the
/// connection module).
#[derive(Debug)]
pub(crate) struct Session {
    /// Milliseconds from [`Settings::clock_zero`] to the last frame read.
    heard: AtomicU64,
    /// Fixed at the handshake: the top bit says the connection may publish; the
    /// rest is when its token expires, in milliseconds from [`Settings::clock_zero`]
    /// ([`NEVER`] without a token that expires).
    terms: u64,
}

/// The top bit of [`Session::terms`].
const MAY_PUBLISH: u64 = 1 << 63;
/// The rest of [`Session::terms`] when the connection never expires.
const NEVER: u64 = MAY_PUBLISH - 1;

/// What a connection was admitted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Terms {
    /// How long its token stays valid (`None`: no token, or one beyond any deadline).
    pub expires_in: Option<Duration>,
    /// Whether it may publish to its room.
    pub may_publish: bool,
}

impl Terms {
    /// Without authentication: no expiry, and every member may publish.
    pub(crate) const OPEN: Self = Self { expires_in: None, may_publish: true };
}

impl Session {
    /// A session admitted on `terms`, heard from just now.
    pub(crate) fn new(settings: &Settings, terms: Terms) -> Self {
        let now = millis_since(settings.clock_zero);
        let expires = terms
            .expires_in
            .and_then(|d| u64::try_from(d.as_millis()).ok())
            .map_or(NEVER, |ms| now.saturating_add(ms).min(NEVER));
        Self { heard: AtomicU64::new(now), terms: expires | if terms.may_publish { MAY_PUBLISH } else { 0 } }
    }

    /// Records that the peer was heard from just now.
    pub(crate) fn touch(&self, settings: &Settings) {
        self.heard.store(millis_since(settings.clock_zero), Ordering::Relaxed);
    }

    /// Whether the connection may publish to its room.
    pub(crate) fn may_publish(&self) -> bool {
        self.terms & MAY_PUBLISH != 0
    }

    /// When the connection is idle unless the peer is heard from again. Every
    /// duration here is validated to at most a day, so this cannot overflow in
    /// practice; if it ever did, "now" (act at once) is the safe answer.
    pub(crate) fn idle_at(&self, settings: &Settings) -> Instant {
        let heard = Duration::from_millis(self.heard.load(Ordering::Relaxed));
        settings
            .clock_zero
            .checked_add(heard)
            .and_then(|t| t.checked_add(settings.idle_timeout))
            .unwrap_or_else(Instant::now)
    }

    /// The writer's next deadline: `next_ping`, the idle deadline or the token's
    /// expiry, whichever is soonest.
    pub(crate) fn deadline(&self, settings: &Settings, next_ping: Instant) -> Instant {
        let soonest = next_ping.min(self.idle_at(settings));
        self.expires_at(settings).map_or(soonest, |at| soonest.min(at))
    }

    /// When the connection's token stops being valid, if it ever does within what an
    /// `Instant` can hold.
    pub(crate) fn expires_at(&self, settings: &Settings) -> Option<Instant> {
        let expires = self.terms & NEVER;
        if expires == NEVER {
            return None;
        }
        settings.clock_zero.checked_add(Duration::from_millis(expires))
    }
}

/// Whole milliseconds from `zero` to now (saturating, never panicking).
fn millis_since(zero: Instant) -> u64 {
    u64::try_from(Instant::now().saturating_duration_since(zero).as_millis()).unwrap_or(u64::MAX)
}
