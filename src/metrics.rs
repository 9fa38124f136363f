//! Metrics and health: counters shared by the tasks that produce them, rendered for
//! the `--metrics-listen` endpoint (`crate::endpoint`).
//!
//! Producers only touch plain atomics, never a metrics library: the broker counts in
//! plain integers inside its proven code and copies them into [`Metrics`] with
//! relaxed stores after each operation (which the no_panic proof accepts), and the
//! connection and accept code bump atomics. At scrape time the endpoint copies every
//! value into a `prometheus-client` registry and encodes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::broker::Counters;
use crate::cluster::RedisMetrics;
use crate::server::ServerHandle;

/// Why a handshake was refused, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// `--max-connections` reached (HTTP 503).
    Limit,
    /// Origin not allowed (HTTP 403).
    Origin,
    /// Not a valid WebSocket upgrade: not HTTP, a header over 64 KiB, a room name
    /// over `--max-room-length` (HTTP 414), a peer gone mid-handshake.
    BadRequest,
    /// No complete handshake within `--handshake-timeout`.
    Timeout,
    /// No token, or one that does not verify (HTTP 401).
    Unauthorized,
    /// A valid token that does not cover the room (HTTP 403).
    Forbidden,
    /// The TLS handshake failed (not TLS, a bad ClientHello, the peer gone).
    Tls,
}

impl RejectReason {
    const ALL: [Self; 7] = [
        Self::Limit,
        Self::Origin,
        Self::BadRequest,
        Self::Timeout,
        Self::Unauthorized,
        Self::Forbidden,
        Self::Tls,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Limit => "limit",
            Self::Origin => "origin",
            Self::BadRequest => "bad_request",
            Self::Timeout => "timeout",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Tls => "tls",
        }
    }
}

/// The close codes counted by `wsbroker_closes_total`; anything else is "other".
const CLOSE_CODES: [u16; 10] = [1000, 1001, 1002, 1007, 1008, 1009, 1011, 1012, 1013, 4001];

/// Every value the endpoint reports, as atomics.
#[derive(Debug, Default)]
pub struct Metrics {
    // Copied from the broker's counters after every broker operation.
    published: AtomicU64,
    published_api: AtomicU64,
    delivered: AtomicU64,
    dropped_full: AtomicU64,
    dropped_closed: AtomicU64,
    slow_disconnects: AtomicU64,
    shed: AtomicU64,
    rooms: AtomicU64,
    broker_panics_caught: AtomicU64,
    resumes_recovered: AtomicU64,
    resumes_reset: AtomicU64,
    history_bytes: AtomicU64,
    // Counted by the accept loop and the connections.
    rejections: [AtomicU64; RejectReason::ALL.len()],
    closes: [AtomicU64; CLOSE_CODES.len()],
    closes_other: AtomicU64,
    closes_none: AtomicU64,
    /// Reloads that left the previous configuration in force.
    reload_failures: AtomicU64,
    /// With TLS: when the certificate in force expires (Unix seconds); 0 without TLS.
    tls_not_after: AtomicU64,
    // Health.
    broker_running: AtomicBool,
    accepting: AtomicBool,
    /// In a lame-duck drain (`--drain-duration`).
    draining: AtomicBool,
    /// With `--redis-url`: the bridge's state and counters.
    redis: Option<Arc<RedisMetrics>>,
}

impl Metrics {
    /// Metrics for a server, with the Redis section when `redis` is true.
    pub(crate) fn new(redis: bool) -> Self {
        Self { redis: redis.then(|| Arc::new(RedisMetrics::default())), ..Self::default() }
    }

    /// The Redis bridge's metrics, when Redis is configured.
    #[cfg_attr(not(feature = "redis"), allow(dead_code, reason = "used to start the Redis bridge"))]
    pub(crate) fn redis(&self) -> Option<&Arc<RedisMetrics>> {
        self.redis.as_ref()
    }

    /// Configured for Redis but not connected to it: local delivery works, other
    /// nodes are out of reach.
    pub fn degraded(&self) -> bool {
        self.redis.as_ref().is_some_and(|r| !r.up.load(Ordering::Relaxed))
    }

