//! Envoy's adaptive concurrency gradient: once per sample window, the
//! limit is scaled by how far the window's latency (a percentile of the
//! times to response headers) is from the backends' minimum:
//!
//! ```text
//! gradient  = clamp((min_rtt x (1 + buffer)) / sample_rtt, 0.5, 2)
//! new limit = gradient x limit + sqrt(limit)
//! ```
//!
//! so the limit grows while requests are as fast as the backends can be,
//! and shrinks, by half at most per window, as soon as they queue.
//!
//! **The minimum, re-measured without shedding.** Envoy re-measures the
//! minimum by pinning the limit to a handful of requests for a while,
//! which refuses healthy traffic in bursts. Here nothing is pinned: the
//! minimum is the lowest *floor* (the 10th percentile of at least 20
//! latencies, so that one lucky fast answer cannot set it) seen over the
//! last one to two periods of `min_rtt_every`, kept as two rotating
//! minimums. That works because the gradient itself keeps the backends'
//! queues short: in every window some requests meet a backend with a free
//! slot, so the floor is measured from production traffic all the time,
//! and forgetting the old periods lets the baseline rise to a backend that
//! became slower for good (until then its limit stays low: the price of
//! not probing). Only answers feed it: refused, failed, cancelled
//! requests and 5xx answers never do.
//!
//! **It starts at `min_limit`**, so that the first minimum is measured
//! before a queue can form at the backends: started above their capacity,
//! every latency, the floor's included, would carry a queue, and the
//! gradient, comparing queued latencies with a queued minimum, would keep
//! that queue for good. From there it grows by a quarter and its square
//! root per window while latency stays near the minimum (from 3: about 9
//! after two windows, 22 after four).
//!
//! **Idle capacity is not growth.** A window whose requests in flight
//! never reached half the limit does not raise it (as in Netflix's
//! concurrency-limits), so a quiet hour does not leave a limit of
//! thousands for the next overload to bring down.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::Limit;
use crate::config::Concurrency;

/// Latencies kept per window (a uniform sample of them beyond this).
const RESERVOIR: usize = 1024;
/// Latencies a floor is read from.
const FLOOR_SAMPLES: usize = 20;

/// The gradient limit of one cluster.
#[derive(Debug)]
pub struct Gradient {
    min_limit: f64,
    max_limit: f64,
    window: Duration,
    percentile: f64,
    buffer: f64,
    /// Read by every admission.
    limit: AtomicUsize,
    /// The minimum in microseconds, 0 while unknown.
    min_rtt_micros: AtomicU64,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    /// When the current window ends; none before the first answer.
    ends: Option<Instant>,
    /// The window's latencies, microseconds (a reservoir sample).
    samples: Vec<u32>,
    /// Latencies seen in the window (the reservoir's denominator).
    seen: u64,
    /// The most requests in flight at an answer in the window.
    peak_in_flight: usize,
    /// Latencies toward the next floor, across windows when they are few.
    floor: Vec<u32>,
    min: RollingMin,
    limit: f64,
    rng: SmallRng,
}

impl Gradient {
    /// A limit as `config` describes, starting at `min_limit`.
    pub fn new(config: &Concurrency) -> Self {
        let limit = config.min_limit;
        Gradient {
            min_limit: config.min_limit as f64,
            max_limit: config.max_limit as f64,
            window: config.sample_window,
            percentile: config.sample_percentile,
            buffer: f64::from(config.buffer_percent) / 100.0,
            limit: AtomicUsize::new(limit),
            min_rtt_micros: AtomicU64::new(0),
            state: Mutex::new(Window {
                ends: None,
                samples: Vec::with_capacity(RESERVOIR),
                seen: 0,
                peak_in_flight: 0,
                floor: Vec::with_capacity(RESERVOIR),
                min: RollingMin::new(config.min_rtt_every),
                limit: limit as f64,
                rng: SmallRng::from_entropy(),
            }),
        }
    }

