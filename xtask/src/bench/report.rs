//! The benchmark report: the median of repeated runs, and the tables of
//! BENCHMARKS.md.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};
use wsbench::keys;

use super::{REPEATS, Server, scenarios};
use crate::project::Project;

/// The median run of `server` among `runs`, by deliveries per server-CPU-second for
/// flat-out runs and by p99 latency for fixed-rate ones (with the median of the runs'
/// p50s in place of its own), or its first error when every run failed; `None` when
/// it did not run.
pub fn median(scenario: &str, server: Server, runs: &[(Server, Result<Value, String>)]) -> Option<Value> {
    let mut ok: Vec<&Value> =
        runs.iter().filter(|(s, _)| *s == server).filter_map(|(_, r)| r.as_ref().ok()).collect();
    if ok.is_empty() {
        let error = runs.iter().find_map(|(s, r)| if *s == server { r.as_ref().err() } else { None })?;
        return Some(json!({"scenario": scenario, "server": server.name(), "error": error}));
    }
    let key = |v: &Value| {
        if v[keys::MODE].as_str() == Some(keys::FLAT_OUT) {
            num(Some(v), &[keys::DELIVERIES_PER_SERVER_CPU_S]).unwrap_or(0.0)
        } else if v[keys::MODE].as_str() == Some(keys::HANDSHAKE) {
            num(Some(v), &[keys::HANDSHAKES_PER_S]).unwrap_or(0.0)
        } else {
            num(Some(v), &[keys::LATENCY_MS, keys::P99]).unwrap_or(0.0)
        }
    };
    ok.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let middle = ok.get(ok.len().checked_div(2).unwrap_or(0))?;
    // Every run's figures, so that the report shows the spread beside the median.
    let each = |path: &[&str]| -> Vec<f64> { ok.iter().filter_map(|v| num(Some(v), path)).collect() };
    let spread = json!({
        "per_cpu": each(&[keys::DELIVERIES_PER_SERVER_CPU_S]),
        "p50": each(&[keys::LATENCY_MS, keys::P50]),
        "p99": each(&[keys::LATENCY_MS, keys::P99]),
    });
    // The median run by p99 has the median p99, but not necessarily the median p50:
    // that is taken across the runs on its own.
    let mut result = (*middle).clone();
    let mut p50s = each(&[keys::LATENCY_MS, keys::P50]);
    p50s.sort_by(f64::total_cmp);
    if is_latency(middle)
        && let Some(p50) = p50s.get(p50s.len().checked_div(2).unwrap_or(0))
        && let Some(latency) = result.get_mut(keys::LATENCY_MS).and_then(Value::as_object_mut)
    {
        latency.insert(keys::P50.to_owned(), json!(p50));
    }
    Some(
        json!({"scenario": scenario, "server": server.name(), "result": result, "runs": ok.len(), "spread": spread}),
    )
}

/// Whether a run measured latency at a fixed rate (not flat out, not handshakes).
fn is_latency(v: &Value) -> bool {
    let mode = v[keys::MODE].as_str();
    mode != Some(keys::FLAT_OUT) && mode != Some(keys::HANDSHAKE)
}

/// The lowest and highest of one figure across a scenario's runs, as `(low–high)`,
/// when it ran more than once; empty otherwise.
fn spread(
    results: &[Value],
    scenario: &str,
    server: &str,
    figure: &str,
    scale: f64,
    digits: usize,
) -> String {
    let values: Vec<f64> = results
        .iter()
        .find(|r| r["scenario"] == scenario && r["server"] == server)
        .and_then(|r| r.get("spread")?.get(figure)?.as_array())
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    if values.len() < 2 {
        return String::new();
    }
    let low = values.iter().copied().fold(f64::INFINITY, f64::min) / scale;
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max) / scale;
    format!(" ({low:.digits$}–{high:.digits$})")
}

/// Whether `server` ran `scenario` at all (a failed run counts).
fn ran(results: &[Value], scenario: &str, server: &str) -> bool {
    results.iter().any(|r| r["scenario"] == scenario && r["server"] == server)
}

pub fn get<'a>(results: &'a [Value], scenario: &str, server: &str) -> Option<&'a Value> {
    results.iter().find(|r| r["scenario"] == scenario && r["server"] == server).and_then(|r| r.get("result"))
}

pub fn num(v: Option<&Value>, path: &[&str]) -> Option<f64> {
    let mut cur = v?;
    for key in path {
        cur = cur.get(*key)?;
    }
    cur.as_f64()
}

/// The machine, in words.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

