//! The benchmark scenarios: what each drives, as load-client arguments.

use super::Server;

/// One scenario.
pub struct Scenario {
    pub name: &'static str,
    /// What it drives, in words, for the report.
    pub what: &'static str,
    /// The load client's arguments.
    pub args: &'static [&'static str],
    /// How the servers are set up for it.
    pub setup: Setup,
    /// Which load client drives it.
    pub client: Client,
}

/// A load client (both in `bench/`, run on CPU 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// `wsload`: every scenario's client.
    Wsload,
    /// `wsprobe`: a second client of another design (no async runtime, epoll and
    /// tungstenite's synchronous parser), for the fixed-rate scenario only, so that
    /// its figures do not rest on one client.
    Wsprobe,
}

impl Client {
    pub fn binary(self) -> &'static str {
        match self {
            Self::Wsload => "wsload",
            Self::Wsprobe => "wsprobe",
        }
    }
}

/// How the servers are set up for a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// One server, as it comes.
    Plain,
    /// Two wsbroker nodes sharing rooms through a local redis-server (wsbroker only).
    TwoNodes,
    /// wsbroker with `--auth-key`, and a token of this kind on every handshake
    /// (wsbroker only).
    Token(TokenKind),
    /// wsbroker only: every member offers the `wsbroker.v1` subprotocol (wsload's
    /// `--wsbroker-v1`), which the peers do not have.
    Sequenced,
    /// wss://: wsbroker and Bun serve TLS with the same certificate (generated for
    /// the run), and wsload trusts it. Node's `ws` is left out.
    Tls,
}

/// A kind of token, and the test key that signs and verifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Hs256,
    Es256,
}

impl TokenKind {
    /// The key the server verifies with, in `tests/fixtures/keys`.
    pub fn server_key(self) -> &'static str {
        match self {
            Self::Hs256 => "hmac.key",
            Self::Es256 => "ec256.pem",
        }
    }
}

impl Setup {
    /// Whether `server` runs scenarios with this setup.
    pub fn runs_on(self, server: Server) -> bool {
        match self {
            Self::Plain => true,
            Self::TwoNodes | Self::Token(_) | Self::Sequenced => server == Server::Wsbroker,
            Self::Tls => server != Server::NodeWs,
        }
    }
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "fanout-1000",
        what: "1 room, 1000 subscribers, 1 publisher flat out",
        args: &["--subscribers", "1000", "--publishers", "1"],
        setup: Setup::Plain,
        client: Client::Wsload,
    },
    Scenario {
        name: "fanout-100x10",
        what: "1 room, 100 subscribers, 10 publishers flat out",
        args: &["--subscribers", "100", "--publishers", "10"],
        setup: Setup::Plain,
        client: Client::Wsload,
    },
    Scenario {
        name: "fanout-1000-v1",
        what: "fanout-1000 with every member on wsbroker.v1: each message numbered, its v1 frame built once",
        args: &["--subscribers", "1000", "--publishers", "1", "--wsbroker-v1"],
        setup: Setup::Sequenced,
        client: Client::Wsload,
    },
    Scenario {
        name: "fixed-rate",
        what: "1 room, 1000 subscribers, 1 publisher at 1000 msg/s",
        args: &["--subscribers", "1000", "--publishers", "1", "--rate", "1000"],
        setup: Setup::Plain,
        client: Client::Wsload,
    },
    Scenario {
        name: "fixed-rate-wsprobe",
        what: "fixed-rate, measured by wsprobe instead of wsload",
        args: &["--subscribers", "1000", "--rate", "1000"],
        setup: Setup::Plain,
        client: Client::Wsprobe,
    },
    Scenario {
        name: "rooms",
        what: "100 rooms x 10 members, each member 10 msg/s",
        args: &["--rooms", "100", "--subscribers", "0", "--publishers", "10", "--rate", "10"],
        setup: Setup::Plain,
        client: Client::Wsload,
    },
    Scenario {
        name: "idle-10k",
        what: "10,000 idle connections",
        args: &["--idle", "10000"],
        setup: Setup::Plain,
        client: Client::Wsload,
    },
    Scenario {
        name: "fanout-1000-tls",
        what: "fanout-1000 over TLS (wss://)",
        args: &["--subscribers", "1000", "--publishers", "1"],
        setup: Setup::Tls,
        client: Client::Wsload,
    },
    Scenario {
        name: "idle-10k-tls",
        what: "idle-10k over TLS (wss://)",
        args: &["--idle", "10000"],
        setup: Setup::Tls,
        client: Client::Wsload,
    },
    Scenario {
        name: "saturation",
        what: "100 never-reading clients, 10 subscribers, 1 publisher flat out",
        args: &["--stalled", "100", "--subscribers", "10", "--publishers", "1"],
        setup: Setup::Plain,
        client: Client::Wsload,
    },
    Scenario {
        name: "two-node",
        what: "two wsbroker nodes over Redis, 1 room, 200 subscribers split across them, 1 publisher at 1000 msg/s",
        args: &["--subscribers", "200", "--publishers", "1", "--rate", "1000"],
        setup: Setup::TwoNodes,
        client: Client::Wsload,
    },
    Scenario {
        name: "handshakes",
        what: "20,000 connections opened and dropped, 32 at a time, no authentication",
        args: &["--handshakes", "20000", "--concurrency", "32"],
        setup: Setup::Plain,
        client: Client::Wsload,
    },
    Scenario {
        name: "handshakes-tls",
        what: "the same over TLS (wss://): a full TLS handshake (ECDSA P-256, no resumption) before each upgrade",
        args: &["--handshakes", "20000", "--concurrency", "32"],
        setup: Setup::Tls,
        client: Client::Wsload,
    },
    Scenario {
        name: "handshakes-hs256",
        what: "the same, each with an HS256 token (--auth-key with an HMAC secret)",
        args: &["--handshakes", "20000", "--concurrency", "32"],
        setup: Setup::Token(TokenKind::Hs256),
        client: Client::Wsload,
    },
    Scenario {
        name: "handshakes-es256",
        what: "the same, each with an ES256 token (--auth-key with an EC P-256 public key)",
        args: &["--handshakes", "20000", "--concurrency", "32"],
        setup: Setup::Token(TokenKind::Es256),
        client: Client::Wsload,
    },
];

/// Whether a scenario's figure is a median of repeated runs (see `REPEATS`): the
/// fan-out, fixed-rate (with either client) and rooms scenarios, where the servers are close enough that
/// one run cannot tell them apart.
pub fn is_repeated(name: &str) -> bool {
    name.starts_with("fanout") || name.starts_with("fixed-rate") || name == "rooms"
}
