//! wsload: drives a WebSocket room broker and measures it.
//!
//! Joins `rooms × (subscribers + publishers)` connections (room = path `/r{i}`; every
//! connection, publishers included, is a member and receives), drives the publishers
//! flat out (as fast as the server accepts) or on a fixed schedule, and reports
//! deliveries per second and per server-CPU-second, loss, latency percentiles, the
//! server's CPU and peak RSS (from /proc, with `--server-pid`), and its own CPU use,
//! so that a run in which the load generator is the bottleneck says so.
//!
//! It is built to be cheaper than the servers it measures: one thread, raw sockets,
//! a hand-written frame parser over whole read buffers, one clock read per `read()`
//! rather than per frame, and publishers that write batches of pre-built frames.
//!
//! Payload layout (at least 16 bytes): send time in ns since the run's epoch (for a
//! fixed schedule, the *scheduled* time, so that coordinated omission is not hidden),
//! then a flag byte: 1 if sent inside the measurement window.

mod pacer;
mod procfs;
mod stream;
mod ws;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;
use stream::{Dialer, ReadHalf, WriteHalf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wsbench::keys;

/// How many frames a flat-out publisher writes per `write` call.
const PUBLISH_BATCH: usize = 32;

/// Each connection's read buffer.
const READ_BUFFER: usize = 64 * 1024;

#[derive(Debug, Parser)]
#[command(name = "wsload", about = "Load generator for WebSocket room brokers")]
struct Args {
    /// Server address, host:port.
    #[arg(long)]
    addr: String,
    /// A second node of the same cluster: every other subscriber connects there
    /// (publishers stay on --addr), so deliveries cross nodes.
    #[arg(long)]
    addr2: Option<String>,
    /// Number of rooms, /r0 .. /r{N-1}.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Subscribers (receive only) per room.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Publishers (send and receive) per room.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Connections per room that never read (saturation scenario).
    #[arg(long, default_value_t = 0)]
    stalled: usize,
    /// Payload bytes per message (at least 16).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages per second per publisher; without it, publishers go flat out.
    #[arg(long)]
    rate: Option<f64>,
    /// Traffic before the measurement window (not measured).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// The measurement window.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Idle mode: open this many connections, send nothing, report server RSS per connection.
    #[arg(long)]
    idle: Option<usize>,
    /// Handshake mode: open and close this many connections, `--concurrency` at a
    /// time, and report handshakes per second and the server's CPU per handshake.
    #[arg(long)]
    handshakes: Option<usize>,
    /// Handshake mode: connections in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// A token to send with every handshake (`Authorization: Bearer`).
    #[arg(long)]
    token: Option<String>,
    /// Connect with TLS (wss://), trusting the certificate(s) in this PEM file: the
    /// server's self-signed certificate or its CA.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// With --tls-ca: the name the server's certificate must carry.
    #[arg(long, default_value = "localhost")]
    tls_name: String,
    /// The server's PID, to read its CPU time and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A label for the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Every member offers wsbroker's `wsbroker.v1` subprotocol (its delivery
    /// contract) and reads the 17-byte envelope before each payload.
    #[arg(long)]
    wsbroker_v1: bool,
}

/// The bytes of the `wsbroker.v1` envelope before a payload: kind, epoch, seq.
const WSBROKER_V1_ENVELOPE: usize = 17;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Warmup,
    Measure,
    Drain,
}

