//! The retry budget: how many extra attempts (retries and hedges) a cluster
//! takes, whoever asks. Like Finagle's and linkerd's, it is a share of the
//! requests over a window (`percent`), plus a reserve refilled at
//! `min_per_second` so that quiet routes may still retry, plus a cap on
//! extra attempts at once (`max_concurrent`), which counts a retry from
//! the moment it is allowed, through its backoff, to its end: a burst of
//! failures cannot all retry at once.
//!
//! The reserve is a rate with one second's worth of burst, not a count per
//! window (Finagle's `minRetriesPerSec` x TTL): a count per window comes
//! back whole as the window slides past the burst that spent it, so over
//! a window's length the reserve could be spent twice. With a rate, over
//! any span of T seconds the extra attempts are at most `percent` of the
//! requests plus `min_per_second` x (T + 1).
//!
//! Counting is lock-free: the window is a ring of ten slots of atomics, one
//! per tenth of it, cleared as the ring comes round. A slot cleared while
//! another thread counts into it may lose that one count; a budget is an
//! estimate, and a lock per request would cost more than the error.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config;

/// Counts of two kinds of events over a sliding window.
#[derive(Debug)]
pub struct Window {
    slots: [Slot; SLOTS],
    /// The clock's zero.
    start: Instant,
    /// The width of one slot, in microseconds.
    slot_us: u64,
}

const SLOTS: usize = 10;

#[derive(Debug, Default)]
struct Slot {
    /// Which turn of the ring it counts (its start over `slot_us`), plus one.
    turn: AtomicU64,
    counts: [AtomicU64; 2],
}

/// What a [`Window`] counts.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// A request (its first attempt).
    Request = 0,
    /// An extra attempt.
    Extra = 1,
}

impl Window {
    /// A window of `length`, counted from `start`.
    pub fn new(length: Duration, start: Instant) -> Self {
        Window {
            slots: Default::default(),
            start,
            slot_us: (length.as_micros() as u64 / SLOTS as u64).max(1),
        }
    }

    fn turn(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_micros() as u64 / self.slot_us + 1
    }

    /// Counts one `event` at `now`.
    pub fn add(&self, event: Event, now: Instant) {
        let turn = self.turn(now);
        let slot = &self.slots[(turn % SLOTS as u64) as usize];
        let seen = slot.turn.load(Ordering::Acquire);
        if seen != turn
            && slot
                .turn
                .compare_exchange(seen, turn, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for count in &slot.counts {
                count.store(0, Ordering::Release);
            }
        }
        slot.counts[event as usize].fetch_add(1, Ordering::AcqRel);
    }

    /// Whether one more extra attempt at `now` keeps the extras within
    /// `percent` of the requests over the window.
    pub fn within_share(&self, percent: u64, now: Instant) -> bool {
        (self.sum(Event::Extra, now) + 1) * 100 <= self.sum(Event::Request, now) * percent
    }

    /// The `event`s counted over the window that ends at `now`.
    pub fn sum(&self, event: Event, now: Instant) -> u64 {
        let turn = self.turn(now);
        self.slots
            .iter()
            .filter(|slot| {
                let seen = slot.turn.load(Ordering::Acquire);
                seen + (SLOTS as u64) > turn && seen <= turn
            })
            .map(|slot| slot.counts[event as usize].load(Ordering::Acquire))
            .sum()
    }
}

/// A cluster's budget of extra attempts.
#[derive(Debug)]
pub struct Budget {
    window: Window,
    /// Extra attempts allowed per request, in percent.
    percent: u64,
    /// The reserve: when its next token is due, microseconds since the
    /// window's start (a token is available while this is at most one
    /// second ahead of now).
    reserve_due: AtomicU64,
    /// Microseconds between reserve tokens; `None`: no reserve.
    reserve_every: Option<u64>,
    in_flight: Arc<AtomicUsize>,
    max_concurrent: usize,
}

