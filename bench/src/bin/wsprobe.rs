//! wsprobe: a second load client for the fixed-rate scenario, built differently from
//! `wsload` so that a figure can be checked against a client that shares none of its
//! shortcuts: one room, N subscribers and one publisher at a fixed rate, each
//! delivery's latency from the message's scheduled send time.
//!
//! Where wsload is a tokio task per connection with a hand-written frame parser, a
//! clock read per `read()` and a publisher woken by a pacer thread, wsprobe has no
//! async runtime: one thread waits on `epoll` (through `mio`) for every subscriber
//! and reads each ready socket with tungstenite's synchronous client (the library's
//! handshake, buffering and frame parser), reading the clock for every message; the
//! publisher is an OS thread of its own that sleeps to each deadline and writes its
//! message itself.
//!
//! A first wsprobe (tokio-tungstenite, a task per connection) used its whole core at
//! a million deliveries a second, so it measured its own queue. This one makes one
//! `read` per ready socket: like tokio's own reads, a read that returns less than
//! the buffer ends the socket's turn until `epoll` reports it again (mio is
//! edge-triggered), so a delivery costs one system call, not two.
//!
//! Output: one JSON object, with the same keys as wsload's fixed-rate report.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};
use wsbench::keys;

#[path = "../procfs.rs"]
#[expect(dead_code, reason = "wsprobe reads the server's CPU time, not its memory")]
mod procfs;

/// How much tungstenite reads from a socket at once (and zero-fills before each read).
const READ_BUFFER: usize = 4096;

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
    wsbench::finish(run(&args))
}

/// A non-blocking socket that remembers whether `epoll` may have more for it: a read
/// shorter than its buffer drained the socket, so the next one would only return
/// `WouldBlock`; it returns that without the system call, until the next event.
struct EdgeStream {
    socket: mio::net::TcpStream,
    readable: bool,
}

impl Read for EdgeStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.readable {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.socket.read(buf) {
            Ok(n) if n < buf.len() => {
                self.readable = n == 0;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                Err(e)
            }
            other => other,
        }
    }
}

impl Write for EdgeStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

/// Opens a WebSocket to `url` with tungstenite's blocking handshake and returns the
/// connected socket (the server sends nothing before the first message, so the
/// handshake leaves nothing buffered).
fn connect(addr: &str, url: &str) -> Result<TcpStream, String> {
    let socket = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    socket.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let (ws, _) = tungstenite::client(url, socket).map_err(|e| format!("handshake: {e}"))?;
    Ok(ws.into_inner())
}

/// What the publisher thread reports when it ends.
struct Published {
    in_window: u64,
    server_cpu_ns: Option<u64>,
    own_cpu_ns: Option<u64>,
}

