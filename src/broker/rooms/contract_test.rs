//! A property test of the delivery contract (README, "Delivery contract"): random
//! sequences of publishes, `wsbroker.v1` connections that resume where they left off
//! (or ask for something else), slow readers and departures, against a plain model
//! of what each client must see.
//!
//! Checked on every frame a client reads: the first is a welcome or a reset, and which
//! of the two is exactly what the model predicts (same room incarnation, every missed
//! message in history, and room for them in the outbox); the seqs it reads are
//! strictly increasing in one epoch; message `seq` carries the payload published as
//! the room's `seq`th; after a recovered resume every missed message comes, in
//! order, with no gap and no duplicate; and once a client has read up to the room's
//! last message, the jumps in its seqs add up to the drops the broker counted for it.

#![expect(clippy::arithmetic_side_effects, reason = "test code: counts in a model of a few dozen steps")]

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::broker::history::Limits;
use crate::connection::frame::{BINARY, parse};

#[derive(Debug, Clone)]
enum Step {
    /// The client connects to `room` (if not connected), asking as `ask` says.
    Connect { client: u8, room: u8, ask: Ask },
    /// A message is published to `room` (through the API: no echo to think about).
    Publish { room: u8 },
    /// The client reads everything in its outbox.
    Read { client: u8 },
    /// The client leaves (what it has not read is lost with the connection).
    Leave { client: u8 },
}

/// What a connecting client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// Resume after the last message it read in that room, if it read any.
    Resume,
    /// A fresh start (no `since`).
    Fresh,
    /// A `since` in an epoch that is not the room's.
    OtherEpoch,
    /// A `since` that does not parse.
    Unusable,
}

fn step() -> impl Strategy<Value = Step> {
    let (client, room) = (0u8..4, 0u8..2);
    let ask = prop_oneof![6 => Just(Ask::Resume), 1 => Just(Ask::Fresh), 1 => Just(Ask::OtherEpoch), 1 => Just(Ask::Unusable)];
    prop_oneof![
        3 => (client.clone(), room.clone(), ask).prop_map(|(client, room, ask)| Step::Connect { client, room, ask }),
        6 => room.prop_map(|room| Step::Publish { room }),
        3 => client.clone().prop_map(|client| Step::Read { client }),
        2 => client.prop_map(|client| Step::Leave { client }),
    ]
}

/// One room as the model sees it.
#[derive(Debug, Default)]
struct ModelRoom {
    /// Counts the room's lives: a room emptied and made again is another one.
    incarnation: u64,
    /// The payloads published to it in this life, the `seq`th at `seq - 1`.
    published: Vec<u64>,
    members: Vec<u8>,
}

/// A client: where it is, what it has read, and what it expects next.
#[derive(Debug, Default)]
struct Client {
    /// Connected: the room, and the receiving end of its outbox.
    connection: Option<(u8, mpsc::Receiver<Frame>)>,
    /// Where it last read, per room: (incarnation, epoch, seq).
    last: BTreeMap<u8, (u64, u64, u64)>,
    /// The greeting it must read first, kind and seq (the room's last when it
    /// joined): `Some` until read.
    greeting: Option<(u8, u64)>,
    /// After a recovered resume: the seqs that must come next, in order.
    replay: std::ops::Range<u64>,
    /// The jumps in seq it has seen in this connection.
    jumped: u64,
}

/// A `wsbroker.v1` frame's kind, epoch, seq and payload.
fn decode(frame: &[u8]) -> (u8, u64, u64, &[u8]) {
    let (opcode, body) = parse(frame).unwrap();
    assert_eq!(opcode, BINARY, "v1 frames are binary");
    let number = |at: std::ops::Range<usize>| u64::from_be_bytes(body[at].try_into().unwrap());
    (body[0], number(1..9), number(9..17), &body[17..])
}

fn name(room: u8) -> Arc<str> {
    Arc::from(format!("/c{room}"))
}

fn id(client: u8) -> ConnId {
    ConnId(u64::from(client))
}

