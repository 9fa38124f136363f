//! The failure table (docs/design.md), one test per location, each asserting what the
//! client sees (frames, close codes) and what the broker holds afterwards.

use crate::common::{TestServer, expect_close, recv, send_text};
use futures_util::SinkExt;
use tokio::net::TcpSocket;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wsbroker::broker::Hook;
use wsbroker::{BrokerStop, ConnId, Error};

/// ① Err and ②: with the broker's inbox closed, a reader's send fails and its client
/// gets Close 1011. Once the broker returns (its `recv` gave `None`), every other
/// connection is closed with 1011 too and the server stops with `BrokerStopped`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_1_and_2_broker_gone_closes_with_1011_and_stops_the_server() {
    let server = TestServer::start().await;
    let mut talker = server.join("/r").await;
    let mut idle = server.join("/other").await;

    let (closed_tx, closed_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    assert!(server.handle.inject(Hook::CloseInbox { closed_tx, release_rx }).await);
    closed_rx.await.unwrap();
    // The inbox is closed: the broker can no longer be asked anything.
    assert!(server.handle.stats().await.is_none());

    // ①: the reader's send fails; the writer is told to send 1011.
    send_text(&mut talker, "into the void").await;
    assert_eq!(expect_close(&mut talker).await, CloseCode::Error);

    // ②: let the broker go on; it drains its inbox, `recv` returns None, it returns.
    release_tx.send(()).unwrap();
    // Its room state (and so every outbox) died with it: the idle client gets 1011.
    assert_eq!(expect_close(&mut idle).await, CloseCode::Error);

    let result = server.finished().await;
    assert!(
        matches!(result, Err(Error::BrokerStopped(BrokerStop::InboxClosed))),
        "server must stop with BrokerStopped, got {result:?}"
    );
}

/// The server stops accepting once the broker has stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_broker_stops_no_connection_is_accepted() {
    let server = TestServer::start().await;
    let mut ws = server.join("/r").await;
    let (closed_tx, _closed_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    assert!(server.handle.inject(Hook::CloseInbox { closed_tx, release_rx }).await);
    release_tx.send(()).unwrap();
    assert_eq!(expect_close(&mut ws).await, CloseCode::Error);
    let url = server.url("/r");
    assert!(server.finished().await.is_err());
    assert!(tokio_tungstenite::connect_async(url).await.is_err(), "listener must be closed");
}

/// ① Full: when the broker's inbox is full the reader waits; nothing is lost. A
/// one-slot inbox with many messages in flight exercises the wait constantly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_1_full_inbox_makes_readers_wait_without_loss() {
    const N: usize = 500;
    let server = TestServer::with(|c| {
        c.broker_capacity = 1;
        c.outbox_capacity = 4 * N;
    })
    .await;
    let mut a = server.join("/r").await;
    let mut b = server.join("/r").await;
    let mut receiver = server.join("/r").await;

    for i in 0..N {
        a.feed(Message::text(format!("a{i}"))).await.unwrap();
        b.feed(Message::text(format!("b{i}"))).await.unwrap();
    }
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    let (mut next_a, mut next_b) = (0, 0);
    for _ in 0..2 * N {
        let Message::Text(t) = recv(&mut receiver).await else { panic!("text expected") };
        // Interleaving between publishers is free; each publisher's order is kept.
        if t.as_str() == format!("a{next_a}") {
            next_a += 1;
        } else {
            assert_eq!(t.as_str(), format!("b{next_b}"));
            next_b += 1;
        }
    }
    assert_eq!((next_a, next_b), (N, N));
    let stats = server.stats().await;
    assert_eq!(stats.counters.published, 2 * N as u64);
    assert_eq!(stats.counters.dropped_full, 0);
    server.shutdown().await.unwrap();
}

