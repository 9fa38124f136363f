//! The benchmark scenarios: what each drives, as wsload arguments.

/// One scenario.
pub struct Scenario {
    pub name: &'static str,
    /// What it drives, in words, for the report.
    pub what: &'static str,
    /// wsload's arguments.
    pub args: &'static [&'static str],
    /// Two wsbroker nodes sharing rooms through a local redis-server (wsbroker only).
    pub two_node: bool,
}

pub const SCENARIOS: &[Scenario] = &[
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

/// Whether a scenario's figure is a median of repeated runs (see `REPEATS`): the
/// fan-out, fixed-rate and rooms scenarios, where the servers are close enough that
/// one run cannot tell them apart.
pub fn is_repeated(name: &str) -> bool {
    name.starts_with("fanout") || name == "fixed-rate" || name == "rooms"
}
