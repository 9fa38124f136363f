//! `cargo xtask bench`: runs the benchmark scenarios against wsbroker and the chosen
//! peers, one fresh server per scenario, the server pinned to CPU 0 and the load
//! generator (`wsload`, or `wsprobe` for its one scenario) to CPU 1 with `taskset`.
//! Peers are installed from npm into `target/bench/peers`. Writes `target/bench/run.json`, `target/bench/BENCHMARKS.md`
//! and `target/bench/benchmarks.svg`; with `--write-docs`, also `BENCHMARKS.md` and
//! `docs/benchmarks.svg` in the repository.
//!
//! Its parts: [`scenarios`] (what each drives), [`processes`] (servers, peers, load
//! clients), [`report`] (medians and tables), [`plot`] (the SVG).

mod plot;
mod processes;
mod report;
mod scenarios;
mod tls;
mod tokens;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::builder::TypedValueParser as _;
use serde_json::{Value, json};

use crate::command;
use crate::project::Project;

/// The repeated scenarios (`scenarios::is_repeated`) run this many times, the servers
/// taking turns, and report the median run: single runs on these shared machines
/// vary by a third, and the closest scenarios' servers are within a few percent of
/// each other, which one run cannot tell apart.
const REPEATS: usize = 5;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A peer to measure beside wsbroker (repeatable), installed from npm.
    #[arg(long = "peer", value_name = "PEER", value_enum)]
    peers: Vec<Peer>,
    /// A seconds-long smoke run: every scenario once, briefly, but the idle ones.
    #[arg(long)]
    quick: bool,
    /// Also write BENCHMARKS.md and docs/benchmarks.svg in the repository.
    #[arg(long)]
    write_docs: bool,
    /// Rebuild the report from the last run's saved results (target/bench/run.json)
    /// without running anything, e.g. after editing bench/NOTES.md.
    #[arg(long)]
    replot: bool,
    /// Only this scenario (repeatable), for a closer look at a few: e.g.
    /// `--scenario rooms --runs 11`. Such a run's report covers those alone, so it is
    /// never written into the repository.
    #[arg(long = "scenario", value_name = "NAME", value_parser = scenario_name, conflicts_with_all = ["write_docs", "replot"])]
    only: Vec<String>,
    /// Runs of each repeated scenario per server (wsbroker and Bun), taking turns.
    #[arg(long, value_name = "N", default_value_t = REPEATS, value_parser = clap::value_parser!(u8).range(1..=99).map(usize::from))]
    runs: usize,
}

/// A `--scenario` value: the name of one of [`scenarios::SCENARIOS`].
fn scenario_name(name: &str) -> Result<String, String> {
    if scenarios::SCENARIOS.iter().any(|s| s.name == name) {
        Ok(name.to_owned())
    } else {
        let known: Vec<&str> = scenarios::SCENARIOS.iter().map(|s| s.name).collect();
        Err(format!("no scenario {name:?}; the scenarios: {}", known.join(", ")))
    }
}

/// A peer server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Peer {
    /// Bun's built-in WebSocket server (uWebSockets).
    Bun,
    /// Node.js with the `ws` package.
    NodeWs,
}

