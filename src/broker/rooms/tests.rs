//! Unit tests of room state: each operation, with channels in place of sockets.

use super::*;
use crate::broker::history::Limits;

impl Rooms {
    /// Joins `id` to `room` with `tx` as its outbox, and ends the operation.
    fn join_with(&mut self, id: ConnId, room: &str, tx: mpsc::Sender<Frame>) {
        let before = self.counters.panics_caught;
        self.join(Member::new(id, tx, CancellationToken::new()), &Arc::from(room), Delivery::Plain);
        self.finish(before);
    }

    /// Publishes from `from` (a member) and ends the operation.
    fn publish_from(&mut self, from: ConnId, room: &str, frame: &Frame) {
        let before = self.counters.panics_caught;
        self.publish(Origin::Member(from), &Arc::from(room), std::slice::from_ref(frame));
        self.finish(before);
    }

    fn leave_now(&mut self, id: ConnId, room: &str) {
        let before = self.counters.panics_caught;
        self.leave(id, room);
        self.finish(before);
    }
}

fn settings(echo: bool) -> Settings {
    Settings { echo, slow_consumer: SlowConsumer::Drop, history: Limits::OFF }
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
    rooms.join_with(ConnId(1), "/a", a_tx);
    rooms.join_with(ConnId(2), "/a", b_tx);
    rooms.join_with(ConnId(3), "/c", c_tx);
    rooms.publish_from(ConnId(1), "/a", &text("hi"));
    assert_eq!(a_rx.try_recv().unwrap(), text("hi"));
    assert_eq!(b_rx.try_recv().unwrap(), text("hi"));
    assert!(c_rx.try_recv().is_err());
    assert_eq!(rooms.stats().counters.delivered, 2);
}

#[test]
fn no_echo_skips_the_sender() {
    let mut rooms = Rooms::new(settings(false), None);
    let (a_tx, mut a_rx) = mpsc::channel(4);
    let (b_tx, mut b_rx) = mpsc::channel(4);
    rooms.join_with(ConnId(1), "/a", a_tx);
    rooms.join_with(ConnId(2), "/a", b_tx);
    rooms.publish_from(ConnId(1), "/a", &text("hi"));
    assert!(a_rx.try_recv().is_err());
    assert_eq!(b_rx.try_recv().unwrap(), text("hi"));
}

#[test]
fn full_outbox_drops_for_that_member_only() {
    let mut rooms = Rooms::new(settings(true), None);
    let (slow_tx, _slow_rx) = mpsc::channel(1);
    let (fast_tx, mut fast_rx) = mpsc::channel(8);
    rooms.join_with(ConnId(1), "/r", slow_tx);
    rooms.join_with(ConnId(2), "/r", fast_tx);
    for _ in 0..3 {
        rooms.publish_from(ConnId(2), "/r", &text("m"));
    }
    for _ in 0..3 {
        assert_eq!(fast_rx.try_recv().unwrap(), text("m"));
    }
    let stats = rooms.stats();
    let slow = stats.room("/r").unwrap().members.iter().find(|m| m.id == ConnId(1)).unwrap();
    assert_eq!(slow.dropped, 2);
    assert_eq!(stats.counters.dropped_full, 2);
    assert_eq!(stats.members("/r"), 2);
}

#[test]
fn a_full_outbox_with_disconnect_kicks_and_removes_the_member() {
    let mut rooms = Rooms::new(
        Settings { echo: true, slow_consumer: SlowConsumer::Disconnect, history: Limits::OFF },
        None,
    );
    let (slow_tx, _slow_rx) = mpsc::channel(1);
    let kick = CancellationToken::new();
    let before = rooms.counters.panics_caught;
    rooms.join(Member::new(ConnId(1), slow_tx, kick.clone()), &Arc::from("/r"), Delivery::Plain);
    rooms.finish(before);
    let (fast_tx, _fast_rx) = mpsc::channel(8);
    rooms.join_with(ConnId(2), "/r", fast_tx);
    rooms.publish_from(ConnId(2), "/r", &text("fits"));
    assert!(!kick.is_cancelled());
    rooms.publish_from(ConnId(2), "/r", &text("overflows"));
    assert!(kick.is_cancelled(), "the slow member is told to close with 1008");
    let stats = rooms.stats();
    assert_eq!(stats.members("/r"), 1);
    assert_eq!((stats.counters.slow_disconnects, stats.counters.dropped_full), (1, 1));
}