/// State shared by every task of the (single-threaded) run.
struct Shared {
    epoch: Instant,
    phase: Cell<Phase>,
    /// Messages received at all.
    received: Cell<u64>,
    /// Messages received while the window was open.
    received_in_window: Cell<u64>,
    /// Messages that were sent inside the window, whenever they arrived.
    window_messages_received: Cell<u64>,
    /// Messages written by publishers inside the window, per room.
    sent_in_window: RefCell<Vec<u64>>,
    /// Delivery latency in microseconds, for messages received in the window.
    latency_us: RefCell<Histogram<u64>>,
    errors: Cell<u64>,
    /// Bytes before each payload: the `wsbroker.v1` envelope, or none.
    envelope: usize,
    /// Wakes fixed-schedule publishers at their scheduled times.
    pacer: pacer::Pacer,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.size < 16 {
        eprintln!("error: --size must be at least 16");
        return std::process::ExitCode::from(2);
    }
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0 && Duration::try_from_secs_f64(1.0 / rate).is_ok())
    {
        eprintln!("error: --rate must be a positive number of messages per second");
        return std::process::ExitCode::from(2);
    }
    // A connection per client needs as many descriptors.
    if let Err(soft) = wsbench::raise_nofile_limit() {
        eprintln!("warning: could not raise RLIMIT_NOFILE from {soft}");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let dialer = match &args.tls_ca {
        None => Dialer::Plain,
        Some(ca) => match Dialer::tls(ca, &args.tls_name) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: --tls-ca: {e}");
                return std::process::ExitCode::from(2);
            }
        },
    };
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, async move {
        match (args.idle, args.handshakes) {
            (Some(n), _) => idle(&args, &dialer, n).await,
            (None, Some(n)) => handshakes(&args, &dialer, n).await,
            (None, None) => traffic(&args, &dialer).await,
        }
    });
    wsbench::finish(result)
}

