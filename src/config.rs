//! Command-line and environment configuration, validated before anything starts.
//!
//! Every value that could reach a panicking API (`mpsc::channel(0)`, a capacity above
//! tokio's semaphore limit, `interval(Duration::ZERO)`, `Instant + Duration` overflow,
//! tungstenite's write-buffer assertion) is bounded here, so a bad value is a clear
//! error and exit status 2, never a panic later. Single values are checked by their
//! parsers (`config/parse.rs`); relations between values by [`Config::validate`].
//!
//! Longer than the project's usual 400 lines because every flag is declared here
//! once, with its environment variable, default and help (which `--help` and the
//! README's flag table follow), beside the relations checked between them.

mod parse;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use self::parse::{
    parse_buffer_size, parse_capacity, parse_duration, parse_history_memory, parse_history_size,
    parse_leeway, parse_max_connections, parse_message_size,
};

/// Largest accepted channel capacity. tokio's `mpsc::channel` panics above
/// `usize::MAX >> 3`; a million queued messages per channel is already far beyond
/// any useful buffering, so anything larger is rejected as a configuration error.
pub const MAX_CAPACITY: usize = 1 << 20;

/// Largest accepted `--max-connections`. tokio's `Semaphore::new` panics above
/// `usize::MAX >> 3`; ten million sockets is beyond any one process's reach anyway.
pub const MAX_CONNECTIONS: usize = 10_000_000;

/// Longest accepted duration for any timeout. Keeping durations at or below a day
/// means `Instant::now() + d` cannot overflow on any platform tokio supports.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Largest accepted message size (1 GiB). Far above any sane setting; it only keeps
/// the buffer arithmetic derived from it far away from overflow.
pub const MAX_MESSAGE_SIZE: usize = 1 << 30;

/// Largest accepted tungstenite buffer (16 MiB).
pub const MAX_BUFFER_SIZE: usize = 16 << 20;
/// Largest `--history-size`.
pub const MAX_HISTORY_SIZE: usize = 1 << 20;
/// Largest `--history-memory` (64 GiB).
pub const MAX_HISTORY_MEMORY: usize = 1 << 36;

/// The largest WebSocket frame header (2 + 8 length bytes + 4 mask bytes).
const MAX_FRAME_HEADER: usize = 14;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What the broker does when a member's outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SlowConsumer {
    /// Drop the message for that member only, and count it (docs/design.md).
    Drop,
    /// Close that member's connection with 1008 "slow consumer" (NATS, Redis,
    /// Centrifugo behaviour).
    Disconnect,
}

/// wsbroker: a WebSocket room broker. The request path names the room; every text or
/// binary message a client sends is delivered to every member of its room.
#[derive(Debug, Clone, Parser)]
#[command(name = "wsbroker", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the binary can do besides serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Prints an HS256 token for development, signed with an HMAC secret file of the
    /// kind `--auth-key` reads.
    Token(crate::auth::mint::TokenArgs),
}

