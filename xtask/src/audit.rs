//! `cargo xtask audit`: the panic audit, as gates and as a report.
//!
//! Gates (any failure makes the command exit 1):
//! 1. the lint gate: `cargo clippy --workspace --all-targets --all-features -- -D warnings`
//!    (every crate of the workspace: the server, the xtask and the load generator);
//! 2. the no_panic proofs: the `audit` profile build of `examples/no_panic_audit`
//!    links every annotated function, and must succeed;
//! 3. the negative control: the same build with a deliberately panicking annotated
//!    function must fail, naming that function (otherwise the proofs are not live);
//! 4. cargo-deny, offline, against the RustSec snapshot in `../shared/advisory-db`;
//! 5. the test suite passes and no panic is observed anywhere in it;
//! 6. the inventory of guarded panicking APIs still matches the code.
//!
//! Writes `target/audit/report.md` and `target/audit/report.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::util::{self, Output, rel, root, rust_files, tail};

/// The folder name cargo-deny 0.20 derives from the `db-urls` entry in deny.toml.
const ADVISORY_DB_DIR: &str = "target/advisory-dbs/advisory-db-3157b0e258782691";

/// The deliberately panicking annotated function of the negative control.
const NEGATIVE_CONTROL: &str = "negative_control";

/// The attribute that marks a proven function.
const NO_PANIC_ATTR: &str = "no_panic::no_panic";

pub fn run() -> ExitCode {
    let root = root();
    let mut gates: Vec<(&str, bool)> = Vec::new();

    let deny_set = deny_set(&root.join("Cargo.toml"));

    println!("== 1/6 lint gate");
    let clippy = util::run(
        "cargo",
        &["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"],
        &[],
        false,
    );
    gates.push(("clippy", clippy.success));

    println!("== 2/6 no_panic proofs");
    // The negative control is annotated too, but it is built only by gate 3, where it
    // must be rejected; it is reported there, never as proven.
    let (control_fn, annotated): (Vec<Annotated>, Vec<Annotated>) =
        annotated_functions(&root.join("src")).into_iter().partition(|f| f.name == NEGATIVE_CONTROL);
    let proof = util::run(
        "cargo",
        &["build", "--profile", "audit", "--features", "no-panic", "--example", "no_panic_audit"],
        &[],
        false,
    );
    let rejected = rejected_functions(&proof.text);
    let ran = proof.success && util::run("target/audit/examples/no_panic_audit", &[], &[], false).success;
    gates.push(("no_panic proofs", proof.success && ran));

    println!("== 3/6 negative control");
    let control = util::run(
        "cargo",
        &[
            "build",
            "--profile",
            "audit",
            "--features",
            "no-panic-negative-control",
            "--example",
            "no_panic_audit",
        ],
        &[],
        false,
    );
    let control_rejected = rejected_functions(&control.text);
    let control_ok = !control.success && control_rejected.iter().any(|f| f == NEGATIVE_CONTROL);
    gates.push(("negative control", control_ok));

    println!("== 4/6 cargo-deny (offline)");
    let (snapshot_date, deny) = cargo_deny(&root);
    gates.push(("cargo-deny", deny.success));

    println!("== 5/6 test suite (panics must be 0)");
    if let Err(e) = crate::test::ensure_redis_server() {
        println!("cannot prepare the test suite: {e}");
    }
    let tests = util::run("cargo", &["test", "--", "--nocapture"], &[("RUST_BACKTRACE", "0")], true);
    let panics = count_panics(&tests.text);
    let (passed, failed) = count_tests(&tests.text);
    gates.push(("tests", tests.success));
    gates.push(("no panics in tests", panics == 0 && tests.success));

    println!("== 6/6 inventory of guarded panicking APIs");
    let inventory = check_inventory(&root);
    // Name each stale entry here too, so that a failing gate says what to fix.
    for stale in inventory.iter().filter(|i| !i.found) {
        println!("  stale: {}: {}", stale.api, stale.location);
    }
    gates.push(("inventory matches the code", inventory.iter().all(|i| i.found)));

    let report = Report {
        deny_set,
        clippy,
        annotated,
        control_location: control_fn.first().map(|f| f.location.clone()).unwrap_or_default(),
        rejected,
        proof_ok: proof.success && ran,
        control,
        control_ok,
        snapshot_date,
        deny,
        tests_ok: tests.success,
        passed,
        failed,
        panics,
        inventory,
        gates: gates.clone(),
    };
    let dir = root.join("target/audit");
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("report.md"), report.markdown()))
        .and_then(|()| std::fs::write(dir.join("report.json"), report.json().to_string()));
    if let Err(e) = written {
        eprintln!("error: cannot write target/audit: {e}");
        return ExitCode::FAILURE;
    }

    println!("\n== panic audit summary (target/audit/report.md)");
    for (name, ok) in &gates {
        println!("  {:<28} {}", name, if *ok { "PASS" } else { "FAIL" });
    }
    if gates.iter().all(|(_, ok)| *ok) {
        println!("panic audit: all gates pass");
        ExitCode::SUCCESS
    } else {
        println!("panic audit: FAILED");
        ExitCode::FAILURE
    }
}

