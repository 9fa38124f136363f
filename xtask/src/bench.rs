//! `cargo xtask bench [--peer bun] [--peer node-ws] [--quick] [--write-docs]`
//!
//! Runs the benchmark scenarios against wsbroker and the chosen peers, one fresh
//! server per scenario, the server pinned to CPU 0 and the load generator (`wsload`)
//! to CPU 1 with `taskset`. Peers are installed from npm into `target/bench/peers`.
//! Writes `target/bench/results.json`, `target/bench/BENCHMARKS.md` and
//! `target/bench/benchmarks.svg`; with `--write-docs`, also `BENCHMARKS.md` and
//! `docs/benchmarks.svg` in the repository. `--quick` is a seconds-long smoke run.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{self, root};

/// The fan-out, fixed-rate and rooms scenarios run this many times, the servers
/// taking turns, and report the median run: single runs on these shared machines
/// vary by a third, and the rooms scenario's two servers are within a few percent
/// of each other, which one run cannot tell apart.
const REPEATS: usize = 3;

/// Whether a scenario is repeated for this server (see [`REPEATS`]). Node's `ws` is
/// run once: it is a reference, several times off the targets, and its two repeats
/// would take about a minute of a set that is to stay near five.
fn repeated(name: &str, server: Server) -> bool {
    server != Server::NodeWs && (name.starts_with("fanout") || name == "fixed-rate" || name == "rooms")
}

/// Versions of the peers, pinned so that runs compare like with like.
const BUN_VERSION: &str = "1.4.5";
const WS_VERSION: &str = "8.23.0";

struct Scenario {
    name: &'static str,
    what: &'static str,
    args: &'static [&'static str],
    /// Two wsbroker nodes sharing rooms through a local redis-server (wsbroker only).
    two_node: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "fanout-1000",
        what: "1 room, 1000 subscribers, 1 publisher flat out",
        args: &["--subscribers", "1000", "--publishers", "1"],
        two_node: false,
    },
    Scenario {
        name: "fanout-100x10",
        what: "1 room, 100 subscribers, 10 publishers flat out",
        args: &["--subscribers", "100", "--publishers", "10"],
        two_node: false,
    },
    Scenario {
        name: "fixed-rate",
        what: "1 room, 1000 subscribers, 1 publisher at 1000 msg/s",
        args: &["--subscribers", "1000", "--publishers", "1", "--rate", "1000"],
        two_node: false,
    },
    Scenario {
        name: "rooms",
        what: "100 rooms x 10 members, each member 10 msg/s",
        args: &["--rooms", "100", "--subscribers", "0", "--publishers", "10", "--rate", "10"],
        two_node: false,
    },
    Scenario {
        name: "idle-10k",
        what: "10,000 idle connections",
        args: &["--idle", "10000"],
        two_node: false,
    },
    Scenario {
        name: "saturation",
        what: "100 never-reading clients, 10 subscribers, 1 publisher flat out",
        args: &["--stalled", "100", "--subscribers", "10", "--publishers", "1"],
        two_node: false,
    },
    Scenario {
        name: "two-node",
        what: "two wsbroker nodes over Redis, 1 room, 200 subscribers split across them, 1 publisher at 1000 msg/s",
        args: &["--subscribers", "200", "--publishers", "1", "--rate", "1000"],
        two_node: true,
    },
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    Wsbroker,
    Bun,
    NodeWs,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Self::Wsbroker => "wsbroker",
            Self::Bun => "bun",
            Self::NodeWs => "node-ws",
        }
    }
}

