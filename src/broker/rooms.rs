//! Room state owned by the broker task: who is in which room, and per-member counts.
//!
//! Nothing here awaits: every operation is a synchronous state transition, which is
//! what lets the panic audit reason about (and, where the compiler can prove it,
//! prove) the broker's behaviour.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_tungstenite::tungstenite::Message;

use super::ConnId;

/// One member of a room: a connection and the sending end of its outbox.
#[derive(Debug)]
pub(crate) struct Member {
    id: ConnId,
    /// The broker's end of the connection's outbox; the writer holds the receiver.
    outbox_tx: mpsc::Sender<Message>,
    /// Messages dropped for this member because its outbox was full (location ④).
    dropped: u64,
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
    echo: bool,
    counters: Counters,
}

/// What [`Rooms::leave`] hands back for the caller to drop. Dropping a `Sender` or a
/// `Vec<Member>` runs tokio's channel-closing code, which the no_panic proof cannot
/// see through, so proven code returns them instead of dropping them.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "fields are held only to be dropped outside the proven code"
)]
pub(crate) struct Left {
    /// The departed member's outbox sender.
    pub outbox_tx: mpsc::Sender<Message>,
    /// The room's storage, when the departure emptied it.
    pub emptied: Option<(Arc<str>, Vec<Member>)>,
}

impl Rooms {
    pub(crate) fn new(echo: bool) -> Self {
        Self {
            rooms: HashMap::new(),
            echo,
            counters: Counters::default(),
        }
    }

    /// Registers `id` in an existing `room` whose storage has spare capacity, without
    /// allocating. Hands `outbox_tx` back when the room does not exist yet or is at
    /// capacity; the caller then uses [`Self::join_growing`].
    #[cfg_attr(feature = "no-panic", no_panic::no_panic)]
    pub(crate) fn try_join(
        &mut self,
        id: ConnId,
        room: &str,
        outbox_tx: mpsc::Sender<Message>,
    ) -> Result<(), mpsc::Sender<Message>> {
        let Some(members) = self.rooms.get_mut(room) else {
            return Err(outbox_tx);
        };
        if members.len() >= members.capacity() {
            return Err(outbox_tx);
        }
        // Within capacity: `push` cannot reallocate, and the optimiser can see it.
        members.push(Member {
            id,
            outbox_tx,
            dropped: 0,
        });
        Ok(())
    }

    /// Registers `id` in `room`, creating the room or growing its storage. This
    /// allocates, so it is not proven; the broker runs it contained.
    pub(crate) fn join_growing(
        &mut self,
        id: ConnId,
        room: Arc<str>,
        outbox_tx: mpsc::Sender<Message>,
    ) {
        self.rooms.entry(room).or_default().push(Member {
            id,
            outbox_tx,
            dropped: 0,
        });
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
        let Member { outbox_tx, .. } = members.swap_remove(pos);
        let emptied = if members.is_empty() {
            self.rooms.remove_entry(room)
        } else {
            None
        };
        Some(Left { outbox_tx, emptied })
    }

    /// Removes a whole room, handing back its members for the caller to drop.
    #[cfg_attr(feature = "no-panic", no_panic::no_panic)]
    pub(crate) fn remove_room(&mut self, room: &str) -> Option<(Arc<str>, Vec<Member>)> {
        self.rooms.remove_entry(room)
    }

