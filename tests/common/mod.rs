//! The one test harness: starts a real server on 127.0.0.1:0 and connects real
//! tokio-tungstenite clients. Every test ends through `shutdown` or `finished`, which
//! assert that the server stops within a deadline and that nothing panicked.

#![allow(dead_code, reason = "each test binary uses a different part of the harness")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test harness: a failed expectation must fail the test, as in #[test] fns (clippy.toml)"
)]

pub mod logs;
pub mod tls;
pub mod tokens;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wsbroker::{BrokerStats, Config, Error, Server, ServerHandle};

/// How long any single expected event may take before the test fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub handle: ServerHandle,
    pub config: Config,
    /// Panics in the process when the server started: the server's test fails if
    /// there are more when it has finished.
    panics_at_start: u64,
    shutdown_tx: oneshot::Sender<()>,
    join: JoinHandle<Result<(), Error>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    pub async fn with(adjust: impl FnOnce(&mut Config)) -> Self {
        let panics_at_start = server_panics();
        let mut config = Config::ephemeral();
        adjust(&mut config);
        let server = Server::bind(config.clone()).await.expect("bind 127.0.0.1:0");
        let addr = server.local_addr().unwrap();
        let metrics_addr = server.metrics_addr();
        let handle = server.handle();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let join = tokio::spawn(server.run(async move {
            let _ = shutdown_rx.await;
        }));
        Self { addr, metrics_addr, handle, config, panics_at_start, shutdown_tx, join }
    }

    pub fn url(&self, room: &str) -> String {
        format!("ws://{}{}", self.addr, room)
    }

    pub async fn connect(&self, room: &str) -> Client {
        let (ws, _) = tokio::time::timeout(EVENT_TIMEOUT, tokio_tungstenite::connect_async(self.url(room)))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        ws
    }

    /// Connects and waits until the broker has registered the new member, so that
    /// messages published afterwards are guaranteed to reach it.
    pub async fn join(&self, path: &str) -> Client {
        // The server names the room by the path alone, without the query string.
        let room = path.split('?').next().unwrap_or(path);
        let before = self.stats().await.members(room);
        let ws = self.connect(path).await;
        self.wait_members(room, before + 1).await;
        ws
    }

    pub async fn stats(&self) -> BrokerStats {
        self.handle.stats().await.expect("broker is running")
    }

    /// Waits until `room` has exactly `n` members, as seen by the broker.
    pub async fn wait_members(&self, room: &str, n: usize) {
        self.wait_stats(|s| s.members(room) == n, &format!("{room} to have {n} members")).await;
    }

    /// Waits until the broker's inbox holds exactly `depth` commands. Read from the
    /// server handle, not through the broker, so it works while the broker is paused.
    pub async fn wait_inbox_depth(&self, depth: usize, what: &str) {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        while self.handle.inbox_depth() != depth {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Polls the broker's stats until `pred` holds, failing after EVENT_TIMEOUT.
    pub async fn wait_stats(&self, pred: impl Fn(&BrokerStats) -> bool, what: &str) -> BrokerStats {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let stats = self.stats().await;
            if pred(&stats) {
                return stats;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}; stats: {stats:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Triggers shutdown and asserts the server finishes within its shutdown timeout
    /// (plus a margin for a loaded machine) and that nothing panicked.
    pub async fn shutdown(self) -> Result<(), Error> {
        let _ = self.shutdown_tx.send(());
        finish(self.join, self.config.shutdown_timeout, self.panics_at_start).await
    }

    /// Waits for the server to end on its own (no trigger), e.g. after the broker died.
    pub async fn finished(self) -> Result<(), Error> {
        let _keep_trigger = self.shutdown_tx;
        finish(self.join, self.config.shutdown_timeout, self.panics_at_start).await
    }
}

/// Panics outside the test threads: in the servers' tasks, which run on the runtime's
/// worker threads. A test thread's own failed assertion is not counted, so that one
/// failing test does not fail every test that runs beside it in this one process
/// (libtest names a test's thread after the test, `module::name`). The audit counts
/// every panic of the whole run besides.
pub fn server_panics() -> u64 {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    INSTALL.call_once(|| {
        // The server's own hook (logs and counts for the metrics), then ours around it.
        wsbroker::panic_hook::install();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if !thread.name().is_some_and(|name| name.contains("::")) {
                COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            previous(info);
        }));
    });
    COUNT.load(std::sync::atomic::Ordering::SeqCst)
}

async fn finish(
    join: JoinHandle<Result<(), Error>>,
    timeout: Duration,
    panics_at_start: u64,
) -> Result<(), Error> {
    let result = tokio::time::timeout(timeout + Duration::from_secs(2), join)
        .await
        .expect("server did not finish within its shutdown timeout")
        .expect("server task panicked");
    assert_eq!(server_panics(), panics_at_start, "a panic happened in a server task while this server ran");
    result
}

/// The next data message (Text or Binary), skipping control frames.
pub async fn recv<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Message {
    loop {
        let msg = tokio::time::timeout(EVENT_TIMEOUT, ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("stream ended while waiting for a message")
            .expect("websocket error while waiting for a message");
        match msg {
            Message::Text(_) | Message::Binary(_) => return msg,
            Message::Close(frame) => panic!("expected a data message, got Close {frame:?}"),
            _ => {}
        }
    }
}

/// Waits for the server's Close frame and returns its code; data frames before it
/// are skipped.
pub async fn expect_close<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> CloseCode {
    loop {
        let item = tokio::time::timeout(EVENT_TIMEOUT, ws.next()).await.expect("timed out waiting for Close");
        match item {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code,
            Some(Ok(Message::Close(None))) => panic!("Close frame without a code"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("error instead of Close: {e}"),
            None => panic!("stream ended without a Close frame"),
        }
    }
}

pub async fn send_text<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// Asserts that nothing was delivered to `ws` before now, without waiting on a timer:
/// `ws` publishes a marker to its own room and the marker's echo must be the next
/// data message. The broker handles its inbox in order and outboxes are FIFO, so any
/// earlier delivery would have arrived before the marker. Needs echo on.
pub async fn assert_nothing_delivered<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) {
    let marker = "marker-7f3a";
    send_text(ws, marker).await;
    assert_eq!(recv(ws).await, Message::text(marker), "a message arrived before the marker");
}

/// Starts the real `wsbroker` binary on an ephemeral port with JSON logs. Returns the
/// process, the bound address (from its "listening" log line) and the log lines up
/// to that one. Its stderr keeps being drained so it never blocks on a full pipe.
pub fn spawn_binary(extra: &[&str]) -> (std::process::Child, String, Vec<serde_json::Value>) {
    let (child, addr, _, startup) = spawn_binary_until(extra, &[], false);
    (child, addr, startup)
}

/// Waits (polling, at most `within`) for a spawned server to exit: its exit code.
pub fn wait_exit(child: &mut std::process::Child, within: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(std::time::Instant::now() < deadline, "server did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`spawn_binary`] with extra environment variables.
pub fn spawn_binary_with_env(extra: &[&str], env: &[(&str, &str)]) -> (std::process::Child, String) {
    let (child, addr, _, _) = spawn_binary_until(extra, env, false);
    (child, addr)
}

/// [`spawn_binary`] with `--metrics-listen 127.0.0.1:0`: the child, its WebSocket
/// address, and its metrics endpoint's address.
pub fn spawn_binary_with_metrics(extra: &[&str]) -> (std::process::Child, String, std::net::SocketAddr) {
    let extra: Vec<&str> =
        ["--metrics-listen", "127.0.0.1:0"].into_iter().chain(extra.iter().copied()).collect();
    let (child, addr, metrics, _) = spawn_binary_until(&extra, &[], true);
    (child, addr, metrics.unwrap().parse().unwrap())
}

/// Starts the binary and reads its log until it listens (and, with `metrics`, until
/// its metrics endpoint does too).
fn spawn_binary_until(
    extra: &[&str],
    env: &[(&str, &str)],
    metrics: bool,
) -> (std::process::Child, String, Option<String>, Vec<serde_json::Value>) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsbroker"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(extra)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut startup = Vec::new();
    let (mut addr, mut metrics_addr) = (None, None);
    while addr.is_none() || (metrics && metrics_addr.is_none()) {
        let line = lines.next().expect("server exited before listening").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).expect("every log line is JSON");
        let field = |name: &str| v.get(name).and_then(serde_json::Value::as_str).map(str::to_owned);
        match v.get("message").and_then(serde_json::Value::as_str) {
            Some("wsbroker listening") => addr = field("listen"),
            Some("metrics endpoint listening") => metrics_addr = field("metrics_listen"),
            _ => startup.push(v),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, addr.unwrap(), metrics_addr, startup)
}

/// The value of one sample line of rendered metrics, e.g.
/// `wsbroker_dropped_total{reason="outbox_full"}`; fails when the series is absent,
/// so an assertion on it cannot pass vacuously.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// An HTTP response, as a test reads it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a connection of its own (`Connection: close`).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, stream.read_to_end(&mut response)).await.unwrap().unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpResponse { status, headers, body: body.to_owned() }
}

/// `GET path`: the status and the body.
pub async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let response = http(addr, "GET", path, &[], b"").await;
    (response.status, response.body)
}

/// A handshake the server refuses: its HTTP response.
pub async fn refused(
    request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
) -> tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>> {
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => *response,
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, the handshake succeeded"),
    }
}

/// A handshake request for `url` with `Authorization: Bearer token`.
pub fn with_bearer(url: &str, token: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}