pub fn run(args: &[String]) -> ExitCode {
    let mut servers = vec![Server::Wsbroker];
    let mut quick = false;
    let mut replot = false;
    let mut write_docs = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--peer" => match iter.next().map(String::as_str) {
                Some("bun") => servers.push(Server::Bun),
                Some("node-ws") => servers.push(Server::NodeWs),
                other => {
                    eprintln!("error: --peer takes bun or node-ws, not {other:?}");
                    return ExitCode::from(2);
                }
            },
            "--quick" => quick = true,
            "--write-docs" => write_docs = true,
            "--replot" => replot = true,
            other => {
                eprintln!("error: unknown bench option {other}");
                return ExitCode::from(2);
            }
        }
    }
    let root = root();
    if replot {
        return replot_saved(&root, write_docs);
    }
    if !util::run("cargo", &["build", "--release", "--quiet", "-p", "wsbroker", "-p", "wsbench"], &[], true)
        .success
    {
        eprintln!("error: build failed");
        return ExitCode::FAILURE;
    }
    if servers.iter().any(|s| *s != Server::Wsbroker) && !install_peers(&root) {
        return ExitCode::FAILURE;
    }
    // Many connections need many descriptors; children inherit this soft limit.
    if let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        if soft < hard && rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard).is_err() {
            eprintln!("warning: could not raise RLIMIT_NOFILE");
        }
    }

    let timing: &[&str] = if quick { &["--warmup", "200ms", "--duration", "500ms"] } else { &[] };
    let mut results = Vec::new();
    let started = Instant::now();
    for scenario in SCENARIOS {
        if quick && scenario.name == "idle-10k" {
            continue;
        }
        let repeats_of = |server| if !quick && repeated(scenario.name, server) { REPEATS } else { 1 };
        let repeats = servers.iter().map(|&s| repeats_of(s)).max().unwrap_or(1);
        let mut runs: Vec<(Server, Result<Value, String>)> = Vec::new();
        for round in 1..=repeats {
            for &server in &servers {
                if (scenario.two_node && server != Server::Wsbroker) || round > repeats_of(server) {
                    continue;
                }
                println!("== {} on {} (run {round} of {})", scenario.name, server.name(), repeats_of(server));
                let outcome = if scenario.two_node {
                    run_two_node(&root, scenario, timing)
                } else {
                    run_one(&root, server, scenario, timing)
                };
                match &outcome {
                    Ok(v) => println!("{v}"),
                    Err(e) => eprintln!("   failed: {e}"),
                }
                runs.push((server, outcome));
            }
        }
        for &server in &servers {
            results.extend(median(scenario.name, server, &runs));
        }
    }
    let elapsed = started.elapsed();
    let failed = results.iter().any(|r| r.get("error").is_some());

    let dir = root.join("target/bench");
    let command = format!(
        "cargo xtask bench{}{}",
        servers.iter().skip(1).map(|s| format!(" --peer {}", s.name())).collect::<String>(),
        if quick { " --quick" } else { "" }
    );
    let run = json!({"command": command, "elapsed_s": elapsed.as_secs_f64(), "results": results});
    if std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("run.json"), run.to_string()))
        .is_err()
    {
        eprintln!("error: cannot write target/bench/run.json");
        return ExitCode::FAILURE;
    }
    if let Err(e) = write_reports(&root, &results, &command, elapsed, write_docs) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    println!("\nbench finished in {:.0} s; report: target/bench/BENCHMARKS.md", elapsed.as_secs_f64());
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Writes the report and plot under target/bench (and, with `write_docs`, into the
/// repository).
fn write_reports(
    root: &Path,
    results: &[Value],
    command: &str,
    elapsed: Duration,
    write_docs: bool,
) -> Result<(), String> {
    let dir = root.join("target/bench");
    let md = markdown(results, command, elapsed);
    let svg = plot(results);
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("BENCHMARKS.md"), &md))
        .and_then(|()| std::fs::write(dir.join("benchmarks.svg"), &svg))
        .map_err(|e| format!("cannot write target/bench: {e}"))?;
    if write_docs {
        std::fs::create_dir_all(root.join("docs"))
            .and_then(|()| std::fs::write(root.join("BENCHMARKS.md"), &md))
            .and_then(|()| std::fs::write(root.join("docs/benchmarks.svg"), &svg))
            .map_err(|e| format!("cannot write BENCHMARKS.md: {e}"))?;
    }
    Ok(())
}