    /// Number of members of `room` (0 when it does not exist).
    #[cfg_attr(feature = "no-panic", no_panic::no_panic)]
    pub(crate) fn member_count(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, Vec::len)
    }

    /// Fans `message` out to every member of `room`.
    ///
    /// Location ④, per member, in one pass over the room with no allocation:
    /// - `Ok`: counted as delivered.
    /// - `Full`: the member is slower than the publishers. The message is dropped for
    ///   that member only and counted, so one slow consumer cannot hold back the
    ///   broker, the publishers, or the other members.
    /// - `Closed`: the member's writer is gone (it ended, or panicked) and its reader
    ///   has not deregistered yet. The member is removed right here by `retain_mut`.
    ///
    /// Not proven (tokio's `try_send` and cloning a `Message` are opaque to the
    /// proof); the broker runs it contained.
    pub(crate) fn publish(&mut self, from: ConnId, room: &str, message: Message) {
        self.counters.published = self.counters.published.wrapping_add(1);
        let Some(members) = self.rooms.get_mut(room) else {
            // The publisher's room is gone (its membership was dropped by the broker
            // and its reader has not noticed yet): nobody to deliver to.
            return;
        };
        let echo = self.echo;
        let counters = &mut self.counters;
        members.retain_mut(|member| {
            if !echo && member.id == from {
                return true;
            }
            match member.outbox_tx.try_send(message.clone()) {
                Ok(()) => {
                    counters.delivered = counters.delivered.wrapping_add(1);
                    true
                }
                Err(TrySendError::Full(_)) => {
                    member.dropped = member.dropped.wrapping_add(1);
                    counters.dropped_full = counters.dropped_full.wrapping_add(1);
                    true
                }
                Err(TrySendError::Closed(_)) => {
                    counters.dropped_closed = counters.dropped_closed.wrapping_add(1);
                    false
                }
            }
        });
        if members.is_empty() {
            self.rooms.remove(room);
        }
    }

    /// A snapshot for [`crate::ServerHandle::stats`]. Allocates; not on the hot path.
    pub(crate) fn stats(&self, panics_caught: u64) -> BrokerStats {
        let mut rooms: Vec<RoomStats> = self
            .rooms
            .iter()
            .map(|(name, members)| {
                let mut members: Vec<MemberStats> = members
                    .iter()
                    .map(|m| MemberStats {
                        id: m.id,
                        dropped: m.dropped,
                    })
                    .collect();
                members.sort_by_key(|m| m.id);
                RoomStats {
                    name: name.to_string(),
                    members,
                }
            })
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        BrokerStats {
            rooms,
            counters: self.counters,
            panics_caught,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Rooms {
        fn join(&mut self, id: ConnId, room: Arc<str>, tx: mpsc::Sender<Message>) {
            if let Err(tx) = self.try_join(id, &room, tx) {
                self.join_growing(id, room, tx);
            }
        }
    }

    fn text(s: &'static str) -> Message {
        Message::text(s)
    }

    #[test]
    fn publish_reaches_every_member_and_only_its_room() {
        let mut rooms = Rooms::new(true);
        let (a_tx, mut a_rx) = mpsc::channel(4);
        let (b_tx, mut b_rx) = mpsc::channel(4);
        let (c_tx, mut c_rx) = mpsc::channel(4);
        rooms.join(ConnId(1), Arc::from("/a"), a_tx);
        rooms.join(ConnId(2), Arc::from("/a"), b_tx);
        rooms.join(ConnId(3), Arc::from("/c"), c_tx);
        rooms.publish(ConnId(1), "/a", text("hi"));
        assert_eq!(a_rx.try_recv().unwrap(), text("hi"));
        assert_eq!(b_rx.try_recv().unwrap(), text("hi"));
        assert!(c_rx.try_recv().is_err());
        assert_eq!(rooms.stats(0).counters.delivered, 2);
    }

    #[test]
    fn no_echo_skips_the_sender() {
        let mut rooms = Rooms::new(false);
        let (a_tx, mut a_rx) = mpsc::channel(4);
        let (b_tx, mut b_rx) = mpsc::channel(4);
        rooms.join(ConnId(1), Arc::from("/a"), a_tx);
        rooms.join(ConnId(2), Arc::from("/a"), b_tx);
        rooms.publish(ConnId(1), "/a", text("hi"));
        assert!(a_rx.try_recv().is_err());
        assert_eq!(b_rx.try_recv().unwrap(), text("hi"));
    }

    #[test]
    fn full_outbox_drops_for_that_member_only() {
        let mut rooms = Rooms::new(true);
        let (slow_tx, _slow_rx) = mpsc::channel(1);
        let (fast_tx, mut fast_rx) = mpsc::channel(8);
        rooms.join(ConnId(1), Arc::from("/r"), slow_tx);
        rooms.join(ConnId(2), Arc::from("/r"), fast_tx);
        for _ in 0..3 {
            rooms.publish(ConnId(2), "/r", text("m"));
        }
        for _ in 0..3 {
            assert_eq!(fast_rx.try_recv().unwrap(), text("m"));
        }
        let stats = rooms.stats(0);
        let slow = stats
            .room("/r")
            .unwrap()
            .members
            .iter()
            .find(|m| m.id == ConnId(1))
            .unwrap();
        assert_eq!(slow.dropped, 2);
        assert_eq!(stats.counters.dropped_full, 2);
        assert_eq!(stats.members("/r"), 2);
    }

    #[test]
    fn closed_outbox_is_removed_in_the_same_pass() {
        let mut rooms = Rooms::new(true);
        let (dead_tx, dead_rx) = mpsc::channel(1);
        drop(dead_rx);
        let (live_tx, mut live_rx) = mpsc::channel(1);
        rooms.join(ConnId(1), Arc::from("/r"), dead_tx);
        rooms.join(ConnId(2), Arc::from("/r"), live_tx);
        rooms.publish(ConnId(2), "/r", text("m"));
        assert_eq!(live_rx.try_recv().unwrap(), text("m"));
        let stats = rooms.stats(0);
        assert_eq!(stats.members("/r"), 1);
        assert_eq!(stats.counters.dropped_closed, 1);
    }

    #[test]
    fn leave_of_unknown_ids_and_rooms_is_a_no_op() {
        let mut rooms = Rooms::new(true);
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
    fn try_join_needs_an_existing_room_with_spare_capacity() {
        let mut rooms = Rooms::new(true);
        let (tx, _rx) = mpsc::channel(1);
        let tx = rooms.try_join(ConnId(1), "/r", tx).unwrap_err();
        rooms.join_growing(ConnId(1), Arc::from("/r"), tx);
        assert_eq!(rooms.member_count("/r"), 1);
        let left = rooms.leave(ConnId(1), "/r").unwrap();
        assert!(left.emptied.is_some(), "the last member empties the room");
        assert_eq!(rooms.member_count("/r"), 0);
    }
}
