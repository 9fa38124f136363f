//! A property test of [`Rooms`]: random sequences of joins, leaves, publishes and
//! remote publishes, to members whose outboxes are open, full or closed, or whose
//! delivery panics (through a test-only hook), checked after every step against a
//! plain model of what the broker promises.
//!
//! After every step: membership equals the model's; a room exists exactly while it
//! has members; `delivered + dropped_full + dropped_closed` equals the deliveries
//! attempted; every counter equals the model's; each open member has received
//! exactly the messages the model delivered to it; and nothing survives an operation
//! (removed members, emptied rooms) that the model does not have, caught panics
//! included.

#![expect(clippy::arithmetic_side_effects, reason = "test code: counts in a model of a few dozen steps")]

use std::collections::BTreeMap;
use std::sync::Once;

use proptest::prelude::*;

use super::*;
use crate::broker::history::Limits;

/// The payload of the test-only delivery panic. The panic hook installed here keeps
/// these quiet, so that the test's output (which the audit reads for panics) shows
/// only panics nobody planned.
pub(crate) struct DeliberatePanic;

fn quiet_deliberate_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<DeliberatePanic>().is_none() {
                previous(info);
            }
        }));
    });
}

/// How a member's outbox behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outbox {
    /// Takes every message (drained after each step).
    Open,
    /// Always full.
    Full,
    /// Its receiver is gone.
    Closed,
    /// Every delivery to it panics inside the contained `try_send`.
    Panics,
}

#[derive(Debug, Clone)]
enum Step {
    Join {
        id: u8,
        room: u8,
        outbox: Outbox,
    },
    Leave {
        id: u8,
        room: u8,
    },
    Publish {
        from: u8,
        room: u8,
    },
    Remote {
        room: u8,
    },
    /// The member's writer goes away: its outbox closes.
    Close {
        id: u8,
    },
    /// A drain sheds up to `count` members.
    Shed {
        count: u8,
    },
}

fn outbox() -> impl Strategy<Value = Outbox> {
    prop_oneof![4 => Just(Outbox::Open), 2 => Just(Outbox::Full), 1 => Just(Outbox::Closed), 1 => Just(Outbox::Panics)]
}

fn step() -> impl Strategy<Value = Step> {
    let (id, room) = (0u8..12, 0u8..4);
    prop_oneof![
        4 => (id.clone(), room.clone(), outbox()).prop_map(|(id, room, outbox)| Step::Join { id, room, outbox }),
        2 => (id.clone(), room.clone()).prop_map(|(id, room)| Step::Leave { id, room }),
        5 => (id.clone(), room.clone()).prop_map(|(from, room)| Step::Publish { from, room }),
        2 => room.prop_map(|room| Step::Remote { room }),
        1 => id.prop_map(|id| Step::Close { id }),
        1 => (0u8..4).prop_map(|count| Step::Shed { count }),
    ]
}

/// What the broker promises, kept plainly.
#[derive(Debug, Default)]
struct Model {
    /// Room to its members and how their outboxes behave.
    rooms: BTreeMap<u8, BTreeMap<u8, Outbox>>,
    /// Deliveries attempted, and the counters the broker must agree with.
    attempted: u64,
    counters: Counters,
    /// Messages each member's outbox took.
    received: BTreeMap<u8, u64>,
}

impl Model {
    fn publish(&mut self, settings: Settings, from: Option<u8>, room: u8) {
        if from.is_some() {
            self.counters.published += 1;
        }
        let Some(members) = self.rooms.get_mut(&room) else { return };
        let mut gone = Vec::new();
        for (&id, &outbox) in members.iter() {
            if !settings.echo && Some(id) == from {
                continue;
            }
            self.attempted += 1;
            match outbox {
                Outbox::Open => {
                    self.counters.delivered += 1;
                    *self.received.entry(id).or_default() += 1;
                }
                Outbox::Full => {
                    self.counters.dropped_full += 1;
                    if settings.slow_consumer == SlowConsumer::Disconnect {
                        self.counters.slow_disconnects += 1;
                        gone.push(id);
                    }
                }
                Outbox::Closed => {
                    self.counters.dropped_closed += 1;
                    gone.push(id);
                }
                Outbox::Panics => {
                    self.counters.dropped_closed += 1;
                    self.counters.panics_caught += 1;
                    gone.push(id);
                }
            }
        }
        for id in gone {
            members.remove(&id);
        }
        if members.is_empty() {
            self.rooms.remove(&room);
        }
    }

