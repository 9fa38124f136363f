//! What wsload reports, named once: wsload writes its JSON report with these keys and
//! `cargo xtask bench` reads it with the same ones; and what the load clients share.

/// The keys of wsload's JSON report (one object per run).
pub mod keys {
    /// The run's label (`server/scenario`).
    pub const LABEL: &str = "label";
    /// How the run drove the server: [`FLAT_OUT`], [`FIXED_RATE`] or [`IDLE`].
    pub const MODE: &str = "mode";
    /// Publishers write as fast as the server accepts.
    pub const FLAT_OUT: &str = "flat-out";
    /// Publishers send on a fixed schedule (`--rate`).
    pub const FIXED_RATE: &str = "fixed-rate";
    /// Connections send nothing (`--idle`).
    pub const IDLE: &str = "idle";
    /// Connections are opened and dropped as fast as the server admits them
    /// (`--handshakes`).
    pub const HANDSHAKE: &str = "handshake";
    /// Handshake mode: connections admitted per second.
    pub const HANDSHAKES_PER_S: &str = "handshakes_per_s";
    /// Handshake mode: the server's CPU time per connection admitted, in µs.
    pub const SERVER_CPU_US_PER_HANDSHAKE: &str = "server_cpu_us_per_handshake";
    /// Messages received by all members per second of the measurement window.
    pub const DELIVERIES_PER_S: &str = "deliveries_per_s";
    /// Messages received per second of the server's CPU time.
    pub const DELIVERIES_PER_SERVER_CPU_S: &str = "deliveries_per_server_cpu_s";
    /// The server's CPU time over the window, as a fraction of one core.
    pub const SERVER_CPU_FRACTION: &str = "server_cpu_fraction";
    /// wsload's own CPU time over the window, as a fraction of one core.
    pub const LOADGEN_CPU_FRACTION: &str = "loadgen_cpu_fraction";
    /// Whether wsload, not the server, was the bottleneck.
    pub const LOADGEN_SATURATED: &str = "loadgen_saturated";
    /// Deliveries owed for messages sent in the window that never arrived, as a
    /// fraction of those owed.
    pub const LOSS: &str = "loss";
    /// Delivery latency percentiles in milliseconds: an object of [`P50`], [`P99`],
    /// [`P999`] and [`MAX`].
    pub const LATENCY_MS: &str = "latency_ms";
    pub const P50: &str = "p50";
    pub const P99: &str = "p99";
    pub const P999: &str = "p999";
    pub const MAX: &str = "max";
    /// The server's peak resident memory (VmHWM), in KiB.
    pub const SERVER_PEAK_RSS_KIB: &str = "server_peak_rss_kib";
    /// Idle mode: the server's resident memory per connection, in bytes.
    pub const SERVER_BYTES_PER_CONNECTION: &str = "server_bytes_per_connection";
    /// Added by `cargo xtask bench` for wsbroker: deliveries the server itself dropped
    /// for full outboxes (from its `/metrics`).
    pub const SERVER_DROPPED_OUTBOX_FULL: &str = "server_dropped_outbox_full";
}

/// Raises this process's soft limit on open files to the hard one, since a run
/// opens a connection per client; returns the soft limit it could not raise from.
pub fn raise_nofile_limit() -> Result<(), u64> {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard).map_err(|_| soft)
        }
        _ => Ok(()),
    }
}

/// Ends a load client's run: its report on standard output and success, or its
/// error on standard error and failure.
pub fn finish(result: Result<impl std::fmt::Display, impl std::fmt::Display>) -> std::process::ExitCode {
    match result {
        Ok(report) => {
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