/// ④ Full: a client that never reads does not slow a reading one. The reader gets
/// every message in order; the stalled member's drops are counted; nothing else is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_4_full_a_stalled_client_does_not_slow_a_reading_one() {
    const N: usize = 400;
    const SIZE: usize = 32 * 1024;
    let server = TestServer::with(|c| c.outbox_capacity = 4).await;

    // The stalled client: a tiny receive buffer, and it never reads after the handshake.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (_stalled, _) = tokio_tungstenite::client_async(server.url("/r"), stream).await.unwrap();
    server.wait_members("/r", 1).await;
    let mut reader = server.join("/r").await;

    // Lockstep: publish, then wait for the echo, so the reading client never has
    // more than one message queued and so can never be the one dropping.
    let payload = "x".repeat(SIZE - 8);
    for i in 0..N {
        let text = format!("{i:08}{payload}");
        reader.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(recv(&mut reader).await, Message::text(text), "message {i} lost or reordered");
    }

    let stats = server.stats().await;
    let room = stats.room("/r").unwrap();
    let (stalled, reading) = (room.members[0], room.members[1]);
    assert_eq!(reading.dropped, 0, "the reading client lost nothing");
    assert!(stalled.dropped > 0, "the stalled client's drops are counted: {stats:?}");
    assert_eq!(stats.counters.dropped_full, stalled.dropped);
    assert_eq!(stats.counters.delivered + stats.counters.dropped_full, 2 * N as u64);
    server.shutdown().await.unwrap();
}

/// ④ Closed: a member whose writer is gone is removed in the same publish pass, and
/// the other members still receive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_4_closed_removes_the_dead_member_in_the_same_pass() {
    let server = TestServer::start().await;
    let mut live = server.join("/r").await;
    assert!(server.handle.inject(Hook::AddDeadMember { room: "/r".into(), id: ConnId(u64::MAX) }).await);
    server.wait_members("/r", 2).await;

    send_text(&mut live, "hi").await;
    assert_eq!(recv(&mut live).await, Message::text("hi"));
    let stats = server.stats().await;
    assert_eq!(stats.members("/r"), 1);
    assert_eq!(stats.room("/r").unwrap().members[0].id, ConnId(1));
    assert_eq!(stats.counters.dropped_closed, 1);
    assert_eq!(stats.counters.delivered, 1);
    server.shutdown().await.unwrap();
}

/// ⑤: when the broker drops a connection's outbox, the writer's `recv` returns
/// `None`: the client gets Close 1011, the reader stops, deregistration is attempted
/// (a no-op by then), and other rooms are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_5_outbox_closed_by_the_broker_closes_with_1011() {
    let server = TestServer::start().await;
    let mut dropped = server.join("/doomed").await;
    let mut other = server.join("/safe").await;

    assert!(server.handle.inject(Hook::DropOutboxes { room: "/doomed".into() }).await);
    assert_eq!(expect_close(&mut dropped).await, CloseCode::Error);
    let stats = server.stats().await;
    assert_eq!(stats.members("/doomed"), 0);
    assert_eq!(stats.members("/safe"), 1);

    send_text(&mut other, "unaffected").await;
    assert_eq!(recv(&mut other).await, Message::text("unaffected"));
    server.shutdown().await.unwrap();
}

/// Deregistering ids and rooms the broker does not know is a no-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistering_unknown_ids_and_rooms_is_a_no_op() {
    let server = TestServer::start().await;
    let mut a = server.join("/r").await;
    let before = server.stats().await;

    assert!(server.handle.inject(Hook::Leave { room: "/r".into(), id: ConnId(999_999) }).await);
    assert!(server.handle.inject(Hook::Leave { room: "/nowhere".into(), id: ConnId(1) }).await);
    assert!(server.handle.inject(Hook::Leave { room: "/nowhere".into(), id: ConnId(999_999) }).await);
    assert_eq!(server.stats().await, before);

    send_text(&mut a, "alive").await;
    assert_eq!(recv(&mut a).await, Message::text("alive"));
    server.shutdown().await.unwrap();
}
