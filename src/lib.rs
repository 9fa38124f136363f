//! wsbroker: a WebSocket room broker that no client, fault or load can make panic.
//!
//! Clients connect over WebSocket; the request path names the room; every text or
//! binary message a client sends is delivered to every member of its room.
//!
//! Modules, one per role, in the order a message travels:
//! - [`server`]: binds, accepts, upgrades, supervises the broker, shuts down.
//! - [`connection`]: one reader task and one writer task per connection
//!   (failure locations ① in `connection::reader`, ⑤ in `connection::writer`).
//! - [`broker`]: the one task that owns all room state (locations ② and ④).
//! - [`cluster`]: with `--redis-url`, the bridge that carries rooms across nodes.
//! - [`config`]: command-line flags, validated so no value can reach a panicking API.
//! - [`metrics`]: counters, and the `/metrics` and `/healthz` endpoint.
//! - [`error`]: why the server could not start or had to stop.
//! - [`shutdown`], [`logging`], [`panic_hook`], [`fd_limit`]: process plumbing for the
//!   binary.

#[cfg(feature = "no-panic")]
#[doc(hidden)]
pub mod audit;
pub mod broker;
pub mod cluster;
pub mod config;
pub(crate) mod connection;
pub mod error;
pub mod fd_limit;
pub mod logging;
pub mod metrics;
pub mod panic_hook;
pub mod server;
pub mod shutdown;

pub use broker::{BrokerStats, ConnId};
pub use config::Config;
pub use error::{BrokerStop, Error};
pub use server::{Server, ServerHandle};
