//! The delivery contract (README, "Delivery contract") through real clients: the
//! `wsbroker.v1` subprotocol, the welcome and the numbering, a visible gap where a
//! slow member lost messages, resumes from history (recovered or reset), hostile
//! `since` values, plain members beside v1 ones, and history's memory bound.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{self, Client, EVENT_TIMEOUT, TestServer, get, recv, sample};

const WELCOME: u8 = 2;
const RESET: u8 = 3;

/// One `wsbroker.v1` frame, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1 {
    pub kind: u8,
    pub epoch: u64,
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// Decodes a `wsbroker.v1` frame: always binary, 17 bytes of header.
pub fn decode(message: Message) -> V1 {
    let Message::Binary(bytes) = message else { panic!("a v1 frame is binary, got {message:?}") };
    assert!(bytes.len() >= 17, "a v1 frame has 17 bytes of header: {bytes:?}");
    V1 {
        kind: bytes[0],
        epoch: u64::from_be_bytes(bytes[1..9].try_into().unwrap()),
        seq: u64::from_be_bytes(bytes[9..17].try_into().unwrap()),
        payload: bytes[17..].to_vec(),
    }
}

/// The next v1 frame.
pub async fn next_v1<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
) -> V1 {
    decode(recv(ws).await)
}

/// A handshake request offering `protocols`.
fn offering(url: &str, protocols: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", protocols.parse().unwrap());
    request
}

/// Connects offering `wsbroker.v1`, checks the reply names it, and returns the
/// client with its first frame (the welcome or a reset, which also proves it is a
/// member: both are sent in the operation that registers it).
pub async fn join_v1(url: &str) -> (Client, V1) {
    let (mut ws, response) =
        tokio::time::timeout(EVENT_TIMEOUT, tokio_tungstenite::connect_async(offering(url, "wsbroker.v1")))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(
        response.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap()),
        Some("wsbroker.v1")
    );
    let first = next_v1(&mut ws).await;
    (ws, first)
}

/// The server's reply to a WebSocket upgrade offering `protocols`, read raw: a
/// client library would refuse a reply that selects none of them.
async fn raw_upgrade(addr: std::net::SocketAddr, path: &str, protocols: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {protocols}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    while !reply.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(EVENT_TIMEOUT, stream.read(&mut byte)).await.unwrap().unwrap();
        assert_eq!(n, 1, "the server closed before the end of its reply");
        reply.push(byte[0]);
    }
    String::from_utf8(reply).unwrap()
}

