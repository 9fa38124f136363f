//! Admission limits and liveness: the connection limit (503), allowed origins (403),
//! pings, the idle timeout (1001), the write timeout, and slow consumers (1008).

use crate::common;

use std::time::Duration;

use crate::common::{TestServer, expect_close, recv, send_text};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wsbroker::config::SlowConsumer;

/// The HTTP status of a refused handshake.
async fn refused_status(request: impl IntoClientRequest + Unpin) -> u16 {
    common::refused(request).await.status().as_u16()
}

/// The code of the first Close frame in a stream of unmasked server frames.
fn close_code_in(mut bytes: &[u8]) -> Option<u16> {
    while bytes.len() >= 2 {
        let (opcode, len) = (bytes[0] & 0x0f, usize::from(bytes[1] & 0x7f));
        assert!(len < 126, "control frames only expected here");
        let payload = bytes.get(2..2 + len)?;
        if opcode == 0x8 {
            return Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]));
        }
        bytes = &bytes[2 + len..];
    }
    None
}

/// A client whose receive buffer is tiny and that never reads: a stalled consumer.
async fn stalled_client(server: &TestServer, room: &str) -> common::Client {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let before = server.stats().await.members(room);
    let (ws, _) =
        tokio_tungstenite::client_async(server.url(room), tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    server.wait_members(room, before + 1).await;
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_handshakes_get_503() {
    let server = TestServer::with(|c| c.max_connections = 2).await;
    let mut a = server.join("/r").await;
    let b = server.join("/r").await;
    assert_eq!(refused_status(server.url("/r")).await, 503);

    // A slot frees when a connection ends.
    drop(b);
    server.wait_members("/r", 1).await;
    let deadline = tokio::time::Instant::now() + common::EVENT_TIMEOUT;
    while server.handle.open_connections() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "slot not released");
        tokio::task::yield_now().await;
    }
    let _c = server.join("/r").await;
    send_text(&mut a, "still here").await;
    assert_eq!(recv(&mut a).await, Message::text("still here"));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_origins_may_connect() {
    let server = TestServer::with(|c| c.allowed_origins = vec!["https://Chat.Example/".into()]).await;
    let with_origin = |origin: &str| {
        let mut request = server.url("/r").into_client_request().unwrap();
        request.headers_mut().insert("Origin", origin.parse().unwrap());
        request
    };
    assert_eq!(refused_status(with_origin("https://evil.example")).await, 403);
    assert_eq!(refused_status(with_origin("https://chat.example.evil.example")).await, 403);
    // Case and a trailing slash do not matter.
    let (mut ok, _) = tokio_tungstenite::connect_async(with_origin("https://chat.example")).await.unwrap();
    // No Origin header: a non-browser client, allowed.
    let (_no_origin, _) = tokio_tungstenite::connect_async(server.url("/r")).await.unwrap();
    server.wait_members("/r", 2).await;
    send_text(&mut ok, "hi").await;
    assert_eq!(recv(&mut ok).await, Message::text("hi"));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pings_and_a_client_that_answers_stays_connected() {
    let server = TestServer::with(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.idle_timeout = Duration::from_millis(400);
    })
    .await;
    let mut ws = server.join("/r").await;
    // Reading makes the client answer each ping. Over three idle timeouts it sees
    // pings and no Close.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(1200);
    while let Ok(item) = tokio::time::timeout_at(until, ws.next()).await {
        match item {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("expected only pings, got {other:?}"),
        }
    }
    assert!(pings >= 5, "expected a ping every 100 ms, got {pings}");
    assert_eq!(server.stats().await.members("/r"), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let server = TestServer::with(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let silent = server.join("/r").await;
    // The client does not read, so it answers no ping: the server hears nothing.
    server.wait_members("/r", 0).await;
    // Read the raw bytes the server sent (a WebSocket client would try to answer the
    // pings into the closed socket and fail before reaching the Close frame).
    let tokio_tungstenite::MaybeTlsStream::Plain(mut raw) = silent.into_inner() else { panic!("plain TCP") };
    let mut bytes = Vec::new();
    tokio::time::timeout(common::EVENT_TIMEOUT, raw.read_to_end(&mut bytes)).await.unwrap().unwrap();
    assert_eq!(close_code_in(&bytes), Some(1001), "server frames: {bytes:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_write_ends_the_connection_after_the_write_timeout() {
    let server = TestServer::with(|c| {
        c.write_timeout = Duration::from_millis(300);
        c.outbox_capacity = 4;
    })
    .await;
    let _stalled = stalled_client(&server, "/r").await;
    let mut publisher = server.join("/r").await;
    let payload = "w".repeat(32 * 1024);
    // Publish (lockstep with our own echo) until the stalled member is gone: its
    // writer's blocked write timed out and the connection ended.
    let mut sent = 0;
    while server.stats().await.members("/r") == 2 {
        assert!(sent < 2000, "the stalled connection was never dropped");
        publisher.send(Message::text(payload.clone())).await.unwrap();
        assert_eq!(recv(&mut publisher).await, Message::text(payload.clone()));
        sent += 1;
    }
    server.wait_members("/r", 1).await;
    send_text(&mut publisher, "after").await;
    assert_eq!(recv(&mut publisher).await, Message::text("after"));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_disconnect_closes_with_1008() {
    let server = TestServer::with(|c| {
        c.slow_consumer = SlowConsumer::Disconnect;
        c.outbox_capacity = 4;
    })
    .await;
    let mut slow = stalled_client(&server, "/r").await;
    let mut publisher = server.join("/r").await;
    let payload = "s".repeat(32 * 1024);
    let mut sent = 0;
    while server.stats().await.counters.slow_disconnects == 0 {
        assert!(sent < 2000, "the slow consumer was never disconnected");
        publisher.send(Message::text(payload.clone())).await.unwrap();
        assert_eq!(recv(&mut publisher).await, Message::text(payload.clone()));
        sent += 1;
    }
    let stats = server.stats().await;
    assert_eq!(stats.members("/r"), 1, "the slow member is removed at once");
    assert_eq!(stats.counters.slow_disconnects, 1);
    assert_eq!(stats.room("/r").unwrap().members[0].dropped, 0, "the reading member lost nothing");
    // Once the slow client reads again, it finds what was queued, then Close 1008.
    assert_eq!(expect_close(&mut slow).await, CloseCode::Policy);
    server.shutdown().await.unwrap();
}
