//! wsprobe: a second load client for the fixed-rate scenario, built differently from
//! `wsload` so that a figure can be checked against a client that shares none of its
//! shortcuts: one room, N subscribers and one publisher at a fixed rate, each
//! delivery's latency from the message's scheduled send time.
//!
//! Where wsload parses frames by hand, reads each socket in large batches and paces
//! its publishers with a timer thread that wakes a task, wsprobe uses the
//! tokio-tungstenite client (the library's handshake, frame parser and buffering), one
//! task per connection reading message by message, and a publisher paced by an OS
//! thread that sleeps to each deadline and hands the scheduled time over a channel.
//!
//! Output: one JSON object, with the same keys as wsload's fixed-rate report.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;
use wsbench::keys;

#[path = "../procfs.rs"]
#[expect(dead_code, reason = "wsprobe reads the server's CPU time, not its memory")]
mod procfs;

#[derive(Debug, Parser)]
#[command(name = "wsprobe", about = "A second load client: one room at a fixed rate, latency per delivery")]
struct Args {
    /// Server address, host:port.
    #[arg(long)]
    addr: String,
    /// Subscribers in the room.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Messages per second from the one publisher.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Payload bytes per message (at least 16).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Traffic before the measurement window (not measured).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// The measurement window.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The server's PID, to read its CPU time from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A label for the report.
    #[arg(long, default_value = "")]
    label: String,
}

