use std::sync::atomic::AtomicU64;

use super::*;
use crate::metrics::Metrics;

/// A limit set by hand.
#[derive(Debug)]
struct Fixed {
    limit: Arc<AtomicUsize>,
    min_rtt_micros: AtomicU64,
}

impl Limit for Fixed {
    fn current(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }
    fn answered(&self, _: Duration, _: usize, _: Instant) -> bool {
        false
    }
    fn min_rtt(&self) -> Option<Duration> {
        match self.min_rtt_micros.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }
}

fn fixed(limit: usize, max_queue: usize, min_rtt: Duration) -> (Arc<Admission>, ClusterCounters) {
    let (admission, counters, _) = adjustable(limit, max_queue, min_rtt);
    (admission, counters)
}

/// An admission, its counters, and its limit, to set by hand.
fn adjustable(
    limit: usize,
    max_queue: usize,
    min_rtt: Duration,
) -> (Arc<Admission>, ClusterCounters, Arc<AtomicUsize>) {
    let limit = Arc::new(AtomicUsize::new(limit));
    let config = crate::config::parse(
        std::path::Path::new("t.toml"),
        "[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n[[routes]]\nname = \"r\"\nupstream = \"app\"\n\
         [upstreams.app]\nbackends = [\"127.0.0.1:9\"]\n",
    )
    .expect("config");
    let counters = Metrics::new(&config).cluster("app");
    let fixed = Fixed {
        limit: limit.clone(),
        min_rtt_micros: AtomicU64::new(min_rtt.as_micros() as u64),
    };
    let concurrency = Concurrency {
        enabled: true,
        max_queue,
        ..Concurrency::default()
    };
    let admission = Arc::new(Admission::with_limit(Box::new(fixed), &concurrency, counters.clone()));
    (admission, counters, limit)
}

fn now_permit(admit: Admit) -> Permit {
    match admit {
        Admit::Now(permit) => permit,
        Admit::Wait(_) => panic!("waits"),
        Admit::Refused(reason) => panic!("refused: {reason:?}"),
    }
}

fn waits(admit: Admit) -> Wait {
    match admit {
        Admit::Wait(wait) => wait,
        Admit::Now(_) => panic!("admitted at once"),
        Admit::Refused(reason) => panic!("refused: {reason:?}"),
    }
}

