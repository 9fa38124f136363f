//! What the documented commands need on a fresh machine, installed when absent:
//! `redis-server` (the multi-node tests start their own) and `cargo-deny` (the
//! audit's supply-chain gate).

use anyhow::bail;

use crate::command::{self, found};
use crate::project::Project;

/// Makes sure `redis-server` is on PATH, installing Debian's package if it is not.
/// The Redis tests start their own servers from it and fail (never skip) without it.
pub fn redis_server(project: &Project) -> anyhow::Result<()> {
    if found("redis-server", &["--version"]) {
        return Ok(());
    }
    println!("== redis-server not found; installing it from Debian's packages");
    if !found("apt-get", &["--version"]) {
        bail!("redis-server is missing and apt-get is not available to install it");
    }
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    let update = command::run(&project.root, "apt-get", &["update", "-qq"], &env, true);
    let install = command::run(
        &project.root,
        "apt-get",
        &["install", "-y", "-qq", "--no-install-recommends", "redis-server"],
        &env,
        true,
    );
    if !(update.success && install.success && found("redis-server", &["--version"])) {
        bail!("could not install redis-server (apt-get needs root)");
    }
    // The package starts a system service on 6379; the tests use their own ports,
    // so it is harmless, but stop it to leave the machine as it was.
    let stopped = command::run(&project.root, "service", &["redis-server", "stop"], &[], false);
    if !stopped.success {
        println!("(the redis-server system service could not be stopped; the tests do not use it)");
    }
    Ok(())
}

/// Makes sure `cargo deny` runs, installing cargo-deny from crates.io (about three
/// minutes) if it does not.
pub fn cargo_deny(project: &Project) -> anyhow::Result<()> {
    if found("cargo", &["deny", "--version"]) {
        return Ok(());
    }
    println!(
        "== cargo-deny not found; installing it with `cargo install --locked cargo-deny` (about 3 minutes)"
    );
    let install = command::run(&project.root, "cargo", &["install", "--locked", "cargo-deny"], &[], true);
    if !install.success || !found("cargo", &["deny", "--version"]) {
        bail!("could not install cargo-deny: {}", command::tail(&install.text, 5));
    }
    Ok(())
}
