//! Room state owned by the broker task: who is in which room, and per-member counts.
//!
//! Nothing here awaits: every operation is a synchronous state transition, which is
//! what lets the panic audit reason about (and, where the compiler can prove it,
//! prove) the broker's behaviour.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use super::{ConnId, Settings};
use crate::cluster::{BridgeTx, Membership};
use crate::config::SlowConsumer;
use crate::connection::frame::Frame;

/// Drops for one member are logged at most once per this interval, so a slow
/// consumer produces a steady trickle of log lines rather than one per message.
pub(crate) const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

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
}

impl Member {
    pub(crate) fn new(id: ConnId, outbox_tx: mpsc::Sender<Frame>, kick: CancellationToken) -> Self {
        Self { id, outbox_tx, kick, dropped: 0, drop_logged_at: None }
    }
}

/// Running totals since the broker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages published by clients (each counted once, however many receive it).
    pub published: u64,
    /// Messages placed in a member's outbox.
    pub delivered: u64,
    /// Deliveries dropped because the member's outbox was full (④ `Full`).
    pub dropped_full: u64,
    /// Deliveries dropped because the member's writer was gone (④ `Closed`); the
    /// member is removed at the same time.
    pub dropped_closed: u64,
    /// Members disconnected as slow consumers (`--slow-consumer disconnect`).
    pub slow_disconnects: u64,
}

/// A snapshot of the broker's state, for tests, metrics and operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Every room that has at least one member, sorted by name.
    pub rooms: Vec<RoomStats>,
    /// Running totals.
    pub counters: Counters,
    /// Panics caught inside the broker's contained effects (should stay 0).
    pub panics_caught: u64,
}

/// One room in a [`BrokerStats`] snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomStats {
    /// The room name (the request path).
    pub name: String,
    /// Its members, sorted by id.
    pub members: Vec<MemberStats>,
}

/// One member in a [`RoomStats`] snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberStats {
    /// The connection.
    pub id: ConnId,
    /// Messages dropped for it because its outbox was full.
    pub dropped: u64,
}

impl BrokerStats {
    /// Number of members in `room` (0 when the room does not exist).
    pub fn members(&self, room: &str) -> usize {
        self.room(room).map_or(0, |r| r.members.len())
    }

    /// The room called `room`, if it has members.
    pub fn room(&self, room: &str) -> Option<&RoomStats> {
        self.rooms.iter().find(|r| r.name == room)
    }

    /// Number of registered connections across all rooms.
    pub fn connections(&self) -> usize {
        self.rooms.iter().map(|r| r.members.len()).sum()
    }
}

/// All rooms. A room exists exactly while it has members.
#[derive(Debug)]
pub(crate) struct Rooms {
    /// Room name to members. The default SipHash keys are random per process, so
    /// client-chosen room names cannot be used to force hash collisions.
    rooms: HashMap<Arc<str>, Vec<Member>>,
    settings: Settings,
    counters: Counters,
    /// With `--redis-url`: where room changes and local messages go for other nodes.
    bridge: Option<BridgeTx>,
}

/// What [`Rooms::leave`] hands back for the caller to drop. Dropping a `Sender` or a
/// `Vec<Member>` runs tokio's channel-closing code, which the no_panic proof cannot
/// see through, so proven code returns them instead of dropping them.
#[derive(Debug)]
#[allow(dead_code, reason = "fields are held only to be dropped outside the proven code")]
pub(crate) struct Left {
    /// The departed member, with its outbox sender.
    pub member: Member,
    /// The room's storage, when the departure emptied it.
    pub emptied: Option<(Arc<str>, Vec<Member>)>,
}

impl Rooms {
    pub(crate) fn new(settings: Settings, bridge: Option<BridgeTx>) -> Self {
        Self { rooms: HashMap::new(), settings, counters: Counters::default(), bridge }
    }

    /// Tells the bridge (if any) that `room` lost its last local member. Not proven
    /// (a channel send); called from contained code only.
    pub(crate) fn room_removed(&self, room: &Arc<str>) {
        if let Some(bridge) = &self.bridge {
            bridge.membership(Membership::Unsubscribe(Arc::clone(room)));
        }
    }

