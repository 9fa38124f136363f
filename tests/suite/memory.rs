//! A client that never reads, while another publishes far more than any buffer could
//! hold: the server's peak memory stays bounded by its configured capacities. The
//! server runs as its own process so that /proc shows its memory alone.

use crate::common;

use std::process::Command;

use crate::common::recv;
use futures_util::SinkExt;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

/// A field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_reading_client_cannot_grow_server_memory_without_bound() {
    const MESSAGES: usize = 2000;
    const SIZE: usize = 60 * 1024; // 2000 x 60 KiB = 117 MiB through the room.
    // With the defaults (outbox 256 messages, 64 KiB max message) the stalled
    // member's outbox holds at most 256 x 60 KiB = 15 MiB, plus per-connection
    // buffers; the rest is dropped. The bound below leaves room for the runtime.
    const BOUND_MIB: u64 = 64;

    let (mut child, addr, _) = common::spawn_binary(&[]);
    let pid = child.id();
    let url = format!("ws://{addr}/mem");

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let (_stalled, _) = tokio_tungstenite::client_async(url.as_str(), stream).await.unwrap();
    let (mut publisher, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    // Both are members once the publisher's first message comes back to it, since
    // the stalled client joined first; wait for that echo before measuring.
    publisher.send(Message::text("ready")).await.unwrap();
    assert_eq!(recv(&mut publisher).await, Message::text("ready"));
    let baseline = status_kib(pid, "VmRSS:");

    let payload = vec![b'm'; SIZE];
    for i in 0..MESSAGES {
        let mut p = payload.clone();
        p[..8].copy_from_slice(&(i as u64).to_be_bytes());
        publisher.send(Message::binary(p)).await.unwrap();
        let Message::Binary(echo) = recv(&mut publisher).await else { panic!("binary expected") };
        assert_eq!(u64::from_be_bytes(echo[..8].try_into().unwrap()), i as u64);
    }
    let peak = status_kib(pid, "VmHWM:");
    eprintln!(
        "server RSS: baseline {baseline} KiB, peak {peak} KiB after {} MiB published",
        (MESSAGES * SIZE) >> 20
    );
    assert!(peak < BOUND_MIB * 1024, "peak RSS {peak} KiB exceeds {BOUND_MIB} MiB");

    Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
}
