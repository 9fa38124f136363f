//! The processes a benchmark run is made of: the peers installed from npm, the servers
//! pinned to CPU 0, the load client (wsload, or wsprobe) pinned to CPU 1, and
//! redis-server for the two-node run.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use wsbench::keys;

use super::Server;
use super::scenarios::{Scenario, Setup};
use super::tls::{self, Certificate};
use super::tokens;
use crate::command;
use crate::project::Project;

/// Versions of the peers, pinned so that runs compare like with like.
const BUN_VERSION: &str = "1.4.5";
const WS_VERSION: &str = "8.23.0";

/// Installs Bun and ws from npm into target/bench/peers (once).
pub fn install_peers(project: &Project) -> anyhow::Result<()> {
    let dir = project.join("target/bench/peers");
    if dir.join("node_modules/.bin/bun").exists() && dir.join("node_modules/ws").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("package.json"), "{\"private\":true}\n"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let (bun, ws, prefix) =
        (format!("bun@{BUN_VERSION}"), format!("ws@{WS_VERSION}"), dir.display().to_string());
    let args = ["install", "--prefix", &prefix, "--no-audit", "--no-fund", &bun, &ws];
    if !command::run(&project.root, "npm", &args, &[], true).success {
        bail!("npm install of the peers failed");
    }
    Ok(())
}

/// How often a server is started on fresh ports when the ones picked were taken
/// before it could bind them (see [`free_ports`]).
const START_ATTEMPTS: u8 = 3;

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> Result<u16, String> {
    free_ports().map(|[port]| port)
}

/// `N` distinct free loopback ports: all bound at once (so no two are the same),
/// then released for the servers to take. Something else may still take one in
/// between (a client's connection gets its local port from the same range), which
/// is why a server that exits at once is started again on fresh ports.
fn free_ports<const N: usize>() -> Result<[u16; N], String> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().map_err(|e| e.to_string())?.port();
    }
    Ok(ports)
}

/// Why a server is not serving.
enum NotListening {
    /// It exited first (a port it was given was taken, or a bad flag).
    Exited(String),
    /// Still running after 15 s, but not accepting.
    Silent(String),
}

impl From<NotListening> for String {
    fn from(e: NotListening) -> Self {
        match e {
            NotListening::Exited(e) | NotListening::Silent(e) => e,
        }
    }
}

/// Waits (at most 15 s) until something accepts TCP connections on `addr`, and
/// gives up at once if `child` (the process meant to) has exited.
fn wait_listening(addr: SocketAddr, what: &str, child: &mut Child) -> Result<(), NotListening> {
    let deadline = Instant::now().checked_add(Duration::from_secs(15)).unwrap_or_else(Instant::now);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(NotListening::Exited(format!(
                "{what} exited ({status}) instead of listening on {addr}"
            )));
        }
        if Instant::now() > deadline {
            return Err(NotListening::Silent(format!("{what} did not start listening on {addr}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Kills the child when dropped, so a failed run leaves no server behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.kill().is_ok() {
            let _reaped = self.0.wait();
        }
    }
}

/// Starts `server` on CPU 0, listening on `port` (wsbroker also serves its metrics on
/// `metrics_port`, and takes `extra` flags), serving TLS with `tls` if given, and
/// waits until it accepts connections.
fn start(
    project: &Project,
    server: Server,
    port: u16,
    metrics_port: u16,
    extra: &[String],
    tls: Option<&Certificate>,
) -> Result<Running, NotListening> {
    let peers = project.join("target/bench/peers");
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg("0");
    match server {
        Server::Wsbroker => {
            let metrics = format!("127.0.0.1:{metrics_port}");
            cmd.arg(project.join("target/release/wsbroker")).args([
                "--listen",
                &listen,
                "--metrics-listen",
                &metrics,
            ]);
            cmd.args(extra);
            if let Some(tls) = tls {
                cmd.arg("--tls-cert").arg(&tls.cert).arg("--tls-key").arg(&tls.key);
            }
        }
        Server::Bun => {
            cmd.arg(peers.join("node_modules/.bin/bun")).arg(project.join("bench/peers/bun-server.js"));
        }
        Server::NodeWs => {
            cmd.arg("node")
                .arg(project.join("bench/peers/node-ws-server.js"))
                .env("NODE_PATH", peers.join("node_modules"));
        }
    }
    if let Some(tls) = tls {
        // The peers' scripts read these (wsbroker has its flags above).
        cmd.env("TLS_CERT", &tls.cert).env("TLS_KEY", &tls.key);
    }
    cmd.env("PORT", port.to_string()).env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::null());
    let child =
        cmd.spawn().map_err(|e| NotListening::Silent(format!("cannot start {}: {e}", server.name())))?;
    let mut running = Running(child);
    let addr: SocketAddr = listen.parse().map_err(|e| NotListening::Silent(format!("{e}")))?;
    wait_listening(addr, server.name(), &mut running.0)?;
    Ok(running)
}

