//! Room state owned by the broker task: who is in which room, the fan-out, and the
//! running totals.
//!
//! Every decision here is made by a synchronous function that the panic audit proves
//! cannot unwind (`no_panic`, see `cargo xtask audit`): joining, leaving, the
//! fan-out's per-member decision (failure location ④), the counting, the removal of
//! dead members and empty rooms, and the repair after a caught panic. What the proof
//! cannot see into runs through [`contained`], each effect on its own: a `try_send`
//! with the frame's reference it takes, a token's `cancel`, the bridge hand-off, a
//! log line, growing storage, and dropping what was removed.
//!
//! Invariants, kept by every operation and restored by [`Rooms::repair`]: a room
//! exists exactly while it has members; every delivery attempted is counted once,
//! as delivered, dropped for a full outbox, or dropped for a closed one.
//!
//! The per-member decision of the fan-out is in [`fan_out`](mod@fan_out). This file is longer
//! than the project's usual 400 lines because the operations of [`Rooms`] (join with
//! its greeting, leave, publish, shed, finish, repair) stay in one `impl`: each is a
//! proven unit over the same state and the same invariants, read together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::contained::{caught, contained};
use super::delivery::{Delivery, Epochs, Since};
use super::history::{Ledger, millis_since};
use super::stats::{BrokerStats, Counters, MemberStats, RoomStats};
use super::{ConnId, Settings};
use crate::cluster::{BridgeTx, Membership};
use crate::connection::frame::{self, Frame, kind};

mod fan_out;

use self::fan_out::{Offer, Pass, Run, Runs, fan_out, offer};
// What the tests beside this file take from here with `super::*`.
#[cfg(test)]
use self::fan_out::{DROP_LOG_INTERVAL, RUNS_TRACKED, log_drop};
#[cfg(test)]
use crate::config::SlowConsumer;

#[cfg(test)]
mod contract_test;
#[cfg(test)]
mod model_test;
#[cfg(test)]
mod run_test;
#[cfg(test)]
mod tests;

/// One member of a room: a connection and the sending end of its outbox.
#[derive(Debug)]
pub(crate) struct Member {
    id: ConnId,
    /// The broker's end of the connection's outbox; the writer holds the receiver.
    outbox_tx: mpsc::Sender<Frame>,
    /// Cancelled to disconnect this member as a slow consumer; its reader watches it
    /// and has its writer send Close 1008.
    kick: CancellationToken,
    /// Messages dropped for this member because its outbox was full (location ④).
    dropped: u64,
    /// When drops were last logged for this member.
    drop_logged_at: Option<Instant>,
    /// Outbox entries handed to this member so far (wrapping). With the entries its
    /// outbox still holds, it tells which of [`Self::runs`] the writer has taken.
    handed: u32,
    /// The runs handed to this member whole (as one entry each) that may still be in
    /// its outbox. The outbox's capacity counts entries; with these the broker still
    /// counts messages (see `fan_out::queued_messages`).
    runs: Runs,
    /// Test-only: every delivery to this member panics inside its contained
    /// `try_send`, so that the property test can check what a caught panic costs.
    #[cfg(test)]
    panics_on_delivery: bool,
}

impl Member {
    pub(crate) fn new(id: ConnId, outbox_tx: mpsc::Sender<Frame>, kick: CancellationToken) -> Self {
        Self {
            id,
            outbox_tx,
            kick,
            dropped: 0,
            drop_logged_at: None,
            handed: 0,
            runs: Runs::EMPTY,
            #[cfg(test)]
            panics_on_delivery: false,
        }
    }
}

/// One room: its members, in no particular order, plain and sequenced apart (so
/// that a room without `wsbroker.v1` members pays nothing for them), its numbering
/// and its history.
#[derive(Debug)]
pub(crate) struct Room {
    /// Members that receive each message as it was sent.
    members: Vec<Member>,
    /// Members that receive each message in the `wsbroker.v1` envelope.
    sequenced: Vec<Member>,
    /// Chosen when the room is created, from [`Rooms::epochs`].
    epoch: u64,
    /// The seq of the last message published to the room (0: none yet).
    seq: u64,
    /// Where its last messages are kept, for resumes (`--history-size`): a slot of
    /// the [`Ledger`], given when the first is kept.
    history: Option<usize>,
}