    fn room_of(&self, id: u8) -> Option<u8> {
        self.rooms.iter().find(|(_, members)| members.contains_key(&id)).map(|(room, _)| *room)
    }
}

/// The test's side of the members' outboxes.
#[derive(Default)]
struct Outboxes {
    /// Each member's receiver; `None` once its writer went away (closed).
    receivers: BTreeMap<u8, Option<mpsc::Receiver<Frame>>>,
    /// Members whose outbox is kept full (never drained).
    full: Vec<u8>,
    /// Messages drained so far from each member's outbox.
    seen: BTreeMap<u8, u64>,
    /// Each member's `kick` token.
    kicks: BTreeMap<u8, CancellationToken>,
}

fn name(room: u8) -> Arc<str> {
    Arc::from(format!("/r{room}"))
}

fn run(settings: Settings, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut rooms = Rooms::new(settings, None);
    let mut model = Model::default();
    let mut outboxes = Outboxes::default();
    let frame: Frame = Arc::new(b"\x81\x01m".to_vec());
    for step in steps {
        let before = rooms.counters.panics_caught;
        match *step {
            Step::Join { id, room, outbox } => {
                // A connection joins once, for its life.
                if outboxes.receivers.contains_key(&id) {
                    continue;
                }
                let capacity = if outbox == Outbox::Full { 1 } else { 64 };
                let (tx, rx) = mpsc::channel(capacity);
                if outbox == Outbox::Full {
                    prop_assert!(tx.try_send(Arc::clone(&frame)).is_ok(), "a new outbox takes one message");
                }
                let kick = CancellationToken::new();
                outboxes.kicks.insert(id, kick.clone());
                let mut member = Member::new(ConnId(u64::from(id)), tx, kick);
                member.panics_on_delivery = outbox == Outbox::Panics;
                outboxes.receivers.insert(id, (outbox != Outbox::Closed).then_some(rx));
                if outbox == Outbox::Full {
                    outboxes.full.push(id);
                }
                rooms.join(member, &name(room), Delivery::Plain);
                model.rooms.entry(room).or_default().insert(id, outbox);
            }
            Step::Leave { id, room } => {
                rooms.leave(ConnId(u64::from(id)), &name(room));
                if let Some(members) = model.rooms.get_mut(&room) {
                    members.remove(&id);
                    if members.is_empty() {
                        model.rooms.remove(&room);
                    }
                }
            }
            Step::Publish { from, room } => {
                rooms.publish(
                    Origin::Member(ConnId(u64::from(from))),
                    &name(room),
                    std::slice::from_ref(&frame),
                );
                model.publish(settings, Some(from), room);
            }
            Step::Remote { room } => {
                rooms.publish(Origin::Remote, &name(room), std::slice::from_ref(&frame));
                model.publish(settings, None, room);
            }
            Step::Shed { count } => {
                let members_before: Vec<u8> = model.rooms.values().flat_map(|m| m.keys().copied()).collect();
                let shed = rooms.shed(usize::from(count));
                // Which room, and which of its members, is the broker's choice: the
                // model learns it from the membership, then checks the promises.
                let left: Vec<u8> =
                    rooms.rooms.values().flat_map(|r| r.members.iter()).map(|m| m.id.0 as u8).collect();
                let mut gone = Vec::new();
                for (room, members) in &mut model.rooms {
                    let before = members.len();
                    members.retain(|id, _| left.contains(id));
                    if members.len() != before {
                        gone.push((*room, before - members.len(), before));
                    }
                }
                model.rooms.retain(|_, members| !members.is_empty());
                prop_assert!(gone.len() <= 1, "one shed took members of several rooms: {:?}", gone);
                let taken = gone.first().map_or(0, |(_, taken, _)| *taken);
                prop_assert_eq!(shed, taken, "shed reports what it took");
                if let Some((_, taken, size)) = gone.first() {
                    prop_assert_eq!(
                        *taken,
                        usize::from(count).min(*size),
                        "as many as asked, or the whole room"
                    );
                }
                let any_member = !model.rooms.is_empty() || taken > 0;
                prop_assert_eq!(
                    shed == 0,
                    count == 0 || !any_member,
                    "sheds whenever asked and someone is left"
                );
                for (id, kick) in outboxes.kicks.iter().filter(|(id, _)| members_before.contains(id)) {
                    let shed_now = !left.contains(id);
                    prop_assert_eq!(
                        kick.is_cancelled(),
                        shed_now,
                        "member {} is kicked exactly when shed",
                        id
                    );
                }
                model.counters.shed += shed as u64;
            }
            Step::Close { id } => {
                if let Some(slot) = outboxes.receivers.get_mut(&id) {
                    *slot = None;
                }
                if let Some(room) = model.room_of(id)
                    && let Some(outbox) = model.rooms.get_mut(&room).and_then(|m| m.get_mut(&id))
                    && *outbox != Outbox::Panics
                {
                    *outbox = Outbox::Closed;
                }
            }
        }
        rooms.finish(before);
        check(&rooms, &model, &mut outboxes)?;
    }
    Ok(())
}

