//! A future polled only when it has asked to be.
//!
//! A connection's driver waits on its HTTP connection and, beside it, on
//! signals that almost never fire (stop, idle timeout). `tokio::select!`
//! polls every branch each time the task wakes, and the task wakes for
//! nearly every read and write of the connection: polling a cancellation
//! token takes two mutexes, and polling a timer re-registers its waker.
//! [`Gated`] gives its future a waker of its own and polls it only after
//! that waker has fired, so the signals cost one atomic swap per wake.
//!
//! Written here rather than taken from a crate: `futures-util` does the
//! same inside `FuturesUnordered`, but offers no single-future form.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use pin_project_lite::pin_project;

pin_project! {
    /// `inner`, polled on the first poll, after its own waker fired, or
    /// when the task polling it changes waker.
    pub struct Gated<F> {
        #[pin]
        inner: F,
        signal: Arc<Signal>,
        // The waker `signal` forwards to, as last stored there; compared
        // without taking the lock.
        outer: Option<Waker>,
    }
}

/// Set by the inner future's wake-ups, which it passes on to the task.
struct Signal {
    woken: AtomicBool,
    outer: Mutex<Option<Waker>>,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(outer) = self.outer.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            outer.wake_by_ref();
        }
    }
}

impl<F> Gated<F> {
    pub fn new(inner: F) -> Self {
        let signal = Arc::new(Signal {
            // Polled the first time, which lets it register.
            woken: AtomicBool::new(true),
            outer: Mutex::new(None),
        });
        Gated {
            inner,
            signal,
            outer: None,
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if !this.outer.as_ref().is_some_and(|outer| outer.will_wake(cx.waker())) {
            *this.signal.outer.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            *this.outer = Some(cx.waker().clone());
        }
        // Cleared before the poll: a wake-up during or after it sets it again.
        if !this.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        // Made here rather than kept: this is the rare path, and a waker
        // kept in every connection's task makes each one larger.
        let waker = Waker::from(this.signal.clone());
        this.inner.poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Counts its polls; ready once `ready` is set and it has been woken.
    struct Probe {
        polls: Arc<std::sync::atomic::AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            *self.waker.lock().expect("lock") = Some(cx.waker().clone());
            if self.ready.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn polls_the_inner_future_only_after_it_woke() {
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(Mutex::new(None));
        let mut gated = Box::pin(Gated::new(Probe {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: waker.clone(),
        }));
        let noop = Waker::noop();
        let mut cx = Context::from_waker(noop);
        for _ in 0..5 {
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled once, to register");

        ready.store(true, Ordering::SeqCst);
        waker.lock().expect("lock").take().expect("registered").wake();
        assert!(gated.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_timer_behind_the_gate_still_wakes_the_task() {
        let gated = Gated::new(tokio::time::sleep(Duration::from_millis(20)));
        tokio::time::timeout(Duration::from_secs(5), gated)
            .await
            .expect("the sleep's wake-up reached the task");
    }
}
