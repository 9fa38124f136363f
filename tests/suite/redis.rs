//! Rooms spanning two wsbroker nodes over a real Redis: cross-node delivery exactly
//! once and in order, unsubscribe when a room empties (no leaks under churn), Redis
//! killed and restarted with recovery, and sharded pub/sub.
//!
//! Each test starts its own `redis-server` on a free loopback port and stops it by
//! PID. Without `redis-server` on PATH the tests fail (they never skip): run
//! `cargo xtask test`, which installs it.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{TestServer, recv, sample, send_text};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// A `redis-server` of this test's own, killed when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(port)
    }

    fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); `cargo xtask test` installs it and runs these tests")
            });
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis::Client::open(server.url()).and_then(|c| c.get_connection()).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server by PID (SIGKILL: an abrupt failure, as in a crash).
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn query(&self, cmd: &mut redis::Cmd) -> redis::Value {
        let mut con = redis::Client::open(self.url()).unwrap().get_connection().unwrap();
        cmd.query(&mut con).unwrap()
    }

    /// Subscribers of `channel` (`PUBSUB NUMSUB`, or `SHARDNUMSUB` when sharded).
    fn numsub(&self, channel: &str, sharded: bool) -> i64 {
        let sub = if sharded { "SHARDNUMSUB" } else { "NUMSUB" };
        match self.query(redis::cmd("PUBSUB").arg(sub).arg(channel)) {
            redis::Value::Array(v) => match v.get(1) {
                Some(redis::Value::Int(n)) => *n,
                other => panic!("unexpected NUMSUB reply {other:?}"),
            },
            other => panic!("unexpected NUMSUB reply {other:?}"),
        }
    }

    /// Channels with subscribers matching `pattern`.
    fn channels(&self, pattern: &str) -> usize {
        match self.query(redis::cmd("PUBSUB").arg("CHANNELS").arg(pattern)) {
            redis::Value::Array(v) => v.len(),
            other => panic!("unexpected CHANNELS reply {other:?}"),
        }
    }

    async fn wait_numsub(&self, channel: &str, n: i64, sharded: bool) {
        let deadline = Instant::now() + common::EVENT_TIMEOUT;
        loop {
            let got = self.numsub(channel, sharded);
            if got == n {
                return;
            }
            assert!(Instant::now() < deadline, "{channel} has {got} subscribers, expected {n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.kill().is_ok() {
            let _ = self.child.wait();
        }
    }
}

async fn node(redis: &RedisServer, sharded: bool) -> TestServer {
    let url = redis.url();
    TestServer::with(move |c| {
        c.redis_url = Some(url);
        c.redis_sharded = sharded;
    })
    .await
}

/// Reads text messages until `last`, inclusive.
async fn read_until(ws: &mut common::Client, last: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let Message::Text(t) = recv(ws).await else { panic!("text expected") };
        got.push(t.as_str().to_owned());
        if t.as_str() == last {
            return got;
        }
    }
}

