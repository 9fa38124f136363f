//! wsbroker: a WebSocket room broker that no client, fault or load can make panic.
//!
//! Clients connect over WebSocket; the request path names the room; every text or
//! binary message a client sends is delivered to every member of its room.
//! `docs/design.md` tells the design and why it is so.
//!
//! # The path of one message
//!
//! In the order a message travels, one function per hop:
//! 1. [`Server::run`] accepts the socket; `server::Acceptor::accept` admits it and
//!    spawns `server::handshake::serve`, which upgrades it under the rules of
//!    `server::admission` (with `--auth-key`, the token: [`auth`]) and calls
//!    `connection::open`.
//! 2. `connection::open` starts the writer task; `Connection::run` registers with
//!    the broker (`Op::Join`) and runs the reader.
//! 3. `connection::reader::Reader::run` reads a frame, builds the server frame once
//!    (`connection::frame::data`) and sends `Op::Publish` into the broker's inbox
//!    (failure location ①).
//! 4. [`broker::run`] receives it with what else is waiting (location ②) and, with
//!    the publishes to the same room that arrived right after it (a run,
//!    `Broker::extends_run`), calls `Broker::publish_run`, which calls
//!    `Rooms::publish`: one `try_send` of a shared clone per member's outbox, the
//!    run's frames back to back where it is several (locations ③ and ④).
//! 5. `connection::writer::run` takes a batch from its outbox (location ⑤) and
//!    `connection::write::write_frames` puts it on the socket with one write.
//!
//! # Modules, one per role
//! - [`server`]: binds, accepts, admits and upgrades connections, supervises the
//!   broker, drains and shuts down.
//! - `connection`: one reader task and one writer task per connection.
//! - [`auth`]: with `--auth-key`, who may join a room and who may publish to it.
//! - [`broker`]: the one task that owns all room state, and its proven core.
//! - [`cluster`]: with `--redis-url`, the bridge that carries rooms across nodes.
//! - [`config`]: command-line flags, validated so no value can reach a panicking API.
//! - [`metrics`]: counters and gauges, rendered for Prometheus.
//! - [`endpoint`]: the operators' HTTP listener: `/metrics` and `/healthz`.
//! - [`tls`]: with `--tls-cert` and `--tls-key`, wss://.
//! - [`reload`]: what SIGHUP rereads without a restart.
//! - [`error`]: why the server could not start or had to stop.
//! - [`signals`], [`logging`], [`panic_hook`], [`fd_limit`], `systemd`: process
//!   plumbing for the binary.

// These docs are for wsbroker's developers and name the private parts each hop runs
// through: read them with `cargo doc --document-private-items`, where those links
// resolve.
#![allow(rustdoc::private_intra_doc_links)]
#![cfg_attr(
    not(test),
    deny(
        clippy::print_stdout,
        clippy::print_stderr,
        reason = "`print!` and its kin panic when the stream is closed"
    )
)]

#[cfg(feature = "no-panic")]
#[doc(hidden)]
pub mod audit;
pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
pub(crate) mod connection;
pub mod endpoint;
pub mod error;
pub mod fd_limit;
pub mod logging;
pub mod metrics;
pub mod panic_hook;
pub mod reload;
pub mod server;
pub mod signals;
pub(crate) mod systemd;
pub mod tls;

pub use broker::{BrokerStats, ConnId};
pub use config::Config;
pub use error::{BrokerStop, Error};
pub use server::{Server, ServerHandle};
