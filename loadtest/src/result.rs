//! What a run measured: counts, histograms, the validity verdict, the
//! terminal summary, the JSON form, and merging several runs into one.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::histograms::{self, new_histogram, supported_quantile};
use crate::schedule::Arrivals;

/// Transport errors, by kind. HTTP statuses are counted in [`StatusClasses`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Errors {
    /// The target refused the TCP connection.
    pub refused: u64,
    /// The connection was reset or closed before a complete response.
    pub reset: u64,
    /// No complete response within `--timeout` of the intended send time.
    pub timeout: u64,
    /// Anything else (protocol errors, local resource limits).
    pub other: u64,
}

impl Errors {
    /// All transport errors.
    pub fn total(&self) -> u64 {
        self.refused + self.reset + self.timeout + self.other
    }

    fn add(&mut self, other: &Errors) {
        self.refused += other.refused;
        self.reset += other.reset;
        self.timeout += other.timeout;
        self.other += other.other;
    }
}

/// Responses by status class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusClasses {
    /// 1xx (after the final response: only 101 reaches here).
    #[serde(rename = "1xx")]
    pub informational: u64,
    /// 2xx.
    #[serde(rename = "2xx")]
    pub success: u64,
    /// 3xx.
    #[serde(rename = "3xx")]
    pub redirect: u64,
    /// 4xx.
    #[serde(rename = "4xx")]
    pub client_error: u64,
    /// 5xx.
    #[serde(rename = "5xx")]
    pub server_error: u64,
}

impl StatusClasses {
    /// Counts one response with `status`.
    pub fn count(&mut self, status: u16) {
        match status / 100 {
            1 => self.informational += 1,
            2 => self.success += 1,
            3 => self.redirect += 1,
            4 => self.client_error += 1,
            _ => self.server_error += 1,
        }
    }

    /// Responses of any status.
    pub fn total(&self) -> u64 {
        self.informational + self.success + self.redirect + self.client_error + self.server_error
    }

    fn add(&mut self, other: &StatusClasses) {
        self.informational += other.informational;
        self.success += other.success;
        self.redirect += other.redirect;
        self.client_error += other.client_error;
        self.server_error += other.server_error;
    }
}

/// The limits a run is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Largest allowed shortfall (or excess) of the achieved rate, as a fraction.
    pub rate_tolerance: f64,
    /// Largest allowed send-lag p99, microseconds.
    pub max_send_lag_us: u64,
    /// Largest allowed generator stall (monitor oversleep), microseconds.
    pub max_stall_us: u64,
    /// Largest allowed share of requests that failed (transport error or 5xx).
    pub max_error_rate: f64,
}

/// Whether the run measured the target, and why not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// True when the rate was reached and the generator kept its schedule.
    pub valid: bool,
    /// Why the run is invalid (empty when valid).
    pub reasons: Vec<String>,
    /// Failed requests (transport errors + 5xx) over all requests in the window.
    pub error_rate: f64,
    /// True when `error_rate` is within `max_error_rate`.
    pub errors_ok: bool,
}

/// The four histograms of a run, V2-compressed and base64-encoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EncodedHistograms {
    /// Intended send time to end of response body, us.
    pub corrected: String,
    /// Actual send time to end of response body, us.
    pub uncorrected: String,
    /// Actual minus intended send time, us.
    pub send_lag: String,
    /// Stall monitor oversleep, us.
    pub stalls: String,
    /// `corrected`, of successful responses (2xx, 3xx) only (empty in
    /// results written before it was kept).
    #[serde(default)]
    pub succeeded: String,
    /// `corrected`, of every other response and of timeouts.
    #[serde(default)]
    pub unsuccessful: String,
}

/// A histogram an older result may lack (an empty string): empty then.
fn decode_or_empty(encoded: &str) -> Result<Histogram<u64>, histograms::DecodeError> {
    if encoded.is_empty() {
        return Ok(new_histogram());
    }
    histograms::decode(encoded)
}

