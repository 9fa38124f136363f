//! The binary as a user runs it: bad flags exit 2 with one line; SIGTERM and SIGINT
//! close every client with 1001 and exit 0.

use crate::common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::common::expect_close;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const BIN: &str = env!("CARGO_BIN_EXE_wsbroker");

/// Runs the binary with `args` and returns its exit code and stderr.
fn run_to_end(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN).args(args).env_remove("RUST_LOG").output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_usage_error(args: &[&str], mentions: &str) {
    // The server on an ephemeral port unless the flag is what is tested (and not for
    // a subcommand such as `token`): a case that passed every check by mistake must
    // not depend on the default port being free, nor race another test for it.
    let mut args = args.to_vec();
    let server = args.first().is_none_or(|a| a.starts_with("--"));
    if server && !args.contains(&"--listen") {
        args.extend(["--listen", "127.0.0.1:0"]);
    }
    let args = args.as_slice();
    let (code, stderr) = run_to_end(args);
    assert_eq!(code, Some(2), "{args:?} must exit 2; stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?} must print one line, got: {stderr}");
    assert!(stderr.contains(mentions), "{args:?}: '{stderr}' should mention '{mentions}'");
}

#[test]
fn invalid_configuration_exits_2_with_one_line() {
    assert_usage_error(&["--broker-capacity", "0"], "--broker-capacity");
    assert_usage_error(&["--outbox-capacity", "0"], "--outbox-capacity");
    assert_usage_error(&["--outbox-capacity", "99999999999"], "--outbox-capacity");
    assert_usage_error(&["--listen", "not-an-address"], "--listen");
    assert_usage_error(&["--shutdown-timeout", "0s"], "--shutdown-timeout");
    assert_usage_error(&["--shutdown-timeout", "100000h"], "--shutdown-timeout");
    assert_usage_error(&["--log-format", "xml"], "--log-format");
    assert_usage_error(&["--no-such-flag"], "--no-such-flag");
    assert_usage_error(&["--max-message-size", "0"], "--max-message-size");
    assert_usage_error(&["--max-message-size", "2GiB"], "--max-message-size");
    assert_usage_error(&["--max-message-size", "12 parsecs"], "--max-message-size");
    assert_usage_error(&["--read-buffer-size", "0"], "--read-buffer-size");
    assert_usage_error(&["--write-buffer-size", "1TiB"], "--write-buffer-size");
    assert_usage_error(&["--max-connections", "0"], "--max-connections");
    assert_usage_error(&["--max-room-length", "0"], "--max-room-length");
    assert_usage_error(&["--handshake-timeout", "0ms"], "--handshake-timeout");
    assert_usage_error(&["--ping-interval", "0s"], "--ping-interval");
    assert_usage_error(&["--write-timeout", "forever"], "--write-timeout");
    assert_usage_error(&["--slow-consumer", "ignore"], "--slow-consumer");
    assert_usage_error(&["--worker-threads", "5000"], "--worker-threads");
    assert_usage_error(&["--metrics-listen", "nowhere"], "--metrics-listen");
    // Valid one by one, invalid together: idle connections would be closed between pings.
    assert_usage_error(&["--ping-interval", "30s", "--idle-timeout", "10s"], "--idle-timeout");
}

#[test]
fn a_port_in_use_exits_2_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    assert_usage_error(&["--listen", &addr], "cannot listen on");
}

#[test]
fn help_lists_every_flag_and_exits_0() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--broker-capacity",
        "--outbox-capacity",
        "--no-echo",
        "--slow-consumer",
        "--max-message-size",
        "--read-buffer-size",
        "--write-buffer-size",
        "--max-connections",
        "--max-room-length",
        "--handshake-timeout",
        "--ping-interval",
        "--idle-timeout",
        "--write-timeout",
        "--allowed-origin",
        "--metrics-listen",
        "--worker-threads",
        "--shutdown-timeout",
        "--log-format",
        "--auth-key",
        "--auth-issuer",
        "--auth-audience",
        "--auth-leeway",
        "--tls-cert",
        "--tls-key",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

/// Starts the binary on an ephemeral port and checks its startup log: the
/// RLIMIT_NOFILE soft limit was raised to the hard limit, and both are logged.
fn spawn_server(extra: &[&str]) -> (Child, String) {
    let (child, addr, startup) = common::spawn_binary(extra);
    let rlimit = startup.iter().find(|v| v["message"] == "RLIMIT_NOFILE").expect("RLIMIT_NOFILE is logged");
    assert_eq!(rlimit["soft"], rlimit["hard"], "soft limit not raised: {rlimit}");
    assert!(rlimit["soft_before"].is_u64(), "{rlimit}");
    (child, addr)
}

