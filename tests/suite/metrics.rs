//! The metrics endpoint through a scripted session: the exact values scraped from
//! `/metrics` after connect, publish, a stalled consumer, a rejection and a
//! disconnect; `/healthz` turning 503 when the broker stops; 404 elsewhere.

use crate::common;

use std::net::SocketAddr;

use crate::common::{TestServer, expect_close, get, recv, sample};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wsbroker::broker::Hook;

/// A plain HTTP/1.1 GET: the status code and the body.
/// Scrapes `/metrics` until `wsbroker_connections` reads `n` (connections finish
/// their bookkeeping after the client sees them close), and returns that scrape.
async fn scrape_once_connections_are(metrics: SocketAddr, n: f64) -> String {
    let deadline = tokio::time::Instant::now() + common::EVENT_TIMEOUT;
    loop {
        let (_, body) = get(metrics, "/metrics").await;
        if sample(&body, "wsbroker_connections") == n {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "connections never reached {n}:\n{body}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_session_is_reported_exactly() {
    const N: usize = 300;
    let server = TestServer::with(|c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        c.outbox_capacity = 4;
        c.max_room_length = 32;
    })
    .await;
    let metrics = server.metrics_addr.unwrap();

    // Nothing yet.
    let (status, body) = get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(sample(&body, "wsbroker_connections"), 0.0);
    assert_eq!(sample(&body, "wsbroker_build_info{version=\"0.1.0\"}"), 1.0);
    assert!(body.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");

    // A stalled consumer, a publisher and a reader in one room.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (_stalled, _) = tokio_tungstenite::client_async(server.url("/m"), stream).await.unwrap();
    server.wait_members("/m", 1).await;
    let mut publisher = server.join("/m").await;
    let mut reader = server.join("/m").await;
    let payload = "p".repeat(32 * 1024);
    for _ in 0..N {
        publisher.send(Message::text(payload.clone())).await.unwrap();
        assert_eq!(recv(&mut publisher).await, Message::text(payload.clone()));
        assert_eq!(recv(&mut reader).await, Message::text(payload.clone()));
    }
    // One rejected handshake: a room name over the 32-byte limit (HTTP 414).
    assert!(tokio_tungstenite::connect_async(server.url(&format!("/{}", "x".repeat(40)))).await.is_err());

    // Ground truth: the broker's own per-member count of the stalled member's drops.
    let stats = server.stats().await;
    let stalled_dropped = stats.room("/m").unwrap().members[0].dropped;
    assert!(stalled_dropped > 0, "the stalled member must have dropped messages");

    let (_, body) = get(metrics, "/metrics").await;
    assert_eq!(sample(&body, "wsbroker_connections"), 3.0);
    assert_eq!(sample(&body, "wsbroker_rooms"), 1.0);
    assert_eq!(sample(&body, "wsbroker_messages_received_total{source=\"client\"}"), N as f64);
    assert_eq!(sample(&body, "wsbroker_messages_received_total{source=\"api\"}"), 0.0);
    assert_eq!(sample(&body, "wsbroker_deliveries_total"), (3 * N) as f64 - stalled_dropped as f64);
    assert_eq!(sample(&body, "wsbroker_dropped_total{reason=\"outbox_full\"}"), stalled_dropped as f64);
    assert_eq!(sample(&body, "wsbroker_dropped_total{reason=\"connection_gone\"}"), 0.0);
    assert_eq!(sample(&body, "wsbroker_slow_consumer_disconnects_total"), 0.0);
    assert_eq!(sample(&body, "wsbroker_handshake_rejections_total{reason=\"bad_request\"}"), 1.0);
    assert_eq!(sample(&body, "wsbroker_handshake_rejections_total{reason=\"origin\"}"), 0.0);
    assert_eq!(sample(&body, "wsbroker_handshake_rejections_total{reason=\"limit\"}"), 0.0);
    assert_eq!(sample(&body, "wsbroker_handshake_rejections_total{reason=\"timeout\"}"), 0.0);
    assert_eq!(sample(&body, "wsbroker_broker_inbox_depth"), 0.0);
    assert_eq!(sample(&body, "wsbroker_panics_caught_total"), 0.0);

    // The reader leaves cleanly (1000), the publisher vanishes (no close handshake).
    reader.close(None).await.unwrap();
    while let Some(Ok(_)) = reader.next().await {}
    drop(publisher);
    server.wait_members("/m", 1).await;
    let body = scrape_once_connections_are(metrics, 1.0).await;
    // The reader's Close had no code (1005, counted as "other"); the publisher none.
    assert_eq!(sample(&body, "wsbroker_closes_total{code=\"other\"}"), 1.0);
    assert_eq!(sample(&body, "wsbroker_closes_total{code=\"none\"}"), 1.0);
    assert_eq!(sample(&body, "wsbroker_closes_total{code=\"1000\"}"), 0.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_are_counted_by_code() {
    let server = TestServer::with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let metrics = server.metrics_addr.unwrap();
    // 1000: the client closes with a code; the server echoes it.
    let mut normal = server.join("/c").await;
    normal
        .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    while let Some(Ok(_)) = normal.next().await {}
    // none: the client vanishes.
    drop(server.join("/c").await);
    // 1011: the broker drops the connection (location ⑤).
    let mut dropped = server.join("/d").await;
    assert!(server.handle.inject(Hook::DropOutboxes { room: "/d".into() }).await);
    assert_eq!(expect_close(&mut dropped).await, CloseCode::Error);
    while let Some(Ok(_)) = dropped.next().await {}

    let body = scrape_once_connections_are(metrics, 0.0).await;
    assert_eq!(sample(&body, "wsbroker_closes_total{code=\"1000\"}"), 1.0);
    assert_eq!(sample(&body, "wsbroker_closes_total{code=\"none\"}"), 1.0);
    assert_eq!(sample(&body, "wsbroker_closes_total{code=\"1011\"}"), 1.0);
    assert_eq!(sample(&body, "wsbroker_closes_total{code=\"1001\"}"), 0.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_turns_503_when_the_broker_stops_and_unknown_paths_get_404() {
    let server = TestServer::with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let metrics = server.metrics_addr.unwrap();
    assert_eq!(get(metrics, "/healthz").await.0, 200);
    assert_eq!(get(metrics, "/nope").await.0, 404);
    assert_eq!(get(metrics, "/metrics/extra").await.0, 404);

    // A client that never reads keeps the server draining for a moment after the
    // broker stops, which is when /healthz must already say 503.
    let _lingering = server.join("/h").await;
    let (closed_tx, closed_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    assert!(server.handle.inject(Hook::CloseInbox { closed_tx, release_rx }).await);
    closed_rx.await.unwrap();
    release_tx.send(()).unwrap();
    let deadline = tokio::time::Instant::now() + common::EVENT_TIMEOUT;
    loop {
        let (status, body) = get(metrics, "/healthz").await;
        if status == 503 {
            assert!(body.contains("unavailable"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "/healthz never turned 503");
        tokio::task::yield_now().await;
    }
    assert!(server.finished().await.is_err(), "the server stops with BrokerStopped");
}