impl Room {
    fn new(epoch: u64) -> Self {
        Self { members: Vec::with_capacity(1), sequenced: Vec::new(), epoch, seq: 0, history: None }
    }

    /// Whether no member is left, of either kind.
    #[inline]
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.sequenced.is_empty()
    }
}

/// Who published a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A local connection: counted as published, and handed to other nodes.
    Member(ConnId),
    /// The publish API (`POST /rooms/{room}`): counted apart, and handed to other
    /// nodes; delivered to every member.
    Api,
    /// Another node, through Redis: delivered to local members only.
    Remote,
}

/// All rooms. A room exists exactly while it has members.
#[derive(Debug)]
pub(crate) struct Rooms {
    /// Room name to room. The default SipHash keys are random per process, so
    /// client-chosen room names cannot be used to force hash collisions.
    rooms: HashMap<Arc<str>, Room>,
    settings: Settings,
    counters: Counters,
    /// With `--redis-url`: where room changes and local messages go for other nodes.
    bridge: Option<BridgeTx>,
    /// Members removed by the operation under way, held until it ends and dropped
    /// then (dropping a channel end is opaque to the proof). Reserved ahead of each
    /// fan-out to the room's size, so that moving a member here never allocates; it
    /// keeps that capacity, at most the largest room's member list again.
    removed: Vec<Member>,
    /// A room emptied by the operation under way, likewise held until it ends.
    emptied: Option<(Arc<str>, Room)>,
    /// Where new rooms' epochs come from.
    epochs: Epochs,
    /// All rooms' history together: its limits and what it is charged.
    ledger: Ledger,
    /// The zero of the history's clock.
    started: Instant,
}

impl Rooms {
    pub(crate) fn new(settings: Settings, bridge: Option<BridgeTx>) -> Self {
        Self {
            rooms: HashMap::new(),
            settings,
            counters: Counters::default(),
            bridge,
            removed: Vec::new(),
            emptied: None,
            epochs: Epochs::seeded(),
            ledger: Ledger::new(settings.history),
            started: Instant::now(),
        }
    }

    /// Bytes charged for all rooms' history (`wsbroker_history_bytes`).
    #[inline]
    pub(crate) fn history_bytes(&self) -> usize {
        self.ledger.bytes()
    }

    /// The running totals.
    #[inline]
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Number of rooms (each has at least one member).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Counts a panic caught in the caller's contained effect.
    #[inline]
    pub(crate) fn count_caught_panic(&mut self) {
        self.counters.panics_caught = self.counters.panics_caught.wrapping_add(1);
    }

    /// Registers `member` in `room`, receiving messages as `delivery` says. The
    /// decision is proven; growing storage (a new room, a longer member list) is an
    /// allocation, so it runs contained, and so does telling the bridge about a new
    /// room. If the storage cannot be made (a panic caught there), the member is
    /// dropped instead, and its writer, seeing its outbox close, sends 1011
    /// (location ⑤). A sequenced member is then greeted (see [`Self::greet`]), in
    /// this same operation, so that nothing published meanwhile comes between.
    #[cfg_attr(feature = "no-panic", no_panic::no_panic)]
    #[inline(never)]
    #[expect(improper_ctypes_definitions, reason = "the C ABI for its nounwind calls; never called from C")]
    pub(crate) extern "C" fn join(&mut self, member: Member, room: &Arc<str>, delivery: Delivery) {
        let sequenced = delivery != Delivery::Plain;
        if let Err(member) = self.try_join(member, room, sequenced) {
            // A new room's epoch: drawn here, in proven code, used if it is created.
            let epoch = self.epochs.next();
            let (rooms, name) = (&mut self.rooms, Arc::clone(room));
            let made = contained(move || make_room(rooms, name, epoch, sequenced));
            caught(&mut self.counters, made.map(|_| ()));
            if made == Some(true)
                && let Some(bridge) = &self.bridge
            {
                let subscribe = Membership::Subscribe(Arc::clone(room));
                caught(&mut self.counters, contained(|| bridge.membership(subscribe)));
            }
            if let Err(member) = self.try_join(member, room, sequenced) {
                caught(&mut self.counters, contained(move || drop(member)));
                return;
            }
        }
        if let Delivery::Sequenced(since) = delivery {
            self.greet(room, since);
        }
    }

