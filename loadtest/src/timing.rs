//! Precise waiting and the generator's own stall monitor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::histograms::new_histogram;

/// The last stretch before a send time is spun, not slept: tokio's timer
/// fires on millisecond ticks, far coarser than the send lag we promise.
const SPIN: Duration = Duration::from_millis(2);

/// Waits until `deadline`: sleeps on the runtime's timer until shortly
/// before, then spins. The spin yields to the runtime on every turn, so the
/// thread's connections keep reading responses while it waits. Returns the
/// time it last read (at or after `deadline`), so callers need not read the
/// clock again: at high rates clock reads are a visible share of the work.
pub async fn wait_until(deadline: Instant) -> Instant {
    let mut now = Instant::now();
    if deadline > now + SPIN {
        tokio::time::sleep_until((deadline - SPIN).into()).await;
        now = Instant::now();
    }
    while now < deadline {
        tokio::task::yield_now().await;
        now = Instant::now();
    }
    now
}

/// A thread that sleeps 1 ms at a time and records by how much each sleep
/// overran: the generator's own hiccups (scheduler, page faults, a noisy
/// neighbour), which would otherwise pass for the target's latency.
pub struct StallMonitor {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Histogram<u64>>,
}

impl StallMonitor {
    /// Starts the monitor thread.
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("stall-monitor".into())
            .spawn(move || {
                let tick = Duration::from_millis(1);
                let mut stalls = new_histogram();
                while !flag.load(Ordering::Relaxed) {
                    let before = Instant::now();
                    std::thread::sleep(tick);
                    let over = before.elapsed().saturating_sub(tick);
                    stalls.saturating_record(micros(over));
                }
                stalls
            })
            .expect("spawn the stall monitor thread");
        Self { stop, thread }
    }

    /// Stops the monitor; returns the oversleep histogram (microseconds).
    pub fn stop(self) -> Histogram<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_else(|_| new_histogram())
    }
}

/// Whole microseconds, at least 1 (a histogram's lowest value).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_until_never_returns_early() {
        for offset in [0u64, 150, 1_500, 4_000] {
            let deadline = Instant::now() + Duration::from_micros(offset);
            let returned = wait_until(deadline).await;
            assert!(returned >= deadline);
            assert!(Instant::now() >= deadline);
        }
    }

    #[test]
    fn stall_monitor_records_one_sample_per_tick() {
        let monitor = StallMonitor::start();
        std::thread::sleep(Duration::from_millis(50));
        let stalls = monitor.stop();
        assert!(stalls.len() >= 10, "only {} ticks in 50 ms", stalls.len());
    }
}
