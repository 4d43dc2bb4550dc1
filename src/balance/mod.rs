//! Backend selection within an upstream cluster.
//!
//! Owns the choice of *which* backend serves a request; it must not open
//! connections or know about HTTP. Round-robin for now; health state and
//! load-aware strategies belong here too when they arrive.

use std::sync::atomic::{AtomicUsize, Ordering};

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

    /// The index of the next backend out of `len` (which must be non-zero;
    /// config validation guarantees every cluster has a backend).
    pub fn pick(&self, len: usize) -> usize {
        // Relaxed: the only requirement is that concurrent callers spread out,
        // not that they observe each other in any order.
        self.next.fetch_add(1, Ordering::Relaxed) % len.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visits_every_backend_in_turn() {
        let rr = RoundRobin::new();
        let picks: Vec<usize> = (0..7).map(|_| rr.pick(3)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }
}