/// Every invariant, after one step.
fn check(rooms: &Rooms, model: &Model, outboxes: &mut Outboxes) -> Result<(), TestCaseError> {
    let membership: BTreeMap<String, Vec<u64>> = rooms
        .rooms
        .iter()
        .map(|(name, room)| {
            let mut ids: Vec<u64> = room.members.iter().map(|m| m.id.0).collect();
            ids.sort_unstable();
            (name.to_string(), ids)
        })
        .collect();
    let expected: BTreeMap<String, Vec<u64>> = model
        .rooms
        .iter()
        .map(|(room, members)| (name(*room).to_string(), members.keys().map(|id| u64::from(*id)).collect()))
        .collect();
    prop_assert_eq!(&membership, &expected, "membership");
    prop_assert!(rooms.rooms.values().all(|r| !r.members.is_empty()), "a room without members exists");
    let c = rooms.counters;
    prop_assert_eq!(c.delivered + c.dropped_full + c.dropped_closed, model.attempted, "attempts add up");
    prop_assert_eq!(c, model.counters, "counters");
    prop_assert!(rooms.removed.is_empty() && rooms.emptied.is_none(), "state survived its operation");
    for (id, receiver) in &mut outboxes.receivers {
        let Some(rx) = receiver else { continue };
        if outboxes.full.contains(id) {
            continue;
        }
        let seen = outboxes.seen.entry(*id).or_default();
        while rx.try_recv().is_ok() {
            *seen += 1;
        }
        let owed = model.received.get(id).copied().unwrap_or(0);
        prop_assert_eq!(*seen, owed, "messages received by member {}", id);
    }
    Ok(())
}

proptest! {
    // No regression files: a failure prints its minimal failing input, which is what
    // a developer needs, and the tree stays clean.
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn rooms_keep_their_promises(
        echo in any::<bool>(),
        disconnect in any::<bool>(),
        steps in prop::collection::vec(step(), 1..60),
    ) {
        quiet_deliberate_panics();
        let slow_consumer = if disconnect { SlowConsumer::Disconnect } else { SlowConsumer::Drop };
        run(Settings { echo, slow_consumer, history: Limits::OFF }, &steps)?;
    }
}