/// Handshake mode: how fast the server admits connections. Each connection is
/// opened, upgraded (with the token, if any) and dropped; `--concurrency` are in
/// flight at once.
async fn handshakes(args: &Args, dialer: &Dialer, n: usize) -> Result<serde_json::Value, String> {
    let concurrency = args.concurrency.clamp(1, 1024);
    let token = args.token.as_deref();
    let server_cpu_start = args.server_pid.and_then(procfs::cpu_ns);
    let started = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    let (mut opened, mut failed) = (0usize, 0u64);
    while opened < n || !in_flight.is_empty() {
        while opened < n && in_flight.len() < concurrency {
            let addr = args.addr.clone();
            let header = token.map(|t| format!("Authorization: Bearer {t}\r\n"));
            let dialer = dialer.clone();
            in_flight.spawn_local(async move {
                ws::connect(&dialer, &addr, "/handshake", None, header.as_deref()).await
            });
            opened = opened.saturating_add(1);
        }
        match in_flight.join_next().await {
            Some(Ok(Ok(_))) => {}
            Some(_) => failed = failed.saturating_add(1),
            None => break,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu_s = match (server_cpu_start, args.server_pid.and_then(procfs::cpu_ns)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e9),
        _ => None,
    };
    let done = n as f64 - failed as f64;
    Ok(json!({
        (keys::LABEL): args.label, (keys::MODE): keys::HANDSHAKE, "connections": n, "failed": failed,
        (keys::HANDSHAKES_PER_S): done / elapsed,
        (keys::SERVER_CPU_US_PER_HANDSHAKE): server_cpu_s.map(|c| c * 1e6 / done.max(1.0)),
        (keys::SERVER_CPU_FRACTION): server_cpu_s.map(|c| c / elapsed),
    }))
}

/// Idle mode: server memory per idle connection.
async fn idle(args: &Args, dialer: &Dialer, n: usize) -> Result<serde_json::Value, String> {
    let pid = args.server_pid.ok_or("--idle needs --server-pid")?;
    let before = procfs::status_kib(pid, "VmRSS:").ok_or("cannot read server RSS")?;
    let mut connections = Vec::with_capacity(n);
    for i in 0..n {
        let room = format!("/idle{}", i % 100);
        let (stream, _) = ws::connect(dialer, &args.addr, &room, None, None)
            .await
            .map_err(|e| format!("connect #{i}: {e}"))?;
        connections.push(stream);
    }
    // Let the server finish registering every connection before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = procfs::status_kib(pid, "VmRSS:").ok_or("cannot read server RSS")?;
    let per_connection = after
        .saturating_sub(before)
        .saturating_mul(1024)
        .checked_div(u64::try_from(n).unwrap_or(1))
        .unwrap_or(0);
    drop(connections);
    Ok(json!({
        (keys::LABEL): args.label, (keys::MODE): keys::IDLE, "connections": n,
        "server_rss_before_kib": before, "server_rss_after_kib": after,
        (keys::SERVER_BYTES_PER_CONNECTION): per_connection,
    }))
}

/// Traffic mode: throughput, loss and latency.
async fn traffic(args: &Args, dialer: &Dialer) -> Result<serde_json::Value, String> {
    let shared = Rc::new(Shared {
        epoch: Instant::now(),
        phase: Cell::new(Phase::Warmup),
        received: Cell::new(0),
        received_in_window: Cell::new(0),
        window_messages_received: Cell::new(0),
        sent_in_window: RefCell::new(vec![0; args.rooms]),
        latency_us: RefCell::new(Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?),
        errors: Cell::new(0),
        envelope: if args.wsbroker_v1 { WSBROKER_V1_ENVELOPE } else { 0 },
        pacer: pacer::Pacer::start().map_err(|e| format!("pacer thread: {e}"))?,
    });
    let members_per_room = args.subscribers.saturating_add(args.publishers);

    let subprotocol = args.wsbroker_v1.then_some("Sec-WebSocket-Protocol: wsbroker.v1\r\n");
    // Connect everyone: stalled first, then subscribers, then publishers.
    let mut stalled = Vec::new();
    let mut readers = Vec::new();
    for room in 0..args.rooms {
        let path = format!("/r{room}");
        for _ in 0..args.stalled {
            let (s, _) =
                ws::connect(dialer, &args.addr, &path, Some(4096), None).await.map_err(|e| e.to_string())?;
            stalled.push(s);
        }
        for k in 0..args.subscribers {
            let addr = match &args.addr2 {
                Some(second) if k % 2 == 1 => second,
                _ => &args.addr,
            };
            let (s, rest) =
                ws::connect(dialer, addr, &path, None, subprotocol).await.map_err(|e| e.to_string())?;
            readers.push((s.into_split(), rest, false));
        }
        for _ in 0..args.publishers {
            let (s, rest) =
                ws::connect(dialer, &args.addr, &path, None, subprotocol).await.map_err(|e| e.to_string())?;
            let (r, w) = s.into_split();
            readers.push(((r, w), rest, true));
        }
    }
    // Give the server a moment to register the last members before traffic starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut tasks = Vec::new();
    let mut publisher_index = 0usize;
    for (i, ((r, w), rest, publishes)) in readers.into_iter().enumerate() {
        let room = i.checked_div(members_per_room).and_then(|q| q.checked_rem(args.rooms)).unwrap_or(0);
        if publishes {
            tasks.push(tokio::task::spawn_local(read_loop(r, None, rest, Rc::clone(&shared))));
            let publisher = Publisher { room, index: publisher_index, size: args.size, rate: args.rate };
            publisher_index = publisher_index.saturating_add(1);
            let total = args.publishers.saturating_mul(args.rooms);
            tasks.push(tokio::task::spawn_local(publish_loop(w, publisher, total, Rc::clone(&shared))));
        } else {
            tasks.push(tokio::task::spawn_local(read_loop(r, Some(w), rest, Rc::clone(&shared))));
        }
    }

    tokio::time::sleep(args.warmup).await;
    let server_cpu_start = args.server_pid.and_then(procfs::cpu_ns);
    let own_cpu_start = procfs::cpu_ns(std::process::id());
    let window_start = Instant::now();
    shared.phase.set(Phase::Measure);
    tokio::time::sleep(args.duration).await;
    shared.phase.set(Phase::Drain);
    let window = window_start.elapsed();
    let server_cpu_end = args.server_pid.and_then(procfs::cpu_ns);
    let own_cpu_end = procfs::cpu_ns(std::process::id());

    // Drain: wait until deliveries stop (quiet for 500 ms), at most 5 s.
    let drain_deadline = Instant::now().checked_add(Duration::from_secs(5)).unwrap_or_else(Instant::now);
    let mut last = shared.received.get();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = shared.received.get();
        if now == last || Instant::now() > drain_deadline {
            break;
        }
        last = now;
    }
    for task in &tasks {
        task.abort();
    }
    drop(stalled);

    let secs = window.as_secs_f64();
    let sent: u64 = shared.sent_in_window.borrow().iter().sum();
    let expected = sent.saturating_mul(u64::try_from(members_per_room).unwrap_or(0));
    let got = shared.window_messages_received.get();
    let loss = if expected == 0 { 0.0 } else { expected.saturating_sub(got) as f64 / expected as f64 };
    let delivered = shared.received_in_window.get();
    let server_cpu_s = match (server_cpu_start, server_cpu_end) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e9),
        _ => None,
    };
    let own_cpu_s = match (own_cpu_start, own_cpu_end) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e9,
        _ => f64::NAN,
    };
    let hist = shared.latency_us.borrow();
    let pct = |q: f64| if hist.is_empty() { 0.0 } else { hist.value_at_quantile(q) as f64 / 1000.0 };
    let peak_rss = args.server_pid.and_then(|p| procfs::status_kib(p, "VmHWM:"));
    // The load generator is the bottleneck when it is near a full core while the
    // server is not; when both are busy the server is still the one being measured.
    let server_busy = server_cpu_s.is_none_or(|c| c / secs > 0.9);
    let loadgen_saturated = own_cpu_s / secs > 0.9 && !server_busy;
    Ok(json!({
        (keys::LABEL): args.label,
        (keys::MODE): if args.rate.is_some() { keys::FIXED_RATE } else { keys::FLAT_OUT },
        "rooms": args.rooms, "subscribers": args.subscribers, "publishers": args.publishers,
        "stalled": args.stalled, "size": args.size, "rate_per_publisher": args.rate,
        "window_s": secs,
        "published_in_window": sent,
        (keys::DELIVERIES_PER_S): delivered as f64 / secs,
        (keys::DELIVERIES_PER_SERVER_CPU_S): server_cpu_s.map(|c| if c > 0.0 { delivered as f64 / c } else { 0.0 }),
        (keys::SERVER_CPU_FRACTION): server_cpu_s.map(|c| c / secs),
        (keys::LOSS): loss,
        (keys::LATENCY_MS): {
            (keys::P50): pct(0.50), (keys::P99): pct(0.99), (keys::P999): pct(0.999),
            (keys::MAX): if hist.is_empty() { 0.0 } else { hist.max() as f64 / 1000.0 },
        },
        (keys::SERVER_PEAK_RSS_KIB): peak_rss,
        (keys::LOADGEN_CPU_FRACTION): own_cpu_s / secs,
        (keys::LOADGEN_SATURATED): loadgen_saturated,
        "errors": shared.errors.get(),
    }))
}