    /// Registers `member` in an existing `room` whose storage has spare capacity,
    /// without allocating; hands the member back otherwise.
    fn try_join(&mut self, member: Member, room: &str, sequenced: bool) -> Result<(), Member> {
        let Some(room) = self.rooms.get_mut(room) else {
            return Err(member);
        };
        let members = if sequenced { &mut room.sequenced } else { &mut room.members };
        if members.len() >= members.capacity() {
            return Err(member);
        }
        // Within capacity: `push` cannot reallocate, and the optimiser can see it.
        members.push(member);
        Ok(())
    }

    /// Greets the sequenced member that just joined `room` (the last in its list):
    /// - no `since`: a welcome with the room's epoch and last seq;
    /// - `since` in the room's epoch, with every message after it still in history
    ///   and unexpired, and room for all of them and the welcome in its outbox: the
    ///   welcome, then those messages oldest first (a resume, *recovered*);
    /// - anything else (another epoch, a seq in the future, evicted or expired
    ///   messages, too many, an unusable `since`): a reset with the room's epoch and
    ///   last seq (*reset*).
    ///
    /// Live messages follow either way. Building the greeting, reading the outbox's
    /// free room and the clock, and each `try_send` are contained; a member whose
    /// greeting cannot be built or sent is removed (its writer sends 1011).
    #[inline(always)]
    fn greet(&mut self, room: &str, since: Since) {
        let Self { rooms, counters, removed, ledger, started, .. } = self;
        let Some(Room { sequenced, epoch, seq, history, .. }) = rooms.get_mut(room) else { return };
        let (epoch, last) = (*epoch, *seq);
        let Some(member) = sequenced.last_mut() else { return };
        let replay = match since {
            Since::After { epoch: asked, seq: after } if asked == epoch => {
                let free = contained(|| member.outbox_tx.capacity()).unwrap_or(0);
                let now =
                    if ledger.limits().ttl.is_some() { contained(|| millis_since(*started)) } else { None };
                ledger.replay_from(*history, after, last, now).filter(|replay| replay.count < free)
            }
            _ => None,
        };
        if since != Since::Start {
            if replay.is_some() {
                counters.resumes_recovered = counters.resumes_recovered.wrapping_add(1);
            } else {
                counters.resumes_reset = counters.resumes_reset.wrapping_add(1);
            }
        }
        let greeting_kind =
            if replay.is_some() || since == Since::Start { kind::WELCOME } else { kind::RESET };
        let greeting = contained(|| frame::envelope(greeting_kind, epoch, last, &[]));
        let mut open = match &greeting {
            Some(greeting) => offer(member, greeting) == Offer::Delivered,
            None => {
                counters.panics_caught = counters.panics_caught.wrapping_add(1);
                false
            }
        };
        caught(counters, contained(move || drop(greeting)));
        if open && let Some(replay) = replay {
            let mut i = 0;
            while let Some(frame) = replay.get(i) {
                i = i.wrapping_add(1);
                if offer(member, frame) == Offer::Delivered {
                    counters.delivered = counters.delivered.wrapping_add(1);
                } else {
                    // The outbox had room for all of them: it closed, or panicked.
                    counters.dropped_closed = counters.dropped_closed.wrapping_add(1);
                    open = false;
                    break;
                }
            }
        }
        if !open && let Some(gone) = sequenced.pop() {
            if removed.len() >= removed.capacity() {
                caught(counters, contained(|| removed.reserve(1)));
            }
            Self::hold(removed, counters, gone);
        }
    }

    /// Deregisters `id` from `room`: the member goes to [`Self::removed`], and a room
    /// it leaves empty to [`Self::emptied`]. An unknown room or id is a no-op.
    #[cfg_attr(feature = "no-panic", no_panic::no_panic)]
    pub(crate) fn leave(&mut self, id: ConnId, room: &str) {
        if self.removed.len() >= self.removed.capacity() {
            let removed = &mut self.removed;
            caught(&mut self.counters, contained(|| removed.reserve(1)));
        }
        let Some(r) = self.rooms.get_mut(room) else { return };
        let Some(gone) = take(&mut r.members, id).or_else(|| take(&mut r.sequenced, id)) else { return };
        Self::hold(&mut self.removed, &mut self.counters, gone);
        if r.is_empty() {
            // Kept until the operation ends. One operation empties at most one room,
            // so the slot is free; its old value is dropped contained all the same.
            let earlier = std::mem::replace(&mut self.emptied, self.rooms.remove_entry(room));
            caught(&mut self.counters, contained(move || drop(earlier)));
        }
    }

