//! The project being worked on: found from the current directory, as cargo finds it,
//! never from a path fixed when xtask was compiled (a copy of the repository built
//! from another's `target/` must work on its own tree).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The workspace root and what git says of it.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
}

impl Project {
    /// The workspace that contains the current directory (`cargo locate-project
    /// --workspace`).
    pub fn locate() -> anyhow::Result<Self> {
        let out = Command::new("cargo")
            .args(["locate-project", "--workspace", "--message-format", "plain"])
            .output()
            .context("cannot run cargo locate-project")?;
        if !out.status.success() {
            bail!("not inside a cargo workspace: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let manifest = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let Some(root) = manifest.parent() else {
            bail!("cargo located no directory: {}", manifest.display())
        };
        Ok(Self { root: root.to_path_buf() })
    }

    /// `path` under the root.
    pub fn join(&self, path: impl AsRef<Path>) -> PathBuf {
        self.root.join(path)
    }

    /// `path` relative to the root, for reports.
    pub fn rel(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).display().to_string()
    }

    /// The commit checked out, with "+ uncommitted changes" when the tree differs
    /// from it; "unknown" outside a git checkout.
    pub fn revision(&self) -> String {
        let git = |args: &[&str]| {
            Command::new("git")
                .args(args)
                .current_dir(&self.root)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let Some(commit) = git(&["rev-parse", "HEAD"]) else {
            return "unknown (not a git checkout)".to_owned();
        };
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        if dirty { format!("{commit} + uncommitted changes") } else { commit }
    }

    /// Every `.rs` file under `dir` (relative to the root), sorted.
    pub fn rust_files(&self, dir: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![self.join(dir)];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    found.push(path);
                }
            }
        }
        found.sort();
        found
    }
}
