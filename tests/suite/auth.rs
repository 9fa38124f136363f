//! Token authentication through real clients: tokens in the header and in the query,
//! every 401 cause, 403 for a room not covered, 1008 on publish without permission,
//! 4001 at expiry, `kid` selection, key rotation by reload, and hostile tokens, each
//! with a bystander that keeps receiving.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::common::tokens::{base64_url, claims, hs256, key, now, sign};
use crate::common::{
    self, TestServer, assert_nothing_delivered, expect_close, recv, refused, sample, send_text, with_bearer,
};

/// A server that checks tokens with every test key, and a metrics endpoint.
async fn auth_server() -> TestServer {
    TestServer::with(|c| {
        c.auth_keys = ["hmac.key", "rsa.pem", "ec256.pem", "ed25519.pem"].iter().map(|k| key(k)).collect();
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

/// Joins `room` with `token` in the Authorization header, waiting until the broker
/// has the new member.
async fn join_with(server: &TestServer, room: &str, token: &str) -> common::Client {
    let before = server.stats().await.members(room);
    let (ws, _) = tokio_tungstenite::connect_async(with_bearer(&server.url(room), token)).await.unwrap();
    server.wait_members(room, before + 1).await;
    ws
}

/// Joins `room` with `token`, then leaves, waiting until the broker has seen both:
/// a later count of members cannot be thrown off by a departure still under way.
async fn join_and_leave(server: &TestServer, room: &str, token: &str) {
    let before = server.stats().await.members(room);
    let ws = join_with(server, room, token).await;
    drop(ws);
    server.wait_members(room, before).await;
}

/// A member of `/lobby` that may publish there: it sees its own messages, so it can
/// show that nothing else arrived (`assert_nothing_delivered`).
async fn bystander(server: &TestServer) -> common::Client {
    join_with(server, "/lobby", &hs256(&claims("bystander", 600, &["/lobby"], &["/lobby"]))).await
}

/// The status and `WWW-Authenticate` of a refused handshake.
async fn refusal(
    request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
) -> (u16, Option<String>) {
    let response = refused(request).await;
    let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), challenge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_header_or_the_query_lets_its_holder_in() {
    let server = auth_server().await;
    let token = hs256(&claims("alice", 600, &["/lobby"], &["/lobby"]));
    let mut by_header = join_with(&server, "/lobby", &token).await;
    let before = server.stats().await.members("/lobby");
    let (mut by_query, _) =
        tokio_tungstenite::connect_async(format!("{}?token={token}", server.url("/lobby"))).await.unwrap();
    server.wait_members("/lobby", before + 1).await;
    send_text(&mut by_query, "hello").await;
    assert_eq!(recv(&mut by_header).await, Message::text("hello"));
    assert_eq!(recv(&mut by_query).await, Message::text("hello"));
    // Every kind of key lets its own tokens in.
    for (alg, private) in [
        (Algorithm::RS256, "rsa-private.pem"),
        (Algorithm::PS256, "rsa-private.pem"),
        (Algorithm::ES256, "ec256-private.pem"),
        (Algorithm::EdDSA, "ed25519-private.pem"),
    ] {
        let token = sign(alg, private, &claims("bob", 600, &["/lobby"], &[]), None);
        join_and_leave(&server, "/lobby", &token).await;
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_token_gets_401_with_a_bearer_challenge() {
    let server = TestServer::with(|c| {
        c.auth_keys = vec![key("hmac.key"), key("rsa.pem")];
        c.auth_issuer = Some("https://auth.example".into());
        c.auth_audience = Some("wsbroker".into());
        c.auth_leeway = Duration::ZERO;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let good = json!({"exp": now() + 600, "iss": "https://auth.example", "aud": "wsbroker", "rooms": {"sub": ["/lobby"], "pub": ["/lobby"]}});
    let mut bystander = join_with(&server, "/lobby", &hs256(&good)).await;
    let with = |changes: serde_json::Value| {
        let mut claims = good.clone();
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let public_pem = std::fs::read(key("rsa.pem")).unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("malformed", "not-a-token".to_owned()),
        ("garbage base64", "@@@@.####.$$$$".to_owned()),
        ("bad signature", sign(Algorithm::HS256, "rsa.pem", &good, None)),
        ("expired", hs256(&with(json!({"exp": now() - 5})))),
        ("expired long ago", hs256(&with(json!({"exp": 1})))),
        ("negative expiry", hs256(&with(json!({"exp": -1_000_000})))),
        ("no expiry", hs256(&json!({"iss": "https://auth.example", "aud": "wsbroker"}))),
        ("not yet valid", hs256(&with(json!({"nbf": now() + 300})))),
        ("wrong issuer", hs256(&with(json!({"iss": "https://evil.example"})))),
        ("wrong audience", hs256(&with(json!({"aud": "someone-else"})))),
        ("16 KiB", hs256(&with(json!({"padding": "x".repeat(16 << 10)})))),
        (
            "HS256 signed with the RSA public key",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &good,
                &EncodingKey::from_secret(&public_pem).unwrap(),
            )
            .unwrap(),
        ),
        ("alg none", format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&good.to_string()))),
        (
            "deeply nested",
            format!("{}.{}.c2ln", b64(r#"{"alg":"HS256"}"#), b64(&("[".repeat(5000) + &"]".repeat(5000)))),
        ),
    ];
    let (status, challenge) = refusal(server.url("/lobby")).await;
    assert_eq!((status, challenge.as_deref()), (401, Some("Bearer realm=\"wsbroker\"")), "no token at all");
    for (what, token) in &cases {
        let (status, challenge) = refusal(with_bearer(&server.url("/lobby"), token)).await;
        assert_eq!(status, 401, "{what}");
        assert!(challenge.is_some_and(|c| c.starts_with("Bearer")), "{what}: WWW-Authenticate: Bearer");
    }
    // A far-future expiry is fine.
    join_and_leave(&server, "/lobby", &hs256(&with(json!({"exp": 99_999_999_999_i64})))).await;
    assert_nothing_delivered(&mut bystander).await;
    let metrics = common::get(server.metrics_addr.unwrap(), "/metrics").await.1;
    let unauthorized = sample(&metrics, "wsbroker_handshake_rejections_total{reason=\"unauthorized\"}");
    assert_eq!(unauthorized, (cases.len() + 1) as f64);
    server.shutdown().await.unwrap();
}

/// base64url without padding, of text.
fn b64(text: &str) -> String {
    base64_url(text.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_for_other_rooms_gets_403_and_patterns_match_the_raw_path() {
    let server = auth_server().await;
    let mut bystander = bystander(&server).await;
    let token = hs256(&claims("carol", 600, &["/game/*"], &["/game/*"]));
    for room in ["/lobby", "/game", "/a%2Fb", "/gamex/1"] {
        assert_eq!(refused(with_bearer(&server.url(room), &token)).await.status(), 403, "{room}");
    }
    // The room is the path as sent: `/game/../lobby` is a room of that name, which
    // `/game/*` covers, and it is not `/lobby`.
    let mut odd = join_with(&server, "/game/../lobby", &token).await;
    send_text(&mut odd, "in the odd room").await;
    assert_eq!(recv(&mut odd).await, Message::text("in the odd room"));
    assert_nothing_delivered(&mut bystander).await;
    let metrics = common::get(server.metrics_addr.unwrap(), "/metrics").await.1;
    assert_eq!(sample(&metrics, "wsbroker_handshake_rejections_total{reason=\"forbidden\"}"), 4.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_without_permission_closes_with_1008_and_delivers_nothing() {
    let server = auth_server().await;
    let mut bystander = bystander(&server).await;
    let mut reader = join_with(&server, "/lobby", &hs256(&claims("dave", 600, &["/lobby"], &[]))).await;
    // The reader receives what others publish...
    send_text(&mut bystander, "news").await;
    assert_eq!(recv(&mut bystander).await, Message::text("news"));
    assert_eq!(recv(&mut reader).await, Message::text("news"));
    // ...but may not publish.
    reader.send(Message::text("not allowed")).await.unwrap();
    let item = tokio::time::timeout(common::EVENT_TIMEOUT, futures_util::StreamExt::next(&mut reader)).await;
    let Ok(Some(Ok(Message::Close(Some(close))))) = item else {
        panic!("expected a Close with a code, got {item:?}")
    };
    assert_eq!((close.code, close.reason.as_str()), (CloseCode::Policy, "publish not permitted"));
    assert_nothing_delivered(&mut bystander).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_while_connected_closes_with_4001() {
    let server = TestServer::with(|c| {
        c.auth_keys = vec![key("hmac.key")];
        c.auth_leeway = Duration::ZERO;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let mut bystander = bystander(&server).await;
    let mut short = join_with(&server, "/lobby", &hs256(&claims("erin", 2, &["/lobby"], &["/lobby"]))).await;
    let started = tokio::time::Instant::now();
    assert_eq!(expect_close(&mut short).await, CloseCode::from(4001));
    assert!(started.elapsed() >= Duration::from_millis(500), "closed at expiry, not at once");
    server.wait_members("/lobby", 1).await;
    assert_nothing_delivered(&mut bystander).await;
    let metrics = common::get(server.metrics_addr.unwrap(), "/metrics").await.1;
    assert_eq!(sample(&metrics, "wsbroker_closes_total{code=\"4001\"}"), 1.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kid_selects_its_key() {
    let server = auth_server().await;
    let room = claims("frank", 600, &["/lobby"], &[]);
    join_and_leave(&server, "/lobby", &sign(Algorithm::ES256, "ec256-private.pem", &room, Some("ec256")))
        .await;
    // Signed by the EC key, but naming the RSA key: refused.
    let misnamed = sign(Algorithm::ES256, "ec256-private.pem", &room, Some("rsa"));
    assert_eq!(refused(with_bearer(&server.url("/lobby"), &misnamed)).await.status(), 401);
    let unknown = sign(Algorithm::HS256, "hmac.key", &room, Some("retired-2019"));
    assert_eq!(refused(with_bearer(&server.url("/lobby"), &unknown)).await.status(), 401);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rotates_the_keys_and_a_broken_key_file_keeps_the_old_ones() {
    let dir = std::env::temp_dir().join(format!("wsbroker-rotation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file: PathBuf = dir.join("current.key");
    let (old_secret, new_secret) = ("o".repeat(40), "n".repeat(40));
    std::fs::write(&file, &old_secret).unwrap();
    let with_secret = |secret: &str| {
        let claims = claims("gina", 600, &["/lobby"], &["/lobby"]);
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let server = TestServer::with(|c| {
        c.auth_keys = vec![file.clone()];
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let mut established = join_with(&server, "/lobby", &with_secret(&old_secret)).await;

    std::fs::write(&file, &new_secret).unwrap();
    assert!(server.handle.reload());
    let mut newcomer = join_with(&server, "/lobby", &with_secret(&new_secret)).await;
    assert_eq!(refused(with_bearer(&server.url("/lobby"), &with_secret(&old_secret))).await.status(), 401);
    // The connection made with the old key is untouched by the reload.
    send_text(&mut newcomer, "after rotation").await;
    assert_eq!(recv(&mut established).await, Message::text("after rotation"));

    // A key file that does not load leaves the keys in force.
    std::fs::write(&file, "short").unwrap();
    assert!(!server.handle.reload());
    join_and_leave(&server, "/lobby", &with_secret(&new_secret)).await;
    std::fs::remove_file(&file).unwrap();
    assert!(!server.handle.reload());
    join_and_leave(&server, "/lobby", &with_secret(&new_secret)).await;
    let metrics = common::get(server.metrics_addr.unwrap(), "/metrics").await.1;
    assert_eq!(sample(&metrics, "wsbroker_reload_failures_total"), 2.0);
    server.shutdown().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_token_is_refused_before_it_is_read_whole() {
    let server = auth_server().await;
    let mut bystander = bystander(&server).await;
    let huge = "A".repeat(1 << 20);
    // In the header: over tungstenite's 64 KiB request limit, so the connection is
    // dropped after at most that much has been read; never 1 MiB buffered.
    let result = tokio_tungstenite::connect_async(with_bearer(&server.url("/lobby"), &huge)).await;
    assert!(result.is_err(), "a 1 MiB token must not be accepted");
    let in_query = tokio_tungstenite::connect_async(format!("{}?token={huge}", server.url("/lobby"))).await;
    assert!(in_query.is_err());
    assert_nothing_delivered(&mut bystander).await;
    server.shutdown().await.unwrap();
}
