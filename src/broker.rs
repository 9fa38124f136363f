//! The broker task: the single owner of all room state (no mutex to poison).
//!
//! Readers send [`Command`]s through one bounded channel (the *inbox*); the broker
//! fans each published message out to the *outbox* of every member of the room with
//! `try_send`, so one slow member can never stall the broker or the other members.
//!
//! Failure locations of the design notes handled here:
//! - ② `recv` returns `None`: every sender is gone, so the broker returns
//!   ([`run`]).
//! - ④ `try_send` to an outbox fails: `Full` drops the message for that member only
//!   and counts it; `Closed` removes the member in the same pass
//!   ([`rooms::Rooms::publish`]).
//! - Deregistering an id or a room the broker does not know is a no-op
//!   ([`rooms::Rooms::leave`]).

pub(crate) mod rooms;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use self::rooms::Rooms;
pub use self::rooms::{BrokerStats, Counters, MemberStats, RoomStats};

/// Identifies one connection for the whole life of the server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What readers (and the server handle) ask of the broker.
#[derive(Debug)]
pub(crate) enum Command {
    /// Register a connection as a member of `room`. `outbox_tx` is the sending end of
    /// the connection's outbox; its receiver is held by the connection's writer.
    /// Dropping `outbox_tx` (on leave, on `Closed`, or when the broker ends) is how
    /// the writer learns that the broker no longer tracks it (location ⑤).
    Join {
        id: ConnId,
        room: Arc<str>,
        outbox_tx: mpsc::Sender<Message>,
    },
    /// Deliver `message` to every member of `room` (except `from` with `--no-echo`).
    Publish {
        from: ConnId,
        room: Arc<str>,
        message: Message,
    },
    /// Deregister a connection. Unknown ids and rooms are a no-op.
    Leave { id: ConnId, room: Arc<str> },
    /// Report the broker's state. The asker may have given up, in which case the
    /// reply has nowhere to go and is dropped.
    Stats {
        reply_tx: oneshot::Sender<BrokerStats>,
    },
    /// Fault injection for the test suite; see [`Hook`].
    Hook(Hook),
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
    CloseInbox {
        closed_tx: oneshot::Sender<()>,
        release_rx: oneshot::Receiver<()>,
    },
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
}

/// Runs the broker until every sender of its inbox is gone.
///
/// Location ②: `recv` returning `None` means that every reader and the accept loop
/// have dropped their senders (or the inbox was closed and drained), so no command
/// can ever arrive again and the broker returns. The server treats a return while
/// it is still accepting as a failure (see `server::run`).
pub(crate) async fn run(mut inbox_rx: mpsc::Receiver<Command>, settings: Settings) {
    let mut rooms = Rooms::new(settings.echo);
    while let Some(command) = inbox_rx.recv().await {
        match command {
            Command::Join {
                id,
                room,
                outbox_tx,
            } => rooms.join(id, room, outbox_tx),
            Command::Publish {
                from,
                room,
                message,
            } => rooms.publish(from, &room, &message),
            Command::Leave { id, room } => {
                // The removed sender is dropped here, outside the state transition;
                // its writer sees `None` if it is still running.
                drop(rooms.leave(id, &room));
            }
            Command::Stats { reply_tx } => {
                if reply_tx.send(rooms.stats()).is_err() {
                    tracing::debug!("stats requester went away before the reply");
                }
            }
            Command::Hook(hook) => match hook {
                Hook::CloseInbox {
                    closed_tx,
                    release_rx,
                } => {
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
                Hook::DropOutboxes { room } => drop(rooms.remove_room(&room)),
                Hook::AddDeadMember { room, id } => {
                    let (outbox_tx, outbox_rx) = mpsc::channel(1);
                    drop(outbox_rx);
                    rooms.join(id, Arc::from(room), outbox_tx);
                }
                Hook::Leave { room, id } => drop(rooms.leave(id, &room)),
            },
        }
    }
    tracing::debug!("broker inbox closed and drained; broker returns");
}