    /// Moves `gone` into `removed`, to be dropped when the operation ends: within its
    /// capacity, so without allocating (the check beside the `push` lets the optimiser
    /// see that). Were the capacity ever short, `gone` is dropped at once, contained.
    #[inline(always)]
    fn hold(removed: &mut Vec<Member>, counters: &mut Counters, gone: Member) {
        if removed.len() < removed.capacity() {
            removed.push(gone);
        } else {
            caught(counters, contained(move || drop(gone)));
        }
    }

    /// Fans a run of messages out to every member of `room`: one message, or several
    /// that reached the broker together (consecutive publishes to this room, see
    /// `Broker::extends_run`). Each member gets a reference-counted clone of the same
    /// bytes, so a message costs one copy however many receive it; a run of several
    /// is handed over as one outbox entry, its frames back to back (built once,
    /// contained: an allocation and a copy), when all of it fits in the member's
    /// outbox, and message by message otherwise (see `fan_out::offer_run`). The room numbers
    /// each message (its seq grows by one per message); its sequenced members get
    /// the `wsbroker.v1` frames, built once (contained) when the room has any, or
    /// keeps history, and kept in the room's history.
    ///
    /// Location ④, decided here per member and message, in one pass (see
    /// [`fan_out`](mod@fan_out)):
    /// - `Ok`: counted as delivered.
    /// - `Full`: the member is slower than the publishers. The message is dropped for
    ///   that member only and counted, so one slow consumer cannot hold back the
    ///   broker, the publishers, or the other members; with `--slow-consumer
    ///   disconnect` the member is kicked (its reader has the writer send 1008) and
    ///   removed. A sequenced member sees the drop as a jump in seq.
    /// - `Closed`: the member's writer is gone (it ended, or panicked) and its reader
    ///   has not deregistered yet. The member is removed in the same pass.
    /// - A panic caught in the member's `try_send`: counted, and the member removed as
    ///   if closed (its writer, seeing its outbox close, sends 1011). Nobody else in
    ///   the room misses the message for it.
    ///
    /// A run is decided exactly as its messages published one by one would be.
    /// Members removed go to [`Self::removed`], and a room left empty to
    /// [`Self::emptied`], to be dropped when the operation ends.
    #[cfg_attr(feature = "no-panic", no_panic::no_panic)]
    #[inline(never)]
    #[expect(improper_ctypes_definitions, reason = "the C ABI for its nounwind calls; never called from C")]
    pub(crate) extern "C" fn publish(&mut self, origin: Origin, room: &Arc<str>, frames: &[Frame]) {
        let Self { rooms, settings, counters, bridge, removed, emptied, ledger, started, .. } = self;
        let count = u64::try_from(frames.len()).unwrap_or(u64::MAX);
        let from = match origin {
            Origin::Member(id) => {
                counters.published = counters.published.wrapping_add(count);
                Some(id)
            }
            Origin::Api => {
                counters.published_api = counters.published_api.wrapping_add(count);
                None
            }
            Origin::Remote => None,
        };
        if origin != Origin::Remote
            && let Some(bridge) = bridge
        {
            for frame in frames {
                caught(counters, contained(|| bridge.publish(room, frame)));
            }
        }
        let Some(r) = rooms.get_mut(&**room) else {
            // The publisher's room is gone (its membership was dropped by the broker
            // and its reader has not noticed yet): nobody to deliver to.
            return;
        };
        let first_seq = r.seq.wrapping_add(1);
        r.seq = r.seq.wrapping_add(count);
        let epoch = r.epoch;
        let limits = ledger.limits();
        let keeps_history = limits.size != 0;
        let envelopes = if r.sequenced.is_empty() && !keeps_history {
            None
        } else {
            let built = contained(|| frame::sequenced_run(frames, epoch, first_seq));
            if built.is_none() {
                counters.panics_caught = counters.panics_caught.wrapping_add(1);
            }
            built.flatten()
        };
        // A run of several as one entry per list that has members.
        let plain_joined =
            if frames.len() > 1 && !r.members.is_empty() { joined(frames, counters) } else { None };
        let sequenced_joined = match &envelopes {
            Some(each) if each.len() > 1 && !r.sequenced.is_empty() => joined(each, counters),
            _ => None,
        };
        // Room for every member this pass might remove: an allocation, contained, and
        // only when the room has grown past every room before it.
        let wanted = r.members.len().saturating_add(r.sequenced.len());
        if removed.capacity() < wanted {
            caught(counters, contained(|| removed.reserve(wanted)));
        }
        let pass = Pass { from, settings: *settings, room };
        // The clock is read at most once per publish, and only if something is
        // dropped: the drop log line reads it, contained.
        let mut now: Option<Instant> = None;
        // Plain members get the frames as sent; sequenced ones their envelopes. One
        // loop over both lists, so that the per-member code (and each contained
        // effect in it) has one call site, which keeps it inlined and so proven.
        for (members, run) in [
            (&mut r.members, Run::of(frames, plain_joined.as_ref())),
            (
                &mut r.sequenced,
                envelopes.as_deref().and_then(|each| Run::of(each, sequenced_joined.as_ref())),
            ),
        ] {
            if let Some(run) = run {
                fan_out(members, &run, &pass, counters, removed, &mut now);
            }
        }
        caught(counters, contained(move || drop((plain_joined, sequenced_joined))));
        let empty = r.is_empty();
        if let Some(envelopes) = envelopes {
            // Only a TTL needs the time of each message.
            let at = if limits.ttl.is_some() { contained(|| millis_since(*started)).unwrap_or(0) } else { 0 };
            let mut seq = first_seq;
            for envelope in &envelopes {
                let unkept = ledger.keep(&mut r.history, seq, Arc::clone(envelope), at, counters);
                caught(counters, contained(move || drop(unkept)));
                seq = seq.wrapping_add(1);
            }
            caught(counters, contained(move || drop(envelopes)));
        }
        if empty {
            // As in `leave`.
            let earlier = std::mem::replace(emptied, rooms.remove_entry(&**room));
            caught(counters, contained(move || drop(earlier)));
        }
    }

