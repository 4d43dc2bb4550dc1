//! CoDel's test for a standing queue (RFC 8289, as folly applies it to
//! request queues): a queue is a problem not when it is long but when it
//! does not drain, that is when every request leaving it for a whole
//! `interval` has waited longer than `target`. A burst that drains within
//! the interval never counts.
//!
//! Leaving overload needs its own test. While overloaded, admission lets
//! almost nobody wait (see [`super`]), so the delays CoDel reads would all
//! be short and would end the overload at once, to start it again one
//! interval later with a queue built from scratch. Overload ends instead
//! after a whole interval in which no request found the limit reached:
//! demand fitted under it again.

use std::time::Duration;

use tokio::time::Instant;

/// Whether a queue stands, from the delays of requests as they leave it.
#[derive(Debug)]
pub struct Codel {
    target: Duration,
    interval: Duration,
    overloaded: bool,
    /// While not overloaded: when the delays, above `target` since one
    /// interval before, make it overloaded if they still are.
    first_above: Option<Instant>,
    /// While overloaded: when the current interval ends.
    interval_ends: Instant,
    /// While overloaded: whether some request found the limit reached in
    /// the current interval.
    waited: bool,
}

impl Codel {
    /// Not overloaded, with `target` and `interval` as configured.
    pub fn new(target: Duration, interval: Duration, now: Instant) -> Self {
        Codel {
            target,
            interval,
            overloaded: false,
            first_above: None,
            interval_ends: now,
            waited: false,
        }
    }

    /// The queueing delay CoDel tolerates.
    pub fn target(&self) -> Duration {
        self.target
    }

    /// A request left the queue at `now` after waiting `delay` (zero when
    /// it was admitted without waiting).
    pub fn left(&mut self, delay: Duration, now: Instant) {
        if self.overloaded {
            return;
        }
        if delay <= self.target {
            self.first_above = None;
            return;
        }
        match self.first_above {
            None => self.first_above = Some(now + self.interval),
            Some(deadline) if now >= deadline => {
                self.overloaded = true;
                self.interval_ends = now + self.interval;
                self.waited = true;
            }
            Some(_) => {}
        }
    }

    /// A request found the limit reached at `now` (it waits or is refused).
    pub fn waited(&mut self, now: Instant) {
        self.overloaded(now);
        self.waited = true;
    }

    /// Whether the queue is overloaded at `now`; an interval that passed
    /// with nobody waiting ends the overload.
    pub fn overloaded(&mut self, now: Instant) -> bool {
        if self.overloaded && now >= self.interval_ends {
            if self.waited {
                self.waited = false;
                self.interval_ends = now + self.interval;
            } else {
                self.overloaded = false;
                self.first_above = None;
            }
        }
        self.overloaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Duration = Duration::from_millis(5);
    const INTERVAL: Duration = Duration::from_millis(100);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_that_drains_within_the_interval_is_not_overload() {
        let start = Instant::now();
        let mut codel = Codel::new(TARGET, INTERVAL, start);
        // 90 ms of long waits, then one request that waited little.
        for t in (0..90).step_by(5) {
            codel.left(ms(20), start + ms(t));
        }
        codel.left(ms(1), start + ms(95));
        // Long waits again: the interval counts afresh from here.
        for t in (100..190).step_by(5) {
            codel.left(ms(20), start + ms(t));
            assert!(!codel.overloaded(start + ms(t)), "at {t} ms");
        }
    }

    #[test]
    fn a_queue_standing_a_whole_interval_is_overload_until_an_interval_without_waiting() {
        let start = Instant::now();
        let mut codel = Codel::new(TARGET, INTERVAL, start);
        for t in (0..100).step_by(10) {
            codel.left(ms(6), start + ms(t));
            assert!(!codel.overloaded(start + ms(t)), "not yet at {t} ms");
        }
        codel.left(ms(6), start + ms(100));
        assert!(codel.overloaded(start + ms(100)), "one interval above the target");
        // Short delays do not end it while requests keep finding the limit reached.
        for t in (110..400).step_by(10) {
            codel.left(ms(0), start + ms(t));
            codel.waited(start + ms(t));
            assert!(codel.overloaded(start + ms(t)), "still at {t} ms");
        }
        // Nobody waits from 400 ms: the interval running then still saw
        // waiting; the next one, to about 500 ms, saw none.
        assert!(codel.overloaded(start + ms(460)));
        assert!(!codel.overloaded(start + ms(600)), "an interval without waiting");
        // And a fresh standing queue is needed to be overloaded again.
        codel.left(ms(6), start + ms(610));
        assert!(!codel.overloaded(start + ms(620)));
    }
}