async fn cross_node_exactly_once(sharded: bool) {
    const N: usize = 100;
    let redis = RedisServer::start();
    let (node1, node2) = (node(&redis, sharded).await, node(&redis, sharded).await);
    let mut a = node1.join("/room").await;
    let mut b = node2.join("/room").await;
    redis.wait_numsub("wsbroker:/room", 2, sharded).await;

    for i in 0..N {
        a.feed(Message::text(i.to_string())).await.unwrap();
    }
    a.feed(Message::text("end-a")).await.unwrap();
    a.flush().await.unwrap();
    let mut expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    expected.push("end-a".into());
    // b (the other node) gets everything once, in order; then answers.
    assert_eq!(read_until(&mut b, "end-a").await, expected);
    send_text(&mut b, "end-b").await;
    assert_eq!(read_until(&mut b, "end-b").await, vec!["end-b".to_owned()]);
    // a got its own messages once (locally, not again through Redis), then b's.
    expected.push("end-b".into());
    assert_eq!(read_until(&mut a, "end-b").await, expected);

    node1.shutdown().await.unwrap();
    node2.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_span_nodes_exactly_once_and_in_order() {
    cross_node_exactly_once(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_pubsub_spans_nodes_too() {
    cross_node_exactly_once(true).await;
}

/// A message published through one node's API reaches the room's members on both
/// nodes, each exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_api_reaches_members_on_every_node_once() {
    let redis = RedisServer::start();
    let url = redis.url();
    let node1 = TestServer::with(|c| {
        c.redis_url = Some(url.clone());
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let node2 = node(&redis, false).await;
    let mut a = node1.join("/news").await;
    let mut b = node2.join("/news").await;
    redis.wait_numsub("wsbroker:/news", 2, false).await;
    let api = node1.metrics_addr.unwrap();
    for i in 0..20 {
        let body = i.to_string();
        let posted =
            common::http(api, "POST", "/rooms/news", &[("content-type", "text/plain")], body.as_bytes())
                .await;
        assert_eq!(posted.status, 202);
    }
    send_text(&mut a, "end").await;
    let mut expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    expected.push("end".into());
    assert_eq!(read_until(&mut a, "end").await, expected);
    assert_eq!(read_until(&mut b, "end").await, expected);
    node1.shutdown().await.unwrap();
    node2.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_unsubscribes_when_its_room_empties_and_churn_leaks_nothing() {
    let redis = RedisServer::start();
    let (node1, node2) = (node(&redis, false).await, node(&redis, false).await);
    let a = node1.join("/x").await;
    let b = node2.join("/x").await;
    redis.wait_numsub("wsbroker:/x", 2, false).await;
    drop(b);
    redis.wait_numsub("wsbroker:/x", 1, false).await;
    drop(a);
    redis.wait_numsub("wsbroker:/x", 0, false).await;

    // Churn across both nodes and several rooms; at the end nothing is subscribed.
    let mut tasks = tokio::task::JoinSet::new();
    for (n, url) in [(0usize, node1.url("")), (1, node2.url(""))] {
        tasks.spawn(async move {
            for i in 0..150usize {
                let (mut ws, _) =
                    tokio_tungstenite::connect_async(format!("{url}/churn{}", (i + n) % 5)).await.unwrap();
                if i % 2 == 0 {
                    ws.send(Message::text("x")).await.unwrap();
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    node1.wait_stats(|s| s.rooms.is_empty(), "node1 to have no rooms").await;
    node2.wait_stats(|s| s.rooms.is_empty(), "node2 to have no rooms").await;
    let deadline = Instant::now() + common::EVENT_TIMEOUT;
    while redis.channels("wsbroker:*") != 0 {
        assert!(Instant::now() < deadline, "subscriptions leaked: {}", redis.channels("wsbroker:*"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node1.shutdown().await.unwrap();
    node2.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_test_is_survived() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let (node1, node2) = (node(&redis, false).await, node(&redis, false).await);
    let mut a1 = node1.join("/r").await;
    let mut a2 = node1.join("/r").await;
    let mut b = node2.join("/r").await;
    redis.wait_numsub("wsbroker:/r", 2, false).await;
    assert!(!node1.handle.degraded());

    redis.kill();
    let deadline = Instant::now() + common::EVENT_TIMEOUT;
    while !(node1.handle.degraded() && node2.handle.degraded()) {
        assert!(Instant::now() < deadline, "nodes never noticed Redis was gone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sample(&node1.handle.render_metrics(), "wsbroker_redis_up"), 0.0);
    assert!(node1.handle.healthy(), "a degraded node still serves its local members");

    // Local members keep talking to each other.
    send_text(&mut a1, "during the outage").await;
    assert_eq!(recv(&mut a1).await, Message::text("during the outage"));
    assert_eq!(recv(&mut a2).await, Message::text("during the outage"));

    // Redis comes back on the same port: both nodes reconnect and resubscribe.
    let redis = RedisServer::start_on(port);
    redis.wait_numsub("wsbroker:/r", 2, false).await;
    let deadline = Instant::now() + common::EVENT_TIMEOUT;
    while node1.handle.degraded() || node2.handle.degraded() {
        assert!(Instant::now() < deadline, "nodes never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_text(&mut a1, "after recovery").await;
    // At most once: b never gets the outage message; the next thing it sees is this.
    assert_eq!(recv(&mut b).await, Message::text("after recovery"));
    for node in [&node1, &node2] {
        let metrics = node.handle.render_metrics();
        assert_eq!(sample(&metrics, "wsbroker_redis_up"), 1.0, "{metrics}");
        assert!(
            sample(&metrics, "wsbroker_redis_reconnects_total") >= 1.0,
            "a reconnect is counted:\n{metrics}"
        );
    }
    node1.shutdown().await.unwrap();
    node2.shutdown().await.unwrap();
}

/// The delivery contract holds per node (README, "Delivery contract"): each node
/// numbers what it delivers, messages from the other node included; a resume on the
/// node that numbered the messages recovers them, one on another node gets a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_contract_holds_per_node() {
    use crate::delivery::{decode, join_v1, next_v1};
    let redis = RedisServer::start();
    let with_history = |url: String| {
        move |c: &mut wsbroker::Config| {
            c.redis_url = Some(url);
            c.history_size = 100;
        }
    };
    let node1 = TestServer::with(with_history(redis.url())).await;
    let node2 = TestServer::with(with_history(redis.url())).await;
    // A plain member on each node keeps the room alive there.
    let mut anchor1 = node1.join("/v").await;
    let mut anchor2 = node2.join("/v").await;
    let (mut v1, welcome) = join_v1(&node1.url("/v")).await;
    redis.wait_numsub("wsbroker:/v", 2, false).await;
    // Each message is read by both anchors, so each node has handled it before the
    // next step.
    let mut publish = async |text: &str| {
        common::send_text(&mut anchor2, text).await;
        assert_eq!(recv(&mut anchor2).await, Message::text(text));
        assert_eq!(recv(&mut anchor1).await, Message::text(text));
    };
    for i in 1..=3u64 {
        publish(&format!("from node 2: {i}")).await;
        let frame = next_v1(&mut v1).await;
        assert_eq!((frame.epoch, frame.seq), (welcome.epoch, i), "numbered by the node that delivers it");
        assert_eq!(frame.payload, format!("from node 2: {i}").into_bytes());
    }
    drop(v1);
    node1.wait_members("/v", 1).await;
    publish("missed").await;
    let since = format!("/v?since={}:3", welcome.epoch);
    let (mut elsewhere, first) = join_v1(&node2.url(&since)).await;
    assert_eq!(first.kind, 3, "another node's room has another epoch: a reset");
    assert_ne!(first.epoch, welcome.epoch);
    let (mut home, first) = join_v1(&node1.url(&since)).await;
    assert_eq!((first.kind, first.seq), (2, 4), "the same node recovers");
    assert_eq!(decode(recv(&mut home).await).payload, b"missed".to_vec());
    publish("both").await;
    assert_eq!(next_v1(&mut elsewhere).await.payload, b"both".to_vec());
    assert_eq!(next_v1(&mut home).await.payload, b"both".to_vec());
    for node in [node1, node2] {
        node.shutdown().await.unwrap();
    }
}