/// A server under measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Wsbroker,
    Bun,
    NodeWs,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Self::Wsbroker => "wsbroker",
            Self::Bun => "bun",
            Self::NodeWs => "node-ws",
        }
    }

    /// How many runs of `scenario` this server gets. Node's `ws` runs once: it is a
    /// reference, several times off the targets, and its repeats would take about a
    /// minute of a set that is to stay near five.
    fn runs_of(self, scenario: &str, quick: bool, repeats: usize) -> usize {
        if !quick && self != Self::NodeWs && scenarios::is_repeated(scenario) { repeats } else { 1 }
    }
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let project = Project::locate()?;
    if args.replot {
        return replot_saved(&project, args.write_docs);
    }
    let mut servers = vec![Server::Wsbroker];
    servers.extend(args.peers.iter().map(|p| match p {
        Peer::Bun => Server::Bun,
        Peer::NodeWs => Server::NodeWs,
    }));
    let build = ["build", "--release", "--quiet", "-p", "wsbroker", "-p", "wsbench"];
    if !command::run(&project.root, "cargo", &build, &[], true).success {
        bail!("the release build failed");
    }
    if servers.len() > 1 {
        processes::install_peers(&project)?;
    }
    processes::raise_fd_limit();

    let timing: &[&str] = if args.quick { &["--warmup", "200ms", "--duration", "500ms"] } else { &[] };
    let mut results = Vec::new();
    let started = Instant::now();
    for scenario in scenarios::SCENARIOS {
        if args.quick && scenario.name.starts_with("idle-10k") {
            continue;
        }
        if !args.only.is_empty() && !args.only.iter().any(|name| name == scenario.name) {
            continue;
        }
        // A quick run opens fewer connections.
        let quick_args: Vec<&'static str> =
            scenario.args.iter().map(|a| if args.quick && *a == "20000" { "500" } else { *a }).collect();
        let scenario = &scenarios::Scenario { args: quick_args.leak(), ..*scenario };
        let repeats =
            servers.iter().map(|s| s.runs_of(scenario.name, args.quick, args.runs)).max().unwrap_or(1);
        let mut runs: Vec<(Server, Result<Value, String>)> = Vec::new();
        for round in 1..=repeats {
            for &server in &servers {
                let runs_of = server.runs_of(scenario.name, args.quick, args.runs);
                if !scenario.setup.runs_on(server) || round > runs_of {
                    continue;
                }
                println!("== {} on {} (run {round} of {runs_of})", scenario.name, server.name());
                let outcome = if scenario.setup == scenarios::Setup::TwoNodes {
                    processes::run_two_node(&project, scenario, timing)
                } else {
                    processes::run_one(&project, server, scenario, timing)
                };
                match &outcome {
                    Ok(v) => println!("{v}"),
                    Err(e) => eprintln!("   failed: {e}"),
                }
                runs.push((server, outcome));
            }
        }
        for &server in &servers {
            results.extend(report::median(scenario.name, server, &runs));
        }
    }
    let elapsed = started.elapsed();
    let failed = results.iter().any(|r| r.get("error").is_some());

    let command = format!(
        "cargo xtask bench{}{}{}{}",
        servers.iter().skip(1).map(|s| format!(" --peer {}", s.name())).collect::<String>(),
        if args.quick { " --quick" } else { "" },
        args.only.iter().map(|name| format!(" --scenario {name}")).collect::<String>(),
        if args.runs == REPEATS { String::new() } else { format!(" --runs {}", args.runs) },
    );
    let dir = project.join("target/bench");
    let partial = !args.only.is_empty();
    let saved = json!({"command": command, "elapsed_s": elapsed.as_secs_f64(), "results": results, "partial": partial});
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("run.json"), saved.to_string()))
        .context("cannot write target/bench/run.json")?;
    write_reports(&project, &results, &command, elapsed, args.write_docs)?;
    println!("\nbench finished in {:.0} s; report: target/bench/BENCHMARKS.md", elapsed.as_secs_f64());
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Writes the report and plot under target/bench (and, with `write_docs`, into the
/// repository).
fn write_reports(
    project: &Project,
    results: &[Value],
    command: &str,
    elapsed: Duration,
    write_docs: bool,
) -> anyhow::Result<()> {
    let dir = project.join("target/bench");
    let md = report::markdown(project, results, command, elapsed);
    let svg = plot::plot(results);
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("BENCHMARKS.md"), &md))
        .and_then(|()| std::fs::write(dir.join("benchmarks.svg"), &svg))
        .context("cannot write target/bench")?;
    if write_docs {
        std::fs::create_dir_all(project.join("docs"))
            .and_then(|()| std::fs::write(project.join("BENCHMARKS.md"), &md))
            .and_then(|()| std::fs::write(project.join("docs/benchmarks.svg"), &svg))
            .context("cannot write BENCHMARKS.md")?;
    }
    Ok(())
}

/// `--replot`: rebuilds the report from the last run's saved results.
fn replot_saved(project: &Project, write_docs: bool) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(project.join("target/bench/run.json"))
        .context("no target/bench/run.json; run `cargo xtask bench` first")?;
    let run: Value = serde_json::from_str(&text).context("target/bench/run.json is not JSON")?;
    if write_docs && run.get("partial").and_then(Value::as_bool).unwrap_or(false) {
        bail!(
            "the last run measured only some scenarios (--scenario); run the whole set before writing the docs"
        );
    }
    let results = run.get("results").and_then(Value::as_array).cloned().unwrap_or_default();
    let command = run.get("command").and_then(Value::as_str).unwrap_or("cargo xtask bench");
    // try_from: `from_secs_f64` panics on NaN, negative or huge input.
    let seconds = run.get("elapsed_s").and_then(Value::as_f64).unwrap_or(0.0);
    let elapsed = Duration::try_from_secs_f64(seconds).unwrap_or_default();
    write_reports(project, &results, command, elapsed, write_docs)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn scenarios_are_chosen_by_name_and_runs_counted() {
        let cli =
            Cli::try_parse_from(["bench", "--scenario", "rooms", "--scenario", "fixed-rate", "--runs", "11"])
                .unwrap();
        assert_eq!(cli.args.only, ["rooms", "fixed-rate"]);
        assert_eq!(cli.args.runs, 11);
        assert_eq!(Cli::try_parse_from(["bench"]).unwrap().args.runs, REPEATS);
    }

    #[test]
    fn an_unknown_scenario_a_zero_run_count_and_a_partial_run_into_the_docs_are_refused() {
        let unknown = Cli::try_parse_from(["bench", "--scenario", "roms"]).err().unwrap().to_string();
        assert!(unknown.contains("no scenario \"roms\"") && unknown.contains("rooms"), "{unknown}");
        assert!(Cli::try_parse_from(["bench", "--runs", "0"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--scenario", "rooms", "--write-docs"]).is_err());
    }
}