/// `--replot`: rebuilds the report from the last run's saved results (after editing
/// bench/NOTES.md or the report's layout), without running anything.
fn replot_saved(root: &Path, write_docs: bool) -> ExitCode {
    let saved = std::fs::read_to_string(root.join("target/bench/run.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    let Some(run) = saved else {
        eprintln!("error: no target/bench/run.json; run `cargo xtask bench` first");
        return ExitCode::FAILURE;
    };
    let results = run.get("results").and_then(Value::as_array).cloned().unwrap_or_default();
    let command = run.get("command").and_then(Value::as_str).unwrap_or("cargo xtask bench");
    // try_from: `from_secs_f64` panics on NaN, negative or huge input.
    let seconds = run.get("elapsed_s").and_then(Value::as_f64).unwrap_or(0.0);
    let elapsed = Duration::try_from_secs_f64(seconds).unwrap_or_default();
    match write_reports(root, &results, command, elapsed, write_docs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The median run of `server` among `runs`, by deliveries per server-CPU-second for
/// flat-out runs and by p99 latency for fixed-rate ones, or its first error when
/// every run failed; `None` when it did not run.
fn median(scenario: &str, server: Server, runs: &[(Server, Result<Value, String>)]) -> Option<Value> {
    let mut ok: Vec<&Value> =
        runs.iter().filter(|(s, _)| *s == server).filter_map(|(_, r)| r.as_ref().ok()).collect();
    if ok.is_empty() {
        let error = runs.iter().find_map(|(s, r)| if *s == server { r.as_ref().err() } else { None })?;
        return Some(json!({"scenario": scenario, "server": server.name(), "error": error}));
    }
    let key = |v: &Value| {
        if v["mode"].as_str() == Some("flat-out") {
            v["deliveries_per_server_cpu_s"].as_f64().unwrap_or(0.0)
        } else {
            v.pointer("/latency_ms/p99").and_then(Value::as_f64).unwrap_or(0.0)
        }
    };
    ok.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let middle = ok.get(ok.len().checked_div(2).unwrap_or(0))?;
    Some(json!({"scenario": scenario, "server": server.name(), "result": middle, "runs": ok.len()}))
}

/// Installs Bun and ws from npm into target/bench/peers (once).
fn install_peers(root: &Path) -> bool {
    let dir = root.join("target/bench/peers");
    if dir.join("node_modules/.bin/bun").exists() && dir.join("node_modules/ws").exists() {
        return true;
    }
    if std::fs::create_dir_all(&dir).is_err()
        || std::fs::write(dir.join("package.json"), "{\"private\":true}\n").is_err()
    {
        eprintln!("error: cannot create {}", dir.display());
        return false;
    }
    let bun = format!("bun@{BUN_VERSION}");
    let ws = format!("ws@{WS_VERSION}");
    let prefix = dir.display().to_string();
    let out =
        util::run("npm", &["install", "--prefix", &prefix, "--no-audit", "--no-fund", &bun, &ws], &[], true);
    if !out.success {
        eprintln!("error: npm install failed");
    }
    out.success
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// Waits (at most 15 s) until something accepts TCP connections on `addr`.
fn wait_listening(addr: SocketAddr, what: &str) -> Result<(), String> {
    let deadline = Instant::now().checked_add(Duration::from_secs(15)).unwrap_or_else(Instant::now);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not start listening on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Kills the child when dropped, so a failed run leaves no server behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.kill().is_ok() {
            let _reaped = self.0.wait();
        }
    }
}

fn start(root: &Path, server: Server, port: u16, metrics_port: u16) -> Result<Guard, String> {
    let peers = root.join("target/bench/peers");
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg("0");
    match server {
        Server::Wsbroker => {
            let metrics = format!("127.0.0.1:{metrics_port}");
            cmd.arg(root.join("target/release/wsbroker")).args([
                "--listen",
                &listen,
                "--metrics-listen",
                &metrics,
            ]);
        }
        Server::Bun => {
            cmd.arg(peers.join("node_modules/.bin/bun")).arg(root.join("bench/peers/bun-server.js"));
        }
        Server::NodeWs => {
            cmd.arg("node")
                .arg(root.join("bench/peers/node-ws-server.js"))
                .env("NODE_PATH", peers.join("node_modules"));
        }
    }
    cmd.env("PORT", port.to_string()).env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::null());
    let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", server.name()))?;
    let guard = Guard(child);
    let addr: SocketAddr = listen.parse().map_err(|e| format!("{e}"))?;
    wait_listening(addr, server.name())?;
    Ok(guard)
}

fn run_one(root: &Path, server: Server, scenario: &Scenario, timing: &[&str]) -> Result<Value, String> {
    let port = free_port()?;
    let metrics_port = free_port()?;
    let guard = start(root, server, port, metrics_port)?;
    let pid = guard.0.id().to_string();
    let addr = format!("127.0.0.1:{port}");
    let label = format!("{}/{}", server.name(), scenario.name);
    let wsload = root.join("target/release/wsload");
    let out = Command::new("taskset")
        .arg("-c")
        .arg("1")
        .arg(&wsload)
        .args(["--addr", &addr, "--server-pid", &pid, "--label", &label])
        .args(scenario.args)
        .args(timing)
        .output()
        .map_err(|e| format!("cannot run wsload: {e}"))?;
    // wsbroker reports what it dropped itself; the peers have no such counter.
    let server_dropped = (server == Server::Wsbroker).then(|| scrape_dropped(metrics_port)).flatten();
    drop(guard);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    let mut result: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("bad wsload output: {e}"))?;
    if let (Some(dropped), Some(obj)) = (server_dropped, result.as_object_mut()) {
        obj.insert("server_dropped_outbox_full".to_owned(), json!(dropped));
    }
    Ok(result)
}

/// wsbroker's own count of deliveries dropped for full outboxes, from its /metrics.
fn scrape_dropped(metrics_port: u16) -> Option<f64> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", metrics_port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix("wsbroker_dropped_total{reason=\"outbox_full\"} "))
        .and_then(|v| v.trim().parse().ok())
}