#[test]
fn closed_outbox_is_removed_in_the_same_pass() {
    let mut rooms = Rooms::new(settings(true), None);
    let (dead_tx, dead_rx) = mpsc::channel(1);
    drop(dead_rx);
    let (live_tx, mut live_rx) = mpsc::channel(1);
    rooms.join_with(ConnId(1), "/r", dead_tx);
    rooms.join_with(ConnId(2), "/r", live_tx);
    rooms.publish_from(ConnId(2), "/r", &text("m"));
    assert_eq!(live_rx.try_recv().unwrap(), text("m"));
    let stats = rooms.stats();
    assert_eq!(stats.members("/r"), 1);
    assert_eq!(stats.counters.dropped_closed, 1);
}

#[test]
fn a_room_whose_members_are_all_gone_is_removed_by_the_publish() {
    let mut rooms = Rooms::new(settings(false), None);
    let (dead_tx, dead_rx) = mpsc::channel(1);
    drop(dead_rx);
    rooms.join_with(ConnId(1), "/r", dead_tx);
    rooms.publish(Origin::Remote, &Arc::from("/r"), &[text("m")]);
    assert!(rooms.emptied.is_some(), "the room waits to be dropped until the operation ends");
    rooms.finish(0);
    assert!(rooms.emptied.is_none() && rooms.removed.is_empty(), "the operation's end drops them");
    assert!(rooms.stats().rooms.is_empty());
}

#[test]
fn leave_of_unknown_ids_and_rooms_is_a_no_op() {
    let mut rooms = Rooms::new(settings(true), None);
    let (tx, _rx) = mpsc::channel(1);
    rooms.join_with(ConnId(1), "/r", tx);
    rooms.leave_now(ConnId(9), "/r");
    rooms.leave_now(ConnId(1), "/nope");
    assert_eq!(rooms.stats().members("/r"), 1);
    rooms.leave_now(ConnId(1), "/r");
    assert!(rooms.stats().rooms.is_empty(), "the last member's leave removes the room");
    rooms.leave_now(ConnId(1), "/r");
    assert!(rooms.stats().rooms.is_empty());
}

#[test]
fn drops_are_logged_at_most_once_per_interval() {
    let (tx, _rx) = mpsc::channel(1);
    let mut member = Member::new(ConnId(1), tx, CancellationToken::new());
    let t0 = Instant::now();
    log_drop(&mut member, "/r", &mut Some(t0));
    assert_eq!(member.drop_logged_at, Some(t0));
    log_drop(&mut member, "/r", &mut Some(t0 + DROP_LOG_INTERVAL / 2));
    assert_eq!(member.drop_logged_at, Some(t0), "a second drop within the interval is not logged");
    log_drop(&mut member, "/r", &mut Some(t0 + DROP_LOG_INTERVAL));
    assert_eq!(member.drop_logged_at, Some(t0 + DROP_LOG_INTERVAL), "logged again after the interval");
}

#[test]
fn join_grows_storage_only_when_it_must() {
    let mut rooms = Rooms::new(settings(true), None);
    let (tx, _rx) = mpsc::channel(1);
    let member = rooms
        .try_join(Member::new(ConnId(1), tx.clone(), CancellationToken::new()), "/r", false)
        .unwrap_err();
    rooms.join(member, &Arc::from("/r"), Delivery::Plain);
    assert_eq!(rooms.stats().members("/r"), 1);
    rooms.rooms.get_mut("/r").unwrap().members.reserve(4);
    assert!(rooms.try_join(Member::new(ConnId(2), tx, CancellationToken::new()), "/r", false).is_ok());
    assert_eq!(rooms.stats().members("/r"), 2);
}
