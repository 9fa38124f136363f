//! Graceful shutdown through the library: every client gets Close 1001 and the
//! server finishes within its shutdown timeout.

mod common;

use std::time::Duration;

use common::{TestServer, expect_close};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

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