/// Two wsbroker nodes on CPU 0 sharing rooms through a redis-server (also on CPU 0);
/// wsload on CPU 1 splits subscribers across them. Server CPU is node 1's.
fn run_two_node(root: &Path, scenario: &Scenario, timing: &[&str]) -> Result<Value, String> {
    let redis_port = free_port()?;
    let redis = Command::new("taskset")
        .args([
            "-c",
            "0",
            "redis-server",
            "--port",
            &redis_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server (cargo xtask test installs it): {e}"))?;
    let _redis = Guard(redis);
    let redis_addr: SocketAddr = format!("127.0.0.1:{redis_port}").parse().map_err(|e| format!("{e}"))?;
    wait_listening(redis_addr, "redis-server")?;
    let url = format!("redis://{redis_addr}");
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let port = free_port()?;
        let child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(root.join("target/release/wsbroker"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--redis-url", &url])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start wsbroker: {e}"))?;
        let guard = Guard(child);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().map_err(|e| format!("{e}"))?;
        wait_listening(addr, "wsbroker")?;
        nodes.push((guard, addr.to_string()));
    }
    let (Some((first, addr1)), Some((_, addr2))) = (nodes.first(), nodes.get(1)) else {
        return Err("nodes did not start".to_owned());
    };
    let pid = first.0.id().to_string();
    let label = format!("wsbroker/{}", scenario.name);
    let out = Command::new("taskset")
        .args(["-c", "1"])
        .arg(root.join("target/release/wsload"))
        .args(["--addr", addr1, "--addr2", addr2, "--server-pid", &pid, "--label", &label])
        .args(scenario.args)
        .args(timing)
        .output()
        .map_err(|e| format!("cannot run wsload: {e}"))?;
    drop(nodes);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bad wsload output: {e}"))
}

fn get<'a>(results: &'a [Value], scenario: &str, server: &str) -> Option<&'a Value> {
    results.iter().find(|r| r["scenario"] == scenario && r["server"] == server).and_then(|r| r.get("result"))
}