/// A run's figures; what `--json` writes and `merge` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The URL driven.
    pub target: String,
    /// Request method.
    pub method: String,
    /// Target rate, requests/s.
    pub rate: f64,
    /// Arrival process.
    pub arrivals: Arrivals,
    /// Measured window, seconds (warm-up excluded).
    pub duration_s: f64,
    /// Warm-up, seconds (measured, then discarded).
    pub warmup_s: f64,
    /// Connections.
    pub connections: usize,
    /// Generator threads.
    pub threads: usize,
    /// HTTP/2 prior knowledge instead of HTTP/1.1.
    pub http2: bool,
    /// Requests actually sent within the measured window.
    pub sent: u64,
    /// Requests of the window that waited for a free connection (every
    /// connection was held by the target at their intended send time).
    #[serde(default)]
    pub waited_for_connection: u64,
    /// `sent / duration_s`.
    pub achieved_rate: f64,
    /// Transport errors of requests intended in the window.
    pub errors: Errors,
    /// Responses of requests intended in the window.
    pub status: StatusClasses,
    /// What the verdict was judged against.
    pub thresholds: Thresholds,
    /// The verdict.
    pub verdict: Verdict,
    /// The histograms.
    pub histograms: EncodedHistograms,
    /// Each second of the run, warm-up included, in order (empty for a
    /// merged result: generators' seconds do not line up).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seconds: Vec<Second>,
}

/// One second of a run: what completed in it and how long it took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the run's start (warm-up included).
    pub second: u64,
    /// Responses completed in this second.
    pub completed: u64,
    /// Corrected latency of those responses, us: median.
    pub p50_us: u64,
    /// 99th percentile, us.
    pub p99_us: u64,
    /// Largest, us.
    pub max_us: u64,
    /// Successful responses (2xx, 3xx) completed in this second (the
    /// fields below are zero in results written before they were kept).
    #[serde(default)]
    pub succeeded: u64,
    /// Their corrected latency, us: median.
    #[serde(default)]
    pub succeeded_p50_us: u64,
    /// 99th percentile, us.
    #[serde(default)]
    pub succeeded_p99_us: u64,
    /// 99.9th percentile, us.
    #[serde(default)]
    pub succeeded_p999_us: u64,
    /// Other responses (refusals, failures) and timeouts in this second.
    #[serde(default)]
    pub unsuccessful: u64,
    /// Their corrected latency, us: 99th percentile.
    #[serde(default)]
    pub unsuccessful_p99_us: u64,
}

/// The decoded histograms of a result.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Intended send to end of body.
    pub corrected: Histogram<u64>,
    /// Actual send to end of body.
    pub uncorrected: Histogram<u64>,
    /// Send lag.
    pub send_lag: Histogram<u64>,
    /// Generator stalls.
    pub stalls: Histogram<u64>,
    /// `corrected`, successful responses (2xx, 3xx) only.
    pub succeeded: Histogram<u64>,
    /// `corrected`, other responses and timeouts only.
    pub unsuccessful: Histogram<u64>,
}

impl Decoded {
    /// Empty histograms.
    pub fn new() -> Self {
        Self {
            corrected: new_histogram(),
            uncorrected: new_histogram(),
            send_lag: new_histogram(),
            stalls: new_histogram(),
            succeeded: new_histogram(),
            unsuccessful: new_histogram(),
        }
    }

    fn encode(&self) -> EncodedHistograms {
        EncodedHistograms {
            corrected: histograms::encode(&self.corrected),
            uncorrected: histograms::encode(&self.uncorrected),
            send_lag: histograms::encode(&self.send_lag),
            stalls: histograms::encode(&self.stalls),
            succeeded: histograms::encode(&self.succeeded),
            unsuccessful: histograms::encode(&self.unsuccessful),
        }
    }
}

impl Default for Decoded {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything about a run except its derived fields.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The URL driven.
    pub target: String,
    /// Request method.
    pub method: String,
    /// Target rate.
    pub rate: f64,
    /// Arrival process.
    pub arrivals: Arrivals,
    /// Measured window.
    pub duration: Duration,
    /// Warm-up.
    pub warmup: Duration,
    /// Connections.
    pub connections: usize,
    /// Threads.
    pub threads: usize,
    /// HTTP/2.
    pub http2: bool,
    /// Requests sent within the window.
    pub sent: u64,
    /// Requests that waited for a free connection.
    pub waited_for_connection: u64,
    /// Transport errors.
    pub errors: Errors,
    /// Responses.
    pub status: StatusClasses,
    /// Histograms.
    pub histograms: Decoded,
    /// Each second of the run.
    pub seconds: Vec<Second>,
}