/// Reads frames until the connection ends, counting deliveries and latencies. With
/// `pong_to` (subscribers own their write half), pings are answered.
async fn read_loop(mut r: ReadHalf, mut pong_to: Option<WriteHalf>, rest: Vec<u8>, shared: Rc<Shared>) {
    let mut buf = vec![0u8; READ_BUFFER];
    let mut filled = rest.len().min(READ_BUFFER);
    if let (Some(dst), Some(src)) = (buf.get_mut(..filled), rest.get(..filled)) {
        dst.copy_from_slice(src);
    }
    loop {
        let now = shared.now_ns();
        let mut start = 0usize;
        let mut pings = 0u32;
        {
            let measuring = shared.phase.get() == Phase::Measure;
            let mut hist = shared.latency_us.borrow_mut();
            while let Some((frame, len)) = buf.get(start..filled).and_then(ws::parse) {
                match frame {
                    ws::Frame::Data(payload) => {
                        shared.received.set(shared.received.get().wrapping_add(1));
                        // With wsbroker.v1, the envelope comes first (a welcome is
                        // only an envelope, so it carries no timestamp).
                        let payload = payload.get(shared.envelope..).unwrap_or_default();
                        if let Some(ts) =
                            payload.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
                        {
                            if measuring {
                                shared
                                    .received_in_window
                                    .set(shared.received_in_window.get().wrapping_add(1));
                                let _ =
                                    hist.record(now.saturating_sub(ts).checked_div(1000).unwrap_or(0).max(1));
                            }
                            if payload.get(8) == Some(&1) {
                                shared
                                    .window_messages_received
                                    .set(shared.window_messages_received.get().wrapping_add(1));
                            }
                        }
                    }
                    ws::Frame::Ping => pings = pings.saturating_add(1),
                    ws::Frame::Close => return,
                    ws::Frame::Other => {}
                }
                start = start.saturating_add(len);
            }
        }
        if let Some(w) = pong_to.as_mut() {
            for _ in 0..pings {
                let mut pong = Vec::with_capacity(8);
                ws::encode(&mut pong, 0xA, &[]);
                if w.write_all(&pong).await.is_err() || w.flush().await.is_err() {
                    return;
                }
            }
        }
        // Keep the partial frame at the end, growing the buffer for a large frame.
        if start <= filled && filled <= buf.len() {
            buf.copy_within(start..filled, 0);
        }
        filled = filled.saturating_sub(start);
        if filled == buf.len() {
            buf.resize(buf.len().saturating_mul(2), 0);
        }
        let Some(space) = buf.get_mut(filled..) else { return };
        match r.read(space).await {
            Ok(0) => return,
            Ok(n) => filled = filled.saturating_add(n),
            Err(_) => {
                shared.errors.set(shared.errors.get().saturating_add(1));
                return;
            }
        }
    }
}

