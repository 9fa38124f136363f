//! The broker task: the single owner of all room state (no mutex to poison).
//!
//! Readers send [`Command`]s through one bounded channel (the *inbox*); the broker
//! fans each published message out to the *outbox* of every member of the room with
//! `try_send`, so one slow member can never stall the broker or the other members.
//!
//! Failure locations (docs/design.md, "The failure table") decided here, each in a
//! function the panic audit proves cannot unwind (`cargo xtask audit`):
//! - ② `recv` returns `None`: every sender is gone, so the broker returns
//!   ([`Broker::step`]).
//! - ③ and ④: the loop over a room's members, and what a full or closed outbox
//!   means for that member (`rooms::Rooms::publish`).
//! - Deregistering an id or a room the broker does not know is a no-op
//!   (`rooms::Rooms::leave`).
//!
//! Its parts: [`rooms`] (room state and the fan-out), [`contained`](mod@contained) (how the proven
//! code runs what the proof cannot see into) and [`stats`] (the totals and
//! snapshots).

pub(crate) mod contained;
pub(crate) mod delivery;
pub(crate) mod history;
pub(crate) mod ring;
pub(crate) mod rooms;
pub(crate) mod stats;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use self::contained::contained;
pub(crate) use self::delivery::{Delivery, Since};
pub(crate) use self::history::Limits as HistoryLimits;
pub(crate) use self::rooms::Origin;
use self::rooms::{Member, Rooms};
pub use self::stats::{BrokerStats, Counters, MemberStats, RoomStats};
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
        /// Plain, or numbered (`wsbroker.v1`) and where to resume.
        delivery: Delivery,
    },
    /// Deliver `frame` (a complete server frame, built once) to every member of
    /// `room`: from a member (not back to it with `--no-echo`), or from another node.
    Publish { origin: Origin, room: Arc<str>, frame: Frame },
    /// Deregister a connection. Unknown ids and rooms are a no-op.
    Leave { id: ConnId, room: Arc<str> },
    /// Shed up to `count` members for a lame-duck drain (see [`Rooms::shed`]) and
    /// reply how many were shed, 0 once none is left.
    Shed { count: usize, reply_tx: oneshot::Sender<usize> },
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

/// Most commands the broker takes from its inbox at once, and so the longest run of
/// publishes it can hand over as one (see [`run`]).
pub(crate) const RECEIVE_BATCH: usize = 64;

/// The most bytes a run of publishes holds (see [`Broker::extends_run`]): the
/// writer's default coalescing buffer, so that a run adds nothing to the largest
/// outbox entry there already was (one message of `--max-message-size`).
pub(crate) const RUN_BYTES: usize = 16 * 1024;

/// Settings the broker needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Deliver a message back to its sender too.
    pub echo: bool,
    /// What to do when a member's outbox is full.
    pub slow_consumer: SlowConsumer,
    /// What each room keeps for resumes (`--history-*`).
    pub history: HistoryLimits,
}

/// The broker's state: the rooms, and where it publishes its counters.
#[derive(Debug)]
pub(crate) struct Broker {
    rooms: Rooms,
    /// Where the broker publishes its counters for the metrics endpoint.
    metrics: Arc<Metrics>,
}

/// What the broker loop does after a command.
#[derive(Debug)]
pub(crate) enum Next {
    /// Wait for the next command.
    Receive,
    /// Return: the inbox is closed and drained (location ②).
    Return,
    /// Carry out a test hook (which may wait) before the next command.
    RunHook(Hook),
}

impl Broker {
    pub(crate) fn new(settings: Settings, metrics: Arc<Metrics>, bridge: Option<BridgeTx>) -> Self {
        Self { rooms: Rooms::new(settings, bridge), metrics }
    }

    /// Decides what the broker does with what its inbox gave: location ② (`None`,
    /// every sender gone: return), an operation (handled at once), or a test hook.
    #[cfg_attr(feature = "no-panic", no_panic::no_panic)]
    pub(crate) fn step(&mut self, received: Option<Command>) -> Next {
        match received {
            None => Next::Return,
            Some(Command::Op(op)) => {
                self.handle(op);
                Next::Receive
            }
            Some(Command::Hook(hook)) => Next::RunHook(hook),
        }
    }

