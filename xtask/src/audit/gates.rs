//! The audit's gates, one function each, in the order they run. Each returns what it
//! found; the report renders it, and `run` decides pass or fail from it.

use std::path::PathBuf;

use super::inventory::{self, Checked};
use super::parse;
use super::source::{self, Annotated};
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
    Lints { declared: parse::deny_set(&manifest), clippy }
}

/// Gates 2 and 3: the no_panic proofs, and their negative control.
pub struct Proofs {
    /// Every annotated function but the negative control.
    pub annotated: Vec<Annotated>,
    /// Where the negative control is.
    pub control_location: String,
    /// The audit build linked and its binary ran.
    pub linked: bool,
    /// Functions the audit build rejected.
    pub rejected: Vec<String>,
    /// The negative-control build.
    pub control: Output,
    /// Functions the negative-control build rejected.
    pub control_rejected: Vec<String>,
}

impl Proofs {
    /// The negative control failed the build, naming its function.
    pub fn control_ok(&self) -> bool {
        !self.control.success && self.control_rejected.iter().any(|f| f == NEGATIVE_CONTROL)
    }
}

pub fn proofs(project: &Project) -> Proofs {
    // The negative control is annotated too, but it is built only by its own gate,
    // where it must be rejected; it is reported there, never as proven.
    let (control_fn, annotated): (Vec<Annotated>, Vec<Annotated>) =
        source::annotated_functions(project).into_iter().partition(|f| f.name == NEGATIVE_CONTROL);
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
    Proofs {
        annotated,
        control_location: control_fn.first().map(|f| f.location.clone()).unwrap_or_default(),
        linked,
        rejected: parse::rejected_functions(&proof.text),
        control_rejected: parse::rejected_functions(&control.text),
        control,
    }
}

/// Gate 4: cargo-deny, offline, against the RustSec snapshot.
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

/// Gate 5: the test suite passes, and no panic is observed anywhere in it.
pub struct Tests {
    pub ok: bool,
    pub passed: u64,
    pub failed: u64,
    pub panics: usize,
}

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
    Tests { ok: run.success, passed, failed, panics: parse::count_panics(&run.text) }
}

/// Gate 6: the inventory of guarded panicking APIs matches the code.
pub fn inventory(project: &Project) -> Vec<Checked> {
    let checked = inventory::check(project);
    // Name each stale entry here too, so that a failing gate says what to fix.
    for stale in checked.iter().filter(|c| !c.ok) {
        println!("  stale: {}: {}", stale.guard.api, stale.location);
    }
    checked
}
