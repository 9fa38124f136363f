//! The audit's gates, one function each, in the order they run. Each returns what it
//! found; the report renders it, and `run` decides pass or fail from it.

use std::path::PathBuf;

use super::canary::{self, Canaries};
use super::containment::{DECISIONS, OUTSIDE};
use super::coverage::{self, Coverage};
use super::inventory::{self, Checked};
use super::parse;
use super::source::{self, Function};
use crate::command::{self, Output};
use crate::install;
use crate::project::Project;

/// The folder name cargo-deny 0.20 derives from the `db-urls` entry in deny.toml.
const ADVISORY_DB_DIR: &str = "target/advisory-dbs/advisory-db-3157b0e258782691";

/// The deliberately panicking annotated function of the negative control.
pub const NEGATIVE_CONTROL: &str = "negative_control";

/// Gate 1: the panic-family lints, denied for every crate of the workspace.
pub struct Lints {
    /// The levels declared in `[workspace.lints]`.
    pub declared: Vec<String>,
    pub clippy: Output,
    /// Profiles that set `panic = "abort"` (there must be none).
    pub abort_profiles: Vec<String>,
}

pub fn lints(project: &Project) -> Lints {
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap_or_default();
    let clippy = command::run(
        &project.root,
        "cargo",
        &["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"],
        &[],
        false,
    );
    Lints { declared: parse::deny_set(&manifest), clippy, abort_profiles: parse::abort_profiles(&manifest) }
}

/// Gates 2 to 5: the no_panic proofs, each function's canary, the negative
/// control, and how everything the broker task runs is covered.
pub struct Proofs {
    /// Every annotated function but the negative control.
    pub annotated: Vec<Function>,
    /// Annotated function names that occur more than once (the linker names
    /// functions by name alone, so each must be unique).
    pub duplicates: Vec<String>,
    /// Where the negative control is.
    pub control_location: String,
    /// The audit build linked and its binary ran.
    pub linked: bool,
    /// Functions the audit build rejected.
    pub rejected: Vec<String>,
    /// The canary build, or why it could not be made.
    pub canaries: Result<Canaries, String>,
    /// The negative-control build.
    pub control: Output,
    /// Functions the negative-control build rejected.
    pub control_rejected: Vec<String>,
    /// How what the broker task runs is covered.
    pub coverage: Coverage,
    /// The source could not be read as Rust.
    pub source_error: Option<String>,
}

impl Proofs {
    /// The negative control failed the build, naming its function.
    pub fn control_ok(&self) -> bool {
        !self.control.success && self.control_rejected.iter().any(|f| f == NEGATIVE_CONTROL)
    }

    /// Whether `name`'s canary showed its proof live.
    pub fn live(&self, name: &str) -> bool {
        self.canaries.as_ref().is_ok_and(|c| c.live(name))
    }

    /// Every annotated function is linked, and named once.
    pub fn all_live(&self) -> bool {
        self.source_error.is_none()
            && !self.annotated.is_empty()
            && self.duplicates.is_empty()
            && self.annotated.iter().all(|f| self.live(&f.name))
    }

    /// Each failure decision's function: found, annotated, and live.
    pub fn decisions(&self) -> Vec<(&'static str, &'static str, &'static str, bool)> {
        DECISIONS
            .iter()
            .map(|&(row, what, function)| {
                let proven = self.annotated.iter().any(|f| f.display() == function && self.live(&f.name))
                    && self.linked;
                (row, what, function, proven)
            })
            .collect()
    }

    /// The subjects of `OUTSIDE` that are not in the source any more.
    pub fn stale_outside(&self, functions: &[Function]) -> Vec<&'static str> {
        OUTSIDE
            .iter()
            .map(|(f, _)| *f)
            .filter(|name| !functions.iter().any(|g| format!("{}::{}", g.owner, g.name) == *name))
            .collect()
    }
}

