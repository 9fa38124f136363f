//! Evidence for the design's question "is the websocket receiver unbounded?":
//! no. While the broker's inbox is full, each reader waits in `send().await` and
//! reads nothing more from its socket, so the kernel's receive buffer fills and TCP
//! flow control stops the client. The server holds at most one message per reader
//! plus the inbox's capacity, and loses nothing.

use std::time::Duration;

use crate::common::{TestServer, recv};
use futures_util::SinkExt;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use wsbroker::broker::Hook;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_inbox_pushes_back_on_the_client_through_tcp() {
    const N: usize = 2048;
    const SIZE: usize = 64 * 1024; // N * SIZE = 128 MiB, far beyond any socket buffer.
    let server = TestServer::with(|c| {
        c.broker_capacity = 1;
        c.outbox_capacity = N;
    })
    .await;
    let mut flooder = server.join("/flood").await;
    let mut receiver = server.join("/flood").await;

    let (release_tx, release_rx) = oneshot::channel();
    assert!(server.handle.inject(Hook::Pause { release_rx }).await);

    let flood = tokio::spawn(async move {
        for i in 0..N {
            let mut payload = vec![0u8; SIZE];
            payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
            flooder.feed(Message::binary(payload)).await.unwrap();
        }
        flooder.flush().await.unwrap();
        flooder
    });
    // Unbounded buffering would let 128 MiB cross loopback in well under a second.
    // With the broker paused the server stops reading, so the flood cannot finish.
    let stalled = tokio::time::timeout(Duration::from_secs(2), async {
        while !flood.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(stalled.is_err(), "the client finished writing 128 MiB while the broker was paused");

    // Release: every message arrives, in order, and nothing was dropped.
    release_tx.send(()).unwrap();
    for i in 0..N {
        let Message::Binary(b) = recv(&mut receiver).await else { panic!("binary expected") };
        assert_eq!(b.len(), SIZE);
        assert_eq!(u64::from_be_bytes(b[..8].try_into().unwrap()), i as u64);
    }
    let _flooder = flood.await.unwrap();
    let stats = server.stats().await;
    assert_eq!(stats.counters.dropped_full, 0);
    server.shutdown().await.unwrap();
}
