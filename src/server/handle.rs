//! [`ServerHandle`]: a cheap handle for observing a running server (and, in tests,
//! injecting faults into it).

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerStats, Command, Hook, Op, Origin};
use crate::connection::frame::Frame;
use crate::metrics::Metrics;
use crate::reload::Reloader;

/// A cheap handle for observing (and, in tests, injecting faults into) a server.
///
/// It holds only a weak reference to the broker's inbox, so it never keeps the broker
/// alive: once the server has shut down, every call answers `None` / `false`.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    pub(super) broker_tx: mpsc::WeakSender<Command>,
    pub(super) admission: Arc<Semaphore>,
    pub(super) max_connections: usize,
    pub(super) broker_capacity: usize,
    pub(super) metrics: Arc<Metrics>,
    pub(super) reloader: Arc<Reloader>,
    /// Cancelled to end a drain at once (see [`Self::end_drain`]).
    pub(super) end_drain: CancellationToken,
}

impl ServerHandle {
    /// A snapshot of the broker's rooms and counters, or `None` when the broker is gone.
    pub async fn stats(&self) -> Option<BrokerStats> {
        let broker_tx = self.broker_tx.upgrade()?;
        let (reply_tx, reply_rx) = oneshot::channel();
        broker_tx.send(Command::Op(Op::Stats { reply_tx })).await.ok()?;
        drop(broker_tx);
        reply_rx.await.ok()
    }

    /// Admitted connections, including those still in their handshake.
    pub fn open_connections(&self) -> usize {
        self.max_connections.saturating_sub(self.admission.available_permits())
    }

    /// Commands waiting in the broker's inbox (0 once the broker is gone).
    pub fn inbox_depth(&self) -> usize {
        self.broker_tx.upgrade().map_or(0, |tx| self.broker_capacity.saturating_sub(tx.capacity()))
    }

    /// Whether the broker runs and the server accepts connections (what /healthz says).
    pub fn healthy(&self) -> bool {
        self.metrics.healthy()
    }

    /// Configured for Redis but not connected to it (local delivery only).
    pub fn degraded(&self) -> bool {
        self.metrics.degraded()
    }

    /// Rereads what can change without a restart (what SIGHUP does in the binary):
    /// `true` if it all took effect; otherwise the previous configuration stays in
    /// force, one error line is logged and `wsbroker_reload_failures_total` counts it.
    pub fn reload(&self) -> bool {
        self.reloader.reload().is_ok()
    }

    /// Ends a lame-duck drain (`--drain-duration`) at once: every connection it has
    /// not closed yet is closed now, still with 1012, and the shutdown goes on as
    /// usual. What a second SIGINT or SIGTERM does in the binary. Called before the
    /// drain begins, it makes the drain close everyone at once when it does.
    pub fn end_drain(&self) {
        self.end_drain.cancel();
    }

    /// Completes once [`Self::end_drain`] has been called.
    pub(super) async fn drain_ended(&self) {
        self.end_drain.cancelled().await;
    }

    /// Has the broker shed up to `count` members for a drain: how many it shed (0
    /// once none is left), or `None` when the broker is gone.
    pub(super) async fn shed(&self, count: usize) -> Option<usize> {
        let broker_tx = self.broker_tx.upgrade()?;
        let (reply_tx, reply_rx) = oneshot::channel();
        broker_tx.send(Command::Op(Op::Shed { count, reply_tx })).await.ok()?;
        drop(broker_tx);
        reply_rx.await.ok()
    }

    /// The metrics, rendered as the `/metrics` endpoint would.
    pub fn render_metrics(&self) -> String {
        crate::metrics::render(&self.metrics, self)
    }

    /// Hands `frame` to the broker for every member of `room`, as the publish API
    /// does: `true` once it is in the broker's inbox, `false` when the inbox is full
    /// or the broker is gone.
    pub(crate) fn publish(&self, room: Arc<str>, frame: Frame) -> bool {
        let Some(broker_tx) = self.broker_tx.upgrade() else { return false };
        broker_tx.try_send(Command::Op(Op::Publish { origin: Origin::Api, room, frame })).is_ok()
    }

    /// Test fault injection; returns whether the broker accepted the hook.
    #[doc(hidden)]
    pub async fn inject(&self, hook: Hook) -> bool {
        let Some(broker_tx) = self.broker_tx.upgrade() else { return false };
        broker_tx.send(Command::Hook(hook)).await.is_ok()
    }
}
