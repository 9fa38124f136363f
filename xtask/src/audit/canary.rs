//! The canaries: proof that each annotated function's proof is live.
//!
//! `no_panic` checks a function only where the linker sees it: an annotated function
//! that the audit binary never links is never checked, yet its build succeeds. So the
//! audit copies the workspace, plants a panic the optimiser cannot remove
//! (`if black_box(false) { panic!() }`) at the top of every annotated function's body,
//! and builds the audit binary from the copy. That build must fail, and the linker
//! must name every annotated function: a function it does not name is not linked, and
//! so not proven.

use std::path::Path;

use anyhow::{Context, bail};

use super::parse;
use super::source::Function;
use crate::command::{self, Output};
use crate::project::Project;

/// The panic planted in each annotated function.
const CANARY: &str = " if ::core::hint::black_box(false) { ::core::panic!(\"no_panic canary\"); }";

/// What the canary build showed.
pub struct Canaries {
    /// The build of the copy with every canary planted.
    pub build: Output,
    /// The functions the linker named.
    pub named: Vec<String>,
}

impl Canaries {
    /// Whether `name`'s canary made the build fail naming it: its proof is live.
    pub fn live(&self, name: &str) -> bool {
        !self.build.success && self.named.iter().any(|n| n == name)
    }
}

/// Plants a canary in every annotated function of a copy of the workspace and builds
/// the audit binary from it, sharing the workspace's target directory (so only the
/// copy's own crate is compiled again).
pub fn run(project: &Project, annotated: &[&Function]) -> anyhow::Result<Canaries> {
    let copy = project.join("target/audit/canary-tree");
    if copy.exists() {
        std::fs::remove_dir_all(&copy).with_context(|| format!("cannot clear {}", copy.display()))?;
    }
    copy_tree(&project.root, &copy)?;
    rename_package(&copy)?;
    plant(&copy, annotated)?;
    let target = project.join("target").display().to_string();
    let build = command::run(
        &copy,
        "cargo",
        &["build", "--profile", "audit", "--features", "no-panic", "--example", "no_panic_audit"],
        &[("CARGO_TARGET_DIR", target.as_str())],
        false,
    );
    let named = parse::rejected_functions(&build.text);
    Ok(Canaries { build, named })
}

/// Copies the workspace's files (not `target/` or `.git/`) to `to`.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type()?.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).with_context(|| format!("cannot copy {}", src.display()))?;
        }
    }
    Ok(())
}

/// Gives the copy's package a name of its own. cargo hashes a workspace member's
/// artifacts by its name and its path relative to the workspace, which a copy
/// shares; under one name the copy's build would overwrite the workspace's own
/// artifacts in the shared target directory. The library keeps its name.
fn rename_package(copy: &Path) -> anyhow::Result<()> {
    let manifest = copy.join("Cargo.toml");
    let text =
        std::fs::read_to_string(&manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
    let renamed = text.replacen("name = \"wsbroker\"", "name = \"wsbroker-canary\"", 1);
    if renamed == text {
        bail!("no `name = \"wsbroker\"` in {}", manifest.display());
    }
    let renamed = renamed.replacen("[features]", "[lib]\nname = \"wsbroker\"\n\n[features]", 1);
    std::fs::write(&manifest, renamed).with_context(|| format!("cannot write {}", manifest.display()))
}

/// Inserts the canary after the opening brace of each function's body, in the copy.
fn plant(copy: &Path, annotated: &[&Function]) -> anyhow::Result<()> {
    let mut files: Vec<&str> = annotated.iter().map(|f| f.file.as_str()).collect();
    files.sort_unstable();
    files.dedup();
    for file in files {
        let path = copy.join(file);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut at: Vec<(usize, usize)> =
            annotated.iter().filter(|f| f.file == file).map(|f| f.body_open).collect();
        std::fs::write(&path, with_canaries(&text, &mut at)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `text` with the canary after the `{` at each (line, column in characters).
fn with_canaries(text: &str, at: &mut [(usize, usize)]) -> anyhow::Result<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // From the last to the first, so that each insertion leaves the others in place.
    at.sort_unstable_by(|a, b| b.cmp(a));
    for &(line, column) in at.iter() {
        let Some(source) = line.checked_sub(1).and_then(|i| lines.get_mut(i)) else {
            bail!("no line {line} to plant a canary in");
        };
        let Some((byte, '{')) = source.char_indices().nth(column) else {
            bail!("no `{{` at line {line}, column {column}");
        };
        source.insert_str(byte.saturating_add(1), CANARY);
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canaries_go_right_after_each_body_s_brace() {
        let text = "fn a() {\n    x();\n}\n// ①\nfn b(y: u8) -> u8 { y }\n";
        let planted = with_canaries(text, &mut [(1, 7), (5, 18)]).unwrap();
        assert_eq!(
            planted,
            format!("fn a() {{{CANARY}\n    x();\n}}\n// ①\nfn b(y: u8) -> u8 {{{CANARY} y }}\n")
        );
        assert!(with_canaries(text, &mut [(2, 0)]).is_err(), "a position without a brace is refused");
    }
}
