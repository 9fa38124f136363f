//! Project automation, reached through `cargo xtask` (alias in `.cargo/config.toml`).
//!
//! - `cargo xtask audit`: the panic audit; writes `target/audit/report.md` and
//!   `target/audit/report.json` and exits non-zero when any gate fails.

mod audit;
mod util;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("audit") => audit::run(),
        Some("-h" | "--help") | None => {
            println!("usage: cargo xtask <audit>\n\n  audit   run the panic audit; report in target/audit/");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("error: unknown xtask '{other}' (try: cargo xtask audit)");
            ExitCode::from(2)
        }
    }
}