/// The report: tables of every figure, the scenarios, and bench/NOTES.md.
pub fn markdown(project: &Project, results: &[Value], command: &str, elapsed: Duration) -> String {
    let servers: Vec<&str> = ["wsbroker", "bun", "node-ws"]
        .into_iter()
        .filter(|s| results.iter().any(|r| r["server"] == *s))
        .collect();
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Produced by `{command}` in {:.0} s on {}. Each scenario starts a fresh server \
         pinned to CPU 0 (`taskset -c 0`); the load generator `wsload` runs on CPU 1 \
         (and for `fixed-rate-wsprobe`, a second client of another design, `wsprobe`). \
         Messages are 64 bytes; 1 s warm-up, then a 3 s measurement window. The fan-out, \
         fixed-rate and rooms scenarios run {REPEATS} times for wsbroker and Bun, the two taking \
         turns, and show the median run (by deliveries per CPU-second, and by p99) with the \
         lowest and highest of the runs in brackets; Node's \
         `ws`, a reference far from both, runs once. These \
         machines are shared and noisy, so compare servers within one run, as ratios.\n",
        elapsed.as_secs_f64(),
        machine()
    );
    let _ = writeln!(md, "![throughput and latency per server](docs/benchmarks.svg)\n");
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".to_owned(),
    };
    let fmt_m = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{:.2} M", v / 1e6));
    // Below a millisecond (the rooms scenario) to the microsecond: two decimals there
    // would show 0.108 and 0.101 ms both as 0.11 and call them level.
    let ms_digits = |v: Option<f64>| if v.is_some_and(|v| v < 1.0) { 3 } else { 2 };
    let fmt_ms = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.*}", ms_digits(Some(v))));
    let fmt_pct = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{:.1} %", v * 100.0));

    let _ = writeln!(md, "## Fan-out throughput (flat out)\n");
    let _ = writeln!(
        md,
        "| scenario | server | deliveries / server-CPU-s | deliveries / s | dropped by the server | server CPU | wsload CPU | vs Bun |\n|---|---|---|---|---|---|---|---|"
    );
    for scenario in ["fanout-1000", "fanout-100x10", "fanout-1000-tls", "fanout-1000-v1"] {
        let bun = num(get(results, scenario, "bun"), &[keys::DELIVERIES_PER_SERVER_CPU_S]);
        // Servers that did not run a scenario (Node's `ws` over TLS) get no row.
        for server in servers.iter().filter(|s| ran(results, scenario, s)) {
            let r = get(results, scenario, server);
            let per_cpu = num(r, &[keys::DELIVERIES_PER_SERVER_CPU_S]);
            let saturated = r.and_then(|r| r[keys::LOADGEN_SATURATED].as_bool()).unwrap_or(false);
            let _ = writeln!(
                md,
                "| {scenario} | {server} | {}{} | {} | {} | {} | {}{} | {} |",
                fmt_m(per_cpu),
                spread(results, scenario, server, "per_cpu", 1e6, 2),
                fmt_m(num(r, &[keys::DELIVERIES_PER_S])),
                num(r, &[keys::SERVER_DROPPED_OUTBOX_FULL])
                    .map_or("not reported".to_owned(), |d| format!("{d:.0}")),
                fmt_pct(num(r, &[keys::SERVER_CPU_FRACTION])),
                fmt_pct(num(r, &[keys::LOADGEN_CPU_FRACTION])),
                if saturated { " (wsload saturated)" } else { "" },
                ratio(per_cpu, bun),
            );
        }
    }
    let _ = writeln!(md, "\n## Latency at a fixed rate\n");
    let _ = writeln!(
        md,
        "Latency is measured from each message's scheduled send time, so a stalled \
         sender cannot hide delay (no coordinated omission).\n"
    );
    let _ = writeln!(
        md,
        "| scenario | server | p50 ms | p99 ms | p99.9 ms | max ms | server CPU | undelivered |\n|---|---|---|---|---|---|---|---|"
    );
    for scenario in ["fixed-rate", "fixed-rate-wsprobe", "rooms", "two-node"] {
        for server in &servers {
            if get(results, scenario, server).is_none() {
                continue;
            }
            let r = get(results, scenario, server);
            let (p50, p99) = (num(r, &[keys::LATENCY_MS, keys::P50]), num(r, &[keys::LATENCY_MS, keys::P99]));
            let _ = writeln!(
                md,
                "| {scenario} | {server} | {}{} | {}{} | {} | {} | {} | {} |",
                fmt_ms(p50),
                spread(results, scenario, server, "p50", 1.0, ms_digits(p50)),
                fmt_ms(p99),
                spread(results, scenario, server, "p99", 1.0, ms_digits(p99)),
                fmt_ms(num(r, &[keys::LATENCY_MS, keys::P999])),
                fmt_ms(num(r, &[keys::LATENCY_MS, keys::MAX])),
                fmt_pct(num(r, &[keys::SERVER_CPU_FRACTION])),
                fmt_pct(num(r, &[keys::LOSS])),
            );
        }
    }
    let _ = writeln!(md, "\n## Handshakes\n");
    let _ = writeln!(
        md,
        "Connections opened, upgraded and dropped as fast as the server admits them (32 in flight), \
         without a token and with one, and over TLS; the token scenarios are wsbroker's alone.\n"
    );
    let _ = writeln!(
        md,
        "| scenario | server | handshakes / s | server CPU µs per handshake | server CPU |\n|---|---|---|---|---|"
    );
    for scenario in ["handshakes", "handshakes-tls", "handshakes-hs256", "handshakes-es256"] {
        for server in &servers {
            let Some(r) = get(results, scenario, server) else { continue };
            let _ = writeln!(
                md,
                "| {scenario} | {server} | {} | {} | {} |",
                num(Some(r), &[keys::HANDSHAKES_PER_S]).map_or("–".to_owned(), |v| format!("{v:.0}")),
                num(Some(r), &[keys::SERVER_CPU_US_PER_HANDSHAKE])
                    .map_or("–".to_owned(), |v| format!("{v:.1}")),
                fmt_pct(num(Some(r), &[keys::SERVER_CPU_FRACTION])),
            );
        }
    }
    let _ = writeln!(md, "\n## Memory\n");
    let _ = writeln!(md, "| scenario | server | figure |\n|---|---|---|");
    for scenario in ["idle-10k", "idle-10k-tls"] {
        for server in servers.iter().filter(|s| ran(results, scenario, s)) {
            let idle = num(get(results, scenario, server), &[keys::SERVER_BYTES_PER_CONNECTION]);
            let _ = writeln!(
                md,
                "| {scenario} | {server} | {} per idle connection |",
                idle.map_or("–".to_owned(), |b| format!("{:.1} KiB", b / 1024.0))
            );
        }
    }
    for server in &servers {
        let peak = num(get(results, "saturation", server), &[keys::SERVER_PEAK_RSS_KIB]);
        let _ = writeln!(
            md,
            "| saturation | {server} | peak RSS {} |",
            peak.map_or("–".to_owned(), |k| format!("{:.1} MiB", k / 1024.0))
        );
    }
    let _ = writeln!(md, "\n## TLS\n");
    let _ = writeln!(
        md,
        "The same fan-out and idle scenarios over wss://, wsbroker (rustls) and Bun \
         (BoringSSL) serving the same self-signed ECDSA P-256 certificate, beside the \
         plain figures of this run.\n"
    );
    let _ = writeln!(
        md,
        "| figure | server | plain | TLS | TLS ÷ plain | vs Bun over TLS |\n|---|---|---|---|---|---|"
    );
    let figures: [(&str, &str, &str, &[&str]); 2] = [
        (
            "deliveries / server-CPU-s (fan-out, 1000)",
            "fanout-1000",
            "fanout-1000-tls",
            &[keys::DELIVERIES_PER_SERVER_CPU_S],
        ),
        (
            "bytes per idle connection (10,000)",
            "idle-10k",
            "idle-10k-tls",
            &[keys::SERVER_BYTES_PER_CONNECTION],
        ),
    ];
    for (figure, plain, tls, path) in figures {
        let bun_tls = num(get(results, tls, "bun"), path);
        for server in servers.iter().filter(|s| get(results, tls, s).is_some()) {
            let (p, t) = (num(get(results, plain, server), path), num(get(results, tls, server), path));
            let show = |v: Option<f64>| match v {
                Some(v) if plain.starts_with("idle") => format!("{v:.0} B"),
                v => fmt_m(v),
            };
            let _ = writeln!(
                md,
                "| {figure} | {server} | {} | {} | {} | {} |",
                show(p),
                show(t),
                ratio(t, p),
                ratio(t, bun_tls)
            );
        }
    }
    let _ = writeln!(md, "\n## Scenarios\n");
    for s in scenarios::SCENARIOS {
        let _ = writeln!(md, "- `{}`: {} (`wsload {}`)", s.name, s.what, s.args.join(" "));
    }
    let _ = writeln!(
        md,
        "\nIn the flat-out scenarios the publisher writes as fast as TCP accepts, so most of \
         what it sent in the window is still in the kernel's socket buffers (or a server's \
         own queues) when the run ends; counting it as lost would measure buffer sizes. \
         The fan-out table therefore shows what the server itself dropped, which only \
         wsbroker reports (`wsbroker_dropped_total{{reason=\"outbox_full\"}}`). In the \
         fixed-rate scenarios, \"undelivered\" counts deliveries owed for messages sent \
         in the window that had not arrived once deliveries had stopped for 500 ms \
         (at most 5 s after the window closed)."
    );
    // Hand-written analysis kept beside the generator, so regenerating keeps it.
    if let Ok(notes) = std::fs::read_to_string(project.join("bench/NOTES.md")) {
        md.push('\n');
        md.push_str(&notes);
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat_out(per_cpu: f64) -> Result<Value, String> {
        Ok(json!({(keys::MODE): keys::FLAT_OUT, (keys::DELIVERIES_PER_SERVER_CPU_S): per_cpu}))
    }

    fn fixed_rate(p99: f64) -> Result<Value, String> {
        Ok(json!({(keys::MODE): keys::FIXED_RATE, (keys::LATENCY_MS): {(keys::P99): p99}}))
    }

    #[test]
    fn the_median_run_is_chosen_per_server_by_the_scenario_s_figure() {
        let runs = vec![
            (Server::Wsbroker, flat_out(3.0)),
            (Server::Bun, flat_out(100.0)),
            (Server::Wsbroker, flat_out(1.0)),
            (Server::Wsbroker, Err("crashed".to_owned())),
            (Server::Wsbroker, flat_out(2.0)),
        ];
        let median_run = median("fanout", Server::Wsbroker, &runs).unwrap();
        assert_eq!(num(median_run.get("result"), &[keys::DELIVERIES_PER_SERVER_CPU_S]), Some(2.0));
        assert_eq!(median_run["runs"], 3, "a failed run is left out");
        let latency =
            [(Server::Bun, fixed_rate(9.0)), (Server::Bun, fixed_rate(5.0)), (Server::Bun, fixed_rate(7.0))];
        let median_run = median("fixed-rate", Server::Bun, &latency).unwrap();
        assert_eq!(num(median_run.get("result"), &[keys::LATENCY_MS, keys::P99]), Some(7.0));
    }

    #[test]
    fn the_p50_shown_is_the_median_of_the_runs_p50s_not_the_median_run_s() {
        let run = |p50: f64, p99: f64| -> Result<Value, String> {
            Ok(
                json!({(keys::MODE): keys::FIXED_RATE, (keys::LATENCY_MS): {(keys::P50): p50, (keys::P99): p99}}),
            )
        };
        // By p99 the middle run is the second, whose p50 (0.110) is the highest.
        let runs =
            [(Server::Bun, run(0.100, 0.4)), (Server::Bun, run(0.110, 0.5)), (Server::Bun, run(0.105, 0.6))];
        let median_run = median("rooms", Server::Bun, &runs).unwrap();
        assert_eq!(num(median_run.get("result"), &[keys::LATENCY_MS, keys::P99]), Some(0.5));
        assert_eq!(num(median_run.get("result"), &[keys::LATENCY_MS, keys::P50]), Some(0.105));
    }

    #[test]
    fn the_spread_of_the_runs_is_shown_beside_the_median() {
        let runs = vec![
            (Server::Wsbroker, flat_out(9.5e6)),
            (Server::Wsbroker, flat_out(11.0e6)),
            (Server::Wsbroker, flat_out(10.5e6)),
        ];
        let results = vec![median("fanout", Server::Wsbroker, &runs).unwrap()];
        assert_eq!(spread(&results, "fanout", "wsbroker", "per_cpu", 1e6, 2), " (9.50–11.00)");
        assert_eq!(spread(&results, "fanout", "bun", "per_cpu", 1e6, 2), "", "did not run");
        let once = vec![median("rooms", Server::Bun, &[(Server::Bun, fixed_rate(5.0))]).unwrap()];
        assert_eq!(spread(&once, "rooms", "bun", "p99", 1.0, 2), "", "one run has no spread");
    }

    #[test]
    fn a_server_whose_runs_all_failed_reports_its_error_and_one_that_did_not_run_nothing() {
        let runs = vec![(Server::Bun, Err("no bun".to_owned()))];
        assert_eq!(median("rooms", Server::Bun, &runs).unwrap()["error"], "no bun");
        assert!(median("rooms", Server::NodeWs, &runs).is_none());
    }
}