fn num(v: Option<&Value>, path: &[&str]) -> Option<f64> {
    let mut cur = v?;
    for key in path {
        cur = cur.get(*key)?;
    }
    cur.as_f64()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

fn markdown(results: &[Value], command: &str, elapsed: Duration) -> String {
    let servers: Vec<&str> = ["wsbroker", "bun", "node-ws"]
        .into_iter()
        .filter(|s| results.iter().any(|r| r["server"] == *s))
        .collect();
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Produced by `{command}` in {:.0} s on {}. Each scenario starts a fresh server \
         pinned to CPU 0 (`taskset -c 0`); the load generator `wsload` runs on CPU 1. \
         Messages are 64 bytes; 1 s warm-up, then a 3 s measurement window. The fan-out, \
         fixed-rate and rooms scenarios run {REPEATS} times for wsbroker and Bun, the two taking \
         turns, and show the median run (by deliveries per CPU-second, and by p99); Node's \
         `ws`, a reference far from both, runs once. These \
         machines are shared and noisy, so compare servers within one run, as ratios.\n",
        elapsed.as_secs_f64(),
        machine()
    );
    let _ = writeln!(md, "![throughput and latency per server](docs/benchmarks.svg)\n");
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".to_owned(),
    };
    let fmt_m = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{:.2} M", v / 1e6));
    let fmt_ms = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.2}"));
    let fmt_pct = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{:.1} %", v * 100.0));

    let _ = writeln!(md, "## Fan-out throughput (flat out)\n");
    let _ = writeln!(
        md,
        "| scenario | server | deliveries / server-CPU-s | deliveries / s | dropped by the server | server CPU | wsload CPU | vs Bun |\n|---|---|---|---|---|---|---|---|"
    );
    for scenario in ["fanout-1000", "fanout-100x10"] {
        let bun = num(get(results, scenario, "bun"), &["deliveries_per_server_cpu_s"]);
        for server in &servers {
            let r = get(results, scenario, server);
            let per_cpu = num(r, &["deliveries_per_server_cpu_s"]);
            let saturated = r.and_then(|r| r["loadgen_saturated"].as_bool()).unwrap_or(false);
            let _ = writeln!(
                md,
                "| {scenario} | {server} | {} | {} | {} | {} | {}{} | {} |",
                fmt_m(per_cpu),
                fmt_m(num(r, &["deliveries_per_s"])),
                num(r, &["server_dropped_outbox_full"])
                    .map_or("not reported".to_owned(), |d| format!("{d:.0}")),
                fmt_pct(num(r, &["server_cpu_fraction"])),
                fmt_pct(num(r, &["loadgen_cpu_fraction"])),
                if saturated { " (wsload saturated)" } else { "" },
                ratio(per_cpu, bun),
            );
        }
    }
    let _ = writeln!(md, "\n## Latency at a fixed rate\n");
    let _ = writeln!(
        md,
        "Latency is measured from each message's scheduled send time, so a stalled \
         sender cannot hide delay (no coordinated omission).\n"
    );
    let _ = writeln!(
        md,
        "| scenario | server | p50 ms | p99 ms | p99.9 ms | max ms | server CPU | undelivered |\n|---|---|---|---|---|---|---|---|"
    );
    for scenario in ["fixed-rate", "rooms", "two-node"] {
        for server in &servers {
            if get(results, scenario, server).is_none() {
                continue;
            }
            let r = get(results, scenario, server);
            let _ = writeln!(
                md,
                "| {scenario} | {server} | {} | {} | {} | {} | {} | {} |",
                fmt_ms(num(r, &["latency_ms", "p50"])),
                fmt_ms(num(r, &["latency_ms", "p99"])),
                fmt_ms(num(r, &["latency_ms", "p999"])),
                fmt_ms(num(r, &["latency_ms", "max"])),
                fmt_pct(num(r, &["server_cpu_fraction"])),
                fmt_pct(num(r, &["loss"])),
            );
        }
    }
    let _ = writeln!(md, "\n## Memory\n");
    let _ = writeln!(md, "| scenario | server | figure |\n|---|---|---|");
    for server in &servers {
        let idle = num(get(results, "idle-10k", server), &["server_bytes_per_connection"]);
        let _ = writeln!(
            md,
            "| idle-10k | {server} | {} per idle connection |",
            idle.map_or("–".to_owned(), |b| format!("{:.1} KiB", b / 1024.0))
        );
    }
    for server in &servers {
        let peak = num(get(results, "saturation", server), &["server_peak_rss_kib"]);
        let _ = writeln!(
            md,
            "| saturation | {server} | peak RSS {} |",
            peak.map_or("–".to_owned(), |k| format!("{:.1} MiB", k / 1024.0))
        );
    }
    let _ = writeln!(md, "\n## Scenarios\n");
    for s in SCENARIOS {
        let _ = writeln!(md, "- `{}`: {} (`wsload {}`)", s.name, s.what, s.args.join(" "));
    }
    let _ = writeln!(
        md,
        "\nIn the flat-out scenarios the publisher writes as fast as TCP accepts, so most of \
         what it sent in the window is still in the kernel's socket buffers (or a server's \
         own queues) when the run ends; counting it as lost would measure buffer sizes. \
         The fan-out table therefore shows what the server itself dropped, which only \
         wsbroker reports (`wsbroker_dropped_total{{reason=\"outbox_full\"}}`). In the \
         fixed-rate scenarios, \"undelivered\" counts deliveries owed for messages sent \
         in the window that had not arrived once deliveries had stopped for 500 ms \
         (at most 5 s after the window closed)."
    );
    // Hand-written analysis kept beside the generator, so regenerating keeps it.
    if let Ok(notes) = std::fs::read_to_string(root().join("bench/NOTES.md")) {
        md.push('\n');
        md.push_str(&notes);
    }
    md
}

