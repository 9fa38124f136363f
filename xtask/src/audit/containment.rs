//! What the broker does not prove, why, and what contains it.

/// Functions of the broker that are not proven: (function, why it cannot be proven,
/// how it is contained).
pub const NOT_PROVEN: &[(&str, &str, &str)] = &[
    (
        "broker::rooms::Rooms::publish (the fan-out)",
        "tokio's `try_send` (waker and block allocation behind function pointers); cloning and dropping a tungstenite `Message` (the `Bytes` vtable)",
        "runs inside `contain` (catch_unwind) in `Broker::handle`; `retain_mut` keeps the room consistent if it unwinds",
    ),
    (
        "broker::rooms::Rooms::join_growing",
        "`HashMap` insertion and `Vec` growth (capacity-overflow panic paths)",
        "called only when `try_join` (proven) finds no spare capacity, inside `contain`",
    ),
    (
        "broker::rooms::Rooms::stats",
        "allocation and sorting for the snapshot",
        "inside `contain`; not on the message path",
    ),
    (
        "dropping a `Sender`, a `Message` or a removed room",
        "tokio's channel-closing code and the `Bytes` vtable are opaque to the proof",
        "proven functions hand these back; `handle` drops them inside `contain`",
    ),
    (
        "broker::run (the task loop)",
        "`no_panic` rejects `async fn`; it awaits tokio's `recv`",
        "its body is `recv().await` then `Broker::handle` (proven) or a test hook; if it ever ended or panicked anyway the server stops accepting, closes every connection with 1011 and exits 1 for its supervisor to restart",
    ),
    (
        "cluster::BridgeTx (the broker's hand-off to Redis)",
        "tokio's `try_send` on the bridge's bounded queues",
        "called only from contained code (the fan-out, `join_growing`, the Leave drop); a full queue drops the message for Redis (counted) or sets a resync flag for subscription changes, so the broker never waits on Redis",
    ),
    (
        "cluster::redis_bridge (the Redis task)",
        "async, and drives the redis crate",
        "its own task, never awaited by the broker: it holds only a weak sender of the broker's inbox; a failure there reconnects with backoff, and a panic would end only Redis delivery (the panic hook logs and counts it) while local rooms keep working",
    ),
    (
        "broker::run_hook",
        "test-only fault injection, not reachable from the command line",
        "not on any production path",
    ),
];
