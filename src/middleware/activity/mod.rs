//! Tracks whether a connection has requests in flight and when the last one
//! ended, so the server can close connections that stay idle too long.
//!
//! A request counts as in flight from the moment the service is called until
//! its response body is finished or dropped, not merely until its headers are
//! sent. Two atomics per connection; nothing here blocks or locks.

mod body;
mod layer;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub use body::TrackedBody;
pub use layer::{TrackActivity, TrackActivityFuture, TrackActivityLayer};

/// The activity record of one connection; clones share it.
#[derive(Debug, Clone)]
pub struct Activity {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    base: Instant,
    in_flight: AtomicUsize,
    /// Requests started on the connection so far.
    started: AtomicUsize,
    /// Notified when the first request starts.
    first: Notify,
    /// Nanoseconds after `base` at which the last request ended.
    last_end: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    /// A connection that has just opened: idle since now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                base: Instant::now(),
                in_flight: AtomicUsize::new(0),
                started: AtomicUsize::new(0),
                first: Notify::new(),
                last_end: AtomicU64::new(0),
            }),
        }
    }

    /// Marks a request as started; the guard marks it ended when dropped.
    pub fn begin(&self) -> RequestGuard {
        self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        if self.inner.started.fetch_add(1, Ordering::AcqRel) == 0 {
            // Once per connection; stores a permit if no one waits yet.
            self.inner.first.notify_one();
        }
        RequestGuard {
            inner: self.inner.clone(),
            ended: false,
        }
    }

    /// Requests currently in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Whether any request has started on the connection.
    pub fn has_started(&self) -> bool {
        self.inner.started.load(Ordering::Acquire) > 0
    }

    /// Completes once the connection's first request has started.
    pub async fn first_request(&self) {
        if !self.has_started() {
            self.inner.first.notified().await;
        }
    }

    fn last_end(&self) -> Instant {
        self.inner.base + Duration::from_nanos(self.inner.last_end.load(Ordering::Acquire))
    }

    /// Whether the connection has had no request in flight for `limit`: its
    /// last response ended at least that long ago, time for the server to
    /// have written it out.
    pub fn quiet_for(&self, limit: Duration) -> bool {
        self.in_flight() == 0 && Instant::now() >= self.last_end() + limit
    }

    /// Completes once the connection has had no request in flight for `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            let idle_until = self.last_end() + limit;
            if Instant::now() < idle_until {
                tokio::time::sleep_until(idle_until).await;
            } else if self.in_flight() > 0 {
                // A long request: look again one period later.
                tokio::time::sleep(limit).await;
            } else {
                return;
            }
        }
    }
}

/// Held while a request is in flight; dropping it ends the request now.
#[derive(Debug)]
pub struct RequestGuard {
    inner: Arc<Inner>,
    ended: bool,
}

impl RequestGuard {
    /// Ends the request at `at`: when its response ended, if that time was
    /// read already (saving a clock read), else now.
    pub fn end(mut self, at: Option<std::time::Instant>) {
        self.finish(at.map_or_else(Instant::now, Instant::from_std));
    }

    fn finish(&mut self, at: Instant) {
        self.ended = true;
        let since = at.saturating_duration_since(self.inner.base);
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
        self.inner.last_end.store(nanos, Ordering::Release);
        self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if !self.ended {
            self.finish(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_request_is_seen_whether_it_starts_before_or_after_the_wait() {
        let activity = Activity::new();
        assert!(!activity.has_started());
        let waiting = tokio::spawn({
            let activity = activity.clone();
            async move { activity.first_request().await }
        });
        tokio::task::yield_now().await;
        drop(activity.begin());
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the first request")
            .expect("task");
        assert!(activity.has_started());

        // Started before anyone waited: the wait completes at once.
        let early = Activity::new();
        drop(early.begin());
        tokio::time::timeout(Duration::from_secs(5), early.first_request())
            .await
            .expect("already started");
    }

    #[test]
    fn a_request_ends_when_its_response_did_not_when_the_guard_goes() {
        let activity = Activity::new();
        let guard = activity.begin();
        assert_eq!(activity.in_flight(), 1);
        let response_end = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        guard.end(Some(response_end));
        assert_eq!(activity.in_flight(), 0);
        assert_eq!(activity.last_end(), Instant::from_std(response_end));

        // Without a known end, and when dropped: now.
        let before = Instant::now();
        activity.begin().end(None);
        assert!(activity.last_end() >= before);
        let before = Instant::now();
        drop(activity.begin());
        assert!(activity.last_end() >= before);
        assert_eq!(activity.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_in_flight_requests_to_end() {
        let activity = Activity::new();
        let guard = activity.begin();
        let idle = activity.idle_for(Duration::from_secs(5));
        tokio::pin!(idle);
        // With a request in flight, no amount of time makes the connection idle.
        assert!(tokio::time::timeout(Duration::from_secs(60), idle.as_mut())
            .await
            .is_err());
        drop(guard);
        let ended = Instant::now();
        idle.await;
        assert!(Instant::now() - ended >= Duration::from_secs(5));
    }
}
