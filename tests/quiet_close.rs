//! A client's Close and an abrupt disconnect (EOF, reset) are normal events: neither
//! may log at WARN or above. This binary holds this one test, so that every line its
//! process-wide log capture sees is this test's.

mod common;

use common::logs::Logs;
use common::{TestServer, expect_close, recv, send_text};
use futures_util::SinkExt;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::Level;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_eof_and_reset_log_nothing_at_warn_or_above() {
    let logs = Logs::capture(Level::WARN);
    let server = TestServer::start().await;
    let mut witness = server.join("/q").await;

    // A clean close.
    let mut closer = server.join("/q").await;
    closer.send(Message::Close(None)).await.unwrap();
    // A Close without a code is answered without one too; the stream then ends.
    while let Some(Ok(_)) = futures_util::StreamExt::next(&mut closer).await {}
    server.wait_members("/q", 1).await;

    // EOF: the TCP connection goes away without a Close frame.
    drop(server.join("/q").await);
    server.wait_members("/q", 1).await;

    // Reset: SO_LINGER 0 makes the close send RST.
    let socket = TcpSocket::new_v4().unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    stream.set_zero_linger().unwrap();
    let (resetter, _) = tokio_tungstenite::client_async(server.url("/q"), stream).await.unwrap();
    server.wait_members("/q", 2).await;
    drop(resetter);
    server.wait_members("/q", 1).await;

    send_text(&mut witness, "still fine").await;
    assert_eq!(recv(&mut witness).await, Message::text("still fine"));
    let shutdown = tokio::spawn(async move { expect_close(&mut witness).await });
    server.shutdown().await.unwrap();
    assert_eq!(shutdown.await.unwrap(), CloseCode::Away);
    assert_eq!(logs.lines(), Vec::<String>::new(), "a normal close logged at WARN or above");
}
