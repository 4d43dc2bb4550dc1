//! Hedged requests: when a request's first attempt has no response headers
//! after the route's hedge delay, a second copy goes to another backend;
//! the first response headers win, and the other attempt is dropped, which
//! closes its connection (never returned to the pool mid-response).
//!
//! The delay is fixed, or `auto`: a percentile of the route's first
//! attempts' times to response headers over the last few seconds, clamped
//! to `min_delay..max_delay`, and no hedging at all before `min_samples`.
//! Only first attempts are timed, each from its own start, and a first
//! attempt that lost to its hedge is recorded as at least the time it had
//! waited when it lost. Timing winners instead (as tower's hedge does) would
//! record fast hedges, pull the percentile down, hedge earlier, and so on:
//! hedging would bias its own delay. Failed attempts and 5xx answers are
//! not timed either: fast failures would pull the delay down as well.
//!
//! Hedges are bounded twice: at most `max_percent` of the route's requests
//! over ten seconds, and by the cluster's budget, shared with retries. Under
//! a sudden slowdown of every backend the delay trails behind and nearly
//! every request would qualify; the bounds hold the rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use super::replay::{Attempt, Ended, Replay, Tried};
use super::Shared;
use crate::config::{self, HedgeDelay};
use crate::metrics::Marks;
use crate::upstream::budget::{Event, Extra, Window};

/// How long the samples the auto delay is computed from are kept: the
/// delay covers the last one to two of these.
const ROTATE: Duration = Duration::from_secs(5);

/// The window `max_percent` counts over.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Recompute the percentile after this many samples (a percentile over
/// the histogram reads all its buckets: not for every request).
const REFRESH_EVERY: u32 = 16;

/// A route's hedging: its delay, and the count that bounds its rate.
#[derive(Debug)]
pub struct Hedging {
    delay: HedgeDelay,
    max_percent: u64,
    /// The delay now, microseconds; 0 while too few samples were timed.
    delay_us: AtomicU64,
    samples: Mutex<Samples>,
    rate: Window,
    gauge: Gauge<f64, AtomicU64>,
}

/// The first attempts' times to response headers, microseconds.
#[derive(Debug)]
struct Samples {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    /// Both, merged when the percentile is read (kept to reuse its memory).
    merged: Histogram<u64>,
    rotated: Instant,
    since_refresh: u32,
}

fn histogram() -> Histogram<u64> {
    // 1 us to 60 s at two significant digits (1%).
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("constant bounds that hdrhistogram accepts")
}

impl Hedging {
    /// Hedging as `config` sets it; `gauge` shows the delay.
    pub fn new(config: &config::Hedge, gauge: Gauge<f64, AtomicU64>) -> Self {
        let fixed = match config.delay {
            HedgeDelay::Fixed(delay) => delay.as_micros() as u64,
            HedgeDelay::Auto { .. } => 0,
        };
        gauge.set(fixed as f64 / 1e6);
        Hedging {
            delay: config.delay.clone(),
            max_percent: u64::from(config.max_percent),
            delay_us: AtomicU64::new(fixed),
            samples: Mutex::new(Samples {
                current: histogram(),
                previous: histogram(),
                merged: histogram(),
                rotated: Instant::now(),
                since_refresh: 0,
            }),
            rate: Window::new(RATE_WINDOW, Instant::now()),
            gauge,
        }
    }