/// The lint levels declared in `[workspace.lints.*]`.
fn deny_set(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap_or_default();
    let mut section = String::new();
    let mut set = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).to_owned();
            continue;
        }
        let Some(group) = section.strip_prefix("workspace.lints.") else {
            continue;
        };
        if let Some((name, level)) = line.split_once('=') {
            let level = level.trim().trim_matches('"');
            if !name.trim().starts_with('#') {
                set.push(format!("{level}({group}::{})", name.trim()));
            }
        }
    }
    set
}

/// One `no_panic`-annotated function in the source.
struct Annotated {
    location: String,
    name: String,
}

/// Finds every function carrying the no_panic attribute, with file:line of its `fn`.
fn annotated_functions(src: &Path) -> Vec<Annotated> {
    let mut found = Vec::new();
    for file in rust_files(src) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let mut pending = false;
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("#[") && trimmed.contains(NO_PANIC_ATTR) {
                pending = true;
                continue;
            }
            if pending && !trimmed.starts_with("#[") {
                if let Some(name) = fn_name(trimmed) {
                    found.push(Annotated {
                        location: format!("{}:{}", rel(&file), i.saturating_add(1)),
                        name: name.to_owned(),
                    });
                }
                pending = false;
            }
        }
    }
    found
}

/// The name in a line such as `pub(crate) fn leave(&mut self, ...)`.
fn fn_name(line: &str) -> Option<&str> {
    let after = line.split_once("fn ")?.1;
    let end = after.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    after.get(..end)
}

