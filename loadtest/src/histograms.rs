//! Latency histograms (microseconds) and their two serialized forms: the
//! `.hgrm` percentile distribution that HdrHistogram plotters read, and
//! HdrHistogram's V2 compressed encoding in base64, which merges losslessly.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

/// Highest value a histogram holds: one hour, in microseconds. Higher
/// values are clamped to it rather than lost.
pub const HIGHEST_MICROS: u64 = 3_600_000_000;

/// A histogram from 1 us to one hour with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).expect("constant bounds are valid")
}

/// Samples needed before a percentile is worth printing: `10 / (1 - p)`
/// (p99.9 needs 10^4, p99.99 needs 10^5).
pub fn samples_needed(quantile: f64) -> u64 {
    (10.0 / (1.0 - quantile)).round() as u64
}

/// The value at `quantile`, or `None` when the histogram has too few samples
/// to support it.
pub fn supported_quantile(histogram: &Histogram<u64>, quantile: f64) -> Option<u64> {
    (histogram.len() >= samples_needed(quantile)).then(|| histogram.value_at_quantile(quantile))
}

/// Encodes `histogram` as HdrHistogram V2 compressed, in base64.
pub fn encode(histogram: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    match V2DeflateSerializer::new().serialize(histogram, &mut bytes) {
        Ok(_) => STANDARD.encode(bytes),
        Err(_) => String::new(),
    }
}

/// Why an encoded histogram could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not base64.
    #[error("not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Not an HdrHistogram encoding.
    #[error("not an HdrHistogram V2 encoding: {0:?}")]
    Histogram(hdrhistogram::serialization::DeserializeError),
}

/// Decodes what [`encode`] wrote (or any V2 histogram in base64).
pub fn decode(text: &str) -> Result<Histogram<u64>, DecodeError> {
    let bytes = STANDARD.decode(text.trim())?;
    let decoded: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(DecodeError::Histogram)?;
    // Widen to the standard bounds so decoded histograms always merge.
    let mut histogram = new_histogram();
    histogram
        .add(&decoded)
        .map_err(|_| DecodeError::Histogram(hdrhistogram::serialization::DeserializeError::UsizeTypeTooSmall))?;
    Ok(histogram)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Histogram<u64> {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v * 10).expect("in range");
        }
        h
    }

    #[test]
    fn encoding_round_trips() {
        let h = sample();
        let back = decode(&encode(&h)).expect("decodes");
        assert_eq!(back, h);
    }

    #[test]
    fn hgrm_parses_back_to_the_same_distribution() {
        let h = sample();
        let text = hgrm(&h);
        let (lines, total) = parse_hgrm(&text).expect("parses");
        assert_eq!(total, h.len());
        assert!(lines.len() > 20);
        assert!(lines
            .windows(2)
            .all(|w| w[0].value_ms <= w[1].value_ms && w[0].quantile <= w[1].quantile));
        let last = lines.last().expect("a last line");
        assert_eq!(last.quantile, 1.0);
        assert_eq!(last.total_count, h.len());
        assert!((last.value_ms - h.max() as f64 / 1000.0).abs() < 1e-9);
        let median = lines.iter().find(|l| l.quantile >= 0.5).expect("a median line");
        assert!((median.value_ms - 50.0).abs() < 0.1, "median {} ms", median.value_ms);
    }

    #[test]
    fn percentiles_without_enough_samples_are_unsupported() {
        let mut h = new_histogram();
        for v in 1..=9_999u64 {
            h.record(v).expect("in range");
        }
        assert!(supported_quantile(&h, 0.99).is_some());
        assert!(supported_quantile(&h, 0.999).is_none(), "p99.9 needs 10^4 samples");
        h.record(1).expect("in range");
        assert!(supported_quantile(&h, 0.999).is_some());
        assert!(supported_quantile(&h, 0.9999).is_none(), "p99.99 needs 10^5 samples");
    }
}