async fn signal_closes_clients_with_1001_and_exits_0(signal: &str) {
    let (mut child, addr) = spawn_server(&["--shutdown-timeout", "2s"]);
    let (mut a, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/room")).await.unwrap();
    let (mut b, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/other")).await.unwrap();
    let status = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(expect_close(&mut a).await, CloseCode::Away);
    assert_eq!(expect_close(&mut b).await, CloseCode::Away);
    let code = tokio::task::spawn_blocking(move || common::wait_exit(&mut child, Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1001_and_exits_0() {
    signal_closes_clients_with_1001_and_exits_0("-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_closes_clients_with_1001_and_exits_0() {
    signal_closes_clients_with_1001_and_exits_0("-INT").await;
}

#[test]
fn help_into_a_closed_pipe_exits_0_without_a_panic() {
    // A pipe whose reading end is already closed: every write to it fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN).arg("--help").stdout(writer).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unusable_tls_certificates_exit_2_with_one_line() {
    let dir = common::tls::dir("cli");
    let (good, other) = (common::tls::TestCert::new(&dir, "good"), common::tls::TestCert::new(&dir, "other"));
    let expired = common::tls::TestCert::expired(&dir, "expired");
    let path = |p: &std::path::Path| p.display().to_string();
    assert_usage_error(&["--tls-cert", &path(&good.cert_file)], "--tls-key");
    assert_usage_error(&["--tls-key", &path(&good.key_file)], "--tls-cert");
    assert_usage_error(&["--tls-cert", "/no/such.crt", "--tls-key", &path(&good.key_file)], "cannot read");
    assert_usage_error(
        &["--tls-cert", &path(&good.key_file), "--tls-key", &path(&good.key_file)],
        "--tls-cert",
    );
    assert_usage_error(
        &["--tls-cert", &path(&good.cert_file), "--tls-key", &path(&other.key_file)],
        "does not match",
    );
    assert_usage_error(
        &["--tls-cert", &path(&expired.cert_file), "--tls-key", &path(&expired.key_file)],
        "expired",
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Key and certificate files are read before any port is taken: on a port already
/// in use, a bad file is still the error reported (the server never listened).
#[test]
fn bad_files_are_reported_before_the_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    assert_usage_error(&["--listen", &addr, "--auth-key", "/no/such/key.pem"], "/no/such/key.pem");
    let dir = common::tls::dir("cli-order");
    let good = common::tls::TestCert::new(&dir, "good");
    let key = good.key_file.display().to_string();
    assert_usage_error(&["--listen", &addr, "--tls-cert", "/no/such.crt", "--tls-key", &key], "/no/such.crt");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unusable_auth_keys_and_token_arguments_exit_2_with_one_line() {
    let fixture = |name: &str| common::tokens::key(name).display().to_string();
    assert_usage_error(&["--auth-key", "/no/such/key.pem"], "cannot read");
    assert_usage_error(&["--auth-key", &fixture("rsa-private.pem")], "public key");
    assert_usage_error(&["--auth-issuer", "https://auth.example"], "--auth-key");
    assert_usage_error(&["--auth-leeway", "2d"], "--auth-leeway");
    assert_usage_error(&["token", "--key", &fixture("rsa.pem")], "HMAC secret");
    assert_usage_error(&["token", "--key", &fixture("hmac.key"), "--ttl", "0s"], "--ttl");
}

/// `wsbroker token` mints what the server accepts, and a SIGHUP makes the server
/// reread its key file: a token from the new key is accepted, one from the old key
/// refused, and a connection made with the old key keeps going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minted_token_is_accepted_and_sighup_rotates_the_key() {
    let dir = std::env::temp_dir().join(format!("wsbroker-cli-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, old_key, new_key) = (dir.join("live.key"), dir.join("old.key"), dir.join("new.key"));
    std::fs::write(&old_key, "o".repeat(40)).unwrap();
    std::fs::write(&new_key, "n".repeat(40)).unwrap();
    std::fs::copy(&old_key, &key).unwrap();
    let mint = |secret: &std::path::Path| {
        let out = Command::new(BIN)
            .args(["token", "--key", &secret.display().to_string(), "--sub", "cli", "--sub-room", "/lobby"])
            .args(["--pub-room", "/lobby", "--ttl", "10m"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (mut child, addr) = spawn_server(&["--auth-key", &key.display().to_string()]);
    let url = format!("ws://{addr}/lobby");
    // Minted from the server's own key file, so the token's `kid` names it (`live`).
    let old_token = mint(&key);
    let (mut established, _) =
        tokio_tungstenite::connect_async(common::with_bearer(&url, &old_token)).await.unwrap();
    // A member once its own message comes back to it.
    common::send_text(&mut established, "joined").await;
    assert_eq!(common::recv(&mut established).await, tokio_tungstenite::tungstenite::Message::text("joined"));

    std::fs::copy(&new_key, &key).unwrap();
    let status = Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let new_token = mint(&key);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut newcomer = loop {
        match tokio_tungstenite::connect_async(common::with_bearer(&url, &new_token)).await {
            Ok((ws, _)) => break ws,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("the new key was never accepted: {e}"),
        }
    };
    assert_eq!(common::refused(common::with_bearer(&url, &old_token)).await.status(), 401);
    common::send_text(&mut newcomer, "rotated").await;
    assert_eq!(
        common::recv(&mut established).await,
        tokio_tungstenite::tungstenite::Message::text("rotated")
    );

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let code = tokio::task::spawn_blocking(move || common::wait_exit(&mut child, Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    std::fs::remove_dir_all(dir).unwrap();
}
