//! The benchmark plot (`docs/benchmarks.svg`), drawn by hand as SVG.

use std::fmt::Write as _;

use serde_json::Value;
use wsbench::keys;

use super::report::{get, num};

/// One chart: a title, and groups of (label, JSON path of the value).
type Panel<'a> = (&'a str, &'a [(&'a str, &'a [&'a str])]);

/// A grouped bar chart: deliveries per server-CPU-second for the fan-out scenarios,
/// and p50/p99 latency for the fixed-rate scenarios, one colour per server.
pub fn plot(results: &[Value]) -> String {
    let servers = [("wsbroker", "#d9480f"), ("bun", "#f2c14e"), ("node-ws", "#5c940d")];
    let present: Vec<(&str, &str)> =
        servers.into_iter().filter(|(s, _)| results.iter().any(|r| r["server"] == *s)).collect();
    let panels: [Panel<'_>; 2] = [
        (
            "deliveries per server-CPU-second (millions; higher is better)",
            &[
                ("fanout-1000", &[keys::DELIVERIES_PER_SERVER_CPU_S]),
                ("fanout-100x10", &[keys::DELIVERIES_PER_SERVER_CPU_S]),
            ],
        ),
        (
            "latency p50 / p99 (ms; lower is better; each group to its own scale)",
            &[
                ("fixed-rate p50", &[keys::LATENCY_MS, keys::P50]),
                ("fixed-rate p99", &[keys::LATENCY_MS, keys::P99]),
                ("rooms p50", &[keys::LATENCY_MS, keys::P50]),
                ("rooms p99", &[keys::LATENCY_MS, keys::P99]),
            ],
        ),
    ];
    let (width, panel_h) = (760.0_f64, 220.0_f64);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        panel_h * 2.0 + 40.0
    );
    for (p, (title, groups)) in panels.iter().enumerate() {
        let top = 20.0 + p as f64 * panel_h;
        let values: Vec<Vec<f64>> = groups
            .iter()
            .map(|(label, path)| {
                let scenario = label.split(' ').next().unwrap_or(label);
                present
                    .iter()
                    .map(|(s, _)| {
                        let v = num(get(results, scenario, s), path).unwrap_or(0.0);
                        if p == 0 { v / 1e6 } else { v }
                    })
                    .collect()
            })
            .collect();
        let max = values.iter().flatten().fold(0.0_f64, |a, b| a.max(*b)).max(1e-9);
        let _ = writeln!(svg, "<text x=\"10\" y=\"{}\" font-weight=\"bold\">{title}</text>", top + 4.0);
        let chart_top = top + 20.0;
        let chart_h = panel_h - 70.0;
        let group_w = (width - 40.0) / groups.len().max(1) as f64;
        let bar_w = (group_w - 20.0) / present.len().max(1) as f64;
        for (g, (label, _)) in groups.iter().enumerate() {
            let x0 = 20.0 + g as f64 * group_w;
            // Latency groups are scaled one by one against the two fastest servers'
            // values, so that a far slower one does not flatten them; its bar is cut
            // at the top and its label still gives the true value.
            let group_max = if p == 0 {
                max
            } else {
                let mut vs: Vec<f64> = values.get(g).cloned().unwrap_or_default();
                vs.sort_by(f64::total_cmp);
                vs.get(..2.min(vs.len())).unwrap_or_default().iter().fold(0.0_f64, |a, b| a.max(*b)).max(1e-9)
                    * 1.25
            };
            for (i, (_, colour)) in present.iter().enumerate() {
                let v = values.get(g).and_then(|vs| vs.get(i)).copied().unwrap_or(0.0);
                let h = chart_h * (v / group_max).min(1.0);
                let x = x0 + 10.0 + i as f64 * bar_w;
                let y = chart_top + chart_h - h;
                // Under 1 (the rooms latencies, in ms) to three decimals, as in the tables.
                let digits = if v < 1.0 { 3 } else { 2 };
                let _ = writeln!(
                    svg,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{v:.digits$}</text>",
                    bar_w - 4.0,
                    x + (bar_w - 4.0) / 2.0,
                    y - 3.0
                );
            }
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
                x0 + group_w / 2.0,
                chart_top + chart_h + 16.0
            );
        }
    }
    for (i, (name, colour)) in present.iter().enumerate() {
        let x = 20.0 + i as f64 * 120.0;
        let y = panel_h * 2.0 + 25.0;
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{colour}\"/><text x=\"{}\" y=\"{y}\">{name}</text>",
            y - 10.0,
            x + 16.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}
