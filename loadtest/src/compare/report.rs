//! `report.html`: the comparison as one self-contained page (inline SVG and
//! CSS, no scripts, fonts or network), rendered from [`Results`] alone, so
//! `tailcut-load report results.json` can render it again later.

use std::fmt::Write as _;

use super::summary::{idle_per_connection, rss_after_trials, table};
use super::sweep;
use super::{charts, cpu_per_thousand, Results};
use crate::histograms::supported_quantile;
use crate::result::format_micros;

/// The whole page.
pub fn html(results: &Results) -> String {
    let mut page = String::new();
    let title = format!("tailcut vs Go: {}", escape(&results.scenario));
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n<style>\
         body{{font:15px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}\
         th:first-child,td:first-child{{text-align:left}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}\
         .invalid{{color:#b03a2e}}</style></head><body>\n<h1>{title}</h1>\n<p>{} at {:.0} requests/s, {} thread(s) per proxy \
         (tokio workers = GOMAXPROCS).</p>\n",
        escape(&results.description),
        results.rate,
        results.proxy_threads
    );
    claims(&mut page, results);
    super::balancing::html(&mut page, results);
    if let Some(overload) = &results.overload {
        page.push_str(&super::overload::html(overload));
    }
    let _ = writeln!(
        page,
        "<h2>Latency spectrum</h2>\n<p>Latency from each request's intended send time (corrected for coordinated \
         omission), valid trials merged; the horizontal axis is 1/(1&minus;p), so each step right is one more nine.</p>"
    );
    page.push_str(&charts::spectrum(results));
    timeline(&mut page, results);
    sweep(&mut page, results);
    let _ = writeln!(
        page,
        "<h2>Figures and verdicts</h2>\n<pre>{}</pre>",
        escape(&table(results))
    );
    memory(&mut page, results);
    binaries(&mut page, results);
    trials(&mut page, results);
    let _ = writeln!(
        page,
        "<h2>Setup</h2>\n<ul><li>{}</li>{}</ul>\n</body></html>",
        escape(&results.plan.describe()).replace('\n', "</li><li>"),
        results
            .versions
            .iter()
            .map(|v| format!("<li>{}</li>", escape(v)))
            .collect::<String>()
    );
    page
}

/// The claims under test, each with what this run says about it.
fn claims(page: &mut String, results: &Results) {
    let saturation = |p: &str| {
        results
            .saturation
            .iter()
            .find(|s| s.proxy == p)
            .map(|s| s.achieved_rate)
    };
    let fact = |p: &str| results.proxies.iter().find(|f| f.proxy == p);
    let cpu = |p: &str| cpu_per_thousand(&results.trials, p).map_or("-".into(), |c| format!("{c:.4} s"));
    let ceiling = match (saturation("tailcut"), saturation("goproxy")) {
        (Some(t), Some(g)) if g > 0.0 => format!(
            "tailcut served {:.2}x Go's requests/s at saturation ({t:.0} vs {g:.0}; one run each, no interval); \
             CPU per 1000 requests at the trial rate {} vs {}",
            t / g,
            cpu("tailcut"),
            cpu("goproxy"),
        ),
        _ => "not measured in this run".into(),
    };
    let tail = results
        .verdicts
        .iter()
        .filter(|v| v.quantile >= 0.99)
        .map(|v| format!("p{}: {}", v.quantile * 100.0, v.text))
        .collect::<Vec<_>>()
        .join("; ");
    let memory = match (fact("tailcut"), fact("goproxy")) {
        (Some(t), Some(g)) => {
            let steady = |p: &str| {
                rss_after_trials(&results.trials, p).map_or("-".into(), |(median, lo, hi)| {
                    format!("{:.1} MB ({:.1}-{:.1})", mb(median), mb(lo), mb(hi))
                })
            };
            let idle = |p: &str| idle_per_connection(results, p);
            format!(
                "peak RSS {:.1} MB for tailcut, {:.1} MB for Go; RSS after each trial (median, range) {} vs {}; \
                 RSS per idle connection {} vs {}",
                mb(t.peak_rss_kib),
                mb(g.peak_rss_kib),
                steady("tailcut"),
                steady("goproxy"),
                idle("tailcut"),
                idle("goproxy")
            )
        }
        _ => "not measured".into(),
    };
    let size_of = |prefix: &str| {
        results
            .binaries
            .iter()
            .find(|b| b.name.starts_with(prefix))
            .map(|b| b.bytes as f64 / 1e6)
    };
    let size = match (
        size_of("tailcut (size profile"),
        size_of("tailcut (speed profile"),
        size_of("goproxy"),
    ) {
        (Some(small), Some(speed), Some(go)) => format!(
            "tailcut's size profile {small:.1} MB vs Go stripped {go:.1} MB ({:.2}x); tailcut's speed profile {speed:.1} MB",
            small / go
        ),
        (None, Some(speed), Some(go)) => format!(
            "tailcut's speed profile {speed:.1} MB vs Go stripped {go:.1} MB; the size profile was not built \
             (a tailcut binary was given)"
        ),
        _ => "not measured".into(),
    };
    let build = |p: &str| results.build_times.iter().find(|b| b.proxy == p).map(|b| b.seconds);
    let builds = match (build("tailcut"), build("goproxy")) {
        (Some(t), Some(g)) if g > 0.0 => format!(
            "clean builds: Go {g:.1} s, tailcut {t:.1} s; Go built {:.1}x faster",
            t / g
        ),
        _ => "not measured in this run (`tailcut-load compare --build-times` or `--full` measures it)".into(),
    };
    let rows = [
        ("1. A higher performance ceiling", ceiling),
        ("2. More predictable tail latency", tail),
        ("3. Lower and steadier memory", memory),
        ("4. A smaller binary when tuned", size),
        ("5. Go builds faster", builds),
    ];
    let _ = writeln!(
        page,
        "<h2>Claims</h2>\n<table><tr><th>claim</th><th style=\"text-align:left\">what this run says</th></tr>"
    );
    for (claim, verdict) in rows {
        let _ = writeln!(
            page,
            "<tr><td>{claim}</td><td style=\"text-align:left\">{}</td></tr>",
            escape(&verdict)
        );
    }
    page.push_str("</table>\n");
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Latency over time, and every Go trial's GC cycles.
fn timeline(page: &mut String, results: &Results) {
    page.push_str("<h2>Latency over time and Go's garbage collector</h2>\n");
    match charts::timeline(results) {
        Some(svg) => {
            let round = charts::timeline_trials(results).map_or(0, |(t, _)| t.round);
            let _ = writeln!(
                page,
                "<p>Round {round}: each second's p99 (solid) and maximum (dashed) latency of the tailcut and Go \
                 trials; ticks along the bottom are the Go proxy's GC cycles from its runtime trace \
                 (GODEBUG=gctrace=1), taller for longer stop-the-world pauses.</p>"
            );
            page.push_str(&svg);
        }
        None => page.push_str("<p>No round has a valid trial of both tailcut and Go to draw.</p>\n"),
    }
    let _ = writeln!(
        page,
        "<table><tr><th>Go trial</th><th>GC cycles</th><th>stop-the-world total</th><th>longest pause</th>\
         <th>concurrent mark total</th><th>p99</th><th>max</th></tr>"
    );
    for trial in results.trials.iter().filter(|t| t.target == "goproxy") {
        let Some(gc) = &trial.gc else { continue };
        let (p99, max) = trial
            .result
            .decode()
            .map_or((0, 0), |d| (d.corrected.value_at_quantile(0.99), d.corrected.max()));
        let _ = writeln!(
            page,
            "<tr><td>round {}{}</td><td>{}</td><td>{:.2} ms</td><td>{:.3} ms</td><td>{:.1} ms</td><td>{}</td><td>{}</td></tr>",
            trial.round,
            if trial.result.verdict.valid { "" } else { " (invalid)" },
            gc.cycles.len(),
            gc.pause_total_ms(),
            gc.pause_max_ms(),
            gc.mark_total_ms(),
            format_micros(p99),
            format_micros(max)
        );
    }
    page.push_str("</table>\n");
}

/// The rate sweep: two charts and every trial.
fn sweep(page: &mut String, results: &Results) {
    page.push_str("<h2>Latency against offered load</h2>\n");
    let Some(absolute) = charts::sweep(results, false) else {
        page.push_str("<p>The scenario has no sweep.</p>\n");
        return;
    };
    let _ = writeln!(
        page,
        "<p>Open-loop trials at fractions of saturation: at the same absolute rates (fractions of the slower \
         proxy's saturation) and at the same fractions of each proxy's own saturation.</p>"
    );
    page.push_str(&absolute);
    if let Some(relative) = charts::sweep(results, true) {
        page.push_str(&relative);
    }
    let _ = writeln!(
        page,
        "<table><tr><th>target</th><th>rate</th><th>offered req/s</th><th>achieved req/s</th><th>p50</th>\
         <th>p99</th><th>p99.9</th><th>verdict</th></tr>"
    );
    for point in &results.sweep {
        let decoded = point.result.decode().ok();
        let at = |q: f64| {
            decoded
                .as_ref()
                .and_then(|d| supported_quantile(&d.corrected, q))
                .map_or("unsupported".into(), format_micros)
        };
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td style=\"text-align:left\">{}</td><td>{:.0}</td><td>{:.0}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td style=\"text-align:left\">{}</td></tr>",
            escape(&point.proxy),
            sweep::describe(&point.proxy, point.basis, point.fraction),
            point.offered,
            point.result.achieved_rate,
            at(0.5),
            at(0.99),
            at(0.999),
            verdict(&point.result)
        );
    }
    page.push_str("</table>\n");
}

/// Memory per proxy: peak, after each trial, per idle connection.
fn memory(page: &mut String, results: &Results) {
    let _ = writeln!(
        page,
        "<h2>Memory</h2>\n<table><tr><th>proxy</th><th>peak RSS</th><th>RSS after trials: median</th>\
         <th>min-max</th><th>idle connections held</th><th>RSS per idle connection</th></tr>"
    );
    for fact in &results.proxies {
        let steady = rss_after_trials(&results.trials, &fact.proxy);
        let idle = results.idle.iter().find(|i| i.proxy == fact.proxy);
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{:.1} MB</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&fact.proxy),
            mb(fact.peak_rss_kib),
            steady.map_or("-".into(), |(m, _, _)| format!("{:.1} MB", mb(m))),
            steady.map_or("-".into(), |(_, lo, hi)| format!("{:.1}-{:.1} MB", mb(lo), mb(hi))),
            idle.map_or("-".into(), |i| match &i.error {
                Some(err) => format!("{} of {} ({})", i.opened, i.wanted, escape(err)),
                None => i.opened.to_string(),
            }),
            idle_per_connection(results, &fact.proxy),
        );
    }
    page.push_str("</table>\n");
}

