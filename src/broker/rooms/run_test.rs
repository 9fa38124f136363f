//! Runs of publishes: a property test that a run is decided exactly as its messages
//! published one by one would be, and a walk through the cases by hand.
//!
//! The property test publishes random runs to one room whose members (plain and
//! `wsbroker.v1`, each with its own small outbox) are drained a random number of
//! entries at a time, and checks against a model that publishes message by message:
//! each member receives exactly the model's messages, in order and correctly
//! numbered; no outbox ever holds more messages than its capacity; and the counters
//! equal the model's.

#![expect(clippy::arithmetic_side_effects, reason = "test code: counts in a model of a few dozen steps")]

use proptest::prelude::*;

use super::*;
use crate::broker::history::Limits;

const ROOM: &str = "/runs";

#[derive(Debug, Clone)]
enum Step {
    /// A run of this many messages.
    Publish(u8),
    /// Member `member`'s writer takes up to `entries` entries from its outbox.
    Drain { member: u8, entries: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u8..9).prop_map(Step::Publish),
        2 => (0u8..4, 1u8..4).prop_map(|(member, entries)| Step::Drain { member, entries }),
    ]
}

/// One member as the test sees it: its outbox's receiver, and the model's view.
struct Subject {
    rx: mpsc::Receiver<Frame>,
    sequenced: bool,
    capacity: usize,
    /// Messages in its outbox, by the model.
    queued: usize,
    /// Still a member, by the model (not disconnected as a slow consumer).
    member: bool,
    /// The messages the model delivered to it, in order.
    expected: Vec<u8>,
    /// The messages its writer took, in order.
    received: Vec<u8>,
}

/// The frames of an outbox entry, one by one (the test's frames are all short).
fn frames_of(entry: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    let mut rest = entry;
    while let [_, len, ..] = rest {
        let end = 2 + usize::from(len & 0x7f);
        frames.push(&rest[..end]);
        rest = &rest[end..];
    }
    frames
}

/// Takes up to `entries` entries from `subject`'s outbox, checks each message's
/// numbering, and returns how many messages they held.
fn drain(subject: &mut Subject, entries: usize, epoch: u64) -> usize {
    let mut messages = 0;
    for _ in 0..entries {
        let Ok(entry) = subject.rx.try_recv() else { break };
        for frame in frames_of(&entry) {
            let (_, payload) = frame::parse(frame).unwrap();
            let message = if subject.sequenced {
                let (head, body) = payload.split_at(frame::ENVELOPE_HEAD);
                let seq = u64::from_be_bytes(head[9..17].try_into().unwrap());
                assert_eq!(head[0], kind::TEXT);
                assert_eq!(u64::from_be_bytes(head[1..9].try_into().unwrap()), epoch);
                // Messages are numbered from 0 here, seqs from 1.
                assert_eq!(seq, u64::from(body[0]) + 1, "a message's seq");
                body[0]
            } else {
                payload[0]
            };
            subject.received.push(message);
            messages += 1;
        }
    }
    messages
}