pub fn proofs(project: &Project) -> (Proofs, Vec<Function>) {
    let (functions, source_error) = match source::functions(project) {
        Ok(functions) => (functions, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    // The negative control is annotated too, but it is built only by its own gate,
    // where it must be rejected; it is reported there, never as proven.
    let (control_fn, annotated): (Vec<Function>, Vec<Function>) =
        functions.iter().filter(|f| f.annotated).cloned().partition(|f| f.name == NEGATIVE_CONTROL);
    let mut names: Vec<&str> = annotated.iter().map(|f| f.name.as_str()).collect();
    names.sort_unstable();
    let duplicates: Vec<String> = names
        .windows(2)
        .filter(|w| w.first() == w.get(1))
        .filter_map(|w| w.first())
        .map(|n| (*n).to_owned())
        .collect();
    let build = |features: &str| {
        command::run(
            &project.root,
            "cargo",
            &["build", "--profile", "audit", "--features", features, "--example", "no_panic_audit"],
            &[],
            false,
        )
    };
    let proof = build("no-panic");
    let binary = project.join("target/audit/examples/no_panic_audit");
    let linked =
        proof.success && command::run(&project.root, &binary.display().to_string(), &[], &[], false).success;
    let control = build("no-panic-negative-control");
    println!("== the canaries: a panic planted in each annotated function, in a copy of the tree");
    let planted: Vec<&Function> = annotated.iter().collect();
    let canaries = canary::run(project, &planted).map_err(|e| format!("{e:#}"));
    let coverage = coverage::analyse(&functions);
    let proofs = Proofs {
        annotated,
        duplicates,
        control_location: control_fn.first().map(Function::location).unwrap_or_default(),
        linked,
        rejected: parse::rejected_functions(&proof.text),
        canaries,
        control_rejected: parse::rejected_functions(&control.text),
        control,
        coverage,
        source_error,
    };
    (proofs, functions)
}

/// Gate 6: cargo-deny, offline, against the RustSec snapshot.
pub struct Deny {
    pub snapshot_date: String,
    pub run: Output,
}

/// Installs cargo-deny when absent, builds the advisory database checkout from the
/// shared snapshot, and runs `cargo deny --offline check`.
pub fn cargo_deny(project: &Project) -> Deny {
    let snapshot = std::env::var_os("WSBROKER_ADVISORY_SNAPSHOT")
        .map_or_else(|| project.join("../shared/advisory-db"), PathBuf::from);
    let snapshot_date = std::fs::read_to_string(snapshot.join("SNAPSHOT.md"))
        .ok()
        .and_then(|t| parse::snapshot_date(&t))
        .unwrap_or_else(|| "unknown".to_owned());
    let failed =
        |text: String| Deny { snapshot_date: snapshot_date.clone(), run: Output { success: false, text } };
    if let Err(e) = install::cargo_deny(project) {
        return failed(format!("{e:#}"));
    }
    let db = project.join(ADVISORY_DB_DIR);
    if !db.join(".git").is_dir() {
        if !snapshot.join("crates").is_dir() {
            return failed(format!("advisory snapshot not found at {}", snapshot.display()));
        }
        let dir = db.display().to_string();
        let steps: [(&str, Vec<String>); 4] = [
            ("mkdir", vec!["-p".into(), dir.clone()]),
            ("cp", vec!["-r".into(), format!("{}/.", snapshot.display()), dir.clone()]),
            ("git", vec!["-C".into(), dir.clone(), "init".into(), "-q".into()]),
            ("git", vec!["-C".into(), dir.clone(), "add".into(), "-A".into()]),
        ];
        for (program, args) in &steps {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = command::run(&project.root, program, &args, &[], false);
            if !out.success {
                return failed(out.text);
            }
        }
        // Committed with the snapshot's date, so that cargo-deny judges its age by it.
        let commit_date = format!("{snapshot_date}T00:00:00Z");
        let commit = command::run(
            &project.root,
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
            return failed(commit.text);
        }
    }
    let fetch = command::run(&project.root, "cargo", &["fetch", "--quiet"], &[], false);
    if !fetch.success {
        return failed(fetch.text);
    }
    Deny {
        snapshot_date: snapshot_date.clone(),
        run: command::run(&project.root, "cargo", &["deny", "--offline", "check"], &[], false),
    }
}

/// Gate 7: the test suite passes, and no panic is observed anywhere in it.
pub struct Tests {
    pub ok: bool,
    pub passed: u64,
    pub failed: u64,
    pub panics: usize,
    /// The property test of the broker's rooms: whether it ran and passed.
    pub property_test: Option<bool>,
}

/// The property test of `Rooms`, as libtest names it.
pub const PROPERTY_TEST: &str = "broker::rooms::model_test::rooms_keep_their_promises";

pub fn tests(project: &Project) -> Tests {
    if let Err(e) = install::redis_server(project) {
        println!("cannot prepare the test suite: {e:#}");
    }
    let run = command::run(
        &project.root,
        "cargo",
        &["test", "--workspace", "--", "--nocapture"],
        &[("RUST_BACKTRACE", "0")],
        true,
    );
    let (passed, failed) = parse::count_tests(&run.text);
    let property_test = parse::test_outcome(&run.text, PROPERTY_TEST);
    Tests { ok: run.success, passed, failed, panics: parse::count_panics(&run.text), property_test }
}

/// Gate 8: the inventory of guarded panicking APIs matches the code.
pub fn inventory(project: &Project) -> Vec<Checked> {
    let checked = inventory::check(project);
    // Name each stale entry here too, so that a failing gate says what to fix.
    for stale in checked.iter().filter(|c| !c.ok) {
        println!("  stale: {}: {}", stale.guard.api, stale.location);
    }
    checked
}