impl RunResult {
    /// Judges `measured` against `thresholds`.
    pub fn new(measured: Measured, thresholds: Thresholds) -> Self {
        let duration_s = measured.duration.as_secs_f64();
        let achieved_rate = if duration_s > 0.0 {
            measured.sent as f64 / duration_s
        } else {
            0.0
        };
        let verdict = judge(
            achieved_rate,
            measured.rate,
            &measured.errors,
            &measured.status,
            &measured.histograms,
            &thresholds,
        );
        RunResult {
            target: measured.target,
            method: measured.method,
            rate: measured.rate,
            arrivals: measured.arrivals,
            duration_s,
            warmup_s: measured.warmup.as_secs_f64(),
            connections: measured.connections,
            threads: measured.threads,
            http2: measured.http2,
            sent: measured.sent,
            waited_for_connection: measured.waited_for_connection,
            achieved_rate,
            errors: measured.errors,
            status: measured.status,
            thresholds,
            verdict,
            histograms: measured.histograms.encode(),
            seconds: measured.seconds,
        }
    }

    /// Decodes the histograms.
    pub fn decode(&self) -> Result<Decoded, histograms::DecodeError> {
        Ok(Decoded {
            corrected: histograms::decode(&self.histograms.corrected)?,
            uncorrected: histograms::decode(&self.histograms.uncorrected)?,
            send_lag: histograms::decode(&self.histograms.send_lag)?,
            stalls: histograms::decode(&self.histograms.stalls)?,
            succeeded: decode_or_empty(&self.histograms.succeeded)?,
            unsuccessful: decode_or_empty(&self.histograms.unsuccessful)?,
        })
    }

    /// Merges runs made at the same time from several generators into one
    /// result: counts and rates add up, histograms merge losslessly, and
    /// every percentile is read off the merged histograms. The merged run is
    /// valid only if every part was.
    pub fn merge(parts: &[RunResult]) -> Result<RunResult, MergeError> {
        let first = parts.first().ok_or(MergeError::Empty)?;
        let mut histograms = Decoded::new();
        let (mut errors, mut status) = (Errors::default(), StatusClasses::default());
        let (mut sent, mut rate, mut connections, mut threads) = (0, 0.0, 0, 0);
        let mut waited_for_connection = 0;
        let mut reasons = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let decoded = part
                .decode()
                .map_err(|source| MergeError::Histogram { index: i, source })?;
            for (into, from) in [
                (&mut histograms.corrected, &decoded.corrected),
                (&mut histograms.uncorrected, &decoded.uncorrected),
                (&mut histograms.send_lag, &decoded.send_lag),
                (&mut histograms.stalls, &decoded.stalls),
                (&mut histograms.succeeded, &decoded.succeeded),
                (&mut histograms.unsuccessful, &decoded.unsuccessful),
            ] {
                into.add(from).map_err(|_| MergeError::Incompatible { index: i })?;
            }
            errors.add(&part.errors);
            status.add(&part.status);
            sent += part.sent;
            waited_for_connection += part.waited_for_connection;
            rate += part.rate;
            connections += part.connections;
            threads += part.threads;
            reasons.extend(part.verdict.reasons.iter().map(|r| format!("part {}: {r}", i + 1)));
        }
        let measured = Measured {
            target: first.target.clone(),
            method: first.method.clone(),
            rate,
            arrivals: first.arrivals,
            duration: Duration::from_secs_f64(first.duration_s),
            warmup: Duration::from_secs_f64(first.warmup_s),
            connections,
            threads,
            http2: first.http2,
            sent,
            waited_for_connection,
            errors,
            status,
            histograms,
            seconds: Vec::new(),
        };
        let mut merged = RunResult::new(measured, first.thresholds);
        if !reasons.is_empty() {
            merged.verdict.valid = false;
            merged.verdict.reasons.extend(reasons);
        }
        Ok(merged)
    }

    /// The terminal summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let decoded = self.decode().unwrap_or_default();
        let _ = writeln!(
            out,
            "target {}  {} at {}/s {:?}, {:.0} s measured after {:.0} s warm-up, {} connections, {} threads{}",
            self.target,
            self.method,
            self.rate,
            self.arrivals,
            self.duration_s,
            self.warmup_s,
            self.connections,
            self.threads,
            if self.http2 { ", HTTP/2" } else { "" }
        );
        let shortfall = (self.achieved_rate - self.rate) / self.rate * 100.0;
        let _ = writeln!(
            out,
            "rate     {:.1}/s achieved ({shortfall:+.2}% of target), {} sent, {} responses",
            self.achieved_rate,
            self.sent,
            self.status.total()
        );
        if self.waited_for_connection > 0 {
            let _ = writeln!(
                out,
                "queued   {} of {} requests waited for a free connection: the target held all {}; \
                 their wait is in the latency from intended send",
                self.waited_for_connection,
                decoded.corrected.len(),
                self.connections
            );
        }
        let _ = writeln!(out, "{:<34}{}", "", percentile_header());
        for (label, histogram) in [
            ("latency (from intended send)", &decoded.corrected),
            ("latency (from actual send)", &decoded.uncorrected),
            ("send lag", &decoded.send_lag),
            ("generator stalls (1 ms monitor)", &decoded.stalls),
        ] {
            let _ = writeln!(out, "{label:<34}{}", percentile_row(histogram));
        }
        // Shown apart only when both kinds occurred: a shedding target's
        // fast refusals would otherwise pull its served requests' tail down.
        if !decoded.succeeded.is_empty() && !decoded.unsuccessful.is_empty() {
            for (label, histogram) in [
                ("  of successes (2xx, 3xx)", &decoded.succeeded),
                ("  of other statuses, timeouts", &decoded.unsuccessful),
            ] {
                let _ = writeln!(out, "{label:<34}{}", percentile_row(histogram));
            }
        }
        let e = &self.errors;
        let s = &self.status;
        let _ = writeln!(
            out,
            "errors   refused {} reset {} timeout {} other {} | status 1xx {} 2xx {} 3xx {} 4xx {} 5xx {} | error rate {:.3}%",
            e.refused,
            e.reset,
            e.timeout,
            e.other,
            s.informational,
            s.success,
            s.redirect,
            s.client_error,
            s.server_error,
            self.verdict.error_rate * 100.0
        );
        if self.verdict.valid {
            let _ = writeln!(
                out,
                "verdict  VALID: rate reached, send lag and generator stalls within limits"
            );
        } else {
            let _ = writeln!(out, "verdict  INVALID: {}", self.verdict.reasons.join("; "));
        }
        if !self.verdict.errors_ok {
            let _ = writeln!(
                out,
                "errors   above --max-error-rate {:.3}%",
                self.thresholds.max_error_rate * 100.0
            );
        }
        out
    }
}

