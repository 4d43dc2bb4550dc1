//! Intended send times, fixed by the schedule before any request is sent.
//!
//! A schedule yields offsets from the run's start. It never looks at what
//! the target does: that is what makes the load open-loop.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Exp};

/// How requests are spaced in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// Evenly spaced: request `i` at exactly `i / rate`.
    Uniform,
    /// A Poisson process: exponential gaps with mean `1 / rate`.
    Poisson,
}

/// The send times of one generator thread.
///
/// With `threads` threads sharing a total `rate`, thread `k` of a uniform
/// schedule takes requests `k, k + threads, k + 2 * threads, ...` of the
/// combined schedule, so together they are exactly uniform. Poisson threads
/// are independent Poisson processes of `rate / threads`, whose sum is a
/// Poisson process of `rate`.
#[derive(Debug, Clone)]
pub struct Schedule {
    arrivals: Arrivals,
    rate: f64,
    threads: u64,
    thread: u64,
    index: u64,
    poisson: Option<(SmallRng, Exp<f64>, f64)>,
}

impl Schedule {
    /// The schedule of thread `thread` (0-based) of `threads`, for a total
    /// `rate` in requests per second. `seed` fixes Poisson gaps, so a run can
    /// be repeated exactly.
    pub fn new(arrivals: Arrivals, rate: f64, threads: u64, thread: u64, seed: u64) -> Self {
        let threads = threads.max(1);
        let poisson = match arrivals {
            Arrivals::Uniform => None,
            Arrivals::Poisson => {
                let per_thread = rate / threads as f64;
                let exp = Exp::new(per_thread).unwrap_or_else(|_| Exp::new(1.0).expect("1.0 is a valid rate"));
                Some((
                    SmallRng::seed_from_u64(seed ^ thread.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                    exp,
                    0.0,
                ))
            }
        };
        Self {
            arrivals,
            rate,
            threads,
            thread,
            index: 0,
            poisson,
        }
    }
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let offset = match (&self.arrivals, &mut self.poisson) {
            (Arrivals::Poisson, Some((rng, exp, at))) => {
                *at += exp.sample(rng);
                *at
            }
            _ => {
                // Computed from the index each time, never accumulated, so
                // rounding cannot drift over a long run.
                let n = self.index * self.threads + self.thread;
                n as f64 / self.rate
            }
        };
        self.index += 1;
        Some(Duration::from_secs_f64(offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_times_are_exact() {
        let times: Vec<Duration> = Schedule::new(Arrivals::Uniform, 1000.0, 1, 0, 0).take(5).collect();
        let expected: Vec<Duration> = (0..5).map(Duration::from_millis).collect();
        assert_eq!(times, expected);
        let late = Schedule::new(Arrivals::Uniform, 1000.0, 1, 0, 0)
            .nth(3_600_000)
            .expect("one hour in");
        assert_eq!(late, Duration::from_secs(3600), "no drift after an hour of requests");
    }

    #[test]
    fn uniform_threads_interleave_into_one_uniform_schedule() {
        let mut all: Vec<Duration> = (0..3)
            .flat_map(|k| Schedule::new(Arrivals::Uniform, 300.0, 3, k, 0).take(100))
            .collect();
        all.sort();
        for (i, t) in all.iter().enumerate() {
            let expected = Duration::from_secs_f64(i as f64 / 300.0);
            let error = t.abs_diff(expected);
            assert!(error < Duration::from_nanos(2), "request {i}: {t:?} vs {expected:?}");
        }
    }

    #[test]
    fn poisson_has_the_mean_rate_and_exponential_gaps() {
        let times: Vec<f64> = Schedule::new(Arrivals::Poisson, 2000.0, 1, 0, 42)
            .take(200_000)
            .map(|d| d.as_secs_f64())
            .collect();
        let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let variance = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        let rate = 1.0 / mean;
        let cv = variance.sqrt() / mean;
        assert!((rate - 2000.0).abs() / 2000.0 < 0.01, "mean rate {rate}");
        assert!(
            (cv - 1.0).abs() < 0.02,
            "coefficient of variation {cv} (exponential: 1)"
        );
    }

    #[test]
    fn poisson_schedules_are_fixed_by_the_seed() {
        let a: Vec<Duration> = Schedule::new(Arrivals::Poisson, 100.0, 2, 1, 7).take(10).collect();
        let b: Vec<Duration> = Schedule::new(Arrivals::Poisson, 100.0, 2, 1, 7).take(10).collect();
        let c: Vec<Duration> = Schedule::new(Arrivals::Poisson, 100.0, 2, 0, 7).take(10).collect();
        assert_eq!(a, b);
        assert_ne!(a, c, "threads draw different gaps");
    }
}
