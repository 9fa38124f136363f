//! `cargo xtask audit`: the panic audit, as gates and as a report.
//!
//! Gates (any failure makes the command exit 1), one function each in [`gates`]:
//! 1. the lint gate: `cargo clippy --workspace --all-targets --all-features -- -D warnings`
//!    (every crate of the workspace: the server, the xtask and the load generator);
//! 2. the no_panic proofs: the `audit` profile build of `examples/no_panic_audit`
//!    links every annotated function, and must succeed;
//! 3. the negative control: the same build with a deliberately panicking annotated
//!    function must fail, naming that function (otherwise the proofs are not live);
//! 4. cargo-deny, offline, against the RustSec snapshot in `../shared/advisory-db`
//!    (installed first when absent);
//! 5. the test suite passes and no panic is observed anywhere in it;
//! 6. the inventory of guarded panicking APIs ([`inventory`]) still matches the code.
//!
//! [`report`] renders what the gates found into `target/audit/report.md` and
//! `target/audit/report.json`.

mod containment;
mod gates;
mod inventory;
mod parse;
mod report;
mod source;

use std::process::ExitCode;

use anyhow::Context;

use crate::project::Project;

#[derive(Debug, clap::Args)]
pub struct Args {}

/// What every gate found, for the report.
pub struct Findings {
    /// The tree audited and its revision.
    pub tree: String,
    pub revision: String,
    pub lints: gates::Lints,
    pub proofs: gates::Proofs,
    pub deny: gates::Deny,
    pub tests: gates::Tests,
    pub inventory: Vec<inventory::Checked>,
}

impl Findings {
    /// Each gate's name and whether it passed, in order.
    pub fn gates(&self) -> Vec<(&'static str, bool)> {
        vec![
            ("clippy", self.lints.clippy.success),
            ("no_panic proofs", self.proofs.linked),
            ("negative control", self.proofs.control_ok()),
            ("cargo-deny", self.deny.run.success),
            ("tests", self.tests.ok),
            ("no panics in tests", self.tests.ok && self.tests.panics == 0),
            ("inventory matches the code", self.inventory.iter().all(|c| c.ok)),
        ]
    }
}

pub fn run(_args: &Args) -> anyhow::Result<ExitCode> {
    let project = Project::locate()?;
    println!("== auditing {} at {}", project.root.display(), project.revision());
    println!("== 1/6 lint gate");
    let lints = gates::lints(&project);
    println!("== 2/6 no_panic proofs, and 3/6 their negative control");
    let proofs = gates::proofs(&project);
    println!("== 4/6 cargo-deny (offline)");
    let deny = gates::cargo_deny(&project);
    println!("== 5/6 test suite (panics must be 0)");
    let tests = gates::tests(&project);
    println!("== 6/6 inventory of guarded panicking APIs");
    let inventory = gates::inventory(&project);
    let findings = Findings {
        tree: project.root.display().to_string(),
        revision: project.revision(),
        lints,
        proofs,
        deny,
        tests,
        inventory,
    };

    let dir = project.join("target/audit");
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("report.md"), report::markdown(&findings)))
        .and_then(|()| std::fs::write(dir.join("report.json"), report::json(&findings).to_string()))
        .with_context(|| format!("cannot write {}", dir.display()))?;

    let gates = findings.gates();
    println!("\n== panic audit summary (target/audit/report.md)");
    for (name, ok) in &gates {
        println!("  {:<28} {}", name, if *ok { "PASS" } else { "FAIL" });
    }
    if gates.iter().all(|(_, ok)| *ok) {
        println!("panic audit: all gates pass");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("panic audit: FAILED");
        Ok(ExitCode::FAILURE)
    }
}
