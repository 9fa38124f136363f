//! wss:// through real TLS clients: TLS 1.2 and 1.3 with ALPN http/1.1, hostile
//! openings (plain HTTP, a plain upgrade, a garbage or trickled ClientHello, a session
//! that ends mid-record, one that never upgrades), each with a bystander that keeps
//! receiving, and certificates rotated by reload while an old client keeps going.

use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::common::tls::{TestCert, connector, dir, presented, tls_connect, wss};
use crate::common::{self, TestServer, recv, sample, send_text};

async fn tls_server(cert: &TestCert, adjust: impl FnOnce(&mut wsbroker::Config)) -> TestServer {
    TestServer::with(|c| {
        c.tls_cert = Some(cert.cert_file.clone());
        c.tls_key = Some(cert.key_file.clone());
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        adjust(c);
    })
    .await
}

/// Joins `room` over TLS and waits until the broker has the member.
async fn join_tls(
    server: &TestServer,
    connector: &tokio_rustls::TlsConnector,
    room: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>> {
    let before = server.stats().await.members(room);
    let ws = wss(connector, server.addr, room).await;
    server.wait_members(room, before + 1).await;
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_works_over_tls_1_2_and_1_3_with_alpn_http_1_1() {
    let dir = dir("versions");
    let cert = TestCert::new(&dir, "server");
    let server = tls_server(&cert, |_| {}).await;
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let tls = tls_connect(&connector(&[&cert.der], Some(version)), server.addr).await.unwrap();
        let session = &tls.get_ref().1;
        assert_eq!(session.protocol_version(), Some(version.version));
        assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
    }
    let connector = connector(&[&cert.der], None);
    let mut a = join_tls(&server, &connector, "/secure").await;
    let mut b = join_tls(&server, &connector, "/secure").await;
    send_text(&mut a, "over tls").await;
    assert_eq!(recv(&mut b).await, Message::text("over tls"));
    // Large messages and bursts go through the TLS layer's buffers whole and in order.
    let big = vec![7u8; 60_000];
    for i in 0..50u8 {
        let mut payload = big.clone();
        payload[0] = i;
        a.feed(Message::binary(payload)).await.unwrap();
    }
    a.flush().await.unwrap();
    for i in 0..50u8 {
        let Message::Binary(got) = recv(&mut b).await else { panic!("binary expected") };
        assert_eq!((got.len(), got[0]), (60_000, i));
    }
    server.shutdown().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// Opens a TCP connection, sends `bytes`, and returns what the server sent back
/// before closing (it must close within the handshake timeout plus a margin).
async fn hostile_opening(server: &TestServer, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(common::EVENT_TIMEOUT, stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server must close the connection");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_openings_are_closed_and_a_bystander_keeps_receiving() {
    let dir = dir("hostile");
    let cert = TestCert::new(&dir, "server");
    let server = tls_server(&cert, |c| c.handshake_timeout = Duration::from_secs(1)).await;
    let connector = connector(&[&cert.der], None);
    let mut bystander = join_tls(&server, &connector, "/b").await;

    // Plain HTTP, and a plain WebSocket upgrade, to the TLS port.
    let answer = hostile_opening(&server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(!answer.starts_with(b"HTTP/1.1 101"), "no upgrade without TLS");
    let upgrade = b"GET /b HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert!(!hostile_opening(&server, upgrade).await.starts_with(b"HTTP/1.1 101"));
    // A ClientHello record of garbage.
    let mut garbage = vec![0x16, 0x03, 0x01, 0x01, 0x00];
    garbage.extend((0..256u32).map(|i| (i * 37 % 251) as u8));
    hostile_opening(&server, &garbage).await;
    send_text(&mut bystander, "still here").await;
    assert_eq!(recv(&mut bystander).await, Message::text("still here"));

    // A ClientHello trickled one byte a second: cut off at the handshake timeout.
    let mut trickle = TcpStream::connect(server.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut closed = false;
    for byte in [0x16u8, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00] {
        if trickle.write_all(&[byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_secs(1), trickle.read(&mut probe)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickled ClientHello must be cut off");
    assert!(started.elapsed() < Duration::from_secs(5), "cut off at the handshake timeout");

    // A TLS session that completes and never upgrades: cut off at the timeout too.
    let mut idle = tls_connect(&connector, server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let ended = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(matches!(ended, Ok(Ok(0)) | Ok(Err(_))), "a TLS client that never upgrades is closed");

    // A member whose TLS session ends in the middle of a record.
    let mut member = wss(&connector, server.addr, "/b").await;
    send_text(&mut member, "before").await;
    assert_eq!(recv(&mut bystander).await, Message::text("before"));
    let mut tls = member.into_inner();
    let (tcp, _) = tls.get_mut();
    tcp.write_all(&[0x17, 0x03, 0x03, 0x40, 0x00, 1, 2, 3]).await.unwrap();
    drop(tls);
    server.wait_members("/b", 1).await;

    send_text(&mut bystander, "after all that").await;
    assert_eq!(recv(&mut bystander).await, Message::text("after all that"));
    let metrics = common::get(server.metrics_addr.unwrap(), "/metrics").await.1;
    assert!(sample(&metrics, "wsbroker_handshake_rejections_total{reason=\"tls\"}") >= 3.0);
    assert!(sample(&metrics, "wsbroker_handshake_rejections_total{reason=\"timeout\"}") >= 1.0);
    server.shutdown().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rotates_the_certificate_for_new_clients_only() {
    let dir = dir("rotation");
    let (live, first, second) =
        (TestCert::new(&dir, "live"), TestCert::new(&dir, "first"), TestCert::new(&dir, "second"));
    first.install_as(&live);
    let server = tls_server(&live, |_| {}).await;
    // A new client each time: one client's session cache would resume its earlier
    // session, which shows the certificate that session was made with.
    let trusts_both = || connector(&[&first.der, &second.der], None);

    let old_tls = tls_connect(&trusts_both(), server.addr).await.unwrap();
    assert_eq!(presented(&old_tls), first.der);
    let (mut old_client, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/r", server.addr.port()), old_tls)
            .await
            .unwrap();
    server.wait_members("/r", 1).await;

    second.install_as(&live);
    assert!(server.handle.reload());
    let new_tls = tls_connect(&trusts_both(), server.addr).await.unwrap();
    assert_eq!(presented(&new_tls), second.der, "a new handshake gets the new certificate");
    let (mut new_client, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/r", server.addr.port()), new_tls)
            .await
            .unwrap();
    server.wait_members("/r", 2).await;
    send_text(&mut new_client, "after rotation").await;
    assert_eq!(recv(&mut old_client).await, Message::text("after rotation"), "the old session carries on");

    // Certificates that do not load leave the one in force.
    let expired = TestCert::expired(&dir, "expired");
    let (mismatched, other) = (TestCert::new(&dir, "mismatched"), TestCert::new(&dir, "other"));
    std::fs::copy(&other.key_file, &mismatched.key_file).unwrap();
    for broken in [&expired, &mismatched] {
        broken.install_as(&live);
        assert!(!server.handle.reload());
    }
    std::fs::write(&live.cert_file, "not a certificate").unwrap();
    assert!(!server.handle.reload());
    std::fs::remove_file(&live.key_file).unwrap();
    assert!(!server.handle.reload());
    let still = tls_connect(&trusts_both(), server.addr).await.unwrap();
    assert_eq!(presented(&still), second.der);

    let metrics = common::get(server.metrics_addr.unwrap(), "/metrics").await.1;
    assert_eq!(sample(&metrics, "wsbroker_reload_failures_total"), 4.0);
    let not_after = sample(&metrics, "wsbroker_tls_cert_not_after_seconds");
    let expected = x509_not_after(&second.der);
    assert_eq!(not_after, expected as f64, "the expiry of the certificate in force");
    server.shutdown().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// A certificate's notAfter, in Unix seconds.
fn x509_not_after(der: &[u8]) -> u64 {
    use x509_cert::der::Decode;
    x509_cert::Certificate::from_der(der)
        .unwrap()
        .tbs_certificate()
        .validity()
        .not_after
        .to_unix_duration()
        .as_secs()
}
