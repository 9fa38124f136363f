//! With debug logging on, every line a connection logs carries its span: the
//! connection's id, the peer's address and the room, from the reader's side and from
//! the writer's. (The server attaches the span only when debug logging would use it,
//! to save its 40 bytes per task otherwise; this binary holds this one test, with a
//! debug subscriber of its own, so that the enabled path is the one under test.)

mod common;

use std::time::Duration;

use common::logs::Logs;
use common::{TestServer, recv, send_text};
use tokio_tungstenite::tungstenite::Message;
use tracing::Level;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_lines_carry_the_connection_span_from_reader_and_writer() {
    let logs = Logs::capture(Level::DEBUG);
    let server = TestServer::with(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.idle_timeout = Duration::from_millis(300);
    })
    .await;

    // A connection that talks: its messages still go round with the span attached.
    let mut talker = server.join("/logged").await;
    send_text(&mut talker, "hi").await;
    assert_eq!(recv(&mut talker).await, Message::text("hi"));
    talker.close(None).await.unwrap();
    server.wait_members("/logged", 0).await;

    // A silent one (it reads nothing, so it answers no ping): the writer closes it
    // for idleness, and logs why.
    let _silent = server.join("/logged").await;
    server.wait_members("/logged", 0).await;
    server.shutdown().await.unwrap();

    let lines = logs.lines();
    let in_span = |needle: &str| {
        lines
            .iter()
            .filter(|l| l.contains(needle))
            .any(|l| l.contains("conn{id=") && l.contains("peer=127.0.0.1:") && l.contains("room=/logged"))
    };
    assert!(
        in_span("idle timeout; closing with 1001"),
        "the writer's line lacks the span:\n{}",
        lines.join("\n")
    );
    assert!(in_span("connection closed"), "the connection's line lacks the span:\n{}", lines.join("\n"));
}