    /// Copies the broker's counters. Relaxed stores: each value is independent, and a
    /// scrape that sees one a moment older than another is fine.
    #[inline]
    pub(crate) fn store_broker(&self, counters: &Counters, rooms: usize, history_bytes: usize) {
        self.published.store(counters.published, Ordering::Relaxed);
        self.published_api.store(counters.published_api, Ordering::Relaxed);
        self.delivered.store(counters.delivered, Ordering::Relaxed);
        self.dropped_full.store(counters.dropped_full, Ordering::Relaxed);
        self.dropped_closed.store(counters.dropped_closed, Ordering::Relaxed);
        self.slow_disconnects.store(counters.slow_disconnects, Ordering::Relaxed);
        self.shed.store(counters.shed, Ordering::Relaxed);
        self.rooms.store(rooms as u64, Ordering::Relaxed);
        self.broker_panics_caught.store(counters.panics_caught, Ordering::Relaxed);
        self.resumes_recovered.store(counters.resumes_recovered, Ordering::Relaxed);
        self.resumes_reset.store(counters.resumes_reset, Ordering::Relaxed);
        self.history_bytes.store(history_bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self, reason: RejectReason) {
        let index = RejectReason::ALL.iter().position(|r| *r == reason);
        if let Some(counter) = index.and_then(|i| self.rejections.get(i)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a finished connection by the code of its close handshake (`None`: it
    /// ended without one).
    pub(crate) fn closed(&self, code: Option<u16>) {
        let counter = match code {
            None => &self.closes_none,
            Some(code) => CLOSE_CODES
                .iter()
                .position(|c| *c == code)
                .and_then(|i| self.closes.get(i))
                .unwrap_or(&self.closes_other),
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_tls_not_after(&self, unix_seconds: u64) {
        self.tls_not_after.store(unix_seconds, Ordering::Relaxed);
    }

    pub(crate) fn reload_failed(&self) {
        self.reload_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_broker_running(&self, running: bool) {
        self.broker_running.store(running, Ordering::Relaxed);
    }

    pub(crate) fn set_accepting(&self, accepting: bool) {
        self.accepting.store(accepting, Ordering::Relaxed);
    }

    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Healthy while the broker runs and the server accepts connections.
    pub fn healthy(&self) -> bool {
        self.broker_running.load(Ordering::Relaxed) && self.accepting.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Registers a counter family, one series per (labels, value).
fn family<L>(registry: &mut Registry, name: &str, help: &str, values: impl IntoIterator<Item = (L, u64)>)
where
    L: EncodeLabelSet + Clone + std::fmt::Debug + std::hash::Hash + Eq + Send + Sync + 'static,
{
    let family = Family::<L, Counter>::default();
    for (labels, value) in values {
        family.get_or_create(&labels).inner().store(value, Ordering::Relaxed);
    }
    registry.register(name, help, family);
}

/// Registers a counter family labelled `reason`, one series per (reason, value).
fn by_reason(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (&'static str, u64)>,
) {
    family(registry, name, help, values.into_iter().map(|(reason, value)| (ReasonLabel { reason }, value)));
}

/// Panics in the process, each counted once. The panic hook sees every panic, the
/// ones the broker catches included (it runs before the unwinding does), so where it
/// is installed (the binary, the tests) its count is the whole; a library user
/// without it still sees the broker's own count.
fn panics(caught_in_broker: u64) -> u64 {
    counted_once(crate::panic_hook::installed().then(crate::panic_hook::count), caught_in_broker)
}

/// The hook's count when there is a hook (it includes the broker's), else the
/// broker's: never the two added.
fn counted_once(hook: Option<u64>, caught_in_broker: u64) -> u64 {
    hook.unwrap_or(caught_in_broker)
}

/// Renders every metric in the Prometheus/OpenMetrics text format.
pub fn render(metrics: &Metrics, handle: &ServerHandle) -> String {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut registry = Registry::with_prefix("wsbroker");

    let counter = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let c: Counter = Counter::default();
        c.inner().store(value, Ordering::Relaxed);
        registry.register(name, help, c);
    };
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let g: Gauge = Gauge::default();
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        registry.register(name, help, g);
    };

    gauge(
        &mut registry,
        "connections",
        "Open (admitted) connections, handshakes included",
        handle.open_connections() as u64,
    );
    gauge(&mut registry, "rooms", "Rooms with at least one member", load(&metrics.rooms));
    gauge(
        &mut registry,
        "broker_inbox_depth",
        "Commands waiting in the broker's inbox",
        handle.inbox_depth() as u64,
    );
    family(
        &mut registry,
        "messages_received",
        "Messages published, by source: client (a WebSocket member) or api (POST /rooms/{room})",
        [
            (SourceLabel { source: "client" }, load(&metrics.published)),
            (SourceLabel { source: "api" }, load(&metrics.published_api)),
        ],
    );
    counter(&mut registry, "deliveries", "Messages placed in a member's outbox", load(&metrics.delivered));
    by_reason(
        &mut registry,
        "dropped",
        "Deliveries dropped, by reason",
        [("outbox_full", load(&metrics.dropped_full)), ("connection_gone", load(&metrics.dropped_closed))],
    );
    counter(
        &mut registry,
        "slow_consumer_disconnects",
        "Connections closed as slow consumers (--slow-consumer disconnect)",
        load(&metrics.slow_disconnects),
    );
    family(
        &mut registry,
        "resumes",
        "wsbroker.v1 reconnects with ?since=, by result: recovered (every missed message replayed) or reset",
        [
            (ResultLabel { result: "recovered" }, load(&metrics.resumes_recovered)),
            (ResultLabel { result: "reset" }, load(&metrics.resumes_reset)),
        ],
    );
    gauge(
        &mut registry,
        "history_bytes",
        "Bytes all rooms' history is charged (--history-memory bounds it)",
        load(&metrics.history_bytes),
    );
    gauge(
        &mut registry,
        "draining",
        "1 while the server drains before stopping (--drain-duration), else 0",
        u64::from(metrics.draining.load(Ordering::Relaxed)),
    );
    counter(
        &mut registry,
        "drain_shed",
        "Connections the drain closed with 1012 on its schedule (--drain-duration)",
        load(&metrics.shed),
    );
    let by_code =
        CLOSE_CODES.iter().zip(&metrics.closes).map(|(code, value)| (code.to_string(), load(value)));
    let closes = by_code.chain([
        ("other".to_owned(), load(&metrics.closes_other)),
        ("none".to_owned(), load(&metrics.closes_none)),
    ]);
    family(
        &mut registry,
        "closes",
        "Finished connections by the code of their close handshake (none: ended without one)",
        closes.map(|(code, value)| (CodeLabel { code }, value)),
    );
    by_reason(
        &mut registry,
        "handshake_rejections",
        "Handshakes refused, by reason",
        RejectReason::ALL
            .iter()
            .zip(&metrics.rejections)
            .map(|(reason, value)| (reason.label(), load(value))),
    );
    counter(
        &mut registry,
        "panics_caught",
        "Panics anywhere in the process, each counted once: contained in the broker, or ending a connection's task (should stay 0)",
        panics(load(&metrics.broker_panics_caught)),
    );
    counter(
        &mut registry,
        "reload_failures",
        "Reloads (SIGHUP) that left the previous configuration in force",
        load(&metrics.reload_failures),
    );
    let not_after = load(&metrics.tls_not_after);
    if not_after != 0 {
        gauge(
            &mut registry,
            "tls_cert_not_after_seconds",
            "When the TLS certificate in force expires, in seconds since the Unix epoch",
            not_after,
        );
    }
    if let Some(redis) = &metrics.redis {
        let up = u64::from(redis.up.load(Ordering::Relaxed));
        gauge(
            &mut registry,
            "redis_up",
            "1 while connected to Redis; 0 means degraded (local delivery only)",
            up,
        );
        counter(&mut registry, "redis_published", "Messages published to Redis", load(&redis.published));
        counter(
            &mut registry,
            "redis_received",
            "Messages received from other nodes through Redis",
            load(&redis.received),
        );
        by_reason(
            &mut registry,
            "redis_dropped",
            "Messages not carried through Redis, by reason",
            [
                ("queue_full", load(&redis.dropped_queue_full)),
                ("unavailable", load(&redis.dropped_unavailable)),
                ("inbound_full", load(&redis.dropped_inbound)),
            ],
        );
        counter(
            &mut registry,
            "redis_reconnects",
            "Times the Redis connection was restored",
            load(&redis.reconnects),
        );
    }
    registry.register(
        "build",
        "Build information",
        Info::new(vec![("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())]),
    );

    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
        tracing::error!("cannot encode metrics");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_the_broker_caught_is_counted_once() {
        // The hook saw the one panic the broker caught: one, not two.
        assert_eq!(counted_once(Some(1), 1), 1);
        // Without a hook (a library user's process), the broker's own count.
        assert_eq!(counted_once(None, 1), 1);
        assert_eq!(counted_once(Some(3), 1), 3, "panics outside the broker count too");
    }
}
