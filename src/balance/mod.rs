//! Backend selection within an upstream cluster, over each backend's load.
//!
//! Owns the choice of *which* backend serves a request, and the load it
//! chooses by: requests in flight, counted exactly (an [`InFlight`] guard is
//! held from the choice until the response ends, however it ends), and a
//! latency estimate fed by each response's time to headers. It must not
//! open connections or know about HTTP.
//!
//! Policies ([`Balance`]): `peak_ewma` (the default), `least_request`, both
//! the power of two choices ([`p2c`]), and `round_robin`; they choose among
//! the backends that passive outlier ejection ([`Ejector`]) left in.

mod least_request;
mod outlier;
mod peak_ewma;
mod round_robin;

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::time::Instant;

pub use least_request::LeastRequest;
pub use outlier::Ejector;
pub use peak_ewma::PeakEwma;
pub use round_robin::RoundRobin;

use crate::admission::Permit;
use crate::config::BalancePolicy;

/// The RTT a failed exchange (a gateway error, or a 5xx from the backend)
/// is recorded as: a backend answering instant 503s would otherwise look
/// the fastest and draw the most traffic (linkerd records failures the
/// same way). The peak rule makes it count at once; it decays like any
/// sample.
pub const FAILURE_RTT: Duration = Duration::from_secs(1);

/// How a cluster chooses among its backends.
pub trait Balance: Send + Sync + std::fmt::Debug {
    /// The index, in `loads` (one per backend, never empty), of the backend
    /// for the next request; `now` is when it is asked, `rng` the draw.
    fn pick(&self, loads: &[Arc<Load>], now: Instant, rng: &mut dyn RngCore) -> usize;
}

/// The balancer of `policy`.
pub fn for_policy(policy: BalancePolicy) -> Box<dyn Balance> {
    match policy {
        BalancePolicy::PeakEwma => Box::new(PeakEwma),
        BalancePolicy::LeastRequest => Box::new(LeastRequest),
        BalancePolicy::RoundRobin => Box::new(RoundRobin::new()),
    }
}

/// Picks with this thread's generator: one per worker thread, so that
/// drawing takes no lock.
pub fn pick(balance: &dyn Balance, loads: &[Arc<Load>]) -> usize {
    // One backend: nothing to choose, no clock or draw to pay for.
    if loads.len() < 2 {
        return 0;
    }
    thread_local! {
        static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_entropy());
    }
    RNG.with(|rng| balance.pick(loads, Instant::now(), &mut *rng.borrow_mut()))
}

/// The power of two choices: two distinct backends drawn at random out of
/// `len`, the one of lower `cost` wins (the first drawn on a tie). Cheaper
/// than comparing all, and it does not herd every request onto the one
/// backend that just looked least loaded.
pub fn p2c(len: usize, rng: &mut dyn RngCore, mut cost: impl FnMut(usize) -> f64) -> usize {
    if len < 2 {
        return 0;
    }
    let first = rng.gen_range(0..len);
    let mut second = rng.gen_range(0..len - 1);
    if second >= first {
        second += 1;
    }
    if cost(second) < cost(first) {
        second
    } else {
        first
    }
}

/// One backend's load: requests in flight and its latency estimate.
#[derive(Debug)]
pub struct Load {
    in_flight: AtomicUsize,
    estimate: Mutex<Estimate>,
    default_rtt: Duration,
    decay: Duration,
    /// The cluster's ejection state, and this backend's place in it.
    ejection: Option<(Arc<Ejector>, usize)>,
}

/// The latency estimate as last updated.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    /// Seconds; `None` before the first sample.
    rtt: Option<f64>,
    /// When it was last updated.
    at: Instant,
}