    /// Registers `member` in an existing `room` whose storage has spare capacity,
    /// without allocating. Hands the member back when the room does not exist yet or
    /// is at capacity; the caller then uses [`Self::join_growing`].
    #[cfg_attr(feature = "no-panic", no_panic::no_panic)]
    pub(crate) fn try_join(&mut self, member: Member, room: &str) -> Result<(), Member> {
        let Some(members) = self.rooms.get_mut(room) else {
            return Err(member);
        };
        if members.len() >= members.capacity() {
            return Err(member);
        }
        // Within capacity: `push` cannot reallocate, and the optimiser can see it.
        members.push(member);
        Ok(())
    }

    /// Registers `member` in `room`, creating the room or growing its storage. This
    /// allocates, so it is not proven; the broker runs it contained.
    pub(crate) fn join_growing(&mut self, member: Member, room: Arc<str>) {
        match self.rooms.entry(room) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().push(member),
            std::collections::hash_map::Entry::Vacant(e) => {
                if let Some(bridge) = &self.bridge {
                    bridge.membership(Membership::Subscribe(Arc::clone(e.key())));
                }
                e.insert(vec![member]);
            }
        }
    }

    /// Deregisters `id` from `room` and hands back what must be dropped. An unknown
    /// room or id is a no-op that returns `None`.
    #[cfg_attr(feature = "no-panic", no_panic::no_panic)]
    pub(crate) fn leave(&mut self, id: ConnId, room: &str) -> Option<Left> {
        let members = self.rooms.get_mut(room)?;
        let pos = members.iter().position(|m| m.id == id)?;
        if pos >= members.len() {
            return None; // cannot happen: `pos` came from this vector
        }
        // Member order does not matter, so the O(1) swap_remove is fine.
        let member = members.swap_remove(pos);
        let emptied = if members.is_empty() { self.rooms.remove_entry(room) } else { None };
        Some(Left { member, emptied })
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

    /// Removes a whole room, handing back its members for the caller to drop.
    #[cfg_attr(feature = "no-panic", no_panic::no_panic)]
    pub(crate) fn remove_room(&mut self, room: &str) -> Option<(Arc<str>, Vec<Member>)> {
        self.rooms.remove_entry(room)
    }

    /// Fans `frame` out to every member of `room`: each gets a reference-counted clone
    /// of the same bytes, so a message costs one copy however many receive it.
    ///
    /// Location ④, per member, in one pass over the room with no allocation:
    /// - `Ok`: counted as delivered.
    /// - `Full`: the member is slower than the publishers. The message is dropped for
    ///   that member only and counted, so one slow consumer cannot hold back the
    ///   broker, the publishers, or the other members.
    /// - `Closed`: the member's writer is gone (it ended, or panicked) and its reader
    ///   has not deregistered yet. The member is removed right here by `retain_mut`.
    ///
    /// Not proven (tokio's `try_send` and cloning an `Arc` are opaque to the
    /// proof); the broker runs it contained.
    ///
    /// `from` is the publishing connection, or `None` for a message from another node
    /// (through Redis), which is delivered locally only and never published again.
    pub(crate) fn publish(&mut self, from: Option<ConnId>, room: &Arc<str>, frame: Frame) {
        if from.is_some() {
            self.counters.published = self.counters.published.wrapping_add(1);
            if let Some(bridge) = &self.bridge {
                bridge.publish(room, &frame);
            }
        }
        let room: &str = room;
        let Some(members) = self.rooms.get_mut(room) else {
            // The publisher's room is gone (its membership was dropped by the broker
            // and its reader has not noticed yet): nobody to deliver to.
            return;
        };
        let Settings { echo, slow_consumer } = self.settings;
        let counters = &mut self.counters;
        // Read the clock at most once per publish, and only if something is dropped:
        // a clock read per dropped delivery is a syscall-priced cost on the hot path.
        let mut now: Option<Instant> = None;
        members.retain_mut(|member| {
            if !echo && Some(member.id) == from {
                return true;
            }
            match member.outbox_tx.try_send(frame.clone()) {
                Ok(()) => {
                    counters.delivered = counters.delivered.wrapping_add(1);
                    true
                }
                Err(TrySendError::Full(_)) => {
                    member.dropped = member.dropped.wrapping_add(1);
                    counters.dropped_full = counters.dropped_full.wrapping_add(1);
                    match slow_consumer {
                        SlowConsumer::Drop => {
                            log_drop(member, room, *now.get_or_insert_with(Instant::now));
                            true
                        }
                        SlowConsumer::Disconnect => {
                            // The reader sees the token and has the writer send
                            // Close 1008; dropping the member here also closes its
                            // outbox.
                            counters.slow_disconnects = counters.slow_disconnects.wrapping_add(1);
                            tracing::info!(conn = member.id.0, room, "slow consumer disconnected");
                            member.kick.cancel();
                            false
                        }
                    }
                }
                Err(TrySendError::Closed(_)) => {
                    counters.dropped_closed = counters.dropped_closed.wrapping_add(1);
                    false
                }
            }
        });
        if members.is_empty() {
            if let Some((name, _)) = self.rooms.remove_entry(room) {
                self.room_removed(&name);
            }
        }
    }

    /// A snapshot for [`crate::ServerHandle::stats`]. Allocates; not on the hot path.
    pub(crate) fn stats(&self, panics_caught: u64) -> BrokerStats {
        let mut rooms: Vec<RoomStats> = self
            .rooms
            .iter()
            .map(|(name, members)| {
                let mut members: Vec<MemberStats> =
                    members.iter().map(|m| MemberStats { id: m.id, dropped: m.dropped }).collect();
                members.sort_by_key(|m| m.id);
                RoomStats { name: name.to_string(), members }
            })
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        BrokerStats { rooms, counters: self.counters, panics_caught }
    }
}

