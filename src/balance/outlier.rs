//! Passive outlier ejection: a backend whose requests keep failing is taken
//! out of the rotation for a while, as Envoy's outlier detection and
//! nginx's `max_fails` do.
//!
//! A backend is ejected after `consecutive_failures` failures in a row
//! (gateway errors and 5xx answers; any success resets the count). Its n-th
//! ejection lasts n × `base_ejection`, at most `max_ejection`, plus up to a
//! tenth more at random so that backends ejected together do not return
//! together; the count starts again once it has stayed in for
//! `max_ejection`. An ejection never leaves the cluster without a backend:
//! it happens only if, counting the backend about to go, at most
//! `max_ejected_percent` of the cluster is out and one backend is still in.
//! The decision is taken when the failure is recorded, under a lock held
//! only then; choosing a backend reads two atomics while nothing is out.
//!
//! Active health checks report here too ([`Ejector::checked`]): a backend
//! failing `unhealthy_threshold` checks in a row is out until it passes
//! `healthy_threshold` in a row. When every backend is out (all failing
//! their checks), the cluster balances over all of them: panic mode,
//! counted, rather than failing every request.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::config::Outlier;

/// The ejection state of one cluster's backends.
#[derive(Debug)]
pub struct Ejector {
    config: Outlier,
    /// Times are kept as nanoseconds after this instant.
    base: Instant,
    backends: Vec<Ejection>,
    /// The latest end of any ejection (0: none ever): past it, nothing is
    /// ejected and a choice need not look further.
    latest_end: AtomicU64,
    /// Serialises ejection decisions.
    deciding: Mutex<()>,
    /// Backends that failed their health checks now.
    unhealthy: AtomicUsize,
    /// Choices made in panic mode (every backend out).
    panics: AtomicU64,
}

#[derive(Debug, Default)]
struct Ejection {
    /// Failures in a row.
    failures: AtomicUsize,
    /// When its current or last ejection ends (0: never ejected).
    until: AtomicU64,
    /// How many times it was ejected lately, for the length of the next one.
    times: AtomicUsize,
    /// How many times it was ejected in all.
    total: AtomicUsize,
    /// Failing its health checks (false until checks say so).
    unhealthy: AtomicBool,
    /// Health check results in a row that disagree with its state.
    run: AtomicUsize,
}

