//! What each room keeps of its recent messages, so that a `wsbroker.v1` client that
//! reconnects can be given what it missed (README, "Delivery contract").
//!
//! Each room has a [`History`]: a [`Ring`] of its last messages (their `wsbroker.v1` frames, as
//! its sequenced members received them), at most `--history-size`. A [`Ledger`]
//! shared by all rooms keeps the total under `--history-memory` by evicting the
//! oldest message of any room first, and drops messages older than
//! `--history-ttl` as later ones are kept; an expired message is never replayed
//! even before its memory is released (see [`Ledger::replay_from`]).
//!
//! Everything here is broker state, decided by code the panic audit proves (it runs
//! inside `Rooms::publish` and `Rooms::join`): storage is grown ahead, in contained
//! code, so that keeping a message never allocates in the proven part, and what is
//! evicted is dropped contained, each drop on its own.
//!
//! The rings live in the ledger, in numbered *slots* (a room holds its slot's
//! number, and a slot freed by a room that went away is reused), so that evicting
//! from any room is an index, not a lookup by name. How the oldest is found across
//! rooms: every kept message gets a *stamp* from one counter, and the ledger's
//! `order` lists (slot, stamp) in that order. A history loses messages in other ways
//! too (its own size limit, its room going away), which leaves *stale* entries in
//! `order`; they are counted, skipped when met at the front, and swept out whenever
//! they outnumber the live ones, so `order` stays within about twice the messages
//! kept.

use std::time::{Duration, Instant};

/// Milliseconds from `zero` to now: the broker's clock for history (plain numbers,
/// which the proof can compare). Reading the clock is opaque: run it contained.
pub(crate) fn millis_since(zero: Instant) -> u64 {
    u64::try_from(zero.elapsed().as_millis()).unwrap_or(u64::MAX)
}

use super::contained::{caught, contained};
use super::ring::Ring;
use super::stats::Counters;
use crate::connection::frame::Frame;

/// The history settings: `--history-size`, `--history-ttl`, `--history-memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Messages kept per room; 0 turns history off.
    pub size: usize,
    /// Messages older than this are not replayed, and are dropped.
    pub ttl: Option<Duration>,
    /// Bytes all rooms' history may take together (see [`Ledger::bytes`]).
    pub memory: usize,
}

impl Limits {
    /// No history.
    #[cfg(test)]
    pub(crate) const OFF: Self = Self { size: 0, ttl: None, memory: 0 };
}

/// One kept message.
#[derive(Debug)]
struct Entry {
    seq: u64,
    stamp: u64,
    /// When it was kept, in milliseconds of the broker's clock.
    at: u64,
    frame: Frame,
}

/// A kept message in the order of all rooms' messages.
#[derive(Debug, Clone, Copy)]
struct Kept {
    slot: usize,
    stamp: u64,
    at: u64,
}

/// What one kept message is charged: its frame's bytes, and this for what holds it
/// (its [`Entry`] and [`Kept`] slots, the frame's `Arc` and `Vec` headers).
const OVERHEAD: usize = size_of::<Entry>() + size_of::<Kept>() + 40;

/// One room's kept messages, oldest first, with consecutive seqs.
#[derive(Debug, Default)]
struct History {
    entries: Ring<Entry>,
    /// What its entries are charged.
    bytes: usize,
}

impl History {
    /// Whether the message stamped `stamp` is still kept here: stamps grow along the
    /// history, and messages leave it from the front only.
    #[inline(always)]
    fn holds(&self, stamp: u64) -> bool {
        self.entries.front().is_some_and(|e| e.stamp <= stamp)
            && self.entries.back().is_some_and(|e| e.stamp >= stamp)
    }
}

/// The messages a resume is given: `count` of them, from index `from` of a history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Replay<'a> {
    entries: Option<&'a Ring<Entry>>,
    from: usize,
    pub(crate) count: usize,
}

impl<'a> Replay<'a> {
    /// The `i`th message to replay (from 0, oldest first).
    #[inline(always)]
    pub(crate) fn get(&self, i: usize) -> Option<&'a Frame> {
        let entries = self.entries?;
        entries.get(self.from.checked_add(i)?).map(|e| &e.frame)
    }
}

