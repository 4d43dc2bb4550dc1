//! Latency histograms (microseconds) and their two serialized forms: the
//! `.hgrm` percentile distribution that HdrHistogram plotters read, and
//! HdrHistogram's V2 compressed encoding in base64, which merges losslessly.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

/// The `.hgrm` text format, shared with tailcut's `/latency` endpoint.
pub use tailcut::metrics::hgrm::{hgrm, parse_hgrm, HgrmLine};

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
