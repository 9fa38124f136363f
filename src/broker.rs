//! The broker task: the single owner of all room state (no mutex to poison).
//!
//! Readers send [`Command`]s through one bounded channel (the *inbox*); the broker
//! fans each published message out to the *outbox* of every member of the room with
//! `try_send`, so one slow member can never stall the broker or the other members.
//!
//! Failure locations (docs/design.md, "The failure table") handled here:
//! - ② `recv` returns `None`: every sender is gone, so the broker returns
//!   ([`run`]).
//! - ④ `try_send` to an outbox fails: `Full` drops the message for that member only
//!   and counts it; `Closed` removes the member in the same pass
//!   (`rooms::Rooms::publish`).
//! - Deregistering an id or a room the broker does not know is a no-op
//!   (`rooms::Rooms::leave`).
//!
//! The panic audit: [`Broker::handle`], the one function the loop calls per
//! operation, is proven not to unwind when built with the `no-panic` feature (see
//! `cargo xtask audit`).

pub(crate) mod rooms;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use self::rooms::{BrokerStats, Counters, MemberStats, RoomStats};
use self::rooms::{Left, Member, Rooms};
use crate::cluster::BridgeTx;
use crate::config::SlowConsumer;
use crate::connection::frame::Frame;
use crate::metrics::Metrics;

/// Identifies one connection for the whole life of the server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What arrives in the broker's inbox.
#[derive(Debug)]
pub(crate) enum Command {
    /// A state operation, handled by the proven [`Broker::handle`].
    Op(Op),
    /// Fault injection for the test suite; see [`Hook`]. Handled outside `handle`.
    Hook(Hook),
}

/// What readers (and the server handle) ask of the broker.
#[derive(Debug)]
pub(crate) enum Op {
    /// Register a connection as a member of `room`. `outbox_tx` is the sending end of
    /// the connection's outbox; its receiver is held by the connection's writer.
    /// Dropping `outbox_tx` (on leave, on `Closed`, or when the broker ends) is how
    /// the writer learns that the broker no longer tracks it (location ⑤).
    Join {
        id: ConnId,
        room: Arc<str>,
        outbox_tx: mpsc::Sender<Frame>,
        /// Cancelled by the broker to disconnect this member as a slow consumer.
        kick: CancellationToken,
    },
    /// Deliver `frame` (a complete server frame, built once by the reader) to every
    /// member of `room` (except `from` with `--no-echo`).
    Publish { from: ConnId, room: Arc<str>, frame: Frame },
    /// Deregister a connection. Unknown ids and rooms are a no-op.
    Leave { id: ConnId, room: Arc<str> },
    /// A message from another node (through Redis): deliver to local members only.
    #[cfg_attr(not(feature = "redis"), allow(dead_code, reason = "sent only by the Redis bridge"))]
    Remote { room: Arc<str>, frame: Frame },
    /// Report the broker's state. The asker may have given up, in which case the
    /// reply has nowhere to go and is dropped.
    Stats { reply_tx: oneshot::Sender<BrokerStats> },
}

/// Fault injection used by the integration tests to reach failure locations that a
/// well-behaved process never reaches on its own. Only the library API exposes these
/// (through [`crate::ServerHandle::inject`]); the command line cannot reach them.
#[doc(hidden)]
#[derive(Debug)]
pub enum Hook {
    /// Close the broker's inbox, so every reader's next send fails (location ①), and
    /// keep all room state alive until `release_rx` fires (or its sender is dropped).
    /// Afterwards the broker drains its inbox and `recv` returns `None` (location ②).
    /// `closed_tx` fires once the inbox is closed.
    CloseInbox { closed_tx: oneshot::Sender<()>, release_rx: oneshot::Receiver<()> },
    /// Stop taking commands (without closing the inbox) until `release_rx` fires, as
    /// a broker that cannot keep up would: the inbox fills and readers wait (①).
    Pause { release_rx: oneshot::Receiver<()> },
    /// Deregister every member of `room` inside the broker, dropping their outbox
    /// senders, so each writer's `recv` returns `None` (location ⑤).
    DropOutboxes { room: String },
    /// Add a member to `room` whose outbox receiver is already gone, as if its writer
    /// had died, so the next publish meets `TrySendError::Closed` (location ④).
    AddDeadMember { room: String, id: ConnId },
    /// Deregister `id` from `room` as a reader would, for ids the broker may not know.
    Leave { room: String, id: ConnId },
}

/// Settings the broker needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Deliver a message back to its sender too.
    pub echo: bool,
    /// What to do when a member's outbox is full.
    pub slow_consumer: SlowConsumer,
}

/// The broker's state: rooms, and a count of panics caught in contained effects.
#[derive(Debug)]
pub(crate) struct Broker {
    rooms: Rooms,
    panics_caught: u64,
    /// Where the broker publishes its counters for the metrics endpoint.
    metrics: Arc<Metrics>,
}