/// An extra attempt the budget allowed; it counts against `max_concurrent`
/// until dropped.
#[derive(Debug)]
pub struct Extra {
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Extra {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Budget {
    /// The budget `config` describes, its window starting now.
    pub fn new(config: &config::Budget) -> Self {
        Budget {
            window: Window::new(config.window, Instant::now()),
            percent: u64::from(config.percent),
            reserve_due: AtomicU64::new(0),
            reserve_every: (config.min_per_second > 0).then(|| 1_000_000 / u64::from(config.min_per_second)),
            in_flight: Arc::default(),
            max_concurrent: config.max_concurrent.get(),
        }
    }

    /// Counts a request that may be retried or hedged (only those deposit:
    /// a route without either policy pays nothing for the budget).
    pub fn deposit(&self, now: Instant) {
        self.window.add(Event::Request, now);
    }

    /// An extra attempt, if the budget has room for one now; counted as
    /// spent when it does.
    pub fn withdraw(&self, now: Instant) -> Option<Extra> {
        if !self.window.within_share(self.percent, now) && !self.take_reserve(now) {
            return None;
        }
        let previous = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let extra = Extra {
            in_flight: self.in_flight.clone(),
        };
        if previous >= self.max_concurrent {
            return None;
        }
        self.window.add(Event::Extra, now);
        Some(extra)
    }
}

impl Budget {
    /// Takes a token from the reserve, if one is due by `now` (the reserve
    /// refills at `min_per_second`, and holds at most one second's worth).
    /// A virtual-scheduling bucket (GCRA): one atomic, no lock.
    fn take_reserve(&self, now: Instant) -> bool {
        let Some(every) = self.reserve_every else {
            return false;
        };
        let now = now.saturating_duration_since(self.window.start).as_micros() as u64;
        // How far ahead of now the next token may be due: one second's
        // worth of tokens at once, no more.
        let tolerance = 1_000_000u64.saturating_sub(every);
        self.reserve_due
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |due| {
                let due = due.max(now);
                (due <= now + tolerance).then_some(due + every)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;

    fn budget(percent: u32, min_per_second: u32, max_concurrent: usize) -> Budget {
        Budget::new(&config::Budget {
            percent,
            window: Duration::from_secs(10),
            min_per_second,
            max_concurrent: NonZeroUsize::new(max_concurrent).expect("non-zero"),
        })
    }

    #[test]
    fn extras_are_a_share_of_requests_plus_a_reserve() {
        let budget = budget(20, 10, 1000);
        let start = budget.window.start;
        for _ in 0..100 {
            budget.deposit(start);
        }
        // 20% of 100, plus the reserve's one second's worth at 10 per second.
        let allowed: Vec<Extra> = std::iter::from_fn(|| budget.withdraw(start)).take(1000).collect();
        assert_eq!(allowed.len(), 30);
        // The reserve refills at 10 per second, and never holds more than
        // one second's worth: 5 after half a second, 10 after five.
        let later = |ms| start + Duration::from_millis(ms);
        let taken = |at| std::iter::from_fn(|| budget.withdraw(at)).take(1000).count();
        assert_eq!(taken(later(500)), 5);
        assert_eq!(taken(later(5500)), 10);
    }

    #[test]
    fn a_window_long_failure_gets_its_share_and_the_reserve_rate_no_more() {
        // 100 requests a second for 30 s, every one failing and asking for a
        // retry: 20% of them, plus 10 per second, plus one second's burst.
        let budget = budget(20, 10, 1000);
        let start = budget.window.start;
        let mut allowed = 0;
        for ms in (0..30_000).step_by(10) {
            let now = start + Duration::from_millis(ms);
            budget.deposit(now);
            allowed += usize::from(budget.withdraw(now).is_some());
        }
        assert!(allowed <= 3000 / 5 + 10 * 31, "{allowed}");
        assert!(allowed >= 3000 / 5, "{allowed}");
    }

    #[test]
    fn a_window_forgets_what_is_older_than_it() {
        let budget = budget(100, 0, 1000);
        let start = budget.window.start;
        for _ in 0..10 {
            budget.deposit(start);
        }
        assert_eq!(budget.window.sum(Event::Request, start + Duration::from_secs(9)), 10);
        assert_eq!(budget.window.sum(Event::Request, start + Duration::from_secs(11)), 0);
        assert!(budget.withdraw(start + Duration::from_secs(11)).is_none());
        // A slot reused on the ring's next turn starts from zero.
        budget.deposit(start + Duration::from_secs(10));
        assert_eq!(budget.window.sum(Event::Request, start + Duration::from_secs(10)), 1);
    }

    #[test]
    fn extras_at_once_are_capped_until_they_end() {
        let budget = budget(100, 100, 2);
        let now = budget.window.start;
        let first = budget.withdraw(now).expect("room");
        let _second = budget.withdraw(now).expect("room");
        assert!(budget.withdraw(now).is_none(), "a third at once");
        drop(first);
        assert!(budget.withdraw(now).is_some(), "room again once one ended");
    }
}
