//! The token never reaches a log line: with debug logging on (every connection's
//! open and close, its span, every handshake refusal), tokens accepted and refused,
//! in the header and in the query, leave no trace in the logs, nor in the metrics.
//! This binary holds this one test, so that every line its process-wide log capture
//! sees is this test's.

mod common;

use common::logs::Logs;
use common::tokens::{claims, hs256, key};
use common::{TestServer, recv, refused, send_text, with_bearer};
use tokio_tungstenite::tungstenite::Message;
use tracing::Level;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_logs_or_the_metrics() {
    let logs = Logs::capture(Level::DEBUG);
    let server = TestServer::with(|c| {
        c.auth_keys = vec![key("hmac.key")];
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    // A distinctive token: its claims carry a marker, so its every part is unique.
    let marked = |rooms: &[&str]| {
        let mut claims = claims("zelda", 600, rooms, rooms);
        claims["marker"] = "Sp3cificMarkerValue".into();
        hs256(&claims)
    };
    let accepted = marked(&["/lobby"]);
    let forbidden = marked(&["/elsewhere"]);
    let (mut by_header, _) =
        tokio_tungstenite::connect_async(with_bearer(&server.url("/lobby"), &accepted)).await.unwrap();
    let (mut by_query, _) =
        tokio_tungstenite::connect_async(format!("{}?token={accepted}", server.url("/lobby"))).await.unwrap();
    server.wait_members("/lobby", 2).await;
    send_text(&mut by_header, "hi").await;
    assert_eq!(recv(&mut by_query).await, Message::text("hi"));
    assert_eq!(refused(with_bearer(&server.url("/lobby"), &forbidden)).await.status(), 403);
    let tampered = format!("{accepted}x");
    assert_eq!(refused(with_bearer(&server.url("/lobby"), &tampered)).await.status(), 401);
    assert_eq!(refused(format!("{}?token={tampered}", server.url("/lobby"))).await.status(), 401);
    let metrics = common::get(server.metrics_addr.unwrap(), "/metrics").await.1;
    drop((by_header, by_query));
    server.shutdown().await.unwrap();

    let lines = logs.lines();
    assert!(
        lines.iter().any(|l| l.contains("connection open")),
        "debug logging was on:\n{}",
        lines.join("\n")
    );
    assert!(lines.iter().any(|l| l.contains("token refused")), "the refusals were logged");
    assert!(lines.iter().any(|l| l.contains("user=zelda")), "the token's sub is the connection's user");
    for token in [&accepted, &forbidden, &tampered] {
        for part in token.split('.') {
            for line in &lines {
                assert!(!line.contains(part), "a token part reached the log: {line}");
            }
            assert!(!metrics.contains(part), "a token part reached the metrics");
        }
    }
}
