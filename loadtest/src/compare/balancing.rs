//! A balancing scenario's figures: several backends, the first faulty, and
//! what each target's balancing made of it: latency per round, failed
//! requests per trial, each backend's share of the requests, and, when the
//! fault has a window, how soon each target's latency came back to its own
//! level after the fault began.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::scenario::Faulty;
use super::{Results, Trial};
use crate::result::format_micros;

/// A balancing scenario's setup, as `results.json` keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    /// How many backends.
    pub backends: usize,
    /// How the first misbehaves.
    pub faulty: Option<Faulty>,
    /// Each target's name and how it balances, in column order.
    pub targets: Vec<(String, String)>,
}

/// What one target did, over its trials.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// The target's name.
    pub target: String,
    /// p99 and p99.9 of each trial (us), in round order.
    pub p99: Vec<u64>,
    /// The same, p99.9.
    pub p999: Vec<u64>,
    /// Failed requests (5xx answers and connection errors) per trial.
    pub failed: Vec<u64>,
    /// Share of the trials' requests each backend served, the faulty one
    /// first (empty for `direct`).
    pub shares: Vec<f64>,
    /// Per trial with a windowed fault: seconds from the fault's start to
    /// the first second whose p99 is back within twice the target's own
    /// level before the fault; `None` if not within the window.
    pub recovery_s: Vec<Option<u64>>,
    /// Per trial: requests the backends served over requests the client
    /// sent (retries and hedges show as more than 1), in thousandths;
    /// empty for `direct`.
    pub upstream_ratio: Vec<u64>,
}

/// The target every other is compared with: tailcut with the scenario's
/// tail-control feature on, if it shows one, else tailcut's default.
pub fn base(setup: &Setup) -> &str {
    setup
        .targets
        .iter()
        .map(|(target, _)| target.as_str())
        .find(|target| *target == "tailcut-hedging" || *target == "tailcut-retries")
        .unwrap_or("tailcut")
}

/// The rule [`recovery`] applies, for the page.
pub const RECOVERY_RULE: &str = "a target's level is the median of its per-second p99 over the seconds \
    before the fault (the first second left out); it has recovered in the first second, counted from the \
    fault's start, whose p99 is at most twice that level";

/// Each target's figures, in column order.
pub fn figures(results: &Results) -> Vec<Figures> {
    let Some(setup) = &results.balancing else {
        return Vec::new();
    };
    let window = setup.faulty.as_ref().and_then(Faulty::window);
    setup
        .targets
        .iter()
        .map(|(target, _)| {
            let trials: Vec<&Trial> = results.trials.iter().filter(|t| &t.target == target).collect();
            let quantile = |q: f64| -> Vec<u64> {
                trials
                    .iter()
                    .filter_map(|t| Some(t.result.decode().ok()?.corrected.value_at_quantile(q)))
                    .collect()
            };
            let mut served = vec![0u64; setup.backends];
            for trial in &trials {
                for (sum, n) in served.iter_mut().zip(trial.backends_served.iter().flatten()) {
                    *sum += n;
                }
            }
            let total: u64 = served.iter().sum();
            Figures {
                target: target.clone(),
                p99: quantile(0.99),
                p999: quantile(0.999),
                failed: trials
                    .iter()
                    .map(|t| t.result.status.server_error + t.result.errors.total())
                    .collect(),
                shares: if target == "direct" || total == 0 {
                    Vec::new()
                } else {
                    served.iter().map(|&n| n as f64 / total as f64).collect()
                },
                upstream_ratio: if target == "direct" {
                    Vec::new()
                } else {
                    trials
                        .iter()
                        .filter_map(|t| {
                            let served: u64 = t.backends_served.as_ref()?.iter().sum();
                            (t.result.sent > 0).then(|| served * 1000 / t.result.sent)
                        })
                        .collect()
                },
                recovery_s: match window {
                    Some((start, end)) => trials
                        .iter()
                        .map(|t| recovery(&t.result.seconds, start.as_secs(), end.as_secs()))
                        .collect(),
                    None => Vec::new(),
                },
            }
        })
        .collect()
}

/// Seconds from `start` until a second's p99 is back within twice the
/// level before `start` (see [`RECOVERY_RULE`]); `None` if none is before
/// `end`, or there is no level to return to. Seconds without a completed
/// request are left out.
pub fn recovery(seconds: &[crate::result::Second], start: u64, end: u64) -> Option<u64> {
    let mut before: Vec<u64> = seconds
        .iter()
        .filter(|s| s.second >= 1 && s.second < start && s.completed > 0)
        .map(|s| s.p99_us)
        .collect();
    before.sort_unstable();
    let level = *before.get(before.len() / 2)?;
    seconds
        .iter()
        .filter(|s| s.second >= start && s.second < end && s.completed > 0)
        .find(|s| s.p99_us <= level.saturating_mul(2))
        .map(|s| s.second - start + 1)
}

