//! Room semantics through real clients: broadcast with and without echo, isolation
//! between rooms, text and binary, per-publisher order, and the close handshake.

use crate::common;

use crate::common::{TestServer, assert_nothing_delivered, expect_close, recv, send_text};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_receives_including_the_sender() {
    let server = TestServer::start().await;
    let mut a = server.join("/chat").await;
    let mut b = server.join("/chat").await;
    let mut c = server.join("/chat").await;

    send_text(&mut a, "hello").await;
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(recv(ws).await, Message::text("hello"));
    }
    let stats = server.stats().await;
    assert_eq!(stats.members("/chat"), 3);
    assert_eq!(stats.counters.published, 1);
    assert_eq!(stats.counters.delivered, 3);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_echo_excludes_the_sender() {
    let server = TestServer::with(|c| c.no_echo = true).await;
    let mut a = server.join("/chat").await;
    let mut b = server.join("/chat").await;

    send_text(&mut a, "from a").await;
    assert_eq!(recv(&mut b).await, Message::text("from a"));
    // b's reply reaches a, and is the first thing a receives: a got no echo of its own.
    send_text(&mut b, "from b").await;
    assert_eq!(recv(&mut a).await, Message::text("from b"));
    assert_eq!(server.stats().await.counters.delivered, 2);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_isolated_and_the_query_string_is_ignored() {
    let server = TestServer::start().await;
    let mut a1 = server.join("/a").await;
    // Same room as a1: the query string is not part of the room name.
    let mut a2 = server.join("/a?token=xyz").await;
    let mut b = server.join("/b").await;

    send_text(&mut a1, "for room a").await;
    assert_eq!(recv(&mut a1).await, Message::text("for room a"));
    assert_eq!(recv(&mut a2).await, Message::text("for room a"));
    assert_nothing_delivered(&mut b).await;

    let stats = server.stats().await;
    assert_eq!(stats.members("/a"), 2);
    assert_eq!(stats.members("/b"), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_binary_keep_their_type_and_bytes() {
    let server = TestServer::start().await;
    let mut a = server.join("/mixed").await;
    let mut b = server.join("/mixed").await;

    let binary = Message::binary(vec![0u8, 159, 146, 150, 255]);
    a.send(binary.clone()).await.unwrap();
    a.send(Message::text("żółw 🐢")).await.unwrap();
    assert_eq!(recv(&mut b).await, binary);
    assert_eq!(recv(&mut b).await, Message::text("żółw 🐢"));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_one_publisher_arrive_in_order() {
    const N: usize = 2000;
    // Outboxes large enough that nothing is dropped: order is then guaranteed.
    let server = TestServer::with(|c| c.outbox_capacity = 4096).await;
    let mut publisher = server.join("/seq").await;
    let mut receiver = server.join("/seq").await;

    let send = tokio::spawn(async move {
        for i in 0..N {
            publisher.feed(Message::text(i.to_string())).await.unwrap();
        }
        publisher.flush().await.unwrap();
        publisher
    });
    for i in 0..N {
        assert_eq!(recv(&mut receiver).await, Message::text(i.to_string()));
    }
    let _publisher = send.await.unwrap();
    let stats = server.stats().await;
    assert_eq!(stats.counters.dropped_full, 0);
    assert_eq!(stats.counters.published, N as u64);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_gets_the_close_reply_and_is_deregistered() {
    let server = TestServer::start().await;
    let mut a = server.join("/bye").await;
    let mut b = server.join("/bye").await;

    a.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "done".into() })))
        .await
        .unwrap();
    // The protocol's reply: the server echoes the Close code.
    assert_eq!(expect_close(&mut a).await, CloseCode::Normal);
    assert!(a.next().await.is_none(), "stream ends after the close handshake");
    server.wait_members("/bye", 1).await;

    // The remaining member is unaffected.
    send_text(&mut b, "still here").await;
    assert_eq!(recv(&mut b).await, Message::text("still here"));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abrupt_disconnect_is_cleaned_up() {
    let server = TestServer::start().await;
    let a = server.join("/gone").await;
    let mut b = server.join("/gone").await;

    // Drop the TCP connection without a Close frame.
    drop(a);
    server.wait_members("/gone", 1).await;
    send_text(&mut b, "after").await;
    assert_eq!(recv(&mut b).await, Message::text("after"));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ping_gets_its_own_pong_in_order() {
    let server = TestServer::start().await;
    let mut ws = server.join("/ping").await;
    for i in 0..10u8 {
        ws.send(Message::Ping(vec![i; usize::from(i) + 1].into())).await.unwrap();
    }
    for i in 0..10u8 {
        let pong = tokio::time::timeout(common::EVENT_TIMEOUT, ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(pong, Message::Pong(vec![i; usize::from(i) + 1].into()), "pong {i}");
    }
    server.shutdown().await.unwrap();
}

/// A Pong owed for a Ping read before a message is complete goes out before that
/// message's delivery (what Autobahn's cases 5.6 and 5.19 check): the writer looks
/// at the control frames before each batch from the outbox. Ping and message go out
/// in one write, so both are usually queued before the writer wakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pong_goes_out_before_a_message_published_after_its_ping() {
    let server = TestServer::start().await;
    let mut ws = server.join("/pong-first").await;
    for i in 0..100u8 {
        ws.feed(Message::Ping(vec![i].into())).await.unwrap();
        ws.feed(Message::binary(vec![i])).await.unwrap();
        ws.flush().await.unwrap();
        for expected in [Message::Pong(vec![i].into()), Message::binary(vec![i])] {
            let got = tokio::time::timeout(common::EVENT_TIMEOUT, ws.next()).await.unwrap().unwrap().unwrap();
            assert_eq!(got, expected, "round {i}");
        }
    }
    server.shutdown().await.unwrap();
}

/// Messages of every size class, pipelined in large writes, arrive whole and in
/// order whatever the read window: smaller than a frame header (1 byte), the
/// default, and larger than the per-thread scratch buffer (read straight into the
/// window). Sizes straddle the window, the 16 KiB scratch buffer and the maximum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_messages_of_every_size_arrive_whole_whatever_the_read_window() {
    let sizes = [0usize, 1, 125, 126, 255, 256, 257, 4096, 16383, 16384, 16385, 40000, 65536];
    for window in [1usize, 256, 64 << 10] {
        let server = TestServer::with(|c| {
            c.read_buffer_size = window;
            c.outbox_capacity = 4096;
        })
        .await;
        let mut publisher = server.join("/sizes").await;
        let mut receiver = server.join("/sizes").await;
        let expected: Vec<Message> = (0..3)
            .flat_map(|round| sizes.iter().map(move |&n| (round, n)))
            .map(|(round, n)| {
                let payload: Vec<u8> = (0..n).map(|i| (i * 7 + n + round) as u8).collect();
                if n % 2 == 0 { Message::binary(payload) } else { Message::text("x".repeat(n)) }
            })
            .collect();
        let to_send = expected.clone();
        let send = tokio::spawn(async move {
            for m in to_send {
                publisher.feed(m).await.unwrap();
            }
            publisher.flush().await.unwrap();
            publisher
        });
        for (i, m) in expected.iter().enumerate() {
            assert_eq!(&recv(&mut receiver).await, m, "message {i} with read window {window}");
        }
        let _publisher = send.await.unwrap();
        assert_eq!(server.stats().await.counters.dropped_full, 0);
        server.shutdown().await.unwrap();
    }
}
