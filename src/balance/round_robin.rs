//! Round-robin: each backend in turn, whatever its load. What tailcut did
//! before it knew backends' loads, and what most proxies do by default; kept
//! to compare the load-aware policies against.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::RngCore;
use tokio::time::Instant;

use super::{Balance, Load};

/// Hands out indices `0..len` in turn, shared by every worker thread.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A counter starting at the first backend.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balance for RoundRobin {
    fn pick(&self, loads: &[Arc<Load>], _now: Instant, _rng: &mut dyn RngCore) -> usize {
        // Relaxed: the only requirement is that concurrent callers spread out,
        // not that they observe each other in any order.
        self.next.fetch_add(1, Ordering::Relaxed) % loads.len().max(1)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;

    use super::*;

    #[test]
    fn visits_every_backend_in_turn() {
        let rr = RoundRobin::new();
        let loads: Vec<_> = (0..3)
            .map(|_| Arc::new(Load::new(Duration::from_millis(30), Duration::from_secs(10))))
            .collect();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let picks: Vec<usize> = (0..7).map(|_| rr.pick(&loads, Instant::now(), &mut rng)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }
}