struct Publisher {
    room: usize,
    index: usize,
    size: usize,
    rate: Option<f64>,
}

/// Publishes until the drain phase: flat out in batches, or one message per tick of
/// a fixed schedule, stamped with its scheduled time.
async fn publish_loop(mut w: WriteHalf, p: Publisher, publishers: usize, shared: Rc<Shared>) {
    let mut payload = vec![b'x'; p.size];
    let mut out = Vec::with_capacity(PUBLISH_BATCH.saturating_mul(p.size.saturating_add(14)));
    // try_from: `from_secs_f64` panics on an infinite or huge value (a tiny rate).
    let period = p.rate.filter(|r| *r > 0.0).and_then(|r| Duration::try_from_secs_f64(1.0 / r).ok());
    // Spread publishers over one period, so a fixed schedule is not one burst.
    let mut next = Instant::now();
    if let Some(period) = period {
        let offset = period.mul_f64(p.index as f64 / publishers.max(1) as f64);
        next = next.checked_add(offset).unwrap_or(next);
    }
    while shared.phase.get() != Phase::Drain {
        out.clear();
        // Stamp first, then decide the window from the stamp's moment, so a message
        // is counted as sent in the window exactly when it carries the window flag.
        let (count, in_window) = match period {
            None => {
                let in_window = shared.phase.get() == Phase::Measure;
                stamp(&mut payload, shared.now_ns(), in_window);
                for _ in 0..PUBLISH_BATCH {
                    ws::encode(&mut out, 0x2, &payload);
                }
                (PUBLISH_BATCH, in_window)
            }
            Some(period) => {
                // Precisely: see `pacer` for why not tokio's timer.
                shared.pacer.sleep_until(next).await;
                let scheduled =
                    u64::try_from(next.saturating_duration_since(shared.epoch).as_nanos()).unwrap_or(0);
                next = next.checked_add(period).unwrap_or(next);
                let in_window = shared.phase.get() == Phase::Measure;
                stamp(&mut payload, scheduled, in_window);
                ws::encode(&mut out, 0x2, &payload);
                (1, in_window)
            }
        };
        if w.write_all(&out).await.is_err() || w.flush().await.is_err() {
            shared.errors.set(shared.errors.get().saturating_add(1));
            return;
        }
        if in_window && let Some(slot) = shared.sent_in_window.borrow_mut().get_mut(p.room) {
            *slot = slot.saturating_add(u64::try_from(count).unwrap_or(0));
        }
    }
}

fn stamp(payload: &mut [u8], ts: u64, in_window: bool) {
    if let Some(head) = payload.get_mut(..8) {
        head.copy_from_slice(&ts.to_be_bytes());
    }
    if let Some(flag) = payload.get_mut(8) {
        *flag = u8::from(in_window);
    }
}
