//! Least request: of two backends drawn at random, the one with fewer
//! requests in flight (HAProxy's `leastconn` and nginx's `least_conn`
//! compare all backends; two random ones avoid herding onto the one that
//! just became least loaded).
//!
//! It knows nothing of latency: an idle slow backend still gets its share,
//! and one that fails fast empties its queue fastest and draws more
//! requests. `peak_ewma` is the policy that reacts to both.

use std::sync::Arc;

use rand::RngCore;
use tokio::time::Instant;

use super::{p2c, Balance, Load};

/// Power of two choices over requests in flight.
#[derive(Debug, Default)]
pub struct LeastRequest;

impl Balance for LeastRequest {
    fn pick(&self, loads: &[Arc<Load>], _now: Instant, rng: &mut dyn RngCore) -> usize {
        p2c(loads.len(), rng, |i| loads[i].in_flight() as f64)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;

    use super::*;

    #[test]
    fn the_backend_with_fewer_requests_in_flight_wins() {
        let loads: Vec<_> = (0..2)
            .map(|_| Arc::new(Load::new(Duration::from_millis(30), Duration::from_secs(10))))
            .collect();
        let _busy = [loads[0].start(), loads[0].start()];
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for _ in 0..20 {
            assert_eq!(LeastRequest.pick(&loads, Instant::now(), &mut rng), 1);
        }
    }
}
