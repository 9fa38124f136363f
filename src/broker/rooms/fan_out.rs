//! The fan-out's per-member decision (failure location ④), proven with
//! [`Rooms::publish`](super::Rooms::publish) into which it is inlined: offering a
//! run of messages to each member, counting the outcome, the slow-consumer policy,
//! and how the broker counts a member's queued messages while runs are in its outbox
//! ([`Runs`]). What the proof cannot see into runs contained, each effect on its own:
//! the `try_send` with the frame's reference it takes, reading the outbox's
//! semaphore, a token's `cancel`, the drop log line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;

use super::super::contained::{caught, contained};
use super::super::stats::Counters;
use super::super::{ConnId, Settings};
use super::{Member, Rooms};
use crate::config::SlowConsumer;
use crate::connection::frame::Frame;

/// Drops for one member are logged at most once per this interval, so a slow
/// consumer produces a steady trickle of log lines rather than one per message.
pub(super) const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How many runs handed whole to one member are counted while they may still be
/// queued; a further run goes to it message by message until the writer has taken
/// one. A power of two (the ring below wraps with a mask).
pub(super) const RUNS_TRACKED: usize = 4;

/// The runs handed to one member whole that may still be in its outbox, oldest
/// first: a ring of at most [`RUNS_TRACKED`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Runs {
    /// For each run: the entry number it was handed as (`Member::handed` then).
    at: [u32; RUNS_TRACKED],
    /// For each run: its messages beyond the first (a run holds at most
    /// `broker::RECEIVE_BATCH`).
    extra: [u8; RUNS_TRACKED],
    /// Where the oldest is.
    head: u8,
    /// How many there are.
    len: u8,
}

impl Runs {
    pub(super) const EMPTY: Self = Self { at: [0; RUNS_TRACKED], extra: [0; RUNS_TRACKED], head: 0, len: 0 };

    /// Where the `k`-th oldest run is kept.
    #[inline(always)]
    fn slot(&self, k: u8) -> usize {
        usize::from(self.head.wrapping_add(k)) & (RUNS_TRACKED - 1)
    }

    fn is_full(&self) -> bool {
        usize::from(self.len) >= RUNS_TRACKED
    }

    /// Forgets the runs the writer has taken, those handed as an entry before entry
    /// number `taken` (the outbox is first in, first out), and returns the messages
    /// beyond the first of those still queued.
    #[inline(always)]
    fn settle(&mut self, taken: u32) -> usize {
        while self.len != 0
            && let Some(&at) = self.at.get(self.slot(0))
        {
            // `at` is before `taken` when `taken - at` is positive as a signed
            // distance (entries in flight are far fewer than 2^31).
            let distance = taken.wrapping_sub(at);
            if distance == 0 || distance >= 0x8000_0000 {
                break;
            }
            self.head = self.head.wrapping_add(1);
            self.len = self.len.saturating_sub(1);
        }
        let mut extra = 0usize;
        let mut k = 0u8;
        while k < self.len {
            extra = extra.saturating_add(usize::from(self.extra.get(self.slot(k)).copied().unwrap_or(0)));
            k = k.wrapping_add(1);
        }
        extra
    }

    /// Counts a run just handed as entry number `at`, with `extra` messages beyond
    /// its first; the caller has checked there is room.
    #[inline(always)]
    fn push(&mut self, at: u32, extra: u8) {
        let slot = self.slot(self.len);
        if let (Some(a), Some(e)) = (self.at.get_mut(slot), self.extra.get_mut(slot)) {
            *a = at;
            *e = extra;
            self.len = self.len.saturating_add(1);
        }
    }
}

/// What became of one delivery attempt (location ④).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offer {
    /// In the member's outbox.
    Delivered,
    /// The outbox was full; the member is slower than its publishers.
    Full,
    /// The member's writer is gone.
    Closed,
    /// The contained `try_send` panicked: the member's channel cannot be trusted.
    Panicked,
}

