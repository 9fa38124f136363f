//! The publish API, `POST /rooms/{room}` on the internal listener: text and binary
//! messages to every member, nested room names, every refusal's status, and tokens
//! when authentication is on. (Across nodes: `redis.rs`.)

use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use wsbroker::broker::Hook;

use crate::common::tokens::{claims, hs256, key};
use crate::common::{self, TestServer, http, recv, sample};

async fn api_server(adjust: impl FnOnce(&mut wsbroker::Config)) -> TestServer {
    TestServer::with(|c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        adjust(c);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_reaches_every_member_as_text_or_binary() {
    let server = api_server(|_| {}).await;
    let api = server.metrics_addr.unwrap();
    let (mut a, mut b) = (server.join("/lobby").await, server.join("/lobby").await);
    let mut nested = server.join("/game/42").await;

    let text =
        http(api, "POST", "/rooms/lobby", &[("content-type", "text/plain; charset=utf-8")], b"hello").await;
    assert_eq!((text.status, text.body.as_str()), (202, "accepted\n"));
    let binary =
        http(api, "POST", "/rooms/lobby", &[("content-type", "application/octet-stream")], &[0, 159, 255])
            .await;
    assert_eq!(binary.status, 202);
    for member in [&mut a, &mut b] {
        assert_eq!(recv(member).await, Message::text("hello"));
        assert_eq!(recv(member).await, Message::binary(vec![0u8, 159, 255]));
    }
    // No Content-Type: binary. `/rooms/game/42` is the room `/game/42`.
    assert_eq!(http(api, "POST", "/rooms/game/42", &[], b"move").await.status, 202);
    assert_eq!(recv(&mut nested).await, Message::binary(b"move".to_vec()));

    let metrics = common::get(api, "/metrics").await.1;
    assert_eq!(sample(&metrics, "wsbroker_messages_received_total{source=\"api\"}"), 3.0);
    assert_eq!(sample(&metrics, "wsbroker_messages_received_total{source=\"client\"}"), 0.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversize_requests_get_their_status() {
    let server = api_server(|c| {
        c.max_message_size = 1024;
        c.max_room_length = 16;
    })
    .await;
    let api = server.metrics_addr.unwrap();
    let mut member = server.join("/lobby").await;
    assert_eq!(http(api, "POST", "/rooms/lobby", &[], &[1u8; 1025]).await.status, 413);
    assert_eq!(http(api, "POST", "/rooms/lobby", &[], &[1u8; 1024]).await.status, 202, "at the limit");
    assert_eq!(recv(&mut member).await, Message::binary(vec![1u8; 1024]));
    assert_eq!(http(api, "POST", "/rooms/", &[], b"x").await.status, 404, "no room named");
    assert_eq!(http(api, "POST", "/nowhere", &[], b"x").await.status, 404);
    assert_eq!(http(api, "POST", "/rooms/a-very-long-room-name", &[], b"x").await.status, 414);
    let get = http(api, "GET", "/rooms/lobby", &[], b"").await;
    assert_eq!((get.status, get.header("allow")), (405, Some("POST")));
    let not_utf8 = http(api, "POST", "/rooms/lobby", &[("content-type", "text/plain")], &[0xff, 0xfe]).await;
    assert_eq!(not_utf8.status, 400);
    // None of the refused requests reached the member.
    assert_eq!(
        http(api, "POST", "/rooms/lobby", &[("content-type", "text/plain")], b"last").await.status,
        202
    );
    assert_eq!(recv(&mut member).await, Message::text("last"));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_stopped_broker_gets_503() {
    let server = api_server(|c| c.broker_capacity = 1).await;
    let api = server.metrics_addr.unwrap();
    let mut member = server.join("/lobby").await;
    let (release_tx, release_rx) = oneshot::channel();
    assert!(server.handle.inject(Hook::Pause { release_rx }).await);
    // `inject` returns once the hook is in the inbox; until the broker has taken it,
    // it fills the one slot itself (and the first POST got 503 about once in twenty).
    server.wait_inbox_depth(0, "the broker to take the pause").await;
    // The paused broker's one-slot inbox takes one message; the next finds it full.
    assert_eq!(http(api, "POST", "/rooms/lobby", &[], b"queued").await.status, 202);
    server.wait_inbox_depth(1, "the queued message").await;
    assert_eq!(http(api, "POST", "/rooms/lobby", &[], b"refused").await.status, 503);
    release_tx.send(()).unwrap();
    assert_eq!(recv(&mut member).await, Message::binary(b"queued".to_vec()));

    let (closed_tx, closed_rx) = oneshot::channel();
    let (_release_tx, release_rx) = oneshot::channel();
    assert!(server.handle.inject(Hook::CloseInbox { closed_tx, release_rx }).await);
    closed_rx.await.unwrap();
    assert_eq!(http(api, "POST", "/rooms/lobby", &[], b"too late").await.status, 503);
    drop(_release_tx);
    assert!(server.finished().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_the_token_must_cover_publishing_to_the_room() {
    let server = api_server(|c| c.auth_keys = vec![key("hmac.key")]).await;
    let api = server.metrics_addr.unwrap();
    let member_token = hs256(&claims("member", 600, &["/lobby"], &[]));
    let (mut member, _) =
        tokio_tungstenite::connect_async(common::with_bearer(&server.url("/lobby"), &member_token))
            .await
            .unwrap();
    server.wait_members("/lobby", 1).await;

    let none = http(api, "POST", "/rooms/lobby", &[], b"x").await;
    assert_eq!((none.status, none.header("www-authenticate")), (401, Some("Bearer realm=\"wsbroker\"")));
    let bad = http(api, "POST", "/rooms/lobby", &[("authorization", "Bearer nope")], b"x").await;
    assert_eq!(bad.status, 401);
    let reader_only = format!("Bearer {member_token}");
    assert_eq!(http(api, "POST", "/rooms/lobby", &[("authorization", &reader_only)], b"x").await.status, 403);
    let backend = format!("Bearer {}", hs256(&claims("backend", 600, &[], &["/lobby"])));
    let headers = [("authorization", backend.as_str()), ("content-type", "text/plain")];
    assert_eq!(http(api, "POST", "/rooms/lobby", &headers, b"ok").await.status, 202);
    assert_eq!(recv(&mut member).await, Message::text("ok"));
    // The query parameter works here too.
    let in_query = format!("/rooms/lobby?token={}", hs256(&claims("backend", 600, &[], &["/lobby"])));
    assert_eq!(http(api, "POST", &in_query, &[], b"q").await.status, 202);
    assert_eq!(recv(&mut member).await, Message::binary(b"q".to_vec()));
    server.shutdown().await.unwrap();
}
