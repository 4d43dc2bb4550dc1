//! Is one proxy's percentile lower than the other's, and by how much?
//!
//! Each proxy ran several interleaved trials. For a percentile, the observed
//! difference is read off the two proxies' merged histograms. Its 95%
//! confidence interval comes from a bootstrap over trials: draw each
//! proxy's trials with replacement, merge the draw, read the percentile off
//! it, take the difference; the 2.5th and 97.5th percentiles of many such
//! differences bound it. Resampling whole trials (not single requests)
//! keeps what varies from trial to trial, which is most of what varies on a
//! shared machine.

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::histograms::{new_histogram, samples_needed};

/// Bootstrap draws per interval.
pub const DRAWS: usize = 1000;

/// The verdict on one percentile: `a - b` in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Comparison {
    /// Either side has too few samples for this percentile.
    Unsupported,
    /// Either side has one valid trial: resampling one trial gives no interval.
    OneTrial {
        /// Observed difference, a - b, microseconds.
        difference_us: f64,
    },
    /// The interval excludes zero.
    Different {
        /// Observed difference, a - b, microseconds.
        difference_us: f64,
        /// 95% interval of the difference.
        low_us: f64,
        /// 95% interval of the difference.
        high_us: f64,
    },
    /// The interval includes zero.
    NoSignificantDifference {
        /// Observed difference, a - b, microseconds.
        difference_us: f64,
        /// 95% interval of the difference.
        low_us: f64,
        /// 95% interval of the difference.
        high_us: f64,
    },
}

impl Comparison {
    /// The verdict in words, naming `a` and `b`.
    pub fn describe(&self, a: &str, b: &str) -> String {
        match self {
            Comparison::Unsupported => "unsupported (too few samples)".into(),
            Comparison::OneTrial { difference_us } => format!(
                "{a} minus {b}: {} from one trial per side; no interval (run more rounds)",
                signed_ms(*difference_us)
            ),
            Comparison::NoSignificantDifference { low_us, high_us, .. } => format!(
                "no significant difference [{}, {}]",
                signed_ms(*low_us),
                signed_ms(*high_us)
            ),
            Comparison::Different {
                difference_us,
                low_us,
                high_us,
            } => {
                let (lower, by, from, to) = if *difference_us < 0.0 {
                    (a, -difference_us, -high_us, -low_us)
                } else {
                    (b, *difference_us, *low_us, *high_us)
                };
                format!("{lower} lower by {} [{}, {}]", ms(by), ms(from), ms(to))
            }
        }
    }
}

fn ms(us: f64) -> String {
    format!("{:.3} ms", us / 1000.0)
}

fn signed_ms(us: f64) -> String {
    format!("{:+.3} ms", us / 1000.0)
}

fn merged<'a>(trials: impl Iterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut merged = new_histogram();
    for trial in trials {
        // Same bounds everywhere, so adding cannot fail.
        let _ = merged.add(trial);
    }
    merged
}