/// Why results could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Nothing to merge.
    #[error("no results to merge")]
    Empty,
    /// A histogram did not decode.
    #[error("result {}: {source}", index + 1)]
    Histogram {
        /// Which input (0-based).
        index: usize,
        /// Why.
        #[source]
        source: histograms::DecodeError,
    },
    /// Histograms with incompatible bounds.
    #[error("result {}: histograms cannot be merged", index + 1)]
    Incompatible {
        /// Which input (0-based).
        index: usize,
    },
}

const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

fn percentile_header() -> String {
    let mut out = String::new();
    for (name, _) in QUANTILES {
        let _ = write!(out, "{name:>12}");
    }
    let _ = write!(out, "{:>12}{:>10}", "max", "samples");
    out
}

fn percentile_row(histogram: &Histogram<u64>) -> String {
    let mut out = String::new();
    for (_, q) in QUANTILES {
        let cell = match supported_quantile(histogram, q) {
            Some(v) => format_micros(v),
            None => "unsupported".to_owned(),
        };
        let _ = write!(out, "{cell:>12}");
    }
    let max = if !histogram.is_empty() {
        format_micros(histogram.max())
    } else {
        "-".to_owned()
    };
    let _ = write!(out, "{max:>12}{:>10}", histogram.len());
    out
}

/// `850us`, `1.25ms`, `3.200s`.
pub fn format_micros(us: u64) -> String {
    match us {
        0..=999 => format!("{us}us"),
        1_000..=999_999 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.3}s", us as f64 / 1e6),
    }
}