    /// The delay now; `None` while the auto delay has too few samples.
    pub fn delay(&self) -> Option<Duration> {
        match self.delay_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Counts a request that may be hedged.
    fn request(&self, now: Instant) {
        self.rate.add(Event::Request, now);
    }

    /// Whether one more hedge stays within `max_percent` of the requests;
    /// counts it if so.
    fn take(&self, now: Instant) -> bool {
        let allowed = self.rate.within_share(self.max_percent, now);
        if allowed {
            self.rate.add(Event::Extra, now);
        }
        allowed
    }

    /// Records a first attempt's time to response headers (or, for one that
    /// lost, the time it had waited), for the auto delay.
    pub fn record(&self, elapsed: Duration, now: Instant) {
        let HedgeDelay::Auto {
            percentile,
            min_delay,
            max_delay,
            min_samples,
        } = self.delay
        else {
            return;
        };
        let mut samples = self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let samples = &mut *samples;
        let since = now.saturating_duration_since(samples.rotated);
        if since >= ROTATE {
            std::mem::swap(&mut samples.current, &mut samples.previous);
            samples.current.reset();
            if since >= ROTATE * 2 {
                // Quiet for a whole period: what came before it is stale.
                samples.previous.reset();
            }
            samples.rotated = now;
            samples.since_refresh = REFRESH_EVERY;
        }
        samples.current.saturating_record((elapsed.as_micros() as u64).max(1));
        samples.since_refresh += 1;
        if samples.since_refresh < REFRESH_EVERY {
            return;
        }
        samples.since_refresh = 0;
        samples.merged.reset();
        // Same bounds: adding cannot fail.
        let _ = samples.merged.add(&samples.previous);
        let _ = samples.merged.add(&samples.current);
        let delay = if samples.merged.len() < min_samples {
            0
        } else {
            let at = samples.merged.value_at_quantile(percentile / 100.0);
            at.clamp(min_delay.as_micros() as u64, max_delay.as_micros() as u64)
        };
        self.delay_us.store(delay, Ordering::Relaxed);
        self.gauge.set(delay as f64 / 1e6);
    }
}

/// Whether an attempt's end settles the request: response headers that the
/// route would not retry.
fn settles(ended: &Ended) -> bool {
    matches!(ended.tried, Tried::Answered { .. }) && ended.reason.is_none()
}

/// Whether an answer is one the delay is timed from: not a 5xx.
fn timed(ended: &Ended) -> bool {
    matches!(&ended.tried, Tried::Answered { response, .. } if !response.status().is_server_error())
}

/// The first attempt of a request that may be hedged: waits the route's
/// hedge delay for `primary`'s response headers, then, if the bounds allow,
/// sends a hedge to another backend and takes whichever answers first.
/// Returns how the request ended, and the backends tried.
pub(super) async fn first(
    shared: &Shared,
    replay: &mut Replay,
    hedging: &Hedging,
    mut primary: Attempt,
    marks: &mut Marks,
    tried: &mut Vec<usize>,
) -> Ended {
    let started = Instant::from_std(primary.sent);
    hedging.request(started);
    let finish = |ended: Ended, hedging: &Hedging| {
        if timed(&ended) {
            let now = Instant::now();
            hedging.record(now.saturating_duration_since(started), now);
        }
        ended
    };
    let Some(delay) = hedging.delay() else {
        return finish(replay.finish(shared, primary).await, hedging);
    };
    tokio::select! {
        biased;
        outcome = &mut primary => return finish(replay.ended(shared, &primary, outcome), hedging),
        () = tokio::time::sleep_until(started + delay) => {}
    }
    // Still waiting: hedge, if every bound allows it; the budget's
    // allowance is held until the race ends.
    let Some((hedge, _extra)) = start_hedge(shared, replay, hedging, tried) else {
        return finish(replay.finish(shared, primary).await, hedging);
    };
    marks.hedged = true;
    replay.policy.counters.hedges.inc();

    // Both in flight: the first to settle wins, and the other is dropped.
    // An attempt that failed, or answered what the route would retry, is
    // kept aside while the other still runs.
    let mut primary = Some(primary);
    let mut hedge = Some(hedge);
    let mut aside: Option<Ended> = None;
    loop {
        tokio::select! {
            (attempt, outcome) = settle(&mut primary), if primary.is_some() => {
                let ended = finish(replay.ended(shared, &attempt, outcome), hedging);
                if settles(&ended) || hedge.is_none() {
                    return ended;
                }
                aside = Some(ended);
            }
            (attempt, outcome) = settle(&mut hedge), if hedge.is_some() => {
                let ended = replay.ended(shared, &attempt, outcome);
                if settles(&ended) {
                    if primary.is_some() {
                        // The first attempt lost: it is timed as at least
                        // the time it waited.
                        let now = Instant::now();
                        hedging.record(now.saturating_duration_since(started), now);
                    }
                    marks.hedge_won = true;
                    replay.policy.counters.hedge_wins.inc();
                    return ended;
                }
                if primary.is_none() {
                    return aside.unwrap_or(ended);
                }
                aside = Some(ended);
            }
        }
    }
}

/// Sends a hedge to a backend not tried yet, if the deadline, the route's
/// `max_percent`, the cluster's concurrency limit and its budget allow it;
/// the hedge, and the budget's allowance for it.
fn start_hedge(
    shared: &Shared,
    replay: &mut Replay,
    hedging: &Hedging,
    tried: &mut Vec<usize>,
) -> Option<(Attempt, Extra)> {
    let now = Instant::now();
    let cluster = &shared.clusters[replay.cluster];
    if replay.deadline.is_some_and(|deadline| deadline <= now) || !hedging.take(now) {
        return None;
    }
    let permit = cluster.extra_permit()?;
    let Some(extra) = cluster.budget.withdraw(now) else {
        cluster.counters.budget_refused();
        return None;
    };
    let picked = cluster.pick_other(tried, false)?.admitted(permit);
    tried.push(picked.index);
    match replay.attempt(shared, picked) {
        Ok(hedge) => Some((hedge, extra)),
        Err(error) => {
            // Its head could not be encoded: the first attempt carries on alone.
            tracing::debug!(%error, "hedge not sent");
            None
        }
    }
}

/// Waits for the attempt in `slot` to end, and takes it out; never ends for
/// an empty slot (the caller's guard keeps it from being polled then).
async fn settle(
    slot: &mut Option<Attempt>,
) -> (
    Attempt,
    Result<(http::Response<()>, crate::upstream::Exchange), crate::upstream::UpstreamError>,
) {
    let Some(attempt) = slot.as_mut() else {
        return std::future::pending().await;
    };
    let outcome = attempt.await;
    match slot.take() {
        Some(attempt) => (attempt, outcome),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto(percentile: f64, min_samples: u64) -> Hedging {
        let config = config::Hedge {
            delay: HedgeDelay::Auto {
                percentile,
                min_delay: Duration::from_millis(2),
                max_delay: Duration::from_millis(500),
                min_samples,
            },
            max_percent: 10,
        };
        Hedging::new(&config, Gauge::default())
    }

    #[test]
    fn no_delay_before_min_samples_then_the_percentile_clamped() {
        let hedging = auto(90.0, 100);
        let now = Instant::now();
        for _ in 0..96 {
            hedging.record(Duration::from_millis(1), now);
        }
        assert_eq!(hedging.delay(), None, "96 samples");
        for i in 0..16 {
            let slow = if i < 12 { 40 } else { 1 };
            hedging.record(Duration::from_millis(slow), now);
        }
        // 112 samples, 12 of them 40 ms: the 90th percentile is about 40 ms.
        let delay = hedging.delay().expect("a delay");
        assert!((39..=41).contains(&delay.as_millis()), "{delay:?}");

        let fast = auto(50.0, 16);
        for _ in 0..16 {
            fast.record(Duration::from_micros(100), now);
        }
        assert_eq!(fast.delay(), Some(Duration::from_millis(2)), "clamped to min_delay");
    }

    #[test]
    fn samples_older_than_two_rotations_are_forgotten() {
        let hedging = auto(50.0, 16);
        let start = Instant::now();
        for _ in 0..32 {
            hedging.record(Duration::from_millis(100), start);
        }
        let later = start + ROTATE * 2 + Duration::from_millis(1);
        for _ in 0..32 {
            hedging.record(Duration::from_millis(10), later + ROTATE);
        }
        let delay = hedging.delay().expect("a delay");
        assert!(delay < Duration::from_millis(20), "{delay:?}");
    }

    #[test]
    fn hedges_stay_within_their_share_of_requests() {
        let hedging = auto(50.0, 16);
        let now = Instant::now();
        for _ in 0..100 {
            hedging.request(now);
        }
        let taken = (0..100).filter(|_| hedging.take(now)).count();
        assert_eq!(taken, 10);
    }
}
