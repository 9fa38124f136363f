//! Snapshots of the broker's state: the running totals, and [`BrokerStats`] for tests,
//! metrics and operators.

use super::ConnId;

/// Running totals since the broker started.
///
/// Every delivery the broker attempts ends in exactly one of `delivered`,
/// `dropped_full` and `dropped_closed`, so the three add up to the attempts (the
/// property test of `Rooms` checks it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages published by clients (each counted once, however many receive it).
    pub published: u64,
    /// Messages published through the publish API.
    pub published_api: u64,
    /// Messages placed in a member's outbox.
    pub delivered: u64,
    /// Deliveries dropped because the member's outbox was full (④ `Full`).
    pub dropped_full: u64,
    /// Deliveries dropped because the member's writer was gone (④ `Closed`), or its
    /// delivery panicked; the member is removed at the same time.
    pub dropped_closed: u64,
    /// Members disconnected as slow consumers (`--slow-consumer disconnect`).
    pub slow_disconnects: u64,
    /// Members shed by a lame-duck drain (`--drain-duration`), each closed with 1012.
    pub shed: u64,
    /// Panics caught in the broker's contained effects (should stay 0).
    pub panics_caught: u64,
    /// `wsbroker.v1` resumes given every message they asked for.
    pub resumes_recovered: u64,
    /// `wsbroker.v1` resumes answered with a reset instead.
    pub resumes_reset: u64,
}

/// A snapshot of the broker's state, for tests, metrics and operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Every room that has at least one member, sorted by name.
    pub rooms: Vec<RoomStats>,
    /// Running totals.
    pub counters: Counters,
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
