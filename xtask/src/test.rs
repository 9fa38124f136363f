//! `cargo xtask test`: the README's test command. Installs what the test suite needs
//! on a fresh machine (`redis-server`, from Debian's packages, when absent), then
//! runs `cargo test` with any extra arguments.

use std::process::{Command, ExitCode, Stdio};

use crate::util;

pub fn run(args: &[String]) -> ExitCode {
    if let Err(e) = ensure_redis_server() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let mut cargo_args = vec!["test"];
    cargo_args.extend(args.iter().map(String::as_str));
    if util::run("cargo", &cargo_args, &[], true).success { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn found(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Makes sure `redis-server` is on PATH, installing Debian's package if it is not.
/// The Redis tests start their own servers from it and fail (never skip) without it.
pub fn ensure_redis_server() -> Result<(), String> {
    if found("redis-server") {
        return Ok(());
    }
    println!("== redis-server not found; installing it from Debian's packages");
    if !found("apt-get") {
        return Err("redis-server is missing and apt-get is not available to install it".to_owned());
    }
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    let update = util::run("apt-get", &["update", "-qq"], &env, true);
    let install = util::run(
        "apt-get",
        &["install", "-y", "-qq", "--no-install-recommends", "redis-server"],
        &env,
        true,
    );
    if !(update.success && install.success && found("redis-server")) {
        return Err("could not install redis-server (apt-get needs root)".to_owned());
    }
    // The package starts a system service on 6379; the tests use their own ports,
    // so it is harmless, but stop it to leave the machine as it was.
    let _stopped = Command::new("service")
        .args(["redis-server", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    Ok(())
}
