//! An overload scenario (`tail = "overload"`): backends with a real
//! capacity, offered several multiples of it, every target at each load.
//! Under shedding, one latency histogram would mix fast refusals with
//! served requests, so everything here reads the two apart: goodput and
//! the latency of successful responses (2xx, 3xx), and the share and
//! latency of the rest (refusals, failures, timeouts). Whether a target's
//! latency grows with the length of the overload shows in the first and
//! last seconds of each trial, and in the per-second chart.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::Trial;
use crate::result::{format_micros, Second};

/// The setup and every load's trials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overload {
    /// Requests each backend serves at once.
    pub capacity: usize,
    /// The backends' service time, as `[backend] delay` gives it.
    pub service: String,
    /// The rate of `multiple` 1: the backends' capacity in requests/s.
    pub capacity_rate: f64,
    /// Each target and what it does about overload, in words.
    pub targets: Vec<(String, String)>,
    /// Each load's trials, lightest first.
    pub loads: Vec<LoadTrials>,
}

/// The trials at one load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadTrials {
    /// Of the capacity.
    pub multiple: f64,
    /// Offered, requests/s.
    pub rate: f64,
    /// Every target's trials at it, in the order run.
    pub trials: Vec<Trial>,
}

/// One target at one load, over its trials.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The load, as a multiple of capacity.
    pub multiple: f64,
    /// The target.
    pub target: String,
    /// Successful responses completed per second of the measured windows
    /// (by when they completed: a request sent in the window and answered
    /// seconds after it counts where it was answered, if at all).
    pub goodput: f64,
    /// `goodput` over the capacity.
    pub goodput_share: f64,
    /// Of the requests answered or failed, the share not successful.
    pub refused_share: f64,
    /// Successful responses' corrected latency, us: p50, p99, p99.9.
    pub ok: [u64; 3],
    /// The others' (refusals, failures, timeouts): p50, p99.
    pub refused: Option<[u64; 2]>,
    /// Median over the first and over the last five measured seconds of
    /// each second's successful p99, us (none without such seconds).
    pub first_last: Option<(u64, u64)>,
    /// The worst second's successful p99, us.
    pub worst_second: Option<u64>,
    /// Trials.
    pub trials: usize,
    /// The invalid trials' reasons.
    pub invalid: Vec<String>,
}

/// Every target at every load, in the order run.
pub fn rows(overload: &Overload) -> Vec<Row> {
    let mut rows = Vec::new();
    for load in &overload.loads {
        let mut targets: Vec<&str> = Vec::new();
        for trial in &load.trials {
            if !targets.contains(&trial.target.as_str()) {
                targets.push(&trial.target);
            }
        }
        for target in targets {
            let trials: Vec<&Trial> = load.trials.iter().filter(|t| t.target == target).collect();
            rows.push(row(overload, load.multiple, target, &trials));
        }
    }
    rows
}

fn row(overload: &Overload, multiple: f64, target: &str, trials: &[&Trial]) -> Row {
    let mut succeeded = crate::histograms::new_histogram();
    let mut unsuccessful = crate::histograms::new_histogram();
    let (mut ok_count, mut answered) = (0u64, 0u64);
    let (mut completed_ok, mut seconds_measured) = (0u64, 0usize);
    let mut per_second: Vec<Vec<u64>> = Vec::new();
    let mut invalid = Vec::new();
    for trial in trials {
        let result = &trial.result;
        if let Ok(decoded) = result.decode() {
            let _ = succeeded.add(&decoded.succeeded);
            let _ = unsuccessful.add(&decoded.unsuccessful);
        }
        ok_count += result.status.success + result.status.redirect;
        answered += result.status.total() + result.errors.total();
        let measured = measured_seconds(&result.seconds, result.warmup_s, result.duration_s);
        completed_ok += measured.iter().map(|s| s.succeeded).sum::<u64>();
        seconds_measured += measured.len();
        per_second.push(
            measured
                .iter()
                .filter(|s| s.succeeded > 0)
                .map(|s| s.succeeded_p99_us)
                .collect(),
        );
        if !result.verdict.valid {
            invalid.push(result.verdict.reasons.join("; "));
        }
    }
    let goodput = if seconds_measured > 0 {
        completed_ok as f64 / seconds_measured as f64
    } else {
        0.0
    };
    let quantiles = |h: &hdrhistogram::Histogram<u64>, qs: &[f64]| -> Vec<u64> {
        qs.iter().map(|&q| h.value_at_quantile(q)).collect()
    };
    let ok = quantiles(&succeeded, &[0.5, 0.99, 0.999]);
    let first_last = {
        let firsts: Vec<u64> = per_second.iter().flat_map(|s| s.iter().take(5).copied()).collect();
        let lasts: Vec<u64> = per_second
            .iter()
            .flat_map(|s| s.iter().rev().take(5).copied())
            .collect();
        median(firsts).zip(median(lasts))
    };
    Row {
        multiple,
        target: target.to_owned(),
        goodput,
        goodput_share: goodput / overload.capacity_rate,
        refused_share: if answered > 0 {
            1.0 - ok_count as f64 / answered as f64
        } else {
            0.0
        },
        ok: [ok[0], ok[1], ok[2]],
        refused: (!unsuccessful.is_empty()).then(|| {
            let r = quantiles(&unsuccessful, &[0.5, 0.99]);
            [r[0], r[1]]
        }),
        first_last,
        worst_second: per_second.iter().flatten().copied().max(),
        trials: trials.len(),
        invalid,
    }
}

