//! Multi-node rooms over Redis pub/sub (`--redis-url`): the bridge task.
//!
//! Each node subscribes to one Redis channel per room that has local members
//! (`--redis-prefix` + room; SSUBSCRIBE with `--redis-sharded`), publishes every
//! local message there, and hands what arrives from other nodes to its broker for
//! local delivery. The broker stays the single owner of room state; it talks to the
//! bridge only through bounded queues with `try_send`, so a slow or absent Redis can
//! never block local fan-out: what does not fit is dropped and counted.
//!
//! Delivery is exactly once per member while Redis is healthy: local members get a
//! message from the local fan-out, and a node skips its own messages when Redis
//! echoes them back (each carries the sending node's random id). Messages published
//! while Redis is unreachable do not reach other nodes (at most once, like Redis
//! pub/sub itself). The bridge reconnects with backoff and resubscribes every room
//! it still has, and reports the outage through `/healthz` and the metrics.
//!
//! Wire format of a Redis message: 8 bytes node id (big endian), 1 byte type
//! (1 text, 2 binary), then the payload.

#[cfg(feature = "redis")]
pub(crate) mod redis_bridge;

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::connection::frame::Frame;

/// Local messages waiting to be published to Redis. Beyond this the broker drops
/// them for Redis (local members still get them) and counts the drop.
pub const PUBLISH_QUEUE: usize = 4096;

/// Subscription changes waiting for the bridge. If this ever fills, the broker sets
/// a resync flag instead and the bridge reconciles against the broker's room list.
pub const MEMBERSHIP_QUEUE: usize = 65_536;

/// Messages from Redis waiting for the bridge; beyond this they are dropped and
/// counted (the redis crate's reader never waits on us).
pub const INBOUND_QUEUE: usize = 4096;

/// Most publishes sent to Redis in one pipeline (one round trip).
pub(crate) const PUBLISH_BATCH: usize = 256;

/// Reconnection backoff: doubles from the first value up to the second.
pub(crate) const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Every Redis request must answer within this time, or the connection is
/// considered lost.
pub(crate) const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the bridge pings Redis and checks the resync flag.
pub(crate) const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// Settings from the configuration.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    pub prefix: String,
    pub sharded: bool,
}

/// Counters and state the metrics endpoint reports.
#[derive(Debug, Default)]
pub struct RedisMetrics {
    pub up: AtomicBool,
    pub published: AtomicU64,
    pub received: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_unavailable: AtomicU64,
    pub dropped_inbound: AtomicU64,
    pub reconnects: AtomicU64,
}

/// What the broker sends the bridge.
#[derive(Debug)]
pub(crate) enum Membership {
    /// The room got its first local member.
    Subscribe(Arc<str>),
    /// The room lost its last local member.
    Unsubscribe(Arc<str>),
}

/// The broker's end of the bridge. Every method is `try_send`: it never waits.
#[derive(Debug, Clone)]
pub(crate) struct BridgeTx {
    publish_tx: mpsc::Sender<(Arc<str>, Frame)>,
    membership_tx: mpsc::Sender<Membership>,
    resync: Arc<AtomicBool>,
    resync_notify: Arc<Notify>,
    metrics: Arc<RedisMetrics>,
}

impl BridgeTx {
    pub(crate) fn publish(&self, room: &Arc<str>, frame: &Frame) {
        if self.publish_tx.try_send((Arc::clone(room), Arc::clone(frame))).is_err() {
            self.metrics.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn membership(&self, change: Membership) {
        if self.membership_tx.try_send(change).is_err() {
            // Never lose a subscription change: ask the bridge to reconcile instead.
            self.resync.store(true, Ordering::Relaxed);
            self.resync_notify.notify_one();
        }
    }
}

/// The bridge's ends of the queues.
pub(crate) struct BridgeRx {
    pub(crate) publish_rx: mpsc::Receiver<(Arc<str>, Frame)>,
    pub(crate) membership_rx: mpsc::Receiver<Membership>,
    pub(crate) resync: Arc<AtomicBool>,
    pub(crate) resync_notify: Arc<Notify>,
}

/// Creates the queues between the broker and the bridge.
pub(crate) fn queues(metrics: Arc<RedisMetrics>) -> (BridgeTx, BridgeRx) {
    let (publish_tx, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
    let (membership_tx, membership_rx) = mpsc::channel(MEMBERSHIP_QUEUE);
    let resync = Arc::new(AtomicBool::new(false));
    let resync_notify = Arc::new(Notify::new());
    (
        BridgeTx {
            publish_tx,
            membership_tx,
            resync: Arc::clone(&resync),
            resync_notify: Arc::clone(&resync_notify),
            metrics,
        },
        BridgeRx { publish_rx, membership_rx, resync, resync_notify },
    )
}

/// A random id for this process, so that a node recognises its own messages.
pub(crate) fn node_id() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Encodes a local message's frame for Redis (see the module docs).
pub(crate) fn encode(node: u64, frame: &[u8]) -> Option<Vec<u8>> {
    let (kind, payload): (u8, &[u8]) = match crate::connection::frame::parse(frame)? {
        (crate::connection::frame::TEXT, payload) => (1, payload),
        (crate::connection::frame::BINARY, payload) => (2, payload),
        _ => return None,
    };
    let mut out = Vec::with_capacity(payload.len().saturating_add(9));
    out.extend_from_slice(&node.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    Some(out)
}

/// Decodes a Redis message into the frame to deliver locally: `None` for our own
/// messages and malformed ones (including text that is not UTF-8, which a client
/// could never have sent through a conforming node).
pub(crate) fn decode(node: u64, bytes: &[u8]) -> Option<Frame> {
    let origin = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    if origin == node {
        return None;
    }
    let payload = bytes.get(9..)?;
    match bytes.get(8)? {
        1 => std::str::from_utf8(payload)
            .ok()
            .map(|_| crate::connection::frame::build(crate::connection::frame::TEXT, payload)),
        2 => Some(crate::connection::frame::build(crate::connection::frame::BINARY, payload)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_own_messages_are_skipped() {
        use crate::connection::frame::{BINARY, TEXT, build};
        let text = build(TEXT, b"hello");
        let bytes = encode(7, &text).unwrap();
        assert_eq!(decode(8, &bytes), Some(text.clone()));
        assert_eq!(decode(7, &bytes), None, "a node skips its own messages");
        let binary = build(BINARY, &[0u8, 255]);
        assert_eq!(decode(8, &encode(7, &binary).unwrap()), Some(binary));
        assert_eq!(decode(8, &[1, 2, 3]), None, "malformed input is ignored");
        let mut bad_utf8 = encode(7, &text).unwrap();
        bad_utf8.push(0xff);
        assert_eq!(decode(8, &bad_utf8), None, "invalid UTF-8 in a text message is ignored");
    }
}