fn run(history: usize, outbox: usize, steps: &[Step]) -> Result<(), TestCaseError> {
    let limits = Limits { size: history, ttl: None, memory: 1 << 30 };
    let mut rooms =
        Rooms::new(Settings { echo: true, slow_consumer: SlowConsumer::Drop, history: limits }, None);
    let mut model: BTreeMap<u8, ModelRoom> = BTreeMap::new();
    let mut clients: BTreeMap<u8, Client> = BTreeMap::new();
    let mut incarnations = 0u64;
    let mut payloads = 0u64;
    for step in steps {
        let before = rooms.counters.panics_caught;
        match *step {
            Step::Connect { client, room, ask } => {
                let c = clients.entry(client).or_default();
                if c.connection.is_some() {
                    continue;
                }
                let r = model.entry(room).or_default();
                if r.members.is_empty() {
                    incarnations += 1;
                    *r = ModelRoom { incarnation: incarnations, ..ModelRoom::default() };
                }
                let head = r.published.len() as u64;
                let mine = c.last.get(&room).copied();
                let (since, expected) = match (ask, mine) {
                    (Ask::Resume, Some((incarnation, epoch, seq))) => {
                        let missed = head.checked_sub(seq);
                        let recovered = incarnation == r.incarnation
                            && missed.is_some_and(|m| m as usize <= history && (m as usize) < outbox);
                        (Since::After { epoch, seq }, if recovered { kind::WELCOME } else { kind::RESET })
                    }
                    (Ask::Resume | Ask::Fresh, _) => (Since::Start, kind::WELCOME),
                    (Ask::OtherEpoch, _) => {
                        let epoch = rooms.rooms.get(&*name(room)).map_or(7, |x| x.epoch.wrapping_add(1));
                        (Since::After { epoch, seq: 0 }, kind::RESET)
                    }
                    (Ask::Unusable, _) => (Since::Unusable, kind::RESET),
                };
                let (tx, rx) = mpsc::channel(outbox);
                rooms.join(
                    Member::new(id(client), tx, CancellationToken::new()),
                    &name(room),
                    Delivery::Sequenced(since),
                );
                r.members.push(client);
                c.connection = Some((room, rx));
                c.greeting = Some((expected, head));
                c.jumped = 0;
                c.replay = match (expected, since) {
                    (kind::WELCOME, Since::After { seq, .. }) => seq + 1..head + 1,
                    _ => 0..0,
                };
            }
            Step::Publish { room } => {
                payloads += 1;
                let frame = frame::build(BINARY, &payloads.to_be_bytes());
                rooms.publish(Origin::Api, &name(room), std::slice::from_ref(&frame));
                if let Some(r) = model.get_mut(&room).filter(|r| !r.members.is_empty()) {
                    r.published.push(payloads);
                }
            }
            Step::Read { client } => {
                let Some(c) = clients.get_mut(&client) else { continue };
                let Some((room, rx)) = c.connection.as_mut() else { continue };
                let room = *room;
                let r = &model[&room];
                while let Ok(frame) = rx.try_recv() {
                    let (k, epoch, seq, payload) = decode(&frame);
                    if let Some((expected, at_join)) = c.greeting.take() {
                        prop_assert_eq!(k, expected, "welcome or reset, as the model predicts");
                        prop_assert_eq!(seq, at_join, "the greeting carries the room's last seq");
                        let resumed_at =
                            if k == kind::WELCOME && !c.replay.is_empty() { c.replay.start - 1 } else { seq };
                        c.last.insert(room, (r.incarnation, epoch, resumed_at));
                        continue;
                    }
                    let (incarnation, known_epoch, last) = c.last[&room];
                    prop_assert_eq!(incarnation, r.incarnation);
                    prop_assert_eq!(epoch, known_epoch, "one epoch for the room's life");
                    prop_assert!(k == kind::BINARY && seq > last, "seq {} after {}", seq, last);
                    prop_assert_eq!(payload, &r.published[seq as usize - 1].to_be_bytes()[..]);
                    if let Some(next) = c.replay.next() {
                        prop_assert_eq!(seq, next, "a recovered resume replays every missed message");
                    }
                    c.jumped += seq - last - 1;
                    c.last.insert(room, (incarnation, epoch, seq));
                }
                let (_, _, last) = c.last.get(&room).copied().unwrap_or_default();
                if c.greeting.is_none() && last == r.published.len() as u64 {
                    let dropped = rooms
                        .stats()
                        .rooms
                        .iter()
                        .flat_map(|r| &r.members)
                        .find(|m| m.id == id(client))
                        .map_or(0, |m| m.dropped);
                    prop_assert_eq!(c.jumped, dropped, "the jumps are the drops");
                }
            }
            Step::Leave { client } => {
                let Some(c) = clients.get_mut(&client) else { continue };
                let Some((room, _)) = c.connection.take() else { continue };
                rooms.leave(id(client), &name(room));
                if let Some(r) = model.get_mut(&room) {
                    r.members.retain(|m| *m != client);
                }
            }
        }
        rooms.finish(before);
        prop_assert_eq!(rooms.counters.panics_caught, 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_member_sees_the_contract(
        history in 0usize..6,
        outbox in 2usize..6,
        steps in prop::collection::vec(step(), 1..80),
    ) {
        run(history, outbox, &steps)?;
    }
}