/// Binary sizes and clean build times.
fn binaries(page: &mut String, results: &Results) {
    let _ = writeln!(
        page,
        "<h2>Binaries and builds</h2>\n<table><tr><th>binary</th><th>size</th></tr>"
    );
    for size in &results.binaries {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{:.2} MB</td></tr>",
            escape(&size.name),
            size.bytes as f64 / 1e6
        );
    }
    page.push_str("</table>\n");
    if results.build_times.is_empty() {
        page.push_str(
            "<p>Clean build times were not measured in this run: <code>tailcut-load compare --build-times</code> \
             (or <code>--full</code>) measures them.</p>\n",
        );
        return;
    }
    page.push_str("<table><tr><th>clean build</th><th>wall time</th></tr>\n");
    for build in &results.build_times {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{:.1} s</td></tr>",
            escape(&build.command),
            build.seconds
        );
    }
    page.push_str("</table>\n");
}

fn verdict(result: &crate::result::RunResult) -> String {
    if result.verdict.valid {
        "valid".to_owned()
    } else {
        format!(
            "<span class=\"invalid\">INVALID: {}</span>",
            escape(&result.verdict.reasons.join("; "))
        )
    }
}

fn trials(page: &mut String, results: &Results) {
    let _ = writeln!(
        page,
        "<h2>Trials</h2>\n<table><tr><th>round</th><th>target</th><th>achieved req/s</th><th>verdict</th></tr>"
    );
    for t in &results.trials {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td style=\"text-align:left\">{}</td></tr>",
            t.round,
            escape(&t.target),
            t.result.achieved_rate,
            verdict(&t.result)
        );
    }
    page.push_str("</table>\n");
}

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::compare::build::{BinarySize, BuildTime};
    use crate::compare::gc::{GcActivity, GcCycle};
    use crate::compare::idle::IdleMemory;
    use crate::compare::procs::CpuPlan;
    use crate::compare::sweep::{Basis, SweepPoint};
    use crate::compare::{ProxyFacts, Saturation, Trial};
    use crate::result::{Decoded, Errors, Measured, RunResult, Second, StatusClasses, Thresholds};
    use crate::schedule::Arrivals;

    /// A trial of `target` with 20,000 samples from `base_us` upward.
    fn trial(target: &str, round: usize, base_us: u64, valid: bool) -> Trial {
        let mut histograms = Decoded::new();
        let mut status = StatusClasses::default();
        for i in 0..20_000u64 {
            histograms
                .corrected
                .record(base_us + i % 1000 + (i / 19_990) * 20_000)
                .expect("in range");
            histograms.uncorrected.record(base_us).expect("in range");
            histograms.send_lag.record(1).expect("in range");
            status.count(200);
        }
        let measured = Measured {
            target: format!("http://{target}/"),
            method: "GET".into(),
            rate: 2000.0,
            arrivals: Arrivals::Uniform,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            connections: 16,
            threads: 1,
            http2: false,
            sent: 20_000,
            waited_for_connection: 0,
            errors: Errors::default(),
            status,
            histograms,
            seconds: (0..11)
                .map(|second| Second {
                    second,
                    completed: 2000,
                    p50_us: base_us + 500,
                    p99_us: base_us + 990 + second * 10,
                    max_us: base_us + 2000,
                    ..Second::default()
                })
                .collect(),
        };
        let thresholds = Thresholds {
            rate_tolerance: 0.01,
            max_send_lag_us: 1000,
            max_stall_us: 10_000,
            max_error_rate: 0.0,
        };
        let mut result = RunResult::new(measured, thresholds);
        if !valid {
            result.verdict.valid = false;
            result.verdict.reasons = vec!["the generator stalled for 26.50ms (limit 10.00ms)".into()];
        }
        Trial {
            target: target.into(),
            round,
            proxy_cpu_s: (target != "direct").then_some(0.5),
            proxy_rss_kib: (target != "direct").then_some(9000 + round as u64 * 100),
            gc: (target == "goproxy").then(|| GcActivity {
                cycles: (0..4)
                    .map(|k| GcCycle {
                        at_s: 1.5 + k as f64 * 2.5,
                        pause_ms: 0.05 * (k + 1) as f64,
                        mark_ms: 1.0,
                        heap_after_mb: 3.0,
                    })
                    .collect(),
            }),
            backends_served: None,
            result,
        }
    }

    fn fixture() -> Results {
        let mut trials = Vec::new();
        for round in 1..=3 {
            trials.push(trial("tailcut", round, 60, round != 2));
            trials.push(trial("goproxy", round, 100, true));
            trials.push(trial("direct", round, 20, true));
        }
        let facts = |proxy: &str, rss, bytes| ProxyFacts {
            proxy: proxy.into(),
            binary: format!("/bin/{proxy}"),
            binary_bytes: bytes,
            startup_ms: 5.0,
            peak_rss_kib: rss,
        };
        let mut results = Results {
            scenario: "fixture <baseline>".into(),
            description: "small & fast".into(),
            rate: 2000.0,
            proxy_threads: 1,
            plan: CpuPlan {
                proxies: "0-0".into(),
                load: "1-1".into(),
                shared: false,
                pinned: true,
            },
            versions: vec!["rustc 1.95.0".into(), "go version go1.26.8".into()],
            proxies: vec![
                facts("tailcut", 12_000, 22_700_000),
                facts("goproxy", 100_000, 11_500_000),
            ],
            trials,
            overload: None,
            saturation: vec![
                Saturation {
                    proxy: "tailcut".into(),
                    achieved_rate: 33_000.0,
                },
                Saturation {
                    proxy: "goproxy".into(),
                    achieved_rate: 15_000.0,
                },
            ],
            verdicts: Vec::new(),
            sweep: [
                ("tailcut", Basis::Shared, 0.5, 7_500.0, 70, true),
                ("tailcut", Basis::Own, 0.5, 16_500.0, 90, true),
                ("goproxy", Basis::Own, 0.5, 7_500.0, 150, true),
                ("tailcut", Basis::Own, 0.9, 29_700.0, 400, false),
                ("goproxy", Basis::Own, 0.9, 13_500.0, 900, true),
            ]
            .into_iter()
            .map(|(proxy, basis, fraction, offered, base_us, valid)| SweepPoint {
                proxy: proxy.into(),
                basis,
                fraction,
                offered,
                result: trial(proxy, 0, base_us, valid).result,
            })
            .collect(),
            idle: vec![
                IdleMemory {
                    proxy: "tailcut".into(),
                    wanted: 100,
                    opened: 100,
                    rss_before_kib: 9000,
                    rss_after_kib: 10_000,
                    error: None,
                },
                IdleMemory {
                    proxy: "goproxy".into(),
                    wanted: 100,
                    opened: 60,
                    rss_before_kib: 20_000,
                    rss_after_kib: 21_000,
                    error: Some("connection 61: refused".into()),
                },
            ],
            binaries: vec![
                BinarySize {
                    name: "tailcut (speed profile, the one that runs)".into(),
                    path: "/bin/tailcut".into(),
                    bytes: 22_700_000,
                },
                BinarySize {
                    name: "tailcut (size profile: release-small)".into(),
                    path: "/bin/tailcut-small".into(),
                    bytes: 3_000_000,
                },
                BinarySize {
                    name: "goproxy (-ldflags=\"-s -w\", the one that runs)".into(),
                    path: "/bin/goproxy".into(),
                    bytes: 11_500_000,
                },
            ],
            build_times: vec![
                BuildTime {
                    proxy: "tailcut".into(),
                    command: "cargo build".into(),
                    seconds: 120.0,
                },
                BuildTime {
                    proxy: "goproxy".into(),
                    command: "go build".into(),
                    seconds: 20.0,
                },
            ],
            balancing: None,
        };
        results.verdicts = crate::compare::verdicts(&results.trials);
        results
    }

    #[test]
    fn a_balancing_scenario_shows_each_targets_shares_failures_and_recovery() {
        use crate::compare::balancing::Setup;
        use crate::compare::scenario::{FaultMode, Faulty};
        let mut results = fixture();
        results.balancing = Some(Setup {
            backends: 2,
            faulty: Some(Faulty {
                mode: FaultMode::Slow,
                delay: "fixed:50ms".into(),
                status: 503,
                window: Some("3s..6s".into()),
                share: 1.0,
            }),
            targets: ["tailcut", "goproxy", "direct"]
                .map(|t| (t.to_owned(), format!("{t} balancing")))
                .to_vec(),
        });
        for trial in &mut results.trials {
            trial.backends_served = (trial.target != "direct").then(|| match trial.target.as_str() {
                "tailcut" => vec![10, 990],
                _ => vec![500, 500],
            });
            trial.result.seconds = (0..8)
                .map(|s| crate::result::Second {
                    second: s,
                    completed: 100,
                    p50_us: 500,
                    // Go's p99 stays up through the window; tailcut's
                    // is back in its second second.
                    p99_us: match (trial.target.as_str(), s) {
                        ("goproxy", 3..=5) | ("tailcut", 3) => 50_000,
                        _ => 1_000,
                    },
                    max_us: 60_000,
                    ..crate::result::Second::default()
                })
                .collect();
        }
        let page = html(&results);
        assert!(page.contains("Balancing: one faulty backend of 2"), "section");
        assert!(page.contains("Backend 0 answers after 50ms from 3s to 6s of each trial."));
        assert!(page.contains("<li><b>goproxy</b>: goproxy balancing</li>"));
        assert!(
            page.contains("<td>1.0% / 99.0%</td><td>2 s, 2 s, 2 s</td>"),
            "tailcut's row"
        );
        assert!(
            page.contains("<td>50.0% / 50.0%</td><td>not within the window"),
            "Go's row"
        );
        assert!(page.contains("fill-opacity=\"0.25\""), "the window is shaded");
        // tailcut against every other proxy, each verdict drawn from the trials.
        assert!(page.contains("<li>against goproxy, p99: "), "{page}");
        assert!(page.contains("<li>against goproxy, p99.9: "), "{page}");
        assert!(!page.contains("<li>against direct"));
        let summary = crate::compare::summary::table(&results);
        assert!(
            summary.contains("backend shares 1.0% / 99.0%; recovered after 2 s"),
            "{summary}"
        );
    }

    #[test]
    fn the_report_holds_every_figure_verdict_claim_and_curve() {
        let results = fixture();
        let page = html(&results);
        for figure in [
            "latency p50",
            "latency p99.99",
            "added over direct p99",
            "saturation req/s",
            "CPU s per 1000 requests",
            "peak RSS",
            "binary size",
            "start-up to first request",
        ] {
            assert!(page.contains(figure), "{figure} missing");
        }
        for verdict in &results.verdicts {
            assert!(
                page.contains(&escape(&verdict.text)),
                "verdict {:?} missing",
                verdict.text
            );
        }
        assert!(
            results.verdicts[0].text.starts_with("tailcut lower by"),
            "{:?}",
            results.verdicts[0]
        );
        for claim in [
            "1. A higher performance ceiling",
            "2. More predictable",
            "3. Lower and steadier",
            "4. A smaller binary",
            "5. Go builds faster",
        ] {
            assert!(page.contains(claim), "{claim} missing");
        }
        assert!(page.contains("tailcut served 2.20x Go"), "ceiling verdict");
        assert!(
            page.contains("size profile 3.0 MB vs Go stripped 11.5 MB (0.26x)"),
            "size verdict"
        );
        assert!(page.contains("Go built 6.0x faster"), "build verdict");
        // Steady memory: median and range of RSS after trials; idle growth per connection.
        assert!(page.contains("9.0 MB (8.9-9.1)"), "steady RSS");
        assert!(page.contains("RSS per idle connection 10.2 KB vs 17.1 KB"), "idle RSS");
        assert!(page.contains("60 of 100 (connection 61: refused)"));
        // Curves: the spectrum's three targets; p99 and max over time of
        // tailcut and Go; the sweep's two proxies on both axes.
        assert_eq!(page.matches("<polyline").count(), 3 + 4 + 2 + 2);
        assert_eq!(page.matches("<svg").count(), 4);
        // Go's GC: a tick per cycle of the drawn trial, a row per Go trial.
        assert!(page.contains("Go GC cycle (4)"));
        assert!(page.contains("<td>round 2</td><td>4</td><td>0.50 ms</td><td>0.200 ms</td><td>4.0 ms</td>"));
        // The sweep: every point, the invalid one marked and not joined.
        // (five points on the rate axis, the four own-basis ones on the fraction axis)
        assert_eq!(page.matches("<circle").count(), 4 + 3);
        // (each chart's white background, then the two invalid points)
        assert_eq!(page.matches("<rect").count(), 4 + 1 + 1);
        assert!(page.contains("hollow: invalid trial"));
        assert!(page.contains(
            "<td>tailcut</td><td style=\"text-align:left\">50% of the slower proxy's saturation</td><td>7500</td>"
        ));
        assert!(!page.contains("no valid trials"));
        // The invalid trial is shown as invalid.
        assert!(page.contains("INVALID: the generator stalled"));
        // Names from the scenario are escaped.
        assert!(page.contains("fixture &lt;baseline&gt;") && page.contains("small &amp; fast"));
        // Self-contained: no scripts, no external resources.
        assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("href="));
    }

    #[test]
    fn a_target_without_valid_trials_is_labelled_not_drawn() {
        let mut results = fixture();
        for t in results.trials.iter_mut().filter(|t| t.target == "goproxy") {
            t.result.verdict.valid = false;
        }
        let page = html(&results);
        // Two spectrum curves, no timeline (no round with both), the sweep's four.
        assert_eq!(page.matches("<polyline").count(), 2 + 4);
        assert!(page.contains("goproxy (no valid trials)"));
        assert!(page.contains("No round has a valid trial of both tailcut and Go"));
    }
}