/// Function names in no_panic's "detected panic in function `name`" link errors.
fn rejected_functions(text: &str) -> Vec<String> {
    let marker = "detected panic in function `";
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once(marker))
        .filter_map(|(_, rest)| rest.split_once('`').map(|(name, _)| name.to_owned()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Builds the advisory database checkout from the shared snapshot and runs
/// `cargo deny --offline check`. Returns the snapshot date and the run.
fn cargo_deny(root: &Path) -> (String, Output) {
    let snapshot = std::env::var_os("WSBROKER_ADVISORY_SNAPSHOT")
        .map_or_else(|| root.join("../shared/advisory-db"), PathBuf::from);
    let date = std::fs::read_to_string(snapshot.join("SNAPSHOT.md"))
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.trim().strip_prefix("- dated:").map(|d| d.trim().to_owned())))
        .unwrap_or_else(|| "unknown".to_owned());
    let db = root.join(ADVISORY_DB_DIR);
    if !db.join(".git").is_dir() {
        if !snapshot.join("crates").is_dir() {
            let text = format!("advisory snapshot not found at {}", snapshot.display());
            return (date, Output { success: false, text });
        }
        let commit_date = format!("{date}T00:00:00Z");
        let steps: [(&str, Vec<String>); 4] = [
            ("mkdir", vec!["-p".into(), db.display().to_string()]),
            ("cp", vec!["-r".into(), format!("{}/.", snapshot.display()), db.display().to_string()]),
            ("git", vec!["-C".into(), db.display().to_string(), "init".into(), "-q".into()]),
            ("git", vec!["-C".into(), db.display().to_string(), "add".into(), "-A".into()]),
        ];
        for (program, args) in &steps {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = util::run(program, &args, &[], false);
            if !out.success {
                return (date, out);
            }
        }
        let dir = db.display().to_string();
        let commit = util::run(
            "git",
            &[
                "-C",
                &dir,
                "-c",
                "user.name=audit",
                "-c",
                "user.email=audit@localhost",
                "commit",
                "-qm",
                "snapshot",
            ],
            &[("GIT_AUTHOR_DATE", &commit_date), ("GIT_COMMITTER_DATE", &commit_date)],
            false,
        );
        if !commit.success {
            return (date, commit);
        }
    }
    let fetch = util::run("cargo", &["fetch", "--quiet"], &[], false);
    if !fetch.success {
        return (date, fetch);
    }
    (date, util::run("cargo", &["deny", "--offline", "check"], &[], false))
}

/// Panics reported anywhere in the test run (the default hook prints "panicked at").
fn count_panics(text: &str) -> usize {
    text.lines().filter(|l| l.contains("panicked at")).count()
}