/// A v1 member of `room` that does not read yet, with a small receive buffer, so
/// that its outbox fills soon; returned once it is a member.
async fn slow_v1(
    server: &TestServer,
    room: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (ws, _) =
        tokio_tungstenite::client_async(offering(&server.url(room), "wsbroker.v1"), stream).await.unwrap();
    server.wait_members(room, 1).await;
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_member_is_welcomed_then_gets_every_message_numbered_in_order() {
    let server = TestServer::with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let mut plain = server.join("/d").await;
    for i in 1..=3 {
        common::send_text(&mut plain, &format!("before {i}")).await;
        recv(&mut plain).await;
    }
    let (mut v1, welcome) = join_v1(&server.url("/d")).await;
    assert_eq!((welcome.kind, welcome.seq, welcome.payload.len()), (WELCOME, 3, 0));
    let epoch = welcome.epoch;

    // Text and binary from a plain member; the v1 member gets them numbered.
    common::send_text(&mut plain, "a").await;
    plain.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(next_v1(&mut v1).await, V1 { kind: 0, epoch, seq: 4, payload: b"a".to_vec() });
    assert_eq!(next_v1(&mut v1).await, V1 { kind: 1, epoch, seq: 5, payload: vec![1, 2, 3] });
    // The plain member sees plain frames.
    assert_eq!(recv(&mut plain).await, Message::text("a"));
    assert_eq!(recv(&mut plain).await, Message::binary(vec![1u8, 2, 3]));

    // What a v1 member sends is published as it is: plain to plain members.
    common::send_text(&mut v1, "from v1").await;
    assert_eq!(recv(&mut plain).await, Message::text("from v1"));
    assert_eq!(next_v1(&mut v1).await, V1 { kind: 0, epoch, seq: 6, payload: b"from v1".to_vec() });
    // So is what the publish API publishes.
    let api = server.metrics_addr.unwrap();
    assert_eq!(
        common::http(api, "POST", "/rooms/d", &[("content-type", "text/plain")], b"api").await.status,
        202
    );
    assert_eq!(next_v1(&mut v1).await, V1 { kind: 0, epoch, seq: 7, payload: b"api".to_vec() });
    assert_eq!(recv(&mut plain).await, Message::text("api"));

    // A second v1 member: the same epoch, the last seq.
    let (mut late, welcome) = join_v1(&server.url("/d?x=1")).await;
    assert_eq!((welcome.kind, welcome.epoch, welcome.seq), (WELCOME, epoch, 7));
    common::send_text(&mut plain, "both").await;
    assert_eq!(next_v1(&mut late).await.seq, 8);
    assert_eq!(next_v1(&mut v1).await.seq, 8);

    // Offering another protocol too still selects v1; offering only others, none.
    let (mut listed, response) =
        tokio_tungstenite::connect_async(offering(&server.url("/d"), "chat, wsbroker.v1")).await.unwrap();
    assert_eq!(response.headers().get("sec-websocket-protocol").unwrap(), "wsbroker.v1");
    assert_eq!(next_v1(&mut listed).await.kind, WELCOME);
    let reply = raw_upgrade(server.addr, "/e", "chat").await;
    assert!(reply.starts_with("HTTP/1.1 101"), "{reply}");
    assert!(!reply.to_ascii_lowercase().contains("sec-websocket-protocol"), "{reply}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_created_again_gets_a_new_epoch_and_counts_from_one() {
    let server = TestServer::start().await;
    let (mut first, welcome) = join_v1(&server.url("/again")).await;
    assert_eq!((welcome.kind, welcome.seq), (WELCOME, 0));
    common::send_text(&mut first, "one").await;
    assert_eq!(next_v1(&mut first).await.seq, 1);
    first.close(None).await.unwrap();
    while let Some(Ok(_)) = first.next().await {}
    server.wait_members("/again", 0).await;
    let (mut second, again) = join_v1(&server.url("/again")).await;
    assert_eq!((again.kind, again.seq), (WELCOME, 0));
    assert_ne!(again.epoch, welcome.epoch);
    common::send_text(&mut second, "one again").await;
    assert_eq!(next_v1(&mut second).await.seq, 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_v1_member_sees_a_jump_in_seq_that_the_drop_counter_agrees_with() {
    const N: u64 = 300;
    let server = TestServer::with(|c| c.outbox_capacity = 4).await;
    let mut stalled = slow_v1(&server, "/gap").await;
    let mut publisher = server.join("/gap").await;
    let payload = "p".repeat(16 * 1024);
    for _ in 0..N {
        publisher.send(Message::text(payload.clone())).await.unwrap();
        recv(&mut publisher).await;
    }
    let dropped: u64 = server.stats().await.room("/gap").unwrap().members.iter().map(|m| m.dropped).sum();
    assert!(dropped > 0, "the stalled member must have lost messages");

    // It reads now: every seq it gets is above the one before, and the jumps add up
    // to what the broker dropped for it. The publisher sends "end" until one arrives.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let welcome = next_v1(&mut stalled).await;
        assert_eq!((welcome.kind, welcome.seq), (WELCOME, 0));
        let (mut last, mut jumped) = (0u64, 0u64);
        loop {
            let frame = next_v1(&mut stalled).await;
            assert!(frame.seq > last, "seq {} after {last}", frame.seq);
            jumped += frame.seq - last - 1;
            last = frame.seq;
            if frame.payload == b"end" {
                seen_tx.send(()).unwrap();
                // Still connected, so that its member's count can be read.
                return (jumped, last, stalled);
            }
        }
    });
    let mut ends = 0;
    loop {
        common::send_text(&mut publisher, "end").await;
        recv(&mut publisher).await;
        ends += 1;
        if tokio::time::timeout(Duration::from_millis(50), seen_rx.recv()).await.is_ok() {
            break;
        }
        assert!(ends < 200, "no \"end\" ever reached the stalled member");
    }
    let (jumped, last, _stalled) = reader.await.unwrap();
    let dropped_now: u64 = server.stats().await.room("/gap").unwrap().members.iter().map(|m| m.dropped).sum();
    assert!(last > N, "the first \"end\" has a seq after the flood");
    assert_eq!(jumped, dropped_now, "the jumps in seq are the messages dropped for the member");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_v1_member_disconnected_with_1008_resumes_from_its_last_seq() {
    let server = TestServer::with(|c| {
        c.outbox_capacity = 64;
        c.history_size = 1000;
        c.slow_consumer = wsbroker::config::SlowConsumer::Disconnect;
    })
    .await;
    let mut slow = slow_v1(&server, "/sd").await;
    let mut publisher = server.join("/sd").await;
    let payload = "s".repeat(16 * 1024);
    // Publish until the broker disconnects the member that does not read.
    let mut published = 0u64;
    while server.stats().await.counters.slow_disconnects == 0 {
        publisher.send(Message::text(payload.clone())).await.unwrap();
        recv(&mut publisher).await;
        published += 1;
        assert!(published < 10_000, "the slow member was never disconnected");
    }
    // It reads what reached it, up to the Close: 1008, and its last seq.
    let welcome = next_v1(&mut slow).await;
    assert_eq!((welcome.kind, welcome.seq), (WELCOME, 0));
    let mut last = 0;
    loop {
        match tokio::time::timeout(EVENT_TIMEOUT, slow.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(
                    frame.code,
                    tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Policy
                );
                break;
            }
            Some(Ok(message @ Message::Binary(_))) => {
                let frame = decode(message);
                assert_eq!(frame.seq, last + 1, "nothing is lost before the disconnect");
                last = frame.seq;
            }
            other => panic!("expected messages then Close 1008, got {other:?}"),
        }
    }
    assert!(last < published, "the message that found its outbox full was not delivered");
    // Resuming from there gives exactly what it missed, when that fits a new outbox
    // with the welcome (what the kicked writer still had queued is lost with the
    // connection, so how much it missed depends on how far its writer got).
    let missed = published - last;
    let (mut back, first) = join_v1(&server.url(&format!("/sd?since={}:{last}", welcome.epoch))).await;
    eprintln!(
        "missed {missed} of {published}: {}",
        if first.kind == WELCOME { "recovered" } else { "reset" }
    );
    if missed < 64 {
        assert_eq!((first.kind, first.seq), (WELCOME, published));
        for seq in last + 1..=published {
            assert_eq!(next_v1(&mut back).await.seq, seq);
        }
    } else {
        assert_eq!((first.kind, first.seq), (RESET, published));
    }
    server.shutdown().await.unwrap();
}

/// Scrapes `/metrics` until `done` holds for it (failing after the event timeout),
/// and returns that scrape.
async fn scrape_until(metrics: std::net::SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let (_, body) = get(metrics, "/metrics").await;
        if done(&body) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "the metrics never showed it:\n{body}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Publishes `m{i}` for i = 1, 2, … from a plain member of `room` (which it creates,
/// so message i gets seq i), one every `pace` at most, until `stop` fires, each
/// after the previous one's echo. The pace keeps what a reconnecting client misses
/// within its outbox, whatever the machine's speed.
fn keep_publishing(
    server: &TestServer,
    room: &str,
    pace: Duration,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<u64>) {
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
    let url = server.url(room);
    let handle = tokio::spawn(async move {
        let (mut publisher, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut ticks = tokio::time::interval(pace);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut i = 0u64;
        loop {
            ticks.tick().await;
            i += 1;
            common::send_text(&mut publisher, &format!("m{i}")).await;
            assert_eq!(recv(&mut publisher).await, Message::text(format!("m{i}")));
            if stop_rx.try_recv().is_ok() {
                return i;
            }
        }
    });
    (stop_tx, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_replays_exactly_the_missed_messages_while_publishing_goes_on() {
    let server = TestServer::with(|c| c.history_size = 10_000).await;
    let (publishing, publisher) = keep_publishing(&server, "/live", Duration::from_millis(1));
    server.wait_stats(|s| s.members("/live") == 1, "the publisher to join").await;
    let (mut ws, welcome) = join_v1(&server.url("/live")).await;
    let epoch = welcome.epoch;
    // Read a while, then vanish (no close handshake) mid-stream.
    let mut last = welcome.seq;
    for _ in 0..50 {
        let frame = next_v1(&mut ws).await;
        assert_eq!((frame.epoch, frame.seq), (epoch, last + 1));
        assert_eq!(frame.payload, format!("m{}", frame.seq).into_bytes());
        last = frame.seq;
    }
    drop(ws);
    // Publishing goes on while it is away: wait until it has visibly moved on.
    let gone_at = last;
    server.wait_stats(|s| s.members("/live") == 1, "the dropped client to leave").await;
    server.wait_stats(|s| s.counters.published >= gone_at + 20, "publishing to go on after the drop").await;

    let (mut ws, welcome) = join_v1(&server.url(&format!("/live?since={epoch}:{last}"))).await;
    assert_eq!((welcome.kind, welcome.epoch), (WELCOME, epoch), "a recovered resume is welcomed");
    assert!(welcome.seq >= gone_at + 20);
    // Every message after `last`: the replay, then live ones, with no seam.
    for _ in 0..(welcome.seq - last + 50) {
        let frame = next_v1(&mut ws).await;
        assert_eq!((frame.kind, frame.epoch, frame.seq), (0, epoch, last + 1), "no gap, no duplicate");
        assert_eq!(frame.payload, format!("m{}", frame.seq).into_bytes());
        last = frame.seq;
    }
    publishing.send(()).unwrap();
    publisher.await.unwrap();
    let counters = server.stats().await.counters;
    assert_eq!((counters.resumes_recovered, counters.resumes_reset), (1, 0));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_that_cannot_be_honoured_get_a_reset_and_then_live_messages() {
    let server = TestServer::with(|c| {
        c.history_size = 5;
        c.outbox_capacity = 16;
    })
    .await;
    let mut anchor = server.join("/r").await;
    let (mut v1, welcome) = join_v1(&server.url("/r")).await;
    let epoch = welcome.epoch;
    for i in 1..=20 {
        common::send_text(&mut anchor, &format!("m{i}")).await;
        recv(&mut anchor).await;
        assert_eq!(next_v1(&mut v1).await.seq, i);
    }
    // Seq 15 is the last one evicted: resuming after 14 needs it.
    let cases = [
        format!("since={epoch}:14"),                   // evicted from history
        format!("since={}:19", epoch.wrapping_add(1)), // another epoch
        format!("since={epoch}:999"),                  // the future
        "since=abc".to_owned(),                        // not numbers
        "since=1:2:3".to_owned(),                      // too many parts
        "since=18446744073709551616:1".to_owned(),     // overflows u64
        format!("since={epoch}:-1"),                   // negative
        "since=".to_owned(),                           // empty
    ];
    for (n, case) in cases.iter().enumerate() {
        let (mut ws, first) = join_v1(&server.url(&format!("/r?{case}"))).await;
        let published = 20 + n as u64;
        assert_eq!((first.kind, first.epoch, first.seq), (RESET, epoch, published), "{case}");
        // Live messages follow the reset.
        common::send_text(&mut anchor, "live").await;
        recv(&mut anchor).await;
        assert_eq!(next_v1(&mut ws).await.seq, published + 1, "{case}");
        drop(ws);
    }
    // Within history: recovered.
    let last = 20 + cases.len() as u64;
    let (mut ws, first) = join_v1(&server.url(&format!("/r?since={epoch}:{}", last - 3))).await;
    assert_eq!((first.kind, first.seq), (WELCOME, last));
    for seq in last - 2..=last {
        assert_eq!(next_v1(&mut ws).await.seq, seq);
    }
    // Nothing missed at all: recovered with nothing to replay.
    let (_ws, first) = join_v1(&server.url(&format!("/r?since={epoch}:{last}"))).await;
    assert_eq!((first.kind, first.seq), (WELCOME, last));
    let counters = server.stats().await.counters;
    assert_eq!((counters.resumes_recovered, counters.resumes_reset), (2, cases.len() as u64));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_missed_than_the_outbox_holds_or_older_than_the_ttl_gets_a_reset() {
    let server = TestServer::with(|c| {
        c.history_size = 100;
        c.outbox_capacity = 8;
        c.history_ttl = Some(Duration::from_secs(2));
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let mut anchor = server.join("/big").await;
    let (_v1, welcome) = join_v1(&server.url("/big")).await;
    let epoch = welcome.epoch;
    for i in 1..=20 {
        common::send_text(&mut anchor, &format!("m{i}")).await;
        recv(&mut anchor).await;
    }
    // 8 slots: the welcome and 7 messages fit, 8 do not.
    let (_ws, first) = join_v1(&server.url(&format!("/big?since={epoch}:13"))).await;
    assert_eq!((first.kind, first.seq), (WELCOME, 20));
    let (_ws, first) = join_v1(&server.url(&format!("/big?since={epoch}:12"))).await;
    assert_eq!((first.kind, first.seq), (RESET, 20));
    // Past the TTL the same resume is refused: the time passing is the feature
    // under test here, so this sleep is the test's input, not a synchronisation.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (_ws, first) = join_v1(&server.url(&format!("/big?since={epoch}:19"))).await;
    assert_eq!((first.kind, first.seq), (RESET, 20));
    // The broker copies its counters for the endpoint after each operation, which a
    // client may see the effects of first: wait for the scrape to show them.
    let metrics = server.metrics_addr.unwrap();
    let body = scrape_until(metrics, |m| sample(m, "wsbroker_resumes_total{result=\"reset\"}") == 2.0).await;
    assert_eq!(sample(&body, "wsbroker_resumes_total{result=\"recovered\"}"), 1.0);
    // 20 messages are kept (until a later one passes their TTL), each charged.
    assert!(sample(&body, "wsbroker_history_bytes") > 20.0 * 17.0);
    // A later message evicts the expired ones: only it is charged then.
    common::send_text(&mut anchor, "fresh").await;
    recv(&mut anchor).await;
    let body = scrape_until(metrics, |m| sample(m, "wsbroker_history_bytes") < 300.0).await;
    let one = sample(&body, "wsbroker_history_bytes");
    assert!(one > 0.0, "one message charged {one} bytes");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_memory_stays_under_its_bound_across_many_rooms() {
    const ROOMS: usize = 64;
    const PER_ROOM: usize = 40;
    const SIZE: usize = 24 * 1024;
    const BOUND: usize = 4 << 20;
    let (child, addr, metrics) = common::spawn_binary_with_metrics(&[
        "--history-size",
        "1000",
        "--history-memory",
        "4MiB",
        "--max-message-size",
        "64KiB",
    ]);
    let rss = || crate::memory::status_kib(child.id(), "VmRSS:");
    let mut members = Vec::new();
    for room in 0..ROOMS {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/h{room}")).await.unwrap();
        common::send_text(&mut ws, "join").await;
        recv(&mut ws).await;
        members.push(ws);
    }
    let baseline = rss();
    let payload = vec![b'h'; SIZE];
    for _ in 0..PER_ROOM {
        for ws in &mut members {
            ws.send(Message::binary(payload.clone())).await.unwrap();
            recv(ws).await;
        }
    }
    let published_mib = (ROOMS * PER_ROOM * SIZE) >> 20;
    let grown_kib = rss().saturating_sub(baseline);
    let (_, body) = get(metrics, "/metrics").await;
    let charged = sample(&body, "wsbroker_history_bytes");
    eprintln!("history: {published_mib} MiB published, {charged} bytes charged, RSS grew {grown_kib} KiB");
    assert!(charged <= BOUND as f64, "{charged} bytes charged, over the 4 MiB bound");
    assert!(charged >= (BOUND >> 1) as f64, "{charged} bytes charged: history was hardly used");
    assert!(grown_kib < 16 * 1024, "RSS grew {grown_kib} KiB with {published_mib} MiB published");
    drop(members);
    crate::memory::stop(child).await;
}

/// The README's JavaScript client (the block after its marker), run under Node.js
/// against a live server while a publisher keeps publishing: it reconnects after its
/// 10th message and must then see every message exactly once, in order, with no gap
/// and no reset. Skipped, with a note, where `node` is not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_javascript_client_resumes_without_a_gap() {
    const MESSAGES: usize = 60;
    let Some(major) = node_major() else {
        eprintln!("node is not installed: the README's JavaScript client was not run");
        return;
    };
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after_marker = readme.split_once("<!-- wsbroker.v1 client").expect("the README marks its client").1;
    let client = after_marker.split_once("```js\n").unwrap().1.split_once("```").unwrap().0;
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("js-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("client.mjs"), client).unwrap();
    std::fs::write(
        dir.join("harness.mjs"),
        r#"import { subscribe } from "./client.mjs";
const [url, total] = [process.argv[2], Number(process.argv[3])];
let count = 0;
const sub = subscribe(url, {
  onMessage: (message, seq) => {
    console.log(JSON.stringify({ message, seq: String(seq) }));
    count += 1;
    if (count === 10) sub.reconnect();
    if (count === total) sub.close();
  },
  onGap: (n) => console.log(JSON.stringify({ gap: String(n) })),
  onReset: () => console.log(JSON.stringify({ reset: true })),
});
"#,
    )
    .unwrap();

    let server = TestServer::with(|c| c.history_size = 10_000).await;
    let (publishing, publisher) = keep_publishing(&server, "/js", Duration::from_millis(5));
    server.wait_stats(|s| s.members("/js") == 1, "the publisher to join").await;
    let mut node = tokio::process::Command::new("node");
    if major < 22 {
        node.arg("--experimental-websocket");
    }
    let mut node = node
        .arg(dir.join("harness.mjs"))
        .arg(server.url("/js"))
        .arg(MESSAGES.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = node.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut seqs = Vec::new();
    while seqs.len() < MESSAGES {
        let line = tokio::time::timeout(EVENT_TIMEOUT, lines.next_line())
            .await
            .expect("the JavaScript client went quiet")
            .unwrap()
            .expect("the JavaScript client ended early");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        let seq: u64 =
            event["seq"].as_str().unwrap_or_else(|| panic!("not a message: {line}")).parse().unwrap();
        assert_eq!(event["message"], format!("m{seq}"), "{line}");
        seqs.push(seq);
    }
    let status = tokio::time::timeout(EVENT_TIMEOUT, node.wait()).await.unwrap().unwrap();
    assert!(status.success(), "node: {status}");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "not one unbroken run: {seqs:?}");
    publishing.send(()).unwrap();
    publisher.await.unwrap();
    let counters = server.stats().await.counters;
    assert_eq!(
        (counters.resumes_recovered, counters.resumes_reset),
        (1, 0),
        "it reconnected once, recovered"
    );
    server.shutdown().await.unwrap();
}

/// The major version of the `node` on the PATH, if there is one.
fn node_major() -> Option<u32> {
    let out = std::process::Command::new("node").arg("--version").output().ok()?;
    let version = String::from_utf8(out.stdout).ok()?;
    version.trim().trim_start_matches('v').split('.').next()?.parse().ok()
}