    /// Handles one operation: the state change is decided by the proven functions of
    /// [`Rooms`]; what is released afterwards (the room's name, the frame, a stats
    /// reply) is dropped or sent contained.
    #[cfg_attr(feature = "no-panic", no_panic::no_panic)]
    pub(crate) fn handle(&mut self, op: Op) {
        let rooms = &mut self.rooms;
        let panics_before = rooms.counters().panics_caught;
        let released = match op {
            Op::Join { id, room, outbox_tx, kick, delivery } => {
                rooms.join(Member::new(id, outbox_tx, kick), &room, delivery);
                contained(move || drop(room))
            }
            Op::Publish { origin, room, frame } => {
                rooms.publish(origin, &room, std::slice::from_ref(&frame));
                contained(move || drop((room, frame)))
            }
            Op::Leave { id, room } => {
                rooms.leave(id, &room);
                contained(move || drop(room))
            }
            Op::Shed { count, reply_tx } => {
                let shed = rooms.shed(count);
                contained(move || {
                    if reply_tx.send(shed).is_err() {
                        tracing::debug!("the drain went away before the reply");
                    }
                })
            }
            Op::Stats { reply_tx } => {
                let rooms = &*rooms;
                contained(move || {
                    if reply_tx.send(rooms.stats()).is_err() {
                        tracing::debug!("stats requester went away before the reply");
                    }
                })
            }
        };
        if released.is_none() {
            self.rooms.count_caught_panic();
        }
        self.rooms.finish(panics_before);
        // Relaxed atomic stores: proven, and cheap next to the operation itself.
        self.metrics.store_broker(self.rooms.counters(), self.rooms.len(), self.rooms.history_bytes());
    }

    /// Publishes a run of messages to `room` from `origin` (one or more, see
    /// [`Self::extends_run`]), as [`Self::handle`] does one `Op::Publish`.
    #[cfg_attr(feature = "no-panic", no_panic::no_panic)]
    pub(crate) fn publish_run(&mut self, origin: Origin, room: &Arc<str>, frames: &[Frame]) {
        let panics_before = self.rooms.counters().panics_caught;
        self.rooms.publish(origin, room, frames);
        self.rooms.finish(panics_before);
        self.metrics.store_broker(self.rooms.counters(), self.rooms.len(), self.rooms.history_bytes());
    }

    /// Whether a publish (`origin`, `room`, `frame`) that arrived right after a run
    /// from `run_origin` to `run_room` of `run_bytes` joins it: the same room; the same
    /// kind of origin (members, the API or other nodes are counted apart, and only the
    /// first two go to other nodes), and the same member when messages are not echoed
    /// to their senders (a member then skips the whole run, all of it its own); and
    /// at most [`RUN_BYTES`] together, since a run is one outbox entry and an entry's
    /// size is what bounds an outbox's memory.
    #[cfg_attr(feature = "no-panic", no_panic::no_panic)]
    pub(crate) fn extends_run(
        &self,
        run_origin: Origin,
        run_room: &Arc<str>,
        run_bytes: usize,
        origin: Origin,
        room: &Arc<str>,
        frame: &Frame,
    ) -> bool {
        let same_origin = match (run_origin, origin) {
            (Origin::Member(first), Origin::Member(next)) => self.rooms.echo() || first == next,
            (Origin::Api, Origin::Api) | (Origin::Remote, Origin::Remote) => true,
            _ => false,
        };
        same_origin && room == run_room && run_bytes.saturating_add(frame.len()) <= RUN_BYTES
    }
}