    /// Sheds up to `count` members of one room for a lame-duck drain: each is kicked
    /// (its reader has the writer send 1012, since the server is draining) and
    /// removed, so nothing more is delivered to it. One room per call, so that one
    /// operation empties at most one room (see [`Self::emptied`]); returns how many
    /// were shed, 0 once no member is left. Which room, and which of its members,
    /// is unspecified: a drain sheds them all in the end.
    #[cfg_attr(feature = "no-panic", no_panic::no_panic)]
    pub(crate) fn shed(&mut self, count: usize) -> usize {
        let Self { rooms, counters, removed, emptied, .. } = self;
        let Some((name, room)) = rooms.iter_mut().next() else { return 0 };
        let quota = count.min(room.members.len().saturating_add(room.sequenced.len()));
        if removed.capacity().saturating_sub(removed.len()) < quota {
            caught(counters, contained(|| removed.reserve(quota)));
        }
        let mut shed = 0usize;
        while shed < quota
            && let Some(member) = room.members.pop().or_else(|| room.sequenced.pop())
        {
            caught(counters, contained(|| kick_to_drain(&member, name)));
            Self::hold(removed, counters, member);
            shed = shed.wrapping_add(1);
        }
        counters.shed = counters.shed.wrapping_add(u64::try_from(shed).unwrap_or(u64::MAX));
        if room.is_empty() {
            // As in `leave`.
            let name = Arc::clone(name);
            let earlier = std::mem::replace(emptied, rooms.remove_entry(&*name));
            caught(counters, contained(move || drop((earlier, name))));
        }
        shed
    }

    /// Whether messages go back to their senders too (not `--no-echo`).
    #[inline]
    pub(crate) fn echo(&self) -> bool {
        self.settings.echo
    }