/// The server's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on for WebSocket connections.
    #[arg(long, env = "WSBROKER_LISTEN", value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Capacity of the one channel from all readers to the broker. When it is full,
    /// readers wait, and TCP flow control pushes back on the sending clients.
    #[arg(long, env = "WSBROKER_BROKER_CAPACITY", value_name = "N", default_value_t = 1024,
          value_parser = parse_capacity)]
    pub broker_capacity: usize,

    /// Capacity of each connection's outbox (broker to writer), in messages. When it
    /// is full, see --slow-consumer.
    #[arg(long, env = "WSBROKER_OUTBOX_CAPACITY", value_name = "N", default_value_t = 256,
          value_parser = parse_capacity)]
    pub outbox_capacity: usize,

    /// Do not deliver a message back to the connection that sent it.
    #[arg(long, env = "WSBROKER_NO_ECHO")]
    pub no_echo: bool,

    /// What to do when a member's outbox is full: drop the message for that member
    /// (counted), or disconnect it with Close 1008.
    #[arg(long, env = "WSBROKER_SLOW_CONSUMER", value_enum, default_value_t = SlowConsumer::Drop)]
    pub slow_consumer: SlowConsumer,

    /// Keep each room's last N messages, so that a `wsbroker.v1` client reconnecting
    /// with `?since=EPOCH:SEQ` gets what it missed (README, "Delivery contract").
    /// 0 keeps none.
    #[arg(long, env = "WSBROKER_HISTORY_SIZE", value_name = "N", default_value_t = 0,
          value_parser = parse_history_size)]
    pub history_size: usize,

    /// With --history-size: messages older than this are never replayed, and are
    /// dropped. Without it, age does not matter.
    #[arg(long, env = "WSBROKER_HISTORY_TTL", value_name = "DURATION", value_parser = parse_duration)]
    pub history_ttl: Option<Duration>,

    /// With --history-size: the most all rooms' history may take together (each
    /// message's bytes plus about 100 bytes of bookkeeping); beyond it the oldest
    /// messages of any room are dropped first.
    #[arg(long, env = "WSBROKER_HISTORY_MEMORY", value_name = "BYTES", default_value = "64MiB",
          value_parser = parse_history_memory)]
    pub history_memory: usize,

    /// Largest message (and frame) a client may send, e.g. "64KiB", "16MiB". Larger
    /// ones close the connection with 1009.
    #[arg(long, env = "WSBROKER_MAX_MESSAGE_SIZE", value_name = "BYTES", default_value = "64KiB",
          value_parser = parse_message_size)]
    pub max_message_size: usize,

    /// Per-connection read buffer (the protocol layer's read window), allocated for
    /// every connection. Socket reads land in a 16 KiB buffer per thread first;
    /// bytes the connection has not taken yet are kept only until it does.
    #[arg(long, env = "WSBROKER_READ_BUFFER_SIZE", value_name = "BYTES", default_value = "256B",
          value_parser = parse_buffer_size)]
    pub read_buffer_size: usize,

    /// Per-connection write buffer: a batch of outgoing frames up to this size is
    /// gathered into one buffer for a single write (larger batches are written from
    /// the shared frames directly). The buffer exists only during the write.
    #[arg(long, env = "WSBROKER_WRITE_BUFFER_SIZE", value_name = "BYTES", default_value = "16KiB",
          value_parser = parse_buffer_size)]
    pub write_buffer_size: usize,

    /// Most simultaneous WebSocket connections; beyond it handshakes get HTTP 503.
    #[arg(long, env = "WSBROKER_MAX_CONNECTIONS", value_name = "N", default_value_t = 65_536,
          value_parser = parse_max_connections)]
    pub max_connections: usize,

    /// Longest room name (request path, in bytes); longer ones get HTTP 414.
    #[arg(long, env = "WSBROKER_MAX_ROOM_LENGTH", value_name = "BYTES", default_value_t = 1024,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub max_room_length: u16,

    /// A client must complete the WebSocket handshake within this time.
    #[arg(long, env = "WSBROKER_HANDSHAKE_TIMEOUT", value_name = "DURATION", default_value = "5s",
          value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// The server pings every connection this often.
    #[arg(long, env = "WSBROKER_PING_INTERVAL", value_name = "DURATION", default_value = "30s",
          value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// A connection from which nothing (not even a pong) arrives for this long is
    /// closed with 1001. Must be longer than --ping-interval.
    #[arg(long, env = "WSBROKER_IDLE_TIMEOUT", value_name = "DURATION", default_value = "60s",
          value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// A write to a client that does not complete within this time ends its
    /// connection, so a stalled peer cannot hold a task and its buffers forever.
    #[arg(long, env = "WSBROKER_WRITE_TIMEOUT", value_name = "DURATION", default_value = "10s",
          value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Accept handshakes only from this Origin (repeatable). Without it every origin
    /// is allowed. Requests without an Origin header (non-browser clients) are
    /// allowed either way. Others get HTTP 403.
    #[arg(
        long = "allowed-origin",
        env = "WSBROKER_ALLOWED_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Require a token (JWT) on every handshake, verified with this key (repeatable):
    /// a file holding an HMAC secret (HS256/384/512, at least 32 bytes) or a PEM
    /// public key (RSA, EC P-256/P-384, Ed25519). A key's id (for a token's `kid`) is
    /// its file name without the extension. SIGHUP rereads the files. Off when absent.
    #[arg(long = "auth-key", env = "WSBROKER_AUTH_KEYS", value_name = "FILE", value_delimiter = ',')]
    pub auth_keys: Vec<PathBuf>,

    /// With --auth-key: tokens must carry this `iss`.
    #[arg(long, env = "WSBROKER_AUTH_ISSUER", value_name = "ISS")]
    pub auth_issuer: Option<String>,

    /// With --auth-key: tokens must carry this `aud`.
    #[arg(long, env = "WSBROKER_AUTH_AUDIENCE", value_name = "AUD")]
    pub auth_audience: Option<String>,

    /// With --auth-key: clock skew allowed on `exp`, `nbf` and `iat` (0s to 24h).
    /// A connection whose token expires is closed with 4001 at `exp` plus this.
    #[arg(long, env = "WSBROKER_AUTH_LEEWAY", value_name = "DURATION", default_value = "30s",
          value_parser = parse_leeway)]
    pub auth_leeway: Duration,

    /// Serve wss:// with this certificate chain (PEM, the leaf first); needs
    /// --tls-key. SIGHUP rereads it: new handshakes use the new certificate.
    #[arg(long, env = "WSBROKER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC).
    #[arg(long, env = "WSBROKER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Serve Prometheus metrics (GET /metrics), health (GET /healthz) and the publish
    /// API (POST /rooms/{room}) on this address, a listener separate from the
    /// WebSocket one. Keep it internal. Off when absent.
    #[arg(long, env = "WSBROKER_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Share rooms with other wsbroker nodes through this Redis (redis://HOST:PORT).
    /// Without it, rooms are local to this process.
    #[arg(long, env = "WSBROKER_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,

    /// Prefix of the Redis channel names (channel = prefix + room).
    #[arg(long, env = "WSBROKER_REDIS_PREFIX", value_name = "PREFIX", default_value = "wsbroker:")]
    pub redis_prefix: String,

    /// Use Redis 7 sharded pub/sub (SSUBSCRIBE/SPUBLISH), for Redis Cluster.
    #[arg(long, env = "WSBROKER_REDIS_SHARDED")]
    pub redis_sharded: bool,

    /// On SIGINT/SIGTERM, how long to wait for connections to close after sending
    /// them Close 1001 (e.g. "5s", "500ms").
    #[arg(long, env = "WSBROKER_SHUTDOWN_TIMEOUT", value_name = "DURATION", default_value = "5s",
          value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Lame-duck drain: on the first SIGINT/SIGTERM, /healthz answers 503 and the
    /// listener closes at once, and open connections are closed with 1012 (service
    /// restart) spread evenly over this long, so that their reconnects are spread
    /// too; a second signal closes the rest at once. 0s: no drain, Close 1001 to
    /// everyone at once.
    #[arg(long, env = "WSBROKER_DRAIN_DURATION", value_name = "DURATION", default_value = "0s",
          value_parser = parse_leeway)]
    pub drain_duration: Duration,

    /// Runtime worker threads; 0 means one per CPU the process may run on. With 1
    /// (or 0 on a single allowed CPU) everything runs on one thread, tokio's
    /// current-thread runtime, the fastest choice for a server pinned to one core.
    #[arg(long, env = "WSBROKER_WORKER_THREADS", value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub worker_threads: u16,

    /// Log format on stderr; the level is set by RUST_LOG (default "info").
    #[arg(long, env = "WSBROKER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// A configuration whose values are each valid but do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Idle connections would be closed between two pings.
    #[error("--idle-timeout ({idle:?}) must be longer than --ping-interval ({ping:?})")]
    IdleNotAbovePing {
        /// The idle timeout.
        idle: Duration,
        /// The ping interval.
        ping: Duration,
    },
    /// A value outside its range (only reachable through a hand-built `Config`).
    #[error("{0} is out of range")]
    OutOfRange(&'static str),
    /// One of `--tls-cert` and `--tls-key` without the other.
    #[error("--tls-cert and --tls-key go together: give both, or neither")]
    TlsHalf,
    /// `--auth-issuer` or `--auth-audience` without a key to verify tokens with.
    #[error("--auth-issuer and --auth-audience need --auth-key")]
    AuthWithoutKeys,
    /// `--redis-url` is not a usable redis:// URL.
    #[error("--redis-url: {0}")]
    RedisUrl(String),
}