/// What every connection's task shares (one thread: `Rc` and `Cell`s).
struct Shared {
    epoch: Instant,
    measuring: Cell<bool>,
    received: Cell<u64>,
    /// Deliveries of messages sent inside the window.
    window_received: Cell<u64>,
    latency_us: RefCell<Histogram<u64>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.size < 16 || !args.rate.is_finite() || args.rate <= 0.0 {
        eprintln!("error: --size must be at least 16 and --rate above 0");
        return std::process::ExitCode::from(2);
    }
    // A connection per client needs as many descriptors.
    if let Err(soft) = wsbench::raise_nofile_limit() {
        eprintln!("warning: could not raise RLIMIT_NOFILE from {soft}");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, run(&args)) {
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

async fn run(args: &Args) -> Result<serde_json::Value, String> {
    let shared = Rc::new(Shared {
        epoch: Instant::now(),
        measuring: Cell::new(false),
        received: Cell::new(0),
        window_received: Cell::new(0),
        latency_us: RefCell::new(Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?),
    });
    let url = format!("ws://{}/r0", args.addr);
    for _ in 0..args.subscribers {
        let (ws, _) = tokio_tungstenite::connect_async(&url).await.map_err(|e| format!("connect: {e}"))?;
        let (_, reader) = ws.split();
        tokio::task::spawn_local(read(reader, Rc::clone(&shared)));
    }
    let (publisher, _) = tokio_tungstenite::connect_async(&url).await.map_err(|e| format!("connect: {e}"))?;
    let (mut sink, echoes) = publisher.split();
    tokio::task::spawn_local(read(echoes, Rc::clone(&shared)));
    // Let the server register the last members before traffic starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The pacer: an OS thread sleeping to each deadline, handing over its time.
    let period = Duration::try_from_secs_f64(1.0 / args.rate).map_err(|e| e.to_string())?;
    let (ticks_tx, mut ticks_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let epoch = shared.epoch;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pacer_stop = std::sync::Arc::clone(&stop);
    let pacer = std::thread::spawn(move || {
        let mut next = Instant::now();
        while !pacer_stop.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            let scheduled = u64::try_from(next.saturating_duration_since(epoch).as_nanos()).unwrap_or(0);
            if ticks_tx.send(scheduled).is_err() {
                return;
            }
            next = next.checked_add(period).unwrap_or(next);
        }
    });

    let window_open = Instant::now().checked_add(args.warmup).ok_or("warm-up too long")?;
    let window_close = window_open.checked_add(args.duration).ok_or("window too long")?;
    let mut payload = vec![0u8; args.size];
    let (mut sent_in_window, mut cpu_start, mut own_start) = (0u64, None, None);
    while let Some(scheduled) = ticks_rx.recv().await {
        let now = Instant::now();
        if now >= window_close {
            break;
        }
        if now >= window_open && !shared.measuring.get() {
            shared.measuring.set(true);
            cpu_start = args.server_pid.and_then(procfs::cpu_ns);
            own_start = procfs::cpu_ns(std::process::id());
        }
        let in_window = shared.measuring.get();
        stamp(&mut payload, scheduled, in_window);
        sink.send(Message::binary(payload.clone())).await.map_err(|e| format!("publish: {e}"))?;
        if in_window {
            sent_in_window = sent_in_window.wrapping_add(1);
        }
    }
    let cpu_end = args.server_pid.and_then(procfs::cpu_ns);
    let own_end = procfs::cpu_ns(std::process::id());
    shared.measuring.set(false);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(ticks_rx);
    // Wait until deliveries stop (quiet for 500 ms), at most 5 s.
    let deadline = Instant::now().checked_add(Duration::from_secs(5)).unwrap_or_else(Instant::now);
    let mut last = shared.received.get();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = shared.received.get();
        if now == last {
            break;
        }
        last = now;
    }
    if pacer.join().is_err() {
        return Err("the pacer thread panicked".to_owned());
    }

    let members = u64::try_from(args.subscribers).unwrap_or(u64::MAX).saturating_add(1);
    let owed = sent_in_window.saturating_mul(members);
    let loss =
        if owed == 0 { 0.0 } else { owed.saturating_sub(shared.window_received.get()) as f64 / owed as f64 };
    let fraction = |start: Option<u64>, end: Option<u64>| match (start, end) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / args.duration.as_nanos() as f64,
        _ => 0.0,
    };
    let hist = shared.latency_us.borrow();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(serde_json::json!({
        (keys::LABEL): args.label,
        "client": "wsprobe",
        (keys::MODE): keys::FIXED_RATE,
        (keys::LATENCY_MS): { (keys::P50): ms(0.5), (keys::P99): ms(0.99), (keys::P999): ms(0.999), (keys::MAX): hist.max() as f64 / 1000.0 },
        (keys::LOSS): loss,
        (keys::SERVER_CPU_FRACTION): fraction(cpu_start, cpu_end),
        (keys::LOADGEN_CPU_FRACTION): fraction(own_start, own_end),
        "published_in_window": sent_in_window,
        "subscribers": args.subscribers,
    }))
}

/// The payload's first 8 bytes: the scheduled send time (ns since the run's epoch);
/// the 9th: whether it was sent inside the measurement window.
fn stamp(payload: &mut [u8], scheduled_ns: u64, in_window: bool) {
    if let Some(head) = payload.get_mut(..8) {
        head.copy_from_slice(&scheduled_ns.to_be_bytes());
    }
    if let Some(flag) = payload.get_mut(8) {
        *flag = u8::from(in_window);
    }
}

/// Reads one connection's messages until it ends, recording each one's latency.
async fn read<S>(mut messages: S, shared: Rc<Shared>)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(Ok(message)) = messages.next().await {
        let payload = match &message {
            Message::Binary(bytes) => bytes.as_ref(),
            Message::Text(text) => text.as_bytes(),
            _ => continue,
        };
        shared.received.set(shared.received.get().wrapping_add(1));
        let Some(scheduled) = payload.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) else {
            continue;
        };
        if payload.get(8) == Some(&1) {
            shared.window_received.set(shared.window_received.get().wrapping_add(1));
            let latency_us = shared.now_ns().saturating_sub(scheduled).checked_div(1000).unwrap_or(0).max(1);
            let _ = shared.latency_us.borrow_mut().record(latency_us);
        }
    }
}