    /// The window just ended: the new limit, if the window had answers
    /// and a minimum is known.
    fn update(&self, window: &mut Window, now: Instant) -> Option<usize> {
        if window.floor.len() >= FLOOR_SAMPLES {
            let floor = percentile(&mut window.floor, 10.0);
            window.min.observe(Duration::from_micros(floor.into()), now);
            window.floor.clear();
        }
        let min = window.min.get(now);
        self.min_rtt_micros
            .store(min.map_or(0, |d| d.as_micros().max(1) as u64), Ordering::Relaxed);
        let (Some(min), false) = (min, window.samples.is_empty()) else {
            window.samples.clear();
            return None;
        };
        let sample = f64::from(percentile(&mut window.samples, self.percentile).max(1));
        let gradient = (min.as_micros() as f64 * (1.0 + self.buffer) / sample).clamp(0.5, 2.0);
        let mut limit = gradient * window.limit + window.limit.sqrt();
        if limit > window.limit && (window.peak_in_flight as f64) < window.limit / 2.0 {
            limit = window.limit;
        }
        window.limit = limit.clamp(self.min_limit, self.max_limit);
        window.samples.clear();
        window.seen = 0;
        window.peak_in_flight = 0;
        Some(window.limit as usize)
    }
}

impl Limit for Gradient {
    fn current(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    fn answered(&self, rtt: Duration, in_flight: usize, now: Instant) -> bool {
        let micros = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX);
        let mut window = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut changed = false;
        match window.ends {
            None => window.ends = Some(now + self.window),
            Some(ends) if now >= ends => {
                window.ends = Some(now + self.window);
                if let Some(limit) = self.update(&mut window, now) {
                    changed = self.limit.swap(limit, Ordering::Relaxed) != limit;
                }
            }
            Some(_) => {}
        }
        window.seen += 1;
        let seen = window.seen;
        let Window {
            samples, floor, rng, ..
        } = &mut *window;
        keep(samples, seen, micros, rng);
        keep(floor, floor.len() as u64 + 1, micros, rng);
        window.peak_in_flight = window.peak_in_flight.max(in_flight);
        changed
    }

    fn min_rtt(&self) -> Option<Duration> {
        match self.min_rtt_micros.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }
}

/// Keeps `value`, the `seen`th of its kind, in a uniform sample of at most
/// [`RESERVOIR`] (reservoir sampling).
fn keep(sample: &mut Vec<u32>, seen: u64, value: u32, rng: &mut SmallRng) {
    if sample.len() < RESERVOIR {
        sample.push(value);
    } else {
        let slot = rng.gen_range(0..seen);
        if let Some(kept) = sample.get_mut(slot as usize) {
            *kept = value;
        }
    }
}

/// The `p`th percentile of `values` (not empty), reordering them.
fn percentile(values: &mut [u32], p: f64) -> u32 {
    let index = ((values.len() - 1) as f64 * p / 100.0).round() as usize;
    *values.select_nth_unstable(index.min(values.len() - 1)).1
}

/// The lowest value over the last one to two periods.
#[derive(Debug)]
struct RollingMin {
    every: Duration,
    current: Option<Duration>,
    previous: Option<Duration>,
    rotates: Option<Instant>,
}

impl RollingMin {
    fn new(every: Duration) -> Self {
        RollingMin {
            every,
            current: None,
            previous: None,
            rotates: None,
        }
    }

    fn rotate(&mut self, now: Instant) {
        match self.rotates {
            None => self.rotates = Some(now + self.every),
            Some(at) if now >= at => {
                // A period with nothing in it forgets everything before it.
                let skipped = now >= at + self.every;
                self.previous = if skipped { None } else { self.current };
                self.current = None;
                self.rotates = Some(now + self.every);
            }
            Some(_) => {}
        }
    }

    fn observe(&mut self, value: Duration, now: Instant) {
        self.rotate(now);
        self.current = Some(self.current.map_or(value, |c| c.min(value)));
    }