fn judge(
    achieved: f64,
    target: f64,
    errors: &Errors,
    status: &StatusClasses,
    histograms: &Decoded,
    thresholds: &Thresholds,
) -> Verdict {
    let mut reasons = Vec::new();
    let off = if target > 0.0 {
        (achieved - target) / target
    } else {
        0.0
    };
    if off.abs() > thresholds.rate_tolerance {
        reasons.push(format!(
            "achieved rate {achieved:.1}/s is {:+.2}% off the target {target}/s (tolerance {:.1}%)",
            off * 100.0,
            thresholds.rate_tolerance * 100.0
        ));
    }
    let lag_p99 = histograms.send_lag.value_at_quantile(0.99);
    if !histograms.send_lag.is_empty() && lag_p99 > thresholds.max_send_lag_us {
        reasons.push(format!(
            "send lag p99 {} exceeds {}: the generator could not keep its schedule",
            format_micros(lag_p99),
            format_micros(thresholds.max_send_lag_us)
        ));
    }
    if !histograms.stalls.is_empty() && histograms.stalls.max() > thresholds.max_stall_us {
        reasons.push(format!(
            "the generator stalled for {} (limit {})",
            format_micros(histograms.stalls.max()),
            format_micros(thresholds.max_stall_us)
        ));
    }
    let attempts = errors.total() + status.total();
    let failed = errors.total() + status.server_error;
    let error_rate = if attempts > 0 {
        failed as f64 / attempts as f64
    } else {
        0.0
    };
    Verdict {
        valid: reasons.is_empty(),
        reasons,
        error_rate,
        errors_ok: error_rate <= thresholds.max_error_rate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> Thresholds {
        Thresholds {
            rate_tolerance: 0.01,
            max_send_lag_us: 1000,
            max_stall_us: 10_000,
            max_error_rate: 0.0,
        }
    }

    fn measured(values: std::ops::Range<u64>, sent: u64) -> Measured {
        let mut histograms = Decoded::new();
        let mut status = StatusClasses::default();
        for v in values {
            histograms.corrected.record(v).expect("in range");
            histograms.uncorrected.record(v).expect("in range");
            histograms.send_lag.record(5).expect("in range");
            status.count(200);
        }
        Measured {
            target: "http://t/".into(),
            method: "GET".into(),
            rate: 100.0,
            arrivals: Arrivals::Uniform,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            connections: 4,
            threads: 1,
            http2: false,
            sent,
            waited_for_connection: 0,
            errors: Errors::default(),
            status,
            histograms,
            seconds: Vec::new(),
        }
    }

    #[test]
    fn merging_equals_one_run_over_the_combined_samples() {
        let a = RunResult::new(measured(1..1000, 1000), thresholds());
        let b = RunResult::new(measured(1000..3000, 1000), thresholds());
        let merged = RunResult::merge(&[a, b]).expect("merges");
        let combined = RunResult::new(
            Measured {
                rate: 200.0,
                connections: 8,
                threads: 2,
                ..measured(1..3000, 2000)
            },
            thresholds(),
        );
        assert_eq!(
            merged.decode().expect("decodes").corrected,
            combined.decode().expect("decodes").corrected
        );
        assert_eq!(merged.sent, 2000);
        assert_eq!(merged.achieved_rate, 200.0);
        assert_eq!(merged.status.success, combined.status.success);
        assert_eq!(merged.verdict, combined.verdict);
    }

    #[test]
    fn a_run_short_of_its_rate_is_invalid() {
        let result = RunResult::new(measured(1..900, 950), thresholds());
        assert!(!result.verdict.valid);
        assert!(
            result.verdict.reasons[0].contains("-5.00%"),
            "{:?}",
            result.verdict.reasons
        );
    }

    #[test]
    fn a_lagging_or_stalled_generator_makes_the_run_invalid() {
        let mut m = measured(1..1000, 1000);
        m.histograms.send_lag.record(50_000).expect("in range");
        for _ in 0..100 {
            m.histograms.send_lag.record(50_000).expect("in range");
        }
        m.histograms.stalls.record(20_000).expect("in range");
        let result = RunResult::new(m, thresholds());
        assert!(!result.verdict.valid);
        assert_eq!(result.verdict.reasons.len(), 2, "{:?}", result.verdict.reasons);
    }

    #[test]
    fn server_errors_and_transport_errors_count_toward_the_error_rate() {
        let mut m = measured(1..1000, 1000);
        m.status.count(503);
        m.errors.reset += 1;
        let result = RunResult::new(
            m,
            Thresholds {
                max_error_rate: 0.001,
                ..thresholds()
            },
        );
        assert!((result.verdict.error_rate - 2.0 / 1001.0).abs() < 1e-9);
        assert!(!result.verdict.errors_ok);
        assert!(
            result.verdict.valid,
            "errors do not make the measurement itself invalid"
        );
    }

    #[test]
    fn summary_marks_thin_percentiles_unsupported() {
        let text = RunResult::new(measured(1..1000, 1000), thresholds()).summary();
        assert!(text.contains("unsupported"), "{text}");
        assert!(text.contains("verdict  VALID"), "{text}");
    }
}
