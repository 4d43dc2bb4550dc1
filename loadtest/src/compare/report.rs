//! `report.html`: the comparison as one self-contained page (inline SVG and
//! CSS, no scripts, fonts or network), rendered from [`Results`] alone, so
//! `tailcut-load report results.json` can render it again later.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::summary::{merged, table, targets};
use super::{cpu_per_thousand, Results};

/// The colour of each target's curve.
fn colour(target: &str) -> &'static str {
    match target {
        "tailcut" => "#c0392b",
        "goproxy" => "#2471a3",
        "direct" => "#7f8c8d",
        "nginx" => "#27ae60",
        "haproxy" => "#8e44ad",
        _ => "#d68910",
    }
}

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
    let _ = writeln!(
        page,
        "<h2>Latency spectrum</h2>\n<p>Latency from each request's intended send time (corrected for coordinated \
         omission), valid trials merged; the horizontal axis is 1/(1&minus;p), so each step right is one more nine.</p>"
    );
    page.push_str(&spectrum_svg(results));
    let _ = writeln!(
        page,
        "<h2>Figures and verdicts</h2>\n<pre>{}</pre>",
        escape(&table(results))
    );
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
    let ceiling = match (saturation("tailcut"), saturation("goproxy")) {
        (Some(t), Some(g)) if g > 0.0 => format!(
            "tailcut served {:.2}x Go's requests/s at saturation ({t:.0} vs {g:.0}); one run each, no interval",
            t / g
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
        (Some(t), Some(g)) => format!(
            "peak RSS {:.1} MB for tailcut, {:.1} MB for Go; CPU per 1000 requests {} vs {}",
            t.peak_rss_kib as f64 / 1024.0,
            g.peak_rss_kib as f64 / 1024.0,
            cpu_per_thousand(&results.trials, "tailcut").map_or("-".into(), |c| format!("{c:.4} s")),
            cpu_per_thousand(&results.trials, "goproxy").map_or("-".into(), |c| format!("{c:.4} s")),
        ),
        _ => "not measured".into(),
    };
    let size = match (fact("tailcut"), fact("goproxy")) {
        (Some(t), Some(g)) => format!(
            "{:.1} MB tailcut (the binary that ran) vs {:.1} MB Go (as built); the size-tuned profile is not built by this run",
            t.binary_bytes as f64 / 1e6,
            g.binary_bytes as f64 / 1e6
        ),
        _ => "not measured".into(),
    };
    let rows = [
        ("1. A higher performance ceiling", ceiling),
        ("2. More predictable tail latency", tail),
        ("3. Lower and steadier memory", memory),
        ("4. A smaller binary when tuned", size),
        ("5. Go builds faster", "not measured by this version of compare".into()),
    ];
    let _ = writeln!(
        page,
        "<h2>Claims</h2>\n<table><tr><th>claim</th><th>what this run says</th></tr>"
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

fn trials(page: &mut String, results: &Results) {
    let _ = writeln!(
        page,
        "<h2>Trials</h2>\n<table><tr><th>round</th><th>target</th><th>achieved req/s</th><th>verdict</th></tr>"
    );
    for t in &results.trials {
        let verdict = if t.result.verdict.valid {
            "valid".to_owned()
        } else {
            format!(
                "<span class=\"invalid\">INVALID: {}</span>",
                escape(&t.result.verdict.reasons.join("; "))
            )
        };
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td style=\"text-align:left\">{verdict}</td></tr>",
            t.round,
            escape(&t.target),
            t.result.achieved_rate
        );
    }
    page.push_str("</table>\n");
}

/// One target's line: name, colour, and (nines, log10 us) points.
type Curve<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// Percentile spectrum: x = log10(1/(1-p)) from 0 (p0) to 5 (p99.999),
/// y = log10(latency in us) over the data's decades.
fn spectrum_svg(results: &Results) -> String {
    // Canvas, and the margins around the plot (the legend sits on the right).
    const W: f64 = 900.0;
    const H: f64 = 420.0;
    const LEFT: f64 = 70.0;
    const BOTTOM: f64 = 40.0;
    const TOP: f64 = 15.0;
    const RIGHT: f64 = 120.0;
    let curves: Vec<Curve> = targets(results)
        .into_iter()
        .map(|name| (name, colour(name), points(&merged(results, name))))
        .collect();
    let values = curves.iter().flat_map(|(_, _, p)| p.iter().map(|&(_, y)| y));
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for y in values {
        lo = lo.min(y);
        hi = hi.max(y);
    }
    if lo > hi {
        (lo, hi) = (1.0, 4.0);
    }
    let (lo, hi) = (lo.floor(), hi.ceil().max(lo.floor() + 1.0));
    let x = |nines: f64| LEFT + nines.min(5.0) / 5.0 * (W - LEFT - RIGHT);
    let y = |log_us: f64| TOP + (hi - log_us) / (hi - lo) * (H - TOP - BOTTOM);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" \
         role=\"img\" aria-label=\"latency by percentile\" font-size=\"12\">\n"
    );
    for (nines, label) in [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ] {
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{TOP}\" y2=\"{1:.1}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{2:.1}\" \
             text-anchor=\"middle\">{label}</text>",
            x(nines),
            H - BOTTOM,
            H - BOTTOM + 16.0
        );
    }
    let mut decade = lo;
    while decade <= hi {
        let us = 10f64.powf(decade);
        let label = if us >= 1000.0 {
            format!("{} ms", us / 1000.0)
        } else {
            format!("{us} us")
        };
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{1:.1}\" stroke=\"#ddd\"/><text x=\"{2:.1}\" y=\"{3:.1}\" \
             text-anchor=\"end\">{label}</text>",
            W - RIGHT,
            y(decade),
            LEFT - 6.0,
            y(decade) + 4.0
        );
        decade += 1.0;
    }
    for (i, (name, colour, pts)) in curves.iter().enumerate() {
        if !pts.is_empty() {
            let path: Vec<String> = pts.iter().map(|&(n, v)| format!("{:.1},{:.1}", x(n), y(v))).collect();
            let _ = writeln!(
                svg,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                path.join(" ")
            );
        }
        let _ = writeln!(
            svg,
            "<rect x=\"{0:.1}\" y=\"{1:.1}\" width=\"14\" height=\"4\" fill=\"{colour}\"/><text x=\"{2:.1}\" y=\"{3:.1}\">{name}{4}</text>",
            W - RIGHT + 12.0,
            TOP + 10.0 + i as f64 * 20.0,
            W - RIGHT + 32.0,
            TOP + 15.0 + i as f64 * 20.0,
            if pts.is_empty() { " (no valid trials)" } else { "" }
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// (nines, log10 us) along the distribution, up to the last supported percentile.
fn points(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    // Beyond 1/(1-p) = samples/10 a percentile rests on fewer than 10 samples.
    let max_nines = (histogram.len() as f64 / 10.0).log10().max(0.0);
    histogram
        .iter_quantiles(5)
        .map(|v| (v.quantile_iterated_to(), v.value_iterated_to().max(1)))
        .filter(|&(q, _)| q < 1.0)
        .map(|(q, us)| ((1.0 / (1.0 - q)).log10(), (us as f64).log10()))
        .filter(|&(nines, _)| nines <= max_nines)
        .collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::compare::procs::CpuPlan;
    use crate::compare::{ProxyFacts, Saturation, Trial};
    use crate::result::{Decoded, Errors, Measured, RunResult, StatusClasses, Thresholds};
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
            proxy_rss_kib: (target != "direct").then_some(9000),
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
        };
        results.verdicts = crate::compare::verdicts(&results.trials);
        results
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
        // One curve per target, all with data.
        assert_eq!(page.matches("<polyline").count(), 3);
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
        assert_eq!(page.matches("<polyline").count(), 2);
        assert!(page.contains("goproxy (no valid trials)"));
    }

    #[test]
    fn the_spectrum_stops_where_samples_run_out() {
        let mut h = crate::histograms::new_histogram();
        for v in 1..=1000u64 {
            h.record(v).expect("in range");
        }
        let pts = points(&h);
        // 1000 samples support percentiles up to 1/(1-p) = 100: two nines.
        assert!(pts.iter().all(|&(nines, _)| nines <= 2.0));
        assert!(pts.last().is_some_and(|&(nines, _)| nines > 1.5));
    }
}