    fn get(&mut self, now: Instant) -> Option<Duration> {
        self.rotate(now);
        match (self.current, self.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Concurrency {
        Concurrency {
            enabled: true,
            ..Concurrency::default()
        }
    }

    const WINDOW: Duration = Duration::from_millis(100);

    /// Feeds one window of `n` answers of `rtt` with `in_flight` requests
    /// in flight, then starts the next window: the limit after it.
    async fn window(limit: &Gradient, n: usize, rtt: Duration, in_flight: usize) -> usize {
        for _ in 0..n {
            limit.answered(rtt, in_flight, Instant::now());
        }
        tokio::time::advance(WINDOW).await;
        limit.answered(rtt, in_flight, Instant::now());
        limit.current()
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_grows_at_the_minimum_and_shrinks_as_latency_rises() {
        let limit = Gradient::new(&config());
        assert_eq!(limit.current(), 3, "the start: min_limit");
        let fast = Duration::from_millis(5);
        // At the minimum (known from the first window on): gradient 1.25,
        // plus sqrt(limit).
        let mut last = 3;
        for _ in 0..4 {
            let next = window(&limit, 50, fast, last).await;
            let expected = (last as f64 * 1.25 + (last as f64).sqrt()) as usize;
            assert!(next.abs_diff(expected) <= 1, "{last} -> {next}, expected {expected}");
            last = next;
            assert_eq!(limit.min_rtt(), Some(fast));
        }
        // Latency four times the minimum: halved (the clamp), plus sqrt.
        let slow = Duration::from_millis(20);
        let next = window(&limit, 50, slow, last).await;
        let expected = (last as f64 * 0.5 + (last as f64).sqrt()) as usize;
        assert!(next.abs_diff(expected) <= 1, "{last} -> {next}, expected {expected}");
        // It keeps shrinking while latency stays high, towards the point
        // where halving and sqrt balance (4), never below min_limit.
        for _ in 0..20 {
            last = window(&limit, 50, slow, last).await;
        }
        assert!((3..=5).contains(&last), "{last}");
        // And grows again once latency falls back.
        let grown = window(&limit, 50, fast, last).await;
        assert!(grown > last, "{last} -> {grown}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_unused_does_not_grow_and_bounds_hold() {
        let limit = Gradient::new(&Concurrency {
            min_limit: 20,
            max_limit: 30,
            ..config()
        });
        let fast = Duration::from_millis(5);
        // Fast answers, but never more than 5 in flight: no growth.
        for _ in 0..5 {
            assert_eq!(window(&limit, 50, fast, 5).await, 20);
        }
        // Used: it grows, up to max_limit.
        for _ in 0..10 {
            window(&limit, 50, fast, 30).await;
        }
        assert_eq!(limit.current(), 30);
    }

    #[tokio::test(start_paused = true)]
    async fn one_lucky_answer_does_not_set_the_minimum_and_old_minimums_are_forgotten() {
        let limit = Gradient::new(&Concurrency {
            min_rtt_every: Duration::from_secs(1),
            ..config()
        });
        let usual = Duration::from_millis(10);
        limit.answered(Duration::from_micros(100), 1, Instant::now());
        window(&limit, 40, usual, 20).await;
        assert_eq!(limit.min_rtt(), Some(usual), "the floor, not the lucky one");
        // The backend becomes slower for good: within two periods the
        // minimum is the new floor.
        let slower = Duration::from_millis(30);
        for _ in 0..25 {
            window(&limit, 40, slower, 20).await;
        }
        assert_eq!(limit.min_rtt(), Some(slower));
    }

    #[test]
    fn percentiles_of_a_sample() {
        let mut values: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&mut values, 90.0), 90);
        assert_eq!(percentile(&mut values, 10.0), 11);
        assert_eq!(percentile(&mut [7], 50.0), 7);
    }
}