fn run(slow_consumer: SlowConsumer, members: &[(bool, usize)], steps: &[Step]) -> Result<(), TestCaseError> {
    let settings = Settings { echo: true, slow_consumer, history: Limits::OFF };
    let mut rooms = Rooms::new(settings, None);
    let room: Arc<str> = Arc::from(ROOM);
    let mut subjects = Vec::new();
    for (i, &(sequenced, capacity)) in members.iter().enumerate() {
        let (tx, rx) = mpsc::channel(capacity);
        let delivery = if sequenced { Delivery::Sequenced(Since::Start) } else { Delivery::Plain };
        let before = rooms.counters.panics_caught;
        rooms.join(Member::new(ConnId(i as u64), tx, CancellationToken::new()), &room, delivery);
        rooms.finish(before);
        let mut subject = Subject {
            rx,
            sequenced,
            capacity,
            queued: 0,
            member: true,
            expected: Vec::new(),
            received: Vec::new(),
        };
        // A sequenced member's welcome comes first; the test starts after it.
        if sequenced {
            prop_assert!(subject.rx.try_recv().is_ok(), "the welcome");
        }
        subjects.push(subject);
    }
    let epoch = rooms.rooms.get(ROOM).map(|r| r.epoch).unwrap();
    let (mut next_message, mut delivered, mut dropped, mut disconnects) = (0u8, 0u64, 0u64, 0u64);
    for step in steps {
        match *step {
            Step::Publish(count) => {
                let ids: Vec<u8> = (0..count).map(|i| next_message + i).collect();
                next_message += count;
                let frames: Vec<Frame> = ids.iter().map(|&m| frame::build(frame::TEXT, &[m])).collect();
                let before = rooms.counters.panics_caught;
                rooms.publish(Origin::Api, &room, &frames);
                rooms.finish(before);
                // The model: message by message.
                for subject in subjects.iter_mut().filter(|s| s.member) {
                    for &m in &ids {
                        if subject.queued < subject.capacity {
                            subject.queued += 1;
                            subject.expected.push(m);
                            delivered += 1;
                        } else {
                            dropped += 1;
                            if slow_consumer == SlowConsumer::Disconnect {
                                subject.member = false;
                                disconnects += 1;
                                break;
                            }
                        }
                    }
                }
            }
            Step::Drain { member, entries } => {
                if let Some(subject) = subjects.get_mut(usize::from(member)) {
                    let taken = drain(subject, usize::from(entries), epoch);
                    prop_assert!(
                        taken <= subject.queued,
                        "an outbox held more messages than the model put in"
                    );
                    subject.queued -= taken;
                }
            }
        }
        let counters = rooms.counters;
        prop_assert_eq!(counters.delivered, delivered);
        prop_assert_eq!(counters.dropped_full, dropped);
        prop_assert_eq!(counters.slow_disconnects, disconnects);
        prop_assert_eq!(counters.dropped_closed, 0);
        prop_assert_eq!(counters.panics_caught, 0);
    }
    for subject in &mut subjects {
        let queued = subject.queued;
        let taken = drain(subject, usize::MAX, epoch);
        prop_assert_eq!(taken, queued, "messages left in an outbox");
        prop_assert_eq!(&subject.received, &subject.expected);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_run_is_decided_as_its_messages_one_by_one(
        disconnect in any::<bool>(),
        members in prop::collection::vec((any::<bool>(), 1usize..24), 1..4),
        steps in prop::collection::vec(step(), 1..30),
    ) {
        let slow_consumer = if disconnect { SlowConsumer::Disconnect } else { SlowConsumer::Drop };
        run(slow_consumer, &members, &steps)?;
    }
}

/// A room with one plain member whose outbox holds `capacity` messages.
fn one_member(capacity: usize) -> (Rooms, Arc<str>, mpsc::Receiver<Frame>) {
    let settings = Settings { echo: true, slow_consumer: SlowConsumer::Drop, history: Limits::OFF };
    let mut rooms = Rooms::new(settings, None);
    let room: Arc<str> = Arc::from(ROOM);
    let (tx, rx) = mpsc::channel(capacity);
    rooms.join(Member::new(ConnId(1), tx, CancellationToken::new()), &room, Delivery::Plain);
    (rooms, room, rx)
}

/// A run of `count` messages numbered from `first`.
fn messages(first: u8, count: u8) -> Vec<Frame> {
    (first..first + count).map(|m| frame::build(frame::TEXT, &[m])).collect()
}

/// By hand: a run that fits goes as one entry; one that does not, message by
/// message, with what does not fit dropped; once the writer has taken the run, the
/// next one goes whole again.
#[test]
fn runs_go_whole_when_they_fit_and_one_by_one_when_not() {
    let (mut rooms, room, mut rx) = one_member(8);
    rooms.publish(Origin::Api, &room, &messages(0, 4));
    // 4 queued (one entry); 5 more do not all fit in 8: 4 go one by one, 1 is dropped.
    rooms.publish(Origin::Api, &room, &messages(4, 5));
    assert_eq!((rooms.counters.delivered, rooms.counters.dropped_full), (8, 1));
    let entries: Vec<usize> =
        std::iter::from_fn(|| rx.try_recv().ok()).map(|e| frames_of(&e).len()).collect();
    assert_eq!(entries, [4, 1, 1, 1, 1]);
    // All taken: the next run fits whole.
    rooms.publish(Origin::Api, &room, &messages(9, 8));
    assert_eq!(frames_of(&rx.try_recv().unwrap()).len(), 8);
    assert!(rx.try_recv().is_err());
    assert_eq!((rooms.counters.delivered, rooms.counters.dropped_full), (16, 1));
}

/// By hand: at most `RUNS_TRACKED` runs are counted while they may be queued; one
/// more goes message by message, and once the writer takes one, runs go whole again.
#[test]
fn runs_beyond_those_counted_go_one_by_one() {
    let (mut rooms, room, mut rx) = one_member(64);
    let pair = |first: u8| messages(first, 2);
    for i in 0..=RUNS_TRACKED as u8 {
        rooms.publish(Origin::Api, &room, &pair(2 * i));
    }
    let sizes = |rx: &mut mpsc::Receiver<Frame>, n: usize| -> Vec<usize> {
        std::iter::from_fn(|| rx.try_recv().ok()).take(n).map(|e| frames_of(&e).len()).collect()
    };
    let mut expected = vec![2; RUNS_TRACKED];
    expected.extend([1, 1]);
    assert_eq!(sizes(&mut rx, 1), [2]);
    // One run taken: the next goes whole.
    rooms.publish(Origin::Api, &room, &pair(100));
    expected.remove(0);
    expected.push(2);
    assert_eq!(sizes(&mut rx, usize::MAX), expected);
    assert_eq!(rooms.counters.delivered, 2 * (RUNS_TRACKED as u64 + 2));
}