impl Broker {
    pub(crate) fn new(settings: Settings, metrics: Arc<Metrics>, bridge: Option<BridgeTx>) -> Self {
        Self { rooms: Rooms::new(settings, bridge), panics_caught: 0, metrics }
    }

    /// Handles one operation. Proven not to unwind under the `no-panic` feature.
    ///
    /// Its own work (room lookup, registration into reserved capacity, removal,
    /// counting) is proven directly. Effects the proof cannot see through run inside
    /// [`contain`]: fan-out (tokio's `try_send`, cloning and dropping a frame's `Arc`),
    /// growing storage (allocation), dropping senders, and the stats reply. A panic
    /// there, which none of them is known to raise, is caught and counted, and the
    /// broker goes on with the next operation.
    #[cfg_attr(feature = "no-panic", no_panic::no_panic)]
    pub(crate) fn handle(&mut self, op: Op) {
        let rooms = &mut self.rooms;
        let caught = match op {
            Op::Join { id, room, outbox_tx, kick } => {
                match rooms.try_join(Member::new(id, outbox_tx, kick), &room) {
                    Ok(()) => contain(move || drop(room)),
                    Err(member) => contain(move || rooms.join_growing(member, room)),
                }
            }
            Op::Publish { from, room, frame } => contain(move || rooms.publish(Some(from), &room, frame)),
            Op::Remote { room, frame } => contain(move || rooms.publish(None, &room, frame)),
            Op::Leave { id, room } => {
                let left = rooms.leave(id, &room);
                contain(move || {
                    if let Some(Left { emptied: Some((name, _)), .. }) = &left {
                        rooms.room_removed(name);
                    }
                    drop((left, room));
                })
            }
            Op::Stats { reply_tx } => {
                let panics_caught = self.panics_caught;
                let rooms = &*rooms;
                contain(move || {
                    if reply_tx.send(rooms.stats(panics_caught)).is_err() {
                        tracing::debug!("stats requester went away before the reply");
                    }
                })
            }
        };
        if caught {
            self.panics_caught = self.panics_caught.wrapping_add(1);
        }
        // Relaxed atomic stores: proven, and cheap next to the operation itself.
        self.metrics.store_broker(self.rooms.counters(), self.rooms.len(), self.panics_caught);
    }
}

/// Runs `effect`, catching any panic in it; returns whether one was caught.
///
/// The panic payload is deliberately leaked rather than dropped: dropping a payload
/// runs arbitrary code (a payload type's `Drop` could itself panic), which would
/// defeat the point. Panics here are never expected, each one is logged by the panic
/// hook and counted, so the leak is bounded by the count. The panic strategy must be
/// `unwind` (the default, kept in every profile) for this to catch anything.
#[inline]
fn contain(effect: impl FnOnce()) -> bool {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(effect)) {
        Ok(()) => false,
        Err(payload) => {
            std::mem::forget(payload);
            true
        }
    }
}

/// Runs the broker until every sender of its inbox is gone.
///
/// Location ②: `recv` returning `None` means that every reader and the accept loop
/// have dropped their senders (or the inbox was closed and drained), so no command
/// can ever arrive again and the broker returns. The server treats a return while
/// it is still accepting as a failure (see `server::run`).
pub(crate) async fn run(
    mut inbox_rx: mpsc::Receiver<Command>,
    settings: Settings,
    metrics: Arc<Metrics>,
    bridge: Option<BridgeTx>,
) {
    let mut broker = Broker::new(settings, metrics, bridge);
    while let Some(command) = inbox_rx.recv().await {
        match command {
            Command::Op(op) => broker.handle(op),
            Command::Hook(hook) => run_hook(hook, &mut inbox_rx, &mut broker).await,
        }
    }
    tracing::debug!("broker inbox closed and drained; broker returns");
}

/// Carries out a test hook. Test-only, so not part of the proven path.
async fn run_hook(hook: Hook, inbox_rx: &mut mpsc::Receiver<Command>, broker: &mut Broker) {
    match hook {
        Hook::CloseInbox { closed_tx, release_rx } => {
            tracing::warn!("test hook: closing the broker inbox");
            inbox_rx.close();
            if closed_tx.send(()).is_err() {
                tracing::debug!("nobody waits for the inbox to close");
            }
            // Either outcome (released, or the releaser dropped) means go on.
            let _released = release_rx.await;
        }
        Hook::Pause { release_rx } => {
            let _released = release_rx.await;
        }
        Hook::DropOutboxes { room } => {
            if let Some((name, members)) = broker.rooms.remove_room(&room) {
                broker.rooms.room_removed(&name);
                drop(members);
            }
        }
        Hook::AddDeadMember { room, id } => {
            let (outbox_tx, outbox_rx) = mpsc::channel::<Frame>(1);
            drop(outbox_rx);
            let kick = CancellationToken::new();
            broker.handle(Op::Join { id, room: Arc::from(room), outbox_tx, kick });
        }
        Hook::Leave { room, id } => broker.handle(Op::Leave { id, room: Arc::from(room) }),
    }
}
