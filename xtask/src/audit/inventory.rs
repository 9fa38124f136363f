//! The inventory of panicking APIs the code avoids or guards. The list is data; each
//! entry names the text that shows the guard in place (or, for an avoided API, text
//! that must appear nowhere in `src/`), and [`check`] finds it in the code, so that
//! the list cannot go stale.

use super::source;
use crate::project::Project;

/// One panicking API and how the code avoids or guards it.
pub struct Guard {
    pub api: &'static str,
    pub how: &'static str,
    pub place: Place,
}

/// Where the evidence of a guard is.
pub enum Place {
    /// This text appears in this file (relative to the workspace root).
    In { file: &'static str, needle: &'static str },
    /// This text appears nowhere in `src/` outside tests and comments.
    Nowhere { needle: &'static str },
}

const fn guard(api: &'static str, how: &'static str, file: &'static str, needle: &'static str) -> Guard {
    Guard { api, how, place: Place::In { file, needle } }
}

const fn unused(api: &'static str, how: &'static str, needle: &'static str) -> Guard {
    Guard { api, how, place: Place::Nowhere { needle } }
}

/// The inventory.
pub const GUARDS: &[Guard] = &[
    guard(
        "`mpsc::channel(0)` panics",
        "capacities are parsed as 1..=MAX_CAPACITY; a hand-built Config is re-checked by `validate`",
        "src/config/parse.rs",
        "parse_in_range(s, 1, MAX_CAPACITY)",
    ),
    guard(
        "`mpsc::channel(n)` panics for n > usize::MAX >> 3",
        "MAX_CAPACITY = 2^20 bounds every capacity",
        "src/config.rs",
        "pub const MAX_CAPACITY",
    ),
    guard(
        "`mpsc::channel` / `Semaphore::new` on a hand-built Config",
        "`Server::bind` runs `Config::validate` (every range again) before any constructor",
        "src/server.rs",
        "config.validate()?",
    ),
    guard(
        "`Semaphore::new(n)` panics for n > usize::MAX >> 3",
        "--max-connections is bounded by MAX_CONNECTIONS = 10^7",
        "src/config.rs",
        "pub const MAX_CONNECTIONS",
    ),
    guard(
        "tungstenite asserts `max_write_buffer_size > write_buffer_size` at accept",
        "derived as write buffer + max message + frame header, and at least write buffer + 1",
        "src/config.rs",
        ".max(self.write_buffer_size.saturating_add(1))",
    ),
    guard(
        "`Instant + Duration` overflow panics",
        "every duration flag is bounded to (0, 24h]",
        "src/config/parse.rs",
        "if d.is_zero() || d > MAX_DURATION",
    ),
    guard(
        "`Instant + Duration` overflow in the writer's deadlines (pings, close grace period)",
        "`checked_add`, falling back to now",
        "src/connection/writer.rs",
        "now.checked_add(after)",
    ),
    guard(
        "`Instant + Duration` overflow in the idle deadline",
        "`checked_add` twice, falling back to now; the reader's close linger is a 1 s constant through `tokio::time::sleep`, which caps any delay at 30 years",
        "src/connection/settings.rs",
        ".and_then(|t| t.checked_add(settings.idle_timeout))",
    ),
    guard(
        "`#[tokio::main]` expects on runtime construction",
        "the runtime is built by hand; an error is a line and status 1",
        "src/main.rs",
        "Builder::new_multi_thread()",
    ),
    unused("`#[tokio::main]`", "not used outside tests", "#[tokio::main]"),
    unused(
        "`tokio::time::interval_at(_, Duration::ZERO)` panics",
        "not used: the writer's ping is a sleep reset after each ping",
        "interval_at(",
    ),
    guard(
        "`RefCell::borrow_mut` panics when the cell is already borrowed (the per-thread read buffer)",
        "`try_borrow_mut`, falling back to reading straight into the caller's buffer",
        "src/connection/read_side.rs",
        "scratch.try_borrow_mut()",
    ),
    guard(
        "`tokio::time::interval(Duration::ZERO)` in the Redis bridge",
        "its period is the non-zero constant HEALTH_INTERVAL (1 s)",
        "src/cluster/redis_bridge.rs",
        "tokio::time::interval(HEALTH_INTERVAL)",
    ),
    unused(
        "`Duration::from_secs_f64` panics on NaN, negative or huge input",
        "not used: `Duration::try_from_secs_f64` where a token's remaining time is computed",
        "Duration::from_secs_f64(",
    ),
    guard(
        "`Instant + Duration` overflow in the drain's schedule",
        "`checked_add`, staying at the last step",
        "src/server/drain.rs",
        "next.checked_add(step)",
    ),
    guard(
        "`Duration / u32` panics on zero (the drain's step)",
        "`checked_div` by a count of at least 1",
        "src/server/drain.rs",
        "window.checked_div(count)",
    ),
    guard(
        "clap's `parse()` exits the process from library code",
        "`try_parse`, rendered to one line and status 2 by the binary",
        "src/main.rs",
        "Cli::try_parse()",
    ),
    guard(
        "tracing-subscriber's `init()` panics when a subscriber is already set",
        "`try_init`",
        "src/logging.rs",
        ".try_init()",
    ),
    guard(
        "`Vec::swap_remove` panics out of bounds (in `take`, for `leave`)",
        "the index comes from `position` on the same vector and is checked beside the call; no_panic proves it",
        "src/broker/rooms.rs",
        "(pos < members.len()).then(|| members.swap_remove(pos))",
    ),
    guard(
        "`Vec::swap_remove` panics out of bounds (in the fan-out, within `publish`)",
        "checked beside the call, since the contained `try_send` comes between the lookup and the removal; no_panic proves it",
        "src/broker/rooms/fan_out.rs",
        "if !keep && i < members.len() {",
    ),
    guard(
        "`Vec::push` grows, and growth panics on capacity overflow (members removed during an operation)",
        "pushed only within the capacity reserved ahead, checked beside the push; no_panic proves it",
        "src/broker/rooms.rs",
        "if removed.len() < removed.capacity() {",
    ),
    guard(
        "integer overflow in counters",
        "`wrapping_add` (u64 counters cannot wrap in practice); `arithmetic_side_effects` is denied",
        "src/broker/rooms.rs",
        "wrapping_add(1)",
    ),
    guard(
        "`HashMap`/`Vec` growth panics on capacity overflow (a new room, a longer member list)",
        "only in `make_room`, run inside `contained`",
        "src/broker/rooms.rs",
        "contained(move || make_room(rooms, name, epoch, sequenced))",
    ),
    guard(
        "`VecDeque::push_back` grows its buffer (a panic on capacity overflow), and whether the optimiser sees a capacity check before it depends on inlining",
        "the history uses `Ring`, whose `push_back` never grows (a full ring hands the value back); growing is `grow_to`, run contained",
        "src/broker/ring.rs",
        "pub(crate) fn push_back(&mut self, value: T) -> Result<(), T> {",
    ),
    guard(
        "`Instant` arithmetic in the history's TTL (`checked_duration_since` builds a `Duration` with `Duration::new`, which can panic)",
        "times are whole milliseconds since the broker started (`millis_since`, read contained), compared with `saturating_sub`",
        "src/broker/history.rs",
        "now.saturating_sub(front.at) > ttl",
    ),
    guard(
        "`ExactSizeIterator::len` asserts that the size hint is exact",
        "not used in the history: a resume's count is computed from seqs, and its messages read by index",
        "src/broker/history.rs",
        "let count = usize::try_from(missed).ok()?;",
    ),
    guard(
        "tokio's `oneshot::Receiver` panics when polled after it completed",
        "the writer polls `stop_rx` only until it has received (`stop_received`)",
        "src/connection/writer.rs",
        "Pin::new(&mut self.signals.stop_rx).poll(cx)",
    ),
    guard(
        "a `JoinHandle` panics when polled after it completed",
        "the reader polls the writer's handle only before the close linger, which its completing starts",
        "src/connection/reader.rs",
        "Pin::new(&mut *writer_done).poll(cx)",
    ),
    guard(
        "a `JoinHandle` panics when polled after it completed",
        "the wait for room in the broker's inbox is entered only before the close linger, and the writer's handle completing there starts it",
        "src/connection/reader.rs",
        "joined = writer_task => Some(super::writer_end(joined)),",
    ),
    guard(
        "a `JoinHandle` panics when polled after it completed",
        "the connection awaits its writer's handle only if the reader did not see it complete",
        "src/connection.rs",
        "None => writer_end(writer_task.await),",
    ),
    guard(
        "`ReadBuf::put_slice` past the remaining room, `BytesMut::advance` past the length",
        "held-over bytes are copied `min(held, room)` at a time",
        "src/connection/read_side.rs",
        "let n = this.unread.len().min(buf.remaining());",
    ),
    guard(
        "`ReadBuf::put_slice` past the remaining room (bytes from the scratch buffer)",
        "`min(read, room)` bytes are copied; the rest is held over",
        "src/connection/read_side.rs",
        "let n = read.len().min(buf.remaining());",
    ),
    guard(
        "awaiting a panicked task's `JoinHandle`",
        "`JoinError` is matched (is_panic), never unwrapped",
        "src/server.rs",
        "joined.is_err_and(|e| e.is_panic())",
    ),
    guard(
        "`print!`, `println!` and `eprintln!` panic when the stream is closed (`wsbroker --help | head`)",
        "denied in the library and the binary (`clippy::print_stdout`, `print_stderr`); the binary writes through `say`, which leaves a line nobody can read unwritten",
        "src/main.rs",
        "fn say(mut to: impl std::io::Write, text: std::fmt::Arguments<'_>) {",
    ),
    guard(
        "jsonwebtoken's own time checks read the clock with `expect` and subtract the leeway unchecked",
        "turned off (`validate_exp`, `validate_nbf`); `exp`, `nbf` and `iat` are checked by wsbroker in floating point, with a clock read that cannot panic",
        "src/auth.rs",
        "validation.validate_exp = false;",
    ),
    unused("`.unwrap()` in library code", "denied by clippy::unwrap_used", ".unwrap()"),
];

/// One entry of the inventory, checked against the code.
pub struct Checked {
    pub guard: &'static Guard,
    /// The evidence is where the entry says.
    pub ok: bool,
    /// `file:line` of the evidence, or what is wrong.
    pub location: String,
}

/// Checks every entry against the code (test modules' files are not code here).
pub fn check(project: &Project) -> Vec<Checked> {
    let tests = source::test_files(project);
    let sources: Vec<(String, String)> = project
        .rust_files("src")
        .iter()
        .map(|f| (project.rel(f), std::fs::read_to_string(f).unwrap_or_default()))
        .filter(|(path, _)| !tests.contains(path))
        .collect();
    GUARDS.iter().map(|guard| check_one(guard, &sources)).collect()
}

/// Checks one entry against `sources`: (path relative to the root, text).
fn check_one(guard: &'static Guard, sources: &[(String, String)]) -> Checked {
    match guard.place {
        Place::In { file, needle } => {
            let text = sources.iter().find(|(path, _)| path == file).map(|(_, text)| text.as_str());
            let line = text.and_then(|t| t.lines().position(|l| l.contains(needle)));
            Checked {
                guard,
                ok: line.is_some(),
                location: line.map_or_else(
                    || format!("MISSING from {file}"),
                    |i| format!("{file}:{}", i.saturating_add(1)),
                ),
            }
        }
        Place::Nowhere { needle } => {
            let hit = sources.iter().find_map(|(path, text)| {
                // Lines inside `#[cfg(test)]` modules are test code; only count code
                // before the first such module.
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                code.lines()
                    .position(|l| l.contains(needle) && !l.trim_start().starts_with("//"))
                    .map(|i| format!("{path}:{}", i.saturating_add(1)))
            });
            Checked {
                guard,
                ok: hit.is_none(),
                location: hit.map_or_else(|| "not used in src/".to_owned(), |at| format!("USED at {at}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_found_where_it_says_and_an_avoided_api_nowhere() {
        let sources = vec![
            (
                "src/a.rs".to_owned(),
                "fn f() {\n    x.checked_add(1)\n}\n#[cfg(test)]\nmod t { y.unwrap() }\n".to_owned(),
            ),
            ("src/b.rs".to_owned(), "// z.unwrap() in a comment\n".to_owned()),
        ];
        static IN: Guard = guard("overflow", "checked", "src/a.rs", "checked_add(");
        static GONE: Guard = guard("overflow", "checked", "src/a.rs", "wrapping_add(");
        static UNUSED: Guard = unused("unwrap", "denied", ".unwrap()");
        let found = check_one(&IN, &sources);
        assert!(found.ok);
        assert_eq!(found.location, "src/a.rs:2");
        assert!(!check_one(&GONE, &sources).ok, "a stale entry is reported");
        assert!(check_one(&UNUSED, &sources).ok, "test modules and comments do not count");
        static USED: Guard = unused("checked", "x", "checked_add");
        let used = check_one(&USED, &sources);
        assert!(!used.ok);
        assert_eq!(used.location, "USED at src/a.rs:2");
    }
}