    /// Ends an operation: drops what it removed and tells the bridge about a room it
    /// emptied (contained: dropping channel ends and the bridge's `try_send` are
    /// opaque), then, if any panic was caught since `panics_before`, repairs.
    #[cfg_attr(feature = "no-panic", no_panic::no_panic)]
    #[inline(never)]
    pub(crate) extern "C" fn finish(&mut self, panics_before: u64) {
        if !self.removed.is_empty() {
            let removed = &mut self.removed;
            caught(&mut self.counters, contained(|| removed.clear()));
        }
        if let Some((name, room)) = self.emptied.take() {
            self.ledger.forget(room.history, &mut self.counters);
            if let Some(bridge) = &self.bridge {
                let unsubscribe = Membership::Unsubscribe(Arc::clone(&name));
                caught(&mut self.counters, contained(|| bridge.membership(unsubscribe)));
            }
            caught(&mut self.counters, contained(move || drop((name, room))));
        }
        if self.counters.panics_caught != panics_before {
            self.repair();
        }
    }

    /// Restores the invariants after a caught panic: a room without members (left by
    /// storage that could not be grown) is removed. Every operation otherwise keeps
    /// the invariants itself, the counters included.
    #[cfg_attr(feature = "no-panic", no_panic::no_panic)]
    pub(crate) fn repair(&mut self) {
        while let Some(name) = self.rooms.iter().find(|(_, r)| r.is_empty()).map(|(n, _)| Arc::clone(n)) {
            let entry = self.rooms.remove_entry(&*name);
            if let Some((_, room)) = &entry {
                self.ledger.forget(room.history, &mut self.counters);
            }
            caught(&mut self.counters, contained(move || drop((entry, name))));
        }
    }

    /// Removes a whole room, as [`Self::leave`] would when its last member leaves,
    /// dropping every member's outbox sender when the operation ends (test hooks
    /// only: it is how the tests reach location ⑤).
    pub(crate) fn remove_room(&mut self, room: &str) {
        let earlier = std::mem::replace(&mut self.emptied, self.rooms.remove_entry(room));
        caught(&mut self.counters, contained(move || drop(earlier)));
    }

    /// A snapshot for [`crate::ServerHandle::stats`]. Allocates; not on the hot path.
    pub(crate) fn stats(&self) -> BrokerStats {
        let mut rooms: Vec<RoomStats> = self
            .rooms
            .iter()
            .map(|(name, room)| {
                let mut members: Vec<MemberStats> = (room.members.iter())
                    .chain(&room.sequenced)
                    .map(|m| MemberStats { id: m.id, dropped: m.dropped })
                    .collect();
                members.sort_by_key(|m| m.id);
                RoomStats { name: name.to_string(), members }
            })
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        BrokerStats { rooms, counters: self.counters }
    }
}

/// Makes room for one more member of `name` (a sequenced one if `sequenced`):
/// creates the room with `epoch`, or grows its member list. Returns whether the room
/// was created. Allocates; run contained.
fn make_room(rooms: &mut HashMap<Arc<str>, Room>, name: Arc<str>, epoch: u64, sequenced: bool) -> bool {
    let (room, created) = match rooms.entry(name) {
        std::collections::hash_map::Entry::Occupied(e) => (e.into_mut(), false),
        std::collections::hash_map::Entry::Vacant(e) => (e.insert(Room::new(epoch)), true),
    };
    if sequenced {
        room.sequenced.reserve(1)
    } else {
        room.members.reserve(1)
    }
    created
}

/// Takes member `id` out of `members` (the last one takes its place), if it is there.
#[inline(always)]
fn take(members: &mut Vec<Member>, id: ConnId) -> Option<Member> {
    let pos = members.iter().position(|m| m.id == id)?;
    // In range: `pos` came from this vector, as the optimiser sees.
    (pos < members.len()).then(|| members.swap_remove(pos))
}

/// `frames` back to back, built contained (an allocation and a copy); `None`, counted
/// as a caught panic, if that panicked.
#[inline(always)]
fn joined(frames: &[Frame], counters: &mut Counters) -> Option<Frame> {
    let built = contained(|| frame::joined(frames));
    if built.is_none() {
        counters.panics_caught = counters.panics_caught.wrapping_add(1);
    }
    built
}

/// Sheds `member` for a drain: its reader sees the token and has the writer send
/// Close 1012. Run contained, as `fan_out::kick`.
fn kick_to_drain(member: &Member, room: &str) {
    tracing::debug!(conn = member.id.0, room, "shed by the drain");
    member.kick.cancel();
}
