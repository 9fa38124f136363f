//! `cargo xtask audit`: the panic audit, as gates and as a report.
//!
//! Gates (any failure makes the command exit 1), one function each in [`gates`]:
//! 1. the lint gate: `cargo clippy --workspace --all-targets --all-features -- -D warnings`
//!    (every crate of the workspace: the server, the xtask and the load generator);
//! 2. the no_panic proofs: the `audit` profile build of `examples/no_panic_audit`
//!    links, and runs;
//! 3. the canaries ([`canary`]): a panic planted in every annotated function of a copy
//!    of the tree must fail that build, and the linker must name each function,
//!    so that an annotated function the audit binary does not link is caught;
//! 4. the negative control: a deliberately panicking annotated function must fail the
//!    build, naming itself;
//! 5. coverage ([`coverage`]): everything the broker task runs, followed from the
//!    broker's entries (`coverage::ROOTS`) through the source ([`source`]), is proven, proven within its
//!    caller, or contained, with a reason for every contained effect and for every
//!    function outside the proof ([`containment`]), and no stale entry;
//! 6. cargo-deny, offline, against the RustSec snapshot in `../shared/advisory-db`
//!    (installed first when absent);
//! 7. the test suite passes, the property test of the broker's rooms among it, and no
//!    panic is observed anywhere in it;
//! 8. the inventory of guarded panicking APIs ([`inventory`]) still matches the code.
//!
//! [`report`] renders what the gates found into `target/audit/report.md` and
//! `target/audit/report.json`; every claim in it comes from a check.

mod canary;
mod containment;
mod coverage;
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
    /// Entries of `containment::OUTSIDE` whose function is gone.
    pub stale_outside: Vec<&'static str>,
    pub deny: gates::Deny,
    pub tests: gates::Tests,
    pub inventory: Vec<inventory::Checked>,
}

impl Findings {
    /// Each gate's name and whether it passed, in order.
    pub fn gates(&self) -> Vec<(&'static str, bool)> {
        let p = &self.proofs;
        vec![
            (
                "clippy, and panic = unwind everywhere",
                self.lints.clippy.success && self.lints.abort_profiles.is_empty(),
            ),
            ("no_panic proofs link", p.linked),
            ("every annotated function linked (canaries)", p.all_live()),
            ("negative control", p.control_ok()),
            (
                "coverage: proven, within a proof, or contained",
                p.coverage.explained() && self.stale_outside.is_empty() && p.decisions().iter().all(|d| d.3),
            ),
            ("cargo-deny", self.deny.run.success),
            ("tests", self.tests.ok && self.tests.property_test == Some(true)),
            ("no panics in tests", self.tests.ok && self.tests.panics == 0),
            ("inventory matches the code", self.inventory.iter().all(|c| c.ok)),
        ]
    }
}

pub fn run(_args: &Args) -> anyhow::Result<ExitCode> {
    let project = Project::locate()?;
    println!("== auditing {} at {}", project.root.display(), project.revision());
    println!("== 1/8 lint gate");
    let lints = gates::lints(&project);
    println!("== 2-5/8 no_panic proofs, canaries, negative control, coverage");
    let (proofs, functions) = gates::proofs(&project);
    let stale_outside = proofs.stale_outside(&functions);
    println!("== 6/8 cargo-deny (offline)");
    let deny = gates::cargo_deny(&project);
    println!("== 7/8 test suite (panics must be 0)");
    let tests = gates::tests(&project);
    println!("== 8/8 inventory of guarded panicking APIs");
    let inventory = gates::inventory(&project);
    let findings = Findings {
        tree: project.root.display().to_string(),
        revision: project.revision(),
        lints,
        proofs,
        stale_outside,
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
        println!("  {:<48} {}", name, if *ok { "PASS" } else { "FAIL" });
    }
    if gates.iter().all(|(_, ok)| *ok) {
        println!("panic audit: all gates pass");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("panic audit: FAILED");
        Ok(ExitCode::FAILURE)
    }
}