fn refused(admit: Admit) -> Shed {
    match admit {
        Admit::Refused(reason) => reason,
        Admit::Now(_) => panic!("admitted at once"),
        Admit::Wait(_) => panic!("waits"),
    }
}

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn under_the_limit_at_once_over_it_in_order_and_a_full_queue_refuses() {
    let (admission, counters) = fixed(2, 2, Duration::ZERO);
    let first = now_permit(admission.admit(Instant::now(), None));
    let _second = now_permit(admission.admit(Instant::now(), None));
    assert_eq!(admission.in_flight(), 2);
    let a = tokio::spawn(waits(admission.admit(Instant::now(), None)).granted());
    tokio::time::advance(MS).await;
    let b = tokio::spawn(waits(admission.admit(Instant::now(), None)).granted());
    assert_eq!(refused(admission.admit(Instant::now(), None)), Shed::QueueFull);
    assert_eq!(counters.shed_count(Shed::QueueFull), 1);
    tokio::task::yield_now().await;
    // A permit given back goes to the first waiter, and stays counted.
    drop(first);
    let a = a.await.expect("task").expect("granted");
    assert_eq!(admission.in_flight(), 2);
    assert!(!b.is_finished());
    drop(a);
    let b = b.await.expect("task").expect("granted");
    drop((b, _second));
    assert_eq!(admission.in_flight(), 0);
    assert_eq!(admission.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_waits_at_most_an_interval_and_leaves_no_permit_behind() {
    let (admission, counters) = fixed(1, 10, Duration::ZERO);
    let held = now_permit(admission.admit(Instant::now(), None));
    let waiting = waits(admission.admit(Instant::now(), None));
    let started = Instant::now();
    assert_eq!(waiting.granted().await.expect_err("refused"), Shed::QueueTimeout);
    assert_eq!(started.elapsed(), Duration::from_millis(100), "queue_interval");
    assert_eq!(counters.shed_count(Shed::QueueTimeout), 1);
    // The permit, given back, finds the gone waiter and is not lost.
    drop(held);
    assert_eq!(admission.in_flight(), 0);
    drop(now_permit(admission.admit(Instant::now(), None)));
}

/// Fills the queue behind a limit of one for `ms` milliseconds, one
/// waiter per millisecond, each granted as the permit comes back 6 ms
/// after it went: a queue standing above the 5 ms target.
async fn stand(admission: &Arc<Admission>, ms: u64) {
    let mut held = now_permit(admission.admit(Instant::now(), None));
    let mut queue = VecDeque::new();
    for t in 0..ms {
        if let Admit::Wait(wait) = admission.admit(Instant::now(), None) {
            queue.push_back(tokio::spawn(wait.granted()));
        }
        tokio::time::advance(MS).await;
        if t % 6 == 5 {
            drop(held);
            tokio::task::yield_now().await;
            held = loop {
                let Some(next) = queue.pop_front() else {
                    break now_permit(admission.admit(Instant::now(), None));
                };
                match next.await.expect("task") {
                    Ok(permit) => break permit,
                    Err(_) => continue,
                }
            };
        }
    }
    drop(held);
    for task in queue {
        drop(task.await);
    }
}

#[tokio::test(start_paused = true)]
async fn a_standing_queue_is_overload_newest_first_and_a_second_waiter_is_refused_at_once() {
    let (admission, counters) = fixed(1, 1000, Duration::ZERO);
    assert!(!admission.overloaded());
    stand(&admission, 150).await;
    assert!(admission.overloaded(), "a queue stood above 5 ms for 100 ms");

    // Overloaded: one request may wait; a second is refused at once.
    let held = now_permit(admission.admit(Instant::now(), None));
    let older = tokio::spawn(waits(admission.admit(Instant::now(), None)).granted());
    assert_eq!(refused(admission.admit(Instant::now(), None)), Shed::Overloaded);
    assert!(counters.shed_count(Shed::Overloaded) >= 1);
    // The one waiting waits twice the target at most.
    let started = Instant::now();
    assert_eq!(older.await.expect("task").expect_err("sloughed"), Shed::QueueTimeout);
    assert_eq!(started.elapsed(), Duration::from_millis(10));
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn a_backlog_older_than_twice_the_target_is_refused_once_overload_begins() {
    let (admission, _) = fixed(1, 1000, Duration::ZERO);
    let held = now_permit(admission.admit(Instant::now(), None));
    // Three wait while the queue is not (yet) overloaded.
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(tokio::spawn(waits(admission.admit(Instant::now(), None)).granted()));
        tokio::time::advance(MS).await;
    }
    // CoDel declares overload (a waiter leaving after more than the target,
    // one interval after the first did).
    {
        let mut state = admission.lock();
        let now = Instant::now();
        state.codel.left(Duration::from_millis(6), now);
        state
            .codel
            .left(Duration::from_millis(6), now + Duration::from_millis(100));
        assert!(state.codel.overloaded(now + Duration::from_millis(100)));
    }
    // 20 ms on: over twice the target, well within their own longest wait
    // (an interval, 100 ms).
    tokio::time::advance(Duration::from_millis(20)).await;
    // The release sloughs them all, at once, and the permit goes back
    // unused: newest first would have granted the last of them.
    drop(held);
    assert_eq!(admission.queued(), 0);
    assert_eq!(admission.in_flight(), 0);
    for task in waiting {
        assert_eq!(task.await.expect("task").expect_err("refused"), Shed::QueueTimeout);
    }
}

#[tokio::test(start_paused = true)]
async fn while_overloaded_the_newest_waiter_is_served_first() {
    let (admission, _) = fixed(1, 1000, Duration::ZERO);
    let held = now_permit(admission.admit(Instant::now(), None));
    let older = tokio::spawn(waits(admission.admit(Instant::now(), None)).granted());
    tokio::time::advance(MS).await;
    let newer = tokio::spawn(waits(admission.admit(Instant::now(), None)).granted());
    tokio::time::advance(MS).await;
    tokio::task::yield_now().await;
    {
        let mut state = admission.lock();
        let now = Instant::now();
        state
            .codel
            .left(Duration::from_millis(6), now - Duration::from_millis(100));
        state.codel.left(Duration::from_millis(6), now);
        assert!(state.codel.overloaded(now));
    }
    // Both waited under twice the target: the newer one is served first.
    drop(held);
    let served = newer.await.expect("task").expect("granted");
    assert!(!older.is_finished());
    drop(served);
    // Then the older one, still within twice the target.
    drop(older.await.expect("task").expect("granted"));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_nearer_than_the_minimum_latency_is_refused_before_dialling() {
    let (admission, counters) = fixed(10, 10, Duration::from_millis(20));
    let now = Instant::now();
    assert_eq!(
        refused(admission.admit(now, Some(now + Duration::from_millis(15)))),
        Shed::Deadline
    );
    assert_eq!(counters.shed_count(Shed::Deadline), 1);
    assert_eq!(admission.in_flight(), 0, "no permit taken");
    drop(now_permit(admission.admit(now, Some(now + Duration::from_millis(25)))));
    drop(now_permit(admission.admit(now, None)));

    // Waiting, a request leaves when its deadline can no longer be met.
    let (admission, _) = fixed(1, 10, Duration::from_millis(20));
    let _held = now_permit(admission.admit(Instant::now(), None));
    let deadline = Instant::now() + Duration::from_millis(50);
    let wait = waits(admission.admit(Instant::now(), Some(deadline)));
    let started = Instant::now();
    assert_eq!(wait.granted().await.expect_err("refused"), Shed::QueueTimeout);
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(30),
        "deadline minus the minimum"
    );
}

#[tokio::test(start_paused = true)]
async fn extra_attempts_never_wait_and_a_grown_limit_admits_waiters() {
    let (admission, _, limit) = adjustable(1, 10, Duration::ZERO);
    let held = now_permit(admission.admit(Instant::now(), None));
    assert!(admission.try_extra().is_none(), "the limit is reached");
    let waiting = tokio::spawn(waits(admission.admit(Instant::now(), None)).granted());
    tokio::task::yield_now().await;
    assert!(admission.try_extra().is_none(), "someone waits");
    // The limit grows to 2: the waiter is admitted without a release.
    limit.store(2, Ordering::Relaxed);
    admission.fill();
    let admitted = waiting.await.expect("task").expect("granted");
    assert_eq!(admission.in_flight(), 2);
    drop((held, admitted));
    let extra = admission.try_extra().expect("a free permit");
    assert_eq!(admission.in_flight(), 1);
    drop(extra);
    assert_eq!(admission.in_flight(), 0);
}
