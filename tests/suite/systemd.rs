//! Running under systemd: the notifications the binary sends on `NOTIFY_SOCKET`
//! (received here on a datagram socket of the test's own), and the unit file in
//! `contrib/`, checked with `systemd-analyze verify` where that command exists.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use crate::common;

/// The next notification, as its lines.
fn next(socket: &UnixDatagram) -> Vec<String> {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("no notification within 10 s");
    String::from_utf8(buf[..n].to_vec()).unwrap().lines().map(str::to_owned).collect()
}

#[test]
fn the_server_tells_systemd_when_it_is_ready_reloading_and_stopping() {
    let path = std::env::temp_dir().join(format!("wsbroker-notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (mut child, _addr) = common::spawn_binary_with_env(
        &["--drain-duration", "100ms"],
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    );
    let pid = child.id().to_string();
    assert_eq!(next(&socket), ["READY=1"], "once listening");

    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let reloading = next(&socket);
    assert_eq!(reloading[0], "RELOADING=1");
    let usec = reloading[1].strip_prefix("MONOTONIC_USEC=").expect("RELOADING=1 carries MONOTONIC_USEC");
    assert!(usec.parse::<u64>().unwrap() > 0);
    assert_eq!(next(&socket), ["READY=1", "STATUS=reloaded"]);

    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert_eq!(next(&socket), ["STOPPING=1", "STATUS=draining"]);
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_unit_file_names_only_real_settings_and_passes_systemd_analyze_verify() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/wsbroker.service")).unwrap();
    for needed in ["Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "LimitNOFILE=", "DynamicUser=yes"] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
    // Every WSBROKER_* variable the unit's comments suggest exists.
    let help = Command::new(env!("CARGO_BIN_EXE_wsbroker")).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for word in unit.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("WSBROKER_") && word.len() > "WSBROKER_".len() {
            assert!(help.contains(&format!("env: {word}=")), "--help has no {word}");
        }
    }
    let Ok(analyze) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed here; the unit's syntax is not verified");
        return;
    };
    assert!(analyze.status.success());
    // verify checks that ExecStart= exists, so point it at the binary under test.
    let dir = std::env::temp_dir().join(format!("wsbroker-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("wsbroker.service");
    std::fs::write(&file, unit.replace("/usr/local/bin/wsbroker", env!("CARGO_BIN_EXE_wsbroker"))).unwrap();
    let verify = Command::new("systemd-analyze").arg("verify").arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
