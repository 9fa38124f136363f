//! `cargo xtask test`: the README's test command. Installs what the test suite needs
//! on a fresh machine, then runs `cargo test` with any extra arguments.

use std::process::ExitCode;

use crate::command;
use crate::install;
use crate::project::Project;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Passed on to `cargo test` (e.g. a test name, or `-- --nocapture`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cargo_test_args: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let project = Project::locate()?;
    install::redis_server(&project)?;
    let mut cargo_args = vec!["test", "--workspace"];
    cargo_args.extend(args.cargo_test_args.iter().map(String::as_str));
    let tests = command::run(&project.root, "cargo", &cargo_args, &[], true);
    Ok(if tests.success { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