impl Load {
    /// A backend with nothing in flight and no sample yet (its estimate is
    /// `default_rtt`), whose estimate forgets with time constant `decay`.
    pub fn new(default_rtt: Duration, decay: Duration) -> Self {
        Load {
            in_flight: AtomicUsize::new(0),
            estimate: Mutex::new(Estimate {
                rtt: None,
                at: Instant::now(),
            }),
            default_rtt,
            decay,
            ejection: None,
        }
    }

    /// [`Load::new`] for backend `index` of a cluster whose failures
    /// `ejector` counts.
    pub fn in_cluster(default_rtt: Duration, decay: Duration, ejector: Arc<Ejector>, index: usize) -> Self {
        Load {
            ejection: Some((ejector, index)),
            ..Load::new(default_rtt, decay)
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            load: self.clone(),
            permit: None,
        }
    }

    /// The latency estimate at `now`, in seconds: the last value decayed
    /// toward zero by the time since (`exp(-elapsed / decay)`), so that a
    /// backend avoided for being slow is tried again in time. Computed
    /// from the stored value and time, never stored back: how often it is
    /// read changes nothing.
    pub fn latency_estimate(&self, now: Instant) -> f64 {
        let estimate = *self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        match estimate.rtt {
            None => self.default_rtt.as_secs_f64(),
            Some(rtt) => rtt * self.weight(now.saturating_duration_since(estimate.at)),
        }
    }

    /// Takes on `from`'s latency estimate: the same backend, kept by a
    /// reload that rebuilt its cluster.
    pub fn inherit(&self, from: &Load) {
        let estimate = *from.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        *self.estimate.lock().unwrap_or_else(PoisonError::into_inner) = estimate;
    }

    /// Peak-EWMA's cost: the latency estimate × (in flight + 1). A backend
    /// that has not answered yet and has nothing in flight costs nothing:
    /// it wins any choice it is drawn in, so one request probes it at once
    /// and its answer sets its estimate (as Finagle probes a backend with
    /// no history). Until then it costs `default_rtt` × (in flight + 1):
    /// neither starved, had the others answered faster than the default,
    /// nor flooded.
    pub fn cost(&self, now: Instant) -> f64 {
        let in_flight = self.in_flight();
        let estimate = *self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        let latency = match estimate.rtt {
            None if in_flight == 0 => return 0.0,
            None => self.default_rtt.as_secs_f64(),
            Some(rtt) => rtt * self.weight(now.saturating_duration_since(estimate.at)),
        };
        latency * (in_flight + 1) as f64
    }

    /// `exp(-elapsed / decay)`: how much of a value `elapsed` old remains.
    fn weight(&self, elapsed: Duration) -> f64 {
        (-elapsed.as_secs_f64() / self.decay.as_secs_f64()).exp()
    }

    /// Feeds one sample: slower than the estimate, it replaces it at once
    /// (the peak); faster, the estimate moves toward it by the weight of
    /// the time since the last update.
    fn observe(&self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_secs_f64();
        let mut estimate = self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(estimate.at);
        let weight = self.weight(elapsed);
        estimate.rtt = Some(match estimate.rtt {
            None => rtt,
            Some(old) => {
                let current = old * weight;
                if rtt >= current {
                    rtt
                } else {
                    current * weight + rtt * (1.0 - weight)
                }
            }
        });
        estimate.at = now;
    }
}

/// A request in flight to a backend; dropping it ends the request, however
/// it ended (answered, failed, abandoned by its client).
#[derive(Debug)]
pub struct InFlight {
    load: Arc<Load>,
    /// The request's place under its cluster's concurrency limit, where
    /// there is one: given back with the guard, and told the latency.
    permit: Option<Permit>,
}

impl InFlight {
    /// Holds `permit` (admission's) as long as the request is in flight.
    pub fn hold(&mut self, permit: Option<Permit>) {
        self.permit = permit;
    }

