//! What the audit knows that the code cannot say of itself, each entry checked
//! against the code: why each contained effect is opaque to the proof, what runs
//! outside the proof and why, and which function decides each row of the failure
//! table. An entry whose subject is gone from the code, or a contained effect or
//! failure decision without an entry, fails the gate.

/// Why each effect run inside `contained(...)` cannot be proven, keyed by how the
/// call is written there (see `source::Call::name`).
pub const EFFECTS: &[(&str, &str)] = &[
    (
        "outbox_tx.try_send",
        "tokio's `try_send`: wakes the writer through its waker (a function pointer), and may allocate the channel's next block",
    ),
    (
        "Arc::clone",
        "the reference on the frame that `try_send` takes; when the outbox is full or closed, `try_send` hands it back and it is dropped in the same contained call",
    ),
    (
        "drop",
        "destructors: a member's outbox sender and `kick` token (tokio's closing code wakes the writer), a room's storage, a room name or frame whose last reference frees it",
    ),
    ("removed.reserve", "allocates the storage that members removed during an operation move into"),
    ("removed.clear", "drops the members an operation removed: their outbox senders and tokens"),
    ("make_room", "allocates: a new room in the map, or a longer member list"),
    ("bridge.publish", "the Redis bridge's `try_send` (a waker behind a function pointer)"),
    (
        "bridge.membership",
        "the Redis bridge's `try_send`; when its queue is full, a flag and a `Notify` (a waker) instead",
    ),
    (
        "kick",
        "cancels the member's `kick` token, which wakes its reader (wakers, a mutex), and logs the disconnect",
    ),
    (
        "kick_to_drain",
        "cancels a shed member's `kick` token, which wakes its reader (wakers, a mutex), and writes a debug log line",
    ),
    ("log_drop", "reads the clock (std's `Instant::now` unwraps its syscall's result) and writes a log line"),
    ("reply_tx.send", "sends the stats or drain reply through a oneshot, which wakes the asker"),
    ("rooms.stats", "allocates and sorts the snapshot"),
    ("debug!", "writes a log line through tracing's subscriber (a trait object)"),
    (
        "outbox_tx.capacity",
        "reads a new member's free outbox slots from tokio's semaphore (behind its mutex-guarded waiter list)",
    ),
    (
        "millis_since",
        "reads the clock for the history's TTL (std's `Instant::now` unwraps its syscall's result)",
    ),
    ("frame::envelope", "allocates and fills a welcome or reset frame"),
    (
        "frame::sequenced_run",
        "allocates each message's `wsbroker.v1` frame and copies its payload in, once per message, and the list of them",
    ),
    (
        "frame::joined",
        "allocates a run's frames back to back (one outbox entry for a run of messages) and copies them in, once per run and kind of member",
    ),
    (
        "outbox_tx.max_capacity",
        "reads a member's outbox capacity and, beside it, its free slots from tokio's semaphore, to count the messages queued while runs are",
    ),
    ("order.grow_to", "allocates: a longer queue of every room's kept messages"),
    ("entries.grow_to", "allocates: a room's history grows (never past --history-size)"),
    ("rings.reserve", "allocates a slot for a room's first kept message"),
    ("free.reserve", "allocates the list of freed history slots"),
    ("entries.clear", "drops a departed room's kept messages: frames whose last reference frees them"),
];

/// What the broker task runs outside the proof, and why; each must exist.
pub const OUTSIDE: &[(&str, &str)] = &[
    (
        "broker::run",
        "`async`: `no_panic` cannot annotate an `async fn`. Its loop awaits `recv_many` (and its task's budget) and hands what it got over in order: each run of publishes, as `Broker::extends_run` decides, to `Broker::publish_run`, every other command to `Broker::step`; if it ever ended or panicked anyway, the server stops accepting, closes every connection with 1011 and exits 1 for its supervisor",
    ),
    ("broker::run_hook", "test-only fault injection, which the command line cannot reach"),
    (
        "cluster::redis_bridge::run",
        "the Redis bridge, a task of its own that the broker never awaits: it holds only a weak sender of the broker's inbox; a panic there would end only Redis delivery, which the panic hook logs and counts",
    ),
];

/// The failure table's decisions, and the function that makes each. Each function
/// must carry `no_panic` and its canary must show the proof live for the decision to
/// be reported proven.
pub const DECISIONS: &[(&str, &str, &str)] = &[
    ("②", "the inbox's `recv` gave `None`: every sender is gone, so the broker returns", "Broker::step"),
    ("③", "the loop over a room's members", "Rooms::publish"),
    (
        "④",
        "a member's outbox is full (drop for it, or disconnect it) or closed (remove it)",
        "Rooms::publish",
    ),
    ("—", "deregistering an id or room the broker does not know is a no-op", "Rooms::leave"),
    (
        "—",
        "a lame-duck drain sheds members, at most the count asked, from one room at a time; nothing left sheds nothing",
        "Rooms::shed",
    ),
];