impl Config {
    /// A configuration with every default, listening on an ephemeral loopback port.
    /// Tests and embedders start from this and change what they need; a unit test
    /// keeps it equal to the command line's defaults.
    pub fn ephemeral() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            broker_capacity: 1024,
            outbox_capacity: 256,
            no_echo: false,
            slow_consumer: SlowConsumer::Drop,
            history_size: 0,
            history_ttl: None,
            history_memory: 64 << 20,
            max_message_size: 64 << 10,
            read_buffer_size: 256,
            write_buffer_size: 16 << 10,
            max_connections: 65_536,
            max_room_length: 1024,
            handshake_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            allowed_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
            auth_keys: Vec::new(),
            auth_issuer: None,
            auth_audience: None,
            auth_leeway: Duration::from_secs(30),
            metrics_listen: None,
            redis_url: None,
            redis_prefix: "wsbroker:".to_owned(),
            redis_sharded: false,
            shutdown_timeout: Duration::from_secs(5),
            drain_duration: Duration::ZERO,

            worker_threads: 0,
            log_format: LogFormat::Text,
        }
    }

    /// Checks what the single-value parsers cannot: relations between values, and
    /// every range again for a `Config` built by hand rather than parsed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let capacity = 1..=MAX_CAPACITY;
        let duration = |d: Duration| !d.is_zero() && d <= MAX_DURATION;
        let checks: [(bool, &'static str); 11] = [
            (capacity.contains(&self.broker_capacity), "--broker-capacity"),
            (capacity.contains(&self.outbox_capacity), "--outbox-capacity"),
            ((1..=MAX_MESSAGE_SIZE).contains(&self.max_message_size), "--max-message-size"),
            ((1..=MAX_BUFFER_SIZE).contains(&self.read_buffer_size), "--read-buffer-size"),
            ((1..=MAX_BUFFER_SIZE).contains(&self.write_buffer_size), "--write-buffer-size"),
            ((1..=MAX_CONNECTIONS).contains(&self.max_connections), "--max-connections"),
            (self.max_room_length >= 1, "--max-room-length"),
            (duration(self.handshake_timeout), "--handshake-timeout"),
            (duration(self.ping_interval) && duration(self.idle_timeout), "--ping-interval/--idle-timeout"),
            (duration(self.write_timeout), "--write-timeout"),
            (duration(self.shutdown_timeout), "--shutdown-timeout"),
        ];
        if let Some((_, name)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(ConfigError::OutOfRange(name));
        }
        if self.idle_timeout <= self.ping_interval {
            return Err(ConfigError::IdleNotAbovePing { idle: self.idle_timeout, ping: self.ping_interval });
        }
        if self.auth_leeway > MAX_DURATION {
            return Err(ConfigError::OutOfRange("--auth-leeway"));
        }
        if self.history_size > MAX_HISTORY_SIZE {
            return Err(ConfigError::OutOfRange("--history-size"));
        }
        if self.history_ttl.is_some_and(|d| d.is_zero() || d > MAX_DURATION) {
            return Err(ConfigError::OutOfRange("--history-ttl"));
        }
        if !(1..=MAX_HISTORY_MEMORY).contains(&self.history_memory) {
            return Err(ConfigError::OutOfRange("--history-memory"));
        }
        if self.drain_duration > MAX_DURATION {
            return Err(ConfigError::OutOfRange("--drain-duration"));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::TlsHalf);
        }
        if self.auth_keys.is_empty() && (self.auth_issuer.is_some() || self.auth_audience.is_some()) {
            return Err(ConfigError::AuthWithoutKeys);
        }
        if self.redis_prefix.len() > 256 {
            return Err(ConfigError::OutOfRange("--redis-prefix (at most 256 bytes)"));
        }
        if let Some(url) = &self.redis_url {
            check_redis_url(url)?;
        }
        Ok(())
    }

    /// tungstenite's per-connection settings. `max_write_buffer_size` is the write
    /// buffer plus one largest frame, which is what the buffer can reach before the
    /// writer waits for the socket; it is always above `write_buffer_size`, which
    /// tungstenite asserts (a panic) when it accepts a connection.
    pub fn websocket_config(&self) -> WebSocketConfig {
        let max_write = self
            .write_buffer_size
            .saturating_add(self.max_message_size)
            .saturating_add(MAX_FRAME_HEADER)
            .max(self.write_buffer_size.saturating_add(1));
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            .write_buffer_size(self.write_buffer_size)
            .max_write_buffer_size(max_write)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}