/// `median (least-most)` of `values` formatted by `format`.
fn spread(values: &[u64], format: impl Fn(u64) -> String) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    match (sorted.get(sorted.len() / 2), sorted.first(), sorted.last()) {
        (Some(&median), Some(&least), Some(&most)) if least != most => {
            format!("{} ({}-{})", format(median), format(least), format(most))
        }
        (Some(&median), _, _) => format(median),
        _ => "-".to_owned(),
    }
}

/// Thousandths as a ratio: `1.042`.
fn ratio_text(thousandths: u64) -> String {
    format!("{}.{:03}", thousandths / 1000, thousandths % 1000)
}

fn shares_text(shares: &[f64]) -> String {
    if shares.is_empty() {
        return "-".to_owned();
    }
    shares
        .iter()
        .map(|s| format!("{:.1}%", s * 100.0))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn recovery_text(recovery: &[Option<u64>]) -> String {
    recovery
        .iter()
        .map(|r| r.map_or("not within the window".to_owned(), |s| format!("{s} s")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The [`base`] target against every other at p99 and p99.9 (and p50 and
/// p99.99 in a tail-control scenario): `(target, [(quantile, verdict)])`,
/// 95% bootstrap intervals over valid trials, as the tailcut-against-Go
/// verdicts are drawn.
pub fn verdicts(results: &Results) -> Vec<(String, Vec<(f64, String)>)> {
    let Some(setup) = &results.balancing else {
        return Vec::new();
    };
    let base = base(setup);
    // A tail-control scenario is read across the whole distribution: what
    // the feature buys at the tail, and what it costs at the median.
    let quantiles: &[f64] = if base == "tailcut" {
        &[0.99, 0.999]
    } else {
        &[0.5, 0.99, 0.999, 0.9999]
    };
    let tailcut = super::valid_histograms(&results.trials, base);
    setup
        .targets
        .iter()
        .map(|(target, _)| target)
        .filter(|target| *target != base && *target != "direct")
        .map(|target| {
            let other = super::valid_histograms(&results.trials, target);
            let verdicts = quantiles
                .iter()
                .enumerate()
                .map(|(i, &q)| {
                    (
                        q,
                        super::stats::compare(&tailcut, &other, q, 17 + i as u64).describe(base, target),
                    )
                })
                .collect();
            (target.clone(), verdicts)
        })
        .collect()
}

/// The balancing figures as text, for `summary.txt` and the terminal.
pub fn text(results: &Results) -> String {
    let Some(setup) = &results.balancing else {
        return String::new();
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} backends; backend 0 {}.",
        setup.backends,
        setup
            .faulty
            .as_ref()
            .map_or("is like the others".to_owned(), Faulty::describe)
    );
    let windowed = setup.faulty.as_ref().and_then(Faulty::window).is_some();
    for figure in figures(results) {
        let _ = writeln!(
            out,
            "{:<22} p99 {:<28} p99.9 {:<28} failed/trial {:<12} upstream/client {:<18} backend shares {}{}",
            figure.target,
            spread(&figure.p99, format_micros),
            spread(&figure.p999, format_micros),
            spread(&figure.failed, |n| n.to_string()),
            spread(&figure.upstream_ratio, ratio_text),
            shares_text(&figure.shares),
            if windowed && figure.target != "direct" {
                format!("; recovered after {}", recovery_text(&figure.recovery_s))
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        out,
        "\n{} against each target (95% bootstrap intervals over valid trials):",
        base(setup)
    );
    for (target, verdicts) in verdicts(results) {
        for (quantile, verdict) in verdicts {
            let _ = writeln!(out, "  {target:<22} p{:<6} {verdict}", quantile * 100.0);
        }
    }
    out
}

/// The report's section: setup, the figures table, latency over time.
pub fn html(page: &mut String, results: &Results) {
    let Some(setup) = &results.balancing else {
        return;
    };
    let escape = super::report::escape;
    let heading = match &setup.faulty {
        Some(_) => format!("one faulty backend of {}", setup.backends),
        None => format!("{} backends", setup.backends),
    };
    let _ = writeln!(
        page,
        "<h2>Balancing: {heading}</h2>\n<p>Backend 0 {}. Every target forwards to all {} \
         backends and balances as its users would have it:</p><ul>",
        escape(
            &setup
                .faulty
                .as_ref()
                .map_or("is like the others".to_owned(), Faulty::describe)
        ),
        setup.backends
    );
    for (target, how) in &setup.targets {
        let _ = writeln!(page, "<li><b>{}</b>: {}</li>", escape(target), escape(how));
    }
    let windowed = setup.faulty.as_ref().and_then(Faulty::window).is_some();
    page.push_str(
        "</ul>\n<p>Per trial (every round, valid or not): p99 and p99.9 as median (least-most) over the \
         rounds; failed requests (5xx answers and connection errors, warm-up included); the requests \
         the backends served over those the client sent (retries and hedges count at the backends; \
         HAProxy's health checks too, a few per second); each backend's share of the requests the \
         target sent, backend 0 first. The proxies keep their state from \
         trial to trial, as they would in production: an ejection may outlast a trial.</p>\n",
    );
    let recovered = if windowed {
        "<th>recovered after (per trial)</th>"
    } else {
        ""
    };
    let _ = writeln!(
        page,
        "<table><tr><th>target</th><th>p99</th><th>p99.9</th><th>failed per trial</th><th>upstream / client requests</th><th>backend shares</th>{recovered}</tr>"
    );
    for figure in figures(results) {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}</tr>",
            escape(&figure.target),
            spread(&figure.p99, format_micros),
            spread(&figure.p999, format_micros),
            spread(&figure.failed, |n| n.to_string()),
            spread(&figure.upstream_ratio, ratio_text),
            shares_text(&figure.shares),
            if windowed {
                format!(
                    "<td>{}</td>",
                    if figure.target == "direct" {
                        "-".to_owned()
                    } else {
                        recovery_text(&figure.recovery_s)
                    }
                )
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        page,
        "</table>\n<p>{} against each target, 95% bootstrap intervals over valid trials:</p>\n<ul>",
        base(setup)
    );
    for (target, verdicts) in verdicts(results) {
        for (quantile, verdict) in verdicts {
            let _ = writeln!(
                page,
                "<li>against {}, p{}: {}</li>",
                escape(&target),
                quantile * 100.0,
                escape(&verdict)
            );
        }
    }
    page.push_str("</ul>\n");
    if windowed {
        let _ = writeln!(page, "<p>Recovery: {RECOVERY_RULE}.</p>");
    }
    if let Some(svg) = super::charts::balancing_timeline(results) {
        let _ = writeln!(
            page,
            "<p>Each second's p99 of every target in one round (seconds without a completed request are \
             gaps){}.</p>",
            if windowed {
                "; the shaded band is the fault's window"
            } else {
                ""
            }
        );
        page.push_str(&svg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::Second;

    fn second(second: u64, p99_us: u64) -> Second {
        Second {
            second,
            completed: 100,
            p50_us: p99_us,
            p99_us,
            max_us: p99_us,
            ..Second::default()
        }
    }

    #[test]
    fn recovery_counts_seconds_from_the_faults_start_to_the_first_second_back_within_twice_the_level() {
        // Level 1 ms (second 0 left out); the fault from 3 s to 7 s.
        let seconds: Vec<Second> = [
            (0, 9000),
            (1, 1000),
            (2, 1100),
            (3, 50_000),
            (4, 30_000),
            (5, 1900),
            (6, 1000),
        ]
        .into_iter()
        .map(|(s, p)| second(s, p))
        .collect();
        assert_eq!(recovery(&seconds, 3, 7), Some(3));
        // Never back within the window.
        assert_eq!(recovery(&seconds[..5], 3, 7), None);
        // An empty second is no evidence either way.
        let mut gap = seconds.clone();
        gap[3].completed = 0;
        gap[3].p99_us = 0;
        assert_eq!(recovery(&gap, 3, 7), Some(3));
        // Back at once.
        let calm: Vec<Second> = (0..6).map(|s| second(s, 1000)).collect();
        assert_eq!(recovery(&calm, 3, 6), Some(1));
        // Nothing before the fault: no level.
        assert_eq!(recovery(&calm, 1, 6), None);
    }

    #[test]
    fn a_spread_is_the_median_and_range() {
        assert_eq!(spread(&[3, 1, 2], |n| n.to_string()), "2 (1-3)");
        assert_eq!(spread(&[5, 5], |n| n.to_string()), "5");
        assert_eq!(spread(&[], |n| n.to_string()), "-");
    }
}
