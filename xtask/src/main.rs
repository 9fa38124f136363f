//! Project automation, reached through `cargo xtask` (alias in `.cargo/config.toml`).
//!
//! - `cargo xtask audit`: the panic audit; writes `target/audit/report.md` and
//!   `target/audit/report.json` and exits non-zero when any gate fails.
//! - `cargo xtask test`: the README's test command; installs `redis-server` when
//!   absent, then runs `cargo test`.
//! - `cargo xtask bench`: the benchmarks; writes `target/bench/` (and, with
//!   `--write-docs`, `BENCHMARKS.md` and `docs/benchmarks.svg`).

mod audit;
mod bench;
mod test;
mod util;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("audit") => audit::run(),
        Some("bench") => bench::run(args.get(1..).unwrap_or_default()),
        Some("test") => test::run(args.get(1..).unwrap_or_default()),
        Some("-h" | "--help") | None => {
            println!(
                "usage: cargo xtask <test|audit|bench>\n\n  test    install redis-server if absent, then cargo test\n  audit   run the panic audit; report in target/audit/\n  \
                 bench   [--peer bun] [--peer node-ws] [--quick] [--write-docs]; report in target/bench/"
            );
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("error: unknown xtask '{other}' (try: cargo xtask audit)");
            ExitCode::from(2)
        }
    }
}
