//! Admission: whether a request may go to its cluster now, must wait, or
//! is refused. The phase between routing and choosing a backend, for
//! clusters with `[upstreams.NAME.concurrency] enabled`.
//!
//! - **The limit** on a cluster's requests in flight adapts to the latency
//!   its backends show: a [`Limit`], today Envoy's [`gradient`] (another
//!   published algorithm, Vegas or gradient2, would be another `Limit`).
//!   A request under it goes at once and holds a [`Permit`] until its
//!   response body ends; retries and hedges need one too
//!   ([`Admission::try_extra`], which never waits), so the limit owns all
//!   concurrency to the cluster. WebSocket tunnels, which would hold one
//!   for hours, are not counted.
//! - **The queue** in front of it is short and watched by [`codel`]. While
//!   no queue stands, it is first in, first out, and a request waits at
//!   most `queue_interval`. Once a queue has stood above `queue_target` for
//!   a whole interval, the cluster is overloaded: the queue serves the
//!   newest first (adaptive LIFO: they are the requests whose clients are
//!   still there), refuses those that waited over twice the target, and
//!   lets a newcomer wait only when nobody else does: one waiter is enough
//!   for the backends never to idle for want of a request, and everyone
//!   else is refused at once, before any wait, rather than after one.
//! - **Refusals** ([`Shed`]) are 503s with `Retry-After`, logged at debug
//!   and counted per reason; a request whose deadline is nearer than the
//!   lowest latency the backends have shown recently is refused before it
//!   is dialled.

pub mod codel;
pub mod gradient;

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::{Concurrency, LimitAlgorithm};
use crate::metrics::ClusterCounters;

/// How many requests a cluster may have in flight, learnt from their
/// latencies.
pub trait Limit: Send + Sync + fmt::Debug {
    /// The most requests in flight now.
    fn current(&self) -> usize;
    /// A request was answered (response headers other than a 5xx) `rtt`
    /// after it was sent, at `now`, with `in_flight` requests in flight;
    /// true when that changed the limit.
    fn answered(&self, rtt: Duration, in_flight: usize, now: Instant) -> bool;
    /// The lowest latency the backends have shown recently, once known.
    fn min_rtt(&self) -> Option<Duration>;
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Over the limit, with `max_queue` requests waiting already.
    QueueFull,
    /// It waited as long as it may without a permit.
    QueueTimeout,
    /// Over the limit while overloaded, with someone waiting already.
    Overloaded,
    /// Its deadline is nearer than the backends' minimum latency.
    Deadline,
}

impl Shed {
    /// Every reason, in the order of [`Shed::index`].
    pub const ALL: [Shed; 4] = [Shed::QueueFull, Shed::QueueTimeout, Shed::Overloaded, Shed::Deadline];

    /// Its `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Shed::QueueFull => "queue_full",
            Shed::QueueTimeout => "queue_timeout",
            Shed::Overloaded => "overloaded",
            Shed::Deadline => "deadline",
        }
    }

    /// Its place in [`Shed::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The admission control of one cluster.
pub struct Admission {
    limit: Box<dyn Limit>,
    state: Mutex<State>,
    /// `state.in_flight`, readable without the lock.
    in_flight: AtomicUsize,
    /// `state.waiting.len()`, readable without the lock.
    queued: AtomicUsize,
    max_queue: usize,
    interval: Duration,
    counters: ClusterCounters,
}

struct State {
    /// Permits held.
    in_flight: usize,
    /// Oldest first.
    waiting: VecDeque<Waiter>,
    codel: codel::Codel,
}

struct Waiter {
    since: Instant,
    /// Told when the permit is its: the permit is counted in `in_flight`
    /// from then, and the waiter owns it ([`Wait`]).
    grant: oneshot::Sender<()>,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("limit", &self.limit.current())
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

/// What [`Admission::admit`] decided.
pub enum Admit {
    /// Go now.
    Now(Permit),
    /// Wait for a permit.
    Wait(Wait),
    /// Refused.
    Refused(Shed),
}

impl Admission {
    /// Admission as `config` describes, counting refusals in `counters`.
    pub fn new(config: &Concurrency, counters: ClusterCounters) -> Self {
        let limit: Box<dyn Limit> = match config.algorithm {
            LimitAlgorithm::Gradient => Box::new(gradient::Gradient::new(config)),
        };
        Self::with_limit(limit, config, counters)
    }