/// Checks `--redis-url` up front, so a typo is an exit-2 error rather than a bridge
/// that logs and retries forever.
#[cfg(feature = "redis")]
fn check_redis_url(url: &str) -> Result<(), ConfigError> {
    if !url.starts_with("redis://") {
        return Err(ConfigError::RedisUrl(format!("'{url}' must start with redis://")));
    }
    redis::Client::open(url).map(drop).map_err(|e| ConfigError::RedisUrl(format!("'{url}': {e}")))
}

#[cfg(not(feature = "redis"))]
fn check_redis_url(_url: &str) -> Result<(), ConfigError> {
    Err(ConfigError::RedisUrl("this build has no Redis support (feature `redis`)".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_ephemeral_and_validate() {
        let parsed = Cli::try_parse_from(["wsbroker", "--listen", "127.0.0.1:0"]).unwrap().config;
        let e = Config::ephemeral();
        assert_eq!(format!("{parsed:?}"), format!("{e:?}"));
        assert_eq!(e.validate(), Ok(()));
    }

    #[test]
    fn idle_must_exceed_ping_and_hand_built_values_are_checked() {
        let mut c = Config::ephemeral();
        c.idle_timeout = c.ping_interval;
        assert!(matches!(c.validate(), Err(ConfigError::IdleNotAbovePing { .. })));
        let mut c = Config::ephemeral();
        c.outbox_capacity = 0;
        assert_eq!(c.validate(), Err(ConfigError::OutOfRange("--outbox-capacity")));
    }

    #[test]
    fn websocket_config_satisfies_tungstenites_assertion() {
        let mut c = Config::ephemeral();
        c.write_buffer_size = MAX_BUFFER_SIZE;
        c.max_message_size = MAX_MESSAGE_SIZE;
        let ws = c.websocket_config();
        assert!(ws.max_write_buffer_size > ws.write_buffer_size);
        assert_eq!(ws.max_message_size, Some(MAX_MESSAGE_SIZE));
    }
}
