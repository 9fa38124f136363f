//! A client's Close and an abrupt disconnect (EOF, reset) are normal events: neither
//! may log at WARN or above. A counting tracing layer observes every event in this
//! test binary, which holds this one test so that the count is its own.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{TestServer, expect_close, recv, send_text};
use futures_util::SinkExt;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

struct CountLoud(Arc<AtomicUsize>);

impl<S: Subscriber> Layer<S> for CountLoud {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() <= Level::WARN {
            eprintln!("loud event: {event:?}");
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_eof_and_reset_log_nothing_at_warn_or_above() {
    let loud = Arc::new(AtomicUsize::new(0));
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(CountLoud(Arc::clone(&loud))),
    )
    .unwrap();
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
    assert_eq!(loud.load(Ordering::SeqCst), 0, "a normal close logged at WARN or above");
}
