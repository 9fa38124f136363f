//! Project automation, reached through `cargo xtask` (alias in `.cargo/config.toml`).
//! `cargo xtask --help` lists the subcommands and `cargo xtask <command> --help`
//! their flags; each subcommand is a module with one `run`.

mod audit;
mod bench;
mod command;
mod install;
mod project;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// wsbroker's project automation: tests, the panic audit and the benchmarks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The README's test command: installs what the tests need (redis-server), then
    /// runs `cargo test`.
    Test(test::Args),
    /// The panic audit: every gate, and the report in target/audit/.
    Audit(audit::Args),
    /// The benchmarks against wsbroker and the chosen peers; report in target/bench/.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Test(args) => test::run(&args),
        Command::Audit(args) => audit::run(&args),
        Command::Bench(args) => bench::run(&args),
    };
    match outcome {
        Ok(ExitCode::SUCCESS) => ExitCode::SUCCESS,
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