fn run(args: &Args) -> Result<serde_json::Value, String> {
    let url = format!("ws://{}/r0", args.addr);
    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut members: Vec<WebSocket<EdgeStream>> = Vec::with_capacity(args.subscribers.saturating_add(1));
    for _ in 0..args.subscribers {
        members.push(member(&poll, connect(&args.addr, &url)?, members.len())?);
    }
    // The publisher is a member too: its echoes are read here, its writes go through
    // a second descriptor of the same socket, in blocking mode on its own thread.
    let publisher = connect(&args.addr, &url)?;
    let publisher_echoes = publisher.try_clone().map_err(|e| format!("dup: {e}"))?;
    members.push(member(&poll, publisher_echoes, members.len())?);
    // Let the server register the last members before traffic starts.
    std::thread::sleep(Duration::from_millis(300));

    let epoch = Instant::now();
    let window_open = epoch.checked_add(args.warmup).ok_or("warm-up too long")?;
    let window_close = window_open.checked_add(args.duration).ok_or("window too long")?;
    let period = Duration::try_from_secs_f64(1.0 / args.rate).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = {
        let (stop, server_pid, size) = (Arc::clone(&stop), args.server_pid, args.size);
        std::thread::spawn(move || {
            publish(publisher, epoch, period, window_open, window_close, size, server_pid, &stop)
        })
    };

    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let (mut received, mut window_received) = (0u64, 0u64);
    let mut events = Events::with_capacity(1024);
    // Read until the publisher is done and deliveries have stopped for 500 ms (at
    // most 5 s after the window).
    let give_up = window_close.checked_add(Duration::from_secs(5)).ok_or("window too long")?;
    let (mut last_count, mut quiet_since) = (0u64, Instant::now());
    loop {
        let now = Instant::now();
        if publishing.is_finished() {
            if received != last_count {
                (last_count, quiet_since) = (received, now);
            } else if now.saturating_duration_since(quiet_since) >= Duration::from_millis(500)
                || now >= give_up
            {
                break;
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(100))).map_err(|e| format!("epoll: {e}"))?;
        for event in &events {
            let Some(ws) = members.get_mut(event.token().0) else { continue };
            ws.get_mut().readable = true;
            loop {
                match ws.read() {
                    Ok(Message::Binary(payload)) => {
                        received = received.wrapping_add(1);
                        if payload.get(8) == Some(&1)
                            && let Some(scheduled) =
                                payload.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
                        {
                            window_received = window_received.wrapping_add(1);
                            let at =
                                u64::try_from(Instant::now().saturating_duration_since(epoch).as_nanos())
                                    .unwrap_or(u64::MAX);
                            let _ = latency_us
                                .record(at.saturating_sub(scheduled).checked_div(1000).unwrap_or(0).max(1));
                        }
                    }
                    Ok(_) => {}
                    // Drained for now, or this member's connection ended.
                    Err(_) => break,
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let published = publishing.join().map_err(|_| "the publisher thread panicked".to_owned())??;

    let member_count = u64::try_from(members.len()).unwrap_or(u64::MAX);
    let owed = published.in_window.saturating_mul(member_count);
    let loss = if owed == 0 { 0.0 } else { owed.saturating_sub(window_received) as f64 / owed as f64 };
    let window_ns = args.duration.as_nanos() as f64;
    let fraction = |ns: Option<u64>| ns.map_or(0.0, |ns| ns as f64 / window_ns);
    let ms = |q: f64| latency_us.value_at_quantile(q) as f64 / 1000.0;
    Ok(serde_json::json!({
        (keys::LABEL): args.label,
        "client": "wsprobe",
        (keys::MODE): keys::FIXED_RATE,
        (keys::LATENCY_MS): { (keys::P50): ms(0.5), (keys::P99): ms(0.99), (keys::P999): ms(0.999), (keys::MAX): latency_us.max() as f64 / 1000.0 },
        (keys::LOSS): loss,
        (keys::SERVER_CPU_FRACTION): fraction(published.server_cpu_ns),
        (keys::LOADGEN_CPU_FRACTION): fraction(published.own_cpu_ns),
        "published_in_window": published.in_window,
        "subscribers": args.subscribers,
    }))
}

/// Registers one member's socket with `epoll` under its index.
fn member(poll: &Poll, socket: TcpStream, index: usize) -> Result<WebSocket<EdgeStream>, String> {
    socket.set_nonblocking(true).map_err(|e| format!("nonblocking: {e}"))?;
    let mut socket = mio::net::TcpStream::from_std(socket);
    poll.registry()
        .register(&mut socket, Token(index), Interest::READABLE)
        .map_err(|e| format!("epoll: {e}"))?;
    // tungstenite zero-fills its read buffer up to this size before every read: at its
    // default of 128 KiB that memset was half of wsprobe's CPU.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    Ok(WebSocket::from_raw_socket(EdgeStream { socket, readable: true }, Role::Client, Some(config)))
}

/// The publisher's thread: sleeps to each scheduled time and sends one message
/// stamped with it, until the window closes. It also reads the server's and this
/// process's CPU time at the window's edges.
#[expect(clippy::too_many_arguments, reason = "one thread's whole configuration, passed once")]
fn publish(
    socket: TcpStream,
    epoch: Instant,
    period: Duration,
    window_open: Instant,
    window_close: Instant,
    size: usize,
    server_pid: Option<u32>,
    stop: &AtomicBool,
) -> Result<Published, String> {
    // Without this the kernel may fire a sleep up to 50 µs late (the default slack).
    let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
    // The echo reader set the socket (shared by both descriptors) non-blocking: a
    // write that finds the send buffer full is retried by `flush` below.
    let mut ws = WebSocket::from_raw_socket(socket, Role::Client, None);
    let mut payload = vec![0u8; size];
    let mut next = Instant::now();
    let mut published = Published { in_window: 0, server_cpu_ns: None, own_cpu_ns: None };
    let (mut cpu_start, mut own_start) = (None, None);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        if next >= window_close {
            break;
        }
        let in_window = next >= window_open;
        if in_window && cpu_start.is_none() {
            cpu_start = server_pid.and_then(procfs::cpu_ns);
            own_start = procfs::cpu_ns(std::process::id());
        }
        let scheduled = u64::try_from(next.saturating_duration_since(epoch).as_nanos()).unwrap_or(0);
        if let Some(head) = payload.get_mut(..8) {
            head.copy_from_slice(&scheduled.to_be_bytes());
        }
        if let Some(flag) = payload.get_mut(8) {
            *flag = u8::from(in_window);
        }
        let mut sent = ws.send(Message::binary(payload.clone()));
        while let Err(tungstenite::Error::Io(e)) = &sent
            && e.kind() == io::ErrorKind::WouldBlock
        {
            std::thread::yield_now();
            sent = ws.flush();
        }
        sent.map_err(|e| format!("publish: {e}"))?;
        if in_window {
            published.in_window = published.in_window.wrapping_add(1);
        }
        next = next.checked_add(period).unwrap_or(next);
    }
    let elapsed = |start: Option<u64>, end: Option<u64>| Some(end?.saturating_sub(start?));
    published.server_cpu_ns = elapsed(cpu_start, server_pid.and_then(procfs::cpu_ns));
    published.own_cpu_ns = elapsed(own_start, procfs::cpu_ns(std::process::id()));
    Ok(published)
}