impl Ejector {
    /// `backends` backends, none ejected.
    pub fn new(backends: usize, config: Outlier) -> Self {
        Ejector {
            config,
            base: Instant::now(),
            backends: (0..backends).map(|_| Ejection::default()).collect(),
            latest_end: AtomicU64::new(0),
            deciding: Mutex::new(()),
            unhealthy: AtomicUsize::new(0),
            panics: AtomicU64::new(0),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Backend `index` answered: its run of failures ends.
    pub fn succeeded(&self, index: usize) {
        let failures = &self.backends[index].failures;
        // Read first: a healthy backend's count stays 0 and its cache line clean.
        if failures.load(Ordering::Relaxed) != 0 {
            failures.store(0, Ordering::Relaxed);
        }
    }

    /// Backend `index` failed at `now`; true if that ejected it.
    pub fn failed(&self, index: usize, now: Instant) -> bool {
        let backend = &self.backends[index];
        let failures = backend.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < self.config.consecutive_failures.get() {
            return false;
        }
        let _deciding = self.deciding.lock().unwrap_or_else(PoisonError::into_inner);
        let now_nanos = self.nanos(now);
        let previous_end = backend.until.load(Ordering::Relaxed);
        if previous_end > now_nanos {
            // Already out: failures of requests sent before it went.
            return false;
        }
        let out = self
            .backends
            .iter()
            .filter(|b| b.until.load(Ordering::Relaxed) > now_nanos || b.unhealthy.load(Ordering::Relaxed))
            .count();
        let total = self.backends.len();
        let after = out + 1;
        if after >= total || after * 100 > total * self.config.max_ejected_percent {
            return false;
        }
        // The count of ejections starts again for a backend that stayed in
        // for the longest ejection.
        let max = self.config.max_ejection;
        let stayed_in = Duration::from_nanos(now_nanos.saturating_sub(previous_end));
        let times = if previous_end == 0 || stayed_in >= max {
            1
        } else {
            backend.times.load(Ordering::Relaxed) + 1
        };
        backend.times.store(times, Ordering::Relaxed);
        let length = self
            .config
            .base_ejection
            .saturating_mul(u32::try_from(times).unwrap_or(u32::MAX))
            .min(max);
        let jitter = length.mul_f64(rand::thread_rng().gen_range(0.0..0.1));
        let until = self.nanos(now + length + jitter);
        backend.until.store(until, Ordering::Relaxed);
        backend.failures.store(0, Ordering::Relaxed);
        self.latest_end.fetch_max(until, Ordering::Relaxed);
        backend.total.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            backend = index,
            failures,
            ejected_for = ?(length + jitter),
            times,
            "backend ejected after failures in a row"
        );
        true
    }

    /// The backends not ejected at `now`, or `None` if none is (the usual
    /// case, answered without reading the clock when no backend was ever
    /// ejected).
    pub fn in_rotation(&self, now: impl FnOnce() -> Instant) -> Option<Vec<usize>> {
        let latest = self.latest_end.load(Ordering::Relaxed);
        let unhealthy = self.unhealthy.load(Ordering::Relaxed);
        if latest == 0 && unhealthy == 0 {
            return None;
        }
        let now = self.nanos(now());
        if now >= latest && unhealthy == 0 {
            return None;
        }
        let in_rotation: Vec<usize> = (0..self.backends.len())
            .filter(|&i| {
                let backend = &self.backends[i];
                backend.until.load(Ordering::Relaxed) <= now && !backend.unhealthy.load(Ordering::Relaxed)
            })
            .collect();
        if in_rotation.is_empty() {
            // Panic mode: every backend out, so none is.
            self.panics.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(in_rotation)
    }

    /// A health check of backend `index` passed or not; returns its new
    /// state (healthy or not) when that changed.
    pub fn checked(&self, index: usize, passed: bool, healthy_after: usize, unhealthy_after: usize) -> Option<bool> {
        let backend = &self.backends[index];
        let unhealthy = backend.unhealthy.load(Ordering::Relaxed);
        if passed != unhealthy {
            // Agrees with its state: the run of disagreeing results ends.
            backend.run.store(0, Ordering::Relaxed);
            return None;
        }
        let run = backend.run.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if unhealthy { healthy_after } else { unhealthy_after };
        if run < needed {
            return None;
        }
        backend.run.store(0, Ordering::Relaxed);
        backend.unhealthy.store(!unhealthy, Ordering::Relaxed);
        if unhealthy {
            self.unhealthy.fetch_sub(1, Ordering::Relaxed);
        } else {
            self.unhealthy.fetch_add(1, Ordering::Relaxed);
        }
        Some(unhealthy)
    }

    /// Whether backend `index` passes its health checks (always, without them).
    pub fn is_healthy(&self, index: usize) -> bool {
        !self.backends[index].unhealthy.load(Ordering::Relaxed)
    }

    /// Choices made in panic mode so far.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Whether backend `index` is ejected at `now`.
    pub fn is_ejected(&self, index: usize, now: Instant) -> bool {
        self.backends[index].until.load(Ordering::Relaxed) > self.nanos(now)
    }

    /// How many times backend `index` was ejected.
    pub fn ejections(&self, index: usize) -> usize {
        self.backends[index].total.load(Ordering::Relaxed)
    }

    /// Takes on the state backend `from_index` has in `from` as backend
    /// `index`'s: its run of failures, its ejection (with its end) and its
    /// count of ejections. For a reload that keeps the backend.
    pub fn inherit(&self, index: usize, from: &Ejector, from_index: usize) {
        let (old, new) = (&from.backends[from_index], &self.backends[index]);
        new.failures
            .store(old.failures.load(Ordering::Relaxed), Ordering::Relaxed);
        new.times.store(old.times.load(Ordering::Relaxed), Ordering::Relaxed);
        new.total.store(old.total.load(Ordering::Relaxed), Ordering::Relaxed);
        if old.unhealthy.load(Ordering::Relaxed) && !new.unhealthy.swap(true, Ordering::Relaxed) {
            self.unhealthy.fetch_add(1, Ordering::Relaxed);
        }
        let until = old.until.load(Ordering::Relaxed);
        if until != 0 {
            let end = from.base + Duration::from_nanos(until);
            let until = self.nanos(end).max(1);
            new.until.store(until, Ordering::Relaxed);
            self.latest_end.fetch_max(until, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;

    fn ejector(backends: usize) -> Ejector {
        Ejector::new(
            backends,
            Outlier {
                consecutive_failures: NonZeroUsize::new(3).expect("non-zero"),
                base_ejection: Duration::from_secs(30),
                max_ejection: Duration::from_secs(300),
                max_ejected_percent: 50,
            },
        )
    }

    fn fail(ejector: &Ejector, index: usize, times: usize) -> bool {
        (0..times).any(|_| ejector.failed(index, Instant::now()))
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_a_row_eject_and_a_success_resets_the_run() {
        let e = ejector(4);
        assert!(!fail(&e, 0, 2));
        e.succeeded(0);
        assert!(!fail(&e, 0, 2), "the run started again");
        assert!(fail(&e, 0, 1), "the third in a row");
        assert_eq!(e.in_rotation(Instant::now), Some(vec![1, 2, 3]));
        // Back after 30 s, plus at most 3 s of jitter.
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(e.is_ejected(0, Instant::now()));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(!e.is_ejected(0, Instant::now()));
        assert_eq!(e.in_rotation(Instant::now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn each_ejection_lasts_longer_up_to_the_maximum() {
        let e = ejector(4);
        let mut lengths = Vec::new();
        for _ in 0..12 {
            assert!(fail(&e, 1, 3));
            let start = Instant::now();
            while e.is_ejected(1, Instant::now()) {
                tokio::time::advance(Duration::from_secs(1)).await;
            }
            lengths.push((Instant::now() - start).as_secs());
        }
        // n x 30 s plus up to a tenth, capped at 300 s (plus its tenth).
        for (n, &length) in lengths.iter().enumerate() {
            let base = (30 * (n as u64 + 1)).min(300);
            assert!(
                (base..=base + base / 10 + 1).contains(&length),
                "ejection {n}: {length} s, {lengths:?}"
            );
        }
    }

    #[test]
    fn health_checks_take_a_backend_out_and_bring_it_back_by_their_thresholds() {
        let e = ejector(2);
        let check = |passed| e.checked(0, passed, 2, 3);
        assert_eq!((check(false), check(false)), (None, None));
        assert_eq!(check(true), None, "a pass ends the run of failures");
        assert_eq!((check(false), check(false), check(false)), (None, None, Some(false)));
        assert!(!e.is_healthy(0));
        assert_eq!(e.in_rotation(Instant::now), Some(vec![1]));
        assert_eq!((check(true), check(true)), (None, Some(true)));
        assert_eq!(e.in_rotation(Instant::now), None);
    }

    #[test]
    fn with_every_backend_out_the_cluster_balances_over_all_and_counts_it() {
        let e = ejector(2);
        for index in 0..2 {
            for _ in 0..3 {
                e.checked(index, false, 2, 3);
            }
        }
        assert_eq!(e.in_rotation(Instant::now), None, "panic mode: all of them");
        assert_eq!(e.panics(), 1);
        // And an unhealthy backend counts as out when ejecting: with one of
        // two out, the other is the last and stays.
        let e = ejector(2);
        for _ in 0..3 {
            e.checked(0, false, 2, 3);
        }
        assert!(!fail(&e, 1, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_backend_keeps_its_ejection_across_a_rebuild() {
        let old = ejector(3);
        assert!(fail(&old, 2, 3));
        tokio::time::advance(Duration::from_secs(5)).await;
        // Rebuilt with a backend added in front: the ejected one is now 3.
        let new = ejector(4);
        new.inherit(3, &old, 2);
        assert!(new.is_ejected(3, Instant::now()));
        assert_eq!(new.ejections(3), 1);
        assert_eq!(new.in_rotation(Instant::now), Some(vec![0, 1, 2]));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(
            !new.is_ejected(3, Instant::now()),
            "its ejection ends when it would have"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_the_last_backend_nor_more_than_the_percentage() {
        // (backends, how many may be out at once at 50%)
        for (backends, most) in [(1, 0), (2, 1), (3, 1), (10, 5)] {
            let e = ejector(backends);
            let ejected = (0..backends).filter(|&i| fail(&e, i, 3)).count();
            assert_eq!(ejected, most, "{backends} backends");
            let left = e.in_rotation(Instant::now).map_or(backends, |r| r.len());
            assert!(left >= 1, "{backends} backends: none left");
        }
        let mut all_but_one = ejector(3);
        all_but_one.config.max_ejected_percent = 100;
        assert_eq!((0..3).filter(|&i| fail(&all_but_one, i, 3)).count(), 2);
    }
}