    /// The backend answered with response headers at `now`, `rtt` after
    /// the request was sent: a latency sample. The request stays in flight
    /// until the guard is dropped (with the response body).
    pub fn answered(&self, rtt: Duration, now: Instant) {
        self.load.observe(rtt, now);
        if let Some(permit) = &self.permit {
            permit.answered(rtt, now);
        }
        if let Some((ejector, index)) = &self.load.ejection {
            ejector.succeeded(*index);
        }
    }

    /// The exchange failed (or the backend answered 5xx): recorded as a
    /// sample of [`FAILURE_RTT`], and as a failure toward ejection.
    pub fn failed(&self) {
        let now = Instant::now();
        self.load.observe(FAILURE_RTT, now);
        if let Some((ejector, index)) = &self.load.ejection {
            ejector.failed(*index, now);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.load.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load() -> Arc<Load> {
        Arc::new(Load::new(Duration::from_millis(30), Duration::from_secs(10)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_sample_counts_at_once_and_fast_ones_pull_it_back_slowly() {
        let load = load();
        assert_eq!(
            load.latency_estimate(Instant::now()),
            0.030,
            "the default, before any sample"
        );
        load.observe(Duration::from_millis(10), Instant::now());
        assert!((load.latency_estimate(Instant::now()) - 0.010).abs() < 1e-9);
        load.observe(Duration::from_millis(50), Instant::now());
        assert!((load.latency_estimate(Instant::now()) - 0.050).abs() < 1e-9, "the peak");
        // A fast sample 1 s later: weight exp(-0.1) of the decayed estimate.
        tokio::time::advance(Duration::from_secs(1)).await;
        load.observe(Duration::from_millis(1), Instant::now());
        let w = (-0.1f64).exp();
        let expected = 0.050 * w * w + 0.001 * (1.0 - w);
        assert!((load.latency_estimate(Instant::now()) - expected).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn the_estimate_decays_with_time_however_often_it_is_read() {
        let (read_often, read_once) = (load(), load());
        read_often.observe(Duration::from_millis(100), Instant::now());
        read_once.observe(Duration::from_millis(100), Instant::now());
        for _ in 0..100 {
            tokio::time::advance(Duration::from_millis(100)).await;
            read_often.latency_estimate(Instant::now());
        }
        let now = Instant::now();
        assert_eq!(read_often.latency_estimate(now), read_once.latency_estimate(now));
        // 10 s is one time constant.
        assert!((read_once.latency_estimate(now) - 0.100 * (-1.0f64).exp()).abs() < 1e-9);
    }

    #[test]
    fn in_flight_counts_every_end() {
        let load = load();
        let answered = load.start();
        let failed = load.start();
        let abandoned = load.start();
        assert_eq!(load.in_flight(), 3);
        answered.answered(Duration::from_millis(1), Instant::now());
        drop(answered);
        failed.failed();
        drop(failed);
        drop(abandoned);
        assert_eq!(load.in_flight(), 0);
        assert!(
            load.latency_estimate(Instant::now()) > 0.5,
            "the failure counts as slow"
        );
    }

    #[test]
    fn p2c_draws_two_distinct_backends_and_keeps_the_cheaper() {
        let mut rng = SmallRng::seed_from_u64(9);
        // Backend 3 is the cheapest: it wins whenever drawn.
        let mut wins = [0usize; 4];
        let mut drawn = [0usize; 4];
        for _ in 0..4000 {
            let mut seen = Vec::new();
            let chosen = p2c(4, &mut rng, |i| {
                seen.push(i);
                if i == 3 {
                    0.0
                } else {
                    1.0
                }
            });
            assert_ne!(seen[0], seen[1], "two distinct backends");
            for &i in &seen {
                drawn[i] += 1;
            }
            wins[chosen] += 1;
        }
        // Drawn in half the pairs (3 of the 6 pairs hold it).
        assert!((1800..2200).contains(&wins[3]), "{wins:?}");
        assert!(drawn.iter().all(|&n| n > 1800), "{drawn:?}");
        assert_eq!(p2c(1, &mut rng, |_| 1.0), 0);
    }
}
