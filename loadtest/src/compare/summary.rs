//! A comparison's outputs: `results.json` (everything measured), one `.hgrm`
//! per target (the valid trials merged), the terminal table, and
//! `report.html` ([`super::report`]).

use std::fmt::Write as _;
use std::path::Path;

use super::{cpu_per_thousand, valid_histograms, CompareError, Results, QUANTILES};
use crate::histograms::{hgrm, new_histogram, supported_quantile};
use crate::result::format_micros;

/// Every target of `results` in column order: the proxies (tailcut, Go,
/// then the reference proxies that were installed), then `direct`.
pub fn targets(results: &Results) -> Vec<&str> {
    results
        .proxies
        .iter()
        .map(|p| p.proxy.as_str())
        .chain(std::iter::once("direct"))
        .collect()
}

/// Writes `results.json`, then the files rendered from it.
pub fn write(results: &Results, out: &Path) -> Result<(), CompareError> {
    let json = serde_json::to_string_pretty(results).unwrap_or_default();
    let path = out.join("results.json");
    std::fs::write(&path, json + "\n").map_err(|source| CompareError::Write { path, source })?;
    render(results, out)
}

/// Writes the `.hgrm` files, `summary.txt`, `report.html` and its charts as
/// `.svg` files under `out` from `results`, and prints the table.
pub fn render(results: &Results, out: &Path) -> Result<(), CompareError> {
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|source| CompareError::Write { path, source })
    };
    for target in targets(results) {
        write(&format!("{target}.hgrm"), hgrm(&merged(results, target)))?;
    }
    let table = table(results);
    print!("{table}");
    write("summary.txt", table)?;
    write("report.html", super::report::html(results))?;
    // The report's charts on their own too, for pages that embed them.
    let charts = [
        ("spectrum.svg", Some(super::charts::spectrum(results))),
        ("timeline.svg", super::charts::timeline(results)),
        ("sweep-rate.svg", super::charts::sweep(results, false)),
        ("sweep-fraction.svg", super::charts::sweep(results, true)),
    ];
    for (name, svg) in charts {
        match svg {
            Some(svg) => write(name, svg)?,
            // Not drawable from these results: no stale chart from an earlier run.
            None => {
                let _ = std::fs::remove_file(out.join(name));
            }
        }
    }
    Ok(())
}

/// The valid trials of `target`, merged.
pub(super) fn merged(results: &Results, target: &str) -> hdrhistogram::Histogram<u64> {
    let mut merged = new_histogram();
    for h in valid_histograms(&results.trials, target) {
        let _ = merged.add(&h);
    }
    merged
}

/// The proxy's RSS at the end of each of its trials, KiB: median, least
/// and most. A steady proxy's three are close.
pub fn rss_after_trials(trials: &[super::Trial], target: &str) -> Option<(u64, u64, u64)> {
    let mut rss: Vec<u64> = trials
        .iter()
        .filter(|t| t.target == target)
        .filter_map(|t| t.proxy_rss_kib)
        .collect();
    rss.sort_unstable();
    Some((*rss.get(rss.len() / 2)?, *rss.first()?, *rss.last()?))
}

/// RSS per idle connection of `target`, in KB, or `-` if not measured.
pub fn idle_per_connection(results: &Results, target: &str) -> String {
    results
        .idle
        .iter()
        .find(|i| i.proxy == target)
        .and_then(|i| i.per_connection_bytes())
        .map_or("-".into(), |b| format!("{:.1} KB", b / 1000.0))
}

