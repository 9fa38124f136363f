//! The integration suite: real servers on `127.0.0.1:0` and real clients, one module
//! per area. One test binary, so that the suite links once; the tests that install a
//! process-wide log subscriber are binaries of their own (`tests/*.rs`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test helpers: a failed expectation must fail the test, as in #[test] fns (clippy.toml)"
)]

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod backpressure;
mod broadcast;
mod cli;
mod delivery;
mod drain;
mod failures;
mod hostile;
mod limits;
mod memory;
mod metrics;
mod publish_api;
mod redis;
mod shutdown;
mod systemd;
mod tls;