/// The whole seconds of the measured window.
fn measured_seconds(seconds: &[Second], warmup_s: f64, duration_s: f64) -> Vec<&Second> {
    let (from, to) = (warmup_s.ceil() as u64, (warmup_s + duration_s).floor() as u64);
    seconds.iter().filter(|s| s.second >= from && s.second < to).collect()
}

fn median(mut values: Vec<u64>) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[values.len() / 2])
}

fn us(value: u64) -> String {
    format_micros(value)
}

/// `first / last`, of [`Row::first_last`].
fn first_last(row: &Row) -> String {
    row.first_last
        .map_or("-".into(), |(first, last)| format!("{} / {}", us(first), us(last)))
}

/// The table, as text lines (summary.txt, the terminal).
pub fn text(overload: &Overload) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "overload: backend capacity {} at once, service {} ({:.0} requests/s)",
        overload.capacity, overload.service, overload.capacity_rate
    );
    let _ = writeln!(
        out,
        "{:>5} {:<14} {:>9} {:>7} {:>8} {:>9} {:>9} {:>9} {:>10} {:>19}",
        "load",
        "target",
        "goodput",
        "of cap",
        "not ok",
        "ok p50",
        "ok p99",
        "ok p99.9",
        "other p99",
        "ok p99 first/last 5s"
    );
    for row in rows(overload) {
        let _ = writeln!(
            out,
            "{:>4.1}x {:<14} {:>7.0}/s {:>6.1}% {:>7.1}% {:>9} {:>9} {:>9} {:>10} {:>19}{}",
            row.multiple,
            row.target,
            row.goodput,
            row.goodput_share * 100.0,
            row.refused_share * 100.0,
            us(row.ok[0]),
            us(row.ok[1]),
            us(row.ok[2]),
            row.refused.map_or("-".into(), |r| us(r[1])),
            first_last(&row),
            if row.invalid.is_empty() {
                ""
            } else {
                "  (invalid trial)"
            }
        );
    }
    out
}

/// The report's section: setup, the table, and each load's chart.
pub fn html(overload: &Overload) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<h2>Overload: a backend with a capacity, offered up to {:.1} times it</h2>",
        overload.loads.last().map_or(1.0, |l| l.multiple)
    );
    let _ = writeln!(
        out,
        "<p>The backend serves {} requests at once, each for {}: {:.0} requests/s. \
         The others wait inside it in arrival order, as behind a thread pool. Every target is \
         offered each load for the same trial; goodput counts successful (2xx, 3xx) responses \
         per second. Latency is from each request's intended send time, successful responses \
         apart from the others (refusals, failures, timeouts): a target that refuses fast would \
         otherwise look fast. <i>first / last 5 s</i> is the median of each second's p99 of \
         successful responses over the first and the last five measured seconds: a target whose \
         queue grows with the length of the overload shows it there.</p>",
        overload.capacity, overload.service, overload.capacity_rate
    );
    out.push_str("<ul>");
    for (target, description) in &overload.targets {
        let _ = write!(out, "<li><b>{target}</b>: {description}</li>");
    }
    out.push_str("</ul>\n");
    out.push_str(
        "<table><tr><th>load</th><th>target</th><th>goodput</th><th>of capacity</th><th>not successful</th>\
         <th>ok p50</th><th>ok p99</th><th>ok p99.9</th><th>others p50 / p99</th><th>ok p99 first / last 5 s</th>\
         <th>worst second's ok p99</th></tr>\n",
    );
    for row in rows(overload) {
        let _ = writeln!(
            out,
            "<tr><td>{:.1}x</td><td>{}{}</td><td>{:.0}/s</td><td>{:.1}%</td><td>{:.1}%</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            row.multiple,
            row.target,
            if row.invalid.is_empty() {
                String::new()
            } else {
                format!(" <small title=\"{}\">(invalid)</small>", row.invalid.join(" | "))
            },
            row.goodput,
            row.goodput_share * 100.0,
            row.refused_share * 100.0,
            us(row.ok[0]),
            us(row.ok[1]),
            us(row.ok[2]),
            row.refused
                .map_or("-".into(), |r| format!("{} / {}", us(r[0]), us(r[1]))),
            first_last(&row),
            row.worst_second.map_or("-".into(), us),
        );
    }
    out.push_str("</table>\n");
    for load in &overload.loads {
        if let Some(chart) = super::charts::overload_timeline(load) {
            let _ = writeln!(
                out,
                "<h3>At {:.1}x capacity ({:.0} requests/s offered): p99 of successful responses, each second</h3>",
                load.multiple, load.rate
            );
            out.push_str(&chart);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_each_half() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3, 1, 2]), Some(2));
    }

    #[test]
    fn measured_seconds_leave_out_warm_up_and_tail() {
        let second = |second, succeeded, p99| Second {
            second,
            succeeded,
            succeeded_p99_us: p99,
            ..Second::default()
        };
        let seconds = [
            second(0, 10, 900),
            second(1, 10, 100),
            second(2, 0, 0),
            second(3, 10, 300),
            second(4, 10, 999),
        ];
        let measured: Vec<u64> = measured_seconds(&seconds, 1.0, 3.0).iter().map(|s| s.second).collect();
        assert_eq!(measured, [1, 2, 3]);
    }
}
