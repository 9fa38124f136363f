//! Small helpers shared by the subcommands: running commands, finding paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace root (the parent of this crate's manifest directory).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), Path::to_path_buf)
}

/// What a finished command left behind.
pub struct Output {
    pub success: bool,
    /// stdout and stderr, interleaved as far as the pipe allows.
    pub text: String,
}

/// Runs `program args` in the workspace root, capturing stdout and stderr together.
/// With `echo`, every line is also printed as it arrives (for CI logs).
pub fn run(program: &str, args: &[&str], envs: &[(&str, &str)], echo: bool) -> Output {
    println!("$ {program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(root()).stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    // Merge stderr into stdout through a shell-free pipe: run with both piped and
    // read them on two threads, echoing as we go.
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Output { success: false, text: format!("cannot run {program}: {e}") };
        }
    };
    let pump = |stream: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut collected = String::new();
            if let Some(stream) = stream {
                for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    if echo {
                        println!("{line}");
                    }
                    collected.push_str(&line);
                    collected.push('\n');
                }
            }
            collected
        })
    };
    let out = pump(child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
    let err = pump(child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
    let status = child.wait();
    let mut text = out.join().unwrap_or_default();
    text.push_str(&err.join().unwrap_or_default());
    match status {
        Ok(status) => Output { success: status.success(), text },
        Err(e) => Output { success: false, text: format!("{text}\nwait failed: {e}") },
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    lines.iter().skip(skip).copied().collect::<Vec<_>>().join("\n")
}

/// Every `.rs` file under `dir`, sorted.
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
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

/// `path` relative to the workspace root, for reports.
pub fn rel(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}
