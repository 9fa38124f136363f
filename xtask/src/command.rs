//! Running the commands the subcommands are made of.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

/// What a finished command left behind.
pub struct Output {
    pub success: bool,
    /// stdout and stderr, each in the order written (stdout first).
    pub text: String,
}

/// Runs `program args` in `dir`, capturing stdout and stderr. With `echo`, every line
/// is also printed as it arrives (for CI logs).
pub fn run(dir: &Path, program: &str, args: &[&str], envs: &[(&str, &str)], echo: bool) -> Output {
    println!("$ {program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return Output { success: false, text: format!("cannot run {program}: {e}") },
    };
    // Both pipes are read on threads of their own, so neither can fill and block
    // the child.
    let pump = |stream: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut collected = String::new();
            if let Some(stream) = stream {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
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
    let out = pump(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = pump(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let status = child.wait();
    let mut text = out.join().unwrap_or_default();
    text.push_str(&err.join().unwrap_or_default());
    match status {
        Ok(status) => Output { success: status.success(), text },
        Err(e) => Output { success: false, text: format!("{text}\nwait failed: {e}") },
    }
}

/// Whether `program --version` runs.
pub fn found(program: &str, version_args: &[&str]) -> bool {
    Command::new(program)
        .args(version_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    lines.iter().skip(skip).copied().collect::<Vec<_>>().join("\n")
}