/// What every member of one publish pass is measured against.
pub(super) struct Pass<'a> {
    /// The publishing member, if it was one (not echoed to with `--no-echo`).
    pub(super) from: Option<ConnId>,
    pub(super) settings: Settings,
    pub(super) room: &'a str,
}

/// The run a list of members gets from one publish: `whole`, what it is handed as one
/// outbox entry (the one frame, or the run's frames back to back), and `each`, its
/// messages one by one.
pub(super) struct Run<'a> {
    whole: &'a Frame,
    each: &'a [Frame],
}

impl<'a> Run<'a> {
    /// The run of `each`; `None` if it is empty, or if it holds several and their
    /// joined frame could not be built (`joined` is `None`: a caught panic, counted).
    #[inline(always)]
    pub(super) fn of(each: &'a [Frame], joined: Option<&'a Frame>) -> Option<Self> {
        let whole = if each.len() == 1 { each.first() } else { joined }?;
        Some(Self { whole, each })
    }
}

/// What became of one run for one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    /// Messages now in the member's outbox.
    delivered: u64,
    /// Messages dropped for a full outbox.
    full: u64,
    /// Set when the member's outbox turned out closed, or its `try_send` panicked:
    /// the member is to be removed (the rest of the run is not offered to it).
    ended: Option<Offer>,
}

/// The per-member decision of location ④ (see [`Rooms::publish`]) over one list of a
/// room's members: offers `run` to each, counts the outcome, and moves those to
/// remove into `removed`.
#[inline(always)]
pub(super) fn fan_out(
    members: &mut Vec<Member>,
    run: &Run<'_>,
    pass: &Pass<'_>,
    counters: &mut Counters,
    removed: &mut Vec<Member>,
    now: &mut Option<Instant>,
) {
    let Settings { echo, slow_consumer, .. } = pass.settings;
    let mut i = 0;
    while let Some(member) = members.get_mut(i) {
        if !echo && Some(member.id) == pass.from {
            i = i.wrapping_add(1);
            continue;
        }
        let outcome = offer_run(member, run, slow_consumer);
        counters.delivered = counters.delivered.wrapping_add(outcome.delivered);
        let mut keep = true;
        if outcome.full != 0 {
            member.dropped = member.dropped.wrapping_add(outcome.full);
            counters.dropped_full = counters.dropped_full.wrapping_add(outcome.full);
            match slow_consumer {
                SlowConsumer::Drop => caught(counters, contained(|| log_drop(member, pass.room, now))),
                SlowConsumer::Disconnect => {
                    counters.slow_disconnects = counters.slow_disconnects.wrapping_add(1);
                    caught(counters, contained(|| kick(member, pass.room)));
                    keep = false;
                }
            }
        }
        match outcome.ended {
            Some(Offer::Panicked) => {
                counters.dropped_closed = counters.dropped_closed.wrapping_add(1);
                counters.panics_caught = counters.panics_caught.wrapping_add(1);
                keep = false;
            }
            Some(_) => {
                counters.dropped_closed = counters.dropped_closed.wrapping_add(1);
                keep = false;
            }
            None => {}
        }
        // Removed by swapping the last member in (order does not matter), which is
        // then looked at next.
        if !keep && i < members.len() {
            let gone = members.swap_remove(i);
            Rooms::hold(removed, counters, gone);
        } else {
            i = i.wrapping_add(1);
        }
    }
}