/// Compares percentile `quantile` of trials `a` against trials `b`.
/// `seed` makes the bootstrap repeatable.
pub fn compare(a: &[Histogram<u64>], b: &[Histogram<u64>], quantile: f64, seed: u64) -> Comparison {
    let (all_a, all_b) = (merged(a.iter()), merged(b.iter()));
    let needed = samples_needed(quantile);
    if a.is_empty() || b.is_empty() || all_a.len() < needed || all_b.len() < needed {
        return Comparison::Unsupported;
    }
    let observed = all_a.value_at_quantile(quantile) as f64 - all_b.value_at_quantile(quantile) as f64;
    if a.len() < 2 || b.len() < 2 {
        return Comparison::OneTrial {
            difference_us: observed,
        };
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut draws: Vec<f64> = (0..DRAWS)
        .map(|_| {
            let draw_a = merged((0..a.len()).map(|_| &a[rng.gen_range(0..a.len())]));
            let draw_b = merged((0..b.len()).map(|_| &b[rng.gen_range(0..b.len())]));
            draw_a.value_at_quantile(quantile) as f64 - draw_b.value_at_quantile(quantile) as f64
        })
        .collect();
    draws.sort_by(f64::total_cmp);
    let low_us = draws[DRAWS * 25 / 1000];
    let high_us = draws[DRAWS * 975 / 1000 - 1];
    if low_us > 0.0 || high_us < 0.0 {
        Comparison::Different {
            difference_us: observed,
            low_us,
            high_us,
        }
    } else {
        Comparison::NoSignificantDifference {
            difference_us: observed,
            low_us,
            high_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trial of `n` samples spread evenly over `from..from + width` us.
    fn trial(from: u64, width: u64, n: u64) -> Histogram<u64> {
        let mut h = new_histogram();
        for i in 0..n {
            h.record(from + i * width / n).expect("in range");
        }
        h
    }

    #[test]
    fn the_same_trials_on_both_sides_differ_by_nothing() {
        let trials: Vec<_> = (0..5).map(|i| trial(1000 + i * 10, 500, 2000)).collect();
        let verdict = compare(&trials, &trials, 0.99, 7);
        let Comparison::NoSignificantDifference {
            difference_us,
            low_us,
            high_us,
        } = verdict
        else {
            panic!("expected no difference, got {verdict:?}");
        };
        assert_eq!(difference_us, 0.0);
        assert!(low_us <= 0.0 && high_us >= 0.0);
    }

    #[test]
    fn a_uniformly_faster_side_is_lower_by_the_gap() {
        // a: every trial 1000-1100 us; b: every trial 2000-2100 us. The p50
        // gap is 1000 us, and with identical trials on each side the
        // bootstrap has nothing to vary: the interval is the gap itself.
        let a: Vec<_> = (0..4).map(|_| trial(1000, 100, 1000)).collect();
        let b: Vec<_> = (0..4).map(|_| trial(2000, 100, 1000)).collect();
        let verdict = compare(&a, &b, 0.5, 1);
        let Comparison::Different {
            difference_us,
            low_us,
            high_us,
        } = verdict.clone()
        else {
            panic!("expected a difference, got {verdict:?}");
        };
        assert!((difference_us + 1000.0).abs() <= 2.0, "{difference_us}");
        assert_eq!((low_us, high_us), (difference_us, difference_us));
        assert_eq!(
            verdict.describe("tailcut", "Go"),
            "tailcut lower by 1.000 ms [1.000 ms, 1.000 ms]"
        );
        let reversed = compare(&b, &a, 0.5, 1);
        assert!(reversed
            .describe("Go", "tailcut")
            .starts_with("tailcut lower by 1.000 ms"));
    }

    #[test]
    fn trial_to_trial_spread_widens_the_interval_until_it_spans_zero() {
        // Both sides' trials scatter between 1000 and 1900 us around the
        // same centre: no side is reliably lower.
        let a: Vec<_> = [1000, 1900, 1100, 1800, 1500].map(|c| trial(c, 50, 500)).to_vec();
        let b: Vec<_> = [1850, 1050, 1750, 1150, 1450].map(|c| trial(c, 50, 500)).to_vec();
        let verdict = compare(&a, &b, 0.5, 3);
        assert!(
            matches!(verdict, Comparison::NoSignificantDifference { .. }),
            "{verdict:?}"
        );
    }

    #[test]
    fn too_few_samples_for_the_percentile_is_unsupported() {
        // p99.99 needs 100,000 samples; 5 trials of 1000 are 5000.
        let trials: Vec<_> = (0..5).map(|_| trial(1000, 100, 1000)).collect();
        assert_eq!(compare(&trials, &trials, 0.9999, 1), Comparison::Unsupported);
        assert_eq!(compare(&trials, &[], 0.5, 1), Comparison::Unsupported);
    }

    #[test]
    fn one_trial_a_side_gives_the_difference_without_an_interval() {
        let (a, b) = (
            [trial(100, 10, 10_000)],
            [trial(150, 10, 10_000), trial(150, 10, 10_000)],
        );
        let one = compare(&a, &b, 0.5, 1);
        assert_eq!(one, Comparison::OneTrial { difference_us: -50.0 });
        assert_eq!(
            one.describe("tailcut", "Go"),
            "tailcut minus Go: -0.050 ms from one trial per side; no interval (run more rounds)"
        );
    }
}