/// Logs that `member` is losing messages, at most once per [`DROP_LOG_INTERVAL`].
fn log_drop(member: &mut Member, room: &str, now: Instant) {
    let due = member.drop_logged_at.is_none_or(|at| now.saturating_duration_since(at) >= DROP_LOG_INTERVAL);
    if due {
        member.drop_logged_at = Some(now);
        tracing::warn!(
            conn = member.id.0,
            room,
            dropped_total = member.dropped,
            "slow consumer: outbox full, dropping messages for this connection"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Rooms {
        fn join(&mut self, id: ConnId, room: Arc<str>, tx: mpsc::Sender<Frame>) {
            if let Err(member) = self.try_join(Member::new(id, tx, CancellationToken::new()), &room) {
                self.join_growing(member, room);
            }
        }
    }

    fn settings(echo: bool) -> Settings {
        Settings { echo, slow_consumer: SlowConsumer::Drop }
    }

    fn text(s: &'static str) -> Frame {
        Arc::new(s.as_bytes().to_vec())
    }

    #[test]
    fn publish_reaches_every_member_and_only_its_room() {
        let mut rooms = Rooms::new(settings(true), None);
        let (a_tx, mut a_rx) = mpsc::channel(4);
        let (b_tx, mut b_rx) = mpsc::channel(4);
        let (c_tx, mut c_rx) = mpsc::channel(4);
        rooms.join(ConnId(1), Arc::from("/a"), a_tx);
        rooms.join(ConnId(2), Arc::from("/a"), b_tx);
        rooms.join(ConnId(3), Arc::from("/c"), c_tx);
        rooms.publish(Some(ConnId(1)), &Arc::from("/a"), text("hi"));
        assert_eq!(a_rx.try_recv().unwrap(), text("hi"));
        assert_eq!(b_rx.try_recv().unwrap(), text("hi"));
        assert!(c_rx.try_recv().is_err());
        assert_eq!(rooms.stats(0).counters.delivered, 2);
    }

    #[test]
    fn no_echo_skips_the_sender() {
        let mut rooms = Rooms::new(settings(false), None);
        let (a_tx, mut a_rx) = mpsc::channel(4);
        let (b_tx, mut b_rx) = mpsc::channel(4);
        rooms.join(ConnId(1), Arc::from("/a"), a_tx);
        rooms.join(ConnId(2), Arc::from("/a"), b_tx);
        rooms.publish(Some(ConnId(1)), &Arc::from("/a"), text("hi"));
        assert!(a_rx.try_recv().is_err());
        assert_eq!(b_rx.try_recv().unwrap(), text("hi"));
    }

    #[test]
    fn full_outbox_drops_for_that_member_only() {
        let mut rooms = Rooms::new(settings(true), None);
        let (slow_tx, _slow_rx) = mpsc::channel(1);
        let (fast_tx, mut fast_rx) = mpsc::channel(8);
        rooms.join(ConnId(1), Arc::from("/r"), slow_tx);
        rooms.join(ConnId(2), Arc::from("/r"), fast_tx);
        for _ in 0..3 {
            rooms.publish(Some(ConnId(2)), &Arc::from("/r"), text("m"));
        }
        for _ in 0..3 {
            assert_eq!(fast_rx.try_recv().unwrap(), text("m"));
        }
        let stats = rooms.stats(0);
        let slow = stats.room("/r").unwrap().members.iter().find(|m| m.id == ConnId(1)).unwrap();
        assert_eq!(slow.dropped, 2);
        assert_eq!(stats.counters.dropped_full, 2);
        assert_eq!(stats.members("/r"), 2);
    }

    #[test]
    fn closed_outbox_is_removed_in_the_same_pass() {
        let mut rooms = Rooms::new(settings(true), None);
        let (dead_tx, dead_rx) = mpsc::channel(1);
        drop(dead_rx);
        let (live_tx, mut live_rx) = mpsc::channel(1);
        rooms.join(ConnId(1), Arc::from("/r"), dead_tx);
        rooms.join(ConnId(2), Arc::from("/r"), live_tx);
        rooms.publish(Some(ConnId(2)), &Arc::from("/r"), text("m"));
        assert_eq!(live_rx.try_recv().unwrap(), text("m"));
        let stats = rooms.stats(0);
        assert_eq!(stats.members("/r"), 1);
        assert_eq!(stats.counters.dropped_closed, 1);
    }

    #[test]
    fn leave_of_unknown_ids_and_rooms_is_a_no_op() {
        let mut rooms = Rooms::new(settings(true), None);
        let (tx, _rx) = mpsc::channel(1);
        rooms.join(ConnId(1), Arc::from("/r"), tx);
        assert!(rooms.leave(ConnId(9), "/r").is_none());
        assert!(rooms.leave(ConnId(1), "/nope").is_none());
        assert_eq!(rooms.stats(0).members("/r"), 1);
        assert!(rooms.leave(ConnId(1), "/r").is_some());
        assert!(rooms.leave(ConnId(1), "/r").is_none());
        assert!(rooms.stats(0).rooms.is_empty());
    }

    #[test]
    fn drops_are_logged_at_most_once_per_interval() {
        let (tx, _rx) = mpsc::channel(1);
        let mut member = Member::new(ConnId(1), tx, CancellationToken::new());
        let t0 = Instant::now();
        log_drop(&mut member, "/r", t0);
        assert_eq!(member.drop_logged_at, Some(t0));
        log_drop(&mut member, "/r", t0 + DROP_LOG_INTERVAL / 2);
        assert_eq!(member.drop_logged_at, Some(t0), "a second drop within the interval is not logged");
        log_drop(&mut member, "/r", t0 + DROP_LOG_INTERVAL);
        assert_eq!(member.drop_logged_at, Some(t0 + DROP_LOG_INTERVAL), "logged again after the interval");
    }

    #[test]
    fn try_join_needs_an_existing_room_with_spare_capacity() {
        let mut rooms = Rooms::new(settings(true), None);
        let (tx, _rx) = mpsc::channel(1);
        let member = rooms.try_join(Member::new(ConnId(1), tx, CancellationToken::new()), "/r").unwrap_err();
        rooms.join_growing(member, Arc::from("/r"));
        assert_eq!(rooms.stats(0).members("/r"), 1);
        let left = rooms.leave(ConnId(1), "/r").unwrap();
        assert!(left.emptied.is_some(), "the last member empties the room");
        assert_eq!(rooms.stats(0).members("/r"), 0);
    }
}