/// Location ④ for one member and one run, decided exactly as the run's messages
/// published one by one would be: each goes into the outbox while the member's
/// queued messages are fewer than its outbox's capacity, and is dropped otherwise
/// (under `--slow-consumer disconnect`, the first drop ends the member's turn).
///
/// A run of several goes whole, as one entry, when all of it fits and fewer than
/// [`RUNS_TRACKED`] runs of this member's may still be queued (see
/// [`queued_messages`]); otherwise message by message. One message with no run
/// queued needs no count: the outbox's own capacity decides, as it always has.
#[inline(always)]
fn offer_run(member: &mut Member, run: &Run<'_>, slow_consumer: SlowConsumer) -> Outcome {
    let mut outcome = Outcome { delivered: 0, full: 0, ended: None };
    let count = run.each.len();
    let (whole, mut room_left) = if member.runs.len == 0 && count == 1 {
        (true, usize::MAX)
    } else {
        let Some((queued, capacity)) = queued_messages(member) else {
            outcome.ended = Some(Offer::Panicked);
            return outcome;
        };
        let left = capacity.saturating_sub(queued);
        (count <= left && (count == 1 || !member.runs.is_full()), left)
    };
    let (units, weight) = if whole { (std::slice::from_ref(run.whole), count) } else { (run.each, 1) };
    let weight_u64 = u64::try_from(weight).unwrap_or(u64::MAX);
    for unit in units {
        if room_left >= weight {
            match offer(member, unit) {
                Offer::Delivered => {
                    outcome.delivered = outcome.delivered.wrapping_add(weight_u64);
                    room_left = room_left.saturating_sub(weight);
                    if weight > 1 {
                        let extra = u8::try_from(weight.saturating_sub(1)).unwrap_or(u8::MAX);
                        member.runs.push(member.handed.wrapping_sub(1), extra);
                    }
                    continue;
                }
                Offer::Full => {}
                ended @ (Offer::Closed | Offer::Panicked) => {
                    outcome.ended = Some(ended);
                    break;
                }
            }
        }
        match slow_consumer {
            SlowConsumer::Drop => outcome.full = outcome.full.wrapping_add(weight_u64),
            SlowConsumer::Disconnect => {
                outcome.full = outcome.full.wrapping_add(1);
                break;
            }
        }
    }
    outcome
}

/// This member's queued messages and its outbox's capacity: the entries in its
/// outbox (tokio counts those), plus the messages beyond the first of each run
/// handed over whole that is still among them. The outbox is first in, first out,
/// so the writer has taken the first `handed - entries` entries ever handed, and a
/// run handed as an entry before that is gone. Reads tokio's semaphore, contained;
/// `None` if that panicked.
#[inline(always)]
fn queued_messages(member: &mut Member) -> Option<(usize, usize)> {
    let outbox_tx = &member.outbox_tx;
    let (capacity, free) = contained(|| (outbox_tx.max_capacity(), outbox_tx.capacity()))?;
    let entries = capacity.saturating_sub(free);
    let taken = member.handed.wrapping_sub(u32::try_from(entries).unwrap_or(u32::MAX));
    let extra = member.runs.settle(taken);
    Some((entries.saturating_add(extra), capacity))
}

/// Location ④: offers `frame` to one member's outbox, and counts the entry handed
/// if it went in. tokio's `try_send`, with the reference it takes on the frame (and
/// the one it hands back when the outbox is full or closed, dropped here), is opaque
/// to the proof, so it runs contained.
#[inline(always)]
pub(super) fn offer(member: &mut Member, frame: &Frame) -> Offer {
    let sent = contained(|| {
        #[cfg(test)]
        if member.panics_on_delivery {
            std::panic::panic_any(super::model_test::DeliberatePanic);
        }
        match member.outbox_tx.try_send(Arc::clone(frame)) {
            Ok(()) => Offer::Delivered,
            Err(TrySendError::Full(_)) => Offer::Full,
            Err(TrySendError::Closed(_)) => Offer::Closed,
        }
    });
    let offer = sent.unwrap_or(Offer::Panicked);
    if offer == Offer::Delivered {
        member.handed = member.handed.wrapping_add(1);
    }
    offer
}

/// Disconnects `member` as a slow consumer: its reader sees the token and has the
/// writer send Close 1008. Run contained (a token's `cancel` wakes tasks).
fn kick(member: &Member, room: &str) {
    tracing::info!(conn = member.id.0, room, "slow consumer disconnected");
    member.kick.cancel();
}

/// Logs that `member` is losing messages, at most once per [`DROP_LOG_INTERVAL`].
/// Reads the clock into `now` if no one has yet in this pass. Run contained (the
/// clock and the log line are opaque to the proof).
pub(super) fn log_drop(member: &mut Member, room: &str, now: &mut Option<Instant>) {
    let now = *now.get_or_insert_with(Instant::now);
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