/// Sums libtest's "test result:" lines into (passed, failed).
fn count_tests(text: &str) -> (u64, u64) {
    let mut passed = 0u64;
    let mut failed = 0u64;
    for line in text.lines().filter(|l| l.starts_with("test result:")) {
        let number_before = |word: &str| -> u64 {
            line.split(';')
                .find(|part| part.trim_end().ends_with(word))
                .and_then(|part| part.split_whitespace().rev().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        passed = passed.saturating_add(number_before("passed"));
        failed = failed.saturating_add(number_before("failed"));
    }
    (passed, failed)
}

/// One panicking API and how the code avoids or guards it.
struct Guard {
    api: &'static str,
    how: &'static str,
    /// (file, text that must appear there) or, with `absent`, must appear nowhere in src/.
    file: &'static str,
    needle: &'static str,
    absent: bool,
    found: bool,
    location: String,
}

const fn guard(api: &'static str, how: &'static str, file: &'static str, needle: &'static str) -> Guard {
    Guard { api, how, file, needle, absent: false, found: false, location: String::new() }
}

const fn unused(api: &'static str, how: &'static str, needle: &'static str) -> Guard {
    Guard { api, how, file: "src/", needle, absent: true, found: false, location: String::new() }
}

/// The inventory; each entry is checked against the code so it cannot go stale.
fn check_inventory(root: &Path) -> Vec<Guard> {
    let mut inventory = vec![
        guard(
            "`mpsc::channel(0)` panics",
            "capacities are parsed as 1..=MAX_CAPACITY; a hand-built Config is re-checked by `validate`",
            "src/config.rs",
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
            "src/config.rs",
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
            "src/connection/writer.rs",
            ".and_then(|t| t.checked_add(ctx.idle_timeout))",
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
            "src/connection/socket.rs",
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
            "not used",
            "from_secs_f64",
        ),
        guard(
            "clap's `parse()` exits the process from library code",
            "`try_parse`, rendered to one line and status 2 by the binary",
            "src/main.rs",
            "Config::try_parse()",
        ),
        guard(
            "tracing-subscriber's `init()` panics when a subscriber is already set",
            "`try_init`",
            "src/logging.rs",
            ".try_init()",
        ),
        guard(
            "`Vec::swap_remove` panics out of bounds",
            "the index comes from `position` and is re-checked, which also lets no_panic prove it",
            "src/broker/rooms.rs",
            "if pos >= members.len()",
        ),
        guard(
            "integer overflow in counters",
            "`wrapping_add` (u64 counters cannot wrap in practice); `arithmetic_side_effects` is denied",
            "src/broker/rooms.rs",
            "wrapping_add(1)",
        ),
        guard(
            "`HashMap`/`Vec` growth panics on capacity overflow",
            "only in `join_growing`, run inside `contain` (catch_unwind)",
            "src/broker.rs",
            "contain(move || rooms.join_growing(",
        ),
        guard(
            "tokio's `oneshot::Receiver` panics when polled after it completed",
            "the writer polls `stop_rx` only until it has received (`stop_received`)",
            "src/connection/writer.rs",
            "if let Poll::Ready(stop) = Pin::new(&mut self.signals.stop_rx).poll(cx)",
        ),
        guard(
            "a `JoinHandle` panics when polled after it completed",
            "the reader polls the writer's handle only before the close linger, which its completing starts",
            "src/connection/reader.rs",
            "if let Poll::Ready(joined) = Pin::new(&mut *done).poll(cx)",
        ),
        guard(
            "a `JoinHandle` panics when polled after it completed",
            "the wait for room in the broker's inbox is entered only before the close linger, and the writer's handle completing there starts it",
            "src/connection/reader.rs",
            "joined = writer => Some(super::writer_sent(joined)),",
        ),
        guard(
            "a `JoinHandle` panics when polled after it completed",
            "the connection awaits its writer's handle only if the reader did not see it complete",
            "src/connection.rs",
            "None => writer_sent(writer.await),",
        ),
        guard(
            "`ReadBuf::put_slice` past the remaining room, `BytesMut::advance` past the length",
            "held-over bytes are copied `min(held, room)` at a time",
            "src/connection/socket.rs",
            "let n = this.unread.len().min(buf.remaining());",
        ),
        guard(
            "`ReadBuf::put_slice` past the remaining room (bytes from the scratch buffer)",
            "`min(read, room)` bytes are copied; the rest is held over",
            "src/connection/socket.rs",
            "let n = read.len().min(buf.remaining());",
        ),
        guard(
            "awaiting a panicked task's `JoinHandle`",
            "`JoinError` is matched (is_panic), never unwrapped",
            "src/server.rs",
            "e.is_panic()",
        ),
        unused("`.unwrap()` in library code", "denied by clippy::unwrap_used", ".unwrap()"),
    ];
    let files = rust_files(&root.join("src"));
    for item in &mut inventory {
        if item.absent {
            let hit = files.iter().find_map(|f| {
                let text = std::fs::read_to_string(f).unwrap_or_default();
                // Lines inside `#[cfg(test)]` modules are test code; only count code
                // before the first such module.
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                code.lines()
                    .position(|l| l.contains(item.needle) && !l.trim_start().starts_with("//"))
                    .map(|i| format!("{}:{}", rel(f), i.saturating_add(1)))
            });
            item.found = hit.is_none();
            item.location = hit.map_or_else(|| "not used in src/".to_owned(), |at| format!("USED at {at}"));
        } else {
            let text = std::fs::read_to_string(root.join(item.file)).unwrap_or_default();
            let line = text.lines().position(|l| l.contains(item.needle));
            item.found = line.is_some();
            item.location = line.map_or_else(
                || format!("MISSING from {}", item.file),
                |i| format!("{}:{}", item.file, i.saturating_add(1)),
            );
        }
    }
    inventory
}

struct Report {
    deny_set: Vec<String>,
    clippy: Output,
    annotated: Vec<Annotated>,
    control_location: String,
    rejected: Vec<String>,
    proof_ok: bool,
    control: Output,
    control_ok: bool,
    snapshot_date: String,
    deny: Output,
    tests_ok: bool,
    passed: u64,
    failed: u64,
    panics: usize,
    inventory: Vec<Guard>,
    gates: Vec<(&'static str, bool)>,
}

/// Functions of the broker that are not proven, why, and what contains them.
const NOT_PROVEN: &[(&str, &str, &str)] = &[
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

impl Report {
    fn markdown(&self) -> String {
        let mut md = String::new();
        let ok = |b: bool| if b { "PASS" } else { "FAIL" };
        let _ = writeln!(md, "# wsbroker panic audit\n");
        let _ = writeln!(md, "Generated by `cargo xtask audit`. Gates:\n");
        let _ = writeln!(md, "| gate | result |\n|---|---|");
        for (name, pass) in &self.gates {
            let _ = writeln!(md, "| {name} | {} |", ok(*pass));
        }

        let _ = writeln!(md, "\n## 1. Lints\n");
        let _ = writeln!(
            md,
            "Declared once in `[workspace.lints]` (Cargo.toml) for every crate of the workspace:\n"
        );
        let _ = writeln!(md, "`{}`\n", self.deny_set.join("`, `"));
        let _ = writeln!(
            md,
            "`cargo clippy --workspace --all-targets --all-features -- -D warnings`: **{}**",
            ok(self.clippy.success)
        );
        if !self.clippy.success {
            let _ = writeln!(md, "\n```text\n{}\n```", tail(&self.clippy.text, 30));
        }

        let _ = writeln!(md, "\n## 2. no_panic proofs\n");
        let _ = writeln!(
            md,
            "Build: `cargo build --profile audit --features no-panic --example no_panic_audit` \
             (release optimisation, one codegen unit, panic = unwind). The example calls every \
             annotated function through `black_box`, so each one is linked and checked.\n"
        );
        let _ = writeln!(md, "| function | location | link result |\n|---|---|---|");
        for f in &self.annotated {
            let result = if self.rejected.contains(&f.name) {
                "REJECTED (may panic)"
            } else if self.proof_ok {
                "proven: cannot unwind"
            } else {
                "not checked (build failed)"
            };
            let _ = writeln!(md, "| `{}` | {} | {result} |", f.name, f.location);
        }
        let _ = writeln!(
            md,
            "\nNegative control (`--features no-panic-negative-control`: `negative_control` at \
             {}, an annotated function that indexes out of bounds): the build must fail. \
             Result: **{}** ({}).",
            self.control_location,
            ok(self.control_ok),
            if self.control.success {
                "the build succeeded, so the proofs are NOT live".to_owned()
            } else {
                format!("build failed, rejecting `{}`", rejected_functions(&self.control.text).join("`, `"))
            }
        );

        let _ = writeln!(md, "\n## 3. cargo-deny\n");
        let _ = writeln!(
            md,
            "`cargo deny --offline check` (advisories, bans, licenses, sources) against the \
             RustSec snapshot dated **{}**: **{}**\n",
            self.snapshot_date,
            ok(self.deny.success)
        );
        let summary = self.deny.text.lines().rev().find(|l| l.contains(" ok") || l.contains("FAILED"));
        let _ = writeln!(md, "```text\n{}\n```", summary.unwrap_or("(no summary line)"));
        if !self.deny.success {
            let _ = writeln!(md, "\n```text\n{}\n```", tail(&self.deny.text, 40));
        }

        let _ = writeln!(md, "\n## 4. Panics in the test suite\n");
        let _ = writeln!(
            md,
            "`cargo test -- --nocapture`: {} passed, {} failed; panics observed: **{}** (must be 0). \
             Every integration test also asserts the process-wide panic count is 0 when it ends.",
            self.passed, self.failed, self.panics
        );
        if !self.tests_ok {
            let _ = writeln!(md, "\nThe test suite FAILED.");
        }

        let _ = writeln!(md, "\n## 5. Panicking APIs avoided or guarded\n");
        let _ = writeln!(md, "| API | how | where |\n|---|---|---|");
        for g in &self.inventory {
            let _ = writeln!(md, "| {} | {} | {} |", g.api, g.how, g.location);
        }

        let _ = writeln!(md, "\n## 6. What is not proven, and how it is contained\n");
        let _ = writeln!(md, "| function | why it cannot be proven | containment |\n|---|---|---|");
        for (f, why, how) in NOT_PROVEN {
            let _ = writeln!(md, "| {f} | {why} | {how} |");
        }
        let _ = writeln!(
            md,
            "\nOutside the broker: readers, writers and the accept loop are async and drive \
             tungstenite, so none of them can be proven. Each connection is its own pair of \
             tasks, so a panic there ends only that connection: the writer's task handle, which \
             completes when the writer panics, stops its reader, the reader's dropped oneshot \
             stops its writer, and the broker removes \
             the member on its next `try_send` (`Closed`). The accept loop logs a panicked \
             connection task. A process-wide panic hook logs every panic through tracing and \
             counts it (`wsbroker::panic_hook`).\n\n\
             Panic strategy: `unwind`, in every profile. With `abort`, one panic anywhere would \
             take down every connection; with `unwind`, tokio confines a panic to its task and \
             `catch_unwind` can contain the broker's unprovable effects."
        );

        let _ = writeln!(md, "\n## 7. Can we know at compile time that the broker cannot panic?\n");
        let proven: Vec<&str> = self.annotated.iter().map(|f| f.name.as_str()).collect();
        let _ = writeln!(
            md,
            "{} The compiler proves that `Broker::handle`, the one function the broker task \
             runs for every operation, cannot unwind, and so do the state transitions it is \
             built from (`{}`). That proof covers room lookup, registration, removal and \
             counting; the effects the compiler cannot see through (tokio's `try_send`, \
             cloning and dropping messages, growing storage, dropping senders) run inside \
             `catch_unwind` within `handle`, so a panic in them would be caught and counted \
             rather than unwind the broker. What is not proven is the task's `async` loop \
             itself (an `await` on tokio's channel, which `no_panic` cannot annotate) and the \
             insides of those contained effects. The negative control shows the proof is live: \
             a function that can panic fails the build. So: the broker's own logic cannot \
             panic, proven at compile time; third-party code it calls cannot make it unwind; \
             and if the task ended anyway, the server stops cleanly with 1011 and exit 1.",
            if self.proof_ok && self.control_ok {
                "Largely yes."
            } else {
                "Not as of this run (see the failed gates)."
            },
            proven.join("`, `"),
        );
        md
    }

    fn json(&self) -> Value {
        json!({
            "gates": self.gates.iter().map(|(n, ok)| json!({"gate": n, "pass": ok})).collect::<Vec<_>>(),
            "deny_set": self.deny_set,
            "clippy": {"pass": self.clippy.success},
            "no_panic": {
                "pass": self.proof_ok,
                "functions": self.annotated.iter().map(|f| json!({
                    "name": f.name,
                    "location": f.location,
                    "proven": self.proof_ok && !self.rejected.contains(&f.name),
                })).collect::<Vec<_>>(),
                "rejected": self.rejected,
                "negative_control": {"pass": self.control_ok, "build_failed": !self.control.success,
                                      "rejected": rejected_functions(&self.control.text)},
            },
            "cargo_deny": {"pass": self.deny.success, "advisory_snapshot_date": self.snapshot_date},
            "tests": {"pass": self.tests_ok, "passed": self.passed, "failed": self.failed, "panics": self.panics},
            "inventory": self.inventory.iter().map(|g| json!({
                "api": g.api, "how": g.how, "where": g.location, "ok": g.found,
            })).collect::<Vec<_>>(),
            "not_proven": NOT_PROVEN.iter().map(|(f, why, how)| json!({
                "function": f, "why": why, "containment": how,
            })).collect::<Vec<_>>(),
        })
    }
}
