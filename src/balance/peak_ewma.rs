//! Peak-EWMA: of two backends drawn at random, the one whose latency
//! estimate times (requests in flight + 1) is lower, as linkerd and Finagle
//! balance. The estimate ([`Load::latency_estimate`]) rises at once with a
//! slow response and falls back slowly; a failure counts as a very slow
//! response, so a backend that fails fast does not look cheap.

use std::sync::Arc;

use rand::RngCore;
use tokio::time::Instant;

use super::{p2c, Balance, Load};

/// Power of two choices over latency estimate × (in flight + 1).
#[derive(Debug, Default)]
pub struct PeakEwma;

impl Balance for PeakEwma {
    fn pick(&self, loads: &[Arc<Load>], now: Instant, rng: &mut dyn RngCore) -> usize {
        p2c(loads.len(), rng, |i| loads[i].cost(now))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;

    use super::*;

    fn loads(n: usize) -> Vec<Arc<Load>> {
        (0..n)
            .map(|_| Arc::new(Load::new(Duration::from_millis(30), Duration::from_secs(10))))
            .collect()
    }

    /// One request at a time (concurrency 1): in-flight counts are all
    /// zero when a choice is made, so only the latency term can tell a slow
    /// backend from the fast ones.
    #[tokio::test(start_paused = true)]
    async fn at_concurrency_one_a_slow_backend_gets_few_requests() {
        let loads = loads(5);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
        let mut served = [0usize; 5];
        for _ in 0..2000 {
            let i = PeakEwma.pick(&loads, Instant::now(), &mut rng);
            served[i] += 1;
            let rtt = if i == 0 {
                Duration::from_millis(50)
            } else {
                Duration::from_millis(1)
            };
            let request = loads[i].start();
            tokio::time::advance(rtt).await;
            request.answered(rtt, Instant::now());
        }
        // Round-robin would give it 400.
        assert!(served[0] < 40, "the slow backend served {served:?}");
        assert!(served[1..].iter().all(|&n| n > 300), "{served:?}");
    }

    /// A backend joining four that answer in 1 ms gets a first request at
    /// once (not starved behind its 30 ms default), and then no more than
    /// its answers earn (not flooded).
    #[tokio::test(start_paused = true)]
    async fn a_cold_backend_is_probed_at_once_and_not_flooded() {
        let loads = loads(5);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
        let warm = &loads[..4];
        for load in warm {
            load.start().answered(Duration::from_millis(1), Instant::now());
        }
        // Ten requests at a time, held while the next choices are made.
        let mut cold = 0;
        let mut first_pick = None;
        for round in 0..20 {
            let mut held = Vec::new();
            for _ in 0..10 {
                let i = PeakEwma.pick(&loads, Instant::now(), &mut rng);
                if i == 4 {
                    cold += 1;
                    first_pick.get_or_insert(round);
                }
                held.push((i, loads[i].start()));
            }
            tokio::time::advance(Duration::from_millis(1)).await;
            for (_, request) in held {
                request.answered(Duration::from_millis(1), Instant::now());
            }
        }
        assert_eq!(first_pick, Some(0), "probed in the first round");
        // An even share would be 40 of 200.
        assert!((1..=80).contains(&cold), "the cold backend served {cold} of 200");
    }

    /// A backend that answers every request with a fast failure draws no
    /// more than its share: the failure counts as a slow answer.
    #[tokio::test(start_paused = true)]
    async fn a_backend_failing_fast_loses_traffic() {
        let loads = loads(3);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let mut served = [0usize; 3];
        for _ in 0..1500 {
            let i = PeakEwma.pick(&loads, Instant::now(), &mut rng);
            served[i] += 1;
            let request = loads[i].start();
            if i == 2 {
                tokio::time::advance(Duration::from_micros(100)).await;
                request.failed();
            } else {
                tokio::time::advance(Duration::from_millis(2)).await;
                request.answered(Duration::from_millis(2), Instant::now());
            }
        }
        assert!(served[2] < 100, "the failing backend served {served:?}");
    }
}
