//! HdrHistogram's `.hgrm` text: the percentile distribution that wrk2 prints
//! and HdrHistogram's plotter reads. tailcut's `/latency` endpoint and
//! tailcut-load's `--hgrm` output both write it with [`hgrm`], so their
//! figures can be plotted and compared side by side.
//!
//! Written by hand because the hdrhistogram crate has no text output; the
//! layout follows Java HdrHistogram's `outputPercentileDistribution`.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// The percentile distribution in HdrHistogram's text format (Java's
/// `outputPercentileDistribution`, 5 ticks per half distance), values in
/// milliseconds as wrk2 and the HdrHistogram plotter expect.
pub fn hgrm(histogram: &Histogram<u64>) -> String {
    const SCALE: f64 = 1000.0; // microseconds -> milliseconds
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !histogram.is_empty() {
        let mut count = 0u64;
        for v in histogram.iter_quantiles(5) {
            let value = v.value_iterated_to() as f64 / SCALE;
            let quantile = v.quantile_iterated_to();
            count += v.count_since_last_iteration();
            if quantile < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:12.3} {quantile:2.12} {count:10} {:14.2}",
                    1.0 / (1.0 - quantile)
                );
            } else {
                let _ = writeln!(out, "{value:12.3} {quantile:2.12} {count:10}");
            }
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        histogram.mean() / SCALE,
        histogram.stdev() / SCALE
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        histogram.max() as f64 / SCALE,
        histogram.len()
    );
    // Sub-buckets per bucket: 2^ceil(log2(2 * 10^sigfig)), as HdrHistogram sizes them.
    let sub_buckets = (2.0 * 10f64.powi(i32::from(histogram.sigfig()))).log2().ceil().exp2();
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        histogram.buckets(),
        sub_buckets
    );
    out
}

/// One line of an `.hgrm` distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HgrmLine {
    /// Value in milliseconds.
    pub value_ms: f64,
    /// Percentile as a fraction (0..=1).
    pub quantile: f64,
    /// Samples at or below the value.
    pub total_count: u64,
}

/// Reads the percentile lines and total count back from `.hgrm` text.
pub fn parse_hgrm(text: &str) -> Option<(Vec<HgrmLine>, u64)> {
    let mut lines = Vec::new();
    let mut total = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("#[Max") {
            total = rest
                .split("Total count")
                .nth(1)?
                .trim_matches(|c: char| c == '=' || c == ']' || c.is_whitespace())
                .parse()
                .ok();
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 || line.starts_with('#') || fields[0] == "Value" {
            continue;
        }
        lines.push(HgrmLine {
            value_ms: fields[0].parse().ok()?,
            quantile: fields[1].parse().ok()?,
            total_count: fields[2].parse().ok()?,
        });
    }
    Some((lines, total?))
}