/// Runs the broker until every sender of its inbox is gone (location ②, decided by
/// [`Broker::step`]). The server treats a return while it is still accepting as a
/// failure (see `server::run`).
///
/// It takes what is waiting in the inbox, up to [`RECEIVE_BATCH`] commands at once,
/// and hands them over in order: each run of consecutive publishes to one room (as
/// [`Broker::extends_run`] decides) to [`Broker::publish_run`], which delivers it to
/// each member as one outbox entry where it fits, and every other command to
/// [`Broker::step`]. Nothing waits to make a run longer: a run is what had already
/// arrived together.
pub(crate) async fn run(
    mut inbox_rx: mpsc::Receiver<Command>,
    settings: Settings,
    metrics: Arc<Metrics>,
    bridge: Option<BridgeTx>,
) {
    let mut broker = Broker::new(settings, metrics, bridge);
    // Both reserved once: `recv_many` takes at most `RECEIVE_BATCH`, so neither grows.
    let mut received: Vec<Command> = Vec::with_capacity(RECEIVE_BATCH);
    let mut run: Vec<Frame> = Vec::with_capacity(RECEIVE_BATCH);
    'receive: loop {
        if inbox_rx.recv_many(&mut received, RECEIVE_BATCH).await == 0 {
            // Every sender is gone (location ②): `step` decides to return.
            if let Next::Return = broker.step(None) {
                break;
            }
            continue;
        }
        let mut commands = received.drain(..);
        let mut next = commands.next();
        while let Some(command) = next.take() {
            // One unit of the task's budget per command, as `recv` took one per
            // command (a run's others below): taking a batch does not let the broker
            // run further ahead of the writers than before (the outboxes' capacity
            // is counted in messages).
            tokio::task::coop::consume_budget().await;
            let Command::Op(Op::Publish { origin, room, frame }) = command else {
                match broker.step(Some(command)) {
                    Next::Receive => {}
                    Next::Return => break 'receive,
                    Next::RunHook(hook) => run_hook(hook, &mut inbox_rx, &mut broker).await,
                }
                next = commands.next();
                continue;
            };
            let mut bytes = frame.len();
            run.push(frame);
            next = commands.next();
            while let Some(Command::Op(Op::Publish {
                origin: next_origin,
                room: next_room,
                frame: next_frame,
            })) = &next
                && broker.extends_run(origin, &room, bytes, *next_origin, next_room, next_frame)
            {
                bytes = bytes.saturating_add(next_frame.len());
                if let Some(Command::Op(Op::Publish { frame, .. })) = next.take() {
                    run.push(frame);
                }
                next = commands.next();
            }
            broker.publish_run(origin, &room, &run);
            for _ in 1..run.len() {
                tokio::task::coop::consume_budget().await;
            }
            run.clear();
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
            let panics_before = broker.rooms.counters().panics_caught;
            broker.rooms.remove_room(&room);
            broker.rooms.finish(panics_before);
        }
        Hook::AddDeadMember { room, id } => {
            let (outbox_tx, outbox_rx) = mpsc::channel::<Frame>(1);
            drop(outbox_rx);
            let kick = CancellationToken::new();
            broker.handle(Op::Join { id, room: Arc::from(room), outbox_tx, kick, delivery: Delivery::Plain });
        }
        Hook::Leave { room, id } => broker.handle(Op::Leave { id, room: Arc::from(room) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::history::Limits;

    fn broker(echo: bool) -> Broker {
        let settings = Settings { echo, slow_consumer: SlowConsumer::Drop, history: Limits::OFF };
        Broker::new(settings, Arc::new(Metrics::default()), None)
    }

    /// A run holds publishes to one room, of one kind of origin (and from one member
    /// under `--no-echo`), at most `RUN_BYTES` together.
    #[test]
    fn a_run_is_one_room_one_kind_of_origin_and_bounded() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("/a"), Arc::from("/b"));
        let small: Frame = Arc::new(vec![0x81, 1, b'x']);
        let (one, two) = (Origin::Member(ConnId(1)), Origin::Member(ConnId(2)));
        let echo = broker(true);
        assert!(echo.extends_run(one, &a, 3, two, &Arc::from("/a"), &small));
        assert!(echo.extends_run(Origin::Api, &a, 3, Origin::Api, &a, &small));
        assert!(echo.extends_run(Origin::Remote, &a, 3, Origin::Remote, &a, &small));
        for (first, next) in
            [(one, Origin::Api), (Origin::Api, one), (one, Origin::Remote), (Origin::Remote, Origin::Api)]
        {
            assert!(!echo.extends_run(first, &a, 3, next, &a, &small), "{first:?} then {next:?}");
        }
        assert!(!echo.extends_run(one, &a, 3, one, &b, &small));
        assert!(echo.extends_run(one, &a, RUN_BYTES - 3, one, &a, &small));
        assert!(!echo.extends_run(one, &a, RUN_BYTES - 2, one, &a, &small));
        let no_echo = broker(false);
        assert!(no_echo.extends_run(one, &a, 3, one, &a, &small));
        assert!(!no_echo.extends_run(one, &a, 3, two, &a, &small));
    }
}