/// Runs the scenario's load client on CPU 1 with `args` and parses its report.
fn load(project: &Project, args: &[&str], scenario: &Scenario, timing: &[&str]) -> Result<Value, String> {
    let client = scenario.client.binary();
    let out = Command::new("taskset")
        .args(["-c", "1"])
        .arg(project.join("target/release").join(client))
        .args(args)
        .args(scenario.args)
        .args(timing)
        .output()
        .map_err(|e| format!("cannot run {client}: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bad {client} output: {e}"))
}

/// One run of `scenario` against a fresh `server`.
pub fn run_one(
    project: &Project,
    server: Server,
    scenario: &Scenario,
    timing: &[&str],
) -> Result<Value, String> {
    let (server_flags, token) = match scenario.setup {
        Setup::Token(kind) => {
            let key = project.join("tests/fixtures/keys").join(kind.server_key()).display().to_string();
            (vec!["--auth-key".to_owned(), key], Some(tokens::mint(project, kind)?))
        }
        _ => (Vec::new(), None),
    };
    let certificate = match scenario.setup {
        Setup::Tls => Some(tls::generate(project)?),
        _ => None,
    };
    let mut attempt = 1;
    let (running, port, metrics_port) = loop {
        let [port, metrics_port] = free_ports()?;
        match start(project, server, port, metrics_port, &server_flags, certificate.as_ref()) {
            Ok(running) => break (running, port, metrics_port),
            Err(NotListening::Exited(e)) if attempt < START_ATTEMPTS => {
                eprintln!("   {e}; starting it again on other ports");
                attempt = attempt.saturating_add(1);
            }
            Err(e) => return Err(e.into()),
        }
    };
    let (pid, addr) = (running.0.id().to_string(), format!("127.0.0.1:{port}"));
    let label = format!("{}/{}", server.name(), scenario.name);
    let mut args = vec!["--addr", &addr, "--server-pid", &pid, "--label", &label];
    if let Some(token) = &token {
        args.extend(["--token", token.as_str()]);
    }
    let ca = certificate.as_ref().map(|c| c.cert.display().to_string());
    if let Some(ca) = &ca {
        args.extend(["--tls-ca", ca.as_str()]);
    }
    let result = load(project, &args, scenario, timing);
    // wsbroker reports what it dropped itself; the peers have no such counter.
    let server_dropped = (server == Server::Wsbroker).then(|| scrape_dropped(metrics_port)).flatten();
    drop(running);
    let mut result = result?;
    if let (Some(dropped), Some(obj)) = (server_dropped, result.as_object_mut()) {
        obj.insert(keys::SERVER_DROPPED_OUTBOX_FULL.to_owned(), json!(dropped));
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

/// Starts `program args` on CPU 0, quiet (`RUST_LOG=warn`, output discarded).
fn on_cpu_0(program: &str, args: &[&str]) -> std::io::Result<Running> {
    let child = Command::new("taskset")
        .args(["-c", "0", program])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Running(child))
}

/// Two wsbroker nodes on CPU 0 sharing rooms through a redis-server (also on CPU 0);
/// wsload on CPU 1 splits subscribers across them. Server CPU is node 1's.
pub fn run_two_node(project: &Project, scenario: &Scenario, timing: &[&str]) -> Result<Value, String> {
    let redis_port = free_port()?.to_string();
    let redis_args = ["--port", &redis_port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
    // Held (and so running) until the run ends.
    let mut redis = on_cpu_0("redis-server", &redis_args)
        .map_err(|e| format!("cannot start redis-server (cargo xtask test installs it): {e}"))?;
    let redis_addr: SocketAddr = format!("127.0.0.1:{redis_port}").parse().map_err(|e| format!("{e}"))?;
    wait_listening(redis_addr, "redis-server", &mut redis.0)?;
    let url = format!("redis://{redis_addr}");
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let port = free_port()?;
        let wsbroker = project.join("target/release/wsbroker").display().to_string();
        let mut running =
            on_cpu_0(&wsbroker, &["--listen", &format!("127.0.0.1:{port}"), "--redis-url", &url])
                .map_err(|e| format!("cannot start wsbroker: {e}"))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().map_err(|e| format!("{e}"))?;
        wait_listening(addr, "wsbroker", &mut running.0)?;
        nodes.push((running, addr.to_string()));
    }
    let (Some((first, addr1)), Some((_, addr2))) = (nodes.first(), nodes.get(1)) else {
        return Err("nodes did not start".to_owned());
    };
    let pid = first.0.id().to_string();
    let label = format!("wsbroker/{}", scenario.name);
    load(
        project,
        &["--addr", addr1, "--addr2", addr2, "--server-pid", &pid, "--label", &label],
        scenario,
        timing,
    )
}

/// Raises this process's open-files limit (children inherit it): many connections
/// need many descriptors.
pub fn raise_fd_limit() {
    if let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE)
        && soft < hard
        && rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard).is_err()
    {
        eprintln!("warning: could not raise RLIMIT_NOFILE");
    }
}
