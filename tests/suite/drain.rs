//! Lame-duck drain (`--drain-duration`) through the binary and real signals: the
//! first SIGTERM turns /healthz to 503 and closes the listener at once, and the
//! connections are closed with 1012 spread across the window; a second SIGTERM
//! closes the rest at once; the process exits 0.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::common::{self, Client, get, recv, sample};

/// Connects `n` clients spread over `rooms` rooms, and returns them once every one
/// is a member: each receives the echo of its own marker, which its reader sent to
/// the broker after its join (one reader's commands reach the broker in order).
/// Markers from the others in the room are skipped.
async fn members(addr: &str, n: usize, rooms: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let url = format!("ws://{addr}/drain{}", i % rooms);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let marker = Message::text(format!("ready{i}"));
        ws.send(marker.clone()).await.unwrap();
        while recv(&mut ws).await != marker {}
        clients.push(ws);
    }
    clients
}

/// Each client's Close code and when it arrived (time since `since`), read
/// concurrently so that every client answers its Close at once.
fn watch_closes(clients: Vec<Client>, since: Instant) -> Vec<tokio::task::JoinHandle<(CloseCode, Duration)>> {
    clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                loop {
                    let item = tokio::time::timeout(Duration::from_secs(30), ws.next())
                        .await
                        .expect("no Close within 30 s");
                    match item {
                        Some(Ok(Message::Close(Some(frame)))) => return (frame.code, since.elapsed()),
                        Some(Ok(_)) => {}
                        other => panic!("expected a Close frame, got {other:?}"),
                    }
                }
            })
        })
        .collect()
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([name, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

async fn exit_code(mut child: Child, within: Duration) -> Option<i32> {
    tokio::task::spawn_blocking(move || common::wait_exit(&mut child, within)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_closes_every_client_with_1012_spread_over_the_window() {
    const CLIENTS: usize = 200;
    let window = Duration::from_secs(2);
    let (child, addr, metrics) = common::spawn_binary_with_metrics(&["--drain-duration", "2s"]);
    assert_eq!(get(metrics, "/healthz").await.0, 200);
    let (_, before) = get(metrics, "/metrics").await;
    assert_eq!(sample(&before, "wsbroker_draining"), 0.0);
    let clients = members(&addr, CLIENTS, 7).await;

    let signalled = Instant::now();
    let closes = watch_closes(clients, signalled);
    signal(&child, "-TERM");
    // 503 from the signal on: the first answer after it may only race the signal
    // itself, so poll briefly for the first 503, then every answer must be 503.
    let mut first_503 = None;
    while first_503.is_none() && signalled.elapsed() < Duration::from_secs(1) {
        if get(metrics, "/healthz").await.0 == 503 {
            first_503 = Some(signalled.elapsed());
        }
    }
    let first_503 = first_503.expect("/healthz did not turn 503 within 1 s of SIGTERM");
    // The listener is closed: a new client is refused.
    assert!(tokio_tungstenite::connect_async(format!("ws://{addr}/late")).await.is_err());
    // Mid-window: still 503, draining, some but not all closed on schedule.
    tokio::time::sleep_until((signalled + window / 2).into()).await;
    assert_eq!(get(metrics, "/healthz").await.0, 503);
    let (_, mid) = get(metrics, "/metrics").await;
    assert_eq!(sample(&mid, "wsbroker_draining"), 1.0);
    let shed = sample(&mid, "wsbroker_drain_shed_total");
    assert!((20.0..180.0).contains(&shed), "{shed} of {CLIENTS} shed half-way through the window");
    assert!(sample(&mid, "wsbroker_closes_total{code=\"1012\"}") >= 1.0);

    let mut times = Vec::new();
    for close in closes {
        let (code, at) = close.await.unwrap();
        assert_eq!(code, CloseCode::Restart, "every client is told 1012");
        times.push(at);
    }
    times.sort();
    let in_first_tenth = times.iter().filter(|t| **t < window / 10).count();
    let in_second_half = times.iter().filter(|t| **t >= window / 2).count();
    eprintln!(
        "first 503 after {first_503:?}; closes from {:?} to {:?}; {in_first_tenth} in the first tenth, \
         {in_second_half} in the second half",
        times[0],
        times[CLIENTS - 1]
    );
    const QUARTER: usize = CLIENTS >> 2;
    assert!(in_first_tenth <= QUARTER, "{in_first_tenth} of {CLIENTS} closed in the first tenth");
    assert!(in_second_half >= QUARTER, "only {in_second_half} of {CLIENTS} closed in the second half");
    assert!(times[CLIENTS - 1] >= window * 3 / 4, "the last close came at {:?}", times[CLIENTS - 1]);
    assert_eq!(exit_code(child, Duration::from_secs(10)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_closes_the_rest_at_once() {
    const CLIENTS: usize = 40;
    let (child, addr, metrics) = common::spawn_binary_with_metrics(&["--drain-duration", "60s"]);
    let clients = members(&addr, CLIENTS, 3).await;
    let signalled = Instant::now();
    let closes = watch_closes(clients, signalled);
    signal(&child, "-TERM");
    // A 60 s window sheds one client every 1.5 s: wait until the first is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = get(metrics, "/metrics").await;
        if sample(&text, "wsbroker_drain_shed_total") >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing shed 10 s into the drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = signalled.elapsed();
    signal(&child, "-TERM");
    for close in closes {
        let (code, at) = close.await.unwrap();
        assert_eq!(code, CloseCode::Restart);
        assert!(at < second + Duration::from_secs(5), "a close came {at:?} after the first signal");
    }
    assert_eq!(exit_code(child, Duration::from_secs(10)).await, Some(0));
}
