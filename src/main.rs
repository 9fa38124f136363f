//! The `wsbroker` binary: parse flags, set up logging, bind, run until a signal.
//!
//! Exit status: 0 after a clean shutdown; 2 for invalid configuration (including an
//! address that cannot be bound); 1 when the broker failed or the runtime could not
//! start.

#![deny(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "`print!` and its kin panic when the stream is closed; `say` does not"
)]

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use wsbroker::config::{Cli, Command};
use wsbroker::{Error, Server};

/// jemalloc rather than the system's malloc: most of an idle connection's allocations
/// are tokio's 128-byte aligned ones, which jemalloc's size classes hold without
/// slack (see Cargo.toml).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let config = match Cli::try_parse() {
        Ok(Cli { command: Some(Command::Token(args)), .. }) => return token(&args),
        Ok(Cli { config, command: None }) => config,
        Err(e) => return clap_exit(&e),
    };
    if let Err(e) = config.validate() {
        say(std::io::stderr(), format_args!("error: {e}\n"));
        return ExitCode::from(2);
    }
    wsbroker::logging::init(config.log_format);
    wsbroker::panic_hook::install();

    // Built by hand rather than with #[tokio::main], whose generated code `expect`s
    // on runtime construction; a failure here becomes an error line and status 1.
    // One thread when asked for, or when the process may run on one CPU only (as
    // under `taskset -c 0`): the current-thread runtime then avoids cross-thread
    // wake-ups (BENCHMARKS.md, "What each change bought").
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = match config.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 if one_cpu => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(n));
            b
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            say(std::io::stderr(), format_args!("error: cannot start the async runtime: {e}\n"));
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let max_connections = config.max_connections;
        let server = match Server::bind(config).await {
            Ok(server) => server,
            Err(e) => {
                say(std::io::stderr(), format_args!("error: {e}\n"));
                return ExitCode::from(2);
            }
        };
        // After the bind, so that a configuration error stays a single line.
        wsbroker::fd_limit::raise(max_connections);
        let reloads = tokio::spawn(wsbroker::signals::reload_on_hangup(server.handle()));
        let stop = wsbroker::signals::stop(server.handle());
        let ended = server.run(stop).await;
        reloads.abort();
        match ended {
            Ok(()) => ExitCode::SUCCESS,
            // The server logged the one line naming the cause when the broker
            // stopped; status 1 lets a supervisor restart the process.
            Err(Error::BrokerStopped(_)) => ExitCode::FAILURE,
            Err(e) => {
                tracing::error!(cause = %e, "exiting with status 1");
                ExitCode::FAILURE
            }
        }
    })
}

/// `wsbroker token`: prints a development token, or one line on stderr and status 2.
fn token(args: &wsbroker::auth::mint::TokenArgs) -> ExitCode {
    match wsbroker::auth::mint::mint(args, std::time::SystemTime::now()) {
        Ok(token) => {
            say(std::io::stdout(), format_args!("{token}\n"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(std::io::stderr(), format_args!("error: {e}\n"));
            ExitCode::from(2)
        }
    }
}

/// Help and version go to stdout with status 0; every usage error is one line on
/// stderr with status 2.
fn clap_exit(e: &clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            say(std::io::stdout(), format_args!("{e}"));
            ExitCode::SUCCESS
        }
        _ => {
            let rendered = e.render().to_string();
            let line = rendered.lines().find(|l| !l.trim().is_empty()).unwrap_or("error: invalid arguments");
            say(std::io::stderr(), format_args!("{line}\n"));
            ExitCode::from(2)
        }
    }
}

/// Writes to stdout or stderr. `print!` and its kin panic when the stream is closed
/// (`wsbroker --help | head`); here a line nobody can read is simply not written.
fn say(mut to: impl std::io::Write, text: std::fmt::Arguments<'_>) {
    if to.write_fmt(text).and_then(|()| to.flush()).is_err() {
        // Nowhere left to report it.
    }
}