/// One chart: a title, and groups of (label, JSON path of the value).
type Panel<'a> = (&'a str, &'a [(&'a str, &'a [&'a str])]);

/// A grouped bar chart: deliveries per server-CPU-second for the fan-out scenarios,
/// and p50/p99 latency for the fixed-rate scenarios, one colour per server.
fn plot(results: &[Value]) -> String {
    let servers = [("wsbroker", "#d9480f"), ("bun", "#f2c14e"), ("node-ws", "#5c940d")];
    let present: Vec<(&str, &str)> =
        servers.into_iter().filter(|(s, _)| results.iter().any(|r| r["server"] == *s)).collect();
    let panels: [Panel<'_>; 2] = [
        (
            "deliveries per server-CPU-second (millions; higher is better)",
            &[
                ("fanout-1000", &["deliveries_per_server_cpu_s"]),
                ("fanout-100x10", &["deliveries_per_server_cpu_s"]),
            ],
        ),
        (
            "latency p50 / p99 (ms; lower is better; each group to its own scale)",
            &[
                ("fixed-rate p50", &["latency_ms", "p50"]),
                ("fixed-rate p99", &["latency_ms", "p99"]),
                ("rooms p50", &["latency_ms", "p50"]),
                ("rooms p99", &["latency_ms", "p99"]),
            ],
        ),
    ];
    let (width, panel_h) = (760.0_f64, 220.0_f64);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        panel_h * 2.0 + 40.0
    );
    for (p, (title, groups)) in panels.iter().enumerate() {
        let top = 20.0 + p as f64 * panel_h;
        let values: Vec<Vec<f64>> = groups
            .iter()
            .map(|(label, path)| {
                let scenario = label.split(' ').next().unwrap_or(label);
                present
                    .iter()
                    .map(|(s, _)| {
                        let v = num(get(results, scenario, s), path).unwrap_or(0.0);
                        if p == 0 { v / 1e6 } else { v }
                    })
                    .collect()
            })
            .collect();
        let max = values.iter().flatten().fold(0.0_f64, |a, b| a.max(*b)).max(1e-9);
        let _ = writeln!(svg, "<text x=\"10\" y=\"{}\" font-weight=\"bold\">{title}</text>", top + 4.0);
        let chart_top = top + 20.0;
        let chart_h = panel_h - 70.0;
        let group_w = (width - 40.0) / groups.len().max(1) as f64;
        let bar_w = (group_w - 20.0) / present.len().max(1) as f64;
        for (g, (label, _)) in groups.iter().enumerate() {
            let x0 = 20.0 + g as f64 * group_w;
            // Latency groups are scaled one by one against the two fastest servers'
            // values, so that a far slower one does not flatten them; its bar is cut
            // at the top and its label still gives the true value.
            let group_max = if p == 0 {
                max
            } else {
                let mut vs: Vec<f64> = values.get(g).cloned().unwrap_or_default();
                vs.sort_by(f64::total_cmp);
                vs.get(..2.min(vs.len())).unwrap_or_default().iter().fold(0.0_f64, |a, b| a.max(*b)).max(1e-9)
                    * 1.25
            };
            for (i, (_, colour)) in present.iter().enumerate() {
                let v = values.get(g).and_then(|vs| vs.get(i)).copied().unwrap_or(0.0);
                let h = chart_h * (v / group_max).min(1.0);
                let x = x0 + 10.0 + i as f64 * bar_w;
                let y = chart_top + chart_h - h;
                let _ = writeln!(
                    svg,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{v:.2}</text>",
                    bar_w - 4.0,
                    x + (bar_w - 4.0) / 2.0,
                    y - 3.0
                );
            }
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
                x0 + group_w / 2.0,
                chart_top + chart_h + 16.0
            );
        }
    }
    for (i, (name, colour)) in present.iter().enumerate() {
        let x = 20.0 + i as f64 * 120.0;
        let y = panel_h * 2.0 + 25.0;
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{colour}\"/><text x=\"{}\" y=\"{y}\">{name}</text>",
            y - 10.0,
            x + 16.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}