    /// Admission under `limit`, with the queue `config` describes.
    pub fn with_limit(limit: Box<dyn Limit>, config: &Concurrency, counters: ClusterCounters) -> Self {
        Admission {
            limit,
            state: Mutex::new(State {
                in_flight: 0,
                waiting: VecDeque::new(),
                codel: codel::Codel::new(config.queue_target, config.queue_interval, Instant::now()),
            }),
            in_flight: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            max_queue: config.max_queue,
            interval: config.queue_interval,
            counters,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a request arriving at `now`, due by `deadline` if it has one.
    pub fn admit(self: &Arc<Self>, now: Instant, deadline: Option<Instant>) -> Admit {
        let min_rtt = self.limit.min_rtt();
        // The latest it may leave the queue and still be answered in time.
        let latest = match (deadline, min_rtt) {
            (Some(deadline), Some(min_rtt)) => Some(deadline.checked_sub(min_rtt).unwrap_or(now)),
            _ => None,
        };
        if latest.is_some_and(|latest| latest <= now) {
            return Admit::Refused(self.refuse(Shed::Deadline));
        }
        let limit = self.limit.current();
        let mut state = self.lock();
        if state.waiting.is_empty() && state.in_flight < limit {
            state.in_flight += 1;
            state.codel.left(Duration::ZERO, now);
            self.in_flight.store(state.in_flight, Ordering::Relaxed);
            return Admit::Now(Permit {
                admission: self.clone(),
            });
        }
        state.codel.waited(now);
        let overloaded = state.codel.overloaded(now);
        let longest = if overloaded {
            state.slough(now);
            if !state.waiting.is_empty() {
                drop(state);
                return Admit::Refused(self.refuse(Shed::Overloaded));
            }
            state.codel.target() * 2
        } else {
            if state.waiting.len() >= self.max_queue {
                // Waiters that left on their own still hold their places.
                state.waiting.retain(|w| !w.grant.is_closed());
            }
            if state.waiting.len() >= self.max_queue {
                drop(state);
                return Admit::Refused(self.refuse(Shed::QueueFull));
            }
            self.interval
        };
        let (grant, granted) = oneshot::channel();
        state.waiting.push_back(Waiter { since: now, grant });
        self.queued.store(state.waiting.len(), Ordering::Relaxed);
        let until = latest.map_or(now + longest, |latest| latest.min(now + longest));
        Admit::Wait(Wait {
            granted: Some(granted),
            until,
            admission: self.clone(),
        })
    }

    /// A permit for a retry or a hedge, if one is free now and nobody
    /// waits for it: extra attempts never queue.
    pub fn try_extra(self: &Arc<Self>) -> Option<Permit> {
        let limit = self.limit.current();
        let mut state = self.lock();
        if !state.waiting.is_empty() || state.in_flight >= limit {
            return None;
        }
        state.in_flight += 1;
        self.in_flight.store(state.in_flight, Ordering::Relaxed);
        Some(Permit {
            admission: self.clone(),
        })
    }

    /// Counts a refusal and says why.
    fn refuse(&self, reason: Shed) -> Shed {
        self.counters.shed(reason);
        reason
    }

    /// A permit was given back: it goes to a waiter if the limit allows.
    fn release(self: &Arc<Self>) {
        let now = Instant::now();
        let limit = self.limit.current();
        let mut state = self.lock();
        // Still counted: handed on, it stays counted.
        if state.in_flight > limit || !state.grant_next(now) {
            state.in_flight -= 1;
        }
        self.in_flight.store(state.in_flight, Ordering::Relaxed);
        self.queued.store(state.waiting.len(), Ordering::Relaxed);
    }

    /// The limit may have grown: waiters take the new permits.
    fn fill(self: &Arc<Self>) {
        let now = Instant::now();
        let limit = self.limit.current();
        let mut state = self.lock();
        while state.in_flight < limit && state.grant_next(now) {
            state.in_flight += 1;
        }
        self.in_flight.store(state.in_flight, Ordering::Relaxed);
        self.queued.store(state.waiting.len(), Ordering::Relaxed);
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit.current()
    }

    /// Permits held now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests waiting now (some may have left on their own).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The backends' minimum latency, once known.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.limit.min_rtt()
    }

    /// Whether the queue is overloaded now.
    pub fn overloaded(&self) -> bool {
        self.lock().codel.overloaded(Instant::now())
    }
}

impl State {
    /// Hands a permit to the next waiter still there (newest first while
    /// overloaded); false when nobody is.
    fn grant_next(&mut self, now: Instant) -> bool {
        let overloaded = self.codel.overloaded(now);
        if overloaded {
            self.slough(now);
        }
        loop {
            let next = if overloaded {
                self.waiting.pop_back()
            } else {
                self.waiting.pop_front()
            };
            let Some(waiter) = next else { return false };
            self.codel.left(now.saturating_duration_since(waiter.since), now);
            // A waiter that left is skipped.
            if waiter.grant.send(()).is_ok() {
                return true;
            }
        }
    }

    /// Refuses waiters older than twice the target (overloaded only).
    fn slough(&mut self, now: Instant) {
        let longest = self.codel.target() * 2;
        while let Some(oldest) = self.waiting.front() {
            let waited = now.saturating_duration_since(oldest.since);
            if waited <= longest {
                break;
            }
            self.codel.left(waited, now);
            // Its sender dropped: the waiter learns it was refused.
            self.waiting.pop_front();
        }
    }
}

/// A request waiting in the queue.
pub struct Wait {
    /// Taken when the wait ends.
    granted: Option<oneshot::Receiver<()>>,
    /// When it stops waiting.
    until: Instant,
    admission: Arc<Admission>,
}

impl Wait {
    /// The permit, or why the request is refused.
    pub async fn granted(mut self) -> Result<Permit, Shed> {
        let Some(granted) = self.granted.as_mut() else {
            return Err(Shed::QueueTimeout);
        };
        match tokio::time::timeout_at(self.until, granted).await {
            Ok(Ok(())) => {
                self.granted = None;
                Ok(Permit {
                    admission: self.admission.clone(),
                })
            }
            // Sloughed, or it waited its longest (a permit granted as the
            // time ran out is given back by `drop`).
            Ok(Err(_)) | Err(_) => Err(self.admission.refuse(Shed::QueueTimeout)),
        }
    }
}

impl Drop for Wait {
    /// A waiter that goes (its client left, or its time ran out) with a
    /// permit granted but not yet taken gives it back.
    fn drop(&mut self) {
        if let Some(mut granted) = self.granted.take() {
            granted.close();
            if granted.try_recv().is_ok() {
                self.admission.release();
            }
        }
    }
}

/// A request's place under its cluster's limit, given back when dropped.
pub struct Permit {
    admission: Arc<Admission>,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

impl Permit {
    /// The request was answered `rtt` after it was sent: a latency sample
    /// for the limit.
    pub fn answered(&self, rtt: Duration, now: Instant) {
        let admission = &self.admission;
        if admission.limit.answered(rtt, admission.in_flight(), now) {
            admission.fill();
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.release();
    }
}

#[cfg(test)]
mod tests;
