//! Command-line and environment configuration, validated before anything starts.
//!
//! Every value that could reach a panicking API (`mpsc::channel(0)`, a capacity above
//! tokio's semaphore limit, `Instant + Duration` overflow) is bounded here, so a bad
//! value is a clear error and exit status 2, never a panic later.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Largest accepted channel capacity. tokio's `mpsc::channel` panics above
/// `usize::MAX >> 3`; a million queued messages per channel is already far beyond
/// any useful buffering, so anything larger is rejected as a configuration error.
pub const MAX_CAPACITY: usize = 1 << 20;

/// Longest accepted duration for any timeout. Keeping durations at or below a day
/// means `Instant::now() + d` cannot overflow on any platform tokio supports.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// wsbroker: a WebSocket room broker. The request path names the room; every text or
/// binary message a client sends is delivered to every member of its room.
#[derive(Debug, Clone, Parser)]
#[command(name = "wsbroker", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on for WebSocket connections.
    #[arg(
        long,
        env = "WSBROKER_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,

    /// Capacity of the one channel from all readers to the broker. When it is full,
    /// readers wait, and TCP flow control pushes back on the sending clients.
    #[arg(long, env = "WSBROKER_BROKER_CAPACITY", value_name = "N", default_value_t = 1024,
          value_parser = parse_capacity)]
    pub broker_capacity: usize,

    /// Capacity of each connection's outbox (broker to writer). When it is full, the
    /// broker drops the message for that connection only and counts the drop.
    #[arg(long, env = "WSBROKER_OUTBOX_CAPACITY", value_name = "N", default_value_t = 256,
          value_parser = parse_capacity)]
    pub outbox_capacity: usize,

    /// Do not deliver a message back to the connection that sent it.
    #[arg(long, env = "WSBROKER_NO_ECHO")]
    pub no_echo: bool,

    /// On SIGINT/SIGTERM, how long to wait for connections to close after sending
    /// them Close 1001 (e.g. "5s", "500ms").
    #[arg(long, env = "WSBROKER_SHUTDOWN_TIMEOUT", value_name = "DURATION", default_value = "5s",
          value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Log format on stderr; the level is set by RUST_LOG (default "info").
    #[arg(long, env = "WSBROKER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Config {
    /// A configuration with every default, listening on an ephemeral loopback port.
    /// Tests and embedders start from this and change what they need.
    pub fn ephemeral() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            broker_capacity: 1024,
            outbox_capacity: 256,
            no_echo: false,
            shutdown_timeout: Duration::from_secs(5),
            log_format: LogFormat::Text,
        }
    }
}

/// Parses a channel capacity: a whole number from 1 to [`MAX_CAPACITY`].
fn parse_capacity(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if n == 0 || n > MAX_CAPACITY {
        return Err(format!("must be between 1 and {MAX_CAPACITY}"));
    }
    Ok(n)
}

/// Parses a duration such as "5s" or "250ms": above zero and at most [`MAX_DURATION`].
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("'{s}': {e}"))?;
    if d.is_zero() || d > MAX_DURATION {
        return Err("must be above zero and at most 24h".to_owned());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_are_bounded() {
        assert_eq!(parse_capacity("1"), Ok(1));
        assert!(parse_capacity("0").is_err());
        assert!(parse_capacity("-3").is_err());
        assert!(parse_capacity(&(MAX_CAPACITY + 1).to_string()).is_err());
    }

    #[test]
    fn durations_are_bounded() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("25h").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn defaults_match_ephemeral() {
        let parsed = Config::try_parse_from(["wsbroker", "--listen", "127.0.0.1:0"]).unwrap();
        let e = Config::ephemeral();
        assert_eq!(parsed.listen, e.listen);
        assert_eq!(parsed.broker_capacity, e.broker_capacity);
        assert_eq!(parsed.outbox_capacity, e.outbox_capacity);
        assert_eq!(parsed.shutdown_timeout, e.shutdown_timeout);
    }
}
