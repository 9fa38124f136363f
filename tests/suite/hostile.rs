//! Hostile input. Each test asserts that the offender gets the documented outcome,
//! that the server survives, and that a bystander in the same server keeps receiving.

use crate::common;

use std::time::Duration;

use crate::common::{TestServer, expect_close, recv, send_text};
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The bystander still gets its own messages back.
async fn bystander_still_served(ws: &mut common::Client) {
    send_text(ws, "bystander").await;
    assert_eq!(recv(ws).await, Message::text("bystander"));
}

/// Writes raw bytes on a WebSocket client's socket, bypassing its framing.
async fn write_raw(ws: &mut common::Client, bytes: &[u8]) {
    let MaybeTlsStream::Plain(stream) = ws.get_mut() else { panic!("plain TCP expected") };
    stream.write_all(bytes).await.unwrap();
}

/// A masked client frame (mask key 0, so the payload is sent as is).
fn masked_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first_byte];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// Reads from a raw socket until EOF or reset; fails if the server keeps it open.
async fn expect_closed_by_server(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(common::EVENT_TIMEOUT, read_all).await.expect("server must close the connection");
    received
}

fn upgrade_request(path: &str, extra_headers: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_http_are_dropped() {
    let server = TestServer::start().await;
    let mut bystander = server.join("/b").await;

    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n").await.unwrap();
    let answer = expect_closed_by_server(&mut raw).await;
    assert!(!String::from_utf8_lossy(&answer).contains("101"), "no upgrade for garbage");

    bystander_still_served(&mut bystander).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_handshake_is_dropped() {
    let server = TestServer::start().await;
    let mut bystander = server.join("/b").await;

    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    let huge_header = format!("X-Padding: {}\r\n", "a".repeat(80 * 1024));
    // The server may close while we are still writing: that is the expected outcome.
    let _ = raw.write_all(upgrade_request("/r", &huge_header).as_bytes()).await;
    let answer = expect_closed_by_server(&mut raw).await;
    assert!(!String::from_utf8_lossy(&answer).contains(" 101 "), "no upgrade for an 80 KiB header");

    bystander_still_served(&mut bystander).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_path_gets_414() {
    let server = TestServer::with(|c| c.max_room_length = 64).await;
    let mut bystander = server.join("/b").await;

    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    let path = format!("/{}", "r".repeat(64));
    raw.write_all(upgrade_request(&path, "").as_bytes()).await.unwrap();
    let answer = String::from_utf8_lossy(&expect_closed_by_server(&mut raw).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 414"), "got: {answer}");

    // Exactly at the limit is fine.
    let _ok = server.join(&format!("/{}", "r".repeat(63))).await;
    bystander_still_served(&mut bystander).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_during_the_handshake_is_dropped_after_the_timeout() {
    let server = TestServer::with(|c| c.handshake_timeout = Duration::from_millis(300)).await;
    let mut bystander = server.join("/b").await;
    let before = server.handle.open_connections();

    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // Half a request, then nothing.
    silent.write_all(b"GET /r HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = tokio::time::Instant::now();
    expect_closed_by_server(&mut silent).await;
    assert!(started.elapsed() >= Duration::from_millis(250), "closed before the timeout");
    // The slot it held is free again.
    let deadline = tokio::time::Instant::now() + common::EVENT_TIMEOUT;
    while server.handle.open_connections() != before {
        assert!(tokio::time::Instant::now() < deadline, "admission slot not released");
        tokio::task::yield_now().await;
    }

    bystander_still_served(&mut bystander).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_message_closes_with_1009() {
    let server = TestServer::with(|c| c.max_message_size = 1024).await;
    let mut bystander = server.join("/r").await;
    let mut offender = server.join("/r").await;

    // At the limit: delivered.
    offender.send(Message::binary(vec![7u8; 1024])).await.unwrap();
    assert_eq!(recv(&mut bystander).await, Message::binary(vec![7u8; 1024]));
    // One byte over: 1009, and the bystander receives nothing of it.
    offender.send(Message::binary(vec![7u8; 1025])).await.unwrap();
    assert_eq!(expect_close(&mut offender).await, CloseCode::Size);
    server.wait_members("/r", 1).await;
    bystander_still_served(&mut bystander).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_message_over_the_limit_closes_with_1009() {
    let server = TestServer::with(|c| c.max_message_size = 1024).await;
    let mut bystander = server.join("/b").await;
    let mut offender = server.join("/r").await;

    // Three fragments of 600 bytes: each frame is within the limit, the message is not.
    let mut frames = masked_frame(0x02, &[1u8; 600]); // binary, not final
    frames.extend(masked_frame(0x00, &[1u8; 600])); // continuation, not final
    frames.extend(masked_frame(0x80, &[1u8; 600])); // continuation, final
    write_raw(&mut offender, &frames).await;
    assert_eq!(expect_close(&mut offender).await, CloseCode::Size);

    bystander_still_served(&mut bystander).await;
    server.shutdown().await.unwrap();
}

/// A member of /r writes `bytes` raw: it must get a Close with `code`, leave the
/// room, and the bystander in that room must keep being served.
async fn a_bad_frame_closes_with(bytes: &[u8], code: CloseCode) {
    let server = TestServer::start().await;
    let mut bystander = server.join("/r").await;
    let mut offender = server.join("/r").await;

    write_raw(&mut offender, bytes).await;
    assert_eq!(expect_close(&mut offender).await, code);
    server.wait_members("/r", 1).await;
    bystander_still_served(&mut bystander).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    a_bad_frame_closes_with(&masked_frame(0x81, &[0x68, 0x69, 0xff, 0xfe]), CloseCode::Invalid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_client_frame_closes_with_1002() {
    a_bad_frame_closes_with(&[0x81, 0x02, b'h', b'i'], CloseCode::Protocol).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_header_declaring_an_enormous_length_closes_with_1009() {
    // Binary, masked, 64-bit length 2^63 - 1, mask key; no payload follows.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&i64::MAX.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    a_bad_frame_closes_with(&header, CloseCode::Size).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_in_the_middle_of_a_frame_is_cleaned_up() {
    let server = TestServer::start().await;
    let mut bystander = server.join("/r").await;

    let socket = TcpSocket::new_v4().unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    stream.set_zero_linger().unwrap();
    let (mut offender, _) = tokio_tungstenite::client_async(server.url("/r"), stream).await.unwrap();
    server.wait_members("/r", 2).await;
    // A header promising 100 bytes, then 10 of them, then RST.
    let mut partial = vec![0x82, 0x80 | 100, 0, 0, 0, 0];
    partial.extend_from_slice(&[9u8; 10]);
    offender.get_mut().write_all(&partial).await.unwrap();
    drop(offender);

    server.wait_members("/r", 1).await;
    bystander_still_served(&mut bystander).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_disconnect_churn_leaves_no_connection_and_no_room_behind() {
    const TOTAL: usize = 3000;
    const CONCURRENCY: usize = 50;
    let server = TestServer::start().await;
    let mut bystander = server.join("/b").await;
    let url = server.url("");

    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        let url = url.clone();
        tasks.spawn(async move {
            for i in (worker..TOTAL).step_by(CONCURRENCY) {
                let (mut ws, _) =
                    tokio_tungstenite::connect_async(format!("{url}/churn{}", i % 7)).await.unwrap();
                match i % 3 {
                    // A clean close.
                    0 => ws.close(None).await.unwrap(),
                    // A message, then gone without a Close.
                    1 => ws.send(Message::text("x")).await.unwrap(),
                    // Gone at once.
                    _ => {}
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }

    // Only the bystander remains: one connection, one room.
    let stats = server.wait_stats(|s| s.connections() == 1, "churn to be cleaned up").await;
    assert_eq!(stats.rooms.len(), 1);
    assert_eq!(stats.members("/b"), 1);
    let deadline = tokio::time::Instant::now() + common::EVENT_TIMEOUT;
    while server.handle.open_connections() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "admitted connections: {}",
            server.handle.open_connections()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bystander_still_served(&mut bystander).await;
    server.shutdown().await.unwrap();
}

/// A client that floods pings and never reads the pongs: the pongs back up (the
/// writer's socket fills, then the small control channel between the protocol layer
/// and the writer), and the server cuts the flooder off rather than buffer them.
/// It never reads the whole flood, nothing grows without bound, the bystander is
/// served throughout, and the flooder's connection is cleaned up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_that_never_reads_the_pongs_is_cut_off() {
    // A write timeout longer than the test: it is not what ends the flooder.
    let server = TestServer::with(|c| c.write_timeout = Duration::from_secs(60)).await;
    let mut bystander = server.join("/b").await;
    let mut flooder = server.join("/p").await;

    // 1 MiB of 125-byte pings per write, up to 256 MiB: far more than the kernel's
    // buffers in both directions hold; a server that buffered the pongs would read
    // it all within seconds.
    let chunk: Vec<u8> = (0..8000).flat_map(|_| masked_frame(0x89, &[0u8; 125])).collect();
    let MaybeTlsStream::Plain(stream) = flooder.get_mut() else { panic!("plain TCP expected") };
    let mut written = 0usize;
    while written < 256 << 20 {
        match tokio::time::timeout(Duration::from_secs(2), stream.write_all(&chunk)).await {
            Ok(Ok(())) => written += chunk.len(),
            // Cut off (reset or closed), or stalled by TCP: either way, not buffered.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    assert!(written < 256 << 20, "the server read a 256 MiB ping flood whose pongs nobody read");
    bystander_still_served(&mut bystander).await;

    drop(flooder);
    server.wait_members("/p", 0).await;
    bystander_still_served(&mut bystander).await;
    server.shutdown().await.unwrap();
}
