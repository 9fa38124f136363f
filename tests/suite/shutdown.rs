//! Graceful shutdown through the library: every client gets Close 1001 and the
//! server finishes within its shutdown timeout.

use std::time::Duration;

use crate::common::{TestServer, expect_close};
use futures_util::SinkExt;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wsbroker::broker::Hook;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_1001_to_every_client_and_finishes_in_time() {
    let server = TestServer::with(|c| c.shutdown_timeout = Duration::from_secs(3)).await;
    let mut clients = Vec::new();
    for room in ["/a", "/a", "/b", "/c?x=1"] {
        clients.push(server.join(room).await);
    }
    // Read concurrently so each client answers the server's Close promptly.
    let waits: Vec<_> =
        clients.into_iter().map(|mut ws| tokio::spawn(async move { expect_close(&mut ws).await })).collect();
    let started = tokio::time::Instant::now();
    server.shutdown().await.expect("clean shutdown");
    for wait in waits {
        assert_eq!(wait.await.unwrap(), CloseCode::Away);
    }
    // Clients that answer the Close let the server finish well before the timeout.
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_the_timeout_even_with_unresponsive_clients() {
    let server = TestServer::with(|c| c.shutdown_timeout = Duration::from_millis(500)).await;
    // Clients that never read, so never answer the Close handshake.
    let _silent = [server.join("/x").await, server.join("/x").await];
    // `shutdown` itself asserts completion within the timeout (plus a margin).
    server.shutdown().await.expect("clean shutdown");
}

/// A writer blocked in a socket write (its client never reads, so the socket's
/// buffers are full) notices the shutdown only when the write times out. Shutdown
/// must not wait for it: the writer holds nothing that keeps the broker alive, so
/// the server finishes within its timeout (`shutdown` asserts timeout + 2 s; a
/// writer holding the broker's sender would make it wait twice the timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_not_held_up_by_a_writer_stuck_in_a_write() {
    let server = TestServer::with(|c| {
        c.shutdown_timeout = Duration::from_secs(3);
        c.write_timeout = Duration::from_secs(60);
    })
    .await;
    // Neither client reads: the stalled one, and the publisher (it gets its own
    // messages back). 256 x 64 KiB = 16 MiB each, far beyond loopback's buffers.
    let _stalled = server.join("/stuck").await;
    let mut publisher = server.join("/stuck").await;
    let payload = vec![7u8; 64 * 1024];
    for _ in 0..256 {
        publisher.feed(Message::binary(payload.clone())).await.unwrap();
    }
    publisher.flush().await.unwrap();
    server.wait_stats(|s| s.counters.published == 256, "all 256 messages published").await;
    server.shutdown().await.expect("clean shutdown");
}

/// Shutdown reaches a reader that is waiting for room in a full broker inbox
/// (location ①, full): the writer waits only on the reader's stop signal, so the
/// reader itself must notice the shutdown there and have the writer send 1001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reaches_a_reader_waiting_for_room_in_the_broker_inbox() {
    let server = TestServer::with(|c| {
        c.broker_capacity = 1;
        c.shutdown_timeout = Duration::from_secs(5);
    })
    .await;
    let mut client = server.join("/wait").await;
    let (release_tx, release_rx) = oneshot::channel();
    assert!(server.handle.inject(Hook::Pause { release_rx }).await);
    server.wait_inbox_depth(0, "the broker to take the pause").await;
    // Two messages in one write: the first fills the one-slot inbox, and the reader,
    // in the same pass, finds the inbox full for the second and waits for room.
    client.feed(Message::text("fills the inbox")).await.unwrap();
    client.feed(Message::text("waits for room")).await.unwrap();
    client.flush().await.unwrap();
    server.wait_inbox_depth(1, "the first message in the paused broker's inbox").await;

    // Shut down while the broker is still paused: only the reader can pass the
    // shutdown on. Released afterwards, so that the broker, too, can end.
    let shutdown = tokio::spawn(server.shutdown());
    assert_eq!(expect_close(&mut client).await, CloseCode::Away);
    drop(release_tx);
    shutdown.await.unwrap().expect("clean shutdown");
}