/// The history of all rooms together: the limits, every room's history, the bytes
/// charged, and the order messages were kept in.
#[derive(Debug)]
pub(crate) struct Ledger {
    limits: Limits,
    /// `--history-ttl` in milliseconds.
    ttl: Option<u64>,
    /// Bytes charged for every message kept (its frame and [`OVERHEAD`]).
    bytes: usize,
    /// The rooms' histories, by slot.
    rings: Vec<History>,
    /// Slots whose room went away, for new rooms.
    free: Vec<usize>,
    order: Ring<Kept>,
    /// Entries of `order` whose message is gone already.
    stale: usize,
    next_stamp: u64,
}

impl Ledger {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            ttl: limits.ttl.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            bytes: 0,
            rings: Vec::new(),
            free: Vec::new(),
            order: Ring::default(),
            stale: 0,
            next_stamp: 0,
        }
    }

    /// The limits in force.
    #[inline(always)]
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// Bytes charged for all rooms' history (`wsbroker_history_bytes`).
    #[inline]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The messages after `seq` up to the room's last seq `last`, from the history in
    /// `slot`, if every one of them is still kept and, with a TTL, unexpired at `now`
    /// (milliseconds of the broker's clock); `None` otherwise (a `seq` after `last`
    /// included).
    #[inline(always)]
    pub(crate) fn replay_from(
        &self,
        slot: Option<usize>,
        seq: u64,
        last: u64,
        now: Option<u64>,
    ) -> Option<Replay<'_>> {
        let missed = last.checked_sub(seq)?;
        let count = usize::try_from(missed).ok()?;
        let entries = slot.and_then(|slot| self.rings.get(slot)).map(|history| &history.entries);
        let len = entries.map_or(0, Ring::len);
        let from = len.checked_sub(count)?;
        if count != 0 {
            let first = entries?.get(from)?;
            if first.seq != seq.checked_add(1)? {
                return None;
            }
            if let Some(ttl) = self.ttl
                && now?.saturating_sub(first.at) > ttl
            {
                return None;
            }
        }
        Some(Replay { entries, from, count })
    }

    /// Keeps `frame`, message `seq` of the room whose history is in `slot` (given one
    /// here if it has none yet), at `at`, then evicts what the limits no longer
    /// allow: the ring's oldest beyond `--history-size`, and across rooms the oldest
    /// beyond `--history-memory` or older than `--history-ttl`. Storage is grown
    /// first, contained; if it cannot be, the message is not kept (a resume that
    /// needs it gets a reset) and is handed back. What is evicted is dropped
    /// contained.
    #[inline(always)]
    pub(crate) fn keep(
        &mut self,
        slot: &mut Option<usize>,
        seq: u64,
        frame: Frame,
        at: u64,
        counters: &mut Counters,
    ) -> Option<Frame> {
        if self.limits.size == 0 {
            return Some(frame);
        }
        let Some(index) = self.slot(slot, counters) else { return Some(frame) };
        // Room for the entry, in the history and in `order`: grown contained (the pushes
        // below never grow anything; a history still full hands the message back).
        if self.order.len() >= self.order.capacity() {
            let order = &mut self.order;
            let more = order.capacity().max(64).saturating_mul(2);
            caught(counters, contained(|| order.grow_to(more)));
        }
        let Some(history) = self.rings.get_mut(index) else { return Some(frame) };
        let size = self.limits.size;
        if history.entries.len() >= history.entries.capacity() && history.entries.len() < size {
            let entries = &mut history.entries;
            // Doubling, as `push_back` would, but never past the limit.
            let more = entries.len().max(4).min(size.saturating_sub(entries.len()));
            let wanted = entries.len().saturating_add(more);
            caught(counters, contained(|| entries.grow_to(wanted)));
        }
        // At the size limit: the ring's oldest goes first (its `order` entry is then
        // stale).
        if history.entries.len() >= size
            && let Some(oldest) = history.entries.pop_front()
        {
            self.stale = self.stale.saturating_add(1);
            uncharge(&mut self.bytes, &mut history.bytes, &oldest.frame);
            caught(counters, contained(move || drop(oldest)));
        }
        let stamp = self.next_stamp;
        let cost = charge_of(&frame);
        if let Err(entry) = history.entries.push_back(Entry { seq, stamp, at, frame }) {
            return Some(entry.frame);
        }
        if self.order.push_back(Kept { slot: index, stamp, at }).is_err() {
            return history.entries.pop_back().map(|entry| entry.frame);
        }
        self.next_stamp = stamp.wrapping_add(1);
        self.bytes = self.bytes.saturating_add(cost);
        if let Some(history) = self.rings.get_mut(index) {
            history.bytes = history.bytes.saturating_add(cost);
        }
        self.evict(at, counters);
        None
    }

    /// The history slot of a room, given one if it has none: a freed one, or a new one
    /// (storage grown contained). `None` if none can be made.
    #[inline(always)]
    fn slot(&mut self, slot: &mut Option<usize>, counters: &mut Counters) -> Option<usize> {
        if let Some(index) = *slot {
            return Some(index);
        }
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                if self.rings.len() >= self.rings.capacity() {
                    let rings = &mut self.rings;
                    caught(counters, contained(|| rings.reserve(1)));
                }
                if self.rings.len() >= self.rings.capacity() {
                    return None;
                }
                self.rings.push(History::default());
                self.rings.len().checked_sub(1)?
            }
        };
        *slot = Some(index);
        Some(index)
    }

    /// Evicts across rooms, oldest first: while the total is over `--history-memory`,
    /// and while the oldest is older than `--history-ttl` at `now`; then sweeps stale
    /// entries out of `order` when they outnumber the live ones.
    #[inline(always)]
    fn evict(&mut self, now: u64, counters: &mut Counters) {
        let ttl = self.ttl;
        while let Some(&front) = self.order.front() {
            let over_memory = self.bytes > self.limits.memory;
            let expired = ttl.is_some_and(|ttl| now.saturating_sub(front.at) > ttl);
            match self.rings.get_mut(front.slot) {
                Some(history) if history.holds(front.stamp) => {
                    if !(over_memory || expired) {
                        break;
                    }
                    if let Some(oldest) = history.entries.pop_front() {
                        uncharge(&mut self.bytes, &mut history.bytes, &oldest.frame);
                        caught(counters, contained(move || drop(oldest)));
                    }
                }
                _ => self.stale = self.stale.saturating_sub(1),
            }
            self.order.pop_front();
        }
        // Sweep: live entries move up over stale ones, in order, and the tail goes.
        if self.stale > 64 && self.stale.saturating_mul(2) > self.order.len() {
            let len = self.order.len();
            let (mut read, mut write) = (0usize, 0usize);
            while read < len {
                if let Some(&kept) = self.order.get(read)
                    && self.rings.get(kept.slot).is_some_and(|r| r.holds(kept.stamp))
                {
                    if let Some(to) = self.order.get_mut(write) {
                        *to = kept;
                    }
                    write = write.wrapping_add(1);
                }
                read = read.wrapping_add(1);
            }
            while self.order.len() > write && self.order.pop_back().is_some() {}
            self.stale = 0;
        }
    }

    /// Forgets the history in `slot`, whose room is going away: its messages are dropped
    /// (contained), no longer charged, and stale in `order`; the slot is freed.
    #[inline(always)]
    pub(crate) fn forget(&mut self, slot: Option<usize>, counters: &mut Counters) {
        let Some(index) = slot else { return };
        let Some(history) = self.rings.get_mut(index) else { return };
        self.bytes = self.bytes.saturating_sub(history.bytes);
        self.stale = self.stale.saturating_add(history.entries.len());
        history.bytes = 0;
        let entries = &mut history.entries;
        caught(counters, contained(|| entries.clear()));
        if self.free.len() >= self.free.capacity() {
            let free = &mut self.free;
            caught(counters, contained(|| free.reserve(1)));
        }
        // Within capacity, else the slot is simply not reused.
        if self.free.len() < self.free.capacity() {
            self.free.push(index);
        }
    }
}

/// What a frame is charged: its bytes and [`OVERHEAD`].
#[inline(always)]
fn charge_of(frame: &Frame) -> usize {
    frame.capacity().saturating_add(OVERHEAD)
}

/// Takes what `frame` was charged off the total and its history.
#[inline(always)]
fn uncharge(total: &mut usize, ring: &mut usize, frame: &Frame) {
    let cost = charge_of(frame);
    *total = total.saturating_sub(cost);
    *ring = ring.saturating_sub(cost);
}