/// The terminal summary: per-target figures, then the verdicts.
pub fn table(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} ({}) at {:.0} req/s; {} thread(s) per proxy; {}",
        results.scenario,
        results.description,
        results.rate,
        results.proxy_threads,
        results.plan.describe().replace('\n', "; ")
    );
    let targets = targets(results);
    let proxies = &targets[..targets.len() - 1];
    for &target in &targets {
        let trials = results.trials.iter().filter(|t| t.target == target).count();
        let valid = results
            .trials
            .iter()
            .filter(|t| t.target == target && t.result.verdict.valid)
            .count();
        let _ = writeln!(out, "{target:>8}: {valid} of {trials} trials valid");
    }
    // Columns as wide as the longest target name needs.
    let width = targets.iter().map(|t| t.len() + 2).max().unwrap_or(14).max(14);
    let _ = write!(out, "\n{:<26}", "figure");
    for target in &targets {
        let _ = write!(out, "{target:>width$}");
    }
    let _ = writeln!(out);
    let histograms: Vec<_> = targets.iter().map(|t| merged(results, t)).collect();
    for quantile in QUANTILES {
        let _ = write!(out, "{:<26}", format!("latency p{}", quantile * 100.0));
        for h in &histograms {
            let cell = supported_quantile(h, quantile).map_or("unsupported".to_owned(), format_micros);
            let _ = write!(out, "{cell:>width$}");
        }
        let _ = writeln!(out);
    }
    for quantile in [0.5, 0.99] {
        let _ = write!(out, "{:<26}", format!("added over direct p{}", quantile * 100.0));
        let direct = supported_quantile(&histograms[proxies.len()], quantile);
        for h in &histograms[..proxies.len()] {
            let cell = match (supported_quantile(h, quantile), direct) {
                (Some(p), Some(d)) => format!("{:.3} ms", (p as f64 - d as f64) / 1000.0),
                _ => "unsupported".into(),
            };
            let _ = write!(out, "{cell:>width$}");
        }
        let _ = writeln!(out);
    }
    let row = |out: &mut String, name: &str, cells: Vec<String>| {
        let _ = write!(out, "{name:<26}");
        for cell in cells {
            let _ = write!(out, "{cell:>width$}");
        }
        let _ = writeln!(out);
    };
    let per_proxy = |f: &dyn Fn(&str) -> String| proxies.iter().map(|t| f(t)).collect::<Vec<_>>();
    row(
        &mut out,
        "saturation req/s",
        per_proxy(&|t| {
            results
                .saturation
                .iter()
                .find(|s| s.proxy == t)
                .map_or("-".into(), |s| format!("{:.0}", s.achieved_rate))
        }),
    );
    row(
        &mut out,
        "CPU s per 1000 requests",
        per_proxy(&|t| cpu_per_thousand(&results.trials, t).map_or("-".into(), |c| format!("{c:.4}"))),
    );
    let fact = |f: &dyn Fn(&super::ProxyFacts) -> String| {
        per_proxy(&|t| results.proxies.iter().find(|p| p.proxy == t).map_or("-".into(), f))
    };
    row(
        &mut out,
        "peak RSS",
        fact(&|p| format!("{:.1} MB", p.peak_rss_kib as f64 / 1024.0)),
    );
    row(
        &mut out,
        "RSS after trials (median)",
        per_proxy(&|t| {
            rss_after_trials(&results.trials, t).map_or("-".into(), |(m, _, _)| format!("{:.1} MB", m as f64 / 1024.0))
        }),
    );
    row(
        &mut out,
        "RSS per idle connection",
        per_proxy(&|t| idle_per_connection(results, t)),
    );
    row(
        &mut out,
        "GC cycles per trial",
        per_proxy(&|t| {
            let cycles: Vec<usize> = results
                .trials
                .iter()
                .filter(|x| x.target == t)
                .filter_map(|x| Some(x.gc.as_ref()?.cycles.len()))
                .collect();
            if cycles.is_empty() {
                "-".into()
            } else {
                format!("{:.0}", cycles.iter().sum::<usize>() as f64 / cycles.len() as f64)
            }
        }),
    );
    row(
        &mut out,
        "binary size",
        fact(&|p| format!("{:.1} MB", p.binary_bytes as f64 / 1e6)),
    );
    row(
        &mut out,
        "start-up to first request",
        fact(&|p| format!("{:.1} ms", p.startup_ms)),
    );
    if !results.binaries.is_empty() {
        let _ = writeln!(out);
    }
    for size in &results.binaries {
        let _ = writeln!(out, "{:>10.2} MB  {}", size.bytes as f64 / 1e6, size.name);
    }
    for build in &results.build_times {
        let _ = writeln!(out, "{:>10.1} s   clean build: {}", build.seconds, build.command);
    }
    out.push_str(&super::balancing::text(results));
    if let Some(overload) = &results.overload {
        out.push_str(&super::overload::text(overload));
    }
    let _ = writeln!(out, "\ntailcut against Go (95% bootstrap intervals over valid trials):");
    for verdict in &results.verdicts {
        let _ = writeln!(out, "  p{:<8} {}", verdict.quantile * 100.0, verdict.text);
    }
    out
}
